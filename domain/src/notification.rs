//! The notification aggregate: one message to one channel (an alert, a reminder, a recovery, a
//! test). Queued by the alert decider in the same transaction as the decision; the deliverer
//! records each try, and retries with backoff over about a day. A crash between a send and its
//! record repeats the send (at-least-once; the id is the provider's idempotency key and the
//! webhook's `webhook-id`), never skips it.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::alert::AlertDetails;
use crate::channel::DisableReason;

/// Waits before each retry (Standard Webhooks' recommendation); ±10 % jitter is added.
pub const RETRY_DELAYS_SECONDS: [i64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 86_400];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Failure,
    Reminder,
    Recovery,
    CallFailed,
    CallbackFailed,
    ChannelDisabled,
    Test,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Reminder => "reminder",
            Self::Recovery => "recovery",
            Self::CallFailed => "call_failed",
            Self::CallbackFailed => "callback_failed",
            Self::ChannelDisabled => "channel_disabled",
            Self::Test => "test",
        }
    }
    /// The event type a webhook receives.
    pub fn webhook_type(self) -> &'static str {
        match self {
            Self::Failure => "job.failing",
            Self::Reminder => "job.still_failing",
            Self::Recovery => "job.recovered",
            Self::CallFailed => "delayed_call.failed",
            Self::CallbackFailed => "delayed_call.callback_failed",
            Self::ChannelDisabled => "channel.disabled",
            Self::Test => "test",
        }
    }
}

/// Everything a message says; rendered per channel and language when it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationContent {
    pub kind: NotificationKind,
    #[serde(default)]
    pub details: AlertDetails,
    /// Recoveries: how many runs failed and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_runs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<u32>,
    /// Channel-disabled notices: which channel and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<DisableReason>,
}

impl NotificationContent {
    pub fn new(kind: NotificationKind, details: AlertDetails) -> Self {
        Self {
            kind,
            details,
            failed_runs: None,
            failing_seconds: None,
            reminder: None,
            disabled_channel: None,
            disabled_reason: None,
        }
    }
}

/// The notification of one alert event (by its sequence in the alert's stream) on one channel.
pub fn notification_id(alert_id: Uuid, alert_sequence: i64, channel_id: Uuid) -> Uuid {
    Uuid::new_v5(&alert_id, format!("{alert_sequence}:{channel_id}").as_bytes())
}

