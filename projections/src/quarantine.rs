//! Events a projection cannot apply: quarantined, so one bad row never stops a read model.
//!
//! Every tenant's read models are fed by the same loop. If an event cannot be applied (a value
//! the table refuses, a payload that no longer decodes, a bug in one projection), retrying it
//! for ever freezes that read model for everyone. So an event whose failure says something about
//! the event itself — rather than about the database or the network at this moment — is
//! recorded in `projection_failures` and skipped, in the same transaction as the checkpoint that
//! moves past it.
//!
//! Later events of the **same aggregate** are held behind it ("parked") instead of applied: a
//! run's `RunSucceeded` applied without its `RunScheduled` would leave a row in a state the log
//! never had. Every other aggregate keeps going. [`retry`] applies an aggregate's held events
//! again, in log order, once the cause is fixed; a rebuild replays the whole log and records
//! whatever still fails.
//!
//! Transient failures (connection lost, serialization conflicts, the server shutting down) are
//! never quarantined: the runner rolls back and tries the same batch again.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cronbox_store::tail::{self, Cursor, StoredEvent};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::runner::{Projection, ProjectionError};

/// Whether `e` would happen again for the same event (quarantine it) rather than being a
/// passing failure of the database or a sink (retry the batch).
pub fn is_poison(e: &ProjectionError) -> bool {
    match e {
        ProjectionError::Database(e) => sqlx_is_poison(e),
        ProjectionError::Store(cronbox_store::StoreError::Database(e)) => sqlx_is_poison(e),
        ProjectionError::Store(cronbox_store::StoreError::Payload(_)) => true,
        ProjectionError::Store(_) => false,
        ProjectionError::Decode { .. } => true,
        ProjectionError::Sink(_) => false,
    }
}

fn sqlx_is_poison(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08 connection, 40 rollback (serialization, deadlock), 53 resources, 57 operator
            // intervention (shutdown, cancel, timeouts), 58 system, 55P03 lock not available,
            // 25P03 idle-in-transaction timeout, XX internal: about the server, not the event.
            let transient = ["08", "40", "53", "57", "58", "XX"].iter().any(|c| code.starts_with(c))
                || code == "55P03"
                || code == "25P03";
            !transient
        }
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    }
}

/// What is kept of an error: its whole chain, without NUL (the table's text refuses it) and
/// bounded.
fn describe(e: &ProjectionError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let clean: String = text
        .chars()
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .take(2000)
        .collect();
    clean
}

type AggregateKey = (String, String);

const HELD: &str = "held behind an earlier quarantined event of this aggregate";

fn key(ev: &StoredEvent) -> AggregateKey {
    (ev.aggregate_type.clone(), ev.aggregate_id.clone())
}

