//! The alert decider: follows the log like a projection and turns run outcomes into alerts.
//!
//! Each batch is applied in the transaction that moves its checkpoint (`cronbox-projections`'
//! runner), and what it decides — `AlertRaised` / `AlertReminded` / `AlertResolved` and one
//! `NotificationQueued` per (alert event, channel) — is appended to the log in that same
//! transaction. A crash therefore neither loses a decision nor makes it twice, and a poison
//! event is quarantined like in any projection. It is not rebuilt with the read models: its
//! output is events, which a replay must not write again.
//!
//! It reads only the log and its own tables (`alert_streaks`, `alert_channel_index`), never the
//! clock: the job's rules and the failed run's details come from their streams, up to the event
//! being decided.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cronbox_domain::alert::{self, Alert, AlertCommand, AlertDetails, AlertEvent, AlertKind, ResolveReason, Streak};
use cronbox_domain::channel::{ChannelEvent, DisableReason};
use cronbox_domain::job::{Job, JobEvent, JobKind, JobStatus};
use cronbox_domain::notification::{
    notification_id, Notification, NotificationCommand, NotificationContent, NotificationKind,
};
use cronbox_domain::run::{BodyEncoding, RunEvent};
use cronbox_projections::runner::{ApplyFuture, Projection, ProjectionError};
use cronbox_store::append::{append_new, NewEvent};
use cronbox_store::stream;
use cronbox_store::tail::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

pub const NAME: &str = "alert_decider";

pub struct AlertDecider;

impl Projection for AlertDecider {
    fn name(&self) -> &'static str {
        NAME
    }
    fn tables(&self) -> &'static [&'static str] {
        &["alert_streaks", "alert_channel_index"]
    }
    /// A burst's failures are decided a batch at a time in a handful of statements; a failing
    /// run brings four or five other events with it, so 500 events are ~100 failures: the
    /// deliverer starts on the first alerts while the rest are decided.
    fn batch_size(&self) -> i64 {
        500
    }
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, ev: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move { apply(tx, ev).await })
    }
    /// Most events of a batch are successes of jobs that were not failing: one query finds the
    /// few that were, and only those (and everything that is not a success) are applied. Runs of
    /// failures are decided together (see [`decide_failures`]).
    fn apply_batch<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Arc<StoredEvent>]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut succeeded = Vec::new();
            for ev in events {
                if let Some(job) = success_of(ev) {
                    succeeded.push(job);
                }
            }
            let mut failing: HashSet<Uuid> = if succeeded.is_empty() {
                HashSet::new()
            } else {
                sqlx::query_scalar("SELECT job_id FROM alert_streaks WHERE job_id = ANY($1)")
                    .bind(&succeeded)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect()
            };
            // Consecutive failures are decided together; anything else first flushes them, so
            // the log's order holds.
            let mut group = Vec::new();
            for ev in events {
                if let Some(f) = failure(ev)? {
                    if let Some(job) = f.job_id {
                        failing.insert(job);
                    }
                    group.push(f);
                    continue;
                }
                // Only what `apply` acts on ends a group: the rest of a run's events (dispatched,
                // attempt started, …) sit between one run's failure and the next in a burst.
                match success_of(ev) {
                    Some(job) if !failing.contains(&job) => continue,
                    None if !acted_on(ev) => continue,
                    _ => {}
                }
                decide_failures(tx, std::mem::take(&mut group)).await?;
                apply(tx, ev).await?;
            }
            decide_failures(tx, group).await
        })
    }
}

/// Whether [`apply`] does anything with the event (besides failures and successes).
fn acted_on(ev: &StoredEvent) -> bool {
    match ev.aggregate_type.as_str() {
        "Job" => ev.event_type == "JobDeleted",
        "NotificationChannel" => true,
        "Alert" => ev.event_type == "AlertReminded",
        _ => false,
    }
}

fn success_of(ev: &StoredEvent) -> Option<Uuid> {
    (ev.aggregate_type == "Run" && ev.event_type == "RunSucceeded")
        .then(|| ev.payload.get("RunSucceeded")?.get("job_id")?.as_str()?.parse().ok())
        .flatten()
}

