//! The notification use cases, callable without HTTP: channels (create, change, delete, test,
//! rotate a webhook secret, confirm an address, unsubscribe), Telegram linking, delivery logs
//! and alerts. The REST handlers (and later the web pages and the CLI) are thin adapters over
//! these functions. Callers check roles; these check everything about the data.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::AggregateError;
use cronbox_domain::channel::{
    Channel, ChannelCommand, ChannelError, ChannelKind, ChannelTarget, DisableReason, Language,
};
use cronbox_domain::notification::{NotificationCommand, NotificationContent, NotificationKind};
use cronbox_domain::webhook::{SigningSecret, SECRET_BYTES};
use cronbox_domain::FieldError;
use cronbox_store::aggregates::Stores;
use cronbox_store::signing::MasterKey;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::seal;

/// Channels one workspace may have.
pub const MAX_CHANNELS: i64 = 50;
pub const CONFIRM_TTL_HOURS: i64 = 48;
pub const LINK_TTL_MINUTES: i64 = 10;
pub const MAX_ADDRESS_CHARS: usize = 254;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0} is not configured")]
    NotConfigured(&'static str),
    #[error("the link is invalid, used or expired")]
    BadToken,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("event store: {0}")]
    Store(String),
}

impl From<FieldError> for NotifyError {
    fn from(e: FieldError) -> Self {
        Self::Invalid(e)
    }
}

impl From<AggregateError<ChannelError>> for NotifyError {
    fn from(e: AggregateError<ChannelError>) -> Self {
        match e {
            AggregateError::UserError(ChannelError::NotFound) => Self::NotFound("channel"),
            AggregateError::UserError(ChannelError::Invalid(f)) => Self::Invalid(f),
            AggregateError::UserError(ChannelError::AlreadyExists) => Self::Conflict {
                code: "already_exists",
                message: "channel already exists".into(),
            },
            other => Self::Store(other.to_string()),
        }
    }
}

impl From<seal::SealError> for NotifyError {
    fn from(e: seal::SealError) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<crate::outbox::OutboxError> for NotifyError {
    fn from(e: crate::outbox::OutboxError) -> Self {
        match e {
            crate::outbox::OutboxError::Database(d) => Self::Database(d),
            other => Self::Store(other.to_string()),
        }
    }
}

/// What the use cases share.
#[derive(Clone)]
pub struct Notify {
    pub stores: Arc<Stores>,
    pub pool: PgPool,
    pub key: MasterKey,
    pub public_url: String,
    /// The bot's @username when a Telegram bot is configured.
    pub telegram_bot: Option<String>,
}

/// A channel as the API shows it. Where it points is masked (`target`); a webhook's secret is
/// shown once, when it is made or rotated.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub language: String,
    /// `active`, `pending_verification` (an address not confirmed yet) or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub disabled_detail: Option<String>,
    /// The address masked, the webhook URL, or the Telegram chat's title.
    pub target: String,
    pub created_at: DateTime<Utc>,
}

fn status_of(verified: bool, disabled: bool) -> &'static str {
    match (verified, disabled) {
        (_, true) => "disabled",
        (false, _) => "pending_verification",
        _ => "active",
    }
}

fn view_of(c: &Channel) -> Option<ChannelView> {
    Some(ChannelView {
        id: c.id?,
        kind: c.kind?.as_str().into(),
        name: c.name.clone(),
        language: c.language.as_str().into(),
        status: status_of(c.verified, c.disabled.is_some()).into(),
        disabled_reason: c.disabled.as_ref().map(|(r, _)| r.as_str().to_string()),
        disabled_detail: c.disabled.as_ref().map(|(_, d)| d.clone()).filter(|d| !d.is_empty()),
        target: c.display.clone(),
        created_at: c.created_at?,
    })
}

