//! The execution log and a run's page. The log updates itself: `app.js` listens to the
//! workspace's live feed (the API's SSE feed, opened with the browser's session) and, on each
//! run event, fetches the table's rows again from the server, so rendering stays here.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::{html, Chrome, Member, PageResult, Tr};
use crate::error::ApiError;
use crate::executions::{self, Execution};
use crate::AppState;
use cronbox_domain::workspace::Role;

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
pub fn hint(tr: Tr, error_type: Option<&str>, status_code: Option<i32>) -> Option<String> {
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

fn row(tr: Tr, tz: &str, names: &HashMap<Uuid, String>, r: &Execution) -> RunRow {
    let at = r.scheduled_for;
    let job = names
        .get(&r.job_id)
        .cloned()
        .unwrap_or_else(|| tr.t("runs.deleted_job").to_string());
    let result = match r.status.as_str() {
        "succeeded" => r.status_code.map_or_else(|| "—".into(), |c| format!("HTTP {c}")),
        _ => error_summary(tr, r.error_type.as_deref(), r.status_code),
    };
    RunRow {
        id: r.id.to_string(),
        at: tr.when(at, tz),
        at_iso: at.to_rfc3339(),
        job,
        status_key: format!("status.{}", r.status),
        status: r.status.clone(),
        trigger_key: format!("trigger.{}", r.trigger),
        result,
        duration: r
            .duration_ms
            .map_or_else(|| "—".into(), |ms| tr.f("runs.ms", &[("ms", &tr.num(ms))])),
    }
}

async fn job_names(state: &AppState, ws: Uuid, items: &[&Execution]) -> Result<HashMap<Uuid, String>, ApiError> {
    let ids: Vec<Uuid> = items.iter().map(|r| r.job_id).collect();
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
    let names = job_names(&state, m.caller.workspace_id, &page.items.iter().collect::<Vec<_>>()).await?;
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
    trigger_key: String,
    attempts: i64,
    hint: Option<String>,
    error_message: Option<String>,
    rerun_of: Option<String>,
    can_rerun: bool,
    method: String,
    url: String,
    request_headers: Vec<(String, String)>,
    request_body: Option<String>,
    response: Option<ResponseView>,
    attempt_rows: Vec<AttemptView>,
    deliveries: Vec<DeliveryRow>,
    trail: Vec<TrailRow>,
}

/// A response as the page shows it: text as text; a binary body as a hex dump, with its base64.
pub struct ResponseView {
    status: String,
    headers: Vec<(String, String)>,
    size: String,
    text: Option<String>,
    hex: Option<String>,
    base64: Option<String>,
}

pub struct AttemptView {
    n: i64,
    started: String,
    duration: String,
    result: String,
    error: String,
}

pub struct DeliveryRow {
    at: String,
    kind_key: String,
    status: String,
    status_key: String,
    attempts: i32,
    error: String,
}

pub struct TrailRow {
    event: String,
    at: String,
    data: String,
}

/// Bytes shown in a hex dump; the rest is summarised.
const HEX_BYTES: usize = 1024;

/// The classic `offset  hex  ascii` dump of the first [`HEX_BYTES`] of `bytes`.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).take(HEX_BYTES / 16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:08x}  {:<47}  {ascii}\n", i * 16, hex.join(" ")));
    }
    if bytes.len() > HEX_BYTES {
        out.push_str(&format!("… +{} bytes\n", bytes.len() - HEX_BYTES));
    }
    out
}