fn decode<E: serde::de::DeserializeOwned>(ev: &StoredEvent) -> Result<E, ProjectionError> {
    E::deserialize(&ev.payload).map_err(|e| ProjectionError::decode(ev, e))
}

fn id_of(ev: &StoredEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&ev.aggregate_id).map_err(|e| ProjectionError::decode(ev, serde::de::Error::custom(e)))
}

async fn apply(tx: &mut PgConnection, ev: &StoredEvent) -> Result<(), ProjectionError> {
    match ev.aggregate_type.as_str() {
        "Run" if matches!(ev.event_type.as_str(), "RunFailed" | "CallbackFailed") => {
            decide_failures(tx, failure(ev)?.into_iter().collect()).await
        }
        "Run" if ev.event_type == "RunSucceeded" => {
            let run_id = id_of(ev)?;
            match decode::<RunEvent>(ev)? {
                RunEvent::RunSucceeded { job_id, at, .. } => run_succeeded(tx, run_id, job_id, at).await,
                _ => Ok(()),
            }
        }
        "Job" if ev.event_type == "JobDeleted" => {
            let job_id = id_of(ev)?;
            if let JobEvent::JobDeleted { at, .. } = decode(ev)? {
                job_deleted(tx, job_id, at).await?;
            }
            Ok(())
        }
        "NotificationChannel" => channel_changed(tx, ev).await,
        "Alert" if ev.event_type == "AlertReminded" => {
            let alert_id = id_of(ev)?;
            if let AlertEvent::AlertReminded { reminder, at } = decode(ev)? {
                reminded(tx, alert_id, ev.sequence, reminder, at).await?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The job's definition and status, from its stream.
async fn job_at(tx: &mut PgConnection, job_id: Uuid) -> Result<Option<Job>, ProjectionError> {
    let (job, seq) = stream::load::<Job>(tx, &job_id.to_string()).await?;
    Ok((seq > 0 && job.definition.is_some()).then_some(job))
}

/// What the failed run's stream says: its plan and its last attempt's outcome.
fn run_details(rows: Vec<serde_json::Value>, run_id: Uuid, job: &Job, callback: bool) -> AlertDetails {
    let def = job.definition.as_ref();
    let mut d = AlertDetails {
        job_id: job.id,
        job_name: def.map(|d| d.name.clone()).unwrap_or_default(),
        url: def.map(|d| alert::display_url(&d.request.url)).unwrap_or_default(),
        run_id: Some(run_id),
        timezone: match def.map(|d| &d.kind) {
            Some(JobKind::Cron { timezone, .. }) => timezone.clone(),
            _ => "UTC".into(),
        },
        ..Default::default()
    };
    for payload in rows {
        // Events this version does not know are skipped: details are best effort, the
        // decision is not.
        let Ok(event) = serde_json::from_value::<RunEvent>(payload) else {
            continue;
        };
        let outcome = match event {
            RunEvent::RunScheduled { plan, .. } => {
                d.scheduled_for = Some(plan.scheduled_for);
                if callback {
                    if let Some(url) = &plan.callback_url {
                        d.url = alert::display_url(url);
                    }
                }
                continue;
            }
            RunEvent::AttemptFinished { attempt, outcome, .. } if !callback => {
                d.attempts = attempt;
                outcome
            }
            RunEvent::CallbackAttempted { attempt, outcome, .. } if callback => {
                d.attempts = attempt;
                outcome
            }
            _ => continue,
        };
        d.status_code = outcome.status_code;
        d.error_kind = outcome.error_kind.map(|k| k.as_str().to_string());
        d.error_message = outcome.error_message.clone();
        d.response_head = match (&outcome.response_body, outcome.response_body_encoding) {
            (Some(body), BodyEncoding::Text) => alert::response_head(body),
            _ => None,
        };
    }
    d
}

/// The job's failing streak and its workspace.
async fn streak_of(tx: &mut PgConnection, job_id: Uuid) -> Result<Option<(Streak, Uuid)>, ProjectionError> {
    let row: Option<(i32, DateTime<Utc>, Uuid, Option<Uuid>, Uuid)> = sqlx::query_as(
        "SELECT failures, since, first_run, open_alert, workspace_id FROM alert_streaks WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|(failures, since, first_run, open_alert, ws)| {
        let streak = Streak {
            failures: failures.max(0) as u32,
            since,
            first_run,
            open_alert,
        };
        (streak, ws)
    }))
}

/// The channels an alert goes to: those the job chose (or all), that work now.
async fn channels_for(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    chosen: Option<&[Uuid]>,
) -> Result<Vec<Uuid>, ProjectionError> {
    let all: Vec<Uuid> = sqlx::query_scalar(
        "SELECT channel_id FROM alert_channel_index
          WHERE workspace_id = $1 AND verified AND NOT disabled ORDER BY created_at, channel_id",
    )
    .bind(workspace_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(match chosen {
        Some(chosen) => all.into_iter().filter(|c| chosen.contains(c)).collect(),
        None => all,
    })
}

/// Writes commands on an alert under its lock; returns the written events with their sequences.
async fn on_alert(
    tx: &mut PgConnection,
    alert_id: Uuid,
    workspace_id: Uuid,
    command: AlertCommand,
) -> Result<Vec<(i64, AlertEvent)>, ProjectionError> {
    let id = alert_id.to_string();
    stream::lock(tx, Alert::TYPE, &id).await?;
    let (alert, last) = stream::load::<Alert>(tx, &id).await?;
    // A refusal (already raised, no longer open) means the decision was made already.
    let Ok(events) = alert.decide(command) else {
        return Ok(vec![]);
    };
    let seqs = stream::append::<Alert>(tx, &id, last, &events, Some(workspace_id)).await?;
    Ok(seqs.into_iter().zip(events).collect())
}

/// One `NotificationQueued` per channel for the alert event at `sequence`.
fn queued(
    workspace_id: Uuid,
    alert_id: Option<Uuid>,
    sequence: i64,
    channels: &[Uuid],
    content: &NotificationContent,
    at: DateTime<Utc>,
) -> Result<Vec<NewEvent>, ProjectionError> {
    let mut rows = Vec::with_capacity(channels.len());
    for channel_id in channels {
        let nid = notification_id(alert_id.unwrap_or(workspace_id), sequence, *channel_id);
        let events = Notification::default()
            .decide(NotificationCommand::Queue {
                notification_id: nid,
                workspace_id,
                channel_id: *channel_id,
                alert_id,
                content: content.clone(),
                at,
            })
            .unwrap_or_default();
        for (i, e) in events.iter().enumerate() {
            rows.push(NewEvent::of::<Notification>(nid.to_string(), 1 + i as i64, e)?.in_workspace(Some(workspace_id)));
        }
    }
    Ok(rows)
}

/// Appends [`queued`] in one statement. A notification already there (a decision repeated) is
/// left as it is.
async fn queue(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    alert_id: Option<Uuid>,
    sequence: i64,
    channels: &[Uuid],
    content: &NotificationContent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    append_new(tx, &queued(workspace_id, alert_id, sequence, channels, content, at)?).await?;
    Ok(())
}

/// A final failure to decide on: a run's, or its callback's.
struct Failure {
    run_id: Uuid,
    job_id: Option<Uuid>,
    callback: bool,
    at: DateTime<Utc>,
}

fn failure(ev: &StoredEvent) -> Result<Option<Failure>, ProjectionError> {
    if ev.aggregate_type != "Run" || !matches!(ev.event_type.as_str(), "RunFailed" | "CallbackFailed") {
        return Ok(None);
    }
    let run_id = id_of(ev)?;
    Ok(match decode::<RunEvent>(ev)? {
        RunEvent::RunFailed { job_id, at, .. } => Some(Failure {
            run_id,
            job_id: Some(job_id),
            callback: false,
            at,
        }),
        // CallbackFailed does not carry the job: the run's first event does.
        RunEvent::CallbackFailed { at, .. } => Some(Failure {
            run_id,
            job_id: None,
            callback: true,
            at,
        }),
        _ => None,
    })
}

/// Events of many aggregates of one type, by aggregate, in order: one round trip.
async fn streams(
    tx: &mut PgConnection,
    aggregate_type: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<serde_json::Value>>, ProjectionError> {
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload FROM events
          WHERE aggregate_type = $1 AND aggregate_id = ANY($2) ORDER BY aggregate_id, sequence",
    )
    .bind(aggregate_type)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    let mut out: HashMap<Uuid, Vec<serde_json::Value>> = HashMap::new();
    for (id, payload) in rows {
        if let Ok(id) = Uuid::parse_str(&id) {
            out.entry(id).or_default().push(payload);
        }
    }
    Ok(out)
}

/// The workspaces' time zones, from their latest create or update event.
async fn timezones(tx: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, String>, ProjectionError> {
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT DISTINCT ON (aggregate_id) aggregate_id, payload FROM events
          WHERE aggregate_type = 'Workspace' AND aggregate_id = ANY($1)
            AND event_type IN ('WorkspaceCreated', 'WorkspaceUpdated')
          ORDER BY aggregate_id, sequence DESC",
    )
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, p)| {
            let e = p.get("WorkspaceCreated").or_else(|| p.get("WorkspaceUpdated"))?;
            let tz = e.get("timezone")?.as_str().filter(|t| !t.is_empty())?.to_string();
            Some((Uuid::parse_str(&id).ok()?, tz))
        })
        .collect())
}

