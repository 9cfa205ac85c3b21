//! Telling the tail's horizon which running transactions write read models only.
//!
//! A projection's step runs on a read-model connection ([`crate::db::read_model_pool`]), which
//! the database forbids to insert events. Once the step's transaction has its id, the runner
//! hands the id to this process's [`Announcer`], which records it in `read_model_xids` on an
//! ordinary connection, committed at once; `cronbox_event_horizon()` then leaves that
//! transaction out (migration 0018). Until the id is recorded the transaction counts like any
//! other, which only delays readers, so the announcement can be asynchronous and batched.

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::StoreError;

/// Records `xids` as read-model transactions, and forgets those that have ended (every id below
/// the oldest running one), so the table the horizon reads stays a few rows long. Only ids of
/// transactions on read-model connections may be passed: the horizon trusts the table.
pub async fn record(pool: &PgPool, xids: &[i64]) -> Result<(), StoreError> {
    let xids: Vec<String> = xids.iter().map(i64::to_string).collect();
    sqlx::query(
        "WITH ended AS (DELETE FROM read_model_xids WHERE xid < pg_snapshot_xmin(pg_current_snapshot()))
         INSERT INTO read_model_xids (xid) SELECT x::xid8 FROM unnest($1::text[]) AS x ON CONFLICT DO NOTHING",
    )
    .bind(&xids)
    .execute(pool)
    .await?;
    Ok(())
}

/// The current transaction's id on `conn`, if `conn` is a read-model connection (assigning the
/// id if it has none yet); None on any other connection, whose transactions must count.
pub async fn read_model_xid(conn: &mut sqlx::PgConnection) -> Result<Option<i64>, StoreError> {
    let (xid, read_model): (i64, bool) =
        sqlx::query_as("SELECT pg_current_xact_id()::text::int8, current_setting('application_name') = $1")
            .bind(crate::db::READ_MODELS_APPLICATION)
            .fetch_one(conn)
            .await?;
    Ok(read_model.then_some(xid))
}

/// One per process: records announced ids in batches.
#[derive(Clone)]
pub struct Announcer {
    tx: mpsc::UnboundedSender<i64>,
}

/// Ids recorded per statement at most.
const BATCH: usize = 256;

impl Announcer {
    pub fn spawn(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = rx.recv_many(&mut batch, BATCH) => {
                        if n == 0 {
                            return;
                        }
                    }
                }
                // A failure (the database restarting) loses only the speed-up: unlisted
                // transactions count, as they did before the table existed.
                if let Err(e) = record(&pool, &batch).await {
                    tracing::debug!(error = %e, "read-model transaction ids not recorded");
                }
                batch.clear();
            }
        });
        Self { tx }
    }

    /// Queues `xid` (from [`read_model_xid`]) to be recorded.
    pub fn announce(&self, xid: i64) {
        let _ = self.tx.send(xid);
    }
}
