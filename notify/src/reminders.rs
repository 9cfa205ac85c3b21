//! Reminders while a job keeps failing (`realert_every`): a sweep on the clock finds open alerts
//! whose reminder is due and records `AlertReminded`; the decider, seeing it on the tail,
//! queues the reminder's notifications. Every process may sweep: the alert aggregate records
//! each reminder once (a second sweeper's command names a count already passed).

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cronbox_domain::alert::{Alert, AlertCommand};
use cronbox_store::stream;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records the reminders due now. Returns how many it recorded.
pub async fn sweep(pool: &PgPool) -> Result<usize, cronbox_store::StoreError> {
    let due: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(
        "SELECT id, workspace_id, reminders FROM alerts
          WHERE next_reminder_at <= now() AND state = 'open' ORDER BY next_reminder_at LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    let mut recorded = 0;
    for (id, workspace_id, seen) in due {
        let key = id.to_string();
        let mut tx = pool.begin().await?;
        stream::lock(&mut tx, Alert::TYPE, &key).await?;
        let (alert, last) = stream::load::<Alert>(&mut tx, &key).await?;
        let now: DateTime<Utc> = Utc::now();
        if alert.next_reminder_at().is_none_or(|at| at > now) {
            continue;
        }
        let Ok(events) = alert.decide(AlertCommand::Remind {
            after: seen.max(0) as u32,
            at: now,
        }) else {
            continue;
        };
        stream::append::<Alert>(&mut tx, &key, last, &events, Some(workspace_id)).await?;
        tx.commit().await?;
        tracing::info!(alert_id = %id, %workspace_id, "alert reminder due");
        recorded += 1;
    }
    Ok(recorded)
}

pub async fn run(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(e) = sweep(&pool).await {
            tracing::warn!(error = %e, "cannot sweep alert reminders; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
