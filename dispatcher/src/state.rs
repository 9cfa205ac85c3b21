//! The dispatcher's in-memory horizon: every job that may fire and every run waiting for
//! dispatch, with a timer per entry. Pure (no IO, no clock): the loop passes `now` in.
//!
//! Timers live in a `BTreeMap<(instant, key)>` — the key breaks ties between equal instants —
//! plus a reverse map so an entry's timer can be moved when the job changes. The loop sleeps until
//! the first key; an earlier insert wakes it because every change goes through the same loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cronbox_domain::job::{JobDefinition, JobKind};
use cronbox_domain::policy::{MisfirePolicy, RUN_ALL_MAX};
use cronbox_domain::run::Work;
use cronbox_domain::schedule::CronSchedule;
use cronbox_projections::schedule::{JobRow, RunRow, ScheduleChange};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKey {
    Job(Uuid),
    Run(Uuid),
}

#[derive(Debug, Clone)]
pub struct JobEntry {
    pub workspace_id: Uuid,
    pub active: bool,
    /// None for a job not due soon (see [`State::hydrate_before`]): the dispatcher reads it
    /// from the log when the job comes due.
    pub definition: Option<Arc<JobDefinition>>,
    /// Delayed calls: when they fire (known without the definition).
    pub execute_at: Option<DateTime<Utc>>,
    /// Parsed once; `None` for delayed calls (or a stored expression that no longer parses).
    pub schedule: Option<Arc<CronSchedule>>,
    pub anchor_at: DateTime<Utc>,
    /// Not before this instant: a fire waiting for the previous run (`overlap_policy:
    /// queue_one`) looks again then, without advancing the anchor.
    pub snooze: Option<DateTime<Utc>>,
    /// Due at once, whatever its schedule: its workspace was deleted, and the fire records
    /// that it stops.
    pub expedite: bool,
}

#[derive(Debug, Clone)]
pub struct RunEntry {
    pub attempt: u32,
    pub workspace_id: Uuid,
    pub job_id: Uuid,
    pub due_at: DateTime<Utc>,
    pub kind: Work,
    /// Due at once: its job was paused or deleted, or its workspace deleted, while it waited;
    /// the fire records that it is cancelled (see `Dispatcher::fire`).
    pub expedite: bool,
}

#[derive(Default)]
pub struct State {
    /// Jobs next due after this instant are kept without their definition (their timer, schedule
    /// and anchor stay). The loop moves it forward with the clock; memory then grows with the
    /// jobs due soon, not with all of them.
    pub hydrate_before: DateTime<Utc>,
    pub jobs: HashMap<Uuid, JobEntry>,
    /// Parsed schedules shared by every job with the same expression and timezone (a parsed
    /// croner pattern takes about 5 KB, and most jobs use a few common schedules).
    schedules: HashMap<(String, String), Arc<CronSchedule>>,
    /// Inserts into `schedules` since unused ones were last dropped.
    schedule_inserts: usize,
    pub runs: HashMap<Uuid, RunEntry>,
    /// Workspaces deleted while this leader followed the log: what of theirs comes up (a retry
    /// of a run that was in flight) is stopped at once. A new leader finds the deletion in the
    /// log when the entry comes due instead.
    pub deleted_workspaces: HashSet<Uuid>,
    timers: BTreeMap<(DateTime<Utc>, TimerKey), ()>,
    due_of: HashMap<TimerKey, DateTime<Utc>>,
    /// Entries held back because their workspace has as many runs in flight as it may: off the
    /// timers (so they cost the loop nothing), by workspace in due order, until one finishes.
    parked: HashMap<Uuid, std::collections::BTreeSet<(DateTime<Utc>, TimerKey)>>,
    parked_of: HashMap<TimerKey, (Uuid, DateTime<Utc>)>,
}

fn execute_at(d: &JobDefinition) -> Option<DateTime<Utc>> {
    match &d.kind {
        JobKind::Delayed { execute_at, .. } => Some(*execute_at),
        JobKind::Cron { .. } => None,
    }
}