/// How one try ended, as the deliverer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TryOutcome {
    Delivered,
    /// Worth trying again; `after` is what the provider asked for (`Retry-After`).
    Retry {
        error: String,
        rate_limited: bool,
        after: Option<u32>,
    },
    /// Trying again cannot help (a 4xx, a gone endpoint, a blocked bot).
    Permanent {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NotificationCommand {
    Queue {
        notification_id: Uuid,
        workspace_id: Uuid,
        channel_id: Uuid,
        alert_id: Option<Uuid>,
        content: NotificationContent,
        at: DateTime<Utc>,
    },
    /// One try, or one digest that carried it (`digest`: how many notifications it held).
    Record {
        outcome: TryOutcome,
        digest: Option<u32>,
        /// In [0, 1): where in the ±10 % jitter band the retry falls (the caller's randomness).
        jitter: f64,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NotificationEvent {
    NotificationQueued {
        notification_id: Uuid,
        workspace_id: Uuid,
        channel_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alert_id: Option<Uuid>,
        content: NotificationContent,
        at: DateTime<Utc>,
    },
    NotificationAttempted {
        attempt: u32,
        error: String,
        #[serde(default)]
        rate_limited: bool,
        next_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    NotificationDelivered {
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<u32>,
        at: DateTime<Utc>,
    },
    NotificationFailed {
        attempts: u32,
        error: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for NotificationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::NotificationQueued { .. } => "NotificationQueued",
            Self::NotificationAttempted { .. } => "NotificationAttempted",
            Self::NotificationDelivered { .. } => "NotificationDelivered",
            Self::NotificationFailed { .. } => "NotificationFailed",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("notification already queued")]
    AlreadyQueued,
    #[error("notification not found")]
    NotFound,
    #[error("notification already delivered or failed")]
    Finished,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: Option<Uuid>,
    pub channel_id: Option<Uuid>,
    /// Tries made, rate-limited ones not counted.
    pub attempts: u32,
    /// Tries refused for rate limits (kept apart so a busy provider never exhausts the budget).
    pub throttled: u32,
    pub finished: bool,
}

/// When the retry after `attempts` failed tries is due, or None when the budget is spent.
pub fn retry_at(attempts: u32, at: DateTime<Utc>, jitter: f64) -> Option<DateTime<Utc>> {
    let base = *RETRY_DELAYS_SECONDS.get(attempts.checked_sub(1)? as usize)?;
    let spread = (jitter.clamp(0.0, 1.0) * 0.2 - 0.1) * base as f64;
    Some(at + Duration::milliseconds(((base as f64 + spread) * 1000.0) as i64))
}

/// Rate-limited tries wait what the provider asked (at least 1 s, at most an hour); after 100
/// of them the notification fails rather than waiting for ever.
const MAX_THROTTLED: u32 = 100;

impl Aggregate for Notification {
    const TYPE: &'static str = "Notification";
    type Command = NotificationCommand;
    type Event = NotificationEvent;
    type Error = NotificationError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        for e in self.decide(command)? {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            NotificationEvent::NotificationQueued {
                notification_id,
                channel_id,
                ..
            } => {
                self.id = Some(notification_id);
                self.channel_id = Some(channel_id);
            }
            NotificationEvent::NotificationAttempted {
                attempt, rate_limited, ..
            } => {
                if rate_limited {
                    self.throttled += 1;
                } else {
                    self.attempts = attempt;
                }
            }
            NotificationEvent::NotificationDelivered { .. } | NotificationEvent::NotificationFailed { .. } => {
                self.finished = true
            }
        }
    }
}

impl Notification {
    pub fn decide(&self, command: NotificationCommand) -> Result<Vec<NotificationEvent>, NotificationError> {
        match command {
            NotificationCommand::Queue {
                notification_id,
                workspace_id,
                channel_id,
                alert_id,
                content,
                at,
            } => {
                if self.id.is_some() {
                    return Err(NotificationError::AlreadyQueued);
                }
                Ok(vec![NotificationEvent::NotificationQueued {
                    notification_id,
                    workspace_id,
                    channel_id,
                    alert_id,
                    content,
                    at,
                }])
            }
            NotificationCommand::Record {
                outcome,
                digest,
                jitter,
                at,
            } => {
                if self.id.is_none() {
                    return Err(NotificationError::NotFound);
                }
                if self.finished {
                    return Err(NotificationError::Finished);
                }
                let attempt = self.attempts + 1;
                Ok(vec![match outcome {
                    TryOutcome::Delivered => NotificationEvent::NotificationDelivered {
                        attempts: attempt,
                        digest,
                        at,
                    },
                    TryOutcome::Permanent { error } => NotificationEvent::NotificationFailed {
                        attempts: attempt,
                        error,
                        at,
                    },
                    TryOutcome::Retry {
                        error,
                        rate_limited: true,
                        after,
                    } if self.throttled < MAX_THROTTLED => NotificationEvent::NotificationAttempted {
                        attempt: self.attempts,
                        error,
                        rate_limited: true,
                        next_at: at + Duration::seconds(after.unwrap_or(1).clamp(1, 3600) as i64),
                        at,
                    },
                    TryOutcome::Retry { error, after, .. } => match retry_at(attempt, at, jitter) {
                        Some(next) => NotificationEvent::NotificationAttempted {
                            attempt,
                            next_at: after
                                .map(|s| at + Duration::seconds(s.min(86_400) as i64))
                                .map_or(next, |asked| asked.max(next)),
                            error,
                            rate_limited: false,
                            at,
                        },
                        None => NotificationEvent::NotificationFailed {
                            attempts: attempt,
                            error,
                            at,
                        },
                    },
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<Notification>;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }
    fn queued() -> NotificationEvent {
        NotificationEvent::NotificationQueued {
            notification_id: Uuid::from_u128(1),
            workspace_id: Uuid::from_u128(2),
            channel_id: Uuid::from_u128(3),
            alert_id: None,
            content: NotificationContent::new(NotificationKind::Test, AlertDetails::default()),
            at: t(0),
        }
    }
    fn record(outcome: TryOutcome) -> NotificationCommand {
        NotificationCommand::Record {
            outcome,
            digest: None,
            jitter: 0.5,
            at: t(10),
        }
    }
    fn retry(rate_limited: bool, after: Option<u32>) -> TryOutcome {
        TryOutcome::Retry {
            error: "boom".into(),
            rate_limited,
            after,
        }
    }

    #[test]
    fn given_queued_when_delivered_then_delivered_on_the_first_attempt() {
        Spec::with(())
            .given(vec![queued()])
            .when(record(TryOutcome::Delivered))
            .then_expect_events(vec![NotificationEvent::NotificationDelivered {
                attempts: 1,
                digest: None,
                at: t(10),
            }]);
    }

    #[test]
    fn given_queued_when_a_try_fails_then_the_retry_is_5_seconds_later() {
        Spec::with(())
            .given(vec![queued()])
            .when(record(retry(false, None)))
            .then_expect_events(vec![NotificationEvent::NotificationAttempted {
                attempt: 1,
                error: "boom".into(),
                rate_limited: false,
                next_at: t(15),
                at: t(10),
            }]);
    }

    #[test]
    fn given_seven_failed_tries_when_the_eighth_fails_then_it_fails_for_good() {
        let mut given = vec![queued()];
        for a in 1..=7 {
            given.push(NotificationEvent::NotificationAttempted {
                attempt: a,
                error: "boom".into(),
                rate_limited: false,
                next_at: t(0),
                at: t(0),
            });
        }
        Spec::with(())
            .given(given)
            .when(record(retry(false, None)))
            .then_expect_events(vec![NotificationEvent::NotificationFailed {
                attempts: 8,
                error: "boom".into(),
                at: t(10),
            }]);
    }

    #[test]
    fn given_queued_when_rate_limited_then_it_waits_as_asked_and_keeps_its_budget() {
        let events = {
            let mut n = Notification::default();
            n.apply(queued());
            n.decide(record(retry(true, Some(7)))).unwrap()
        };
        assert_eq!(
            events,
            vec![NotificationEvent::NotificationAttempted {
                attempt: 0,
                error: "boom".into(),
                rate_limited: true,
                next_at: t(17),
                at: t(10),
            }]
        );
        let mut n = Notification::default();
        n.apply(queued());
        n.apply(events[0].clone());
        assert_eq!((n.attempts, n.throttled), (0, 1));
    }

    #[test]
    fn given_queued_when_permanent_then_failed_at_once() {
        Spec::with(())
            .given(vec![queued()])
            .when(record(TryOutcome::Permanent { error: "410".into() }))
            .then_expect_events(vec![NotificationEvent::NotificationFailed {
                attempts: 1,
                error: "410".into(),
                at: t(10),
            }]);
    }

    #[test]
    fn given_delivered_when_recorded_again_then_refused() {
        Spec::with(())
            .given(vec![
                queued(),
                NotificationEvent::NotificationDelivered {
                    attempts: 1,
                    digest: None,
                    at: t(1),
                },
            ])
            .when(record(TryOutcome::Delivered))
            .then_expect_error(NotificationError::Finished);
    }

    #[test]
    fn retries_follow_the_schedule_with_bounded_jitter() {
        assert_eq!(retry_at(2, t(0), 0.5), Some(t(300)));
        let low = retry_at(2, t(0), 0.0).unwrap();
        let high = retry_at(2, t(0), 0.999).unwrap();
        assert_eq!(low, t(270));
        assert!(high > t(329) && high <= t(330));
        assert_eq!(retry_at(8, t(0), 0.5), None);
        assert_eq!(retry_at(0, t(0), 0.5), None);
    }
}