fn random_token(bytes: usize) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a mail address is plausible enough to send a confirmation to.
pub fn parse_address(raw: &str) -> Result<String, FieldError> {
    let a = raw.trim().to_lowercase();
    let ok = a.len() <= MAX_ADDRESS_CHARS
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
        && a.parse::<lettre::Address>().is_ok();
    if ok {
        Ok(a)
    } else {
        Err(FieldError::new(
            "address",
            "invalid_email",
            "address must be a mail address",
        ))
    }
}

/// The workspace a use case acts in.
pub struct Workspace<'a> {
    pub id: Uuid,
    pub name: &'a str,
}

/// What the caller asks to be made.
pub enum NewChannel {
    Email {
        address: String,
    },
    /// A URL already checked against the SSRF guard (and DNS) by the caller.
    Webhook {
        url: String,
    },
}

pub struct Created {
    pub view: ChannelView,
    /// A webhook's `whsec_` secret, shown this once.
    pub secret: Option<String>,
}

async fn count(pool: &PgPool, workspace_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM notification_channels WHERE workspace_id = $1")
        .bind(workspace_id)
        .fetch_one(pool)
        .await
}

async fn load(n: &Notify, workspace_id: Uuid, id: Uuid) -> Result<Channel, NotifyError> {
    let (c, _) = n
        .stores
        .channels
        .load(&id.to_string())
        .await
        .map_err(|e| NotifyError::Store(e.to_string()))?;
    if c.workspace_id != Some(workspace_id) || c.deleted || c.id.is_none() {
        return Err(NotifyError::NotFound("channel"));
    }
    Ok(c)
}

pub async fn create(
    n: &Notify,
    ws: &Workspace<'_>,
    name: &str,
    language: Language,
    new: NewChannel,
) -> Result<Created, NotifyError> {
    if count(&n.pool, ws.id).await? >= MAX_CHANNELS {
        return Err(NotifyError::Conflict {
            code: "too_many_channels",
            message: format!("a workspace may have at most {MAX_CHANNELS} notification channels"),
        });
    }
    let name = cronbox_domain::channel::check_name(name)?;
    let channel_id = Uuid::new_v4();
    let (kind, target, display, verified, secret) = match new {
        NewChannel::Email { address } => {
            let address = parse_address(&address)?;
            let display = seal::mask_address(&address);
            let target = ChannelTarget {
                address: Some(address),
                unsubscribe: Some(random_token(24)),
                ..Default::default()
            };
            (ChannelKind::Email, target, display, false, None)
        }
        NewChannel::Webhook { url } => {
            let mut bytes = vec![0u8; SECRET_BYTES];
            rand::rng().fill_bytes(&mut bytes);
            let secret = SigningSecret::from_bytes(bytes).to_whsec();
            let target = ChannelTarget {
                url: Some(url.clone()),
                secret: Some(secret.clone()),
                ..Default::default()
            };
            (
                ChannelKind::Webhook,
                target,
                cronbox_domain::alert::display_url(&url),
                true,
                Some(secret),
            )
        }
    };
    let sealed = seal::seal(&n.key, ws.id, channel_id, &target)?;
    let at = Utc::now();
    n.stores
        .channels
        .execute(
            &channel_id.to_string(),
            ChannelCommand::Create {
                channel_id,
                workspace_id: ws.id,
                kind,
                name: name.clone(),
                language,
                display,
                sealed,
                verified,
                at,
            },
        )
        .await?;
    if let (ChannelKind::Email, Some(address)) = (kind, &target.address) {
        send_confirmation(n, ws, channel_id, &name, address, language).await?;
    }
    tracing::info!(%channel_id, workspace_id = %ws.id, kind = kind.as_str(), "notification channel created");
    let view = get(n, ws.id, channel_id).await?;
    Ok(Created { view, secret })
}

