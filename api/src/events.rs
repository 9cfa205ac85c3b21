//! The event log as tenants read it: one aggregate's audit trail, and the whole workspace's
//! published event stream (`GET …/events`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use cronbox_domain::public::is_published_type;
use cronbox_store::published::envelope;
use cronbox_store::tail::{self, Cursor};
use serde_json::{json, Value};
use uuid::Uuid;

use cronbox_domain::public::public_data;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Events of one aggregate. The caller has already checked the aggregate is the tenant's.
pub async fn aggregate_events(state: &AppState, aggregate_type: &str, id: Uuid) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = trail(state, aggregate_type, id)
        .await?
        .into_iter()
        .map(|e| {
            json!({"sequence": e.sequence, "type": e.event_type, "version": e.version,
                   "recorded_at": e.recorded_at, "data": e.data})
        })
        .collect();
    Ok(Json(
        json!({"aggregate_type": aggregate_type, "aggregate_id": id, "items": items}),
    ))
}

/// One event of an audit trail, as tenants see it.
#[derive(Debug, Clone)]
pub struct TrailEvent {
    pub sequence: i64,
    pub event_type: String,
    pub version: String,
    pub recorded_at: DateTime<Utc>,
    /// The event's fields, credentials masked.
    pub data: Value,
}

/// The audit trail of one aggregate, in order (the API's `…/events` routes and the web app).
/// The caller has already checked the aggregate is the tenant's.
pub async fn trail(state: &AppState, aggregate_type: &str, id: Uuid) -> Result<Vec<TrailEvent>, ApiError> {
    let rows: Vec<(i64, String, String, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload, recorded_at FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(id.to_string())
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sequence, event_type, version, payload, recorded_at)| {
            // Stored as {"Type": {...}}; clients get the inner object, with credentials masked
            // by the public event stream's rule (for every role: the trail is a record of
            // what happened, not a way to read secrets back).
            let inner = payload.get(&event_type).unwrap_or(&payload);
            let data = public_data(aggregate_type, &event_type, inner).unwrap_or_else(|| inner.clone());
            TrailEvent {
                sequence,
                event_type,
                version,
                recorded_at,
                data,
            }
        })
        .collect())
}

/// Largest page of `GET …/events`.
const MAX_EVENTS_PAGE: i64 = 1000;

/// `GET /v1/workspaces/{ws}/events`: the workspace's published events in global order.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    summary = "The workspace's event stream, in order (plans with event_stream)",
    description = "Ordered, paginated, stable: pass `next_cursor` as `after` to continue; a page with no \
                   items returns the same cursor, so polling with it never skips or repeats an event. Without \
                   `after` the stream starts at the oldest event inside the plan's log retention.",
    params(crate::openapi::WsPath, crate::openapi::schemas::EventListQuery),
    responses(
        (status = 200, description = "A page of events", body = crate::openapi::schemas::PublishedEventList),
        (status = 400, description = "A bad cursor, limit or type", body = crate::openapi::schemas::ErrorResponse),
        (status = 403, description = "The plan has no event stream", body = crate::openapi::schemas::ErrorResponse),
        (status = 410, description = "`after` is older than the plan's log retention", body = crate::openapi::schemas::ErrorResponse)
    ),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let plan = event_stream_plan(&state, &caller).await?;
    let limit = crate::pagination::limit_within(q.get("limit").map(String::as_str), 100, MAX_EVENTS_PAGE)?;
    let types = q.get("types").map(|s| parse_types(s)).transpose()?;
    let cutoff = retention_cutoff(&plan);
    // `0-0` (the log's start) is the same as no cursor.
    let after = match q.get("after").filter(|s| !s.trim().is_empty() && s.trim() != "0-0") {
        None => None,
        Some(s) => {
            let c: Cursor = s
                .parse()
                .map_err(|m: &str| ApiError::field("after", "invalid_cursor", m))?;
            match cursor_state(&state.pool, c, cutoff).await? {
                CursorState::Unknown => return Err(ApiError::field("after", "unknown_cursor", "no event has this id")),
                CursorState::Expired => {
                    return Err(ApiError::Gone {
                        code: "cursor_expired",
                        message: format!(
                            "the cursor is older than the plan's log retention ({} days); start again without `after`",
                            plan.log_retention_days
                        ),
                    })
                }
                CursorState::Retained => Some(c),
            }
        }
    };
    let rows = match after {
        Some(c) => tail::read_workspace_after(&state.pool, caller.workspace_id, c, types.as_deref(), limit).await?,
        None => first_page(&state, caller.workspace_id, cutoff, types.as_deref(), limit).await?,
    };
    let next = rows.last().map(|e| e.cursor).or(after);
    let items: Vec<Value> = rows.iter().filter_map(envelope).collect();
    Ok(Json(json!({
        "items": items,
        "next_cursor": next.map(|c| c.to_string()),
    })))
}

