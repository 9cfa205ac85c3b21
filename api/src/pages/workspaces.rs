//! The workspace list (and creating one) and a workspace's dashboard.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{error_text, html, see_other, Chrome, Member, PageResult, Posted, SignedIn, Tr};
use crate::AppState;

/// The zones the pickers offer first (where CronBox's users are), then every other IANA zone.
pub fn zones() -> Vec<&'static str> {
    const FIRST: &[&str] = &[
        "Europe/Moscow",
        "Europe/Kaliningrad",
        "Europe/Samara",
        "Asia/Yekaterinburg",
        "Asia/Omsk",
        "Asia/Novosibirsk",
        "Asia/Krasnoyarsk",
        "Asia/Irkutsk",
        "Asia/Yakutsk",
        "Asia/Vladivostok",
        "Asia/Magadan",
        "Asia/Kamchatka",
        "UTC",
    ];
    let mut all: Vec<&'static str> = FIRST.to_vec();
    let mut rest: Vec<&'static str> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|z| z.name())
        .filter(|n| !FIRST.contains(n))
        .collect();
    rest.sort_unstable();
    all.extend(rest);
    all
}

/// The catalogue key of a role's name.
pub fn role_key(role: &str) -> &'static str {
    match role {
        "owner" => "role.owner",
        "admin" => "role.admin",
        "member" => "role.member",
        _ => "role.viewer",
    }
}

struct Row {
    id: Uuid,
    name: String,
    slug: Option<String>,
    timezone: String,
    role: String,
}

#[derive(Template)]
#[template(path = "app/workspaces.html")]
struct ListPage {
    c: Chrome,
    items: Vec<Row>,
    verified: bool,
    name: String,
    timezone: String,
    zones: Vec<&'static str>,
    error: Option<String>,
}

async fn list_page(
    state: &AppState,
    s: &SignedIn,
    status: StatusCode,
    error: Option<String>,
    name: String,
    notice: Option<String>,
) -> PageResult {
    let items = crate::workspaces::of_user(state, s.user.user_id)
        .await?
        .into_iter()
        .map(|w| Row {
            id: w.id,
            name: w.name,
            slug: w.slug,
            timezone: w.timezone,
            role: role_key(&w.role).to_string(),
        })
        .collect();
    let tr = Tr::new(s.visitor.lang);
    let page = ListPage {
        c: Chrome::for_visitor(&s.visitor, tr.t("workspaces.title"), "workspaces").notice(notice),
        items,
        verified: s.user.user.email_verified || s.user.user.superuser,
        name,
        timezone: s
            .user
            .user
            .timezone
            .clone()
            .unwrap_or_else(|| cronbox_domain::schedule::DEFAULT_TIMEZONE.into()),
        zones: zones(),
        error,
    };
    Ok(html(status, &page, &s.visitor.set_cookies))
}

pub async fn list(State(state): State<AppState>, s: SignedIn, Query(q): Query<HashMap<String, String>>) -> PageResult {
    let notice = super::notice(Tr::new(s.visitor.lang), &q);
    list_page(&state, &s, StatusCode::OK, None, String::new(), notice).await
}

pub async fn create(State(state): State<AppState>, s: SignedIn, form: Posted) -> PageResult {
    let name = form.get("name").unwrap_or_default();
    let timezone = form.get("timezone");
    match crate::workspaces::open_workspace(&state, &s.user, name.clone(), None, timezone).await {
        Ok(ws) => Ok(see_other(&format!("/app/w/{}", ws.id.unwrap_or_default()))),
        Err(e) => {
            let (status, code, _) = e.classify();
            if status.is_server_error() {
                return Err(e.into());
            }
            let text = error_text(Tr::new(s.visitor.lang), code, &e.to_string());
            list_page(&state, &s, status, Some(text), name, None).await
        }
    }
}

struct Failing {
    id: Uuid,
    name: String,
    count: i64,
}

struct Next {
    name: String,
    at: String,
    at_iso: String,
    relative: String,
}

struct Failure {
    id: Uuid,
    name: String,
    error: String,
    at: String,
}

struct Usage {
    name: &'static str,
    label: String,
    text: String,
    percent: Option<i64>,
}

struct Dash {
    active_cron: i64,
    paused_cron: i64,
    pending_delayed: i64,
    runs_24h: i64,
    runs_7d: i64,
    success_24h: String,
    success_7d: String,
    failing: Vec<Failing>,
    next: Vec<Next>,
    failures: Vec<Failure>,
    usage: Vec<Usage>,
}

#[derive(Template)]
#[template(path = "app/dashboard.html")]
struct DashboardPage {
    c: Chrome,
    ws_id: Uuid,
    plan: String,
    d: Dash,
}

/// (runs in 24 h, of them succeeded, runs in 7 days, of them succeeded).
type Counts = (i64, i64, i64, i64);

