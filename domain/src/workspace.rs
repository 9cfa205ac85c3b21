//! The workspace aggregate: the tenant. It owns its members (users with a role), pending
//! invitations and API keys. API keys are stored as SHA-256 hashes of the full key (keys are
//! 192-bit random secrets, so a fast hash is the right tool; argon2 is for low-entropy
//! passwords). Authentication loads this aggregate directly from the event store, so a key
//! revoked or a member removed by one API process is refused at once by every other: there is no
//! cache to go stale.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::policy::JobDefaults;

/// What a member may do. Ordered: each role can do everything the roles below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Manage jobs.
    Member,
    /// Manage jobs, keys, members and settings.
    Admin,
    /// Everything, including deleting the workspace and making owners.
    Owner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkspaceCommand {
    Create {
        workspace_id: Uuid,
        name: String,
        timezone: String,
        /// Unique across workspaces; reserved by the caller before this command.
        slug: Option<String>,
        /// The creating user, who becomes the first owner (none for CLI-created workspaces).
        owner: Option<Uuid>,
        /// Plan code; `None` is the default plan.
        plan: Option<String>,
        at: DateTime<Utc>,
    },
    SetPlan {
        plan: String,
        at: DateTime<Utc>,
    },
    SetJobDefaults {
        defaults: JobDefaults,
        at: DateTime<Utc>,
    },
    /// Records a signing-secret rotation (the secret itself never enters the log).
    RecordSecretRotation {
        secret_id: Uuid,
        previous_expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    Update {
        name: Option<String>,
        timezone: Option<String>,
        slug: Option<String>,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
    CreateApiKey {
        key_id: Uuid,
        name: String,
        prefix: String,
        secret_hash: String,
        read_only: bool,
        /// The plan's cap on live keys (None: no cap).
        max_keys: Option<u32>,
        at: DateTime<Utc>,
    },
    RevokeApiKey {
        key_id: Uuid,
        at: DateTime<Utc>,
    },
    Invite {
        invite_id: Uuid,
        email: String,
        role: Role,
        token_hash: String,
        expires_at: DateTime<Utc>,
        /// The role of whoever invites: only owners may invite owners.
        by_role: Role,
        at: DateTime<Utc>,
    },
    /// Withdraws an invitation that was not accepted yet.
    RevokeInvite {
        invite_id: Uuid,
        at: DateTime<Utc>,
    },
    AcceptInvite {
        token_hash: String,
        user_id: Uuid,
        email: String,
        /// The plan's cap on members (None: no cap).
        max_members: Option<u32>,
        at: DateTime<Utc>,
    },
    ChangeRole {
        user_id: Uuid,
        role: Role,
        by_role: Role,
        at: DateTime<Utc>,
    },
    RemoveMember {
        user_id: Uuid,
        /// `None` when members leave by themselves.
        by_role: Option<Role>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkspaceEvent {
    WorkspaceCreated {
        workspace_id: Uuid,
        name: String,
        timezone: String,
        #[serde(default)]
        slug: Option<String>,
        #[serde(default)]
        owner: Option<Uuid>,
        #[serde(default)]
        plan: Option<String>,
        at: DateTime<Utc>,
    },
    WorkspacePlanChanged {
        plan: String,
        at: DateTime<Utc>,
    },
    JobDefaultsChanged {
        defaults: JobDefaults,
        at: DateTime<Utc>,
    },
    SigningSecretRotated {
        secret_id: Uuid,
        previous_expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    WorkspaceUpdated {
        name: String,
        timezone: String,
        slug: Option<String>,
        at: DateTime<Utc>,
    },
    WorkspaceDeleted {
        at: DateTime<Utc>,
    },
    ApiKeyCreated {
        key_id: Uuid,
        name: String,
        prefix: String,
        secret_hash: String,
        #[serde(default)]
        read_only: bool,
        at: DateTime<Utc>,
    },
    ApiKeyRevoked {
        key_id: Uuid,
        at: DateTime<Utc>,
    },
    MemberInvited {
        invite_id: Uuid,
        email: String,
        role: Role,
        token_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    MemberAdded {
        user_id: Uuid,
        role: Role,
        invite_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    InviteRevoked {
        invite_id: Uuid,
        at: DateTime<Utc>,
    },
    MemberRoleChanged {
        user_id: Uuid,
        role: Role,
        at: DateTime<Utc>,
    },
    MemberRemoved {
        user_id: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for WorkspaceEvent {
    fn event_type(&self) -> String {
        match self {
            Self::WorkspaceCreated { .. } => "WorkspaceCreated",
            Self::WorkspaceUpdated { .. } => "WorkspaceUpdated",
            Self::WorkspacePlanChanged { .. } => "WorkspacePlanChanged",
            Self::JobDefaultsChanged { .. } => "JobDefaultsChanged",
            Self::SigningSecretRotated { .. } => "SigningSecretRotated",
            Self::WorkspaceDeleted { .. } => "WorkspaceDeleted",
            Self::ApiKeyCreated { .. } => "ApiKeyCreated",
            Self::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            Self::MemberInvited { .. } => "MemberInvited",
            Self::InviteRevoked { .. } => "InviteRevoked",
            Self::MemberAdded { .. } => "MemberAdded",
            Self::MemberRoleChanged { .. } => "MemberRoleChanged",
            Self::MemberRemoved { .. } => "MemberRemoved",
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
    #[error("the invitation is unknown, used, expired or for another address")]
    InvalidInvite,
    #[error("no pending invitation with this id")]
    InviteNotFound,
    #[error("not a member of this workspace")]
    MemberNotFound,
    #[error("already a member of this workspace")]
    AlreadyMember,
    #[error("only an owner can grant, change or remove the owner role")]
    OwnerOnly,
    #[error("a workspace must keep at least one owner")]
    LastOwner,
    /// The plan allows `limit` and the workspace already has `used`.
    #[error("the plan allows {limit} {what}; the workspace has {used}")]
    LimitReached { what: &'static str, used: u32, limit: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub read_only: bool,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: Uuid,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invite {
    pub invite_id: Uuid,
    pub email: String,
    pub role: Role,
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub accepted: bool,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub invited_at: Option<DateTime<Utc>>,
}

impl Invite {
    /// Still usable at `now`: neither accepted, withdrawn nor expired.
    pub fn pending(&self, now: DateTime<Utc>) -> bool {
        !self.accepted && !self.revoked && self.expires_at > now
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: Option<Uuid>,
    pub name: String,
    pub timezone: String,
    pub slug: Option<String>,
    /// Plan code (see the `plans` table); empty means [`DEFAULT_PLAN`].
    pub plan: String,
    /// Defaults for new jobs' policies.
    #[serde(default)]
    pub job_defaults: JobDefaults,
    pub deleted: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub api_keys: Vec<ApiKey>,
    pub members: Vec<Member>,
    pub invites: Vec<Invite>,
}

/// The plan of a workspace created without one.
pub const DEFAULT_PLAN: &str = "free";

/// Hash of an API key (or any other random secret token) as stored. Keys are random, so no salt
/// or stretching is needed.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Workspace {
    /// The active key whose hash matches, if any.
    pub fn authenticate(&self, key: &str) -> Option<&ApiKey> {
        if self.deleted {
            return None;
        }
        let hash = hash_api_key(key);
        self.api_keys
            .iter()
            .find(|k| !k.revoked && constant_time_eq(&k.secret_hash, &hash))
    }

    /// The role of `user` here, if a member (and the workspace is not deleted).
    pub fn role_of(&self, user: Uuid) -> Option<Role> {
        if self.deleted {
            return None;
        }
        self.members.iter().find(|m| m.user_id == user).map(|m| m.role)
    }

    /// API keys not revoked.
    pub fn live_api_keys(&self) -> u32 {
        self.api_keys.iter().filter(|k| !k.revoked).count() as u32
    }

    pub fn plan(&self) -> &str {
        if self.plan.is_empty() {
            DEFAULT_PLAN
        } else {
            &self.plan
        }
    }

    fn exists(&self) -> Result<(), WorkspaceError> {
        if self.id.is_none() || self.deleted {
            return Err(WorkspaceError::NotFound);
        }
        Ok(())
    }

    fn owners(&self) -> usize {
        self.members.iter().filter(|m| m.role == Role::Owner).count()
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_name(name: &str) -> Result<String, WorkspaceError> {
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(WorkspaceError::InvalidName);
    }
    Ok(name)
}

impl Aggregate for Workspace {
    const TYPE: &'static str = "Workspace";
    type Command = WorkspaceCommand;
    type Event = WorkspaceEvent;
    type Error = WorkspaceError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        let mut events = Vec::new();
        match command {
            WorkspaceCommand::Create {
                workspace_id,
                name,
                timezone,
                slug,
                owner,
                plan,
                at,
            } => {
                if self.id.is_some() {
                    return Err(WorkspaceError::AlreadyExists);
                }
                events.push(WorkspaceEvent::WorkspaceCreated {
                    workspace_id,
                    name: check_name(&name)?,
                    timezone,
                    slug,
                    owner,
                    plan,
                    at,
                });
                if let Some(user_id) = owner {
                    events.push(WorkspaceEvent::MemberAdded {
                        user_id,
                        role: Role::Owner,
                        invite_id: None,
                        at,
                    });
                }
            }
            WorkspaceCommand::Update {
                name,
                timezone,
                slug,
                at,
            } => {
                self.exists()?;
                let name = match name {
                    Some(n) => check_name(&n)?,
                    None => self.name.clone(),
                };
                let timezone = timezone.unwrap_or_else(|| self.timezone.clone());
                let slug = slug.or_else(|| self.slug.clone());
                if (&name, &timezone, &slug) != (&self.name, &self.timezone, &self.slug) {
                    events.push(WorkspaceEvent::WorkspaceUpdated {
                        name,
                        timezone,
                        slug,
                        at,
                    });
                }
            }
            WorkspaceCommand::SetJobDefaults { defaults, at } => {
                self.exists()?;
                if defaults != self.job_defaults {
                    events.push(WorkspaceEvent::JobDefaultsChanged { defaults, at });
                }
            }
            WorkspaceCommand::SetPlan { plan, at } => {
                self.exists()?;
                if plan != self.plan() {
                    events.push(WorkspaceEvent::WorkspacePlanChanged { plan, at });
                }
            }
            WorkspaceCommand::RecordSecretRotation {
                secret_id,
                previous_expires_at,
                at,
            } => {
                self.exists()?;
                events.push(WorkspaceEvent::SigningSecretRotated {
                    secret_id,
                    previous_expires_at,
                    at,
                });
            }
            WorkspaceCommand::Delete { at } => {
                self.exists()?;
                events.push(WorkspaceEvent::WorkspaceDeleted { at });
            }
            WorkspaceCommand::CreateApiKey {
                key_id,
                name,
                prefix,
                secret_hash,
                read_only,
                max_keys,
                at,
            } => {
                self.exists()?;
                if self.api_keys.iter().any(|k| k.key_id == key_id) {
                    return Err(WorkspaceError::KeyExists);
                }
                let used = self.live_api_keys();
                if let Some(limit) = max_keys.filter(|&l| used >= l) {
                    return Err(WorkspaceError::LimitReached {
                        what: "api_keys",
                        used,
                        limit,
                    });
                }
                events.push(WorkspaceEvent::ApiKeyCreated {
                    key_id,
                    name,
                    prefix,
                    secret_hash,
                    read_only,
                    at,
                });
            }
            WorkspaceCommand::RevokeApiKey { key_id, at } => {
                self.exists()?;
                match self.api_keys.iter().find(|k| k.key_id == key_id) {
                    None => return Err(WorkspaceError::KeyNotFound),
                    Some(k) if k.revoked => {}
                    Some(_) => events.push(WorkspaceEvent::ApiKeyRevoked { key_id, at }),
                }
            }
            WorkspaceCommand::Invite {
                invite_id,
                email,
                role,
                token_hash,
                expires_at,
                by_role,
                at,
            } => {
                self.exists()?;
                if role == Role::Owner && by_role != Role::Owner {
                    return Err(WorkspaceError::OwnerOnly);
                }
                events.push(WorkspaceEvent::MemberInvited {
                    invite_id,
                    email,
                    role,
                    token_hash,
                    expires_at,
                    at,
                });
            }
            WorkspaceCommand::RevokeInvite { invite_id, at } => {
                self.exists()?;
                match self.invites.iter().find(|i| i.invite_id == invite_id) {
                    Some(i) if !i.accepted && !i.revoked => {
                        events.push(WorkspaceEvent::InviteRevoked { invite_id, at })
                    }
                    _ => return Err(WorkspaceError::InviteNotFound),
                }
            }
            WorkspaceCommand::AcceptInvite {
                token_hash,
                user_id,
                email,
                max_members,
                at,
            } => {
                self.exists()?;
                let invite = self
                    .invites
                    .iter()
                    .find(|i| !i.accepted && !i.revoked && constant_time_eq(&i.token_hash, &token_hash))
                    .filter(|i| i.expires_at > at && i.email == email)
                    .ok_or(WorkspaceError::InvalidInvite)?;
                if self.role_of(user_id).is_some() {
                    return Err(WorkspaceError::AlreadyMember);
                }
                let used = self.members.len() as u32;
                if let Some(limit) = max_members.filter(|&l| used >= l) {
                    return Err(WorkspaceError::LimitReached {
                        what: "members",
                        used,
                        limit,
                    });
                }
                events.push(WorkspaceEvent::MemberAdded {
                    user_id,
                    role: invite.role,
                    invite_id: Some(invite.invite_id),
                    at,
                });
            }
            WorkspaceCommand::ChangeRole {
                user_id,
                role,
                by_role,
                at,
            } => {
                self.exists()?;
                let current = self.role_of(user_id).ok_or(WorkspaceError::MemberNotFound)?;
                if (role == Role::Owner || current == Role::Owner) && by_role != Role::Owner {
                    return Err(WorkspaceError::OwnerOnly);
                }
                if current == Role::Owner && role != Role::Owner && self.owners() == 1 {
                    return Err(WorkspaceError::LastOwner);
                }
                if current != role {
                    events.push(WorkspaceEvent::MemberRoleChanged { user_id, role, at });
                }
            }
            WorkspaceCommand::RemoveMember { user_id, by_role, at } => {
                self.exists()?;
                let current = self.role_of(user_id).ok_or(WorkspaceError::MemberNotFound)?;
                if current == Role::Owner && by_role.is_some_and(|r| r != Role::Owner) {
                    return Err(WorkspaceError::OwnerOnly);
                }
                if current == Role::Owner && self.owners() == 1 {
                    return Err(WorkspaceError::LastOwner);
                }
                events.push(WorkspaceEvent::MemberRemoved { user_id, at });
            }
        }
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WorkspaceEvent::WorkspaceCreated {
                workspace_id,
                name,
                timezone,
                slug,
                plan,
                at,
                ..
            } => {
                self.id = Some(workspace_id);
                self.name = name;
                self.timezone = timezone;
                self.slug = slug;
                self.plan = plan.unwrap_or_default();
                self.created_at = Some(at);
            }
            WorkspaceEvent::WorkspacePlanChanged { plan, .. } => self.plan = plan,
            WorkspaceEvent::JobDefaultsChanged { defaults, .. } => self.job_defaults = defaults,
            WorkspaceEvent::SigningSecretRotated { .. } => {}
            WorkspaceEvent::WorkspaceUpdated {
                name, timezone, slug, ..
            } => {
                self.name = name;
                self.timezone = timezone;
                self.slug = slug;
            }
            WorkspaceEvent::WorkspaceDeleted { .. } => self.deleted = true,
            WorkspaceEvent::ApiKeyCreated {
                key_id,
                name,
                prefix,
                secret_hash,
                read_only,
                at,
            } => {
                self.api_keys.push(ApiKey {
                    key_id,
                    name,
                    prefix,
                    secret_hash,
                    read_only,
                    revoked: false,
                    created_at: at,
                });
            }
            WorkspaceEvent::ApiKeyRevoked { key_id, .. } => {
                if let Some(k) = self.api_keys.iter_mut().find(|k| k.key_id == key_id) {
                    k.revoked = true;
                }
            }
            WorkspaceEvent::MemberInvited {
                invite_id,
                email,
                role,
                token_hash,
                expires_at,
                at,
            } => self.invites.push(Invite {
                invite_id,
                email,
                role,
                token_hash,
                expires_at,
                accepted: false,
                revoked: false,
                invited_at: Some(at),
            }),
            WorkspaceEvent::InviteRevoked { invite_id, .. } => {
                if let Some(i) = self.invites.iter_mut().find(|i| i.invite_id == invite_id) {
                    i.revoked = true;
                }
            }
            WorkspaceEvent::MemberAdded {
                user_id,
                role,
                invite_id,
                at,
            } => {
                if let Some(i) = self.invites.iter_mut().find(|i| Some(i.invite_id) == invite_id) {
                    i.accepted = true;
                }
                self.members.push(Member {
                    user_id,
                    role,
                    joined_at: at,
                });
            }
            WorkspaceEvent::MemberRoleChanged { user_id, role, .. } => {
                if let Some(m) = self.members.iter_mut().find(|m| m.user_id == user_id) {
                    m.role = role;
                }
            }
            WorkspaceEvent::MemberRemoved { user_id, .. } => self.members.retain(|m| m.user_id != user_id),
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
            slug: None,
            owner: None,
            plan: None,
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
                slug: None,
                owner: None,
                plan: None,
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
                slug: None,
                owner: None,
                plan: None,
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
                slug: None,
                owner: None,
                plan: None,
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
            read_only: false,
            at: t0(),
        };
        Spec::with(())
            .given(vec![created()])
            .when(WorkspaceCommand::CreateApiKey {
                key_id: k,
                name: "ci".into(),
                prefix: "cbx_sec".into(),
                secret_hash: hash.clone(),
                read_only: false,
                max_keys: Some(1),
                at: t0(),
            })
            .then_expect_events(vec![added.clone()]);
        Spec::with(())
            .given(vec![created(), added.clone()])
            .when(WorkspaceCommand::CreateApiKey {
                key_id: Uuid::from_u128(99),
                name: "second".into(),
                prefix: "cbx_two".into(),
                secret_hash: "h2".into(),
                read_only: false,
                max_keys: Some(1),
                at: t0(),
            })
            .then_expect_error(WorkspaceError::LimitReached {
                what: "api_keys",
                used: 1,
                limit: 1,
            });
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
                read_only: false,
                max_keys: None,
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

    const OWNER: Uuid = Uuid::from_u128(100);
    const BOB: Uuid = Uuid::from_u128(101);

    fn owned() -> Vec<WorkspaceEvent> {
        vec![
            WorkspaceEvent::WorkspaceCreated {
                workspace_id: Uuid::from_u128(1),
                name: "Acme".into(),
                timezone: "UTC".into(),
                slug: Some("acme".into()),
                owner: Some(OWNER),
                plan: None,
                at: t0(),
            },
            WorkspaceEvent::MemberAdded {
                user_id: OWNER,
                role: Role::Owner,
                invite_id: None,
                at: t0(),
            },
        ]
    }
    fn invited(role: Role) -> WorkspaceEvent {
        WorkspaceEvent::MemberInvited {
            invite_id: Uuid::from_u128(7),
            email: "bob@example.com".into(),
            role,
            token_hash: "tok".into(),
            expires_at: t0() + chrono::Duration::days(7),
            at: t0(),
        }
    }
    fn bob(role: Role) -> WorkspaceEvent {
        WorkspaceEvent::MemberAdded {
            user_id: BOB,
            role,
            invite_id: Some(Uuid::from_u128(7)),
            at: t0(),
        }
    }
    fn with(extra: Vec<WorkspaceEvent>) -> Vec<WorkspaceEvent> {
        let mut v = owned();
        v.extend(extra);
        v
    }

    #[test]
    fn creator_becomes_owner() {
        Spec::with(())
            .given_no_previous_events()
            .when(WorkspaceCommand::Create {
                workspace_id: Uuid::from_u128(1),
                name: "Acme".into(),
                timezone: "UTC".into(),
                slug: Some("acme".into()),
                owner: Some(OWNER),
                plan: None,
                at: t0(),
            })
            .then_expect_events(owned());
    }

    #[test]
    fn invitations_are_accepted_once_by_the_invited_address_before_expiry() {
        let accept = |email: &str, at| WorkspaceCommand::AcceptInvite {
            token_hash: "tok".into(),
            user_id: BOB,
            email: email.into(),
            max_members: None,
            at,
        };
        Spec::with(())
            .given(with(vec![invited(Role::Member)]))
            .when(accept("bob@example.com", t0()))
            .then_expect_events(vec![bob(Role::Member)]);
        Spec::with(())
            .given(with(vec![invited(Role::Member)]))
            .when(accept("eve@example.com", t0()))
            .then_expect_error(WorkspaceError::InvalidInvite);
        Spec::with(())
            .given(with(vec![invited(Role::Member)]))
            .when(accept("bob@example.com", t0() + chrono::Duration::days(8)))
            .then_expect_error(WorkspaceError::InvalidInvite);
        Spec::with(())
            .given(with(vec![invited(Role::Member), bob(Role::Member)]))
            .when(accept("bob@example.com", t0()))
            .then_expect_error(WorkspaceError::InvalidInvite);
        // The owner is one member: a plan allowing one refuses Bob.
        Spec::with(())
            .given(with(vec![invited(Role::Member)]))
            .when(WorkspaceCommand::AcceptInvite {
                token_hash: "tok".into(),
                user_id: BOB,
                email: "bob@example.com".into(),
                max_members: Some(1),
                at: t0(),
            })
            .then_expect_error(WorkspaceError::LimitReached {
                what: "members",
                used: 1,
                limit: 1,
            });
    }

    #[test]
    fn only_owners_make_owners_and_the_last_owner_stays() {
        let invite_owner = |by_role| WorkspaceCommand::Invite {
            invite_id: Uuid::from_u128(7),
            email: "bob@example.com".into(),
            role: Role::Owner,
            token_hash: "tok".into(),
            expires_at: t0() + chrono::Duration::days(7),
            by_role,
            at: t0(),
        };
        Spec::with(())
            .given(owned())
            .when(invite_owner(Role::Admin))
            .then_expect_error(WorkspaceError::OwnerOnly);
        Spec::with(())
            .given(owned())
            .when(invite_owner(Role::Owner))
            .then_expect_events(vec![invited(Role::Owner)]);
        let demote_owner = WorkspaceCommand::ChangeRole {
            user_id: OWNER,
            role: Role::Admin,
            by_role: Role::Owner,
            at: t0(),
        };
        Spec::with(())
            .given(owned())
            .when(demote_owner)
            .then_expect_error(WorkspaceError::LastOwner);
        let leave = WorkspaceCommand::RemoveMember {
            user_id: OWNER,
            by_role: None,
            at: t0(),
        };
        Spec::with(())
            .given(owned())
            .when(leave.clone())
            .then_expect_error(WorkspaceError::LastOwner);
        // With a second owner the first may leave.
        Spec::with(())
            .given(with(vec![invited(Role::Owner), bob(Role::Owner)]))
            .when(leave)
            .then_expect_events(vec![WorkspaceEvent::MemberRemoved {
                user_id: OWNER,
                at: t0(),
            }]);
        // Admins cannot touch owners.
        Spec::with(())
            .given(with(vec![invited(Role::Admin), bob(Role::Admin)]))
            .when(WorkspaceCommand::RemoveMember {
                user_id: OWNER,
                by_role: Some(Role::Admin),
                at: t0(),
            })
            .then_expect_error(WorkspaceError::OwnerOnly);
        Spec::with(())
            .given(with(vec![invited(Role::Viewer), bob(Role::Viewer)]))
            .when(WorkspaceCommand::ChangeRole {
                user_id: BOB,
                role: Role::Member,
                by_role: Role::Admin,
                at: t0(),
            })
            .then_expect_events(vec![WorkspaceEvent::MemberRoleChanged {
                user_id: BOB,
                role: Role::Member,
                at: t0(),
            }]);
    }

    #[test]
    fn a_deleted_workspace_refuses_everything() {
        let deleted = with(vec![WorkspaceEvent::WorkspaceDeleted { at: t0() }]);
        Spec::with(())
            .given(deleted.clone())
            .when(WorkspaceCommand::Delete { at: t0() })
            .then_expect_error(WorkspaceError::NotFound);
        let mut ws = Workspace::default();
        for e in deleted {
            ws.apply(e);
        }
        assert_eq!(ws.role_of(OWNER), None);
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Member && Role::Member > Role::Viewer);
    }
}
