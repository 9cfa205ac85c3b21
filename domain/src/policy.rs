//! Retry and success policies of a request, as pure functions: which outcomes count as success,
//! which failures are retried, and how long to wait before the next attempt.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::run::{AttemptOutcome, ErrorKind};

/// Longest wait between attempts, whatever the policy or `Retry-After` says.
pub const MAX_RETRY_MAX_DELAY_SECONDS: u32 = 86_400;
pub const DEFAULT_RETRY_MAX_DELAY_SECONDS: u32 = 3_600;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `retry_delay_seconds` every time.
    #[default]
    Fixed,
    /// `retry_delay_seconds × 2^(n-1)`, capped at `retry_max_delay_seconds`, with full jitter
    /// (a uniformly random wait between 0 and that), so many failing jobs do not retry in step.
    Exponential,
}

impl Backoff {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "exponential" => Ok(Self::Exponential),
            _ => Err(FieldError::new(field, "invalid", "use fixed or exponential")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Exponential => "exponential",
        }
    }
}

/// What a cron job does with fires that came due while no dispatcher ran (or while it was
/// late by more than the grace window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Only a fire at most the grace window late runs (the latest such); the rest are skipped.
    Skip,
    /// The latest missed fire runs once, however late; the others are recorded as skipped.
    #[default]
    RunOnce,
    /// Every missed fire runs, oldest first, up to [`RUN_ALL_MAX`] (the most recent ones); any
    /// older ones are recorded as skipped.
    RunAll,
}

/// What a cron fire does when the job's previous run has not finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Runs anyway, in parallel with the previous run.
    #[default]
    Allow,
    /// Is recorded as a skipped run (`error_type: overlap`).
    Skip,
    /// Waits until the previous run has finished, then runs; while one fire waits, later ones
    /// wait with it and only the latest of them runs (the others are recorded as skipped).
    QueueOne,
}

impl OverlapPolicy {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        match s {
            "allow" => Ok(Self::Allow),
            "skip" => Ok(Self::Skip),
            "queue_one" => Ok(Self::QueueOne),
            _ => Err(FieldError::new(field, "invalid", "use allow, skip or queue_one")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Skip => "skip",
            Self::QueueOne => "queue_one",
        }
    }
}

/// Why fires were recorded as a skipped run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// No dispatcher ran (or it was too late), and the misfire policy did not run them.
    #[default]
    Missed,
    /// The previous run was still going and the overlap policy is `skip`.
    Overlap,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missed => "missed",
            Self::Overlap => "overlap",
        }
    }
}

/// Why CronBox stopped something the user did not stop themselves: recorded on the events that
/// stop it (`JobDeleted`, `RunCancelled`, `CallbackCancelled`), so the audit trail says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Its workspace was deleted: every job, waiting run, retry and callback of it stops.
    WorkspaceDeleted,
    /// Its cron job was paused: waiting runs and retries stop (a run in flight finishes).
    JobPaused,
    /// Its job was deleted.
    JobDeleted,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkspaceDeleted => "workspace_deleted",
            Self::JobPaused => "job_paused",
            Self::JobDeleted => "job_deleted",
        }
    }
}

/// A workspace's defaults for new jobs: each field, when set, is used by a create that does not
/// give it. Validated like the job fields they stand for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_max_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<RetryOn>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<Vec<StatusMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire_policy: Option<MisfirePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire_grace_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_policy: Option<OverlapPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_on_failure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_on_recovery: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_after_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realert_every_seconds: Option<u32>,
}

/// The most missed fires `run_all` catches up on.
pub const RUN_ALL_MAX: usize = 100;
pub const MAX_MISFIRE_GRACE_SECONDS: u32 = 86_400;

impl MisfirePolicy {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        match s {
            "skip" => Ok(Self::Skip),
            "run_once" => Ok(Self::RunOnce),
            "run_all" => Ok(Self::RunAll),
            _ => Err(FieldError::new(field, "invalid", "use skip, run_once or run_all")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::RunOnce => "run_once",
            Self::RunAll => "run_all",
        }
    }
}

