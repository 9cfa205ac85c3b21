//! The notification channel aggregate: one place a workspace's alerts go (an e-mail address, a
//! webhook endpoint, a Telegram chat). Where it points is sealed by the caller before it reaches
//! a command (`sealed`: the operator's key, never in the log in clear); the log holds only a
//! masked `display` form beside it.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::FieldError;

pub const MAX_CHANNEL_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Email,
    Webhook,
    Telegram,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Webhook => "webhook",
            Self::Telegram => "telegram",
        }
    }
}

/// The language a channel's messages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    #[default]
    Ru,
    En,
}

impl Language {
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldError> {
        match s {
            "ru" => Ok(Self::Ru),
            "en" => Ok(Self::En),
            _ => Err(FieldError::new(field, "invalid", format!("{field} must be ru or en"))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ru => "ru",
            Self::En => "en",
        }
    }
    /// The plural category of `n` (CLDR's cardinal rules): Russian has `one` / `few` / `many`,
    /// English `one` / `other`.
    pub fn plural(self, n: i64) -> &'static str {
        let n = n.unsigned_abs();
        match self {
            Self::En => {
                if n == 1 {
                    "one"
                } else {
                    "other"
                }
            }
            Self::Ru => {
                let (d, h) = (n % 10, n % 100);
                if d == 1 && h != 11 {
                    "one"
                } else if (2..=4).contains(&d) && !(12..=14).contains(&h) {
                    "few"
                } else {
                    "many"
                }
            }
        }
    }

