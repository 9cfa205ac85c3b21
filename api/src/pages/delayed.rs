//! Delayed calls: the list with its status filter, creating one (at a local time in a chosen
//! zone, or in N minutes), cancelling, and a call's page with its run and callback.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::{error_text, html, see_other, Chrome, Member, PageError, PageResult, Posted};
use crate::error::ApiError;
use crate::jobs::{self, Kind};
use crate::AppState;

const STATUSES: [(&str, &str); 5] = [
    ("pending", "status.pending"),
    ("running", "status.running"),
    ("succeeded", "status.succeeded"),
    ("failed", "status.failed"),
    ("cancelled", "status.cancelled"),
];

struct Row {
    id: String,
    name: String,
    at: String,
    at_iso: String,
    relative: String,
    status: String,
    status_key: String,
    url: String,
}

#[derive(Template)]
#[template(path = "app/delayed_list.html")]
struct ListPage {
    c: Chrome,
    base: String,
    rows: Vec<Row>,
    statuses: [(&'static str, &'static str); 5],
    status: String,
    can_edit: bool,
    search: String,
    search_q: String,
    sort: String,
    next_cursor: Option<String>,
}

fn at_of(v: &Value) -> DateTime<Utc> {
    v["execute_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.to_utc())
        .unwrap_or_default()
}

pub async fn list(
    State(state): State<AppState>,
    m: Member,
    Query(mut q): Query<HashMap<String, String>>,
) -> PageResult {
    let tr = m.tr();
    q.retain(|_, v| !v.is_empty());
    let page = jobs::list(&state, &m.caller, Kind::Delayed, &q).await?;
    let now = Utc::now();
    let rows = page
        .items
        .iter()
        .map(|v| {
            let at = at_of(v);
            let status = v["status"].as_str().unwrap_or_default().to_string();
            Row {
                id: v["id"].as_str().unwrap_or_default().to_string(),
                name: v["name"].as_str().unwrap_or_default().to_string(),
                at: tr.when(at, &m.zone()),
                at_iso: at.to_rfc3339(),
                relative: tr.relative(at, now),
                status_key: format!("status.{status}"),
                status,
                url: v["url"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect();
    let page = ListPage {
        c: Chrome::for_member(&m, tr.t("delayed.title"), "delayed").notice(super::notice(tr, &q)),
        base: m.href(""),
        rows,
        statuses: STATUSES,
        status: q.get("status").cloned().unwrap_or_default(),
        can_edit: m.caller.role >= cronbox_domain::workspace::Role::Member,
        search_q: super::url_encode(q.get("q").map_or("", String::as_str)),
        search: q.get("q").cloned().unwrap_or_default(),
        sort: q.get("sort").cloned().unwrap_or_else(|| "created".into()),
        next_cursor: page.next_cursor,
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}

/// The form's fields, as typed.
struct CallForm {
    name: String,
    when: String,
    minutes: String,
    at: String,
    timezone: String,
    method: String,
    url: String,
    body: String,
    callback_url: String,
}

impl CallForm {
    fn read(m: &Member, get: impl Fn(&str) -> Option<String>) -> Self {
        CallForm {
            name: get("name").unwrap_or_default(),
            when: get("when").unwrap_or_else(|| "in".into()),
            minutes: get("minutes").unwrap_or_else(|| "10".into()),
            at: get("at").unwrap_or_default(),
            timezone: get("timezone").unwrap_or_else(|| m.caller.timezone.clone()),
            method: get("method").unwrap_or_else(|| "POST".into()),
            url: get("url").unwrap_or_default(),
            body: get("body").unwrap_or_default(),
            callback_url: get("callback_url").unwrap_or_default(),
        }
    }

    /// The API's create body: `delay_seconds`, or `execute_at` from the local time in the zone.
    fn body(&self) -> Result<Map<String, Value>, ApiError> {
        let mut b = Map::new();
        if !self.name.is_empty() {
            b.insert("name".into(), json!(self.name));
        }
        b.insert("method".into(), json!(self.method));
        b.insert("url".into(), json!(self.url));
        if !self.body.is_empty() {
            b.insert("body".into(), json!(self.body));
        }
        if !self.callback_url.is_empty() {
            b.insert("callback_url".into(), json!(self.callback_url));
        }
        if self.when == "at" {
            let zone: chrono_tz::Tz = self
                .timezone
                .parse()
                .map_err(|_| ApiError::field("timezone", "invalid_timezone", "unknown time zone"))?;
            let bad = || {
                ApiError::field(
                    "execute_at",
                    "invalid",
                    "give the date and time, such as 2026-12-02T18:30",
                )
            };
            let local = NaiveDateTime::parse_from_str(&self.at, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(&self.at, "%Y-%m-%dT%H:%M:%S"))
                .map_err(|_| bad())?;
            // A time the clocks skip (spring forward) does not exist there; a repeated one
            // (autumn) means its first occurrence.
            let at = zone.from_local_datetime(&local).earliest().ok_or_else(|| {
                ApiError::field(
                    "execute_at",
                    "invalid",
                    "this local time does not exist in that zone (a clock change)",
                )
            })?;
            b.insert("execute_at".into(), json!(at.with_timezone(&Utc).to_rfc3339()));
        } else {
            let minutes: i64 = self
                .minutes
                .trim()
                .parse()
                .map_err(|_| ApiError::field("delay_seconds", "invalid_type", "minutes must be a whole number"))?;
            b.insert("delay_seconds".into(), json!(minutes.saturating_mul(60)));
        }
        Ok(b)
    }
}

#[derive(Template)]
#[template(path = "app/delayed_new.html")]
struct NewPage {
    c: Chrome,
    base: String,
    f: CallForm,
    error: Option<String>,
    zones: Vec<&'static str>,
    methods: Vec<&'static str>,
}

fn new_form(m: &Member, f: CallForm, error: Option<String>, status: StatusCode) -> PageResult {
    let page = NewPage {
        c: Chrome::for_member(m, m.tr().t("delayed.new"), "delayed"),
        base: m.href(""),
        f,
        error,
        zones: super::workspaces::zones(),
        methods: vec!["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
    };
    Ok(html(status, &page, &m.visitor.set_cookies))
}

pub async fn new_page(m: Member) -> PageResult {
    m.caller.require(cronbox_domain::workspace::Role::Member)?;
    let f = CallForm::read(&m, |_| None);
    new_form(&m, f, None, StatusCode::OK)
}

pub async fn create(State(state): State<AppState>, m: Member, form: Posted) -> PageResult {
    let f = CallForm::read(&m, |k| form.get(k));
    let result = match f.body() {
        Ok(body) => jobs::new_delayed_call(&state, &m.caller, &HeaderMap::new(), body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(jobs::Delayed::Created(job) | jobs::Delayed::Existing(job)) => {
            super::until_listed(&state, job.id.unwrap_or_default(), "pending").await;
            Ok(see_other(&m.href("/delayed?n=call_created")))
        }
        Err(e) => {
            let (status, code, field) = e.classify();
            if status.is_server_error() {
                return Err(PageError::Api(e));
            }
            let text = error_text(m.tr(), code, &e.to_string());
            let text = field.map_or(text.clone(), |f| format!("{f}: {text}"));
            new_form(&m, f, Some(text), status)
        }
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    _form: Posted,
) -> PageResult {
    jobs::cancel_delayed(&state, &m.caller, &id).await?;
    if let Ok(job_id) = uuid::Uuid::try_parse(&id) {
        super::until_listed(&state, job_id, "cancelled").await;
    }
    Ok(see_other(&m.href("/delayed?n=call_cancelled")))
}

#[derive(Template)]
#[template(path = "app/delayed.html")]
struct CallPage {
    c: Chrome,
    base: String,
    id: String,
    status: String,
    status_key: String,
    at: String,
    method: String,
    url: String,
    callback: Option<String>,
    callback_status: String,
    run_id: String,
    run_exists: bool,
    can_cancel: bool,
}

pub async fn detail(State(state): State<AppState>, m: Member, Path((_, id)): Path<(String, String)>) -> PageResult {
    let tr = m.tr();
    let v = jobs::view_any(&state, &m.caller, &id, Kind::Delayed).await?;
    let run_id = v["run_id"].as_str().unwrap_or_default().to_string();
    let run = match crate::executions::detail(&state, &m.caller, &run_id).await {
        Ok(r) => Some(r),
        Err(ApiError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let status = v["status"].as_str().unwrap_or_default().to_string();
    let callback_status = run
        .as_ref()
        .and_then(|r| r.run.callback.as_ref()?.status.clone())
        .map_or_else(
            || tr.t("delayed.callback_waiting").to_string(),
            |s| tr.lookup(&format!("delivery.{s}")).unwrap_or(&s).to_string(),
        );
    let page = CallPage {
        c: Chrome::for_member(&m, v["name"].as_str().unwrap_or_default(), "delayed"),
        base: m.href(""),
        id: v["id"].as_str().unwrap_or_default().to_string(),
        status_key: format!("status.{status}"),
        can_cancel: status == "pending" && m.caller.role >= cronbox_domain::workspace::Role::Member,
        status,
        at: tr.when(at_of(&v), &m.zone()),
        method: v["method"].as_str().unwrap_or_default().to_string(),
        url: v["url"].as_str().unwrap_or_default().to_string(),
        callback: v["callback_url"].as_str().map(str::to_string),
        callback_status,
        run_exists: run.is_some(),
        run_id,
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}
