//! Workspaces as users see them: create and list their own, settings, members and roles,
//! invitations, and API keys. Every command goes to the Workspace aggregate; lists of "my
//! workspaces" come from the `workspaces` read model.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use cronbox_domain::schedule::{parse_timezone, DEFAULT_TIMEZONE};
use cronbox_domain::user::normalize_email;
use cronbox_domain::workspace::{hash_api_key, Role, Workspace, WorkspaceCommand, WorkspaceError};
use cronbox_store::aggregates::Stores;
use rand::RngCore;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::accounts::UserCaller;
use crate::auth::{new_api_key, Caller, Principal};
use crate::error::{from_aggregate, ApiError};
use crate::input::{parse_uuid, Fields, JsonObject};
use crate::plans::{self, Plan};
use crate::AppState;

const INVITE_TTL_DAYS: i64 = 7;

fn workspace_error(e: WorkspaceError) -> ApiError {
    match e {
        WorkspaceError::InvalidName => ApiError::field("name", "invalid_name", e.to_string()),
        WorkspaceError::NotFound => ApiError::NotFound("workspace"),
        WorkspaceError::KeyNotFound => ApiError::NotFound("api key"),
        WorkspaceError::MemberNotFound => ApiError::NotFound("member"),
        WorkspaceError::InviteNotFound => ApiError::NotFound("invitation"),
        WorkspaceError::InvalidInvite => ApiError::field("token", "invalid_invite", e.to_string()),
        WorkspaceError::OwnerOnly => ApiError::Forbidden(e.to_string()),
        WorkspaceError::LastOwner => ApiError::Conflict {
            code: "last_owner",
            message: e.to_string(),
        },
        WorkspaceError::AlreadyMember => ApiError::Conflict {
            code: "already_member",
            message: e.to_string(),
        },
        // Handlers that can hit a limit map it with the plan (see `execute_limited`).
        WorkspaceError::LimitReached { .. } => ApiError::Forbidden(e.to_string()),
        WorkspaceError::AlreadyExists | WorkspaceError::KeyExists => ApiError::Conflict {
            code: "already_exists",
            message: e.to_string(),
        },
    }
}

pub(crate) async fn execute(stores: &Stores, ws: Uuid, cmd: WorkspaceCommand) -> Result<Workspace, ApiError> {
    let id = ws.to_string();
    stores
        .workspaces
        .execute(&id, cmd)
        .await
        .map_err(|e| from_aggregate(e, workspace_error))?;
    Ok(stores.workspaces.load(&id).await.map_err(ApiError::internal)?.0)
}

/// Like [`execute`] for commands a plan limits (new keys, new members): the refusal names the
/// plan and usage.
async fn execute_limited(stores: &Stores, ws: Uuid, cmd: WorkspaceCommand, plan: &Plan) -> Result<Workspace, ApiError> {
    let id = ws.to_string();
    stores.workspaces.execute(&id, cmd).await.map_err(|e| {
        from_aggregate(e, |e| match e {
            WorkspaceError::LimitReached { what, used, limit } => plan.refused_list(what, used, limit),
            other => workspace_error(other),
        })
    })?;
    Ok(stores.workspaces.load(&id).await.map_err(ApiError::internal)?.0)
}

fn check_timezone(tz: &str) -> Result<(), ApiError> {
    parse_timezone(tz)
        .map(|_| ())
        .map_err(|e| ApiError::field("timezone", "invalid_timezone", e.to_string()))
}

/// 3–40 of `a-z 0-9 -`, not starting or ending with `-`: safe in URLs and unambiguous.
fn check_slug(slug: &str) -> Result<String, ApiError> {
    let ok = (3..=40).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if !ok {
        return Err(ApiError::field(
            "slug",
            "invalid_slug",
            "slug must be 3-40 of a-z, 0-9 and '-', not starting or ending with '-'",
        ));
    }
    Ok(slug.to_string())
}

/// Generates a slug from a name when none is given: the name's ASCII letters and digits plus a
/// random suffix, so it is practically always free.
fn slug_from(name: &str) -> String {
    let mut base: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(30);
    let base = base.trim_end_matches('-');
    let mut suffix = [0u8; 3];
    rand::rng().fill_bytes(&mut suffix);
    if base.is_empty() {
        format!("ws-{}", hex::encode(suffix))
    } else {
        format!("{base}-{}", hex::encode(suffix))
    }
}

