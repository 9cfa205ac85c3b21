//! The dispatch outbox: recorded-but-unpublished runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cronbox_domain::run::Work;
use cronbox_nats::{DispatchMessage, RunQueue};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::DispatchError;

pub async fn insert(tx: &mut PgConnection, messages: &[DispatchMessage]) -> Result<(), DispatchError> {
    if messages.is_empty() {
        return Ok(());
    }
    let (runs, attempts, workspaces, jobs, dues, kinds) = columns(messages);
    sqlx::query(
        "INSERT INTO dispatch_outbox (run_id, attempt, workspace_id, job_id, due_at, kind)
         SELECT * FROM unnest($1::uuid[], $2::int4[], $3::uuid[], $4::uuid[], $5::timestamptz[], $6::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(runs)
    .bind(attempts)
    .bind(workspaces)
    .bind(jobs)
    .bind(dues)
    .bind(kinds)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[allow(clippy::type_complexity)]
fn columns(
    messages: &[DispatchMessage],
) -> (
    Vec<Uuid>,
    Vec<i32>,
    Vec<Uuid>,
    Vec<Uuid>,
    Vec<DateTime<Utc>>,
    Vec<&'static str>,
) {
    (
        messages.iter().map(|m| m.run_id).collect(),
        messages.iter().map(|m| m.attempt as i32).collect(),
        messages.iter().map(|m| m.workspace_id).collect(),
        messages.iter().map(|m| m.job_id).collect(),
        messages.iter().map(|m| m.due_at).collect(),
        messages.iter().map(|m| m.kind.as_str()).collect(),
    )
}

/// Publishes and removes the acknowledged messages from the outbox.
pub async fn publish(pool: &PgPool, queue: &RunQueue, messages: &[DispatchMessage]) -> Result<usize, DispatchError> {
    let results = queue.publish_all(messages).await;
    let mut acked_runs = Vec::new();
    let mut acked_attempts = Vec::new();
    let mut acked_kinds = Vec::new();
    let mut failed = 0;
    for (m, r) in messages.iter().zip(results) {
        match r {
            Ok(()) => {
                acked_runs.push(m.run_id);
                acked_attempts.push(m.attempt as i32);
                acked_kinds.push(m.kind.as_str());
            }
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    tracing::warn!(run_id = %m.run_id, error = %e, "publish not acknowledged");
                }
            }
        }
    }
    if !acked_runs.is_empty() {
        sqlx::query(
            "DELETE FROM dispatch_outbox o USING unnest($1::uuid[], $2::int4[], $3::text[]) AS a(run_id, attempt, kind)
              WHERE o.run_id = a.run_id AND o.attempt = a.attempt AND o.kind = a.kind",
        )
        .bind(&acked_runs)
        .bind(&acked_attempts)
        .bind(&acked_kinds)
        .execute(pool)
        .await?;
    }
    Ok(acked_runs.len())
}

/// Re-publishes outbox rows older than `min_age` (left by a failed publish or a crash).
pub async fn flush(pool: &PgPool, queue: &RunQueue, min_age: Duration) -> Result<usize, DispatchError> {
    let mut total = 0;
    for _ in 0..1000 {
        let rows: Vec<(Uuid, i32, Uuid, Uuid, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT run_id, attempt, workspace_id, job_id, due_at, kind FROM dispatch_outbox
              WHERE created_at <= now() - make_interval(secs => $1) ORDER BY created_at LIMIT 1000",
        )
        .bind(min_age.as_secs_f64())
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        let messages: Vec<DispatchMessage> = rows
            .into_iter()
            .map(
                |(run_id, attempt, workspace_id, job_id, due_at, kind)| DispatchMessage {
                    run_id,
                    attempt: attempt as u32,
                    workspace_id,
                    job_id,
                    due_at,
                    kind: Work::parse(&kind),
                },
            )
            .collect();
        let n = publish(pool, queue, &messages).await?;
        tracing::info!(republished = n, of = messages.len(), "outbox flushed");
        total += n;
        if n < messages.len() {
            // NATS is not acknowledging. If it came back without the stream (a wiped store),
            // recreate it so the next tick can publish; either way, try again then.
            if let Err(e) = queue.ensure_stream().await {
                tracing::debug!(error = %e, "stream not available yet");
            }
            break;
        }
    }
    Ok(total)
}