/// An alert decided in a group, to be written with the others.
struct Raised {
    alert_id: Uuid,
    workspace_id: Uuid,
    kind: AlertKind,
    notification: NotificationKind,
    channels: Vec<Uuid>,
    realert_every_seconds: Option<u32>,
    details: AlertDetails,
    at: DateTime<Utc>,
}

/// Decides a run of consecutive failures together: a burst of 1,000 failing jobs costs a
/// handful of statements (their streams, streaks, channels and time zones read at once, every
/// alert and notification appended at once), not ten per failure.
async fn decide_failures(tx: &mut PgConnection, mut failures: Vec<Failure>) -> Result<(), ProjectionError> {
    if failures.is_empty() {
        return Ok(());
    }
    let run_ids: Vec<Uuid> = failures.iter().map(|f| f.run_id).collect();
    let runs = streams(tx, "Run", &run_ids).await?;
    for f in failures.iter_mut().filter(|f| f.job_id.is_none()) {
        f.job_id = runs.get(&f.run_id).and_then(|events| {
            events
                .iter()
                .find_map(|p| match serde_json::from_value::<RunEvent>(p.clone()) {
                    Ok(RunEvent::RunScheduled { plan, .. }) => Some(plan.job_id),
                    _ => None,
                })
        });
    }
    let mut job_ids: Vec<Uuid> = failures.iter().filter_map(|f| f.job_id).collect();
    job_ids.sort_unstable();
    job_ids.dedup();
    let mut jobs: HashMap<Uuid, Job> = HashMap::new();
    for (id, events) in streams(tx, "Job", &job_ids).await? {
        let mut job = Job::default();
        for p in events {
            job.apply(serde_json::from_value(p).map_err(|e| ProjectionError::Store(e.into()))?);
        }
        if job.definition.is_some() && job.status != JobStatus::Deleted {
            jobs.insert(id, job);
        }
    }
    let mut streaks: HashMap<Uuid, Streak> = HashMap::new();
    let rows: Vec<(Uuid, i32, DateTime<Utc>, Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT job_id, failures, since, first_run, open_alert FROM alert_streaks WHERE job_id = ANY($1)",
    )
    .bind(&job_ids)
    .fetch_all(&mut *tx)
    .await?;
    for (job, failures, since, first_run, open_alert) in rows {
        let failures = failures.max(0) as u32;
        streaks.insert(
            job,
            Streak {
                failures,
                since,
                first_run,
                open_alert,
            },
        );
    }
    let mut workspaces: Vec<Uuid> = jobs.values().filter_map(|j| j.workspace_id).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    let mut usable: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT workspace_id, channel_id FROM alert_channel_index
          WHERE workspace_id = ANY($1) AND verified AND NOT disabled ORDER BY created_at, channel_id",
    )
    .bind(&workspaces)
    .fetch_all(&mut *tx)
    .await?;
    for (ws, channel) in rows {
        usable.entry(ws).or_default().push(channel);
    }
    let zones = timezones(tx, &workspaces).await?;

    let mut raised = Vec::new();
    // Jobs whose streak changed, in first-seen order (with their workspace).
    let mut changed: Vec<(Uuid, Uuid)> = Vec::new();
    let mut seen_jobs: HashSet<Uuid> = HashSet::new();
    for f in &failures {
        let Some(job) = f.job_id.and_then(|id| jobs.get(&id)) else {
            continue;
        };
        let (Some(def), Some(job_id), Some(workspace_id)) = (job.definition.as_ref(), job.id, job.workspace_id) else {
            continue;
        };
        let channels: Vec<Uuid> = usable
            .get(&workspace_id)
            .map(|all| match &def.alerts.channels {
                Some(chosen) => all.iter().filter(|c| chosen.contains(c)).copied().collect(),
                None => all.clone(),
            })
            .unwrap_or_default();
        let details = || {
            run_details(
                runs.get(&f.run_id).cloned().unwrap_or_default(),
                f.run_id,
                job,
                f.callback,
            )
        };
        if f.callback || !def.is_cron() {
            if !def.notify_on_failure {
                continue;
            }
            let (kind, notification) = if f.callback {
                (AlertKind::CallbackFailed, NotificationKind::CallbackFailed)
            } else {
                (AlertKind::CallFailed, NotificationKind::CallFailed)
            };
            let mut d = details();
            d.failures = 1;
            d.timezone = zones.get(&workspace_id).cloned().unwrap_or_else(|| "UTC".into());
            raised.push(Raised {
                alert_id: alert::call_alert_id(f.run_id, kind),
                workspace_id,
                kind,
                notification,
                channels,
                realert_every_seconds: None,
                details: d,
                at: f.at,
            });
            continue;
        }
        let (streak, raise_id) = alert::on_failure(
            streaks.get(&job_id).cloned(),
            job_id,
            &def.alerts,
            def.notify_on_failure,
            f.run_id,
            f.at,
        );
        streaks.insert(job_id, streak.clone());
        if seen_jobs.insert(job_id) {
            changed.push((job_id, workspace_id));
        }
        if let Some(alert_id) = raise_id {
            let mut d = details();
            d.failures = streak.failures;
            d.failing_since = Some(streak.since);
            raised.push(Raised {
                alert_id,
                workspace_id,
                kind: AlertKind::JobFailing,
                notification: NotificationKind::Failure,
                channels,
                realert_every_seconds: def.alerts.realert_every_seconds,
                details: d,
                at: f.at,
            });
        }
    }

    if !changed.is_empty() {
        let mut ids = Vec::new();
        let mut wss = Vec::new();
        let mut counts = Vec::new();
        let mut sinces = Vec::new();
        let mut firsts = Vec::new();
        let mut opens = Vec::new();
        for (job, ws) in &changed {
            let s = &streaks[job];
            ids.push(*job);
            wss.push(*ws);
            counts.push(s.failures.min(i32::MAX as u32) as i32);
            sinces.push(s.since);
            firsts.push(s.first_run);
            opens.push(s.open_alert);
        }
        sqlx::query(
            "INSERT INTO alert_streaks (job_id, workspace_id, failures, since, first_run, open_alert)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::timestamptz[], $5::uuid[], $6::uuid[])
             ON CONFLICT (job_id) DO UPDATE SET failures = EXCLUDED.failures, since = EXCLUDED.since,
                 first_run = EXCLUDED.first_run, open_alert = EXCLUDED.open_alert",
        )
        .bind(&ids)
        .bind(&wss)
        .bind(&counts)
        .bind(&sinces)
        .bind(&firsts)
        .bind(&opens)
        .execute(&mut *tx)
        .await?;
    }
    if raised.is_empty() {
        return Ok(());
    }
    // A raise starts its alert's stream, so nobody else can be writing it: no lock, no load.
    // One whose first event is there already was decided before (a replayed batch): it queues
    // nothing again.
    let mut rows = Vec::new();
    for r in &raised {
        let events = Alert::default()
            .decide(AlertCommand::Raise {
                alert_id: r.alert_id,
                workspace_id: r.workspace_id,
                kind: r.kind,
                realert_every_seconds: r.realert_every_seconds,
                channels: r.channels.clone(),
                details: r.details.clone(),
                at: r.at,
            })
            .unwrap_or_default();
        for (i, e) in events.iter().enumerate() {
            rows.push(
                NewEvent::of::<Alert>(r.alert_id.to_string(), 1 + i as i64, e)?.in_workspace(Some(r.workspace_id)),
            );
        }
    }
    let written: HashSet<String> = append_new(tx, &rows)
        .await?
        .into_iter()
        .filter(|(_, seq)| *seq == 1)
        .map(|(id, _)| id)
        .collect();
    let mut notifications = Vec::new();
    for r in raised.into_iter().filter(|r| written.contains(&r.alert_id.to_string())) {
        tracing::info!(alert_id = %r.alert_id, workspace_id = %r.workspace_id, job_id = ?r.details.job_id,
            run_id = ?r.details.run_id, kind = r.kind.as_str(), channels = r.channels.len(), "alert raised");
        let content = NotificationContent::new(r.notification, r.details);
        notifications.extend(queued(
            r.workspace_id,
            Some(r.alert_id),
            1,
            &r.channels,
            &content,
            r.at,
        )?);
    }
    append_new(tx, &notifications).await?;
    Ok(())
}

