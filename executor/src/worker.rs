//! The consume loop: one durable pull consumer, bounded concurrency, heartbeats while a call runs,
//! ack only after the outcome is committed.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use cqrs_es::AggregateError;
use cronbox_domain::policy;
use cronbox_domain::request::{Header, HttpMethod, RequestSpec};
use cronbox_domain::run::Work;
use cronbox_domain::run::{Run, RunCommand, RunError, RunStatus};
use cronbox_domain::target::TargetPolicy;
use cronbox_nats::{ConsumerSettings, DispatchMessage, RunQueue};
use cronbox_store::aggregates::Stores;
use cronbox_store::append::rows;
use cronbox_store::group_commit::{Appended, GroupCommit};
use cronbox_store::signing::Keyring;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::http::HttpCaller;

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Calls in flight in this process.
    pub concurrency: usize,
    /// Calls in flight in this process to one target origin (scheme, host, port).
    pub per_host_concurrency: usize,
    /// On shutdown, how long calls in flight may take to finish and be recorded.
    pub shutdown_grace: Duration,
    /// Which addresses calls may reach (the SSRF guard).
    pub targets: TargetPolicy,
    /// The most response body bytes read; a larger body fails the attempt as `too_large`.
    pub max_response_bytes: usize,
    pub consumer: ConsumerSettings,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            per_host_concurrency: 32,
            shutdown_grace: Duration::from_secs(10),
            targets: TargetPolicy::guarded(),
            max_response_bytes: 1024 * 1024,
            consumer: ConsumerSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("cannot build the HTTP client")]
    Client(#[from] reqwest::Error),
    #[error("NATS error")]
    Nats(#[from] cronbox_nats::NatsError),
}

/// Upper bound of one pull request, whatever the concurrency.
const MAX_BATCH: usize = 1000;
/// How long one pull request waits for messages before a new one is issued.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// What every message handler shares.
struct Shared {
    stores: Arc<Stores>,
    writer: GroupCommit,
    caller: HttpCaller,
    keyring: Arc<Keyring>,
    hosts: HostLimits,
    heartbeat: Duration,
}

/// How long a run whose host is busy waits before it is delivered again.
const HOST_BUSY_DELAY: Duration = Duration::from_millis(500);
/// The longest an executor holds a call that arrived before its instant.
const MAX_EARLY: Duration = Duration::from_secs(1);
/// How long a run waits in its executor slot for a slot of its host.
const HOST_WAIT: Duration = Duration::from_millis(250);

/// Calls in flight per workspace and target (scheme, host and port), so one slow or hanging
/// service cannot take every slot of the executor, and one tenant's calls to a service cannot
/// take the slots other tenants need for the same service (a shared CRM endpoint, say).
struct HostLimits {
    per_host: usize,
    hosts: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
}

impl HostLimits {
    fn new(per_host: usize) -> Self {
        Self {
            per_host,
            hosts: Default::default(),
        }
    }

    fn key(workspace: uuid::Uuid, url: &str) -> String {
        let origin = url::Url::parse(url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| url.to_string());
        format!("{workspace} {origin}")
    }

    /// A slot for `url`'s origin, waiting at most [`HOST_WAIT`] for one: a busy but healthy
    /// host frees slots within milliseconds, and a run sent back to the stream would cost a
    /// redelivery and a reload; a hanging host keeps its slots, and then its runs go back.
    async fn acquire(&self, workspace: uuid::Uuid, url: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = self.semaphore(workspace, url)?;
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Some(p);
        }
        tokio::time::timeout(HOST_WAIT, sem.acquire_owned()).await.ok()?.ok()
    }

    fn semaphore(&self, workspace: uuid::Uuid, url: &str) -> Option<Arc<Semaphore>> {
        let Ok(mut hosts) = self.hosts.lock() else {
            return None;
        };
        // Forget idle hosts now and then, so the map does not grow with every host ever called.
        if hosts.len() > 10_000 {
            let per_host = self.per_host;
            hosts.retain(|_, s| s.available_permits() < per_host);
        }
        let sem = hosts
            .entry(Self::key(workspace, url))
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone();
        Some(sem)
    }
}

