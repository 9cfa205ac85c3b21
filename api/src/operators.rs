//! What operators (superusers) do to accounts and workspaces from the admin panel: find them,
//! shut or reopen an account, grant or withdraw the superuser right, move a workspace to a
//! plan, delete it. Each change is a command on the aggregate, so it is in the audit trail
//! with who did it.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use cronbox_domain::user::UserCommand;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::accounts::UserCaller;
use crate::error::ApiError;
use crate::input::{Fields, JsonObject};
use crate::AppState;

/// Rows a search shows at most.
pub const SEARCH_LIMIT: i64 = 50;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub superuser: bool,
    pub active: bool,
    pub verified: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub workspaces: i64,
}

/// Accounts whose e-mail contains `q` (all, without `q`), by address.
pub async fn find_users(state: &AppState, q: &str) -> Result<Vec<UserRow>, ApiError> {
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT e.user_id, e.email,
                (SELECT count(*) FROM workspace_members m WHERE m.user_id = e.user_id)
           FROM user_emails e
          WHERE $1::text IS NULL OR e.email ILIKE $1
          ORDER BY e.email LIMIT $2",
    )
    .bind(crate::input::contains_pattern(q)?)
    .bind(SEARCH_LIMIT)
    .fetch_all(&state.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, email, workspaces) in rows {
        let (u, _) = state
            .stores
            .users
            .load(&id.to_string())
            .await
            .map_err(ApiError::internal)?;
        if u.id.is_none() {
            continue;
        }
        out.push(UserRow {
            id,
            email,
            name: u.name.clone(),
            superuser: u.superuser,
            active: u.is_active(),
            verified: u.email_verified,
            created_at: u.created_at,
            workspaces,
        });
    }
    Ok(out)
}

/// An operator may not shut or demote themselves: the panel would lock out the one doing it.
fn not_self(by: &UserCaller, user_id: Uuid) -> Result<(), ApiError> {
    if by.user_id == user_id {
        return Err(ApiError::Conflict {
            code: "own_account",
            message: "you cannot do this to your own account".into(),
        });
    }
    Ok(())
}

async fn execute_user(state: &AppState, user_id: Uuid, cmd: UserCommand) -> Result<(), ApiError> {
    let (u, _) = state
        .stores
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if u.id.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    state
        .stores
        .users
        .execute(&user_id.to_string(), cmd)
        .await
        .map_err(ApiError::internal)
}

/// Deactivates (`active` false) or reactivates an account. A deactivated account cannot log
/// in, and every session it had is revoked: its cookies, refresh tokens and access tokens stop
/// working, and stay so after it is let back in.
pub async fn set_active(state: &AppState, by: &UserCaller, user_id: Uuid, active: bool) -> Result<(), ApiError> {
    crate::admin::require_superuser(by)?;
    not_self(by, user_id)?;
    let cmd = UserCommand::SetActive {
        active,
        by: by.user_id,
        at: Utc::now(),
    };
    execute_user(state, user_id, cmd).await?;
    // The checks of each session and token refuse a deactivated account anyway; revoking its
    // sessions as well records the end in each, and keeps them over once it is let back in.
    let ended = if active {
        0
    } else {
        crate::accounts::end_all_sessions(state, user_id, "account deactivated").await?
    };
    tracing::info!(user_id = %user_id, by = %by.user_id, active, sessions_ended = ended, "account activity changed by an operator");
    Ok(())
}

/// Grants or withdraws the superuser right.
pub async fn set_superuser(state: &AppState, by: &UserCaller, user_id: Uuid, superuser: bool) -> Result<(), ApiError> {
    crate::admin::require_superuser(by)?;
    not_self(by, user_id)?;
    let cmd = UserCommand::SetSuperuser {
        superuser,
        by: by.user_id,
        at: Utc::now(),
    };
    execute_user(state, user_id, cmd).await?;
    tracing::info!(user_id = %user_id, by = %by.user_id, superuser, "superuser right changed");
    Ok(())
}

