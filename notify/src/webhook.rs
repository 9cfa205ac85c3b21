//! Outgoing alert webhooks, signed per Standard Webhooks: `webhook-id` (the notification id,
//! the same on every retry), `webhook-timestamp`, `webhook-signature` over
//! `{id}.{timestamp}.{body}` with the endpoint's own `whsec_` secret. Sent through the same
//! address guard as job calls, never following redirects.

use cronbox_domain::target::TargetPolicy;
use cronbox_domain::webhook::SigningSecret;
use cronbox_executor::http::{blocked_literal, unredirected_client};

use crate::mail::SendError;

/// What a 410 means for the channel: the receiver says it is gone for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    Send(SendError),
    Gone,
}

#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    targets: TargetPolicy,
}

impl WebhookSender {
    pub fn new(targets: TargetPolicy) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: unredirected_client(targets.clone())?,
            targets,
        })
    }

    pub async fn send(
        &self,
        url: &str,
        secret: &SigningSecret,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<(), WebhookError> {
        let permanent = |e: String| WebhookError::Send(SendError::Permanent(e));
        let parsed = reqwest::Url::parse(url).map_err(|e| permanent(format!("invalid URL: {e}")))?;
        if let Some(ip) = blocked_literal(&parsed, &self.targets) {
            return Err(permanent(format!(
                "target address {ip} is private, loopback or reserved"
            )));
        }
        let response = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", secret.sign(id, timestamp, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                WebhookError::Send(SendError::Retry {
                    error: format!("{}", error_chain(&e)),
                    rate_limited: false,
                    after: None,
                })
            })?;
        let status = response.status().as_u16();
        let after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        match status {
            200..=299 => Ok(()),
            410 => Err(WebhookError::Gone),
            429 => Err(WebhookError::Send(SendError::Retry {
                error: "the endpoint answered 429".into(),
                rate_limited: true,
                after: after.or(Some(60)),
            })),
            300..=399 => Err(WebhookError::Send(SendError::Retry {
                error: format!("the endpoint answered {status} (redirects are not followed)"),
                rate_limited: false,
                after,
            })),
            _ => Err(WebhookError::Send(SendError::Retry {
                error: format!("the endpoint answered {status}"),
                rate_limited: false,
                after,
            })),
        }
    }
}

/// The error and its causes on one line (reqwest's top-level text alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
