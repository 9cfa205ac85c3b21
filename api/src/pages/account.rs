//! Sign-up, login, logout, the password-reset request and the language switch. The links in
//! the mails (verify the address, set a new password, accept an invitation) open the pages of
//! [`crate::links`].

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cronbox_domain::channel::Language;

use super::session::{self, set_cookie, SESSION_COOKIE};
use super::{error_text, html, local_path, see_other, Chrome, PageResult, Posted, Visitor};
use crate::accounts;
use crate::error::ApiError;
use crate::AppState;

/// `/`: the console for a signed-in person, the login page for anyone else.
pub async fn home(v: Visitor) -> PageResult {
    Ok(see_other(if v.user.is_some() { "/app" } else { "/login" }))
}

#[derive(Template)]
#[template(path = "app/login.html")]
struct LoginPage {
    c: Chrome,
    next: String,
    /// `next`, URL-encoded for the sign-up link.
    next_q: String,
    email: String,
    error: Option<String>,
}

pub async fn login_page(v: Visitor, Query(q): Query<HashMap<String, String>>) -> PageResult {
    let next = local_path(q.get("next").map(String::as_str));
    if v.user.is_some() {
        return Ok(see_other(&next));
    }
    let tr = super::Tr::new(v.lang);
    let page = LoginPage {
        c: Chrome::for_visitor(&v, tr.t("login.title"), "login").notice(super::notice(tr, &q)),
        next_q: super::url_encode(&next),
        next,
        email: String::new(),
        error: None,
    };
    Ok(html(StatusCode::OK, &page, &v.set_cookies))
}

/// Starts a browser session for `user` and sends them on to `next`.
async fn signed_in(state: &AppState, user: uuid::Uuid, next: &str) -> PageResult {
    let token = accounts::start_browser_session(state, user).await?;
    let mut r = see_other(next);
    let cookie = set_cookie(
        SESSION_COOKIE,
        &token,
        accounts::REFRESH_TTL_DAYS * 86_400,
        session::secure(state),
    );
    if let Ok(v) = cookie.parse() {
        r.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
    Ok(r)
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Posted,
) -> PageResult {
    let next = local_path(form.get("next").as_deref());
    let email = form.get("email").unwrap_or_default();
    let password = form.get("password").unwrap_or_default();
    match accounts::check_credentials(&state, &email, password, peer.ip()).await {
        Ok(user) => signed_in(&state, user, &next).await,
        Err(e @ (ApiError::InvalidCredentials | ApiError::TooManyRequests { .. } | ApiError::Busy { .. })) => {
            let v = &form.visitor;
            let tr = super::Tr::new(v.lang);
            let (status, code, _) = e.classify();
            let page = LoginPage {
                c: Chrome::for_visitor(v, tr.t("login.title"), "login"),
                next_q: super::url_encode(&next),
                next,
                email,
                error: Some(error_text(tr, code, &e.to_string())),
            };
            Ok(html(status, &page, &v.set_cookies))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "app/signup.html")]
struct SignupPage {
    c: Chrome,
    next: String,
    name: String,
    email: String,
    error: Option<String>,
}

pub async fn signup_page(v: Visitor, Query(q): Query<HashMap<String, String>>) -> PageResult {
    let next = local_path(q.get("next").map(String::as_str));
    if v.user.is_some() {
        return Ok(see_other(&next));
    }
    let tr = super::Tr::new(v.lang);
    let page = SignupPage {
        c: Chrome::for_visitor(&v, tr.t("signup.title"), "signup"),
        next,
        name: String::new(),
        email: String::new(),
        error: None,
    };
    Ok(html(StatusCode::OK, &page, &v.set_cookies))
}

pub async fn signup(State(state): State<AppState>, form: Posted) -> PageResult {
    let name = form.get("name").unwrap_or_default();
    let email = form.get("email").unwrap_or_default();
    let password = form
        .fields
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let v = &form.visitor;
    let next = match form.get("next").as_deref() {
        // Straight from the login page: the workspace list, which says a mail is on its way.
        None | Some("/app") => "/app?n=verify_sent".to_string(),
        Some(n) => local_path(Some(n)),
    };
    match accounts::sign_up(&state, &email, &name, password, v.lang).await {
        Ok(user) => signed_in(&state, user.id.unwrap_or_default(), &next).await,
        Err(e) => {
            let (status, code, field) = e.classify();
            if status.is_server_error() && code != "busy" {
                return Err(e.into());
            }
            let tr = super::Tr::new(v.lang);
            let text = error_text(tr, code, &e.to_string());
            let text = match field {
                Some(f) => format!("{}: {text}", tr.t(&format!("field.{f}"))),
                None => text,
            };
            let page = SignupPage {
                c: Chrome::for_visitor(v, tr.t("signup.title"), "signup"),
                next: local_path(form.get("next").as_deref()),
                name,
                email,
                error: Some(text),
            };
            Ok(html(status, &page, &v.set_cookies))
        }
    }
}

/// Ends this browser's session (the session aggregate records it) and forgets the cookie.
pub async fn logout(State(state): State<AppState>, form: Posted) -> PageResult {
    if let Some(u) = &form.visitor.user {
        accounts::revoke(&state, u.session_id, "logout").await?;
        tracing::info!(user_id = %u.user_id, session_id = %u.session_id, "logout");
    }
    let mut r = see_other("/login?n=logged_out");
    let cookie = set_cookie(SESSION_COOKIE, "", 0, session::secure(&state));
    if let Ok(v) = cookie.parse() {
        r.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Template)]
#[template(path = "app/forgot.html")]
struct ForgotPage {
    c: Chrome,
    sent: bool,
    error: Option<String>,
}

pub async fn forgot_page(v: Visitor) -> PageResult {
    let tr = super::Tr::new(v.lang);
    let page = ForgotPage {
        c: Chrome::for_visitor(&v, tr.t("forgot.title"), "forgot"),
        sent: false,
        error: None,
    };
    Ok(html(StatusCode::OK, &page, &v.set_cookies))
}

pub async fn forgot(State(state): State<AppState>, form: Posted) -> PageResult {
    let v = &form.visitor;
    let tr = super::Tr::new(v.lang);
    let email = form.get("email").unwrap_or_default();
    let (sent, error, status) = match accounts::mail_password_reset(&state, &email, v.lang).await {
        Ok(()) => (true, None, StatusCode::OK),
        Err(e) => {
            let (status, code, _) = e.classify();
            if status.is_server_error() {
                return Err(e.into());
            }
            (false, Some(error_text(tr, code, &e.to_string())), status)
        }
    };
    let page = ForgotPage {
        c: Chrome::for_visitor(v, tr.t("forgot.title"), "forgot"),
        sent,
        error,
    };
    Ok(html(status, &page, &v.set_cookies))
}

/// The language switch: remembered in a cookie, and as the person's setting when signed in.
pub async fn language(State(state): State<AppState>, form: Posted) -> PageResult {
    let lang = Language::parse("lang", form.get("lang").as_deref().unwrap_or_default()).map_err(ApiError::from)?;
    if let Some(u) = &form.visitor.user {
        accounts::set_preferences(&state, u.user_id, Some(lang), u.user.timezone.clone()).await?;
    }
    let next = local_path(form.get("next").as_deref());
    let mut r = see_other(&next).into_response();
    let cookie = set_cookie(
        session::LANG_COOKIE,
        lang.as_str(),
        86_400 * 365,
        session::secure(&state),
    );
    if let Ok(v) = cookie.parse() {
        r.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
    Ok(r)
}
