//! Access tokens: compact JWTs signed with HMAC-SHA256. Written out rather than pulled in as a
//! crate: one algorithm, fixed header, constant-time verification through `hmac`, and a refusal of
//! anything else (in particular `alg: none` and algorithm confusion cannot happen: the header is
//! compared byte for byte).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Lifetime of an access token.
pub const ACCESS_TTL_SECONDS: i64 = 15 * 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The session (refresh-token family) the token was issued in: logout revokes it.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub typ: String,
}

#[derive(Clone)]
pub struct JwtKey {
    secret: Vec<u8>,
}

impl JwtKey {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The anti-forgery token of the web app's forms for `binding` (a session id, or an
    /// anonymous visitor's cookie). The `csrf` prefix keeps it apart from anything the key
    /// signs as a JWT (those inputs start with the base64 of `{`).
    pub fn csrf(&self, binding: &str) -> String {
        let mut mac = self.mac();
        mac.update(b"csrf\0");
        mac.update(binding.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    pub fn issue(&self, user: Uuid, session: Uuid, now: DateTime<Utc>) -> String {
        let claims = Claims {
            sub: user,
            sid: session,
            iat: now.timestamp(),
            exp: now.timestamp() + ACCESS_TTL_SECONDS,
            typ: "access".into(),
        };
        let body = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(body));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// The claims of a token this key signed, if it has not expired at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, b, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || URL_SAFE_NO_PAD.decode(h).ok()? != HEADER.as_bytes() {
            return None;
        }
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(b.as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b).ok()?).ok()?;
        (claims.typ == "access" && claims.exp > now.timestamp()).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_expiry_and_tampering() {
        let key = JwtKey::new(b"0123456789abcdef0123456789abcdef");
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let (u, s) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t = key.issue(u, s, now);
        let c = key.verify(&t, now).unwrap();
        assert_eq!((c.sub, c.sid), (u, s));
        assert!(key
            .verify(&t, now + chrono::Duration::seconds(ACCESS_TTL_SECONDS))
            .is_none());
        assert!(JwtKey::new(b"another key another key another!")
            .verify(&t, now)
            .is_none());
        // A changed payload with the old signature.
        let parts: Vec<&str> = t.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                sub: Uuid::from_u128(3),
                sid: s,
                iat: 0,
                exp: i64::MAX,
                typ: "access".into(),
            })
            .unwrap(),
        );
        assert!(key
            .verify(&format!("{}.{}.{}", parts[0], evil, parts[2]), now)
            .is_none());
        // alg=none.
        let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(key.verify(&format!("{none}.{}.", parts[1]), now).is_none());
        assert!(key.verify("garbage", now).is_none());
    }
}