impl State {
    /// The job's parsed schedule, shared with every job that has the same one.
    fn schedule_of(&mut self, d: &JobDefinition) -> Option<Arc<CronSchedule>> {
        let JobKind::Cron { schedule, timezone } = &d.kind else {
            return None;
        };
        let key = (schedule.clone(), timezone.clone());
        if let Some(s) = self.schedules.get(&key) {
            return Some(s.clone());
        }
        match CronSchedule::parse_stored(schedule, timezone) {
            Ok(s) => {
                let s = Arc::new(s);
                self.schedule_inserts += 1;
                if self.schedule_inserts > 10_000 {
                    self.schedules.retain(|_, s| Arc::strong_count(s) > 1);
                    self.schedule_inserts = 0;
                }
                self.schedules.insert(key, s.clone());
                Some(s)
            }
            Err(e) => {
                tracing::error!(error = %e, schedule, "stored cron schedule does not parse; job will not fire");
                None
            }
        }
    }

    /// Keeps a job's definition only while it is due soon (before `hydrate_before`); the
    /// dispatcher reads it from the log again when the job comes due.
    fn trim(&mut self, job_id: Uuid) {
        let far = self
            .due_of
            .get(&TimerKey::Job(job_id))
            .is_none_or(|due| *due > self.hydrate_before);
        if far {
            if let Some(j) = self.jobs.get_mut(&job_id) {
                j.definition = None;
            }
        }
    }
}

impl State {
    pub fn from_rows(jobs: Vec<JobRow>, runs: Vec<RunRow>, hydrate_before: DateTime<Utc>) -> Self {
        let mut s = State {
            hydrate_before,
            ..State::default()
        };
        s.add_jobs(jobs);
        s.add_runs(runs);
        s
    }

    /// Indexes rows of the schedule index (a page of the start-up load).
    pub fn add_jobs(&mut self, jobs: Vec<JobRow>) {
        let s = self;
        for j in jobs {
            let schedule = j.definition.as_ref().and_then(|d| s.schedule_of(d));
            s.jobs.insert(
                j.job_id,
                JobEntry {
                    workspace_id: j.workspace_id,
                    active: j.active,
                    execute_at: j.execute_at.or_else(|| j.definition.as_ref().and_then(execute_at)),
                    definition: j.definition.map(Arc::new),
                    schedule,
                    anchor_at: j.anchor_at,
                    snooze: None,
                    expedite: false,
                },
            );
            s.retime(TimerKey::Job(j.job_id));
            s.trim(j.job_id);
        }
    }

    /// Indexes the runs waiting for dispatch.
    pub fn add_runs(&mut self, runs: Vec<RunRow>) {
        let s = self;
        for r in runs {
            s.runs.insert(
                r.run_id,
                RunEntry {
                    attempt: r.attempt,
                    workspace_id: r.workspace_id,
                    job_id: r.job_id,
                    due_at: r.due_at,
                    kind: r.kind,
                    expedite: false,
                },
            );
            s.retime(TimerKey::Run(r.run_id));
        }
    }

    /// Gives a job its definition (read from the log when it came due).
    pub fn hydrate(&mut self, job_id: Uuid, definition: JobDefinition) {
        if let Some(j) = self.jobs.get_mut(&job_id) {
            j.definition = Some(Arc::new(definition));
        }
    }

    pub fn len(&self) -> (usize, usize) {
        (self.jobs.len(), self.runs.len())
    }

    /// When the entry should next fire, from its current data.
    fn due(&self, key: TimerKey) -> Option<DateTime<Utc>> {
        match key {
            TimerKey::Job(id) => {
                let j = self.jobs.get(&id)?;
                if j.expedite {
                    return Some(DateTime::<Utc>::MIN_UTC);
                }
                if !j.active {
                    return None;
                }
                match j.execute_at {
                    Some(at) => Some(at),
                    None => {
                        let next = j.schedule.as_ref()?.next_after(j.anchor_at)?;
                        Some(j.snooze.map_or(next, |s| s.max(next)))
                    }
                }
            }
            TimerKey::Run(id) => self
                .runs
                .get(&id)
                .map(|r| if r.expedite { DateTime::<Utc>::MIN_UTC } else { r.due_at }),
        }
    }

    /// Moves the entry's timer to its current due time (or removes it).
    pub fn retime(&mut self, key: TimerKey) {
        // A parked entry stays parked, at its new due time (or leaves when it has none).
        if let Some((ws, old)) = self.parked_of.remove(&key) {
            let due = self.due(key);
            let set = self.parked.entry(ws).or_default();
            set.remove(&(old, key));
            match due {
                Some(due) => {
                    set.insert((due, key));
                    self.parked_of.insert(key, (ws, due));
                }
                None if set.is_empty() => {
                    self.parked.remove(&ws);
                }
                None => {}
            }
            return;
        }
        if let Some(old) = self.due_of.remove(&key) {
            self.timers.remove(&(old, key));
        }
        if let Some(due) = self.due(key) {
            self.timers.insert((due, key), ());
            self.due_of.insert(key, due);
        }
    }

    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Entries due at or before `now`, earliest first, at most `max`.
    pub fn due_entries(&self, now: DateTime<Utc>, max: usize) -> Vec<(DateTime<Utc>, TimerKey)> {
        self.timers
            .keys()
            .take_while(|(t, _)| *t <= now)
            .take(max)
            .copied()
            .collect()
    }

