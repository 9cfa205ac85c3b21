//! Creating workspaces and their API keys (used by the CLI now, by sign-up later).

use chrono::Utc;
use cronbox_domain::schedule::parse_timezone;
use cronbox_domain::workspace::{hash_api_key, WorkspaceCommand, WorkspaceError};
use cronbox_store::aggregates::Stores;
use uuid::Uuid;

use crate::auth::new_api_key;
use crate::error::{from_aggregate, ApiError};

fn workspace_error(e: WorkspaceError) -> ApiError {
    match e {
        WorkspaceError::InvalidName => ApiError::field("name", "invalid", e.to_string()),
        WorkspaceError::NotFound | WorkspaceError::KeyNotFound => ApiError::NotFound("workspace"),
        WorkspaceError::AlreadyExists | WorkspaceError::KeyExists => ApiError::Conflict {
            code: "already_exists",
            message: e.to_string(),
        },
    }
}

/// Creates a workspace and its first API key. Returns (workspace id, the key — shown once).
pub async fn create_workspace(stores: &Stores, name: &str, timezone: &str) -> Result<(Uuid, String), ApiError> {
    parse_timezone(timezone).map_err(|e| ApiError::field("timezone", "invalid_timezone", e.to_string()))?;
    let id = Uuid::new_v4();
    let now = Utc::now();
    stores
        .workspaces
        .execute(
            &id.to_string(),
            WorkspaceCommand::Create {
                workspace_id: id,
                name: name.to_string(),
                timezone: timezone.to_string(),
                at: now,
            },
        )
        .await
        .map_err(|e| from_aggregate(e, workspace_error))?;
    let key = create_api_key(stores, id, "default").await?;
    Ok((id, key))
}

pub async fn create_api_key(stores: &Stores, workspace_id: Uuid, name: &str) -> Result<String, ApiError> {
    let (key, prefix) = new_api_key(workspace_id);
    let cmd = WorkspaceCommand::CreateApiKey {
        key_id: Uuid::new_v4(),
        name: name.to_string(),
        prefix,
        secret_hash: hash_api_key(&key),
        at: Utc::now(),
    };
    stores
        .workspaces
        .execute(&workspace_id.to_string(), cmd)
        .await
        .map_err(|e| from_aggregate(e, workspace_error))?;
    Ok(key)
}
