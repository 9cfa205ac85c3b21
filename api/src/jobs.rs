//! Cron jobs and delayed calls: `/v1/workspaces/{ws}/cron…` and `/v1/workspaces/{ws}/delayed…`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use cronbox_domain::ids::scheduled_run_id;
use cronbox_domain::job::{Job, JobCommand, JobDefinition, JobError, JobKind, JobStatus};
use cronbox_domain::policy::{JobDefaults, MisfirePolicy, OverlapPolicy, MAX_MISFIRE_GRACE_SECONDS};
use cronbox_domain::request::{parse_target_url, RequestInput, RequestSpec};
use cronbox_domain::run::{RunCommand, RunPlan, Trigger};
use cronbox_domain::schedule::{parse_timezone, CronSchedule, ScheduleError};
use cronbox_domain::target::TargetPolicy;
use cronbox_store::create_batch::NewJob;
use cronbox_store::job_gate;
use cronbox_store::usage::{self, MeteredError};
use serde_json::{json, Value};
use sqlx::Row;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{from_aggregate, ApiError};
use crate::input::{Fields, JsonObject};
use crate::plans::{self, Plan};
use crate::targets;
use crate::{pagination, AppState};

/// How far in the past `execute_at` may be (clock skew between client and server).
const PAST_TOLERANCE_SECONDS: i64 = 5;
const MAX_DELAY_DAYS: i64 = 366;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cron,
    Delayed,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Cron => "cron",
            Kind::Delayed => "delayed",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Cron => "cron job",
            Kind::Delayed => "delayed call",
        }
    }
}

/// Runs a job command that may move plan-limit counters (create, pause, resume, delete),
/// refusing it with 403 `plan_limit` when the workspace's plan does not allow it.
async fn metered(
    state: &AppState,
    caller: &Caller,
    plan: &Plan,
    id: Uuid,
    command: JobCommand,
) -> Result<(), ApiError> {
    let tz = parse_timezone(&caller.timezone).unwrap_or(chrono_tz::UTC);
    usage::execute_job(
        &state.stores.jobs,
        &state.pool,
        id,
        command,
        tz,
        plan.limits(),
        Utc::now(),
    )
    .await
    .map_err(|e| plans::metered_error(plan, e, job_error))
}

/// Creates a job through the grouped create path ([`CreateBatcher`]): its events and the plan
/// counters they move commit together. Returns the job as its events now make it.
async fn create_job(
    state: &AppState,
    caller: &Caller,
    plan: &Plan,
    id: Uuid,
    definition: JobDefinition,
    at: DateTime<Utc>,
) -> Result<Job, MeteredError> {
    let cmd = JobCommand::Create {
        job_id: id,
        workspace_id: caller.workspace_id,
        definition,
        at,
    };
    let (job, events) = cronbox_domain::decide(&Job::default(), cmd)
        .await
        .map_err(MeteredError::Command)?;
    let new = NewJob {
        workspace_id: caller.workspace_id,
        job_id: id,
        events,
        tz: parse_timezone(&caller.timezone).unwrap_or(chrono_tz::UTC),
        limits: plan.limits(),
        at,
    };
    state.creates.create(new).await?;
    Ok(job)
}

/// The URLs of a definition, checked against what their host names resolve to now.
/// Delayed calls alert on their one final failure: only the channels can be chosen.
fn delayed_alert_rules(f: &mut Fields) -> Result<cronbox_domain::alert::AlertRules, ApiError> {
    for field in ["alert_after_failures", "realert_every"] {
        if f.has(field) {
            return Err(ApiError::field(
                field,
                "not_for_delayed_calls",
                format!("{field} applies to cron jobs; a delayed call alerts once, when it fails finally"),
            ));
        }
    }
    crate::notifications::alert_rules(f, None, &Default::default(), 1)
}

async fn check_targets(state: &AppState, definition: &JobDefinition) -> Result<(), ApiError> {
    targets::check_resolved(&state.targets, "url", &definition.request.url).await?;
    if let JobKind::Delayed {
        callback_url: Some(callback),
        ..
    } = &definition.kind
    {
        targets::check_resolved(&state.targets, "callback_url", callback).await?;
    }
    Ok(())
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::Invalid(f) => f.into(),
        JobError::NotFound => ApiError::NotFound("job"),
        JobError::AlreadyExecuted => ApiError::Conflict {
            code: "already_executed",
            message: e.to_string(),
        },
        JobError::AlreadyExists => ApiError::Conflict {
            code: "already_exists",
            message: e.to_string(),
        },
        JobError::NotCron(_) | JobError::KindChange => ApiError::BadRequest {
            code: "invalid_operation",
            message: e.to_string(),
            field: None,
        },
    }
}

fn schedule_error(e: ScheduleError) -> ApiError {
    match e {
        ScheduleError::UnknownTimezone(_) => ApiError::field("timezone", "invalid_timezone", e.to_string()),
        _ => ApiError::field("schedule", "invalid_schedule", e.to_string()),
    }
}

/// `misfire_policy` of a cron job; `current` supplies the value on update.
pub(crate) fn misfire_policy(
    f: &mut Fields,
    current: Option<&JobDefinition>,
) -> Result<Option<MisfirePolicy>, ApiError> {
    match f.string("misfire_policy")? {
        Some(p) => Ok(Some(MisfirePolicy::parse("misfire_policy", &p)?)),
        None => Ok(current.map(|c| c.misfire_policy)),
    }
}

/// `overlap_policy` of a cron job; `current` supplies the value on update.
pub(crate) fn overlap_policy(
    f: &mut Fields,
    current: Option<&JobDefinition>,
) -> Result<Option<OverlapPolicy>, ApiError> {
    match f.string("overlap_policy")? {
        Some(p) => Ok(Some(OverlapPolicy::parse("overlap_policy", &p)?)),
        None => Ok(current.map(|c| c.overlap_policy)),
    }
}

/// `misfire_grace_seconds` (1–86400); on update `null` returns to the operator's default.
pub(crate) fn misfire_grace(f: &mut Fields, current: Option<&JobDefinition>) -> Result<Option<u32>, ApiError> {
    if current.is_some() && !f.has("misfire_grace_seconds") {
        return Ok(current.and_then(|c| c.misfire_grace_seconds));
    }
    match f.int("misfire_grace_seconds")? {
        None => Ok(None),
        Some(g) if (1..=i64::from(MAX_MISFIRE_GRACE_SECONDS)).contains(&g) => Ok(Some(g as u32)),
        Some(_) => Err(ApiError::field(
            "misfire_grace_seconds",
            "out_of_range",
            format!("misfire_grace_seconds must be between 1 and {MAX_MISFIRE_GRACE_SECONDS}"),
        )),
    }
}

