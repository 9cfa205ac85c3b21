//! The deliverer: sends due notifications and records how each try ended.
//!
//! One process delivers at a time (a PostgreSQL session lock, like the dispatcher's), so the
//! per-channel rate limits hold across the installation: Telegram at most one message per
//! second per chat and about 30 a second in all, a provider's `429` pausing that channel (or,
//! for Resend, every mail) for the `retry-after` it asked. A burst beyond
//! [`DeliverConfig::digest_threshold`] notifications due at once on one e-mail or Telegram
//! channel goes out as one digest instead of being dropped or trickled over hours.
//!
//! What is due comes from the `notifications` read model. The record of a try is an event
//! (`NotificationAttempted` / `Delivered` / `Failed`); until the read model shows it, the
//! deliverer remembers what it recorded so it does not send the same notification again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cronbox_domain::channel::{ChannelCommand, ChannelKind, ChannelTarget, DisableReason, Language};
use cronbox_domain::notification::{NotificationContent, TryOutcome};
use cronbox_domain::webhook::SigningSecret;
use cronbox_store::aggregates::Stores;
use cronbox_store::leader;
use cronbox_store::signing::MasterKey;
use cronbox_store::tail::Waker;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::mail::{Mailer, OutgoingMail, SendError};
use crate::render::{self, Message};
use crate::seal;
use crate::telegram::{TelegramBot, TelegramError};
use crate::webhook::{WebhookError, WebhookSender};

#[derive(Debug, Clone)]
pub struct DeliverConfig {
    pub public_url: String,
    /// More than this many due at once on one mail or Telegram channel go out as one digest.
    pub digest_threshold: usize,
    /// The most notifications one digest lists.
    pub digest_max: usize,
    /// Sends in flight at once.
    pub concurrency: usize,
    pub telegram_per_chat: Duration,
    pub telegram_per_second: u32,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            digest_threshold: 5,
            digest_max: 50,
            concurrency: 64,
            telegram_per_chat: Duration::from_secs(1),
            telegram_per_second: 30,
        }
    }
}

/// Everything that sends.
pub struct Senders {
    pub mailer: Mailer,
    pub webhooks: WebhookSender,
    pub telegram: Option<TelegramBot>,
    pub key: MasterKey,
}

#[derive(Debug, Clone)]
struct Due {
    id: Uuid,
    workspace_id: Uuid,
    channel_id: Uuid,
    content: NotificationContent,
    created_at: DateTime<Utc>,
    /// attempts + throttled as the read model shows them.
    seen: i32,
    channel: Option<ChannelRow>,
}

#[derive(Debug, Clone)]
struct ChannelRow {
    kind: ChannelKind,
    language: Language,
    sealed: String,
    verified: bool,
    disabled_reason: Option<String>,
}

#[derive(Default)]
struct State {
    in_flight: HashSet<Uuid>,
    /// Sends in flight per channel (a webhook endpoint gets at most [`PER_ENDPOINT`] at once).
    channel_in_flight: HashMap<Uuid, usize>,
    /// How many a channel may have in flight ([`PER_ENDPOINT`] for a webhook, else one).
    channel_lanes: HashMap<Uuid, usize>,
    /// What the read model will show once it has our last record (i32::MAX: finished), and
    /// when it was recorded. Forgotten once the read model shows it, or after a minute (the
    /// projection is milliseconds behind; a minute covers a slow one).
    recorded: HashMap<Uuid, (i32, Instant)>,
    /// A channel's next allowed send.
    channel_next: HashMap<Uuid, Instant>,
    /// Every mail waits until then (Resend limits a whole team).
    mail_paused_until: Option<Instant>,
    /// Telegram's overall budget: sends in the current second.
    telegram_window: (Option<Instant>, u32),
}

/// Deliveries in flight at once to one webhook endpoint: a slow receiver holds its own
/// slots, not everyone's.
const PER_ENDPOINT: usize = 8;

