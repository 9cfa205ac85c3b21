//! The `jobs` read model: what the job list and job pages show.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cronbox_domain::job::{JobDefinition, JobEvent, JobKind};
use cronbox_domain::run::{RunEvent, Trigger};
use cronbox_domain::schedule::CronSchedule;
use cronbox_store::tail::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{ApplyFuture, Projection, ProjectionError};

pub struct JobsProjection;

impl Projection for JobsProjection {
    fn name(&self) -> &'static str {
        "jobs"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["jobs"]
    }
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, ev: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            match ev.aggregate_type.as_str() {
                "Job" => {
                    let event: JobEvent =
                        serde::Deserialize::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
                    apply_job(tx, ev, event).await
                }
                "Run" => {
                    let event: RunEvent =
                        serde::Deserialize::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
                    apply_run(tx, event).await
                }
                _ => Ok(()),
            }
        })
    }
    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(async move {
            // Runs of the commonest events are written with one statement each: new jobs (a
            // batch create, a busy API), delayed calls starting, runs succeeding. Events this
            // projection ignores do not break a run; anything else writes what is pending first,
            // so the log's order holds.
            let mut pending = Pending::None;
            for ev in events {
                if ev.aggregate_type == "Job" {
                    let event: JobEvent =
                        serde::Deserialize::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
                    pending = match (pending, event) {
                        (
                            Pending::Created(mut rows),
                            JobEvent::JobCreated {
                                workspace_id,
                                definition,
                                at,
                                ..
                            },
                        ) => {
                            rows.push((job_id(ev)?, workspace_id, definition, at));
                            Pending::Created(rows)
                        }
                        (
                            p,
                            JobEvent::JobCreated {
                                workspace_id,
                                definition,
                                at,
                                ..
                            },
                        ) => {
                            p.flush(tx).await?;
                            Pending::Created(vec![(job_id(ev)?, workspace_id, definition, at)])
                        }
                        (p, event) => {
                            p.flush(tx).await?;
                            apply_job(tx, ev, event).await?;
                            Pending::None
                        }
                    };
                } else if ev.aggregate_type == "Run" {
                    let event: RunEvent =
                        serde::Deserialize::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
                    pending = match (pending, event) {
                        (
                            p,
                            RunEvent::RunDispatched { .. }
                            | RunEvent::AttemptStarted { .. }
                            | RunEvent::AttemptFinished { .. }
                            | RunEvent::RetryScheduled { .. }
                            | RunEvent::CallbackAttempted { .. }
                            | RunEvent::CallbackDelivered { .. }
                            | RunEvent::CallbackFailed { .. },
                        ) => p,
                        (Pending::Started(mut rows), RunEvent::RunScheduled { run_id, plan, .. })
                            if plan.trigger == Trigger::Delayed && !rows.iter().any(|r| r.0 == plan.job_id) =>
                        {
                            rows.push((plan.job_id, run_id));
                            Pending::Started(rows)
                        }
                        (p, RunEvent::RunScheduled { run_id, plan, .. }) if plan.trigger == Trigger::Delayed => {
                            p.flush(tx).await?;
                            Pending::Started(vec![(plan.job_id, run_id)])
                        }
                        (Pending::Ended(mut rows), RunEvent::RunSucceeded { job_id, at, .. })
                            if !rows.iter().any(|r| r.0 == job_id) =>
                        {
                            rows.push((job_id, at, true));
                            Pending::Ended(rows)
                        }
                        (Pending::Ended(mut rows), RunEvent::RunFailed { job_id, at, .. })
                            if !rows.iter().any(|r| r.0 == job_id) =>
                        {
                            rows.push((job_id, at, false));
                            Pending::Ended(rows)
                        }
                        (p, RunEvent::RunSucceeded { job_id, at, .. }) => {
                            p.flush(tx).await?;
                            Pending::Ended(vec![(job_id, at, true)])
                        }
                        (p, RunEvent::RunFailed { job_id, at, .. }) => {
                            p.flush(tx).await?;
                            Pending::Ended(vec![(job_id, at, false)])
                        }
                        (p, event) => {
                            p.flush(tx).await?;
                            apply_run(tx, event).await?;
                            Pending::None
                        }
                    };
                }
            }
            pending.flush(tx).await
        })
    }
}

