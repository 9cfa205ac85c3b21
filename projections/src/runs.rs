//! The execution log: `runs` (one row per run, its latest state) and `run_attempts`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cronbox_domain::policy::SkipReason;
use cronbox_domain::run::RunEvent;
use cronbox_store::tail::StoredEvent;
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{ApplyFuture, Projection, ProjectionError};

pub struct RunsProjection;

impl Projection for RunsProjection {
    fn name(&self) -> &'static str {
        "runs"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["runs", "run_attempts"]
    }
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, ev: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if ev.aggregate_type != "Run" {
                return Ok(());
            }
            let event: RunEvent =
                serde::Deserialize::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
            let id = Uuid::parse_str(&ev.aggregate_id)
                .map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))?;
            apply(tx, id, event).await
        })
    }
    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut group = Group::None;
            for ev in events {
                if ev.aggregate_type != "Run" {
                    continue;
                }
                let event: RunEvent =
                    serde::Deserialize::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
                let id = Uuid::parse_str(&ev.aggregate_id)
                    .map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))?;
                // Runs of the three most common steps are written together: new runs (with the
                // dispatch that follows each, as the dispatcher records them), attempt starts and
                // attempt outcomes (as the executor's group commits record them). Anything else
                // first writes what is pending, then applies itself, so the order of the log
                // holds.
                group = match (group, event) {
                    (Group::New(mut rows), RunEvent::RunScheduled { plan, at, .. })
                        if !rows.iter().any(|r| r.id == id) =>
                    {
                        rows.push(NewRun::of(id, plan, at));
                        Group::New(rows)
                    }
                    (Group::New(mut rows), RunEvent::RunDispatched { attempt, at })
                        if rows.last().is_some_and(|r| r.id == id && r.dispatched.is_none()) =>
                    {
                        if let Some(r) = rows.last_mut() {
                            r.dispatched = Some((attempt, at));
                        }
                        Group::New(rows)
                    }
                    (Group::Started(mut rows), RunEvent::AttemptStarted { attempt, at })
                        if !rows.iter().any(|r| r.0 == id) =>
                    {
                        rows.push((id, attempt, at));
                        Group::Started(rows)
                    }
                    // An attempt's outcome and, when it settles the run, the RunSucceeded the
                    // executor appends right after it.
                    (Group::Finished(mut rows), RunEvent::AttemptFinished { attempt, outcome, at })
                        if !rows.iter().any(|r| r.id == id) =>
                    {
                        rows.push(Finished::of(id, attempt, outcome, at));
                        Group::Finished(rows)
                    }
                    (Group::Finished(mut rows), RunEvent::RunSucceeded { at, .. })
                        if rows.last().is_some_and(|r| r.id == id && r.settled()) =>
                    {
                        if let Some(r) = rows.last_mut() {
                            r.succeeded = Some(at);
                        }
                        Group::Finished(rows)
                    }
                    // Likewise the RunFailed after a last attempt (a burst of failing calls).
                    (Group::Finished(mut rows), RunEvent::RunFailed { error_kind, at, .. })
                        if rows.last().is_some_and(|r| r.id == id && r.settled()) =>
                    {
                        if let Some(r) = rows.last_mut() {
                            r.failed = Some((at, error_kind.as_str()));
                        }
                        Group::Finished(rows)
                    }
                    (g, RunEvent::AttemptFinished { attempt, outcome, at }) => {
                        g.flush(tx).await?;
                        Group::Finished(vec![Finished::of(id, attempt, outcome, at)])
                    }
                    (g, RunEvent::RunScheduled { plan, at, .. }) => {
                        g.flush(tx).await?;
                        Group::New(vec![NewRun::of(id, plan, at)])
                    }
                    (g, RunEvent::AttemptStarted { attempt, at }) => {
                        g.flush(tx).await?;
                        Group::Started(vec![(id, attempt, at)])
                    }
                    (g, other) => {
                        g.flush(tx).await?;
                        apply(tx, id, other).await?;
                        Group::None
                    }
                };
            }
            group.flush(tx).await
        })
    }
}

/// A run's row as `RunScheduled` (and the `RunDispatched` right after it) make it.
struct NewRun {
    id: Uuid,
    plan: cronbox_domain::run::RunPlan,
    at: DateTime<Utc>,
    dispatched: Option<(u32, DateTime<Utc>)>,
}

impl NewRun {
    fn of(id: Uuid, plan: cronbox_domain::run::RunPlan, at: DateTime<Utc>) -> Self {
        Self {
            id,
            plan,
            at,
            dispatched: None,
        }
    }
}

/// Consecutive events of one kind, waiting to be written with one statement.
enum Group {
    None,
    New(Vec<NewRun>),
    /// (run, attempt, at) of `AttemptStarted`.
    Started(Vec<(Uuid, u32, DateTime<Utc>)>),
    Finished(Vec<Finished>),
}

