//! Channel targets (addresses, chat ids, webhook URLs and secrets) sealed at rest with the
//! operator's master key, bound to their workspace and channel: a sealed value copied to another
//! channel does not open.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cronbox_domain::channel::ChannelTarget;
use cronbox_store::signing::MasterKey;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a channel target does not open with this CRONBOX_SECRETS_KEY")]
    Undecryptable,
    #[error("a channel target is not valid JSON once opened")]
    Malformed(#[from] serde_json::Error),
}

pub fn seal(
    key: &MasterKey,
    workspace_id: Uuid,
    channel_id: Uuid,
    target: &ChannelTarget,
) -> Result<String, SealError> {
    let plain = serde_json::to_vec(target)?;
    let sealed = key
        .seal(workspace_id, channel_id, &plain)
        .map_err(|_| SealError::Undecryptable)?;
    Ok(STANDARD.encode(sealed))
}

pub fn open(key: &MasterKey, workspace_id: Uuid, channel_id: Uuid, sealed: &str) -> Result<ChannelTarget, SealError> {
    let bytes = STANDARD.decode(sealed).map_err(|_| SealError::Undecryptable)?;
    let plain = key
        .open(workspace_id, channel_id, &bytes)
        .map_err(|_| SealError::Undecryptable)?;
    Ok(serde_json::from_slice(&plain)?)
}

/// An address as lists show it: `o***@example.com`.
pub fn mask_address(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_target_opens_only_for_its_channel() {
        let key = MasterKey::parse(&"11".repeat(32)).unwrap();
        let (ws, ch) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let target = ChannelTarget {
            address: Some("ops@example.com".into()),
            ..Default::default()
        };
        let sealed = seal(&key, ws, ch, &target).unwrap();
        assert!(!sealed.contains("ops@"));
        assert_eq!(open(&key, ws, ch, &sealed).unwrap(), target);
        assert!(open(&key, ws, Uuid::from_u128(3), &sealed).is_err());
    }

    #[test]
    fn addresses_are_masked() {
        assert_eq!(mask_address("ops@example.com"), "o***@example.com");
    }
}
