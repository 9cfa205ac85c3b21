//! The JetStream transport between the dispatcher and the executors.
//!
//! One work-queue stream per CronBox instance (`<PREFIX>_RUNS`, subjects `<prefix>.runs.>`), one
//! durable pull consumer shared by every executor process. JetStream is a fast transport here,
//! not the record: PostgreSQL holds every run, and anything published can be derived from it and
//! published again (the dispatcher's outbox). Publishes carry `Nats-Msg-Id = <run>:<attempt>` so
//! a re-publish inside the stream's duplicate window is dropped by the server; later repeats and
//! redeliveries are absorbed by the run's own event history in the executor.
//!
//! Message payloads hold ids only (user data never goes into subjects).

pub mod auth;
pub mod export;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use chrono::{DateTime, Utc};
use cronbox_domain::run::Work;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("invalid NATS prefix {0:?}: use 1-32 of a-z, 0-9 and '_'")]
    Prefix(String),
    #[error("JetStream stream setup failed")]
    Stream(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("JetStream consumer setup failed")]
    Consumer(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("publish failed")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
    #[error("message encoding failed")]
    Encode(#[from] serde_json::Error),
    #[error("cannot read the NATS credentials file {path}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the dispatcher hands to an executor: which attempt of which run to perform, or which
/// try of its callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchMessage {
    pub run_id: Uuid,
    pub attempt: u32,
    pub workspace_id: Uuid,
    pub job_id: Uuid,
    pub due_at: DateTime<Utc>,
    /// Absent (an attempt) in messages published before callbacks had their own.
    #[serde(default, skip_serializing_if = "Work::is_attempt")]
    pub kind: Work,
}

impl DispatchMessage {
    /// Stable across re-publishes of the same attempt, distinct between attempts and between an
    /// attempt and a callback try.
    pub fn message_id(&self) -> String {
        match self.kind {
            Work::Attempt => format!("{}:{}", self.run_id, self.attempt),
            Work::Callback => format!("{}:cb{}", self.run_id, self.attempt),
        }
    }
}

/// Consumer tuning. `ack_wait` must exceed the executor's heartbeat interval by a margin (the
/// executor sends `Progress` while a call is in flight, so a slow target is not redelivered).
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
    pub max_deliver: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            // Unlimited: PostgreSQL, not a delivery count, decides when a run is done. The
            // executor acks or terminates every message it can decide about and naks only
            // "not now" (a busy host, a leased attempt, a database hiccup); a cap would
            // eventually strand such runs in the stream.
            max_deliver: -1,
        }
    }
}

#[derive(Clone)]
pub struct RunQueue {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    prefix: String,
    stream: String,
    subject: String,
    consumer: String,
}

