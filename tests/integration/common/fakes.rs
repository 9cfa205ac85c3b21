//! Local fakes of the providers CronBox talks to, each recording exactly what it was sent and
//! able to answer with errors, rate limits and delays: an SMTP server, the Resend API and the
//! Telegram Bot API. CronBox reaches them through its real clients (lettre, reqwest) by their
//! configurable base URLs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One mail as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct SmtpMail {
    pub from: String,
    pub to: Vec<String>,
    /// The whole message (headers and body), dot-unstuffed.
    pub data: String,
}

impl SmtpMail {
    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n").peekable();
        while let Some(line) = lines.next() {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    let mut value = v.trim().to_string();
                    while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                        value.push(' ');
                        value.push_str(lines.next().unwrap_or_default().trim());
                    }
                    return Some(value);
                }
            }
        }
        None
    }

    /// The decoded text of the message (quoted-printable and base64 parts undone, crudely:
    /// enough to search for words and links).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in self.data.split("\r\n\r\n").skip(1) {
            let qp = part.replace("=\r\n", "");
            let mut bytes = Vec::new();
            let b = qp.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'=' && i + 2 < b.len() {
                    if let Ok(v) = u8::from_str_radix(&qp[i + 1..i + 3], 16) {
                        bytes.push(v);
                        i += 3;
                        continue;
                    }
                }
                bytes.push(b[i]);
                i += 1;
            }
            out.push_str(&String::from_utf8_lossy(&bytes));
            use base64::Engine;
            let compact: String = part.lines().take_while(|l| !l.starts_with("--")).collect();
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(compact.trim()) {
                out.push_str(&String::from_utf8_lossy(&decoded));
            }
            out.push('\n');
        }
        out
    }
}

#[derive(Default)]
struct SmtpState {
    mails: Vec<SmtpMail>,
    /// Answer `451` to this many DATA commands first (a transient failure).
    fail_next: u32,
}

/// A plain SMTP server on loopback (no TLS, no auth): enough protocol for lettre.
#[derive(Clone)]
pub struct FakeSmtp {
    pub port: u16,
    state: Arc<Mutex<SmtpState>>,
}

impl FakeSmtp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let port = listener.local_addr().expect("smtp addr").port();
        let state = Arc::new(Mutex::new(SmtpState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = session(sock, st).await;
                });
            }
        });
        Self { port, state }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn mails(&self) -> Vec<SmtpMail> {
        self.state.lock().expect("smtp lock").mails.clone()
    }

    pub fn mails_to(&self, to: &str) -> Vec<SmtpMail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .collect()
    }

    pub fn fail_next(&self, n: u32) {
        self.state.lock().expect("smtp lock").fail_next = n;
    }
}

async fn session(sock: tokio::net::TcpStream, state: Arc<Mutex<SmtpState>>) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 fake-smtp ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    // Bounded: a session ends with the peer, or after this many commands.
    for _ in 0..10_000 {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-fake-smtp\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..]
                .trim()
                .trim_matches(['<', '>'])
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches(['<', '>'])
                .to_string();
            to.clear();
            w.write_all(b"250 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(
                cmd[8..]
                    .trim()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_matches(['<', '>'])
                    .to_string(),
            );
            w.write_all(b"250 ok\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let fail = {
                let mut g = state.lock().expect("smtp lock");
                if g.fail_next > 0 {
                    g.fail_next -= 1;
                    true
                } else {
                    g.mails.push(SmtpMail {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                    });
                    false
                }
            };
            if fail {
                w.write_all(b"451 try again later\r\n").await?;
            } else {
                w.write_all(b"250 queued\r\n").await?;
            }
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 ok\r\n").await?;
        } else {
            w.write_all(b"502 not implemented\r\n").await?;
        }
    }
    Ok(())
}

/// One request to a fake HTTP provider.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: std::time::Instant,
}

/// What the next requests get instead of success: (status, extra JSON / headers).
#[derive(Debug, Clone)]
pub enum Answer {
    /// 429 with `retry-after` (Resend) or `parameters.retry_after` (Telegram).
    RateLimited(u32),
    Status(u16),
    /// Telegram: 403 "bot was blocked by the user".
    Blocked,
    /// Telegram: the group became a supergroup.
    Migrated(i64),
}

#[derive(Default)]
struct HttpState {
    received: Vec<Received>,
    answers: VecDeque<Answer>,
    /// Telegram: updates served to getUpdates.
    updates: Vec<Value>,
    delay: Option<Duration>,
}

