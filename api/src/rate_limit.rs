//! Requests per minute, shared by every API process through PostgreSQL.
//!
//! Fixed one-minute windows aligned to the clock: each request increments its key's row for the
//! current window and learns the new count in the same statement, so two processes can never
//! both admit the last request of a window. The table is UNLOGGED: no WAL, no fsync, a single
//! row can take tens of thousands of increments a second, and a server crash loses only counts
//! that would have expired within a minute anyway. A database error lets the request through
//! (logged): an outage of the limiter must not become an outage of the API.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use sqlx::PgPool;

pub const WINDOW_SECONDS: i64 = 60;

/// Whom a count belongs to.
#[derive(Debug, Clone)]
pub enum Subject {
    ApiKey(uuid::Uuid),
    /// A user acting in one workspace (each workspace's plan sets its own rate).
    UserIn(uuid::Uuid, uuid::Uuid),
    /// A user on routes outside any workspace.
    User(uuid::Uuid),
    /// An unauthenticated client.
    Address(std::net::IpAddr),
    /// Everything authenticated in one workspace together: new keys (or more members) do not
    /// bring a fresh allowance.
    Workspace(uuid::Uuid),
    /// Test requests of one user or key in one workspace ([`crate::probe`]).
    Probe(uuid::Uuid, uuid::Uuid),
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Self::ApiKey(k) => format!("key:{k}"),
            Self::UserIn(u, w) => format!("user:{u}:{w}"),
            Self::User(u) => format!("user:{u}"),
            Self::Address(ip) => format!("ip:{ip}"),
            Self::Workspace(w) => format!("ws:{w}"),
            Self::Probe(u, w) => format!("probe:{u}:{w}"),
        }
    }
}

/// The state of one subject's window after a request.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset: u32,
    pub allowed: bool,
}

impl Quota {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF httpapi draft), plus
    /// `RateLimit-Policy` and, once refused, `Retry-After`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset));
        if let Ok(v) = HeaderValue::from_str(&format!("{};w={WINDOW_SECONDS}", self.limit)) {
            headers.insert("ratelimit-policy", v);
        }
        if !self.allowed {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(self.reset.max(1)));
        }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    pool: PgPool,
    /// Requests per minute for unauthenticated routes, per client address.
    pub per_address: u32,
    /// Off: every request is allowed and no headers are sent (operators, benchmarks).
    pub enabled: bool,
}

impl RateLimiter {
    pub fn new(pool: PgPool, per_address: u32, enabled: bool) -> Self {
        Self {
            pool,
            per_address,
            enabled,
        }
    }

    /// Counts one request of `subject` against `limit` per minute.
    pub async fn hit(&self, subject: &Subject, limit: u32) -> Option<Quota> {
        self.hit_all(&[(subject.clone(), limit)]).await
    }

    /// Counts one request against each subject's limit, in one statement; the quota that
    /// binds first is returned (refused if any subject is over its limit).
    pub async fn hit_all(&self, subjects: &[(Subject, u32)]) -> Option<Quota> {
        if !self.enabled || subjects.is_empty() {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let window = now - now.rem_euclid(WINDOW_SECONDS);
        let reset = (window + WINDOW_SECONDS - now) as u32;
        let mut keys: Vec<String> = subjects.iter().map(|(s, _)| s.key()).collect();
        // One row lock order for every request, whatever order its subjects come in.
        keys.sort();
        let hits: Result<Vec<(String, i64)>, _> = sqlx::query_as(
            "INSERT INTO rate_limit_counters (subject, window_start, hits)
             SELECT k, $2, 1 FROM unnest($1::text[]) AS k ORDER BY k
             ON CONFLICT (subject, window_start) DO UPDATE SET hits = rate_limit_counters.hits + 1
             RETURNING subject, hits",
        )
        .bind(&keys)
        .bind(window)
        .fetch_all(&self.pool)
        .await;
        match hits {
            Ok(rows) => subjects
                .iter()
                .filter_map(|(subject, limit)| {
                    let key = subject.key();
                    let hits = rows.iter().find(|(k, _)| *k == key)?.1;
                    let hits = u32::try_from(hits).unwrap_or(u32::MAX);
                    Some(Quota {
                        limit: *limit,
                        remaining: limit.saturating_sub(hits),
                        reset,
                        allowed: hits <= *limit,
                    })
                })
                .min_by_key(|q| (q.allowed, q.remaining)),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; request let through");
                None
            }
        }
    }
}

/// Drops windows that ended (called by the retention sweep's loop).
pub async fn forget_old_windows(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    Ok(sqlx::query("DELETE FROM rate_limit_counters WHERE window_start < $1")
        .bind(now - 2 * WINDOW_SECONDS)
        .execute(pool)
        .await?
        .rows_affected())
}
