//! Reading the event log in global order.
//!
//! A naive tail (`WHERE global_seq > $last`) skips events: identity values are assigned when a
//! row is inserted, not when its transaction commits, so a slow transaction can commit seq 10
//! after a reader has already seen seq 11. Instead every row records the id of the transaction
//! that wrote it (`xid`), and a reader only looks at rows whose transaction id is below
//! `pg_snapshot_xmin(pg_current_snapshot())` — the oldest transaction still running. Every
//! transaction below that horizon has finished, so the set of visible rows below it can never
//! grow again; transaction ids only increase, so any transaction still to come lands above it.
//! Reading in (xid, global_seq) order below the horizon therefore sees every committed event
//! exactly once, and a cursor of (xid, global_seq) is a stable position in that order.
//!
//! The price: one long-running writing transaction holds every reader back until it ends. All of
//! CronBox's writing transactions are short.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::{PgExecutor, PgPool};
use tokio::sync::watch;

use crate::StoreError;

pub const EVENTS_CHANNEL: &str = "cronbox_events";

/// A position in the global order: everything up to and including this (xid, seq) was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub xid: i64,
    pub seq: i64,
}

impl Cursor {
    pub const START: Cursor = Cursor { xid: 0, seq: 0 };
}

/// The public form, `<xid>-<seq>`: what clients get as SSE ids and `next_cursor`, and pass back
/// as `Last-Event-ID` / `after`.
impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.xid, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const MSG: &str = "a cursor looks like 123-456 (from an event's id or next_cursor)";
        let (xid, seq) = s.trim().split_once('-').ok_or(MSG)?;
        let xid: i64 = xid.parse().map_err(|_| MSG)?;
        let seq: i64 = seq.parse().map_err(|_| MSG)?;
        if xid < 0 || seq < 0 {
            return Err(MSG);
        }
        Ok(Cursor { xid, seq })
    }
}

/// One committed event as the tail sees it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub cursor: Cursor,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    /// Derived at insert (see migration 0011); None for users and sessions.
    pub workspace_id: Option<uuid::Uuid>,
}

impl StoredEvent {
    /// Decodes the payload into the aggregate's event enum.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, StoreError> {
        Ok(E::deserialize(&self.payload)?)
    }
}

type Row = (
    i64,
    i64,
    String,
    String,
    i64,
    String,
    serde_json::Value,
    DateTime<Utc>,
    Option<uuid::Uuid>,
);

fn stored(
    (xid, seq, aggregate_type, aggregate_id, sequence, event_type, payload, recorded_at, workspace_id): Row,
) -> StoredEvent {
    StoredEvent {
        cursor: Cursor { xid, seq },
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        payload,
        recorded_at,
        workspace_id,
    }
}

/// Up to `limit` committed events after `after`, in global order.
pub async fn read_after<'e>(
    db: impl PgExecutor<'e>,
    after: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT xid::text::int8, global_seq, aggregate_type, aggregate_id, sequence, event_type, payload, recorded_at,
                workspace_id
           FROM events
          WHERE (xid, global_seq) > ($1::text::xid8, $2)
            AND xid < pg_snapshot_xmin(pg_current_snapshot())
          -- Qualified: a bare `xid` would name the int8 output column, and ordering by that
          -- expression cannot use the (xid, global_seq) index (a full scan and sort per read).
          ORDER BY events.xid, events.global_seq
          LIMIT $3",
    )
    .bind(after.xid.to_string())
    .bind(after.seq)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(stored).collect())
}