/// `[[name, value], …]` or `[{"name", "value"}, …]` as pairs.
fn header_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| match h {
                    Value::Array(p) => Some((p.first()?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string())),
                    Value::Object(_) => Some((h["name"].as_str()?.to_string(), h["value"].as_str()?.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn response_view(tr: Tr, v: &Value) -> Option<ResponseView> {
    use base64::Engine as _;
    if v.is_null() {
        return None;
    }
    let body = v["body"].as_str();
    let (text, hex, base64) = match (body, v["encoding"].as_str()) {
        (Some(b), Some("base64")) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default();
            (None, Some(hex_dump(&bytes)), Some(b.to_string()))
        }
        (Some(b), _) => (Some(b.to_string()), None, None),
        (None, _) => (None, None, None),
    };
    Some(ResponseView {
        status: v["status_code"]
            .as_i64()
            .map_or_else(|| "—".into(), |c| format!("HTTP {c}")),
        headers: header_pairs(&v["headers"]),
        size: tr.f("run.bytes", &[("n", &tr.num(v["size"].as_i64().unwrap_or(0)))]),
        text,
        hex,
        base64,
    })
}

fn attempt_view(tr: Tr, tz: &str, a: &executions::Attempt) -> AttemptView {
    let o = a.outcome.as_ref().unwrap_or(&Value::Null);
    let code = o["status_code"].as_i64().and_then(|c| i32::try_from(c).ok());
    let ok = o["error_kind"].is_null()
        && match o["accepted"].as_bool() {
            Some(accepted) => accepted,
            None => code.is_some_and(|c| (200..300).contains(&c)),
        };
    AttemptView {
        n: i64::from(a.attempt),
        started: a.started_at.map_or_else(|| "—".into(), |t| tr.when(t, tz)),
        duration: o["duration_ms"]
            .as_i64()
            .map_or_else(|| "—".into(), |ms| tr.f("runs.ms", &[("ms", &tr.num(ms))])),
        result: if o.is_null() {
            tr.t("status.running").to_string()
        } else if ok {
            code.map_or_else(|| tr.t("status.succeeded").to_string(), |c| format!("HTTP {c}"))
        } else {
            error_summary(tr, o["error_kind"].as_str(), code)
        },
        error: o["error_message"].as_str().unwrap_or_default().to_string(),
    }
}

pub async fn detail(State(state): State<AppState>, m: Member, Path((_, id)): Path<(String, String)>) -> PageResult {
    let tr = m.tr();
    let tz = m.zone();
    let d = executions::detail(&state, &m.caller, &id).await?;
    let v = &d.run;
    let names = job_names(&state, m.caller.workspace_id, &[v]).await?;
    let failed = v.status == "failed" || v.status == "retry_scheduled";
    let hint = if failed {
        hint(tr, v.error_type.as_deref(), v.status_code)
    } else {
        None
    };
    // The caller has seen the run (detail checked the workspace), so its trail is theirs.
    let trail = crate::events::trail(&state, "Run", v.id)
        .await?
        .into_iter()
        .map(|e| TrailRow {
            at: tr.when(e.recorded_at, &tz),
            data: serde_json::to_string(&e.data).unwrap_or_default(),
            event: e.event_type,
        })
        .collect();
    let deliveries = d
        .notifications
        .iter()
        .map(|n| DeliveryRow {
            at: tr.when(n.created_at, &tz),
            kind_key: format!("notify.{}", n.kind),
            status_key: format!("delivery.{}", n.status),
            status: n.status.clone(),
            attempts: n.attempts,
            error: n.error.clone().unwrap_or_default(),
        })
        .collect();
    let req = d.request.as_ref().unwrap_or(&Value::Null);
    let page = RunPage {
        c: Chrome::for_member(&m, tr.t("run.title"), "runs"),
        base: m.href(""),
        trigger_key: format!("trigger.{}", v.trigger),
        attempts: i64::from(v.attempts),
        hint,
        error_message: v.error_message.clone().filter(|s| !s.is_empty()),
        rerun_of: v.rerun_of.map(|r| r.to_string()),
        can_rerun: m.caller.role >= Role::Admin && (v.status == "succeeded" || v.status == "failed"),
        method: req["method"].as_str().unwrap_or("GET").to_string(),
        url: req["url"].as_str().unwrap_or_default().to_string(),
        request_headers: header_pairs(&req["headers"]),
        request_body: req["body"].as_str().map(str::to_string),
        response: d.response.as_ref().and_then(|r| response_view(tr, r)),
        attempt_rows: d.attempt_log.iter().map(|x| attempt_view(tr, &tz, x)).collect(),
        deliveries,
        trail,
        r: row(tr, &tz, &names, v),
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}

/// `POST …/executions/{id}/rerun`: the API's re-run (admin, counted against the plan), then the
/// new run's page.
pub async fn rerun(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    _form: super::Posted,
) -> PageResult {
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::NotFound("execution"))?;
    let allowance = m.caller.plan(&state).await?;
    let (run_id, _) = executions::rerun(
        &state.stores,
        id,
        Some(m.caller.workspace_id),
        m.caller.require(Role::Admin),
        Some(&allowance),
    )
    .await?;
    super::until_row(&state, "SELECT status FROM runs WHERE id = $1", run_id, None).await;
    Ok(super::see_other(&m.href(&format!("/executions/{run_id}"))))
}

#[cfg(test)]
mod tests {
    use super::hex_dump;

    #[test]
    fn a_binary_body_dumps_as_offset_hex_and_printable_bytes() {
        // Given bytes with NUL, high and printable bytes
        let bytes = [0u8, 0xff, b'A', b' ', b'z', 0x7f];
        // When dumped
        let d = hex_dump(&bytes);
        // Then one line: offset, the hex and the printable ones
        assert_eq!(d, format!("00000000  {:<47}  ..A z.\n", "00 ff 41 20 7a 7f"));
    }

    #[test]
    fn a_long_body_is_cut_with_the_count_of_bytes_left() {
        let bytes = vec![1u8; super::HEX_BYTES + 5];
        let d = hex_dump(&bytes);
        assert_eq!(d.lines().count(), super::HEX_BYTES / 16 + 1);
        assert!(d.ends_with("… +5 bytes\n"));
    }
}
