//! Notification channels, their delivery logs, Telegram linking and alerts:
//! `/v1/workspaces/{ws}/notification-channels…` and `/v1/workspaces/{ws}/alerts`. Thin
//! adapters over `cronbox_notify::channels`; admins manage channels, every member may read.
//!
//! Also the job fields for alert rules (`alert_after_failures`, `realert_every`,
//! `alert_channels`), parsed here for the job routes and the job defaults.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use cronbox_domain::alert::{format_interval, parse_interval, AlertRules};
use cronbox_domain::channel::Language;
use cronbox_domain::policy::JobDefaults;
use cronbox_domain::workspace::Role;
use cronbox_notify::channels::{self, NewChannel, Notify, NotifyError, Workspace};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Fields, JsonObject};
use crate::AppState;

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::NotFound(what) => ApiError::NotFound(what),
            NotifyError::Invalid(f) => f.into(),
            NotifyError::Conflict { code, message } => ApiError::Conflict { code, message },
            NotifyError::NotConfigured(what) => ApiError::NotConfigured(match what {
                "telegram" => "no Telegram bot is configured here (CRONBOX_TELEGRAM_BOT_TOKEN)",
                _ => "notifications are not configured here",
            }),
            NotifyError::BadToken => ApiError::BadRequest {
                code: "invalid_token",
                message: e.to_string(),
                field: Some("token".into()),
            },
            NotifyError::Database(d) => d.into(),
            NotifyError::Store(s) => ApiError::internal(std::io::Error::other(s)),
        }
    }
}

fn notify(state: &AppState) -> Result<&Notify, ApiError> {
    state
        .notify
        .as_ref()
        .ok_or(ApiError::NotConfigured("notifications are not configured here"))
}

fn channel_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| ApiError::NotFound("channel"))
}

/// The language of a request: `language` if given, else `Accept-Language`, else Russian.
pub fn request_language(f: &mut Fields, headers: &HeaderMap) -> Result<Language, ApiError> {
    match f.string("language")? {
        Some(l) => Ok(Language::parse("language", &l)?),
        None => Ok(header_language(headers)),
    }
}

pub fn header_language(headers: &HeaderMap) -> Language {
    headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(Language::from_accept_language)
        .unwrap_or_default()
}

/// The alert rules of a create (`current` None) or an update.
pub fn alert_rules(
    f: &mut Fields,
    current: Option<&AlertRules>,
    defaults: &JobDefaults,
    min_realert: u32,
) -> Result<AlertRules, ApiError> {
    let base = current.cloned().unwrap_or(AlertRules {
        after_failures: defaults.alert_after_failures.unwrap_or(1),
        realert_every_seconds: defaults.realert_every_seconds,
        channels: None,
    });
    let after = match f.int("alert_after_failures")? {
        Some(n) => u32::try_from(n).map_err(|_| {
            ApiError::field(
                "alert_after_failures",
                "out_of_range",
                "alert_after_failures must be at least 1",
            )
        })?,
        None => base.after_failures,
    };
    let realert = match f.0.remove("realert_every") {
        None => base.realert_every_seconds,
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_interval("realert_every", &s)?),
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ApiError::field("realert_every", "invalid", "realert_every must be a positive duration")
                })?,
        ),
        Some(_) => {
            return Err(ApiError::field(
                "realert_every",
                "invalid_type",
                "realert_every must be a duration such as \"6h\", a number of seconds, or null",
            ))
        }
    };
    let channels = match f.0.remove("alert_channels") {
        None => base.channels,
        Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().and_then(|s| Uuid::try_parse(s).ok()).ok_or_else(|| {
                        ApiError::field(
                            format!("alert_channels[{i}]"),
                            "invalid",
                            "alert_channels must hold channel ids",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(ApiError::field(
                "alert_channels",
                "invalid_type",
                "alert_channels must be an array of channel ids, or null for all",
            ))
        }
    };
    let rules = AlertRules {
        after_failures: after,
        realert_every_seconds: realert,
        channels,
    };
    rules.check(min_realert)?;
    Ok(rules)
}

/// The rule fields of a job's JSON.
pub fn rules_json(r: &AlertRules) -> Value {
    json!({
        "alert_after_failures": r.after_failures,
        "realert_every": r.realert_every_seconds.map(format_interval),
        "alert_channels": r.channels,
    })
}

/// Alert channels a job names must be the workspace's own.
pub async fn check_channels(state: &AppState, workspace_id: Uuid, rules: &AlertRules) -> Result<(), ApiError> {
    let Some(chosen) = &rules.channels else { return Ok(()) };
    if chosen.is_empty() {
        return Ok(());
    }
    let known: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM notification_channels WHERE workspace_id = $1 AND id = ANY($2)")
            .bind(workspace_id)
            .bind(chosen)
            .fetch_all(&state.pool)
            .await?;
    match chosen.iter().position(|c| !known.contains(c)) {
        Some(i) => Err(ApiError::field(
            format!("alert_channels[{i}]"),
            "unknown_channel",
            "no such notification channel in this workspace",
        )),
        None => Ok(()),
    }
}

#[utoipa::path(
    get,
    path = "/notification-channels",
    tag = "notifications",
    summary = "The workspace's notification channels",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "Channels, oldest first", body = [cronbox_notify::channels::ChannelView])),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let views = channels::list(notify(&state)?, caller.workspace_id).await?;
    Ok(Json(json!(views)))
}