async fn send_confirmation(
    n: &Notify,
    ws: &Workspace<'_>,
    channel_id: Uuid,
    name: &str,
    address: &str,
    language: Language,
) -> Result<(), NotifyError> {
    let token = random_token(32);
    let mut tx = n.pool.begin().await?;
    let queued = crate::outbox::queue(
        &mut tx,
        address,
        "confirm_channel",
        language,
        serde_json::json!({"token": token, "workspace": ws.name, "channel": name, "hours": CONFIRM_TTL_HOURS}),
        &n.public_url,
    )
    .await?;
    if queued {
        sqlx::query(
            "INSERT INTO channel_tokens (token_hash, kind, workspace_id, channel_id, language, expires_at)
             VALUES ($1, 'confirm_email', $2, $3, $4, $5)",
        )
        .bind(hash(&token))
        .bind(ws.id)
        .bind(channel_id)
        .bind(language.as_str())
        .bind(Utc::now() + Duration::hours(CONFIRM_TTL_HOURS))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Sends the confirmation mail of an unconfirmed address again.
pub async fn resend_confirmation(n: &Notify, ws: &Workspace<'_>, id: Uuid) -> Result<(), NotifyError> {
    let c = load(n, ws.id, id).await?;
    if c.kind != Some(ChannelKind::Email) || c.verified {
        return Err(NotifyError::Conflict {
            code: "not_pending",
            message: "only an unconfirmed e-mail channel has a confirmation to send".into(),
        });
    }
    let target = seal::open(&n.key, ws.id, id, &c.sealed)?;
    let address = target.address.unwrap_or_default();
    send_confirmation(n, ws, id, &c.name, &address, c.language).await
}

/// Confirms the address of an e-mail channel with the token from its mail.
pub async fn confirm(n: &Notify, token: &str) -> Result<ChannelView, NotifyError> {
    let row: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE channel_tokens SET used_at = now()
          WHERE token_hash = $1 AND kind = 'confirm_email' AND used_at IS NULL AND expires_at > now()
          RETURNING workspace_id, channel_id",
    )
    .bind(hash(token.trim()))
    .fetch_optional(&n.pool)
    .await?;
    let Some((workspace_id, channel_id)) = row else {
        return Err(NotifyError::BadToken);
    };
    n.stores
        .channels
        .execute(&channel_id.to_string(), ChannelCommand::Verify { at: Utc::now() })
        .await?;
    tracing::info!(%channel_id, %workspace_id, "alert address confirmed");
    get(n, workspace_id, channel_id).await
}

/// One-click unsubscribe: `token` is `<channel id>.<random>` from the mail's link.
pub async fn unsubscribe(n: &Notify, token: &str) -> Result<ChannelView, NotifyError> {
    let (id, secret) = token.trim().split_once('.').ok_or(NotifyError::BadToken)?;
    let id = Uuid::parse_str(id).map_err(|_| NotifyError::BadToken)?;
    let (c, _) = n
        .stores
        .channels
        .load(&id.to_string())
        .await
        .map_err(|e| NotifyError::Store(e.to_string()))?;
    let workspace_id = c.workspace_id.ok_or(NotifyError::BadToken)?;
    if c.deleted {
        return Err(NotifyError::BadToken);
    }
    let target = seal::open(&n.key, workspace_id, id, &c.sealed)?;
    let expected = target.unsubscribe.unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), secret.as_bytes()) {
        return Err(NotifyError::BadToken);
    }
    n.stores
        .channels
        .execute(
            &id.to_string(),
            ChannelCommand::Disable {
                reason: DisableReason::Unsubscribed,
                detail: String::new(),
                at: Utc::now(),
            },
        )
        .await?;
    tracing::info!(channel_id = %id, %workspace_id, "alert mail unsubscribed");
    get(n, workspace_id, id).await
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn get(n: &Notify, workspace_id: Uuid, id: Uuid) -> Result<ChannelView, NotifyError> {
    let c = load(n, workspace_id, id).await?;
    view_of(&c).ok_or(NotifyError::NotFound("channel"))
}

type ChannelRow = (
    Uuid,
    String,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    String,
    DateTime<Utc>,
);