    /// The first of `ru`/`en` in an `Accept-Language` header; Russian when neither is there.
    pub fn from_accept_language(header: &str) -> Self {
        let mut best: Option<(f32, Self)> = None;
        for part in header.split(',') {
            let mut bits = part.trim().split(';');
            let tag = bits.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = bits
                .find_map(|b| b.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                .unwrap_or(1.0);
            let lang = if tag == "en" || tag.starts_with("en-") {
                Self::En
            } else if tag == "ru" || tag.starts_with("ru-") {
                Self::Ru
            } else {
                continue;
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }
}

/// Where a channel points, as sealed at rest (JSON inside the sealed box).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The webhook endpoint's `whsec_` secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// E-mail: the random part of the one-click unsubscribe token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<String>,
}

/// Why a channel stopped receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// An admin switched it off.
    ByAdmin,
    /// The recipient clicked "unsubscribe" in a mail.
    Unsubscribed,
    /// The endpoint answered 410 Gone.
    Gone,
    /// The Telegram bot was blocked or removed from the chat (403).
    BotBlocked,
}

impl DisableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ByAdmin => "by_admin",
            Self::Unsubscribed => "unsubscribed",
            Self::Gone => "gone",
            Self::BotBlocked => "bot_blocked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChannelCommand {
    Create {
        channel_id: Uuid,
        workspace_id: Uuid,
        kind: ChannelKind,
        name: String,
        language: Language,
        display: String,
        sealed: String,
        /// E-mail addresses start unverified; other kinds are proven by how they are made.
        verified: bool,
        at: DateTime<Utc>,
    },
    Update {
        name: Option<String>,
        language: Option<Language>,
        enabled: Option<bool>,
        at: DateTime<Utc>,
    },
    Verify {
        at: DateTime<Utc>,
    },
    Disable {
        reason: DisableReason,
        detail: String,
        at: DateTime<Utc>,
    },
    /// A new sealed target: a rotated webhook secret, a Telegram group that became a supergroup.
    Reseal {
        sealed: String,
        display: Option<String>,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChannelEvent {
    ChannelCreated {
        channel_id: Uuid,
        workspace_id: Uuid,
        kind: ChannelKind,
        name: String,
        language: Language,
        display: String,
        sealed: String,
        verified: bool,
        at: DateTime<Utc>,
    },
    ChannelUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<Language>,
        at: DateTime<Utc>,
    },
    ChannelVerified {
        at: DateTime<Utc>,
    },
    ChannelDisabled {
        reason: DisableReason,
        detail: String,
        at: DateTime<Utc>,
    },
    ChannelEnabled {
        at: DateTime<Utc>,
    },
    ChannelResealed {
        sealed: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<String>,
        at: DateTime<Utc>,
    },
    ChannelDeleted {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ChannelEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ChannelCreated { .. } => "ChannelCreated",
            Self::ChannelUpdated { .. } => "ChannelUpdated",
            Self::ChannelVerified { .. } => "ChannelVerified",
            Self::ChannelDisabled { .. } => "ChannelDisabled",
            Self::ChannelEnabled { .. } => "ChannelEnabled",
            Self::ChannelResealed { .. } => "ChannelResealed",
            Self::ChannelDeleted { .. } => "ChannelDeleted",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel already exists")]
    AlreadyExists,
    #[error("channel not found")]
    NotFound,
    #[error("{0}")]
    Invalid(FieldError),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub kind: Option<ChannelKind>,
    pub name: String,
    pub language: Language,
    pub display: String,
    pub sealed: String,
    pub verified: bool,
    pub disabled: Option<(DisableReason, String)>,
    pub deleted: bool,
    pub created_at: Option<DateTime<Utc>>,
}

impl Channel {
    /// Whether alerts go here now.
    pub fn usable(&self) -> bool {
        self.id.is_some() && !self.deleted && self.verified && self.disabled.is_none()
    }
    fn live(&self) -> Result<(), ChannelError> {
        if self.id.is_none() || self.deleted {
            return Err(ChannelError::NotFound);
        }
        Ok(())
    }
}

pub fn check_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(FieldError::new("name", "required", "name must not be empty"));
    }
    if name.chars().count() > MAX_CHANNEL_NAME_CHARS {
        return Err(FieldError::new(
            "name",
            "too_long",
            format!("name must be at most {MAX_CHANNEL_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "invalid_character",
            "name must not hold control characters",
        ));
    }
    Ok(name.to_string())
}

impl Aggregate for Channel {
    const TYPE: &'static str = "NotificationChannel";
    type Command = ChannelCommand;
    type Event = ChannelEvent;
    type Error = ChannelError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        let events = match command {
            ChannelCommand::Create {
                channel_id,
                workspace_id,
                kind,
                name,
                language,
                display,
                sealed,
                verified,
                at,
            } => {
                if self.id.is_some() {
                    return Err(ChannelError::AlreadyExists);
                }
                let name = check_name(&name).map_err(ChannelError::Invalid)?;
                vec![ChannelEvent::ChannelCreated {
                    channel_id,
                    workspace_id,
                    kind,
                    name,
                    language,
                    display,
                    sealed,
                    verified,
                    at,
                }]
            }
            ChannelCommand::Update {
                name,
                language,
                enabled,
                at,
            } => {
                self.live()?;
                let name = name
                    .map(|n| check_name(&n))
                    .transpose()
                    .map_err(ChannelError::Invalid)?
                    .filter(|n| *n != self.name);
                let language = language.filter(|l| *l != self.language);
                let mut events = Vec::new();
                if name.is_some() || language.is_some() {
                    events.push(ChannelEvent::ChannelUpdated { name, language, at });
                }
                match (enabled, &self.disabled) {
                    (Some(true), Some(_)) => events.push(ChannelEvent::ChannelEnabled { at }),
                    (Some(false), None) => events.push(ChannelEvent::ChannelDisabled {
                        reason: DisableReason::ByAdmin,
                        detail: String::new(),
                        at,
                    }),
                    _ => {}
                }
                events
            }
            ChannelCommand::Verify { at } => {
                self.live()?;
                if self.verified {
                    vec![]
                } else {
                    vec![ChannelEvent::ChannelVerified { at }]
                }
            }
            ChannelCommand::Disable { reason, detail, at } => {
                self.live()?;
                if self.disabled.is_some() {
                    vec![]
                } else {
                    vec![ChannelEvent::ChannelDisabled { reason, detail, at }]
                }
            }
            ChannelCommand::Reseal { sealed, display, at } => {
                self.live()?;
                vec![ChannelEvent::ChannelResealed { sealed, display, at }]
            }
            ChannelCommand::Delete { at } => {
                self.live()?;
                vec![ChannelEvent::ChannelDeleted { at }]
            }
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ChannelEvent::ChannelCreated {
                channel_id,
                workspace_id,
                kind,
                name,
                language,
                display,
                sealed,
                verified,
                at,
            } => {
                self.id = Some(channel_id);
                self.workspace_id = Some(workspace_id);
                self.kind = Some(kind);
                self.name = name;
                self.language = language;
                self.display = display;
                self.sealed = sealed;
                self.verified = verified;
                self.created_at = Some(at);
            }
            ChannelEvent::ChannelUpdated { name, language, .. } => {
                if let Some(n) = name {
                    self.name = n;
                }
                if let Some(l) = language {
                    self.language = l;
                }
            }
            ChannelEvent::ChannelVerified { .. } => self.verified = true,
            ChannelEvent::ChannelDisabled { reason, detail, .. } => self.disabled = Some((reason, detail)),
            ChannelEvent::ChannelEnabled { .. } => self.disabled = None,
            ChannelEvent::ChannelResealed { sealed, display, .. } => {
                self.sealed = sealed;
                if let Some(d) = display {
                    self.display = d;
                }
            }
            ChannelEvent::ChannelDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<Channel>;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }
    fn created(verified: bool) -> ChannelEvent {
        ChannelEvent::ChannelCreated {
            channel_id: Uuid::from_u128(1),
            workspace_id: Uuid::from_u128(2),
            kind: ChannelKind::Email,
            name: "Ops".into(),
            language: Language::Ru,
            display: "o***@example.com".into(),
            sealed: "sealed".into(),
            verified,
            at: t(0),
        }
    }
    fn create(name: &str) -> ChannelCommand {
        ChannelCommand::Create {
            channel_id: Uuid::from_u128(1),
            workspace_id: Uuid::from_u128(2),
            kind: ChannelKind::Email,
            name: name.into(),
            language: Language::Ru,
            display: "o***@example.com".into(),
            sealed: "sealed".into(),
            verified: false,
            at: t(0),
        }
    }

