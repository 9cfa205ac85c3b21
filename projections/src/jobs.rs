//! The `jobs` read model: what the job list and job pages show.

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
                        serde_json::from_value(ev.payload.clone()).map_err(|e| ProjectionError::decode(ev, e))?;
                    apply_job(tx, ev, event).await
                }
                "Run" => {
                    let event: RunEvent =
                        serde_json::from_value(ev.payload.clone()).map_err(|e| ProjectionError::decode(ev, e))?;
                    apply_run(tx, event).await
                }
                _ => Ok(()),
            }
        })
    }
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
        JobEvent::JobDeleted { at } => {
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
        RunEvent::CallbackAttempted { .. } | RunEvent::CallbackDelivered { .. } | RunEvent::CallbackFailed { .. } => {}
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