impl Group {
    async fn flush(self, tx: &mut PgConnection) -> Result<(), ProjectionError> {
        match self {
            Group::None => Ok(()),
            Group::New(rows) => insert_runs(tx, rows).await,
            Group::Started(rows) => start_attempts(tx, rows).await,
            Group::Finished(rows) => finish_attempts(tx, rows).await,
        }
    }
}

/// An `AttemptFinished`, and the `RunSucceeded` or `RunFailed` that followed it if one did.
struct Finished {
    id: Uuid,
    attempt: u32,
    outcome: cronbox_domain::run::AttemptOutcome,
    at: DateTime<Utc>,
    succeeded: Option<DateTime<Utc>>,
    /// When the run failed, and the error it failed with.
    failed: Option<(DateTime<Utc>, &'static str)>,
}

impl Finished {
    fn of(id: Uuid, attempt: u32, outcome: cronbox_domain::run::AttemptOutcome, at: DateTime<Utc>) -> Self {
        Self {
            id,
            attempt,
            outcome: outcome.storable(),
            at,
            succeeded: None,
            failed: None,
        }
    }

    /// Whether no run outcome has joined the attempt yet.
    fn settled(&self) -> bool {
        self.succeeded.is_none() && self.failed.is_none()
    }
}

/// Why CronBox stopped a run, in words.
fn stop_text(reason: cronbox_domain::policy::StopReason) -> &'static str {
    use cronbox_domain::policy::StopReason::*;
    match reason {
        WorkspaceDeleted => "the workspace was deleted",
        JobPaused => "the job was paused",
        JobDeleted => "the job was deleted",
    }
}

/// The last response as the execution log shows it.
fn response_json(outcome: &cronbox_domain::run::AttemptOutcome) -> serde_json::Value {
    json!({
        "status_code": outcome.status_code,
        "headers": outcome.response_headers,
        "body": outcome.response_body,
        "encoding": outcome.response_body_encoding.as_str(),
        "size": outcome.response_size,
    })
}

/// The same rows `AttemptFinished` (then `RunSucceeded`, where one followed) write one by one
/// (each run at most once per group).
async fn finish_attempts(tx: &mut PgConnection, rows: Vec<Finished>) -> Result<(), ProjectionError> {
    let n = rows.len();
    let (mut ids, mut attempts, mut codes, mut durations, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut messages, mut responses, mut outcomes, mut ats, mut succeeded) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut failed_at, mut failed_kind) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r in &rows {
        ids.push(r.id);
        attempts.push(r.attempt as i32);
        codes.push(r.outcome.status_code.map(i32::from));
        durations.push(r.outcome.duration_ms as i64);
        kinds.push(r.outcome.failure_kind().map(|k| k.as_str()));
        messages.push(r.outcome.error_message.clone());
        responses.push(response_json(&r.outcome).to_string());
        outcomes.push(serde_json::to_string(&r.outcome).map_err(cronbox_store::StoreError::from)?);
        ats.push(r.at);
        succeeded.push(r.succeeded);
        failed_at.push(r.failed.map(|(at, _)| at));
        failed_kind.push(r.failed.map(|(_, kind)| kind));
    }
    sqlx::query(
        "UPDATE runs SET attempts = x.a, status_code = x.sc, duration_ms = x.d,
                error_type = CASE WHEN x.ok IS NOT NULL THEN NULL WHEN x.fat IS NOT NULL THEN x.fk ELSE x.et END,
                error_message = x.em, response = x.resp::jsonb,
                status = CASE WHEN x.ok IS NOT NULL THEN 'succeeded' WHEN x.fat IS NOT NULL THEN 'failed'
                              ELSE runs.status END,
                finished_at = CASE WHEN x.ok IS NOT NULL THEN x.ok WHEN x.fat IS NOT NULL THEN x.fat
                                   ELSE runs.finished_at END,
                callback_status = CASE WHEN x.ok IS NULL AND x.fat IS NULL THEN runs.callback_status
                                       WHEN runs.callback_url IS NULL THEN NULL ELSE 'pending' END
           FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::int8[], $5::text[], $6::text[], $7::text[],
                       $8::timestamptz[], $9::timestamptz[], $10::text[])
                AS x(id, a, sc, d, et, em, resp, ok, fat, fk)
          WHERE runs.id = x.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&codes)
    .bind(&durations)
    .bind(&kinds)
    .bind(&messages)
    .bind(&responses)
    .bind(&succeeded)
    .bind(&failed_at)
    .bind(&failed_kind)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO run_attempts (run_id, attempt, workspace_id, finished_at, outcome)
         SELECT x.id, x.a, r.workspace_id, x.at, x.o::jsonb
           FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[], $4::text[]) WITH ORDINALITY AS x(id, a, at, o, n)
           JOIN runs r ON r.id = x.id
          ORDER BY x.n
         ON CONFLICT (run_id, attempt) DO UPDATE SET finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&ats)
    .bind(&outcomes)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The same rows `RunScheduled` then `RunDispatched` write one by one.
