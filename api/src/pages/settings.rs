//! A workspace's settings: members, invitations and API keys (the secret of a new key is shown
//! on the page that answers its creation, once, and never again).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use cronbox_domain::workspace::Role;
use uuid::Uuid;

use super::workspaces::role_key;
use super::{error_text, html, see_other, Chrome, Member, PageError, PageResult, Posted};
use crate::error::ApiError;
use crate::workspaces as ws;
use crate::AppState;

struct Invite {
    id: Uuid,
    email: String,
    role: &'static str,
    expires: String,
}

struct Key {
    id: Uuid,
    name: String,
    prefix: String,
    read_only: bool,
    revoked: bool,
    last_used: String,
}

#[derive(Template)]
#[template(path = "app/settings.html")]
struct SettingsPage {
    c: Chrome,
    base: String,
    is_admin: bool,
    members: Vec<(String, String, &'static str)>,
    invites: Vec<Invite>,
    keys: Vec<Key>,
    roles: [(&'static str, &'static str); 4],
    new_key: Option<String>,
    error: Option<String>,
}

async fn render(
    state: &AppState,
    m: &Member,
    status: StatusCode,
    new_key: Option<String>,
    error: Option<String>,
    notice: Option<String>,
) -> PageResult {
    let tr = m.tr();
    let is_admin = m.caller.role >= Role::Admin;
    let members = ws::member_list(state, &m.caller)
        .await?
        .into_iter()
        .map(|x| (x.name, x.email, role_key(x.role.as_str())))
        .collect();
    let now = chrono::Utc::now();
    let (invites, keys) = if is_admin {
        let invites = m
            .caller
            .workspace
            .invites
            .iter()
            .filter(|i| i.pending(now))
            .map(|i| Invite {
                id: i.invite_id,
                email: i.email.clone(),
                role: role_key(i.role.as_str()),
                expires: tr.f("settings.expires", &[("when", &tr.relative(i.expires_at, now))]),
            })
            .collect();
        let keys = ws::keys_of(state, &m.caller)
            .await?
            .into_iter()
            .map(|(k, used)| Key {
                id: k.key_id,
                name: k.name,
                prefix: k.prefix,
                read_only: k.read_only,
                revoked: k.revoked,
                last_used: used.map_or_else(|| tr.t("settings.never_used").to_string(), |t| tr.relative(t, now)),
            })
            .collect();
        (invites, keys)
    } else {
        (Vec::new(), Vec::new())
    };
    let page = SettingsPage {
        c: Chrome::for_member(m, tr.t("settings.title"), "settings").notice(notice),
        base: m.href(""),
        is_admin,
        members,
        invites,
        keys,
        roles: [
            ("viewer", "role.viewer"),
            ("member", "role.member"),
            ("admin", "role.admin"),
            ("owner", "role.owner"),
        ],
        new_key,
        error,
    };
    Ok(html(status, &page, &m.visitor.set_cookies))
}

pub async fn page(State(state): State<AppState>, m: Member, Query(q): Query<HashMap<String, String>>) -> PageResult {
    let notice = super::notice(m.tr(), &q);
    render(&state, &m, StatusCode::OK, None, None, notice).await
}

/// Renders a refusal on the settings page (a 4xx with its reason), or passes a 5xx on.
async fn refused(state: &AppState, m: &Member, e: ApiError) -> PageResult {
    let (status, code, _) = e.classify();
    if status.is_server_error() || status == StatusCode::NOT_FOUND {
        return Err(PageError::Api(e));
    }
    let text = error_text(m.tr(), code, &e.to_string());
    render(state, m, status, None, Some(text), None).await
}

pub async fn invite(State(state): State<AppState>, m: Member, form: Posted) -> PageResult {
    let email = form.get("email").unwrap_or_default();
    let role = Role::parse(form.get("role").as_deref().unwrap_or("member")).ok_or_else(|| {
        ApiError::field(
            "role",
            "invalid_role",
            "role must be one of owner, admin, member, viewer",
        )
    })?;
    match ws::invite_member(&state, &m.caller, &email, role, m.visitor.lang).await {
        Ok(_) => Ok(see_other(&m.href("/settings?n=invited"))),
        Err(e) => refused(&state, &m, e).await,
    }
}

pub async fn revoke_invite(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    _form: Posted,
) -> PageResult {
    ws::revoke_invitation(&state, &m.caller, &id).await?;
    Ok(see_other(&m.href("/settings?n=invite_revoked")))
}

pub async fn create_key(State(state): State<AppState>, m: Member, form: Posted) -> PageResult {
    let name = form.get("name").unwrap_or_default();
    let read_only = form.get("read_only").is_some();
    match ws::new_key(&state, &m.caller, &name, read_only).await {
        Ok((key, _)) => {
            // The workspace as loaded for this request predates the key: load it again so the
            // list below the secret shows it.
            let user = match m.caller.principal {
                crate::auth::Principal::User(u) => u,
                crate::auth::Principal::ApiKey(_) => return Err(ApiError::Unauthorized.into()),
            };
            let caller = crate::auth::member_caller(&state, user, m.caller.workspace_id).await?;
            let m = Member { caller, ..m };
            render(&state, &m, StatusCode::CREATED, Some(key), None, None).await
        }
        Err(e) => refused(&state, &m, e).await,
    }
}

pub async fn revoke_key(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    _form: Posted,
) -> PageResult {
    ws::revoke_api_key(&state, &m.caller, &id).await?;
    Ok(see_other(&m.href("/settings?n=key_revoked")))
}