async fn reserve_slug(pool: &PgPool, slug: &str, ws: Uuid) -> Result<(), ApiError> {
    let inserted =
        sqlx::query("INSERT INTO workspace_slugs (slug, workspace_id) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING")
            .bind(slug)
            .bind(ws)
            .execute(pool)
            .await?
            .rows_affected();
    if inserted == 0 {
        return Err(ApiError::Conflict {
            code: "slug_taken",
            message: format!("the slug {slug:?} is taken"),
        });
    }
    Ok(())
}

/// Counts workspace `ws` against the workspaces `user` may create (`limit`; None: no bound),
/// exactly under concurrency: a per-user lock serialises the count and the insert.
async fn reserve_creation(pool: &PgPool, user: Uuid, ws: Uuid, limit: Option<u32>) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('cronbox-user-workspaces:' || $1, 0))")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM workspace_creators WHERE user_id = $1")
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
    if let Some(limit) = limit.filter(|l| created >= i64::from(*l)) {
        return Err(ApiError::Refused {
            code: "workspace_limit",
            message: format!("you have created {created} workspaces; one account may have {limit} (delete one first)"),
        });
    }
    sqlx::query("INSERT INTO workspace_creators (workspace_id, user_id) VALUES ($1, $2)")
        .bind(ws)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn release_creation(pool: &PgPool, ws: Uuid) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM workspace_creators WHERE workspace_id = $1")
        .bind(ws)
        .execute(pool)
        .await?;
    Ok(())
}

async fn release_slug(pool: &PgPool, slug: &str, ws: Uuid) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM workspace_slugs WHERE slug = $1 AND workspace_id = $2")
        .bind(slug)
        .bind(ws)
        .execute(pool)
        .await?;
    Ok(())
}

fn workspace_json(w: &Workspace, role: Option<Role>) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "slug": w.slug,
        "timezone": w.timezone,
        "plan": w.plan(),
        "role": role.map(Role::as_str),
        "created_at": w.created_at,
    })
}

/// Creates a workspace on `plan` and its first API key (the CLI's `workspace create`). Returns
/// (workspace id, the key — shown once).
pub async fn create_workspace(
    stores: &Stores,
    name: &str,
    timezone: &str,
    plan: &str,
) -> Result<(Uuid, String), ApiError> {
    check_timezone(timezone)?;
    let plan = plans::find(&stores.pool, plan)
        .await?
        .ok_or_else(|| ApiError::field("plan", "unknown", format!("no plan is called {plan:?}")))?;
    let id = Uuid::new_v4();
    let cmd = WorkspaceCommand::Create {
        workspace_id: id,
        name: name.to_string(),
        timezone: timezone.to_string(),
        slug: None,
        owner: None,
        plan: Some(plan.code),
        at: Utc::now(),
    };
    execute(stores, id, cmd).await?;
    let (key, _) = create_api_key(stores, id, "default", false, None).await?;
    Ok((id, key))
}

/// Moves a workspace to another plan (the CLI's `workspace set-plan`, the admin API).
pub async fn set_plan(stores: &Stores, workspace_id: Uuid, plan: &str) -> Result<Plan, ApiError> {
    let plan = plans::find(&stores.pool, plan)
        .await?
        .ok_or_else(|| ApiError::field("plan", "unknown", format!("no plan is called {plan:?}")))?;
    let cmd = WorkspaceCommand::SetPlan {
        plan: plan.code.clone(),
        at: Utc::now(),
    };
    execute(stores, workspace_id, cmd).await?;
    Ok(plan)
}

/// Returns (the key — shown once, its id).
pub async fn create_api_key(
    stores: &Stores,
    workspace_id: Uuid,
    name: &str,
    read_only: bool,
    plan: Option<&Plan>,
) -> Result<(String, Uuid), ApiError> {
    let (key, prefix) = new_api_key(workspace_id);
    let key_id = Uuid::new_v4();
    let cmd = WorkspaceCommand::CreateApiKey {
        key_id,
        name: name.to_string(),
        prefix,
        secret_hash: hash_api_key(&key),
        read_only,
        max_keys: plan.and_then(Plan::max_api_keys),
        at: Utc::now(),
    };
    match plan {
        Some(plan) => execute_limited(stores, workspace_id, cmd, plan).await?,
        None => execute(stores, workspace_id, cmd).await?,
    };
    Ok((key, key_id))
}

