//! Serialises "stop this job" commands (pause, delete, cancel) against the dispatcher's fires.
//!
//! The dispatcher fires from memory and learns of a pause or a delete through the tail, a few
//! milliseconds after it commits. Without a gate, a pause answered with 200 (or a cancel answered
//! with 204) could still be followed by a fire that was decided in that window. Both sides take
//! the same per-job transaction-scoped advisory lock: the API holds it until its command is
//! committed, and the dispatcher, under the lock, re-reads the job's latest stop/resume event from
//! the log before recording a fire. Whoever comes second sees the other's commit.
//!
//! Deleting a workspace works the same way one level up: a workspace gate, held exclusively by
//! the deletion and shared by the dispatcher's fires.

use std::collections::{HashMap, HashSet};

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

/// How a job was stopped, as its latest pause/resume/delete event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Paused,
    Deleted,
}

/// Of `ids`, the jobs whose latest pause/resume/delete event is a pause or a delete.
pub async fn stopped(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, Stopped>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type FROM (
             SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type FROM events
              WHERE aggregate_type = 'Job' AND aggregate_id = ANY($1)
                AND event_type IN ('JobPaused', 'JobResumed', 'JobDeleted')
              ORDER BY aggregate_id, sequence DESC) latest
          WHERE event_type <> 'JobResumed'",
    )
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|(id, t)| {
            let how = if t == "JobPaused" {
                Stopped::Paused
            } else {
                Stopped::Deleted
            };
            Uuid::parse_str(id).ok().map(|id| (id, how))
        })
        .collect())
}

const WORKSPACE_LOCK: &str = "hashtextextended('cronbox-workspace:' || k, 0)";

/// Takes the workspace gate of every workspace in `ids`, shared, for the rest of the
/// transaction: fires of many workspaces go on together, and a deletion (which holds the gate
/// exclusively while it commits, see [`hold_workspace`]) waits for them or they for it.
/// Taken before any job gate, always in this order, so nothing can deadlock.
pub async fn lock_workspaces_shared(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), StoreError> {
    let mut keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    keys.sort();
    keys.dedup();
    sqlx::query(&format!(
        "SELECT pg_advisory_xact_lock_shared({WORKSPACE_LOCK}) FROM unnest($1::text[]) AS k ORDER BY k"
    ))
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Of `ids`, the workspaces the log says are deleted.
pub async fn deleted_workspaces(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM events
          WHERE aggregate_type = 'Workspace' AND aggregate_id = ANY($1) AND event_type = 'WorkspaceDeleted'",
    )
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect())
}

/// Holds one workspace's gate exclusively while the caller deletes it on other connections: no
/// fire of the workspace is recorded meanwhile, and every fire after it sees the deletion.
pub async fn hold_workspace(pool: &PgPool, id: Uuid) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SELECT pg_advisory_xact_lock({WORKSPACE_LOCK}) FROM (SELECT $1::text AS k) k"
    ))
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Holds the gate of one job while the caller runs its command on other connections; dropping
/// or finishing the transaction releases it. The transaction itself writes nothing. `pool` must
/// not be the pool the command is written through (see `AppState::gates` in the API).
pub async fn hold(pool: &PgPool, id: Uuid) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, &[id]).await?;
    Ok(tx)
}
