//! Test requests: the editor's "send it now". The request exactly as the form configures it
//! (saved or not) goes out once through the executor's own HTTP client, so the SSRF guard, the
//! signature headers and the success criteria are the ones a run gets, and the outcome comes
//! back to be shown.
//!
//! A test request is not a run: it has no place in a schedule, so it leaves the job's state,
//! its alerts and the plan's monthly runs alone. What bounds it is a small per-person budget
//! ([`PER_MINUTE`]), since each one makes us call someone's server, and a log line naming who
//! sent what where.

use cronbox_domain::request::RequestSpec;
use cronbox_domain::run::AttemptOutcome;
use cronbox_domain::workspace::Role;
use uuid::Uuid;

use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use crate::rate_limit::Subject;
use crate::AppState;

/// Test requests one person (or API key) may send per minute in one workspace.
pub const PER_MINUTE: u32 = 10;

/// The longest a test request may take, whatever the job's timeout: someone is waiting for it.
pub const MAX_SECONDS: u32 = 30;

/// Sends `spec` once, signed with the workspace's secrets, and returns what happened. Only
/// members may; over the budget it is refused with 429.
pub async fn send(state: &AppState, caller: &Caller, mut spec: RequestSpec) -> Result<AttemptOutcome, ApiError> {
    caller.require(Role::Member)?;
    let who = match caller.principal {
        Principal::User(u) | Principal::ApiKey(u) => u,
    };
    if let Some(q) = state
        .limiter
        .hit(&Subject::Probe(who, caller.workspace_id), PER_MINUTE)
        .await
    {
        if !q.allowed {
            return Err(ApiError::TooManyRequests {
                retry_after: u64::from(q.reset.max(1)),
            });
        }
    }
    spec.timeout_seconds = spec.timeout_seconds.clamp(1, MAX_SECONDS);
    let secrets = state
        .keyring
        .signing(caller.workspace_id)
        .await
        .map_err(ApiError::internal)?;
    let id = Uuid::new_v4();
    // `webhook-id` says it is a test, so a receiver that deduplicates on it never confuses it
    // with a run.
    let outcome = state.probe.call(&spec, id, 1, &format!("test.{id}"), &secrets).await;
    tracing::info!(
        workspace_id = %caller.workspace_id,
        by = %who,
        test_id = %id,
        method = spec.method.as_str(),
        host = url::Url::parse(&spec.url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default(),
        status_code = outcome.status_code,
        error_kind = outcome.error_kind.map(|k| k.as_str()),
        duration_ms = outcome.duration_ms,
        "test request sent"
    );
    Ok(outcome)
}