/// `POST /v1/workspaces`: the caller becomes its owner.
#[utoipa::path(
    post,
    path = "/v1/workspaces",
    tag = "workspaces",
    summary = "Create a workspace (you become its owner)",
    request_body = crate::openapi::schemas::WorkspaceCreate,
    responses((status = 201, description = "The workspace", body = crate::openapi::schemas::Workspace), (status = 403, description = "`email_unverified`: verify the address first; `workspace_limit`: the account has created as many workspaces as allowed", body = crate::openapi::schemas::ErrorResponse), (status = 409, description = "`slug_taken`: the slug is in use", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    user: UserCaller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Fields(body);
    let name = f
        .string("name")?
        .ok_or_else(|| ApiError::field("name", "required", "name is required"))?;
    let slug = f.string("slug")?;
    let timezone = f.string("timezone")?;
    f.finish()?;
    let ws = open_workspace(&state, &user, name, slug, timezone).await?;
    Ok((StatusCode::CREATED, Json(workspace_json(&ws, Some(Role::Owner)))))
}

/// Creates a workspace owned by `user` (the API and the web app): checks the name, slug and
/// time zone, the verified address and the per-user limit.
pub async fn open_workspace(
    state: &AppState,
    user: &UserCaller,
    name: String,
    slug: Option<String>,
    timezone: Option<String>,
) -> Result<Workspace, ApiError> {
    let slug = slug.map(|s| check_slug(&s)).transpose()?;
    let timezone = timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.to_string());
    check_timezone(&timezone)?;
    if name.trim().is_empty() || name.trim().chars().count() > 200 {
        return Err(workspace_error(WorkspaceError::InvalidName));
    }
    // A verified address: workspaces (and the plan allowances each brings) are not free to
    // multiply from throwaway sign-ups.
    if !user.user.email_verified && !user.user.superuser {
        return Err(ApiError::Refused {
            code: "email_unverified",
            message: "verify your e-mail address (the link in the mail we sent) before creating a workspace".into(),
        });
    }
    let id = Uuid::new_v4();
    let limit = (!user.user.superuser).then_some(state.max_workspaces_per_user);
    reserve_creation(&state.pool, user.user_id, id, limit).await?;
    let slug = slug.unwrap_or_else(|| slug_from(&name));
    if let Err(e) = reserve_slug(&state.pool, &slug, id).await {
        release_creation(&state.pool, id).await?;
        return Err(e);
    }
    let cmd = WorkspaceCommand::Create {
        workspace_id: id,
        name,
        timezone,
        slug: Some(slug.clone()),
        owner: Some(user.user_id),
        plan: None,
        at: Utc::now(),
    };
    let ws = match execute(&state.stores, id, cmd).await {
        Ok(ws) => ws,
        Err(e) => {
            release_slug(&state.pool, &slug, id).await?;
            release_creation(&state.pool, id).await?;
            return Err(e);
        }
    };
    tracing::info!(workspace_id = %id, user_id = %user.user_id, "workspace created");
    Ok(ws)
}

/// (id, name, slug, timezone, role, created_at)
type MyWorkspaceRow = (Uuid, String, Option<String>, String, String, DateTime<Utc>);

/// `GET /v1/workspaces`: the caller's workspaces with their role in each.
#[utoipa::path(
    get,
    path = "/v1/workspaces",
    tag = "workspaces",
    summary = "Your workspaces with your role in each",
    responses((status = 200, description = "Workspaces", body = crate::openapi::schemas::WorkspaceList)),
    security(("access_token" = []))
)]
pub async fn list(State(state): State<AppState>, user: UserCaller) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = of_user(&state, user.user_id)
        .await?
        .into_iter()
        .map(|w| {
            json!({"id": w.id, "name": w.name, "slug": w.slug, "timezone": w.timezone, "role": w.role, "created_at": w.created_at})
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// A workspace someone is a member of, as their list shows it.
#[derive(Debug, Clone)]
pub struct MyWorkspace {
    pub id: Uuid,
    pub name: String,
    pub slug: Option<String>,
    pub timezone: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

/// The workspaces `user` is a member of, oldest first.
pub async fn of_user(state: &AppState, user: Uuid) -> Result<Vec<MyWorkspace>, ApiError> {
    let rows: Vec<MyWorkspaceRow> = sqlx::query_as(
        "SELECT w.id, w.name, w.slug, w.timezone, m.role, w.created_at
           FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id
          WHERE m.user_id = $1 AND NOT w.deleted
          ORDER BY w.created_at, w.id",
    )
    .bind(user)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, slug, timezone, role, created_at)| MyWorkspace {
            id,
            name,
            slug,
            timezone,
            role,
            created_at,
        })
        .collect())
}

