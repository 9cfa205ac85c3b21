//! Receivers for the `alerts` scenario: a plain SMTP server and a webhook endpoint on loopback,
//! each noting when every message arrived and which jobs it names.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::target::now_ns;

/// (arrival ns, the message's text) of everything received.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<(i64, String)>>>);

impl Inbox {
    pub fn take(&self) -> Vec<(i64, String)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn push(&self, text: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push((now_ns(), text));
        }
    }
}

/// An SMTP server that accepts everything (no TLS, no auth). Returns its port.
pub async fn smtp(inbox: Inbox) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let _ = session(sock, inbox).await;
            });
        }
    });
    Ok(port)
}

async fn session(sock: tokio::net::TcpStream, inbox: Inbox) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 bench-smtp\r\n").await?;
    let mut line = String::new();
    for _ in 0..100_000 {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            w.write_all(b"250-bench-smtp\r\n250 8BITMIME\r\n").await?;
        } else if cmd == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 || line == ".\r\n" {
                    break;
                }
                data.push_str(&line);
            }
            // Quoted-printable soft breaks undone, so names are whole again.
            inbox.push(data.replace("=\r\n", ""));
            w.write_all(b"250 queued\r\n").await?;
        } else if cmd == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n").await?;
        }
    }
    Ok(())
}

async fn hook(State(inbox): State<Inbox>, body: Bytes) -> &'static str {
    inbox.push(String::from_utf8_lossy(&body).into_owned());
    "ok"
}

/// A webhook endpoint answering 200 to every POST. Returns its port.
pub async fn webhook(inbox: Inbox) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/alerts", axum::routing::post(hook))
        .with_state(inbox);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

/// Every `bench-alert-<n>` in `text`.
pub fn names(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("bench-alert-") {
        rest = &rest[i + 12..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            out.push(n);
        }
    }
    out
}

/// A Telegram Bot API that accepts everything: `getMe`, `setWebhook`, and every `sendMessage`
/// (its text noted). Returns its port.
pub async fn telegram(inbox: Inbox) -> anyhow::Result<u16> {
    use axum::extract::Path;
    use axum::Json;
    use serde_json::{json, Value};
    async fn bot(State(inbox): State<Inbox>, Path((_bot, method)): Path<(String, String)>, body: Bytes) -> Json<Value> {
        Json(match method.as_str() {
            "getMe" => json!({"ok": true, "result": {"id": 1, "is_bot": true, "username": "bench_bot"}}),
            "sendMessage" => {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                inbox.push(body["text"].as_str().unwrap_or_default().to_string());
                json!({"ok": true, "result": {"message_id": 1, "date": 0, "chat": body["chat_id"]}})
            }
            _ => json!({"ok": true, "result": true}),
        })
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/{bot}/{method}", axum::routing::post(bot))
        .with_state(inbox);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}
