//! A login session: one refresh-token family. Every refresh rotates the token (the old one stops
//! working); presenting a token of the family that was already rotated away means it was copied,
//! so the whole family is revoked and both the thief and the user must log in again.
//!
//! Only SHA-256 hashes of refresh tokens are stored (they are 256-bit random secrets). The
//! family's id travels inside the token, so a refresh loads exactly one aggregate.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionCommand {
    Start {
        session_id: Uuid,
        user_id: Uuid,
        token_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Present `presented_hash`; if it is the current token, replace it with `new_hash`.
    Refresh {
        presented_hash: String,
        new_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    Revoke {
        reason: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionEvent {
    SessionStarted {
        session_id: Uuid,
        user_id: Uuid,
        token_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    SessionRefreshed {
        old_hash: String,
        new_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// A rotated-away token came back: recorded, and the family is dead.
    SessionTokenReused {
        presented_hash: String,
        at: DateTime<Utc>,
    },
    SessionRevoked {
        reason: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SessionStarted { .. } => "SessionStarted",
            Self::SessionRefreshed { .. } => "SessionRefreshed",
            Self::SessionTokenReused { .. } => "SessionTokenReused",
            Self::SessionRevoked { .. } => "SessionRevoked",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Every refusal looks the same to the client (401); the variants are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session already exists")]
    AlreadyExists,
    #[error("no such session")]
    NotFound,
    #[error("session was revoked")]
    Revoked,
    #[error("refresh token expired")]
    Expired,
    #[error("refresh token does not belong to this session")]
    UnknownToken,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub current_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// Hashes rotated away. Kept so a replay is recognised as theft, not as garbage.
    pub previous_hashes: Vec<String>,
}

impl Session {
    /// Whether access tokens of this session are still honoured at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.id.is_some() && !self.revoked && self.expires_at.is_some_and(|e| e > now)
    }

    /// Whether a password change at `password_changed_at` ended this session: every session
    /// that began before it (or whose start is unknown) stops working.
    pub fn predates(&self, password_changed_at: Option<DateTime<Utc>>) -> bool {
        password_changed_at.is_some_and(|p| self.started_at.is_none_or(|s| s < p))
    }

    /// Whether a browser's session cookie, hashed, is this live session's current token. A
    /// cookie session never rotates its token (a page load must not write an event), so it is
    /// honoured while the session lives: until logout, a password change or expiry.
    pub fn accepts(&self, token_hash: &str, now: DateTime<Utc>) -> bool {
        let (a, b) = (self.current_hash.as_bytes(), token_hash.as_bytes());
        // Compared without an early exit, so the time taken says nothing about the hash.
        let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0;
        self.is_live(now) && same
    }
}

impl Aggregate for Session {
    const TYPE: &'static str = "Session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        match command {
            SessionCommand::Start {
                session_id,
                user_id,
                token_hash,
                expires_at,
                at,
            } => {
                if self.id.is_some() {
                    return Err(SessionError::AlreadyExists);
                }
                let event = SessionEvent::SessionStarted {
                    session_id,
                    user_id,
                    token_hash,
                    expires_at,
                    at,
                };
                sink.write(event, self).await;
            }
            SessionCommand::Refresh {
                presented_hash,
                new_hash,
                expires_at,
                at,
            } => {
                if self.id.is_none() {
                    return Err(SessionError::NotFound);
                }
                if self.revoked {
                    return Err(SessionError::Revoked);
                }
                if presented_hash == self.current_hash {
                    if self.expires_at.is_none_or(|e| e <= at) {
                        return Err(SessionError::Expired);
                    }
                    let event = SessionEvent::SessionRefreshed {
                        old_hash: presented_hash,
                        new_hash,
                        expires_at,
                        at,
                    };
                    sink.write(event, self).await;
                } else if self.previous_hashes.contains(&presented_hash) {
                    // Not an error for cqrs-es: the event must be committed. The caller sees
                    // the revoked session and answers 401.
                    sink.write(SessionEvent::SessionTokenReused { presented_hash, at }, self)
                        .await;
                } else {
                    return Err(SessionError::UnknownToken);
                }
            }
            SessionCommand::Revoke { reason, at } => {
                if self.id.is_none() {
                    return Err(SessionError::NotFound);
                }
                if !self.revoked {
                    sink.write(SessionEvent::SessionRevoked { reason, at }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SessionEvent::SessionStarted {
                session_id,
                user_id,
                token_hash,
                expires_at,
                at,
            } => {
                self.id = Some(session_id);
                self.user_id = Some(user_id);
                self.current_hash = token_hash;
                self.expires_at = Some(expires_at);
                self.started_at = Some(at);
            }
            SessionEvent::SessionRefreshed {
                old_hash,
                new_hash,
                expires_at,
                ..
            } => {
                self.previous_hashes.push(old_hash);
                self.current_hash = new_hash;
                self.expires_at = Some(expires_at);
            }
            SessionEvent::SessionTokenReused { .. } | SessionEvent::SessionRevoked { .. } => self.revoked = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Spec = TestFramework<Session>;
    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn started() -> SessionEvent {
        SessionEvent::SessionStarted {
            session_id: Uuid::from_u128(9),
            user_id: Uuid::from_u128(1),
            token_hash: "h1".into(),
            expires_at: t(1000),
            at: t(0),
        }
    }
    fn rotated() -> SessionEvent {
        SessionEvent::SessionRefreshed {
            old_hash: "h1".into(),
            new_hash: "h2".into(),
            expires_at: t(2000),
            at: t(10),
        }
    }
    #[test]
    fn a_cookie_is_accepted_while_its_session_lives_and_only_with_the_current_hash() {
        let mut s = Session::default();
        s.apply(started());
        assert!(s.accepts("h1", t(1)));
        assert!(!s.accepts("h2", t(1)), "another token");
        assert!(!s.accepts("h", t(1)), "a prefix of the token");
        assert!(!s.accepts("h1", t(1000)), "expired");
        s.apply(SessionEvent::SessionRevoked {
            reason: "logout".into(),
            at: t(2),
        });
        assert!(!s.accepts("h1", t(3)), "ended by logout");
        assert!(!Session::default().accepts("", t(0)), "no session");
    }

    #[test]
    fn a_password_change_ends_the_sessions_that_began_before_it() {
        let mut s = Session::default();
        s.apply(started());
        assert!(!s.predates(None), "no change yet");
        assert!(s.predates(Some(t(1))), "changed after the start");
        assert!(!s.predates(Some(t(0))), "changed at the start: this session came after");
        assert!(!s.predates(Some(t(-1))), "changed before the start");
        assert!(
            Session::default().predates(Some(t(0))),
            "a start unknown is not trusted"
        );
    }

    fn refresh(hash: &str, at: i64) -> SessionCommand {
        SessionCommand::Refresh {
            presented_hash: hash.into(),
            new_hash: "h2".into(),
            expires_at: t(2000),
            at: t(at),
        }
    }

    #[test]
    fn refresh_rotates_the_current_token() {
        Spec::with(())
            .given(vec![started()])
            .when(refresh("h1", 10))
            .then_expect_events(vec![rotated()]);
    }

    #[test]
    fn reuse_of_a_rotated_token_revokes_the_family() {
        Spec::with(())
            .given(vec![started(), rotated()])
            .when(refresh("h1", 20))
            .then_expect_events(vec![SessionEvent::SessionTokenReused {
                presented_hash: "h1".into(),
                at: t(20),
            }]);
        let reused = SessionEvent::SessionTokenReused {
            presented_hash: "h1".into(),
            at: t(20),
        };
        // After that even the legitimate current token is dead.
        Spec::with(())
            .given(vec![started(), rotated(), reused])
            .when(refresh("h2", 30))
            .then_expect_error(SessionError::Revoked);
    }

    #[test]
    fn expired_unknown_and_missing() {
        Spec::with(())
            .given(vec![started()])
            .when(refresh("h1", 1000))
            .then_expect_error(SessionError::Expired);
        Spec::with(())
            .given(vec![started()])
            .when(refresh("nope", 10))
            .then_expect_error(SessionError::UnknownToken);
        Spec::with(())
            .given_no_previous_events()
            .when(refresh("h1", 10))
            .then_expect_error(SessionError::NotFound);
    }

    #[test]
    fn revoke_once() {
        let revoked = SessionEvent::SessionRevoked {
            reason: "logout".into(),
            at: t(5),
        };
        let cmd = SessionCommand::Revoke {
            reason: "logout".into(),
            at: t(5),
        };
        Spec::with(())
            .given(vec![started()])
            .when(cmd.clone())
            .then_expect_events(vec![revoked.clone()]);
        Spec::with(())
            .given(vec![started(), revoked])
            .when(cmd)
            .then_expect_events(vec![]);
    }

    #[test]
    fn liveness() {
        let mut s = Session::default();
        s.apply(started());
        assert!(s.is_live(t(5)));
        assert!(!s.is_live(t(1000)));
        s.apply(SessionEvent::SessionRevoked {
            reason: "logout".into(),
            at: t(6),
        });
        assert!(!s.is_live(t(7)));
    }
}