/// Reads the request-spec fields shared by both kinds. `base` supplies current values (PATCH);
/// on create, the workspace's `defaults` fill what the body leaves out.
fn request_fields(
    f: &mut Fields,
    base: Option<&RequestSpec>,
    defaults: &JobDefaults,
    targets: &TargetPolicy,
) -> Result<RequestSpec, ApiError> {
    let d = if base.is_none() {
        defaults.clone()
    } else {
        JobDefaults::default()
    };
    let url = match (f.string("url")?, base) {
        (Some(u), _) => u,
        (None, Some(b)) => b.url.clone(),
        (None, None) => return Err(ApiError::field("url", "required", "url is required")),
    };
    let headers: Vec<(String, String)> = match f.headers("headers")? {
        Some(h) => h,
        None => base
            .map(|b| b.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect())
            .unwrap_or_default(),
    };
    // Absent on update: the marks still naming a header stay.
    let sensitive_headers = match f.strings("sensitive_headers")? {
        Some(names) => names,
        None => base
            .map(|b| {
                b.sensitive_headers
                    .iter()
                    .filter(|n| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
    };
    let input = RequestInput {
        url,
        method: f
            .string("method")?
            .or_else(|| base.map(|b| b.method.as_str().to_string())),
        headers,
        sensitive_headers,
        body: if f.has("body") {
            f.string("body")?
        } else {
            base.and_then(|b| b.body.clone())
        },
        timeout_seconds: f
            .int("timeout_seconds")?
            .or(base.map(|b| i64::from(b.timeout_seconds)))
            .or(d.timeout_seconds.map(i64::from)),
        retry_count: f
            .int("retry_count")?
            .or(base.map(|b| i64::from(b.retry_count)))
            .or(d.retry_count.map(i64::from)),
        retry_delay_seconds: f
            .int("retry_delay_seconds")?
            .or(base.map(|b| i64::from(b.retry_delay_seconds)))
            .or(d.retry_delay_seconds.map(i64::from)),
        retry_backoff: f
            .string("retry_backoff")?
            .or(base.map(|b| b.retry_backoff.as_str().to_string()))
            .or(d.retry_backoff.map(|b| b.as_str().to_string())),
        retry_max_delay_seconds: f
            .int("retry_max_delay_seconds")?
            .or(base.map(|b| i64::from(b.retry_max_delay_seconds)))
            .or(d.retry_max_delay_seconds.map(i64::from)),
        retry_on: f
            .strings("retry_on")?
            .or(base.map(|b| b.retry_on.iter().map(|r| r.as_str().to_string()).collect()))
            .or(d.retry_on.map(|l| l.iter().map(|r| r.as_str().to_string()).collect())),
        expected_status: f
            .codes("expected_status")?
            .or(base.map(|b| b.expected_status.iter().map(|m| m.as_str().to_string()).collect()))
            .or(d
                .expected_status
                .map(|l| l.iter().map(|m| m.as_str().to_string()).collect())),
        // null clears a check on update; absent keeps it.
        expect_body_contains: if f.has("expect_body_contains") {
            f.string("expect_body_contains")?
        } else {
            base.and_then(|b| b.expect_body_contains.clone())
        },
        expect_json: if f.has("expect_json") {
            f.json_check("expect_json")?
        } else {
            base.and_then(|b| b.expect_json.as_ref().map(|j| (j.path.clone(), j.equals.clone())))
        },
    };
    Ok(RequestSpec::parse(input, targets)?)
}

// ---------- views ----------

struct Stats {
    status: String,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_status: Option<String>,
    consecutive_failures: i32,
}

async fn stats(state: &AppState, workspace_id: Uuid, id: Uuid) -> Result<Option<Stats>, ApiError> {
    let row = sqlx::query(
        "SELECT status, next_run_at, last_run_at, last_status, consecutive_failures FROM jobs WHERE id = $1 AND workspace_id = $2",
    )
    .bind(id)
    .bind(workspace_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(match row {
        None => None,
        Some(r) => Some(Stats {
            status: r.try_get("status")?,
            next_run_at: r.try_get("next_run_at")?,
            last_run_at: r.try_get("last_run_at")?,
            last_status: r.try_get("last_status")?,
            consecutive_failures: r.try_get("consecutive_failures")?,
        }),
    })
}

fn headers_json(spec: &RequestSpec) -> Value {
    Value::Object(
        spec.headers
            .iter()
            .map(|h| (h.name.clone(), Value::String(h.value.clone())))
            .collect(),
    )
}

#[allow(clippy::too_many_arguments)]
fn view(
    id: Uuid,
    workspace_id: Uuid,
    def: &JobDefinition,
    status: &str,
    next_run_at: Option<DateTime<Utc>>,
    stats: Option<&Stats>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
) -> Value {
    let r = &def.request;
    let mut v = json!({
        "id": id,
        "workspace_id": workspace_id,
        "name": def.name,
        "description": def.description,
        "tags": def.tags,
        "url": r.url,
        "method": r.method.as_str(),
        "headers": headers_json(r),
        "sensitive_headers": r.sensitive_headers,
        "body": r.body,
        "timeout_seconds": r.timeout_seconds,
        "retry_count": r.retry_count,
        "retry_delay_seconds": r.retry_delay_seconds,
        "retry_backoff": r.retry_backoff.as_str(),
        "retry_max_delay_seconds": r.retry_max_delay_seconds,
        "retry_on": r.retry_on.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "expected_status": r.expected_status.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "expect_body_contains": r.expect_body_contains,
        "expect_json": r.expect_json.as_ref().map(|j| json!({"path": j.path, "equals": j.equals})),
        "notify_on_failure": def.notify_on_failure,
        "notify_on_recovery": def.notify_on_recovery,
        "alert_after_failures": def.alerts.after_failures,
        "realert_every": def.alerts.realert_every_seconds.map(cronbox_domain::alert::format_interval),
        "alert_channels": def.alerts.channels,
        "status": status,
        "next_run_at": next_run_at,
        "last_run_at": stats.and_then(|s| s.last_run_at),
        "last_status": stats.and_then(|s| s.last_status.clone()),
        "consecutive_failures": stats.map(|s| s.consecutive_failures).unwrap_or(0),
        "created_at": created_at,
        "updated_at": updated_at,
    });
    match &def.kind {
        JobKind::Cron { schedule, timezone } => {
            v["kind"] = json!("cron");
            v["misfire_policy"] = json!(def.misfire_policy.as_str());
            v["misfire_grace_seconds"] = json!(def.misfire_grace_seconds);
            v["overlap_policy"] = json!(def.overlap_policy.as_str());
            v["status_badge"] = json!(def.status_badge);
            v["schedule"] = json!(schedule);
            v["timezone"] = json!(timezone);
            v["description_of_schedule"] = json!(CronSchedule::parse_stored(schedule, timezone)
                .map(|s| s.describe())
                .unwrap_or_default());
        }
        JobKind::Delayed {
            execute_at,
            callback_url,
            idempotency_key,
        } => {
            v["kind"] = json!("delayed");
            v["execute_at"] = json!(execute_at);
            v["callback_url"] = json!(callback_url);
            v["idempotency_key"] = json!(idempotency_key);
            v["run_id"] = json!(scheduled_run_id(id, *execute_at));
        }
    }
    v
}

/// The job as the event store has it (strongly consistent), with the read model's derived
/// fields when the projection has them.
/// A job as the API shows it to `caller` (with its read-model figures).
pub async fn render(state: &AppState, caller: &Caller, job: &Job) -> Result<Value, ApiError> {
    let (Some(id), Some(ws)) = (job.id, job.workspace_id) else {
        return Err(ApiError::NotFound("job"));
    };
    let stats = stats(state, ws, id).await?;
    Ok(for_caller(caller, render_with(job, stats)?))
}

/// A job just created: the read model cannot know more than its events yet.
fn render_new(caller: &Caller, job: &Job) -> Result<Value, ApiError> {
    Ok(for_caller(caller, render_with(job, None)?))
}

/// Credential header values (the public event stream's rule, and `sensitive_headers`) are
/// shown to admins and owners only; members, viewers and API keys see them masked.
fn for_caller(caller: &Caller, mut job: Value) -> Value {
    if !caller.sees_credentials() {
        cronbox_domain::public::mask_job_view(&mut job);
    }
    job
}

fn render_with(job: &Job, stats: Option<Stats>) -> Result<Value, ApiError> {
    let (Some(id), Some(ws), Some(def)) = (job.id, job.workspace_id, job.definition.as_ref()) else {
        return Err(ApiError::NotFound("job"));
    };
    let (status, next) = match (&def.kind, job.status) {
        (JobKind::Cron { schedule, timezone }, JobStatus::Active) => {
            let next = match &stats {
                Some(s) if s.status == "active" => s.next_run_at,
                _ => CronSchedule::parse_stored(schedule, timezone)
                    .ok()
                    .and_then(|s| s.next_after(Utc::now())),
            };
            ("active".to_string(), next)
        }
        (JobKind::Cron { .. }, JobStatus::Paused) => ("paused".to_string(), None),
        (JobKind::Delayed { execute_at, .. }, _) => match &stats {
            Some(s) if s.status != "pending" => (s.status.clone(), None),
            _ => ("pending".to_string(), Some(*execute_at)),
        },
        (_, JobStatus::Deleted) => return Err(ApiError::NotFound("job")),
    };
    Ok(view(
        id,
        ws,
        def,
        &status,
        next,
        stats.as_ref(),
        job.created_at,
        job.updated_at,
    ))
}

/// Loads a job of `kind` in the caller's workspace; anything else is a 404.
async fn load(state: &AppState, caller: &Caller, raw_id: &str, kind: Kind) -> Result<(Uuid, Job), ApiError> {
    let not_found = ApiError::NotFound(kind.noun());
    let id = Uuid::try_parse(raw_id).map_err(|_| ApiError::NotFound(kind.noun()))?;
    let (job, _) = state
        .stores
        .jobs
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    let matches_kind = match job.definition.as_ref().map(|d| &d.kind) {
        Some(JobKind::Cron { .. }) => kind == Kind::Cron,
        Some(JobKind::Delayed { .. }) => kind == Kind::Delayed,
        None => false,
    };
    if job.workspace_id != Some(caller.workspace_id) || job.status == JobStatus::Deleted || !matches_kind {
        return Err(not_found);
    }
    Ok((id, job))
}

// ---------- cron ----------

#[utoipa::path(
    post,
    path = "/cron",
    tag = "cron jobs",
    summary = "Create a cron job",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::CronJobCreate,
    responses((status = 201, description = "The job", body = crate::openapi::schemas::CronJob), (status = 403, description = "Role too low, or `plan_limit`: the plan does not allow it (with `limit`, `plan`, `usage`, `allowed`)", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn create_cron(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<impl IntoResponse, ApiError> {
    let job = new_cron_job(&state, &caller, body).await?;
    Ok((StatusCode::CREATED, Json(render_new(&caller, &job)?)))
}

/// Creates a cron job from the fields of the API's create body (the web app's editor posts the
/// same fields), with every rule of the API: validation, workspace defaults, plan limits, the
/// target guard and the alert channels.
pub async fn new_cron_job(
    state: &AppState,
    caller: &Caller,
    body: serde_json::Map<String, Value>,
) -> Result<Job, ApiError> {
    let mut f = Fields(body);
    let name = f
        .string("name")?
        .ok_or_else(|| ApiError::field("name", "required", "name is required"))?;
    let schedule = f
        .string("schedule")?
        .ok_or_else(|| ApiError::field("schedule", "required", "schedule is required"))?;
    let timezone = f.string("timezone")?.unwrap_or_else(|| caller.timezone.clone());
    CronSchedule::parse(&schedule, &timezone).map_err(schedule_error)?;
    let definition = JobDefinition {
        name,
        description: f.string("description")?.unwrap_or_default(),
        tags: f.strings("tags")?.unwrap_or_default(),
        request: request_fields(&mut f, None, &caller.workspace.job_defaults, &state.targets)?,
        notify_on_failure: f
            .bool("notify_on_failure")?
            .or(caller.workspace.job_defaults.notify_on_failure)
            .unwrap_or(true),
        notify_on_recovery: f
            .bool("notify_on_recovery")?
            .or(caller.workspace.job_defaults.notify_on_recovery)
            .unwrap_or(true),
        alerts: crate::notifications::alert_rules(
            &mut f,
            None,
            &caller.workspace.job_defaults,
            state.min_realert_seconds,
        )?,
        misfire_policy: misfire_policy(&mut f, None)?
            .or(caller.workspace.job_defaults.misfire_policy)
            .unwrap_or_default(),
        misfire_grace_seconds: misfire_grace(&mut f, None)?.or(caller.workspace.job_defaults.misfire_grace_seconds),
        overlap_policy: overlap_policy(&mut f, None)?
            .or(caller.workspace.job_defaults.overlap_policy)
            .unwrap_or_default(),
        status_badge: status_badge(&mut f, None)?,
        kind: JobKind::Cron {
            schedule: schedule.trim().to_string(),
            timezone,
        },
    };
    f.finish()?;
    let plan = caller.plan(state).await?;
    plan.check_definition(&definition)?;
    check_targets(state, &definition).await?;
    crate::notifications::check_channels(state, caller.workspace_id, &definition.alerts).await?;
    let id = Uuid::new_v4();
    let job = create_job(state, caller, &plan, id, definition, Utc::now())
        .await
        .map_err(|e| plans::metered_error(&plan, e, job_error))?;
    tracing::info!(job_id = %id, workspace_id = %caller.workspace_id, "cron job created");
    Ok(job)
}

#[utoipa::path(
    get,
    path = "/cron/{id}",
    tag = "cron jobs",
    summary = "Get a cron job",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The job", body = crate::openapi::schemas::CronJob)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get_cron(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (_, job) = load(&state, &caller, &id, Kind::Cron).await?;
    Ok(Json(render(&state, &caller, &job).await?))
}

#[utoipa::path(
    patch,
    path = "/cron/{id}",
    tag = "cron jobs",
    summary = "Change a cron job (only the fields given)",
    params(crate::openapi::WsIdPath),
    request_body = crate::openapi::schemas::CronJobUpdate,
    responses((status = 200, description = "The job", body = crate::openapi::schemas::CronJob), (status = 403, description = "Role too low, or `plan_limit`: the plan does not allow it (with `limit`, `plan`, `usage`, `allowed`)", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn update_cron(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let job = change_cron_job(&state, &caller, &id, body).await?;
    Ok(Json(render(&state, &caller, &job).await?))
}

/// The body's `status_badge`: `true` publishes one (keeping `current`'s address), `false`
/// withdraws it, absent leaves it as it is.
fn status_badge(f: &mut Fields, current: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(match f.bool("status_badge")? {
        None => current.map(str::to_string),
        Some(false) => None,
        Some(true) => Some(current.map_or_else(crate::badge::new_token, str::to_string)),
    })
}

/// The request a create body (or, with `job`, a change of that cron job) describes, exactly as
/// a run would send it now, read by the same rules as [`new_cron_job`] and
/// [`change_cron_job`]: the editor's test request. Nothing is stored.
pub async fn request_of(
    state: &AppState,
    caller: &Caller,
    job: Option<&str>,
    body: serde_json::Map<String, Value>,
) -> Result<RequestSpec, ApiError> {
    let current = match job {
        Some(id) => {
            let (_, job) = load(state, caller, id, Kind::Cron).await?;
            Some(job.definition.ok_or(ApiError::NotFound("cron job"))?.request)
        }
        None => None,
    };
    let mut f = Fields(body);
    request_fields(&mut f, current.as_ref(), &caller.workspace.job_defaults, &state.targets)
}

/// Changes the fields of a cron job that `body` gives (the API's PATCH; the web app's editor
/// posts every field), with the same checks as a create.
pub async fn change_cron_job(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: serde_json::Map<String, Value>,
) -> Result<Job, ApiError> {
    let (id, job) = load(state, caller, id, Kind::Cron).await?;
    let Some(current) = job.definition.clone() else {
        return Err(ApiError::NotFound("cron job"));
    };
    let JobKind::Cron { schedule, timezone } = &current.kind else {
        return Err(ApiError::NotFound("cron job"));
    };
    let mut f = Fields(body);
    let schedule = f.string("schedule")?.unwrap_or_else(|| schedule.clone());
    let timezone = f.string("timezone")?.unwrap_or_else(|| timezone.clone());
    CronSchedule::parse(&schedule, &timezone).map_err(schedule_error)?;
    let definition = JobDefinition {
        name: f.string("name")?.unwrap_or(current.name.clone()),
        description: f.string("description")?.unwrap_or(current.description.clone()),
        tags: f.strings("tags")?.unwrap_or(current.tags.clone()),
        request: request_fields(
            &mut f,
            Some(&current.request),
            &caller.workspace.job_defaults,
            &state.targets,
        )?,
        notify_on_failure: f.bool("notify_on_failure")?.unwrap_or(current.notify_on_failure),
        notify_on_recovery: f.bool("notify_on_recovery")?.unwrap_or(current.notify_on_recovery),
        alerts: crate::notifications::alert_rules(
            &mut f,
            Some(&current.alerts),
            &caller.workspace.job_defaults,
            state.min_realert_seconds,
        )?,
        misfire_policy: misfire_policy(&mut f, Some(&current))?.unwrap_or_default(),
        misfire_grace_seconds: misfire_grace(&mut f, Some(&current))?,
        overlap_policy: overlap_policy(&mut f, Some(&current))?.unwrap_or_default(),
        status_badge: status_badge(&mut f, current.status_badge.as_deref())?,
        kind: JobKind::Cron {
            schedule: schedule.trim().to_string(),
            timezone,
        },
    };
    f.finish()?;
    caller.plan(state).await?.check_definition(&definition)?;
    check_targets(state, &definition).await?;
    crate::notifications::check_channels(state, caller.workspace_id, &definition.alerts).await?;
    state
        .stores
        .jobs
        .execute(
            &id.to_string(),
            JobCommand::Update {
                definition,
                at: Utc::now(),
            },
        )
        .await
        .map_err(|e| from_aggregate(e, job_error))?;
    let (job, _) = state
        .stores
        .jobs
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    Ok(job)
}

/// Pauses a cron job; the next fire does not happen.
pub async fn pause(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    cron_command(state, caller, id, |at| JobCommand::Pause { at }).await
}

/// Resumes a paused cron job (counted against the plan's active jobs again).
pub async fn resume(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    cron_command(state, caller, id, |at| JobCommand::Resume { at }).await
}

async fn cron_command(
    state: &AppState,
    caller: &Caller,
    id: &str,
    make: impl FnOnce(DateTime<Utc>) -> JobCommand,
) -> Result<Job, ApiError> {
    let (id, _) = load(state, caller, id, Kind::Cron).await?;
    let plan = caller.plan(state).await?;
    // Held until the command is committed, so no fire decided meanwhile slips past a pause.
    let gate = job_gate::hold(&state.gates, id).await?;
    metered(state, caller, &plan, id, make(Utc::now())).await?;
    gate.rollback().await?;
    let (job, _) = state
        .stores
        .jobs
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    Ok(job)
}

#[utoipa::path(
    post,
    path = "/cron/{id}/pause",
    tag = "cron jobs",
    summary = "Pause a cron job",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The job", body = crate::openapi::schemas::CronJob)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn pause_cron(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let job = pause(&state, &caller, &id).await?;
    Ok(Json(render(&state, &caller, &job).await?))
}

#[utoipa::path(
    post,
    path = "/cron/{id}/resume",
    tag = "cron jobs",
    summary = "Resume a paused cron job",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The job", body = crate::openapi::schemas::CronJob), (status = 403, description = "Role too low, or `plan_limit`: the plan does not allow it (with `limit`, `plan`, `usage`, `allowed`)", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn resume_cron(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let job = resume(&state, &caller, &id).await?;
    Ok(Json(render(&state, &caller, &job).await?))
}

#[utoipa::path(
    delete,
    path = "/cron/{id}",
    tag = "cron jobs",
    summary = "Delete a cron job",
    params(crate::openapi::WsIdPath),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn delete_cron(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_cron_job(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a cron job: no fire after this; its runs and audit trail stay.
pub async fn delete_cron_job(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let (id, _) = load(state, caller, id, Kind::Cron).await?;
    let plan = caller.plan(state).await?;
    let gate = job_gate::hold(&state.gates, id).await?;
    let cmd = JobCommand::Delete {
        already_fired: false,
        at: Utc::now(),
    };
    metered(state, caller, &plan, id, cmd).await?;
    gate.rollback().await?;
    Ok(())
}

/// "Run now": a manual run, dispatched at once, recorded on the job's stream too.
#[utoipa::path(
    post,
    path = "/cron/{id}/run",
    tag = "cron jobs",
    summary = "Run now (a manual run, dispatched at once)",
    params(crate::openapi::WsIdPath),
    responses((status = 202, description = "The run was recorded", body = crate::openapi::schemas::RunRequested)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn run_cron(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let run = run_now(&state, &caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"run_id": run.run_id, "job_id": run.job_id, "status": "scheduled", "scheduled_for": run.scheduled_for}),
        ),
    ))
}

/// A manual run that [`run_now`] recorded.
#[derive(Debug, Clone, Copy)]
pub struct RunRequested {
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub scheduled_for: DateTime<Utc>,
}

/// "Run now": a manual run of a cron job, dispatched at once and recorded on the job's stream.
pub async fn run_now(state: &AppState, caller: &Caller, id: &str) -> Result<RunRequested, ApiError> {
    let (id, job) = load(state, caller, id, Kind::Cron).await?;
    let Some(def) = job.definition else {
        return Err(ApiError::NotFound("cron job"));
    };
    let run_id = Uuid::new_v4();
    let now = Utc::now();
    // The request first, metered: a manual run costs one of the month's one-off runs, and one
    // over the plan's allowance is refused before any run exists.
    let allowance = caller.plan(state).await?;
    metered(
        state,
        caller,
        &allowance,
        id,
        JobCommand::RequestRun { run_id, at: now },
    )
    .await?;
    let plan = RunPlan {
        workspace_id: caller.workspace_id,
        job_id: id,
        trigger: Trigger::Manual,
        scheduled_for: now,
        request: def.request,
        callback_url: None,
        rerun_of: None,
    };
    state
        .stores
        .runs
        .execute(&run_id.to_string(), RunCommand::Schedule { run_id, plan, at: now })
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(job_id = %id, run_id = %run_id, workspace_id = %caller.workspace_id, "manual run requested");
    Ok(RunRequested {
        run_id,
        job_id: id,
        scheduled_for: now,
    })
}

// ---------- delayed ----------

fn idempotency_key(f: &mut Fields, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let from_body = f.string("idempotency_key")?;
    let from_header = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::field("idempotency_key", "invalid", "Idempotency-Key must be visible ASCII"))?
                .to_string(),
        ),
    };
    let key = match (from_body, from_header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ApiError::field(
                "idempotency_key",
                "conflicting",
                "the body and the Idempotency-Key header differ",
            ))
        }
        (b, h) => b.or(h),
    };
    if let Some(k) = &key {
        if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(ApiError::field(
                "idempotency_key",
                "invalid",
                "1 to 255 visible ASCII characters",
            ));
        }
    }
    Ok(key)
}