pub async fn list(n: &Notify, workspace_id: Uuid) -> Result<Vec<ChannelView>, NotifyError> {
    let rows: Vec<ChannelRow> = sqlx::query_as(
        "SELECT id, kind, name, language, verified, disabled_reason, disabled_detail, display, created_at
           FROM notification_channels WHERE workspace_id = $1 ORDER BY created_at, id",
    )
    .bind(workspace_id)
    .fetch_all(&n.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, kind, name, language, verified, reason, detail, display, created_at)| ChannelView {
                id,
                kind,
                name,
                language,
                status: status_of(verified, reason.is_some()).into(),
                disabled_reason: reason,
                disabled_detail: detail.filter(|d| !d.is_empty()),
                target: display,
                created_at,
            },
        )
        .collect())
}

pub async fn update(
    n: &Notify,
    workspace_id: Uuid,
    id: Uuid,
    name: Option<String>,
    language: Option<Language>,
    enabled: Option<bool>,
) -> Result<ChannelView, NotifyError> {
    load(n, workspace_id, id).await?;
    n.stores
        .channels
        .execute(
            &id.to_string(),
            ChannelCommand::Update {
                name,
                language,
                enabled,
                at: Utc::now(),
            },
        )
        .await?;
    get(n, workspace_id, id).await
}

pub async fn delete(n: &Notify, workspace_id: Uuid, id: Uuid) -> Result<(), NotifyError> {
    load(n, workspace_id, id).await?;
    n.stores
        .channels
        .execute(&id.to_string(), ChannelCommand::Delete { at: Utc::now() })
        .await?;
    sqlx::query("DELETE FROM telegram_chats WHERE channel_id = $1")
        .bind(id)
        .execute(&n.pool)
        .await?;
    tracing::info!(channel_id = %id, %workspace_id, "notification channel deleted");
    Ok(())
}

/// A new `whsec_` secret for a webhook channel; the old one stops signing at once.
pub async fn rotate_secret(n: &Notify, workspace_id: Uuid, id: Uuid) -> Result<String, NotifyError> {
    let c = load(n, workspace_id, id).await?;
    if c.kind != Some(ChannelKind::Webhook) {
        return Err(NotifyError::Conflict {
            code: "not_a_webhook",
            message: "only webhook channels have a secret".into(),
        });
    }
    let mut target = seal::open(&n.key, workspace_id, id, &c.sealed)?;
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = SigningSecret::from_bytes(bytes).to_whsec();
    target.secret = Some(secret.clone());
    let sealed = seal::seal(&n.key, workspace_id, id, &target)?;
    n.stores
        .channels
        .execute(
            &id.to_string(),
            ChannelCommand::Reseal {
                sealed,
                display: None,
                at: Utc::now(),
            },
        )
        .await?;
    tracing::info!(channel_id = %id, %workspace_id, "webhook channel secret rotated");
    Ok(secret)
}

/// Queues a test notification; returns its id (its delivery shows in the channel's log).
pub async fn test(n: &Notify, workspace_id: Uuid, id: Uuid) -> Result<Uuid, NotifyError> {
    let c = load(n, workspace_id, id).await?;
    if !c.usable() {
        return Err(NotifyError::Conflict {
            code: "channel_not_active",
            message: format!(
                "the channel is {}: only an active channel can be tested",
                status_of(c.verified, c.disabled.is_some())
            ),
        });
    }
    let notification_id = Uuid::new_v4();
    n.stores
        .notifications
        .execute(
            &notification_id.to_string(),
            NotificationCommand::Queue {
                notification_id,
                workspace_id,
                channel_id: id,
                alert_id: None,
                content: NotificationContent::new(NotificationKind::Test, Default::default()),
                at: Utc::now(),
            },
        )
        .await
        .map_err(|e| NotifyError::Store(e.to_string()))?;
    Ok(notification_id)
}

