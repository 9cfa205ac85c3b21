//! The pages behind the links in CronBox's mails (confirm an address, set a new password,
//! confirm an alert address, unsubscribe) and the Telegram webhook.
//!
//! A link opens a page with one button; the button posts the token back (a GET never changes
//! anything, so a mail scanner that follows links cannot confirm or unsubscribe for anyone).
//! The one exception is RFC 8058's one-click unsubscribe, which mail clients send as
//! `POST …?token=…` with `List-Unsubscribe=One-Click` in the body. Pages work without
//! JavaScript and speak the browser's language (Russian unless it asks for English).

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cronbox_domain::channel::Language;
use cronbox_notify::channels;
use serde::Deserialize;

use crate::error::ApiError;
use crate::notifications::header_language;
use crate::AppState;

/// Form bodies are a token and at most a password.
const MAX_FORM_BYTES: usize = 4096;

struct Form {
    action: &'static str,
    token: String,
    button: String,
    password_label: Option<String>,
}

#[derive(Template)]
#[template(path = "page.html")]
struct Page {
    lang: &'static str,
    title: String,
    lines: Vec<String>,
    error: bool,
    form: Option<Form>,
    /// A link to follow instead of a form: (URL, text).
    link: Option<(String, String)>,
}

fn pick(lang: Language, ru: &str, en: &str) -> String {
    match lang {
        Language::Ru => ru.into(),
        Language::En => en.into(),
    }
}

fn page(status: StatusCode, p: Page) -> Response {
    match p.render() {
        Ok(html) => {
            let mut r = (status, html).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
            );
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn done(lang: Language, title: String, line: String) -> Response {
    page(
        StatusCode::OK,
        Page {
            lang: lang.as_str(),
            title,
            lines: vec![line],
            error: false,
            form: None,
            link: None,
        },
    )
}

fn failed(lang: Language, status: StatusCode, line: String) -> Response {
    page(
        status,
        Page {
            lang: lang.as_str(),
            title: pick(lang, "Не получилось", "That did not work"),
            lines: vec![line],
            error: true,
            form: None,
            link: None,
        },
    )
}

fn expired(lang: Language) -> Response {
    failed(
        lang,
        StatusCode::BAD_REQUEST,
        pick(
            lang,
            "Ссылка неверна, уже использована или устарела. Запросите новое письмо.",
            "The link is wrong, used already or expired. Ask for a new mail.",
        ),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token from the mail's link.
    pub token: Option<String>,
}

fn ask(
    lang: Language,
    action: &'static str,
    token: Option<String>,
    title: String,
    line: String,
    button: String,
    password: bool,
) -> Response {
    let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 200) else {
        return expired(lang);
    };
    page(
        StatusCode::OK,
        Page {
            lang: lang.as_str(),
            title,
            lines: vec![line],
            error: false,
            link: None,
            form: Some(Form {
                action,
                token,
                button,
                password_label: password.then(|| {
                    pick(
                        lang,
                        "Новый пароль (не короче 8 символов)",
                        "New password (8 characters or more)",
                    )
                }),
            }),
        },
    )
}

/// The fields of a posted form.
async fn form(body: Body) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = crate::input::read_body(body, MAX_FORM_BYTES).await?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[utoipa::path(get, path = "/verify-email", tag = "links", summary = "The page a verification mail links to",
    params(TokenQuery), responses((status = 200, description = "A page with a confirm button", content_type = "text/html")))]
pub async fn verify_page(headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let lang = header_language(&headers);
    ask(
        lang,
        "/verify-email",
        q.token,
        pick(lang, "Подтверждение адреса", "Confirm your address"),
        pick(
            lang,
            "Нажмите кнопку, чтобы подтвердить адрес для CronBox.",
            "Press the button to confirm your CronBox address.",
        ),
        pick(lang, "Подтвердить", "Confirm"),
        false,
    )
}

#[utoipa::path(post, path = "/verify-email", tag = "links", summary = "Confirm the address (form post of the token)",
    responses((status = 200, description = "Confirmed", content_type = "text/html"), (status = 400, description = "Unknown, used or expired token", content_type = "text/html")))]
