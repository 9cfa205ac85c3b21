//! What every request passes through: a request id (taken from a well-formed `X-Request-Id`
//! or made up), a tracing span carrying it, the per-address rate limit of unauthenticated
//! routes, and the `RateLimit-*` headers of whichever limit applied.
//!
//! Authenticated requests are limited where they are authenticated (the `Caller` and
//! `UserCaller` extractors), because only there is the key, user and plan known; they leave
//! their quota in the [`RequestContext`] for this layer to turn into headers, on errors too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::ApiError;
use crate::rate_limit::{Quota, Subject};
use crate::AppState;

pub const REQUEST_ID: &str = "x-request-id";

/// Per-request state shared between this layer and the extractors.
#[derive(Debug)]
pub struct RequestContext {
    pub id: String,
    quota: Mutex<Option<Quota>>,
}

impl RequestContext {
    pub fn set_quota(&self, q: Quota) {
        if let Ok(mut slot) = self.quota.lock() {
            *slot = Some(q);
        }
    }
    fn quota(&self) -> Option<Quota> {
        self.quota.lock().ok().and_then(|q| *q)
    }
}

/// A client's id is kept if it is 1–128 of `A-Z a-z 0-9 - _ . :`, so it can go into logs and
/// headers as is; anything else is replaced.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Routes that need no credentials, limited per client address instead.
fn public(path: &str) -> bool {
    path.starts_with("/v1/auth/") || matches!(path, "/v1/plans" | "/v1/cron/preview" | "/v1/openapi.json" | "/docs")
}

pub async fn layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ctx = Arc::new(RequestContext {
        id: request_id(&req),
        quota: Mutex::new(None),
    });
    req.extensions_mut().insert(ctx.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let address = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    // At error level so the span (and its request_id) exists whatever RUST_LOG lets through.
    let span = tracing::error_span!("request", request_id = %ctx.id, %method, %path);
    // A NUL or non-UTF-8 byte in the path or query reaches no handler: it could only end in a
    // database refusal (500) or, stored, in a read model that cannot hold it.
    let refused = crate::input::check_uri(req.uri()).err();
    async move {
        let started = Instant::now();
        let mut resp = match address.filter(|_| public(&path)) {
            _ if refused.is_some() => refused.map(IntoResponse::into_response).unwrap_or_default(),
            Some(ip) => match state
                .limiter
                .hit(&Subject::Address(ip), state.limiter.per_address)
                .await
            {
                Some(q) if !q.allowed => {
                    ctx.set_quota(q);
                    ApiError::TooManyRequests {
                        retry_after: u64::from(q.reset.max(1)),
                    }
                    .into_response()
                }
                q => {
                    if let Some(q) = q {
                        ctx.set_quota(q);
                    }
                    next.run(req).await
                }
            },
            None => next.run(req).await,
        };
        if let Some(q) = ctx.quota() {
            q.write_headers(resp.headers_mut());
        }
        if let Ok(v) = HeaderValue::from_str(&ctx.id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        let status = resp.status().as_u16();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(status, ms, "request failed");
        } else {
            tracing::debug!(status, ms, "request");
        }
        resp
    }
    .instrument(span)
    .await
}

/// Counts a request of an authenticated subject against `limit` per minute; the quota goes to
/// the response headers, and over the limit the request is refused.
pub async fn limit(
    state: &AppState,
    parts: &axum::http::request::Parts,
    subject: Subject,
    limit: u32,
) -> Result<(), ApiError> {
    limit_all(state, parts, &[(subject, limit)]).await
}

/// [`limit`] for several subjects at once (a key and its workspace): refused if any is over.
pub async fn limit_all(
    state: &AppState,
    parts: &axum::http::request::Parts,
    subjects: &[(Subject, u32)],
) -> Result<(), ApiError> {
    let Some(q) = state.limiter.hit_all(subjects).await else {
        return Ok(());
    };
    if let Some(ctx) = parts.extensions.get::<Arc<RequestContext>>() {
        ctx.set_quota(q);
    }
    if q.allowed {
        Ok(())
    } else {
        Err(ApiError::TooManyRequests {
            retry_after: u64::from(q.reset.max(1)),
        })
    }
}