    pub fn apply(&mut self, change: ScheduleChange) {
        match change {
            ScheduleChange::PutJob {
                job_id,
                workspace_id,
                definition,
                anchor_at,
            } => {
                if self.jobs.contains_key(&job_id) {
                    return;
                }
                let schedule = self.schedule_of(&definition);
                self.jobs.insert(
                    job_id,
                    JobEntry {
                        workspace_id,
                        active: true,
                        execute_at: execute_at(&definition),
                        definition: Some(Arc::new(definition)),
                        schedule,
                        anchor_at,
                        snooze: None,
                        expedite: self.deleted_workspaces.contains(&workspace_id),
                    },
                );
                self.retime(TimerKey::Job(job_id));
                self.trim(job_id);
            }
            ScheduleChange::UpdateJob { job_id, definition, at } => {
                let schedule = self.schedule_of(&definition);
                if let Some(j) = self.jobs.get_mut(&job_id) {
                    j.schedule = schedule;
                    j.execute_at = execute_at(&definition);
                    j.definition = Some(Arc::new(definition));
                    j.anchor_at = j.anchor_at.max(at);
                    self.retime(TimerKey::Job(job_id));
                    self.trim(job_id);
                }
            }
            ScheduleChange::SetActive { job_id, active, at } => {
                if let Some(j) = self.jobs.get_mut(&job_id) {
                    j.active = active;
                    j.anchor_at = j.anchor_at.max(at);
                    self.retime(TimerKey::Job(job_id));
                }
                if !active {
                    self.expedite_runs(|r| r.job_id == job_id && r.kind == Work::Attempt);
                }
            }
            ScheduleChange::DeleteJob { job_id } => {
                self.remove_job(job_id);
                self.expedite_runs(|r| r.job_id == job_id);
            }
            ScheduleChange::DeleteWorkspace { workspace_id } => {
                self.deleted_workspaces.insert(workspace_id);
                let jobs: Vec<Uuid> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.workspace_id == workspace_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in jobs {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.expedite = true;
                    }
                    self.unpark(TimerKey::Job(id));
                    self.retime(TimerKey::Job(id));
                }
                self.expedite_runs(|r| r.workspace_id == workspace_id);
            }
            ScheduleChange::Advance { job_id, anchor_at } => self.advance(job_id, anchor_at),
            ScheduleChange::RemoveJob { job_id } => self.remove_job(job_id),
            ScheduleChange::PutRun {
                run_id,
                attempt,
                workspace_id,
                job_id,
                due_at,
                kind,
            } => {
                // Known to be stopped already: a retry of a run that was in flight when its job
                // was paused or its workspace deleted.
                let stopped = self.deleted_workspaces.contains(&workspace_id)
                    || (kind == Work::Attempt && attempt > 1 && self.jobs.get(&job_id).is_some_and(|j| !j.active));
                self.runs.insert(
                    run_id,
                    RunEntry {
                        attempt,
                        workspace_id,
                        job_id,
                        due_at,
                        kind,
                        expedite: stopped,
                    },
                );
                self.retime(TimerKey::Run(run_id));
            }
            ScheduleChange::RemoveRun { run_id } => self.remove_run(run_id),
        }
    }

    /// Makes the waiting runs that `which` selects due at once (to be cancelled).
    fn expedite_runs(&mut self, which: impl Fn(&RunEntry) -> bool) {
        let ids: Vec<Uuid> = self.runs.iter().filter(|(_, r)| which(r)).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(r) = self.runs.get_mut(&id) {
                r.expedite = true;
            }
            self.unpark(TimerKey::Run(id));
            self.retime(TimerKey::Run(id));
        }
    }

    /// Takes one entry out of the parked ones (a stop does not wait for a free slot).
    fn unpark(&mut self, key: TimerKey) {
        if let Some((ws, due)) = self.parked_of.remove(&key) {
            if let Some(set) = self.parked.get_mut(&ws) {
                set.remove(&(due, key));
                if set.is_empty() {
                    self.parked.remove(&ws);
                }
            }
        }
    }

    /// Holds `key` back (its workspace `ws` is at its cap of runs in flight) until
    /// [`State::release`] lets it go.
    pub fn park(&mut self, key: TimerKey, ws: Uuid) {
        let Some(due) = self.due_of.remove(&key) else { return };
        self.timers.remove(&(due, key));
        self.parked.entry(ws).or_default().insert((due, key));
        self.parked_of.insert(key, (ws, due));
    }

    /// Puts up to `n` of `ws`'s parked entries, earliest first, back on the timers.
    pub fn release(&mut self, ws: Uuid, n: usize) {
        for _ in 0..n {
            let Some(set) = self.parked.get_mut(&ws) else { return };
            let Some((due, key)) = set.pop_first() else {
                self.parked.remove(&ws);
                return;
            };
            if set.is_empty() {
                self.parked.remove(&ws);
            }
            self.parked_of.remove(&key);
            self.timers.insert((due, key), ());
            self.due_of.insert(key, due);
        }
    }

    /// Workspaces with parked entries.
    pub fn parked_workspaces(&self) -> Vec<Uuid> {
        self.parked.keys().copied().collect()
    }

    /// Entries parked for `ws`.
    pub fn parked(&self, ws: Uuid) -> usize {
        self.parked.get(&ws).map_or(0, |s| s.len())
    }

    /// Looks at a job again at `until` without moving its anchor.
    pub fn snooze(&mut self, job_id: Uuid, until: DateTime<Utc>) {
        if let Some(j) = self.jobs.get_mut(&job_id) {
            j.snooze = Some(until);
            self.retime(TimerKey::Job(job_id));
        }
    }

    pub fn advance(&mut self, job_id: Uuid, anchor_at: DateTime<Utc>) {
        if let Some(j) = self.jobs.get_mut(&job_id) {
            j.anchor_at = j.anchor_at.max(anchor_at);
            j.snooze = None;
            self.retime(TimerKey::Job(job_id));
            self.trim(job_id);
        }
    }

    pub fn remove_job(&mut self, job_id: Uuid) {
        self.jobs.remove(&job_id);
        self.retime(TimerKey::Job(job_id));
    }

    pub fn remove_run(&mut self, run_id: Uuid) {
        self.runs.remove(&run_id);
        self.retime(TimerKey::Run(run_id));
    }

    /// Puts an expedited entry back on its own time (what stopped it was undone meanwhile).
    pub fn unexpedite(&mut self, key: TimerKey) {
        match key {
            TimerKey::Job(id) => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.expedite = false;
                }
            }
            TimerKey::Run(id) => {
                if let Some(r) = self.runs.get_mut(&id) {
                    r.expedite = false;
                }
            }
        }
        self.retime(key);
    }

    /// Pushes a run's timer back (its dispatch could not be recorded yet).
    pub fn postpone_run(&mut self, run_id: Uuid, until: DateTime<Utc>) {
        if let Some(r) = self.runs.get_mut(&run_id) {
            r.due_at = until;
            self.retime(TimerKey::Run(run_id));
        }
    }
}