/// Up to `limit` committed events of one workspace after `after`, in global order, optionally
/// only of the given event types. The same order and horizon as [`read_after`], so a reader can
/// switch between the two at any cursor.
pub async fn read_workspace_after<'e>(
    db: impl PgExecutor<'e>,
    workspace_id: uuid::Uuid,
    after: Cursor,
    types: Option<&[String]>,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT xid::text::int8, global_seq, aggregate_type, aggregate_id, sequence, event_type, payload, recorded_at,
                workspace_id
           FROM events
          WHERE workspace_id = $1
            AND (xid, global_seq) > ($2::text::xid8, $3)
            AND xid < pg_snapshot_xmin(pg_current_snapshot())
            AND ($4::text[] IS NULL OR event_type = ANY($4))
          ORDER BY events.workspace_id, events.xid, events.global_seq
          LIMIT $5",
    )
    .bind(workspace_id)
    .bind(after.xid.to_string())
    .bind(after.seq)
    .bind(types)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(stored).collect())
}

/// The committed events at `cursors` (those that exist), in global order: what a retry of
/// quarantined events reads back.
pub async fn read_at<'e>(db: impl PgExecutor<'e>, cursors: &[Cursor]) -> Result<Vec<StoredEvent>, StoreError> {
    let xids: Vec<String> = cursors.iter().map(|c| c.xid.to_string()).collect();
    let seqs: Vec<i64> = cursors.iter().map(|c| c.seq).collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT e.xid::text::int8, e.global_seq, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.payload,
                e.recorded_at, e.workspace_id
           FROM unnest($1::text[], $2::int8[]) AS c(x, s)
           JOIN events e ON e.xid = c.x::xid8 AND e.global_seq = c.s
          WHERE e.xid < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY e.xid, e.global_seq",
    )
    .bind(&xids)
    .bind(&seqs)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(stored).collect())
}

/// When the event at `cursor` was recorded, and for which workspace; None when no event has that
/// position (a made-up or mistyped cursor).
pub async fn event_at<'e>(
    db: impl PgExecutor<'e>,
    cursor: Cursor,
) -> Result<Option<(DateTime<Utc>, Option<uuid::Uuid>)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT recorded_at, workspace_id FROM events WHERE xid = $1::text::xid8 AND global_seq = $2")
            .bind(cursor.xid.to_string())
            .bind(cursor.seq)
            .fetch_optional(db)
            .await?,
    )
}

/// The position of the newest event below the horizon (where a reader that wants only new events
/// starts).
pub async fn head<'e>(db: impl PgExecutor<'e>) -> Result<Cursor, StoreError> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT xid::text::int8, global_seq FROM events
          WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.xid DESC, events.global_seq DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(xid, seq)| Cursor { xid, seq }).unwrap_or_default())
}

/// Wakes readers when events may have been committed. One LISTEN connection per process feeds a
/// watch channel that any number of tails subscribe to.
///
/// A notification means "some transaction that wrote events committed", but its rows may still
/// be above the horizon (an older transaction is still open), so readers that find nothing new
/// after a wake-up poll again shortly (the settle loops of the projection runner and the
/// dispatcher) rather than waiting for the next notification. A slow fallback poll covers lost notifications (e.g. while the LISTEN
/// connection was re-established after a database restart).
#[derive(Clone)]
pub struct Waker {
    rx: watch::Receiver<u64>,
    cache: Arc<TailCache>,
}

