//! Who is looking at a page: the browser's session cookie, its language, and the anti-forgery
//! token its forms carry.
//!
//! - The session cookie (`cbx_session`, `HttpOnly`, `SameSite=Lax`, `Secure` when the public URL
//!   is HTTPS) holds a token of the same session aggregate the API's logins start; logout and a
//!   password change end it like an API session. A new one is issued on every login, so a
//!   cookie planted before login is never the session after it.
//! - Every form that changes something posts `_csrf`: an HMAC of the session id (or, before
//!   login, of a random visitor cookie), checked by [`Posted`] before the handler runs. A
//!   request that the browser marks cross-site (`Sec-Fetch-Site`) or whose `Origin` is another
//!   site is refused as well.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use cronbox_domain::channel::Language;
use rand::RngCore;

use crate::accounts::{self, UserCaller};
use crate::error::ApiError;
use crate::AppState;

use super::PageError;

pub const SESSION_COOKIE: &str = "cbx_session";
pub const VISITOR_COOKIE: &str = "cbx_visitor";
pub const LANG_COOKIE: &str = "cbx_lang";
/// What a form may post (a cron job's body is the largest field).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The value of cookie `name`, if the request carries it once or more (the first wins).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value with the attributes every CronBox cookie has.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age_seconds}; HttpOnly; SameSite=Lax{secure}")
}

pub fn secure(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The language of a page: the person's setting, else the language switch's cookie, else the
/// browser's `Accept-Language`, else Russian.
pub fn language(headers: &HeaderMap, user: Option<&UserCaller>) -> Language {
    if let Some(l) = user.and_then(|u| u.user.language) {
        return l;
    }
    if let Some(l) = cookie(headers, LANG_COOKIE).and_then(|c| Language::parse("lang", c).ok()) {
        return l;
    }
    crate::notifications::header_language(headers)
}

/// A browser, signed in or not.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub user: Option<UserCaller>,
    pub lang: Language,
    /// The token this visitor's forms carry.
    pub csrf: String,
    /// Cookies the response must set (a new visitor's anti-forgery binding; a stale session
    /// cookie's removal).
    pub set_cookies: Vec<String>,
    /// The path and query asked for (where to come back to after login).
    pub path: String,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let secure = secure(state);
        let mut set_cookies = Vec::new();
        let user = match cookie(&parts.headers, SESSION_COOKIE) {
            None => None,
            Some(token) => match accounts::user_from_cookie(state, token).await {
                Ok(u) => Some(u),
                Err(ApiError::InvalidToken) => {
                    set_cookies.push(set_cookie(SESSION_COOKIE, "", 0, secure));
                    None
                }
                Err(e) => return Err(e.into()),
            },
        };
        let csrf = match &user {
            Some(u) => state.jwt.csrf(&u.session_id.to_string()),
            None => {
                let binding = match cookie(&parts.headers, VISITOR_COOKIE) {
                    Some(v) if v.len() == 48 && v.bytes().all(|b| b.is_ascii_hexdigit()) => v.to_string(),
                    _ => {
                        let v = random_token();
                        set_cookies.push(set_cookie(VISITOR_COOKIE, &v, 86_400 * 30, secure));
                        v
                    }
                };
                state.jwt.csrf(&binding)
            }
        };
        let lang = language(&parts.headers, user.as_ref());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Visitor {
            user,
            lang,
            csrf,
            set_cookies,
            path,
        })
    }
}

/// A signed-in visitor; anyone else is sent to the login page (and brought back afterwards).
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub visitor: Visitor,
    pub user: UserCaller,
}

impl SignedIn {
    /// The signed-in visitor of this request, without counting it against a request budget
    /// (the caller counts it: per user, or per user in a workspace).
    pub async fn uncounted(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let visitor = Visitor::from_request_parts(parts, state).await?;
        let Some(user) = visitor.user.clone() else {
            let back = if parts.method == Method::GET {
                visitor.path.clone()
            } else {
                "/app".to_string()
            };
            return Err(PageError::Redirect(format!("/login?next={}", super::url_encode(&back))));
        };
        Ok(SignedIn { visitor, user })
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let signed = SignedIn::uncounted(parts, state).await?;
        let user = signed.user.clone();
        // The same per-user request budget as the API's access tokens outside a workspace.
        let plan = crate::plans::of_workspace(state, cronbox_domain::workspace::DEFAULT_PLAN).await?;
        let rpm = u32::try_from(plan.requests_per_minute).unwrap_or(0);
        crate::edge::limit(state, parts, crate::rate_limit::Subject::User(user.user_id), rpm).await?;
        Ok(signed)
    }
}

/// A form post whose anti-forgery token and origin were checked, with its fields.
#[derive(Debug)]
pub struct Posted {
    pub visitor: Visitor,
    pub fields: Vec<(String, String)>,
}

impl Posted {
    /// The first value of `name`, trimmed; None when absent or empty.
    /// The field as sent, trimmed, even when empty (None: the form did not carry it).
    pub fn raw(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name` (checkboxes, multi-selects), empty ones left out.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// Whether the browser says this request comes from another site.
fn cross_site(headers: &HeaderMap, state: &AppState) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site == "cross-site" {
            return true;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if origin == "null" {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let same_host = origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
    !(same_host || origin.eq_ignore_ascii_case(state.public_url.trim_end_matches('/')))
}

impl FromRequest<AppState> for Posted {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        if cross_site(&parts.headers, state) {
            tracing::info!(path = %visitor.path, "cross-site form post refused");
            return Err(PageError::Csrf);
        }
        let bytes = crate::input::read_body(body, MAX_FORM_BYTES).await?;
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&bytes).into_owned().collect();
        let sent = fields.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str());
        let expected = visitor.csrf.as_bytes();
        let ok = sent.is_some_and(|s| {
            s.len() == expected.len() && s.bytes().zip(expected).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
        });
        // A visitor whose cookie was just made cannot have a valid token yet.
        if !ok || (visitor.user.is_none() && visitor.set_cookies.iter().any(|c| c.starts_with(VISITOR_COOKIE))) {
            tracing::info!(path = %visitor.path, "form post without a valid anti-forgery token refused");
            return Err(PageError::Csrf);
        }
        Ok(Posted { visitor, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; cbx_session=tok; cbx_session_x=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("cbx_lang=en"));
        assert_eq!(cookie(&h, "cbx_session"), Some("tok"));
        assert_eq!(cookie(&h, "cbx_lang"), Some("en"));
        assert_eq!(cookie(&h, "cbx"), None);
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_over_https() {
        assert_eq!(
            set_cookie("cbx_session", "v", 60, true),
            "cbx_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(!set_cookie("cbx_session", "v", 60, false).contains("Secure"));
    }
}
