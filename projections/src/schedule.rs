//! The due-schedule index: which jobs may fire and which runs wait for (re-)dispatch.
//!
//! The same pure reducer, [`changes`], feeds two copies of this state: the `schedule_jobs` /
//! `schedule_runs` tables (this projection) and the dispatcher's in-memory timers. The dispatcher
//! loads the tables together with this projection's checkpoint in one snapshot ([`load`]) and
//! then follows the log from that checkpoint with the same reducer, so its memory is always
//! "the tables at checkpoint C plus every event after C" — nothing missed, nothing applied twice.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cronbox_domain::job::{JobDefinition, JobEvent};
use cronbox_domain::run::{RunEvent, Trigger, Work};
use cronbox_store::tail::{Cursor, StoredEvent};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runner::{checkpoint, ApplyFuture, Projection, ProjectionError};

pub const NAME: &str = "schedule";

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleChange {
    /// A job was created.
    PutJob {
        job_id: Uuid,
        workspace_id: Uuid,
        definition: JobDefinition,
        anchor_at: DateTime<Utc>,
    },
    /// A job's definition changed at `at`: its anchor moves up to `at`.
    UpdateJob {
        job_id: Uuid,
        definition: JobDefinition,
        at: DateTime<Utc>,
    },
    /// Paused (`active: false`) or resumed at `at` (fires during the pause are not misfires).
    SetActive {
        job_id: Uuid,
        active: bool,
        at: DateTime<Utc>,
    },
    /// Fires up to `anchor_at` happened or were recorded as skipped.
    Advance {
        job_id: Uuid,
        anchor_at: DateTime<Utc>,
    },
    /// A delayed call that has fired.
    RemoveJob {
        job_id: Uuid,
    },
    /// Deleted (by its user, or with its workspace): also its waiting runs stop.
    DeleteJob {
        job_id: Uuid,
    },
    /// The workspace was deleted: everything of it stops (the dispatcher records each stop as
    /// an event; the rows go when those events arrive).
    DeleteWorkspace {
        workspace_id: Uuid,
    },
    /// A run waits for dispatch of `attempt` at `due_at` (manual runs, retries), or of its
    /// callback's try `attempt` (`kind: Callback`).
    PutRun {
        run_id: Uuid,
        attempt: u32,
        workspace_id: Uuid,
        job_id: Uuid,
        due_at: DateTime<Utc>,
        kind: Work,
    },
    RemoveRun {
        run_id: Uuid,
    },
}

fn uuid_of(ev: &StoredEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&ev.aggregate_id).map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))
}

/// What one event changes in the due-schedule index. Pure.
pub fn changes(ev: &StoredEvent) -> Result<Vec<ScheduleChange>, ProjectionError> {
    use ScheduleChange::*;
    Ok(match ev.aggregate_type.as_str() {
        "Job" => {
            let job_id = uuid_of(ev)?;
            match <JobEvent as serde::Deserialize>::deserialize(&ev.payload)
                .map_err(|e| ProjectionError::decode(ev, e))?
            {
                JobEvent::JobCreated {
                    workspace_id,
                    definition,
                    at,
                    ..
                } => {
                    vec![PutJob {
                        job_id,
                        workspace_id,
                        definition,
                        anchor_at: at,
                    }]
                }
                JobEvent::JobUpdated { definition, at } => vec![UpdateJob { job_id, definition, at }],
                JobEvent::JobPaused { at } => vec![SetActive {
                    job_id,
                    active: false,
                    at,
                }],
                JobEvent::JobResumed { at } => vec![SetActive {
                    job_id,
                    active: true,
                    at,
                }],
                JobEvent::JobDeleted { .. } => vec![DeleteJob { job_id }],
                JobEvent::RunRequested { .. } => vec![],
            }
        }
        "Run" => {
            let run_id = uuid_of(ev)?;
            match <RunEvent as serde::Deserialize>::deserialize(&ev.payload)
                .map_err(|e| ProjectionError::decode(ev, e))?
            {
                RunEvent::CallbackAttempted { .. }
                | RunEvent::CallbackDelivered { .. }
                | RunEvent::CallbackFailed { .. } => vec![],
                RunEvent::CallbackScheduled {
                    workspace_id,
                    job_id,
                    attempt,
                    due_at,
                } => vec![PutRun {
                    run_id,
                    attempt,
                    workspace_id,
                    job_id,
                    due_at,
                    kind: Work::Callback,
                }],
                RunEvent::CallbackDispatched { .. }
                | RunEvent::CallbackCancelled { .. }
                | RunEvent::RunCancelled { .. } => vec![RemoveRun { run_id }],
                RunEvent::RunScheduled { plan, at, .. } => match plan.trigger {
                    Trigger::Schedule => vec![Advance {
                        job_id: plan.job_id,
                        anchor_at: plan.scheduled_for,
                    }],
                    Trigger::Delayed => vec![RemoveJob { job_id: plan.job_id }],
                    Trigger::Manual => vec![PutRun {
                        run_id,
                        attempt: 1,
                        workspace_id: plan.workspace_id,
                        job_id: plan.job_id,
                        due_at: at,
                        kind: Work::Attempt,
                    }],
                },
                RunEvent::RunSkipped {
                    job_id, last_skipped, ..
                } => vec![Advance {
                    job_id,
                    anchor_at: last_skipped,
                }],
                RunEvent::RetryScheduled {
                    workspace_id,
                    job_id,
                    attempt,
                    retry_at,
                } => {
                    vec![PutRun {
                        run_id,
                        attempt,
                        workspace_id,
                        job_id,
                        due_at: retry_at,
                        kind: Work::Attempt,
                    }]
                }
                RunEvent::RunDispatched { .. } | RunEvent::RunSucceeded { .. } | RunEvent::RunFailed { .. } => {
                    vec![RemoveRun { run_id }]
                }
                RunEvent::AttemptStarted { .. } | RunEvent::AttemptFinished { .. } => vec![],
            }
        }
        "Workspace" if ev.event_type == "WorkspaceDeleted" => vec![DeleteWorkspace {
            workspace_id: uuid_of(ev)?,
        }],
        _ => vec![],
    })
}

