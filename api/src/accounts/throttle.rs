//! Failed-login throttling, per account and per client address, in PostgreSQL so that every API
//! process sees the same counters. A fixed window: after `limit` attempts that failed (or are
//! still being checked) the key is refused until the window that counted them ends. A successful
//! login clears the account's counter and gives its address back the attempt.
//!
//! The attempt is **reserved before the password is checked**, in one statement that increments
//! and returns the counts: a burst of parallel guesses is numbered as it arrives, so exactly
//! `limit` of them reach the (slow) password check and the rest are refused at once. Checking
//! first and counting after would let every request of the burst through.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::ApiError;

pub const WINDOW_SECONDS: i64 = 15 * 60;
pub const ACCOUNT_LIMIT: i32 = 5;
pub const ADDRESS_LIMIT: i32 = 30;

/// An attempt counted against every key; a failed check leaves it counted.
pub struct Reservation {
    keys: Vec<String>,
}

/// Counts one attempt against every key and refuses with 429 (and the seconds until the window
/// ends) if that takes any key past its limit.
pub async fn reserve(pool: &PgPool, keys: &[(String, i32)]) -> Result<Reservation, ApiError> {
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let rows: Vec<(String, DateTime<Utc>, i32, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO auth_throttle (key, window_start, failures)
         SELECT k, now(), 1 FROM unnest($1::text[]) AS k
         ON CONFLICT (key) DO UPDATE SET
           failures = CASE WHEN auth_throttle.window_start <= now() - make_interval(secs => $2) THEN 1
                           ELSE auth_throttle.failures + 1 END,
           window_start = CASE WHEN auth_throttle.window_start <= now() - make_interval(secs => $2) THEN now()
                               ELSE auth_throttle.window_start END
         RETURNING key, window_start, failures, now()",
    )
    .bind(&names)
    .bind(WINDOW_SECONDS as f64)
    .fetch_all(pool)
    .await?;
    let mut wait = 0;
    for (key, start, failures, now) in rows {
        let limit = keys.iter().find(|(k, _)| *k == key).map_or(i32::MAX, |(_, l)| *l);
        if failures > limit {
            wait = wait.max(
                (start + chrono::Duration::seconds(WINDOW_SECONDS) - now)
                    .num_seconds()
                    .max(1),
            );
        }
    }
    if wait > 0 {
        return Err(ApiError::TooManyRequests {
            retry_after: wait as u64,
        });
    }
    Ok(Reservation {
        keys: names.into_iter().map(str::to_owned).collect(),
    })
}

impl Reservation {
    /// The password was right: `clear` (the account) starts afresh, the other keys get their
    /// attempt back.
    pub async fn succeeded(self, pool: &PgPool, clear: &str) -> Result<(), ApiError> {
        sqlx::query("UPDATE auth_throttle SET failures = greatest(failures - 1, 0) WHERE key = ANY($1) AND key <> $2")
            .bind(&self.keys)
            .bind(clear)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM auth_throttle WHERE key = $1")
            .bind(clear)
            .execute(pool)
            .await?;
        Ok(())
    }
}