/// Lower-case letters, digits and `_`: the stream name is the upper-cased prefix, so allowing
/// upper case or `-` would let two different prefixes share one stream.
fn valid_prefix(prefix: &str) -> bool {
    (1..=32).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl RunQueue {
    /// Connects (retrying until the server is up; reconnecting for ever afterwards) and makes sure
    /// the stream exists.
    pub async fn connect(url: &str, prefix: &str, creds: Option<&std::path::Path>) -> Result<Self, NatsError> {
        if !valid_prefix(prefix) {
            return Err(NatsError::Prefix(prefix.to_string()));
        }
        let options = match creds {
            None => async_nats::ConnectOptions::new(),
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?,
        };
        let client = options
            .name("cronbox")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| NatsError::Connect {
                url: url.to_string(),
                source,
            })?;
        let js = jetstream::new(client.clone());
        let upper = prefix.to_ascii_uppercase();
        let queue = Self {
            client,
            js,
            prefix: prefix.to_string(),
            stream: format!("{upper}_RUNS"),
            subject: format!("{prefix}.runs.dispatch"),
            consumer: format!("{upper}_EXECUTOR"),
        };
        queue.ensure_stream().await?;
        Ok(queue)
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Creates the stream if it is missing: at start-up, and again whenever a server came back
    /// without it (a wiped JetStream store).
    pub async fn ensure_stream(&self) -> Result<(), NatsError> {
        let subjects_root = self.subject.trim_end_matches(".dispatch");
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{subjects_root}.>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                // Covers the dispatcher's normal re-publish paths (outbox retry after a publish
                // error or a quick restart). Longer gaps are caught by the executor, which checks
                // the run's history before calling anyone.
                duplicate_window: Duration::from_secs(300),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Stream(Box::new(e)))?;
        Ok(())
    }

    /// Publishes all messages with their acks in flight together, then waits for the acks.
    /// Returns, per message, whether the server acknowledged it.
    pub async fn publish_all(&self, messages: &[DispatchMessage]) -> Vec<Result<(), NatsError>> {
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let sent = async {
                let payload = serde_json::to_vec(m)?;
                let publish = jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(m.message_id());
                Ok::<_, NatsError>(self.js.send_publish(self.subject_of(m.run_id), publish).await?)
            }
            .await;
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            results.push(match p {
                Ok(ack) => ack.await.map(|_| ()).map_err(NatsError::from),
                Err(e) => Err(e),
            });
        }
        results
    }

    /// Each run has its own subject, so whether a run's message is still in the stream can be
    /// asked of the server directly (the stream is a work queue: acknowledged messages leave it).
    fn subject_of(&self, run_id: Uuid) -> String {
        format!("{}.{run_id}", self.subject)
    }

    /// Whether a message for this run is still in the stream (waiting, or delivered and not yet
    /// acknowledged).
    pub async fn is_queued(&self, run_id: Uuid) -> Result<bool, NatsError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| NatsError::Stream(Box::new(e)))?;
        match stream.get_last_raw_message_by_subject(&self.subject_of(run_id)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(NatsError::Stream(Box::new(e))),
        }
    }

    /// Publishes a message again after JetStream lost it. A fresh message id: the server may
    /// still remember the original one inside its duplicate window and would drop the copy.
    pub async fn republish(&self, m: &DispatchMessage) -> Result<(), NatsError> {
        let payload = serde_json::to_vec(m)?;
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(format!("{}:r{}", m.message_id(), Utc::now().timestamp_millis()));
        self.js.send_publish(self.subject_of(m.run_id), publish).await?.await?;
        Ok(())
    }

    /// The durable pull consumer every executor shares.
    pub async fn consumer(
        &self,
        settings: &ConsumerSettings,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, NatsError> {
        self.ensure_stream().await?;
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| NatsError::Consumer(Box::new(e)))?;
        let config = pull::Config {
            durable_name: Some(self.consumer.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_ack_pending: settings.max_ack_pending,
            max_deliver: settings.max_deliver,
            ..Default::default()
        };
        // Create-or-update, so changed settings take effect on restart.
        match stream.create_consumer(config.clone()).await {
            Ok(c) => Ok(c),
            Err(_) => stream.get_consumer(&self.consumer).await.map_err(NatsError::Consumer),
        }
    }

    /// The stream customers' event subscriptions read: `<PREFIX>_EVENTS`.
    pub fn events_stream_name(&self) -> String {
        format!("{}_EVENTS", self.prefix.to_ascii_uppercase())
    }

    /// `<prefix>.ws.<workspace>.events.<type>`; `type` may be `>` or `*` for a filter.
    pub fn event_subject(&self, workspace_id: Uuid, event_type: &str) -> String {
        format!("{}.ws.{workspace_id}.events.{event_type}", self.prefix)
    }

    /// Creates (or updates) the events stream: kept `max_age`, deduplicated by event id.
    pub async fn ensure_events_stream(&self, max_age: Duration) -> Result<(), NatsError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.events_stream_name(),
                subjects: vec![format!("{}.ws.*.events.*", self.prefix)],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                max_age,
                // The exporter publishes a batch again when its checkpoint did not commit.
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Stream(Box::new(e)))?;
        Ok(())
    }

    /// Publishes (subject, message id, payload) with all acks in flight; fails if any is not
    /// acknowledged.
    pub async fn publish_events(&self, events: Vec<(String, String, Vec<u8>)>) -> Result<(), NatsError> {
        let mut pending = Vec::with_capacity(events.len());
        for (subject, id, payload) in events {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(id);
            pending.push(self.js.send_publish(subject, publish).await?);
        }
        for ack in pending {
            ack.await?;
        }
        Ok(())
    }

    /// A durable pull consumer over one workspace's events (all, or only `types`), for one
    /// subscription. Its subscriber's credentials reach this consumer and nothing else.
    pub async fn create_subscription_consumer(
        &self,
        name: &str,
        workspace_id: Uuid,
        types: &[String],
    ) -> Result<(), NatsError> {
        let stream = self
            .js
            .get_stream(self.events_stream_name())
            .await
            .map_err(|e| NatsError::Consumer(Box::new(e)))?;
        let filters: Vec<String> = if types.is_empty() {
            vec![self.event_subject(workspace_id, "*")]
        } else {
            types.iter().map(|t| self.event_subject(workspace_id, t)).collect()
        };
        let config = pull::Config {
            durable_name: Some(name.to_string()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            filter_subjects: filters,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| NatsError::Consumer(Box::new(e)))?;
        Ok(())
    }

    /// Removes a subscription's consumer (its credentials then reach nothing). Idempotent.
    pub async fn delete_subscription_consumer(&self, name: &str) -> Result<(), NatsError> {
        let stream = self
            .js
            .get_stream(self.events_stream_name())
            .await
            .map_err(|e| NatsError::Consumer(Box::new(e)))?;
        match stream.delete_consumer(name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(NatsError::Consumer(Box::new(e))),
        }
    }

    /// True when the server answers and the stream exists.
    pub async fn ready(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.js.get_stream(&self.stream)).await,
            Ok(Ok(_))
        )
    }
}
