//! The run aggregate: one execution of a job, through all its attempts.
//!
//! ```text
//! scheduled ─▶ dispatched ─▶ running ─▶ succeeded
//!                  ▲            │ └────▶ failed
//!                  └─ retry_scheduled ◀┘
//! skipped (fires missed while the dispatcher was down, recorded instead of silently dropped)
//! ```
//!
//! Every decision (success or failure, retry or give up, when to retry) is made here from the
//! attempt's outcome, so the executor only reports what happened on the wire.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::policy::{self, SkipReason, StopReason};
use crate::request::RequestSpec;

/// Only this much of a response body is kept in the execution log.
pub const MAX_STORED_BODY_BYTES: usize = 10 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A cron job's scheduled fire.
    Schedule,
    /// A delayed call reaching its `execute_at`.
    Delayed,
    /// "Run now" from the API.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Delayed => "delayed",
            Self::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    Connect,
    Dns,
    Tls,
    TooLarge,
    HttpStatus,
    /// The response arrived with an expected status but failed a body check.
    Assertion,
    BlockedTarget,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        Self::Timeout,
        Self::Connect,
        Self::Dns,
        Self::Tls,
        Self::TooLarge,
        Self::HttpStatus,
        Self::Assertion,
        Self::BlockedTarget,
        Self::Other,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::TooLarge => "too_large",
            Self::HttpStatus => "http_status",
            Self::Assertion => "assertion",
            Self::BlockedTarget => "blocked_target",
            Self::Other => "other",
        }
    }
}

/// How a stored response body is written: as itself, or base64 when it is not text the
/// database can hold (invalid UTF-8, or a NUL character, which PostgreSQL's `text` and `jsonb`
/// refuse: one such body in a read model would stop the execution log for every tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    #[default]
    Text,
    Base64,
}

impl BodyEncoding {
    pub fn is_text(&self) -> bool {
        *self == Self::Text
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Base64 => "base64",
        }
    }
}

/// The stored form of the first bytes of a response body: the text itself when it is UTF-8
/// without NUL, otherwise base64 of the bytes, so nothing is lost and nothing stored can be
/// refused by the read models. `truncated` says the bytes are a prefix: a character cut in two
/// at the end is then dropped rather than turning the whole body into base64.
pub fn stored_body(bytes: &[u8], truncated: bool) -> (String, BodyEncoding) {
    use base64::Engine as _;
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => Some(t),
        // Only an incomplete sequence at the very end (error_len None) is a cut, not bad data.
        Err(e) if truncated && e.error_len().is_none() => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    match text {
        Some(t) if !t.contains('\0') => (t.to_string(), BodyEncoding::Text),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            BodyEncoding::Base64,
        ),
    }
}

/// `s` without NUL characters (replaced by U+FFFD): for short diagnostic texts (error
/// messages, header values) that are shown, not kept byte for byte.
pub fn without_nul(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// What a piece of a run's work is: an attempt of its request, or a try of its callback. The
/// schedule index's waiting runs, the dispatcher's timers and the messages to executors all carry
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// An attempt of the run's request (the first, a manual run, a retry).
    #[default]
    Attempt,
    /// A try of the delayed call's callback.
    Callback,
}

impl Work {
    pub fn is_attempt(&self) -> bool {
        *self == Self::Attempt
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attempt => "attempt",
            Self::Callback => "callback",
        }
    }
    /// The stored form back (anything but `callback` is an attempt, as rows written before the
    /// column existed are).
    pub fn parse(s: &str) -> Self {
        if s == "callback" {
            Self::Callback
        } else {
            Self::Attempt
        }
    }
}

/// What one attempt observed on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AttemptOutcome {
    pub status_code: Option<u16>,
    pub response_headers: Vec<(String, String)>,
    /// The first [`MAX_STORED_BODY_BYTES`] of the body, encoded as `response_body_encoding`
    /// says (see [`stored_body`]).
    pub response_body: Option<String>,
    /// Absent (text) in outcomes recorded before binary bodies were kept as base64.
    #[serde(default, skip_serializing_if = "BodyEncoding::is_text")]
    pub response_body_encoding: BodyEncoding,
    pub response_size: u64,
    pub duration_ms: u64,
    /// Transport-level failure, or why a response that arrived did not count as success.
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    /// Whether the response met the request's success criteria (expected status, body checks).
    /// Absent in outcomes recorded before criteria existed: those succeeded on any 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
}

impl AttemptOutcome {
    /// The outcome in a form every read model can store. Outcomes are made safe when recorded
    /// ([`stored_body`]); this also covers those recorded before that, whose body was lossy
    /// UTF-8 and may hold NUL: such a body becomes base64 of its UTF-8 bytes. Pure, so a
    /// rebuild writes the same rows.
    pub fn storable(mut self) -> Self {
        if let Some(body) = &self.response_body {
            if self.response_body_encoding.is_text() && body.contains('\0') {
                let (b, enc) = stored_body(body.as_bytes(), false);
                self.response_body = Some(b);
                self.response_body_encoding = enc;
            }
        }
        if let Some(m) = &self.error_message {
            if m.contains('\0') {
                self.error_message = Some(without_nul(m).into_owned());
            }
        }
        for (name, value) in &mut self.response_headers {
            if name.contains('\0') || value.contains('\0') {
                *name = without_nul(name).into_owned();
                *value = without_nul(value).into_owned();
            }
        }
        self
    }

    pub fn is_success(&self) -> bool {
        self.error_kind.is_none()
            && match self.accepted {
                Some(accepted) => accepted,
                None => matches!(self.status_code, Some(200..=299)),
            }
    }