/// The alert's `AlertRaised`: its channels and details.
async fn raised_of(
    tx: &mut PgConnection,
    alert_id: Uuid,
) -> Result<Option<(Vec<Uuid>, AlertDetails)>, ProjectionError> {
    let payload: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload::jsonb FROM events WHERE aggregate_type = 'Alert' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(alert_id.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match payload.map(serde_json::from_value::<AlertEvent>) {
        Some(Ok(AlertEvent::AlertRaised { channels, details, .. })) => Some((channels, details)),
        _ => None,
    })
}

async fn run_succeeded(
    tx: &mut PgConnection,
    run_id: Uuid,
    job_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let Some((streak, workspace_id)) = streak_of(tx, job_id).await? else {
        return Ok(());
    };
    sqlx::query("DELETE FROM alert_streaks WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    let Some(alert_id) = alert::on_success(Some(&streak)) else {
        return Ok(());
    };
    let job = job_at(tx, job_id).await?;
    let Some((channels, details)) = raised_of(tx, alert_id).await? else {
        return Ok(());
    };
    let written = on_alert(
        tx,
        alert_id,
        workspace_id,
        AlertCommand::Resolve {
            reason: ResolveReason::Recovered,
            run_id: Some(run_id),
            failed_runs: streak.failures,
            at,
        },
    )
    .await?;
    let notify = job
        .as_ref()
        .and_then(|j| j.definition.as_ref())
        .is_some_and(|d| d.notify_on_recovery);
    if let (Some((seq, _)), true) = (written.first(), notify) {
        // Only channels that still work; the rest are told nothing (they may be gone).
        let usable = channels_for(tx, workspace_id, Some(&channels)).await?;
        let mut content = NotificationContent::new(
            NotificationKind::Recovery,
            AlertDetails {
                run_id: Some(run_id),
                failures: streak.failures,
                failing_since: Some(streak.since),
                ..details
            },
        );
        content.failed_runs = Some(streak.failures);
        content.failing_seconds = Some((at - streak.since).num_seconds());
        queue(tx, workspace_id, Some(alert_id), *seq, &usable, &content, at).await?;
        tracing::info!(%alert_id, %job_id, %run_id, failed_runs = streak.failures, "alert resolved: job recovered");
    }
    Ok(())
}

