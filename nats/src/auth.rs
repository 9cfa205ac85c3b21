//! NATS decentralized auth: the operator, account and user JWTs that let CronBox hand a customer
//! credentials scoped to their own event subscription, which the server checks by itself with no
//! call back to us.
//!
//! `cronbox nats init` makes an operator, a system account and the application account, writes
//! the server's `auth.conf` (operator mode, memory resolver with both accounts preloaded), the
//! service's own credentials (full rights in the application account), and the application
//! account's seed. The API signs subscriber JWTs with that seed; each subscriber JWT allows only
//! the JetStream API calls of its own durable consumer and its own inbox. The seed a creds file
//! carries is generated per subscription, shown once and never stored.
//!
//! The JWT format is nats-io/jwt v2: `{"typ":"JWT","alg":"ed25519-nkey"}`, claims with `jti`
//! (base32 SHA-512/256 of the standard claims), `iat`, `iss`, `sub`, `name`, optional `exp`, and
//! the type-specific part under `nats`; base64url without padding, signed with the issuer's nkey.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use nkeys::KeyPair;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512_256};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid account seed: {0}")]
    Seed(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the seed is not an account seed (it must start with SA)")]
    NotAccount,
}

/// What `cronbox nats init` writes.
pub struct AuthSetup {
    /// Include this in the nats-server configuration.
    pub server_conf: String,
    /// The service's own credentials (`CRONBOX_NATS_CREDS` points at this file).
    pub service_creds: String,
    /// The application account's seed (`CRONBOX_NATS_ACCOUNT_SEED`): signs subscriber JWTs.
    pub account_seed: String,
    pub account_public_key: String,
}