/// One entry of `retry_on`: `transport` (no response: connect, DNS, TLS, …), `timeout`,
/// a status class (`4xx`, `5xx`) or one status code (`429`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RetryOn(String);

impl RetryOn {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        let ok = matches!(s, "transport" | "timeout" | "4xx" | "5xx") || status_code(s).is_some_and(|c| c >= 400);
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(FieldError::new(
                field,
                "invalid",
                format!("{s:?}: use transport, timeout, 4xx, 5xx or a status code from 400 to 599"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn matches(&self, outcome: &AttemptOutcome) -> bool {
        match (self.0.as_str(), outcome.error_kind) {
            ("timeout", Some(ErrorKind::Timeout)) => true,
            (
                "transport",
                Some(ErrorKind::Connect | ErrorKind::Dns | ErrorKind::Tls | ErrorKind::Other | ErrorKind::Timeout),
            ) => true,
            (_, Some(ErrorKind::HttpStatus) | None) => outcome
                .status_code
                .is_some_and(|code| StatusMatch(self.0.clone()).matches(code)),
            _ => false,
        }
    }
}

pub fn default_retry_on() -> Vec<RetryOn> {
    ["transport", "timeout", "5xx", "408", "429"]
        .into_iter()
        .map(|s| RetryOn(s.to_string()))
        .collect()
}

/// One entry of `expected_status`: a class (`2xx`) or a code (`204`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusMatch(String);

fn status_code(s: &str) -> Option<u16> {
    (s.len() == 3)
        .then(|| s.parse::<u16>().ok())
        .flatten()
        .filter(|c| (100..=599).contains(c))
}

impl StatusMatch {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        let class = matches!(s, "1xx" | "2xx" | "3xx" | "4xx" | "5xx");
        if class || status_code(s).is_some() {
            Ok(Self(s.to_string()))
        } else {
            Err(FieldError::new(
                field,
                "invalid",
                format!("{s:?}: use a status class such as 2xx or a code such as 204"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, code: u16) -> bool {
        match self.0.as_bytes() {
            [c, b'x', b'x'] => u16::from(c - b'0') == code / 100,
            _ => status_code(&self.0) == Some(code),
        }
    }
}

pub fn default_expected_status() -> Vec<StatusMatch> {
    vec![StatusMatch("2xx".into())]
}

/// A check of the response body as JSON: the value at `path` (`$.a.b[0].c`) equals `equals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonCheck {
    pub path: String,
    pub equals: serde_json::Value,
}

/// `$.a.b[0]` or `a.b.0` → ["a", "b", "0"]; None if malformed.
fn path_steps(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('$').unwrap_or(path);
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let mut steps = Vec::new();
    for part in rest.split('.') {
        let (name, mut brackets) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && brackets.is_empty() {
            return None;
        }
        if !name.is_empty() {
            steps.push(name.to_string());
        }
        while let Some(b) = brackets.strip_prefix('[') {
            let end = b.find(']')?;
            let index = &b[..end];
            index.parse::<usize>().ok()?;
            steps.push(index.to_string());
            brackets = &b[end + 1..];
        }
        if !brackets.is_empty() {
            return None;
        }
    }
    Some(steps)
}

impl JsonCheck {
    pub fn parse(field: &str, path: String, equals: serde_json::Value) -> Result<Self, FieldError> {
        if path.len() > 256 || path_steps(&path).is_none() {
            return Err(FieldError::new(
                field,
                "invalid",
                "path must look like $.data.items[0].status",
            ));
        }
        Ok(Self { path, equals })
    }

    /// None when the body passes; otherwise why not.
    pub fn check(&self, body: &[u8]) -> Option<String> {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Some("the response body is not JSON".into());
        };
        let mut at = &doc;
        for step in path_steps(&self.path).unwrap_or_default() {
            let next = match at {
                serde_json::Value::Object(m) => m.get(&step),
                serde_json::Value::Array(a) => step.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            match next {
                Some(v) => at = v,
                None => return Some(format!("{} is missing from the response body", self.path)),
            }
        }
        (at != &self.equals).then(|| format!("{} is {at}, expected {}", self.path, self.equals))
    }
}

/// Why a response that arrived does not count as success, if it does not.
pub fn response_verdict(
    expected: &[StatusMatch],
    body_contains: Option<&str>,
    json: Option<&JsonCheck>,
    status: u16,
    body: &[u8],
) -> Option<(ErrorKind, String)> {
    if !expected.iter().any(|m| m.matches(status)) {
        let list: Vec<&str> = expected.iter().map(StatusMatch::as_str).collect();
        return Some((
            ErrorKind::HttpStatus,
            format!("target answered HTTP {status}; expected {}", list.join(", ")),
        ));
    }
    if let Some(needle) = body_contains {
        if !body.windows(needle.len().max(1)).any(|w| w == needle.as_bytes()) {
            return Some((
                ErrorKind::Assertion,
                format!("the response body does not contain {needle:?}"),
            ));
        }
    }
    if let Some(reason) = json.and_then(|j| j.check(body)) {
        return Some((ErrorKind::Assertion, reason));
    }
    None
}

/// Whether a failed attempt is retried under `retry_on`. A blocked target never is.
pub fn is_retryable(retry_on: &[RetryOn], outcome: &AttemptOutcome) -> bool {
    if outcome.error_kind == Some(ErrorKind::BlockedTarget) {
        return false;
    }
    retry_on.iter().any(|r| r.matches(outcome))
}

/// `Retry-After` of a response, in seconds (delta-seconds form; HTTP dates are read relative
/// to `now_unix`).
pub fn retry_after_seconds(outcome: &AttemptOutcome, now_unix: i64) -> Option<u32> {
    let value = outcome
        .response_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.trim())?;
    if let Ok(secs) = value.parse::<u32>() {
        return Some(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?.timestamp();
    u32::try_from((at - now_unix).max(0)).ok()
}

/// Seconds to wait before attempt `next` (2 for the first retry). `jitter` is uniform in [0, 1).
pub fn retry_delay(
    backoff: Backoff,
    base_seconds: u32,
    max_seconds: u32,
    next: u32,
    jitter: f64,
    retry_after: Option<u32>,
) -> u32 {
    if let Some(after) = retry_after {
        return after.min(max_seconds);
    }
    match backoff {
        Backoff::Fixed => base_seconds.min(max_seconds),
        Backoff::Exponential => {
            let exp = next.saturating_sub(2).min(30);
            let cap = u64::from(base_seconds)
                .saturating_mul(1u64 << exp)
                .min(u64::from(max_seconds));
            (cap as f64 * jitter.clamp(0.0, 1.0)).floor() as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> AttemptOutcome {
        AttemptOutcome {
            status_code: Some(code),
            ..Default::default()
        }
    }

    fn failed(kind: ErrorKind) -> AttemptOutcome {
        AttemptOutcome {
            error_kind: Some(kind),
            ..Default::default()
        }
    }

    #[test]
    fn default_retry_on_retries_transport_5xx_408_429_but_not_other_4xx() {
        let on = default_retry_on();
        for o in [
            failed(ErrorKind::Connect),
            failed(ErrorKind::Timeout),
            failed(ErrorKind::Dns),
            status(500),
            status(503),
            status(408),
            status(429),
        ] {
            assert!(is_retryable(&on, &o), "{o:?}");
        }
        for o in [
            status(400),
            status(404),
            status(422),
            failed(ErrorKind::BlockedTarget),
            failed(ErrorKind::TooLarge),
        ] {
            assert!(!is_retryable(&on, &o), "{o:?}");
        }
        let only_404 = vec![RetryOn::parse("retry_on", "404").unwrap()];
        assert!(is_retryable(&only_404, &status(404)) && !is_retryable(&only_404, &status(500)));
        for bad in ["200", "xx", "6xx", "1000", ""] {
            assert!(RetryOn::parse("retry_on", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_fixed_exponential_and_retry_after() {
        assert_eq!(retry_delay(Backoff::Fixed, 60, 3600, 2, 0.3, None), 60);
        assert_eq!(retry_delay(Backoff::Fixed, 60, 30, 2, 0.3, None), 30);
        // Exponential caps: 10, 20, 40, 80 … up to 100; full jitter scales the cap.
        let caps: Vec<u32> = (2..8)
            .map(|n| retry_delay(Backoff::Exponential, 10, 100, n, 0.999_999, None))
            .collect();
        assert_eq!(caps, [9, 19, 39, 79, 99, 99]);
        assert_eq!(retry_delay(Backoff::Exponential, 10, 100, 5, 0.0, None), 0);
        assert_eq!(retry_delay(Backoff::Exponential, 10, 100, 5, 0.5, None), 40);
        assert_eq!(
            retry_delay(Backoff::Exponential, 10, 100, 40, 0.5, None),
            50,
            "no overflow"
        );
        // Retry-After wins, up to the cap.
        assert_eq!(retry_delay(Backoff::Exponential, 10, 100, 2, 0.5, Some(7)), 7);
        assert_eq!(retry_delay(Backoff::Fixed, 10, 100, 2, 0.5, Some(1000)), 100);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut o = status(503);
        o.response_headers = vec![("Retry-After".into(), "120".into())];
        assert_eq!(retry_after_seconds(&o, 0), Some(120));
        o.response_headers = vec![("retry-after".into(), "Wed, 21 Oct 2015 07:28:00 GMT".into())];
        let at = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .timestamp();
        assert_eq!(retry_after_seconds(&o, at - 30), Some(30));
        assert_eq!(retry_after_seconds(&o, at + 30), Some(0));
        o.response_headers = vec![("retry-after".into(), "soon".into())];
        assert_eq!(retry_after_seconds(&o, 0), None);
    }

    #[test]
    fn success_criteria() {
        let two = default_expected_status();
        assert_eq!(response_verdict(&two, None, None, 204, b""), None);
        assert_eq!(
            response_verdict(&two, None, None, 404, b"").map(|v| v.0),
            Some(ErrorKind::HttpStatus)
        );
        let codes = vec![
            StatusMatch::parse("s", "200").unwrap(),
            StatusMatch::parse("s", "404").unwrap(),
        ];
        assert_eq!(response_verdict(&codes, None, None, 404, b""), None);
        assert!(response_verdict(&codes, None, None, 201, b"").is_some());
        assert_eq!(response_verdict(&two, Some("OK"), None, 200, b"status: OK"), None);
        assert_eq!(
            response_verdict(&two, Some("OK"), None, 200, b"status: no").map(|v| v.0),
            Some(ErrorKind::Assertion)
        );
        let j = JsonCheck::parse("expect_json", "$.data.items[1].state".into(), serde_json::json!("done")).unwrap();
        let body = br#"{"data": {"items": [{"state": "new"}, {"state": "done"}]}}"#;
        assert_eq!(response_verdict(&two, None, Some(&j), 200, body), None);
        let v = response_verdict(
            &two,
            None,
            Some(&j),
            200,
            br#"{"data": {"items": [{"state": "x"}, {"state": "new"}]}}"#,
        );
        assert_eq!(v.as_ref().map(|v| v.0), Some(ErrorKind::Assertion));
        assert!(v.unwrap().1.contains("expected \"done\""));
        assert!(j.check(b"not json").is_some());
        assert!(j.check(br#"{"data": {}}"#).unwrap().contains("missing"));
        for bad in ["$..a", "$.a[x]", "$.a[0", "a..b"] {
            assert!(
                JsonCheck::parse("expect_json", bad.into(), serde_json::Value::Null).is_err(),
                "{bad}"
            );
        }
        for bad in ["2x", "600", "abc", ""] {
            assert!(StatusMatch::parse("expected_status", bad).is_err(), "{bad}");
        }
    }
}