type Row = (
    Uuid,
    Uuid,
    Uuid,
    serde_json::Value,
    DateTime<Utc>,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
);

/// A due notification before its content is read: (id, channel, attempts + throttled, whether
/// its channel is a webhook).
type Head = (Uuid, Uuid, i32, bool);

/// What is due, except on `skip`: channels that cannot send now (cooling down after a
/// message, at their limit of sends in flight). Only the heads: a round reads the content of
/// what it will start, not of the whole backlog (in a burst, thousands of rows a round).
async fn due_heads(pool: &PgPool, limit: i64, skip: &[Uuid]) -> Result<Vec<Head>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.id, n.channel_id, n.attempts + n.throttled, coalesce(c.kind = 'webhook', false)
           FROM notifications n LEFT JOIN notification_channels c ON c.id = n.channel_id
          WHERE n.next_attempt_at <= now() AND NOT (n.channel_id = ANY($2))
          ORDER BY n.next_attempt_at, n.id
          LIMIT $1",
    )
    .bind(limit)
    .bind(skip)
    .fetch_all(pool)
    .await
}

/// The notifications `ids`, whole, in the order they are due.
async fn due_rows(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Due>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT n.id, n.workspace_id, n.channel_id, n.content, n.created_at, n.attempts + n.throttled,
                c.kind, c.language, c.sealed, c.verified, c.disabled_reason
           FROM notifications n LEFT JOIN notification_channels c ON c.id = n.channel_id
          WHERE n.id = ANY($1) AND n.next_attempt_at <= now()
          ORDER BY n.next_attempt_at, n.id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, ws, ch, content, created_at, seen, kind, lang, sealed, verified, disabled)| {
            let content = match serde_json::from_value(content) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(notification_id = %id, error = %e, "notification content does not decode; skipped");
                    return None;
                }
            };
            let channel = match (kind.as_deref(), sealed) {
                (Some(k), Some(sealed)) => Some(ChannelRow {
                    kind: match k {
                        "email" => ChannelKind::Email,
                        "webhook" => ChannelKind::Webhook,
                        _ => ChannelKind::Telegram,
                    },
                    language: if lang.as_deref() == Some("en") { Language::En } else { Language::Ru },
                    sealed,
                    verified: verified.unwrap_or(false),
                    disabled_reason: disabled,
                }),
                _ => None,
            };
            Some(Due {
                id,
                workspace_id: ws,
                channel_id: ch,
                content,
                created_at,
                seen,
                channel,
            })
        })
        .collect())
}

