//! The `notification_channels`, `alerts` and `notifications` read models: a workspace's
//! channels with their status, its open and past alerts, and each channel's delivery log. The
//! deliverer reads `notifications` for what is due; the reminder sweep reads `alerts`.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cronbox_domain::alert::{AlertEvent, AlertKind, ResolveReason};
use cronbox_domain::channel::ChannelEvent;
use cronbox_domain::notification::NotificationEvent;
use cronbox_store::tail::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{ApplyFuture, Projection, ProjectionError};

pub struct NotificationsProjection;

impl Projection for NotificationsProjection {
    fn name(&self) -> &'static str {
        "notifications"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["notification_channels", "alerts", "notifications"]
    }
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, ev: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            let id = || {
                Uuid::parse_str(&ev.aggregate_id).map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))
            };
            match ev.aggregate_type.as_str() {
                "NotificationChannel" => channel(tx, id()?, decode(ev)?).await,
                "Alert" => alert(tx, id()?, decode(ev)?).await,
                "Notification" => notification(tx, id()?, decode(ev)?).await,
                _ => Ok(()),
            }
        })
    }
    /// A burst of alerts is thousands of queued and delivered notifications in a row: each run
    /// of them is one statement. Anything else is applied on its own, in order.
    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut i = 0;
            while i < events.len() {
                let run = |aggregate: &str, kind: &str| {
                    let mut ids = HashSet::new();
                    events[i..]
                        .iter()
                        .take_while(|e| {
                            e.aggregate_type == aggregate && e.event_type == kind && ids.insert(&e.aggregate_id)
                        })
                        .count()
                };
                let raised = run("Alert", "AlertRaised");
                let queued = run("Notification", "NotificationQueued");
                let delivered = run("Notification", "NotificationDelivered");
                if raised > 1 {
                    insert_raised(tx, &events[i..i + raised]).await?;
                    i += raised;
                } else if queued > 1 {
                    insert_queued(tx, &events[i..i + queued]).await?;
                    i += queued;
                } else if delivered > 1 {
                    mark_delivered(tx, &events[i..i + delivered]).await?;
                    i += delivered;
                } else {
                    self.apply(tx, &events[i]).await?;
                    i += 1;
                }
            }
            Ok(())
        })
    }
}

/// The event's aggregate id (an alert's or a notification's).
fn aggregate_uuid(ev: &StoredEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&ev.aggregate_id).map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))
}

/// Consecutive `AlertRaised` of distinct alerts, as one insert.
async fn insert_raised(tx: &mut PgConnection, events: &[Arc<StoredEvent>]) -> Result<(), ProjectionError> {
    let n = events.len();
    let (mut ids, mut wss, mut jobs, mut runs, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut details, mut channels, mut everies, mut reminders, mut ats, mut failures) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ev in events {
        let AlertEvent::AlertRaised {
            workspace_id,
            kind,
            realert_every_seconds,
            channels: chosen,
            details: d,
            at,
            ..
        } = decode(ev)?
        else {
            return Err(ProjectionError::decode(
                ev,
                serde::de::Error::custom("not an AlertRaised"),
            ));
        };
        let every = realert_every_seconds.map(|s| s as i32);
        ids.push(aggregate_uuid(ev)?);
        wss.push(workspace_id);
        jobs.push(d.job_id);
        runs.push(d.run_id);
        kinds.push(kind.as_str());
        failures.push(d.failures as i32);
        details.push(serde_json::to_value(&d).map_err(|e| ProjectionError::Sink(Box::new(e)))?);
        // A uuid[][] would be flattened by unnest: each alert's channels travel as one string.
        channels.push(chosen.iter().map(Uuid::to_string).collect::<Vec<_>>().join(","));
        everies.push(every);
        reminders.push(next_reminder(every, at).filter(|_| kind == AlertKind::JobFailing));
        ats.push(at);
    }
    sqlx::query(
        "INSERT INTO alerts (id, workspace_id, job_id, run_id, kind, state, details, channels,
             realert_every_seconds, next_reminder_at, raised_at, last_told_at, failed_runs)
         SELECT id, ws, job, run, kind, 'open', details, string_to_array(chans, ',')::uuid[], every, reminder, at, at,
                failures
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::jsonb[], $7::text[],
                       $8::int4[], $9::timestamptz[], $10::timestamptz[], $11::int4[])
                AS u(id, ws, job, run, kind, details, chans, every, reminder, at, failures)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&wss)
    .bind(&jobs)
    .bind(&runs)
    .bind(&kinds)
    .bind(&details)
    .bind(&channels)
    .bind(&everies)
    .bind(&reminders)
    .bind(&ats)
    .bind(&failures)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Consecutive `NotificationQueued` of distinct notifications, as one insert.
