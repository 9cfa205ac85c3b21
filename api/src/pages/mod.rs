//! The web app: server-rendered pages (askama) for people, beside the REST API for programs.
//!
//! Pages are a third edge over the same use cases as the API and the CLI: a page handler reads
//! its form or query, calls the function the REST handler calls (`accounts::check_credentials`,
//! `workspaces::open_workspace`, `jobs::new_cron_job`, `jobs::pause`, `executions::page`…), and
//! renders the result. No rule lives here, so a page and the API can never disagree.
//!
//! - [`session`]: cookie sessions, language, anti-forgery tokens ([`session::Posted`]).
//! - [`i18n`]: the Russian and English catalogues, plurals, numbers, dates.
//! - [`account`]: sign-up, login, logout, password reset request, the language switch.
//! - [`workspaces`]: the workspace list, creation and the dashboard.
//! - [`admin`]: the admin panel (superusers); [`profile`]: language, time zone, password;
//!   [`invites`]: accepting an invitation.
//! - [`cron`]: cron jobs (list, editor, inline actions); [`job`]: a job's page with charts
//!   ([`charts`]: server-side SVG); [`delayed`]: delayed calls;
//!   [`runs`]: the execution log; [`settings`]: members, invitations, API keys;
//!   [`channels`]: notification channels and their delivery log.
//!
//! Every page works without JavaScript (forms post, links navigate); `app.js` adds the live
//! log, the schedule preview while typing and confirmations. Responses carry a strict CSP with
//! no inline script, `X-Frame-Options: DENY` and `no-store`; askama escapes every value.
//! Pages are not part of the OpenAPI document: they are for browsers, not for clients.

pub mod account;
pub mod admin;
pub mod channels;
pub mod charts;
pub mod cron;
pub mod delayed;
pub mod i18n;
pub mod invites;
pub mod job;
pub mod profile;
pub mod runs;
pub mod session;
pub mod settings;
pub mod workspaces;

use askama::Template;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cronbox_domain::workspace::Role;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

pub use i18n::Tr;
pub use session::{Posted, SignedIn, Visitor};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The pages' routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(account::home))
        .route("/badge/{file}", get(crate::badge::serve))
        .route("/login", get(account::login_page).post(account::login))
        .route("/signup", get(account::signup_page).post(account::signup))
        .route("/logout", post(account::logout))
        .route("/forgot", get(account::forgot_page).post(account::forgot))
        .route("/language", post(account::language))
        .route("/admin", get(admin::projections))
        .route("/admin/projections/{name}/rebuild", post(admin::rebuild))
        .route("/admin/users", get(admin::users))
        .route("/admin/users/{id}/{action}", post(admin::user_action))
        .route("/admin/workspaces", get(admin::workspaces))
        .route("/admin/workspaces/{id}/{action}", post(admin::workspace_action))
        .route("/admin/events", get(admin::events))
        .route("/admin/runs/{id}/rerun", post(admin::rerun))
        .route("/profile", get(profile::page).post(profile::save))
        .route("/profile/password", post(profile::password))
        .route("/profile/sessions/{id}/end", post(profile::end_session))
        .route("/app", get(workspaces::list))
        .route("/app/workspaces", post(workspaces::create))
        .route("/app/invites/accept", get(invites::page).post(invites::accept))
        .route("/app/w/{ws}", get(workspaces::dashboard))
        .route("/app/w/{ws}/cron", get(cron::list))
        .route("/app/w/{ws}/cron/new", get(cron::new_page).post(cron::create))
        .route("/app/w/{ws}/cron/bulk", post(cron::bulk))
        .route("/app/w/{ws}/cron/test", post(cron::test_new))
        .route("/app/w/{ws}/cron/{id}", get(job::page))
        .route("/app/w/{ws}/cron/{id}/edit", get(cron::edit_page).post(cron::update))
        .route("/app/w/{ws}/cron/{id}/{action}", post(cron::act))
        .route("/app/w/{ws}/delayed", get(delayed::list))
        .route("/app/w/{ws}/delayed/new", get(delayed::new_page).post(delayed::create))
        .route("/app/w/{ws}/delayed/{id}", get(delayed::detail))
        .route("/app/w/{ws}/delayed/{id}/cancel", post(delayed::cancel))
        .route("/app/w/{ws}/channels", get(channels::list).post(channels::create))
        .route("/app/w/{ws}/channels/telegram", post(channels::telegram))
        .route("/app/w/{ws}/channels/{id}", get(channels::detail))
        .route("/app/w/{ws}/channels/{id}/test", post(channels::test))
        .route("/app/w/{ws}/channels/{id}/delete", post(channels::delete))
        .route("/app/w/{ws}/settings", get(settings::page))
        .route("/app/w/{ws}/settings/invites", post(settings::invite))
        .route(
            "/app/w/{ws}/settings/invites/{id}/revoke",
            post(settings::revoke_invite),
        )
        .route("/app/w/{ws}/settings/keys", post(settings::create_key))
        .route("/app/w/{ws}/settings/keys/{id}/revoke", post(settings::revoke_key))
        .route("/app/w/{ws}/executions", get(runs::list))
        .route("/app/w/{ws}/executions/live", get(runs::live))
        .route("/app/w/{ws}/executions/{id}", get(runs::detail))
        .route("/app/w/{ws}/executions/{id}/rerun", post(runs::rerun))
        .layer(axum::middleware::from_fn(finish))
}

