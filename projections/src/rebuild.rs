//! Rebuilding a projection from the log without stopping the service.
//!
//! 1. Create empty copies of the projection's tables in a fresh schema
//!    (`CREATE TABLE … (LIKE public.t INCLUDING ALL)`).
//! 2. Replay the whole log into them in batches. The projection's SQL uses unqualified table
//!    names, so `SET LOCAL search_path` points the very same code at the copies.
//! 3. Take the projection's lock (live projectors of it wait), replay what arrived meanwhile, drop
//!    the live tables, move the copies into `public`, set the checkpoint — one transaction, so
//!    readers see either the old tables or the new ones.

use std::sync::Arc;

use cronbox_store::tail::{self, Cursor, StoredEvent};
use sqlx::PgPool;

use crate::quarantine;
use crate::runner::{Projection, ProjectionError};

const BATCH: i64 = 5000;

/// Rebuilds `projection`; `progress` is told the number of events replayed so far. Returns the
/// total number of events replayed.
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    progress: impl Fn(usize),
) -> Result<usize, ProjectionError> {
    let schema = format!("rebuild_{}_{}", projection.name(), uuid::Uuid::new_v4().simple());
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *conn)
        .await?;
    // The replay's own failures table: the quarantine code finds it first on the search path.
    for t in projection.tables().iter().chain(&["projection_failures"]) {
        sqlx::query(&format!("CREATE TABLE {schema}.{t} (LIKE public.{t} INCLUDING ALL)"))
            .execute(&mut *conn)
            .await?;
    }
    drop(conn);
    let result = replay_and_swap(pool, projection, &schema, progress).await;
    // On failure leave nothing behind; on success the schema is empty by now.
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(pool)
        .await;
    result
}

async fn replay_and_swap(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    progress: impl Fn(usize),
) -> Result<usize, ProjectionError> {
    let mut cursor = Cursor::START;
    let mut total = 0;
    // Bulk of the log, without holding the live projection's lock.
    loop {
        let (n, next) = replay_batch(pool, projection, schema, cursor).await?;
        if n == 0 {
            break;
        }
        total += n;
        cursor = next;
        progress(total);
    }
    // Swap under the lock, after replaying what arrived meanwhile.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cronbox-projection:' || $1))")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .execute(&mut *tx)
        .await?;
    loop {
        let events = tail::read_after(&mut *tx, cursor, BATCH).await?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            break;
        };
        let events: Vec<Arc<StoredEvent>> = events.into_iter().map(Arc::new).collect();
        quarantine::apply_guarded(&mut tx, projection, &events, false).await?;
        total += events.len();
        cursor = last;
    }
    // What the replay could not apply replaces what the live projection had quarantined (a
    // fixed cause no longer fails; past resolutions stay as history).
    sqlx::query("DELETE FROM public.projection_failures WHERE projection = $1 AND state <> 'resolved'")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO public.projection_failures
             (projection, aggregate_type, aggregate_id, sequence, event_type, event_xid, event_seq, state, error,
              attempts, failed_at)
         SELECT projection, aggregate_type, aggregate_id, sequence, event_type, event_xid, event_seq, state, error,
                attempts, failed_at
           FROM {schema}.projection_failures
         ON CONFLICT (projection, aggregate_type, aggregate_id, sequence) DO UPDATE
            SET state = EXCLUDED.state, error = EXCLUDED.error, failed_at = EXCLUDED.failed_at, resolved_at = NULL"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query("SET LOCAL search_path TO public").execute(&mut *tx).await?;
    for t in projection.tables() {
        let old = index_names(&mut tx, t).await?;
        sqlx::query(&format!("DROP TABLE public.{t}")).execute(&mut *tx).await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{t} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
        // `LIKE … INCLUDING ALL` names the copied indexes itself; give them back the names the
        // migrations chose, so later migrations and operators find them where they expect.
        for (shape, new_name) in index_names(&mut tx, t).await? {
            if let Some((_, old_name)) = old.iter().find(|(s, n)| *s == shape && *n != new_name) {
                sqlx::query(&format!("ALTER INDEX public.{new_name} RENAME TO {old_name}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, last_xid, last_seq, updated_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (name) DO UPDATE SET last_xid = $2, last_seq = $3, updated_at = now()",
    )
    .bind(projection.name())
    .bind(cursor.xid)
    .bind(cursor.seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    progress(total);
    Ok(total)
}

/// (definition without its name, name) of every index on `public.table`.
async fn index_names(tx: &mut sqlx::PgConnection, table: &str) -> Result<Vec<(String, String)>, ProjectionError> {
    Ok(sqlx::query_as(
        r"SELECT regexp_replace(indexdef, '^CREATE (UNIQUE )?INDEX \S+ ON ', 'CREATE \1INDEX ON '), indexname
            FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await?)
}

async fn replay_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    cursor: Cursor,
) -> Result<(usize, Cursor), ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .execute(&mut *tx)
        .await?;
    let events = tail::read_after(&mut *tx, cursor, BATCH).await?;
    let Some(last) = events.last().map(|e| e.cursor) else {
        tx.rollback().await?;
        return Ok((0, cursor));
    };
    let events: Vec<Arc<StoredEvent>> = events.into_iter().map(Arc::new).collect();
    quarantine::apply_guarded(&mut tx, projection, &events, false).await?;
    tx.commit().await?;
    Ok((events.len(), last))
}
