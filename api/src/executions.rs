//! The execution log: `/v1/workspaces/{ws}/executions…`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use cronbox_domain::run::{RunCommand, RunPlan, RunStatus, Trigger};
use cronbox_domain::workspace::Role;
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::parse_uuid;
use crate::{pagination, AppState};

/// (attempt, started_at, finished_at, outcome) of one run_attempts row.
type AttemptRow = (i32, Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<Value>);

const COLUMNS: &str =
    "id, job_id, trigger, status, scheduled_for, attempts, dispatched_at, started_at, finished_at, retry_at,
                       status_code, duration_ms, error_type, error_message, skipped_count,
                       callback_url, callback_status, callback_attempts, callback_error, callback_next_at, rerun_of";

fn summary(r: &PgRow) -> Result<Value, sqlx::Error> {
    let scheduled_for: DateTime<Utc> = r.try_get("scheduled_for")?;
    let started_at: Option<DateTime<Utc>> = r.try_get("started_at")?;
    Ok(json!({
        "id": r.try_get::<Uuid, _>("id")?,
        "job_id": r.try_get::<Uuid, _>("job_id")?,
        "trigger": r.try_get::<String, _>("trigger")?,
        "status": r.try_get::<String, _>("status")?,
        "scheduled_for": scheduled_for,
        "attempts": r.try_get::<i32, _>("attempts")?,
        "dispatched_at": r.try_get::<Option<DateTime<Utc>>, _>("dispatched_at")?,
        "started_at": started_at,
        "finished_at": r.try_get::<Option<DateTime<Utc>>, _>("finished_at")?,
        "retry_at": r.try_get::<Option<DateTime<Utc>>, _>("retry_at")?,
        "lateness_ms": started_at.map(|s| (s - scheduled_for).num_milliseconds()),
        "status_code": r.try_get::<Option<i32>, _>("status_code")?,
        "duration_ms": r.try_get::<Option<i64>, _>("duration_ms")?,
        "error_type": r.try_get::<Option<String>, _>("error_type")?,
        "error_message": r.try_get::<Option<String>, _>("error_message")?,
        "skipped_count": r.try_get::<Option<i64>, _>("skipped_count")?,
        "rerun_of": r.try_get::<Option<Uuid>, _>("rerun_of")?,
        "callback": match r.try_get::<Option<String>, _>("callback_url")? {
            None => Value::Null,
            Some(url) => json!({
                "url": url,
                "status": r.try_get::<Option<String>, _>("callback_status")?,
                "attempts": r.try_get::<i32, _>("callback_attempts")?,
                "error": r.try_get::<Option<String>, _>("callback_error")?,
                "next_at": r.try_get::<Option<DateTime<Utc>>, _>("callback_next_at")?,
            }),
        },
    }))
}

