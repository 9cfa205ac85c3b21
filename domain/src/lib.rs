//! CronBox's domain: the aggregates (workspace, job, run), their commands and events, and the
//! value types every other crate passes around (validated request specs, cron schedules).
//!
//! This crate does no IO. Everything here is a pure function of its inputs (time is passed in,
//! never read from the clock inside a command handler), so each command is unit-tested with
//! given/when/then specifications. Validation happens once, when a value is parsed at the edge;
//! after that, a `RequestSpec` or `CronSchedule` cannot hold a bad value.

pub mod alert;
pub mod channel;
pub mod cron_builder;
pub mod cron_words;
pub mod curl;
pub mod error;
pub mod ids;
pub mod job;
pub mod notification;
pub mod policy;
pub mod public;
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

/// Runs `command` through the aggregate's own `handle` on a copy, without IO: the state it leads
/// to and the events to append. Every path that writes events outside cqrs-es' `execute` (batch
/// appends, group commits) decides through this, so it cannot drift from what `handle` decides.
/// The aggregate itself is left as it was (`handle` applies events as it decides them).
pub async fn decide<A: cqrs_es::Aggregate<Services = ()> + Clone>(
    aggregate: &A,
    command: A::Command,
) -> Result<(A, Vec<A::Event>), A::Error> {
    let mut next = aggregate.clone();
    let sink = cqrs_es::event_sink::EventSink::default();
    next.handle(command, &(), &sink).await?;
    Ok((next, sink.collect().await))
}
