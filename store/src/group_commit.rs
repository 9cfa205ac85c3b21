//! Group commit: the events of many commands, each on its own aggregate, appended in one
//! transaction.
//!
//! An executor records two commands per run (attempt started, attempt finished). Through
//! cqrs-es each is a transaction of its own — a load, one INSERT per event, a commit — so a
//! busy executor spends its time waiting on commits. Here every command that is ready while
//! the previous batch commits joins the next one: one multi-row INSERT and one commit for all
//! of them. Each command still gets its own optimistic-concurrency check: its events carry the
//! sequence numbers it expects, and the primary key refuses them if another writer got there
//! first. A command whose events went in only in part (another writer took a later number) has
//! its rows deleted again before the commit, so a stream never holds half a command.

use std::collections::HashSet;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::append::{append_new, NewEvent};
use crate::StoreError;

/// What happened to one command's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// All of them are committed.
    Written,
    /// Another writer appended to the aggregate first; none of them were written.
    Conflict,
}

struct Request {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Appended, String>>,
}

/// Most commands in one transaction.
const MAX_BATCH: usize = 512;

/// A handle to the group-commit writer. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Starts the writer task on `pool`. It stops when every handle is dropped.
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer(pool, rx));
        Self { tx }
    }

    /// Appends one command's events (consecutive sequence numbers of one aggregate).
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Ok(Appended::Written);
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { events, reply })
            .await
            .map_err(|_| StoreError::EventStore("the group-commit writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::EventStore("the group-commit writer has stopped".into()))?
            .map_err(StoreError::EventStore)
    }
}

/// Waits for one request, then takes every other one already waiting, up to `max`: what
/// arrived while the previous batch was committing. False when every sender is gone.
pub(crate) async fn next_batch<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max: usize) -> bool {
    let Some(first) = rx.recv().await else {
        return false;
    };
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    true
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut rx, &mut batch, MAX_BATCH).await {
        match write(&pool, &batch).await {
            Ok(results) => {
                for (r, result) in batch.drain(..).zip(results) {
                    let _ = r.reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, commands = batch.len(), "group commit failed");
                let msg = e.to_string();
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

async fn write(pool: &PgPool, batch: &[Request]) -> Result<Vec<Appended>, StoreError> {
    // Two commands of this batch on the same (aggregate, sequence): the first one goes in, the
    // later ones conflict without being sent (their writers will see the first one's events).
    let mut claimed: HashSet<(&str, i64)> = HashSet::new();
    let mut results: Vec<Option<Appended>> = Vec::with_capacity(batch.len());
    let mut rows: Vec<NewEvent> = Vec::new();
    for r in batch {
        if r.events
            .iter()
            .all(|e| claimed.insert((e.aggregate_id.as_str(), e.sequence)))
        {
            rows.extend(r.events.iter().cloned());
            results.push(None);
        } else {
            results.push(Some(Appended::Conflict));
        }
    }
    let mut tx = pool.begin().await?;
    let inserted: HashSet<(String, i64)> = append_new(&mut tx, &rows).await?.into_iter().collect();
    let mut undo: Vec<(&'static str, String, i64)> = Vec::new();
    for (r, result) in batch.iter().zip(results.iter_mut()) {
        if result.is_some() {
            continue;
        }
        let mine = r
            .events
            .iter()
            .filter(|e| inserted.contains(&(e.aggregate_id.clone(), e.sequence)))
            .count();
        if mine == r.events.len() {
            *result = Some(Appended::Written);
        } else {
            *result = Some(Appended::Conflict);
            undo.extend(
                r.events
                    .iter()
                    .filter(|e| inserted.contains(&(e.aggregate_id.clone(), e.sequence)))
                    .map(|e| (e.aggregate_type, e.aggregate_id.clone(), e.sequence)),
            );
        }
    }
    if !undo.is_empty() {
        let (types, rest): (Vec<&str>, Vec<(String, i64)>) = undo.into_iter().map(|(t, i, s)| (t, (i, s))).unzip();
        let (ids, seqs): (Vec<String>, Vec<i64>) = rest.into_iter().unzip();
        sqlx::query(
            "DELETE FROM events e USING unnest($1::text[], $2::text[], $3::int8[]) AS x(t, i, s)
              WHERE e.aggregate_type = x.t AND e.aggregate_id = x.i AND e.sequence = x.s",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(results.into_iter().map(|r| r.unwrap_or(Appended::Conflict)).collect())
}
