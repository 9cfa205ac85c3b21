//! The `workspaces` and `workspace_members` read models: which workspaces a user belongs to,
//! with what role. Authorisation itself never reads them (it loads the aggregate); they serve
//! lists.

use cronbox_domain::workspace::WorkspaceEvent;
use cronbox_store::tail::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{ApplyFuture, Projection, ProjectionError};

pub struct WorkspacesProjection;

impl Projection for WorkspacesProjection {
    fn name(&self) -> &'static str {
        "workspaces"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["workspaces", "workspace_members"]
    }
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, ev: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if ev.aggregate_type != "Workspace" {
                return Ok(());
            }
            let event: WorkspaceEvent =
                serde::Deserialize::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
            let id = Uuid::parse_str(&ev.aggregate_id)
                .map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))?;
            apply(tx, id, event).await
        })
    }
}

async fn apply(tx: &mut PgConnection, id: Uuid, event: WorkspaceEvent) -> Result<(), ProjectionError> {
    match event {
        WorkspaceEvent::WorkspaceCreated {
            name,
            timezone,
            slug,
            plan,
            at,
            ..
        } => {
            sqlx::query(
                "INSERT INTO workspaces (id, name, slug, timezone, plan, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .bind(slug)
            .bind(timezone)
            .bind(plan.as_deref().unwrap_or(cronbox_domain::workspace::DEFAULT_PLAN))
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        WorkspaceEvent::WorkspaceUpdated {
            name,
            timezone,
            slug,
            at,
        } => {
            sqlx::query("UPDATE workspaces SET name = $2, timezone = $3, slug = $4, updated_at = $5 WHERE id = $1")
                .bind(id)
                .bind(name)
                .bind(timezone)
                .bind(slug)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        WorkspaceEvent::WorkspaceDeleted { at } => {
            sqlx::query("UPDATE workspaces SET deleted = true, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        WorkspaceEvent::MemberAdded { user_id, role, at, .. } => {
            sqlx::query(
                "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = $3",
            )
            .bind(id)
            .bind(user_id)
            .bind(role.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        WorkspaceEvent::MemberRoleChanged { user_id, role, .. } => {
            sqlx::query("UPDATE workspace_members SET role = $3 WHERE workspace_id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
        }
        WorkspaceEvent::MemberRemoved { user_id, .. } => {
            sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        WorkspaceEvent::WorkspacePlanChanged { plan, at } => {
            sqlx::query("UPDATE workspaces SET plan = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(plan)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        WorkspaceEvent::ApiKeyCreated { .. }
        | WorkspaceEvent::SigningSecretRotated { .. }
        | WorkspaceEvent::JobDefaultsChanged { .. }
        | WorkspaceEvent::ApiKeyRevoked { .. }
        | WorkspaceEvent::MemberInvited { .. }
        | WorkspaceEvent::InviteRevoked { .. } => {}
    }
    Ok(())
}
