//! Alerts: when a job keeps failing, the people who own it are told once, on the channels they
//! chose, reminded while it stays broken if they asked for that, and told when it recovers.
//!
//! The rules here are pure. The alert decider (`cronbox-notify`) follows the run events on the
//! tail, keeps a [`Streak`] per failing job, and asks [`on_failure`] / [`on_success`] what each
//! run's end means; what they answer becomes events of an [`Alert`] aggregate (one per failing
//! streak, or one per failed delayed call) written in the same transaction as the decider's
//! checkpoint, so a decision is made exactly once whatever crashes.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::FieldError;

/// The most consecutive failures a job may wait for before it alerts.
pub const MAX_AFTER_FAILURES: u32 = 1000;
/// Reminders are at most this far apart (a week).
pub const MAX_REALERT_SECONDS: u32 = 7 * 86_400;
/// A job may pick at most this many channels.
pub const MAX_ALERT_CHANNELS: usize = 20;

/// A job's alerting rules, beside `notify_on_failure` / `notify_on_recovery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRules {
    /// Alert on the N-th consecutive failed run (once per failing streak).
    #[serde(default = "one")]
    pub after_failures: u32,
    /// Remind this often while the job keeps failing; None: no reminders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realert_every_seconds: Option<u32>,
    /// The channels to tell; None: all of the workspace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<Uuid>>,
}

fn one() -> u32 {
    1
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            after_failures: 1,
            realert_every_seconds: None,
            channels: None,
        }
    }
}

impl AlertRules {
    /// `min_realert` is the operator's floor for reminder intervals.
    pub fn check(&self, min_realert: u32) -> Result<(), FieldError> {
        if !(1..=MAX_AFTER_FAILURES).contains(&self.after_failures) {
            return Err(FieldError::new(
                "alert_after_failures",
                "out_of_range",
                format!("alert_after_failures must be between 1 and {MAX_AFTER_FAILURES}"),
            ));
        }
        if let Some(s) = self.realert_every_seconds {
            if s < min_realert || s > MAX_REALERT_SECONDS {
                return Err(FieldError::new(
                    "realert_every",
                    "out_of_range",
                    format!(
                        "realert_every must be between {} and {}",
                        format_interval(min_realert),
                        format_interval(MAX_REALERT_SECONDS)
                    ),
                ));
            }
        }
        if self.channels.as_ref().is_some_and(|c| c.len() > MAX_ALERT_CHANNELS) {
            return Err(FieldError::new(
                "alert_channels",
                "too_many",
                format!("at most {MAX_ALERT_CHANNELS} channels"),
            ));
        }
        Ok(())
    }
}

/// Parses an interval such as `90s`, `30m`, `6h`, `1d` or a number of seconds.
pub fn parse_interval(field: &str, text: &str) -> Result<u32, FieldError> {
    let bad = || {
        FieldError::new(
            field,
            "invalid",
            format!("{field} must be a duration such as 30m, 6h or 1d, or a number of seconds"),
        )
    };
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u32 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(bad)
}

/// The shortest exact form: `6h` for 21600, `90s` for 90.
pub fn format_interval(seconds: u32) -> String {
    for (unit, scale) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds % scale == 0 && seconds >= scale {
            return format!("{}{unit}", seconds / scale);
        }
    }
    format!("{seconds}s")
}

/// What caused an alert. Open for triggers beyond runs (billing will add its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A cron job's runs keep failing; resolved by its next success.
    JobFailing,
    /// A delayed call failed after its retries. Nothing resolves it: it is over.
    CallFailed,
    /// A delayed call's callback could not be delivered after its tries.
    CallbackFailed,
    /// A channel stopped working (a bot blocked, an endpoint gone); told on the others.
    ChannelDisabled,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobFailing => "job_failing",
            Self::CallFailed => "call_failed",
            Self::CallbackFailed => "callback_failed",
            Self::ChannelDisabled => "channel_disabled",
        }
    }
    /// Whether a later event can resolve it (the others are closed when raised).
    pub fn resolvable(self) -> bool {
        matches!(self, Self::JobFailing)
    }
}

/// What a person needs to act on an alert, captured when it is decided (the job may change
/// later; the message says what happened then).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDetails {
    pub job_id: Option<Uuid>,
    pub job_name: String,
    /// The target without its query string (which often holds a token).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The first lines of the response body (text only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_head: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The job's time zone (the workspace's for delayed calls).
    #[serde(default)]
    pub timezone: String,
    /// Failed runs in the streak so far.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
}

