//! The event store: PostgreSQL access shared by every stage of the flow.
//!
//! - [`create_batch`] writes concurrent job creates together (one commit, one checked counter
//!   update per workspace).
//! - [`db`] connects and applies the SQL migrations in `migrations/`.
//! - [`aggregates`] wires the domain aggregates to cqrs-es / postgres-es (plain event-store
//!   mode: no snapshots, no inline queries — read models are built by the projections crate from
//!   the tail, so a crash between commit and view update cannot lose anything).
//! - [`append`] writes the events of many aggregates in one multi-row INSERT (the dispatcher's
//!   hot path), in exactly the rows cqrs-es itself would write.
//! - [`group_commit`] appends the commands of many aggregates in one transaction (the
//!   executor's hot path), each with its own optimistic-concurrency check.
//! - [`tail`] reads committed events in one global order that never skips a late-committing
//!   transaction, and wakes readers on commit via LISTEN/NOTIFY.
//! - [`published`] wraps stored events in the envelope customers read.
//! - [`signing`] keeps workspace signing secrets encrypted at rest and rotates them.
//! - [`leader`] lets one process at a time hold a role (the dispatcher, the NATS export), and
//!   takes it away from one that stopped without dying.
//! - [`usage`] handles job commands together with the plan-limit counters they move, in one
//!   transaction (an inline projection, so limits are exact under concurrency).
//!
//! This crate knows the schema of the event log; it knows nothing about read models.

pub mod aggregates;
pub mod append;
pub mod create_batch;
pub mod db;
pub mod error;
pub mod group_commit;
pub mod job_gate;
pub mod leader;
pub mod published;
pub mod signing;
pub mod stream;
pub mod tail;
pub mod usage;

pub use error::StoreError;