pub struct ScheduleProjection;

impl Projection for ScheduleProjection {
    fn name(&self) -> &'static str {
        NAME
    }
    fn tables(&self) -> &'static [&'static str] {
        &["schedule_jobs", "schedule_runs"]
    }
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, ev: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            for change in changes(ev)? {
                apply_change(tx, change).await?;
            }
            Ok(())
        })
    }
    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut all = Vec::new();
            for ev in events {
                all.extend(changes(ev)?);
            }
            // Runs of new jobs and of removed runs (the bulk of a busy log) go in one statement
            // each; everything else in order, one by one.
            let mut i = 0;
            while i < all.len() {
                let n = all[i..]
                    .iter()
                    .take_while(|c| std::mem::discriminant(*c) == std::mem::discriminant(&all[i]))
                    .count();
                match &all[i] {
                    ScheduleChange::PutJob { .. } if n > 1 => put_jobs(tx, &all[i..i + n]).await?,
                    ScheduleChange::RemoveRun { .. } if n > 1 => {
                        let ids: Vec<Uuid> = all[i..i + n]
                            .iter()
                            .filter_map(|c| match c {
                                ScheduleChange::RemoveRun { run_id } => Some(*run_id),
                                _ => None,
                            })
                            .collect();
                        sqlx::query("DELETE FROM schedule_runs WHERE run_id = ANY($1)")
                            .bind(&ids)
                            .execute(&mut *tx)
                            .await?;
                    }
                    _ => {
                        for c in &all[i..i + n] {
                            apply_change(tx, c.clone()).await?;
                        }
                    }
                }
                i += n;
            }
            Ok(())
        })
    }
}

