//! Authentication of API requests: `Authorization: Bearer <api key>`.
//!
//! A key names its workspace (`cbx_<workspace id>_<secret>`), so authentication loads exactly
//! one workspace aggregate from the event store and compares hashes — no cache, so a revoked key
//! fails at once on every API process. A key that is valid but for another workspace than the
//! one in the path gets 404, like any other workspace's resource: the answer never confirms that
//! someone else's workspace exists.
//!
//! Kept separate from the handlers so user sessions (next issue) plug in as another way to
//! produce a [`Caller`].

use std::collections::HashMap;

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Path};
use axum::http::request::Parts;
use rand::RngCore;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// An authenticated caller acting in one workspace.
#[derive(Debug, Clone)]
pub struct Caller {
    pub workspace_id: Uuid,
    pub key_id: Uuid,
    /// The workspace's default timezone for new cron jobs.
    pub timezone: String,
}

/// Generates a new API key for a workspace: (full key, display prefix).
pub fn new_api_key(workspace_id: Uuid) -> (String, String) {
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("cbx_{}_{}", workspace_id.simple(), hex_lower(&secret));
    let prefix = key.chars().take(12).collect();
    (key, prefix)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn workspace_of_key(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix("cbx_")?;
    let (ws, secret) = rest.split_once('_')?;
    if secret.len() < 32 {
        return None;
    }
    Uuid::try_parse(ws).ok()
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Checks the key and returns its workspace.
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    let key = bearer(parts).ok_or(ApiError::Unauthorized)?;
    let ws = workspace_of_key(key).ok_or(ApiError::Unauthorized)?;
    let (workspace, _) = state
        .stores
        .workspaces
        .load(&ws.to_string())
        .await
        .map_err(ApiError::internal)?;
    let key_id = workspace.authenticate(key).ok_or(ApiError::Unauthorized)?.key_id;
    Ok(Caller {
        workspace_id: ws,
        key_id,
        timezone: workspace.timezone.clone(),
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = authenticate(state, parts).await?;
        // Routes under /v1/workspaces/{ws}: the key must belong to that workspace.
        let params: Path<HashMap<String, String>> =
            <Path<_> as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound("workspace"))?;
        if let Some(ws) = params.get("ws") {
            if Uuid::try_parse(ws).ok() != Some(caller.workspace_id) {
                return Err(ApiError::NotFound("workspace"));
            }
        }
        Ok(caller)
    }
}

/// For routes that work without a key but do more with one: no `Authorization` header means
/// anonymous; a header with a bad key is still a 401.
impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        if !parts.headers.contains_key(axum::http::header::AUTHORIZATION) {
            return Ok(None);
        }
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}
