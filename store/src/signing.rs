//! Workspace signing secrets, encrypted at rest.
//!
//! Each secret is sealed with XChaCha20-Poly1305 under the operator's master key
//! (`CRONBOX_SECRETS_KEY`, never stored in the database), with a random 24-byte nonce and the
//! workspace and secret ids as associated data, so a row copied to another workspace does not
//! decrypt. A workspace has one current secret (`expires_at IS NULL`) and, after a rotation,
//! older ones that keep signing until their `expires_at`. The first secret is made on first
//! use. Executors cache a workspace's secrets briefly; the overlap of a rotation covers that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use cronbox_domain::webhook::{SigningSecret, SECRET_BYTES};
use rand::RngCore;
use sha2::Digest;
use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

const NONCE_BYTES: usize = 24;

/// How long an executor reuses a workspace's secrets before reading them again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("CRONBOX_SECRETS_KEY must be 32 bytes, as 64 hex digits or base64")]
    BadMasterKey,
    #[error("a signing secret does not decrypt with this CRONBOX_SECRETS_KEY")]
    Undecryptable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for SigningError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The operator's key for secrets at rest. Debug output never shows it.
#[derive(Clone)]
pub struct MasterKey(XChaCha20Poly1305, [u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// 32 bytes as 64 hex digits or as base64.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| STANDARD.decode(text).ok())
            .filter(|b| b.len() == 32)
            .ok_or(SigningError::BadMasterKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SigningError::BadMasterKey)?;
        // A second key for keyed hashes (lookups by a secret value), derived so that it can
        // never be the cipher key itself.
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&sha2::Sha256::digest(
            [b"cronbox-keyed-hash:".as_slice(), &bytes].concat(),
        ));
        Ok(Self(cipher, mac))
    }

    /// HMAC-SHA256 of `data` under a key derived from the master key, as hex: a stable lookup
    /// value for a secret (a Telegram chat id) that cannot be reversed without the key.
    pub fn keyed_hash(&self, label: &str, data: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.1).expect("HMAC takes any key length");
        m.update(label.as_bytes());
        m.update(b":");
        m.update(data);
        hex::encode(m.finalize().into_bytes())
    }

    fn aad(workspace_id: Uuid, secret_id: Uuid) -> Vec<u8> {
        [workspace_id.as_bytes().as_slice(), secret_id.as_bytes().as_slice()].concat()
    }

    /// nonce ‖ ciphertext, bound to the two ids (a workspace and the secret's own id).
    pub fn seal(&self, workspace_id: Uuid, secret_id: Uuid, plain: &[u8]) -> Result<Vec<u8>, SigningError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let aad = Self::aad(workspace_id, secret_id);
        let sealed = self
            .0
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
            .map_err(|_| SigningError::Undecryptable)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, workspace_id: Uuid, secret_id: Uuid, data: &[u8]) -> Result<Vec<u8>, SigningError> {
        if data.len() < NONCE_BYTES {
            return Err(SigningError::Undecryptable);
        }
        let (nonce, sealed) = data.split_at(NONCE_BYTES);
        let aad = Self::aad(workspace_id, secret_id);
        self.0
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| SigningError::Undecryptable)
    }
}

/// One stored secret, decrypted.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub id: Uuid,
    pub secret: SigningSecret,
    pub created_at: DateTime<Utc>,
    /// None for the current secret.
    pub expires_at: Option<DateTime<Utc>>,
}

type CacheEntry = (Instant, Vec<SigningSecret>);
/// (id, nonce ‖ ciphertext, created_at, expires_at)
type SecretRow = (Uuid, Vec<u8>, DateTime<Utc>, Option<DateTime<Utc>>);

/// Reads, creates and rotates workspace secrets.
pub struct Keyring {
    pool: PgPool,
    key: MasterKey,
    cache: Mutex<HashMap<Uuid, CacheEntry>>,
}