#[utoipa::path(
    get,
    path = "/executions",
    tag = "executions",
    summary = "List runs (newest first by scheduled_for)",
    params(crate::openapi::WsPath, crate::openapi::schemas::ExecutionListQuery),
    responses((status = 200, description = "A page of runs", body = crate::openapi::schemas::ExecutionList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = page(&state, &caller, &q).await?;
    Ok(Json(json!({"items": p.items, "next_cursor": p.next_cursor})))
}

/// A page of the execution log as the API shows it, newest first.
pub struct RunPage {
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// The caller's runs, filtered by the list query's `job_id`, `status`, `callback_status`,
/// `error_type`, `from`/`to` (on `scheduled_for`), `cursor` and `limit` (the API's list and the
/// web app's log).
pub async fn page(state: &AppState, caller: &Caller, q: &HashMap<String, String>) -> Result<RunPage, ApiError> {
    let limit = pagination::limit(q.get("limit").map(String::as_str))?;
    let after = pagination::decode(q.get("cursor").map(String::as_str))?;
    let job_id = q.get("job_id").map(|s| parse_uuid("job_id", s)).transpose()?;
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(
            RunStatus::parse(s)
                .ok_or_else(|| ApiError::field("status", "invalid_status", "status must be one of scheduled, dispatched, running, retry_scheduled, succeeded, failed, skipped"))?
                .as_str(),
        ),
    };
    let callback_status = match q.get("callback_status").map(String::as_str) {
        None => None,
        Some(s @ ("pending" | "retrying" | "delivered" | "failed")) => Some(s),
        Some(_) => {
            return Err(ApiError::field(
                "callback_status",
                "invalid_status",
                "callback_status must be one of pending, retrying, delivered, failed",
            ))
        }
    };
    let error_type = match q.get("error_type") {
        None => None,
        Some(s) => Some(
            cronbox_domain::run::ErrorKind::parse(s)
                .ok_or_else(|| {
                    let all: Vec<&str> = cronbox_domain::run::ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                    ApiError::field(
                        "error_type",
                        "invalid",
                        format!("error_type must be one of {}", all.join(", ")),
                    )
                })?
                .as_str(),
        ),
    };
    let from = q.get("from").map(|s| crate::input::parse_time("from", s)).transpose()?;
    let to = q.get("to").map(|s| crate::input::parse_time("to", s)).transpose()?;
    let (after_t, after_id) = after.map(|(t, i)| (Some(t), Some(i))).unwrap_or((None, None));
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM runs
          WHERE workspace_id = $1
            AND ($2::uuid IS NULL OR job_id = $2)
            AND ($3::text IS NULL OR status = $3)
            AND ($4::timestamptz IS NULL OR (scheduled_for, id) < ($4, $5))
            AND ($7::text IS NULL OR callback_status = $7)
            AND ($8::text IS NULL OR error_type = $8)
            AND ($9::timestamptz IS NULL OR scheduled_for >= $9)
            AND ($10::timestamptz IS NULL OR scheduled_for < $10)
          ORDER BY scheduled_for DESC, id DESC
          LIMIT $6"
    ))
    .bind(caller.workspace_id)
    .bind(job_id)
    .bind(status)
    .bind(after_t)
    .bind(after_id)
    .bind(limit + 1)
    .bind(callback_status)
    .bind(error_type)
    .bind(from)
    .bind(to)
    .fetch_all(&state.pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => Some(pagination::encode(last.try_get("scheduled_for")?, last.try_get("id")?)),
        _ => None,
    };
    let items = page.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
    Ok(RunPage { items, next_cursor })
}

#[utoipa::path(
    get,
    path = "/executions/{id}",
    tag = "executions",
    summary = "Get a run with its request, last response and attempts",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The run", body = crate::openapi::schemas::ExecutionDetail)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(detail(&state, &caller, &id).await?))
}

/// One run as the API shows it: the summary, its request and last response, each attempt and
/// the notifications it caused; credentials masked below `admin`.
pub async fn detail(state: &AppState, caller: &Caller, id: &str) -> Result<Value, ApiError> {
    let id = Uuid::try_parse(id).map_err(|_| ApiError::NotFound("execution"))?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, request, response FROM runs WHERE id = $1 AND workspace_id = $2"
    ))
    .bind(id)
    .bind(caller.workspace_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("execution"))?;
    let mut v = summary(&row)?;
    v["request"] = row.try_get::<Option<Value>, _>("request")?.unwrap_or(Value::Null);
    v["response"] = row.try_get::<Option<Value>, _>("response")?.unwrap_or(Value::Null);
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, started_at, finished_at, outcome FROM run_attempts WHERE run_id = $1 AND workspace_id = $2 ORDER BY attempt",
    )
    .bind(id)
    .bind(caller.workspace_id)
    .fetch_all(&state.pool)
    .await?;
    v["attempt_log"] = attempts
        .into_iter()
        .map(|(attempt, started_at, finished_at, outcome)| json!({"attempt": attempt, "started_at": started_at, "finished_at": finished_at, "outcome": outcome}))
        .collect();
    // The audit trail: which notifications this run caused and how each went.
    v["notifications"] = json!(cronbox_notify::channels::of_run(&state.pool, caller.workspace_id, id).await?);
    if !caller.sees_credentials() {
        mask(&mut v);
    }
    Ok(v)
}

