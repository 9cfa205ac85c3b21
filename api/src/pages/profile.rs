//! A person's profile: console language and time zone (recorded on the user aggregate), and
//! the password (changing it ends every other session; this browser gets a new one).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use cronbox_domain::channel::Language;

use super::session::{self, set_cookie, SESSION_COOKIE};
use super::{error_text, html, see_other, Chrome, PageError, PageResult, Posted, SignedIn, Tr};
use crate::accounts;
use crate::error::ApiError;
use crate::AppState;

struct SessionRow {
    id: uuid::Uuid,
    /// "Began …, lasts until …".
    text: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "app/profile.html")]
struct ProfilePage {
    c: Chrome,
    sessions: Vec<SessionRow>,
    name: String,
    email: String,
    language: String,
    timezone: String,
    zones: Vec<&'static str>,
    error: Option<String>,
}

async fn render(
    state: &AppState,
    s: &SignedIn,
    user: &cronbox_domain::user::User,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
) -> PageResult {
    let tr = Tr::new(s.visitor.lang);
    let zone = user
        .timezone
        .clone()
        .unwrap_or_else(|| cronbox_domain::schedule::DEFAULT_TIMEZONE.into());
    let sessions = accounts::sessions_of(state, &s.user)
        .await?
        .into_iter()
        .map(|x| SessionRow {
            id: x.id,
            text: tr.f(
                "profile.session_started",
                &[
                    ("when", &tr.when(x.started_at, &zone)),
                    ("until", &tr.when(x.expires_at, &zone)),
                ],
            ),
            current: x.id == s.user.session_id,
        })
        .collect();
    let page = ProfilePage {
        c: Chrome::for_visitor(&s.visitor, tr.t("profile.title"), "profile").notice(notice),
        sessions,
        name: user.name.clone(),
        email: user.email.clone(),
        language: user.language.map(|l| l.as_str().to_string()).unwrap_or_default(),
        timezone: user.timezone.clone().unwrap_or_default(),
        zones: super::workspaces::zones(),
        error,
    };
    Ok(html(status, &page, &s.visitor.set_cookies))
}

pub async fn page(State(state): State<AppState>, s: SignedIn, Query(q): Query<HashMap<String, String>>) -> PageResult {
    let notice = super::notice(Tr::new(s.visitor.lang), &q);
    render(&state, &s, &s.user.user, StatusCode::OK, None, notice).await
}

pub async fn save(State(state): State<AppState>, s: SignedIn, form: Posted) -> PageResult {
    let language = match form.get("language") {
        None => None,
        Some(l) => Some(Language::parse("language", &l).map_err(ApiError::from)?),
    };
    match accounts::set_preferences(&state, s.user.user_id, language, form.get("timezone")).await {
        Ok(_) => {
            let mut r = see_other("/profile?n=profile_saved");
            // The switch's cookie follows the setting, so pages before login speak it too.
            let value = language.map_or("", |l| l.as_str());
            let max_age = if language.is_some() { 86_400 * 365 } else { 0 };
            let cookie = set_cookie(session::LANG_COOKIE, value, max_age, session::secure(&state));
            if let Ok(v) = cookie.parse() {
                r.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            Ok(r)
        }
        Err(e) => {
            let (status, code, _) = e.classify();
            if status.is_server_error() {
                return Err(PageError::Api(e));
            }
            let text = error_text(Tr::new(s.visitor.lang), code, &e.to_string());
            render(&state, &s, &s.user.user, status, Some(text), None).await
        }
    }
}

pub async fn password(State(state): State<AppState>, s: SignedIn, form: Posted) -> PageResult {
    let raw = |k: &str| {
        form.fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match accounts::change_password(&state, &s.user, raw("current_password"), raw("new_password")).await {
        Ok(()) => {
            // Every session that began before the change has ended, this one too: this browser
            // goes on in a new one.
            let token = accounts::start_browser_session(&state, s.user.user_id).await?;
            let mut r = see_other("/profile?n=password_changed");
            let cookie = set_cookie(
                SESSION_COOKIE,
                &token,
                accounts::REFRESH_TTL_DAYS * 86_400,
                session::secure(&state),
            );
            if let Ok(v) = cookie.parse() {
                r.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
            Ok(r)
        }
        Err(e) => {
            let (status, code, field) = e.classify();
            if status.is_server_error() && code != "busy" {
                return Err(PageError::Api(e));
            }
            let tr = Tr::new(s.visitor.lang);
            let text = match (field.as_deref(), code) {
                (Some("current_password"), _) => tr.t("profile.wrong_password").to_string(),
                _ => error_text(tr, code, &e.to_string()),
            };
            render(&state, &s, &s.user.user, status, Some(text), None).await
        }
    }
}

/// Ends one of the person's other sessions (a browser left signed in elsewhere, a program).
pub async fn end_session(
    State(state): State<AppState>,
    s: SignedIn,
    axum::extract::Path(id): axum::extract::Path<String>,
    _form: Posted,
) -> PageResult {
    let id = uuid::Uuid::try_parse(&id).map_err(|_| ApiError::NotFound("session"))?;
    accounts::end_own_session(&state, &s.user, id).await?;
    Ok(see_other("/profile?n=session_ended"))
}
