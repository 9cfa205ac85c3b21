//! Job commands metered against plan limits.
//!
//! A limit such as "5 active cron jobs" is a rule over many aggregates, so no single job's
//! stream can enforce it, and an asynchronous projection lags the commands it would have to
//! police: two concurrent creates could both see 4 and both succeed. Instead, the counters in
//! `usage_counters` are an *inline* projection: the command's events and the counter change
//! derived from them ([`job_usage_delta`]) are written in one transaction, and the counter row is
//! updated with the limit in its WHERE clause. The row lock serialises concurrent commands of one
//! workspace for the length of that short transaction; the check and the increment are one
//! statement, so the n-th command succeeds and the (n+1)-th is refused, exactly. Because the
//! counters change only together with the events, a replay of the log through the same function
//! ([`rebuild`]) reproduces them.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cronbox_domain::job::{Job, JobCommand, JobError, JobEvent};
use cronbox_domain::usage::{job_usage_delta, month_of, Counter, MeterState};
use cronbox_domain::workspace::WorkspaceEvent;
use futures::TryStreamExt;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::aggregates::AggregateStore;
use crate::append::{append_new, rows};
use crate::StoreError;

/// The caps of a workspace's plan on the metered counters (None: unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub active_cron_jobs: Option<i64>,
    pub delayed_calls: Option<i64>,
}