#[utoipa::path(
    post,
    path = "/notification-channels",
    tag = "notifications",
    summary = "Add an e-mail or webhook channel (admin); Telegram chats are added by linking",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::ChannelCreate,
    responses(
        (status = 201, description = "The channel; a webhook's `secret` is shown this once; an e-mail channel is `pending_verification` until its confirmation link is followed", body = crate::openapi::schemas::ChannelCreated),
        (status = 400, description = "A field is invalid (`type`, `address`, `url`, `name`)", body = crate::openapi::schemas::ErrorResponse),
        (status = 409, description = "`too_many_channels`", body = crate::openapi::schemas::ErrorResponse)
    ),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Admin)?;
    // Not configured here: 503 before any field is read.
    notify(&state)?;
    let mut f = Fields(body);
    let kind = f
        .string("type")?
        .ok_or_else(|| ApiError::field("type", "required", "type is required: email or webhook"))?;
    let name = f
        .string("name")?
        .ok_or_else(|| ApiError::field("name", "required", "name is required"))?;
    let language = request_language(&mut f, &headers)?;
    let target = match kind.as_str() {
        "email" => f
            .string("address")?
            .ok_or_else(|| ApiError::field("address", "required", "address is required for an e-mail channel"))?,
        "webhook" => f
            .string("url")?
            .ok_or_else(|| ApiError::field("url", "required", "url is required for a webhook channel"))?,
        _ => String::new(),
    };
    f.finish()?;
    let created = add_channel(&state, &caller, &kind, &name, language, &target).await?;
    let mut v = json!(created.view);
    if let Some(secret) = created.secret {
        v["secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// Adds an e-mail (`target`: the address, confirmed by a mailed link) or webhook (`target`:
/// the URL, behind the target guard) channel to the caller's workspace (admins and owners).
/// Telegram chats are added by linking instead.
pub async fn add_channel(
    state: &AppState,
    caller: &Caller,
    kind: &str,
    name: &str,
    language: Language,
    target: &str,
) -> Result<channels::Created, ApiError> {
    caller.require(Role::Admin)?;
    let n = notify(state)?;
    let new = match kind {
        "email" => NewChannel::Email {
            address: target.to_string(),
        },
        "webhook" => {
            let url = cronbox_domain::request::parse_target_url("url", target, &state.targets)?;
            crate::targets::check_resolved(&state.targets, "url", &url).await?;
            NewChannel::Webhook { url }
        }
        "telegram" => {
            return Err(ApiError::field(
                "type",
                "invalid",
                "Telegram channels are added by linking: POST …/notification-channels/telegram/link",
            ))
        }
        _ => return Err(ApiError::field("type", "invalid", "type must be email or webhook")),
    };
    let ws = Workspace {
        id: caller.workspace_id,
        name: &caller.workspace.name,
    };
    Ok(channels::create(n, &ws, name, language, new).await?)
}

/// The notification use cases of this process (503 `not_configured` where there are none).
pub fn notify_of(state: &AppState) -> Result<&Notify, ApiError> {
    notify(state)
}

#[utoipa::path(
    get,
    path = "/notification-channels/{id}",
    tag = "notifications",
    summary = "One notification channel",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The channel", body = cronbox_notify::channels::ChannelView)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = channels::get(notify(&state)?, caller.workspace_id, channel_id(&id)?).await?;
    Ok(Json(json!(v)))
}

#[utoipa::path(
    patch,
    path = "/notification-channels/{id}",
    tag = "notifications",
    summary = "Rename a channel, change its language, or switch it off and on (admin)",
    params(crate::openapi::WsIdPath),
    request_body = crate::openapi::schemas::ChannelUpdate,
    responses((status = 200, description = "The channel", body = cronbox_notify::channels::ChannelView)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let n = notify(&state)?;
    let id = channel_id(&id)?;
    let mut f = Fields(body);
    let name = f.string("name")?;
    let language = f
        .string("language")?
        .map(|l| Language::parse("language", &l))
        .transpose()?;
    let enabled = f.bool("enabled")?;
    f.finish()?;
    let v = channels::update(n, caller.workspace_id, id, name, language, enabled).await?;
    Ok(Json(json!(v)))
}

#[utoipa::path(
    delete,
    path = "/notification-channels/{id}",
    tag = "notifications",
    summary = "Delete a channel and its delivery log (admin)",
    params(crate::openapi::WsIdPath),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    channels::delete(notify(&state)?, caller.workspace_id, channel_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/notification-channels/{id}/test",
    tag = "notifications",
    summary = "Send a test notification (admin)",
    params(crate::openapi::WsIdPath),
    responses(
        (status = 202, description = "Queued; its delivery shows in the channel's log", body = crate::openapi::schemas::TestQueued),
        (status = 409, description = "`channel_not_active`: unconfirmed or disabled", body = crate::openapi::schemas::ErrorResponse)
    ),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = channels::test(notify(&state)?, caller.workspace_id, channel_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"notification_id": id}))))
}