/// The Resend API (`POST /emails`) or the Telegram Bot API (`/bot<token>/<method>`).
#[derive(Clone)]
pub struct FakeHttp {
    pub port: u16,
    state: Arc<Mutex<HttpState>>,
}

async fn resend(State(st): State<Arc<Mutex<HttpState>>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (answer, delay) = {
        let mut g = st.lock().expect("fake lock");
        let answer = g.answers.pop_front();
        g.received.push(Received {
            path: "/emails".into(),
            headers,
            body,
            at: std::time::Instant::now(),
        });
        (answer, g.delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    match answer {
        None => (StatusCode::OK, axum::Json(json!({"id": uuid::Uuid::new_v4()}))).into_response(),
        Some(Answer::RateLimited(s)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", s.to_string())],
            axum::Json(json!({"name": "rate_limit_exceeded", "message": "Too many requests"})),
        )
            .into_response(),
        Some(Answer::Status(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({"name": "error", "message": "as asked"})),
        )
            .into_response(),
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn telegram(
    State(st): State<Arc<Mutex<HttpState>>>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !bot.starts_with("bot") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match method.as_str() {
        "getMe" => {
            return axum::Json(
                json!({"ok": true, "result": {"id": 4242, "is_bot": true, "username": "cronbox_test_bot"}}),
            )
            .into_response()
        }
        "deleteWebhook" | "setWebhook" => {
            st.lock().expect("fake lock").received.push(Received {
                path: method.clone(),
                headers,
                body,
                at: std::time::Instant::now(),
            });
            return axum::Json(json!({"ok": true, "result": true})).into_response();
        }
        "getUpdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            // A short long-poll: answer at once when there is something, else after a moment.
            for _ in 0..20 {
                let ready: Vec<Value> = st
                    .lock()
                    .expect("fake lock")
                    .updates
                    .iter()
                    .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                    .cloned()
                    .collect();
                if !ready.is_empty() {
                    return axum::Json(json!({"ok": true, "result": ready})).into_response();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return axum::Json(json!({"ok": true, "result": []})).into_response();
        }
        _ => {}
    }
    let answer = {
        let mut g = st.lock().expect("fake lock");
        let answer = g.answers.pop_front();
        g.received.push(Received {
            path: method,
            headers,
            body,
            at: std::time::Instant::now(),
        });
        answer
    };
    let err = |code: u16, description: &str, parameters: Value| {
        (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            axum::Json(json!({"ok": false, "error_code": code, "description": description, "parameters": parameters})),
        )
            .into_response()
    };
    match answer {
        None => axum::Json(json!({"ok": true, "result": {"message_id": 1}})).into_response(),
        Some(Answer::RateLimited(s)) => err(429, "Too Many Requests: retry after", json!({"retry_after": s})),
        Some(Answer::Blocked) => err(403, "Forbidden: bot was blocked by the user", json!({})),
        Some(Answer::Migrated(to)) => err(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            json!({"migrate_to_chat_id": to}),
        ),
        Some(Answer::Status(code)) => err(code, "as asked", json!({})),
    }
}

impl FakeHttp {
    async fn start(app: axum::Router<Arc<Mutex<HttpState>>>) -> Self {
        let state = Arc::new(Mutex::new(HttpState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().expect("fake addr").port();
        let app = app.with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, state }
    }

    pub async fn resend() -> Self {
        Self::start(axum::Router::new().route("/emails", axum::routing::post(resend))).await
    }

    pub async fn telegram() -> Self {
        Self::start(axum::Router::new().route("/{bot}/{method}", axum::routing::post(telegram))).await
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("fake lock").received.clone()
    }

    pub fn received_at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// The next requests are answered like this, in order, then successfully again.
    pub fn answer(&self, answers: Vec<Answer>) {
        self.state.lock().expect("fake lock").answers.extend(answers);
    }

    pub fn delay(&self, d: Option<Duration>) {
        self.state.lock().expect("fake lock").delay = d;
    }

    /// Telegram: an update getUpdates will serve (its `update_id` is assigned here).
    pub fn push_update(&self, mut update: Value) -> i64 {
        let mut g = self.state.lock().expect("fake lock");
        let id = 1000 + g.updates.len() as i64;
        update["update_id"] = json!(id);
        g.updates.push(update);
        id
    }

    /// Telegram: a text message in a chat, as a user with `language_code` sends it.
    pub fn say(&self, chat_id: i64, chat_type: &str, text: &str, language_code: &str) -> i64 {
        self.push_update(json!({
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": chat_id, "type": chat_type, "title": "Ops <team>"},
                "from": {"id": 7, "is_bot": false, "first_name": "Ivan", "language_code": language_code},
                "text": text,
            }
        }))
    }
}
