//! Event-stream subscriptions over NATS: `POST /v1/workspaces/{ws}/event-subscriptions` makes a
//! durable JetStream consumer over the workspace's events and returns NATS credentials that can
//! read that consumer and nothing else (not another workspace's subjects, not any publish).
//! Deleting the subscription deletes the consumer, which leaves the credentials nothing to read.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use cronbox_domain::public::is_published_type;
use cronbox_nats::auth::{issue_user, Permissions};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use crate::input::{Fields, JsonObject};
use crate::AppState;

/// What the API needs to issue subscribers' credentials.
#[derive(Clone)]
pub struct Issuer {
    /// The application account's seed (signs subscriber JWTs).
    pub account_seed: String,
    /// The NATS URL subscribers connect to.
    pub public_url: String,
}

/// Credentials cannot be withdrawn before they expire (the memory resolver takes no pushed
/// revocations; deleting the consumer leaves them nothing to read), so they do not live long:
/// a subscriber renews them by creating a new subscription.
const MAX_DAYS: i64 = 90;
const MAX_SUBSCRIPTIONS: i64 = 50;

/// Names of the consumer and inbox prefix a subscription's credentials are scoped to.
fn consumer_of(id: Uuid) -> String {
    format!("sub_{}", id.simple())
}

fn inbox_of(id: Uuid) -> String {
    format!("_INBOX_{}", id.simple())
}

/// Exactly what a subscriber may do: look at and pull from its consumer, ack what it pulled,
/// and receive replies on its own inbox.
pub fn permissions(stream: &str, consumer: &str, inbox: &str) -> Permissions {
    Permissions {
        publish: vec![
            format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            format!("$JS.ACK.{stream}.{consumer}.>"),
        ],
        subscribe: vec![format!("{inbox}.>")],
    }
}

type Row = (Uuid, String, String, Vec<String>, DateTime<Utc>, DateTime<Utc>, String);

fn row_json(state: &AppState, (id, name, consumer, types, expires_at, created_at, user_key): Row) -> Value {
    let stream = state.queue.as_ref().map(|q| q.events_stream_name());
    json!({"id": id, "name": name, "types": types, "expires_at": expires_at, "created_at": created_at,
           "nats": {"stream": stream, "consumer": consumer, "inbox_prefix": inbox_of(id), "user_public_key": user_key}})
}

