//! The workspace aggregate: the tenant. It owns the API keys, stored as SHA-256 hashes of the
//! full key (keys are 128-bit random secrets, so a fast hash is the right tool; argon2 is for
//! low-entropy passwords). Authentication loads this aggregate directly from the event store, so a
//! key revoked by one API process fails at once on every other: there is no cache to go stale.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkspaceCommand {
    Create {
        workspace_id: Uuid,
        name: String,
        timezone: String,
        at: DateTime<Utc>,
    },
    CreateApiKey {
        key_id: Uuid,
        name: String,
        prefix: String,
        secret_hash: String,
        at: DateTime<Utc>,
    },
    RevokeApiKey {
        key_id: Uuid,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkspaceEvent {
    WorkspaceCreated {
        workspace_id: Uuid,
        name: String,
        timezone: String,
        at: DateTime<Utc>,
    },
    ApiKeyCreated {
        key_id: Uuid,
        name: String,
        prefix: String,
        secret_hash: String,
        at: DateTime<Utc>,
    },
    ApiKeyRevoked {
        key_id: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for WorkspaceEvent {
    fn event_type(&self) -> String {
        match self {
            Self::WorkspaceCreated { .. } => "WorkspaceCreated",
            Self::ApiKeyCreated { .. } => "ApiKeyCreated",
            Self::ApiKeyRevoked { .. } => "ApiKeyRevoked",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace already exists")]
    AlreadyExists,
    #[error("workspace not found")]
    NotFound,
    #[error("workspace name must be 1 to 200 characters")]
    InvalidName,
    #[error("api key not found")]
    KeyNotFound,
    #[error("api key id already used")]
    KeyExists,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: Option<Uuid>,
    pub name: String,
    pub timezone: String,
    pub created_at: Option<DateTime<Utc>>,
    pub api_keys: Vec<ApiKey>,
}

/// Hash of an API key as stored. Keys are random, so no salt or stretching is needed.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Workspace {
    /// The active key whose hash matches, if any.
    pub fn authenticate(&self, key: &str) -> Option<&ApiKey> {
        let hash = hash_api_key(key);
        self.api_keys
            .iter()
            .find(|k| !k.revoked && constant_time_eq(&k.secret_hash, &hash))
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Aggregate for Workspace {
    const TYPE: &'static str = "Workspace";
    type Command = WorkspaceCommand;
    type Event = WorkspaceEvent;
    type Error = WorkspaceError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        match command {
            WorkspaceCommand::Create {
                workspace_id,
                name,
                timezone,
                at,
            } => {
                if self.id.is_some() {
                    return Err(WorkspaceError::AlreadyExists);
                }
                let name = name.trim().to_string();
                if name.is_empty() || name.chars().count() > 200 {
                    return Err(WorkspaceError::InvalidName);
                }
                sink.write(
                    WorkspaceEvent::WorkspaceCreated {
                        workspace_id,
                        name,
                        timezone,
                        at,
                    },
                    self,
                )
                .await;
            }
            WorkspaceCommand::CreateApiKey {
                key_id,
                name,
                prefix,
                secret_hash,
                at,
            } => {
                if self.id.is_none() {
                    return Err(WorkspaceError::NotFound);
                }
                if self.api_keys.iter().any(|k| k.key_id == key_id) {
                    return Err(WorkspaceError::KeyExists);
                }
                sink.write(
                    WorkspaceEvent::ApiKeyCreated {
                        key_id,
                        name,
                        prefix,
                        secret_hash,
                        at,
                    },
                    self,
                )
                .await;
            }
            WorkspaceCommand::RevokeApiKey { key_id, at } => match self.api_keys.iter().find(|k| k.key_id == key_id) {
                None => return Err(WorkspaceError::KeyNotFound),
                Some(k) if k.revoked => {}
                Some(_) => sink.write(WorkspaceEvent::ApiKeyRevoked { key_id, at }, self).await,
            },
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WorkspaceEvent::WorkspaceCreated {
                workspace_id,
                name,
                timezone,
                at,
            } => {
                self.id = Some(workspace_id);
                self.name = name;
                self.timezone = timezone;
                self.created_at = Some(at);
            }
            WorkspaceEvent::ApiKeyCreated {
                key_id,
                name,
                prefix,
                secret_hash,
                at,
            } => {
                self.api_keys.push(ApiKey {
                    key_id,
                    name,
                    prefix,
                    secret_hash,
                    revoked: false,
                    created_at: at,
                });
            }
            WorkspaceEvent::ApiKeyRevoked { key_id, .. } => {
                if let Some(k) = self.api_keys.iter_mut().find(|k| k.key_id == key_id) {
                    k.revoked = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<Workspace>;
    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }
    fn created() -> WorkspaceEvent {
        WorkspaceEvent::WorkspaceCreated {
            workspace_id: Uuid::from_u128(1),
            name: "Acme".into(),
            timezone: "Europe/Moscow".into(),
            at: t0(),
        }
    }

    #[test]
    fn create_workspace() {
        Spec::with(())
            .given_no_previous_events()
            .when(WorkspaceCommand::Create {
                workspace_id: Uuid::from_u128(1),
                name: " Acme ".into(),
                timezone: "Europe/Moscow".into(),
                at: t0(),
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_twice_is_refused() {
        Spec::with(())
            .given(vec![created()])
            .when(WorkspaceCommand::Create {
                workspace_id: Uuid::from_u128(1),
                name: "Acme".into(),
                timezone: "UTC".into(),
                at: t0(),
            })
            .then_expect_error(WorkspaceError::AlreadyExists);
    }

    #[test]
    fn blank_name_is_refused() {
        Spec::with(())
            .given_no_previous_events()
            .when(WorkspaceCommand::Create {
                workspace_id: Uuid::from_u128(1),
                name: "  ".into(),
                timezone: "UTC".into(),
                at: t0(),
            })
            .then_expect_error(WorkspaceError::InvalidName);
    }

    #[test]
    fn api_key_lifecycle_and_authentication() {
        let key = "cbx_secret";
        let hash = hash_api_key(key);
        let k = Uuid::from_u128(9);
        let added = WorkspaceEvent::ApiKeyCreated {
            key_id: k,
            name: "ci".into(),
            prefix: "cbx_sec".into(),
            secret_hash: hash.clone(),
            at: t0(),
        };
        Spec::with(())
            .given(vec![created()])
            .when(WorkspaceCommand::CreateApiKey {
                key_id: k,
                name: "ci".into(),
                prefix: "cbx_sec".into(),
                secret_hash: hash.clone(),
                at: t0(),
            })
            .then_expect_events(vec![added.clone()]);
        Spec::with(())
            .given(vec![created(), added.clone()])
            .when(WorkspaceCommand::RevokeApiKey { key_id: k, at: t0() })
            .then_expect_events(vec![WorkspaceEvent::ApiKeyRevoked { key_id: k, at: t0() }]);
        Spec::with(())
            .given(vec![created()])
            .when(WorkspaceCommand::RevokeApiKey { key_id: k, at: t0() })
            .then_expect_error(WorkspaceError::KeyNotFound);
        Spec::with(())
            .given_no_previous_events()
            .when(WorkspaceCommand::CreateApiKey {
                key_id: k,
                name: "ci".into(),
                prefix: "p".into(),
                secret_hash: hash,
                at: t0(),
            })
            .then_expect_error(WorkspaceError::NotFound);

        let mut ws = Workspace::default();
        ws.apply(created());
        ws.apply(added);
        assert!(ws.authenticate(key).is_some());
        assert!(ws.authenticate("cbx_other").is_none());
        ws.apply(WorkspaceEvent::ApiKeyRevoked { key_id: k, at: t0() });
        assert!(ws.authenticate(key).is_none());
    }
}