/// What firing a due cron entry means, given how late we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronDecision {
    /// Instants to run now, oldest first (one, except when `run_all` catches up).
    pub fires: Vec<DateTime<Utc>>,
    pub skipped: Option<(DateTime<Utc>, DateTime<Utc>, u64)>,
    pub new_anchor: DateTime<Utc>,
}

/// Fires at or before `now` since the anchor, under the job's misfire policy. On time, that is
/// the one fire that just came due, whatever the policy; after downtime, `skip` runs only a
/// fire within `grace`, `run_once` the latest, `run_all` up to the last hundred.
pub fn decide_cron(
    schedule: &CronSchedule,
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
    policy: MisfirePolicy,
) -> CronDecision {
    const MAX_SCAN: usize = 100_000;
    let (fires, count, first, last, truncated) = match policy {
        MisfirePolicy::Skip | MisfirePolicy::RunOnce => {
            // run_once: any lateness is within "grace".
            let grace = if policy == MisfirePolicy::Skip {
                grace
            } else {
                Duration::days(365_000)
            };
            let m = schedule.misfires(anchor, now, grace, MAX_SCAN);
            let fires: Vec<_> = m.fire.into_iter().collect();
            (fires, m.skipped_count, m.first_skipped, m.last_skipped, m.truncated)
        }
        MisfirePolicy::RunAll => {
            let r = schedule.recent_fires(anchor, now, RUN_ALL_MAX, MAX_SCAN);
            (r.kept, r.skipped_count, r.first_skipped, r.last_skipped, r.truncated)
        }
    };
    let skipped = match (first, last) {
        (Some(first), Some(last)) if count > 0 => Some((first, last, count)),
        _ => None,
    };
    let mut new_anchor = anchor;
    if let Some(f) = fires.last() {
        new_anchor = new_anchor.max(*f);
    }
    if let Some((_, last, _)) = skipped {
        new_anchor = new_anchor.max(last);
    }
    if truncated {
        // Too many missed fires to count: jump to now so the next fire is the next real one.
        new_anchor = new_anchor.max(now);
    }
    CronDecision {
        fires,
        skipped,
        new_anchor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn decide(policy: MisfirePolicy, now: &str, grace_ms: i64) -> CronDecision {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        decide_cron(
            &every_second,
            at("2026-01-01T10:00:00Z"),
            at(now),
            Duration::milliseconds(grace_ms),
            policy,
        )
    }

    #[test]
    fn on_time_every_policy_runs_the_fire_that_came_due() {
        for p in [MisfirePolicy::Skip, MisfirePolicy::RunOnce, MisfirePolicy::RunAll] {
            let d = decide(p, "2026-01-01T10:00:01.005Z", 60_000);
            assert_eq!(d.fires, [at("2026-01-01T10:00:01Z")], "{p:?}");
            assert_eq!(d.skipped, None);
            assert_eq!(d.new_anchor, at("2026-01-01T10:00:01Z"));
        }
    }

    #[test]
    fn after_downtime_each_policy_catches_up_its_own_way() {
        // Ten fires (10:00:01 … 10:00:10) came due while nothing dispatched.
        let now = "2026-01-01T10:00:10.500Z";
        let first = at("2026-01-01T10:00:01Z");
        let latest = at("2026-01-01T10:00:10Z");

        // skip: only a fire within the grace window runs.
        let d = decide(MisfirePolicy::Skip, now, 3_000);
        assert_eq!(
            (d.fires.clone(), d.skipped),
            (vec![latest], Some((first, at("2026-01-01T10:00:09Z"), 9)))
        );
        let d = decide(MisfirePolicy::Skip, now, 100);
        assert_eq!((d.fires.clone(), d.skipped), (vec![], Some((first, latest, 10))));
        assert_eq!(d.new_anchor, latest);

        // run_once: the latest runs however late.
        let d = decide(MisfirePolicy::RunOnce, now, 100);
        assert_eq!(
            (d.fires.clone(), d.skipped),
            (vec![latest], Some((first, at("2026-01-01T10:00:09Z"), 9)))
        );

        // run_all: every one, oldest first.
        let d = decide(MisfirePolicy::RunAll, now, 100);
        assert_eq!(d.fires.len(), 10);
        assert_eq!((d.fires[0], d.fires[9], d.skipped), (first, latest, None));
        assert_eq!(d.new_anchor, latest);

        // run_all is bounded: of 150 missed, the last 100 run and the first 50 are skipped.
        let d = decide(MisfirePolicy::RunAll, "2026-01-01T10:02:30.200Z", 100);
        assert_eq!(d.fires.len(), RUN_ALL_MAX);
        assert_eq!(d.fires[0], at("2026-01-01T10:00:51Z"));
        assert_eq!(d.skipped, Some((first, at("2026-01-01T10:00:50Z"), 50)));
        assert_eq!(d.new_anchor, at("2026-01-01T10:02:30Z"));
    }

    fn delayed(at_: &str) -> JobDefinition {
        JobDefinition {
            name: "call".into(),
            description: String::new(),
            tags: vec![],
            request: cronbox_domain::request::RequestSpec::parse(
                cronbox_domain::request::RequestInput {
                    url: "https://example.com/hook".into(),
                    ..Default::default()
                },
                &cronbox_domain::target::TargetPolicy::guarded(),
            )
            .unwrap(),
            notify_on_failure: true,
            notify_on_recovery: true,
            alerts: Default::default(),
            misfire_policy: Default::default(),
            misfire_grace_seconds: None,
            overlap_policy: Default::default(),
            status_badge: None,
            kind: JobKind::Delayed {
                execute_at: at(at_),
                callback_url: None,
                idempotency_key: None,
            },
        }
    }

    #[test]
    fn far_delayed_calls_are_held_without_their_definition_but_keep_their_timer() {
        let mut s = State {
            hydrate_before: at("2026-01-01T10:02:00Z"),
            ..State::default()
        };
        let (near, far) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for (id, when) in [(near, "2026-01-01T10:01:00Z"), (far, "2026-01-01T18:00:00Z")] {
            s.apply(ScheduleChange::PutJob {
                job_id: id,
                workspace_id: Uuid::nil(),
                definition: delayed(when),
                anchor_at: at("2026-01-01T10:00:00Z"),
            });
        }
        assert!(s.jobs[&near].definition.is_some());
        assert!(s.jobs[&far].definition.is_none(), "held as (instant, id) only");
        assert_eq!(s.next_due(), Some(at("2026-01-01T10:01:00Z")));
        let due = s.due_entries(at("2026-01-01T18:00:00Z"), 10);
        assert_eq!(
            due,
            vec![
                (at("2026-01-01T10:01:00Z"), TimerKey::Job(near)),
                (at("2026-01-01T18:00:00Z"), TimerKey::Job(far))
            ]
        );
        s.hydrate(far, delayed("2026-01-01T18:00:00Z"));
        assert!(s.jobs[&far].definition.is_some());
        // Cron jobs too: a daily job keeps its timer and a schedule shared with its twins.
        let mut daily = delayed("2026-01-01T18:00:00Z");
        daily.kind = JobKind::Cron {
            schedule: "0 18 * * *".into(),
            timezone: "UTC".into(),
        };
        let (a, b) = (Uuid::from_u128(3), Uuid::from_u128(4));
        for id in [a, b] {
            s.apply(ScheduleChange::PutJob {
                job_id: id,
                workspace_id: Uuid::nil(),
                definition: daily.clone(),
                anchor_at: at("2026-01-01T10:00:00Z"),
            });
        }
        assert!(s.jobs[&a].definition.is_none());
        let (sa, sb) = (
            s.jobs[&a].schedule.clone().unwrap(),
            s.jobs[&b].schedule.clone().unwrap(),
        );
        assert!(Arc::ptr_eq(&sa, &sb), "one parsed schedule for both");
        assert!(s
            .due_entries(at("2026-01-01T18:00:00Z"), 10)
            .contains(&(at("2026-01-01T18:00:00Z"), TimerKey::Job(a))));
        // Rows loaded at start-up without a definition keep their instant.
        let rows = vec![JobRow {
            job_id: far,
            workspace_id: Uuid::nil(),
            active: true,
            definition: None,
            anchor_at: at("2026-01-01T10:00:00Z"),
            execute_at: Some(at("2026-01-01T18:00:00Z")),
        }];
        let s = State::from_rows(rows, vec![], at("2026-01-01T10:02:00Z"));
        assert_eq!(s.next_due(), Some(at("2026-01-01T18:00:00Z")));
    }

    #[test]
    fn parked_entries_leave_the_timers_until_released_earliest_first() {
        let mut s = State::default();
        let ws = Uuid::from_u128(9);
        let calls: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
        for (i, id) in calls.iter().enumerate() {
            s.apply(ScheduleChange::PutJob {
                job_id: *id,
                workspace_id: ws,
                definition: delayed(&format!("2026-01-01T10:00:0{}Z", i + 1)),
                anchor_at: at("2026-01-01T09:00:00Z"),
            });
        }
        // Given all three due, when the last two are parked, only the first is on the timers.
        for id in &calls[1..] {
            s.park(TimerKey::Job(*id), ws);
        }
        assert_eq!(s.parked(ws), 2);
        let due = s.due_entries(at("2026-01-01T11:00:00Z"), 10);
        assert_eq!(due, vec![(at("2026-01-01T10:00:01Z"), TimerKey::Job(calls[0]))]);
        // A parked entry that changes stays parked; one that goes away leaves.
        s.remove_job(calls[2]);
        assert_eq!(s.parked(ws), 1);
        // Released, it is due again at its own time.
        s.release(ws, 5);
        assert_eq!(s.parked(ws), 0);
        let due = s.due_entries(at("2026-01-01T11:00:00Z"), 10);
        assert_eq!(due.len(), 2);
        assert_eq!(due[1], (at("2026-01-01T10:00:02Z"), TimerKey::Job(calls[1])));
    }
}
