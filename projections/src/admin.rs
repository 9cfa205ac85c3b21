//! Operators' view of the read models: where each projection stands, and rebuilding them. The
//! CLI (`cronbox projections …`) and the admin API both call these.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::runner::{checkpoint, ProjectionError};

/// The plan-limit counters: an inline projection (written with the commands), rebuilt by
/// replaying the log under a table lock rather than by the tail.
pub const USAGE_COUNTERS: &str = "usage_counters";

/// Lag counts stop here, so a status query stays cheap however far behind a projection is.
const LAG_COUNT_CAP: i64 = 1_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// The last event applied, `<xid>-<seq>` (`0-0`: none yet).
    pub checkpoint: String,
    pub updated_at: Option<DateTime<Utc>>,
    /// Committed events not applied yet (at most 1 000 000: counting stops there).
    pub lag_events: i64,
    /// Age of the oldest event not applied yet (0 when caught up).
    pub lag_seconds: f64,
    /// Events it could not apply and skipped (see [`crate::quarantine`]).
    pub quarantined: i64,
    /// Later events of the same aggregates, held behind them until a retry.
    pub parked: i64,
}

/// Every tail-fed projection with its checkpoint and lag.
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, ProjectionError> {
    let failures = crate::quarantine::counts(pool).await?;
    let mut out = Vec::new();
    for p in crate::all() {
        let mut conn = pool.acquire().await?;
        let cursor = checkpoint(&mut conn, p.name()).await?;
        let updated_at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT updated_at FROM projection_checkpoints WHERE name = $1")
                .bind(p.name())
                .fetch_optional(&mut *conn)
                .await?;
        let (lag_events, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(recorded_at) FROM (
                 SELECT recorded_at FROM events
                  WHERE (xid, global_seq) > ($1::text::xid8, $2)
                  ORDER BY events.xid, events.global_seq LIMIT $3) pending",
        )
        .bind(cursor.xid.to_string())
        .bind(cursor.seq)
        .bind(LAG_COUNT_CAP)
        .fetch_one(&mut *conn)
        .await?;
        let lag_seconds = oldest.map_or(0.0, |t| ((Utc::now() - t).num_milliseconds().max(0) as f64) / 1000.0);
        let (quarantined, parked) = failures
            .iter()
            .find(|(name, ..)| name == p.name())
            .map_or((0, 0), |(_, q, h)| (*q, *h));
        out.push(ProjectionStatus {
            name: p.name().to_string(),
            checkpoint: cursor.to_string(),
            updated_at,
            lag_events,
            lag_seconds,
            quarantined,
            parked,
        });
    }
    Ok(out)
}

/// Applies the quarantined and held events of one projection (or of all with `None`) again,
/// after their cause was fixed. Returns (projection, report) per projection.
pub async fn retry(
    pool: &PgPool,
    name: Option<&str>,
) -> Result<Vec<(String, crate::quarantine::RetryReport)>, RebuildError> {
    let all = crate::all();
    if let Some(n) = name {
        if !all.iter().any(|p| p.name() == n) {
            return Err(RebuildError::Unknown(n.to_string()));
        }
    }
    let mut out = Vec::new();
    for p in all.into_iter().filter(|p| name.is_none_or(|n| p.name() == n)) {
        let report = crate::quarantine::retry(pool, p.as_ref()).await?;
        out.push((p.name().to_string(), report));
    }
    Ok(out)
}

/// Names [`rebuild`] accepts.
pub fn rebuildable() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = crate::all().iter().map(|p| p.name()).collect();
    names.push(USAGE_COUNTERS);
    names
}

/// Rebuilds one projection (or all with `None`) from the log while the service runs: each is
/// replayed into fresh tables, caught up, and swapped in (see [`crate::rebuild`]). `progress` is
/// told (projection, events replayed so far). Returns (projection, events replayed) per
/// projection.
pub async fn rebuild(
    pool: &PgPool,
    name: Option<&str>,
    progress: impl Fn(&str, usize),
) -> Result<Vec<(String, usize)>, RebuildError> {
    if let Some(n) = name {
        if !rebuildable().contains(&n) {
            return Err(RebuildError::Unknown(n.to_string()));
        }
    }
    let mut done = Vec::new();
    if name.is_none_or(|n| n == USAGE_COUNTERS) {
        let rows = cronbox_store::usage::rebuild(pool)
            .await
            .map_err(ProjectionError::from)?;
        progress(USAGE_COUNTERS, rows as usize);
        done.push((USAGE_COUNTERS.to_string(), rows as usize));
    }
    let mut runs_rebuilt = false;
    for p in crate::all().into_iter().filter(|p| name.is_none_or(|n| p.name() == n)) {
        let n = crate::rebuild::rebuild(pool, p.as_ref(), |k| progress(p.name(), k)).await?;
        runs_rebuilt |= p.name() == "runs";
        done.push((p.name().to_string(), n));
    }
    if runs_rebuilt {
        // The replay brought back runs past their retention; the log keeps them, the view not.
        crate::retention::sweep(pool, Utc::now())
            .await
            .map_err(ProjectionError::from)?;
    }
    Ok(done)
}

/// Events in the log now: the size of a full replay, for progress reports.
pub async fn log_size(pool: &PgPool) -> Result<i64, ProjectionError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?)
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection named {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}