/// What people below `admin` see of an execution: the credential headers of its request and
/// the cookies of its responses masked, by the public event stream's rule.
fn mask(v: &mut Value) {
    use cronbox_domain::public::{mask_header_pairs, mask_request};
    mask_request(&mut v["request"]);
    if let Some(headers) = v.pointer_mut("/response/headers") {
        mask_header_pairs(headers);
    }
    if let Some(Value::Array(attempts)) = v.get_mut("attempt_log") {
        for a in attempts {
            if let Some(headers) = a.pointer_mut("/outcome/response_headers") {
                mask_header_pairs(headers);
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/executions/{id}/events",
    tag = "executions",
    summary = "The run's audit trail",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "Its events in order", body = crate::openapi::schemas::EventList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::NotFound("execution"))?;
    let (run, _) = state
        .stores
        .runs
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if run.workspace_id != Some(caller.workspace_id) {
        return Err(ApiError::NotFound("execution"));
    }
    crate::events::aggregate_events(&state, "Run", id).await
}

/// Schedules a new run that repeats past run `id` (same request, same job, now), linked to it
/// by `rerun_of`. With `workspace`, a run of another workspace is not found. `permission` is the
/// caller's right to do it, checked only once the run is known to be theirs (another tenant's id
/// is a 404 whoever asks). The request is the one the past run sent, not the job's current
/// definition: a re-run repeats what happened.
pub async fn rerun(
    stores: &cronbox_store::aggregates::Stores,
    id: Uuid,
    workspace: Option<Uuid>,
    permission: Result<(), ApiError>,
    allowance: Option<&crate::plans::Plan>,
) -> Result<(Uuid, RunPlan), ApiError> {
    let (past, _) = stores.runs.load(&id.to_string()).await.map_err(ApiError::internal)?;
    if past.id.is_none() || workspace.is_some_and(|ws| past.workspace_id != Some(ws)) {
        return Err(ApiError::NotFound("execution"));
    }
    permission?;
    if !matches!(past.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Err(ApiError::Conflict {
            code: if past.status == RunStatus::Skipped {
                "not_rerunnable"
            } else {
                "run_in_progress"
            },
            message: if past.status == RunStatus::Skipped {
                "a skipped run sent no request; there is nothing to repeat".into()
            } else {
                format!(
                    "the run is still {}; re-run it once it has finished",
                    past.status.as_str()
                )
            },
        });
    }
    let Some(plan) = past.plan else {
        return Err(ApiError::NotFound("execution"));
    };
    let now = Utc::now();
    let run_id = Uuid::new_v4();
    // A re-run is a manual run: it costs one of the month's one-off runs (checked against the
    // workspace's plan when `allowance` is given; an operator's re-run is counted, not refused).
    let (ws, _) = stores
        .workspaces
        .load(&plan.workspace_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    let tz = cronbox_domain::schedule::parse_timezone(&ws.timezone).unwrap_or(chrono_tz::UTC);
    cronbox_store::usage::execute_job(
        &stores.jobs,
        &stores.pool,
        plan.job_id,
        cronbox_domain::job::JobCommand::RequestRerun { run_id, at: now },
        tz,
        allowance.map(|p| p.limits()).unwrap_or_default(),
        now,
    )
    .await
    .map_err(|e| match allowance {
        Some(p) => crate::plans::metered_error(p, e, |_| ApiError::NotFound("execution")),
        None => ApiError::internal(e),
    })?;
    let plan = RunPlan {
        trigger: Trigger::Manual,
        scheduled_for: now,
        rerun_of: Some(id),
        ..plan
    };
    stores
        .runs
        .execute(
            &run_id.to_string(),
            RunCommand::Schedule {
                run_id,
                plan: plan.clone(),
                at: now,
            },
        )
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(run_id = %run_id, rerun_of = %id, job_id = %plan.job_id, workspace_id = %plan.workspace_id, "re-run scheduled");
    Ok((run_id, plan))
}

pub fn rerun_json(run_id: Uuid, plan: &RunPlan) -> Value {
    json!({"run_id": run_id, "rerun_of": plan.rerun_of, "job_id": plan.job_id, "workspace_id": plan.workspace_id,
           "status": "scheduled", "scheduled_for": plan.scheduled_for})
}

#[utoipa::path(
    post,
    path = "/executions/{id}/rerun",
    tag = "executions",
    summary = "Run a finished run again, as a new run linked to it (admin)",
    params(crate::openapi::WsIdPath),
    responses(
        (status = 202, description = "The new run", body = crate::openapi::schemas::Rerun),
        (status = 403, description = "Needs the admin role", body = crate::openapi::schemas::ErrorResponse),
        (status = 409, description = "Still running, or skipped", body = crate::openapi::schemas::ErrorResponse)
    ),
    security(("access_token" = []), ("api_key" = []))
)]
pub async fn rerun_route(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::NotFound("execution"))?;
    let allowance = caller.plan(&state).await?;
    let (run_id, plan) = rerun(
        &state.stores,
        id,
        Some(caller.workspace_id),
        caller.require(Role::Admin),
        Some(&allowance),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(rerun_json(run_id, &plan))))
}