/// One delivery in a channel's log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub kind: String,
    pub alert_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    /// `queued`, `retrying`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    /// Tries put off because the provider asked us to slow down (not counted as attempts).
    pub throttled: i32,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Delivered in a digest of this many notifications.
    pub digest: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "id, channel_id, kind, alert_id, run_id, status, attempts, throttled, last_error,
    next_attempt_at, digest, created_at, finished_at";

fn delivery(r: &sqlx::postgres::PgRow) -> Result<DeliveryView, sqlx::Error> {
    use sqlx::Row;
    Ok(DeliveryView {
        id: r.try_get("id")?,
        channel_id: r.try_get("channel_id")?,
        kind: r.try_get("kind")?,
        alert_id: r.try_get("alert_id")?,
        run_id: r.try_get("run_id")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        throttled: r.try_get("throttled")?,
        error: r.try_get("last_error")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        digest: r.try_get("digest")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

pub async fn deliveries(
    n: &Notify,
    workspace_id: Uuid,
    id: Uuid,
    limit: i64,
) -> Result<Vec<DeliveryView>, NotifyError> {
    load(n, workspace_id, id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM notifications WHERE channel_id = $1 AND workspace_id = $2
          ORDER BY created_at DESC, id LIMIT $3"
    ))
    .bind(id)
    .bind(workspace_id)
    .bind(limit)
    .fetch_all(&n.pool)
    .await?;
    Ok(rows.iter().map(delivery).collect::<Result<_, _>>()?)
}

/// The notifications a run caused, for its execution detail (the audit trail).
pub async fn of_run(pool: &PgPool, workspace_id: Uuid, run_id: Uuid) -> Result<Vec<DeliveryView>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM notifications WHERE run_id = $1 AND workspace_id = $2 ORDER BY created_at, id"
    ))
    .bind(run_id)
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(delivery).collect()
}

/// An alert as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    pub kind: String,
    /// `open` or `resolved`.
    pub state: String,
    pub job_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub channels: Vec<Uuid>,
    pub reminders: i32,
    pub next_reminder_at: Option<DateTime<Utc>>,
    pub raised_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolve_reason: Option<String>,
    pub resolved_by_run: Option<Uuid>,
    pub failed_runs: Option<i32>,
}

type AlertRow = (
    Uuid,
    String,
    String,
    Option<Uuid>,
    Option<Uuid>,
    serde_json::Value,
    Vec<Uuid>,
    i32,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<Uuid>,
    Option<i32>,
);

pub async fn alerts(
    n: &Notify,
    workspace_id: Uuid,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<AlertView>, NotifyError> {
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT id, kind, state, job_id, run_id, details, channels, reminders, next_reminder_at, raised_at,
                resolved_at, resolve_reason, resolved_by_run, failed_runs
           FROM alerts WHERE workspace_id = $1 AND ($2::text IS NULL OR state = $2)
          ORDER BY raised_at DESC, id LIMIT $3",
    )
    .bind(workspace_id)
    .bind(state)
    .bind(limit)
    .fetch_all(&n.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                kind,
                state,
                job_id,
                run_id,
                details,
                channels,
                reminders,
                next,
                raised_at,
                resolved_at,
                reason,
                by_run,
                failed,
            )| {
                AlertView {
                    id,
                    kind,
                    state,
                    job_id,
                    run_id,
                    details,
                    channels,
                    reminders,
                    next_reminder_at: next,
                    raised_at,
                    resolved_at,
                    resolve_reason: reason,
                    resolved_by_run: by_run,
                    failed_runs: failed,
                }
            },
        )
        .collect())
}

