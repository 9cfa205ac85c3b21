//! Runs per workspace and calendar month (`usage_runs`), for the usage report. Months are
//! those of the workspace's timezone at the moment the run was scheduled; the projection keeps
//! the timezones itself (`usage_timezones`) so its result depends on nothing but the log order.
//!
//! The counters plan limits are enforced against are not here: they are written with the
//! commands themselves (`cronbox_store::usage`), because a lagging projection cannot refuse
//! the (n+1)-th of two concurrent creates.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cronbox_domain::usage::month_of;
use cronbox_domain::workspace::WorkspaceEvent;
use cronbox_store::tail::StoredEvent;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{ApplyFuture, Projection, ProjectionError};

pub struct UsageProjection;

/// The two fields of `RunScheduled` this projection reads (the request is not decoded).
#[derive(Deserialize)]
struct Scheduled {
    #[serde(rename = "RunScheduled")]
    inner: ScheduledInner,
}

#[derive(Deserialize)]
struct ScheduledInner {
    plan: PlanWorkspace,
    at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct PlanWorkspace {
    workspace_id: Uuid,
}

async fn timezone(tx: &mut PgConnection, workspace_id: Uuid) -> Result<chrono_tz::Tz, ProjectionError> {
    let tz: Option<String> = sqlx::query_scalar("SELECT timezone FROM usage_timezones WHERE workspace_id = $1")
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(tz.and_then(|t| t.parse().ok()).unwrap_or(chrono_tz::UTC))
}

/// Adds `counts` ((workspace, month) → runs) with one statement.
async fn add_runs(tx: &mut PgConnection, counts: &mut HashMap<(Uuid, String), i64>) -> Result<(), ProjectionError> {
    if counts.is_empty() {
        return Ok(());
    }
    let (mut wss, mut periods, mut ns) = (Vec::new(), Vec::new(), Vec::new());
    for ((ws, period), n) in counts.drain() {
        wss.push(ws);
        periods.push(period);
        ns.push(n);
    }
    sqlx::query(
        "INSERT INTO usage_runs (workspace_id, period, runs)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[])
         ON CONFLICT (workspace_id, period) DO UPDATE SET runs = usage_runs.runs + EXCLUDED.runs",
    )
    .bind(&wss)
    .bind(&periods)
    .bind(&ns)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Projection for UsageProjection {
    fn name(&self) -> &'static str {
        "usage"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["usage_timezones", "usage_runs"]
    }
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, ev: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            match ev.aggregate_type.as_str() {
                "Workspace" => {
                    let id = Uuid::parse_str(&ev.aggregate_id)
                        .map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))?;
                    match <WorkspaceEvent as serde::Deserialize>::deserialize(&ev.payload)
                        .map_err(|e| ProjectionError::decode(ev, e))?
                    {
                        WorkspaceEvent::WorkspaceCreated { timezone, .. }
                        | WorkspaceEvent::WorkspaceUpdated { timezone, .. } => {
                            sqlx::query(
                                "INSERT INTO usage_timezones (workspace_id, timezone) VALUES ($1, $2)
                                 ON CONFLICT (workspace_id) DO UPDATE SET timezone = $2",
                            )
                            .bind(id)
                            .bind(timezone)
                            .execute(&mut *tx)
                            .await?;
                        }
                        _ => {}
                    }
                }
                "Run" if ev.event_type == "RunScheduled" => {
                    let s = Scheduled::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
                    let tz = timezone(tx, s.inner.plan.workspace_id).await?;
                    let mut one = HashMap::from([((s.inner.plan.workspace_id, month_of(s.inner.at, tz)), 1)]);
                    add_runs(tx, &mut one).await?;
                }
                _ => {}
            }
            Ok(())
        })
    }

    /// Runs are counted in memory across the batch and added with one statement; a workspace
    /// event (a timezone change moves later runs to other months) first writes what is counted.
    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut counts: HashMap<(Uuid, String), i64> = HashMap::new();
            let mut zones: HashMap<Uuid, chrono_tz::Tz> = HashMap::new();
            for ev in events {
                match ev.aggregate_type.as_str() {
                    "Workspace" => {
                        add_runs(tx, &mut counts).await?;
                        zones.clear();
                        self.apply(tx, ev).await?;
                    }
                    "Run" if ev.event_type == "RunScheduled" => {
                        let s = Scheduled::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))?;
                        let ws = s.inner.plan.workspace_id;
                        let tz = match zones.get(&ws) {
                            Some(tz) => *tz,
                            None => {
                                let tz = timezone(tx, ws).await?;
                                zones.insert(ws, tz);
                                tz
                            }
                        };
                        *counts.entry((ws, month_of(s.inner.at, tz))).or_insert(0) += 1;
                    }
                    _ => {}
                }
            }
            add_runs(tx, &mut counts).await
        })
    }
}
