//! The REST API (axum, JSON, under `/v1`).
//!
//! - [`accounts`]: sign-up, login, sessions (JWT access + rotating refresh tokens).
//! - [`auth`]: API-key authentication producing a [`auth::Caller`] for one workspace.
//! - [`jobs`]: cron jobs and delayed calls; [`executions`]: the execution log;
//!   [`events`]: audit trails; [`preview`]: cron previews.
//! - [`error`]: the one error type and its mapping to `{"error": {"code", "message", "field"}}`.
//! - [`notifications`]: notification channels, deliveries, alerts; [`links`]: the pages
//!   behind mail links and the Telegram webhook.
//! - [`plans`]: plans, limits and the usage report.
//! - [`edge`]: request ids, per-address limits, `RateLimit-*` headers; [`rate_limit`]: the
//!   requests-per-minute counters shared by every API process.
//! - [`input`], [`pagination`]: reading bodies and query strings, keyset cursors.
//! - [`server`]: the HTTP/1 loop with header and body read limits.
//! - [`pages`]: the web app (server-rendered pages over the same use cases); [`assets`]: the
//!   files it and `/docs` load, fingerprinted and served by the binary.
//!
//! Commands go to the event store (cqrs-es); reads of a single resource come from the event store
//! too (strongly consistent: a job is readable the moment its create returns), lists from the
//! read models the projections build (eventually consistent, typically within milliseconds).
//! This crate does not fire anything: the dispatcher and executors do.

pub mod accounts;
pub mod admin;
pub mod assets;
pub mod auth;
pub mod badge;
pub mod defaults;
pub mod edge;
pub mod error;
pub mod events;
pub mod executions;
pub mod feed;
pub mod input;
pub mod jobs;
pub mod links;
pub mod notifications;
pub mod openapi;
pub mod operators;
pub mod pages;
pub mod pagination;
pub mod plans;
pub mod preview;
pub mod probe;
pub mod rate_limit;
pub mod server;
pub mod signing;
pub mod subscriptions;
pub mod targets;
pub mod usage;
pub mod workspaces;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use cronbox_nats::RunQueue;
use cronbox_store::aggregates::Stores;
use serde_json::json;
use sqlx::PgPool;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub stores: Arc<Stores>,
    pub pool: PgPool,
    /// A few connections only for holding job gates ([`cronbox_store::job_gate`]). Separate from
    /// `pool` because a gate holder needs a second connection to write its command: from one
    /// shared pool, enough concurrent holders would starve themselves.
    pub gates: PgPool,
    /// For readiness, and the event stream's subscription consumers (the API never publishes
    /// runs).
    pub queue: Option<RunQueue>,
    /// Which addresses user URLs may reach (the SSRF guard).
    pub targets: cronbox_domain::target::TargetPolicy,
    /// Sends the editor's test requests ([`probe`]): the executor's client, with the same guard.
    pub probe: cronbox_executor::http::HttpCaller,
    /// Signs and checks access tokens.
    pub jwt: accounts::JwtKey,
    pub plans: plans::PlanCache,
    /// Workspace signing secrets (sealed at rest).
    pub keyring: Arc<cronbox_store::signing::Keyring>,
    pub limiter: rate_limit::RateLimiter,
    /// Job creates, written in groups (see [`cronbox_store::create_batch`]).
    pub creates: cronbox_store::create_batch::CreateBatcher,
    /// The live execution feed (None: this process serves no streams).
    pub feed: Option<feed::Feed>,
    /// Projection rebuilds started through the admin API.
    pub rebuilds: admin::Rebuilds,
    /// Signs event subscribers' NATS credentials (None: not configured here).
    pub subscriptions: Option<subscriptions::Issuer>,
    /// Workspaces one user may have created and not deleted (superusers: any number).
    pub max_workspaces_per_user: u32,
    /// Where users reach this installation (links in mails and alerts).
    pub public_url: String,
    /// The notification use cases (None: not set up in this process).
    pub notify: Option<cronbox_notify::channels::Notify>,
    /// The shortest `realert_every` a job may ask for.
    pub min_realert_seconds: u32,
    /// Telegram's webhook mode: the `secret_token` and the bot (None: polling or no bot).
    pub telegram_webhook: Option<(String, cronbox_notify::bot::Bot)>,
}

