//! The loopback target: answers `200` at once and records, per request, the key and scheduled
//! instant carried in its path and the arrival time, taken when the handler starts (the request
//! head has just been parsed). Lateness is measured here, by the target's clock, not reported by
//! CronBox.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::any;
use axum::Router;

/// One recorded request.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub key: u64,
    /// The instant the call was scheduled for (ms since the epoch), from the URL.
    pub scheduled_ms: i64,
    /// When it arrived (ns since the epoch).
    pub arrival_ns: i64,
}

impl Arrival {
    pub fn lateness_ms(&self) -> f64 {
        (self.arrival_ns - self.scheduled_ms * 1_000_000) as f64 / 1e6
    }
}

#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<Arrival>>>);

pub struct Target {
    pub addr: SocketAddr,
    records: Records,
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

async fn hit(State(records): State<Records>, Path((key, scheduled_ms)): Path<(u64, i64)>) -> &'static str {
    let arrival_ns = now_ns();
    if let Ok(mut r) = records.0.lock() {
        r.push(Arrival {
            key,
            scheduled_ms,
            arrival_ns,
        });
    }
    "ok"
}

/// A target that holds each request `ms` before answering (a slow or hanging service); not
/// recorded.
async fn tarpit(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    "late"
}

impl Target {
    pub async fn start() -> anyhow::Result<Self> {
        let records = Records::default();
        let app = Router::new()
            .route("/h/{key}/{scheduled_ms}", any(hit))
            .route("/tarpit/{ms}", any(tarpit))
            .with_state(records.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, records })
    }

    /// The URL whose arrival records `key` as scheduled for `scheduled_ms`.
    pub fn url(&self, key: u64, scheduled_ms: i64) -> String {
        format!("http://{}/h/{key}/{scheduled_ms}", self.addr)
    }

    /// A URL that holds each call `ms` before answering.
    pub fn tarpit_url(&self, ms: u64) -> String {
        format!("http://{}/tarpit/{ms}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.records.0.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Everything recorded so far; clears the record.
    pub fn take(&self) -> Vec<Arrival> {
        self.records
            .0
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}