pub async fn verify_post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let lang = header_language(&headers);
    let Ok(fields) = form(body).await else {
        return expired(lang);
    };
    let Some(token) = field(&fields, "token") else {
        return expired(lang);
    };
    match crate::accounts::verify_with(&state, &token).await {
        Ok(user) => done(
            lang,
            pick(lang, "Адрес подтверждён", "Address confirmed"),
            pick(
                lang,
                &format!(
                    "Готово: {} подтверждён. Можно создавать рабочие пространства и задания.",
                    user.email
                ),
                &format!(
                    "Done: {} is confirmed. You can create workspaces and jobs now.",
                    user.email
                ),
            ),
        ),
        Err(ApiError::BadRequest { .. }) => expired(lang),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/reset-password", tag = "links", summary = "The page a password-reset mail links to",
    params(TokenQuery), responses((status = 200, description = "A page with a new-password form", content_type = "text/html")))]
pub async fn reset_page(headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let lang = header_language(&headers);
    ask(
        lang,
        "/reset-password",
        q.token,
        pick(lang, "Новый пароль", "A new password"),
        pick(
            lang,
            "Задайте новый пароль. Все сеансы будут завершены.",
            "Set a new password. Every session will end.",
        ),
        pick(lang, "Сохранить пароль", "Save the password"),
        true,
    )
}

#[utoipa::path(post, path = "/reset-password", tag = "links", summary = "Set the new password (form post of the token and password)",
    responses((status = 200, description = "Changed", content_type = "text/html"), (status = 400, description = "Bad token or password", content_type = "text/html")))]
pub async fn reset_post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let lang = header_language(&headers);
    let Ok(fields) = form(body).await else {
        return expired(lang);
    };
    let (Some(token), Some(password)) = (field(&fields, "token"), field(&fields, "password")) else {
        return expired(lang);
    };
    match crate::accounts::reset_with(&state, &token, password).await {
        Ok(()) => done(
            lang,
            pick(lang, "Пароль изменён", "Password changed"),
            pick(lang, "Войдите с новым паролем.", "Log in with the new password."),
        ),
        Err(ApiError::BadRequest {
            field: Some(f),
            message,
            ..
        }) if f == "password" => failed(lang, StatusCode::BAD_REQUEST, message),
        Err(ApiError::BadRequest { .. }) => expired(lang),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/invites/accept", tag = "links", summary = "The page an invitation mail links to",
    params(TokenQuery), responses((status = 200, description = "How to accept the invitation", content_type = "text/html")))]
pub async fn invite_page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let lang = header_language(&headers);
    let Some(token) = q.token.filter(|t| !t.is_empty() && t.len() <= 200) else {
        return expired(lang);
    };
    let web = format!(
        "{}/app/invites/accept?token={}",
        state.public_url.trim_end_matches('/'),
        crate::pages::url_encode(&token)
    );
    page(
        StatusCode::OK,
        Page {
            lang: lang.as_str(),
            title: pick(lang, "Приглашение в CronBox", "Your CronBox invitation"),
            lines: vec![
                pick(
                    lang,
                    "Войдите (или зарегистрируйтесь с адресом, на который пришло письмо) и примите приглашение. Из программы: POST /v1/invites/accept с этим кодом.",
                    "Log in (or sign up with the address this mail came to) and accept. From a program: POST /v1/invites/accept with this code.",
                ),
                token,
            ],
            error: false,
            form: None,
            link: Some((web, pick(lang, "Принять в CronBox", "Accept in CronBox"))),
        },
    )
}

#[utoipa::path(get, path = "/notification-channels/confirm", tag = "links", summary = "The page an alert-address confirmation links to",
    params(TokenQuery), responses((status = 200, description = "A page with a confirm button", content_type = "text/html")))]
pub async fn confirm_page(headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let lang = header_language(&headers);
    ask(
        lang,
        "/notification-channels/confirm",
        q.token,
        pick(lang, "Уведомления CronBox", "CronBox alerts"),
        pick(
            lang,
            "Получать на этот адрес уведомления о сбоях заданий?",
            "Receive job failure alerts at this address?",
        ),
        pick(lang, "Да, получать", "Yes, send them"),
        false,
    )
}

#[utoipa::path(post, path = "/notification-channels/confirm", tag = "links", summary = "Confirm an alert address (form post of the token)",
    responses((status = 200, description = "Confirmed", content_type = "text/html"), (status = 400, description = "Bad token", content_type = "text/html")))]
