//! Serialises "stop this job" commands (pause, delete, cancel) against the dispatcher's fires.
//!
//! The dispatcher fires from memory and learns of a pause or a delete through the tail, a few
//! milliseconds after it commits. Without a gate, a pause answered with 200 (or a cancel answered
//! with 204) could still be followed by a fire that was decided in that window. Both sides take
//! the same per-job transaction-scoped advisory lock: the API holds it until its command is
//! committed, and the dispatcher, under the lock, re-reads the job's latest stop/resume event from
//! the log before recording a fire. Whoever comes second sees the other's commit.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::StoreError;

const LOCK: &str = "pg_advisory_xact_lock(hashtextextended('cronbox-job:' || k, 0))";

/// Takes the gate of every job in `ids` for the rest of the transaction on `conn`. Locks are
/// taken in a fixed order so two batches can never deadlock.
pub async fn lock(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), StoreError> {
    let mut keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    keys.sort();
    keys.dedup();
    sqlx::query(&format!("SELECT {LOCK} FROM unnest($1::text[]) AS k ORDER BY k"))
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Of `ids`, the jobs whose latest pause/resume/delete event is a pause or a delete.
pub async fn stopped(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM (
             SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type FROM events
              WHERE aggregate_type = 'Job' AND aggregate_id = ANY($1)
                AND event_type IN ('JobPaused', 'JobResumed', 'JobDeleted')
              ORDER BY aggregate_id, sequence DESC) latest
          WHERE event_type <> 'JobResumed'",
    )
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect())
}

/// Holds the gate of one job while the caller runs its command on other connections; dropping
/// or finishing the transaction releases it. The transaction itself writes nothing. `pool` must
/// not be the pool the command is written through (see `AppState::gates` in the API).
pub async fn hold(pool: &PgPool, id: Uuid) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, &[id]).await?;
    Ok(tx)
}
