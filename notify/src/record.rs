//! The record of how notification tries ended, many to a transaction.
//!
//! A burst of alerts ends in thousands of tries within a second or two. Recorded one command
//! (one load, one transaction) each, their commits would cost more than the sends and hold the
//! next digest back; recorded together, a batch is three statements. Every try is still its
//! own event on its notification's stream, with the sequence that follows the stream's last.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cronbox_domain::notification::{Notification, NotificationCommand, TryOutcome};
use cronbox_store::aggregates::Stores;
use cronbox_store::append::{append_new, NewEvent};
use uuid::Uuid;

/// One try's end, to be recorded.
#[derive(Debug, Clone)]
pub struct Try {
    pub notification_id: Uuid,
    pub workspace_id: Uuid,
    pub outcome: TryOutcome,
    pub digest: Option<u32>,
    /// In [0, 1): where the retry falls in its jitter band.
    pub jitter: f64,
    pub at: DateTime<Utc>,
}

impl Try {
    fn command(&self) -> NotificationCommand {
        NotificationCommand::Record {
            outcome: self.outcome.clone(),
            digest: self.digest,
            jitter: self.jitter,
            at: self.at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("store error")]
    Store(#[from] cronbox_store::StoreError),
    #[error("the notification refused the record: {0}")]
    Refused(String),
    #[error("cannot record the try: {0}")]
    Command(String),
}

/// Records every try; the result of each, in order. A batch that meets a stream someone else
/// extended meanwhile (a conflict) is recorded again one command at a time, so each try ends
/// up either recorded exactly once or reported as not recorded.
pub async fn record_all(stores: &Stores, tries: &[Try]) -> Vec<Result<(), RecordError>> {
    let distinct = tries.iter().map(|t| t.notification_id).collect::<HashSet<_>>().len() == tries.len();
    if tries.len() > 1 && distinct {
        match together(stores, tries).await {
            Ok(results) => return results,
            Err(e) => tracing::debug!(error = %e, tries = tries.len(), "batched record failed; recording one by one"),
        }
    }
    let mut results = Vec::with_capacity(tries.len());
    for t in tries {
        results.push(
            stores
                .notifications
                .execute(&t.notification_id.to_string(), t.command())
                .await
                .map_err(|e| RecordError::Command(e.to_string())),
        );
    }
    results
}

/// All tries in one transaction, or an error and nothing written.
async fn together(stores: &Stores, tries: &[Try]) -> Result<Vec<Result<(), RecordError>>, RecordError> {
    let ids: Vec<String> = tries.iter().map(|t| t.notification_id.to_string()).collect();
    let mut tx = stores.pool.begin().await?;
    let rows: Vec<(String, i64, serde_json::Value)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, payload FROM events
          WHERE aggregate_type = $1 AND aggregate_id = ANY($2) ORDER BY aggregate_id, sequence",
    )
    .bind(Notification::TYPE)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut streams: HashMap<String, (Notification, i64)> = HashMap::new();
    for (id, seq, payload) in rows {
        let (n, last) = streams.entry(id).or_default();
        n.apply(serde_json::from_value(payload).map_err(cronbox_store::StoreError::from)?);
        *last = seq;
    }
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(tries.len());
    for (t, id) in tries.iter().zip(&ids) {
        let (n, last) = streams.remove(id).unwrap_or_default();
        match n.decide(t.command()) {
            Ok(decided) => {
                for (i, e) in decided.iter().enumerate() {
                    events.push(
                        NewEvent::of::<Notification>(id.clone(), last + 1 + i as i64, e)?
                            .in_workspace(Some(t.workspace_id)),
                    );
                }
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(RecordError::Refused(e.to_string()))),
        }
    }
    let written = append_new(&mut tx, &events).await?;
    if written.len() != events.len() {
        // Someone recorded one of these meanwhile: nothing of this batch is kept.
        tx.rollback().await?;
        return Err(RecordError::Command(
            "a notification's stream moved while recording".into(),
        ));
    }
    tx.commit().await?;
    Ok(results)
}
