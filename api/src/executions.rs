//! The execution log: `/v1/workspaces/{ws}/executions…`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use cronbox_domain::run::{RunCommand, RunPlan, RunStatus, Trigger};
use cronbox_domain::workspace::Role;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use utoipa::ToSchema;
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

/// One run (execution) in the log, as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Execution {
    /// Run id.
    pub id: Uuid,
    /// The cron job or delayed call that made it.
    pub job_id: Uuid,
    /// `schedule` (a cron fire), `delayed` (a delayed call) or `manual` ("run now", re-runs).
    #[schema(examples("schedule"))]
    pub trigger: String,
    /// For a re-run: the past run it repeats.
    #[schema(required = true)]
    pub rerun_of: Option<Uuid>,
    /// `scheduled`, `dispatched`, `running`, `retry_scheduled`, `succeeded`, `failed` or `skipped`.
    #[schema(examples("succeeded"))]
    pub status: String,
    /// The instant the run was due (for a skipped run, the first missed fire).
    pub scheduled_for: DateTime<Utc>,
    /// Attempts made so far.
    pub attempts: i32,
    /// When the latest attempt was handed to the executors, or null.
    #[schema(required = true)]
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When the first attempt started, or null.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When the run ended (succeeded, failed or skipped), or null.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the next retry is due while `retry_scheduled`, else null.
    #[schema(required = true)]
    pub retry_at: Option<DateTime<Utc>>,
    /// `started_at` − `scheduled_for` in milliseconds, or null before the first attempt.
    #[schema(required = true)]
    pub lateness_ms: Option<i64>,
    /// HTTP status of the latest attempt, or null (no attempt yet, or no response).
    #[schema(required = true)]
    pub status_code: Option<i32>,
    /// Duration of the latest attempt in milliseconds, or null.
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    /// Why it failed: `timeout`, `connect`, `dns`, `tls`, `too_large`, `http_status`,
    /// `blocked_target`, `other`, or `missed` on skipped runs; null on success.
    #[schema(required = true)]
    pub error_type: Option<String>,
    /// Detail of the latest failure (for skipped runs, the missed range), or null.
    #[schema(required = true)]
    pub error_message: Option<String>,
    /// Skipped runs only: how many fires were missed; else null.
    #[schema(required = true)]
    pub skipped_count: Option<i64>,
    /// Delivery of the result to the delayed call's `callback_url`; null without one.
    #[schema(required = true)]
    pub callback: Option<CallbackView>,
}

/// The callback of a delayed call's run: a signed POST of the result to `callback_url`
/// (`webhook-id: <run id>.callback`), tried up to 5 times.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallbackView {
    pub url: String,
    /// `pending` (the run has its final outcome, delivery not yet tried), `retrying`,
    /// `delivered` or `failed` (given up after 5 tries); null while the run is still going.
    #[schema(required = true)]
    pub status: Option<String>,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// Why the last try failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// When the next try is due.
    #[schema(required = true)]
    pub next_at: Option<DateTime<Utc>>,
}

/// One run with its request, last response and attempts (`GET …/executions/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionDetail {
    /// The run as the log lists it.
    #[serde(flatten)]
    pub run: Execution,
    /// The request as sent, frozen when the run was recorded; null for skipped runs.
    #[schema(required = true, value_type = Option<crate::openapi::schemas::ExecutionRequest>)]
    pub request: Option<Value>,
    /// The latest attempt's response; null before any attempt finished.
    #[schema(required = true, value_type = Option<crate::openapi::schemas::ExecutionResponse>)]
    pub response: Option<Value>,
    /// One entry per attempt, in order.
    pub attempt_log: Vec<Attempt>,
    /// The notifications this run caused (alerts, reminders, recoveries) and how each went:
    /// the delivery log's entries, each with its `channel_id`.
    pub notifications: Vec<cronbox_notify::channels::DeliveryView>,
}

/// One attempt of a run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    /// Attempt number, from 1.
    pub attempt: i32,
    /// When it started, or null (not recorded yet).
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished, or null while in flight.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// What it observed; null while in flight.
    #[schema(required = true, value_type = Option<crate::openapi::schemas::AttemptOutcome>)]
    pub outcome: Option<Value>,
}

