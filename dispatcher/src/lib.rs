//! The dispatcher: fires due runs on time and hands them to the executors through JetStream.
//!
//! One process leads at a time (a PostgreSQL advisory lock held on a dedicated connection;
//! standbys wait on it and take over when the leader's connection dies). The leader:
//!
//! 1. loads the due-schedule index and its checkpoint in one snapshot, re-publishes whatever a
//!    previous leader recorded but never got acknowledged (the outbox), then
//! 2. follows the event log from that checkpoint (woken by NOTIFY at commit, so a new, changed,
//!    paused or deleted job is seen within milliseconds), and
//! 3. sleeps exactly until the earliest timer. Everything due is recorded in **one transaction**:
//!    the runs' events (scheduled + dispatched, with deterministic run ids) and their outbox
//!    rows. Only after the commit is the batch published (`Nats-Msg-Id = run:attempt`, acks in
//!    flight together); acknowledged outbox rows are then deleted.
//!
//! A crash anywhere leaves either nothing (the transaction did not commit: the timers are still
//! due after restart) or outbox rows (re-published after restart). A fire recorded twice is
//! impossible: the second insert of the same run id hits the event store's primary key.

pub mod in_flight;
pub mod outbox;
pub mod reconcile;
pub mod state;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use cronbox_domain::ids::{scheduled_run_id, skipped_run_id};
use cronbox_domain::job::{JobCommand, JobEvent, JobKind};
use cronbox_domain::policy::{MisfirePolicy, OverlapPolicy, SkipReason, StopReason};
use cronbox_domain::run::Work;
use cronbox_domain::run::{decide, fire_events, Run, RunCommand, RunPlan, Trigger};
use cronbox_nats::{DispatchMessage, RunQueue};
use cronbox_projections::schedule;
use cronbox_store::aggregates::Stores;
use cronbox_store::append::{append_new, NewEvent};
use cronbox_store::job_gate;
use cronbox_store::leader;
use cronbox_store::tail::{Cursor, Waker};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::{decide_cron, State, TimerKey};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("event store error")]
    Store(#[from] cronbox_store::StoreError),
    #[error("projection error")]
    Projection(#[from] cronbox_projections::ProjectionError),
    #[error("run aggregate error: {0}")]
    Run(String),
    #[error("leadership lost")]
    LeadershipLost,
}

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// A cron job that missed fires while no dispatcher ran still runs once for its most recent
    /// missed time if that is at most this old; older ones are recorded as skipped.
    pub grace: Duration,
    /// Most runs recorded in one transaction.
    pub batch_max: usize,
    /// Identifies the leader lock; instances sharing a database but not a NATS prefix need
    /// different keys.
    pub lock_key: i64,
    /// A run dispatched this long ago without starting (or running this long past its lease)
    /// is looked for in JetStream and published again if it is gone.
    pub reconcile_after: StdDuration,
    /// Delayed calls due within this much of now keep their definition in memory; later ones
    /// are read from the log when they come due.
    pub preload: Duration,
    /// Runs are recorded and published this much before their instant; the executor holds the
    /// call until the instant itself, so the pipeline's own latency does not make calls late.
    pub lead: Duration,
    /// Candidates the reconciler looks at per round (it walks through all of them in turn).
    pub reconcile_batch: i64,
    /// Runs of one workspace in flight at once when its plan sets no cap.
    pub max_runs_in_flight: usize,
}

/// How often the leader looks for runs JetStream lost.
const RECONCILE_EVERY: StdDuration = StdDuration::from_secs(5);

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            grace: Duration::seconds(60),
            preload: Duration::seconds(120),
            lead: Duration::milliseconds(50),
            batch_max: 1000,
            lock_key: 0x0c0b_0d15,
            reconcile_after: StdDuration::from_secs(60),
            reconcile_batch: 500,
            max_runs_in_flight: 1000,
        }
    }
}

