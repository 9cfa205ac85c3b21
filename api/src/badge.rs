//! Public status badges: a cron job its owners chose to publish answers at
//! `/badge/{token}.svg` with a small SVG of its last status, for a README or a wiki page. The
//! token is the only key (192 random bits), so the address is the permission; withdrawing the
//! badge makes it answer 404.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use crate::error::ApiError;
use crate::AppState;

/// A fresh badge token: 24 random bytes, hex.
pub fn new_token() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Whether `s` can be a token (so anything else is refused before a query).
fn is_token(s: &str) -> bool {
    s.len() == 48 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the badge says, from the job's state and its last run.
pub fn verdict(status: &str, last_status: Option<&str>) -> (&'static str, &'static str) {
    match (status, last_status) {
        ("paused", _) => ("paused", "#9f9f9f"),
        (_, Some("succeeded")) => ("ok", "#2e7d32"),
        (_, Some("failed")) => ("failing", "#c62828"),
        (_, Some("running" | "dispatched" | "retry_scheduled")) => ("running", "#1565c0"),
        _ => ("no runs yet", "#9f9f9f"),
    }
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if c.is_control() => String::new(),
            c => c.to_string(),
        })
        .collect()
}

/// The badge: the job's name (at most 40 characters) on grey, the verdict on its colour.
pub fn svg(name: &str, verdict: &str, colour: &str) -> String {
    let name: String = name.chars().take(40).collect();
    // About 7 px a character at 11 px Verdana, plus padding: close to what shields.io draws.
    let width = |s: &str| 7 * s.chars().count() as u32 + 12;
    let (l, r) = (width(&name), width(verdict));
    let (name, verdict) = (xml_escape(&name), xml_escape(verdict));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{name}: {verdict}"><title>{name}: {verdict}</title><rect width="{l}" height="20" fill="#555"/><rect x="{l}" width="{r}" height="20" fill="{colour}"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle"><text x="{lx}" y="14">{name}</text><text x="{rx}" y="14">{verdict}</text></g></svg>"##,
        w = l + r,
        lx = l / 2,
        rx = l + r / 2,
    )
}

/// `GET /badge/{token}.svg`.
pub async fn serve(State(state): State<AppState>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let token = file.strip_suffix(".svg").unwrap_or(&file);
    if !is_token(token) {
        return Err(ApiError::NotFound("badge"));
    }
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT name, status, last_status FROM jobs
          WHERE definition ? 'status_badge' AND definition->>'status_badge' = $1 AND status <> 'deleted'",
    )
    .bind(token)
    .fetch_optional(&state.pool)
    .await?;
    let (name, status, last) = row.ok_or(ApiError::NotFound("badge"))?;
    let (word, colour) = verdict(&status, last.as_deref());
    let mut resp = svg(&name, word, colour).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml; charset=utf-8"),
    );
    // Short: a badge follows the job; image proxies (GitHub's) refetch after this.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    Ok((StatusCode::OK, resp).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_badge_says_the_last_status_and_pausing_wins() {
        assert_eq!(verdict("active", Some("succeeded")).0, "ok");
        assert_eq!(verdict("active", Some("failed")).0, "failing");
        assert_eq!(verdict("paused", Some("failed")).0, "paused");
        assert_eq!(verdict("active", None).0, "no runs yet");
    }

    #[test]
    fn a_hostile_name_is_escaped_and_cut() {
        // Given a name with markup, quotes and a control character
        let s = svg("<script>\"x\"&\u{7}", "ok", "#2e7d32");
        // Then nothing of it is markup
        assert!(!s.contains("<script>") && s.contains("&lt;script&gt;&quot;x&quot;&amp;"));
        assert!(!s.contains('\u{7}'));
        let long = svg(&"я".repeat(100), "ok", "#2e7d32");
        assert!(long.contains(&"я".repeat(40)) && !long.contains(&"я".repeat(41)));
    }

    #[test]
    fn only_tokens_of_the_right_shape_reach_the_database() {
        assert!(is_token(&new_token()));
        assert!(!is_token("x"));
        assert!(!is_token(&"g".repeat(48)));
    }
}