/// How long one process reuses a workspace's run counts: they sum a week of runs (a million
/// rows in a big workspace), which is the dashboard's whole cost otherwise.
const COUNTS_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// The dashboard's run counts, computed at most once a minute per workspace and process.
async fn run_counts(pool: sqlx::PgPool, ws: Uuid) -> Result<Counts, sqlx::Error> {
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static MEMO: OnceLock<Mutex<HashMap<Uuid, (Instant, Counts)>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    let now = Instant::now();
    if let Some((at, c)) = memo.lock().unwrap_or_else(|p| p.into_inner()).get(&ws) {
        if now.duration_since(*at) < COUNTS_FOR {
            return Ok(*c);
        }
    }
    let c: Counts = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE scheduled_for > now() - interval '24 hours'),
                count(*) FILTER (WHERE scheduled_for > now() - interval '24 hours' AND status = 'succeeded'),
                count(*), count(*) FILTER (WHERE status = 'succeeded')
           FROM runs
          WHERE workspace_id = $1 AND scheduled_for > now() - interval '7 days'
            AND status IN ('succeeded', 'failed')",
    )
    .bind(ws)
    .fetch_one(&pool)
    .await?;
    let mut m = memo.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() > 10_000 {
        m.retain(|_, (at, _)| now.duration_since(*at) < COUNTS_FOR);
    }
    m.insert(ws, (now, c));
    Ok(c)
}

fn success_rate(tr: Tr, ok: i64, total: i64) -> String {
    if total == 0 {
        return tr.t("dash.no_runs").to_string();
    }
    let pct = ok as f64 * 100.0 / total as f64;
    let s = format!("{pct:.1}");
    let s = if tr.lang == cronbox_domain::channel::Language::Ru {
        s.replace('.', ",")
    } else {
        s
    };
    tr.f("dash.success", &[("pct", &s)])
}

pub async fn dashboard(State(state): State<AppState>, m: Member) -> PageResult {
    let tr = m.tr();
    let ws = m.caller.workspace_id;
    let now = Utc::now();
    let zone = m.zone();
    let (active_cron, paused_cron, pending_delayed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'cron' AND status = 'active'),
                count(*) FILTER (WHERE kind = 'cron' AND status = 'paused'),
                count(*) FILTER (WHERE kind = 'delayed' AND status = 'pending')
           FROM jobs WHERE workspace_id = $1",
    )
    .bind(ws)
    .fetch_one(&state.pool)
    .await?;
    let (runs_24h, ok_24h, runs_7d, ok_7d) = run_counts(state.pool.clone(), ws).await?;
    let failing = sqlx::query_as::<_, (Uuid, String, i32)>(
        "SELECT id, name, consecutive_failures FROM jobs
          WHERE workspace_id = $1 AND kind = 'cron' AND status = 'active' AND consecutive_failures > 0
          ORDER BY consecutive_failures DESC, name LIMIT 5",
    )
    .bind(ws)
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|(id, name, count)| Failing {
        id,
        name,
        count: count.into(),
    })
    .collect();
    let next = sqlx::query_as::<_, (String, DateTime<Utc>, Option<String>)>(
        "SELECT name, next_run_at, timezone FROM jobs
          WHERE workspace_id = $1 AND status IN ('active', 'pending') AND next_run_at IS NOT NULL
          ORDER BY next_run_at LIMIT 5",
    )
    .bind(ws)
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|(name, at, tz)| Next {
        name,
        at: tr.when(at, tz.as_deref().unwrap_or(&m.caller.timezone)),
        at_iso: at.to_rfc3339(),
        relative: tr.relative(at, now),
    })
    .collect();
    let failures = sqlx::query_as::<_, (Uuid, Option<String>, DateTime<Utc>, Option<String>, Option<i32>)>(
        "SELECT r.id, j.name, r.scheduled_for, r.error_type, r.status_code
           FROM runs r LEFT JOIN jobs j ON j.id = r.job_id
          WHERE r.workspace_id = $1 AND r.status = 'failed'
          ORDER BY r.scheduled_for DESC LIMIT 5",
    )
    .bind(ws)
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|(id, name, at, error, code)| Failure {
        id,
        name: name.unwrap_or_else(|| tr.t("runs.deleted_job").to_string()),
        error: super::runs::error_summary(tr, error.as_deref(), code),
        at: tr.when(at, &zone),
    })
    .collect();
    let report = crate::usage::usage_of(&state, &m.caller).await?;
    let usage = report
        .lines
        .iter()
        .map(|l| Usage {
            name: l.name,
            label: format!("usage.{}", l.name),
            text: match l.limit {
                Some(limit) => tr.f("usage.of", &[("used", &tr.num(l.used)), ("limit", &tr.num(limit))]),
                None => tr.f("usage.unlimited", &[("used", &tr.num(l.used))]),
            },
            percent: l.limit.filter(|l| *l > 0).map(|limit| (l.used * 100 / limit).min(100)),
        })
        .collect();
    let d = Dash {
        active_cron,
        paused_cron,
        pending_delayed,
        runs_24h,
        runs_7d,
        success_24h: success_rate(tr, ok_24h, runs_24h),
        success_7d: success_rate(tr, ok_7d, runs_7d),
        failing,
        next,
        failures,
        usage,
    };
    let page = DashboardPage {
        c: Chrome::for_member(&m, &m.caller.workspace.name, "dashboard"),
        ws_id: ws,
        plan: report.plan.name.clone(),
        d,
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}