#[utoipa::path(
    post,
    path = "/notification-channels/{id}/rotate-secret",
    tag = "notifications",
    summary = "A new signing secret for a webhook channel (admin); the old one stops at once",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The new secret, shown this once", body = crate::openapi::schemas::ChannelSecret)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let secret = channels::rotate_secret(notify(&state)?, caller.workspace_id, channel_id(&id)?).await?;
    Ok(Json(json!({"secret": secret})))
}

#[utoipa::path(
    post,
    path = "/notification-channels/{id}/resend-confirmation",
    tag = "notifications",
    summary = "Send an e-mail channel's confirmation mail again (admin)",
    params(crate::openapi::WsIdPath),
    responses((status = 202, description = "Queued (unless the address had its hourly allowance)")),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn resend_confirmation(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let ws = Workspace {
        id: caller.workspace_id,
        name: &caller.workspace.name,
    };
    channels::resend_confirmation(notify(&state)?, &ws, channel_id(&id)?).await?;
    Ok(StatusCode::ACCEPTED)
}

fn limit_of(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field(
            "limit",
            "out_of_range",
            "limit must be between 1 and 200",
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// At most this many (default 50, at most 200).
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/notification-channels/{id}/deliveries",
    tag = "notifications",
    summary = "A channel's last deliveries, newest first",
    params(crate::openapi::WsIdPath, LimitQuery),
    responses((status = 200, description = "Deliveries with their outcome and error", body = [cronbox_notify::channels::DeliveryView])),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(q.limit)?;
    let v = channels::deliveries(notify(&state)?, caller.workspace_id, channel_id(&id)?, limit).await?;
    Ok(Json(json!(v)))
}

#[utoipa::path(
    post,
    path = "/notification-channels/telegram/link",
    tag = "notifications",
    summary = "A single-use code (10 minutes) to link a Telegram chat to the workspace (admin)",
    params(crate::openapi::WsPath),
    responses(
        (status = 201, description = "Send `/start <code>` to the bot, or open `deep_link`", body = cronbox_notify::channels::LinkCode),
        (status = 503, description = "`not_configured`: no bot here", body = crate::openapi::schemas::ErrorResponse)
    ),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn telegram_link(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Admin)?;
    let code = channels::telegram_link_code(notify(&state)?, caller.workspace_id, header_language(&headers)).await?;
    Ok((StatusCode::CREATED, Json(json!(code))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// `open` or `resolved`; both when absent.
    #[param(pattern = "^(open|resolved)$")]
    pub state: Option<String>,
    /// At most this many (default 50, at most 200).
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/alerts",
    tag = "notifications",
    summary = "The workspace's alerts, newest first",
    params(crate::openapi::WsPath, AlertsQuery),
    responses((status = 200, description = "Alerts", body = [cronbox_notify::channels::AlertView])),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn alerts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = match q.state.as_deref() {
        None => None,
        Some(s @ ("open" | "resolved")) => Some(s),
        Some(_) => return Err(ApiError::field("state", "invalid", "state must be open or resolved")),
    };
    let limit = limit_of(q.limit)?;
    let v = channels::alerts(notify(&state)?, caller.workspace_id, filter, limit).await?;
    Ok(Json(json!(v)))
}
