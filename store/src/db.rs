//! Connection pools and migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::StoreError;

/// The migrations, in order. Embedded so the binary needs no files at run time.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_event_store",
        include_str!("../../migrations/0001_event_store.sql"),
    ),
    (
        "0002_read_models",
        include_str!("../../migrations/0002_read_models.sql"),
    ),
    ("0003_accounts", include_str!("../../migrations/0003_accounts.sql")),
    ("0004_workspaces", include_str!("../../migrations/0004_workspaces.sql")),
    ("0005_plans", include_str!("../../migrations/0005_plans.sql")),
    (
        "0006_rate_limits",
        include_str!("../../migrations/0006_rate_limits.sql"),
    ),
    ("0007_signing", include_str!("../../migrations/0007_signing.sql")),
    (
        "0008_runs_in_flight",
        include_str!("../../migrations/0008_runs_in_flight.sql"),
    ),
    ("0009_callbacks", include_str!("../../migrations/0009_callbacks.sql")),
    (
        "0010_runs_open_by_job",
        include_str!("../../migrations/0010_runs_open_by_job.sql"),
    ),
    ("0011_event_feed", include_str!("../../migrations/0011_event_feed.sql")),
    (
        "0012_event_export",
        include_str!("../../migrations/0012_event_export.sql"),
    ),
    (
        "0013_projection_failures",
        include_str!("../../migrations/0013_projection_failures.sql"),
    ),
    (
        "0014_stops_and_callback_timers",
        include_str!("../../migrations/0014_stops_and_callback_timers.sql"),
    ),
    (
        "0015_workspace_creators",
        include_str!("../../migrations/0015_workspace_creators.sql"),
    ),
    (
        "0016_runs_in_flight_cap",
        include_str!("../../migrations/0016_runs_in_flight_cap.sql"),
    ),
    (
        "0017_notifications",
        include_str!("../../migrations/0017_notifications.sql"),
    ),
    (
        "0018_session_owner",
        include_str!("../../migrations/0018_session_owner.sql"),
    ),
    (
        "0019_status_badges",
        include_str!("../../migrations/0019_status_badges.sql"),
    ),
];

/// A pool that waits for PostgreSQL to come back instead of failing: connections are created
/// lazily, so a process started before its database (or surviving a database restart) recovers
/// by itself.
pub fn pool(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    // No transaction of ours waits idle for long; one that does belongs to a process that
    // stopped (kill -STOP, a partition) while holding gates or row locks, and PostgreSQL ends
    // it so everyone waiting on them goes on (shorter than the dispatcher's 15 s lock_timeout).
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()?
        .options([("idle_in_transaction_session_timeout", "10s")])
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// Applies pending migrations. Safe to run from several processes at once: an advisory lock
/// serialises them and each migration runs in its own transaction.
pub async fn migrate(pool: &PgPool) -> Result<Vec<&'static str>, StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(7262880177)")
        .execute(&mut *conn)
        .await?;
    let result = apply_pending(&mut conn).await;
    let unlock = sqlx::query("SELECT pg_advisory_unlock(7262880177)")
        .execute(&mut *conn)
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_pending(conn: &mut sqlx::PgConnection) -> Result<Vec<&'static str>, StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await?;
    let done: Vec<String> = sqlx::query_scalar("SELECT name FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        if done.iter().any(|d| d == name) {
            continue;
        }
        let wrap = |source| StoreError::Migration { name, source };
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(wrap)?;
        sqlx::query("INSERT INTO schema_migrations (name) VALUES ($1)")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(wrap)?;
        tx.commit().await?;
        tracing::info!(migration = name, "applied migration");
        applied.push(*name);
    }
    Ok(applied)
}

/// True when PostgreSQL answers.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

#[cfg(test)]
mod tests {
    /// A file added to migrations/ but not to [`super::MIGRATIONS`] would never be applied.
    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".sql").map(str::to_owned))
            .collect();
        files.sort();
        let listed: Vec<&str> = super::MIGRATIONS.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, listed);
    }
}
