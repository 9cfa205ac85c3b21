//! The enterprise event stream over NATS: every published event of a workspace whose plan has
//! `event_stream`, in global order, on `<prefix>.ws.<workspace_id>.events.<type>` in the
//! `<PREFIX>_EVENTS` JetStream stream.
//!
//! It runs as a projection: the runner reads a batch after the checkpoint, [`EventExport`]
//! publishes it and waits for every ack, and only then does the checkpoint commit. A crash in
//! between publishes the batch again; the message id is the event's cursor, so JetStream's
//! duplicate window drops the repeats. Whether a workspace's events go out is decided from the
//! log itself (its `WorkspaceCreated` / `WorkspacePlanChanged` events, remembered in
//! `event_export_workspaces` in the same transaction), so the answer for an event never depends
//! on how far another projection has got.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cronbox_domain::public::inner;
use cronbox_projections::runner::{ApplyFuture, Projection, ProjectionError};
use cronbox_store::published::envelope;
use cronbox_store::tail::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::RunQueue;

pub const NAME: &str = "nats_export";

pub struct EventExport {
    pub queue: RunQueue,
}

impl EventExport {
    async fn export(&self, tx: &mut PgConnection, events: &[Arc<StoredEvent>]) -> Result<(), ProjectionError> {
        let streaming: HashSet<String> = sqlx::query_scalar::<_, String>("SELECT code FROM plans WHERE event_stream")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let ids: Vec<Uuid> = events
            .iter()
            .filter_map(|e| e.workspace_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut plans: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT workspace_id, plan FROM event_export_workspaces WHERE workspace_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut changed: HashMap<Uuid, String> = HashMap::new();
        let mut out = Vec::new();
        for ev in events {
            let Some(ws) = ev.workspace_id else { continue };
            if ev.aggregate_type == "Workspace" {
                let data = inner(&ev.event_type, &ev.payload);
                let plan = match ev.event_type.as_str() {
                    "WorkspaceCreated" => Some(
                        data.get("plan")
                            .and_then(|p| p.as_str())
                            .unwrap_or(cronbox_domain::workspace::DEFAULT_PLAN)
                            .to_string(),
                    ),
                    "WorkspacePlanChanged" => data.get("plan").and_then(|p| p.as_str()).map(String::from),
                    _ => None,
                };
                if let Some(plan) = plan {
                    plans.insert(ws, plan.clone());
                    changed.insert(ws, plan);
                }
            }
            if !plans.get(&ws).is_some_and(|p| streaming.contains(p)) {
                continue;
            }
            let Some(body) = envelope(ev) else { continue };
            let payload = serde_json::to_vec(&body).map_err(cronbox_store::StoreError::from)?;
            out.push((
                self.queue.event_subject(ws, &ev.event_type),
                ev.cursor.to_string(),
                payload,
            ));
        }
        if !changed.is_empty() {
            let (ws, plan): (Vec<Uuid>, Vec<String>) = changed.into_iter().unzip();
            sqlx::query(
                "INSERT INTO event_export_workspaces (workspace_id, plan)
                 SELECT * FROM unnest($1::uuid[], $2::text[])
                 ON CONFLICT (workspace_id) DO UPDATE SET plan = EXCLUDED.plan",
            )
            .bind(&ws)
            .bind(&plan)
            .execute(&mut *tx)
            .await?;
        }
        if !out.is_empty() {
            let n = out.len();
            self.queue
                .publish_events(out)
                .await
                .map_err(|e| ProjectionError::Sink(Box::new(e)))?;
            tracing::debug!(events = n, "events exported to NATS");
        }
        Ok(())
    }
}

impl Projection for EventExport {
    fn name(&self) -> &'static str {
        NAME
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move { self.export(tx, &[Arc::new(event.clone())]).await })
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_export_workspaces"]
    }

    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(self.export(tx, events))
    }
}