impl Waker {
    /// Starts the listener task. It reconnects by itself when PostgreSQL restarts.
    pub fn spawn(pool: PgPool, shutdown: tokio_util_shutdown::Token) -> Self {
        let (tx, rx) = watch::channel(0u64);
        let cache = Arc::new(TailCache::new(pool.clone()));
        tokio::spawn(async move {
            let mut counter = 0u64;
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener cannot connect; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                };
                if let Err(e) = listener.listen(EVENTS_CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // (Re)connected: anything may have happened meanwhile.
                counter += 1;
                tx.send_replace(counter);
                loop {
                    tokio::select! {
                        r = listener.try_recv() => match r {
                            Ok(Some(_)) => {
                                counter += 1;
                                tx.send_replace(counter);
                            }
                            // Connection lost: reconnect (and wake everyone, see above).
                            Ok(None) | Err(_) => break,
                        },
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
        Self { rx, cache }
    }

    /// The process's shared tail (see [`TailCache`]).
    pub fn tail(&self) -> &TailCache {
        &self.cache
    }

    /// Waits for a notification or `fallback`, whichever comes first.
    pub async fn wait(&mut self, fallback: Duration) {
        let _ = tokio::time::timeout(fallback, self.rx.changed()).await;
    }

    /// For a reader whose last read found nothing: the rows just notified may still be above
    /// the horizon (an older transaction was open), so it looks again a few times quickly (2, 4
    /// … 64 ms, counted in `round`; reset it after a read that found rows) before sleeping until
    /// the next notification or `fallback`. False once `shutdown` fires.
    pub async fn idle(&mut self, round: &mut u32, fallback: Duration, shutdown: &tokio_util_shutdown::Token) -> bool {
        if *round < 6 {
            *round += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(1 << *round)) => true,
                _ = shutdown.cancelled() => false,
            }
        } else {
            *round = 0;
            tokio::select! {
                _ = self.wait(fallback) => true,
                _ = shutdown.cancelled() => false,
            }
        }
    }
}

/// The most recent events of the log, shared by every reader in the process.
///
/// Each projection and the dispatcher follow the same log from nearly the same place. Reading
/// it once per reader would multiply the database's work by their number; instead one reader at a
/// time fetches the next rows into a window of recent events, and every reader whose cursor
/// falls inside the window is served from memory. The window holds exactly the rows
/// [`read_after`] returns (below the horizon they can no longer change), so a reader cannot tell
/// the difference; one whose cursor is older than the window reads the table directly.
pub struct TailCache {
    pool: PgPool,
    window: tokio::sync::Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Every event after `base` up to `end` is in `events` (None: no window yet).
    base: Option<Cursor>,
    end: Cursor,
    events: VecDeque<Arc<StoredEvent>>,
}

/// Events kept in the window: enough for readers a few batches apart, and a bounded memory.
const WINDOW_EVENTS: usize = 10_000;
/// Rows fetched at a time.
const FETCH: i64 = 1000;

impl TailCache {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            window: Default::default(),
        }
    }

    /// Up to `limit` committed events after `after`, in global order: the same rows as
    /// [`read_after`].
    pub async fn read_after(&self, after: Cursor, limit: usize) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.read_after_in(&mut conn, after, limit).await
    }

    /// [`Self::read_after`], reading what the window lacks through `conn`. A projection passes
    /// the connection of the transaction it holds: asking the pool for a second one while
    /// holding the first is how a few projections starve a small pool (each waits for a
    /// connection the others hold).
    pub async fn read_after_in(
        &self,
        conn: &mut sqlx::PgConnection,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        let mut w = self.window.lock().await;
        let inside = w.base.is_some_and(|b| b <= after && after <= w.end);
        if !inside {
            if w.base.is_some_and(|b| after < b) {
                drop(w);
                let rows = read_after(&mut *conn, after, limit as i64).await?;
                return Ok(rows.into_iter().map(Arc::new).collect());
            }
            // No window yet, or a reader ahead of it (its cursor came from another process):
            // start the window there.
            *w = Window {
                base: Some(after),
                end: after,
                events: VecDeque::new(),
            };
        }
        if after == w.end {
            for e in read_after(&mut *conn, w.end, FETCH).await? {
                w.end = e.cursor;
                w.events.push_back(Arc::new(e));
            }
            while w.events.len() > WINDOW_EVENTS {
                if let Some(e) = w.events.pop_front() {
                    w.base = Some(e.cursor);
                }
            }
        }
        let start = w.events.partition_point(|e| e.cursor <= after);
        Ok(w.events.range(start..).take(limit).cloned().collect())
    }
}

/// Re-export so callers do not need tokio-util just for the token type.
pub mod tokio_util_shutdown {
    pub use tokio_util::sync::CancellationToken as Token;
}