/// Aggregates with a quarantined event for `projection`: their later events are held.
async fn held_aggregates(conn: &mut PgConnection, projection: &str) -> Result<HashSet<AggregateKey>, ProjectionError> {
    let rows: Vec<AggregateKey> = sqlx::query_as(
        "SELECT DISTINCT aggregate_type, aggregate_id FROM projection_failures
          WHERE projection = $1 AND state <> 'resolved'",
    )
    .bind(projection)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

async fn record(
    conn: &mut PgConnection,
    projection: &str,
    ev: &StoredEvent,
    state: &str,
    error: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_failures
             (projection, aggregate_type, aggregate_id, sequence, event_type, event_xid, event_seq, state, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (projection, aggregate_type, aggregate_id, sequence) DO UPDATE
            SET state = EXCLUDED.state, error = EXCLUDED.error, failed_at = now(), resolved_at = NULL,
                attempts = projection_failures.attempts + 1",
    )
    .bind(projection)
    .bind(&ev.aggregate_type)
    .bind(&ev.aggregate_id)
    .bind(ev.sequence)
    .bind(&ev.event_type)
    .bind(ev.cursor.xid)
    .bind(ev.cursor.seq)
    .bind(state)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn savepoint(conn: &mut PgConnection, sql: &'static str) -> Result<(), ProjectionError> {
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(())
}

/// The two savepoints: around a whole batch, and around one event.
#[derive(Clone, Copy)]
enum Savepoint {
    Batch,
    Event,
}

/// Undoes what was done since the savepoint and drops it.
async fn undo(conn: &mut PgConnection, point: Savepoint) -> Result<(), ProjectionError> {
    let (rollback, release) = match point {
        Savepoint::Batch => ("ROLLBACK TO SAVEPOINT cronbox_batch", "RELEASE SAVEPOINT cronbox_batch"),
        Savepoint::Event => ("ROLLBACK TO SAVEPOINT cronbox_event", "RELEASE SAVEPOINT cronbox_event"),
    };
    savepoint(conn, rollback).await?;
    savepoint(conn, release).await
}

/// Applies `events` inside the caller's transaction, quarantining what cannot be applied.
/// With `batch`, the projection's grouped path is tried first and the events are applied one by
/// one only if it fails; otherwise one by one from the start (rebuilds, so both paths stay
/// equal). Returns the number of events quarantined or held. Fails only on transient errors;
/// the caller's transaction is then unusable and must be rolled back.
pub async fn apply_guarded(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    events: &[Arc<StoredEvent>],
    batch: bool,
) -> Result<usize, ProjectionError> {
    let name = projection.name();
    let mut held = held_aggregates(conn, name).await?;
    let mut skipped = 0;
    // Events of held aggregates wait; the others go through the grouped path.
    let live: Vec<Arc<StoredEvent>>;
    let events = if held.is_empty() {
        events
    } else {
        let mut rest = Vec::with_capacity(events.len());
        for ev in events {
            if held.contains(&key(ev)) {
                record(conn, name, ev, "parked", HELD).await?;
                skipped += 1;
            } else {
                rest.push(ev.clone());
            }
        }
        live = rest;
        &live
    };
    if batch {
        savepoint(conn, "SAVEPOINT cronbox_batch").await?;
        match projection.apply_batch(conn, events).await {
            Ok(()) => {
                savepoint(conn, "RELEASE SAVEPOINT cronbox_batch").await?;
                return Ok(skipped);
            }
            Err(e) if !is_poison(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(projection = name, error = %describe(&e), "a batch failed; applying its events one by one");
                undo(conn, Savepoint::Batch).await?;
            }
        }
    }
    for ev in events {
        let k = key(ev);
        if held.contains(&k) {
            record(conn, name, ev, "parked", HELD).await?;
            skipped += 1;
            continue;
        }
        savepoint(conn, "SAVEPOINT cronbox_event").await?;
        match projection.apply(conn, ev).await {
            Ok(()) => savepoint(conn, "RELEASE SAVEPOINT cronbox_event").await?,
            Err(e) if !is_poison(&e) => return Err(e),
            Err(e) => {
                undo(conn, Savepoint::Event).await?;
                let error = describe(&e);
                tracing::error!(
                    projection = name,
                    aggregate_type = %ev.aggregate_type,
                    aggregate_id = %ev.aggregate_id,
                    sequence = ev.sequence,
                    event_type = %ev.event_type,
                    cursor = %ev.cursor,
                    workspace_id = ?ev.workspace_id,
                    error = %error,
                    "event quarantined: the projection cannot apply it; later events of its aggregate are held"
                );
                record(conn, name, ev, "quarantined", &error).await?;
                held.insert(k);
                skipped += 1;
            }
        }
    }
    Ok(skipped)
}

/// One quarantined or held event, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub id: i64,
    pub projection: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// The event's position in the global order, `<xid>-<seq>`.
    pub cursor: String,
    /// `quarantined` (applying it failed) or `parked` (held behind one that did).
    pub state: String,
    pub error: String,
    pub attempts: i32,
    pub failed_at: DateTime<Utc>,
}

type FailureRow = (
    i64,
    String,
    String,
    String,
    i64,
    String,
    i64,
    i64,
    String,
    String,
    i32,
    DateTime<Utc>,
);

/// The open failures (quarantined and held events), of one projection or all, oldest first.
pub async fn list(pool: &PgPool, projection: Option<&str>, limit: i64) -> Result<Vec<Failure>, ProjectionError> {
    let rows: Vec<FailureRow> = sqlx::query_as(
        "SELECT id, projection, aggregate_type, aggregate_id, sequence, event_type, event_xid, event_seq, state, error,
                attempts, failed_at
           FROM projection_failures
          WHERE state <> 'resolved' AND ($1::text IS NULL OR projection = $1)
          ORDER BY projection, event_xid, event_seq
          LIMIT $2",
    )
    .bind(projection)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                projection,
                aggregate_type,
                aggregate_id,
                sequence,
                event_type,
                xid,
                seq,
                state,
                error,
                attempts,
                failed_at,
            )| {
                Failure {
                    id,
                    projection,
                    aggregate_type,
                    aggregate_id,
                    sequence,
                    event_type,
                    cursor: Cursor { xid, seq }.to_string(),
                    state,
                    error,
                    attempts,
                    failed_at,
                }
            },
        )
        .collect())
}

