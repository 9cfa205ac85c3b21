//! Read models built from the event log.
//!
//! Each projection follows the global-order tail (`cronbox_store::tail`) and applies events to
//! its tables **in the same transaction** as it advances its checkpoint, so a crash either keeps
//! both or neither: no event is lost or applied twice. Several processes may run the same
//! projection; a transaction-scoped advisory lock makes them take turns.
//!
//! - [`jobs`]: the job list with derived `next_run_at`, `last_run_at`, `last_status`,
//!   `consecutive_failures`.
//! - [`runs`]: the execution log (runs and their attempts).
//! - [`schedule`]: the due-schedule index the dispatcher loads at start-up; [`schedule::changes`]
//!   is the pure reducer the dispatcher also applies to its in-memory copy.
//!
//! - [`workspaces`]: workspaces and their members, for "my workspaces" lists.
//! - [`usage`]: runs per workspace and month, for the usage report.
//! - [`notifications`]: notification channels, alerts and their deliveries.
//! - [`retention`]: removes runs past their plan's retention from the execution log (a sweep
//!   on the clock, apart from the projections).
//!
//! - [`admin`]: checkpoints, lag and rebuilds, for the CLI and the admin API.
//! - [`quarantine`]: events a projection cannot apply are recorded and skipped (their
//!   aggregate's later events held behind them), never retried for ever.
//!
//! Projections never read the clock: rebuilding from the log yields the same rows.

pub mod admin;
pub mod jobs;
pub mod notifications;
pub mod quarantine;
pub mod rebuild;
pub mod retention;
pub mod runner;
pub mod runs;
pub mod schedule;
pub mod usage;
pub mod workspaces;

pub use runner::{run_projection, Projection, ProjectionError};

/// Every projection, by name.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(jobs::JobsProjection),
        Box::new(runs::RunsProjection),
        Box::new(schedule::ScheduleProjection),
        Box::new(workspaces::WorkspacesProjection),
        Box::new(usage::UsageProjection),
        Box::new(notifications::NotificationsProjection),
    ]
}