/// A Telegram link code and the deep link that carries it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkCode {
    pub code: String,
    pub deep_link: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn telegram_link_code(n: &Notify, workspace_id: Uuid, language: Language) -> Result<LinkCode, NotifyError> {
    let bot = n.telegram_bot.as_ref().ok_or(NotifyError::NotConfigured("telegram"))?;
    if count(&n.pool, workspace_id).await? >= MAX_CHANNELS {
        return Err(NotifyError::Conflict {
            code: "too_many_channels",
            message: format!("a workspace may have at most {MAX_CHANNELS} notification channels"),
        });
    }
    // 24 random bytes: 32 characters of A-Za-z0-9_-, inside the deep link's 64.
    let code = random_token(24);
    let expires_at = Utc::now() + Duration::minutes(LINK_TTL_MINUTES);
    sqlx::query(
        "INSERT INTO channel_tokens (token_hash, kind, workspace_id, language, expires_at)
         VALUES ($1, 'telegram_link', $2, $3, $4)",
    )
    .bind(hash(&code))
    .bind(workspace_id)
    .bind(language.as_str())
    .bind(expires_at)
    .execute(&n.pool)
    .await?;
    Ok(LinkCode {
        deep_link: format!("https://t.me/{bot}?start={code}"),
        code,
        expires_at,
    })
}

/// What linking a chat did.
#[derive(Debug, Clone)]
pub struct Linked {
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub channel_id: Uuid,
    pub language: Language,
    /// The chat was linked to this workspace already (nothing new was made).
    pub already: bool,
}

fn chat_hash(key: &MasterKey, chat_id: i64) -> String {
    key.keyed_hash("telegram-chat", chat_id.to_string().as_bytes())
}

/// Links `chat_id` to the workspace whose code this is (single use, 10 minutes).
pub async fn link_telegram(n: &Notify, code: &str, chat_id: i64, chat_title: &str) -> Result<Linked, NotifyError> {
    let code = code.trim();
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NotifyError::BadToken);
    }
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "UPDATE channel_tokens SET used_at = now()
          WHERE token_hash = $1 AND kind = 'telegram_link' AND used_at IS NULL AND expires_at > now()
          RETURNING workspace_id, language",
    )
    .bind(hash(code))
    .fetch_optional(&n.pool)
    .await?;
    let Some((workspace_id, lang)) = row else {
        return Err(NotifyError::BadToken);
    };
    let language = Language::parse("language", &lang).unwrap_or_default();
    let (ws, _) = n
        .stores
        .workspaces
        .load(&workspace_id.to_string())
        .await
        .map_err(|e| NotifyError::Store(e.to_string()))?;
    if ws.deleted {
        return Err(NotifyError::BadToken);
    }
    let hash = chat_hash(&n.key, chat_id);
    let existing: Option<Uuid> =
        sqlx::query_scalar("SELECT channel_id FROM telegram_chats WHERE chat_hash = $1 AND workspace_id = $2")
            .bind(&hash)
            .bind(workspace_id)
            .fetch_optional(&n.pool)
            .await?;
    if let Some(channel_id) = existing {
        // Linking again re-enables a channel that was disabled (the bot was blocked, then
        // unblocked and linked anew).
        let _ = update(n, workspace_id, channel_id, None, None, Some(true)).await;
        return Ok(Linked {
            workspace_id,
            workspace_name: ws.name,
            channel_id,
            language,
            already: true,
        });
    }
    let channel_id = Uuid::new_v4();
    let target = ChannelTarget {
        chat_id: Some(chat_id),
        ..Default::default()
    };
    let title: String = chat_title.chars().filter(|c| !c.is_control()).take(80).collect();
    let display = if title.trim().is_empty() {
        "Telegram".to_string()
    } else {
        format!("Telegram: {title}")
    };
    let name = cronbox_domain::channel::check_name(&display).unwrap_or_else(|_| "Telegram".into());
    n.stores
        .channels
        .execute(
            &channel_id.to_string(),
            ChannelCommand::Create {
                channel_id,
                workspace_id,
                kind: ChannelKind::Telegram,
                name,
                language,
                display,
                sealed: seal::seal(&n.key, workspace_id, channel_id, &target)?,
                verified: true,
                at: Utc::now(),
            },
        )
        .await?;
    sqlx::query("INSERT INTO telegram_chats (chat_hash, channel_id, workspace_id) VALUES ($1, $2, $3)")
        .bind(&hash)
        .bind(channel_id)
        .bind(workspace_id)
        .execute(&n.pool)
        .await?;
    tracing::info!(%channel_id, %workspace_id, "telegram chat linked");
    Ok(Linked {
        workspace_id,
        workspace_name: ws.name,
        channel_id,
        language,
        already: false,
    })
}