#[derive(Debug, Clone)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub name: String,
    pub slug: Option<String>,
    pub plan: String,
    pub members: i64,
    pub cron_jobs: i64,
    pub created_at: DateTime<Utc>,
}

/// Live workspaces whose name or slug contains `q` (all, without `q`), newest first.
pub async fn find_workspaces(state: &AppState, q: &str) -> Result<Vec<WorkspaceRow>, ApiError> {
    type Row = (Uuid, String, Option<String>, String, DateTime<Utc>, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT w.id, w.name, w.slug, w.plan, w.created_at,
                (SELECT count(*) FROM workspace_members m WHERE m.workspace_id = w.id),
                (SELECT count(*) FROM jobs j WHERE j.workspace_id = w.id AND j.kind = 'cron' AND j.status <> 'deleted')
           FROM workspaces w
          WHERE NOT w.deleted AND ($1::text IS NULL OR w.name ILIKE $1 OR w.slug ILIKE $1)
          ORDER BY w.created_at DESC, w.id DESC LIMIT $2",
    )
    .bind(crate::input::contains_pattern(q)?)
    .bind(SEARCH_LIMIT)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, slug, plan, created_at, members, cron_jobs)| WorkspaceRow {
            id,
            name,
            slug,
            plan,
            members,
            cron_jobs,
            created_at,
        })
        .collect())
}

/// Moves a workspace to plan `code` (the API's `PUT …/plan` and the admin panel).
pub async fn set_plan(
    state: &AppState,
    by: &UserCaller,
    workspace_id: Uuid,
    code: &str,
) -> Result<crate::plans::Plan, ApiError> {
    crate::admin::require_superuser(by)?;
    let plan = crate::workspaces::set_plan(&state.stores, workspace_id, code).await?;
    tracing::info!(workspace_id = %workspace_id, plan = %plan.code, by = %by.user_id, "workspace plan changed");
    Ok(plan)
}

/// `PUT /v1/workspaces/{ws}/plan` (superusers only, until billing drives it): `{"plan": code}`.
#[utoipa::path(
    put,
    path = "/plan",
    tag = "plans",
    summary = "Move a workspace to another plan (superusers; 404 for others)",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::SetPlan,
    responses((status = 200, description = "The new plan", body = crate::openapi::schemas::PlanChanged), (status = 404, description = "Not a superuser, or no such workspace", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn set_plan_route(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
    Path(ws): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    // Only operators move plans; everyone else (API keys and bad tokens included) gets the
    // answer for a workspace that is not theirs.
    let user = match user {
        Ok(u) if u.user.superuser => u,
        _ => return Err(ApiError::NotFound("workspace")),
    };
    let id = uuid::Uuid::parse_str(&ws).map_err(|_| ApiError::NotFound("workspace"))?;
    let mut f = Fields(body);
    let code = f
        .string("plan")?
        .ok_or_else(|| ApiError::field("plan", "required", "plan is required"))?;
    f.finish()?;
    let plan = set_plan(&state, &user, id, &code).await?;
    Ok(Json(json!({"workspace_id": id, "plan": plan.to_json()})))
}

/// Deletes a workspace as its owner would (the same gate, releases and revocations).
pub async fn delete_workspace(state: &AppState, by: &UserCaller, workspace_id: Uuid) -> Result<(), ApiError> {
    crate::admin::require_superuser(by)?;
    let (ws, _) = state
        .stores
        .workspaces
        .load(&workspace_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if ws.id.is_none() || ws.deleted {
        return Err(ApiError::NotFound("workspace"));
    }
    crate::workspaces::remove(state, workspace_id, ws.slug.as_deref()).await?;
    tracing::info!(workspace_id = %workspace_id, by = %by.user_id, "workspace deleted by an operator");
    Ok(())
}