#[utoipa::path(
    post,
    path = "/event-subscriptions",
    tag = "events",
    summary = "Issue NATS credentials for a durable subscription to the workspace's events (plans with event_stream)",
    description = "Creates a durable JetStream pull consumer over the workspace's events (optionally only `types`) and \
                   returns a `.creds` file whose user may read that consumer and nothing else. The credentials are \
                   shown once. Attach with any NATS client using `inbox_prefix` as the custom inbox prefix; see \
                   `usage` in the response and the README.",
    params(crate::openapi::WsPath),
    request_body = crate::openapi::schemas::CreateEventSubscription,
    responses(
        (status = 201, description = "The subscription and its credentials", body = crate::openapi::schemas::EventSubscriptionCreated),
        (status = 400, description = "A bad field", body = crate::openapi::schemas::ErrorResponse),
        (status = 403, description = "The plan has no event stream", body = crate::openapi::schemas::ErrorResponse),
        (status = 503, description = "`not_configured`: this installation has no NATS account to sign with", body = crate::openapi::schemas::ErrorResponse)
    ),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    crate::events::event_stream_plan(&state, &caller).await?;
    let mut f = Fields(body);
    let name = f.string("name")?.unwrap_or_else(|| "subscription".into());
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::field("name", "invalid", "name must be 1 to 200 characters"));
    }
    let types = f.strings("types")?.unwrap_or_default();
    if let Some(bad) = types.iter().find(|t| !is_published_type(t)) {
        return Err(ApiError::field(
            "types",
            "unknown_type",
            format!("{bad} is not an event type (see docs/events.md)"),
        ));
    }
    let days = f.int("expires_in_days")?.unwrap_or(MAX_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::field(
            "expires_in_days",
            "out_of_range",
            format!("expires_in_days must be 1 to {MAX_DAYS}"),
        ));
    }
    f.finish()?;
    let (Some(issuer), Some(queue)) = (state.subscriptions.as_ref(), state.queue.as_ref()) else {
        return Err(ApiError::NotConfigured(
            "event subscriptions need an operator-mode NATS server: the operator sets CRONBOX_NATS_ACCOUNT_SEED (see `cronbox nats init`)",
        ));
    };
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_subscriptions WHERE workspace_id = $1 AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(caller.workspace_id)
    .fetch_one(&state.pool)
    .await?;
    if live >= MAX_SUBSCRIPTIONS {
        return Err(ApiError::Conflict {
            code: "too_many_subscriptions",
            message: format!("a workspace has at most {MAX_SUBSCRIPTIONS} live subscriptions; delete one first"),
        });
    }

    let id = Uuid::new_v4();
    let (stream, consumer, inbox) = (queue.events_stream_name(), consumer_of(id), inbox_of(id));
    let expires_at = Utc::now() + chrono::Duration::days(days);
    let (creds, user_key) = issue_user(
        &issuer.account_seed,
        &format!("cronbox-events-{}", caller.workspace_id.simple()),
        &permissions(&stream, &consumer, &inbox),
        expires_at,
    )
    .map_err(ApiError::internal)?;
    queue
        .create_subscription_consumer(&consumer, caller.workspace_id, &types)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, workspace_id = %caller.workspace_id, "cannot create a subscription consumer");
            ApiError::Unavailable
        })?;
    let created_by = match caller.principal {
        Principal::ApiKey(k) => format!("api_key:{k}"),
        Principal::User(u) => format!("user:{u}"),
    };
    let row: Result<Row, sqlx::Error> = sqlx::query_as(
        "INSERT INTO event_subscriptions (id, workspace_id, name, consumer, user_key, types, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id, name, consumer, types, expires_at, created_at, user_key",
    )
    .bind(id)
    .bind(caller.workspace_id)
    .bind(&name)
    .bind(&consumer)
    .bind(&user_key)
    .bind(&types)
    .bind(expires_at)
    .bind(&created_by)
    .fetch_one(&state.pool)
    .await;
    let row = match row {
        Ok(r) => r,
        Err(e) => {
            // Leave no consumer without a record.
            let _ = queue.delete_subscription_consumer(&consumer).await;
            return Err(e.into());
        }
    };
    tracing::info!(workspace_id = %caller.workspace_id, subscription_id = %id, "event subscription created");
    let mut v = row_json(&state, row);
    v["nats"]["url"] = json!(issuer.public_url);
    v["credentials"] = json!(creds);
    v["usage"] = json!({
        "nats_cli": format!(
            "nats --server {} --creds cronbox-events.creds --inbox-prefix {inbox} consumer next {stream} {consumer} --count 10",
            issuer.public_url
        ),
        "note": "Save `credentials` as cronbox-events.creds (it is shown only now). The user may read this consumer only; set the client's custom inbox prefix to inbox_prefix.",
    });
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(
    get,
    path = "/event-subscriptions",
    tag = "events",
    summary = "The workspace's live event subscriptions (no credentials)",
    params(crate::openapi::WsPath),
    responses((status = 200, description = "Subscriptions", body = crate::openapi::schemas::EventSubscriptionList)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, name, consumer, types, expires_at, created_at, user_key FROM event_subscriptions
          WHERE workspace_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
    )
    .bind(caller.workspace_id)
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows.into_iter().map(|r| row_json(&state, r)).collect();
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(
    delete,
    path = "/event-subscriptions/{id}",
    tag = "events",
    summary = "Revoke a subscription: its consumer is deleted, its credentials reach nothing",
    params(crate::openapi::WsIdPath),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such subscription", body = crate::openapi::schemas::ErrorResponse)),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::NotFound("event subscription"))?;
    let consumer: Option<String> = sqlx::query_scalar(
        "SELECT consumer FROM event_subscriptions WHERE id = $1 AND workspace_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(caller.workspace_id)
    .fetch_optional(&state.pool)
    .await?;
    let consumer = consumer.ok_or(ApiError::NotFound("event subscription"))?;
    let queue = state.queue.as_ref().ok_or(ApiError::Unavailable)?;
    queue.delete_subscription_consumer(&consumer).await.map_err(|e| {
        tracing::warn!(error = %e, subscription_id = %id, "cannot delete a subscription consumer");
        ApiError::Unavailable
    })?;
    sqlx::query("UPDATE event_subscriptions SET revoked_at = now() WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await?;
    tracing::info!(workspace_id = %caller.workspace_id, subscription_id = %id, "event subscription revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every live subscription of workspace `ws` (it was deleted): their consumers go, so
/// the credentials reach nothing. Best effort with NATS: what cannot be deleted now is left
/// live and found by [`sweep`].
pub async fn revoke_all(state: &AppState, ws: Uuid) -> Result<(), ApiError> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, consumer FROM event_subscriptions WHERE workspace_id = $1 AND revoked_at IS NULL")
            .bind(ws)
            .fetch_all(&state.pool)
            .await?;
    let Some(queue) = state.queue.as_ref() else {
        return Ok(());
    };
    for (id, consumer) in rows {
        match queue.delete_subscription_consumer(&consumer).await {
            Ok(()) => {
                sqlx::query("UPDATE event_subscriptions SET revoked_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&state.pool)
                    .await?;
            }
            Err(e) => tracing::warn!(error = %e, subscription_id = %id, "cannot delete a subscription consumer yet"),
        }
    }
    Ok(())
}

/// Deletes the consumers of subscriptions that expired, or whose workspace was deleted, and
/// marks them revoked. Returns how many.
pub async fn sweep(pool: &sqlx::PgPool, queue: &cronbox_nats::RunQueue) -> Result<usize, sqlx::Error> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT s.id, s.consumer FROM event_subscriptions s
          WHERE s.revoked_at IS NULL
            AND (s.expires_at <= now()
                 OR EXISTS (SELECT 1 FROM events e WHERE e.aggregate_type = 'Workspace'
                               AND e.aggregate_id = s.workspace_id::text AND e.event_type = 'WorkspaceDeleted'))
          LIMIT 1000",
    )
    .fetch_all(pool)
    .await?;
    let mut done = 0;
    for (id, consumer) in rows {
        if let Err(e) = queue.delete_subscription_consumer(&consumer).await {
            tracing::debug!(error = %e, subscription_id = %id, "subscription consumer not deleted yet");
            continue;
        }
        sqlx::query("UPDATE event_subscriptions SET revoked_at = now() WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
        done += 1;
    }
    Ok(done)
}
