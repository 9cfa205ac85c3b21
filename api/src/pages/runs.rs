//! The execution log and a run's page. The log updates itself: `app.js` listens to the
//! workspace's live feed (the API's SSE feed, opened with the browser's session) and, on each
//! run event, fetches the table's rows again from the server, so rendering stays here.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{html, Chrome, Member, PageResult, Tr};
use crate::error::ApiError;
use crate::executions;
use crate::AppState;

const STATUSES: [(&str, &str); 7] = [
    ("scheduled", "status.scheduled"),
    ("dispatched", "status.dispatched"),
    ("running", "status.running"),
    ("retry_scheduled", "status.retry_scheduled"),
    ("succeeded", "status.succeeded"),
    ("failed", "status.failed"),
    ("skipped", "status.skipped"),
];

/// A failure in a few words: the HTTP status, or the kind of error.
pub fn error_summary(tr: Tr, error_type: Option<&str>, status_code: Option<i32>) -> String {
    match (error_type, status_code) {
        (_, Some(code)) if !(200..300).contains(&code) => format!("HTTP {code}"),
        (Some(t), _) => tr.lookup(&format!("errtype.{t}")).unwrap_or(t).to_string(),
        (None, Some(code)) => format!("HTTP {code}"),
        (None, None) => "—".into(),
    }
}

/// What to check for a failure, in plain words.
fn hint(tr: Tr, error_type: Option<&str>, status_code: Option<i32>) -> Option<String> {
    let key = match (error_type, status_code) {
        (Some(t @ ("dns" | "connect" | "tls" | "timeout" | "too_large" | "assertion" | "blocked_target")), _) => {
            format!("hint.{t}")
        }
        (_, Some(401 | 403)) => "hint.auth".into(),
        (_, Some(404)) => "hint.404".into(),
        (_, Some(429)) => "hint.429".into(),
        (_, Some(c)) if c >= 500 => "hint.5xx".into(),
        _ => return None,
    };
    tr.lookup(&key).map(str::to_string)
}

pub struct RunRow {
    id: String,
    at: String,
    at_iso: String,
    job: String,
    status: String,
    status_key: String,
    trigger_key: String,
    result: String,
    duration: String,
}

fn time_of(v: &Value, k: &str) -> Option<DateTime<Utc>> {
    v[k].as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.to_utc())
}

fn row(tr: Tr, tz: &str, names: &HashMap<Uuid, String>, r: &Value) -> RunRow {
    let at = time_of(r, "scheduled_for").unwrap_or_default();
    let status = r["status"].as_str().unwrap_or_default().to_string();
    let job = r["job_id"]
        .as_str()
        .and_then(|s| Uuid::try_parse(s).ok())
        .and_then(|id| names.get(&id).cloned())
        .unwrap_or_else(|| tr.t("runs.deleted_job").to_string());
    let code = r["status_code"].as_i64().and_then(|c| i32::try_from(c).ok());
    let result = match status.as_str() {
        "succeeded" => code.map_or_else(|| "—".into(), |c| format!("HTTP {c}")),
        _ => error_summary(tr, r["error_type"].as_str(), code),
    };
    RunRow {
        id: r["id"].as_str().unwrap_or_default().to_string(),
        at: tr.when(at, tz),
        at_iso: at.to_rfc3339(),
        job,
        status_key: format!("status.{status}"),
        status,
        trigger_key: format!("trigger.{}", r["trigger"].as_str().unwrap_or("schedule")),
        result,
        duration: r["duration_ms"]
            .as_i64()
            .map_or_else(|| "—".into(), |ms| tr.f("runs.ms", &[("ms", &tr.num(ms))])),
    }
}

async fn job_names(state: &AppState, ws: Uuid, items: &[Value]) -> Result<HashMap<Uuid, String>, ApiError> {
    let ids: Vec<Uuid> = items
        .iter()
        .filter_map(|r| r["job_id"].as_str().and_then(|s| Uuid::try_parse(s).ok()))
        .collect();
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM jobs WHERE workspace_id = $1 AND id = ANY($2)")
            .bind(ws)
            .bind(&ids)
            .fetch_all(&state.pool)
            .await?;
    Ok(rows.into_iter().collect())
}

#[derive(Template)]
#[template(path = "app/runs.html")]
struct ListPage {
    c: Chrome,
    base: String,
    rows: Vec<RunRow>,
    statuses: [(&'static str, &'static str); 7],
    status: String,
    error_types: Vec<(&'static str, String)>,
    error_type: String,
    from: String,
    to: String,
    job_id: Option<String>,
    filter_q: String,
    live_url: String,
    rows_url: String,
    next_cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "app/runs_rows.html")]
