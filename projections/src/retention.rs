//! Execution-log retention: runs older than the workspace plan's `log_retention_days` leave the
//! `runs` and `run_attempts` read models. The event log keeps them, so the audit trail (and a
//! rebuild) still has every run; a rebuild is followed by a sweep.
//!
//! This is the one place read models depend on the clock, which is why it is a separate sweep
//! and not part of a projection: projections stay pure functions of the log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows deleted per statement, so a first sweep over a large backlog never holds long locks.
const BATCH: i64 = 5_000;

/// Deletes every finished run older than its workspace's retention at `now`. Returns how many
/// runs were deleted. Runs still in flight are kept whatever their age.
pub async fn sweep(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let workspaces: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT w.id, p.log_retention_days FROM workspaces w JOIN plans p ON p.code = w.plan")
            .fetch_all(pool)
            .await?;
    let mut deleted = 0;
    for (workspace_id, days) in workspaces {
        let cutoff = now - chrono::Duration::days(i64::from(days));
        // Bounded: each pass deletes up to BATCH rows, and stops when a pass deletes fewer.
        for _ in 0..10_000 {
            let n = sqlx::query(
                "WITH doomed AS (
                     SELECT id FROM runs
                      WHERE workspace_id = $1 AND scheduled_for < $2
                        AND status IN ('succeeded', 'failed', 'skipped')
                      LIMIT $3),
                 attempts AS (
                     DELETE FROM run_attempts WHERE run_id IN (SELECT id FROM doomed))
                 DELETE FROM runs WHERE id IN (SELECT id FROM doomed)",
            )
            .bind(workspace_id)
            .bind(cutoff)
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < BATCH as u64 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Sweeps every `every` until `shutdown`. Several processes may sweep at once: deletes of the
/// same rows are harmless.
pub async fn run(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        match sweep(&pool, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "retention: old runs left the execution log"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; retrying next round"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