#[utoipa::path(
    get,
    path = "/",
    tag = "workspaces",
    summary = "Get a workspace",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "The workspace", body = crate::openapi::schemas::Workspace)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get(caller: Caller) -> Json<Value> {
    Json(workspace_json(&caller.workspace, Some(caller.role)))
}

#[utoipa::path(
    patch,
    path = "/",
    tag = "workspaces",
    summary = "Change name, slug or timezone (admin)",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::WorkspaceUpdate,
    responses((status = 200, description = "The workspace", body = crate::openapi::schemas::Workspace), (status = 409, description = "`slug_taken`", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let mut f = Fields(body);
    let name = f.string("name")?;
    let timezone = f.string("timezone")?;
    let slug = f.string("slug")?.map(|s| check_slug(&s)).transpose()?;
    f.finish()?;
    if let Some(tz) = &timezone {
        check_timezone(tz)?;
    }
    let old_slug = caller.workspace.slug.clone();
    let new_slug = slug.filter(|s| Some(s) != old_slug.as_ref());
    if let Some(s) = &new_slug {
        reserve_slug(&state.pool, s, caller.workspace_id).await?;
    }
    let cmd = WorkspaceCommand::Update {
        name,
        timezone,
        slug: new_slug.clone(),
        at: Utc::now(),
    };
    let ws = match execute(&state.stores, caller.workspace_id, cmd).await {
        Ok(ws) => ws,
        Err(e) => {
            if let Some(s) = &new_slug {
                release_slug(&state.pool, s, caller.workspace_id).await?;
            }
            return Err(e);
        }
    };
    if let (Some(_), Some(old)) = (&new_slug, &old_slug) {
        release_slug(&state.pool, old, caller.workspace_id).await?;
    }
    Ok(Json(workspace_json(&ws, Some(caller.role))))
}

#[utoipa::path(
    delete,
    path = "/",
    tag = "workspaces",
    summary = "Delete a workspace (owner)",
    params(crate::openapi::WsPath),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn delete(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    caller.require(Role::Owner)?;
    remove(&state, caller.workspace_id, caller.workspace.slug.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes workspace `workspace_id` (whose slug is `slug`): the owner's `DELETE` and an
/// operator's, once each has been allowed.
pub async fn remove(state: &AppState, workspace_id: Uuid, slug: Option<&str>) -> Result<(), ApiError> {
    // Under the workspace gate: no fire of it is recorded while the deletion commits, and every
    // fire after it sees the deletion (the dispatcher then stops its jobs, waiting runs,
    // retries and callbacks, each with an event saying why).
    let gate = cronbox_store::job_gate::hold_workspace(&state.gates, workspace_id).await?;
    execute(&state.stores, workspace_id, WorkspaceCommand::Delete { at: Utc::now() }).await?;
    gate.commit().await?;
    // The slug is free again for anyone, and the workspace no longer counts for its creator.
    if let Some(slug) = slug {
        release_slug(&state.pool, slug, workspace_id).await?;
    }
    release_creation(&state.pool, workspace_id).await?;
    // Its event subscriptions' credentials reach nothing from now on.
    crate::subscriptions::revoke_all(state, workspace_id).await?;
    tracing::info!(workspace_id = %workspace_id, "workspace deleted");
    Ok(())
}

#[utoipa::path(
    get,
    path = "/members",
    tag = "workspaces",
    summary = "List members",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "Members", body = crate::openapi::schemas::MemberList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn members(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = member_list(&state, &caller)
        .await?
        .into_iter()
        .map(|m| {
            json!({
                "user_id": m.user_id,
                "email": m.email,
                "name": m.name,
                "role": m.role.as_str(),
                "joined_at": m.joined_at,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// A member of a workspace with their account's name and address.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

/// The caller's workspace's members (any member may see who else is in it).
pub async fn member_list(state: &AppState, caller: &Caller) -> Result<Vec<MemberView>, ApiError> {
    let mut items = Vec::with_capacity(caller.workspace.members.len());
    for m in &caller.workspace.members {
        let (user, _) = state
            .stores
            .users
            .load(&m.user_id.to_string())
            .await
            .map_err(ApiError::internal)?;
        items.push(MemberView {
            user_id: m.user_id,
            email: user.email,
            name: user.name,
            role: m.role,
            joined_at: m.joined_at,
        });
    }
    Ok(items)
}

fn role_field(f: &mut Fields, default: Option<Role>) -> Result<Role, ApiError> {
    match f.string("role")? {
        Some(r) => Role::parse(&r).ok_or_else(|| {
            ApiError::field(
                "role",
                "invalid_role",
                "role must be one of owner, admin, member, viewer",
            )
        }),
        None => default.ok_or_else(|| ApiError::field("role", "required", "role is required")),
    }
}

#[utoipa::path(
    patch,
    path = "/members/{user_id}",
    tag = "workspaces",
    summary = "Change a member's role (admin; owners only for owners)",
    params(crate::openapi::WsUserPath),
    request_body = crate::openapi::schemas::RoleChange,
    responses((status = 200, description = "The new role", body = crate::openapi::schemas::RoleChanged), (status = 409, description = "`last_owner`: a workspace keeps at least one owner", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, user)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let user_id = parse_uuid("user_id", &user).map_err(|_| ApiError::NotFound("member"))?;
    let mut f = Fields(body);
    let role = role_field(&mut f, None)?;
    f.finish()?;
    let cmd = WorkspaceCommand::ChangeRole {
        user_id,
        role,
        by_role: caller.role,
        at: Utc::now(),
    };
    execute(&state.stores, caller.workspace_id, cmd).await?;
    Ok(Json(json!({"user_id": user_id, "role": role.as_str()})))
}

/// Removes a member; members may also remove themselves (leave), whatever their role.
#[utoipa::path(
    delete,
    path = "/members/{user_id}",
    tag = "workspaces",
    summary = "Remove a member, or leave",
    params(crate::openapi::WsUserPath),
    responses((status = 204, description = "Removed"), (status = 409, description = "`last_owner`", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user_id = parse_uuid("user_id", &user).map_err(|_| ApiError::NotFound("member"))?;
    let leaving = caller.principal == Principal::User(user_id);
    if !leaving {
        caller.require(Role::Admin)?;
    }
    let cmd = WorkspaceCommand::RemoveMember {
        user_id,
        by_role: (!leaving).then_some(caller.role),
        at: Utc::now(),
    };
    execute(&state.stores, caller.workspace_id, cmd).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/invites",
    tag = "workspaces",
    summary = "Invite by e-mail (admin); the token is mailed",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::InviteCreate,
    responses((status = 201, description = "The invitation", body = crate::openapi::schemas::Invite), (status = 403, description = "Role too low, or `plan_limit`: the plan does not allow it (with `limit`, `plan`, `usage`, `allowed`)", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let mut f = Fields(body);
    let email = f
        .string("email")?
        .ok_or_else(|| ApiError::field("email", "required", "email is required"))?;
    let role = role_field(&mut f, Some(Role::Member))?;
    f.finish()?;
    let lang = crate::notifications::header_language(&headers);
    let i = invite_member(&state, &caller, &email, role, lang).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": i.invite_id, "email": i.email, "role": i.role.as_str(), "expires_at": i.expires_at})),
    ))
}

/// An invitation sent.
#[derive(Debug, Clone)]
pub struct Invited {
    pub invite_id: Uuid,
    pub email: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

/// Invites `email` into the caller's workspace as `role` (admins and owners) and mails the
/// link in `lang`; refused when the plan's member limit is reached.
pub async fn invite_member(
    state: &AppState,
    caller: &Caller,
    email: &str,
    role: Role,
    lang: cronbox_domain::channel::Language,
) -> Result<Invited, ApiError> {
    caller.require(Role::Admin)?;
    let email = normalize_email(email)?;
    // Refused here already so nobody is invited into a team that cannot take them; accepting
    // checks again, exactly, since several invitations may be out at once.
    let plan = caller.plan(state).await?;
    let members = caller.workspace.members.len() as u32;
    if let Some(max) = plan.max_members().filter(|&m| members >= m) {
        return Err(plan.refused_list("members", members, max));
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("cbi_{}_{}", caller.workspace_id.simple(), hex::encode(secret));
    let invite_id = Uuid::new_v4();
    let expires_at = Utc::now() + Duration::days(INVITE_TTL_DAYS);
    let cmd = WorkspaceCommand::Invite {
        invite_id,
        email: email.clone(),
        role,
        token_hash: hash_api_key(&token),
        expires_at,
        by_role: caller.role,
        at: Utc::now(),
    };
    execute(&state.stores, caller.workspace_id, cmd).await?;
    let mut tx = state.pool.begin().await?;
    cronbox_notify::outbox::queue(
        &mut tx,
        &email,
        "invite",
        lang,
        json!({"token": token, "workspace": caller.workspace.name, "role": role.as_str(), "days": INVITE_TTL_DAYS}),
        &state.public_url,
    )
    .await
    .map_err(crate::accounts::mail_error)?;
    tx.commit().await?;
    Ok(Invited {
        invite_id,
        email,
        role,
        expires_at,
    })
}

#[utoipa::path(
    get,
    path = "/invites",
    tag = "workspaces",
    summary = "Pending invitations (admin)",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "Invitations not yet accepted, withdrawn or expired", body = crate::openapi::schemas::InviteList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list_invites(State(_state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let now = Utc::now();
    let items: Vec<Value> = caller
        .workspace
        .invites
        .iter()
        .filter(|i| i.pending(now))
        .map(|i| {
            json!({"id": i.invite_id, "email": i.email, "role": i.role.as_str(), "expires_at": i.expires_at,
                   "invited_at": i.invited_at})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(
    delete,
    path = "/invites/{id}",
    tag = "workspaces",
    summary = "Withdraw an invitation (admin): its token stops working",
    params(crate::openapi::WsIdPath),
    responses((status = 204, description = "Withdrawn")),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn revoke_invite(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    revoke_invitation(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Withdraws a pending invitation (admins and owners): its link stops working.
pub async fn revoke_invitation(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    caller.require(Role::Admin)?;
    let invite_id = Uuid::try_parse(id).map_err(|_| ApiError::NotFound("invitation"))?;
    let cmd = WorkspaceCommand::RevokeInvite {
        invite_id,
        at: Utc::now(),
    };
    execute(&state.stores, caller.workspace_id, cmd).await?;
    Ok(())
}

/// `POST /v1/invites/accept`: the logged-in user whose address was invited joins.
#[utoipa::path(
    post,
    path = "/v1/invites/accept",
    tag = "workspaces",
    summary = "Accept an invitation sent to your address",
    request_body = crate::openapi::schemas::InviteAccept,
    responses((status = 200, description = "The workspace joined", body = crate::openapi::schemas::Workspace), (status = 403, description = "`plan_limit`: the team is full", body = crate::openapi::schemas::ErrorResponse), (status = 409, description = "`already_member`", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn accept_invite(
    State(state): State<AppState>,
    user: UserCaller,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let mut f = Fields(body);
    let token = f
        .string("token")?
        .ok_or_else(|| ApiError::field("token", "required", "token is required"))?;
    f.finish()?;
    let workspace = join(&state, &user, &token).await?;
    let role = workspace.role_of(user.user_id);
    Ok(Json(workspace_json(&workspace, role)))
}

/// The workspace an invitation token is for, without accepting it (the web app's page asks
/// before it joins). None when the token names no live workspace.
pub async fn invited_to(state: &AppState, token: &str) -> Result<Option<Workspace>, ApiError> {
    let Some(ws) = token
        .strip_prefix("cbi_")
        .and_then(|r| r.split_once('_'))
        .and_then(|(ws, _)| Uuid::try_parse(ws).ok())
    else {
        return Ok(None);
    };
    let (target, _) = state
        .stores
        .workspaces
        .load(&ws.to_string())
        .await
        .map_err(ApiError::internal)?;
    Ok((target.id.is_some() && !target.deleted).then_some(target))
}

/// Accepts an invitation for `user` (its address must be the one invited), within the plan's
/// member limit; returns the workspace joined.
pub async fn join(state: &AppState, user: &UserCaller, token: &str) -> Result<Workspace, ApiError> {
    let invalid = || workspace_error(WorkspaceError::InvalidInvite);
    let ws = token
        .strip_prefix("cbi_")
        .and_then(|r| r.split_once('_'))
        .and_then(|(ws, _)| Uuid::try_parse(ws).ok())
        .ok_or_else(invalid)?;
    let (target, _) = state
        .stores
        .workspaces
        .load(&ws.to_string())
        .await
        .map_err(ApiError::internal)?;
    let plan = plans::of_workspace(state, target.plan()).await?;
    let cmd = WorkspaceCommand::AcceptInvite {
        token_hash: hash_api_key(token),
        user_id: user.user_id,
        email: user.user.email.clone(),
        max_members: plan.max_members(),
        at: Utc::now(),
    };
    // An unknown or deleted workspace is the same invalid invitation.
    let workspace = execute_limited(&state.stores, ws, cmd, &plan)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => invalid(),
            other => other,
        })?;
    tracing::info!(workspace_id = %ws, user_id = %user.user_id, "invitation accepted");
    Ok(workspace)
}

#[utoipa::path(
    post,
    path = "/keys",
    tag = "api keys",
    summary = "Create an API key (admin); the secret is shown once",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::ApiKeyCreate,
    responses((status = 201, description = "The key with its secret", body = crate::openapi::schemas::ApiKeyCreated), (status = 403, description = "Role too low, or `plan_limit`: the plan does not allow it (with `limit`, `plan`, `usage`, `allowed`)", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let mut f = Fields(body);
    let name = f.string("name")?.unwrap_or_else(|| "api key".into());
    let read_only = f.bool("read_only")?.unwrap_or(false);
    f.finish()?;
    let (key, stored) = new_key(&state, &caller, &name, read_only).await?;
    let mut v = key_json(&stored, None);
    v["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(v)))
}

/// Creates an API key for the caller's workspace (admins and owners): (the key, shown this
/// once; the stored key, which holds only its hash).
pub async fn new_key(
    state: &AppState,
    caller: &Caller,
    name: &str,
    read_only: bool,
) -> Result<(String, cronbox_domain::workspace::ApiKey), ApiError> {
    caller.require(Role::Admin)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::field(
            "name",
            "invalid_name",
            "name must be 1 to 100 characters",
        ));
    }
    let plan = caller.plan(state).await?;
    let (key, key_id) = create_api_key(&state.stores, caller.workspace_id, name, read_only, Some(&plan)).await?;
    let (ws, _) = state
        .stores
        .workspaces
        .load(&caller.workspace_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    let stored = ws
        .api_keys
        .iter()
        .find(|k| k.key_id == key_id)
        .ok_or(ApiError::NotFound("api key"))?;
    Ok((key, stored.clone()))
}

fn key_json(k: &cronbox_domain::workspace::ApiKey, last_used: Option<DateTime<Utc>>) -> Value {
    json!({
        "id": k.key_id,
        "name": k.name,
        "prefix": k.prefix,
        "read_only": k.read_only,
        "revoked": k.revoked,
        "created_at": k.created_at,
        "last_used_at": last_used,
    })
}

#[utoipa::path(
    get,
    path = "/keys",
    tag = "api keys",
    summary = "List API keys (without secrets)",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "Keys", body = crate::openapi::schemas::ApiKeyList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = keys_of(&state, &caller)
        .await?
        .iter()
        .map(|(k, used)| key_json(k, *used))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// The workspace's API keys (revoked ones too) with when each was last used (admins, owners).
pub async fn keys_of(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<(cronbox_domain::workspace::ApiKey, Option<DateTime<Utc>>)>, ApiError> {
    caller.require(Role::Admin)?;
    let used: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT key_id, last_used_at FROM api_key_usage WHERE workspace_id = $1")
            .bind(caller.workspace_id)
            .fetch_all(&state.pool)
            .await?;
    Ok(caller
        .workspace
        .api_keys
        .iter()
        .map(|k| (k.clone(), used.iter().find(|(id, _)| *id == k.key_id).map(|(_, t)| *t)))
        .collect())
}

#[utoipa::path(
    delete,
    path = "/keys/{id}",
    tag = "api keys",
    summary = "Revoke an API key (admin)",
    params(crate::openapi::WsIdPath),
    responses((status = 204, description = "Revoked")),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    revoke_api_key(&state, &caller, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes an API key (admins and owners): every request with it fails from now on.
pub async fn revoke_api_key(state: &AppState, caller: &Caller, key: &str) -> Result<(), ApiError> {
    caller.require(Role::Admin)?;
    let key_id = parse_uuid("id", key).map_err(|_| ApiError::NotFound("api key"))?;
    execute(
        &state.stores,
        caller.workspace_id,
        WorkspaceCommand::RevokeApiKey { key_id, at: Utc::now() },
    )
    .await?;
    Ok(())
}
