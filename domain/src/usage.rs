//! What a job command costs against a plan's limits, as a pure function of the job before the
//! command and the events it produced. The store applies these deltas in the same transaction
//! that appends the events, so the counters can never disagree with the log; a replay of the log
//! through the same function rebuilds them.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::job::{Job, JobEvent, JobKind, JobStatus};

/// A metered quantity with a plan limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Cron jobs that are neither paused nor deleted. Not periodic.
    ActiveCronJobs,
    /// One-off runs in a calendar month of the workspace's timezone: delayed calls created,
    /// and manual runs ("run now", re-runs) requested.
    DelayedCalls,
}

impl Counter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ActiveCronJobs => "active_cron_jobs",
            Self::DelayedCalls => "delayed_calls",
        }
    }

    /// Whether the counter starts again at zero every month.
    pub fn monthly(self) -> bool {
        matches!(self, Self::DelayedCalls)
    }
}

/// Change of each counter caused by one command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub active_cron_jobs: i64,
    pub delayed_calls: i64,
}

impl UsageDelta {
    /// Non-zero entries in a fixed order (the order in which the store locks counter rows).
    pub fn entries(&self) -> Vec<(Counter, i64)> {
        [
            (Counter::ActiveCronJobs, self.active_cron_jobs),
            (Counter::DelayedCalls, self.delayed_calls),
        ]
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .collect()
    }
}

/// The part of a job's state that usage depends on: small enough to hold for every job of the
/// log when counters are rebuilt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterState {
    pub workspace_id: Option<Uuid>,
    pub cron: bool,
    pub status: JobStatus,
}

impl MeterState {
    pub fn of(job: &Job) -> Self {
        Self {
            workspace_id: job.workspace_id,
            cron: matches!(job.definition.as_ref().map(|d| &d.kind), Some(JobKind::Cron { .. })),
            status: job.status,
        }
    }

    fn active_cron(&self) -> bool {
        self.workspace_id.is_some() && self.cron && self.status == JobStatus::Active
    }

    /// The state after `event` and what the event cost.
    pub fn step(self, event: &JobEvent) -> (Self, UsageDelta) {
        let mut next = self;
        let mut delta = UsageDelta::default();
        match event {
            JobEvent::JobCreated {
                workspace_id,
                definition,
                ..
            } => {
                next = Self {
                    workspace_id: Some(*workspace_id),
                    cron: matches!(definition.kind, JobKind::Cron { .. }),
                    status: JobStatus::Active,
                };
                delta.delayed_calls = i64::from(!next.cron);
            }
            JobEvent::JobPaused { .. } => next.status = JobStatus::Paused,
            JobEvent::JobResumed { .. } => next.status = JobStatus::Active,
            JobEvent::JobDeleted { .. } => next.status = JobStatus::Deleted,
            // A manual run is a one-off run like a delayed call: it costs one of the month's.
            JobEvent::RunRequested { .. } => delta.delayed_calls = i64::from(self.workspace_id.is_some()),
            JobEvent::JobUpdated { .. } => {}
        }
        delta.active_cron_jobs = i64::from(next.active_cron()) - i64::from(self.active_cron());
        (next, delta)
    }
}

/// The usage change of applying `events` to `before`.
pub fn job_usage_delta(before: &Job, events: &[JobEvent]) -> UsageDelta {
    let mut state = MeterState::of(before);
    let mut total = UsageDelta::default();
    for e in events {
        let (next, d) = state.step(e);
        total.active_cron_jobs += d.active_cron_jobs;
        total.delayed_calls += d.delayed_calls;
        state = next;
    }
    total
}

/// The calendar month containing `at` in `tz`, as `YYYY-MM` (the key of monthly counters).
pub fn month_of(at: DateTime<Utc>, tz: Tz) -> String {
    let local = at.with_timezone(&tz);
    format!("{:04}-{:02}", local.year(), local.month())
}

/// The first instant of the local month containing `at` and of the month after it.
pub fn month_bounds(at: DateTime<Utc>, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = at.with_timezone(&tz).date_naive();
    let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).unwrap_or(local);
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
    (local_midnight(first, tz), local_midnight(next, tz))
}

