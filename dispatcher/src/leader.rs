//! One leading dispatcher at a time, by a session-level PostgreSQL advisory lock held on a
//! dedicated connection. When the leader dies (or its database connection does), PostgreSQL
//! releases the lock and a standby takes over. Two leaders overlapping for a moment is harmless:
//! deterministic run ids make their fires collide in the event store instead of doubling.

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::DispatchError;

pub struct Lock {
    conn: PgConnection,
}

impl Lock {
    /// Fails when the lock's connection is gone (and with it, the lock).
    pub async fn check(&mut self) -> Result<(), DispatchError> {
        match tokio::time::timeout(Duration::from_secs(5), self.conn.ping()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(DispatchError::LeadershipLost),
        }
    }
}

/// Waits until this process holds the lock (None on shutdown).
pub async fn acquire(pool: &PgPool, key: i64, shutdown: &CancellationToken) -> Option<Lock> {
    let mut logged = false;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match try_acquire(pool, key).await {
            Ok(Some(lock)) => return Some(lock),
            Ok(None) if !logged => {
                tracing::info!("another dispatcher leads; standing by");
                logged = true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reach PostgreSQL for the dispatcher lock; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

async fn try_acquire(pool: &PgPool, key: i64) -> Result<Option<Lock>, sqlx::Error> {
    // Detached from the pool: the lock lives exactly as long as this connection.
    let mut conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    Ok(got.then_some(Lock { conn }))
}