/// Consecutive `PutJob`s as one insert (in order, so a repeated job id keeps its first row, as
/// one-by-one inserts with `DO NOTHING` would).
async fn put_jobs(tx: &mut PgConnection, puts: &[ScheduleChange]) -> Result<(), ProjectionError> {
    let (mut ids, mut workspaces, mut definitions, mut anchors) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in puts {
        if let ScheduleChange::PutJob {
            job_id,
            workspace_id,
            definition,
            anchor_at,
        } = c
        {
            ids.push(*job_id);
            workspaces.push(*workspace_id);
            definitions.push(serde_json::to_string(definition).map_err(cronbox_store::StoreError::from)?);
            anchors.push(*anchor_at);
        }
    }
    sqlx::query(
        "INSERT INTO schedule_jobs (job_id, workspace_id, active, definition, anchor_at)
         SELECT j, w, true, d::jsonb, a FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
                WITH ORDINALITY AS x(j, w, d, a, n)
          ORDER BY n
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&workspaces)
    .bind(&definitions)
    .bind(&anchors)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply_change(tx: &mut PgConnection, change: ScheduleChange) -> Result<(), ProjectionError> {
    match change {
        ScheduleChange::PutJob {
            job_id,
            workspace_id,
            definition,
            anchor_at,
        } => {
            sqlx::query(
                "INSERT INTO schedule_jobs (job_id, workspace_id, active, definition, anchor_at) VALUES ($1, $2, true, $3, $4)
                 ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(job_id)
            .bind(workspace_id)
            .bind(Json(&definition))
            .bind(anchor_at)
            .execute(&mut *tx)
            .await?;
        }
        ScheduleChange::UpdateJob { job_id, definition, at } => {
            sqlx::query(
                "UPDATE schedule_jobs SET definition = $2, anchor_at = greatest(anchor_at, $3) WHERE job_id = $1",
            )
            .bind(job_id)
            .bind(Json(&definition))
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        ScheduleChange::SetActive { job_id, active, at } => {
            sqlx::query("UPDATE schedule_jobs SET active = $2, anchor_at = greatest(anchor_at, $3) WHERE job_id = $1")
                .bind(job_id)
                .bind(active)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        ScheduleChange::Advance { job_id, anchor_at } => {
            sqlx::query("UPDATE schedule_jobs SET anchor_at = greatest(anchor_at, $2) WHERE job_id = $1")
                .bind(job_id)
                .bind(anchor_at)
                .execute(&mut *tx)
                .await?;
        }
        ScheduleChange::DeleteWorkspace { .. } => {}
        ScheduleChange::RemoveJob { job_id } | ScheduleChange::DeleteJob { job_id } => {
            sqlx::query("DELETE FROM schedule_jobs WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        ScheduleChange::PutRun {
            run_id,
            attempt,
            workspace_id,
            job_id,
            due_at,
            kind,
        } => {
            sqlx::query(
                "INSERT INTO schedule_runs (run_id, attempt, workspace_id, job_id, due_at, kind) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id) DO UPDATE SET attempt = $2, due_at = $5, kind = $6",
            )
            .bind(run_id)
            .bind(attempt as i32)
            .bind(workspace_id)
            .bind(job_id)
            .bind(due_at)
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?;
        }
        ScheduleChange::RemoveRun { run_id } => {
            sqlx::query("DELETE FROM schedule_runs WHERE run_id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub job_id: Uuid,
    pub workspace_id: Uuid,
    pub active: bool,
    /// None for a delayed call due after the load's `hydrate_before`: the dispatcher reads it
    /// from the log when the call comes due (see `load`).
    pub definition: Option<JobDefinition>,
    pub anchor_at: DateTime<Utc>,
    /// Delayed calls: when they fire.
    pub execute_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: Uuid,
    pub attempt: u32,
    pub workspace_id: Uuid,
    pub job_id: Uuid,
    pub due_at: DateTime<Utc>,
    pub kind: Work,
}

/// (job_id, workspace_id, active, definition, anchor_at, execute_at) of one schedule_jobs row.
type ScheduleJobRow = (
    Uuid,
    Uuid,
    bool,
    Option<Json<JobDefinition>>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// The whole index and the checkpoint it corresponds to, read in one snapshot. Jobs are read in
/// pages (keyset on job_id) so a large index does not need one giant result set.
///
/// Delayed calls due after `hydrate_before` come without their definition: a million pending
/// calls would otherwise cost the dispatcher gigabytes and the load a million JSON parses.
///
/// Jobs are handed to `on_jobs` a page at a time, so the caller can index them as they come and
/// never holds all rows and its index at once.
pub async fn load(
    pool: &PgPool,
    page: i64,
    hydrate_before: DateTime<Utc>,
    mut on_jobs: impl FnMut(Vec<JobRow>),
) -> Result<(Cursor, Vec<RunRow>), ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let cursor = checkpoint(&mut tx, NAME).await?;
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<ScheduleJobRow> = sqlx::query_as(
            "SELECT job_id, workspace_id, active,
                    CASE WHEN definition->>'kind' = 'delayed' AND (definition->>'execute_at')::timestamptz > $3
                         THEN NULL ELSE definition END,
                    anchor_at,
                    CASE WHEN definition->>'kind' = 'delayed' THEN (definition->>'execute_at')::timestamptz END
               FROM schedule_jobs
              WHERE job_id > $1 ORDER BY job_id LIMIT $2",
        )
        .bind(after)
        .bind(page)
        .bind(hydrate_before)
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        let mut jobs = Vec::with_capacity(n);
        for (job_id, workspace_id, active, definition, anchor_at, execute_at) in rows {
            after = job_id;
            jobs.push(JobRow {
                job_id,
                workspace_id,
                active,
                definition: definition.map(|Json(d)| d),
                anchor_at,
                execute_at,
            });
        }
        on_jobs(jobs);
        if (n as i64) < page {
            break;
        }
    }
    let runs: Vec<(Uuid, i32, Uuid, Uuid, DateTime<Utc>, String)> =
        sqlx::query_as("SELECT run_id, attempt, workspace_id, job_id, due_at, kind FROM schedule_runs")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let runs = runs
        .into_iter()
        .map(|(run_id, attempt, workspace_id, job_id, due_at, kind)| RunRow {
            run_id,
            attempt: attempt.max(1) as u32,
            workspace_id,
            job_id,
            due_at,
            kind: Work::parse(&kind),
        })
        .collect();
    Ok((cursor, runs))
}