async fn insert_runs(tx: &mut PgConnection, rows: Vec<NewRun>) -> Result<(), ProjectionError> {
    let n = rows.len();
    let (mut ids, mut wss, mut jobs, mut triggers, mut statuses) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut scheduled, mut requests, mut created, mut callbacks, mut dispatched_at, mut attempts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut reruns = Vec::with_capacity(n);
    for r in &rows {
        ids.push(r.id);
        wss.push(r.plan.workspace_id);
        jobs.push(r.plan.job_id);
        triggers.push(r.plan.trigger.as_str());
        statuses.push(if r.dispatched.is_some() {
            "dispatched"
        } else {
            "scheduled"
        });
        scheduled.push(r.plan.scheduled_for);
        requests.push(serde_json::to_string(&r.plan.request).map_err(cronbox_store::StoreError::from)?);
        created.push(r.at);
        callbacks.push(r.plan.callback_url.clone());
        reruns.push(r.plan.rerun_of);
        dispatched_at.push(r.dispatched.map(|(_, at)| at));
        // As `attempts = greatest(attempts, attempt - 1)` on a new row (attempts 0).
        attempts.push(r.dispatched.map_or(0, |(a, _)| (a as i32 - 1).max(0)));
    }
    sqlx::query(
        "INSERT INTO runs (id, workspace_id, job_id, trigger, status, scheduled_for, request, created_at, callback_url,
                           dispatched_at, attempts, rerun_of)
         SELECT id, ws, job, trig, st, sched, req::jsonb, created, cb, disp, att, rerun
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
                       $8::timestamptz[], $9::text[], $10::timestamptz[], $11::int4[], $12::uuid[])
                WITH ORDINALITY AS x(id, ws, job, trig, st, sched, req, created, cb, disp, att, rerun, n)
          ORDER BY n
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&wss)
    .bind(&jobs)
    .bind(&triggers)
    .bind(&statuses)
    .bind(&scheduled)
    .bind(&requests)
    .bind(&created)
    .bind(&callbacks)
    .bind(&dispatched_at)
    .bind(&attempts)
    .bind(&reruns)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The same rows `AttemptStarted` writes one by one (each run at most once per group).
