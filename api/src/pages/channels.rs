//! Notification channels: the list, adding an e-mail or webhook channel (its signing secret is
//! shown once), linking a Telegram chat with a code and a deep link, a test message, deleting,
//! and each channel's delivery log.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use cronbox_domain::channel::Language;
use cronbox_domain::workspace::Role;
use cronbox_notify::channels;
use uuid::Uuid;

use super::{error_text, html, see_other, Chrome, Member, PageError, PageResult, Posted};
use crate::error::ApiError;
use crate::notifications::{add_channel, notify_of};
use crate::AppState;

struct Row {
    id: Uuid,
    name: String,
    kind_key: String,
    target: String,
    status: String,
    status_key: String,
    disabled: Option<String>,
}

#[derive(Template)]
#[template(path = "app/channels.html")]
struct ListPage {
    c: Chrome,
    base: String,
    items: Vec<Row>,
    is_admin: bool,
    error: Option<String>,
    secret: Option<String>,
    /// A Telegram link: (deep link, code, expires in words).
    link: Option<(String, String, String)>,
}

fn channel_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| ApiError::NotFound("notification channel"))
}

async fn render(
    state: &AppState,
    m: &Member,
    status: StatusCode,
    error: Option<String>,
    secret: Option<String>,
    link: Option<(String, String, String)>,
    notice: Option<String>,
) -> PageResult {
    let tr = m.tr();
    let views = channels::list(notify_of(state)?, m.caller.workspace_id)
        .await
        .map_err(ApiError::from)?;
    let items = views
        .into_iter()
        .map(|v| Row {
            id: v.id,
            name: v.name,
            kind_key: format!("channels.kind_{}", v.kind),
            target: v.target,
            status_key: format!("channels.status_{}", v.status),
            status: v.status,
            disabled: v.disabled_detail.or(v.disabled_reason),
        })
        .collect();
    let page = ListPage {
        c: Chrome::for_member(m, tr.t("channels.title"), "channels").notice(notice),
        base: m.href(""),
        items,
        is_admin: m.caller.role >= Role::Admin,
        error,
        secret,
        link,
    };
    Ok(html(status, &page, &m.visitor.set_cookies))
}

pub async fn list(State(state): State<AppState>, m: Member, Query(q): Query<HashMap<String, String>>) -> PageResult {
    let notice = super::notice(m.tr(), &q);
    render(&state, &m, StatusCode::OK, None, None, None, notice).await
}

async fn refused(state: &AppState, m: &Member, e: ApiError) -> PageResult {
    let (status, code, field) = e.classify();
    if status.is_server_error() && code != "not_configured" {
        return Err(PageError::Api(e));
    }
    let text = error_text(m.tr(), code, &e.to_string());
    let text = field.map_or(text.clone(), |f| format!("{f}: {text}"));
    render(state, m, status, Some(text), None, None, None).await
}

pub async fn create(State(state): State<AppState>, m: Member, form: Posted) -> PageResult {
    let kind = form.get("type").unwrap_or_default();
    let name = form.get("name").unwrap_or_default();
    let target = form.get("target").unwrap_or_default();
    let language =
        Language::parse("language", form.get("language").as_deref().unwrap_or("ru")).map_err(ApiError::from)?;
    match add_channel(&state, &m.caller, &kind, &name, language, &target).await {
        Ok(created) => {
            super::until_row(
                &state,
                "SELECT id::text FROM notification_channels WHERE id = $1",
                created.view.id,
                None,
            )
            .await;
            let notice = Some(
                m.tr()
                    .t(if kind == "email" {
                        "notice.channel_confirm_sent"
                    } else {
                        "notice.channel_added"
                    })
                    .to_string(),
            );
            render(&state, &m, StatusCode::CREATED, None, created.secret, None, notice).await
        }
        Err(e) => refused(&state, &m, e).await,
    }
}

pub async fn telegram(State(state): State<AppState>, m: Member, _form: Posted) -> PageResult {
    m.caller.require(Role::Admin)?;
    let tr = m.tr();
    let result = match notify_of(&state) {
        Ok(n) => channels::telegram_link_code(n, m.caller.workspace_id, m.visitor.lang)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => {
            let expires = tr.relative(code.expires_at, chrono::Utc::now());
            let link = Some((
                code.deep_link,
                code.code,
                tr.f("settings.expires", &[("when", &expires)]),
            ));
            render(&state, &m, StatusCode::CREATED, None, None, link, None).await
        }
        Err(e) => refused(&state, &m, e).await,
    }
}

pub async fn test(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    _form: Posted,
) -> PageResult {
    m.caller.require(Role::Admin)?;
    channels::test(notify_of(&state)?, m.caller.workspace_id, channel_id(&id)?)
        .await
        .map_err(ApiError::from)?;
    Ok(see_other(&m.href(&format!("/channels/{id}?n=test_sent"))))
}

pub async fn delete(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    _form: Posted,
) -> PageResult {
    m.caller.require(Role::Admin)?;
    let cid = channel_id(&id)?;
    channels::delete(notify_of(&state)?, m.caller.workspace_id, cid)
        .await
        .map_err(ApiError::from)?;
    Ok(see_other(&m.href("/channels?n=channel_deleted")))
}

struct Delivery {
    at: String,
    status: String,
    status_key: String,
    attempts: i32,
    error: String,
    run: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "app/channel.html")]
struct ChannelPage {
    c: Chrome,
    base: String,
    kind_key: String,
    target: String,
    status: String,
    status_key: String,
    deliveries: Vec<Delivery>,
}

pub async fn detail(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let tr = m.tr();
    let n = notify_of(&state)?;
    let id = channel_id(&id)?;
    let v = channels::get(n, m.caller.workspace_id, id)
        .await
        .map_err(ApiError::from)?;
    let deliveries = channels::deliveries(n, m.caller.workspace_id, id, 50)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|d| Delivery {
            at: tr.when(d.created_at, &m.zone()),
            status_key: format!("delivery.{}", d.status),
            status: d.status,
            attempts: d.attempts,
            error: d.error.unwrap_or_default(),
            run: d.run_id,
        })
        .collect();
    let page = ChannelPage {
        c: Chrome::for_member(&m, &v.name, "channels").notice(super::notice(tr, &q)),
        base: m.href(""),
        kind_key: format!("channels.kind_{}", v.kind),
        target: v.target,
        status_key: format!("channels.status_{}", v.status),
        status: v.status,
        deliveries,
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}
