//! Stored events in their published envelope (what `GET …/events`, the live feed and the NATS
//! export send). Which types leave and which fields are masked is decided in
//! `cronbox_domain::public`; this adds the position and identity every message carries.

use cronbox_domain::public::{inner, public_data, SCHEMA_VERSION};
use serde_json::{json, Value};

use crate::tail::StoredEvent;

/// The envelope of a published event, or None for events customers never see.
pub fn envelope(ev: &StoredEvent) -> Option<Value> {
    let workspace_id = ev.workspace_id?;
    let data = public_data(&ev.aggregate_type, &ev.event_type, inner(&ev.event_type, &ev.payload))?;
    Some(json!({
        "id": ev.cursor.to_string(),
        "schema_version": SCHEMA_VERSION,
        "type": ev.event_type,
        "workspace_id": workspace_id,
        "aggregate_type": ev.aggregate_type.to_ascii_lowercase(),
        "aggregate_id": ev.aggregate_id,
        "sequence": ev.sequence,
        "recorded_at": ev.recorded_at,
        "data": data,
    }))
}
