//! The job aggregate: a cron job or a delayed call. Its stream holds only what users do to it
//! (create, update, pause, resume, delete, run now): executions are separate `Run` aggregates, so
//! the stream stays a handful of events long however often the job fires, and loading it for a
//! command stays cheap.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::policy::{MisfirePolicy, OverlapPolicy, StopReason};
use crate::request::RequestSpec;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
pub const MAX_TAGS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    Cron {
        schedule: String,
        timezone: String,
    },
    Delayed {
        execute_at: DateTime<Utc>,
        callback_url: Option<String>,
        idempotency_key: Option<String>,
    },
}

/// Everything a user defines about a job. Validated by the API before it reaches a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDefinition {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub request: RequestSpec,
    pub notify_on_failure: bool,
    pub notify_on_recovery: bool,
    /// When failures alert, how often to remind, and which channels to tell.
    #[serde(default)]
    pub alerts: crate::alert::AlertRules,
    /// Cron jobs: what to do with fires missed during downtime.
    #[serde(default)]
    pub misfire_policy: MisfirePolicy,
    /// Cron jobs: how late a fire may be and still count as on time; None: the operator's
    /// `CRONBOX_MISFIRE_GRACE_SECONDS`.
    #[serde(default)]
    pub misfire_grace_seconds: Option<u32>,
    /// Cron jobs: what a fire does while the previous run is still going.
    #[serde(default)]
    pub overlap_policy: OverlapPolicy,
    /// Cron jobs: the token of the published status badge (an SVG of the last status at an
    /// address nobody can guess); None: not published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_badge: Option<String>,
    #[serde(flatten)]
    pub kind: JobKind,
}