/// Consumes runs until `shutdown`. Reconnects and re-subscribes by itself.
pub async fn run(
    stores: Arc<Stores>,
    queue: RunQueue,
    config: ExecutorConfig,
    keyring: Arc<Keyring>,
    shutdown: CancellationToken,
) -> Result<(), ExecuteError> {
    let shared = Arc::new(Shared {
        writer: GroupCommit::start(stores.pool.clone()),
        caller: HttpCaller::new(config.targets.clone(), config.max_response_bytes)?,
        stores,
        keyring,
        hosts: HostLimits::new(config.per_host_concurrency),
        // Progress well inside ack_wait, so a long call is never redelivered while it runs.
        heartbeat: config.consumer.ack_wait / 3,
    });
    let slots = Arc::new(Semaphore::new(config.concurrency));
    consume(&shared, &queue, &config, &slots, &shutdown).await;
    // Stop taking messages, then give the calls in flight time to finish and be recorded;
    // whatever is still running after that is left unacknowledged for redelivery.
    let all = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
    match tokio::time::timeout(config.shutdown_grace, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("executor drained"),
        Err(_) => tracing::warn!(
            in_flight = config.concurrency - slots.available_permits(),
            "calls still running at shutdown; they will be redelivered"
        ),
    }
    Ok(())
}

/// Pulls and hands out messages until `shutdown`.
async fn consume(
    shared: &Arc<Shared>,
    queue: &RunQueue,
    config: &ExecutorConfig,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let consumer = match queue.consumer(&config.consumer).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = ?e, "executor cannot attach to its consumer; retrying");
                sleep_or_cancel(Duration::from_secs(1), shutdown).await;
                continue;
            }
        };
        // Pull only as many messages as there are free slots: a message that waited in a local
        // buffer for a slot would keep its ack clock running, be redelivered to another executor
        // and be called twice in parallel.
        loop {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.cancelled() => return,
            };
            let mut permits = vec![first];
            while permits.len() < MAX_BATCH {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let mut batch = match consumer
                .batch()
                .max_messages(permits.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "executor cannot pull; re-attaching");
                    break;
                }
            };
            let mut failed = false;
            loop {
                let next = tokio::select! {
                    m = batch.next() => m,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(msg)) => {
                        let Some(permit) = permits.pop() else { break };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            handle(&shared, msg).await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pull error; re-attaching");
                        failed = true;
                        break;
                    }
                    None => break,
                }
            }
            if failed {
                break;
            }
        }
        sleep_or_cancel(Duration::from_millis(200), shutdown).await;
    }
}

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// Handles one delivery. Every path ends in ack, nak (redeliver later) or term (never again).
async fn handle(shared: &Shared, msg: jetstream::Message) {
    let dispatch: DispatchMessage = match serde_json::from_slice(&msg.payload) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "undecodable dispatch message; dropping it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("run", run_id = %dispatch.run_id, job_id = %dispatch.job_id, workspace_id = %dispatch.workspace_id, attempt = dispatch.attempt);
    async move {
        match perform(shared, &msg, &dispatch).await {
            Ok(()) => {
                if let Err(e) = msg.double_ack().await {
                    // The outcome is committed: a redelivery will find it and ack at once.
                    tracing::warn!(error = %e, "ack failed after commit");
                }
            }
            Err(delay) => {
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Ok: done with this delivery (ack). Err(delay): ask for redelivery after `delay` (only for
/// passing trouble such as a database restart: nothing waits in the stream for its time; retries
/// and callback tries come back through the dispatcher's timers).
async fn perform(shared: &Shared, msg: &jetstream::Message, d: &DispatchMessage) -> Result<(), Duration> {
    let loaded = shared.stores.runs.load(&d.run_id.to_string()).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot load run");
        Duration::from_secs(2)
    })?;
    if d.kind == Work::Callback {
        return callback(shared, msg, d, loaded.0).await;
    }
    // A final attempt's message from before callbacks had timers carries its callback; the
    // dispatcher's timers take it over from here.
    let legacy = loaded.0.pending_callback().is_some() && !loaded.0.callback.timed;
    attempt(shared, msg, d, loaded).await?;
    if legacy {
        let cmd = RunCommand::ScheduleCallback { at: Utc::now() };
        match shared.stores.runs.execute(&d.run_id.to_string(), cmd).await {
            Ok(()) | Err(AggregateError::UserError(RunError::WrongState { .. })) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot move the callback onto the timers");
                return Err(Duration::from_secs(2));
            }
        }
    }
    Ok(())
}

/// One try of the run's callback: the result goes to its callback URL.
async fn callback(shared: &Shared, msg: &jetstream::Message, d: &DispatchMessage, run: Run) -> Result<(), Duration> {
    let id = d.run_id.to_string();
    // Only the try the dispatcher handed out, once (a redelivery after it was recorded is a
    // repeat).
    if run.callback.in_flight.map(|(a, _)| a) != Some(d.attempt) {
        return Ok(());
    }
    let (Some(url), Some(plan)) = (run.pending_callback(), run.plan.as_ref()) else {
        return Ok(());
    };
    let secrets = shared.keyring.signing(plan.workspace_id).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the workspace's signing secrets");
        Duration::from_secs(2)
    })?;
    let outcome = run.last_outcome.clone().unwrap_or_default();
    let body = serde_json::json!({
        "type": "run.finished",
        "run_id": d.run_id,
        "job_id": plan.job_id,
        "workspace_id": plan.workspace_id,
        "status": if run.status == RunStatus::Succeeded { "succeeded" } else { "failed" },
        "attempts": run.finished_attempts,
        "status_code": outcome.status_code,
        "duration_ms": outcome.duration_ms,
        "error_type": outcome.failure_kind().map(|k| k.as_str()),
        "error_message": outcome.error_message,
        "response_body": outcome.response_body.as_deref().map(|b| truncate(b, CALLBACK_BODY_BYTES)),
        "response_body_encoding": outcome.response_body_encoding.as_str(),
        "scheduled_for": plan.scheduled_for,
        "finished_at": run.finished_at,
    });
    let spec = callback_request(url, body.to_string());
    let attempt = d.attempt;
    let message_id = format!("{}.callback", d.run_id);
    let call = shared.caller.call(&spec, d.run_id, attempt, &message_id, &secrets);
    let result = with_heartbeat(msg, shared.heartbeat, call).await;
    tracing::info!(
        attempt,
        status_code = result.status_code,
        delivered = result.is_success(),
        "callback attempted"
    );
    let cmd = RunCommand::RecordCallback {
        attempt,
        outcome: result,
        jitter: rand::random(),
        at: Utc::now(),
    };
    match shared.stores.runs.execute(&id, cmd).await {
        Ok(()) | Err(AggregateError::UserError(RunError::WrongState { .. })) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record the callback; it will be tried again");
            Err(Duration::from_secs(2))
        }
    }
}