/// Runs while this process holds the deliverer's lock, until `shutdown`.
pub async fn run(
    pool: PgPool,
    stores: Arc<Stores>,
    mut waker: Waker,
    senders: Arc<Senders>,
    config: DeliverConfig,
    lock_key: i64,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    while !shutdown.is_cancelled() {
        let Some(lock) = leader::acquire(&pool, lock_key, "notification deliverer", &shutdown).await else {
            return;
        };
        let state = Arc::new(Mutex::new(State::default()));
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        // Rung when a send ends or records commit: a mailbox's next digest need not wait for
        // the next event or poll.
        let kick = Arc::new(Notify::new());
        let records = Records::start(stores.clone(), state.clone(), kick.clone());
        let mut idle = 0u32;
        while !shutdown.is_cancelled() && lock.check().is_ok() {
            match round(&pool, &stores, &senders, &config, &state, &slots, &records, &kick).await {
                Ok(true) => idle = 0,
                Ok(false) => {
                    // Also woken by new events (a notification queued, a record projected);
                    // retries that come due are found by the fallback poll.
                    let woke = tokio::select! {
                        alive = waker.idle(&mut idle, Duration::from_millis(250), &shutdown) => Some(alive),
                        _ = kick.notified() => None,
                    };
                    match woke {
                        Some(false) => return,
                        Some(true) => {}
                        None => idle = 0,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read due notifications; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// One pass over what is due. Returns whether it started anything.
async fn round(
    pool: &PgPool,
    stores: &Arc<Stores>,
    senders: &Arc<Senders>,
    config: &Arc<DeliverConfig>,
    state: &Arc<Mutex<State>>,
    slots: &Arc<Semaphore>,
    records: &Records,
    kick: &Arc<Notify>,
) -> Result<bool, sqlx::Error> {
    let now = Instant::now();
    let skip: Vec<Uuid> = {
        let st = state.lock().unwrap_or_else(|p| p.into_inner());
        let cooling = st.channel_next.iter().filter(|(_, t)| **t > now).map(|(c, _)| *c);
        let full = st
            .channel_in_flight
            .iter()
            .filter(|(c, n)| **n >= st.channel_lanes.get(*c).copied().unwrap_or(PER_ENDPOINT))
            .map(|(c, _)| *c);
        cooling.chain(full).collect()
    };
    let heads = due_heads(pool, 2000, &skip).await?;
    let wanted: Vec<Uuid> = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let State {
            in_flight, recorded, ..
        } = &mut *st;
        let seen: HashMap<Uuid, i32> = heads.iter().map(|h| (h.0, h.2)).collect();
        recorded.retain(|id, (expect, at)| {
            now.duration_since(*at) < Duration::from_secs(60) && seen.get(id).is_none_or(|s| s < expect)
        });
        // A mailbox or chat takes one digest at a time: more than a digest's worth is not read.
        let per_channel = config.digest_max.max(config.digest_threshold + 1);
        let mut counted: HashMap<Uuid, usize> = HashMap::new();
        heads
            .iter()
            .filter(|(id, _, seen, _)| !in_flight.contains(id) && !recorded.get(id).is_some_and(|(e, _)| seen < e))
            .filter(|(_, channel, _, webhook)| {
                let n = counted.entry(*channel).or_default();
                *n += 1;
                *webhook || *n <= per_channel
            })
            .map(|h| h.0)
            .collect()
    };
    let rows = if wanted.is_empty() {
        Vec::new()
    } else {
        due_rows(pool, &wanted).await?
    };
    let mut groups: Vec<(Uuid, Vec<Due>)> = Vec::new();
    {
        // Checked again: a record may have been committed while the rows were read.
        let st = state.lock().unwrap_or_else(|p| p.into_inner());
        let State {
            in_flight, recorded, ..
        } = &*st;
        for row in rows {
            if in_flight.contains(&row.id) || recorded.get(&row.id).is_some_and(|(e, _)| row.seen < *e) {
                continue;
            }
            match groups.iter_mut().find(|(c, _)| *c == row.channel_id) {
                Some((_, g)) => g.push(row),
                None => groups.push((row.channel_id, vec![row])),
            }
        }
    }
    tracing::debug!(
        due = heads.len(),
        read = wanted.len(),
        channels = groups.len(),
        skipped = skip.len(),
        "delivery round"
    );
    let mut started = false;
    for (channel_id, group) in groups {
        let Some(channel) = group[0].channel.clone() else {
            for d in group {
                started = true;
                records.submit(
                    &d,
                    TryOutcome::Permanent {
                        error: "the channel was deleted".into(),
                    },
                    None,
                );
            }
            continue;
        };
        if !channel.verified || channel.disabled_reason.is_some() {
            let error = match &channel.disabled_reason {
                Some(r) => format!("the channel is disabled ({r})"),
                None => "the channel's address is not confirmed".into(),
            };
            for d in group {
                started = true;
                records.submit(&d, TryOutcome::Permanent { error: error.clone() }, None);
            }
            continue;
        }
        let (batches, lanes) = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            if st.channel_next.get(&channel_id).is_some_and(|t| *t > now) {
                continue;
            }
            if channel.kind == ChannelKind::Email && st.mail_paused_until.is_some_and(|t| t > now) {
                continue;
            }
            let busy = st.channel_in_flight.get(&channel_id).copied().unwrap_or(0);
            let batches: Vec<Vec<Due>> = match channel.kind {
                // Each notification is its own signed delivery, a few at a time per endpoint.
                ChannelKind::Webhook if busy >= PER_ENDPOINT => continue,
                ChannelKind::Webhook => group.into_iter().map(|d| vec![d]).collect(),
                // One message (or digest) at a time per mailbox or chat.
                _ if busy > 0 => continue,
                _ if group.len() > config.digest_threshold => vec![group.into_iter().take(config.digest_max).collect()],
                // Telegram: one message per chat per second; the next in a later round.
                ChannelKind::Telegram => vec![group.into_iter().take(1).collect()],
                ChannelKind::Email => group.into_iter().map(|d| vec![d]).take(1).collect(),
            };
            if batches.is_empty() {
                continue;
            }
            if channel.kind == ChannelKind::Telegram {
                let (start, used) = st.telegram_window;
                if start.is_some_and(|s| now.duration_since(s) < Duration::from_secs(1)) {
                    if used >= config.telegram_per_second {
                        continue;
                    }
                    st.telegram_window.1 += 1;
                } else {
                    st.telegram_window = (Some(now), 1);
                }
                st.channel_next.insert(channel_id, now + config.telegram_per_chat);
            }
            // A webhook endpoint's backlog is worked through by up to PER_ENDPOINT lanes, each
            // taking the next delivery as soon as the last is answered (not a query per send).
            let lanes = match channel.kind {
                ChannelKind::Webhook => PER_ENDPOINT.saturating_sub(busy).min(batches.len()),
                _ => batches.len(),
            };
            for d in batches.iter().flatten() {
                st.in_flight.insert(d.id);
            }
            *st.channel_in_flight.entry(channel_id).or_default() += lanes;
            let most = if channel.kind == ChannelKind::Webhook {
                PER_ENDPOINT
            } else {
                1
            };
            st.channel_lanes.insert(channel_id, most);
            (batches, lanes)
        };
        let backlog = Arc::new(Mutex::new(std::collections::VecDeque::from(batches)));
        for _ in 0..lanes {
            started = true;
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (stores, senders, config, state, channel, records, kick, backlog) = (
                stores.clone(),
                senders.clone(),
                config.clone(),
                state.clone(),
                channel.clone(),
                records.clone(),
                kick.clone(),
                backlog.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                loop {
                    let next = backlog.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(batch) = next else { break };
                    let delivered = deliver(
                        &stores,
                        &senders,
                        &config,
                        &state,
                        &records,
                        channel_id,
                        channel.clone(),
                        batch,
                    )
                    .await;
                    if !delivered {
                        // The endpoint is struggling (or gone): what is left goes back to the
                        // next round, which sees the channel's state afresh.
                        let rest: Vec<Vec<Due>> = backlog.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        for d in rest.iter().flatten() {
                            st.in_flight.remove(&d.id);
                        }
                        break;
                    }
                }
                // The channel is free once its provider has answered; the records follow.
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = st.channel_in_flight.get_mut(&channel_id) {
                    *n = n.saturating_sub(1);
                }
                drop(st);
                kick.notify_one();
            });
        }
    }
    Ok(started)
}

/// Tries waiting to be recorded, and the task that records them in batches
/// ([`crate::record`]). A notification stays in flight until its record is committed, so no
/// round sends it again meanwhile.
#[derive(Clone)]
struct Records {
    queue: mpsc::UnboundedSender<Pending>,
    state: Arc<Mutex<State>>,
}

struct Pending {
    done: crate::record::Try,
    channel_id: Uuid,
    /// What the read model will show once it has this record.
    expect: i32,
}

/// The most tries one transaction records.
const RECORD_BATCH: usize = 500;

impl Records {
    fn start(stores: Arc<Stores>, state: Arc<Mutex<State>>, kick: Arc<Notify>) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<Pending>();
        let st = state.clone();
        tokio::spawn(async move {
            // Ends when the deliverer (every sender) is gone and the queue is drained.
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < RECORD_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let tries: Vec<_> = batch.iter().map(|p| p.done.clone()).collect();
                let results = crate::record::record_all(&stores, &tries).await;
                let now = Instant::now();
                let mut st = st.lock().unwrap_or_else(|p| p.into_inner());
                for (p, result) in batch.iter().zip(results) {
                    let id = p.done.notification_id;
                    st.in_flight.remove(&id);
                    match result {
                        Ok(()) => {
                            st.recorded.insert(id, (p.expect, now));
                            tracing::info!(notification_id = %id, channel_id = %p.channel_id,
                                workspace_id = %p.done.workspace_id, outcome = outcome_name(&p.done.outcome),
                                "notification try recorded");
                        }
                        Err(e) => tracing::warn!(notification_id = %id, error = %e,
                            "cannot record a notification try; it will be tried again"),
                    }
                }
                drop(st);
                kick.notify_one();
            }
        });
        Self { queue, state }
    }

    fn submit(&self, d: &Due, outcome: TryOutcome, digest: Option<u32>) {
        let expect = match &outcome {
            TryOutcome::Retry { .. } => d.seen + 1,
            _ => i32::MAX,
        };
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight
            .insert(d.id);
        let pending = Pending {
            done: crate::record::Try {
                notification_id: d.id,
                workspace_id: d.workspace_id,
                outcome,
                digest,
                jitter: rand::rng().random::<f64>(),
                at: Utc::now(),
            },
            channel_id: d.channel_id,
            expect,
        };
        if self.queue.send(pending).is_err() {
            // The recorder is gone (shutting down): the try is sent again after a restart.
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .in_flight
                .remove(&d.id);
        }
    }
}

fn outcome_name(outcome: &TryOutcome) -> &'static str {
    match outcome {
        TryOutcome::Delivered => "delivered",
        TryOutcome::Retry { .. } => "retry",
        TryOutcome::Permanent { .. } => "failed",
    }
}

