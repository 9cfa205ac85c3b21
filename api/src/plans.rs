//! Plans and their limits, and the checks every command makes against them (the usage report is
//! `crate::usage`). This module sits below the callers: it knows plan codes, not who asks.
//!
//! Plans are rows of the `plans` table (migrations/0005_plans.sql): adding a plan or changing a
//! limit is data, not code. A workspace names its plan in its event stream
//! (`WorkspaceCreated.plan`, `WorkspacePlanChanged`). Count limits over many aggregates (active
//! cron jobs, delayed calls per month) are enforced by `cronbox_store::usage` in the command's
//! transaction; limits over one workspace's own lists (members, API keys) by the workspace
//! aggregate; per-job limits (timeout, retries, cron interval) here, when the command is read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use chrono::{Duration, Utc};
use cronbox_domain::job::{JobDefinition, JobKind};
use cronbox_domain::schedule::CronSchedule;
use cronbox_domain::usage::Counter;
use cronbox_store::usage::{Limits, MeteredError};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::{ApiError, PlanLimit};
use crate::AppState;

/// Fire times sampled to find a schedule's shortest interval.
const INTERVAL_SAMPLES: usize = 1000;

/// One row of `plans`. Limits that are `None` are unlimited.
#[derive(Debug, Clone)]
pub struct Plan {
    pub code: String,
    pub name: String,
    pub position: i32,
    pub price_kopecks: i64,
    pub max_active_cron_jobs: Option<i32>,
    pub max_delayed_per_month: Option<i32>,
    pub min_cron_interval_seconds: i32,
    pub max_timeout_seconds: i32,
    pub max_retries: i32,
    pub log_retention_days: i32,
    pub max_members: Option<i32>,
    pub max_api_keys: Option<i32>,
    pub requests_per_minute: i32,
    /// Runs in flight at once (None: the installation's default).
    pub max_runs_in_flight: Option<i32>,
    /// May read its own event stream (`GET …/events`, NATS event subscriptions).
    pub event_stream: bool,
}

const COLUMNS: &str = "code, name, position, price_kopecks, max_active_cron_jobs, max_delayed_per_month,
    min_cron_interval_seconds, max_timeout_seconds, max_retries, log_retention_days, max_members,
    max_api_keys, requests_per_minute, event_stream, max_runs_in_flight";

impl<'r> sqlx::FromRow<'r, PgRow> for Plan {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            code: row.try_get("code")?,
            name: row.try_get("name")?,
            position: row.try_get("position")?,
            price_kopecks: row.try_get("price_kopecks")?,
            max_active_cron_jobs: row.try_get("max_active_cron_jobs")?,
            max_delayed_per_month: row.try_get("max_delayed_per_month")?,
            min_cron_interval_seconds: row.try_get("min_cron_interval_seconds")?,
            max_timeout_seconds: row.try_get("max_timeout_seconds")?,
            max_retries: row.try_get("max_retries")?,
            log_retention_days: row.try_get("log_retention_days")?,
            max_members: row.try_get("max_members")?,
            max_api_keys: row.try_get("max_api_keys")?,
            requests_per_minute: row.try_get("requests_per_minute")?,
            max_runs_in_flight: row.try_get("max_runs_in_flight")?,
            event_stream: row.try_get("event_stream")?,
        })
    }
}

impl Plan {
    pub fn limits(&self) -> Limits {
        Limits {
            active_cron_jobs: self.max_active_cron_jobs.map(i64::from),
            delayed_calls: self.max_delayed_per_month.map(i64::from),
        }
    }

    pub fn max_members(&self) -> Option<u32> {
        self.max_members.and_then(|v| u32::try_from(v).ok())
    }

    pub fn max_api_keys(&self) -> Option<u32> {
        self.max_api_keys.and_then(|v| u32::try_from(v).ok())
    }

    fn refuse(&self, limit: &'static str, used: i64, allowed: i64, field: Option<&'static str>) -> ApiError {
        ApiError::PlanLimit(Box::new(PlanLimit {
            limit,
            plan: self.code.clone(),
            plan_name: self.name.clone(),
            used,
            allowed,
            field,
        }))
    }

    /// Per-job limits: request timeout, retries and (for cron jobs) the shortest interval
    /// between two fires.
    pub fn check_definition(&self, definition: &JobDefinition) -> Result<(), ApiError> {
        let request = &definition.request;
        if i64::from(request.timeout_seconds) > i64::from(self.max_timeout_seconds) {
            return Err(self.refuse(
                "max_timeout_seconds",
                i64::from(request.timeout_seconds),
                i64::from(self.max_timeout_seconds),
                Some("timeout_seconds"),
            ));
        }
        if i64::from(request.retry_count) > i64::from(self.max_retries) {
            return Err(self.refuse(
                "max_retries",
                i64::from(request.retry_count),
                i64::from(self.max_retries),
                Some("retry_count"),
            ));
        }
        // Fires are whole seconds apart at least: a limit of one second needs no sampling.
        if let (JobKind::Cron { schedule, timezone }, 2..) = (&definition.kind, self.min_cron_interval_seconds) {
            let parsed = CronSchedule::parse(schedule, timezone)
                .map_err(|e| ApiError::field("schedule", "invalid", e.to_string()))?;
            let min = Duration::seconds(i64::from(self.min_cron_interval_seconds));
            if let Some(gap) = parsed.min_interval(Utc::now(), INTERVAL_SAMPLES).filter(|g| *g < min) {
                return Err(self.refuse(
                    "min_cron_interval_seconds",
                    gap.num_seconds(),
                    min.num_seconds(),
                    Some("schedule"),
                ));
            }
        }
        Ok(())
    }