/// What went wrong on a page, rendered by [`finish`] in the visitor's language.
#[derive(Debug)]
pub enum PageError {
    /// Go there instead (303).
    Redirect(String),
    /// A form post without a valid anti-forgery token, or from another site.
    Csrf,
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Api(e)
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        PageError::Api(e.into())
    }
}

/// A failure the handler could not render itself (it has no visitor yet): [`finish`] renders it.
#[derive(Debug, Clone)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let failure = match self {
            PageError::Redirect(to) => return see_other(&to),
            PageError::Csrf => Failure {
                status: StatusCode::FORBIDDEN,
                code: "csrf",
                message: String::new(),
            },
            PageError::Api(e) => {
                e.log_if_internal();
                let (status, code, _) = e.classify();
                Failure {
                    status,
                    code,
                    message: e.to_string(),
                }
            }
        };
        let mut r = failure.status.into_response();
        r.extensions_mut().insert(failure);
        r
    }
}

pub type PageResult = Result<Response, PageError>;

/// Waits (up to 2 s) until the list's read model shows job `id` in `status`, so the page the
/// person is sent back to shows what they just did. The read model follows the event log within
/// milliseconds normally; under load it may lag, and then the page says what it can.
pub async fn until_listed(state: &AppState, id: Uuid, status: &str) {
    until_row(state, "SELECT status FROM jobs WHERE id = $1", id, Some(status)).await
}

/// [`until_listed`] for any read model: waits (up to 2 s) until `query` (one `text` column,
/// `$1` the id) returns a row, with the value `want` when given.
pub async fn until_row(state: &AppState, query: &'static str, id: Uuid, want: Option<&str>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let now: Result<Option<String>, _> = sqlx::query_scalar(query).bind(id).fetch_optional(&state.pool).await;
        match now {
            Ok(Some(s)) if want.is_none_or(|w| w == s) => return,
            Err(e) => {
                tracing::warn!(error = %e, id = %id, "cannot read a read model");
                return;
            }
            _ if tokio::time::Instant::now() >= deadline => return,
            _ => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
}

/// A schedule in the reader's words: the builder's description where the expression has one of
/// its shapes, else croner's (English) description, `fallback`.
pub fn describe_schedule(tr: Tr, expression: &str, fallback: &str) -> String {
    cronbox_domain::cron_builder::Builder::recognise(expression)
        .describe(tr.lang)
        .unwrap_or_else(|| fallback.to_string())
}

/// 303 to a path of ours.
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A `next=` target that stays on this site (a path, not `//host` or a URL).
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.len() < 2000 => p.to_string(),
        _ => "/app".to_string(),
    }
}

/// The notice a redirect asked for (`?n=created`): only texts of the catalogue, so a link
/// cannot make a page say anything else.
pub fn notice(tr: Tr, q: &std::collections::HashMap<String, String>) -> Option<String> {
    let n = q.get("n")?;
    if n.len() > 40 || !n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    tr.lookup(&format!("notice.{n}")).map(str::to_string)
}

pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[derive(Template)]
#[template(path = "app/error.html")]
struct ErrorPage {
    c: Chrome,
    status: u16,
    text: String,
}

/// Renders handler failures as pages and gives every page its security headers.
async fn finish(req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let mut resp = next.run(req).await;
    if let Some(f) = resp.extensions_mut().remove::<Failure>() {
        let tr = Tr::new(session::language(&headers, None));
        let text = error_text(tr, f.code, &f.message);
        let page = ErrorPage {
            c: Chrome::bare(tr, tr.t("error.title")),
            status: f.status.as_u16(),
            text,
        };
        let retry = resp.headers().get(header::RETRY_AFTER).cloned();
        resp = html(f.status, &page, &[]);
        if let Some(r) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, r);
        }
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// An error in the visitor's words: the catalogue's text for its code, else the API's message.
pub fn error_text(tr: Tr, code: &str, message: &str) -> String {
    tr.lookup(&format!("error.{code}"))
        .map_or_else(|| message.to_string(), str::to_string)
}