/// What a send's failure means for the channel.
enum ChannelFate {
    Keep,
    Disable(DisableReason, String),
}

async fn deliver(
    stores: &Arc<Stores>,
    senders: &Senders,
    config: &DeliverConfig,
    state: &Arc<Mutex<State>>,
    records: &Records,
    channel_id: Uuid,
    channel: ChannelRow,
    batch: Vec<Due>,
) -> bool {
    let Some(first) = batch.first() else { return true };
    let workspace_id = first.workspace_id;
    let target = match seal::open(&senders.key, workspace_id, channel_id, &channel.sealed) {
        Ok(t) => t,
        Err(e) => {
            for d in &batch {
                records.submit(d, TryOutcome::Permanent { error: e.to_string() }, None);
            }
            return false;
        }
    };
    let lang = channel.language;
    let messages: Vec<Message> = batch
        .iter()
        .map(|d| render::message(&d.content, lang, &config.public_url, d.workspace_id))
        .collect();
    let digest = (batch.len() > 1 && channel.kind != ChannelKind::Webhook).then_some(batch.len() as u32);
    let (result, fate) = match channel.kind {
        ChannelKind::Email => {
            let r = send_mail(senders, config, channel_id, &target, &messages, lang, &batch).await;
            if let Err(SendError::Retry {
                rate_limited: true,
                after,
                ..
            }) = &r
            {
                let until = Instant::now() + Duration::from_secs(after.unwrap_or(1) as u64);
                state.lock().unwrap_or_else(|p| p.into_inner()).mail_paused_until = Some(until);
            }
            (r, ChannelFate::Keep)
        }
        ChannelKind::Webhook => {
            // Webhooks never digest: each notification is its own signed delivery.
            let d = &batch[0];
            match send_webhook(senders, config, &target, d).await {
                Ok(()) => (Ok(()), ChannelFate::Keep),
                Err(WebhookError::Send(e)) => (Err(e), ChannelFate::Keep),
                Err(WebhookError::Gone) => (
                    Err(SendError::Permanent("the endpoint answered 410 Gone".into())),
                    ChannelFate::Disable(DisableReason::Gone, "410 Gone".into()),
                ),
            }
        }
        ChannelKind::Telegram => {
            let text = if messages.len() == 1 {
                render::telegram_text(&messages[0])
            } else {
                render::telegram_digest(&messages, lang)
            };
            let sent = send_telegram(stores, senders, workspace_id, channel_id, &target, &text).await;
            // The spacing counts from Telegram's answer, so two messages never arrive closer
            // than it however long a send took. Groups take at most 20 messages a minute
            // (Telegram's limit): one per 3 s.
            if matches!(sent, Ok(())) {
                let gap = if target.chat_id.is_some_and(|c| c < 0) {
                    Duration::from_secs(3)
                } else {
                    config.telegram_per_chat
                };
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                let next = st.channel_next.entry(channel_id).or_insert_with(Instant::now);
                *next = (*next).max(Instant::now() + gap);
            }
            match sent {
                Ok(()) => (Ok(()), ChannelFate::Keep),
                Err(TelegramError::Send(e)) => {
                    if let SendError::Retry {
                        rate_limited: true,
                        after,
                        ..
                    } = &e
                    {
                        let until = Instant::now() + Duration::from_secs(after.unwrap_or(1) as u64);
                        state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .channel_next
                            .insert(channel_id, until);
                    }
                    (Err(e), ChannelFate::Keep)
                }
                Err(TelegramError::Blocked(why)) => (
                    Err(SendError::Permanent(format!("Telegram refused: {why}"))),
                    ChannelFate::Disable(DisableReason::BotBlocked, why),
                ),
                Err(TelegramError::Migrated(_)) => (
                    Err(SendError::Retry {
                        error: "the chat moved twice in a row".into(),
                        rate_limited: false,
                        after: None,
                    }),
                    ChannelFate::Keep,
                ),
            }
        }
    };
    let outcome = match result {
        Ok(()) => TryOutcome::Delivered,
        Err(SendError::Retry {
            error,
            rate_limited,
            after,
        }) => TryOutcome::Retry {
            error,
            rate_limited,
            after,
        },
        Err(SendError::Permanent(error)) => TryOutcome::Permanent { error },
    };
    if let ChannelFate::Disable(reason, detail) = fate {
        tracing::warn!(%channel_id, %workspace_id, reason = reason.as_str(), "channel disabled by its provider's answer");
        let cmd = ChannelCommand::Disable {
            reason,
            detail,
            at: Utc::now(),
        };
        if let Err(e) = stores.channels.execute(&channel_id.to_string(), cmd).await {
            tracing::warn!(%channel_id, error = %e, "cannot disable the channel");
        }
    }
    let delivered = matches!(outcome, TryOutcome::Delivered);
    for d in &batch {
        records.submit(d, outcome.clone(), digest);
    }
    delivered
}