impl Limits {
    pub(crate) fn of(&self, counter: Counter) -> Option<i64> {
        match counter {
            Counter::ActiveCronJobs => self.active_cron_jobs,
            Counter::DelayedCalls => self.delayed_calls,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeteredError {
    #[error(transparent)]
    Command(JobError),
    #[error("{} limit of {limit} reached ({used} used)", counter.as_str())]
    LimitReached { counter: Counter, used: i64, limit: i64 },
    /// Another writer kept appending to the same job.
    #[error("the job was modified concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for MeteredError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The period key of `counter` at `at` for a workspace in `tz`.
pub fn period(counter: Counter, at: DateTime<Utc>, tz: Tz) -> String {
    if counter.monthly() {
        month_of(at, tz)
    } else {
        String::new()
    }
}

const ATTEMPTS: usize = 5;

/// Handles `command` on job `id` and appends its events together with the usage they cost,
/// refusing the command if that would take a counter past its limit. Lowering usage (pause,
/// delete) is never refused. `tz` is the workspace's timezone (it places monthly counters).
pub async fn execute_job(
    store: &AggregateStore<Job>,
    pool: &PgPool,
    id: Uuid,
    command: JobCommand,
    tz: Tz,
    limits: Limits,
    at: DateTime<Utc>,
) -> Result<(), MeteredError> {
    let aggregate_id = id.to_string();
    for _ in 0..ATTEMPTS {
        let (before, version) = store.load(&aggregate_id).await.map_err(|e| match e {
            cqrs_es::AggregateError::UserError(u) => MeteredError::Command(u),
            other => MeteredError::Store(StoreError::EventStore(other.to_string())),
        })?;
        let (job, events) = cronbox_domain::decide(&before, command.clone())
            .await
            .map_err(MeteredError::Command)?;
        if events.is_empty() {
            return Ok(());
        }
        let Some(workspace_id) = job.workspace_id else {
            return Err(MeteredError::Command(JobError::NotFound));
        };
        let rows = rows::<Job>(&aggregate_id, version, &events, Some(workspace_id))?;

        let mut tx = pool.begin().await?;
        let inserted = append_new(&mut tx, &rows).await?;
        if inserted.len() == rows.len() {
            // The counter row is the workspace's one point of contention: lock it last, so it
            // is held only for the update and the commit.
            for (counter, delta) in job_usage_delta(&before, &events).entries() {
                let key = period(counter, at, tz);
                apply_delta(&mut tx, workspace_id, counter, &key, delta, limits.of(counter)).await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        // Someone appended to this job between our load and insert: start over on fresh state.
        tx.rollback().await?;
    }
    Err(MeteredError::Conflict)
}

/// Appends the events of many *new* jobs inside `conn`'s transaction together with the usage
/// they cost, all or nothing: the counters move by the sum of the jobs' deltas in one checked
/// update each, so a batch that would pass a limit is refused as a whole. Fails with
/// [`MeteredError::Conflict`] if any of the jobs already has events.
pub async fn append_new_jobs(
    conn: &mut PgConnection,
    workspace_id: Uuid,
    jobs: &[(Uuid, Vec<JobEvent>)],
    tz: Tz,
    limits: Limits,
    at: DateTime<Utc>,
) -> Result<(), MeteredError> {
    let mut totals: Vec<(Counter, i64)> = Vec::new();
    let mut new_rows = Vec::new();
    let empty = Job::default();
    for (id, events) in jobs {
        for (counter, delta) in job_usage_delta(&empty, events).entries() {
            match totals.iter_mut().find(|(c, _)| *c == counter) {
                Some((_, d)) => *d += delta,
                None => totals.push((counter, delta)),
            }
        }
        new_rows.extend(rows::<Job>(&id.to_string(), 0, events, Some(workspace_id))?);
    }
    let inserted = append_new(&mut *conn, &new_rows).await?;
    if inserted.len() != new_rows.len() {
        return Err(MeteredError::Conflict);
    }
    // Last, so the counter row (the workspace's one point of contention) is held only briefly.
    for (counter, delta) in totals {
        let key = period(counter, at, tz);
        apply_delta(&mut *conn, workspace_id, counter, &key, delta, limits.of(counter)).await?;
    }
    Ok(())
}

/// Appends events of one existing job decided outside the API (the dispatcher retiring the
/// jobs of a deleted workspace) inside `conn`'s transaction, with the usage they give back.
/// They only lower counters, so nothing is refused. Returns false, writing nothing, when
/// someone appended to the job since `version` (the caller decides again on fresh state).
pub async fn append_job_events(
    conn: &mut PgConnection,
    id: Uuid,
    (before, version): (&Job, usize),
    events: &[JobEvent],
    at: DateTime<Utc>,
) -> Result<bool, MeteredError> {
    let Some(workspace_id) = before.workspace_id else {
        return Err(MeteredError::Command(JobError::NotFound));
    };
    let rows = rows::<Job>(&id.to_string(), version, events, Some(workspace_id))?;
    let inserted = append_new(&mut *conn, &rows).await?;
    if inserted.len() != rows.len() {
        return Ok(false);
    }
    for (counter, delta) in job_usage_delta(before, events).entries() {
        // Lowering counters only; the period of the non-monthly ones does not depend on the
        // workspace's timezone, and monthly ones never go down.
        let key = period(counter, at, chrono_tz::UTC);
        apply_delta(&mut *conn, workspace_id, counter, &key, delta, None).await?;
    }
    Ok(true)
}

/// Moves one counter by `delta`, refusing an increase past `limit`.
pub(crate) async fn apply_delta(
    conn: &mut PgConnection,
    workspace_id: Uuid,
    counter: Counter,
    period: &str,
    delta: i64,
    limit: Option<i64>,
) -> Result<(), MeteredError> {
    let limit = if delta > 0 { limit } else { None };
    if let Some(limit) = limit.filter(|&l| delta > l) {
        return Err(MeteredError::LimitReached {
            counter,
            used: 0,
            limit,
        });
    }
    let updated: Option<i64> = sqlx::query_scalar(
        "INSERT INTO usage_counters (workspace_id, counter, period, used) VALUES ($1, $2, $3, greatest($4, 0))
         ON CONFLICT (workspace_id, counter, period) DO UPDATE
            SET used = greatest(usage_counters.used + $4, 0)
          WHERE $5::int8 IS NULL OR usage_counters.used + $4 <= $5
         RETURNING used",
    )
    .bind(workspace_id)
    .bind(counter.as_str())
    .bind(period)
    .bind(delta)
    .bind(limit)
    .fetch_optional(&mut *conn)
    .await?;
    match (updated, limit) {
        (Some(_), _) => Ok(()),
        (None, Some(limit)) => {
            let used = used(&mut *conn, workspace_id, counter, period).await?;
            Err(MeteredError::LimitReached { counter, used, limit })
        }
        (None, None) => Ok(()),
    }
}

/// The current value of one counter.
pub async fn used<'e>(
    db: impl sqlx::PgExecutor<'e>,
    workspace_id: Uuid,
    counter: Counter,
    period: &str,
) -> Result<i64, sqlx::Error> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT used FROM usage_counters WHERE workspace_id = $1 AND counter = $2 AND period = $3")
            .bind(workspace_id)
            .bind(counter.as_str())
            .bind(period)
            .fetch_optional(db)
            .await?;
    Ok(v.unwrap_or(0))
}

/// Recomputes every counter from the event log, in one transaction that locks the table
/// against the commands that write it (they wait a moment, then continue on the rebuilt rows).
/// Returns the number of counter rows written.
pub async fn rebuild(pool: &PgPool) -> Result<u64, StoreError> {
    use std::collections::HashMap;

    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE usage_counters IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    // A command moves its counter in the same transaction as its events, after inserting them.
    // Once the lock is held, every command that moved a counter has committed (its events are
    // visible below); one still in flight has not touched the counters yet, its events are not
    // visible, and it applies its delta to the rebuilt rows when the lock is released.
    let mut rows = sqlx::query_as::<_, (String, String, serde_json::Value)>(
        "SELECT aggregate_type, aggregate_id, payload FROM events
          WHERE aggregate_type IN ('Job', 'Workspace')
          ORDER BY xid, global_seq",
    )
    .fetch(&mut *tx);
    let mut zones: HashMap<Uuid, Tz> = HashMap::new();
    let mut jobs: HashMap<Uuid, MeterState> = HashMap::new();
    let mut counters: HashMap<(Uuid, Counter, String), i64> = HashMap::new();
    while let Some((aggregate_type, aggregate_id, payload)) = rows.try_next().await? {
        let Ok(id) = Uuid::parse_str(&aggregate_id) else {
            continue;
        };
        if aggregate_type == "Workspace" {
            match serde_json::from_value::<WorkspaceEvent>(payload)? {
                WorkspaceEvent::WorkspaceCreated { timezone, .. }
                | WorkspaceEvent::WorkspaceUpdated { timezone, .. } => {
                    zones.insert(id, timezone.parse().unwrap_or(chrono_tz::UTC));
                }
                _ => {}
            }
            continue;
        }
        let event: JobEvent = serde_json::from_value(payload)?;
        let state = jobs.entry(id).or_default();
        let (next, delta) = state.step(&event);
        *state = next;
        let Some(ws) = next.workspace_id else { continue };
        let tz = zones.get(&ws).copied().unwrap_or(chrono_tz::UTC);
        for (counter, d) in delta.entries() {
            let v = counters
                .entry((ws, counter, period(counter, event_time(&event), tz)))
                .or_default();
            *v = (*v + d).max(0);
        }
    }
    drop(rows);
    sqlx::query("DELETE FROM usage_counters").execute(&mut *tx).await?;
    let mut written = 0;
    for ((ws, counter, period), used) in counters {
        sqlx::query("INSERT INTO usage_counters (workspace_id, counter, period, used) VALUES ($1, $2, $3, $4)")
            .bind(ws)
            .bind(counter.as_str())
            .bind(period)
            .bind(used)
            .execute(&mut *tx)
            .await?;
        written += 1;
    }
    tx.commit().await?;
    Ok(written)
}

fn event_time(e: &JobEvent) -> DateTime<Utc> {
    match e {
        JobEvent::JobCreated { at, .. }
        | JobEvent::JobUpdated { at, .. }
        | JobEvent::JobPaused { at }
        | JobEvent::JobResumed { at }
        | JobEvent::JobDeleted { at, .. }
        | JobEvent::RunRequested { at, .. } => *at,
    }
}
