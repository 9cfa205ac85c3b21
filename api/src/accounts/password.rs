//! Password hashing: argon2id with OWASP's 2023 minimum (19 MiB, 2 passes, 1 lane). Hashing is
//! deliberately slow CPU work, so it runs on the blocking pool, never on an async worker.
//!
//! At most [`set_concurrency`] hashes run at once in a process (default: one per CPU). Without
//! a bound, a burst of logins takes one blocking thread and 19 MiB each, up to the blocking
//! pool's 512 threads (about 9.5 GiB), and every login slows down together. Beyond the bound a
//! request waits up to [`QUEUE_WAIT`] for a slot and is then refused with 503 and
//! `Retry-After`, which a client can act on.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;

static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();

/// How long a hash waits for a slot before the request is refused.
pub const QUEUE_WAIT: Duration = Duration::from_millis(500);

/// Sets how many hashes run at once in this process (before the first one; later calls are
/// ignored).
pub fn set_concurrency(n: usize) {
    let _ = SLOTS.set(tokio::sync::Semaphore::new(n.max(1)));
}

fn slots() -> &'static tokio::sync::Semaphore {
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

async fn slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    match tokio::time::timeout(QUEUE_WAIT, slots().acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            tracing::warn!("password hashing at capacity; request refused");
            Err(ApiError::Busy { retry_after: 1 })
        }
    }
}

fn hasher() -> Argon2<'static> {
    // The parameters are constants that `Params::new` accepts; a failure here is a programming
    // error caught by the first test that hashes anything.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password`.
pub async fn hash(password: String) -> Result<String, ApiError> {
    let _slot = slot().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))
}

/// Whether `password` matches `phc`. An unparsable stored hash never matches.
pub async fn verify(password: String, phc: String) -> Result<bool, ApiError> {
    let _slot = slot().await?;
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        hasher().verify_password(password.as_bytes(), &parsed).is_ok()
    })
    .await
    .map_err(ApiError::internal)
}

/// A valid hash of a password nobody has: verified against when the e-mail is unknown, so an
/// unknown account costs the same time as a wrong password.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2ZQ9d0Cg9fjUOkkY1N2OvX3zg2s1bcd0hHdxGX0c1xM";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery".into(), h.clone()).await.unwrap());
        assert!(!verify("wrong horse battery".into(), h).await.unwrap());
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify("x".into(), DUMMY_HASH.into()).await.unwrap());
    }
}
