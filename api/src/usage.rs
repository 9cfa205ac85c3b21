//! The usage report: a workspace's plan and how much of each of its limits the workspace uses
//! (the API's `GET …/usage` and the dashboard's bars).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use cronbox_domain::schedule::parse_timezone;
use cronbox_domain::usage::{month_bounds, month_of, Counter};
use cronbox_store::usage;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::plans::Plan;
use crate::AppState;

/// `GET /v1/workspaces/{ws}/usage`: the plan, and usage against each of its limits.
#[utoipa::path(
    get,
    path = "/usage",
    tag = "plans",
    summary = "The workspace's plan and usage against each limit",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "Usage", body = crate::openapi::schemas::Usage)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn usage(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let u = usage_of(&state, &caller).await?;
    let line = |l: &UsageLine| json!({"used": l.used, "limit": l.limit});
    let [active, delayed, runs, members, keys] = &u.lines;
    Ok(Json(json!({
        "plan": u.plan.to_json(),
        "period": {"month": u.month, "timezone": u.timezone, "start": u.start, "end": u.end},
        "usage": {
            "active_cron_jobs": line(active),
            "delayed_calls_this_month": line(delayed),
            "runs_this_month": line(runs),
            "members": line(members),
            "api_keys": line(keys),
        }
    })))
}

/// One limit of a plan and how much of it a workspace uses.
#[derive(Debug, Clone)]
pub struct UsageLine {
    /// `active_cron_jobs`, `delayed_calls_this_month`, `runs_this_month`, `members`, `api_keys`.
    pub name: &'static str,
    pub used: i64,
    /// None: unlimited.
    pub limit: Option<i64>,
}

/// A workspace's plan and its usage this month (in the workspace's time zone).
#[derive(Debug, Clone)]
pub struct UsageReport {
    pub plan: Plan,
    pub month: String,
    pub timezone: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub lines: [UsageLine; 5],
}

/// The usage report of the caller's workspace (the API's `GET …/usage` and the dashboard).
pub async fn usage_of(state: &AppState, caller: &Caller) -> Result<UsageReport, ApiError> {
    let plan = caller.plan(state).await?;
    let tz = parse_timezone(&caller.timezone).unwrap_or(chrono_tz::UTC);
    let now = Utc::now();
    let month = month_of(now, tz);
    let (start, end) = month_bounds(now, tz);
    let ws = caller.workspace_id;
    let active = usage::used(&state.pool, ws, Counter::ActiveCronJobs, "").await?;
    let delayed = usage::used(&state.pool, ws, Counter::DelayedCalls, &month).await?;
    let runs: Option<i64> = sqlx::query_scalar("SELECT runs FROM usage_runs WHERE workspace_id = $1 AND period = $2")
        .bind(ws)
        .bind(&month)
        .fetch_optional(&state.pool)
        .await?;
    let w = &caller.workspace;
    let line = |name, used: i64, limit: Option<i32>| UsageLine {
        name,
        used,
        limit: limit.map(i64::from),
    };
    let lines = [
        line("active_cron_jobs", active, plan.max_active_cron_jobs),
        line("delayed_calls_this_month", delayed, plan.max_delayed_per_month),
        line("runs_this_month", runs.unwrap_or(0), None),
        line("members", w.members.len() as i64, plan.max_members),
        line("api_keys", w.live_api_keys() as i64, plan.max_api_keys),
    ];
    Ok(UsageReport {
        plan,
        month,
        timezone: tz.name().to_string(),
        start,
        end,
        lines,
    })
}