/// The whole API. Every route goes through `routes!`, which also adds its `#[utoipa::path]`
/// to the OpenAPI document: nothing is served undocumented.
pub fn router(state: AppState) -> Router {
    use jobs::*;
    let ws = OpenApiRouter::new()
        .routes(routes!(create_cron, list_cron))
        .routes(routes!(get_cron, update_cron, delete_cron))
        .routes(routes!(run_cron))
        .routes(routes!(pause_cron))
        .routes(routes!(resume_cron))
        .routes(routes!(cron_events))
        .routes(routes!(create_delayed, list_delayed))
        .routes(routes!(create_delayed_batch))
        .routes(routes!(get_delayed, delete_delayed))
        .routes(routes!(delayed_events))
        .routes(routes!(executions::list))
        .routes(routes!(executions::get))
        .routes(routes!(executions::events))
        .routes(routes!(feed::stream))
        .routes(routes!(executions::rerun_route))
        .routes(routes!(events::list))
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(subscriptions::delete))
        .routes(routes!(workspaces::get, workspaces::update, workspaces::delete))
        .routes(routes!(workspaces::members))
        .routes(routes!(workspaces::change_role, workspaces::remove_member))
        .routes(routes!(workspaces::invite, workspaces::list_invites))
        .routes(routes!(workspaces::revoke_invite))
        .routes(routes!(workspaces::create_key, workspaces::list_keys))
        .routes(routes!(workspaces::revoke_key))
        .routes(routes!(usage::usage))
        .routes(routes!(operators::set_plan_route))
        .routes(routes!(defaults::get, defaults::put))
        .routes(routes!(signing::get))
        .routes(routes!(signing::rotate))
        .routes(routes!(notifications::create, notifications::list))
        .routes(routes!(
            notifications::get,
            notifications::update,
            notifications::delete
        ))
        .routes(routes!(notifications::test))
        .routes(routes!(notifications::rotate_secret))
        .routes(routes!(notifications::resend_confirmation))
        .routes(routes!(notifications::deliveries))
        .routes(routes!(notifications::telegram_link))
        .routes(routes!(notifications::alerts));
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/v1/workspaces/{ws}", ws)
        .routes(routes!(preview::preview))
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::refresh))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::verify_email))
        .routes(routes!(accounts::request_password_reset))
        .routes(routes!(accounts::confirm_password_reset))
        .routes(routes!(accounts::me))
        .routes(routes!(plans::list))
        .routes(routes!(workspaces::create, workspaces::list))
        .routes(routes!(workspaces::accept_invite))
        .routes(routes!(admin::list_projections))
        .routes(routes!(admin::start_rebuild, admin::rebuild_progress))
        .routes(routes!(admin::failures))
        .routes(routes!(admin::retry_failures))
        .routes(routes!(admin::events))
        .routes(routes!(admin::rerun))
        .routes(routes!(links::verify_page, links::verify_post))
        .routes(routes!(links::reset_page, links::reset_post))
        .routes(routes!(links::invite_page))
        .routes(routes!(links::confirm_page, links::confirm_post))
        .routes(routes!(links::unsubscribe_page, links::unsubscribe_post))
        .routes(routes!(links::telegram_webhook))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(assets::serve))
        .split_for_parts();
    // The modifiers run on the assembled document, so they see the nested paths too.
    let mut doc = doc;
    for m in openapi::modifiers() {
        m.modify(&mut doc);
    }
    openapi::publish(&doc);
    router
        .merge(pages::router())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this route", "field": null}})))
        })
        // What any extractor reads at most. Bodies are read after the credentials are checked
        // (extractors of the request head run first), and routes without credentials read no
        // more than this; the batch route reads its larger bodies itself, once authenticated.
        .layer(DefaultBodyLimit::max(input::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::layer))
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "Alive", body = openapi::schemas::Health)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: PostgreSQL and NATS are reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "Ready", body = openapi::schemas::Ready),
        (status = 503, description = "A dependency is down", body = openapi::schemas::Ready)
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let db = cronbox_store::db::ping(&state.pool).await;
    let nats = match &state.queue {
        Some(q) => q.ready().await,
        None => true,
    };
    let status = if db && nats {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"postgres": db, "nats": nats})))
}

#[cfg(test)]
mod layering {
    /// The modules the callers are built from sit in layers, so none can import its way back up:
    /// `plans` (codes and limits) ← `accounts` (people, sessions, tokens) ← `auth` (a caller in a
    /// workspace) ← `workspaces` and the rest.
    #[test]
    fn lower_modules_do_not_import_higher_ones() {
        let layers: [(&str, &str, &[&str]); 3] = [
            ("plans", include_str!("plans.rs"), &["auth", "accounts", "workspaces"]),
            ("accounts", include_str!("accounts/mod.rs"), &["auth", "workspaces"]),
            ("auth", include_str!("auth.rs"), &["workspaces"]),
        ];
        for (module, source, above) in layers {
            for up in above {
                assert!(
                    !source.contains(&format!("crate::{up}")),
                    "{module} imports crate::{up}, a layer above it"
                );
            }
        }
    }
}