pub async fn confirm_post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let lang = header_language(&headers);
    let Some(n) = state.notify.as_ref() else {
        return ApiError::NotConfigured("notifications are not configured here").into_response();
    };
    let Ok(fields) = form(body).await else {
        return expired(lang);
    };
    let Some(token) = field(&fields, "token") else {
        return expired(lang);
    };
    match channels::confirm(n, &token).await {
        Ok(c) => done(
            lang,
            pick(lang, "Адрес подтверждён", "Address confirmed"),
            pick(
                lang,
                &format!("Уведомления канала «{}» будут приходить сюда.", c.name),
                &format!("Alerts of the channel “{}” will arrive here.", c.name),
            ),
        ),
        Err(channels::NotifyError::BadToken) => expired(lang),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[utoipa::path(get, path = "/notification-channels/unsubscribe", tag = "links", summary = "The page an alert mail's unsubscribe link opens",
    params(TokenQuery), responses((status = 200, description = "A page with an unsubscribe button", content_type = "text/html")))]
pub async fn unsubscribe_page(headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let lang = header_language(&headers);
    ask(
        lang,
        "/notification-channels/unsubscribe",
        q.token,
        pick(lang, "Отписка от уведомлений", "Unsubscribe"),
        pick(
            lang,
            "Больше не получать на этот адрес уведомления CronBox этого канала?",
            "Stop CronBox alerts of this channel at this address?",
        ),
        pick(lang, "Отписаться", "Unsubscribe"),
        false,
    )
}

#[utoipa::path(post, path = "/notification-channels/unsubscribe", tag = "links",
    summary = "Unsubscribe: the page's form, or RFC 8058 one-click (`?token=` with `List-Unsubscribe=One-Click`)",
    params(TokenQuery),
    responses((status = 200, description = "Unsubscribed", content_type = "text/html"), (status = 400, description = "Bad token", content_type = "text/html")))]
pub async fn unsubscribe_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    body: Body,
) -> Response {
    let lang = header_language(&headers);
    let Some(n) = state.notify.as_ref() else {
        return ApiError::NotConfigured("notifications are not configured here").into_response();
    };
    let fields = form(body).await.unwrap_or_default();
    let Some(token) = field(&fields, "token").or(q.token) else {
        return expired(lang);
    };
    match channels::unsubscribe(n, &token).await {
        Ok(c) => done(
            lang,
            pick(lang, "Вы отписались", "Unsubscribed"),
            pick(
                lang,
                &format!(
                    "Уведомления канала «{}» больше не будут приходить на этот адрес.",
                    c.name
                ),
                &format!(
                    "Alerts of the channel “{}” will no longer come to this address.",
                    c.name
                ),
            ),
        ),
        Err(channels::NotifyError::BadToken) => expired(lang),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Telegram's webhook mode: the secret must match (in constant time), and the answer is 200
/// at once; the update is handled in the background (Telegram retries anything slower).
#[utoipa::path(post, path = "/v1/telegram/webhook", tag = "links", summary = "Telegram's updates in webhook mode",
    responses((status = 200, description = "Taken", body = crate::openapi::schemas::Health), (status = 401, description = "Wrong or missing X-Telegram-Bot-Api-Secret-Token", body = crate::openapi::schemas::ErrorResponse), (status = 404, description = "Webhook mode is not set up here (`CRONBOX_TELEGRAM_WEBHOOK_SECRET`)", body = crate::openapi::schemas::ErrorResponse)))]
pub async fn telegram_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Some((secret, bot)) = state.telegram_webhook.as_ref() else {
        // Not an error of the service (a 5xx): this installation takes updates by polling.
        return Err(ApiError::NotFound("telegram webhook"));
    };
    let given = headers
        .get("x-telegram-bot-api-secret-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !channels::constant_time_eq(given, secret.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    let bytes = crate::input::read_body(body, 1 << 20).await?;
    let update: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest {
        code: "invalid_json",
        message: "the update is not JSON".into(),
        field: None,
    })?;
    let bot = bot.clone();
    tokio::spawn(async move { cronbox_notify::bot::handle_update(&bot, &update).await });
    Ok(axum::Json(serde_json::json!({"status": "ok"})))
}
