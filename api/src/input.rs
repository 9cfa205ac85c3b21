//! Reading request bodies and query strings into validated values, with errors that name the
//! field. Bodies are parsed as a JSON object and read field by field (rather than through a
//! derived struct) so every problem — malformed JSON, a wrong type, an unknown field — becomes a
//! 400 that says which field and why.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::ApiError;

pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON object body.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::TooLarge(MAX_BODY_BYTES))?;
        parse_object(&bytes, MAX_BODY_BYTES).map(JsonObject)
    }
}

/// A body of at most `max` bytes that must be a JSON object.
pub fn parse_object(bytes: &[u8], max: usize) -> Result<Map<String, Value>, ApiError> {
    if bytes.len() > max {
        return Err(ApiError::TooLarge(max));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest {
            code: "invalid_json",
            message: "the body must be a JSON object".into(),
            field: None,
        }),
        Err(e) => Err(ApiError::BadRequest {
            code: "invalid_json",
            message: format!("malformed JSON: {e}"),
            field: None,
        }),
    }
}

/// Typed access to a JSON object's fields; each getter consumes its field so that whatever is
/// left at the end is unknown.
pub struct Fields(pub Map<String, Value>);

fn wrong(field: &str, expected: &str) -> ApiError {
    ApiError::field(field, "invalid_type", format!("{field} must be {expected}"))
}

impl Fields {
    fn take(&mut self, field: &str) -> Option<Value> {
        match self.0.remove(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn string(&mut self, field: &str) -> Result<Option<String>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong(field, "a string")),
        }
    }

    pub fn int(&mut self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| wrong(field, "an integer")),
            Some(_) => Err(wrong(field, "an integer")),
        }
    }

    pub fn bool(&mut self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(wrong(field, "true or false")),
        }
    }

    pub fn strings(&mut self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(wrong(field, "an array of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong(field, "an array of strings")),
        }
    }

    /// An array of strings or integers, as strings (status codes may be given either way).
    pub fn codes(&mut self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    Value::Number(n) if n.is_u64() => Ok(n.to_string()),
                    _ => Err(wrong(field, "an array of strings or status codes")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong(field, "an array of strings or status codes")),
        }
    }

    /// `{"path": "$.a.b", "equals": <any JSON>}`.
    pub fn json_check(&mut self, field: &str) -> Result<Option<(String, Value)>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Object(mut m)) => {
                let path = match m.remove("path") {
                    Some(Value::String(p)) => p,
                    _ => return Err(wrong(&format!("{field}.path"), "a string")),
                };
                let equals = m
                    .remove("equals")
                    .ok_or_else(|| ApiError::field(format!("{field}.equals"), "required", "equals is required"))?;
                if let Some(k) = m.keys().next() {
                    return Err(ApiError::field(
                        format!("{field}.{k}"),
                        "unknown_field",
                        format!("unknown field {k}"),
                    ));
                }
                Ok(Some((path, equals)))
            }
            Some(_) => Err(wrong(field, "an object {\"path\", \"equals\"}")),
        }
    }

    /// Headers as a JSON object of name → string value.
    pub fn headers(&mut self, field: &str) -> Result<Option<Vec<(String, String)>>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(ApiError::field(
                        format!("{field}.{k}"),
                        "invalid_type",
                        "header values must be strings",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong(field, "an object of header names to values")),
        }
    }

    pub fn time(&mut self, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.string(field)? {
            None => Ok(None),
            Some(s) => parse_time(field, &s).map(Some),
        }
    }

    /// Refuses fields nobody read (typos should not be silently ignored).
    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::field(
                k.clone(),
                "unknown_field",
                format!("unknown field {k}"),
            )),
        }
    }
}

pub fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::field(
                field,
                "invalid_time",
                format!("{field} must be an RFC 3339 time with offset"),
            )
        })
}

pub fn parse_uuid(field: &str, s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(s).map_err(|_| ApiError::field(field, "invalid_id", format!("{field} must be a UUID")))
}
