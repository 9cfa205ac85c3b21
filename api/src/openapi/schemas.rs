//! The wire format of the API, for the OpenAPI document only.
//!
//! Handlers read bodies field by field ([`crate::input::Fields`]) and build their answers with
//! `serde_json::json!`, so nothing here is ever constructed, serialised or parsed: these types
//! exist only so that `utoipa` can describe the JSON the handlers really read and write. Keep
//! them in step with the handlers (`jobs::view`, `jobs::request_fields`, `executions::summary`,
//! `workspaces::workspace_json`, …). `tests/integration/openapi.rs` checks the document against the router:
//! every documented operation is served, nothing undocumented is, and every `$ref` resolves.
//!
//! Conventions: a request field that is `Option` may be left out (and, except where a field says
//! otherwise, sending it as `null` is the same as leaving it out). Every request body is a JSON
//! object and an unknown field is refused with `400 unknown_field`. A response field that is
//! `Option` and marked `required` is always present and may be `null`. Times are RFC 3339.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

// ---------------------------------------------------------------- errors

/// Every error response: `{"error": {...}}`.
#[derive(ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error object. `limit`, `plan`, `usage` and `allowed` appear only on `403 plan_limit`.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `invalid_schedule`, `required`, `unknown_field`,
    /// `unauthorized`, `invalid_credentials`, `invalid_token`, `forbidden`, `plan_limit`,
    /// `not_found`, `method_not_allowed`, `already_executed`, `already_exists`,
    /// `concurrent_modification`, `too_large`, `rate_limited`, `unavailable`, `internal`,
    /// `invalid_items`.
    #[schema(examples("invalid_schedule"))]
    pub code: String,
    /// Human-readable explanation (English).
    pub message: String,
    /// The offending input field (`headers.X-Foo` for one header), or null.
    #[schema(required = true, examples("schedule"))]
    pub field: Option<String>,
    /// `plan_limit` only: the plan limit that refused the command, e.g. `max_active_cron_jobs`,
    /// `max_delayed_per_month`, `min_cron_interval_seconds`, `max_timeout_seconds`,
    /// `max_retries`, `max_members`, `max_api_keys`.
    pub limit: Option<String>,
    /// `plan_limit` only: the workspace's plan code, e.g. `free`.
    pub plan: Option<String>,
    /// `plan_limit` only: current usage, or for per-job limits the value asked for (for
    /// `min_cron_interval_seconds`, the schedule's shortest gap in seconds).
    pub usage: Option<i64>,
    /// `plan_limit` only: what the plan allows.
    pub allowed: Option<i64>,
    /// `invalid_items` only (a batch): each refused item. Nothing of the batch was stored.
    pub items: Option<Vec<ItemErrorDetail>>,
}

/// Why one item of a batch was refused.
#[derive(ToSchema)]
pub struct ItemErrorDetail {
    /// Position in the request's `items`.
    pub index: i64,
    /// Machine-readable code, as for a single create.
    pub code: String,
    /// The offending field of the item, or null.
    #[schema(required = true)]
    pub field: Option<String>,
    pub message: String,
}

// ---------------------------------------------------------------- cron jobs

/// Body of `POST …/cron`: a new recurring job.
#[derive(ToSchema)]
pub struct CronJobCreate {
    /// Name, 1-200 characters (required).
    #[schema(examples("nightly report"))]
    pub name: String,
    /// Cron expression (required): 5 fields, or 6 with leading seconds, or a nickname such as
    /// `@daily`; at most 200 characters. The plan's `min_cron_interval_seconds` applies.
    #[schema(examples("30 2 * * *"))]
    pub schedule: String,
    /// IANA time zone the schedule is read in; default: the workspace's time zone.
    #[schema(examples("Europe/Berlin"))]
    pub timezone: Option<String>,
    /// Free text, at most 2000 characters; default empty.
    pub description: Option<String>,
    /// Labels for filtering lists: at most 20, each 1-64 characters; default none.
    #[schema(max_items = 20)]
    pub tags: Option<Vec<String>>,
    /// Target URL (required): absolute `http`/`https`, at most 2048 characters, no credentials;
    /// private, loopback and reserved addresses are refused unless the operator allows them.
    #[schema(examples("https://example.com/hooks/report"), max_length = 2048)]
    pub url: String,
    /// HTTP method: `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD` (case-insensitive);
    /// default `GET`.
    #[schema(examples("POST"), default = "GET")]
    pub method: Option<String>,
    /// Request headers, name to value: at most 50 headers and 16 KiB in all; values visible
    /// ASCII, space and tab. `Host`, `Content-Length`, `Transfer-Encoding`, `Connection`,
    /// `Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Proxy-Connection` and `X-CronBox-*` are refused.
    pub headers: Option<BTreeMap<String, String>>,
    /// Request body, a string of at most 64 KiB; default none.
    pub body: Option<String>,
    /// Timeout of one attempt in seconds, 1-300, default 10; the plan may allow less
    /// (`max_timeout_seconds`).
    #[schema(minimum = 1, maximum = 300, default = 10)]
    pub timeout_seconds: Option<i64>,
    /// Retries after a failed attempt, 0-10, default 0; the plan may allow fewer (`max_retries`).
    #[schema(minimum = 0, maximum = 10, default = 0)]
    pub retry_count: Option<i64>,
    /// Fixed delay before each retry in seconds, 0-86400, default 60.
    #[schema(minimum = 0, maximum = 86400, default = 60)]
    pub retry_delay_seconds: Option<i64>,
    /// `fixed` (default) or `exponential`: `retry_delay_seconds × 2^(n-1)` capped at
    /// `retry_max_delay_seconds`, with full jitter.
    #[schema(examples("exponential"))]
    pub retry_backoff: Option<String>,
    /// Longest wait before a retry, 1-86400, default 3600; also caps a target's `Retry-After`.
    pub retry_max_delay_seconds: Option<i64>,
    /// Which failures are retried: `transport`, `timeout`, `4xx`, `5xx` or status codes.
    /// Default `["transport", "timeout", "5xx", "408", "429"]`; a blocked target never is.
    pub retry_on: Option<Vec<String>>,
    /// Statuses that count as success: classes (`2xx`) or codes (`204`, also as numbers).
    /// Default `["2xx"]`.
    pub expected_status: Option<Vec<String>>,
    /// The response body must contain this text (1-1024 bytes); `null` clears on update.
    pub expect_body_contains: Option<String>,
    /// Header names whose values are credentials (each one of `headers`, any case): never in
    /// published events (`[redacted]`), like `Authorization`, cookies and names with token,
    /// secret, password, key or signature, which are masked anyway.
    pub sensitive_headers: Option<Vec<String>>,
    /// The response body must be JSON with this value at `path`; `null` clears on update.
    pub expect_json: Option<JsonCheck>,
    /// Notify on failure; default true (see Notifications).
    #[schema(default = true)]
    pub notify_on_failure: Option<bool>,
    /// Notify on recovery; default true (see Notifications).
    #[schema(default = true)]
    pub notify_on_recovery: Option<bool>,
    /// Alert on the N-th consecutive failed run (1-1000; default 1, or the workspace's default).
    #[schema(default = 1)]
    pub alert_after_failures: Option<u32>,
    /// Remind while still failing, e.g. `"6h"` (or seconds); `null`: no reminders. Cron jobs.
    #[schema(examples("6h"))]
    pub realert_every: Option<String>,
    /// Channel ids to tell; `null` (default): all of the workspace's.
    pub alert_channels: Option<Vec<Uuid>>,
    /// What to do with fires missed while no dispatcher ran: `skip` (only a fire within the
    /// grace window runs), `run_once` (default: the latest missed fire runs once) or `run_all`
    /// (each missed fire runs, up to the last 100).
    #[schema(examples("run_once"))]
    pub misfire_policy: Option<String>,
    /// How late (seconds, 1-86400) a fire may be and still count as on time; default the
    /// operator's `CRONBOX_MISFIRE_GRACE_SECONDS` (60). `null` on update returns to it.
    pub misfire_grace_seconds: Option<i64>,
    /// What a fire does while the previous run is still going: `allow` (default, runs in
    /// parallel), `skip` (recorded as a skipped run, `error_type: overlap`) or `queue_one`
    /// (waits for the previous run; of several waiting fires the latest runs).
    #[schema(examples("skip"))]
    pub overlap_policy: Option<String>,
    /// `true` publishes a status badge: an SVG of the last status at `/badge/{status_badge}.svg`,
    /// an address nobody can guess. Default `false`.
    pub status_badge: Option<bool>,
}

