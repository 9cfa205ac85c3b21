//! A small Telegram Bot API client: `sendMessage` (HTML parse mode, no link previews),
//! `getUpdates` (long polling), `setWebhook`, `getMe`. The base URL is configurable
//! (`CRONBOX_TELEGRAM_API_URL`) so tests point it at a fake.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::mail::SendError;

pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelegramError {
    Send(SendError),
    /// 403: the bot was blocked by the user or removed from the chat. Permanent.
    Blocked(String),
    /// The group became a supergroup; the message must go to the new chat.
    Migrated(i64),
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u32>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

#[derive(Clone)]
pub struct TelegramBot {
    client: reqwest::Client,
    base: String,
    /// The bot's @username (from getMe), for deep links.
    pub username: String,
}

impl std::fmt::Debug for TelegramBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TelegramBot(@{})", self.username)
    }
}

impl TelegramBot {
    /// A bot for `token`; asks `getMe` for its username.
    pub async fn connect(api_url: &str, token: &str) -> Result<Self, TelegramError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelegramError::Send(SendError::Permanent(e.to_string())))?;
        let mut bot = Self {
            client,
            base: format!("{}/bot{token}", api_url.trim_end_matches('/')),
            username: String::new(),
        };
        let me = bot.call("getMe", &json!({}), None).await?;
        bot.username = me
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(bot)
    }

    async fn call(&self, method: &str, body: &Value, timeout: Option<Duration>) -> Result<Value, TelegramError> {
        let mut request = self.client.post(format!("{}/{method}", self.base)).json(body);
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        let retry = |error: String| {
            TelegramError::Send(SendError::Retry {
                error,
                rate_limited: false,
                after: None,
            })
        };
        // The token is part of the URL: errors are reported without it.
        let response = request
            .send()
            .await
            .map_err(|e| retry(format!("Telegram {method}: {}", e.without_url())))?;
        let status = response.status().as_u16();
        let parsed: ApiResponse = response.json().await.map_err(|e| {
            retry(format!(
                "Telegram {method} answered {status} without JSON: {}",
                e.without_url()
            ))
        })?;
        if parsed.ok {
            return Ok(parsed.result);
        }
        let code = parsed.error_code.unwrap_or(status);
        let description = parsed.description.unwrap_or_default();
        let error = format!("Telegram {method} answered {code}: {description}");
        let params = parsed.parameters;
        if let Some(to) = params.as_ref().and_then(|p| p.migrate_to_chat_id) {
            return Err(TelegramError::Migrated(to));
        }
        Err(match code {
            429 => TelegramError::Send(SendError::Retry {
                error,
                rate_limited: true,
                after: params.and_then(|p| p.retry_after).or(Some(1)),
            }),
            403 => TelegramError::Blocked(description),
            400..=499 => TelegramError::Send(SendError::Permanent(error)),
            _ => retry(error),
        })
    }

    pub async fn send_message(&self, chat_id: i64, html: &str) -> Result<(), TelegramError> {
        self.call(
            "sendMessage",
            &json!({
                "chat_id": chat_id,
                "text": html,
                "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": true},
            }),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Long-polls for updates after `offset`, waiting up to `timeout` seconds.
    pub async fn get_updates(&self, offset: i64, timeout: u32) -> Result<Vec<Value>, TelegramError> {
        let result = self
            .call(
                "getUpdates",
                &json!({"offset": offset, "timeout": timeout, "allowed_updates": ["message"]}),
                Some(Duration::from_secs(timeout as u64 + 15)),
            )
            .await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }

    pub async fn set_webhook(&self, url: &str, secret_token: &str) -> Result<(), TelegramError> {
        self.call(
            "setWebhook",
            &json!({"url": url, "secret_token": secret_token, "allowed_updates": ["message"]}),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn delete_webhook(&self) -> Result<(), TelegramError> {
        self.call("deleteWebhook", &json!({}), None).await.map(|_| ())
    }
}
