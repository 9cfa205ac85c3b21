//! The workspace's signing secret: read it (to configure receivers) and rotate it.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use cronbox_domain::workspace::{Role, WorkspaceCommand};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Fields, JsonObject};
use crate::AppState;

const DEFAULT_OVERLAP_SECONDS: i64 = 86_400;
const MAX_OVERLAP_SECONDS: i64 = 7 * 86_400;

/// The current secret and when the older ones still in force stop signing.
#[utoipa::path(
    get,
    path = "/signing-secret",
    tag = "signing",
    summary = "The workspace's signing secret (admin)",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "The current secret; older ones still signing are listed without their value", body = crate::openapi::schemas::SigningSecretView)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let secrets = state
        .keyring
        .in_force(caller.workspace_id)
        .await
        .map_err(ApiError::internal)?;
    let current = secrets
        .iter()
        .find(|s| s.expires_at.is_none())
        .ok_or_else(|| ApiError::internal(std::io::Error::other("no current signing secret after creating one")))?;
    let previous: Vec<Value> = secrets
        .iter()
        .filter(|s| s.expires_at.is_some())
        .map(|s| json!({"id": s.id, "created_at": s.created_at, "expires_at": s.expires_at}))
        .collect();
    Ok(Json(json!({
        "id": current.id,
        "secret": current.secret.to_whsec(),
        "created_at": current.created_at,
        "previous": previous,
    })))
}

/// Makes a new secret. The previous one keeps signing alongside it for `overlap_seconds`
/// (default one day, 0 to stop it at once, at most 7 days), so receivers can switch over.
#[utoipa::path(
    post,
    path = "/signing-secret/rotate",
    tag = "signing",
    summary = "Rotate the signing secret (admin)",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::RotateSecret,
    responses((status = 200, description = "The new secret", body = crate::openapi::schemas::SigningSecretRotated)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let mut f = Fields(body);
    let overlap = f.int("overlap_seconds")?.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    f.finish()?;
    if !(0..=MAX_OVERLAP_SECONDS).contains(&overlap) {
        return Err(ApiError::field(
            "overlap_seconds",
            "out_of_range",
            format!("overlap_seconds must be between 0 and {MAX_OVERLAP_SECONDS}"),
        ));
    }
    let (secret, previous_expires_at) = state
        .keyring
        .rotate(caller.workspace_id, chrono::Duration::seconds(overlap))
        .await
        .map_err(ApiError::internal)?;
    let cmd = WorkspaceCommand::RecordSecretRotation {
        secret_id: secret.id,
        previous_expires_at,
        at: Utc::now(),
    };
    crate::workspaces::execute(&state.stores, caller.workspace_id, cmd).await?;
    tracing::info!(workspace_id = %caller.workspace_id, secret_id = %secret.id, overlap, "signing secret rotated");
    Ok(Json(json!({
        "id": secret.id,
        "secret": secret.secret.to_whsec(),
        "created_at": secret.created_at,
        "previous_expires_at": previous_expires_at,
    })))
}
