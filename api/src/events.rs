//! The audit trail of one aggregate: its stored events in order.

use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// Events of one aggregate. The caller has already checked the aggregate is the tenant's.
pub async fn aggregate_events(state: &AppState, aggregate_type: &str, id: Uuid) -> Result<Json<Value>, ApiError> {
    let rows: Vec<(i64, String, String, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload::jsonb, recorded_at FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(id.to_string())
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(sequence, event_type, version, payload, recorded_at)| {
            // Stored as {"Type": {...}}; clients get the inner object.
            let data = payload.get(&event_type).cloned().unwrap_or(payload);
            json!({"sequence": sequence, "type": event_type, "version": version, "recorded_at": recorded_at, "data": data})
        })
        .collect();
    Ok(Json(
        json!({"aggregate_type": aggregate_type, "aggregate_id": id, "items": items}),
    ))
}
