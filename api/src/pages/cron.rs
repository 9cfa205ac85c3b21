//! Cron jobs: the list with inline and bulk actions, and the editor with its schedule builder.
//!
//! The editor's fields become the API's create body and go through `jobs::new_cron_job`; the
//! preview of the next runs is computed by `CronSchedule`, the code the dispatcher fires with.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use chrono::Utc;
use cronbox_domain::cron_builder::{parse_time_of_day, Builder};
use cronbox_domain::schedule::CronSchedule;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{error_text, html, see_other, Chrome, Member, PageError, PageResult, Posted, Tr};
use crate::error::ApiError;
use crate::jobs::{self, Kind};
use crate::AppState;

struct Row {
    id: String,
    name: String,
    tags: Vec<String>,
    schedule: String,
    describe: String,
    /// (in the job's zone, ISO, relative)
    next: Option<(String, String, String)>,
    last: Option<String>,
    last_key: String,
    paused: bool,
    /// The recent runs as an inline SVG strip (empty: none yet).
    strip: String,
}

/// Runs the list's strip shows per job.
const STRIP_RUNS: i64 = 20;

/// The latest finished runs of each of `jobs`, oldest first: (succeeded, duration ms). One
/// statement, each job read from the runs-by-job index.
async fn recent_runs(
    state: &AppState,
    ws: Uuid,
    jobs: &[Uuid],
) -> Result<HashMap<Uuid, Vec<(bool, Option<i64>)>>, ApiError> {
    let rows: Vec<(Uuid, String, Option<i64>)> = sqlx::query_as(
        "SELECT j.id, r.status, r.duration_ms
           FROM unnest($2::uuid[]) AS j(id)
           CROSS JOIN LATERAL (
                SELECT status, duration_ms, scheduled_for FROM runs
                 WHERE workspace_id = $1 AND job_id = j.id AND status IN ('succeeded', 'failed')
                 ORDER BY scheduled_for DESC LIMIT $3) r
          ORDER BY j.id, r.scheduled_for",
    )
    .bind(ws)
    .bind(jobs)
    .bind(STRIP_RUNS)
    .fetch_all(&state.pool)
    .await?;
    let mut out: HashMap<Uuid, Vec<(bool, Option<i64>)>> = HashMap::new();
    for (id, status, ms) in rows {
        out.entry(id).or_default().push((status == "succeeded", ms));
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "app/cron_list.html")]
struct ListPage {
    c: Chrome,
    base: String,
    rows: Vec<Row>,
    can_edit: bool,
    status: String,
    tag: String,
    tag_q: String,
    search: String,
    search_q: String,
    sort: String,
    next_cursor: Option<String>,
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

pub async fn list(
    State(state): State<AppState>,
    m: Member,
    Query(mut q): Query<HashMap<String, String>>,
) -> PageResult {
    let tr = m.tr();
    q.retain(|_, v| !v.is_empty());
    let page = jobs::list(&state, &m.caller, Kind::Cron, &q).await?;
    let ids: Vec<Uuid> = page
        .items
        .iter()
        .filter_map(|j| j["id"].as_str().and_then(|s| Uuid::try_parse(s).ok()))
        .collect();
    let recent = recent_runs(&state, m.caller.workspace_id, &ids).await?;
    let now = Utc::now();
    let rows = page
        .items
        .iter()
        .map(|j| {
            let tz = text(j, "timezone");
            let next = j["next_run_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| {
                    let t = t.to_utc();
                    (tr.when(t, &tz), t.to_rfc3339(), tr.relative(t, now))
                });
            let last = j["last_status"].as_str().map(str::to_string);
            Row {
                id: text(j, "id"),
                name: text(j, "name"),
                tags: j["tags"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
                describe: super::describe_schedule(tr, &text(j, "schedule"), &text(j, "description_of_schedule")),
                schedule: text(j, "schedule"),
                next,
                last_key: format!("status.{}", last.as_deref().unwrap_or("none")),
                last,
                paused: j["status"] == "paused",
                strip: Uuid::try_parse(&text(j, "id"))
                    .ok()
                    .and_then(|id| recent.get(&id))
                    .map(|runs| {
                        let ok = runs.iter().filter(|r| r.0).count();
                        let label = tr.f(
                            "cron.strip",
                            &[("ok", &tr.num(ok as i64)), ("n", &tr.num(runs.len() as i64))],
                        );
                        super::charts::strip(&label, runs)
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let tag = q.get("tag").cloned().unwrap_or_default();
    let notice = super::notice(tr, &q);
    let page = ListPage {
        c: Chrome::for_member(&m, tr.t("cron.title"), "cron").notice(notice),
        base: m.href(""),
        rows,
        can_edit: m.caller.role >= cronbox_domain::workspace::Role::Member,
        status: q.get("status").cloned().unwrap_or_default(),
        tag_q: super::url_encode(&tag),
        tag,
        search_q: super::url_encode(q.get("q").map_or("", String::as_str)),
        search: q.get("q").cloned().unwrap_or_default(),
        sort: q.get("sort").cloned().unwrap_or_else(|| "created".into()),
        next_cursor: page.next_cursor,
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}

/// Where to go back to after an action: the list, with a notice.
fn back(m: &Member, notice: &str) -> PageResult {
    Ok(see_other(&m.href(&format!("/cron?n={notice}"))))
}

/// `POST …/cron/{id}/{pause|resume|run|delete}`: one job's inline action.
pub async fn act(
    State(state): State<AppState>,
    m: Member,
    Path((_, id, action)): Path<(String, String, String)>,
    form: Posted,
) -> PageResult {
    match action.as_str() {
        "test" => test_request(&state, &m, &form, Some(&id)).await,
        "badge" => {
            let set = |on: bool| {
                let mut b = Map::new();
                b.insert("status_badge".into(), json!(on));
                jobs::change_cron_job(&state, &m.caller, &id, b)
            };
            let notice = match form.get("do").as_deref() {
                Some("on") => set(true).await.map(|_| "badge_on")?,
                Some("off") => set(false).await.map(|_| "badge_off")?,
                // A new address: the old one stops answering.
                Some("rotate") => {
                    set(false).await?;
                    set(true).await.map(|_| "badge_rotated")?
                }
                _ => return Err(ApiError::field("do", "invalid", "do must be on, off or rotate").into()),
            };
            Ok(see_other(&m.href(&format!("/cron/{id}?n={notice}"))))
        }
        "pause" => {
            let job = jobs::pause(&state, &m.caller, &id).await?;
            super::until_listed(&state, job.id.unwrap_or_default(), "paused").await;
            back(&m, "paused")
        }
        "resume" => {
            let job = jobs::resume(&state, &m.caller, &id).await?;
            super::until_listed(&state, job.id.unwrap_or_default(), "active").await;
            back(&m, "resumed")
        }
        "run" => {
            jobs::run_now(&state, &m.caller, &id).await?;
            back(&m, "run_requested")
        }
        "delete" => {
            jobs::delete_cron_job(&state, &m.caller, &id).await?;
            back(&m, "deleted")
        }
        _ => Err(ApiError::NotFound("route").into()),
    }
}

/// `POST …/cron/bulk`: one action on the ticked jobs. Stops at the first refusal (a plan limit
/// on resume, say) and says so; the jobs before it keep their new state.
pub async fn bulk(State(state): State<AppState>, m: Member, form: Posted) -> PageResult {
    let ids = form.all("ids");
    if ids.is_empty() {
        return back(&m, "none_selected");
    }
    if ids.len() > 100 {
        return Err(ApiError::field("ids", "too_many", "at most 100 jobs at once").into());
    }
    let action = form.get("action").unwrap_or_default();
    for id in &ids {
        match action.as_str() {
            "pause" => jobs::pause(&state, &m.caller, id).await.map(|_| ())?,
            "resume" => jobs::resume(&state, &m.caller, id).await.map(|_| ())?,
            "delete" => jobs::delete_cron_job(&state, &m.caller, id).await?,
            _ => return Err(ApiError::field("action", "invalid", "action must be pause, resume or delete").into()),
        }
    }
    back(&m, &format!("bulk_{action}"))
}

/// The editor's fields, as typed (so a refused form comes back as it was sent).
struct CronForm {
    name: String,
    tags: String,
    mode: String,
    every_minutes: String,
    every_hours: String,
    time: String,
    days: Vec<String>,
    day_of_month: String,
    expression: String,
    timezone: String,
    method: String,
    url: String,
    headers: String,
    body: String,
    timeout_seconds: String,
    retry_count: String,
    /// The headers as the editor first showed them: left unchanged, they are not sent back
    /// (below `admin` their secret values are shown masked and must not overwrite the real ones).
    headers_orig: Option<String>,
    /// The retry, success, overlap, misfire and alert fields the form held, by their API
    /// names, as typed (a field the post did not carry is absent, and left as it was).
    more: HashMap<&'static str, String>,
    /// Whether the post carried the checkboxes (an unticked box is then off, not unknown).
    flags: bool,
    notify_on_failure: bool,
    notify_on_recovery: bool,
    /// The channels ticked for this job's alerts (none: every channel of the workspace).
    alert_channels: Vec<String>,
}

/// Whole numbers among [`MORE`].
const MORE_INTS: [&str; 4] = [
    "retry_delay_seconds",
    "retry_max_delay_seconds",
    "misfire_grace_seconds",
    "alert_after_failures",
];
/// Choices among [`MORE`]: empty is the workspace's default.
const MORE_CHOICES: [&str; 3] = ["retry_backoff", "overlap_policy", "misfire_policy"];
/// Texts among [`MORE`] that an edit clears when emptied.
const MORE_CLEARABLE: [&str; 2] = ["expect_body_contains", "realert_every"];
/// Comma-separated lists among [`MORE`].
const MORE_LISTS: [&str; 2] = ["expected_status", "sensitive_headers"];
const MORE: [&str; 11] = [
    "retry_delay_seconds",
    "retry_max_delay_seconds",
    "misfire_grace_seconds",
    "alert_after_failures",
    "retry_backoff",
    "overlap_policy",
    "misfire_policy",
    "expect_body_contains",
    "realert_every",
    "expected_status",
    "sensitive_headers",
];

impl CronForm {
    fn defaults(m: &Member) -> Self {
        CronForm {
            name: String::new(),
            tags: String::new(),
            mode: "daily".into(),
            every_minutes: "15".into(),
            every_hours: "1".into(),
            time: "03:00".into(),
            days: vec!["1".into()],
            day_of_month: "1".into(),
            expression: String::new(),
            timezone: m.caller.timezone.clone(),
            method: "POST".into(),
            url: String::new(),
            headers: String::new(),
            body: String::new(),
            timeout_seconds: String::new(),
            retry_count: String::new(),
            headers_orig: None,
            more: HashMap::new(),
            flags: false,
            notify_on_failure: m.caller.workspace.job_defaults.notify_on_failure.unwrap_or(true),
            notify_on_recovery: m.caller.workspace.job_defaults.notify_on_recovery.unwrap_or(true),
            alert_channels: Vec::new(),
        }
    }

    fn more(&self, k: &str) -> &str {
        self.more.get(k).map_or("", String::as_str)
    }

    /// The editor's fields for an existing job (as the API shows it to this member).
    fn from_view(m: &Member, v: &Value) -> Self {
        let mut f = Self::defaults(m);
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        f.name = s("name");
        f.tags = v["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        f.timezone = s("timezone");
        f.method = s("method");
        f.url = s("url");
        f.body = s("body");
        f.headers = v["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        f.headers_orig = Some(f.headers.clone());
        f.timeout_seconds = v["timeout_seconds"].as_i64().map(|n| n.to_string()).unwrap_or_default();
        f.retry_count = v["retry_count"].as_i64().map(|n| n.to_string()).unwrap_or_default();
        for k in MORE {
            let text = match &v[k] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                _ => String::new(),
            };
            f.more.insert(k, text);
        }
        f.notify_on_failure = v["notify_on_failure"].as_bool().unwrap_or(true);
        f.notify_on_recovery = v["notify_on_recovery"].as_bool().unwrap_or(true);
        f.alert_channels = v["alert_channels"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let hm = |h: u32, mi: u32| format!("{h:02}:{mi:02}");
        match Builder::recognise(&s("schedule")) {
            Builder::EveryMinutes(n) => (f.mode, f.every_minutes) = ("minutes".into(), n.to_string()),
            Builder::EveryHours(n) => (f.mode, f.every_hours) = ("hours".into(), n.to_string()),
            Builder::Daily { hour, minute } => (f.mode, f.time) = ("daily".into(), hm(hour, minute)),
            Builder::Weekly { days, hour, minute } => {
                (f.mode, f.time) = ("weekly".into(), hm(hour, minute));
                f.days = days.iter().map(u32::to_string).collect();
            }
            Builder::Monthly { day, hour, minute } => {
                (f.mode, f.time, f.day_of_month) = ("monthly".into(), hm(hour, minute), day.to_string())
            }
            Builder::Custom(e) => (f.mode, f.expression) = ("custom".into(), e),
        }
        f
    }

    /// The form as posted: `get` a non-empty field, `raw` a field even when emptied.
    fn read(
        m: &Member,
        get: impl Fn(&str) -> Option<String>,
        raw: impl Fn(&str) -> Option<String>,
        days: Vec<String>,
        channels: Vec<String>,
    ) -> Self {
        let d = Self::defaults(m);
        // `flags` marks a form that had the checkboxes: an unticked box is then absent, not
        // unknown.
        let flags = get("flags").is_some();
        let or = |k: &str, v: String| get(k).unwrap_or(v);
        CronForm {
            name: or("name", d.name),
            tags: or("tags", d.tags),
            mode: or("mode", d.mode),
            every_minutes: or("every_minutes", d.every_minutes),
            every_hours: or("every_hours", d.every_hours),
            time: or("time", d.time),
            days: if get("mode").is_some() { days } else { d.days },
            day_of_month: or("day_of_month", d.day_of_month),
            expression: or("expression", d.expression),
            timezone: or("timezone", d.timezone),
            method: or("method", d.method),
            url: or("url", d.url),
            headers: or("headers", d.headers),
            body: or("body", d.body),
            timeout_seconds: or("timeout_seconds", d.timeout_seconds),
            retry_count: or("retry_count", d.retry_count),
            headers_orig: get("headers_orig"),
            more: MORE.iter().filter_map(|k| Some((*k, raw(k)?))).collect(),
            flags,
            notify_on_failure: if flags {
                get("notify_on_failure").is_some()
            } else {
                d.notify_on_failure
            },
            notify_on_recovery: if flags {
                get("notify_on_recovery").is_some()
            } else {
                d.notify_on_recovery
            },
            alert_channels: channels,
        }
    }

    /// A curl command pasted into the URL field fills the request's fields from it (method,
    /// URL, headers, body). Returns whether it did.
    fn import_curl(&mut self) -> Result<bool, ApiError> {
        if !self.url.trim_start().starts_with("curl ") {
            return Ok(false);
        }
        let r = cronbox_domain::curl::parse(self.url.trim())?;
        self.method = r.method;
        self.url = r.url;
        self.headers = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n");
        self.body = r.body.unwrap_or_default();
        Ok(true)
    }

    fn builder(&self) -> Result<Builder, ApiError> {
        let num = |field: &str, s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| ApiError::field(field, "invalid_type", format!("{field} must be a whole number")))
        };
        let time = || parse_time_of_day("time", &self.time).map_err(ApiError::from);
        Ok(match self.mode.as_str() {
            "minutes" => Builder::EveryMinutes(num("every_minutes", &self.every_minutes)?),
            "hours" => Builder::EveryHours(num("every_hours", &self.every_hours)?),
            "daily" => {
                let (hour, minute) = time()?;
                Builder::Daily { hour, minute }
            }
            "weekly" => {
                let (hour, minute) = time()?;
                let days = self.days.iter().map(|d| num("days", d)).collect::<Result<_, _>>()?;
                Builder::Weekly { days, hour, minute }
            }
            "monthly" => {
                let (hour, minute) = time()?;
                Builder::Monthly {
                    day: num("day_of_month", &self.day_of_month)?,
                    hour,
                    minute,
                }
            }
            _ => Builder::Custom(self.expression.clone()),
        })
    }

    fn expression(&self) -> Result<String, ApiError> {
        Ok(self.builder()?.expression()?)
    }

    /// The API's create body for these fields.
    fn body(&self) -> Result<Map<String, Value>, ApiError> {
        let mut b = Map::new();
        b.insert("name".into(), json!(self.name.trim()));
        b.insert("schedule".into(), json!(self.expression()?));
        b.insert("timezone".into(), json!(self.timezone));
        b.insert("method".into(), json!(self.method));
        b.insert("url".into(), json!(self.url.trim()));
        let tags: Vec<&str> = self.tags.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
        if !tags.is_empty() {
            b.insert("tags".into(), json!(tags));
        }
        let editing = self.headers_orig.is_some();
        let same_headers = self.headers_orig.as_deref().map(normalise_lines) == Some(normalise_lines(&self.headers));
        if !same_headers {
            let mut headers = Map::new();
            for line in self.headers.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let (k, v) = line
                    .split_once(':')
                    .ok_or_else(|| ApiError::field("headers", "invalid", "each header line must be `Name: value`"))?;
                headers.insert(k.trim().to_string(), json!(v.trim()));
            }
            if editing || !headers.is_empty() {
                b.insert("headers".into(), Value::Object(headers));
            }
        }
        if !self.body.is_empty() {
            b.insert("body".into(), json!(self.body));
        } else if editing {
            b.insert("body".into(), Value::Null);
        }
        for (field, v) in [
            ("timeout_seconds", &self.timeout_seconds),
            ("retry_count", &self.retry_count),
        ] {
            if !v.trim().is_empty() {
                let n: i64 = v
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::field(field, "invalid_type", format!("{field} must be a whole number")))?;
                b.insert(field.into(), json!(n));
            }
        }
        for field in MORE_INTS {
            let v = self.more(field).trim();
            if !v.is_empty() {
                let n: i64 = v
                    .parse()
                    .map_err(|_| ApiError::field(field, "invalid_type", format!("{field} must be a whole number")))?;
                b.insert(field.into(), json!(n));
            }
        }
        for field in MORE_CHOICES {
            let v = self.more(field).trim();
            if !v.is_empty() {
                b.insert(field.into(), json!(v));
            }
        }
        for field in MORE_CLEARABLE {
            match self.more.get(field).map(|v| v.trim()) {
                Some("") if editing => {
                    b.insert(field.into(), Value::Null);
                }
                Some("") | None => {}
                Some(v) => {
                    b.insert(field.into(), json!(v));
                }
            }
        }
        for field in MORE_LISTS {
            let Some(text) = self.more.get(field) else { continue };
            let items: Vec<&str> = text.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
            // An emptied list of secret headers clears the marks; an empty status list is
            // the default (any 2xx).
            if !items.is_empty() || (editing && field == "sensitive_headers") {
                b.insert(field.into(), json!(items));
            }
        }
        if self.flags {
            b.insert("notify_on_failure".into(), json!(self.notify_on_failure));
            b.insert("notify_on_recovery".into(), json!(self.notify_on_recovery));
            if !self.alert_channels.is_empty() {
                b.insert("alert_channels".into(), json!(self.alert_channels));
            } else if editing {
                b.insert("alert_channels".into(), Value::Null);
            }
        }
        Ok(b)
    }
}

fn normalise_lines(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

struct Preview {
    expression: String,
    describe: String,
    timezone: String,
    next: Vec<String>,
}

fn preview(tr: Tr, f: &CronForm) -> Result<Preview, String> {
    let expr = f.expression().map_err(|e| e.to_string())?;
    let s = CronSchedule::parse(&expr, &f.timezone).map_err(|e| e.to_string())?;
    Ok(Preview {
        expression: s.expression().to_string(),
        describe: super::describe_schedule(tr, s.expression(), &s.describe()),
        timezone: f.timezone.clone(),
        next: s
            .upcoming(Utc::now(), 5)
            .into_iter()
            .map(|t| tr.when(t.with_timezone(&Utc), &f.timezone))
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "app/cron_edit.html")]
struct EditPage {
    c: Chrome,
    base: String,
    /// Where the form posts: `…/cron/new`, or `…/cron/{id}/edit`.
    action: String,
    /// Where its "test request" button posts it.
    test_action: String,
    test: Option<TestView>,
    /// The workspace's channels: (id, name, ticked for this job).
    channels: Vec<(String, String, bool)>,
    f: CronForm,
    error: Option<String>,
    preview: Result<Preview, String>,
    modes: Vec<(&'static str, &'static str)>,
    days: Vec<(u32, &'static str, bool)>,
    zones: Vec<&'static str>,
    methods: Vec<&'static str>,
    overlaps: [(&'static str, &'static str); 3],
    misfires: [(&'static str, &'static str); 3],
}

#[derive(Template)]
#[template(path = "app/cron_preview.html")]
struct PreviewFragment {
    c: Chrome,
    preview: Result<Preview, String>,
}

/// The editor, for a new job (`job` None) or for job `job`.
async fn editor(
    state: &AppState,
    m: &Member,
    f: CronForm,
    error: Option<String>,
    status: StatusCode,
    job: Option<&str>,
) -> PageResult {
    editor_with(
        state,
        m,
        f,
        Shown {
            error,
            ..Shown::default()
        },
        status,
        job,
    )
    .await
}

/// What the editor shows above or beside the form.
#[derive(Default)]
struct Shown {
    error: Option<String>,
    notice: Option<String>,
    test: Option<TestView>,
}

/// The outcome of a test request, as the editor shows it.
pub struct TestView {
    ok: bool,
    status: String,
    duration: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    hex: Option<String>,
    error: Option<String>,
    hint: Option<String>,
}

fn test_view(tr: Tr, o: &cronbox_domain::run::AttemptOutcome) -> TestView {
    use base64::Engine as _;
    let code = o.status_code.map(i32::from);
    let kind = o.error_kind.map(|k| k.as_str());
    let (body, hex) = match (&o.response_body, o.response_body_encoding.is_text()) {
        (Some(b), true) => (Some(b.clone()), None),
        (Some(b), false) => (
            None,
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .map(|bytes| super::runs::hex_dump(&bytes)),
        ),
        (None, _) => (None, None),
    };
    TestView {
        ok: o.is_success(),
        status: if o.is_success() {
            code.map_or_else(|| "—".into(), |c| format!("HTTP {c}"))
        } else {
            super::runs::error_summary(tr, kind, code)
        },
        duration: tr.f(
            "runs.ms",
            &[("ms", &tr.num(i64::try_from(o.duration_ms).unwrap_or(i64::MAX)))],
        ),
        headers: o.response_headers.clone(),
        body,
        hex,
        error: o.error_message.clone(),
        hint: if o.is_success() {
            None
        } else {
            super::runs::hint(tr, kind, code)
        },
    }
}

async fn editor_with(
    state: &AppState,
    m: &Member,
    f: CronForm,
    shown: Shown,
    status: StatusCode,
    job: Option<&str>,
) -> PageResult {
    let tr = m.tr();
    let channels = match &state.notify {
        Some(n) => cronbox_notify::channels::list(n, m.caller.workspace_id)
            .await
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|c| {
                let id = c.id.to_string();
                let on = f.alert_channels.contains(&id);
                (id, c.name, on)
            })
            .collect(),
        None => Vec::new(),
    };
    const DAYS: [(u32, &str); 7] = [
        (1, "day.1"),
        (2, "day.2"),
        (3, "day.3"),
        (4, "day.4"),
        (5, "day.5"),
        (6, "day.6"),
        (0, "day.0"),
    ];
    let (title, action, test_action) = match job {
        None => (tr.t("editor.title_new"), m.href("/cron/new"), m.href("/cron/test")),
        Some(id) => (
            tr.t("editor.title_edit"),
            m.href(&format!("/cron/{id}/edit")),
            m.href(&format!("/cron/{id}/test")),
        ),
    };
    let Shown { error, notice, test } = shown;
    let page = EditPage {
        c: Chrome::for_member(m, title, "cron").notice(notice),
        base: m.href(""),
        action,
        test_action,
        test,
        channels,
        preview: preview(tr, &f),
        days: DAYS
            .iter()
            .map(|(n, k)| (*n, *k, f.days.iter().any(|d| d == &n.to_string())))
            .collect(),
        f,
        error,
        modes: vec![
            ("minutes", "editor.mode_minutes"),
            ("hours", "editor.mode_hours"),
            ("daily", "editor.mode_daily"),
            ("weekly", "editor.mode_weekly"),
            ("monthly", "editor.mode_monthly"),
            ("custom", "editor.mode_custom"),
        ],
        zones: super::workspaces::zones(),
        methods: vec!["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
        overlaps: [
            ("allow", "editor.overlap_allow"),
            ("skip", "editor.overlap_skip"),
            ("queue_one", "editor.overlap_queue_one"),
        ],
        misfires: [
            ("run_once", "editor.misfire_run_once"),
            ("skip", "editor.misfire_skip"),
            ("run_all", "editor.misfire_run_all"),
        ],
    };
    Ok(html(status, &page, &m.visitor.set_cookies))
}

/// The editor; with `fragment=1`, only the preview of the schedule in its query (what the
/// page's script fetches as you type).
pub async fn new_page(State(state): State<AppState>, m: Member, RawQuery(raw): RawQuery) -> PageResult {
    m.caller.require(cronbox_domain::workspace::Role::Member)?;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let days = pairs
        .iter()
        .filter(|(n, _)| n == "days")
        .map(|(_, v)| v.clone())
        .collect();
    let channels = pairs
        .iter()
        .filter(|(n, _)| n == "alert_channels")
        .map(|(_, v)| v.clone())
        .collect();
    let raw = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut f = CronForm::read(&m, get, raw, days, channels);
    let mut clone_note = None;
    if let Some(from) = get("from") {
        // Clone: the editor opens with that job's fields, under a new name.
        let v = jobs::view_any(&state, &m.caller, &from, Kind::Cron).await?;
        f = CronForm::from_view(&m, &v);
        f.headers_orig = None;
        f.name = m.tr().f("editor.copy_of", &[("name", &f.name)]);
        if !m.caller.sees_credentials() {
            // Below admin the secret values are masked: a copy would send the mask, and a way
            // to copy them would be a way to send them elsewhere. They are left out.
            let secret: Vec<String> = v["sensitive_headers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h.as_str().map(str::to_ascii_lowercase))
                        .collect()
                })
                .unwrap_or_default();
            let kept: Vec<&str> = f
                .headers
                .lines()
                .filter(|l| {
                    let name = l.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
                    !secret.contains(&name)
                })
                .collect();
            if kept.len() != f.headers.lines().count() {
                clone_note = Some(m.tr().t("editor.secrets_not_copied").to_string());
            }
            f.headers = kept.join("\n");
        }
    }
    if get("fragment").is_some() {
        let page = PreviewFragment {
            c: Chrome::for_member(&m, "", "cron"),
            preview: preview(m.tr(), &f),
        };
        return Ok(html(StatusCode::OK, &page, &[]));
    }
    editor(&state, &m, f, clone_note, StatusCode::OK, None).await
}

/// A form whose URL field held a curl command comes back filled in from it, to check and
/// save (nothing is stored yet); a command that cannot be read says why.
async fn imported(state: &AppState, m: &Member, f: &mut CronForm, job: Option<&str>) -> Option<PageResult> {
    let (error, notice, status) = match f.import_curl() {
        Ok(false) => return None,
        Ok(true) => (None, Some(m.tr().t("editor.imported").to_string()), StatusCode::OK),
        Err(e) => (Some(format!("url: {e}")), None, StatusCode::BAD_REQUEST),
    };
    let f = std::mem::replace(f, CronForm::defaults(m));
    let shown = Shown {
        error,
        notice,
        test: None,
    };
    Some(editor_with(state, m, f, shown, status, job).await)
}

/// `POST …/cron/test` and `…/cron/{id}/test`: the request exactly as the form holds it now,
/// sent once; the editor comes back as it was, with the outcome. Nothing is saved.
async fn test_request(state: &AppState, m: &Member, form: &Posted, job: Option<&str>) -> PageResult {
    let mut f = CronForm::read(
        m,
        |k| form.get(k),
        |k| form.raw(k),
        form.all("days"),
        form.all("alert_channels"),
    );
    if job.is_some() {
        f.headers_orig = Some(
            form.fields
                .iter()
                .find(|(k, _)| k == "headers_orig")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        );
    }
    if let Some(page) = imported(state, m, &mut f, job).await {
        return page;
    }
    let sent = match f.body() {
        Ok(body) => match jobs::request_of(state, &m.caller, job, body).await {
            Ok(spec) => crate::probe::send(state, &m.caller, spec).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let shown = match sent {
        Ok(outcome) => Shown {
            test: Some(test_view(m.tr(), &outcome)),
            ..Shown::default()
        },
        Err(e) => {
            let (status, code, field) = e.classify();
            if status.is_server_error() {
                return Err(PageError::Api(e));
            }
            let text = error_text(m.tr(), code, &e.to_string());
            let error = Some(field.map_or(text.clone(), |f| format!("{f}: {text}")));
            return editor_with(
                state,
                m,
                f,
                Shown {
                    error,
                    ..Shown::default()
                },
                status,
                job,
            )
            .await;
        }
    };
    editor_with(state, m, f, shown, StatusCode::OK, job).await
}

pub async fn test_new(State(state): State<AppState>, m: Member, form: Posted) -> PageResult {
    test_request(&state, &m, &form, None).await
}

pub async fn create(State(state): State<AppState>, m: Member, form: Posted) -> PageResult {
    let mut f = CronForm::read(
        &m,
        |k| form.get(k),
        |k| form.raw(k),
        form.all("days"),
        form.all("alert_channels"),
    );
    if let Some(page) = imported(&state, &m, &mut f, None).await {
        return page;
    }
    let result = match f.body() {
        Ok(body) => jobs::new_cron_job(&state, &m.caller, body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(job) => {
            let id: Uuid = job.id.unwrap_or_default();
            tracing::info!(job_id = %id, workspace_id = %m.caller.workspace_id, "cron job created in the web app");
            super::until_listed(&state, id, "active").await;
            back(&m, "created")
        }
        Err(e) => {
            let (status, code, field) = e.classify();
            if status.is_server_error() {
                return Err(PageError::Api(e));
            }
            let tr = m.tr();
            let text = error_text(tr, code, &e.to_string());
            let text = match field {
                Some(f) => format!("{f}: {text}"),
                None => text,
            };
            editor(&state, &m, f, Some(text), status, None).await
        }
    }
}

/// The editor for an existing job.
pub async fn edit_page(State(state): State<AppState>, m: Member, Path((_, id)): Path<(String, String)>) -> PageResult {
    m.caller.require(cronbox_domain::workspace::Role::Member)?;
    let v = jobs::view_any(&state, &m.caller, &id, Kind::Cron).await?;
    let f = CronForm::from_view(&m, &v);
    editor(&state, &m, f, None, StatusCode::OK, Some(&id)).await
}

pub async fn update(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    form: Posted,
) -> PageResult {
    let f = CronForm::read(
        &m,
        |k| form.get(k),
        |k| form.raw(k),
        form.all("days"),
        form.all("alert_channels"),
    );
    // Present (possibly empty) in every post of the edit form.
    let mut f = CronForm {
        headers_orig: Some(
            form.fields
                .iter()
                .find(|(k, _)| k == "headers_orig")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        ),
        ..f
    };
    if let Some(page) = imported(&state, &m, &mut f, Some(&id)).await {
        return page;
    }
    let result = match f.body() {
        Ok(body) => jobs::change_cron_job(&state, &m.caller, &id, body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(job) => {
            tracing::info!(job_id = %id, workspace_id = %m.caller.workspace_id, "cron job changed in the web app");
            let _ = job;
            back(&m, "saved")
        }
        Err(e) => {
            let (status, code, field) = e.classify();
            if status.is_server_error() {
                return Err(PageError::Api(e));
            }
            let text = error_text(m.tr(), code, &e.to_string());
            let text = field.map_or(text.clone(), |f| format!("{f}: {text}"));
            editor(&state, &m, f, Some(text), status, Some(&id)).await
        }
    }
}