/// The channels (and their workspaces) a chat is linked to.
pub async fn chat_links(n: &Notify, chat_id: i64) -> Result<Vec<(Uuid, Uuid)>, NotifyError> {
    Ok(
        sqlx::query_as("SELECT channel_id, workspace_id FROM telegram_chats WHERE chat_hash = $1 ORDER BY channel_id")
            .bind(chat_hash(&n.key, chat_id))
            .fetch_all(&n.pool)
            .await?,
    )
}

/// Unlinks a chat from every workspace; returns how many links there were.
pub async fn unlink_telegram(n: &Notify, chat_id: i64) -> Result<usize, NotifyError> {
    let links = chat_links(n, chat_id).await?;
    for (channel_id, workspace_id) in &links {
        delete(n, *workspace_id, *channel_id).await?;
    }
    Ok(links.len())
}

/// A group became a supergroup: its links follow it to the new chat id.
pub async fn migrate_chat(n: &Notify, from: i64, to: i64) -> Result<usize, NotifyError> {
    let links = chat_links(n, from).await?;
    for (channel_id, workspace_id) in &links {
        let c = load(n, *workspace_id, *channel_id).await?;
        let mut target = seal::open(&n.key, *workspace_id, *channel_id, &c.sealed)?;
        if target.chat_id == Some(to) {
            continue;
        }
        target.chat_id = Some(to);
        reseal_chat(&n.stores, &n.key, &n.pool, *workspace_id, *channel_id, &target, to).await?;
    }
    Ok(links.len())
}

async fn reseal_chat(
    stores: &Stores,
    key: &MasterKey,
    pool: &PgPool,
    workspace_id: Uuid,
    channel_id: Uuid,
    target: &ChannelTarget,
    to: i64,
) -> Result<(), NotifyError> {
    let sealed = seal::seal(key, workspace_id, channel_id, target)?;
    stores
        .channels
        .execute(
            &channel_id.to_string(),
            ChannelCommand::Reseal {
                sealed,
                display: None,
                at: Utc::now(),
            },
        )
        .await?;
    sqlx::query("UPDATE telegram_chats SET chat_hash = $2 WHERE channel_id = $1")
        .bind(channel_id)
        .bind(chat_hash(key, to))
        .execute(pool)
        .await?;
    tracing::info!(%channel_id, %workspace_id, "telegram chat moved to its supergroup");
    Ok(())
}

/// The deliverer learned of a migration from a send: move the link.
pub async fn move_chat(
    stores: &Stores,
    key: &MasterKey,
    workspace_id: Uuid,
    channel_id: Uuid,
    target: &ChannelTarget,
    to: i64,
) {
    let mut moved = target.clone();
    moved.chat_id = Some(to);
    if let Err(e) = reseal_chat(stores, key, &stores.pool, workspace_id, channel_id, &moved, to).await {
        tracing::warn!(%channel_id, error = %e, "cannot move the telegram link to its supergroup");
    }
}

/// Failing jobs of a workspace, for the bot's /status: (name, consecutive failures).
pub async fn failing_jobs(pool: &PgPool, workspace_id: Uuid, limit: i64) -> Result<Vec<(String, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, consecutive_failures FROM jobs
          WHERE workspace_id = $1 AND consecutive_failures > 0 AND status <> 'deleted'
          ORDER BY consecutive_failures DESC, name LIMIT $2",
    )
    .bind(workspace_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