async fn start_attempts(tx: &mut PgConnection, rows: Vec<(Uuid, u32, DateTime<Utc>)>) -> Result<(), ProjectionError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.1 as i32).collect();
    let ats: Vec<DateTime<Utc>> = rows.iter().map(|r| r.2).collect();
    sqlx::query(
        "UPDATE runs SET status = 'running', started_at = coalesce(runs.started_at, x.at)
           FROM unnest($1::uuid[], $2::timestamptz[]) AS x(id, at)
          WHERE runs.id = x.id",
    )
    .bind(&ids)
    .bind(&ats)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO run_attempts (run_id, attempt, workspace_id, started_at)
         SELECT x.id, x.a, r.workspace_id, x.at
           FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[]) WITH ORDINALITY AS x(id, a, at, n)
           JOIN runs r ON r.id = x.id
          ORDER BY x.n
         ON CONFLICT (run_id, attempt) DO UPDATE SET started_at = EXCLUDED.started_at",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&ats)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply(tx: &mut PgConnection, id: Uuid, event: RunEvent) -> Result<(), ProjectionError> {
    match event {
        RunEvent::RunScheduled { plan, at, .. } => {
            sqlx::query(
                "INSERT INTO runs (id, workspace_id, job_id, trigger, status, scheduled_for, request, created_at, callback_url,
                                   rerun_of)
                 VALUES ($1, $2, $3, $4, 'scheduled', $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(plan.workspace_id)
            .bind(plan.job_id)
            .bind(plan.trigger.as_str())
            .bind(plan.scheduled_for)
            .bind(Json(&plan.request))
            .bind(at)
            .bind(&plan.callback_url)
            .bind(plan.rerun_of)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RunSkipped {
            workspace_id,
            job_id,
            first_skipped,
            last_skipped,
            skipped_count,
            reason,
            at,
            ..
        } => {
            let message = match reason {
                SkipReason::Missed => format!("{skipped_count} fire(s) from {first_skipped} to {last_skipped} were missed: no dispatcher was running, or it was more than the grace window late"),
                SkipReason::Overlap => format!("{skipped_count} fire(s) from {first_skipped} to {last_skipped} were skipped: the previous run was still going (overlap_policy skip)"),
            };
            sqlx::query(
                "INSERT INTO runs (id, workspace_id, job_id, trigger, status, scheduled_for, finished_at, skipped_count,
                                   error_type, error_message, created_at)
                 VALUES ($1, $2, $3, 'schedule', 'skipped', $4, $5, $6, $8, $7, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(workspace_id)
            .bind(job_id)
            .bind(first_skipped)
            .bind(at)
            .bind(skipped_count as i64)
            .bind(message)
            .bind(reason.as_str())
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RunDispatched { attempt, at } => {
            sqlx::query("UPDATE runs SET status = 'dispatched', dispatched_at = $2, retry_at = NULL, attempts = greatest(attempts, $3 - 1) WHERE id = $1")
                .bind(id)
                .bind(at)
                .bind(attempt as i32)
                .execute(&mut *tx)
                .await?;
        }
        RunEvent::AttemptStarted { attempt, at } => {
            sqlx::query("UPDATE runs SET status = 'running', started_at = coalesce(started_at, $2) WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO run_attempts (run_id, attempt, workspace_id, started_at)
                 SELECT $1, $2, workspace_id, $3 FROM runs WHERE id = $1
                 ON CONFLICT (run_id, attempt) DO UPDATE SET started_at = $3",
            )
            .bind(id)
            .bind(attempt as i32)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::AttemptFinished { attempt, outcome, at } => {
            let outcome = outcome.storable();
            let response = response_json(&outcome);
            sqlx::query(
                "UPDATE runs SET attempts = $2, status_code = $3, duration_ms = $4, error_type = $5, error_message = $6,
                                 response = $7
                  WHERE id = $1",
            )
            .bind(id)
            .bind(attempt as i32)
            .bind(outcome.status_code.map(i32::from))
            .bind(outcome.duration_ms as i64)
            .bind(outcome.failure_kind().map(|k| k.as_str()))
            .bind(&outcome.error_message)
            .bind(Json(&response))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO run_attempts (run_id, attempt, workspace_id, finished_at, outcome)
                 SELECT $1, $2, workspace_id, $3, $4 FROM runs WHERE id = $1
                 ON CONFLICT (run_id, attempt) DO UPDATE SET finished_at = $3, outcome = $4",
            )
            .bind(id)
            .bind(attempt as i32)
            .bind(at)
            .bind(Json(&outcome))
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RetryScheduled { retry_at, .. } => {
            sqlx::query("UPDATE runs SET status = 'retry_scheduled', retry_at = $2 WHERE id = $1")
                .bind(id)
                .bind(retry_at)
                .execute(&mut *tx)
                .await?;
        }
        RunEvent::CallbackAttempted {
            attempt,
            outcome,
            next_at,
            ..
        } => {
            let outcome = outcome.storable();
            let error = (!outcome.is_success()).then(|| {
                outcome
                    .error_message
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {}", outcome.status_code.unwrap_or_default()))
            });
            sqlx::query(
                "UPDATE runs SET callback_status = CASE WHEN $3::timestamptz IS NULL THEN callback_status ELSE 'retrying' END,
                        callback_attempts = $2, callback_error = $4, callback_next_at = $3
                  WHERE id = $1",
            )
            .bind(id)
            .bind(attempt as i32)
            .bind(next_at)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RunCancelled { reason, at, .. } => {
            sqlx::query(
                "UPDATE runs SET status = 'cancelled', finished_at = $2, retry_at = NULL, error_type = $3, error_message = $4
                  WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(reason.as_str())
            .bind(format!("cancelled before it ran: {}", stop_text(reason)))
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::CallbackScheduled { attempt, due_at, .. } => {
            sqlx::query(
                "UPDATE runs SET callback_status = CASE WHEN $2 = 1 THEN 'pending' ELSE 'retrying' END, callback_next_at = $3
                  WHERE id = $1",
            )
            .bind(id)
            .bind(attempt as i32)
            .bind(due_at)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::CallbackDispatched { .. } => {}
        RunEvent::CallbackCancelled { reason, .. } => {
            sqlx::query(
                "UPDATE runs SET callback_status = 'cancelled', callback_next_at = NULL, callback_error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(format!("not delivered: {}", stop_text(reason)))
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::CallbackDelivered { .. } => {
            sqlx::query("UPDATE runs SET callback_status = 'delivered', callback_next_at = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        RunEvent::CallbackFailed { .. } => {
            sqlx::query("UPDATE runs SET callback_status = 'failed', callback_next_at = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        RunEvent::RunSucceeded { at, .. } => {
            sqlx::query(
                "UPDATE runs SET status = 'succeeded', finished_at = $2, error_type = NULL,
                        callback_status = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END
                  WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RunFailed { error_kind, at, .. } => {
            sqlx::query(
                "UPDATE runs SET status = 'failed', finished_at = $2, error_type = $3,
                        callback_status = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END
                  WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(error_kind.as_str())
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}