/// The caller's plan, if it includes the event stream (403 `plan_feature` if not).
pub async fn event_stream_plan(state: &AppState, caller: &Caller) -> Result<crate::plans::Plan, ApiError> {
    let plan = caller.plan(state).await?;
    if !plan.event_stream {
        return Err(ApiError::PlanFeature {
            feature: "event_stream",
            plan: plan.name,
        });
    }
    Ok(plan)
}

/// Events recorded before this have left the plan's retention window.
pub fn retention_cutoff(plan: &crate::plans::Plan) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(i64::from(plan.log_retention_days))
}

/// What a client's cursor points at.
pub enum CursorState {
    Retained,
    /// No event has this position.
    Unknown,
    /// Its event is older than the retention cutoff.
    Expired,
}

pub async fn cursor_state(pool: &sqlx::PgPool, c: Cursor, cutoff: DateTime<Utc>) -> Result<CursorState, ApiError> {
    Ok(match tail::event_at(pool, c).await? {
        None => CursorState::Unknown,
        Some((at, _)) if at < cutoff => CursorState::Expired,
        Some(_) => CursorState::Retained,
    })
}

/// The first page: the oldest events inside the retention window.
async fn first_page(
    state: &AppState,
    ws: Uuid,
    cutoff: DateTime<Utc>,
    types: Option<&[String]>,
    limit: i64,
) -> Result<Vec<tail::StoredEvent>, ApiError> {
    match retained_start(&state.pool, ws, cutoff).await? {
        Some(before) => Ok(tail::read_workspace_after(&state.pool, ws, before, types, limit).await?),
        None => Ok(Vec::new()),
    }
}

/// The position just before the workspace's oldest event recorded at or after `cutoff` (None:
/// it has none).
pub async fn retained_start(pool: &sqlx::PgPool, ws: Uuid, cutoff: DateTime<Utc>) -> Result<Option<Cursor>, ApiError> {
    let start: Option<(i64, i64)> = sqlx::query_as(
        "SELECT xid::text::int8, global_seq FROM events
          WHERE workspace_id = $1 AND recorded_at >= $2
          ORDER BY events.workspace_id, events.xid, events.global_seq LIMIT 1",
    )
    .bind(ws)
    .bind(cutoff)
    .fetch_optional(pool)
    .await?;
    // No event sits between (xid, seq - 1) and (xid, seq).
    Ok(start.map(|(xid, seq)| Cursor { xid, seq: seq - 1 }))
}

fn parse_types(s: &str) -> Result<Vec<String>, ApiError> {
    let types: Vec<String> = s
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if types.is_empty() {
        return Err(ApiError::field(
            "types",
            "invalid",
            "types must list at least one event type",
        ));
    }
    if let Some(bad) = types.iter().find(|t| !is_published_type(t)) {
        return Err(ApiError::field(
            "types",
            "unknown_type",
            format!("{bad} is not an event type (see docs/events.md)"),
        ));
    }
    Ok(types)
}
