//! The operators' API (`/v1/admin/…`, superusers only; everyone else gets 404, as for a route
//! that does not exist): projection checkpoints and lag, rebuilds with progress, any
//! aggregate's events, and re-runs of any run. The CLI offers the same (`cronbox projections
//! status|rebuild`, `cronbox events`, `cronbox runs rerun`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use cronbox_projections::admin::{self as projections, rebuildable};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::accounts::UserCaller;
use crate::error::ApiError;
use crate::AppState;

/// Only superusers; anyone else gets a plain 404 that says nothing about what is here.
fn superuser(user: Result<UserCaller, ApiError>) -> Result<UserCaller, ApiError> {
    match user {
        Ok(u) if u.user.superuser => Ok(u),
        _ => Err(ApiError::NotFound("resource")),
    }
}

/// The same refusal for a signed-in user of the web app's admin pages.
pub fn require_superuser(user: &UserCaller) -> Result<(), ApiError> {
    superuser(Ok(user.clone())).map(|_| ())
}

/// Rebuilds started through the API in this process, by projection.
#[derive(Clone, Default)]
pub struct Rebuilds(Arc<Mutex<HashMap<String, RebuildProgress>>>);

#[derive(Debug, Clone, Serialize)]
pub struct RebuildProgress {
    pub projection: String,
    /// `running`, `succeeded` or `failed`.
    pub status: &'static str,
    pub events_replayed: usize,
    /// Events in the log when the rebuild started (a full replay reads about this many).
    pub events_total: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub started_by: Uuid,
}

impl Rebuilds {
    fn get(&self, name: &str) -> Option<RebuildProgress> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut RebuildProgress)) {
        if let Some(p) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get_mut(name) {
            f(p);
        }
    }

    /// Registers a new rebuild unless one of the same projection is running.
    fn start(&self, progress: RebuildProgress) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&progress.projection).is_some_and(|p| p.status == "running") {
            return false;
        }
        map.insert(progress.projection.clone(), progress);
        true
    }
}

/// Events read from the log's end for [`system_figures`]: bounds its cost however busy the
/// installation (when a minute holds more, the rate is over the span this many cover).
const FIGURES_TAIL: i64 = 20_000;

/// The installation at a glance, for the admin panel.
#[derive(Debug, Clone, Serialize)]
pub struct SystemFigures {
    /// Runs finished per second over `window_seconds`.
    pub runs_per_second: f64,
    /// Up to 60 s: shorter when the last minute held more events than are read.
    pub window_seconds: f64,
    /// The 99th percentile of lateness (first attempt start − scheduled time) of those runs.
    pub lateness_p99_ms: Option<f64>,
    /// Runs handed to executors and not finished.
    pub in_flight: i64,
    /// The furthest any projection is behind the log, in seconds.
    pub projection_lag_seconds: f64,
}

/// Figures from the event log's end and the runs read model: no process has to be asked, so
/// any API process shows them, whichever roles run where.
pub async fn system_figures(state: &AppState) -> Result<SystemFigures, ApiError> {
    let (finished, window, p99): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
        "WITH tail AS (
             SELECT aggregate_type, aggregate_id, event_type, recorded_at FROM events
              ORDER BY xid DESC, global_seq DESC LIMIT $1
         ), span AS (
             SELECT LEAST(60, EXTRACT(EPOCH FROM (now() - min(recorded_at))))::float8 AS s FROM tail
         ), done AS (
             SELECT aggregate_id FROM tail
              WHERE aggregate_type = 'Run' AND event_type IN ('RunSucceeded', 'RunFailed')
                AND recorded_at > now() - interval '60 seconds'
         )
         SELECT (SELECT count(*) FROM done),
                (SELECT s FROM span),
                (SELECT percentile_cont(0.99) WITHIN GROUP
                        (ORDER BY EXTRACT(EPOCH FROM (r.started_at - r.scheduled_for)) * 1000)
                   FROM runs r JOIN done d ON r.id = d.aggregate_id::uuid
                  WHERE r.started_at IS NOT NULL)::float8",
    )
    .bind(FIGURES_TAIL)
    .fetch_one(&state.pool)
    .await?;
    let in_flight: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status IN ('dispatched', 'running')")
        .fetch_one(&state.pool)
        .await?;
    let lag = projection_overview(state)
        .await?
        .iter()
        .filter_map(|p| p["lag_seconds"].as_f64())
        .fold(0.0, f64::max);
    let window = window.unwrap_or(60.0).max(1.0);
    Ok(SystemFigures {
        runs_per_second: finished as f64 / window,
        window_seconds: window,
        lateness_p99_ms: p99,
        in_flight,
        projection_lag_seconds: lag,
    })
}