pub fn unsubscribe_url(public_url: &str, channel_id: Uuid, target: &ChannelTarget) -> Option<String> {
    let token = target.unsubscribe.as_ref()?;
    Some(format!(
        "{}/notification-channels/unsubscribe?token={}.{token}",
        public_url.trim_end_matches('/'),
        channel_id.simple()
    ))
}

async fn send_mail(
    senders: &Senders,
    config: &DeliverConfig,
    channel_id: Uuid,
    target: &ChannelTarget,
    messages: &[Message],
    lang: Language,
    batch: &[Due],
) -> Result<(), SendError> {
    let to = target
        .address
        .clone()
        .ok_or_else(|| SendError::Permanent("the channel has no address".into()))?;
    let unsubscribe = unsubscribe_url(&config.public_url, channel_id, target);
    let (subject, html, text) = render::alert_mail(messages, lang, unsubscribe.as_deref())
        .map_err(|e| SendError::Permanent(format!("cannot render the mail: {e}")))?;
    // One key per set of notifications: a retried digest of the same ones is the same send.
    let key = if batch.len() == 1 {
        batch[0].id.to_string()
    } else {
        let mut ids: Vec<String> = batch.iter().map(|d| d.id.simple().to_string()).collect();
        ids.sort();
        Uuid::new_v5(&channel_id, ids.join(",").as_bytes()).to_string()
    };
    senders
        .mailer
        .send(&OutgoingMail {
            to,
            subject,
            html,
            text,
            idempotency_key: Some(key),
            unsubscribe_url: unsubscribe,
        })
        .await
}