/// (quarantined, parked) counts per projection.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, i64, i64)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT projection, count(*) FILTER (WHERE state = 'quarantined'), count(*) FILTER (WHERE state = 'parked')
           FROM projection_failures WHERE state <> 'resolved' GROUP BY projection",
    )
    .fetch_all(pool)
    .await?)
}

/// What a retry did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RetryReport {
    /// Events applied now.
    pub resolved: usize,
    /// Events that failed again (still quarantined) or are still held behind one.
    pub still_failing: usize,
}

/// Applies `projection`'s quarantined and held events again, in log order, under the
/// projection's lock (its runner waits meanwhile). An aggregate whose first held event fails
/// again stays held from there on.
pub async fn retry(pool: &PgPool, projection: &dyn Projection) -> Result<RetryReport, ProjectionError> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cronbox-projection:' || $1))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let cursors: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT event_xid, event_seq FROM projection_failures
          WHERE projection = $1 AND state <> 'resolved' ORDER BY event_xid, event_seq",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    let cursors: Vec<Cursor> = cursors.into_iter().map(|(xid, seq)| Cursor { xid, seq }).collect();
    let events = tail::read_at(&mut *tx, &cursors).await?;
    let mut report = RetryReport::default();
    let mut failing: HashSet<AggregateKey> = HashSet::new();
    for ev in &events {
        let k = key(ev);
        if failing.contains(&k) {
            record(&mut tx, name, ev, "parked", HELD).await?;
            report.still_failing += 1;
            continue;
        }
        savepoint(&mut tx, "SAVEPOINT cronbox_event").await?;
        match projection.apply(&mut tx, ev).await {
            Ok(()) => {
                savepoint(&mut tx, "RELEASE SAVEPOINT cronbox_event").await?;
                sqlx::query(
                    "UPDATE projection_failures SET state = 'resolved', resolved_at = now()
                      WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4",
                )
                .bind(name)
                .bind(&ev.aggregate_type)
                .bind(&ev.aggregate_id)
                .bind(ev.sequence)
                .execute(&mut *tx)
                .await?;
                report.resolved += 1;
            }
            Err(e) if !is_poison(&e) => return Err(e),
            Err(e) => {
                undo(&mut tx, Savepoint::Event).await?;
                record(&mut tx, name, ev, "quarantined", &describe(&e)).await?;
                failing.insert(k);
                report.still_failing += 1;
            }
        }
    }
    tx.commit().await?;
    tracing::info!(
        projection = name,
        resolved = report.resolved,
        still_failing = report.still_failing,
        "quarantined events retried"
    );
    Ok(report)
}