async fn job_deleted(tx: &mut PgConnection, job_id: Uuid, at: DateTime<Utc>) -> Result<(), ProjectionError> {
    let Some((streak, workspace_id)) = streak_of(tx, job_id).await? else {
        return Ok(());
    };
    sqlx::query("DELETE FROM alert_streaks WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    if let Some(alert_id) = streak.open_alert {
        on_alert(
            tx,
            alert_id,
            workspace_id,
            AlertCommand::Resolve {
                reason: ResolveReason::JobDeleted,
                run_id: None,
                failed_runs: streak.failures,
                at,
            },
        )
        .await?;
    }
    Ok(())
}

async fn reminded(
    tx: &mut PgConnection,
    alert_id: Uuid,
    sequence: i64,
    reminder: u32,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let Some((channels, details)) = raised_of(tx, alert_id).await? else {
        return Ok(());
    };
    let Some(job_id) = details.job_id else { return Ok(()) };
    let Some((streak, workspace_id)) = streak_of(tx, job_id).await? else {
        return Ok(());
    };
    if streak.open_alert != Some(alert_id) {
        return Ok(());
    }
    // A paused job is not failing any more runs: nobody is reminded until it resumes.
    if job_at(tx, job_id).await?.is_none_or(|j| j.status != JobStatus::Active) {
        return Ok(());
    }
    let usable = channels_for(tx, workspace_id, Some(&channels)).await?;
    let mut content = NotificationContent::new(
        NotificationKind::Reminder,
        AlertDetails {
            failures: streak.failures,
            failing_since: Some(streak.since),
            ..details
        },
    );
    content.reminder = Some(reminder);
    content.failing_seconds = Some((at - streak.since).num_seconds());
    content.failed_runs = Some(streak.failures);
    queue(tx, workspace_id, Some(alert_id), sequence, &usable, &content, at).await
}

