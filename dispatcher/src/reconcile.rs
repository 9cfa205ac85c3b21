//! Finds runs PostgreSQL says are in flight but JetStream no longer holds, and publishes them
//! again.
//!
//! PostgreSQL is the record; JetStream only carries work. A message can vanish after the server
//! acknowledged it: nats-server fsyncs lazily, so a power failure can lose acknowledged writes;
//! an operator can wipe a store. The run then stays `dispatched` (or `running`, if its executor
//! died too) for ever unless someone notices. The leader looks every few seconds for runs
//! dispatched longer than `after` ago that have not started, or running past their executor's
//! lease by `after`, and for each one whose message is no longer in the stream, publishes it
//! again. The run id is kept; the executor checks the run's history and lease before calling, so
//! a copy that races a surviving original does not call twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cronbox_domain::run::Work;
use cronbox_domain::run::{RunCommand, RunStatus, LEASE_MARGIN_SECONDS};
use cronbox_nats::{DispatchMessage, RunQueue};
use cronbox_store::aggregates::Stores;
use sqlx::PgPool;
use uuid::Uuid;

use crate::DispatchError;

/// Where the next round of candidates starts: rounds walk through all candidates in
/// (dispatched_at, id) order and start over at the end, so a backlog of runs that are merely
/// waiting in the stream (executors down, say) cannot hide a lost one behind it for ever.
#[derive(Debug, Clone, Copy, Default)]
pub struct Position(Option<(DateTime<Utc>, Uuid)>);

/// Publishes lost runs again, looking at up to `batch` candidates after `from`; returns how
/// many it published.
pub async fn reconcile(
    pool: &PgPool,
    stores: &Stores,
    queue: &RunQueue,
    after: Duration,
    now: DateTime<Utc>,
    (from, batch): (&mut Position, i64),
) -> Result<usize, DispatchError> {
    let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::seconds(60));
    let (from_t, from_id) = from.0.unzip();
    let candidates: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, coalesce(dispatched_at, created_at) FROM runs
          WHERE ((status = 'dispatched' AND dispatched_at < $1)
                 OR (status = 'running' AND started_at < $1
                     - make_interval(secs => coalesce((request->>'timeout_seconds')::float8, 300) + $2))
                 OR (callback_status IN ('pending', 'retrying') AND coalesce(callback_next_at, finished_at) < $1))
            AND ($4::timestamptz IS NULL OR (coalesce(dispatched_at, created_at), id) > ($4, $5))
          ORDER BY coalesce(dispatched_at, created_at), id
          LIMIT $3",
    )
    .bind(now - after)
    .bind(LEASE_MARGIN_SECONDS as f64)
    .bind(batch)
    .bind(from_t)
    .bind(from_id)
    .fetch_all(pool)
    .await?;
    // A short round reached the end: the next one starts from the beginning.
    *from = match candidates.last() {
        Some((id, t)) if candidates.len() as i64 == batch => Position(Some((*t, *id))),
        _ => Position(None),
    };
    if candidates.is_empty() {
        return Ok(0);
    }
    if let Err(e) = queue.ensure_stream().await {
        tracing::warn!(error = %e, "JetStream unavailable; reconciling later");
        return Ok(0);
    }
    let mut republished = 0;
    for (run_id, _) in candidates {
        // The read model may lag: the run's own stream decides.
        let (run, _) = stores
            .runs
            .load(&run_id.to_string())
            .await
            .map_err(|e| DispatchError::Run(e.to_string()))?;
        let Some(plan) = run.plan.as_ref() else { continue };
        let (stuck, kind, attempt) = match run.status {
            RunStatus::Dispatched => (true, Work::Attempt, run.attempt),
            RunStatus::Running => (
                run.lease_until().is_some_and(|u| u + after < now),
                Work::Attempt,
                run.attempt,
            ),
            // A callback try handed to an executor that never reported back.
            RunStatus::Succeeded | RunStatus::Failed if run.pending_callback().is_some() => {
                if !run.callback.timed {
                    // Recorded before callbacks had timers, and its message (which carried the
                    // callback) is gone: onto the dispatcher's timers with it.
                    adopt_legacy_callback(stores, run_id, now).await;
                    continue;
                }
                match run.callback.in_flight {
                    Some((attempt, at)) => (at + after < now, Work::Callback, attempt),
                    None => (false, Work::Callback, 0),
                }
            }
            _ => (false, Work::Attempt, 0),
        };
        if !stuck {
            continue;
        }
        match queue.is_queued(run_id).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot look into the stream; reconciling later");
                return Ok(republished);
            }
        }
        let message = DispatchMessage {
            run_id,
            attempt,
            workspace_id: plan.workspace_id,
            job_id: plan.job_id,
            due_at: now,
            kind,
        };
        match queue.republish(&message).await {
            Ok(()) => {
                republished += 1;
                tracing::warn!(%run_id, attempt, kind = kind.as_str(), status = ?run.status, "run lost by JetStream; published again");
            }
            Err(e) => {
                tracing::warn!(%run_id, error = %e, "re-publish failed; reconciling later");
                return Ok(republished);
            }
        }
    }
    Ok(republished)
}

/// Puts a callback recorded before callbacks had timers onto the dispatcher's timers.
async fn adopt_legacy_callback(stores: &Stores, run_id: Uuid, now: DateTime<Utc>) {
    match stores
        .runs
        .execute(&run_id.to_string(), RunCommand::ScheduleCallback { at: now })
        .await
    {
        Ok(()) => tracing::info!(%run_id, "callback moved onto the dispatcher's timers"),
        Err(e) => tracing::debug!(%run_id, error = %e, "callback not moved"),
    }
}