/// The first lines of a response body for a message: at most 5 lines and 500 characters.
pub fn response_head(body: &str) -> Option<String> {
    let head: String = body.lines().take(5).collect::<Vec<_>>().join("\n");
    let head = head.trim();
    if head.is_empty() {
        return None;
    }
    let mut cut: String = head.chars().take(500).collect();
    if cut.len() < head.len() {
        cut.push('…');
    }
    Some(cut)
}

/// A URL as alerts show it: scheme, host, port and path, never the query or credentials.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_string(),
    }
}

/// A cron job's current run of failures, as the decider keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streak {
    pub failures: u32,
    pub since: DateTime<Utc>,
    pub first_run: Uuid,
    /// The alert raised for this streak, if one was.
    pub open_alert: Option<Uuid>,
}

/// The alert of a failing streak: one id per (job, first failed run), so deciding it again
/// (a replay, a retried batch) names the same aggregate and cannot raise it twice.
pub fn streak_alert_id(job_id: Uuid, first_run: Uuid) -> Uuid {
    Uuid::new_v5(&job_id, format!("alert:{first_run}").as_bytes())
}

/// The alert of one failed delayed call (or its callback).
pub fn call_alert_id(run_id: Uuid, kind: AlertKind) -> Uuid {
    Uuid::new_v5(&run_id, format!("alert:{}", kind.as_str()).as_bytes())
}

/// A cron job's run failed (finally, after its retries). Returns the new streak and the alert
/// to raise now, if any: on exactly the `after_failures`-th failure, when failure alerts are on.
pub fn on_failure(
    streak: Option<Streak>,
    job_id: Uuid,
    rules: &AlertRules,
    notify_on_failure: bool,
    run_id: Uuid,
    at: DateTime<Utc>,
) -> (Streak, Option<Uuid>) {
    let mut s = streak.unwrap_or(Streak {
        failures: 0,
        since: at,
        first_run: run_id,
        open_alert: None,
    });
    s.failures = s.failures.saturating_add(1);
    let raise = (notify_on_failure && s.open_alert.is_none() && s.failures >= rules.after_failures)
        .then(|| streak_alert_id(job_id, s.first_run));
    if raise.is_some() {
        s.open_alert = raise;
    }
    (s, raise)
}

/// What a success ends: the open alert to resolve, if the streak raised one. The streak itself
/// is over either way.
pub fn on_success(streak: Option<&Streak>) -> Option<Uuid> {
    streak.and_then(|s| s.open_alert)
}

