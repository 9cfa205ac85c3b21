//! CronBox's domain: the aggregates (workspace, job, run), their commands and events, and the
//! value types every other crate passes around (validated request specs, cron schedules).
//!
//! This crate does no IO. Everything here is a pure function of its inputs (time is passed in,
//! never read from the clock inside a command handler), so each command is unit-tested with
//! given/when/then specifications. Validation happens once, when a value is parsed at the edge;
//! after that, a `RequestSpec` or `CronSchedule` cannot hold a bad value.

pub mod error;
pub mod ids;
pub mod job;
pub mod policy;
pub mod request;
pub mod run;
pub mod schedule;
pub mod session;
pub mod target;
pub mod usage;
pub mod user;
pub mod webhook;
pub mod workspace;

pub use error::FieldError;
