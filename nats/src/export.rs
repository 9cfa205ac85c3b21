//! The enterprise event stream over NATS: every published event of a workspace whose plan has
//! `event_stream`, in global order, on `<prefix>.ws.<workspace_id>.events.<type>` in the
//! `<PREFIX>_EVENTS` JetStream stream.
//!
//! One exporter runs at a time across all processes ([`cronbox_store::leader`]). It reads a batch
//! after its checkpoint, publishes it and waits for every ack **with no transaction open**, and
//! only then moves the checkpoint in a short transaction of its own. A transaction held open
//! across a network wait would pin the log's xmin horizon (see `cronbox_store::tail`): a slow or
//! stopped nats-server would then stop every tail — projections, dispatcher, feed. A crash
//! between the publish and the checkpoint publishes the batch again; the message id is the
//! event's cursor, so JetStream's duplicate window drops the repeats.
//!
//! Whether a workspace's events go out is decided from the log itself (its `WorkspaceCreated` /
//! `WorkspacePlanChanged` events, remembered in `event_export_workspaces` together with the
//! checkpoint), so the answer for an event never depends on how far another projection has got.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use std::time::Duration;

use cronbox_domain::public::inner;
use cronbox_projections::runner::{checkpoint, ProjectionError};
use cronbox_store::leader;
use cronbox_store::published::envelope;
use cronbox_store::tail::{Cursor, StoredEvent, TailCache, Waker};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::RunQueue;

pub const NAME: &str = "nats_export";

pub struct EventExport {
    pub queue: RunQueue,
}

/// What exporting one batch means: the messages, and the plans the batch changed.
struct Batch {
    messages: Vec<(String, String, Vec<u8>)>,
    plans: HashMap<Uuid, String>,
}

impl EventExport {
    /// Decides what of `events` goes out. Reads only: no transaction is left open.
    async fn prepare(&self, pool: &PgPool, events: &[Arc<StoredEvent>]) -> Result<Batch, ProjectionError> {
        let streaming: HashSet<String> = sqlx::query_scalar::<_, String>("SELECT code FROM plans WHERE event_stream")
            .fetch_all(pool)
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
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
        let mut changed: HashMap<Uuid, String> = HashMap::new();
        let mut messages = Vec::new();
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
            let Ok(payload) = serde_json::to_vec(&body) else {
                tracing::error!(cursor = %ev.cursor, "event cannot be encoded for export; skipped");
                continue;
            };
            messages.push((
                self.queue.event_subject(ws, &ev.event_type),
                ev.cursor.to_string(),
                payload,
            ));
        }
        Ok(Batch {
            messages,
            plans: changed,
        })
    }

    /// Moves the checkpoint from `from` to `to` with the plans the batch changed, in one short
    /// transaction; false if someone else moved it meanwhile (a previous holder of the lock that
    /// had not noticed losing it): nothing is written then.
    async fn commit(
        pool: &PgPool,
        from: Cursor,
        to: Cursor,
        plans: HashMap<Uuid, String>,
    ) -> Result<bool, ProjectionError> {
        let mut tx = pool.begin().await?;
        let moved = sqlx::query(
            "INSERT INTO projection_checkpoints (name, last_xid, last_seq, updated_at) VALUES ($1, $4, $5, now())
             ON CONFLICT (name) DO UPDATE SET last_xid = $4, last_seq = $5, updated_at = now()
              WHERE projection_checkpoints.last_xid = $2 AND projection_checkpoints.last_seq = $3",
        )
        .bind(NAME)
        .bind(from.xid)
        .bind(from.seq)
        .bind(to.xid)
        .bind(to.seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if !plans.is_empty() {
            let (ws, plan): (Vec<Uuid>, Vec<String>) = plans.into_iter().unzip();
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
        tx.commit().await?;
        Ok(true)
    }

    /// Exports one batch; returns how many events it moved past.
    async fn step(&self, pool: &PgPool, tail: &TailCache) -> Result<usize, ProjectionError> {
        let from = {
            let mut conn = pool.acquire().await?;
            checkpoint(&mut conn, NAME).await?
        };
        let events = tail.read_after(from, BATCH).await?;
        let Some(to) = events.last().map(|e| e.cursor) else {
            return Ok(0);
        };
        let batch = self.prepare(pool, &events).await?;
        if !batch.messages.is_empty() {
            let n = batch.messages.len();
            self.queue
                .publish_events(batch.messages)
                .await
                .map_err(|e| ProjectionError::Sink(Box::new(e)))?;
            tracing::debug!(events = n, "events exported to NATS");
        }
        if !Self::commit(pool, from, to, batch.plans).await? {
            tracing::warn!("the export checkpoint moved under us; reading again");
        }
        Ok(events.len())
    }
}

/// Events read per batch.
const BATCH: usize = 1000;

/// Runs the export until `shutdown`, while this process holds the export's lock (`lock_key`).
pub async fn run(pool: PgPool, mut waker: Waker, export: EventExport, lock_key: i64, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let Some(lock) = leader::acquire(&pool, lock_key, "event export", &shutdown).await else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        let mut idle = 0u32;
        while !shutdown.is_cancelled() && lock.check().is_ok() {
            match export.step(&pool, waker.tail()).await {
                Ok(n) if n > 0 => {
                    backoff = Duration::from_millis(100);
                    idle = 0;
                }
                // Caught up. The loop looks at the lock again at least every second: losing it
                // (this process was stopped, say) ends this holder's turn.
                Ok(_) => {
                    if !waker.idle(&mut idle, Duration::from_secs(1), &shutdown).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event export failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
