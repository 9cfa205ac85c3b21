//! One holder at a time, across every process, of a role that must not run twice at once (the
//! leading dispatcher, the NATS event export): a session-level PostgreSQL advisory lock held on a
//! dedicated connection. When the holder dies (or its database connection does), PostgreSQL
//! releases the lock and a standby takes over.
//!
//! **A holder that stops without dying** — `kill -STOP`, a frozen VM, a network partition —
//! keeps its TCP connection open (the kernel still answers keepalives for a stopped process), so
//! neither side notices and nothing would take over until TCP gives up, hours later. Two limits
//! on the lock's session close that gap:
//!
//! - `idle_session_timeout` ([`IDLE`]): PostgreSQL ends a session that sends nothing for that
//!   long. A live holder pings every [`PING_EVERY`] from a task of its own (not from its main
//!   loop, which may be busy for longer), so only a holder that stopped falls silent;
//! - server-side TCP keepalives end it when the holder's machine is gone.
//!
//! A standby asks for the lock every [`RETRY_EVERY`], so it takes over within about
//! `IDLE + RETRY_EVERY` (under 11 s) of the holder's last ping. The holder, if it resumes,
//! finds its connection ended at its next ping and steps down; work it does in between must be
//! idempotent (the dispatcher's is: deterministic run ids and per-aggregate sequences make a
//! second leader's writes collide instead of doubling).

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A session holding a lock that sends nothing for this long is ended by PostgreSQL.
pub const IDLE: Duration = Duration::from_secs(10);
/// How often the holder shows it is alive.
pub const PING_EVERY: Duration = Duration::from_secs(2);
/// How often a standby asks for the lock.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("the {0} lock was lost")]
pub struct Lost(pub &'static str);

/// A held lock. Dropping it closes its connection, which releases the lock.
pub struct Lock {
    role: &'static str,
    lost: CancellationToken,
    _keeper: DropGuard,
}

impl Lock {
    /// Fails once the lock's connection is gone (and with it, the lock).
    pub fn check(&self) -> Result<(), Lost> {
        if self.lost.is_cancelled() {
            Err(Lost(self.role))
        } else {
            Ok(())
        }
    }

    /// Cancelled when the lock is lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }
}

/// Waits until this process holds lock `key` for `role` (None on shutdown).
pub async fn acquire(pool: &PgPool, key: i64, role: &'static str, shutdown: &CancellationToken) -> Option<Lock> {
    let mut logged = false;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match try_acquire(pool, key, role).await {
            Ok(Some(lock)) => return Some(lock),
            Ok(None) if !logged => {
                tracing::info!(role, "another process holds the lock; standing by");
                logged = true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(role, error = %e, "cannot reach PostgreSQL for the lock; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

async fn try_acquire(pool: &PgPool, key: i64, role: &'static str) -> Result<Option<Lock>, sqlx::Error> {
    // Detached from the pool: the lock lives exactly as long as this connection.
    let mut conn = pool.acquire().await?.detach();
    let limits = sqlx::query(
        "SELECT set_config('idle_session_timeout', $1, false), set_config('tcp_keepalives_idle', '5', false),
                set_config('tcp_keepalives_interval', '2', false), set_config('tcp_keepalives_count', '3', false)",
    )
    .bind(format!("{}s", IDLE.as_secs()))
    .execute(&mut conn)
    .await;
    if let Err(e) = limits {
        // PostgreSQL before 14 has no idle_session_timeout: a stopped holder then keeps the lock
        // until TCP notices.
        tracing::warn!(role, error = %e, "cannot limit the lock session; a stopped holder keeps it longer");
    }
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    if !got {
        return Ok(None);
    }
    let lost = CancellationToken::new();
    let stop = CancellationToken::new();
    tokio::spawn(keep(conn, role, lost.clone(), stop.clone()));
    Ok(Some(Lock {
        role,
        lost,
        _keeper: stop.drop_guard(),
    }))
}

/// Pings the lock's session until told to stop (dropping the connection then releases the
/// lock) or until it fails (the lock is gone).
async fn keep(mut conn: PgConnection, role: &'static str, lost: CancellationToken, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PING_EVERY) => {}
            _ = stop.cancelled() => {
                let _ = conn.close().await;
                return;
            }
        }
        let alive = tokio::time::timeout(Duration::from_secs(5), sqlx::query("SELECT 1").execute(&mut conn))
            .await
            .is_ok_and(|r| r.is_ok());
        if !alive {
            tracing::warn!(role, "the lock's connection is gone; stepping down");
            lost.cancel();
            return;
        }
    }
}