/// A delayed call's definition from its fields (everything but the idempotency key, read by the
/// caller). Every field is consumed, so an unknown one is an error.
fn delayed_definition(
    f: &mut Fields,
    key: Option<String>,
    caller: &Caller,
    targets: &TargetPolicy,
    now: DateTime<Utc>,
) -> Result<JobDefinition, ApiError> {
    let execute_at = match (f.time("execute_at")?, f.int("delay_seconds")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "execute_at",
                "conflicting",
                "give either execute_at or delay_seconds, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::field(
                "execute_at",
                "required",
                "execute_at or delay_seconds is required",
            ))
        }
        (Some(t), None) => {
            if t < now - Duration::seconds(PAST_TOLERANCE_SECONDS) {
                return Err(ApiError::field("execute_at", "in_past", "execute_at is in the past"));
            }
            t
        }
        (None, Some(d)) => {
            if !(0..=MAX_DELAY_DAYS * 86_400).contains(&d) {
                return Err(ApiError::field(
                    "delay_seconds",
                    "out_of_range",
                    format!("delay_seconds must be between 0 and {}", MAX_DELAY_DAYS * 86_400),
                ));
            }
            now + Duration::seconds(d)
        }
    };
    if execute_at > now + Duration::days(MAX_DELAY_DAYS) {
        return Err(ApiError::field(
            "execute_at",
            "out_of_range",
            format!("execute_at must be within {MAX_DELAY_DAYS} days"),
        ));
    }
    // Millisecond precision: the run id is derived from it.
    let execute_at = DateTime::from_timestamp_millis(execute_at.timestamp_millis()).unwrap_or(execute_at);
    let callback_url = match f.string("callback_url")? {
        None => None,
        Some(u) => Some(parse_target_url("callback_url", &u, targets)?),
    };
    let definition = JobDefinition {
        name: f.string("name")?.unwrap_or_else(|| "delayed call".to_string()),
        description: f.string("description")?.unwrap_or_default(),
        tags: f.strings("tags")?.unwrap_or_default(),
        request: request_fields(f, None, &caller.workspace.job_defaults, targets)?,
        notify_on_failure: f
            .bool("notify_on_failure")?
            .or(caller.workspace.job_defaults.notify_on_failure)
            .unwrap_or(true),
        notify_on_recovery: f.bool("notify_on_recovery")?.unwrap_or(true),
        alerts: delayed_alert_rules(f)?,
        misfire_policy: Default::default(),
        misfire_grace_seconds: None,
        overlap_policy: Default::default(),
        status_badge: None,
        kind: JobKind::Delayed {
            execute_at,
            callback_url,
            idempotency_key: key,
        },
    };
    Fields(std::mem::take(&mut f.0)).finish()?;
    Ok(definition)
}

