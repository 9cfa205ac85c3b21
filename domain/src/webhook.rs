//! Signing outgoing requests the Standard Webhooks way (https://www.standardwebhooks.com):
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, keyed with the workspace's secret (`whsec_<base64>`). While a rotated
//! secret overlaps with its successor the header carries one signature per secret, separated by
//! spaces, so receivers holding either one accept the request.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Random bytes in a new secret (the spec allows 24 to 64).
pub const SECRET_BYTES: usize = 32;

const PREFIX: &str = "whsec_";

/// A workspace's signing key. Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a signing secret: expected whsec_ followed by base64")]
pub struct InvalidSecret;

impl SigningSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`, the form users copy into their receivers.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    pub fn from_whsec(s: &str) -> Result<Self, InvalidSecret> {
        let b64 = s.strip_prefix(PREFIX).ok_or(InvalidSecret)?;
        STANDARD.decode(b64).map(Self).map_err(|_| InvalidSecret)
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` value: one signature per secret in force, newest first.
pub fn signature_header(secrets: &[SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specifications_test_vector() {
        // From the Standard Webhooks reference libraries' tests.
        let secret = SigningSecret::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_round_trip_and_hide_in_debug() {
        let s = SigningSecret::from_bytes(vec![7; SECRET_BYTES]);
        let text = s.to_whsec();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SigningSecret::from_whsec(&text).unwrap(), s);
        assert_eq!(format!("{s:?}"), "SigningSecret(..)");
        assert!(SigningSecret::from_whsec("nope").is_err());
        assert!(SigningSecret::from_whsec("whsec_***").is_err());
    }

    #[test]
    fn overlapping_secrets_each_sign() {
        let (a, b) = (
            SigningSecret::from_bytes(vec![1; 32]),
            SigningSecret::from_bytes(vec![2; 32]),
        );
        let header = signature_header(&[a.clone(), b.clone()], "id", 5, b"x");
        assert_eq!(header, format!("{} {}", a.sign("id", 5, b"x"), b.sign("id", 5, b"x")));
        assert_ne!(a.sign("id", 5, b"x"), a.sign("id", 6, b"x"), "the timestamp is signed");
        assert_ne!(a.sign("id", 5, b"x"), a.sign("id2", 5, b"x"), "the id is signed");
    }
}