async fn insert_queued(tx: &mut PgConnection, events: &[Arc<StoredEvent>]) -> Result<(), ProjectionError> {
    let n = events.len();
    let (mut ids, mut wss, mut chans, mut alerts, mut runs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut kinds, mut contents, mut ats) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for ev in events {
        let NotificationEvent::NotificationQueued {
            workspace_id,
            channel_id,
            alert_id,
            content,
            at,
            ..
        } = decode(ev)?
        else {
            return Err(ProjectionError::decode(
                ev,
                serde::de::Error::custom("not a NotificationQueued"),
            ));
        };
        ids.push(aggregate_uuid(ev)?);
        wss.push(workspace_id);
        chans.push(channel_id);
        alerts.push(alert_id);
        runs.push(content.details.run_id);
        kinds.push(content.kind.as_str());
        contents.push(serde_json::to_value(&content).map_err(|e| ProjectionError::Sink(Box::new(e)))?);
        ats.push(at);
    }
    sqlx::query(
        "INSERT INTO notifications (id, workspace_id, channel_id, alert_id, run_id, kind, content, status,
             next_attempt_at, created_at)
         SELECT id, ws, ch, al, run, kind, content, 'queued', at, at
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::jsonb[],
                       $8::timestamptz[]) AS u(id, ws, ch, al, run, kind, content, at)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&wss)
    .bind(&chans)
    .bind(&alerts)
    .bind(&runs)
    .bind(&kinds)
    .bind(&contents)
    .bind(&ats)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Consecutive `NotificationDelivered` of distinct notifications, as one update.
async fn mark_delivered(tx: &mut PgConnection, events: &[Arc<StoredEvent>]) -> Result<(), ProjectionError> {
    let n = events.len();
    let (mut ids, mut attempts, mut digests, mut ats) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ev in events {
        let NotificationEvent::NotificationDelivered {
            attempts: a,
            digest,
            at,
        } = decode(ev)?
        else {
            return Err(ProjectionError::decode(
                ev,
                serde::de::Error::custom("not a NotificationDelivered"),
            ));
        };
        ids.push(aggregate_uuid(ev)?);
        attempts.push(a as i32);
        digests.push(digest.map(|d| d as i32));
        ats.push(at);
    }
    sqlx::query(
        "UPDATE notifications n SET status = 'delivered', attempts = u.attempts, digest = u.digest,
             next_attempt_at = NULL, finished_at = u.at
           FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::timestamptz[]) AS u(id, attempts, digest, at)
          WHERE n.id = u.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&digests)
    .bind(&ats)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn decode<E: serde::de::DeserializeOwned>(ev: &StoredEvent) -> Result<E, ProjectionError> {
    E::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))
}

