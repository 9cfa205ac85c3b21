//! Group commit for job creation.
//!
//! Every create of a workspace moves the same plan counter row ([`crate::usage`]), so creates of
//! one workspace run one after another, each holding that row until its commit is on disk: the
//! commit rate of one row, not of the database, caps a busy client. Here the creates that arrive
//! while a commit is in progress are written together: one multi-row insert of their events,
//! one checked update per counter for the sum of their costs, one commit. If the sum would pass a
//! plan limit, the group is undone and its creates are written one by one, so exactly the ones
//! that fit get in, as they would have without grouping.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cronbox_domain::job::{Job, JobEvent};
use cronbox_domain::usage::{job_usage_delta, Counter};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::append::{append_new, rows};
use crate::group_commit::next_batch;
use crate::usage::{apply_delta, period, Limits, MeteredError};
use crate::StoreError;

/// A job to create: the events its `Create` command decided.
pub struct NewJob {
    pub workspace_id: Uuid,
    pub job_id: Uuid,
    pub events: Vec<JobEvent>,
    /// The workspace's timezone (places monthly counters).
    pub tz: Tz,
    pub limits: Limits,
    pub at: DateTime<Utc>,
}

struct Request {
    job: NewJob,
    reply: oneshot::Sender<Result<(), MeteredError>>,
}

const MAX_BATCH: usize = 256;

/// A handle to the create writer. Cheap to clone.
#[derive(Clone)]
pub struct CreateBatcher {
    tx: mpsc::Sender<Request>,
}

fn stopped() -> MeteredError {
    MeteredError::Store(StoreError::EventStore("the create writer has stopped".into()))
}

impl CreateBatcher {
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer(pool, rx));
        Self { tx }
    }

    /// Appends the new job's events with the usage they cost; refused with
    /// [`MeteredError::LimitReached`] past a plan limit, [`MeteredError::Conflict`] if the job
    /// already has events.
    pub async fn create(&self, job: NewJob) -> Result<(), MeteredError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Request { job, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut rx, &mut batch, MAX_BATCH).await {
        let jobs: Vec<&NewJob> = batch.iter().map(|r| &r.job).collect();
        let grouped = if jobs.len() > 1 {
            write(&pool, &jobs).await
        } else {
            Err(None)
        };
        match grouped {
            Ok(results) => {
                for (r, result) in batch.drain(..).zip(results) {
                    let _ = r.reply.send(result);
                }
            }
            Err(e) => {
                if let Some(e) = e {
                    tracing::debug!(error = %e, "grouped create failed; writing one by one");
                }
                for r in batch.drain(..) {
                    let result = write(&pool, &[&r.job]).await;
                    let _ = r.reply.send(match result {
                        Ok(mut one) => one.pop().unwrap_or(Err(MeteredError::Conflict)),
                        Err(Some(e)) => Err(e),
                        Err(None) => Err(MeteredError::Conflict),
                    });
                }
            }
        }
    }
}

/// Writes `jobs` in one transaction. Ok: a result per job (a job that already existed is a
/// conflict). Err: nothing was written (`Some`: why).
async fn write(pool: &PgPool, jobs: &[&NewJob]) -> Result<Vec<Result<(), MeteredError>>, Option<MeteredError>> {
    let mut new_rows = Vec::new();
    for j in jobs {
        new_rows.extend(
            rows::<Job>(&j.job_id.to_string(), 0, &j.events, Some(j.workspace_id)).map_err(|e| Some(e.into()))?,
        );
    }
    let mut tx = pool.begin().await.map_err(|e| Some(e.into()))?;
    let inserted: std::collections::HashSet<(String, i64)> = append_new(&mut tx, &new_rows)
        .await
        .map_err(|e| Some(e.into()))?
        .into_iter()
        .collect();
    let empty = Job::default();
    let mut results = Vec::with_capacity(jobs.len());
    // (workspace, counter, period) -> (delta, limit), in a fixed order so two writers lock
    // counter rows in the same order.
    let mut deltas: BTreeMap<(Uuid, Counter, String), (i64, Option<i64>)> = BTreeMap::new();
    for j in jobs {
        let id = j.job_id.to_string();
        let all_in = (1..=j.events.len() as i64).all(|s| inserted.contains(&(id.clone(), s)));
        if !all_in {
            // New ids collide only on a repeat of the same create: the job exists already.
            if jobs.len() == 1 {
                return Err(Some(MeteredError::Conflict));
            }
            return Err(None);
        }
        for (counter, delta) in job_usage_delta(&empty, &j.events).entries() {
            let e = deltas
                .entry((j.workspace_id, counter, period(counter, j.at, j.tz)))
                .or_insert((0, j.limits.of(counter)));
            e.0 += delta;
        }
        results.push(Ok(()));
    }
    for ((ws, counter, key), (delta, limit)) in deltas {
        if let Err(e) = apply_delta(&mut tx, ws, counter, &key, delta, limit).await {
            // One by one, the ones that fit still get in.
            return Err(if jobs.len() == 1 { Some(e) } else { None });
        }
    }
    tx.commit().await.map_err(|e| Some(e.into()))?;
    Ok(results)
}
