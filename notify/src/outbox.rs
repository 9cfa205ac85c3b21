//! Account mail: verification, password reset, invitations and alert-address confirmations.
//!
//! These mails carry single-use tokens, so they never enter the event log: they are rendered
//! into `mail_outbox` in the transaction that makes their token, and a sender loop delivers
//! them through the same [`Mailer`] as alert mail, retrying with backoff (a few minutes at
//! first, for about a day) until the provider takes them or refuses them for good.

use std::time::Duration;

use cronbox_domain::channel::Language;
use cronbox_store::leader;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::mail::{Mailer, OutgoingMail, SendError};
use crate::render;

/// Mails one address may be sent per hour (a sign-up form must not become a mail cannon).
pub const MAILS_PER_ADDRESS_PER_HOUR: i64 = 5;
/// Tries before a mail is given up.
const MAX_ATTEMPTS: i32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("unknown account mail kind {0}")]
    UnknownKind(String),
    #[error("cannot render the mail")]
    Render(#[from] askama::Error),
}

/// Renders and queues an account mail in the caller's transaction unless the address had its
/// hourly allowance. Returns whether it was queued. Callers answer the same either way (the
/// answer must not tell whether an account exists).
pub async fn queue(
    tx: &mut PgConnection,
    to: &str,
    kind: &str,
    lang: Language,
    params: serde_json::Value,
    public_url: &str,
) -> Result<bool, OutboxError> {
    let mail =
        render::account_mail(kind, &params, lang, public_url).ok_or_else(|| OutboxError::UnknownKind(kind.into()))?;
    let (html, text) = render::account_mail_bodies(&mail, lang)?;
    // Counted under a lock per address, so a burst cannot all see the same count.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('cronbox-mail:' || $1, 0))")
        .bind(to)
        .execute(&mut *tx)
        .await?;
    let recent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mail_outbox WHERE to_email = $1 AND created_at > now() - interval '1 hour'",
    )
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    if recent >= MAILS_PER_ADDRESS_PER_HOUR {
        tracing::warn!(kind, "mail not queued: the address had its hourly allowance");
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO mail_outbox (to_email, kind, subject, body, html, lang, params) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(to)
    .bind(kind)
    .bind(&mail.subject)
    .bind(text)
    .bind(html)
    .bind(lang.as_str())
    .bind(params)
    .execute(&mut *tx)
    .await?;
    sqlx::query("NOTIFY cronbox_mail").execute(&mut *tx).await?;
    Ok(true)
}

/// The wait after `attempts` failed tries: 30 s, 1, 2, 4 … minutes, at most 4 hours.
fn backoff(attempts: i32) -> i64 {
    (30i64 << attempts.clamp(0, 10) as u32).min(4 * 3600)
}

type Row = (i64, String, String, String, Option<String>, i32);

/// Sends what is due once. Returns how many mails it tried.
pub async fn send_due(pool: &PgPool, mailer: &Mailer) -> Result<usize, sqlx::Error> {
    // Claimed by pushing their next try out: a crash mid-send retries them then.
    let rows: Vec<Row> = sqlx::query_as(
        "UPDATE mail_outbox SET next_attempt_at = now() + interval '5 minutes'
          WHERE id IN (SELECT id FROM mail_outbox
                        WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
                        ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED)
          RETURNING id, to_email, subject, body, html, attempts",
    )
    .fetch_all(pool)
    .await?;
    let n = rows.len();
    // One at a time on purpose: account mail is a trickle, and sequential sends keep a
    // provider's per-second limit.
    for (id, to, subject, text, html, attempts) in rows {
        let mail = OutgoingMail {
            html: html.unwrap_or_else(|| format!("<pre>{}</pre>", render::telegram_escape(&text))),
            to,
            subject,
            text,
            idempotency_key: Some(format!("account-mail-{id}")),
            unsubscribe_url: None,
        };
        let result = mailer.send(&mail).await;
        let q = match result {
            Ok(()) => {
                tracing::info!(mail_id = id, "account mail sent");
                sqlx::query(
                    "UPDATE mail_outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1",
                )
                .bind(id)
            }
            Err(SendError::Permanent(e)) => {
                tracing::warn!(mail_id = id, error = %e, "account mail refused for good");
                sqlx::query(
                    "UPDATE mail_outbox SET failed_at = now(), attempts = attempts + 1, last_error = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(e)
            }
            Err(SendError::Retry {
                error,
                after,
                rate_limited,
            }) => {
                let tries = if rate_limited { attempts } else { attempts + 1 };
                let wait = after.map(i64::from).unwrap_or_else(|| backoff(attempts));
                tracing::warn!(mail_id = id, error = %error, wait, "account mail not sent; will retry");
                if tries >= MAX_ATTEMPTS {
                    sqlx::query(
                        "UPDATE mail_outbox SET failed_at = now(), attempts = $3, last_error = $2 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(error)
                    .bind(tries)
                } else {
                    sqlx::query(
                        "UPDATE mail_outbox SET attempts = $3, last_error = $2,
                             next_attempt_at = now() + $4 * interval '1 second' WHERE id = $1",
                    )
                    .bind(id)
                    .bind(error)
                    .bind(tries)
                    .bind(wait as f64)
                }
            }
        };
        q.execute(pool).await?;
    }
    Ok(n)
}

/// Sends account mail until `shutdown`, in the process holding the sender's lock (rows are
/// claimed with SKIP LOCKED, so the lock only keeps the provider's rate in one place).
pub async fn run(pool: PgPool, mailer: Mailer, lock_key: i64, shutdown: CancellationToken) {
    if !mailer.is_enabled() {
        tracing::warn!("no mail transport configured (CRONBOX_SMTP_URL or CRONBOX_RESEND_API_KEY): account mails wait in mail_outbox");
        return;
    }
    while !shutdown.is_cancelled() {
        let Some(lock) = leader::acquire(&pool, lock_key, "mail sender", &shutdown).await else {
            return;
        };
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen("cronbox_mail").await {
                Ok(()) => Some(l),
                Err(_) => None,
            },
            Err(_) => None,
        };
        while !shutdown.is_cancelled() && lock.check().is_ok() {
            let busy = match send_due(&pool, &mailer).await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the mail outbox; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            let wait = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wait => {}
                Some(_) = async { match listener.as_mut() { Some(l) => l.recv().await.ok(), None => std::future::pending().await } } => {}
            }
        }
    }
}
