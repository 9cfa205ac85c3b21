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

use axum::extract::{FromRequestParts, OptionalFromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::Method;
use cronbox_domain::workspace::{Role, Workspace};
use rand::RngCore;
use uuid::Uuid;

use crate::accounts;
use crate::error::ApiError;
use crate::rate_limit::Subject;
use crate::AppState;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    ApiKey(Uuid),
    User(Uuid),
}

/// An authenticated caller acting in one workspace, with the role it acts with: a user's
/// membership role, or for an API key `member` (`viewer` when the key is read-only).
#[derive(Debug, Clone)]
pub struct Caller {
    pub workspace_id: Uuid,
    pub principal: Principal,
    pub role: Role,
    /// The workspace's default timezone for new cron jobs.
    pub timezone: String,
    /// The workspace as loaded for this request (members, keys, settings).
    pub workspace: Workspace,
}

impl Caller {
    /// Whether credential header values are shown to this caller (admins and owners); below,
    /// they are masked like in the public event stream.
    pub fn sees_credentials(&self) -> bool {
        self.role >= Role::Admin
    }

    /// Refuses with 403 unless the caller's role is at least `role`. Only ever called after the
    /// caller proved membership, so the 403 reveals nothing they do not know.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role < role {
            return Err(ApiError::Forbidden(format!(
                "this needs the {} role; you have {}",
                role.as_str(),
                self.role.as_str()
            )));
        }
        Ok(())
    }
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

use crate::accounts::bearer;

impl Caller {
    /// The plan of the caller's workspace (its limits and features).
    pub async fn plan(&self, state: &AppState) -> Result<crate::plans::Plan, ApiError> {
        crate::plans::of_workspace(state, self.workspace.plan()).await
    }
}

async fn load_workspace(state: &AppState, ws: Uuid) -> Result<Workspace, ApiError> {
    let (workspace, _) = state
        .stores
        .workspaces
        .load(&ws.to_string())
        .await
        .map_err(ApiError::internal)?;
    Ok(workspace)
}

/// Authenticates the bearer token for workspace `ws` (the path's, or the API key's own when the
/// route has none). Another tenant's workspace is a 404, never a 403.
pub async fn authenticate(state: &AppState, parts: &Parts, ws: Option<Uuid>) -> Result<Caller, ApiError> {
    let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
    let caller = authenticate_token(state, token, ws).await?;
    if let Principal::ApiKey(key) = caller.principal {
        note_key_use(state, caller.workspace_id, key).await;
    }
    Ok(caller)
}

/// [`authenticate`] for a bearer token already taken out of its request (also how a long-lived
/// stream checks its caller again).
pub async fn authenticate_token(state: &AppState, token: &str, ws: Option<Uuid>) -> Result<Caller, ApiError> {
    let (workspace_id, workspace, principal, role) = if token.starts_with("cbx_") {
        let key_ws = workspace_of_key(token).ok_or(ApiError::Unauthorized)?;
        let workspace = load_workspace(state, key_ws).await?;
        let key = workspace.authenticate(token).ok_or(ApiError::Unauthorized)?;
        let role = if key.read_only { Role::Viewer } else { Role::Member };
        let principal = Principal::ApiKey(key.key_id);
        if ws.is_some_and(|w| w != key_ws) {
            return Err(ApiError::NotFound("workspace"));
        }
        (key_ws, workspace, principal, role)
    } else {
        let user = accounts::user_from_token(state, token).await?;
        let ws = ws.ok_or(ApiError::NotFound("workspace"))?;
        return member_caller(state, user.user_id, ws).await;
    };
    Ok(Caller {
        workspace_id,
        principal,
        role,
        timezone: workspace.timezone.clone(),
        workspace,
    })
}

/// A signed-in user acting in workspace `ws` with their membership role (an access token's
/// caller, and a browser session's in the web app). Not a member: 404.
pub async fn member_caller(state: &AppState, user: Uuid, ws: Uuid) -> Result<Caller, ApiError> {
    let workspace = load_workspace(state, ws).await?;
    let role = workspace.role_of(user).ok_or(ApiError::NotFound("workspace"))?;
    Ok(Caller {
        workspace_id: ws,
        principal: Principal::User(user),
        role,
        timezone: workspace.timezone.clone(),
        workspace,
    })
}

/// How often one process records a key's use.
const KEY_USE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Records that a key was used, at most once a minute per key. Best effort: a failure here must
/// not fail the request.
async fn note_key_use(state: &AppState, ws: Uuid, key: Uuid) {
    // The statement locks the key's row even when it changes nothing, and a busy client sends
    // every request with one key: without this, all its requests would queue on that row.
    static RECENT: std::sync::OnceLock<std::sync::Mutex<HashMap<Uuid, std::time::Instant>>> =
        std::sync::OnceLock::new();
    if let Ok(mut recent) = RECENT.get_or_init(Default::default).lock() {
        let now = std::time::Instant::now();
        if recent.get(&key).is_some_and(|t| now.duration_since(*t) < KEY_USE_EVERY) {
            return;
        }
        if recent.len() > 100_000 {
            recent.retain(|_, t| now.duration_since(*t) < KEY_USE_EVERY);
        }
        recent.insert(key, now);
    }
    let r = sqlx::query(
        "INSERT INTO api_key_usage (key_id, workspace_id, last_used_at) VALUES ($1, $2, now())
         ON CONFLICT (key_id) DO UPDATE SET last_used_at = now()
          WHERE api_key_usage.last_used_at < now() - interval '1 minute'",
    )
    .bind(key)
    .bind(ws)
    .execute(&state.pool)
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, key_id = %key, "cannot record API key use");
    }
}

fn path_workspace(parts: &Parts) -> Result<Option<Uuid>, ApiError> {
    // `/v1/workspaces/{ws}/...`, read from the URI as the client sent it: inside the nested
    // workspace router `parts.uri` has the prefix stripped.
    let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |o| &o.0);
    let mut segs = uri.path().trim_start_matches('/').split('/');
    match (segs.next(), segs.next(), segs.next()) {
        (Some("v1"), Some("workspaces"), Some(ws)) if !ws.is_empty() => Uuid::try_parse(ws)
            .map(Some)
            .map_err(|_| ApiError::NotFound("workspace")),
        _ => Ok(None),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ws = path_workspace(parts)?;
        let caller = authenticate(state, parts, ws).await?;
        let subject = match caller.principal {
            Principal::ApiKey(key) => Subject::ApiKey(key),
            Principal::User(user) => Subject::UserIn(user, caller.workspace_id),
        };
        let plan = caller.plan(state).await?;
        let rpm = u32::try_from(plan.requests_per_minute).unwrap_or(0);
        // The key's (or user's) count and the workspace's, both at the plan's rate.
        let subjects = [(subject, rpm), (Subject::Workspace(caller.workspace_id), rpm)];
        crate::edge::limit_all(state, parts, &subjects).await?;
        // Reading needs membership; anything else changes something and needs at least member.
        // Routes that need more (keys, members, settings) check it themselves.
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            caller.require(Role::Member)?;
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
        // A user token names no workspace: on routes without one it only identifies the user.
        if path_workspace(parts)?.is_none() && bearer(parts).is_some_and(|t| !t.starts_with("cbx_")) {
            return Ok(None);
        }
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}
