//! The executor: performs runs' HTTP calls and records what happened.
//!
//! Many executor tasks (and processes) share one durable JetStream pull consumer. For each
//! message: load the run from the event store; if that attempt already finished (a redelivery
//! after a crash, or a duplicate publish), acknowledge without calling anyone; otherwise record
//! the attempt's start, call the target, record the outcome, and only then acknowledge. A crash
//! before the outcome commits means a redelivery and a repeated call carrying the same
//! `X-CronBox-Run-Id`, which targets can use to deduplicate; a crash after it means a
//! redelivery that is acknowledged at once.
//!
//! Retries are scheduled runs, not delayed redeliveries: the run aggregate records
//! `RetryScheduled { retry_at }` and the dispatcher re-dispatches it when due, so a retry
//! survives anything that happens to JetStream in between.

pub mod http;
pub mod worker;

pub use worker::{run, ExecutorConfig};