async fn channel(tx: &mut PgConnection, id: Uuid, event: ChannelEvent) -> Result<(), ProjectionError> {
    let q = match event {
        ChannelEvent::ChannelCreated {
            workspace_id,
            kind,
            name,
            language,
            display,
            sealed,
            verified,
            at,
            ..
        } => sqlx::query(
            "INSERT INTO notification_channels
                 (id, workspace_id, kind, name, language, display, sealed, verified, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(workspace_id)
        .bind(kind.as_str())
        .bind(name)
        .bind(language.as_str())
        .bind(display)
        .bind(sealed)
        .bind(verified)
        .bind(at),
        ChannelEvent::ChannelUpdated { name, language, at } => sqlx::query(
            "UPDATE notification_channels SET name = coalesce($2, name), language = coalesce($3, language),
                 updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(name)
        .bind(language.map(|l| l.as_str()))
        .bind(at),
        ChannelEvent::ChannelVerified { at } => {
            sqlx::query("UPDATE notification_channels SET verified = true, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
        }
        ChannelEvent::ChannelDisabled { reason, detail, at } => sqlx::query(
            "UPDATE notification_channels SET disabled_reason = $2, disabled_detail = $3, disabled_at = $4,
                 updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(reason.as_str())
        .bind(detail)
        .bind(at),
        ChannelEvent::ChannelEnabled { at } => sqlx::query(
            "UPDATE notification_channels SET disabled_reason = NULL, disabled_detail = NULL, disabled_at = NULL,
                 updated_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(at),
        ChannelEvent::ChannelResealed { sealed, display, at } => sqlx::query(
            "UPDATE notification_channels SET sealed = $2, display = coalesce($3, display), updated_at = $4
             WHERE id = $1",
        )
        .bind(id)
        .bind(sealed)
        .bind(display)
        .bind(at),
        // Its delivery log goes with it; the events keep the history.
        ChannelEvent::ChannelDeleted { .. } => {
            sqlx::query("DELETE FROM notifications WHERE channel_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM notification_channels WHERE id = $1").bind(id)
        }
    };
    q.execute(&mut *tx).await?;
    Ok(())
}

fn next_reminder(every: Option<i32>, told: DateTime<Utc>) -> Option<DateTime<Utc>> {
    every.map(|s| told + chrono::Duration::seconds(s as i64))
}

async fn alert(tx: &mut PgConnection, id: Uuid, event: AlertEvent) -> Result<(), ProjectionError> {
    match event {
        AlertEvent::AlertRaised {
            workspace_id,
            kind,
            realert_every_seconds,
            channels,
            details,
            at,
            ..
        } => {
            let every = realert_every_seconds.map(|s| s as i32);
            sqlx::query(
                "INSERT INTO alerts (id, workspace_id, job_id, run_id, kind, state, details, channels,
                     realert_every_seconds, next_reminder_at, raised_at, last_told_at, failed_runs)
                 VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $9, $10, $10, $11) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(workspace_id)
            .bind(details.job_id)
            .bind(details.run_id)
            .bind(kind.as_str())
            .bind(serde_json::to_value(&details).map_err(|e| ProjectionError::Sink(Box::new(e)))?)
            .bind(&channels)
            .bind(every)
            .bind(next_reminder(every, at).filter(|_| kind == AlertKind::JobFailing))
            .bind(at)
            .bind(details.failures as i32)
            .execute(&mut *tx)
            .await?;
        }
        AlertEvent::AlertReminded { reminder, at } => {
            sqlx::query(
                "UPDATE alerts SET reminders = $2, last_told_at = $3,
                     next_reminder_at = $3 + realert_every_seconds * interval '1 second'
                 WHERE id = $1 AND state = 'open'",
            )
            .bind(id)
            .bind(reminder as i32)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        AlertEvent::AlertResolved {
            reason,
            run_id,
            failed_runs,
            at,
        } => {
            sqlx::query(
                "UPDATE alerts SET state = 'resolved', resolved_at = $2, next_reminder_at = NULL,
                     resolve_reason = $3, resolved_by_run = $4, failed_runs = greatest(failed_runs, $5)
                 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(match reason {
                ResolveReason::Recovered => "recovered",
                ResolveReason::JobDeleted => "job_deleted",
            })
            .bind(run_id)
            .bind(failed_runs as i32)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

async fn notification(tx: &mut PgConnection, id: Uuid, event: NotificationEvent) -> Result<(), ProjectionError> {
    let q = match event {
        NotificationEvent::NotificationQueued {
            workspace_id,
            channel_id,
            alert_id,
            content,
            at,
            ..
        } => sqlx::query(
            "INSERT INTO notifications (id, workspace_id, channel_id, alert_id, run_id, kind, content, status,
                 next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(workspace_id)
        .bind(channel_id)
        .bind(alert_id)
        .bind(content.details.run_id)
        .bind(content.kind.as_str())
        .bind(serde_json::to_value(&content).map_err(|e| ProjectionError::Sink(Box::new(e)))?)
        .bind(at),
        NotificationEvent::NotificationAttempted {
            attempt,
            error,
            rate_limited,
            next_at,
            ..
        } => sqlx::query(
            "UPDATE notifications SET status = 'retrying', attempts = $2, throttled = throttled + $3::int,
                 last_error = $4, next_attempt_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(attempt as i32)
        .bind(rate_limited as i32)
        .bind(error)
        .bind(next_at),
        NotificationEvent::NotificationDelivered { attempts, digest, at } => sqlx::query(
            "UPDATE notifications SET status = 'delivered', attempts = $2, digest = $3, next_attempt_at = NULL,
                 finished_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(attempts as i32)
        .bind(digest.map(|d| d as i32))
        .bind(at),
        NotificationEvent::NotificationFailed { attempts, error, at } => sqlx::query(
            "UPDATE notifications SET status = 'failed', attempts = $2, last_error = $3, next_attempt_at = NULL,
                 finished_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(attempts as i32)
        .bind(error)
        .bind(at),
    };
    q.execute(&mut *tx).await?;
    Ok(())
}
