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
    /// Whether a live step stops at [`HOLD_BUDGET`]. A projection whose batch is a handful of
    /// statements whatever its size, and whose output others wait for (the alert decider),
    /// applies its whole batch instead.
    fn budgeted(&self) -> bool {
        true
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
    step_from(pool, projection, None, None).await
}

/// How long a live step may keep applying once it has begun to write. Every reader of the log
/// waits for the oldest writing transaction (see `cronbox_store::tail`): one projection applying
/// a thousand costly events in one transaction would hold back every other reader, the alert
/// decider and the feed included, for as long. A step that reaches it commits what it has
/// applied; the rest of its batch (still in the shared tail's window) is the next step's.
const HOLD_BUDGET: Duration = Duration::from_millis(100);
/// The first slice of a budgeted step, before its pace is known. Not too small: a slice costs
/// a few statements whatever its size.
const FIRST_SLICE: usize = 100;

/// The next slice: what the rest of the budget holds at the pace so far, at least a few events
/// and at most twice the last slice (the pace changes within a batch: a burst's creations are
/// cheap, its failures are not).
fn next_slice(applied: usize, elapsed: Duration, budget: Duration, last: usize) -> usize {
    let left = budget.saturating_sub(elapsed).as_nanos();
    let fits = match elapsed.as_nanos() {
        0 => usize::MAX,
        spent => usize::try_from(left * applied as u128 / spent).unwrap_or(usize::MAX),
    };
    fits.clamp(8, last.saturating_mul(2).max(8))
}

/// [`step`], reading through the process's shared tail when there is one, and with a budget
/// (live followers) or without (catch-up, tests: the whole batch in one transaction).
async fn step_from(
    pool: &PgPool,
    projection: &dyn Projection,
    shared: Option<&TailCache>,
    budget: Option<Duration>,
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
    let limit = projection.batch_size();
    let events: Vec<Arc<StoredEvent>> = match shared {
        Some(cache) => cache.read_after_in(&mut tx, from, limit as usize).await?,
        None => tail::read_after(&mut *tx, from, limit)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect(),
    };
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let read = started.elapsed();
    let applied = match budget {
        None => {
            crate::quarantine::apply_guarded(&mut tx, projection, &events, true).await?;
            events.len()
        }
        Some(budget) => {
            let writing = std::time::Instant::now();
            let (mut done, mut slice) = (0, FIRST_SLICE);
            while done < events.len() {
                let end = (done + slice).min(events.len());
                crate::quarantine::apply_guarded(&mut tx, projection, &events[done..end], true).await?;
                slice = end - done;
                done = end;
                let elapsed = writing.elapsed();
                if elapsed >= budget {
                    break;
                }
                slice = next_slice(done, elapsed, budget, slice);
            }
            done
        }
    };
    let last = events[applied - 1].cursor;
    let apply_done = started.elapsed();
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
        events = applied,
        read_ahead = events.len() - applied,
        lag_ms = (chrono::Utc::now() - events[0].recorded_at).num_milliseconds(),
        read_ms = read.as_millis() as u64,
        apply_ms = (apply_done - read).as_millis() as u64,
        commit_ms = (started.elapsed() - apply_done).as_millis() as u64,
        "projection step"
    );
    Ok(applied)
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
        let budget = projection.budgeted().then_some(HOLD_BUDGET);
        match step_from(&pool, projection.as_ref(), Some(waker.tail()), budget).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_next_slice_fits_what_is_left_of_the_budget() {
        // Given 32 events applied in 16 ms (0.5 ms each) of an 80 ms budget,
        // when the next slice is chosen, then it is what 64 ms hold at that pace, capped at 2×.
        assert_eq!(next_slice(32, 16 * MS, 80 * MS, 32), 64);
        assert_eq!(next_slice(32, 16 * MS, 80 * MS, 100), 128);
        assert_eq!(next_slice(32, 40 * MS, 80 * MS, 32), 32);
        // Slow events: a few at a time, never none.
        assert_eq!(next_slice(32, 79 * MS, 80 * MS, 32), 8);
    }

    #[test]
    fn free_events_grow_the_slice_by_at_most_two() {
        assert_eq!(next_slice(32, Duration::ZERO, 80 * MS, 32), 64);
        assert_eq!(next_slice(96, Duration::ZERO, 80 * MS, 64), 128);
    }
}