/// Consecutive events of one kind, waiting to be written with one statement.
enum Pending {
    None,
    Created(Vec<(Uuid, Uuid, JobDefinition, DateTime<Utc>)>),
    /// (job, run) of delayed calls whose run was recorded.
    Started(Vec<(Uuid, Uuid)>),
    /// (job, at, succeeded) of runs that ended.
    Ended(Vec<(Uuid, DateTime<Utc>, bool)>),
}

impl Pending {
    async fn flush(self, tx: &mut PgConnection) -> Result<(), ProjectionError> {
        match self {
            Pending::None => {}
            Pending::Created(rows) => insert_created(tx, rows).await?,
            Pending::Started(rows) => {
                let (jobs, runs): (Vec<Uuid>, Vec<Uuid>) = rows.into_iter().unzip();
                sqlx::query(
                    "UPDATE jobs SET status = 'running', next_run_at = NULL, last_run_id = x.run
                       FROM unnest($1::uuid[], $2::uuid[]) AS x(job, run)
                      WHERE jobs.id = x.job AND jobs.status = 'pending'",
                )
                .bind(&jobs)
                .bind(&runs)
                .execute(&mut *tx)
                .await?;
            }
            Pending::Ended(rows) => {
                let (mut jobs, mut ats, mut oks) = (Vec::new(), Vec::new(), Vec::new());
                for (job, at, ok) in rows {
                    jobs.push(job);
                    ats.push(at);
                    oks.push(ok);
                }
                // What RunSucceeded and RunFailed write one by one (see `apply_run`).
                sqlx::query(
                    "UPDATE jobs SET last_run_at = x.at,
                                     last_status = CASE WHEN x.ok THEN 'succeeded' ELSE 'failed' END,
                                     consecutive_failures = CASE WHEN x.ok THEN 0 ELSE consecutive_failures + 1 END,
                                     status = CASE WHEN kind = 'delayed' AND status = 'running'
                                                   THEN CASE WHEN x.ok THEN 'succeeded' ELSE 'failed' END
                                                   ELSE status END
                       FROM unnest($1::uuid[], $2::timestamptz[], $3::bool[]) AS x(job, at, ok)
                      WHERE jobs.id = x.job",
                )
                .bind(&jobs)
                .bind(&ats)
                .bind(&oks)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}

/// Rows for new jobs, in order (a repeated id keeps its first row, as one-by-one inserts with
/// `DO NOTHING` would).
async fn insert_created(
    tx: &mut PgConnection,
    created: Vec<(Uuid, Uuid, JobDefinition, DateTime<Utc>)>,
) -> Result<(), ProjectionError> {
    if created.is_empty() {
        return Ok(());
    }
    let n = created.len();
    let (mut ids, mut wss, mut kinds, mut names, mut descriptions, mut tags) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut statuses, mut defs, mut schedules, mut zones, mut executes, mut ats, mut nexts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, ws, d, at) in &created {
        let (kind, status, schedule, timezone, execute_at, next) = shape(d, *at);
        ids.push(*id);
        wss.push(*ws);
        kinds.push(kind);
        names.push(d.name.as_str());
        descriptions.push(d.description.as_str());
        // Postgres arrays of arrays must be rectangular: tags travel as JSON.
        tags.push(serde_json::to_string(&d.tags).map_err(cronbox_store::StoreError::from)?);
        statuses.push(status);
        defs.push(serde_json::to_string(d).map_err(cronbox_store::StoreError::from)?);
        schedules.push(schedule.map(str::to_string));
        zones.push(timezone.map(str::to_string));
        executes.push(execute_at);
        ats.push(*at);
        nexts.push(next);
    }
    sqlx::query(
        "INSERT INTO jobs (id, workspace_id, kind, name, description, tags, status, definition, schedule, timezone,
                           execute_at, anchor_at, next_run_at, created_at, updated_at)
         SELECT id, ws, kind, name, descr, ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), status, def::jsonb,
                sched, tz, exec, at, nxt, at, at
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                       $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[])
                WITH ORDINALITY AS x(id, ws, kind, name, descr, tags, status, def, sched, tz, exec, at, nxt, n)
          ORDER BY n
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&wss)
    .bind(&kinds)
    .bind(&names)
    .bind(&descriptions)
    .bind(&tags)
    .bind(&statuses)
    .bind(&defs)
    .bind(&schedules)
    .bind(&zones)
    .bind(&executes)
    .bind(&ats)
    .bind(&nexts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The next fire strictly after `anchor`, for an active cron job.
pub fn next_cron_fire(schedule: &str, timezone: &str, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
    CronSchedule::parse_stored(schedule, timezone).ok()?.next_after(anchor)
}

fn job_id(ev: &StoredEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&ev.aggregate_id).map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))
}

