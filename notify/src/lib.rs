//! Notifications: alerts where users are (e-mail, signed webhooks, Telegram) and the account
//! mail that carries verification, password-reset and invitation links.
//!
//! The flow, each step its own module:
//! - [`decider`] follows the run events like a projection and decides alerts (exactly once:
//!   its decisions are appended in the transaction that moves its checkpoint);
//! - [`reminders`] records reminders that come due while a job keeps failing;
//! - [`deliver`] sends due notifications through [`mail`], [`webhook`] and [`telegram`], with
//!   per-channel rate limits, digests under bursts, retries and backoff; [`record`] writes how
//!   each try ended, many to a transaction;
//! - [`outbox`] sends account mail through the same mailer;
//! - [`bot`] answers the Telegram bot's commands (linking chats, /status);
//! - [`channels`] holds the use cases the API calls; [`render`] the texts in both languages.
//!
//! What must not be lost lives in the event log (alerts, notifications, every try); what
//! carries a secret (link codes, confirmation tokens, account mail) stays out of it.

pub mod bot;
pub mod channels;
pub mod decider;
pub mod deliver;
pub mod mail;
pub mod outbox;
pub mod record;
pub mod reminders;
pub mod render;
pub mod seal;
pub mod telegram;
pub mod webhook;