async fn channel_changed(tx: &mut PgConnection, ev: &StoredEvent) -> Result<(), ProjectionError> {
    let channel_id = id_of(ev)?;
    match decode::<ChannelEvent>(ev)? {
        ChannelEvent::ChannelCreated {
            workspace_id,
            verified,
            at,
            ..
        } => {
            sqlx::query(
                "INSERT INTO alert_channel_index (channel_id, workspace_id, verified, disabled, created_at)
                 VALUES ($1, $2, $3, false, $4) ON CONFLICT (channel_id) DO NOTHING",
            )
            .bind(channel_id)
            .bind(workspace_id)
            .bind(verified)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        ChannelEvent::ChannelVerified { .. } => {
            sqlx::query("UPDATE alert_channel_index SET verified = true WHERE channel_id = $1")
                .bind(channel_id)
                .execute(&mut *tx)
                .await?;
        }
        ChannelEvent::ChannelEnabled { .. } => {
            sqlx::query("UPDATE alert_channel_index SET disabled = false WHERE channel_id = $1")
                .bind(channel_id)
                .execute(&mut *tx)
                .await?;
        }
        ChannelEvent::ChannelDeleted { .. } => {
            sqlx::query("DELETE FROM alert_channel_index WHERE channel_id = $1")
                .bind(channel_id)
                .execute(&mut *tx)
                .await?;
        }
        ChannelEvent::ChannelDisabled { reason, detail, at } => {
            let workspace_id: Option<Uuid> = sqlx::query_scalar(
                "UPDATE alert_channel_index SET disabled = true WHERE channel_id = $1 RETURNING workspace_id",
            )
            .bind(channel_id)
            .fetch_optional(&mut *tx)
            .await?;
            // A channel that broke by itself is news for the workspace's admins: told on the
            // channels that still work. One switched off on purpose is not.
            if let (Some(workspace_id), DisableReason::BotBlocked | DisableReason::Gone) = (workspace_id, reason) {
                let name: String = channel_name(tx, channel_id).await?;
                let others = channels_for(tx, workspace_id, None).await?;
                let alert_id = Uuid::new_v5(&channel_id, format!("disabled:{}", ev.sequence).as_bytes());
                let details = AlertDetails {
                    job_name: name.clone(),
                    error_message: Some(detail),
                    ..Default::default()
                };
                let written = on_alert(
                    tx,
                    alert_id,
                    workspace_id,
                    AlertCommand::Raise {
                        alert_id,
                        workspace_id,
                        kind: AlertKind::ChannelDisabled,
                        realert_every_seconds: None,
                        channels: others.clone(),
                        details: details.clone(),
                        at,
                    },
                )
                .await?;
                if let Some((seq, _)) = written.first() {
                    let mut content = NotificationContent::new(NotificationKind::ChannelDisabled, details);
                    content.disabled_channel = Some(name);
                    content.disabled_reason = Some(reason);
                    queue(tx, workspace_id, Some(alert_id), *seq, &others, &content, at).await?;
                }
            }
        }
        ChannelEvent::ChannelUpdated { .. } | ChannelEvent::ChannelResealed { .. } => {}
    }
    Ok(())
}

async fn channel_name(tx: &mut PgConnection, channel_id: Uuid) -> Result<String, ProjectionError> {
    let (channel, _) = stream::load::<cronbox_domain::channel::Channel>(tx, &channel_id.to_string()).await?;
    Ok(channel.name)
}