/// Body of `PATCH …/cron/{id}`: only the fields given change; the same rules as on create.
/// `null` means "unchanged" for every field except `body`, where `null` clears the body.
#[derive(ToSchema)]
pub struct CronJobUpdate {
    /// New name, 1-200 characters.
    pub name: Option<String>,
    /// New cron expression (see create).
    #[schema(examples("*/15 * * * *"))]
    pub schedule: Option<String>,
    /// New IANA time zone.
    #[schema(examples("Europe/Berlin"))]
    pub timezone: Option<String>,
    /// New description, at most 2000 characters (`""` clears it).
    pub description: Option<String>,
    /// New tags, replacing all of them (`[]` clears them); at most 20 of 1-64 characters.
    #[schema(max_items = 20)]
    pub tags: Option<Vec<String>>,
    /// New target URL (same rules as on create).
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// New HTTP method: `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    pub method: Option<String>,
    /// New headers, replacing the whole set (`{}` removes all); same limits as on create.
    pub headers: Option<BTreeMap<String, String>>,
    /// New request body (at most 64 KiB); `"body": null` clears the body, leaving it out keeps it.
    pub body: Option<String>,
    /// New timeout in seconds, 1-300; the plan may allow less.
    #[schema(minimum = 1, maximum = 300)]
    pub timeout_seconds: Option<i64>,
    /// New retry count, 0-10; the plan may allow fewer.
    #[schema(minimum = 0, maximum = 10)]
    pub retry_count: Option<i64>,
    /// New retry delay in seconds, 0-86400.
    #[schema(minimum = 0, maximum = 86400)]
    pub retry_delay_seconds: Option<i64>,
    /// `fixed` (default) or `exponential`: `retry_delay_seconds × 2^(n-1)` capped at
    /// `retry_max_delay_seconds`, with full jitter.
    #[schema(examples("exponential"))]
    pub retry_backoff: Option<String>,
    /// Longest wait before a retry, 1-86400, default 3600; also caps a target's `Retry-After`.
    pub retry_max_delay_seconds: Option<i64>,
    /// Which failures are retried: `transport`, `timeout`, `4xx`, `5xx` or status codes.
    /// Default `["transport", "timeout", "5xx", "408", "429"]`; a blocked target never is.
    pub retry_on: Option<Vec<String>>,
    /// Statuses that count as success: classes (`2xx`) or codes (`204`, also as numbers).
    /// Default `["2xx"]`.
    pub expected_status: Option<Vec<String>>,
    /// The response body must contain this text (1-1024 bytes); `null` clears on update.
    pub expect_body_contains: Option<String>,
    /// Header names whose values are credentials (each one of `headers`, any case): never in
    /// published events (`[redacted]`), like `Authorization`, cookies and names with token,
    /// secret, password, key or signature, which are masked anyway.
    pub sensitive_headers: Option<Vec<String>>,
    /// The response body must be JSON with this value at `path`; `null` clears on update.
    pub expect_json: Option<JsonCheck>,
    /// New notify-on-failure flag.
    pub notify_on_failure: Option<bool>,
    /// New notify-on-recovery flag.
    pub notify_on_recovery: Option<bool>,
    /// Alert on the N-th consecutive failed run (1-1000; default 1, or the workspace's default).
    #[schema(default = 1)]
    pub alert_after_failures: Option<u32>,
    /// Remind while still failing, e.g. `"6h"` (or seconds); `null`: no reminders. Cron jobs.
    #[schema(examples("6h"))]
    pub realert_every: Option<String>,
    /// Channel ids to tell; `null` (default): all of the workspace's.
    pub alert_channels: Option<Vec<Uuid>>,
    /// What to do with fires missed while no dispatcher ran: `skip` (only a fire within the
    /// grace window runs), `run_once` (default: the latest missed fire runs once) or `run_all`
    /// (each missed fire runs, up to the last 100).
    #[schema(examples("run_once"))]
    pub misfire_policy: Option<String>,
    /// How late (seconds, 1-86400) a fire may be and still count as on time; default the
    /// operator's `CRONBOX_MISFIRE_GRACE_SECONDS` (60). `null` on update returns to it.
    pub misfire_grace_seconds: Option<i64>,
    /// What a fire does while the previous run is still going: `allow` (default, runs in
    /// parallel), `skip` (recorded as a skipped run, `error_type: overlap`) or `queue_one`
    /// (waits for the previous run; of several waiting fires the latest runs).
    #[schema(examples("skip"))]
    pub overlap_policy: Option<String>,
    /// `true` publishes a status badge (keeping its address if it has one), `false` withdraws
    /// it: the address stops answering, and a later `true` gives a new one.
    pub status_badge: Option<bool>,
}

/// A cron job as every cron endpoint returns it.
#[derive(ToSchema)]
pub struct CronJob {
    /// Job id.
    pub id: Uuid,
    /// Workspace the job belongs to.
    pub workspace_id: Uuid,
    /// Always `cron`.
    #[schema(examples("cron"))]
    pub kind: String,
    /// Name.
    pub name: String,
    /// Description (empty string if none).
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Target URL, normalised.
    pub url: String,
    /// HTTP method, upper case.
    #[schema(examples("GET"))]
    pub method: String,
    /// Request headers, name to value.
    pub headers: BTreeMap<String, String>,
    /// Request body, or null.
    #[schema(required = true)]
    pub body: Option<String>,
    /// Timeout of one attempt in seconds.
    pub timeout_seconds: u32,
    /// Retries after a failed attempt.
    pub retry_count: u32,
    /// Delay before each retry in seconds.
    pub retry_delay_seconds: u32,
    /// `fixed` or `exponential`.
    pub retry_backoff: String,
    /// Longest wait before a retry, in seconds.
    pub retry_max_delay_seconds: u32,
    /// Failures that are retried.
    pub retry_on: Vec<String>,
    /// Statuses that count as success.
    pub expected_status: Vec<String>,
    /// Text the response body must contain.
    #[schema(required = true)]
    pub expect_body_contains: Option<String>,
    /// Header names marked as credentials (lower case).
    pub sensitive_headers: Vec<String>,
    /// JSON check of the response body.
    #[schema(required = true)]
    pub expect_json: Option<JsonCheck>,
    /// Alert when runs fail (see `alert_after_failures`).
    pub notify_on_failure: bool,
    /// Alert when a failing job succeeds again (only after a failure alert).
    pub notify_on_recovery: bool,
    /// Alert on this many consecutive failed runs.
    pub alert_after_failures: u32,
    /// Reminder interval while failing (`6h`), or null.
    #[schema(required = true)]
    pub realert_every: Option<String>,
    /// Channel ids alerts go to; null: all of the workspace's.
    #[schema(required = true)]
    pub alert_channels: Option<Vec<Uuid>>,
    /// `skip`, `run_once` or `run_all` (see the create body).
    pub misfire_policy: String,
    /// The job's grace window in seconds; null: the operator's default.
    #[schema(required = true)]
    pub misfire_grace_seconds: Option<u32>,
    /// `allow`, `skip` or `queue_one` (see the create body).
    pub overlap_policy: String,
    /// Cron expression as stored (trimmed).
    #[schema(examples("30 2 * * *"))]
    pub schedule: String,
    /// IANA time zone of the schedule.
    #[schema(examples("Europe/Berlin"))]
    pub timezone: String,
    /// The schedule in English, e.g. "At 02:30." (empty if it cannot be described).
    pub description_of_schedule: String,
    /// `active` or `paused`.
    #[schema(examples("active"))]
    pub status: String,
    /// Next fire time; null while paused.
    #[schema(required = true)]
    pub next_run_at: Option<DateTime<Utc>>,
    /// When the last finished run ended, or null.
    #[schema(required = true)]
    pub last_run_at: Option<DateTime<Utc>>,
    /// Outcome of the last finished run: `succeeded` or `failed`, or null.
    #[schema(required = true)]
    pub last_status: Option<String>,
    /// Failed runs in a row since the last success.
    pub consecutive_failures: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change (update, pause, resume).
    pub updated_at: DateTime<Utc>,
    /// The status badge's token when published: the SVG is at `/badge/{status_badge}.svg`.
    #[schema(required = true)]
    pub status_badge: Option<String>,
}

