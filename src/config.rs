//! Typed settings from the environment, optionally layered over a `KEY=VALUE` file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use cronbox_domain::target::{Cidr, TargetPolicy};

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub nats_url: String,
    pub nats_prefix: String,
    /// Credentials file for the service's own NATS connections (operator-mode servers).
    pub nats_creds: Option<std::path::PathBuf>,
    /// The application account's seed: signs event subscribers' credentials.
    pub nats_account_seed: Option<String>,
    /// The NATS URL handed to event subscribers (default: `nats_url`).
    pub nats_public_url: Option<String>,
    /// How long the events stream keeps events for subscribers.
    pub event_stream_max_age_days: u64,
    pub listen: SocketAddr,
    /// Which addresses user URLs may reach (`CRONBOX_ALLOW_PRIVATE_TARGETS`,
    /// `CRONBOX_ALLOWED_TARGET_CIDRS`).
    pub targets: TargetPolicy,
    pub executor_concurrency: usize,
    pub executor_per_host_concurrency: usize,
    pub ack_wait_seconds: u64,
    pub misfire_grace_seconds: i64,
    pub max_response_bytes: usize,
    pub db_max_connections: u32,
    pub log_format: String,
    /// HS256 key for access tokens; generated once per database when unset.
    pub jwt_secret: Option<String>,
    /// The master key for secrets at rest (32 bytes, hex or base64); required by the API and
    /// executor roles.
    pub secrets_key: Option<String>,
    /// How long a run may sit dispatched-but-not-started before the dispatcher checks whether
    /// JetStream lost it.
    pub reconcile_after_seconds: u64,
    /// Candidates the reconciler looks at per round.
    pub reconcile_batch: i64,
    /// Runs of one workspace in flight at once when its plan sets no cap.
    pub max_runs_in_flight: usize,
    /// Delayed calls due within this many seconds keep their definition in the dispatcher's
    /// memory; later ones are read from the log when they come due.
    pub dispatcher_preload_seconds: u64,
    /// How early runs are recorded and published; executors hold each call until its instant.
    pub dispatch_lead_ms: u64,
    /// How often runs past their plan's retention are removed from the execution log.
    pub retention_sweep_seconds: u64,
    /// Requests per minute are limited (per key/user from the plan, per address otherwise).
    pub rate_limit: bool,
    /// Requests per minute per client address on routes without credentials.
    pub rate_limit_per_address: u32,
    /// Live-feed (SSE) streams one API process holds open at most.
    pub sse_max_streams: usize,
    /// Live-feed streams one workspace may hold open in one API process.
    pub sse_max_streams_per_workspace: usize,
    /// Workspaces one user may create (and not delete); superusers are not bound.
    pub max_workspaces_per_user: u32,
    /// Password hashes (argon2id, 19 MiB each) computed at once per process; beyond, requests
    /// wait briefly, then get 503.
    pub password_hash_concurrency: usize,
    /// Where users reach this installation: links in mails and alerts.
    pub public_url: String,
    pub smtp_url: Option<String>,
    pub resend_api_key: Option<String>,
    pub resend_api_url: String,
    pub mail_from: Option<String>,
    pub telegram_bot_token: Option<String>,
    pub telegram_api_url: String,
    /// Set: Telegram sends updates to `{public_url}/v1/telegram/webhook` with this secret;
    /// unset: one process long-polls.
    pub telegram_webhook_secret: Option<String>,
    /// The shortest reminder interval a job may ask for.
    pub min_realert_seconds: u32,
    /// More than this many notifications due at once on one mail or Telegram channel go as a digest.
    pub alert_digest_threshold: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    File(String, std::io::Error),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{key} has an invalid value {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

struct Source(HashMap<String, String>);

impl Source {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key)
            .ok()
            .or_else(|| self.0.get(key).cloned())
            .filter(|v| !v.is_empty())
    }
    fn parse<T: std::str::FromStr>(&self, key: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                key,
                value: v.clone(),
                reason: e.to_string(),
            }),
        }
    }
    fn flag(&self, key: &'static str) -> Result<bool, ConfigError> {
        match self.get(key).as_deref() {
            None | Some("0") | Some("false") | Some("no") => Ok(false),
            Some("1") | Some("true") | Some("yes") => Ok(true),
            Some(v) => Err(ConfigError::Invalid {
                key,
                value: v.to_string(),
                reason: "use 1 or 0".into(),
            }),
        }
    }
}