    /// The error type recorded for a failed attempt: the transport error, or `http_status`.
    pub fn failure_kind(&self) -> Option<ErrorKind> {
        if self.is_success() {
            None
        } else {
            Some(self.error_kind.unwrap_or(ErrorKind::HttpStatus))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub workspace_id: Uuid,
    pub job_id: Uuid,
    pub trigger: Trigger,
    pub scheduled_for: DateTime<Utc>,
    pub request: RequestSpec,
    pub callback_url: Option<String>,
    /// A re-run of this past run (an operator's or admin's "run it again").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<Uuid>,
}

// The scheduling variants carry the whole request; commands and events live briefly, one at a
// time, so boxing it would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunCommand {
    Schedule {
        run_id: Uuid,
        plan: RunPlan,
        at: DateTime<Utc>,
    },
    RecordSkipped {
        run_id: Uuid,
        workspace_id: Uuid,
        job_id: Uuid,
        first_skipped: DateTime<Utc>,
        last_skipped: DateTime<Utc>,
        skipped_count: u64,
        reason: SkipReason,
        at: DateTime<Utc>,
    },
    Dispatch {
        attempt: u32,
        at: DateTime<Utc>,
    },
    StartAttempt {
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// One delivery attempt of the delayed call's callback (after the run's final outcome).
    RecordCallback {
        attempt: u32,
        outcome: AttemptOutcome,
        jitter: f64,
        at: DateTime<Utc>,
    },
    FinishAttempt {
        attempt: u32,
        outcome: AttemptOutcome,
        /// Uniform in [0, 1), drawn by the executor: the aggregate stays deterministic and the
        /// chosen retry time is recorded in `RetryScheduled`.
        jitter: f64,
        at: DateTime<Utc>,
    },
    /// CronBox stops the run for `reason`: a run waiting for dispatch (manual, retry) is
    /// cancelled, and a pending callback is not delivered. A run in flight finishes (it is then
    /// not retried: its retry comes back as a waiting run and is cancelled in turn).
    Cancel {
        reason: StopReason,
        at: DateTime<Utc>,
    },
    /// The dispatcher hands callback try `attempt` to an executor (its timer came due).
    DispatchCallback {
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// Moves a callback recorded before callbacks had timers (its retries rode on a delayed
    /// redelivery) onto the dispatcher's timers.
    ScheduleCallback {
        at: DateTime<Utc>,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunEvent {
    /// A callback POST was tried; `next_at` is when the next try is due (None: no more).
    CallbackAttempted {
        attempt: u32,
        outcome: AttemptOutcome,
        next_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    CallbackDelivered {
        attempts: u32,
        at: DateTime<Utc>,
    },
    CallbackFailed {
        attempts: u32,
        at: DateTime<Utc>,
    },
    RunScheduled {
        run_id: Uuid,
        plan: RunPlan,
        at: DateTime<Utc>,
    },
    RunSkipped {
        run_id: Uuid,
        workspace_id: Uuid,
        job_id: Uuid,
        first_skipped: DateTime<Utc>,
        last_skipped: DateTime<Utc>,
        skipped_count: u64,
        #[serde(default)]
        reason: SkipReason,
        at: DateTime<Utc>,
    },
    RunDispatched {
        attempt: u32,
        at: DateTime<Utc>,
    },
    AttemptStarted {
        attempt: u32,
        at: DateTime<Utc>,
    },
    AttemptFinished {
        attempt: u32,
        outcome: AttemptOutcome,
        at: DateTime<Utc>,
    },
    RetryScheduled {
        workspace_id: Uuid,
        job_id: Uuid,
        attempt: u32,
        retry_at: DateTime<Utc>,
    },
    RunSucceeded {
        job_id: Uuid,
        attempts: u32,
        at: DateTime<Utc>,
    },
    RunFailed {
        job_id: Uuid,
        attempts: u32,
        error_kind: ErrorKind,
        at: DateTime<Utc>,
    },
    /// A run that was waiting for dispatch will not run (see [`RunCommand::Cancel`]).
    RunCancelled {
        workspace_id: Uuid,
        job_id: Uuid,
        reason: StopReason,
        at: DateTime<Utc>,
    },
    /// Callback try `attempt` is due at `due_at` (the dispatcher's timer).
    CallbackScheduled {
        workspace_id: Uuid,
        job_id: Uuid,
        attempt: u32,
        due_at: DateTime<Utc>,
    },
    /// Callback try `attempt` was handed to an executor.
    CallbackDispatched {
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// The callback will not be delivered (see [`RunCommand::Cancel`]).
    CallbackCancelled {
        reason: StopReason,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for RunEvent {
    fn event_type(&self) -> String {
        match self {
            Self::RunScheduled { .. } => "RunScheduled",
            Self::CallbackAttempted { .. } => "CallbackAttempted",
            Self::CallbackDelivered { .. } => "CallbackDelivered",
            Self::CallbackFailed { .. } => "CallbackFailed",
            Self::RunSkipped { .. } => "RunSkipped",
            Self::RunDispatched { .. } => "RunDispatched",
            Self::AttemptStarted { .. } => "AttemptStarted",
            Self::AttemptFinished { .. } => "AttemptFinished",
            Self::RetryScheduled { .. } => "RetryScheduled",
            Self::RunSucceeded { .. } => "RunSucceeded",
            Self::RunFailed { .. } => "RunFailed",
            Self::RunCancelled { .. } => "RunCancelled",
            Self::CallbackScheduled { .. } => "CallbackScheduled",
            Self::CallbackDispatched { .. } => "CallbackDispatched",
            Self::CallbackCancelled { .. } => "CallbackCancelled",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("run already exists")]
    AlreadyExists,
    #[error("run not found")]
    NotFound,
    /// Another executor started this attempt and may still be calling.
    #[error("the attempt is in progress elsewhere until {until}")]
    AttemptInProgress { until: DateTime<Utc> },
    #[error("run is {status:?}; cannot {action} attempt {attempt}")]
    WrongState {
        status: RunStatus,
        action: &'static str,
        attempt: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    #[default]
    Scheduled,
    Dispatched,
    Running,
    RetryScheduled,
    Succeeded,
    Failed,
    Skipped,
    /// Stopped before it ran (its job was paused or deleted, or its workspace deleted).
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::RetryScheduled => "retry_scheduled",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Scheduled,
            Self::Dispatched,
            Self::Running,
            Self::RetryScheduled,
            Self::Succeeded,
            Self::Failed,
            Self::Skipped,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub plan: Option<RunPlan>,
    pub status: RunStatus,
    /// The attempt being dispatched/run, 1-based; 0 before the first dispatch.
    pub attempt: u32,
    pub finished_attempts: u32,
    /// When the attempt in progress (status running) last started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub callback: CallbackState,
    /// The latest attempt's outcome and when it finished (what a callback reports).
    #[serde(default)]
    pub last_outcome: Option<AttemptOutcome>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Delivery of a delayed call's result to its `callback_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackState {
    pub attempts: u32,
    /// When the next try is due; None before the first and after the last.
    pub next_at: Option<DateTime<Utc>>,
    pub done: bool,
    /// Tries are timed by the dispatcher (`CallbackScheduled`); false only for callbacks
    /// recorded before that, which a `ScheduleCallback` moves over.
    #[serde(default)]
    pub timed: bool,
    /// The try waiting for its timer.
    #[serde(default)]
    pub due: Option<u32>,
    /// The try handed to an executor, and when.
    #[serde(default)]
    pub in_flight: Option<(u32, DateTime<Utc>)>,
}

/// Tries of a callback before it is given up (`CallbackFailed`).
pub const CALLBACK_MAX_ATTEMPTS: u32 = 5;
/// Callback retries wait between half and all of 10 s, 20 s, 40 s, 80 s.
pub const CALLBACK_RETRY_BASE_SECONDS: u32 = 10;
pub const CALLBACK_RETRY_MAX_SECONDS: u32 = 300;

/// How long after its request timeout a started attempt still belongs to the executor that
/// started it. A second copy of the message arriving meanwhile (a redelivery, a reconciler
/// re-publish) waits instead of calling the target a second time in parallel; after it, the
/// first executor is presumed dead and the attempt may start again.
pub const LEASE_MARGIN_SECONDS: i64 = 15;

impl Run {
    fn wrong(&self, action: &'static str, attempt: u32) -> RunError {
        RunError::WrongState {
            status: self.status,
            action,
            attempt,
        }
    }

    /// The callback URL if this run's result still has to be delivered to it: the run has its
    /// final outcome and the callback is neither delivered nor given up.
    pub fn pending_callback(&self) -> Option<&str> {
        let url = self.plan.as_ref()?.callback_url.as_deref()?;
        let finished = matches!(self.status, RunStatus::Succeeded | RunStatus::Failed);
        (finished && !self.callback.done).then_some(url)
    }

    /// Until when the attempt in progress is leased to the executor that started it.
    pub fn lease_until(&self) -> Option<DateTime<Utc>> {
        if self.status != RunStatus::Running {
            return None;
        }
        let timeout = i64::from(self.plan.as_ref()?.request.timeout_seconds);
        Some(self.started_at? + chrono::Duration::seconds(timeout + LEASE_MARGIN_SECONDS))
    }

    /// Whether a message for `attempt` still needs its HTTP call: false once that attempt has
    /// finished (a redelivery after the outcome was committed must not call the target again).
    pub fn needs_attempt(&self, attempt: u32) -> bool {
        self.plan.is_some()
            && attempt == self.attempt
            && matches!(self.status, RunStatus::Dispatched | RunStatus::Running)
    }
}

impl Aggregate for Run {
    const TYPE: &'static str = "Run";
    type Command = RunCommand;
    type Event = RunEvent;
    type Error = RunError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        match command {
            RunCommand::Schedule { run_id, plan, at } => {
                if self.id.is_some() {
                    return Err(RunError::AlreadyExists);
                }
                sink.write(RunEvent::RunScheduled { run_id, plan, at }, self).await;
            }
            RunCommand::RecordSkipped {
                run_id,
                workspace_id,
                job_id,
                first_skipped,
                last_skipped,
                skipped_count,
                reason,
                at,
            } => {
                if self.id.is_some() {
                    return Err(RunError::AlreadyExists);
                }
                sink.write(
                    RunEvent::RunSkipped {
                        run_id,
                        workspace_id,
                        job_id,
                        first_skipped,
                        last_skipped,
                        skipped_count,
                        reason,
                        at,
                    },
                    self,
                )
                .await;
            }
            RunCommand::Dispatch { attempt, at } => {
                let expected = match self.status {
                    RunStatus::Scheduled if self.plan.is_some() => 1,
                    RunStatus::RetryScheduled => self.attempt,
                    _ => return Err(self.wrong("dispatch", attempt)),
                };
                if attempt != expected {
                    return Err(self.wrong("dispatch", attempt));
                }
                sink.write(RunEvent::RunDispatched { attempt, at }, self).await;
            }
            RunCommand::StartAttempt { attempt, at } => {
                if !self.needs_attempt(attempt) {
                    return Err(self.wrong("start", attempt));
                }
                if let Some(until) = self.lease_until().filter(|u| at < *u) {
                    return Err(RunError::AttemptInProgress { until });
                }
                // Started again after a redelivery: recorded too, so the log shows the repeat.
                sink.write(RunEvent::AttemptStarted { attempt, at }, self).await;
            }
            RunCommand::Cancel { reason, at } => {
                let (workspace_id, job_id) = match (&self.plan, self.workspace_id) {
                    (Some(p), _) => (p.workspace_id, p.job_id),
                    _ => return Err(RunError::NotFound),
                };
                match self.status {
                    RunStatus::Scheduled | RunStatus::RetryScheduled => {
                        sink.write(
                            RunEvent::RunCancelled {
                                workspace_id,
                                job_id,
                                reason,
                                at,
                            },
                            self,
                        )
                        .await
                    }
                    // A callback try already with an executor finishes; its retry is cancelled.
                    _ if self.pending_callback().is_some() && self.callback.in_flight.is_none() => {
                        sink.write(RunEvent::CallbackCancelled { reason, at }, self).await
                    }
                    _ => return Err(self.wrong("cancel", self.attempt)),
                }
            }
            RunCommand::DispatchCallback { attempt, at } => {
                if self.pending_callback().is_none() || self.callback.due != Some(attempt) {
                    return Err(self.wrong("dispatch callback", attempt));
                }
                sink.write(RunEvent::CallbackDispatched { attempt, at }, self).await;
            }
            RunCommand::ScheduleCallback { at } => {
                let Some(plan) = &self.plan else {
                    return Err(RunError::NotFound);
                };
                if self.pending_callback().is_none() || self.callback.timed {
                    return Err(self.wrong("schedule callback", self.callback.attempts + 1));
                }
                let event = RunEvent::CallbackScheduled {
                    workspace_id: plan.workspace_id,
                    job_id: plan.job_id,
                    attempt: self.callback.attempts + 1,
                    due_at: self.callback.next_at.unwrap_or(at),
                };
                sink.write(event, self).await;
            }
            RunCommand::RecordCallback {
                attempt,
                outcome,
                jitter,
                at,
            } => {
                let expected = if self.callback.timed {
                    self.callback.in_flight.map(|(a, _)| a)
                } else {
                    Some(self.callback.attempts + 1)
                };
                if self.pending_callback().is_none() || expected != Some(attempt) {
                    return Err(self.wrong("record callback", attempt));
                }
                let delivered = outcome.is_success();
                let next_at = (!delivered && attempt < CALLBACK_MAX_ATTEMPTS).then(|| {
                    let wait = policy::retry_delay(
                        policy::Backoff::Exponential,
                        CALLBACK_RETRY_BASE_SECONDS,
                        CALLBACK_RETRY_MAX_SECONDS,
                        attempt + 1,
                        0.5 + jitter / 2.0,
                        None,
                    );
                    at + Duration::seconds(i64::from(wait))
                });
                sink.write(
                    RunEvent::CallbackAttempted {
                        attempt,
                        outcome,
                        next_at,
                        at,
                    },
                    self,
                )
                .await;
                if delivered {
                    sink.write(RunEvent::CallbackDelivered { attempts: attempt, at }, self)
                        .await;
                } else if let Some(due_at) = next_at {
                    let (workspace_id, job_id) = self
                        .plan
                        .as_ref()
                        .map(|p| (p.workspace_id, p.job_id))
                        .ok_or(RunError::NotFound)?;
                    sink.write(
                        RunEvent::CallbackScheduled {
                            workspace_id,
                            job_id,
                            attempt: attempt + 1,
                            due_at,
                        },
                        self,
                    )
                    .await;
                } else {
                    sink.write(RunEvent::CallbackFailed { attempts: attempt, at }, self)
                        .await;
                }
            }
            RunCommand::FinishAttempt {
                attempt,
                outcome,
                jitter,
                at,
            } => {
                if !(self.status == RunStatus::Running && attempt == self.attempt) {
                    return Err(self.wrong("finish", attempt));
                }
                let Some(plan) = &self.plan else {
                    return Err(RunError::NotFound);
                };
                let (request, workspace_id, job_id) = (plan.request.clone(), plan.workspace_id, plan.job_id);
                let has_callback = plan.callback_url.is_some();
                let failure = outcome.failure_kind();
                let retryable = policy::is_retryable(&request.retry_on, &outcome);
                let retry_after = policy::retry_after_seconds(&outcome, at.timestamp());
                sink.write(RunEvent::AttemptFinished { attempt, outcome, at }, self)
                    .await;
                match failure {
                    None => {
                        sink.write(
                            RunEvent::RunSucceeded {
                                job_id,
                                attempts: attempt,
                                at,
                            },
                            self,
                        )
                        .await;
                        if has_callback {
                            let first = RunEvent::CallbackScheduled {
                                workspace_id,
                                job_id,
                                attempt: 1,
                                due_at: at,
                            };
                            sink.write(first, self).await;
                        }
                    }
                    Some(_) if attempt <= request.retry_count && retryable => {
                        let delay = policy::retry_delay(
                            request.retry_backoff,
                            request.retry_delay_seconds,
                            request.retry_max_delay_seconds,
                            attempt + 1,
                            jitter,
                            retry_after,
                        );
                        let retry_at = at + Duration::seconds(i64::from(delay));
                        sink.write(
                            RunEvent::RetryScheduled {
                                workspace_id,
                                job_id,
                                attempt: attempt + 1,
                                retry_at,
                            },
                            self,
                        )
                        .await;
                    }
                    Some(error_kind) => {
                        sink.write(
                            RunEvent::RunFailed {
                                job_id,
                                attempts: attempt,
                                error_kind,
                                at,
                            },
                            self,
                        )
                        .await;
                        if has_callback {
                            let first = RunEvent::CallbackScheduled {
                                workspace_id,
                                job_id,
                                attempt: 1,
                                due_at: at,
                            };
                            sink.write(first, self).await;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RunEvent::RunScheduled { run_id, plan, .. } => {
                self.id = Some(run_id);
                self.workspace_id = Some(plan.workspace_id);
                self.plan = Some(plan);
                self.status = RunStatus::Scheduled;
            }
            RunEvent::RunSkipped {
                run_id, workspace_id, ..
            } => {
                self.id = Some(run_id);
                self.workspace_id = Some(workspace_id);
                self.status = RunStatus::Skipped;
            }
            RunEvent::RunDispatched { attempt, .. } => {
                self.status = RunStatus::Dispatched;
                self.attempt = attempt;
            }
            RunEvent::AttemptStarted { at, .. } => {
                self.status = RunStatus::Running;
                self.started_at = Some(at);
            }
            RunEvent::AttemptFinished { attempt, outcome, at } => {
                self.finished_attempts = attempt;
                self.last_outcome = Some(outcome);
                self.finished_at = Some(at);
            }
            RunEvent::RetryScheduled { attempt, .. } => {
                self.status = RunStatus::RetryScheduled;
                self.attempt = attempt;
            }
            RunEvent::CallbackAttempted { attempt, next_at, .. } => {
                self.callback.attempts = attempt;
                self.callback.next_at = next_at;
                self.callback.in_flight = None;
            }
            RunEvent::CallbackDelivered { .. }
            | RunEvent::CallbackFailed { .. }
            | RunEvent::CallbackCancelled { .. } => {
                self.callback.done = true;
                self.callback.next_at = None;
                self.callback.due = None;
            }
            RunEvent::CallbackScheduled { attempt, due_at, .. } => {
                self.callback.timed = true;
                self.callback.due = Some(attempt);
                self.callback.next_at = Some(due_at);
            }
            RunEvent::CallbackDispatched { attempt, at } => {
                self.callback.due = None;
                self.callback.in_flight = Some((attempt, at));
            }
            RunEvent::RunSucceeded { .. } => self.status = RunStatus::Succeeded,
            RunEvent::RunFailed { .. } => self.status = RunStatus::Failed,
            RunEvent::RunCancelled { .. } => self.status = RunStatus::Cancelled,
        }
    }
}

/// Runs one command through the aggregate's own `handle`, without any IO: what the batch paths
/// (dispatcher) use to produce exactly the events cqrs-es would.
pub async fn decide(run: Run, command: RunCommand) -> Result<Vec<RunEvent>, RunError> {
    Ok(crate::decide(&run, command).await?.1)
}

/// The events a dispatcher records for a fresh fire: scheduled and dispatched (attempt 1).
/// Produced through the aggregate itself so the batch path of the dispatcher cannot drift from
/// what `handle` would decide.
pub async fn fire_events(run_id: Uuid, plan: RunPlan, at: DateTime<Utc>) -> Result<Vec<RunEvent>, RunError> {
    let mut run = Run::default();
    let sink = EventSink::default();
    run.handle(RunCommand::Schedule { run_id, plan, at }, &(), &sink)
        .await?;
    run.handle(RunCommand::Dispatch { attempt: 1, at }, &(), &sink).await?;
    Ok(sink.collect().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RequestInput, RequestSpec};
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<Run>;
    const RUN: Uuid = Uuid::from_u128(77);
    const WS: Uuid = Uuid::from_u128(1);
    const JOB: Uuid = Uuid::from_u128(2);

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }
    fn plan(retries: i64) -> RunPlan {
        RunPlan {
            workspace_id: Uuid::from_u128(1),
            job_id: Uuid::from_u128(2),
            trigger: Trigger::Schedule,
            scheduled_for: t(0),
            request: RequestSpec::parse(
                RequestInput {
                    url: "https://example.com".into(),
                    retry_count: Some(retries),
                    retry_delay_seconds: Some(30),
                    ..Default::default()
                },
                &crate::target::TargetPolicy::guarded(),
            )
            .unwrap(),
            callback_url: None,
            rerun_of: None,
        }
    }
    fn scheduled(retries: i64) -> RunEvent {
        RunEvent::RunScheduled {
            run_id: RUN,
            plan: plan(retries),
            at: t(0),
        }
    }
    fn ok_outcome() -> AttemptOutcome {
        AttemptOutcome {
            status_code: Some(204),
            duration_ms: 12,
            ..Default::default()
        }
    }
    fn status_outcome(code: u16) -> AttemptOutcome {
        AttemptOutcome {
            status_code: Some(code),
            duration_ms: 12,
            ..Default::default()
        }
    }
    fn timeout_outcome() -> AttemptOutcome {
        AttemptOutcome {
            error_kind: Some(ErrorKind::Timeout),
            error_message: Some("timed out".into()),
            duration_ms: 10_000,
            ..Default::default()
        }
    }
    fn running(retries: i64) -> Vec<RunEvent> {
        vec![
            scheduled(retries),
            RunEvent::RunDispatched { attempt: 1, at: t(0) },
            RunEvent::AttemptStarted { attempt: 1, at: t(0) },
        ]
    }

    #[test]
    fn schedule_then_dispatch() {
        Spec::with(())
            .given_no_previous_events()
            .when(RunCommand::Schedule {
                run_id: RUN,
                plan: plan(0),
                at: t(0),
            })
            .then_expect_events(vec![scheduled(0)]);
        Spec::with(())
            .given(vec![scheduled(0)])
            .when(RunCommand::Schedule {
                run_id: RUN,
                plan: plan(0),
                at: t(0),
            })
            .then_expect_error(RunError::AlreadyExists);
        Spec::with(())
            .given(vec![scheduled(0)])
            .when(RunCommand::Dispatch { attempt: 1, at: t(0) })
            .then_expect_events(vec![RunEvent::RunDispatched { attempt: 1, at: t(0) }]);
        Spec::with(())
            .given(vec![scheduled(0), RunEvent::RunDispatched { attempt: 1, at: t(0) }])
            .when(RunCommand::Dispatch { attempt: 1, at: t(0) })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Dispatched,
                action: "dispatch",
                attempt: 1,
            });
    }

    #[test]
    fn attempt_success() {
        Spec::with(())
            .given(vec![scheduled(0), RunEvent::RunDispatched { attempt: 1, at: t(0) }])
            .when(RunCommand::StartAttempt { attempt: 1, at: t(1) })
            .then_expect_events(vec![RunEvent::AttemptStarted { attempt: 1, at: t(1) }]);
        Spec::with(())
            .given(running(0))
            .when(RunCommand::FinishAttempt {
                attempt: 1,
                outcome: ok_outcome(),
                jitter: 0.0,
                at: t(2),
            })
            .then_expect_events(vec![
                RunEvent::AttemptFinished {
                    attempt: 1,
                    outcome: ok_outcome(),
                    at: t(2),
                },
                RunEvent::RunSucceeded {
                    job_id: JOB,
                    attempts: 1,
                    at: t(2),
                },
            ]);
    }

    #[test]
    fn redelivered_attempt_can_start_again_but_finished_cannot() {
        let mut events = running(0);
        Spec::with(())
            .given(events.clone())
            .when(RunCommand::StartAttempt { attempt: 1, at: t(5) })
            .then_expect_error(RunError::AttemptInProgress { until: t(25) });
        // After the request timeout (10 s) and the lease margin, the first executor is presumed
        // dead and the attempt starts again.
        Spec::with(())
            .given(events.clone())
            .when(RunCommand::StartAttempt { attempt: 1, at: t(25) })
            .then_expect_events(vec![RunEvent::AttemptStarted { attempt: 1, at: t(25) }]);
        events.push(RunEvent::AttemptFinished {
            attempt: 1,
            outcome: ok_outcome(),
            at: t(2),
        });
        events.push(RunEvent::RunSucceeded {
            job_id: JOB,
            attempts: 1,
            at: t(2),
        });
        Spec::with(())
            .given(events)
            .when(RunCommand::StartAttempt { attempt: 1, at: t(5) })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Succeeded,
                action: "start",
                attempt: 1,
            });
    }

    #[test]
    fn failure_without_retries_fails_the_run() {
        Spec::with(())
            .given(running(0))
            .when(RunCommand::FinishAttempt {
                attempt: 1,
                outcome: status_outcome(500),
                jitter: 0.0,
                at: t(2),
            })
            .then_expect_events(vec![
                RunEvent::AttemptFinished {
                    attempt: 1,
                    outcome: status_outcome(500),
                    at: t(2),
                },
                RunEvent::RunFailed {
                    job_id: JOB,
                    attempts: 1,
                    error_kind: ErrorKind::HttpStatus,
                    at: t(2),
                },
            ]);
    }

    #[test]
    fn failure_with_retries_schedules_retry_then_gives_up() {
        Spec::with(())
            .given(running(1))
            .when(RunCommand::FinishAttempt {
                attempt: 1,
                outcome: timeout_outcome(),
                jitter: 0.0,
                at: t(10),
            })
            .then_expect_events(vec![
                RunEvent::AttemptFinished {
                    attempt: 1,
                    outcome: timeout_outcome(),
                    at: t(10),
                },
                RunEvent::RetryScheduled {
                    workspace_id: WS,
                    job_id: JOB,
                    attempt: 2,
                    retry_at: t(40),
                },
            ]);
        let mut events = running(1);
        events.extend([
            RunEvent::AttemptFinished {
                attempt: 1,
                outcome: timeout_outcome(),
                at: t(10),
            },
            RunEvent::RetryScheduled {
                workspace_id: WS,
                job_id: JOB,
                attempt: 2,
                retry_at: t(40),
            },
        ]);
        Spec::with(())
            .given(events.clone())
            .when(RunCommand::Dispatch { attempt: 1, at: t(40) })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::RetryScheduled,
                action: "dispatch",
                attempt: 1,
            });
        events.extend([
            RunEvent::RunDispatched { attempt: 2, at: t(40) },
            RunEvent::AttemptStarted { attempt: 2, at: t(40) },
        ]);
        Spec::with(())
            .given(events)
            .when(RunCommand::FinishAttempt {
                attempt: 2,
                outcome: status_outcome(503),
                jitter: 0.0,
                at: t(41),
            })
            .then_expect_events(vec![
                RunEvent::AttemptFinished {
                    attempt: 2,
                    outcome: status_outcome(503),
                    at: t(41),
                },
                RunEvent::RunFailed {
                    job_id: JOB,
                    attempts: 2,
                    error_kind: ErrorKind::HttpStatus,
                    at: t(41),
                },
            ]);
    }

    #[test]
    fn finish_of_wrong_attempt_is_refused() {
        Spec::with(())
            .given(running(0))
            .when(RunCommand::FinishAttempt {
                attempt: 2,
                outcome: ok_outcome(),
                jitter: 0.0,
                at: t(2),
            })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Running,
                action: "finish",
                attempt: 2,
            });
    }

    #[test]
    fn skipped_run_is_terminal() {
        let skipped = RunEvent::RunSkipped {
            run_id: RUN,
            workspace_id: Uuid::from_u128(1),
            job_id: Uuid::from_u128(2),
            first_skipped: t(0),
            last_skipped: t(60),
            skipped_count: 2,
            reason: SkipReason::Missed,
            at: t(100),
        };
        Spec::with(())
            .given_no_previous_events()
            .when(RunCommand::RecordSkipped {
                run_id: RUN,
                workspace_id: Uuid::from_u128(1),
                job_id: Uuid::from_u128(2),
                first_skipped: t(0),
                last_skipped: t(60),
                skipped_count: 2,
                reason: SkipReason::Missed,
                at: t(100),
            })
            .then_expect_events(vec![skipped.clone()]);
        Spec::with(())
            .given(vec![skipped])
            .when(RunCommand::Dispatch { attempt: 1, at: t(101) })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Skipped,
                action: "dispatch",
                attempt: 1,
            });
    }

    #[tokio::test]
    async fn fire_events_match_handle() {
        let events = fire_events(RUN, plan(0), t(0)).await.unwrap();
        assert_eq!(
            events,
            vec![scheduled(0), RunEvent::RunDispatched { attempt: 1, at: t(0) }]
        );
    }

    #[test]
    fn callbacks_follow_the_final_outcome_retry_and_give_up() {
        let mut with_cb = plan(0);
        with_cb.callback_url = Some("https://example.com/cb".into());
        let running = vec![
            RunEvent::RunScheduled {
                run_id: RUN,
                plan: with_cb,
                at: t(0),
            },
            RunEvent::RunDispatched { attempt: 1, at: t(0) },
            RunEvent::AttemptStarted { attempt: 1, at: t(0) },
        ];
        let scheduled_cb = |attempt, due_at| RunEvent::CallbackScheduled {
            workspace_id: WS,
            job_id: JOB,
            attempt,
            due_at,
        };
        // The final outcome schedules the first try on the dispatcher's timers, at once.
        Spec::with(())
            .given(running.clone())
            .when(RunCommand::FinishAttempt {
                attempt: 1,
                outcome: ok_outcome(),
                jitter: 0.0,
                at: t(1),
            })
            .then_expect_events(vec![
                RunEvent::AttemptFinished {
                    attempt: 1,
                    outcome: ok_outcome(),
                    at: t(1),
                },
                RunEvent::RunSucceeded {
                    job_id: JOB,
                    attempts: 1,
                    at: t(1),
                },
                scheduled_cb(1, t(1)),
            ]);
        let mut finished = running;
        finished.extend([
            RunEvent::AttemptFinished {
                attempt: 1,
                outcome: ok_outcome(),
                at: t(1),
            },
            RunEvent::RunSucceeded {
                job_id: JOB,
                attempts: 1,
                at: t(1),
            },
            scheduled_cb(1, t(1)),
        ]);
        let mut run = Run::default();
        for e in finished.clone() {
            run.apply(e);
        }
        assert_eq!(run.pending_callback(), Some("https://example.com/cb"));
        // Its timer hands the try out; only the try that is due.
        Spec::with(())
            .given(finished.clone())
            .when(RunCommand::DispatchCallback { attempt: 1, at: t(1) })
            .then_expect_events(vec![RunEvent::CallbackDispatched { attempt: 1, at: t(1) }]);
        Spec::with(())
            .given(finished.clone())
            .when(RunCommand::DispatchCallback { attempt: 2, at: t(1) })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Succeeded,
                action: "dispatch callback",
                attempt: 2,
            });
        let mut dispatched = finished.clone();
        dispatched.push(RunEvent::CallbackDispatched { attempt: 1, at: t(1) });
        let cb = |attempt, outcome: AttemptOutcome, at| RunCommand::RecordCallback {
            attempt,
            outcome,
            jitter: 0.0,
            at,
        };
        // A failure schedules the next try (half to all of 10 s, with jitter 0: 5 s).
        Spec::with(())
            .given(dispatched.clone())
            .when(cb(1, status_outcome(503), t(2)))
            .then_expect_events(vec![
                RunEvent::CallbackAttempted {
                    attempt: 1,
                    outcome: status_outcome(503),
                    next_at: Some(t(7)),
                    at: t(2),
                },
                scheduled_cb(2, t(7)),
            ]);
        // Delivered ends it; a try that was not handed out is refused.
        Spec::with(())
            .given(dispatched.clone())
            .when(cb(1, ok_outcome(), t(2)))
            .then_expect_events(vec![
                RunEvent::CallbackAttempted {
                    attempt: 1,
                    outcome: ok_outcome(),
                    next_at: None,
                    at: t(2),
                },
                RunEvent::CallbackDelivered { attempts: 1, at: t(2) },
            ]);
        Spec::with(())
            .given(finished.clone())
            .when(cb(1, ok_outcome(), t(2)))
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Succeeded,
                action: "record callback",
                attempt: 1,
            });
        // The fifth failure gives up.
        let mut history = finished.clone();
        for n in 1..CALLBACK_MAX_ATTEMPTS {
            history.push(RunEvent::CallbackDispatched {
                attempt: n,
                at: t(100 * i64::from(n) - 60),
            });
            history.push(RunEvent::CallbackAttempted {
                attempt: n,
                outcome: status_outcome(500),
                next_at: Some(t(100 * i64::from(n))),
                at: t(100 * i64::from(n) - 50),
            });
            history.push(scheduled_cb(n + 1, t(100 * i64::from(n))));
        }
        history.push(RunEvent::CallbackDispatched {
            attempt: CALLBACK_MAX_ATTEMPTS,
            at: t(999),
        });
        Spec::with(())
            .given(history)
            .when(cb(CALLBACK_MAX_ATTEMPTS, status_outcome(500), t(1000)))
            .then_expect_events(vec![
                RunEvent::CallbackAttempted {
                    attempt: CALLBACK_MAX_ATTEMPTS,
                    outcome: status_outcome(500),
                    next_at: None,
                    at: t(1000),
                },
                RunEvent::CallbackFailed {
                    attempts: CALLBACK_MAX_ATTEMPTS,
                    at: t(1000),
                },
            ]);
        // A waiting callback is cancelled with the reason; one with an executor finishes.
        Spec::with(())
            .given(finished.clone())
            .when(RunCommand::Cancel {
                reason: StopReason::WorkspaceDeleted,
                at: t(3),
            })
            .then_expect_events(vec![RunEvent::CallbackCancelled {
                reason: StopReason::WorkspaceDeleted,
                at: t(3),
            }]);
        Spec::with(())
            .given(dispatched)
            .when(RunCommand::Cancel {
                reason: StopReason::WorkspaceDeleted,
                at: t(3),
            })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Succeeded,
                action: "cancel",
                attempt: 1,
            });
        // Runs without a callback URL have none to deliver.
        let mut plain = Run::default();
        plain.apply(scheduled(0));
        assert_eq!(plain.pending_callback(), None);
    }

    #[test]
    fn a_callback_recorded_before_timers_moves_onto_them() {
        let mut with_cb = plan(0);
        with_cb.callback_url = Some("https://example.com/cb".into());
        // Given a run finished by an older version: no CallbackScheduled, one failed try.
        let legacy = vec![
            RunEvent::RunScheduled {
                run_id: RUN,
                plan: with_cb,
                at: t(0),
            },
            RunEvent::RunDispatched { attempt: 1, at: t(0) },
            RunEvent::AttemptStarted { attempt: 1, at: t(0) },
            RunEvent::AttemptFinished {
                attempt: 1,
                outcome: ok_outcome(),
                at: t(1),
            },
            RunEvent::RunSucceeded {
                job_id: JOB,
                attempts: 1,
                at: t(1),
            },
            RunEvent::CallbackAttempted {
                attempt: 1,
                outcome: status_outcome(500),
                next_at: Some(t(9)),
                at: t(2),
            },
        ];
        // When it is adopted, the next try is scheduled when it was due anyway; only once.
        Spec::with(())
            .given(legacy.clone())
            .when(RunCommand::ScheduleCallback { at: t(3) })
            .then_expect_events(vec![RunEvent::CallbackScheduled {
                workspace_id: WS,
                job_id: JOB,
                attempt: 2,
                due_at: t(9),
            }]);
        let mut adopted = legacy;
        adopted.push(RunEvent::CallbackScheduled {
            workspace_id: WS,
            job_id: JOB,
            attempt: 2,
            due_at: t(9),
        });
        Spec::with(())
            .given(adopted)
            .when(RunCommand::ScheduleCallback { at: t(4) })
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Succeeded,
                action: "schedule callback",
                attempt: 2,
            });
    }

    #[test]
    fn waiting_runs_are_cancelled_with_the_reason_and_runs_in_flight_finish() {
        let retrying = vec![
            scheduled(2),
            RunEvent::RunDispatched { attempt: 1, at: t(0) },
            RunEvent::AttemptStarted { attempt: 1, at: t(0) },
            RunEvent::AttemptFinished {
                attempt: 1,
                outcome: status_outcome(500),
                at: t(1),
            },
            RunEvent::RetryScheduled {
                workspace_id: WS,
                job_id: JOB,
                attempt: 2,
                retry_at: t(31),
            },
        ];
        let cancel = RunCommand::Cancel {
            reason: StopReason::JobPaused,
            at: t(5),
        };
        // Given a retry waiting, when CronBox stops it, then it is cancelled, saying why.
        Spec::with(())
            .given(retrying)
            .when(cancel.clone())
            .then_expect_events(vec![RunEvent::RunCancelled {
                workspace_id: WS,
                job_id: JOB,
                reason: StopReason::JobPaused,
                at: t(5),
            }]);
        // Given a run with an executor, it is not cancelled: it finishes.
        Spec::with(())
            .given(running(2))
            .when(cancel.clone())
            .then_expect_error(RunError::WrongState {
                status: RunStatus::Running,
                action: "cancel",
                attempt: 1,
            });
        // A cancelled run is final: no dispatch, no attempt.
        let mut run = Run::default();
        for e in [
            scheduled(0),
            RunEvent::RunCancelled {
                workspace_id: WS,
                job_id: JOB,
                reason: StopReason::WorkspaceDeleted,
                at: t(1),
            },
        ] {
            run.apply(e);
        }
        assert!(run.status.is_terminal());
        assert!(!run.needs_attempt(1));
    }

    #[test]
    fn bodies_are_stored_as_text_only_when_the_database_can_hold_them() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        // Given plain UTF-8, it is kept as text.
        assert_eq!(
            stored_body("привет ok".as_bytes(), false),
            ("привет ok".to_string(), BodyEncoding::Text)
        );
        // Given a NUL (valid UTF-8, refused by text/jsonb), or invalid UTF-8 such as a PNG's
        // header, the bytes are kept as base64.
        assert_eq!(stored_body(b"a\0b", false), (b64(b"a\0b"), BodyEncoding::Base64));
        let png = b"\x89PNG\r\n\x1a\n";
        assert_eq!(stored_body(png, false), (b64(png), BodyEncoding::Base64));
        // Given a prefix cut inside a character, the cut character is dropped; the same bytes
        // not cut are invalid and go to base64.
        let cut = &"ж".as_bytes()[..1];
        let mut prefix = b"ok ".to_vec();
        prefix.extend_from_slice(cut);
        assert_eq!(stored_body(&prefix, true), ("ok ".to_string(), BodyEncoding::Text));
        assert_eq!(stored_body(&prefix, false).1, BodyEncoding::Base64);
    }

    #[test]
    fn outcomes_recorded_before_base64_become_storable() {
        // Given an outcome recorded with a lossy UTF-8 body holding NUL (older executors)...
        let old = AttemptOutcome {
            status_code: Some(200),
            response_body: Some("a\0b".into()),
            error_message: Some("bad\0".into()),
            response_headers: vec![("x".into(), "y\0".into())],
            ..Default::default()
        };
        // ...the stored form has no NUL left, and the body survives byte for byte.
        let fixed = old.storable();
        assert_eq!(fixed.response_body_encoding, BodyEncoding::Base64);
        assert_eq!(fixed.response_body.as_deref(), Some("YQBi"));
        assert_eq!(fixed.error_message.as_deref(), Some("bad\u{FFFD}"));
        assert!(!fixed.response_headers[0].1.contains('\0'));
        // An outcome in the old shape (no encoding field) still reads, as text.
        let read: AttemptOutcome = serde_json::from_str(r#"{"status_code":200,"response_headers":[],"response_body":"x","response_size":1,"duration_ms":1,"error_kind":null,"error_message":null}"#).unwrap();
        assert_eq!(read.response_body_encoding, BodyEncoding::Text);
    }
}
