//! Runs per workspace and calendar month (`usage_runs`), for the usage report. Months are
//! those of the workspace's timezone at the moment the run was scheduled; the projection keeps
//! the timezones itself (`usage_timezones`) so its result depends on nothing but the log order.
//!
//! The counters plan limits are enforced against are not here: they are written with the
//! commands themselves (`cronbox_store::usage`), because a lagging projection cannot refuse
//! the (n+1)-th of two concurrent creates.

use cronbox_domain::run::RunEvent;
use cronbox_domain::usage::month_of;
use cronbox_domain::workspace::WorkspaceEvent;
use cronbox_store::tail::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{ApplyFuture, Projection, ProjectionError};

pub struct UsageProjection;

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
                    let RunEvent::RunScheduled { plan, at, .. } =
                        <RunEvent as serde::Deserialize>::deserialize(&ev.payload)
                            .map_err(|e| ProjectionError::decode(ev, e))?
                    else {
                        return Ok(());
                    };
                    let tz: Option<String> =
                        sqlx::query_scalar("SELECT timezone FROM usage_timezones WHERE workspace_id = $1")
                            .bind(plan.workspace_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let tz = tz.and_then(|t| t.parse().ok()).unwrap_or(chrono_tz::UTC);
                    sqlx::query(
                        "INSERT INTO usage_runs (workspace_id, period, runs) VALUES ($1, $2, 1)
                         ON CONFLICT (workspace_id, period) DO UPDATE SET runs = usage_runs.runs + 1",
                    )
                    .bind(plan.workspace_id)
                    .bind(month_of(at, tz))
                    .execute(&mut *tx)
                    .await?;
                }
                _ => {}
            }
            Ok(())
        })
    }
}