impl Keyring {
    /// The master key, for other secrets sealed the same way (notification channels).
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn new(pool: PgPool, key: MasterKey) -> Self {
        Self {
            pool,
            key,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn new_secret() -> SigningSecret {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        SigningSecret::from_bytes(bytes)
    }

    async fn load(&self, workspace_id: Uuid) -> Result<Vec<StoredSecret>, SigningError> {
        let rows: Vec<SecretRow> = sqlx::query_as(
            "SELECT id, ciphertext, created_at, expires_at FROM signing_secrets
              WHERE workspace_id = $1 AND (expires_at IS NULL OR expires_at > now())
              ORDER BY expires_at IS NOT NULL, created_at DESC",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, data, created_at, expires_at)| {
                Ok(StoredSecret {
                    id,
                    secret: SigningSecret::from_bytes(self.key.open(workspace_id, id, &data)?),
                    created_at,
                    expires_at,
                })
            })
            .collect()
    }

    /// The secrets that sign now, current first; creates the first one if there is none.
    pub async fn in_force(&self, workspace_id: Uuid) -> Result<Vec<StoredSecret>, SigningError> {
        let found = self.load(workspace_id).await?;
        if found.iter().any(|s| s.expires_at.is_none()) {
            return Ok(found);
        }
        let id = Uuid::new_v4();
        let sealed = self.key.seal(workspace_id, id, Self::new_secret().as_bytes())?;
        // Two processes may get here at once: the partial unique index keeps one current secret.
        sqlx::query(
            "INSERT INTO signing_secrets (id, workspace_id, ciphertext, created_at) VALUES ($1, $2, $3, now())
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(workspace_id)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        self.load(workspace_id).await
    }

    /// The secrets to sign with, from a short cache.
    pub async fn signing(&self, workspace_id: Uuid) -> Result<Vec<SigningSecret>, SigningError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, secrets)) = cache.get(&workspace_id) {
                if at.elapsed() < CACHE_TTL {
                    return Ok(secrets.clone());
                }
            }
        }
        let secrets: Vec<SigningSecret> = self
            .in_force(workspace_id)
            .await?
            .into_iter()
            .map(|s| s.secret)
            .collect();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(workspace_id, (Instant::now(), secrets.clone()));
        }
        Ok(secrets)
    }

    /// Makes a new current secret; the previous one keeps signing for `overlap` (no longer if
    /// zero). Returns the new secret and when the previous one stops.
    pub async fn rotate(
        &self,
        workspace_id: Uuid,
        overlap: chrono::Duration,
    ) -> Result<(StoredSecret, Option<DateTime<Utc>>), SigningError> {
        // Make sure there is a current secret to retire (a first rotation must not skip it).
        self.in_force(workspace_id).await?;
        let id = Uuid::new_v4();
        let secret = Self::new_secret();
        let sealed = self.key.seal(workspace_id, id, secret.as_bytes())?;
        let mut tx = self.pool.begin().await?;
        let previous: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE signing_secrets SET expires_at = now() + $2
              WHERE workspace_id = $1 AND expires_at IS NULL
             RETURNING expires_at",
        )
        .bind(workspace_id)
        .bind(overlap)
        .fetch_optional(&mut *tx)
        .await?;
        let created_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO signing_secrets (id, workspace_id, ciphertext, created_at) VALUES ($1, $2, $3, now())
             RETURNING created_at",
        )
        .bind(id)
        .bind(workspace_id)
        .bind(sealed)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&workspace_id);
        }
        Ok((
            StoredSecret {
                id,
                secret,
                created_at,
                expires_at: None,
            },
            previous,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_binds_the_row() {
        let key = MasterKey::parse(&"11".repeat(32)).unwrap();
        let (ws, id) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(ws, id, b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(ws, id, &sealed).unwrap(), b"secret");
        assert!(
            key.open(Uuid::new_v4(), id, &sealed).is_err(),
            "another workspace's row"
        );
        assert!(key.open(ws, Uuid::new_v4(), &sealed).is_err(), "another secret's row");
        let other = MasterKey::parse(&STANDARD.encode([2u8; 32])).unwrap();
        assert!(other.open(ws, id, &sealed).is_err(), "another master key");
        assert!(key.open(ws, id, &sealed[..10]).is_err());
    }

    #[test]
    fn master_keys_must_be_32_bytes() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([0u8; 32])).is_ok());
        assert!(MasterKey::parse(&"ab".repeat(16)).is_err());
        assert!(MasterKey::parse("not a key").is_err());
        assert_eq!(
            format!("{:?}", MasterKey::parse(&"ab".repeat(32)).unwrap()),
            "MasterKey(..)"
        );
    }
}
