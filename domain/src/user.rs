//! The user aggregate: a person who logs in. Passwords arrive here already hashed (argon2id, at
//! the edge): the domain decides, it does not compute. Emails are unique across users; that is
//! enforced by a reservation table before `Register` (an aggregate cannot see other aggregates).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::Language;
use crate::FieldError;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Lower-cased, trimmed, and shaped like `local@domain.tld`: enough to catch typos and to make
/// "A@x.ru" and "a@x.ru" one account. Deliverability is proven by the verification mail.
pub fn normalize_email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim().to_lowercase();
    let bad = || FieldError::new("email", "invalid_email", "email must look like name@example.com");
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err(bad());
    }
    Ok(email)
}

/// Length rules only: composition rules make passwords worse, length makes them better.
pub fn check_password(field: &str, password: &str) -> Result<(), FieldError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(FieldError::new(
            field,
            "password_too_short",
            format!("password must have at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(FieldError::new(
            field,
            "password_too_long",
            format!("password must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "invalid_name",
            "name must be 1 to 200 characters",
        ));
    }
    Ok(name.to_string())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        email: String,
        name: String,
        password_hash: String,
        superuser: bool,
        at: DateTime<Utc>,
    },
    VerifyEmail {
        at: DateTime<Utc>,
    },
    ChangePassword {
        password_hash: String,
        at: DateTime<Utc>,
    },
    /// The console's language and time zone for this person (None: follow the browser / the
    /// workspace). Recorded only when something changes.
    SetPreferences {
        language: Option<Language>,
        timezone: Option<String>,
        at: DateTime<Utc>,
    },
    /// An operator's decision: a deactivated account cannot log in, and every session and
    /// token it holds stops working. `active: true` lets it back in. Recorded only on change.
    SetActive {
        active: bool,
        by: Uuid,
        at: DateTime<Utc>,
    },
    /// An operator grants or withdraws the superuser right. Recorded only on change.
    SetSuperuser {
        superuser: bool,
        by: Uuid,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        user_id: Uuid,
        email: String,
        name: String,
        password_hash: String,
        superuser: bool,
        at: DateTime<Utc>,
    },
    EmailVerified {
        at: DateTime<Utc>,
    },
    PasswordChanged {
        password_hash: String,
        at: DateTime<Utc>,
    },
    PreferencesChanged {
        language: Option<Language>,
        timezone: Option<String>,
        at: DateTime<Utc>,
    },
    UserDeactivated {
        by: Uuid,
        at: DateTime<Utc>,
    },
    UserReactivated {
        by: Uuid,
        at: DateTime<Utc>,
    },
    SuperuserChanged {
        superuser: bool,
        by: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::EmailVerified { .. } => "EmailVerified",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::PreferencesChanged { .. } => "PreferencesChanged",
            Self::UserDeactivated { .. } => "UserDeactivated",
            Self::UserReactivated { .. } => "UserReactivated",
            Self::SuperuserChanged { .. } => "SuperuserChanged",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user already exists")]
    AlreadyExists,
    #[error("user not found")]
    NotFound,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Option<Uuid>,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub superuser: bool,
    pub email_verified: bool,
    pub created_at: Option<DateTime<Utc>>,
    /// When the password last changed: sessions started before it are no longer honoured.
    pub password_changed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub language: Option<Language>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// Since when an operator has shut the account (None: it may log in).
    #[serde(default)]
    pub deactivated_at: Option<DateTime<Utc>>,
    /// The latest deactivation, kept after the account is let back in: sessions begun before
    /// it stay over.
    #[serde(default)]
    pub last_deactivated_at: Option<DateTime<Utc>>,
}

impl User {
    /// Whether the account may log in and its sessions and tokens count.
    pub fn is_active(&self) -> bool {
        self.id.is_some() && self.deactivated_at.is_none()
    }

