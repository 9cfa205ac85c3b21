//! A validation failure that names the offending field, so the HTTP edge can answer
//! `{"error": {"code", "message", "field"}}` without guessing.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    /// Stable machine-readable code (`invalid_url`, `too_large`, ...).
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}
