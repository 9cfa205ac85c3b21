//! Runs one projection: read a batch after the checkpoint, apply it, move the checkpoint, commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cronbox_store::tail::{self, Cursor, StoredEvent, TailCache, Waker};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("store error")]
    Store(#[from] cronbox_store::StoreError),
    /// A projection that feeds something outside the database (the NATS export) could not.
    #[error("the projection's sink refused the batch")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("event {aggregate_type}/{aggregate_id}#{sequence} cannot be decoded")]
    Decode {
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        #[source]
        source: serde_json::Error,
    },
}

impl ProjectionError {
    pub fn decode(ev: &StoredEvent, source: serde_json::Error) -> Self {
        Self::Decode {
            aggregate_type: ev.aggregate_type.clone(),
            aggregate_id: ev.aggregate_id.clone(),
            sequence: ev.sequence,
            source,
        }
    }
}

pub type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ProjectionError>> + Send + 'a>>;

/// A read model fed by the event log.
pub trait Projection: Send + Sync {
    fn name(&self) -> &'static str;
    /// Applies one event inside the caller's transaction. Must be a pure function of the event
    /// and the current rows (no clock, no other tables' projections).
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a>;
    /// The tables it owns (for rebuilds).
    fn tables(&self) -> &'static [&'static str];
    /// Events read (and applied, and committed) per step. A projection whose events are costly
    /// to apply takes fewer, so what it decides is committed, and seen, sooner.
    fn batch_size(&self) -> i64 {
        BATCH
    }
    /// Applies a batch in order. A projection may write runs of similar events with one statement
    /// (a multi-row insert of consecutive creates); the result must equal applying them one by one.
    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(async move {
            for ev in events {
                self.apply(tx, ev).await?;
            }
            Ok(())
        })
    }
}

pub async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<Cursor, ProjectionError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT last_xid, last_seq FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(xid, seq)| Cursor { xid, seq }).unwrap_or_default())
}

/// Applies at most one batch. Returns how many events it applied.
pub async fn step(pool: &PgPool, projection: &dyn Projection) -> Result<usize, ProjectionError> {
    step_from(pool, projection, None).await
}

/// [`step`], reading through the process's shared tail when there is one.
async fn step_from(
    pool: &PgPool,
    projection: &dyn Projection,
    shared: Option<&TailCache>,
) -> Result<usize, ProjectionError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    // Transaction-scoped advisory lock: another process running this projection waits here and
    // then reads the checkpoint this transaction wrote. It does not assign a transaction id (a
    // row lock would), so it does not hold back other tails' horizon while we read.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cronbox-projection:' || $1))")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    let from = checkpoint(&mut tx, projection.name()).await?;
    let events: Vec<Arc<StoredEvent>> = match shared {
        Some(cache) => {
            cache
                .read_after_in(&mut tx, from, projection.batch_size() as usize)
                .await?
        }
        None => tail::read_after(&mut *tx, from, projection.batch_size())
            .await?
            .into_iter()
            .map(Arc::new)
            .collect(),
    };
    let Some(last) = events.last().map(|e| e.cursor) else {
        tx.rollback().await?;
        return Ok(0);
    };
    let read = started.elapsed();
    crate::quarantine::apply_guarded(&mut tx, projection, &events, true).await?;
    let applied = started.elapsed();
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, last_xid, last_seq, updated_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (name) DO UPDATE SET last_xid = $2, last_seq = $3, updated_at = now()",
    )
    .bind(projection.name())
    .bind(last.xid)
    .bind(last.seq)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // How far behind the log a projection runs, and where its step's time goes.
    tracing::debug!(
        projection = projection.name(),
        events = events.len(),
        lag_ms = (chrono::Utc::now() - events[0].recorded_at).num_milliseconds(),
        read_ms = read.as_millis() as u64,
        apply_ms = (applied - read).as_millis() as u64,
        commit_ms = (started.elapsed() - applied).as_millis() as u64,
        "projection step"
    );
    Ok(events.len())
}

/// Applies batches until the projection has caught up with the log's current horizon.
pub async fn catch_up(pool: &PgPool, projection: &dyn Projection) -> Result<usize, ProjectionError> {
    let mut total = 0;
    loop {
        let n = step(pool, projection).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// Follows the log for ever (until `shutdown`). Errors (e.g. the database restarting) are
/// logged and retried with backoff; the checkpoint makes retries safe.
pub async fn run_projection(
    pool: PgPool,
    mut waker: Waker,
    projection: Box<dyn Projection>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut idle = 0u32;
    while !shutdown.is_cancelled() {
        match step_from(&pool, projection.as_ref(), Some(waker.tail())).await {
            Ok(n) if n > 0 => {
                backoff = Duration::from_millis(100);
                idle = 0;
            }
            Ok(_) => {
                if !waker.idle(&mut idle, Duration::from_secs(1), &shutdown).await {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(projection = projection.name(), error = %e, "projection step failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