/// Why an alert was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReason {
    /// A run succeeded.
    Recovered,
    /// The job was deleted while failing: nobody is told, the alert just closes.
    JobDeleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlertCommand {
    Raise {
        alert_id: Uuid,
        workspace_id: Uuid,
        kind: AlertKind,
        realert_every_seconds: Option<u32>,
        channels: Vec<Uuid>,
        details: AlertDetails,
        at: DateTime<Utc>,
    },
    /// A reminder is due. `after` is the reminder count the caller saw, so two sweepers that
    /// both see it due record one reminder.
    Remind { after: u32, at: DateTime<Utc> },
    Resolve {
        reason: ResolveReason,
        run_id: Option<Uuid>,
        failed_runs: u32,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlertEvent {
    AlertRaised {
        alert_id: Uuid,
        workspace_id: Uuid,
        kind: AlertKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        realert_every_seconds: Option<u32>,
        /// Where it is told (decided with it, so a replay tells the same channels).
        channels: Vec<Uuid>,
        details: AlertDetails,
        at: DateTime<Utc>,
    },
    AlertReminded {
        reminder: u32,
        at: DateTime<Utc>,
    },
    AlertResolved {
        reason: ResolveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<Uuid>,
        failed_runs: u32,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AlertEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AlertRaised { .. } => "AlertRaised",
            Self::AlertReminded { .. } => "AlertReminded",
            Self::AlertResolved { .. } => "AlertResolved",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("the alert was already raised")]
    AlreadyRaised,
    #[error("the alert is not open")]
    NotOpen,
    #[error("the reminder was already recorded")]
    AlreadyReminded,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub kind: Option<AlertKind>,
    pub open: bool,
    pub reminders: u32,
    pub realert_every_seconds: Option<u32>,
    pub raised_at: Option<DateTime<Utc>>,
    pub last_told_at: Option<DateTime<Utc>>,
}

impl Alert {
    /// The events a command gives, without cqrs-es (the decider appends them in its own
    /// transaction); [`Aggregate::handle`] is this, written through the sink.
    pub fn decide(&self, command: AlertCommand) -> Result<Vec<AlertEvent>, AlertError> {
        match command {
            AlertCommand::Raise {
                alert_id,
                workspace_id,
                kind,
                realert_every_seconds,
                channels,
                details,
                at,
            } => {
                if self.id.is_some() {
                    return Err(AlertError::AlreadyRaised);
                }
                let mut events = vec![AlertEvent::AlertRaised {
                    alert_id,
                    workspace_id,
                    kind,
                    realert_every_seconds: realert_every_seconds.filter(|_| kind.resolvable()),
                    channels,
                    details,
                    at,
                }];
                if !kind.resolvable() {
                    events.push(AlertEvent::AlertResolved {
                        reason: ResolveReason::Recovered,
                        run_id: None,
                        failed_runs: 1,
                        at,
                    });
                }
                Ok(events)
            }
            AlertCommand::Remind { after, at } => {
                if !self.open {
                    return Err(AlertError::NotOpen);
                }
                if self.reminders != after {
                    return Err(AlertError::AlreadyReminded);
                }
                Ok(vec![AlertEvent::AlertReminded {
                    reminder: after + 1,
                    at,
                }])
            }
            AlertCommand::Resolve {
                reason,
                run_id,
                failed_runs,
                at,
            } => {
                if !self.open {
                    return Err(AlertError::NotOpen);
                }
                Ok(vec![AlertEvent::AlertResolved {
                    reason,
                    run_id,
                    failed_runs,
                    at,
                }])
            }
        }
    }

    /// When the next reminder is due, if one is.
    pub fn next_reminder_at(&self) -> Option<DateTime<Utc>> {
        let every = self.realert_every_seconds.filter(|_| self.open)?;
        Some(self.last_told_at? + chrono::Duration::seconds(every as i64))
    }
}

impl Aggregate for Alert {
    const TYPE: &'static str = "Alert";
    type Command = AlertCommand;
    type Event = AlertEvent;
    type Error = AlertError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AlertEvent::AlertRaised {
                alert_id,
                workspace_id,
                kind,
                realert_every_seconds,
                at,
                ..
            } => {
                self.id = Some(alert_id);
                self.workspace_id = Some(workspace_id);
                self.kind = Some(kind);
                self.open = true;
                self.realert_every_seconds = realert_every_seconds;
                self.raised_at = Some(at);
                self.last_told_at = Some(at);
            }
            AlertEvent::AlertReminded { reminder, at } => {
                self.reminders = reminder;
                self.last_told_at = Some(at);
            }
            AlertEvent::AlertResolved { .. } => self.open = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<Alert>;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }
    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }
    fn rules(after: u32) -> AlertRules {
        AlertRules {
            after_failures: after,
            ..Default::default()
        }
    }
    fn raise(kind: AlertKind) -> AlertCommand {
        AlertCommand::Raise {
            alert_id: id(1),
            workspace_id: id(2),
            kind,
            realert_every_seconds: Some(3600),
            channels: vec![id(3)],
            details: AlertDetails::default(),
            at: t(0),
        }
    }
    fn raised() -> AlertEvent {
        AlertEvent::AlertRaised {
            alert_id: id(1),
            workspace_id: id(2),
            kind: AlertKind::JobFailing,
            realert_every_seconds: Some(3600),
            channels: vec![id(3)],
            details: AlertDetails::default(),
            at: t(0),
        }
    }

    #[test]
    fn given_no_streak_when_the_first_run_fails_then_it_alerts_at_once() {
        let (s, raise) = on_failure(None, id(9), &rules(1), true, id(10), t(0));
        assert_eq!(s.failures, 1);
        assert_eq!(raise, Some(streak_alert_id(id(9), id(10))));
        assert_eq!(s.open_alert, raise);
    }

    #[test]
    fn given_after_three_when_runs_fail_then_only_the_third_alerts_and_later_ones_do_not() {
        let r = rules(3);
        let (s1, a1) = on_failure(None, id(9), &r, true, id(10), t(0));
        let (s2, a2) = on_failure(Some(s1), id(9), &r, true, id(11), t(60));
        let (s3, a3) = on_failure(Some(s2), id(9), &r, true, id(12), t(120));
        let (s4, a4) = on_failure(Some(s3.clone()), id(9), &r, true, id(13), t(180));
        assert_eq!((a1, a2), (None, None));
        assert_eq!(
            a3,
            Some(streak_alert_id(id(9), id(10))),
            "named after the streak's first run"
        );
        assert_eq!(a4, None, "one alert per streak");
        assert_eq!(s4.failures, 4);
        assert_eq!(s4.since, t(0));
        assert_eq!(on_success(Some(&s4)), a3);
    }

    #[test]
    fn given_failure_alerts_off_when_runs_fail_then_nothing_is_raised_and_nothing_recovers() {
        let (s, a) = on_failure(None, id(9), &rules(1), false, id(10), t(0));
        assert_eq!(a, None);
        assert_eq!(on_success(Some(&s)), None);
    }

    #[test]
    fn given_a_success_without_a_streak_then_nothing_resolves() {
        assert_eq!(on_success(None), None);
    }

    #[test]
    fn given_nothing_when_raised_then_alert_raised() {
        Spec::with(())
            .given_no_previous_events()
            .when(raise(AlertKind::JobFailing))
            .then_expect_events(vec![raised()]);
    }

    #[test]
    fn given_raised_when_raised_again_then_refused() {
        Spec::with(())
            .given(vec![raised()])
            .when(raise(AlertKind::JobFailing))
            .then_expect_error(AlertError::AlreadyRaised);
    }

    #[test]
    fn given_nothing_when_a_failed_call_is_raised_then_it_is_closed_at_once_without_reminders() {
        let events = Alert::default().decide(raise(AlertKind::CallFailed)).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            &events[0],
            AlertEvent::AlertRaised {
                realert_every_seconds: None,
                ..
            }
        ));
        assert!(matches!(&events[1], AlertEvent::AlertResolved { .. }));
    }

    #[test]
    fn given_raised_when_reminded_then_the_next_reminder_counts_from_it() {
        let mut a = Alert::default();
        a.apply(raised());
        assert_eq!(a.next_reminder_at(), Some(t(3600)));
        let events = a.decide(AlertCommand::Remind { after: 0, at: t(3601) }).unwrap();
        assert_eq!(
            events,
            vec![AlertEvent::AlertReminded {
                reminder: 1,
                at: t(3601)
            }]
        );
        a.apply(events[0].clone());
        assert_eq!(a.next_reminder_at(), Some(t(7201)));
    }

    #[test]
    fn given_a_reminder_recorded_when_a_second_sweeper_reminds_then_refused() {
        Spec::with(())
            .given(vec![
                raised(),
                AlertEvent::AlertReminded {
                    reminder: 1,
                    at: t(3600),
                },
            ])
            .when(AlertCommand::Remind { after: 0, at: t(3601) })
            .then_expect_error(AlertError::AlreadyReminded);
    }

    #[test]
    fn given_resolved_when_reminded_or_resolved_then_refused() {
        let resolved = AlertEvent::AlertResolved {
            reason: ResolveReason::Recovered,
            run_id: Some(id(5)),
            failed_runs: 2,
            at: t(10),
        };
        Spec::with(())
            .given(vec![raised(), resolved.clone()])
            .when(AlertCommand::Remind { after: 0, at: t(3600) })
            .then_expect_error(AlertError::NotOpen);
        let mut a = Alert::default();
        a.apply(raised());
        a.apply(resolved);
        assert_eq!(a.next_reminder_at(), None);
    }

    #[test]
    fn intervals_parse_and_print() {
        assert_eq!(parse_interval("f", "6h").unwrap(), 21_600);
        assert_eq!(parse_interval("f", "90").unwrap(), 90);
        assert_eq!(parse_interval("f", "30m").unwrap(), 1800);
        assert!(parse_interval("f", "0h").is_err());
        assert!(parse_interval("f", "6w").is_err());
        assert!(parse_interval("f", "99999999999d").is_err());
        assert_eq!(format_interval(21_600), "6h");
        assert_eq!(format_interval(90), "90s");
        assert_eq!(format_interval(86_400), "1d");
    }

    #[test]
    fn urls_lose_their_query_and_credentials() {
        assert_eq!(
            display_url("https://u:p@example.com/hook?token=secret#x"),
            "https://example.com/hook"
        );
    }

    #[test]
    fn response_heads_are_short() {
        let body = "a\nb\nc\nd\ne\nf\ng";
        assert_eq!(response_head(body).unwrap(), "a\nb\nc\nd\ne");
        assert_eq!(response_head("  \n "), None);
        assert!(response_head(&"x".repeat(2000)).unwrap().chars().count() <= 501);
    }
}