/// A check of the response body as JSON.
#[derive(ToSchema)]
pub struct JsonCheck {
    /// Where to look: `$.data.items[0].status`.
    #[schema(examples("$.status"))]
    pub path: String,
    /// The value it must equal (any JSON).
    pub equals: Value,
}

/// A page of cron jobs, newest first.
#[derive(ToSchema)]
pub struct CronJobList {
    /// The jobs on this page.
    pub items: Vec<CronJob>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Answer of `POST …/cron/{id}/run` (202): a manual run was scheduled for now.
#[derive(ToSchema)]
pub struct RunRequested {
    /// The new run's id (see `…/executions/{id}`).
    pub run_id: Uuid,
    /// The cron job.
    pub job_id: Uuid,
    /// Always `scheduled`.
    #[schema(examples("scheduled"))]
    pub status: String,
    /// When the run was requested (it is dispatched at once).
    pub scheduled_for: DateTime<Utc>,
}

// ---------------------------------------------------------------- delayed calls

/// Body of `POST …/delayed`: a one-off call. Give exactly one of `execute_at` and
/// `delay_seconds`.
#[derive(ToSchema)]
pub struct DelayedCallCreate {
    /// The instant to call, RFC 3339 with offset; at most 5 s in the past and at most 366 days
    /// ahead; truncated to milliseconds.
    #[schema(examples("2026-12-01T09:00:00+01:00"))]
    pub execute_at: Option<DateTime<Utc>>,
    /// Call this many seconds from now instead, 0-31622400 (366 days).
    #[schema(minimum = 0, maximum = 31622400)]
    pub delay_seconds: Option<i64>,
    /// URL validated and stored (same rules as `url`); nothing calls it yet.
    pub callback_url: Option<String>,
    /// 1-255 visible ASCII characters, unique per workspace; may also be sent as the
    /// `Idempotency-Key` header (both must then be equal). A repeat with a used key returns the
    /// existing call with 200 and creates nothing; its body is not compared.
    #[schema(examples("order-1234-reminder"), min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// Name, 1-200 characters; default `delayed call`.
    #[schema(default = "delayed call")]
    pub name: Option<String>,
    /// Free text, at most 2000 characters; default empty.
    pub description: Option<String>,
    /// Labels: at most 20, each 1-64 characters; default none.
    #[schema(max_items = 20)]
    pub tags: Option<Vec<String>>,
    /// Target URL (required): absolute `http`/`https`, at most 2048 characters, no credentials;
    /// private, loopback and reserved addresses are refused unless the operator allows them.
    #[schema(examples("https://example.com/hooks/remind"), max_length = 2048)]
    pub url: String,
    /// HTTP method: `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD` (case-insensitive);
    /// default `GET`.
    #[schema(examples("POST"), default = "GET")]
    pub method: Option<String>,
    /// Request headers, name to value: at most 50 headers and 16 KiB in all; `Host`,
    /// `Content-Length`, `Transfer-Encoding`, `Connection`, `Keep-Alive`, `Upgrade`, `TE`,
    /// `Trailer`, `Proxy-Connection` and `X-CronBox-*` are refused.
    pub headers: Option<BTreeMap<String, String>>,
    /// Request body, a string of at most 64 KiB; default none.
    pub body: Option<String>,
    /// Timeout of one attempt in seconds, 1-300, default 10; the plan may allow less
    /// (`max_timeout_seconds`).
    #[schema(minimum = 1, maximum = 300, default = 10)]
    pub timeout_seconds: Option<i64>,
    /// Retries after a failed attempt, 0-10, default 0; the plan may allow fewer (`max_retries`).
    #[schema(minimum = 0, maximum = 10, default = 0)]
    pub retry_count: Option<i64>,
    /// Fixed delay before each retry in seconds, 0-86400, default 60.
    #[schema(minimum = 0, maximum = 86400, default = 60)]
    pub retry_delay_seconds: Option<i64>,
    /// `fixed` (default) or `exponential`: `retry_delay_seconds × 2^(n-1)` capped at
    /// `retry_max_delay_seconds`, with full jitter.
    #[schema(examples("exponential"))]
    pub retry_backoff: Option<String>,
    /// Longest wait before a retry, 1-86400, default 3600; also caps a target's `Retry-After`.
    pub retry_max_delay_seconds: Option<i64>,
    /// Which failures are retried: `transport`, `timeout`, `4xx`, `5xx` or status codes.
    /// Default `["transport", "timeout", "5xx", "408", "429"]`; a blocked target never is.
    pub retry_on: Option<Vec<String>>,
    /// Statuses that count as success: classes (`2xx`) or codes (`204`, also as numbers).
    /// Default `["2xx"]`.
    pub expected_status: Option<Vec<String>>,
    /// The response body must contain this text (1-1024 bytes); `null` clears on update.
    pub expect_body_contains: Option<String>,
    /// Header names whose values are credentials (each one of `headers`, any case): never in
    /// published events (`[redacted]`), like `Authorization`, cookies and names with token,
    /// secret, password, key or signature, which are masked anyway.
    pub sensitive_headers: Option<Vec<String>>,
    /// The response body must be JSON with this value at `path`; `null` clears on update.
    pub expect_json: Option<JsonCheck>,
    /// Notify on failure; default true (stored only).
    #[schema(default = true)]
    pub notify_on_failure: Option<bool>,
    /// Notify on recovery; default true (stored only).
    #[schema(default = true)]
    pub notify_on_recovery: Option<bool>,
    /// Alert on the N-th consecutive failed run (1-1000; default 1, or the workspace's default).
    #[schema(default = 1)]
    pub alert_after_failures: Option<u32>,
    /// Remind while still failing, e.g. `"6h"` (or seconds); `null`: no reminders. Cron jobs.
    #[schema(examples("6h"))]
    pub realert_every: Option<String>,
    /// Channel ids to tell; `null` (default): all of the workspace's.
    pub alert_channels: Option<Vec<Uuid>>,
}

/// Body of `POST …/delayed/batch`.
#[derive(ToSchema)]
pub struct DelayedBatchCreate {
    /// 1-1000 delayed calls, each exactly like the body of `POST …/delayed` (the
    /// `Idempotency-Key` header does not apply; use each item's `idempotency_key`, unique within
    /// the batch). The whole body may be at most 4 MiB.
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<DelayedCallCreate>,
}

/// The answer to `POST …/delayed/batch`.
#[derive(ToSchema)]
pub struct DelayedBatchResult {
    /// Calls created by this request.
    pub created: i64,
    /// Items whose idempotency key an earlier create had used (nothing was created for them).
    pub existing: i64,
    /// One entry per item, in request order.
    pub items: Vec<DelayedBatchItem>,
}

/// One item of a batch's answer.
#[derive(ToSchema)]
pub struct DelayedBatchItem {
    /// Position in the request's `items`.
    pub index: i64,
    /// The call's id (for `existing`, the earlier call's).
    pub id: Uuid,
    /// `created` or `existing`.
    #[schema(examples("created"))]
    pub status: String,
    /// When the call fires.
    pub execute_at: DateTime<Utc>,
    /// The id its run will have in the execution log.
    pub run_id: Uuid,
    pub idempotency_key: Option<String>,
}

/// A delayed call as every delayed-call endpoint returns it.
#[derive(ToSchema)]
pub struct DelayedCall {
    /// Call id.
    pub id: Uuid,
    /// Workspace the call belongs to.
    pub workspace_id: Uuid,
    /// Always `delayed`.
    #[schema(examples("delayed"))]
    pub kind: String,
    /// Name.
    pub name: String,
    /// Description (empty string if none).
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Target URL, normalised.
    pub url: String,
    /// HTTP method, upper case.
    #[schema(examples("POST"))]
    pub method: String,
    /// Request headers, name to value.
    pub headers: BTreeMap<String, String>,
    /// Request body, or null.
    #[schema(required = true)]
    pub body: Option<String>,
    /// Timeout of one attempt in seconds.
    pub timeout_seconds: u32,
    /// Retries after a failed attempt.
    pub retry_count: u32,
    /// Delay before each retry in seconds.
    pub retry_delay_seconds: u32,
    /// `fixed` or `exponential`.
    pub retry_backoff: String,
    /// Longest wait before a retry, in seconds.
    pub retry_max_delay_seconds: u32,
    /// Failures that are retried.
    pub retry_on: Vec<String>,
    /// Statuses that count as success.
    pub expected_status: Vec<String>,
    /// Text the response body must contain.
    #[schema(required = true)]
    pub expect_body_contains: Option<String>,
    /// Header names marked as credentials (lower case).
    pub sensitive_headers: Vec<String>,
    /// JSON check of the response body.
    #[schema(required = true)]
    pub expect_json: Option<JsonCheck>,
    /// Alert when runs fail (see `alert_after_failures`).
    pub notify_on_failure: bool,
    /// Alert when a failing job succeeds again (only after a failure alert).
    pub notify_on_recovery: bool,
    /// Alert on this many consecutive failed runs.
    pub alert_after_failures: u32,
    /// Reminder interval while failing (`6h`), or null.
    #[schema(required = true)]
    pub realert_every: Option<String>,
    /// Channel ids alerts go to; null: all of the workspace's.
    #[schema(required = true)]
    pub alert_channels: Option<Vec<Uuid>>,
    /// When the call is due (millisecond precision).
    pub execute_at: DateTime<Utc>,
    /// Stored callback URL, or null.
    #[schema(required = true)]
    pub callback_url: Option<String>,
    /// Idempotency key it was created with, or null.
    #[schema(required = true)]
    pub idempotency_key: Option<String>,
    /// Id of the run this call fires, known in advance (derived from the id and `execute_at`):
    /// `…/executions/{run_id}` works once the call has fired.
    pub run_id: Uuid,
    /// `pending`, `running`, `succeeded` or `failed`; `cancelled` only when an idempotent
    /// repeat returns a call that was cancelled.
    #[schema(examples("pending"))]
    pub status: String,
    /// `execute_at` while pending, otherwise null.
    #[schema(required = true)]
    pub next_run_at: Option<DateTime<Utc>>,
    /// When the run ended, or null.
    #[schema(required = true)]
    pub last_run_at: Option<DateTime<Utc>>,
    /// `succeeded` or `failed` once the run ended, else null.
    #[schema(required = true)]
    pub last_status: Option<String>,
    /// 1 after a failed run, else 0.
    pub consecutive_failures: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

/// A page of delayed calls, newest first (cancelled calls are not listed).
#[derive(ToSchema)]
pub struct DelayedCallList {
    /// The calls on this page.
    pub items: Vec<DelayedCall>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Query of `GET …/cron`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CronListQuery {
    /// Page size, 1-200, default 50.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only jobs with this status: `active` or `paused`.
    #[param(example = "active")]
    pub status: Option<String>,
    /// Only jobs carrying this tag.
    pub tag: Option<String>,
    /// Only jobs whose name contains this text (any case; at most 200 characters).
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// The order: `created` (newest first, the default), `name` (A to Z) or `next_run` (soonest
    /// first, jobs without a next run last). A cursor continues only the sort it came from.
    #[param(example = "name")]
    pub sort: Option<String>,
}

/// Query of `GET …/delayed`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DelayedListQuery {
    /// Page size, 1-200, default 50.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only calls with this status: `pending`, `running`, `succeeded`, `failed` or `cancelled`
    /// (cancelled calls are listed only when asked for).
    #[param(example = "pending")]
    pub status: Option<String>,
    /// Only calls carrying this tag.
    pub tag: Option<String>,
    /// Only calls whose name contains this text (any case; at most 200 characters).
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// The order: `created` (newest first, the default), `name` (A to Z) or `next_run` (the
    /// soonest call first, finished ones last). A cursor continues only the sort it came from.
    #[param(example = "next_run")]
    pub sort: Option<String>,
}

// ---------------------------------------------------------------- executions

/// The request a run sends (note: headers are a list here, not an object).
#[derive(ToSchema)]
pub struct ExecutionRequest {
    /// Target URL.
    pub url: String,
    /// HTTP method, upper case.
    #[schema(examples("POST"))]
    pub method: String,
    /// Headers in the order given.
    pub headers: Vec<RequestHeader>,
    /// Body, or null.
    #[schema(required = true)]
    pub body: Option<String>,
    /// Timeout of one attempt in seconds.
    pub timeout_seconds: u32,
    /// Retries after a failed attempt.
    pub retry_count: u32,
    /// Delay before each retry in seconds.
    pub retry_delay_seconds: u32,
    /// `fixed` or `exponential`.
    pub retry_backoff: String,
    /// Longest wait before a retry, in seconds.
    pub retry_max_delay_seconds: u32,
    /// Failures that are retried.
    pub retry_on: Vec<String>,
    /// Statuses that count as success.
    pub expected_status: Vec<String>,
    /// Text the response body must contain.
    #[schema(required = true)]
    pub expect_body_contains: Option<String>,
    /// Header names marked as credentials (absent when none).
    pub sensitive_headers: Option<Vec<String>>,
    /// JSON check of the response body.
    #[schema(required = true)]
    pub expect_json: Option<JsonCheck>,
}

/// One request header.
#[derive(ToSchema)]
pub struct RequestHeader {
    /// Header name as given.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// What the latest attempt received.
#[derive(ToSchema)]
pub struct ExecutionResponse {
    /// HTTP status, or null when no response arrived (transport error).
    #[schema(required = true)]
    pub status_code: Option<u16>,
    /// Response headers as `[name, value]` pairs.
    pub headers: Vec<(String, String)>,
    /// The first 10 KiB of the body, or null; as text when it is UTF-8 without NUL, otherwise
    /// base64 of the bytes (see `encoding`).
    #[schema(required = true)]
    pub body: Option<String>,
    /// `text` or `base64`: how `body` holds the bytes received.
    pub encoding: String,
    /// Full body size in bytes.
    pub size: u64,
}

/// What one attempt observed on the wire.
#[derive(ToSchema)]
pub struct AttemptOutcome {
    /// HTTP status, or null when no response arrived.
    #[schema(required = true)]
    pub status_code: Option<u16>,
    /// Response headers as `[name, value]` pairs.
    pub response_headers: Vec<(String, String)>,
    /// The first 10 KiB of the body, or null: text, or base64 when `response_body_encoding`
    /// says so.
    #[schema(required = true)]
    pub response_body: Option<String>,
    /// `base64` when the body was not UTF-8 text without NUL; absent for text.
    pub response_body_encoding: Option<String>,
    /// Full body size in bytes.
    pub response_size: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Transport-level failure: `timeout`, `connect`, `dns`, `tls`, `too_large`,
    /// `blocked_target` or `other`; null when a response arrived (even a non-2xx one).
    #[schema(required = true)]
    pub error_kind: Option<String>,
    /// Detail of the failure, or null.
    #[schema(required = true)]
    pub error_message: Option<String>,
}

/// Query of `GET …/executions`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionListQuery {
    /// Page size, 1-200, default 50.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only runs of this cron job or delayed call.
    pub job_id: Option<Uuid>,
    /// Only runs with this status: `scheduled`, `dispatched`, `running`, `retry_scheduled`,
    /// `succeeded`, `failed` or `skipped`.
    #[param(example = "failed")]
    pub status: Option<String>,
    /// Only runs whose callback is `pending`, `retrying`, `delivered` or `failed` (the failed
    /// callbacks of a workspace: `callback_status=failed`).
    pub callback_status: Option<String>,
    /// Only runs whose last error was of this type: `timeout`, `connect`, `dns`, `tls`,
    /// `too_large`, `http_status`, `assertion`, `blocked_target` or `other`.
    #[param(example = "timeout")]
    pub error_type: Option<String>,
    /// Only runs scheduled at or after this instant (RFC 3339).
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only runs scheduled before this instant (RFC 3339).
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

// ---------------------------------------------------------------- audit trail

/// The stored events of one aggregate, in order.
#[derive(ToSchema)]
pub struct EventList {
    /// `Job` (cron jobs and delayed calls) or `Run` (executions).
    #[schema(examples("Job"))]
    pub aggregate_type: String,
    /// The job's or run's id.
    pub aggregate_id: Uuid,
    /// The events, oldest first.
    pub items: Vec<StoredEvent>,
}

/// One stored event.
#[derive(ToSchema)]
pub struct StoredEvent {
    /// Position in the aggregate's stream, from 1.
    pub sequence: i64,
    /// Event type: `JobCreated`, `JobUpdated`, `JobPaused`, `JobResumed`, `JobDeleted`,
    /// `RunRequested`; `RunScheduled`, `RunDispatched`, `AttemptStarted`, `AttemptFinished`,
    /// `RetryScheduled`, `RunSucceeded`, `RunFailed`, `RunSkipped`.
    #[schema(examples("JobCreated"))]
    pub r#type: String,
    /// Event schema version (a string).
    #[schema(examples("1"))]
    pub version: String,
    /// When the event was stored.
    pub recorded_at: DateTime<Utc>,
    /// The event's fields (shape depends on `type`).
    pub data: Value,
}

/// `POST …/executions/{id}/rerun` (and the admin route): the new run.
#[derive(ToSchema)]
pub struct Rerun {
    /// The new run.
    pub run_id: Uuid,
    /// The run it repeats.
    pub rerun_of: Uuid,
    /// The job both belong to.
    pub job_id: Uuid,
    /// The workspace.
    pub workspace_id: Uuid,
    /// Always `scheduled`: it runs at once.
    #[schema(examples("scheduled"))]
    pub status: String,
    /// Now.
    pub scheduled_for: DateTime<Utc>,
}

// ---------------------------------------------------------------- admin

/// `GET /v1/admin/projections`.
#[derive(ToSchema)]
pub struct ProjectionList {
    /// Every projection (and the inline `usage_counters`).
    pub items: Vec<ProjectionStatus>,
}

/// One projection's position in the log.
#[derive(ToSchema)]
pub struct ProjectionStatus {
    /// `jobs`, `runs`, `schedule`, `workspaces`, `usage` (or `usage_counters`, written inline).
    pub name: String,
    /// Last event applied, `<xid>-<seq>`; null for the inline counters.
    #[schema(required = true)]
    pub checkpoint: Option<String>,
    /// When the checkpoint last moved.
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Committed events not applied yet (counting stops at 1 000 000).
    pub lag_events: i64,
    /// Age of the oldest event not applied yet; 0 when caught up.
    pub lag_seconds: f64,
    /// Events it could not apply: recorded in `projection_failures` and skipped, so the events
    /// behind them still apply (`GET …/failures`).
    pub quarantined: i64,
    /// Later events of the quarantined events' aggregates, held until a retry.
    pub parked: i64,
    /// True for `usage_counters`.
    pub inline: Option<bool>,
    /// The latest rebuild started through this API process, if any.
    #[schema(required = true)]
    pub rebuild: Option<RebuildProgress>,
}

/// `GET /v1/admin/projections/{name}/failures`.
#[derive(ToSchema)]
pub struct ProjectionFailureList {
    /// Open failures, oldest first in log order.
    pub items: Vec<ProjectionFailure>,
}

/// An event a projection could not apply, or one held behind it.
#[derive(ToSchema)]
pub struct ProjectionFailure {
    /// Row id.
    pub id: i64,
    /// The projection.
    pub projection: String,
    /// `Workspace`, `Job`, `Run`, `User` or `Session`.
    pub aggregate_type: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// The event's sequence in its aggregate.
    pub sequence: i64,
    /// The event's type.
    pub event_type: String,
    /// The event's position in the global order, `<xid>-<seq>`.
    pub cursor: String,
    /// `quarantined` (applying it failed) or `parked` (held behind a quarantined event of the
    /// same aggregate).
    pub state: String,
    /// The error, with its causes.
    pub error: String,
    /// Tries so far.
    pub attempts: i32,
    /// When it last failed.
    pub failed_at: DateTime<Utc>,
}

/// `POST /v1/admin/projections/{name}/failures/retry`.
#[derive(ToSchema)]
pub struct RetryReport {
    /// The projection.
    pub projection: String,
    /// Events applied now.
    pub resolved: u64,
    /// Events that failed again, or are still held behind one that did.
    pub still_failing: u64,
}

/// A rebuild's progress.
#[derive(ToSchema)]
pub struct RebuildProgress {
    /// The projection.
    pub projection: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// Events replayed so far (counters rebuilt, for `usage_counters`).
    pub events_replayed: u64,
    /// Events in the log when it started.
    pub events_total: i64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End, once ended.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The superuser who started it.
    pub started_by: Uuid,
}

/// `GET /v1/admin/aggregates/{type}/{id}/events`.
#[derive(ToSchema)]
pub struct AdminEventList {
    /// The events as stored, oldest first.
    pub items: Vec<AdminEvent>,
}

/// One stored event, whole.
#[derive(ToSchema)]
pub struct AdminEvent {
    /// `Workspace`, `Job`, `Run`, `User` or `Session`.
    pub aggregate_type: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// Position in the aggregate, from 1.
    pub sequence: i64,
    /// Event type.
    pub r#type: String,
    /// Event version.
    pub version: String,
    /// Global cursor, `<xid>-<seq>`.
    pub id: String,
    /// Its workspace (null for users and sessions).
    #[schema(required = true)]
    pub workspace_id: Option<Uuid>,
    /// When it was committed.
    pub recorded_at: DateTime<Utc>,
    /// The stored payload.
    pub data: Value,
    /// The stored metadata.
    pub metadata: Value,
}

// ---------------------------------------------------------------- event stream and live feed

/// Query of `GET …/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListQuery {
    /// `next_cursor` of the previous page (or any event's `id`); events strictly after it.
    /// Without it: from the oldest event inside the plan's log retention.
    #[param(example = "48211-90311")]
    pub after: Option<String>,
    /// Page size, 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u32>,
    /// Comma-separated event types to keep, e.g. `RunSucceeded,RunFailed` (docs/events.md).
    pub types: Option<String>,
}

/// A page of the workspace's event stream.
#[derive(ToSchema)]
pub struct PublishedEventList {
    /// Events in global order.
    pub items: Vec<PublishedEvent>,
    /// Pass as `after` for the next page; unchanged when the page is empty (poll with it).
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// An event as published (HTTP, NATS, and in the live feed's `data`). Schema version 1; see
/// docs/events.md for every type's `data`.
#[derive(ToSchema)]
pub struct PublishedEvent {
    /// Cursor into the global order (`<xid>-<seq>`): stable, increasing.
    #[schema(examples("48211-90311"))]
    pub id: String,
    /// Version of this envelope and of `data` (1).
    pub schema_version: u32,
    /// Event type, e.g. `RunSucceeded`.
    #[schema(examples("RunSucceeded"))]
    pub r#type: String,
    /// The workspace.
    pub workspace_id: Uuid,
    /// `job`, `run` or `workspace`.
    #[schema(examples("run"))]
    pub aggregate_type: String,
    /// The job's, run's or workspace's id.
    pub aggregate_id: String,
    /// Position in that aggregate's own stream, from 1.
    pub sequence: i64,
    /// When the event was committed.
    pub recorded_at: DateTime<Utc>,
    /// The event's fields; credential headers are `[redacted]`, key and invite hashes left out.
    pub data: Value,
}

/// Body of `POST …/event-subscriptions`.
#[derive(ToSchema)]
pub struct CreateEventSubscription {
    /// A label; default `subscription`.
    pub name: Option<String>,
    /// Only these event types (default: all published types).
    pub types: Option<Vec<String>>,
    /// Lifetime of the credentials, 1-90 days; default 90 (create a new subscription to renew).
    pub expires_in_days: Option<u32>,
}

/// A subscription (credentials only in the creation response).
#[derive(ToSchema)]
pub struct EventSubscription {
    /// Subscription id.
    pub id: Uuid,
    /// Its label.
    pub name: String,
    /// Event types it carries; empty = all.
    pub types: Vec<String>,
    /// When the credentials expire.
    pub expires_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Where to read it.
    pub nats: SubscriptionNats,
}

/// How to reach a subscription over NATS.
#[derive(ToSchema)]
pub struct SubscriptionNats {
    /// Server URL (creation response only).
    pub url: Option<String>,
    /// The JetStream stream, `<PREFIX>_EVENTS`.
    #[schema(required = true)]
    pub stream: Option<String>,
    /// The durable pull consumer the credentials may read.
    pub consumer: String,
    /// The custom inbox prefix the client must use (replies go only there).
    pub inbox_prefix: String,
    /// The credentials' user public key.
    pub user_public_key: String,
}

/// `POST …/event-subscriptions`: the subscription with its credentials, shown once.
#[derive(ToSchema)]
pub struct EventSubscriptionCreated {
    /// Subscription id.
    pub id: Uuid,
    /// Its label.
    pub name: String,
    /// Event types it carries; empty = all.
    pub types: Vec<String>,
    /// When the credentials expire.
    pub expires_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Where to read it.
    pub nats: SubscriptionNats,
    /// The `.creds` file (user JWT and seed); not stored by CronBox.
    pub credentials: String,
    /// A ready `nats` CLI command and a note.
    pub usage: Value,
}

/// `GET …/event-subscriptions`.
#[derive(ToSchema)]
pub struct EventSubscriptionList {
    /// Live subscriptions, oldest first.
    pub items: Vec<EventSubscription>,
}

/// Query of `GET …/executions/stream`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Only this job's runs.
    pub job_id: Option<Uuid>,
    /// Comma-separated statuses to keep: `scheduled`, `skipped`, `dispatched`, `running`,
    /// `attempt_succeeded`, `attempt_failed`, `retry_scheduled`, `succeeded`, `failed`.
    pub status: Option<String>,
    /// Resume after this message `id` (the `Last-Event-ID` header wins when both are sent).
    pub after: Option<String>,
}

/// The `data` of one feed message (its SSE `id` is `id`).
#[derive(ToSchema)]
pub struct FeedMessage {
    /// Cursor into the global order; the SSE message id.
    #[schema(examples("48211-90311"))]
    pub id: String,
    /// Version of this message's shape (1).
    pub schema_version: u32,
    /// The run event: `RunScheduled`, `RunSkipped`, `RunDispatched`, `AttemptStarted`,
    /// `AttemptFinished`, `RetryScheduled`, `RunSucceeded`, `RunFailed`.
    pub r#type: String,
    /// What the run did: `scheduled`, `skipped`, `dispatched`, `running`, `attempt_succeeded`,
    /// `attempt_failed`, `retry_scheduled`, `succeeded`, `failed`.
    pub status: String,
    /// The workspace.
    pub workspace_id: Uuid,
    /// The run's job.
    #[schema(required = true)]
    pub job_id: Option<Uuid>,
    /// The run.
    pub run_id: Uuid,
    /// When the event was committed.
    pub recorded_at: DateTime<Utc>,
    /// The event's published fields (as in `GET …/events`).
    pub data: Value,
}

// ---------------------------------------------------------------- cron preview

/// Query of `GET /v1/cron/preview`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// Cron expression to preview (required).
    #[param(example = "30 2 * * *")]
    pub schedule: String,
    /// IANA time zone; default the workspace's when a key is sent, else `Europe/Moscow`.
    #[param(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// How many fire times, 1-100, default 5.
    #[param(minimum = 1, maximum = 100, default = 5)]
    pub count: Option<u32>,
    /// List fire times strictly after this instant (RFC 3339 with offset); default now.
    pub after: Option<DateTime<Utc>>,
}

/// The next fire times of a schedule, computed by the dispatcher's own code.
#[derive(ToSchema)]
pub struct CronPreview {
    /// The expression as parsed.
    #[schema(examples("30 2 * * *"))]
    pub schedule: String,
    /// The time zone used, as given.
    #[schema(examples("Europe/Berlin"))]
    pub timezone: String,
    /// The schedule in English.
    #[schema(examples("At 02:30."))]
    pub description: String,
    /// Upcoming fire times, RFC 3339 with the zone's offset (not UTC).
    pub next: Vec<DateTime<Utc>>,
}

// ---------------------------------------------------------------- accounts

/// Body of `POST /v1/auth/register`.
#[derive(ToSchema)]
pub struct Register {
    /// E-mail address (normalised to lower case); must be unused.
    #[schema(examples("anna@example.com"))]
    pub email: String,
    /// Password: at least 10 characters, at most 256 bytes.
    #[schema(min_length = 10)]
    pub password: String,
    /// Display name, 1-200 characters.
    #[schema(examples("Anna"))]
    pub name: String,
}

/// Body of `POST /v1/auth/login`.
#[derive(ToSchema)]
pub struct Login {
    /// E-mail address.
    #[schema(examples("anna@example.com"))]
    pub email: String,
    /// Password.
    pub password: String,
}

/// Answer of login and refresh: a new access token and refresh token.
#[derive(ToSchema)]
pub struct TokenPair {
    /// HS256 JWT for `Authorization: Bearer`, valid 15 minutes.
    pub access_token: String,
    /// Refresh token (`cbr_…`), valid 30 days from its last use; single use (rotated).
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(examples("Bearer"))]
    pub token_type: String,
    /// Access token lifetime in seconds (900).
    #[schema(examples(900))]
    pub expires_in: i64,
}