    /// The (n+1)-th of a counted resource.
    pub fn refused_count(&self, counter: Counter, used: i64, allowed: i64) -> ApiError {
        let limit = match counter {
            Counter::ActiveCronJobs => "max_active_cron_jobs",
            Counter::DelayedCalls => "max_delayed_per_month",
        };
        self.refuse(limit, used, allowed, None)
    }

    /// Refusal by the workspace aggregate (members, API keys).
    pub fn refused_list(&self, what: &'static str, used: u32, allowed: u32) -> ApiError {
        let limit = match what {
            "members" => "max_members",
            _ => "max_api_keys",
        };
        self.refuse(limit, i64::from(used), i64::from(allowed), None)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "code": self.code,
            "name": self.name,
            "price_kopecks": self.price_kopecks,
            "currency": "RUB",
            "limits": {
                "max_active_cron_jobs": self.max_active_cron_jobs,
                "max_delayed_per_month": self.max_delayed_per_month,
                "min_cron_interval_seconds": self.min_cron_interval_seconds,
                "max_timeout_seconds": self.max_timeout_seconds,
                "max_retries": self.max_retries,
                "log_retention_days": self.log_retention_days,
                "max_members": self.max_members,
                "max_api_keys": self.max_api_keys,
                "requests_per_minute": self.requests_per_minute,
                "max_runs_in_flight": self.max_runs_in_flight,
            },
            "features": {"event_stream": self.event_stream},
        })
    }
}

/// Plans read from the table at most every [`PLAN_CACHE_TTL`], or at once when a workspace names
/// a plan the cache does not know yet. A changed limit therefore applies within that time.
#[derive(Clone, Default)]
pub struct PlanCache(Arc<RwLock<Option<(Instant, PlanMap)>>>);

type PlanMap = Arc<HashMap<String, Plan>>;

pub const PLAN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl PlanCache {
    async fn reload(&self, pool: &PgPool) -> Result<PlanMap, ApiError> {
        let plans: Vec<Plan> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM plans"))
            .fetch_all(pool)
            .await?;
        let map = Arc::new(
            plans
                .into_iter()
                .map(|p| (p.code.clone(), p))
                .collect::<HashMap<_, _>>(),
        );
        if let Ok(mut slot) = self.0.write() {
            *slot = Some((Instant::now(), map.clone()));
        }
        Ok(map)
    }

    fn fresh(&self) -> Option<PlanMap> {
        let slot = self.0.read().ok()?;
        let (at, map) = slot.as_ref()?;
        (at.elapsed() < PLAN_CACHE_TTL).then(|| map.clone())
    }

    /// The plan called `code`, or None if the table has no such plan.
    pub async fn get(&self, pool: &PgPool, code: &str) -> Result<Option<Plan>, ApiError> {
        if let Some(p) = self.fresh().and_then(|m| m.get(code).cloned()) {
            return Ok(Some(p));
        }
        Ok(self.reload(pool).await?.get(code).cloned())
    }
}

/// The plan called `code`; None if no such plan exists.
pub async fn find(pool: &PgPool, code: &str) -> Result<Option<Plan>, ApiError> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM plans WHERE code = $1"))
        .bind(code)
        .fetch_optional(pool)
        .await?)
}

/// The plan called `code`. A workspace naming a plan that was since removed from the table
/// falls back to the default plan rather than failing every request.
pub async fn of_workspace(state: &AppState, code: &str) -> Result<Plan, ApiError> {
    if let Some(p) = state.plans.get(&state.pool, code).await? {
        return Ok(p);
    }
    tracing::warn!(plan = code, "workspace names an unknown plan; using the default");
    state
        .plans
        .get(&state.pool, cronbox_domain::workspace::DEFAULT_PLAN)
        .await?
        .ok_or_else(|| {
            ApiError::internal(std::io::Error::other(
                "the default plan is missing from the plans table",
            ))
        })
}

/// Maps a metered command's failure: limits name the plan, the rest as usual.
pub fn metered_error(
    plan: &Plan,
    e: MeteredError,
    job_error: impl FnOnce(cronbox_domain::job::JobError) -> ApiError,
) -> ApiError {
    match e {
        MeteredError::Command(e) => job_error(e),
        MeteredError::LimitReached { counter, used, limit } => plan.refused_count(counter, used, limit),
        MeteredError::Conflict => ApiError::Conflict {
            code: "concurrent_modification",
            message: "the resource was modified concurrently; retry the request".into(),
        },
        MeteredError::Store(e) => ApiError::internal(e),
    }
}

/// `GET /v1/plans`: every plan, cheapest first. Public: it is the price list.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    summary = "The plans and their limits (public)",
    responses((status = 200, description = "Plans, cheapest first", body = crate::openapi::schemas::PlanList))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let plans: Vec<Plan> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM plans ORDER BY position, code"))
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(
        json!({"items": plans.iter().map(Plan::to_json).collect::<Vec<_>>()}),
    ))
}
