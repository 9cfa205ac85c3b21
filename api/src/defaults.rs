//! A workspace's defaults for new jobs: `GET`/`PUT /v1/workspaces/{ws}/job-defaults`. Each field
//! set here is used by a create that does not give it; updates and existing jobs are unaffected.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use cronbox_domain::policy::JobDefaults;
use cronbox_domain::request::{RequestInput, RequestSpec};
use cronbox_domain::target::TargetPolicy;
use cronbox_domain::workspace::{Role, WorkspaceCommand};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Fields, JsonObject};
use crate::jobs::{misfire_grace, misfire_policy, overlap_policy};
use crate::AppState;

fn view(d: &JobDefaults) -> Value {
    json!({
        "timeout_seconds": d.timeout_seconds,
        "retry_count": d.retry_count,
        "retry_delay_seconds": d.retry_delay_seconds,
        "retry_backoff": d.retry_backoff.map(|b| b.as_str()),
        "retry_max_delay_seconds": d.retry_max_delay_seconds,
        "retry_on": d.retry_on.as_ref().map(|l| l.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
        "expected_status": d.expected_status.as_ref().map(|l| l.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
        "misfire_policy": d.misfire_policy.map(|p| p.as_str()),
        "misfire_grace_seconds": d.misfire_grace_seconds,
        "overlap_policy": d.overlap_policy.map(|p| p.as_str()),
        "notify_on_failure": d.notify_on_failure,
        "notify_on_recovery": d.notify_on_recovery,
        "alert_after_failures": d.alert_after_failures,
        "realert_every": d.realert_every_seconds.map(cronbox_domain::alert::format_interval),
    })
}

/// The workspace's defaults for new jobs (null: the built-in default).
#[utoipa::path(
    get,
    path = "/job-defaults",
    tag = "workspaces",
    summary = "Defaults for new jobs",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "The defaults; null fields use the built-in ones", body = crate::openapi::schemas::JobDefaultsView)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn get(caller: Caller) -> Json<Value> {
    Json(view(&caller.workspace.job_defaults))
}

/// Replaces the defaults (admin). Fields left out or null go back to the built-in default.
#[utoipa::path(
    put,
    path = "/job-defaults",
    tag = "workspaces",
    summary = "Set the defaults for new jobs (admin)",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::JobDefaultsView,
    responses((status = 200, description = "The defaults now", body = crate::openapi::schemas::JobDefaultsView)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let mut f = Fields(body);
    // Validated exactly as the job fields they stand for: parsed into a request spec.
    let input = RequestInput {
        url: "https://example.com/".into(),
        timeout_seconds: f.int("timeout_seconds")?,
        retry_count: f.int("retry_count")?,
        retry_delay_seconds: f.int("retry_delay_seconds")?,
        retry_backoff: f.string("retry_backoff")?,
        retry_max_delay_seconds: f.int("retry_max_delay_seconds")?,
        retry_on: f.strings("retry_on")?,
        expected_status: f.codes("expected_status")?,
        ..Default::default()
    };
    let given = input.clone();
    let notify_on_failure = f.bool("notify_on_failure")?;
    let notify_on_recovery = f.bool("notify_on_recovery")?;
    let (after_given, realert_given) = (f.has("alert_after_failures"), f.has("realert_every"));
    if f.has("alert_channels") {
        return Err(ApiError::field(
            "alert_channels",
            "unknown_field",
            "alert channels are chosen per job",
        ));
    }
    let rules = crate::notifications::alert_rules(&mut f, None, &JobDefaults::default(), state.min_realert_seconds)?;
    let spec = RequestSpec::parse(input, &TargetPolicy::open())?;
    let defaults = JobDefaults {
        timeout_seconds: given.timeout_seconds.map(|_| spec.timeout_seconds),
        retry_count: given.retry_count.map(|_| spec.retry_count),
        retry_delay_seconds: given.retry_delay_seconds.map(|_| spec.retry_delay_seconds),
        retry_backoff: given.retry_backoff.map(|_| spec.retry_backoff),
        retry_max_delay_seconds: given.retry_max_delay_seconds.map(|_| spec.retry_max_delay_seconds),
        retry_on: given.retry_on.map(|_| spec.retry_on.clone()),
        expected_status: given.expected_status.map(|_| spec.expected_status.clone()),
        misfire_policy: misfire_policy(&mut f, None)?,
        misfire_grace_seconds: misfire_grace(&mut f, None)?,
        overlap_policy: overlap_policy(&mut f, None)?,
        notify_on_failure,
        notify_on_recovery,
        alert_after_failures: after_given.then_some(rules.after_failures),
        realert_every_seconds: rules.realert_every_seconds.filter(|_| realert_given),
    };
    f.finish()?;
    let cmd = WorkspaceCommand::SetJobDefaults {
        defaults: defaults.clone(),
        at: Utc::now(),
    };
    crate::workspaces::execute(&state.stores, caller.workspace_id, cmd).await?;
    tracing::info!(workspace_id = %caller.workspace_id, "job defaults changed");
    Ok(Json(view(&defaults)))
}