/// Bytes of the target's response body a callback carries.
const CALLBACK_BODY_BYTES: usize = 4096;

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The POST that carries a result to a callback URL (checked against the SSRF guard at creation
/// and again by the client at call time).
fn callback_request(url: &str, body: String) -> RequestSpec {
    RequestSpec {
        url: url.to_string(),
        method: HttpMethod::Post,
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body: Some(body),
        timeout_seconds: 10,
        retry_count: 0,
        retry_delay_seconds: 0,
        retry_backoff: Default::default(),
        retry_max_delay_seconds: policy::DEFAULT_RETRY_MAX_DELAY_SECONDS,
        retry_on: policy::default_retry_on(),
        expected_status: policy::default_expected_status(),
        expect_body_contains: None,
        expect_json: None,
        sensitive_headers: Vec::new(),
    }
}

/// Runs `call`, telling JetStream every `heartbeat` that the message is still being worked on.
async fn with_heartbeat<F: std::future::Future>(msg: &jetstream::Message, heartbeat: Duration, call: F) -> F::Output {
    tokio::pin!(call);
    loop {
        tokio::select! {
            o = &mut call => break o,
            _ = tokio::time::sleep(heartbeat) => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    }
}

/// The run's own attempt, if this message still needs one.
async fn attempt(
    shared: &Shared,
    msg: &jetstream::Message,
    d: &DispatchMessage,
    (mut run, mut version): (Run, usize),
) -> Result<(), Duration> {
    let Shared {
        stores,
        writer,
        caller,
        keyring,
        hosts,
        heartbeat,
    } = shared;
    let heartbeat = *heartbeat;
    let id = d.run_id.to_string();
    if !run.needs_attempt(d.attempt) {
        tracing::debug!(status = ?run.status, "attempt already handled; acknowledging the repeat");
        return Ok(());
    }
    let Some(plan) = run.plan.clone() else { return Ok(()) };
    // A slow or hanging host may hold only its share of the slots; its other runs wait in the
    // stream (not in a slot) and come back shortly.
    let Some(host_permit) = hosts.acquire(plan.workspace_id, &plan.request.url).await else {
        tracing::debug!("target host at its concurrency limit; later");
        return Err(HOST_BUSY_DELAY);
    };
    // Before the attempt is recorded: without its secrets no request may go out unsigned.
    let secrets = keyring.signing(plan.workspace_id).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the workspace's signing secrets");
        Duration::from_secs(2)
    })?;
    let start = RunCommand::StartAttempt {
        attempt: d.attempt,
        at: Utc::now(),
    };
    match execute(stores, writer, &id, (&mut run, &mut version), start).await {
        Ok(()) => {}
        Err(AggregateError::UserError(RunError::WrongState { .. })) => return Ok(()),
        // Another executor is (or was, if it died) calling: come back when its lease ends.
        Err(AggregateError::UserError(RunError::AttemptInProgress { until })) => {
            tracing::info!(%until, "attempt in progress elsewhere; waiting for its lease");
            return Err((until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100));
        }
        // Another executor wrote to this run at the same moment: look again shortly.
        Err(e) => {
            tracing::warn!(error = %e, "cannot record attempt start");
            return Err(Duration::from_secs(1));
        }
    }
    // The dispatcher sends runs a little ahead of their instant (the fire time, or a retry's
    // time): hold the call until then (bounded, in case this clock is behind the dispatcher's).
    if let Ok(early) = (d.due_at - Utc::now()).to_std() {
        tokio::time::sleep(early.min(MAX_EARLY)).await;
    }
    let lateness_ms = (Utc::now() - plan.scheduled_for).num_milliseconds();
    let message_id = d.run_id.to_string();
    let call = caller.call(&plan.request, d.run_id, d.attempt, &message_id, &secrets);
    let outcome = with_heartbeat(msg, heartbeat, call).await;
    // The host's slot covers the call only, not the bookkeeping around it.
    drop(host_permit);
    tracing::info!(
        status_code = outcome.status_code,
        duration_ms = outcome.duration_ms,
        lateness_ms,
        error_type = outcome.failure_kind().map(|k| k.as_str()),
        "attempt finished"
    );
    // Keep trying to record the outcome (e.g. through a database restart) rather than repeating
    // the call: a redelivery would call the target again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_millis(100);
    let jitter: f64 = rand::random();
    loop {
        let cmd = RunCommand::FinishAttempt {
            attempt: d.attempt,
            outcome: outcome.clone(),
            jitter,
            at: Utc::now(),
        };
        match execute(stores, writer, &id, (&mut run, &mut version), cmd).await {
            Ok(()) => return Ok(()),
            Err(AggregateError::UserError(RunError::WrongState { .. })) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot record attempt outcome; retrying");
                let _ = msg.ack_with(AckKind::Progress).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "giving up recording the outcome; the run will be retried on redelivery");
                return Err(Duration::from_secs(5));
            }
        }
    }
}

/// Handles `cmd` on the run as this process last saw it and appends the events through the
/// group commit; the run and its version follow. If another writer appended meanwhile, the run
/// is loaded afresh and the command decided again (as cqrs-es would on a new `execute`).
async fn execute(
    stores: &Stores,
    writer: &GroupCommit,
    id: &str,
    (run, version): (&mut Run, &mut usize),
    cmd: RunCommand,
) -> Result<(), AggregateError<RunError>> {
    for _ in 0..3 {
        // The run only moves on once the events are committed.
        let (next, events) = cronbox_domain::decide(&*run, cmd.clone())
            .await
            .map_err(AggregateError::UserError)?;
        let rows = rows::<Run>(id, *version, &events, run.workspace_id)
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        match writer.append(rows).await {
            Ok(Appended::Written) => {
                *version += events.len();
                *run = next;
                return Ok(());
            }
            Ok(Appended::Conflict) => {
                (*run, *version) = stores.runs.load(id).await?;
            }
            Err(e) => return Err(AggregateError::DatabaseConnectionError(Box::new(e))),
        }
    }
    Err(AggregateError::AggregateConflict)
}