async fn apply_job(tx: &mut PgConnection, ev: &StoredEvent, event: JobEvent) -> Result<(), ProjectionError> {
    let id = job_id(ev)?;
    match event {
        JobEvent::JobCreated {
            workspace_id,
            definition,
            at,
            ..
        } => {
            let (kind, status, schedule, timezone, execute_at, next) = shape(&definition, at);
            sqlx::query(
                "INSERT INTO jobs (id, workspace_id, kind, name, description, tags, status, definition, schedule, timezone,
                                   execute_at, anchor_at, next_run_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12, $12)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(workspace_id)
            .bind(kind)
            .bind(&definition.name)
            .bind(&definition.description)
            .bind(&definition.tags)
            .bind(status)
            .bind(sqlx::types::Json(&definition))
            .bind(schedule)
            .bind(timezone)
            .bind(execute_at)
            .bind(at)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        }
        JobEvent::JobUpdated { definition, at } => {
            let (_, _, schedule, timezone, execute_at, _) = shape(&definition, at);
            sqlx::query(
                "UPDATE jobs SET name = $2, description = $3, tags = $4, definition = $5, schedule = $6, timezone = $7,
                                 execute_at = $8, anchor_at = greatest(anchor_at, $9), updated_at = $9
                  WHERE id = $1",
            )
            .bind(id)
            .bind(&definition.name)
            .bind(&definition.description)
            .bind(&definition.tags)
            .bind(sqlx::types::Json(&definition))
            .bind(schedule)
            .bind(timezone)
            .bind(execute_at)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            refresh_next(tx, id).await?;
        }
        JobEvent::JobPaused { at } => {
            sqlx::query("UPDATE jobs SET status = 'paused', next_run_at = NULL, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        JobEvent::JobResumed { at } => {
            sqlx::query(
                "UPDATE jobs SET status = 'active', anchor_at = greatest(anchor_at, $2), updated_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            refresh_next(tx, id).await?;
        }
        JobEvent::JobDeleted { at, .. } => {
            sqlx::query(
                "UPDATE jobs SET status = CASE kind WHEN 'cron' THEN 'deleted' ELSE 'cancelled' END,
                                 next_run_at = NULL, updated_at = $2
                  WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        JobEvent::RunRequested { .. } => {}
    }
    Ok(())
}

/// (kind, initial status, schedule, timezone, execute_at, next_run_at)
#[allow(clippy::type_complexity)]
fn shape(
    d: &JobDefinition,
    at: DateTime<Utc>,
) -> (
    &'static str,
    &'static str,
    Option<&str>,
    Option<&str>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
) {
    match &d.kind {
        JobKind::Cron { schedule, timezone } => (
            "cron",
            "active",
            Some(schedule),
            Some(timezone),
            None,
            next_cron_fire(schedule, timezone, at),
        ),
        JobKind::Delayed { execute_at, .. } => ("delayed", "pending", None, None, Some(*execute_at), Some(*execute_at)),
    }
}

/// (status, schedule, timezone, anchor_at) of a cron job.
type CronRow = (String, Option<String>, Option<String>, Option<DateTime<Utc>>);

/// Recomputes `next_run_at` of a cron job from its anchor (never from the clock).
async fn refresh_next(tx: &mut PgConnection, id: Uuid) -> Result<(), ProjectionError> {
    let row: Option<CronRow> =
        sqlx::query_as("SELECT status, schedule, timezone, anchor_at FROM jobs WHERE id = $1 AND kind = 'cron'")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((status, Some(schedule), Some(timezone), Some(anchor))) = row else {
        return Ok(());
    };
    let next = if status == "active" {
        next_cron_fire(&schedule, &timezone, anchor)
    } else {
        None
    };
    sqlx::query("UPDATE jobs SET next_run_at = $2 WHERE id = $1")
        .bind(id)
        .bind(next)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn apply_run(tx: &mut PgConnection, event: RunEvent) -> Result<(), ProjectionError> {
    match event {
        RunEvent::CallbackAttempted { .. }
        | RunEvent::CallbackDelivered { .. }
        | RunEvent::CallbackFailed { .. }
        | RunEvent::CallbackScheduled { .. }
        | RunEvent::CallbackDispatched { .. }
        | RunEvent::CallbackCancelled { .. } => {}
        // A delayed call whose retry was stopped ends there.
        RunEvent::RunCancelled { job_id, at, .. } => {
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', updated_at = greatest(updated_at, $2)
                  WHERE id = $1 AND kind = 'delayed' AND status IN ('pending', 'running')",
            )
            .bind(job_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RunScheduled { run_id, plan, .. } => match plan.trigger {
            Trigger::Schedule => {
                sqlx::query("UPDATE jobs SET anchor_at = greatest(anchor_at, $2), last_run_id = $3 WHERE id = $1")
                    .bind(plan.job_id)
                    .bind(plan.scheduled_for)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                refresh_next(tx, plan.job_id).await?;
            }
            Trigger::Delayed => {
                sqlx::query("UPDATE jobs SET status = 'running', next_run_at = NULL, last_run_id = $2 WHERE id = $1 AND status = 'pending'")
                        .bind(plan.job_id)
                        .bind(run_id)
                        .execute(&mut *tx)
                        .await?;
            }
            Trigger::Manual => {
                sqlx::query("UPDATE jobs SET last_run_id = $2 WHERE id = $1")
                    .bind(plan.job_id)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
        },
        RunEvent::RunSkipped {
            job_id, last_skipped, ..
        } => {
            sqlx::query("UPDATE jobs SET anchor_at = greatest(anchor_at, $2) WHERE id = $1")
                .bind(job_id)
                .bind(last_skipped)
                .execute(&mut *tx)
                .await?;
            refresh_next(tx, job_id).await?;
        }
        RunEvent::RunSucceeded { job_id, at, .. } => {
            sqlx::query(
                "UPDATE jobs SET last_run_at = $2, last_status = 'succeeded', consecutive_failures = 0,
                                 status = CASE WHEN kind = 'delayed' AND status = 'running' THEN 'succeeded' ELSE status END
                  WHERE id = $1",
            )
            .bind(job_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RunFailed { job_id, at, .. } => {
            sqlx::query(
                "UPDATE jobs SET last_run_at = $2, last_status = 'failed', consecutive_failures = consecutive_failures + 1,
                                 status = CASE WHEN kind = 'delayed' AND status = 'running' THEN 'failed' ELSE status END
                  WHERE id = $1",
            )
            .bind(job_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        RunEvent::RunDispatched { .. }
        | RunEvent::AttemptStarted { .. }
        | RunEvent::AttemptFinished { .. }
        | RunEvent::RetryScheduled { .. } => {}
    }
    Ok(())
}
