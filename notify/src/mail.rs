//! Sending mail: SMTP through lettre (async, rustls) or the Resend HTTP API. One sender for
//! both alert mails and account mails (verification, password reset, invitations).
//!
//! Failures come back typed for the caller's retry policy: a 5xx SMTP reply or a Resend 4xx is
//! permanent (the address or the message is wrong), everything else is worth retrying, and a
//! Resend 429 carries its `retry-after`.

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub const DEFAULT_RESEND_API_URL: &str = "https://api.resend.com";

#[derive(Debug, thiserror::Error)]
pub enum MailConfigError {
    #[error("CRONBOX_MAIL_FROM {0:?} is not an address such as `CronBox <alerts@example.com>`")]
    From(String),
    #[error("CRONBOX_SMTP_URL is not valid: {0}")]
    SmtpUrl(String),
    #[error("CRONBOX_MAIL_FROM is required when CRONBOX_SMTP_URL or CRONBOX_RESEND_API_KEY is set")]
    MissingFrom,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("{error}")]
    Retry {
        error: String,
        rate_limited: bool,
        after: Option<u32>,
    },
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    fn retry(error: impl Into<String>) -> Self {
        Self::Retry {
            error: error.into(),
            rate_limited: false,
            after: None,
        }
    }
}

/// One mail to one address.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Resend's `Idempotency-Key` (the notification id: a retried send is not sent twice).
    pub idempotency_key: Option<String>,
    /// One-click unsubscribe (RFC 8058): `List-Unsubscribe` + `List-Unsubscribe-Post`.
    pub unsubscribe_url: Option<String>,
}

#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Resend {
        client: reqwest::Client,
        api_url: String,
        api_key: String,
        from: String,
    },
    /// Nothing configured: mail waits in the outbox (and alert mails fail with a clear reason).
    Disabled,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Smtp { .. } => "Mailer::Smtp",
            Self::Resend { .. } => "Mailer::Resend",
            Self::Disabled => "Mailer::Disabled",
        })
    }
}

/// `smtp://…?tls=starttls` is our spelling of lettre's `tls=required` (STARTTLS, refusing to
/// send credentials when the upgrade fails).
fn lettre_url(url: &str) -> String {
    url.replace("tls=starttls", "tls=required")
}

impl Mailer {
    pub fn from_settings(
        smtp_url: Option<&str>,
        resend_api_key: Option<&str>,
        resend_api_url: &str,
        from: Option<&str>,
    ) -> Result<Self, MailConfigError> {
        if smtp_url.is_none() && resend_api_key.is_none() {
            return Ok(Self::Disabled);
        }
        let from = from.ok_or(MailConfigError::MissingFrom)?;
        let mailbox: Mailbox = from.parse().map_err(|_| MailConfigError::From(from.to_string()))?;
        if let Some(url) = smtp_url {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url))
                .map_err(|e| MailConfigError::SmtpUrl(e.to_string()))?
                .timeout(Some(Duration::from_secs(30)))
                .build();
            return Ok(Self::Smtp {
                transport,
                from: mailbox,
            });
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("CronBox/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self::Resend {
            client,
            api_url: resend_api_url.trim_end_matches('/').to_string(),
            api_key: resend_api_key.unwrap_or_default().to_string(),
            from: mailbox.to_string(),
        })
    }

    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::Disabled)
    }

    pub async fn send(&self, mail: &OutgoingMail) -> Result<(), SendError> {
        match self {
            Self::Smtp { transport, from } => send_smtp(transport, from, mail).await,
            Self::Resend {
                client,
                api_url,
                api_key,
                from,
            } => send_resend(client, api_url, api_key, from, mail).await,
            Self::Disabled => Err(SendError::retry(
                "no mail transport is configured (CRONBOX_SMTP_URL or CRONBOX_RESEND_API_KEY)",
            )),
        }
    }
}

async fn send_smtp(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: &Mailbox,
    mail: &OutgoingMail,
) -> Result<(), SendError> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|_| SendError::Permanent(format!("{:?} is not a mail address", mail.to)))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone());
    if let Some(url) = &mail.unsubscribe_url {
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{url}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_string(),
            ));
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
        .map_err(|e| SendError::Permanent(format!("cannot build the mail: {e}")))?;
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
        Err(e) => Err(SendError::retry(format!("SMTP: {e}"))),
    }
}

/// `Retry-After` in seconds (Resend sends seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u32> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(|s| s.ceil().clamp(1.0, 86_400.0) as u32)
}

async fn send_resend(
    client: &reqwest::Client,
    api_url: &str,
    api_key: &str,
    from: &str,
    mail: &OutgoingMail,
) -> Result<(), SendError> {
    let mut headers = serde_json::Map::new();
    if let Some(url) = &mail.unsubscribe_url {
        headers.insert("List-Unsubscribe".into(), format!("<{url}>").into());
        headers.insert("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into());
    }
    let body = serde_json::json!({
        "from": from,
        "to": [mail.to],
        "subject": mail.subject,
        "html": mail.html,
        "text": mail.text,
        "headers": headers,
    });
    let mut request = client
        .post(format!("{api_url}/emails"))
        .bearer_auth(api_key)
        .json(&body);
    if let Some(key) = &mail.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| SendError::retry(format!("Resend: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let after = retry_after(response.headers());
    let text: String = response.text().await.unwrap_or_default().chars().take(300).collect();
    let error = format!("Resend answered {}: {text}", status.as_u16());
    Err(match status.as_u16() {
        429 => SendError::Retry {
            error,
            rate_limited: true,
            after: after.or(Some(1)),
        },
        // 409: the same key is still being processed (or was used for another payload, which
        // our ids never do); worth another try later.
        408 | 409 => SendError::retry(error),
        400..=499 => SendError::Permanent(error),
        _ => SendError::Retry {
            error,
            rate_limited: false,
            after,
        },
    })
}