fn read_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File(path.display().to_string(), e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect())
}

/// The SSRF guard: on unless `CRONBOX_ALLOW_PRIVATE_TARGETS=1`; `CRONBOX_ALLOWED_TARGET_CIDRS`
/// (comma-separated) lets chosen private blocks through while the guard stays on.
fn targets(src: &Source) -> Result<TargetPolicy, ConfigError> {
    if src.flag("CRONBOX_ALLOW_PRIVATE_TARGETS")? {
        return Ok(TargetPolicy::open());
    }
    let Some(list) = src.get("CRONBOX_ALLOWED_TARGET_CIDRS") else {
        return Ok(TargetPolicy::guarded());
    };
    let cidrs = list
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<Cidr>().map_err(|e| ConfigError::Invalid {
                key: "CRONBOX_ALLOWED_TARGET_CIDRS",
                value: list.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TargetPolicy::allowing(cidrs))
}

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let src = Source(match file {
            Some(p) => read_file(p)?,
            None => HashMap::new(),
        });
        Self {
            database_url: src
                .get("CRONBOX_DATABASE_URL")
                .ok_or(ConfigError::Missing("CRONBOX_DATABASE_URL"))?,
            nats_url: src
                .get("CRONBOX_NATS_URL")
                .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            nats_prefix: src.get("CRONBOX_NATS_PREFIX").unwrap_or_else(|| "cronbox".into()),
            nats_creds: src.get("CRONBOX_NATS_CREDS").filter(|s| !s.is_empty()).map(Into::into),
            nats_account_seed: src.get("CRONBOX_NATS_ACCOUNT_SEED").filter(|s| !s.is_empty()),
            nats_public_url: src.get("CRONBOX_NATS_PUBLIC_URL").filter(|s| !s.is_empty()),
            event_stream_max_age_days: src.parse("CRONBOX_EVENT_STREAM_MAX_AGE_DAYS", 7)?,
            listen: src.parse("CRONBOX_LISTEN", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            targets: targets(&src)?,
            executor_concurrency: src.parse("CRONBOX_EXECUTOR_CONCURRENCY", 256)?,
            executor_per_host_concurrency: src.parse("CRONBOX_EXECUTOR_PER_HOST_CONCURRENCY", 32)?,
            ack_wait_seconds: src.parse("CRONBOX_ACK_WAIT_SECONDS", 30)?,
            misfire_grace_seconds: src.parse("CRONBOX_MISFIRE_GRACE_SECONDS", 60)?,
            max_response_bytes: src.parse("CRONBOX_MAX_RESPONSE_BYTES", 1024 * 1024)?,
            db_max_connections: src.parse("CRONBOX_DB_MAX_CONNECTIONS", 20)?,
            log_format: src.get("CRONBOX_LOG_FORMAT").unwrap_or_else(|| "text".into()),
            jwt_secret: src.get("CRONBOX_JWT_SECRET"),
            secrets_key: src.get("CRONBOX_SECRETS_KEY"),
            reconcile_after_seconds: src.parse("CRONBOX_RECONCILE_AFTER_SECONDS", 60)?,
            reconcile_batch: src.parse("CRONBOX_RECONCILE_BATCH", 500)?,
            max_runs_in_flight: src.parse("CRONBOX_MAX_RUNS_IN_FLIGHT", 1000)?,
            dispatcher_preload_seconds: src.parse("CRONBOX_DISPATCHER_PRELOAD_SECONDS", 120)?,
            dispatch_lead_ms: src.parse("CRONBOX_DISPATCH_LEAD_MS", 50)?,
            retention_sweep_seconds: src.parse("CRONBOX_RETENTION_SWEEP_SECONDS", 600)?,
            rate_limit: src.get("CRONBOX_RATE_LIMIT").is_none() || src.flag("CRONBOX_RATE_LIMIT")?,
            rate_limit_per_address: src.parse("CRONBOX_RATE_LIMIT_PER_ADDRESS", 120)?,
            sse_max_streams: src.parse("CRONBOX_SSE_MAX_STREAMS", 10_000)?,
            sse_max_streams_per_workspace: src.parse("CRONBOX_SSE_MAX_STREAMS_PER_WORKSPACE", 50)?,
            max_workspaces_per_user: src.parse("CRONBOX_MAX_WORKSPACES_PER_USER", 10)?,
            password_hash_concurrency: src.parse(
                "CRONBOX_PASSWORD_HASH_CONCURRENCY",
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )?,
            public_url: src.get("CRONBOX_PUBLIC_URL").unwrap_or_default(),
            smtp_url: src.get("CRONBOX_SMTP_URL"),
            resend_api_key: src.get("CRONBOX_RESEND_API_KEY"),
            resend_api_url: src
                .get("CRONBOX_RESEND_API_URL")
                .unwrap_or_else(|| "https://api.resend.com".into()),
            mail_from: src.get("CRONBOX_MAIL_FROM"),
            telegram_bot_token: src.get("CRONBOX_TELEGRAM_BOT_TOKEN"),
            telegram_api_url: src
                .get("CRONBOX_TELEGRAM_API_URL")
                .unwrap_or_else(|| "https://api.telegram.org".into()),
            telegram_webhook_secret: src.get("CRONBOX_TELEGRAM_WEBHOOK_SECRET"),
            min_realert_seconds: src.parse("CRONBOX_MIN_REALERT_SECONDS", 300)?,
            alert_digest_threshold: src.parse("CRONBOX_ALERT_DIGEST_THRESHOLD", 5)?,
        }
        .with_public_url()
        .validated()
    }

    /// Links default to the listen address (fine on one machine; set it behind a proxy).
    fn with_public_url(mut self) -> Self {
        if self.public_url.is_empty() {
            self.public_url = format!("http://{}", self.listen);
        }
        self.public_url = self.public_url.trim_end_matches('/').to_string();
        self
    }

    /// Values that parse but cannot work (a zero-slot executor never calls anything, a zero
    /// ack wait floods the server with progress acks) are refused at start-up.
    fn validated(self) -> Result<Self, ConfigError> {
        let checks: [(&'static str, bool, String, &'static str); 25] = [
            (
                "CRONBOX_PUBLIC_URL",
                url::Url::parse(&self.public_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
                self.public_url.clone(),
                "must be an http(s) URL",
            ),
            (
                "CRONBOX_SMTP_URL",
                self.smtp_url
                    .as_deref()
                    .is_none_or(|u| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "smtp" | "smtps"))),
                "(hidden)".into(),
                "must be smtp://… or smtps://…",
            ),
            (
                "CRONBOX_MAIL_FROM",
                self.mail_from.is_some() || (self.smtp_url.is_none() && self.resend_api_key.is_none()),
                String::new(),
                "is required when CRONBOX_SMTP_URL or CRONBOX_RESEND_API_KEY is set",
            ),
            (
                "CRONBOX_TELEGRAM_WEBHOOK_SECRET",
                self.telegram_webhook_secret.as_deref().is_none_or(|s| {
                    (1..=256).contains(&s.len())
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                }),
                "(hidden)".into(),
                "must be 1-256 characters of A-Za-z0-9_-",
            ),
            (
                "CRONBOX_MIN_REALERT_SECONDS",
                (1..=86_400).contains(&self.min_realert_seconds),
                self.min_realert_seconds.to_string(),
                "must be 1..=86400",
            ),
            (
                "CRONBOX_ALERT_DIGEST_THRESHOLD",
                (1..=1000).contains(&self.alert_digest_threshold),
                self.alert_digest_threshold.to_string(),
                "must be 1..=1000",
            ),
            (
                "CRONBOX_MAX_RUNS_IN_FLIGHT",
                self.max_runs_in_flight >= 1,
                self.max_runs_in_flight.to_string(),
                "must be at least 1",
            ),
            (
                "CRONBOX_RECONCILE_BATCH",
                (1..=100_000).contains(&self.reconcile_batch),
                self.reconcile_batch.to_string(),
                "must be 1..=100000",
            ),
            (
                "CRONBOX_MAX_WORKSPACES_PER_USER",
                self.max_workspaces_per_user >= 1,
                self.max_workspaces_per_user.to_string(),
                "must be at least 1",
            ),
            (
                "CRONBOX_SSE_MAX_STREAMS_PER_WORKSPACE",
                self.sse_max_streams_per_workspace >= 1,
                self.sse_max_streams_per_workspace.to_string(),
                "must be at least 1",
            ),
            (
                "CRONBOX_PASSWORD_HASH_CONCURRENCY",
                (1..=256).contains(&self.password_hash_concurrency),
                self.password_hash_concurrency.to_string(),
                "must be 1..=256",
            ),
            (
                "CRONBOX_EVENT_STREAM_MAX_AGE_DAYS",
                (1..=3650).contains(&self.event_stream_max_age_days),
                self.event_stream_max_age_days.to_string(),
                "must be 1..=3650",
            ),
            (
                "CRONBOX_DISPATCH_LEAD_MS",
                self.dispatch_lead_ms <= 1000,
                self.dispatch_lead_ms.to_string(),
                "must be 0..=1000",
            ),
            (
                "CRONBOX_DISPATCHER_PRELOAD_SECONDS",
                self.dispatcher_preload_seconds <= 86_400,
                self.dispatcher_preload_seconds.to_string(),
                "must be 0..=86400",
            ),
            (
                "CRONBOX_EXECUTOR_PER_HOST_CONCURRENCY",
                (1..=10_000).contains(&self.executor_per_host_concurrency),
                self.executor_per_host_concurrency.to_string(),
                "must be 1..=10000",
            ),
            (
                "CRONBOX_RECONCILE_AFTER_SECONDS",
                (1..=3600).contains(&self.reconcile_after_seconds),
                self.reconcile_after_seconds.to_string(),
                "must be 1..=3600",
            ),
            (
                "CRONBOX_RATE_LIMIT_PER_ADDRESS",
                self.rate_limit_per_address >= 1,
                self.rate_limit_per_address.to_string(),
                "must be at least 1",
            ),
            (
                "CRONBOX_RETENTION_SWEEP_SECONDS",
                (1..=86_400).contains(&self.retention_sweep_seconds),
                self.retention_sweep_seconds.to_string(),
                "must be 1..=86400",
            ),
            (
                "CRONBOX_JWT_SECRET",
                self.jwt_secret.as_ref().is_none_or(|s| s.len() >= 32),
                "(hidden)".into(),
                "must be at least 32 bytes",
            ),
            (
                "CRONBOX_EXECUTOR_CONCURRENCY",
                (1..=10_000).contains(&self.executor_concurrency),
                self.executor_concurrency.to_string(),
                "must be 1..=10000",
            ),
            (
                "CRONBOX_ACK_WAIT_SECONDS",
                (3..=3600).contains(&self.ack_wait_seconds),
                self.ack_wait_seconds.to_string(),
                "must be 3..=3600",
            ),
            (
                "CRONBOX_MISFIRE_GRACE_SECONDS",
                (1..=86_400).contains(&self.misfire_grace_seconds),
                self.misfire_grace_seconds.to_string(),
                "must be 1..=86400",
            ),
            (
                "CRONBOX_MAX_RESPONSE_BYTES",
                self.max_response_bytes >= 1024,
                self.max_response_bytes.to_string(),
                "must be at least 1024",
            ),
            (
                "CRONBOX_DB_MAX_CONNECTIONS",
                (4..=1000).contains(&self.db_max_connections),
                self.db_max_connections.to_string(),
                "must be 4..=1000",
            ),
            (
                "CRONBOX_LOG_FORMAT",
                matches!(self.log_format.as_str(), "text" | "json"),
                self.log_format.clone(),
                "must be text or json",
            ),
        ];
        match checks.into_iter().find(|(_, ok, _, _)| !ok) {
            Some((key, _, value, why)) => Err(ConfigError::Invalid {
                key,
                value,
                reason: why.to_string(),
            }),
            None => Ok(self),
        }
    }
}
