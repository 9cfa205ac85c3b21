//! One aggregate's stream read and extended inside the caller's transaction.
//!
//! cqrs-es commits each command in a transaction of its own. The alert decider must write its
//! decision in the same transaction that moves its checkpoint (or a crash would lose or repeat
//! it), so it loads and appends here instead. Every other writer of the same aggregates takes
//! the same per-aggregate lock first, so sequence numbers never collide.

use cqrs_es::Aggregate;
use sqlx::PgConnection;

use crate::append::{append_new, NewEvent};
use crate::StoreError;

/// Serialises writers of one aggregate until the transaction ends.
pub async fn lock(conn: &mut PgConnection, aggregate_type: &str, id: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('cronbox-stream:' || $1 || ':' || $2, 0))")
        .bind(aggregate_type)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The aggregate as its stored events make it, and the sequence of its last event (0: none).
pub async fn load<A: Aggregate>(conn: &mut PgConnection, id: &str) -> Result<(A, i64), StoreError> {
    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT sequence, payload::jsonb FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(A::TYPE)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut aggregate = A::default();
    let mut last = 0;
    for (seq, payload) in rows {
        aggregate.apply(serde_json::from_value(payload)?);
        last = seq;
    }
    Ok((aggregate, last))
}

/// Appends `events` after sequence `after`; returns the sequence of each, in order. A conflict
/// (someone wrote without the lock) is an error, never a silent drop.
pub async fn append<A: Aggregate>(
    conn: &mut PgConnection,
    id: &str,
    after: i64,
    events: &[A::Event],
    workspace_id: Option<uuid::Uuid>,
) -> Result<Vec<i64>, StoreError> {
    let rows = events
        .iter()
        .enumerate()
        .map(|(i, e)| Ok(NewEvent::of::<A>(id.to_string(), after + 1 + i as i64, e)?.in_workspace(workspace_id)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let written = append_new(conn, &rows).await?;
    if written.len() != rows.len() {
        return Err(StoreError::Conflict {
            aggregate_type: A::TYPE,
            aggregate_id: id.to_string(),
        });
    }
    Ok(rows.iter().map(|r| r.sequence).collect())
}