#[utoipa::path(
    post,
    path = "/delayed",
    tag = "delayed calls",
    summary = "Create a delayed call",
    params(crate::openapi::WsPath, ("Idempotency-Key" = Option<String>, Header, description = "Same as the body field `idempotency_key`")),
    request_body = crate::openapi::schemas::DelayedCallCreate,
    responses((status = 201, description = "The call", body = crate::openapi::schemas::DelayedCall), (status = 200, description = "A call with this idempotency key already exists; it is returned unchanged", body = crate::openapi::schemas::DelayedCall), (status = 403, description = "Role too low, or `plan_limit`: the plan does not allow it (with `limit`, `plan`, `usage`, `allowed`)", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn create_delayed(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<impl IntoResponse, ApiError> {
    Ok(match new_delayed_call(&state, &caller, &headers, body).await? {
        Delayed::Created(job) => (StatusCode::CREATED, Json(render_new(&caller, &job)?)),
        Delayed::Existing(job) => (StatusCode::OK, Json(render_any(&state, &caller, &job).await?)),
    })
}

/// What a create of a delayed call did.
pub enum Delayed {
    Created(Job),
    /// The idempotency key named a call created before: that call, unchanged.
    Existing(Job),
}

/// Creates a delayed call from the fields of the API's create body (the web app posts the same
/// fields), honouring an idempotency key from the body or the `Idempotency-Key` header.
pub async fn new_delayed_call(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: serde_json::Map<String, Value>,
) -> Result<Delayed, ApiError> {
    let mut f = Fields(body);
    let key = idempotency_key(&mut f, headers)?;
    // A repeat of a create that happened answers with that call, whatever the body says now:
    // a retry after `execute_at` has passed, or after a plan change, must not turn into a 400.
    if let Some(k) = &key {
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT job_id FROM delayed_idempotency WHERE workspace_id = $1 AND idempotency_key = $2",
        )
        .bind(caller.workspace_id)
        .bind(k)
        .fetch_optional(&state.pool)
        .await?;
        if let Some(id) = existing {
            let (job, _) = state
                .stores
                .jobs
                .load(&id.to_string())
                .await
                .map_err(ApiError::internal)?;
            if job.id.is_some() {
                return Ok(Delayed::Existing(job));
            }
        }
    }
    let now = Utc::now();
    let definition = delayed_definition(&mut f, key.clone(), caller, &state.targets, now)?;
    let plan = caller.plan(state).await?;
    plan.check_definition(&definition)?;
    check_targets(state, &definition).await?;

    let mut id = Uuid::new_v4();
    if let Some(key) = &key {
        // Reserve the key first: concurrent creates with one key agree on a single job id.
        let reserved: Uuid = sqlx::query_scalar(
            "INSERT INTO delayed_idempotency (workspace_id, idempotency_key, job_id) VALUES ($1, $2, $3)
             ON CONFLICT (workspace_id, idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
             RETURNING job_id",
        )
        .bind(caller.workspace_id)
        .bind(key)
        .bind(id)
        .fetch_one(&state.pool)
        .await?;
        if reserved != id {
            let (job, _) = state
                .stores
                .jobs
                .load(&reserved.to_string())
                .await
                .map_err(ApiError::internal)?;
            if job.id.is_some() {
                return Ok(Delayed::Existing(job));
            }
            // Reserved by a request that failed before creating the job: finish its work.
            id = reserved;
        }
    }
    let job = match create_job(state, caller, &plan, id, definition, now).await {
        Ok(job) => job,
        // Lost a race with a concurrent create under the same idempotency key.
        Err(MeteredError::Command(JobError::AlreadyExists)) | Err(MeteredError::Conflict) if key.is_some() => {
            let (job, _) = state
                .stores
                .jobs
                .load(&id.to_string())
                .await
                .map_err(ApiError::internal)?;
            return Ok(Delayed::Existing(job));
        }
        Err(e) => return Err(plans::metered_error(&plan, e, job_error)),
    };
    tracing::info!(job_id = %id, workspace_id = %caller.workspace_id, "delayed call created");
    Ok(Delayed::Created(job))
}

/// The most items in one `POST …/delayed/batch`.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// The largest batch body.
pub const MAX_BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One validated item of a batch, waiting to be written.
struct BatchItem {
    index: usize,
    id: Uuid,
    key: Option<String>,
    definition: JobDefinition,
    /// Some: an earlier create holds this item's idempotency key and made this job.
    existing: bool,
}

#[utoipa::path(
    post,
    path = "/delayed/batch",
    tag = "delayed calls",
    summary = "Create up to 1000 delayed calls at once",
    description = "All or nothing: every item is validated first, and if any is invalid nothing is created and the 400 `invalid_items` error lists each bad item (`index`, `field`, `code`, `message`). Items with an `idempotency_key` that an earlier create already used are returned as `existing` and not created again. The month's delayed-call allowance is charged for the whole batch at once.",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::DelayedBatchCreate,
    responses((status = 201, description = "Created (items in request order)", body = crate::openapi::schemas::DelayedBatchResult), (status = 200, description = "Every item already existed", body = crate::openapi::schemas::DelayedBatchResult), (status = 400, description = "`invalid_items`: nothing was created", body = crate::openapi::schemas::ErrorResponse), (status = 403, description = "Role too low, or `plan_limit` for the batch as a whole", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn create_delayed_batch(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<impl IntoResponse, ApiError> {
    // Read only now, after the caller was authenticated, and up to the batch's own limit.
    let body = crate::input::read_body(body, MAX_BATCH_BODY_BYTES).await?;
    let mut top = Fields(crate::input::parse_object(&body, MAX_BATCH_BODY_BYTES)?);
    let raw = match top.0.remove("items") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(ApiError::field("items", "required", "items is required")),
        Some(_) => return Err(ApiError::field("items", "invalid_type", "items must be an array")),
    };
    top.finish()?;
    if raw.is_empty() || raw.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::field(
            "items",
            "out_of_range",
            format!("items must hold 1 to {MAX_BATCH_ITEMS} delayed calls"),
        ));
    }
    let total = raw.len();
    let now = Utc::now();
    let plan = caller.plan(&state).await?;
    let mut items = Vec::with_capacity(total);
    let mut errors = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for (index, value) in raw.into_iter().enumerate() {
        let parsed = async {
            let Value::Object(map) = value else {
                return Err(ApiError::BadRequest {
                    code: "invalid_type",
                    message: "each item must be a JSON object".into(),
                    field: None,
                });
            };
            let mut f = Fields(map);
            let key = idempotency_key(&mut f, &HeaderMap::new())?;
            if let Some(k) = &key {
                if !keys.insert(k.clone()) {
                    return Err(ApiError::field(
                        "idempotency_key",
                        "duplicate",
                        "another item of this batch has the same idempotency_key",
                    ));
                }
            }
            let definition = delayed_definition(&mut f, key.clone(), &caller, &state.targets, now)?;
            plan.check_definition(&definition)?;
            Ok((key, definition))
        }
        .await;
        match parsed {
            Ok((key, definition)) => items.push(BatchItem {
                index,
                id: Uuid::new_v4(),
                key,
                definition,
                existing: false,
            }),
            Err(e) => errors.push(crate::error::ItemError::of(index, e)?),
        }
    }
    // Host names of all items resolved together, bounded in time and in lookups (not one
    // lookup after another, each up to its own timeout).
    if errors.is_empty() && !state.targets.is_open() {
        let mut urls: Vec<(usize, &'static str, &str)> = Vec::new();
        for item in &items {
            urls.push((item.index, "url", item.definition.request.url.as_str()));
            if let JobKind::Delayed {
                callback_url: Some(cb), ..
            } = &item.definition.kind
            {
                urls.push((item.index, "callback_url", cb.as_str()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (index, e) in targets::check_many(&state.targets, &urls).await {
            if seen.insert(index) {
                errors.push(crate::error::ItemError::of(index, e)?);
            }
        }
        errors.sort_by_key(|e| e.index);
    }
    if !errors.is_empty() {
        return Err(ApiError::InvalidItems { total, items: errors });
    }

    let mut tx = state.pool.begin().await?;
    claim_keys(&mut tx, caller.workspace_id, &mut items).await?;
    let mut jobs = Vec::with_capacity(items.len());
    for item in items.iter().filter(|i| !i.existing) {
        let cmd = JobCommand::Create {
            job_id: item.id,
            workspace_id: caller.workspace_id,
            definition: item.definition.clone(),
            at: now,
        };
        let (_, events) = cronbox_domain::decide(&Job::default(), cmd).await.map_err(job_error)?;
        jobs.push((item.id, events));
    }
    let tz = parse_timezone(&caller.timezone).unwrap_or(chrono_tz::UTC);
    usage::append_new_jobs(&mut tx, caller.workspace_id, &jobs, tz, plan.limits(), now)
        .await
        .map_err(|e| plans::metered_error(&plan, e, job_error))?;
    tx.commit().await?;
    // Existing items are shown as they were created, not as this request described them.
    for item in items.iter_mut().filter(|i| i.existing) {
        let (job, _) = state
            .stores
            .jobs
            .load(&item.id.to_string())
            .await
            .map_err(ApiError::internal)?;
        if let Some(d) = job.definition {
            item.definition = d;
        }
    }

    let created = jobs.len();
    tracing::info!(workspace_id = %caller.workspace_id, created, existing = total - created, "delayed calls created in a batch");
    let out: Vec<Value> = items
        .iter()
        .map(|i| {
            let JobKind::Delayed { execute_at, .. } = &i.definition.kind else {
                return Value::Null;
            };
            json!({
                "index": i.index,
                "id": i.id,
                "status": if i.existing { "existing" } else { "created" },
                "execute_at": execute_at,
                "run_id": scheduled_run_id(i.id, *execute_at),
                "idempotency_key": i.key,
            })
        })
        .collect();
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"created": created, "existing": total - created, "items": out})),
    ))
}

/// Reserves the batch's idempotency keys in its transaction. An item whose key an earlier
/// create holds becomes that create's job (`existing`), or, if that create never got as far as
/// its events, is created under the id it reserved. Keys are claimed in sorted order, so two
/// batches sharing keys wait for each other instead of deadlocking.
async fn claim_keys(tx: &mut sqlx::PgConnection, workspace_id: Uuid, items: &mut [BatchItem]) -> Result<(), ApiError> {
    let mut keyed: Vec<(String, Uuid)> = items.iter().filter_map(|i| i.key.clone().map(|k| (k, i.id))).collect();
    if keyed.is_empty() {
        return Ok(());
    }
    keyed.sort();
    let (keys, ids): (Vec<String>, Vec<Uuid>) = keyed.into_iter().unzip();
    sqlx::query(
        "INSERT INTO delayed_idempotency (workspace_id, idempotency_key, job_id)
         SELECT $1, k, j FROM unnest($2::text[], $3::uuid[]) WITH ORDINALITY AS x(k, j, n) ORDER BY n
         ON CONFLICT (workspace_id, idempotency_key) DO NOTHING",
    )
    .bind(workspace_id)
    .bind(&keys)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    // Keys held by someone else (not ours), and whether their jobs exist.
    let held: Vec<(String, Uuid, bool)> = sqlx::query_as(
        "SELECT d.idempotency_key, d.job_id,
                EXISTS (SELECT 1 FROM events e WHERE e.aggregate_type = 'Job' AND e.aggregate_id = d.job_id::text)
           FROM delayed_idempotency d
           JOIN unnest($2::text[], $3::uuid[]) AS x(k, j) ON d.idempotency_key = x.k AND d.job_id <> x.j
          WHERE d.workspace_id = $1",
    )
    .bind(workspace_id)
    .bind(&keys)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for (key, job_id, exists) in held {
        if let Some(item) = items.iter_mut().find(|i| i.key.as_deref() == Some(key.as_str())) {
            item.id = job_id;
            item.existing = exists;
        }
    }
    Ok(())
}

/// Like `render`, but a cancelled call is shown (an idempotent repeat must not 404).
/// A job's audit trail (the web app's job page; the API's `…/events` route reads the same).
pub async fn job_trail(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: Kind,
) -> Result<Vec<crate::events::TrailEvent>, ApiError> {
    let (id, _) = load_any(state, caller, id, kind).await?;
    crate::events::trail(state, "Job", id).await
}

/// A job as the API shows it, cancelled delayed calls included (the web app's detail pages).
pub async fn view_any(state: &AppState, caller: &Caller, id: &str, kind: Kind) -> Result<Value, ApiError> {
    let (_, job) = load_any(state, caller, id, kind).await?;
    render_any(state, caller, &job).await
}

async fn render_any(state: &AppState, caller: &Caller, job: &Job) -> Result<Value, ApiError> {
    if job.status == JobStatus::Deleted {
        let mut j = job.clone();
        j.status = JobStatus::Active;
        let mut v = render(state, caller, &j).await?;
        v["status"] = json!("cancelled");
        v["next_run_at"] = Value::Null;
        return Ok(v);
    }
    render(state, caller, job).await
}

#[utoipa::path(
    get,
    path = "/delayed/{id}",
    tag = "delayed calls",
    summary = "Get a delayed call",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "The call", body = crate::openapi::schemas::DelayedCall)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get_delayed(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (_, job) = load(&state, &caller, &id, Kind::Delayed).await?;
    Ok(Json(render(&state, &caller, &job).await?))
}

#[utoipa::path(
    delete,
    path = "/delayed/{id}",
    tag = "delayed calls",
    summary = "Cancel a delayed call",
    params(crate::openapi::WsIdPath),
    responses((status = 204, description = "Cancelled"), (status = 409, description = "`already_executed`: its run was already recorded", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn delete_delayed(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    cancel_delayed(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a delayed call that has not fired (409 once its run is in the log).
pub async fn cancel_delayed(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let (id, job) = load(state, caller, id, Kind::Delayed).await?;
    let Some(JobKind::Delayed { execute_at, .. }) = job.definition.as_ref().map(|d| &d.kind) else {
        return Err(ApiError::NotFound("delayed call"));
    };
    let run_id = scheduled_run_id(id, *execute_at);
    // Under the gate the dispatcher cannot record the fire between our check and our delete:
    // either its run is already in the log (409) or it will see the cancellation and drop it.
    let gate = job_gate::hold(&state.gates, id).await?;
    let fired: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'Run' AND aggregate_id = $1)")
            .bind(run_id.to_string())
            .fetch_one(&state.pool)
            .await?;
    state
        .stores
        .jobs
        .execute(
            &id.to_string(),
            JobCommand::Delete {
                already_fired: fired,
                at: Utc::now(),
            },
        )
        .await
        .map_err(|e| from_aggregate(e, job_error))?;
    gate.rollback().await?;
    tracing::info!(job_id = %id, workspace_id = %caller.workspace_id, "delayed call cancelled");
    Ok(())
}

// ---------- lists ----------

#[utoipa::path(
    get,
    path = "/cron",
    tag = "cron jobs",
    summary = "List cron jobs (newest first, or in the order of `sort`)",
    params(crate::openapi::WsPath, crate::openapi::schemas::CronListQuery),
    responses((status = 200, description = "A page of jobs", body = crate::openapi::schemas::CronJobList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list_cron(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(list(&state, &caller, Kind::Cron, &q).await?.into_json()))
}

#[utoipa::path(
    get,
    path = "/delayed",
    tag = "delayed calls",
    summary = "List delayed calls (newest first, or in the order of `sort`)",
    params(crate::openapi::WsPath, crate::openapi::schemas::DelayedListQuery),
    responses((status = 200, description = "A page of calls", body = crate::openapi::schemas::DelayedCallList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list_delayed(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(list(&state, &caller, Kind::Delayed, &q).await?.into_json()))
}

/// The orders a job list can be read in (the list query's `sort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    /// Newest first (the default).
    Created,
    /// By name, A to Z.
    Name,
    /// The soonest next run first; jobs without one last.
    NextRun,
}

impl Sort {
    fn as_str(self) -> &'static str {
        match self {
            Sort::Created => "created",
            Sort::Name => "name",
            Sort::NextRun => "next_run",
        }
    }
}

/// A page of jobs as the API shows them, in the order asked for (newest first by default).
pub struct JobPage {
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
}

impl JobPage {
    fn into_json(self) -> Value {
        json!({"items": self.items, "next_cursor": self.next_cursor})
    }
}

/// The jobs of a kind, filtered by the list query's `status`, `tag`, `q`, `cursor` and `limit`,
/// in the order of its `sort`.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    q: &HashMap<String, String>,
) -> Result<JobPage, ApiError> {
    let limit = pagination::limit(q.get("limit").map(String::as_str))?;
    let statuses: &[&str] = match kind {
        Kind::Cron => &["active", "paused"],
        Kind::Delayed => &["pending", "running", "succeeded", "failed", "cancelled"],
    };
    let status = match q.get("status") {
        None => None,
        Some(s) if statuses.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::field(
                "status",
                "invalid_status",
                format!("status must be one of {}", statuses.join(", ")),
            ));
        }
    };
    let tag = q.get("tag").cloned();
    let search = crate::input::contains_pattern(q.get("q").map_or("", String::as_str))?;
    let sort = match q.get("sort").map(String::as_str) {
        None | Some("created") => Sort::Created,
        Some("name") => Sort::Name,
        Some("next_run") => Sort::NextRun,
        Some(_) => {
            return Err(ApiError::field(
                "sort",
                "invalid_sort",
                "sort must be one of created, name, next_run",
            ));
        }
    };
    let (after_t, after_key, after_id) = match sort {
        Sort::Created => match pagination::decode(q.get("cursor").map(String::as_str))? {
            Some((t, i)) => (Some(t), None, Some(i)),
            None => (None, None, None),
        },
        _ => match pagination::decode_keyed(q.get("cursor").map(String::as_str), sort.as_str())? {
            Some((k, i)) => (None, Some(k), Some(i)),
            None => (None, None, None),
        },
    };
    // The sort's order and "after the cursor" condition; only these fixed texts reach the SQL.
    let (order, after_cond) = match sort {
        Sort::Created => (
            "created_at DESC, id DESC",
            "($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))",
        ),
        Sort::Name => ("name, id", "($9::text IS NULL OR (name, id) > ($9, $6))"),
        // Soonest first; jobs with no next run (paused, finished) last.
        Sort::NextRun => (
            "COALESCE(next_run_at, 'infinity'), id",
            "($9::text IS NULL OR (COALESCE(next_run_at, 'infinity'), id) > ($9::timestamptz, $6))",
        ),
    };
    let rows = sqlx::query(&format!(
        "SELECT id, workspace_id, name, definition, status, next_run_at, last_run_at, last_status, consecutive_failures, created_at, updated_at
           FROM jobs
          WHERE workspace_id = $1 AND kind = $2 AND status <> 'deleted'
            AND (status <> 'cancelled' OR $3::text = 'cancelled')
            AND ($3::text IS NULL OR status = $3)
            AND ($4::text IS NULL OR $4 = ANY(tags))
            AND {after_cond}
            AND ($8::text IS NULL OR name ILIKE $8)
          ORDER BY {order}
          LIMIT $7"
    ))
    .bind(caller.workspace_id)
    .bind(kind.as_str())
    .bind(status)
    .bind(tag)
    .bind(after_t)
    .bind(after_id)
    .bind(limit + 1)
    .bind(search)
    .bind(after_key)
    .fetch_all(&state.pool)
    .await?;
    let mut items = Vec::new();
    let mut next_cursor = None;
    for (i, r) in rows.iter().enumerate() {
        let id: Uuid = r.try_get("id")?;
        let created_at: DateTime<Utc> = r.try_get("created_at")?;
        if i as i64 == limit {
            break;
        }
        if i as i64 == limit - 1 && rows.len() as i64 > limit {
            next_cursor = Some(match sort {
                Sort::Created => pagination::encode(created_at, id),
                Sort::Name => pagination::encode_keyed("name", &r.try_get::<String, _>("name")?, id),
                Sort::NextRun => {
                    let at: Option<DateTime<Utc>> = r.try_get("next_run_at")?;
                    let key = at.map_or_else(|| "infinity".to_string(), |t| t.to_rfc3339());
                    pagination::encode_keyed("next_run", &key, id)
                }
            });
        }
        let sqlx::types::Json(def): sqlx::types::Json<JobDefinition> = r.try_get("definition")?;
        let s = Stats {
            status: r.try_get("status")?,
            next_run_at: r.try_get("next_run_at")?,
            last_run_at: r.try_get("last_run_at")?,
            last_status: r.try_get("last_status")?,
            consecutive_failures: r.try_get("consecutive_failures")?,
        };
        items.push(for_caller(
            caller,
            view(
                id,
                r.try_get("workspace_id")?,
                &def,
                &s.status,
                s.next_run_at,
                Some(&s),
                Some(created_at),
                r.try_get("updated_at")?,
            ),
        ));
    }
    Ok(JobPage { items, next_cursor })
}

/// `…/cron/{id}/events` and `…/delayed/{id}/events`: the job's stored events.
#[utoipa::path(
    get,
    path = "/cron/{id}/events",
    tag = "cron jobs",
    summary = "The job's audit trail",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "Its events in order", body = crate::openapi::schemas::EventList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn cron_events(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (id, _) = load_any(&state, &caller, &id, Kind::Cron).await?;
    crate::events::aggregate_events(&state, "Job", id).await
}

#[utoipa::path(
    get,
    path = "/delayed/{id}/events",
    tag = "delayed calls",
    summary = "The call's audit trail",
    params(crate::openapi::WsIdPath),
    responses((status = 200, description = "Its events in order", body = crate::openapi::schemas::EventList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn delayed_events(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (id, _) = load_any(&state, &caller, &id, Kind::Delayed).await?;
    crate::events::aggregate_events(&state, "Job", id).await
}

/// Like `load` but deleted jobs keep their audit trail readable.
async fn load_any(state: &AppState, caller: &Caller, raw_id: &str, kind: Kind) -> Result<(Uuid, Job), ApiError> {
    let id = Uuid::try_parse(raw_id).map_err(|_| ApiError::NotFound(kind.noun()))?;
    let (job, _) = state
        .stores
        .jobs
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    let ok_kind = matches!(
        (job.definition.as_ref().map(|d| &d.kind), kind),
        (Some(JobKind::Cron { .. }), Kind::Cron) | (Some(JobKind::Delayed { .. }), Kind::Delayed)
    );
    if job.workspace_id != Some(caller.workspace_id) || !ok_kind {
        return Err(ApiError::NotFound(kind.noun()));
    }
    Ok((id, job))
}