#[utoipa::path(
    get,
    path = "/v1/admin/projections",
    tag = "admin",
    summary = "Projections with checkpoint, lag and the latest rebuild (superusers)",
    responses((status = 200, description = "Every projection", body = crate::openapi::schemas::ProjectionList),
              (status = 404, description = "Not a superuser", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn list_projections(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
) -> Result<Json<Value>, ApiError> {
    superuser(user)?;
    Ok(Json(json!({"items": projection_overview(&state).await?})))
}

/// Every projection with its checkpoint, lag, quarantine and latest rebuild, as the API shows
/// them (the admin API and the admin page).
pub async fn projection_overview(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let status = projections::status(&state.pool).await.map_err(ApiError::internal)?;
    let mut items: Vec<Value> = status
        .into_iter()
        .map(|s| {
            let rebuild = state.rebuilds.get(&s.name);
            let mut v = json!(s);
            v["rebuild"] = json!(rebuild);
            v
        })
        .collect();
    items.push(
        json!({"name": projections::USAGE_COUNTERS, "checkpoint": null, "updated_at": null,
                      "lag_events": 0, "lag_seconds": 0.0, "quarantined": 0, "parked": 0, "inline": true,
                      "rebuild": state.rebuilds.get(projections::USAGE_COUNTERS)}),
    );
    Ok(items)
}

#[utoipa::path(
    post,
    path = "/v1/admin/projections/{name}/rebuild",
    tag = "admin",
    summary = "Rebuild a projection from the log without downtime (superusers)",
    description = "Replays the log into fresh tables, catches up, and swaps them in under the projection's lock; \
                   reads keep being served from the old tables until the swap. Poll `GET …/rebuild` for progress.",
    params(("name" = String, Path, description = "jobs, runs, schedule, workspaces, usage or usage_counters")),
    responses((status = 202, description = "Started", body = crate::openapi::schemas::RebuildProgress),
              (status = 404, description = "No such projection, or not a superuser", body = crate::openapi::schemas::ErrorResponse),
              (status = 409, description = "A rebuild of it is running", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn start_rebuild(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = superuser(user)?;
    let progress = begin_rebuild(&state, &user, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(progress))))
}

/// Starts rebuilding projection `name` from the event log in the background (409 while one of
/// it runs); its progress is kept in [`Rebuilds`].
pub async fn begin_rebuild(state: &AppState, user: &UserCaller, name: &str) -> Result<RebuildProgress, ApiError> {
    require_superuser(user)?;
    let Some(name) = rebuildable().into_iter().find(|n| *n == name) else {
        return Err(ApiError::NotFound("projection"));
    };
    let total = projections::log_size(&state.pool).await.map_err(ApiError::internal)?;
    let progress = RebuildProgress {
        projection: name.to_string(),
        status: "running",
        events_replayed: 0,
        events_total: total,
        started_at: Utc::now(),
        finished_at: None,
        error: None,
        started_by: user.user_id,
    };
    if !state.rebuilds.start(progress.clone()) {
        return Err(ApiError::Conflict {
            code: "rebuild_running",
            message: format!("a rebuild of {name} is already running"),
        });
    }
    tracing::info!(projection = name, by = %user.user_id, "projection rebuild started");
    let (pool, rebuilds) = (state.pool.clone(), state.rebuilds.clone());
    tokio::spawn(async move {
        let tracker = rebuilds.clone();
        let result = projections::rebuild(&pool, Some(name), move |_, n| {
            tracker.update(name, |p| p.events_replayed = n);
        })
        .await;
        rebuilds.update(name, |p| {
            p.finished_at = Some(Utc::now());
            match result {
                Ok(_) => p.status = "succeeded",
                Err(e) => {
                    tracing::error!(projection = name, error = %e, "projection rebuild failed");
                    p.status = "failed";
                    p.error = Some(e.to_string());
                }
            }
        });
    });
    Ok(progress)
}

#[utoipa::path(
    get,
    path = "/v1/admin/projections/{name}/rebuild",
    tag = "admin",
    summary = "Progress of the latest rebuild started in this process (superusers)",
    params(("name" = String, Path, description = "The projection")),
    responses((status = 200, description = "Progress", body = crate::openapi::schemas::RebuildProgress),
              (status = 404, description = "None started here, or not a superuser", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn rebuild_progress(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    superuser(user)?;
    let p = state.rebuilds.get(&name).ok_or(ApiError::NotFound("rebuild"))?;
    Ok(Json(json!(p)))
}

/// The name of a tail-fed projection (quarantine applies to those only).
fn tail_projection(name: &str) -> Result<&'static str, ApiError> {
    cronbox_projections::all()
        .iter()
        .map(|p| p.name())
        .find(|n| *n == name)
        .ok_or(ApiError::NotFound("projection"))
}

#[utoipa::path(
    get,
    path = "/v1/admin/projections/{name}/failures",
    tag = "admin",
    summary = "Events the projection quarantined, and those held behind them (superusers)",
    params(("name" = String, Path, description = "jobs, runs, schedule, workspaces or usage")),
    responses((status = 200, description = "Open failures, in log order", body = crate::openapi::schemas::ProjectionFailureList),
              (status = 404, description = "No such projection, or not a superuser", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn failures(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    superuser(user)?;
    let name = tail_projection(&name)?;
    let items = cronbox_projections::quarantine::list(&state.pool, Some(name), 1000)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(
    post,
    path = "/v1/admin/projections/{name}/failures/retry",
    tag = "admin",
    summary = "Apply the projection's quarantined events again, after a fix (superusers)",
    description = "Applies every quarantined and held event again in log order, under the projection's lock. \
                   An aggregate whose event fails again stays held from that event on.",
    params(("name" = String, Path, description = "jobs, runs, schedule, workspaces or usage")),
    responses((status = 200, description = "What the retry did", body = crate::openapi::schemas::RetryReport),
              (status = 404, description = "No such projection, or not a superuser", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn retry_failures(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = superuser(user)?;
    let name = tail_projection(&name)?;
    let done = projections::retry(&state.pool, Some(name))
        .await
        .map_err(ApiError::internal)?;
    let report = done.into_iter().next().map(|(_, r)| r).unwrap_or_default();
    tracing::info!(projection = name, by = %user.user_id, resolved = report.resolved, still_failing = report.still_failing, "quarantined events retried");
    Ok(Json(
        json!({"projection": name, "resolved": report.resolved, "still_failing": report.still_failing}),
    ))
}

/// The stored form of an aggregate type name (`run` → `Run`).
fn stored_type(t: &str) -> Option<&'static str> {
    [
        ("workspace", "Workspace"),
        ("job", "Job"),
        ("run", "Run"),
        ("user", "User"),
        ("session", "Session"),
        ("alert", "Alert"),
        ("notification", "Notification"),
        ("notification_channel", "NotificationChannel"),
    ]
    .into_iter()
    .find(|(k, _)| k.eq_ignore_ascii_case(t))
    .map(|(_, stored)| stored)
}

/// Every stored event of one aggregate, as stored (operators see the whole truth).
pub async fn aggregate_events(pool: &PgPool, aggregate_type: &str, id: &str) -> Result<Vec<Value>, ApiError> {
    let t = stored_type(aggregate_type).ok_or_else(|| {
        ApiError::field(
            "aggregate_type",
            "invalid",
            "aggregate_type must be one of workspace, job, run, user, session, alert, notification, notification_channel",
        )
    })?;
    type Row = (i64, String, String, Value, Value, DateTime<Utc>, i64, i64, Option<Uuid>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload, metadata, recorded_at,
                xid::text::int8, global_seq, workspace_id
           FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(t)
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(sequence, event_type, version, payload, metadata, recorded_at, xid, seq, ws)| {
                let mut data = payload.get(&event_type).cloned().unwrap_or(payload);
                // A password hash can be attacked offline: not even operators read it back.
                if let Some(h) = data.get_mut("password_hash") {
                    *h = json!("[redacted]");
                }
                json!({"aggregate_type": t, "aggregate_id": id, "sequence": sequence, "type": event_type,
                   "version": version, "id": format!("{xid}-{seq}"), "workspace_id": ws,
                   "recorded_at": recorded_at, "data": data, "metadata": metadata})
            },
        )
        .collect())
}

#[utoipa::path(
    get,
    path = "/v1/admin/aggregates/{aggregate_type}/{id}/events",
    tag = "admin",
    summary = "Any aggregate's stored events (superusers)",
    params(("aggregate_type" = String, Path, description = "workspace, job, run, user, session, alert, notification or notification_channel"),
           ("id" = String, Path, description = "The aggregate's id")),
    responses((status = 200, description = "Its events in order", body = crate::openapi::schemas::AdminEventList),
              (status = 404, description = "No events, or not a superuser", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
    Path((aggregate_type, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    superuser(user)?;
    let items = aggregate_events(&state.pool, &aggregate_type, &id).await?;
    if items.is_empty() {
        return Err(ApiError::NotFound("aggregate"));
    }
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(
    post,
    path = "/v1/admin/runs/{id}/rerun",
    tag = "admin",
    summary = "Run any finished run again, as a new run linked to it (superusers)",
    params(("id" = Uuid, Path, description = "The past run")),
    responses((status = 202, description = "The new run", body = crate::openapi::schemas::Rerun),
              (status = 404, description = "No such run, or not a superuser", body = crate::openapi::schemas::ErrorResponse),
              (status = 409, description = "Still running, or skipped", body = crate::openapi::schemas::ErrorResponse)),
    security(("access_token" = []))
)]
pub async fn rerun(
    State(state): State<AppState>,
    user: Result<UserCaller, ApiError>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = superuser(user)?;
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::NotFound("execution"))?;
    let (run_id, plan) = crate::executions::rerun(&state.stores, id, None, Ok(()), None).await?;
    tracing::info!(run_id = %run_id, rerun_of = %id, by = %user.user_id, "operator re-run");
    Ok((StatusCode::ACCEPTED, Json(crate::executions::rerun_json(run_id, &plan))))
}