/// Body of `POST /v1/auth/refresh`.
#[derive(ToSchema)]
pub struct RefreshRequest {
    /// The current refresh token; it stops working. Presenting one already rotated away revokes
    /// the whole session.
    pub refresh_token: String,
}

/// Body of `POST /v1/auth/verify-email`.
#[derive(ToSchema)]
pub struct VerifyEmail {
    /// The single-use token from the verification mail (valid 48 hours).
    pub token: String,
}

/// Body of `POST /v1/auth/password-reset`.
#[derive(ToSchema)]
pub struct PasswordResetRequest {
    /// The account's e-mail address (the answer is 202 whether or not it exists).
    #[schema(examples("anna@example.com"))]
    pub email: String,
}

/// Body of `POST /v1/auth/password-reset/confirm`.
#[derive(ToSchema)]
pub struct PasswordResetConfirm {
    /// The single-use token from the reset mail (valid 60 minutes).
    pub token: String,
    /// The new password: at least 10 characters, at most 256 bytes.
    #[schema(min_length = 10)]
    pub password: String,
}

/// A user: `GET /v1/me`, and the answer of register (201) and verify-email (200).
#[derive(ToSchema)]
pub struct Me {
    /// User id.
    pub id: Uuid,
    /// E-mail address, lower case.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Whether the address was confirmed.
    pub email_verified: bool,
    /// Operator account (may change plans).
    pub superuser: bool,
    /// Sign-up time.
    pub created_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- workspaces

/// Body of `POST /v1/workspaces`; the caller becomes its owner.
#[derive(ToSchema)]
pub struct WorkspaceCreate {
    /// Name, 1-200 characters.
    #[schema(examples("Shop"))]
    pub name: String,
    /// URL-safe handle, unique: 3-40 of `a-z 0-9 -`, not starting or ending with `-`; default
    /// generated from the name.
    #[schema(examples("shop"), min_length = 3, max_length = 40)]
    pub slug: Option<String>,
    /// IANA time zone, the default for new cron jobs and for usage months; default
    /// `Europe/Moscow`.
    #[schema(examples("Europe/Berlin"), default = "Europe/Moscow")]
    pub timezone: Option<String>,
}

/// Body of `PATCH /v1/workspaces/{ws}` (admin or owner): only the fields given change.
#[derive(ToSchema)]
pub struct WorkspaceUpdate {
    /// New name, 1-200 characters.
    pub name: Option<String>,
    /// New IANA time zone.
    #[schema(examples("Europe/Berlin"))]
    pub timezone: Option<String>,
    /// New slug (same rules as on create); the old one is released.
    #[schema(min_length = 3, max_length = 40)]
    pub slug: Option<String>,
}

/// A workspace, with the caller's role in it.
#[derive(ToSchema)]
pub struct Workspace {
    /// Workspace id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Slug, or null (workspaces created with the CLI have none).
    #[schema(required = true)]
    pub slug: Option<String>,
    /// IANA time zone.
    #[schema(examples("Europe/Moscow"))]
    pub timezone: String,
    /// Plan code, e.g. `free`.
    #[schema(examples("free"))]
    pub plan: String,
    /// The caller's role: `owner`, `admin`, `member` or `viewer` (an API key acts as `member`,
    /// or `viewer` when read-only).
    #[schema(examples("owner"))]
    pub role: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// One of the caller's workspaces as `GET /v1/workspaces` lists it (no `plan`).
#[derive(ToSchema)]
pub struct WorkspaceSummary {
    /// Workspace id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Slug, or null.
    #[schema(required = true)]
    pub slug: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// The caller's role: `owner`, `admin`, `member` or `viewer`.
    #[schema(examples("owner"))]
    pub role: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// The caller's workspaces, oldest first (not paginated).
#[derive(ToSchema)]
pub struct WorkspaceList {
    /// Every workspace the caller is a member of.
    pub items: Vec<WorkspaceSummary>,
}

/// A member of a workspace.
#[derive(ToSchema)]
pub struct Member {
    /// User id.
    pub user_id: Uuid,
    /// E-mail address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `owner`, `admin`, `member` or `viewer`.
    #[schema(examples("member"))]
    pub role: String,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

/// The members of a workspace (not paginated).
#[derive(ToSchema)]
pub struct MemberList {
    /// Every member.
    pub items: Vec<Member>,
}

/// Body of `PATCH …/members/{user_id}` (admin or owner; only owners make owners; the last owner
/// cannot be demoted).
#[derive(ToSchema)]
pub struct RoleChange {
    /// The new role: `owner`, `admin`, `member` or `viewer` (required).
    #[schema(examples("viewer"))]
    pub role: String,
}

/// Answer of `PATCH …/members/{user_id}`.
#[derive(ToSchema)]
pub struct RoleChanged {
    /// The member's user id.
    pub user_id: Uuid,
    /// Their role now.
    #[schema(examples("viewer"))]
    pub role: String,
}

/// Body of `POST …/invites` (admin or owner; only owners invite owners). The token is mailed.
#[derive(ToSchema)]
pub struct InviteCreate {
    /// Address to invite.
    #[schema(examples("bob@example.com"))]
    pub email: String,
    /// Role on joining: `owner`, `admin`, `member` or `viewer`; default `member`.
    #[schema(examples("member"), default = "member")]
    pub role: Option<String>,
}

/// A sent invitation (its token is only in the mail).
#[derive(ToSchema)]
pub struct Invite {
    /// Invitation id.
    pub id: Uuid,
    /// Invited address, lower case.
    pub email: String,
    /// Role on joining.
    #[schema(examples("member"))]
    pub role: String,
    /// When the invitation stops working (7 days after sending).
    pub expires_at: DateTime<Utc>,
}

/// `GET …/invites`.
#[derive(ToSchema)]
pub struct InviteList {
    /// Pending invitations.
    pub items: Vec<PendingInvite>,
}

/// An invitation not yet accepted, withdrawn or expired.
#[derive(ToSchema)]
pub struct PendingInvite {
    /// Invitation id (`DELETE …/invites/{id}` withdraws it).
    pub id: Uuid,
    /// Invited address, lower case.
    pub email: String,
    /// Role on joining.
    pub role: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was sent (null for invitations sent before this was recorded).
    #[schema(required = true)]
    pub invited_at: Option<DateTime<Utc>>,
}

/// Body of `POST /v1/invites/accept`: the logged-in user, whose address was invited, joins. The
/// answer is the joined `Workspace`.
#[derive(ToSchema)]
pub struct InviteAccept {
    /// The `cbi_…` token from the invitation mail.
    pub token: String,
}

// ---------------------------------------------------------------- API keys

/// Body of `POST …/keys` (admin or owner).
#[derive(ToSchema)]
pub struct ApiKeyCreate {
    /// Label, 1-100 characters (trimmed); default `api key`.
    #[schema(examples("ci"), default = "api key")]
    pub name: Option<String>,
    /// A read-only key acts as `viewer` instead of `member`; default false.
    #[schema(default = false)]
    pub read_only: Option<bool>,
}

/// An API key, without its secret.
#[derive(ToSchema)]
pub struct ApiKey {
    /// Key id (for revoking).
    pub id: Uuid,
    /// Label.
    pub name: String,
    /// The key's first 12 characters, for recognising it.
    #[schema(examples("cbx_0f8e2c1a"))]
    pub prefix: String,
    /// Whether the key acts as `viewer`.
    pub read_only: bool,
    /// Whether the key was revoked (revoked keys stay listed).
    pub revoked: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last use, to the minute, or null if never used.
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A new API key, with its secret: shown this once, stored only as a hash.
#[derive(ToSchema)]
pub struct ApiKeyCreated {
    /// Key id (for revoking).
    pub id: Uuid,
    /// Label.
    pub name: String,
    /// The key's first 12 characters.
    #[schema(examples("cbx_0f8e2c1a"))]
    pub prefix: String,
    /// Whether the key acts as `viewer`.
    pub read_only: bool,
    /// Always false.
    pub revoked: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Always null for a new key.
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The full key (`cbx_<workspace id>_<secret>`) for `Authorization: Bearer`; never shown again.
    pub key: String,
}

/// The workspace's API keys, revoked ones included (not paginated).
#[derive(ToSchema)]
pub struct ApiKeyList {
    /// Every key.
    pub items: Vec<ApiKey>,
}

// ---------------------------------------------------------------- plans and usage

/// A plan and its limits.
#[derive(ToSchema)]
pub struct Plan {
    /// Plan code, e.g. `free`, `starter`, `pro`, `business`.
    #[schema(examples("free"))]
    pub code: String,
    /// Display name.
    #[schema(examples("Free"))]
    pub name: String,
    /// Monthly price in kopecks (1/100 RUB).
    pub price_kopecks: i64,
    /// Always `RUB`.
    #[schema(examples("RUB"))]
    pub currency: String,
    /// The limits; null means unlimited.
    pub limits: PlanLimits,
    /// What the plan switches on.
    pub features: PlanFeatures,
}

/// A plan's features.
#[derive(ToSchema)]
pub struct PlanFeatures {
    /// The workspace may read its own event stream (`GET …/events`, `POST …/event-subscriptions`).
    pub event_stream: bool,
}

/// A plan's limits.
#[derive(ToSchema)]
pub struct PlanLimits {
    /// Cron jobs neither paused nor deleted; null = unlimited.
    #[schema(required = true)]
    pub max_active_cron_jobs: Option<i32>,
    /// Delayed calls created per calendar month (workspace time zone); null = unlimited.
    #[schema(required = true)]
    pub max_delayed_per_month: Option<i32>,
    /// Shortest allowed gap between two fires of a cron job, in seconds.
    pub min_cron_interval_seconds: i32,
    /// Largest `timeout_seconds` allowed.
    pub max_timeout_seconds: i32,
    /// Largest `retry_count` allowed.
    pub max_retries: i32,
    /// Days finished runs stay in the execution log.
    pub log_retention_days: i32,
    /// Members per workspace; null = unlimited.
    #[schema(required = true)]
    pub max_members: Option<i32>,
    /// API keys (not revoked) per workspace; null = unlimited.
    #[schema(required = true)]
    pub max_api_keys: Option<i32>,
    /// API requests per minute per key or user, and for the workspace as a whole.
    pub requests_per_minute: i32,
    /// Runs of the workspace in flight at once (dispatched, not finished); further due runs wait
    /// in the dispatcher until one finishes. Null: the installation's default
    /// (`CRONBOX_MAX_RUNS_IN_FLIGHT`).
    #[schema(required = true)]
    pub max_runs_in_flight: Option<i32>,
}

/// Every plan, cheapest first.
#[derive(ToSchema)]
pub struct PlanList {
    /// The plans.
    pub items: Vec<Plan>,
}

/// `GET …/usage`: the workspace's plan and its usage against each limit.
#[derive(ToSchema)]
pub struct Usage {
    /// The workspace's plan.
    pub plan: Plan,
    /// The current usage month.
    pub period: UsagePeriod,
    /// Usage counters.
    pub usage: UsageCounters,
}

/// The calendar month monthly counters cover, in the workspace's time zone.
#[derive(ToSchema)]
pub struct UsagePeriod {
    /// `YYYY-MM`.
    #[schema(examples("2026-11"))]
    pub month: String,
    /// IANA time zone the month is taken in.
    #[schema(examples("Europe/Moscow"))]
    pub timezone: String,
    /// Start of the month (inclusive).
    pub start: DateTime<Utc>,
    /// Start of the next month (exclusive).
    pub end: DateTime<Utc>,
}

/// Usage against each limit.
#[derive(ToSchema)]
pub struct UsageCounters {
    /// Cron jobs neither paused nor deleted.
    pub active_cron_jobs: UsageCounter,
    /// Delayed calls created this month (cancelled ones count).
    pub delayed_calls_this_month: UsageCounter,
    /// Runs this month (no limit: `limit` is always null).
    pub runs_this_month: UsageCounter,
    /// Members.
    pub members: UsageCounter,
    /// API keys not revoked.
    pub api_keys: UsageCounter,
}

/// One counter.
#[derive(ToSchema)]
pub struct UsageCounter {
    /// Current value.
    pub used: i64,
    /// The plan's limit, or null if unlimited.
    #[schema(required = true)]
    pub limit: Option<i64>,
}

/// Body of `PUT …/plan` (superusers only; 404 for everyone else).
#[derive(ToSchema)]
pub struct SetPlan {
    /// Code of the new plan.
    #[schema(examples("pro"))]
    pub plan: String,
}

/// Answer of `PUT …/plan`.
#[derive(ToSchema)]
pub struct PlanChanged {
    /// The workspace.
    pub workspace_id: Uuid,
    /// Its plan now.
    pub plan: Plan,
}

// ---------------------------------------------------------------- job defaults

/// A workspace's defaults for new jobs (`…/job-defaults`). Each field, when set, is used by a
/// create that does not give it; null means the built-in default. Same rules as the job fields.
#[derive(ToSchema)]
pub struct JobDefaultsView {
    #[schema(required = true)]
    pub timeout_seconds: Option<u32>,
    #[schema(required = true)]
    pub retry_count: Option<u32>,
    #[schema(required = true)]
    pub retry_delay_seconds: Option<u32>,
    /// `fixed` or `exponential`.
    #[schema(required = true)]
    pub retry_backoff: Option<String>,
    #[schema(required = true)]
    pub retry_max_delay_seconds: Option<u32>,
    #[schema(required = true)]
    pub retry_on: Option<Vec<String>>,
    #[schema(required = true)]
    pub expected_status: Option<Vec<String>>,
    /// `skip`, `run_once` or `run_all`.
    #[schema(required = true)]
    pub misfire_policy: Option<String>,
    #[schema(required = true)]
    pub misfire_grace_seconds: Option<u32>,
    /// `allow`, `skip` or `queue_one`.
    #[schema(required = true)]
    pub overlap_policy: Option<String>,
    /// Alert when runs fail; null: true.
    #[schema(required = true)]
    pub notify_on_failure: Option<bool>,
    /// Alert when a failing job recovers; null: true.
    #[schema(required = true)]
    pub notify_on_recovery: Option<bool>,
    /// Consecutive failed runs before a cron job alerts; null: 1.
    #[schema(required = true)]
    pub alert_after_failures: Option<u32>,
    /// Reminder interval while failing (`6h`); null: no reminders.
    #[schema(required = true)]
    pub realert_every: Option<String>,
}

// ---------------------------------------------------------------- signing

/// `GET …/signing-secret`.
#[derive(ToSchema)]
pub struct SigningSecretView {
    /// The current secret's id.
    pub id: Uuid,
    /// The current secret, `whsec_<base64>`: give it to your receivers (see README, "Verifying
    /// requests").
    #[schema(examples("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))]
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// Older secrets that still sign alongside it until `expires_at` (values not shown).
    pub previous: Vec<PreviousSecret>,
}

/// A rotated secret still in its overlap period.
#[derive(ToSchema)]
pub struct PreviousSecret {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// When it stops signing.
    pub expires_at: DateTime<Utc>,
}

/// Body of `POST …/signing-secret/rotate`.
#[derive(ToSchema)]
pub struct RotateSecret {
    /// How long the previous secret keeps signing next to the new one: 0 to 604800 seconds,
    /// default 86400.
    pub overlap_seconds: Option<i64>,
}

/// Answer of `POST …/signing-secret/rotate`.
#[derive(ToSchema)]
pub struct SigningSecretRotated {
    pub id: Uuid,
    /// The new current secret, `whsec_<base64>`.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// When the previous secret stops signing (now, if the overlap was 0).
    #[schema(required = true)]
    pub previous_expires_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------- service

/// `GET /healthz`: the process is up.
#[derive(ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(examples("ok"))]
    pub status: String,
}

/// `GET /readyz`: dependencies reachable (503 with the same body if either is false).
#[derive(ToSchema)]
pub struct Ready {
    /// PostgreSQL answers.
    pub postgres: bool,
    /// NATS JetStream is reachable (true when this process has no queue configured).
    pub nats: bool,
}

/// Body of `POST …/notification-channels`.
#[derive(ToSchema)]
pub struct ChannelCreate {
    /// `email` or `webhook` (Telegram chats are linked, not created).
    #[schema(examples("webhook"))]
    pub r#type: String,
    /// 1-100 characters.
    pub name: String,
    /// E-mail channels: the address; a confirmation mail is sent to it.
    pub address: Option<String>,
    /// Webhook channels: the endpoint (SSRF-guarded like job targets).
    pub url: Option<String>,
    /// `ru` or `en`; default from `Accept-Language`, else `ru`.
    pub language: Option<String>,
}

/// Answer of `POST …/notification-channels`.
#[derive(ToSchema)]
pub struct ChannelCreated {
    pub id: Uuid,
    pub r#type: String,
    pub name: String,
    pub language: String,
    /// `active`, `pending_verification` or `disabled`.
    pub status: String,
    pub target: String,
    pub created_at: DateTime<Utc>,
    /// Webhook channels: the `whsec_` signing secret, shown this once.
    pub secret: Option<String>,
}

/// Body of `PATCH …/notification-channels/{id}`.
#[derive(ToSchema)]
pub struct ChannelUpdate {
    pub name: Option<String>,
    /// `ru` or `en`.
    pub language: Option<String>,
    /// `false` switches the channel off; `true` back on.
    pub enabled: Option<bool>,
}

/// Answer of `POST …/notification-channels/{id}/test`.
#[derive(ToSchema)]
pub struct TestQueued {
    pub notification_id: Uuid,
}

/// Answer of `POST …/notification-channels/{id}/rotate-secret`.
#[derive(ToSchema)]
pub struct ChannelSecret {
    /// `whsec_<base64>`, shown this once.
    pub secret: String,
}