/// A page of runs, newest `scheduled_for` first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionList {
    /// The runs on this page.
    pub items: Vec<Execution>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn summary(r: &PgRow) -> Result<Execution, sqlx::Error> {
    let scheduled_for: DateTime<Utc> = r.try_get("scheduled_for")?;
    let started_at: Option<DateTime<Utc>> = r.try_get("started_at")?;
    Ok(Execution {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        trigger: r.try_get("trigger")?,
        rerun_of: r.try_get("rerun_of")?,
        status: r.try_get("status")?,
        scheduled_for,
        attempts: r.try_get("attempts")?,
        dispatched_at: r.try_get("dispatched_at")?,
        started_at,
        finished_at: r.try_get("finished_at")?,
        retry_at: r.try_get("retry_at")?,
        lateness_ms: started_at.map(|s| (s - scheduled_for).num_milliseconds()),
        status_code: r.try_get("status_code")?,
        duration_ms: r.try_get("duration_ms")?,
        error_type: r.try_get("error_type")?,
        error_message: r.try_get("error_message")?,
        skipped_count: r.try_get("skipped_count")?,
        callback: match r.try_get::<Option<String>, _>("callback_url")? {
            None => None,
            Some(url) => Some(CallbackView {
                url,
                status: r.try_get("callback_status")?,
                attempts: r.try_get("callback_attempts")?,
                error: r.try_get("callback_error")?,
                next_at: r.try_get("callback_next_at")?,
            }),
        },
    })
}

#[utoipa::path(
    get,
    path = "/executions",
    tag = "executions",
    summary = "List runs (newest first by scheduled_for)",
    params(crate::openapi::WsPath, crate::openapi::schemas::ExecutionListQuery),
    responses((status = 200, description = "A page of runs", body = ExecutionList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ExecutionList>, ApiError> {
    Ok(Json(page(&state, &caller, &q).await?))
}

/// The caller's runs, filtered by the list query's `job_id`, `status`, `callback_status`,
/// `error_type`, `from`/`to` (on `scheduled_for`), `cursor` and `limit` (the API's list and the
/// web app's log).
pub async fn page(state: &AppState, caller: &Caller, q: &HashMap<String, String>) -> Result<ExecutionList, ApiError> {
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
    Ok(ExecutionList { items, next_cursor })
}

#[utoipa::path(
    get,
    path = "/executions/{id}",
    tag = "executions",
    summary = "Get a run with its request, last response and attempts",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The run", body = ExecutionDetail)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<ExecutionDetail>, ApiError> {
    Ok(Json(detail(&state, &caller, &id).await?))
}

/// One run as the API shows it: the summary, its request and last response, each attempt and
/// the notifications it caused; credentials masked below `admin`.
pub async fn detail(state: &AppState, caller: &Caller, id: &str) -> Result<ExecutionDetail, ApiError> {
    let id = Uuid::try_parse(id).map_err(|_| ApiError::NotFound("execution"))?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, request, response FROM runs WHERE id = $1 AND workspace_id = $2"
    ))
    .bind(id)
    .bind(caller.workspace_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("execution"))?;
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, started_at, finished_at, outcome FROM run_attempts WHERE run_id = $1 AND workspace_id = $2 ORDER BY attempt",
    )
    .bind(id)
    .bind(caller.workspace_id)
    .fetch_all(&state.pool)
    .await?;
    let mut d = ExecutionDetail {
        run: summary(&row)?,
        request: row.try_get("request")?,
        response: row.try_get("response")?,
        attempt_log: attempts
            .into_iter()
            .map(|(attempt, started_at, finished_at, outcome)| Attempt {
                attempt,
                started_at,
                finished_at,
                outcome,
            })
            .collect(),
        // The audit trail: which notifications this run caused and how each went.
        notifications: cronbox_notify::channels::of_run(&state.pool, caller.workspace_id, id).await?,
    };
    if !caller.sees_credentials() {
        mask(&mut d);
    }
    Ok(d)
}

/// What people below `admin` see of an execution: the credential headers of its request and
/// the cookies of its responses masked, by the public event stream's rule.
fn mask(d: &mut ExecutionDetail) {
    use cronbox_domain::public::{mask_header_pairs, mask_request};
    if let Some(r) = d.request.as_mut() {
        mask_request(r);
    }
    if let Some(headers) = d.response.as_mut().and_then(|r| r.pointer_mut("/headers")) {
        mask_header_pairs(headers);
    }
    for a in &mut d.attempt_log {
        if let Some(headers) = a.outcome.as_mut().and_then(|o| o.pointer_mut("/response_headers")) {
            mask_header_pairs(headers);
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