/// Renders a page with the cookies the visitor needs set.
pub fn html(status: StatusCode, page: &impl Template, set_cookies: &[String]) -> Response {
    match page.render() {
        Ok(body) => {
            let mut r = (status, body).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            for c in set_cookies {
                if let Ok(v) = HeaderValue::from_str(c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(e) => PageError::Api(ApiError::internal(e)).into_response(),
    }
}

/// The workspace a page is about, as the navigation shows it.
#[derive(Debug, Clone)]
pub struct WsNav {
    pub id: Uuid,
    pub name: String,
    pub role: &'static str,
    pub can_edit: bool,
    pub is_admin: bool,
}

/// What every page's frame needs: words, the form token, the signed-in person, the workspace.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub tr: Tr,
    pub title: String,
    pub csrf: String,
    pub user_name: Option<String>,
    pub superuser: bool,
    pub ws: Option<WsNav>,
    /// Which navigation entry is current (`cron`, `runs`, `dashboard`, …).
    pub section: &'static str,
    pub css: String,
    pub js: String,
    pub path: String,
    pub notice: Option<String>,
}

impl Chrome {
    /// The frame of a page without a visitor (error pages).
    pub fn bare(tr: Tr, title: &str) -> Self {
        Chrome {
            tr,
            title: title.to_string(),
            csrf: String::new(),
            user_name: None,
            superuser: false,
            ws: None,
            section: "",
            css: crate::assets::url("app.css").unwrap_or_default(),
            js: crate::assets::url("app.js").unwrap_or_default(),
            path: "/".into(),
            notice: None,
        }
    }

    pub fn for_visitor(v: &Visitor, title: &str, section: &'static str) -> Self {
        let tr = Tr::new(v.lang);
        Chrome {
            csrf: v.csrf.clone(),
            user_name: v.user.as_ref().map(|u| u.user.name.clone()),
            superuser: v.user.as_ref().is_some_and(|u| u.user.superuser),
            section,
            path: v.path.clone(),
            ..Chrome::bare(tr, title)
        }
    }

    pub fn for_member(m: &Member, title: &str, section: &'static str) -> Self {
        Chrome {
            ws: Some(WsNav {
                id: m.caller.workspace_id,
                name: m.caller.workspace.name.clone(),
                role: workspaces::role_key(m.caller.role.as_str()),
                can_edit: m.caller.role >= Role::Member,
                is_admin: m.caller.role >= Role::Admin,
            }),
            ..Chrome::for_visitor(&m.visitor, title, section)
        }
    }

    pub fn notice(mut self, n: Option<String>) -> Self {
        self.notice = n;
        self
    }
}

/// A signed-in member acting in the workspace of the path (`/app/w/{ws}/…`), with the same
/// caller, role checks and request budget the API gives their access token there.
#[derive(Debug, Clone)]
pub struct Member {
    pub visitor: Visitor,
    pub caller: Caller,
}

impl Member {
    pub fn tr(&self) -> Tr {
        Tr::new(self.visitor.lang)
    }

    /// The zone times are shown in: the person's setting, else the workspace's.
    pub fn zone(&self) -> String {
        self.visitor
            .user
            .as_ref()
            .and_then(|u| u.user.timezone.clone())
            .unwrap_or_else(|| self.caller.timezone.clone())
    }

    /// `/app/w/{ws}` + `rest`.
    pub fn href(&self, rest: &str) -> String {
        format!("/app/w/{}{rest}", self.caller.workspace_id)
    }
}

impl FromRequestParts<AppState> for Member {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let signed = SignedIn::uncounted(parts, state).await?;
        let ws = parts
            .uri
            .path()
            .strip_prefix("/app/w/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|s| Uuid::try_parse(s).ok())
            .ok_or(ApiError::NotFound("workspace"))?;
        let caller = crate::auth::member_caller(state, signed.user.user_id, ws).await?;
        let plan = caller.plan(state).await?;
        let rpm = u32::try_from(plan.requests_per_minute).unwrap_or(0);
        // The person's own budget in this workspace, not the workspace's: a log page left open
        // must not use up the requests the tenant's API clients are allowed.
        let subject = crate::rate_limit::Subject::UserIn(signed.user.user_id, ws);
        crate::edge::limit(state, parts, subject, rpm).await?;
        // As in the API: reading needs membership, changing anything at least `member`.
        if parts.method != Method::GET && parts.method != Method::HEAD {
            caller.require(Role::Member)?;
        }
        Ok(Member {
            visitor: signed.visitor,
            caller,
        })
    }
}