impl JobDefinition {
    pub fn is_cron(&self) -> bool {
        matches!(self.kind, JobKind::Cron { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobCommand {
    Create {
        job_id: Uuid,
        workspace_id: Uuid,
        definition: JobDefinition,
        at: DateTime<Utc>,
    },
    Update {
        definition: JobDefinition,
        at: DateTime<Utc>,
    },
    Pause {
        at: DateTime<Utc>,
    },
    Resume {
        at: DateTime<Utc>,
    },
    /// `already_fired` is looked up by the caller (a delayed call whose run exists cannot be
    /// cancelled any more); cron jobs ignore it.
    Delete {
        already_fired: bool,
        at: DateTime<Utc>,
    },
    RequestRun {
        run_id: Uuid,
        at: DateTime<Utc>,
    },
    /// A re-run of one of the job's past runs (whatever the job's state now: the run repeats
    /// what happened).
    RequestRerun {
        run_id: Uuid,
        at: DateTime<Utc>,
    },
    /// CronBox stops the job for `reason` (its workspace was deleted): a live cron job or a
    /// pending delayed call is deleted; one already gone is left as it is.
    Retire {
        reason: StopReason,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    JobCreated {
        job_id: Uuid,
        workspace_id: Uuid,
        definition: JobDefinition,
        at: DateTime<Utc>,
    },
    JobUpdated {
        definition: JobDefinition,
        at: DateTime<Utc>,
    },
    JobPaused {
        at: DateTime<Utc>,
    },
    JobResumed {
        at: DateTime<Utc>,
    },
    JobDeleted {
        at: DateTime<Utc>,
        /// Set when CronBox deleted it, not the user (its workspace was deleted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<StopReason>,
    },
    RunRequested {
        run_id: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for JobEvent {
    fn event_type(&self) -> String {
        match self {
            Self::JobCreated { .. } => "JobCreated",
            Self::JobUpdated { .. } => "JobUpdated",
            Self::JobPaused { .. } => "JobPaused",
            Self::JobResumed { .. } => "JobResumed",
            Self::JobDeleted { .. } => "JobDeleted",
            Self::RunRequested { .. } => "RunRequested",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job already exists")]
    AlreadyExists,
    #[error("job not found")]
    NotFound,
    #[error("{0}")]
    Invalid(crate::FieldError),
    #[error("only cron jobs can be {0}")]
    NotCron(&'static str),
    #[error("a job cannot change between cron and delayed")]
    KindChange,
    #[error("the delayed call has already been executed")]
    AlreadyExecuted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    #[default]
    Active,
    Paused,
    Deleted,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub definition: Option<JobDefinition>,
    pub status: JobStatus,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Job {
    fn live_definition(&self) -> Result<&JobDefinition, JobError> {
        match (&self.definition, self.status) {
            (Some(_), JobStatus::Deleted) | (None, _) => Err(JobError::NotFound),
            (Some(d), _) => Ok(d),
        }
    }
}

fn check_definition(d: &JobDefinition) -> Result<(), JobError> {
    let invalid = |f: &str, m: String| JobError::Invalid(crate::FieldError::new(f, "invalid", m));
    let name_len = d.name.trim().chars().count();
    if name_len == 0 || name_len > MAX_NAME_CHARS {
        return Err(invalid(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if d.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if d.tags.len() > MAX_TAGS || d.tags.iter().any(|t| t.is_empty() || t.chars().count() > 64) {
        return Err(invalid(
            "tags",
            format!("at most {MAX_TAGS} tags of 1 to 64 characters"),
        ));
    }
    if let JobKind::Cron { schedule, timezone } = &d.kind {
        crate::schedule::CronSchedule::parse(schedule, timezone).map_err(|e| {
            let field = if matches!(e, crate::schedule::ScheduleError::UnknownTimezone(_)) {
                "timezone"
            } else {
                "schedule"
            };
            JobError::Invalid(crate::FieldError::new(field, "invalid_schedule", e.to_string()))
        })?;
    }
    Ok(())
}

impl Aggregate for Job {
    const TYPE: &'static str = "Job";
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        match command {
            JobCommand::Create {
                job_id,
                workspace_id,
                definition,
                at,
            } => {
                if self.id.is_some() {
                    return Err(JobError::AlreadyExists);
                }
                check_definition(&definition)?;
                sink.write(
                    JobEvent::JobCreated {
                        job_id,
                        workspace_id,
                        definition,
                        at,
                    },
                    self,
                )
                .await;
            }
            JobCommand::Update { definition, at } => {
                let current = self.live_definition()?;
                if !current.is_cron() {
                    return Err(JobError::NotCron("updated"));
                }
                if !definition.is_cron() {
                    return Err(JobError::KindChange);
                }
                check_definition(&definition)?;
                if &definition != current {
                    sink.write(JobEvent::JobUpdated { definition, at }, self).await;
                }
            }
            JobCommand::Pause { at } => {
                if !self.live_definition()?.is_cron() {
                    return Err(JobError::NotCron("paused"));
                }
                if self.status == JobStatus::Active {
                    sink.write(JobEvent::JobPaused { at }, self).await;
                }
            }
            JobCommand::Resume { at } => {
                if !self.live_definition()?.is_cron() {
                    return Err(JobError::NotCron("resumed"));
                }
                if self.status == JobStatus::Paused {
                    sink.write(JobEvent::JobResumed { at }, self).await;
                }
            }
            JobCommand::Delete { already_fired, at } => {
                let def = self.live_definition()?;
                if !def.is_cron() && already_fired {
                    return Err(JobError::AlreadyExecuted);
                }
                sink.write(JobEvent::JobDeleted { at, reason: None }, self).await;
            }
            JobCommand::RequestRerun { run_id, at } => {
                if self.definition.is_none() {
                    return Err(JobError::NotFound);
                }
                sink.write(JobEvent::RunRequested { run_id, at }, self).await;
            }
            JobCommand::Retire { reason, at } => {
                if self.definition.is_some() && self.status != JobStatus::Deleted {
                    sink.write(
                        JobEvent::JobDeleted {
                            at,
                            reason: Some(reason),
                        },
                        self,
                    )
                    .await;
                }
            }
            JobCommand::RequestRun { run_id, at } => {
                if !self.live_definition()?.is_cron() {
                    return Err(JobError::NotCron("run on demand"));
                }
                sink.write(JobEvent::RunRequested { run_id, at }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            JobEvent::JobCreated {
                job_id,
                workspace_id,
                definition,
                at,
            } => {
                self.id = Some(job_id);
                self.workspace_id = Some(workspace_id);
                self.definition = Some(definition);
                self.status = JobStatus::Active;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            JobEvent::JobUpdated { definition, at } => {
                self.definition = Some(definition);
                self.updated_at = Some(at);
            }
            JobEvent::JobPaused { at } => {
                self.status = JobStatus::Paused;
                self.updated_at = Some(at);
            }
            JobEvent::JobResumed { at } => {
                self.status = JobStatus::Active;
                self.updated_at = Some(at);
            }
            JobEvent::JobDeleted { at, .. } => {
                self.status = JobStatus::Deleted;
                self.updated_at = Some(at);
            }
            JobEvent::RunRequested { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RequestInput, RequestSpec};
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<Job>;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }
    fn request() -> RequestSpec {
        RequestSpec::parse(
            RequestInput {
                url: "https://example.com/hook".into(),
                ..Default::default()
            },
            &crate::target::TargetPolicy::guarded(),
        )
        .unwrap()
    }
    fn cron_def(schedule: &str) -> JobDefinition {
        JobDefinition {
            name: "nightly".into(),
            description: String::new(),
            tags: vec![],
            request: request(),
            notify_on_failure: true,
            notify_on_recovery: true,
            alerts: Default::default(),
            misfire_policy: Default::default(),
            misfire_grace_seconds: None,
            overlap_policy: Default::default(),
            status_badge: None,
            kind: JobKind::Cron {
                schedule: schedule.into(),
                timezone: "Europe/Moscow".into(),
            },
        }
    }
    fn delayed_def() -> JobDefinition {
        JobDefinition {
            kind: JobKind::Delayed {
                execute_at: t(60),
                callback_url: None,
                idempotency_key: None,
            },
            ..cron_def("* * * * *")
        }
    }
    const JOB: Uuid = Uuid::from_u128(7);
    const WS: Uuid = Uuid::from_u128(1);
    fn created(def: JobDefinition) -> JobEvent {
        JobEvent::JobCreated {
            job_id: JOB,
            workspace_id: WS,
            definition: def,
            at: t(0),
        }
    }

    #[test]
    fn create_cron_job() {
        Spec::with(())
            .given_no_previous_events()
            .when(JobCommand::Create {
                job_id: JOB,
                workspace_id: WS,
                definition: cron_def("0 3 * * *"),
                at: t(0),
            })
            .then_expect_events(vec![created(cron_def("0 3 * * *"))]);
    }

    #[test]
    fn create_refuses_never_firing_schedule_and_bad_timezone() {
        Spec::with(())
            .given_no_previous_events()
            .when(JobCommand::Create {
                job_id: JOB,
                workspace_id: WS,
                definition: cron_def("0 0 30 2 *"),
                at: t(0),
            })
            .then_expect_error_message("schedule: the schedule never fires");
        let mut def = cron_def("0 3 * * *");
        def.kind = JobKind::Cron {
            schedule: "0 3 * * *".into(),
            timezone: "Mars/Olympus".into(),
        };
        let err = Spec::with(())
            .given_no_previous_events()
            .when(JobCommand::Create {
                job_id: JOB,
                workspace_id: WS,
                definition: def,
                at: t(0),
            })
            .inspect_result()
            .unwrap_err();
        assert!(
            matches!(err, JobError::Invalid(ref f) if f.field == "timezone"),
            "{err:?}"
        );
    }

    #[test]
    fn create_refuses_blank_name_and_duplicates() {
        let mut def = cron_def("* * * * *");
        def.name = "  ".into();
        let err = Spec::with(())
            .given_no_previous_events()
            .when(JobCommand::Create {
                job_id: JOB,
                workspace_id: WS,
                definition: def,
                at: t(0),
            })
            .inspect_result()
            .unwrap_err();
        assert!(matches!(err, JobError::Invalid(ref f) if f.field == "name"));
        Spec::with(())
            .given(vec![created(cron_def("* * * * *"))])
            .when(JobCommand::Create {
                job_id: JOB,
                workspace_id: WS,
                definition: cron_def("* * * * *"),
                at: t(0),
            })
            .then_expect_error(JobError::AlreadyExists);
    }

    #[test]
    fn update_changes_definition_and_ignores_no_op() {
        Spec::with(())
            .given(vec![created(cron_def("* * * * *"))])
            .when(JobCommand::Update {
                definition: cron_def("*/5 * * * *"),
                at: t(5),
            })
            .then_expect_events(vec![JobEvent::JobUpdated {
                definition: cron_def("*/5 * * * *"),
                at: t(5),
            }]);
        Spec::with(())
            .given(vec![created(cron_def("* * * * *"))])
            .when(JobCommand::Update {
                definition: cron_def("* * * * *"),
                at: t(5),
            })
            .then_expect_events(vec![]);
        Spec::with(())
            .given(vec![created(cron_def("* * * * *"))])
            .when(JobCommand::Update {
                definition: delayed_def(),
                at: t(5),
            })
            .then_expect_error(JobError::KindChange);
        Spec::with(())
            .given(vec![created(delayed_def())])
            .when(JobCommand::Update {
                definition: delayed_def(),
                at: t(5),
            })
            .then_expect_error(JobError::NotCron("updated"));
    }

    #[test]
    fn pause_resume_are_idempotent() {
        Spec::with(())
            .given(vec![created(cron_def("* * * * *"))])
            .when(JobCommand::Pause { at: t(1) })
            .then_expect_events(vec![JobEvent::JobPaused { at: t(1) }]);
        Spec::with(())
            .given(vec![created(cron_def("* * * * *")), JobEvent::JobPaused { at: t(1) }])
            .when(JobCommand::Pause { at: t(2) })
            .then_expect_events(vec![]);
        Spec::with(())
            .given(vec![created(cron_def("* * * * *")), JobEvent::JobPaused { at: t(1) }])
            .when(JobCommand::Resume { at: t(2) })
            .then_expect_events(vec![JobEvent::JobResumed { at: t(2) }]);
        Spec::with(())
            .given(vec![created(cron_def("* * * * *"))])
            .when(JobCommand::Resume { at: t(2) })
            .then_expect_events(vec![]);
        Spec::with(())
            .given(vec![created(delayed_def())])
            .when(JobCommand::Pause { at: t(2) })
            .then_expect_error(JobError::NotCron("paused"));
    }

    #[test]
    fn delete_rules() {
        Spec::with(())
            .given(vec![created(cron_def("* * * * *"))])
            .when(JobCommand::Delete {
                already_fired: true,
                at: t(3),
            })
            .then_expect_events(vec![JobEvent::JobDeleted { at: t(3), reason: None }]);
        Spec::with(())
            .given(vec![created(delayed_def())])
            .when(JobCommand::Delete {
                already_fired: false,
                at: t(3),
            })
            .then_expect_events(vec![JobEvent::JobDeleted { at: t(3), reason: None }]);
        Spec::with(())
            .given(vec![created(delayed_def())])
            .when(JobCommand::Delete {
                already_fired: true,
                at: t(3),
            })
            .then_expect_error(JobError::AlreadyExecuted);
        Spec::with(())
            .given(vec![
                created(delayed_def()),
                JobEvent::JobDeleted { at: t(3), reason: None },
            ])
            .when(JobCommand::Delete {
                already_fired: false,
                at: t(4),
            })
            .then_expect_error(JobError::NotFound);
        Spec::with(())
            .given_no_previous_events()
            .when(JobCommand::Pause { at: t(4) })
            .then_expect_error(JobError::NotFound);
    }

    #[test]
    fn run_now() {
        let run = Uuid::from_u128(99);
        Spec::with(())
            .given(vec![created(cron_def("* * * * *")), JobEvent::JobPaused { at: t(1) }])
            .when(JobCommand::RequestRun { run_id: run, at: t(2) })
            .then_expect_events(vec![JobEvent::RunRequested { run_id: run, at: t(2) }]);
        Spec::with(())
            .given(vec![
                created(cron_def("* * * * *")),
                JobEvent::JobDeleted { at: t(1), reason: None },
            ])
            .when(JobCommand::RequestRun { run_id: run, at: t(2) })
            .then_expect_error(JobError::NotFound);
    }

    #[test]
    fn retire_deletes_a_live_job_with_the_reason_once() {
        let retire = JobCommand::Retire {
            reason: StopReason::WorkspaceDeleted,
            at: t(5),
        };
        for def in [cron_def("* * * * *"), delayed_def()] {
            TestFramework::<Job>::with(())
                .given(vec![created(def)])
                .when(retire.clone())
                .then_expect_events(vec![JobEvent::JobDeleted {
                    at: t(5),
                    reason: Some(StopReason::WorkspaceDeleted),
                }]);
        }
        // Already deleted (by its user, or an earlier retire): nothing more.
        TestFramework::<Job>::with(())
            .given(vec![
                created(cron_def("* * * * *")),
                JobEvent::JobDeleted { at: t(1), reason: None },
            ])
            .when(retire)
            .then_expect_events(vec![]);
    }
}