    #[test]
    fn given_nothing_when_created_then_created_unverified_and_not_usable() {
        Spec::with(())
            .given_no_previous_events()
            .when(create(" Ops "))
            .then_expect_events(vec![created(false)]);
        let mut c = Channel::default();
        c.apply(created(false));
        assert!(!c.usable());
        c.apply(ChannelEvent::ChannelVerified { at: t(1) });
        assert!(c.usable());
    }

    #[test]
    fn given_nothing_when_created_with_a_bad_name_then_refused() {
        Spec::with(())
            .given_no_previous_events()
            .when(create("  "))
            .then_expect_error(ChannelError::Invalid(FieldError::new(
                "name",
                "required",
                "name must not be empty",
            )));
    }

    #[test]
    fn given_verified_when_disabled_twice_then_one_event_and_not_usable() {
        let disabled = ChannelEvent::ChannelDisabled {
            reason: DisableReason::Unsubscribed,
            detail: String::new(),
            at: t(2),
        };
        Spec::with(())
            .given(vec![created(true), disabled.clone()])
            .when(ChannelCommand::Disable {
                reason: DisableReason::Gone,
                detail: "410".into(),
                at: t(3),
            })
            .then_expect_events(vec![]);
        let mut c = Channel::default();
        c.apply(created(true));
        c.apply(disabled);
        assert!(!c.usable());
    }

    #[test]
    fn given_disabled_when_enabled_by_update_then_enabled() {
        Spec::with(())
            .given(vec![
                created(true),
                ChannelEvent::ChannelDisabled {
                    reason: DisableReason::ByAdmin,
                    detail: String::new(),
                    at: t(1),
                },
            ])
            .when(ChannelCommand::Update {
                name: Some("Ops".into()),
                language: None,
                enabled: Some(true),
                at: t(2),
            })
            .then_expect_events(vec![ChannelEvent::ChannelEnabled { at: t(2) }]);
    }

    #[test]
    fn given_deleted_when_anything_then_not_found() {
        Spec::with(())
            .given(vec![created(true), ChannelEvent::ChannelDeleted { at: t(1) }])
            .when(ChannelCommand::Verify { at: t(2) })
            .then_expect_error(ChannelError::NotFound);
    }

    #[test]
    fn accept_language_picks_the_preferred_of_ours() {
        assert_eq!(Language::from_accept_language("en-US,en;q=0.9,ru;q=0.8"), Language::En);
        assert_eq!(Language::from_accept_language("de, ru;q=0.5, en;q=0.4"), Language::Ru);
        assert_eq!(Language::from_accept_language("fr"), Language::Ru);
        assert_eq!(Language::from_accept_language(""), Language::Ru);
    }
}
