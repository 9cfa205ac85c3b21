//! Appending the events of many aggregates in one statement.
//!
//! cqrs-es commits one aggregate per transaction. The dispatcher records hundreds of runs that
//! fall due in the same millisecond; one transaction per run would cap it at the database's
//! single-commit rate. This writes the same rows cqrs-es would (same columns, same JSON shapes,
//! same per-aggregate sequence numbers — `store/tests/event_log.rs` compares them and loads them
//! back through cqrs-es), so the primary key still refuses a second writer of the same (aggregate, sequence).

use cqrs_es::{Aggregate, DomainEvent};
use sqlx::PgConnection;

use crate::StoreError;

/// One event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    /// The workspace, when the writer knows it; otherwise the insert trigger derives it (a
    /// lookup of the aggregate's first event), which hot paths spare the database.
    pub workspace_id: Option<uuid::Uuid>,
}

impl NewEvent {
    pub fn of<A: Aggregate>(aggregate_id: String, sequence: i64, event: &A::Event) -> Result<Self, StoreError> {
        Ok(Self {
            aggregate_type: A::TYPE,
            aggregate_id,
            sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event)?,
            workspace_id: None,
        })
    }

    pub fn in_workspace(mut self, workspace_id: Option<uuid::Uuid>) -> Self {
        self.workspace_id = workspace_id;
        self
    }
}

/// Whether serialized JSON holds an escaped NUL (`\u0000`, not `\\u0000`). The column is
/// `json`, which keeps it, but every read model (`text`, `jsonb`) refuses it: such an event would
/// be quarantined by every projection. The edges refuse NUL in what they accept; this is the
/// last line, so a path that forgot cannot write one.
pub fn has_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut from = 0;
    while let Some(i) = json[from..].find("u0000").map(|i| i + from) {
        let backslashes = bytes[..i].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = i + 5;
    }
    false
}

/// The rows that append `events` to aggregate `id` of `workspace_id`, whose last sequence is
/// `version`.
pub fn rows<A: Aggregate>(
    id: &str,
    version: usize,
    events: &[A::Event],
    workspace_id: Option<uuid::Uuid>,
) -> Result<Vec<NewEvent>, StoreError> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| Ok(NewEvent::of::<A>(id.to_string(), (version + i + 1) as i64, e)?.in_workspace(workspace_id)))
        .collect()
}

/// Inserts `events`, skipping any whose (aggregate, sequence) already exists. Returns the
/// (aggregate_id, sequence) pairs actually inserted, so the caller can tell which of its
/// aggregates someone else had already written.
pub async fn append_new(conn: &mut PgConnection, events: &[NewEvent]) -> Result<Vec<(String, i64)>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut types = Vec::with_capacity(events.len());
    let mut ids = Vec::with_capacity(events.len());
    let mut seqs = Vec::with_capacity(events.len());
    let mut etypes = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut workspaces = Vec::with_capacity(events.len());
    for e in events {
        types.push(e.aggregate_type);
        ids.push(e.aggregate_id.as_str());
        seqs.push(e.sequence);
        etypes.push(e.event_type.as_str());
        versions.push(e.event_version.as_str());
        let payload = e.payload.to_string();
        if has_nul(&payload) {
            return Err(StoreError::Unstorable {
                aggregate_type: e.aggregate_type,
                aggregate_id: e.aggregate_id.clone(),
                event_type: e.event_type.clone(),
            });
        }
        payloads.push(payload);
        workspaces.push(e.workspace_id);
    }
    // WITH ORDINALITY keeps the caller's order, which fixes the global_seq order of the batch.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                             workspace_id)
         SELECT t, i, s, et, v, p::json, '{}'::json, w
           FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::uuid[])
                WITH ORDINALITY AS x(t, i, s, et, v, p, w, n)
          ORDER BY n
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING
         RETURNING aggregate_id, sequence",
    )
    .bind(&types)
    .bind(&ids)
    .bind(&seqs)
    .bind(&etypes)
    .bind(&versions)
    .bind(&payloads)
    .bind(&workspaces)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_escaped_nul_only() {
        let nul = serde_json::json!({"body": "a\u{0}b"}).to_string();
        assert!(super::has_nul(&nul));
        let text = serde_json::json!({"body": "a\\u0000b"}).to_string();
        assert!(!super::has_nul(&text), "{text}");
        let both = serde_json::json!({"a": "\\u0000", "b": "\u{0}"}).to_string();
        assert!(super::has_nul(&both));
    }
}
