//! A loopback HTTP target that records every request it receives, with its arrival time.
//!
//! Paths steer the answer: `/fail…` answers 500, `/slow/<ms>…` waits before answering 200,
//! `/flaky/<n>/…` fails the first n requests to that path, `/status/<code>/…` answers that
//! code, `/retry-after/<secs>/<n>/…` answers 503 with `Retry-After: <secs>` the first n times,
//! `/json/…` answers `{"data": {"state": "done"}}`, `/binary/{nul,png,gzip}` answer bytes that
//! are not storable text, anything else answers 200 `ok`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub run_id: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    arrivals: Vec<Arrival>,
    hits: HashMap<String, u32>,
}

#[derive(Clone)]
pub struct Target {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let at = Utc::now();
    let path = uri.path().to_string();
    let hit = {
        let mut g = inner.lock().expect("target lock");
        g.arrivals.push(Arrival {
            at,
            method: method.to_string(),
            path: path.clone(),
            run_id: headers
                .get("x-cronbox-run-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            headers: headers.clone(),
            body: body.to_vec(),
        });
        let n = g.hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["fail", ..] => (StatusCode::INTERNAL_SERVER_ERROR, "nope").into_response(),
        ["slow", ms, ..] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
            (StatusCode::OK, "slow ok").into_response()
        }
        ["flaky", n, ..] if hit <= n.parse().unwrap_or(0) => {
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
        ["status", code, ..] => {
            let code = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            (code.unwrap_or(StatusCode::BAD_REQUEST), "as asked").into_response()
        }
        ["retry-after", secs, n, ..] if hit <= n.parse().unwrap_or(0) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", secs.to_string())],
            "later",
        )
            .into_response(),
        // Bodies the database cannot hold as text: a NUL byte, a PNG, gzip.
        ["binary", "nul", ..] => (StatusCode::OK, b"a\0b".to_vec()).into_response(),
        ["binary", "png", ..] => (
            StatusCode::OK,
            [("content-type", "image/png")],
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe".to_vec(),
        )
            .into_response(),
        ["binary", "gzip", ..] => (
            StatusCode::OK,
            [("content-type", "application/gzip")],
            b"\x1f\x8b\x08\0\0\0\0\0\0\x03\xcb\x07\0".to_vec(),
        )
            .into_response(),
        ["cookie", ..] => (StatusCode::OK, [("set-cookie", "sid=target-secret")], "ok").into_response(),
        ["json", ..] => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"data": {"state": "done"}}"#,
        )
            .into_response(),
        _ => (StatusCode::OK, "ok").into_response(),
    }
}

impl Target {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let port = listener.local_addr().expect("target addr").port();
        let app = axum::Router::new().fallback(record).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.inner.lock().expect("target lock").arrivals.clone()
    }

    pub fn arrivals_at(&self, path: &str) -> Vec<Arrival> {
        self.arrivals().into_iter().filter(|a| a.path == path).collect()
    }
}
