//! The one error type of the HTTP edge and its mapping to responses:
//! `{"error": {"code", "message", "field"}}`. Unexpected errors are logged with their whole
//! cause chain and answered with a generic 500; their details never reach the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cqrs_es::AggregateError;
use cronbox_domain::FieldError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
    /// One answer for every failed login, so it never tells which accounts exist.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// An access or refresh token that is malformed, expired, revoked or unknown.
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("too many attempts; retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// The workspace holds as many live streams as one process allows it (429 `too_many_streams`).
    #[error("this workspace already has {limit} live streams open here; close one first")]
    TooManyStreams { limit: usize },
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A member acting beyond their role.
    #[error("{0}")]
    Forbidden(String),
    /// Refused by a rule of the installation, with a code of its own (403): `email_unverified`,
    /// `workspace_limit`.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A command the workspace's plan does not allow (403 `plan_limit`).
    #[error("{0}")]
    PlanLimit(Box<PlanLimit>),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time (408 `body_timeout`).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// A batch with invalid items: nothing of it was stored (400 `invalid_items`).
    #[error("{} of {total} items are invalid; nothing was created", .items.len())]
    InvalidItems { total: usize, items: Vec<ItemError> },
    /// A feature the workspace's plan does not include (403 `plan_feature`).
    #[error("the {plan} plan does not include {feature}")]
    PlanFeature { feature: &'static str, plan: String },
    /// Something that existed and is gone for good, e.g. a cursor past retention (410).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// A feature this installation has not been set up for (503 `not_configured`).
    #[error("{0}")]
    NotConfigured(&'static str),
    #[error("service unavailable")]
    Unavailable,
    /// A bounded resource (password hashing) is at capacity: retry shortly (503 `busy`).
    #[error("too busy right now; retry in {retry_after} s")]
    Busy { retry_after: u64 },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why one item of a batch was refused.
#[derive(Debug, serde::Serialize)]
pub struct ItemError {
    pub index: usize,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl ItemError {
    /// The item-level form of a validation error; anything else is not the item's fault.
    pub fn of(index: usize, e: ApiError) -> Result<Self, ApiError> {
        match e {
            ApiError::BadRequest { code, message, field } => Ok(Self {
                index,
                code,
                field,
                message,
            }),
            ApiError::PlanLimit(p) => Ok(Self {
                index,
                code: "plan_limit",
                field: p.field.map(String::from),
                message: p.to_string(),
            }),
            other => Err(other),
        }
    }
}

/// Which limit of which plan a refused command ran into, and how far.
#[derive(Debug)]
pub struct PlanLimit {
    /// The plan column, e.g. `max_active_cron_jobs`.
    pub limit: &'static str,
    pub plan: String,
    pub plan_name: String,
    /// Current usage, or for per-job limits the value asked for.
    pub used: i64,
    pub allowed: i64,
    /// The request field at fault, for per-job limits.
    pub field: Option<&'static str>,
}

impl std::fmt::Display for PlanLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = self
            .limit
            .trim_start_matches("max_")
            .trim_start_matches("min_")
            .replace('_', " ");
        if self.limit.starts_with("min_") {
            write!(
                f,
                "the {} plan needs a {what} of at least {}; this asks for {}",
                self.plan_name, self.allowed, self.used
            )
        } else if self.field.is_some() {
            write!(
                f,
                "the {} plan allows at most {} {what}; this asks for {}",
                self.plan_name, self.allowed, self.used
            )
        } else {
            write!(
                f,
                "the {} plan allows {} {what}; the workspace has {}",
                self.plan_name, self.allowed, self.used
            )
        }
    }
}

impl ApiError {
    pub fn field(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::BadRequest {
            code: e.code,
            message: e.message,
            field: Some(e.field),
        }
    }
}

impl From<cronbox_store::StoreError> for ApiError {
    fn from(e: cronbox_store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

/// Maps command failures: business-rule rejections are the client's, the rest are ours.
pub fn from_aggregate<E, F>(e: AggregateError<E>, user: F) -> ApiError
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(E) -> ApiError,
{
    match e {
        AggregateError::UserError(u) => user(u),
        AggregateError::AggregateConflict => ApiError::Conflict {
            code: "concurrent_modification",
            message: "the resource was modified concurrently; retry the request".into(),
        },
        other => ApiError::Internal(Box::new(other)),
    }
}

impl ApiError {
    /// The status, the error code and the field it concerns: the same for every edge (the
    /// JSON body here, the web app's error pages and form messages).
    pub fn classify(&self) -> (StatusCode, &'static str, Option<String>) {
        match self {
            ApiError::BadRequest { code, field, .. } => (StatusCode::BAD_REQUEST, *code, field.clone()),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials", None),
            ApiError::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token", None),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            ApiError::TooManyStreams { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::Refused { code, .. } => (StatusCode::FORBIDDEN, *code, None),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, *code, None),
            ApiError::PlanLimit(p) => (StatusCode::FORBIDDEN, "plan_limit", p.field.map(String::from)),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", None),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout", None),
            ApiError::InvalidItems { .. } => (StatusCode::BAD_REQUEST, "invalid_items", Some("items".to_string())),
            ApiError::PlanFeature { .. } => (StatusCode::FORBIDDEN, "plan_feature", None),
            ApiError::Gone { code, .. } => (StatusCode::GONE, *code, None),
            ApiError::NotConfigured(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_configured", None),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }

    /// Logs an unexpected error with its whole cause chain (its details never reach a client).
    pub fn log_if_internal(&self) {
        if let ApiError::Internal(e) = self {
            let mut chain = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                src = s.source();
            }
            tracing::error!(error = %chain, "internal error");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let (status, code, field) = self.classify();
        let mut body = json!({"error": {"code": code, "message": self.to_string(), "field": field}});
        if let ApiError::PlanLimit(p) = &self {
            body["error"]["limit"] = json!(p.limit);
            body["error"]["plan"] = json!(p.plan);
            body["error"]["usage"] = json!(p.used);
            body["error"]["allowed"] = json!(p.allowed);
        }
        if let ApiError::InvalidItems { items, .. } = &self {
            body["error"]["items"] = json!(items);
        }
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after } | ApiError::Busy { retry_after } = &self {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