/// Runs the dispatcher until `shutdown`: waits for leadership, leads until it is lost or an
/// error occurs, and starts over (reloading everything from PostgreSQL).
pub async fn run(
    pool: PgPool,
    stores: Arc<Stores>,
    queue: RunQueue,
    waker: Waker,
    config: DispatcherConfig,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let Some(lock) = leader::acquire(&pool, config.lock_key, "dispatcher", &shutdown).await else {
            return;
        };
        tracing::info!("dispatcher is leader");
        let mut d = Dispatcher {
            pool: pool.clone(),
            stores: stores.clone(),
            queue: queue.clone(),
            waker: waker.clone(),
            config: config.clone(),
            state: State::default(),
            cursor: Cursor::START,
            publishers: Arc::new(Semaphore::new(4)),
            last_fired: Default::default(),
            in_flight: in_flight::InFlight::new(config.max_runs_in_flight),
        };
        match d.lead(lock, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "dispatcher stopped leading; starting over");
                tokio::select! {
                    _ = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

struct Dispatcher {
    pool: PgPool,
    stores: Arc<Stores>,
    queue: RunQueue,
    waker: Waker,
    config: DispatcherConfig,
    state: State,
    cursor: Cursor,
    /// Publish batches in flight. Bounded so the JetStream context's 5,000 pending-ack permits
    /// are never exhausted by futures nobody awaits (which would block publishing for ever).
    publishers: Arc<Semaphore>,
    /// The latest run fired for each cron job with an overlap policy, and when. The runs read
    /// model lags the log, so "is the previous run still going?" must also count a run this
    /// dispatcher fired that the read model has not seen yet.
    last_fired: std::sync::Mutex<std::collections::HashMap<Uuid, (Uuid, DateTime<Utc>)>>,
    /// Runs out per workspace, against each workspace's cap.
    in_flight: in_flight::InFlight,
}

/// How long a fired run missing from the read model still counts as going: beyond this the read
/// model is trusted (a fire whose transaction failed never appears there).
const UNSEEN_RUN_BUSY_FOR: Duration = Duration::seconds(60);

/// State changes to make once a batch has committed.
enum Effect {
    Advance(Uuid, DateTime<Utc>),
    Snooze(Uuid, DateTime<Utc>),
    RemoveJob(Uuid),
    RemoveRun(Uuid),
    /// Made due at once to be stopped, but the log says it goes on (resumed meanwhile): back to
    /// its own time.
    Unexpedite(TimerKey),
}

/// What the log says, under the gates, about the owners of a batch of due entries.
struct Gates {
    deleted_workspaces: std::collections::HashSet<Uuid>,
    stopped_jobs: std::collections::HashMap<Uuid, job_gate::Stopped>,
}

impl Gates {
    /// Why a waiting run must not go out, if it must not.
    fn stop_reason(&self, r: &state::RunEntry) -> Option<StopReason> {
        if self.deleted_workspaces.contains(&r.workspace_id) {
            return Some(StopReason::WorkspaceDeleted);
        }
        match self.stopped_jobs.get(&r.job_id) {
            Some(job_gate::Stopped::Deleted) => Some(StopReason::JobDeleted),
            // A retry, or a run that was waiting when the pause came, stops; "run now" on a
            // job that is already paused is the user's explicit wish and goes out.
            Some(job_gate::Stopped::Paused) if r.kind == Work::Attempt && (r.attempt > 1 || r.expedite) => {
                Some(StopReason::JobPaused)
            }
            _ => None,
        }
    }
}

impl Dispatcher {
    async fn lead(&mut self, lock: leader::Lock, shutdown: &CancellationToken) -> Result<(), DispatchError> {
        let started = std::time::Instant::now();
        let hydrate_before = Utc::now() + self.config.preload;
        let mut state = State::from_rows(Vec::new(), Vec::new(), hydrate_before);
        let (cursor, runs) = schedule::load(&self.pool, 5000, hydrate_before, |page| state.add_jobs(page)).await?;
        state.add_runs(runs);
        self.cursor = cursor;
        self.state = state;
        // What a previous leader sent out and the execution log does not show finished yet. The
        // log may lag, so these count only briefly unless their end is seen on the tail.
        let out: Vec<(Uuid, Uuid)> =
            sqlx::query_as("SELECT id, workspace_id FROM runs WHERE status IN ('dispatched', 'running')")
                .fetch_all(&self.pool)
                .await?;
        for (run, ws) in out {
            self.in_flight.add(run, ws, Utc::now() + Duration::seconds(60));
        }
        self.catch_up_tail().await?;
        let (j, r) = self.state.len();
        tracing::info!(
            jobs = j,
            runs = r,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dispatcher loaded its index"
        );
        outbox::flush(&self.pool, &self.queue, StdDuration::ZERO).await?;

        // Housekeeping runs beside the firing loop (stopped when this leadership ends): a slow
        // reconcile query must not hold back fires that are due.
        let _housekeeping = self.spawn_housekeeping(shutdown);
        let lost = lock.lost();
        let mut settle = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            lock.check().map_err(|_| DispatchError::LeadershipLost)?;
            self.state.hydrate_before = Utc::now() + self.config.preload;
            let applied = self.catch_up_tail().await?;
            self.refill();
            let now = Utc::now();
            let due = self.state.due_entries(now + self.config.lead, self.config.batch_max);
            if !due.is_empty() {
                self.fire(now, due).await?;
                continue;
            }
            if applied > 0 {
                settle = 0;
            }
            // Sleep until the earliest timer, a commit notification, or the housekeeping tick.
            let mut wait = StdDuration::from_secs(1);
            if let Some(next) = self.state.next_due() {
                wait = wait.min(
                    (next - self.config.lead - Utc::now())
                        .to_std()
                        .unwrap_or(StdDuration::ZERO),
                );
            }
            if settle > 0 && settle <= 6 {
                // Woken but nothing was visible yet (an older transaction held the horizon).
                wait = wait.min(StdDuration::from_millis(1 << settle));
            }
            // Wait on our own receiver: a fresh clone would re-report the last notification
            // it has already seen and turn this loop into a busy spin.
            tokio::select! {
                _ = tokio::time::sleep(wait) => { if settle > 0 { settle += 1; } }
                _ = self.waker.wait(StdDuration::from_secs(3600)) => { settle = 1; }
                _ = lost.cancelled() => return Err(DispatchError::LeadershipLost),
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Re-publishes outbox rows that were not acknowledged and, every few seconds, looks for
    /// runs JetStream lost. Stops when the returned guard is dropped.
    fn spawn_housekeeping(&self, shutdown: &CancellationToken) -> tokio_util::sync::DropGuard {
        let token = shutdown.child_token();
        let (pool, stores, queue, after, batch) = (
            self.pool.clone(),
            self.stores.clone(),
            self.queue.clone(),
            self.config.reconcile_after,
            self.config.reconcile_batch,
        );
        let stop = token.clone();
        tokio::spawn(async move {
            let mut last_reconcile = std::time::Instant::now();
            let mut position = reconcile::Position::default();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(StdDuration::from_secs(2)) => {}
                    _ = stop.cancelled() => return,
                }
                if let Err(e) = outbox::flush(&pool, &queue, StdDuration::from_secs(3)).await {
                    tracing::warn!(error = %e, "outbox flush failed; retrying");
                }
                if last_reconcile.elapsed() > RECONCILE_EVERY {
                    let round = (&mut position, batch);
                    if let Err(e) = reconcile::reconcile(&pool, &stores, &queue, after, Utc::now(), round).await {
                        tracing::warn!(error = %e, "reconcile failed; retrying");
                    }
                    last_reconcile = std::time::Instant::now();
                }
            }
        });
        token.drop_guard()
    }

    /// Applies every visible event after the cursor to the in-memory state.
    async fn catch_up_tail(&mut self) -> Result<usize, DispatchError> {
        let mut total = 0;
        loop {
            let events = self.waker.tail().read_after(self.cursor, 2000).await?;
            let Some(last) = events.last().map(|e| e.cursor) else {
                return Ok(total);
            };
            total += events.len();
            for ev in &events {
                // A run's attempt (or callback try) ended: its workspace has a slot again.
                if ev.aggregate_type == "Run"
                    && matches!(
                        ev.event_type.as_str(),
                        "AttemptFinished" | "RunCancelled" | "CallbackAttempted"
                    )
                {
                    if let Some(ws) = Uuid::parse_str(&ev.aggregate_id)
                        .ok()
                        .and_then(|r| self.in_flight.finish(r))
                    {
                        self.state.release(ws, 1);
                    }
                }
                match schedule::changes(ev) {
                    Ok(changes) => changes.into_iter().for_each(|c| self.state.apply(c)),
                    // The same pure reducer feeds the `schedule` projection, which quarantines the
                    // event: skipping it here too keeps memory and table alike, and one event
                    // that cannot be read never stops every tenant's timers.
                    Err(e) => tracing::error!(
                        aggregate_type = %ev.aggregate_type,
                        aggregate_id = %ev.aggregate_id,
                        sequence = ev.sequence,
                        cursor = %ev.cursor,
                        error = %e,
                        "dispatcher skips an event it cannot read"
                    ),
                }
            }
            self.cursor = last;
        }
    }

    /// Reads the definitions of due delayed calls that are held without one, from their
    /// `JobCreated` events (delayed calls are never updated), in one query.
    async fn hydrate(&mut self, due: &[(DateTime<Utc>, TimerKey)]) -> Result<(), DispatchError> {
        let ids: Vec<String> = due
            .iter()
            .filter_map(|(_, k)| match k {
                TimerKey::Job(id) => self
                    .state
                    .jobs
                    .get(id)
                    .filter(|j| j.definition.is_none() && !self.state.deleted_workspaces.contains(&j.workspace_id))
                    .map(|_| id.to_string()),
                TimerKey::Run(_) => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT DISTINCT ON (aggregate_id) aggregate_id, payload FROM events
              WHERE aggregate_type = 'Job' AND aggregate_id = ANY($1)
                AND event_type IN ('JobCreated', 'JobUpdated')
              ORDER BY aggregate_id, sequence DESC",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(cronbox_store::StoreError::from)?;
        for (id, payload) in rows {
            let (Ok(job_id), Ok(event)) = (Uuid::parse_str(&id), serde_json::from_value::<JobEvent>(payload)) else {
                continue;
            };
            if let JobEvent::JobCreated { definition, .. } | JobEvent::JobUpdated { definition, .. } = event {
                self.state.hydrate(job_id, definition);
            }
        }
        Ok(())
    }

    /// Puts parked entries back on the timers as far as their workspaces have free slots. Ends
    /// seen on the tail release one each; this also covers slots freed otherwise (a released
    /// entry that dispatched nothing, a raised cap, an expired count), so nothing stays parked
    /// while its workspace has room.
    fn refill(&mut self) {
        for ws in self.state.parked_workspaces() {
            let free = self.in_flight.cap(ws).saturating_sub(self.in_flight.count(ws));
            if free > 0 {
                self.state.release(ws, free);
            }
        }
    }

    /// Holds back the due entries of workspaces at their cap of runs in flight (they wait in
    /// memory until one of the workspace's runs ends); returns the rest. Stops (cancellations,
    /// a deleted workspace's jobs) never wait.
    async fn within_caps(
        &mut self,
        now: DateTime<Utc>,
        due: Vec<(DateTime<Utc>, TimerKey)>,
    ) -> Result<Vec<(DateTime<Utc>, TimerKey)>, DispatchError> {
        for ws in self.in_flight.expire(now) {
            self.state.release(ws, 1);
        }
        let owner = |s: &State, key: &TimerKey| match key {
            TimerKey::Job(id) => s.jobs.get(id).map(|j| (j.workspace_id, j.expedite)),
            TimerKey::Run(id) => s.runs.get(id).map(|r| (r.workspace_id, r.expedite)),
        };
        let owners: Vec<Uuid> = due
            .iter()
            .filter_map(|(_, k)| owner(&self.state, k).map(|o| o.0))
            .collect();
        let stale = self.in_flight.stale_caps(owners, now);
        if !stale.is_empty() {
            let rows: Vec<(Uuid, Option<i32>)> = sqlx::query_as(
                "SELECT w.id, p.max_runs_in_flight FROM workspaces w JOIN plans p ON p.code = w.plan WHERE w.id = ANY($1)",
            )
            .bind(&stale)
            .fetch_all(&self.pool)
            .await?;
            let known: Vec<(Uuid, Option<usize>)> = rows
                .into_iter()
                .map(|(ws, cap)| (ws, cap.and_then(|c| usize::try_from(c).ok())))
                .collect();
            // Not in the read model yet (a brand-new workspace): the default, looked up again later.
            let missing: Vec<(Uuid, Option<usize>)> = stale
                .iter()
                .filter(|ws| !known.iter().any(|(k, _)| k == *ws))
                .map(|ws| (*ws, None))
                .collect();
            self.in_flight.set_caps(known.into_iter().chain(missing), now);
        }
        let mut planned: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
        let mut keep = Vec::with_capacity(due.len());
        for (at, key) in due {
            let Some((ws, expedite)) = owner(&self.state, &key) else {
                continue;
            };
            if expedite || self.state.deleted_workspaces.contains(&ws) {
                keep.push((at, key));
                continue;
            }
            let n = planned.entry(ws).or_default();
            if self.in_flight.count(ws) + *n >= self.in_flight.cap(ws) {
                self.state.park(key, ws);
                continue;
            }
            *n += 1;
            keep.push((at, key));
        }
        Ok(keep)
    }

    async fn fire(&mut self, now: DateTime<Utc>, due: Vec<(DateTime<Utc>, TimerKey)>) -> Result<(), DispatchError> {
        let due = self.within_caps(now, due).await?;
        if due.is_empty() {
            return Ok(());
        }
        // Under the gates of every workspace and job in the batch, the log decides what is
        // stopped: a pause, delete or workspace deletion committed after our memory was last
        // updated wins (whoever takes the gate second sees the other's commit).
        let (mut ws_ids, mut job_ids) = (Vec::new(), Vec::new());
        for (_, key) in &due {
            let owner = match key {
                TimerKey::Job(id) => self.state.jobs.get(id).map(|j| (j.workspace_id, *id)),
                TimerKey::Run(id) => self.state.runs.get(id).map(|r| (r.workspace_id, r.job_id)),
            };
            if let Some((ws, job)) = owner {
                ws_ids.push(ws);
                job_ids.push(job);
            }
        }
        // Everything read from other connections first: a transaction that waited for a second
        // pool connection while holding its own could starve the pool (every other holder doing
        // the same), so the transaction below only writes what was decided from these reads.
        self.hydrate(&due).await?;
        let mut loaded_runs = std::collections::HashMap::new();
        let mut loaded_jobs = std::collections::HashMap::new();
        let mut busy = std::collections::HashSet::new();
        for (_, key) in &due {
            match *key {
                TimerKey::Run(id) => {
                    let run = self
                        .stores
                        .runs
                        .load(&id.to_string())
                        .await
                        .map_err(|e| DispatchError::Run(e.to_string()))?;
                    loaded_runs.insert(id, run);
                }
                TimerKey::Job(id) => {
                    let Some(j) = self.state.jobs.get(&id) else { continue };
                    if self.state.deleted_workspaces.contains(&j.workspace_id) {
                        let job = self
                            .stores
                            .jobs
                            .load(&id.to_string())
                            .await
                            .map_err(|e| DispatchError::Run(e.to_string()))?;
                        loaded_jobs.insert(id, job);
                    } else if j
                        .definition
                        .as_ref()
                        .is_some_and(|d| d.is_cron() && d.overlap_policy != OverlapPolicy::Allow)
                        && self.job_busy(id).await?
                    {
                        busy.insert(id);
                    }
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        // Bounded, so a leader stopped in the middle (kill -STOP, a partition) cannot hold the
        // gates and rows of this transaction for long: PostgreSQL ends it, and a standby's
        // fire that waits on them goes on.
        sqlx::query(
            "SELECT set_config('idle_in_transaction_session_timeout', '5s', true),
                    set_config('statement_timeout', '30s', true), set_config('lock_timeout', '15s', true)",
        )
        .execute(&mut *tx)
        .await?;
        job_gate::lock_workspaces_shared(&mut tx, &ws_ids).await?;
        job_gate::lock(&mut tx, &job_ids).await?;
        let gates = Gates {
            deleted_workspaces: job_gate::deleted_workspaces(&mut tx, &ws_ids).await?,
            stopped_jobs: job_gate::stopped(&mut tx, &job_ids).await?,
        };
        let mut events = Vec::new();
        let mut messages = Vec::new();
        let mut effects = Vec::new();
        // (job, range of `events` its fire produced): checked against the job gate below.
        let mut job_fires: Vec<(Uuid, std::ops::Range<usize>)> = Vec::new();
        for (due_at, key) in due {
            match key {
                TimerKey::Job(job_id) => {
                    let Some(job) = self.state.jobs.get(&job_id) else {
                        continue;
                    };
                    if gates.deleted_workspaces.contains(&job.workspace_id) {
                        // Not loaded: the deletion is newer than our memory, which learns of it
                        // from the tail before the next round and loads the job then.
                        if let Some(loaded) = loaded_jobs.remove(&job_id) {
                            Self::retire(&mut tx, job_id, job.workspace_id, loaded, now, &mut effects).await?;
                        }
                        continue;
                    }
                    if job.expedite {
                        effects.push(Effect::Unexpedite(key));
                        continue;
                    }
                    let start = events.len();
                    let busy = busy.contains(&job_id);
                    self.plan_job(job_id, due_at, now, busy, &mut events, &mut messages, &mut effects)
                        .await?;
                    if events.len() > start {
                        job_fires.push((job_id, start..events.len()));
                    }
                }
                TimerKey::Run(run_id) => {
                    let Some(entry) = self.state.runs.get(&run_id).cloned() else {
                        continue;
                    };
                    let stop = gates.stop_reason(&entry);
                    if entry.expedite && stop.is_none() {
                        effects.push(Effect::Unexpedite(key));
                        continue;
                    }
                    let Some(loaded) = loaded_runs.remove(&run_id) else {
                        continue;
                    };
                    Self::plan_run(
                        run_id,
                        &entry,
                        loaded,
                        stop,
                        now,
                        &mut events,
                        &mut messages,
                        &mut effects,
                    )
                    .await?
                }
            }
        }
        if !job_fires.is_empty() {
            let stopped = &gates.stopped_jobs;
            if !stopped.is_empty() {
                let mut dropped_runs = std::collections::HashSet::new();
                let mut keep = vec![true; events.len()];
                for (job_id, range) in &job_fires {
                    if stopped.contains_key(job_id) {
                        for i in range.clone() {
                            keep[i] = false;
                            dropped_runs.insert(events[i].aggregate_id.clone());
                        }
                        tracing::info!(job_id = %job_id, "fire dropped: the job was paused or deleted meanwhile");
                    }
                }
                let mut k = keep.into_iter();
                events.retain(|_| k.next().unwrap_or(true));
                messages.retain(|(m, _)| !dropped_runs.contains(&m.run_id.to_string()));
            }
        }
        let inserted: std::collections::HashSet<(String, i64)> =
            append_new(&mut tx, &events).await?.into_iter().collect();
        // Publish only what this transaction recorded; a run someone already wrote (a repeat
        // fire) was published by whoever wrote it.
        let messages: Vec<(DispatchMessage, i64)> = messages;
        let fresh: Vec<DispatchMessage> = messages
            .into_iter()
            .filter(|(m, seq)| inserted.contains(&(m.run_id.to_string(), *seq)))
            .map(|(m, _)| m)
            .collect();
        outbox::insert(&mut tx, &fresh).await?;
        tx.commit().await?;
        for e in effects {
            match e {
                Effect::Advance(job, anchor) => self.state.advance(job, anchor),
                Effect::Snooze(job, until) => self.state.snooze(job, until),
                Effect::RemoveJob(job) => self.state.remove_job(job),
                Effect::RemoveRun(run) => self.state.remove_run(run),
                Effect::Unexpedite(key) => self.state.unexpedite(key),
            }
        }
        for m in &fresh {
            self.in_flight
                .add(m.run_id, m.workspace_id, now + in_flight::COUNTED_FOR);
            let lateness_ms = (now - m.due_at).num_milliseconds();
            tracing::debug!(run_id = %m.run_id, job_id = %m.job_id, workspace_id = %m.workspace_id, attempt = m.attempt, lateness_ms, "run dispatched");
        }
        if !fresh.is_empty() {
            let permit = self
                .publishers
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| DispatchError::LeadershipLost)?;
            let (pool, queue) = (self.pool.clone(), self.queue.clone());
            tokio::spawn(async move {
                if let Err(e) = outbox::publish(&pool, &queue, &fresh).await {
                    tracing::warn!(error = %e, count = fresh.len(), "publishing runs failed; the outbox will retry");
                }
                drop(permit);
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_fire(
        &self,
        job_id: Uuid,
        trigger: Trigger,
        scheduled_for: DateTime<Utc>,
        callback_url: Option<String>,
        now: DateTime<Utc>,
        events: &mut Vec<NewEvent>,
        messages: &mut Vec<(DispatchMessage, i64)>,
    ) -> Result<(), DispatchError> {
        let Some((job, Some(definition))) = self.state.jobs.get(&job_id).map(|j| (j, j.definition.as_ref())) else {
            return Ok(());
        };
        let run_id = scheduled_run_id(job_id, scheduled_for);
        let plan = RunPlan {
            workspace_id: job.workspace_id,
            job_id,
            trigger,
            scheduled_for,
            request: definition.request.clone(),
            callback_url,
            rerun_of: None,
        };
        let evs = fire_events(run_id, plan, now)
            .await
            .map_err(|e| DispatchError::Run(e.to_string()))?;
        for (i, ev) in evs.iter().enumerate() {
            events
                .push(NewEvent::of::<Run>(run_id.to_string(), i as i64 + 1, ev)?.in_workspace(Some(job.workspace_id)));
        }
        let msg = DispatchMessage {
            run_id,
            attempt: 1,
            workspace_id: job.workspace_id,
            job_id,
            due_at: scheduled_for,
            kind: Work::Attempt,
        };
        messages.push((msg, evs.len() as i64));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_job(
        &self,
        job_id: Uuid,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
        busy: bool,
        events: &mut Vec<NewEvent>,
        messages: &mut Vec<(DispatchMessage, i64)>,
        effects: &mut Vec<Effect>,
    ) -> Result<(), DispatchError> {
        let Some(job) = self.state.jobs.get(&job_id) else {
            return Ok(());
        };
        let Some(definition) = job.definition.clone() else {
            tracing::error!(job_id = %job_id, "no definition in the log for a due job; dropping its timer");
            effects.push(Effect::RemoveJob(job_id));
            return Ok(());
        };
        match &definition.kind {
            JobKind::Delayed {
                execute_at,
                callback_url,
                ..
            } => {
                let (at, cb) = (*execute_at, callback_url.clone());
                self.record_fire(job_id, Trigger::Delayed, at, cb, now, events, messages)
                    .await?;
                effects.push(Effect::RemoveJob(job_id));
            }
            JobKind::Cron { .. } => {
                let Some(schedule) = job.schedule.clone() else {
                    effects.push(Effect::RemoveJob(job_id));
                    return Ok(());
                };
                let (workspace_id, anchor) = (job.workspace_id, job.anchor_at);
                let grace = definition
                    .misfire_grace_seconds
                    .map_or(self.config.grace, |g| Duration::seconds(i64::from(g)));
                let overlap = definition.overlap_policy;
                // Fires that waited for the previous run (queue_one) were skipped for overlap, not
                // because nobody dispatched them.
                let waited = job.snooze.is_some();
                // Fires waiting for the previous run are caught up on as one (the latest).
                let misfire = match overlap {
                    OverlapPolicy::QueueOne => MisfirePolicy::RunOnce,
                    _ => definition.misfire_policy,
                };
                // Fires within the lead count as due now (they are held until their instant).
                let mut decision = decide_cron(&schedule, anchor, now + self.config.lead, grace, misfire);
                if overlap != OverlapPolicy::Allow && !decision.fires.is_empty() && busy {
                    if overlap == OverlapPolicy::QueueOne {
                        // The anchor stays, so the waiting fire survives a restart (the misfire
                        // rule finds it again); look again in a second.
                        effects.push(Effect::Snooze(job_id, now + Duration::seconds(1)));
                        return Ok(());
                    }
                    let (first, last, n) = (
                        decision.fires[0],
                        decision.fires[decision.fires.len() - 1],
                        decision.fires.len(),
                    );
                    Self::record_skip(
                        job_id,
                        workspace_id,
                        (first, last, n as u64),
                        SkipReason::Overlap,
                        now,
                        events,
                    )
                    .await?;
                    tracing::info!(job_id = %job_id, workspace_id = %workspace_id, %first, "cron fire skipped: the previous run is still going");
                    decision.fires.clear();
                }
                for at in &decision.fires {
                    self.record_fire(job_id, Trigger::Schedule, *at, None, now, events, messages)
                        .await?;
                }
                if let (true, Some(at)) = (overlap != OverlapPolicy::Allow, decision.fires.last()) {
                    self.last_fired
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(job_id, (scheduled_run_id(job_id, *at), now));
                }
                if let Some((first, last, count)) = decision.skipped {
                    Self::record_skip(
                        job_id,
                        workspace_id,
                        (first, last, count),
                        if waited {
                            SkipReason::Overlap
                        } else {
                            SkipReason::Missed
                        },
                        now,
                        events,
                    )
                    .await?;
                    tracing::warn!(job_id = %job_id, workspace_id = %workspace_id, count, %first, %last, "cron fires missed (dispatcher down or late beyond the grace window); recorded as skipped");
                }
                // Never leave a due timer where it is (that would spin): at least past `due_at`.
                effects.push(Effect::Advance(job_id, decision.new_anchor.max(due_at)));
            }
        }
        Ok(())
    }

    /// Records fires `(first, last, count)` of a job as one skipped run.
    async fn record_skip(
        job_id: Uuid,
        workspace_id: Uuid,
        (first, last, count): (DateTime<Utc>, DateTime<Utc>, u64),
        reason: SkipReason,
        now: DateTime<Utc>,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), DispatchError> {
        let run_id = skipped_run_id(job_id, first);
        let cmd = RunCommand::RecordSkipped {
            run_id,
            workspace_id,
            job_id,
            first_skipped: first,
            last_skipped: last,
            skipped_count: count,
            reason,
            at: now,
        };
        let evs = decide(Run::default(), cmd)
            .await
            .map_err(|e| DispatchError::Run(e.to_string()))?;
        for (i, ev) in evs.iter().enumerate() {
            events.push(NewEvent::of::<Run>(run_id.to_string(), i as i64 + 1, ev)?.in_workspace(Some(workspace_id)));
        }
        Ok(())
    }

    /// Whether a scheduled or manual run of the job is still going, as the execution log shows
    /// it (a few milliseconds behind the event log).
    async fn job_busy(&self, job_id: Uuid) -> Result<bool, DispatchError> {
        let unseen = self
            .last_fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job_id)
            .filter(|entry| Utc::now().signed_duration_since(entry.1) < UNSEEN_RUN_BUSY_FOR)
            .map(|(run, _)| *run);
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = $1
                              AND status IN ('scheduled', 'dispatched', 'running', 'retry_scheduled'))
                 OR ($2::uuid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runs WHERE id = $2))",
        )
        .bind(job_id)
        .bind(unseen)
        .fetch_one(&self.pool)
        .await?)
    }

    /// A waiting run comes due: dispatched (an attempt, or a callback try), or cancelled when
    /// `stop` says why it must not go out.
    #[allow(clippy::too_many_arguments)]
    async fn plan_run(
        run_id: Uuid,
        entry: &state::RunEntry,
        (run, seq): (Run, usize),
        stop: Option<StopReason>,
        now: DateTime<Utc>,
        events: &mut Vec<NewEvent>,
        messages: &mut Vec<(DispatchMessage, i64)>,
        effects: &mut Vec<Effect>,
    ) -> Result<(), DispatchError> {
        effects.push(Effect::RemoveRun(run_id));
        let attempt = entry.attempt;
        let cmd = match (stop, entry.kind) {
            (Some(reason), _) => RunCommand::Cancel { reason, at: now },
            (None, Work::Attempt) => RunCommand::Dispatch { attempt, at: now },
            (None, Work::Callback) => RunCommand::DispatchCallback { attempt, at: now },
        };
        // A cancellation publishes nothing; anything else goes out as the work it is.
        let kind = stop.is_none().then_some(entry.kind);
        match decide(run, cmd).await {
            Ok(evs) => {
                for (i, ev) in evs.iter().enumerate() {
                    events.push(
                        NewEvent::of::<Run>(run_id.to_string(), (seq + 1 + i) as i64, ev)?
                            .in_workspace(Some(entry.workspace_id)),
                    );
                }
                match (kind, stop) {
                    (Some(kind), _) => {
                        let msg = DispatchMessage {
                            run_id,
                            attempt: entry.attempt,
                            workspace_id: entry.workspace_id,
                            job_id: entry.job_id,
                            due_at: entry.due_at,
                            kind,
                        };
                        messages.push((msg, (seq + evs.len()) as i64));
                    }
                    (None, Some(reason)) => tracing::info!(
                        run_id = %run_id, job_id = %entry.job_id, workspace_id = %entry.workspace_id,
                        reason = reason.as_str(), "waiting run cancelled"
                    ),
                    (None, None) => {}
                }
            }
            // Already dispatched, finished or cancelled (e.g. by a previous leader): nothing to do.
            Err(e) => tracing::debug!(run_id = %run_id, error = %e, "run no longer needs dispatch"),
        }
        Ok(())
    }

    /// Deletes a job of a deleted workspace, recorded with the reason (its plan counters go
    /// down with it, as for a user's delete).
    async fn retire(
        tx: &mut sqlx::PgConnection,
        job_id: Uuid,
        workspace_id: Uuid,
        (job, version): (cronbox_domain::job::Job, usize),
        now: DateTime<Utc>,
        effects: &mut Vec<Effect>,
    ) -> Result<(), DispatchError> {
        let reason = StopReason::WorkspaceDeleted;
        let events = cronbox_domain::decide(&job, JobCommand::Retire { reason, at: now })
            .await
            .map_err(|e| DispatchError::Run(e.to_string()))?
            .1;
        if !events.is_empty() {
            let written = cronbox_store::usage::append_job_events(tx, job_id, (&job, version), &events, now)
                .await
                .map_err(|e| DispatchError::Run(e.to_string()))?;
            if !written {
                // Someone wrote to the job meanwhile: its timer stays due and is decided again.
                return Ok(());
            }
            tracing::info!(job_id = %job_id, workspace_id = %workspace_id, "job deleted with its workspace");
        }
        effects.push(Effect::RemoveJob(job_id));
        Ok(())
    }
}
