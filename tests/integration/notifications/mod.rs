//! Notifications end to end: account mail really sent, alerts decided once and delivered on
//! e-mail, signed webhooks and Telegram, against local fakes of SMTP, Resend and the Bot API
//! that record what CronBox sends and answer with errors and rate limits.

use crate::common;

mod account_mail;
mod alerts;
mod crash;
mod telegram;

use std::time::Duration;

use common::fakes::{FakeHttp, FakeSmtp};
use common::users::{call, owned_workspace};
use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

pub const BOT_TOKEN: &str = "4242:test-token";

/// A running CronBox wired to fake providers, with a workspace owned by a logged-in user.
pub struct Setup {
    pub env: TestEnv,
    pub smtp: FakeSmtp,
    pub telegram: FakeHttp,
    /// The owner's access token and the workspace id.
    pub token: String,
    pub ws: String,
}

impl Setup {
    pub async fn start() -> Self {
        Self::start_with(vec![]).await
    }

    pub async fn start_with(extra: Vec<(&str, &str)>) -> Self {
        let smtp = FakeSmtp::start().await;
        let telegram = FakeHttp::telegram().await;
        let (smtp_url, tg_url) = (smtp.url(), telegram.url());
        let mut env_vars = vec![
            ("CRONBOX_SMTP_URL", smtp_url.as_str()),
            ("CRONBOX_MAIL_FROM", "CronBox <alerts@cronbox.test>"),
            ("CRONBOX_TELEGRAM_BOT_TOKEN", BOT_TOKEN),
            ("CRONBOX_TELEGRAM_API_URL", tg_url.as_str()),
            ("CRONBOX_MIN_REALERT_SECONDS", "2"),
        ];
        env_vars.extend(extra);
        let env = TestEnv::start_with(env_vars).await;
        let (token, ws) = owned_workspace(&env, "owner@example.com", "Ops <b>", Some("business")).await;
        Self {
            env,
            smtp,
            telegram,
            token,
            ws,
        }
    }

    pub fn path(&self, p: &str) -> String {
        format!("/v1/workspaces/{}{p}", self.ws)
    }

    pub async fn call(&self, method: Method, p: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.env, method, &self.path(p), &self.token, body).await
    }

    /// An e-mail channel, confirmed through the link in its confirmation mail.
    pub async fn email_channel(&self, address: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/notification-channels",
                Some(json!({"type": "email", "name": "Ops mail", "address": address, "language": "en"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["status"], "pending_verification");
        let id = v["id"].as_str().unwrap().to_string();
        let mail = self
            .env
            .eventually(Duration::from_secs(15), "the confirmation mail", || async {
                self.smtp.mails_to(address).into_iter().next()
            })
            .await;
        let link = link_in(&mail.text(), "/notification-channels/confirm?token=").expect("confirm link");
        post_form(&self.env, &link, &[]).await;
        self.env
            .eventually(Duration::from_secs(10), "the channel to be active", || async {
                let (_, v) = self
                    .call(Method::GET, &format!("/notification-channels/{id}"), None)
                    .await;
                (v["status"] == "active").then_some(())
            })
            .await;
        id
    }

    /// A webhook channel to the test target's `path`; returns (id, secret).
    pub async fn webhook_channel(&self, path: &str) -> (String, String) {
        let (s, v) = self
            .call(
                Method::POST,
                "/notification-channels",
                Some(json!({"type": "webhook", "name": "Ops hook", "url": self.env.target_url(path)})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        )
    }

    /// Waits until the read model shows `n` channels (the decider's index follows the same log).
    pub async fn wait_channels(&self, n: usize) {
        self.env
            .eventually(Duration::from_secs(10), "the channels to be listed", || async {
                let (_, v) = self.call(Method::GET, "/notification-channels", None).await;
                (v.as_array().map(|a| a.len()) == Some(n)).then_some(())
            })
            .await;
        // The decider follows the same log as the list: wait until it knows them too.
        let pool = self.env.db.pool.clone();
        self.env
            .eventually(Duration::from_secs(10), "the decider to know the channels", || async {
                let known: i64 = sqlx::query_scalar("SELECT count(*) FROM alert_channel_index")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (known as usize == n).then_some(())
            })
            .await;
    }

    pub async fn cron_job(&self, body: Value) -> String {
        let (s, v) = self.call(Method::POST, "/cron", Some(body)).await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Counts events of `event_type` in the log.
    pub async fn count(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.env.db.pool)
            .await
            .unwrap_or(0)
    }

    /// Waits until `more` further events of `event_type` are in the log than `now`.
    pub async fn more(&self, event_type: &str, now: i64, more: i64) {
        self.env
            .eventually(
                Duration::from_secs(30),
                &format!("{more} more {event_type}"),
                || async { (self.count(event_type).await >= now + more).then_some(()) },
            )
            .await;
    }

    /// Waits until no notification is waiting to be delivered.
    pub async fn settled(&self) {
        let pool = self.env.db.pool.clone();
        self.env
            .eventually(
                Duration::from_secs(30),
                "every notification to be delivered",
                || async {
                    let waiting: i64 = sqlx::query_scalar(
                        "SELECT (SELECT count(*) FROM notifications WHERE status IN ('queued', 'retrying'))
                          + (SELECT count(*) FROM events WHERE event_type = 'NotificationQueued')
                          - (SELECT count(*) FROM notifications)",
                    )
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                    (waiting == 0).then_some(())
                },
            )
            .await;
    }

    pub async fn deliveries(&self, channel: &str) -> Vec<Value> {
        let (s, v) = self
            .call(
                Method::GET,
                &format!("/notification-channels/{channel}/deliveries"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }
}

/// The first link in `text` that contains `marker`.
pub fn link_in(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)?;
    let start = text[..at].rfind("http")?;
    let end = text[start..]
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
        .map_or(text.len(), |e| start + e);
    Some(text[start..end].replace("&amp;", "&"))
}

/// Opens a mail link like a browser: GET shows a page with a form; posting it (with the token
/// and `extra` fields) does the thing. Returns the POST's status and page.
pub async fn post_form(env: &TestEnv, link: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let page = env.http.get(link).send().await.expect("open link");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page
        .headers()
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap_or_default().starts_with("text/html")));
    let html = page.text().await.unwrap();
    let token = link.split("token=").nth(1).expect("token in link");
    assert!(html.contains("<form method=\"post\""), "{html}");
    let action = link.split('?').next().unwrap();
    let mut form: Vec<(&str, &str)> = vec![("token", token)];
    form.extend_from_slice(extra);
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let r = env
        .http
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("post form");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Verifies a Standard Webhooks signature the way a receiver would.
pub fn signature_valid(secret: &str, headers: &reqwest::header::HeaderMap, body: &[u8]) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    h("webhook-signature").split(' ').any(|s| s == expected)
}