/// The JSON a webhook endpoint receives.
pub fn webhook_body(
    d_id: Uuid,
    workspace_id: Uuid,
    channel_id: Uuid,
    content: &NotificationContent,
    at: DateTime<Utc>,
    public_url: &str,
) -> serde_json::Value {
    let det = &content.details;
    serde_json::json!({
        "type": content.kind.webhook_type(),
        "timestamp": at,
        "data": {
            "notification_id": d_id,
            "workspace_id": workspace_id,
            "channel_id": channel_id,
            "job_id": det.job_id,
            "job_name": det.job_name,
            "url": det.url,
            "run_id": det.run_id,
            "error_kind": det.error_kind,
            "error_message": det.error_message,
            "status_code": det.status_code,
            "response_head": det.response_head,
            "attempts": det.attempts,
            "scheduled_for": det.scheduled_for,
            "timezone": det.timezone,
            "failures": det.failures,
            "failing_since": det.failing_since,
            "failed_runs": content.failed_runs,
            "failing_seconds": content.failing_seconds,
            "reminder": content.reminder,
            "disabled_channel": content.disabled_channel,
            "disabled_reason": content.disabled_reason,
            "link": det.run_id.map(|r| render::run_link(public_url, workspace_id, r)),
        }
    })
}

async fn send_webhook(
    senders: &Senders,
    config: &DeliverConfig,
    target: &ChannelTarget,
    d: &Due,
) -> Result<(), WebhookError> {
    let permanent = |e: &str| WebhookError::Send(SendError::Permanent(e.to_string()));
    let url = target
        .url
        .as_deref()
        .ok_or_else(|| permanent("the channel has no URL"))?;
    let secret = target
        .secret
        .as_deref()
        .and_then(|s| SigningSecret::from_whsec(s).ok())
        .ok_or_else(|| permanent("the channel's secret is unreadable"))?;
    let body = webhook_body(
        d.id,
        d.workspace_id,
        d.channel_id,
        &d.content,
        d.created_at,
        &config.public_url,
    );
    let bytes = serde_json::to_vec(&body).map_err(|e| permanent(&e.to_string()))?;
    let id = format!("msg_{}", d.id.simple());
    senders
        .webhooks
        .send(url, &secret, &id, Utc::now().timestamp(), &bytes)
        .await
}

async fn send_telegram(
    stores: &Stores,
    senders: &Senders,
    workspace_id: Uuid,
    channel_id: Uuid,
    target: &ChannelTarget,
    text: &str,
) -> Result<(), TelegramError> {
    let bot = senders.telegram.as_ref().ok_or_else(|| {
        TelegramError::Send(SendError::Retry {
            error: "no Telegram bot is configured (CRONBOX_TELEGRAM_BOT_TOKEN)".into(),
            rate_limited: false,
            after: None,
        })
    })?;
    let chat = target
        .chat_id
        .ok_or_else(|| TelegramError::Send(SendError::Permanent("the channel has no chat".into())))?;
    match bot.send_message(chat, text).await {
        Err(TelegramError::Migrated(to)) => {
            // The group became a supergroup: the link moves with it, and the message follows.
            crate::channels::move_chat(stores, &senders.key, workspace_id, channel_id, target, to).await;
            match bot.send_message(to, text).await {
                Err(TelegramError::Migrated(_)) => Err(TelegramError::Migrated(to)),
                other => other,
            }
        }
        other => other,
    }
}