struct RowsFragment {
    c: Chrome,
    base: String,
    rows: Vec<RunRow>,
}

pub async fn list(
    State(state): State<AppState>,
    m: Member,
    Query(mut q): Query<HashMap<String, String>>,
) -> PageResult {
    let tr = m.tr();
    q.retain(|_, v| !v.is_empty());
    let fragment = q.remove("fragment").is_some();
    // The form's `from`/`to` are local times (a `datetime-local` input) in the reader's zone;
    // the API takes instants.
    let zone: chrono_tz::Tz = m.zone().parse().unwrap_or(chrono_tz::Europe::Moscow);
    let mut api_q = q.clone();
    for k in ["from", "to"] {
        if let Some(v) = q.get(k) {
            if let Ok(local) = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M") {
                use chrono::TimeZone;
                if let Some(t) = zone.from_local_datetime(&local).earliest() {
                    api_q.insert(k.to_string(), t.with_timezone(&Utc).to_rfc3339());
                }
            }
        }
    }
    let page = executions::page(&state, &m.caller, &api_q).await?;
    let names = job_names(&state, m.caller.workspace_id, &page.items).await?;
    let rows: Vec<RunRow> = page.items.iter().map(|r| row(tr, &m.zone(), &names, r)).collect();
    let base = m.href("");
    if fragment {
        let page = RowsFragment {
            c: Chrome::for_member(&m, "", "runs"),
            base,
            rows,
        };
        return Ok(html(StatusCode::OK, &page, &[]));
    }
    let mut filter_q = String::new();
    for k in ["job_id", "status", "error_type", "from", "to"] {
        if let Some(v) = q.get(k) {
            filter_q.push_str(&format!("&{k}={}", super::url_encode(v)));
        }
    }
    let page = ListPage {
        c: Chrome::for_member(&m, tr.t("runs.title"), "runs"),
        live_url: format!("{base}/executions/live?{}", filter_q.trim_start_matches('&')),
        rows_url: format!("{base}/executions?fragment=rows{filter_q}"),
        base,
        rows,
        statuses: STATUSES,
        status: q.get("status").cloned().unwrap_or_default(),
        error_types: cronbox_domain::run::ErrorKind::ALL
            .iter()
            .map(|k| (k.as_str(), format!("errtype.{}", k.as_str())))
            .collect(),
        error_type: q.get("error_type").cloned().unwrap_or_default(),
        from: q.get("from").cloned().unwrap_or_default(),
        to: q.get("to").cloned().unwrap_or_default(),
        job_id: q.get("job_id").cloned(),
        filter_q,
        next_cursor: page.next_cursor,
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}

/// The workspace's live feed for the log page, opened with the browser's session (which the
/// feed checks again as it would an access token: logout or removal ends it).
pub async fn live(
    State(state): State<AppState>,
    m: Member,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let token = super::session::cookie(&headers, super::session::SESSION_COOKIE)
        .unwrap_or_default()
        .to_string();
    let mut q = q;
    q.retain(|k, v| k == "job_id" && !v.is_empty());
    Ok(crate::feed::open(&state, m.caller, token, &headers, &q).await?)
}

#[derive(Template)]
#[template(path = "app/run.html")]
struct RunPage {
    c: Chrome,
    base: String,
    r: RunRow,
    attempts: i64,
    hint: Option<String>,
    request: String,
    response: String,
    attempt_log: String,
    notifications: String,
}

fn pretty(v: &Value) -> String {
    if v.is_null() {
        return "—".into();
    }
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub async fn detail(State(state): State<AppState>, m: Member, Path((_, id)): Path<(String, String)>) -> PageResult {
    let tr = m.tr();
    let v = executions::detail(&state, &m.caller, &id).await?;
    let names = job_names(&state, m.caller.workspace_id, std::slice::from_ref(&v)).await?;
    let code = v["status_code"].as_i64().and_then(|c| i32::try_from(c).ok());
    let hint = if v["status"] == "failed" || v["status"] == "retry_scheduled" {
        hint(tr, v["error_type"].as_str(), code)
    } else {
        None
    };
    let page = RunPage {
        c: Chrome::for_member(&m, tr.t("run.title"), "runs"),
        base: m.href(""),
        attempts: v["attempts"].as_i64().unwrap_or(0),
        hint,
        request: pretty(&v["request"]),
        response: pretty(&v["response"]),
        attempt_log: pretty(&v["attempt_log"]),
        notifications: pretty(&v["notifications"]),
        r: row(tr, &m.zone(), &names, &v),
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}
