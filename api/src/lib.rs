//! The REST API (axum, JSON, under `/v1`).
//!
//! - [`accounts`]: sign-up, login, sessions (JWT access + rotating refresh tokens).
//! - [`auth`]: API-key authentication producing a [`auth::Caller`] for one workspace.
//! - [`jobs`]: cron jobs and delayed calls; [`executions`]: the execution log;
//!   [`events`]: audit trails; [`preview`]: cron previews.
//! - [`error`]: the one error type and its mapping to `{"error": {"code", "message", "field"}}`.
//! - [`plans`]: plans, limits and the usage report.
//! - [`edge`]: request ids, per-address limits, `RateLimit-*` headers; [`rate_limit`]: the
//!   requests-per-minute counters shared by every API process.
//! - [`input`], [`pagination`]: reading bodies and query strings, keyset cursors.
//!
//! Commands go to the event store (cqrs-es); reads of a single resource come from the event store
//! too (strongly consistent: a job is readable the moment its create returns), lists from the
//! read models the projections build (eventually consistent, typically within milliseconds).
//! This crate does not fire anything: the dispatcher and executors do.

pub mod accounts;
pub mod auth;
pub mod edge;
pub mod error;
pub mod events;
pub mod executions;
pub mod input;
pub mod jobs;
pub mod pagination;
pub mod plans;
pub mod preview;
pub mod rate_limit;
pub mod workspaces;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use cronbox_nats::RunQueue;
use cronbox_store::aggregates::Stores;
use serde_json::json;
use sqlx::PgPool;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub stores: Arc<Stores>,
    pub pool: PgPool,
    /// A few connections only for holding job gates ([`cronbox_store::job_gate`]). Separate from
    /// `pool` because a gate holder needs a second connection to write its command: from one
    /// shared pool, enough concurrent holders would starve themselves.
    pub gates: PgPool,
    /// For readiness only: the API never publishes.
    pub queue: Option<RunQueue>,
    pub allow_private_targets: bool,
    /// Signs and checks access tokens.
    pub jwt: accounts::JwtKey,
    pub plans: plans::PlanCache,
    pub limiter: rate_limit::RateLimiter,
}

pub fn router(state: AppState) -> Router {
    use jobs::*;
    let ws = Router::new()
        .route("/cron", post(create_cron).get(list_cron))
        .route("/cron/{id}", get(get_cron).patch(update_cron).delete(delete_cron))
        .route("/cron/{id}/run", post(run_cron))
        .route("/cron/{id}/pause", post(pause_cron))
        .route("/cron/{id}/resume", post(resume_cron))
        .route("/cron/{id}/events", get(cron_events))
        .route("/delayed", post(create_delayed).get(list_delayed))
        .route("/delayed/{id}", get(get_delayed).delete(delete_delayed))
        .route("/delayed/{id}/events", get(delayed_events))
        .route("/executions", get(executions::list))
        .route("/executions/{id}", get(executions::get))
        .route("/executions/{id}/events", get(executions::events))
        .route(
            "/",
            get(workspaces::get)
                .patch(workspaces::update)
                .delete(workspaces::delete),
        )
        .route("/members", get(workspaces::members))
        .route(
            "/members/{user_id}",
            patch(workspaces::change_role).delete(workspaces::remove_member),
        )
        .route("/invites", post(workspaces::invite))
        .route("/keys", post(workspaces::create_key).get(workspaces::list_keys))
        .route("/keys/{id}", delete(workspaces::revoke_key))
        .route("/usage", get(plans::usage))
        .route("/plan", put(plans::set_plan));
    Router::new()
        .nest("/v1/workspaces/{ws}", ws)
        .route("/v1/cron/preview", get(preview::preview))
        .route("/v1/auth/register", post(accounts::register))
        .route("/v1/auth/login", post(accounts::login))
        .route("/v1/auth/refresh", post(accounts::refresh))
        .route("/v1/auth/logout", post(accounts::logout))
        .route("/v1/auth/verify-email", post(accounts::verify_email))
        .route("/v1/auth/password-reset", post(accounts::request_password_reset))
        .route("/v1/auth/password-reset/confirm", post(accounts::confirm_password_reset))
        .route("/v1/me", get(accounts::me))
        .route("/v1/plans", get(plans::list))
        .route("/v1/workspaces", post(workspaces::create).get(workspaces::list))
        .route("/v1/invites/accept", post(workspaces::accept_invite))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this route", "field": null}})))
        })
        .layer(DefaultBodyLimit::max(input::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::layer))
        .with_state(state)
}

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
