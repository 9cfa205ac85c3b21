//! Failed-login throttling, per account and per client address, in PostgreSQL so that every API
//! process sees the same counters. A fixed window: after `limit` failures the key is refused
//! until the window that counted them ends. Successful logins clear the account's counter.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::ApiError;

pub const WINDOW_SECONDS: i64 = 15 * 60;
pub const ACCOUNT_LIMIT: i32 = 5;
pub const ADDRESS_LIMIT: i32 = 30;

/// Refuses with 429 (and the seconds until the window ends) if any key is at its limit.
pub async fn check(pool: &PgPool, keys: &[(String, i32)]) -> Result<(), ApiError> {
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let rows: Vec<(String, DateTime<Utc>, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT key, window_start, failures, now() FROM auth_throttle
          WHERE key = ANY($1) AND window_start > now() - make_interval(secs => $2)",
    )
    .bind(&names)
    .bind(WINDOW_SECONDS as f64)
    .fetch_all(pool)
    .await?;
    let mut wait = 0;
    for (key, start, failures, now) in rows {
        let limit = keys.iter().find(|(k, _)| *k == key).map_or(i32::MAX, |(_, l)| *l);
        if failures >= limit {
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
    Ok(())
}

/// Counts one failure against every key.
pub async fn fail(pool: &PgPool, keys: &[(String, i32)]) -> Result<(), ApiError> {
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    sqlx::query(
        "INSERT INTO auth_throttle (key, window_start, failures)
         SELECT k, now(), 1 FROM unnest($1::text[]) AS k
         ON CONFLICT (key) DO UPDATE SET
           failures = CASE WHEN auth_throttle.window_start <= now() - make_interval(secs => $2) THEN 1
                           ELSE auth_throttle.failures + 1 END,
           window_start = CASE WHEN auth_throttle.window_start <= now() - make_interval(secs => $2) THEN now()
                               ELSE auth_throttle.window_start END",
    )
    .bind(&names)
    .bind(WINDOW_SECONDS as f64)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn clear(pool: &PgPool, key: &str) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM auth_throttle WHERE key = $1")
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