    /// Sessions and tokens begun before this moment no longer count: the last password change
    /// or deactivation, whichever is later.
    pub fn sessions_valid_after(&self) -> Option<DateTime<Utc>> {
        self.password_changed_at.max(self.last_deactivated_at)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        match command {
            UserCommand::Register {
                user_id,
                email,
                name,
                password_hash,
                superuser,
                at,
            } => {
                if self.id.is_some() {
                    return Err(UserError::AlreadyExists);
                }
                let event = UserEvent::UserRegistered {
                    user_id,
                    email,
                    name,
                    password_hash,
                    superuser,
                    at,
                };
                sink.write(event, self).await;
            }
            UserCommand::VerifyEmail { at } => {
                if self.id.is_none() {
                    return Err(UserError::NotFound);
                }
                if !self.email_verified {
                    sink.write(UserEvent::EmailVerified { at }, self).await;
                }
            }
            UserCommand::ChangePassword { password_hash, at } => {
                if self.id.is_none() {
                    return Err(UserError::NotFound);
                }
                sink.write(UserEvent::PasswordChanged { password_hash, at }, self).await;
            }
            UserCommand::SetPreferences { language, timezone, at } => {
                if self.id.is_none() {
                    return Err(UserError::NotFound);
                }
                if language != self.language || timezone != self.timezone {
                    let event = UserEvent::PreferencesChanged { language, timezone, at };
                    sink.write(event, self).await;
                }
            }
            UserCommand::SetActive { active, by, at } => {
                if self.id.is_none() {
                    return Err(UserError::NotFound);
                }
                match (active, self.deactivated_at.is_some()) {
                    (false, false) => sink.write(UserEvent::UserDeactivated { by, at }, self).await,
                    (true, true) => sink.write(UserEvent::UserReactivated { by, at }, self).await,
                    _ => {}
                }
            }
            UserCommand::SetSuperuser { superuser, by, at } => {
                if self.id.is_none() {
                    return Err(UserError::NotFound);
                }
                if superuser != self.superuser {
                    sink.write(UserEvent::SuperuserChanged { superuser, by, at }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered {
                user_id,
                email,
                name,
                password_hash,
                superuser,
                at,
            } => {
                self.id = Some(user_id);
                self.email = email;
                self.name = name;
                self.password_hash = password_hash;
                self.superuser = superuser;
                self.created_at = Some(at);
            }
            UserEvent::EmailVerified { .. } => self.email_verified = true,
            UserEvent::PasswordChanged { password_hash, at } => {
                self.password_hash = password_hash;
                self.password_changed_at = Some(at);
            }
            UserEvent::PreferencesChanged { language, timezone, .. } => {
                self.language = language;
                self.timezone = timezone;
            }
            UserEvent::UserDeactivated { at, .. } => {
                self.deactivated_at = Some(at);
                self.last_deactivated_at = Some(at);
            }
            UserEvent::UserReactivated { .. } => self.deactivated_at = None,
            UserEvent::SuperuserChanged { superuser, .. } => self.superuser = superuser,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<User>;
    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn registered() -> UserEvent {
        UserEvent::UserRegistered {
            user_id: Uuid::from_u128(1),
            email: "a@example.com".into(),
            name: "Anna".into(),
            password_hash: "$argon2id$x".into(),
            superuser: false,
            at: t(0),
        }
    }

    #[test]
    fn register_once() {
        let cmd = UserCommand::Register {
            user_id: Uuid::from_u128(1),
            email: "a@example.com".into(),
            name: "Anna".into(),
            password_hash: "$argon2id$x".into(),
            superuser: false,
            at: t(0),
        };
        Spec::with(())
            .given_no_previous_events()
            .when(cmd.clone())
            .then_expect_events(vec![registered()]);
        Spec::with(())
            .given(vec![registered()])
            .when(cmd)
            .then_expect_error(UserError::AlreadyExists);
    }

    #[test]
    fn an_operator_deactivates_and_reactivates_an_account_once_each() {
        let op = Uuid::from_u128(9);
        // Given an active account, when deactivated, then one event; again, nothing
        Spec::with(())
            .given(vec![registered()])
            .when(UserCommand::SetActive {
                active: false,
                by: op,
                at: t(1),
            })
            .then_expect_events(vec![UserEvent::UserDeactivated { by: op, at: t(1) }]);
        let off = vec![registered(), UserEvent::UserDeactivated { by: op, at: t(1) }];
        Spec::with(())
            .given(off.clone())
            .when(UserCommand::SetActive {
                active: false,
                by: op,
                at: t(2),
            })
            .then_expect_events(vec![]);
        // When let back in, then one event, and the account is active again
        Spec::with(())
            .given(off.clone())
            .when(UserCommand::SetActive {
                active: true,
                by: op,
                at: t(3),
            })
            .then_expect_events(vec![UserEvent::UserReactivated { by: op, at: t(3) }]);
        let mut u = User::default();
        for e in off {
            u.apply(e);
        }
        assert!(!u.is_active());
        u.apply(UserEvent::UserReactivated { by: op, at: t(3) });
        assert!(u.is_active());
        // Sessions from before the deactivation stay over.
        assert_eq!(u.sessions_valid_after(), Some(t(1)));
        Spec::with(())
            .given_no_previous_events()
            .when(UserCommand::SetActive {
                active: false,
                by: op,
                at: t(1),
            })
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn the_superuser_right_changes_only_when_it_differs() {
        let op = Uuid::from_u128(9);
        Spec::with(())
            .given(vec![registered()])
            .when(UserCommand::SetSuperuser {
                superuser: true,
                by: op,
                at: t(1),
            })
            .then_expect_events(vec![UserEvent::SuperuserChanged {
                superuser: true,
                by: op,
                at: t(1),
            }]);
        Spec::with(())
            .given(vec![registered()])
            .when(UserCommand::SetSuperuser {
                superuser: false,
                by: op,
                at: t(1),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn verify_email_is_idempotent() {
        Spec::with(())
            .given(vec![registered()])
            .when(UserCommand::VerifyEmail { at: t(1) })
            .then_expect_events(vec![UserEvent::EmailVerified { at: t(1) }]);
        Spec::with(())
            .given(vec![registered(), UserEvent::EmailVerified { at: t(1) }])
            .when(UserCommand::VerifyEmail { at: t(2) })
            .then_expect_events(vec![]);
        Spec::with(())
            .given_no_previous_events()
            .when(UserCommand::VerifyEmail { at: t(1) })
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn preferences_are_recorded_only_when_they_change() {
        let set = |language, tz: Option<&str>, at| UserCommand::SetPreferences {
            language,
            timezone: tz.map(str::to_string),
            at,
        };
        let changed = UserEvent::PreferencesChanged {
            language: Some(Language::En),
            timezone: Some("Asia/Yekaterinburg".into()),
            at: t(1),
        };
        Spec::with(())
            .given(vec![registered()])
            .when(set(Some(Language::En), Some("Asia/Yekaterinburg"), t(1)))
            .then_expect_events(vec![changed.clone()]);
        Spec::with(())
            .given(vec![registered(), changed.clone()])
            .when(set(Some(Language::En), Some("Asia/Yekaterinburg"), t(2)))
            .then_expect_events(vec![]);
        Spec::with(())
            .given(vec![registered(), changed])
            .when(set(None, None, t(2)))
            .then_expect_events(vec![UserEvent::PreferencesChanged {
                language: None,
                timezone: None,
                at: t(2),
            }]);
        Spec::with(())
            .given_no_previous_events()
            .when(set(None, None, t(1)))
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn change_password() {
        Spec::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangePassword {
                password_hash: "$argon2id$y".into(),
                at: t(5),
            })
            .then_expect_events(vec![UserEvent::PasswordChanged {
                password_hash: "$argon2id$y".into(),
                at: t(5),
            }]);
    }

    #[test]
    fn input_rules() {
        assert_eq!(normalize_email(" Anna@Example.COM ").unwrap(), "anna@example.com");
        for bad in [
            "",
            "anna",
            "@example.com",
            "anna@",
            "anna@example",
            "a b@example.com",
            "a@b..c",
            "a@.b.c",
        ] {
            assert_eq!(normalize_email(bad).unwrap_err().field, "email", "{bad}");
        }
        assert_eq!(
            check_password("password", "short").unwrap_err().code,
            "password_too_short"
        );
        assert!(check_password("password", "correct horse battery").is_ok());
        assert_eq!(
            check_password("password", &"x".repeat(300)).unwrap_err().code,
            "password_too_long"
        );
        assert_eq!(check_name("  Anna ").unwrap(), "Anna");
        assert!(check_name(" ").is_err());
    }
}