/// Midnight of `day` in `tz`; where midnight does not exist (a DST jump at 00:00), the first
/// instant after the gap.
fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are at most a few hours long; walk forward by minutes until time exists.
            (1..=24 * 60)
                .find_map(|m| {
                    tz.from_local_datetime(&(naive + chrono::Duration::minutes(m)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobDefinition;
    use crate::request::{RequestInput, RequestSpec};
    use cqrs_es::Aggregate;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn definition(kind: JobKind) -> JobDefinition {
        JobDefinition {
            name: "j".into(),
            description: String::new(),
            tags: vec![],
            request: RequestSpec::parse(
                RequestInput {
                    url: "https://example.com/".into(),
                    ..Default::default()
                },
                &crate::target::TargetPolicy::guarded(),
            )
            .unwrap(),
            notify_on_failure: true,
            notify_on_recovery: true,
            alerts: Default::default(),
            misfire_policy: Default::default(),
            misfire_grace_seconds: None,
            overlap_policy: Default::default(),
            status_badge: None,
            kind,
        }
    }

    fn cron() -> JobKind {
        JobKind::Cron {
            schedule: "* * * * *".into(),
            timezone: "UTC".into(),
        }
    }

    fn created(kind: JobKind) -> JobEvent {
        JobEvent::JobCreated {
            job_id: Uuid::nil(),
            workspace_id: Uuid::nil(),
            definition: definition(kind),
            at: at("2026-11-01T00:00:00Z"),
        }
    }

    fn job_after(events: &[JobEvent]) -> Job {
        let mut j = Job::default();
        for e in events {
            j.apply(e.clone());
        }
        j
    }

    #[test]
    fn creating_a_cron_job_adds_an_active_one() {
        let d = job_usage_delta(&Job::default(), &[created(cron())]);
        assert_eq!(
            d,
            UsageDelta {
                active_cron_jobs: 1,
                delayed_calls: 0
            }
        );
    }

    #[test]
    fn creating_a_delayed_call_counts_it_for_the_month_only() {
        let kind = JobKind::Delayed {
            execute_at: at("2026-11-02T00:00:00Z"),
            callback_url: None,
            idempotency_key: None,
        };
        let d = job_usage_delta(&Job::default(), &[created(kind.clone())]);
        assert_eq!(
            d,
            UsageDelta {
                active_cron_jobs: 0,
                delayed_calls: 1
            }
        );
        // Cancelling it later gives nothing back: the month's count is of calls created.
        let job = job_after(&[created(kind)]);
        let d = job_usage_delta(
            &job,
            &[JobEvent::JobDeleted {
                reason: None,
                at: at("2026-11-01T00:00:01Z"),
            }],
        );
        assert_eq!(d, UsageDelta::default());
    }

    #[test]
    fn pause_resume_and_delete_move_the_active_count() {
        let t = at("2026-11-01T00:00:01Z");
        let active = job_after(&[created(cron())]);
        let paused = job_after(&[created(cron()), JobEvent::JobPaused { at: t }]);
        assert_eq!(
            job_usage_delta(&active, &[JobEvent::JobPaused { at: t }]).active_cron_jobs,
            -1
        );
        assert_eq!(
            job_usage_delta(&paused, &[JobEvent::JobResumed { at: t }]).active_cron_jobs,
            1
        );
        assert_eq!(
            job_usage_delta(&active, &[JobEvent::JobDeleted { at: t, reason: None }]).active_cron_jobs,
            -1
        );
        // A paused job was not counted, so deleting it changes nothing.
        assert_eq!(
            job_usage_delta(&paused, &[JobEvent::JobDeleted { at: t, reason: None }]),
            UsageDelta::default()
        );
        assert!(UsageDelta::default().entries().is_empty());
    }

    #[test]
    fn meter_state_follows_the_aggregate() {
        let t = at("2026-11-01T00:00:01Z");
        let history = [
            created(cron()),
            JobEvent::JobPaused { at: t },
            JobEvent::JobResumed { at: t },
            JobEvent::JobDeleted { at: t, reason: None },
        ];
        let mut job = Job::default();
        let mut state = MeterState::default();
        for e in &history {
            job.apply(e.clone());
            state = state.step(e).0;
            assert_eq!(state, MeterState::of(&job));
        }
    }

    #[test]
    fn months_follow_the_workspace_timezone() {
        let moscow: Tz = "Europe/Moscow".parse().unwrap();
        // 22:00 UTC on 31 October is already 1 November in Moscow.
        assert_eq!(month_of(at("2026-10-31T22:00:00Z"), moscow), "2026-11");
        assert_eq!(month_of(at("2026-10-31T20:59:59Z"), moscow), "2026-10");
        let (start, end) = month_bounds(at("2026-11-15T12:00:00Z"), moscow);
        assert_eq!(start, at("2026-10-31T21:00:00Z"));
        assert_eq!(end, at("2026-11-30T21:00:00Z"));
        let (start, end) = month_bounds(at("2026-12-31T23:00:00Z"), chrono_tz::UTC);
        assert_eq!((start, end), (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")));
    }

    #[test]
    fn a_month_starting_in_a_dst_gap_starts_after_it() {
        // Cuba springs forward at midnight: 2024-03-10 00:00 does not exist in Havana.
        let havana: Tz = "America/Havana".parse().unwrap();
        let t = local_midnight(NaiveDate::from_ymd_opt(2024, 3, 10).unwrap(), havana);
        assert_eq!(t.with_timezone(&havana).format("%H:%M").to_string(), "01:00");
    }
}