/// Permissions of a subscriber's JWT: subjects it may publish to and subscribe to. Anything not
/// listed is denied (a non-empty allow list denies everything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 4648 base32, no padding (what nats-io/jwt uses for `jti`).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Encodes and signs a JWT whose type-specific part is `nats`.
fn encode(
    signer: &KeyPair,
    subject: &str,
    name: &str,
    expires: Option<DateTime<Utc>>,
    nats: Value,
) -> Result<String, AuthError> {
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = Utc::now().timestamp();
    // The standard claims in the order Go marshals them, without jti, hashed into jti.
    let mut std = Map::new();
    if let Some(e) = expires {
        std.insert("exp".into(), json!(e.timestamp()));
    }
    std.insert("iat".into(), json!(iat));
    std.insert("iss".into(), json!(signer.public_key()));
    std.insert("name".into(), json!(name));
    std.insert("sub".into(), json!(subject));
    let jti = base32(&Sha512_256::digest(Value::Object(std.clone()).to_string().as_bytes()));
    let mut claims = std;
    claims.insert("jti".into(), json!(jti));
    claims.insert("nats".into(), nats);
    let payload = b64(Value::Object(claims).to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let sig = signer
        .sign(signing_input.as_bytes())
        .map_err(|e| AuthError::Sign(e.to_string()))?;
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

/// The `.creds` file format every NATS client reads.
pub fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

fn seed_of(kp: &KeyPair) -> Result<String, AuthError> {
    kp.seed().map_err(|e| AuthError::Sign(e.to_string()))
}

fn account_claims(jetstream: bool) -> Value {
    let (mem, disk, streams, consumers) = if jetstream { (-1, -1, -1, -1) } else { (0, 0, 0, 0) };
    json!({
        "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
                   "conn": -1, "leaf": -1, "mem_storage": mem, "disk_storage": disk, "streams": streams,
                   "consumer": consumers},
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    })
}

fn user_claims(permissions: Option<&Permissions>) -> Value {
    let mut nats = json!({"subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2});
    if let Some(p) = permissions {
        nats["pub"] = json!({"allow": p.publish});
        nats["sub"] = json!({"allow": p.subscribe});
    }
    nats
}

/// Generates a fresh operator, system account, application account and service user.
pub fn init() -> Result<AuthSetup, AuthError> {
    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    let service = KeyPair::new_user();
    let operator_jwt = encode(
        &operator,
        &operator.public_key(),
        "cronbox",
        None,
        json!({"system_account": system.public_key(), "type": "operator", "version": 2}),
    )?;
    let system_jwt = encode(&operator, &system.public_key(), "SYS", None, account_claims(false))?;
    let account_jwt = encode(&operator, &account.public_key(), "CRONBOX", None, account_claims(true))?;
    let service_jwt = encode(
        &account,
        &service.public_key(),
        "cronbox-service",
        None,
        user_claims(None),
    )?;
    let server_conf = format!(
        "# Written by `cronbox nats init`: operator mode, accounts preloaded in memory.\n\
         operator: \"{operator_jwt}\"\n\
         system_account: \"{sys}\"\n\
         resolver: MEMORY\n\
         resolver_preload: {{\n  \"{sys}\": \"{system_jwt}\"\n  \"{acc}\": \"{account_jwt}\"\n}}\n",
        sys = system.public_key(),
        acc = account.public_key(),
    );
    Ok(AuthSetup {
        server_conf,
        service_creds: creds_file(&service_jwt, &seed_of(&service)?),
        account_seed: seed_of(&account)?,
        account_public_key: account.public_key(),
    })
}

/// Signs a new subscriber: a fresh user key pair whose JWT (signed by the account) carries
/// `permissions` and expires at `expires`. Returns (creds file, the user's public key).
pub fn issue_user(
    account_seed: &str,
    name: &str,
    permissions: &Permissions,
    expires: DateTime<Utc>,
) -> Result<(String, String), AuthError> {
    let account = KeyPair::from_seed(account_seed.trim()).map_err(|e| AuthError::Seed(e.to_string()))?;
    if !account.public_key().starts_with('A') {
        return Err(AuthError::NotAccount);
    }
    let user = KeyPair::new_user();
    let jwt = encode(
        &account,
        &user.public_key(),
        name,
        Some(expires),
        user_claims(Some(permissions)),
    )?;
    Ok((creds_file(&jwt, &seed_of(&user)?), user.public_key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jwt: &str) -> Value {
        let part = jwt.split('.').nth(1).expect("payload");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn subscriber_jwts_are_signed_by_the_account_and_carry_only_their_permissions() {
        let setup = init().expect("init");
        assert!(setup.server_conf.contains("resolver: MEMORY"));
        assert!(setup.service_creds.contains("BEGIN USER NKEY SEED"));
        let perms = Permissions {
            publish: vec!["$JS.API.CONSUMER.MSG.NEXT.S.C".into()],
            subscribe: vec!["_INBOX_C.>".into()],
        };
        let expires = Utc::now() + chrono::Duration::days(30);
        let (creds, user) = issue_user(&setup.account_seed, "sub", &perms, expires).expect("issue");
        let jwt = creds.lines().nth(1).expect("jwt line");
        let (signing_input, sig) = jwt.rsplit_once('.').expect("three parts");
        let c = claims(jwt);
        assert_eq!(c["iss"], setup.account_public_key.as_str());
        assert_eq!(c["sub"], user.as_str());
        assert_eq!(c["exp"], expires.timestamp());
        assert_eq!(c["nats"]["pub"]["allow"], json!(["$JS.API.CONSUMER.MSG.NEXT.S.C"]));
        assert_eq!(c["nats"]["sub"]["allow"], json!(["_INBOX_C.>"]));
        let account = KeyPair::from_public_key(&setup.account_public_key).expect("public key");
        account
            .verify(signing_input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).expect("sig"))
            .expect("signature verifies with the account key");
        assert!(!creds.contains(&setup.account_seed), "the account seed never leaves");
        assert!(matches!(
            issue_user("SUnot-a-seed", "x", &perms, expires),
            Err(AuthError::Seed(_))
        ));
    }
}
