//! The event log against a real PostgreSQL: the batch append writes what cqrs-es writes, and the
//! tail sees every committed event exactly once while many writers commit out of order.
//!
//! `CRONBOX_TEST_DATABASE_URL` points at a server where this test may create databases.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use cronbox_domain::request::{RequestInput, RequestSpec};
use cronbox_domain::run::{self, Run, RunCommand, RunPlan, RunStatus, Trigger};
use cronbox_store::aggregates::Stores;
use cronbox_store::append::{append_new, NewEvent};
use cronbox_store::group_commit::{Appended, GroupCommit};
use cronbox_store::tail::{self, Cursor, TailCache};
use sqlx::{PgPool, Row};
use uuid::Uuid;

struct Db {
    name: String,
    admin: String,
    pool: PgPool,
}

impl Db {
    async fn create() -> Self {
        let admin = std::env::var("CRONBOX_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("cbx_store_{}", Uuid::new_v4().simple());
        let conn = PgPool::connect(&admin).await.expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&conn)
            .await
            .expect("create database");
        conn.close().await;
        let url = format!("{}/{name}", &admin[..admin.rfind('/').expect("a database in the URL")]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await
            .expect("connect");
        cronbox_store::db::migrate(&pool).await.expect("migrate");
        Self { name, admin, pool }
    }

    async fn drop_now(self) {
        self.pool.close().await;
        if let Ok(conn) = PgPool::connect(&self.admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&conn)
                .await;
        }
    }
}

fn plan(job: u128) -> RunPlan {
    let request = RequestSpec::parse(
        RequestInput {
            url: "https://example.com/hook".into(),
            method: Some("POST".into()),
            headers: vec![("X-A".into(), "1".into())],
            body: Some("{}".into()),
            timeout_seconds: None,
            retry_count: Some(1),
            retry_delay_seconds: None,
            ..Default::default()
        },
        &cronbox_domain::target::TargetPolicy::guarded(),
    )
    .expect("valid request");
    RunPlan {
        workspace_id: Uuid::from_u128(1),
        job_id: Uuid::from_u128(job),
        trigger: Trigger::Schedule,
        scheduled_for: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("a time"),
        request,
        callback_url: None,
        rerun_of: None,
    }
}

/// (sequence, event_type, event_version, payload, metadata) of one aggregate, as stored.
async fn rows(pool: &PgPool, id: &str) -> Vec<(i64, String, String, serde_json::Value, serde_json::Value)> {
    sqlx::query(
        "SELECT sequence, event_type, event_version, payload::jsonb AS p, metadata::jsonb AS m
           FROM events WHERE aggregate_type = 'Run' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("read rows")
    .into_iter()
    .map(|r| {
        (
            r.get("sequence"),
            r.get("event_type"),
            r.get("event_version"),
            r.get("p"),
            r.get("m"),
        )
    })
    .collect()
}

#[tokio::test]
async fn batch_append_writes_exactly_what_cqrs_es_writes() {
    let db = Db::create().await;
    let stores = Stores::new(db.pool.clone());
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("a time");
    let run_id = Uuid::from_u128(500);

    // Path 1: cqrs-es, one command per transaction.
    let by_cqrs = "cqrs";
    stores
        .runs
        .execute(
            by_cqrs,
            RunCommand::Schedule {
                run_id,
                plan: plan(9),
                at,
            },
        )
        .await
        .expect("schedule");
    stores
        .runs
        .execute(by_cqrs, RunCommand::Dispatch { attempt: 1, at })
        .await
        .expect("dispatch");

    // Path 2: the dispatcher's batch append.
    let by_batch = "batch";
    let events: Vec<NewEvent> = run::fire_events(run_id, plan(9), at)
        .await
        .expect("fire events")
        .iter()
        .enumerate()
        .map(|(i, e)| NewEvent::of::<Run>(by_batch.to_string(), i as i64 + 1, e).expect("encode"))
        .collect();
    let mut conn = db.pool.acquire().await.expect("conn");
    let inserted = append_new(&mut conn, &events).await.expect("append");
    assert_eq!(inserted.len(), 2);
    // A second writer of the same (aggregate, sequence) inserts nothing and is told so.
    assert!(append_new(&mut conn, &events).await.expect("append again").is_empty());
    drop(conn);

    assert_eq!(rows(&db.pool, by_cqrs).await, rows(&db.pool, by_batch).await);
    // cqrs-es loads the batch-written aggregate and carries on from it.
    let (loaded, version) = stores.runs.load(by_batch).await.expect("load");
    assert_eq!(version, 2);
    assert_eq!(loaded.status, RunStatus::Dispatched);
    stores
        .runs
        .execute(by_batch, RunCommand::StartAttempt { attempt: 1, at })
        .await
        .expect("start after batch append");
    assert_eq!(rows(&db.pool, by_batch).await.len(), 3);
    db.drop_now().await;
}

/// A tiny deterministic generator: the test needs varied commit timing, not cryptographic dice.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn tail_sees_every_committed_event_exactly_once_under_concurrent_writers() {
    const WRITERS: u64 = 8;
    const TXS: u64 = 40;
    let db = Db::create().await;

    // Writers hold their transactions open for varying times, so identity values are assigned in
    // one order and committed in another: exactly what a naive `global_seq > last` tail misses.
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let pool = db.pool.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (w + 1);
            let mut written = Vec::new();
            for t in 0..TXS {
                let mut tx = pool.begin().await.expect("begin");
                let n = 1 + xorshift(&mut rng) % 3;
                let id = format!("w{w}-t{t}");
                let events: Vec<NewEvent> = (1..=n as i64)
                    .map(|s| NewEvent {
                        workspace_id: None,
                        aggregate_type: "Probe",
                        aggregate_id: id.clone(),
                        sequence: s,
                        event_type: "Probed".into(),
                        event_version: "1".into(),
                        payload: serde_json::json!({"w": w, "t": t, "s": s}),
                    })
                    .collect();
                append_new(&mut tx, &events).await.expect("append");
                tokio::time::sleep(Duration::from_millis(xorshift(&mut rng) % 25)).await;
                if xorshift(&mut rng).is_multiple_of(10) {
                    // Rolled back: never visible, must never be reported.
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                    written.extend((1..=n as i64).map(|s| (id.clone(), s)));
                }
            }
            written
        }));
    }

    // How many events the writers committed, once they are all done (usize::MAX until then).
    // The reader cannot stop at its first empty read after that: the visibility horizon is
    // cluster-wide, so a transaction of a test running in another database may hold it back for
    // a while. It stops once it has seen that many, after a short look for extra copies.
    let expected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    // Three readers: one on the table, two at different paces through one shared window.
    let cache = std::sync::Arc::new(TailCache::new(db.pool.clone()));
    let readers: Vec<_> = [(None, 7usize), (Some(cache.clone()), 7), (Some(cache), 50)]
        .into_iter()
        .map(|(cache, limit)| {
            let pool = db.pool.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut cursor = Cursor::START;
                let deadline = Instant::now() + Duration::from_secs(90);
                let mut extra_reads = 0;
                while Instant::now() < deadline && extra_reads < 20 {
                    let batch: Vec<(Cursor, String, i64)> = match &cache {
                        None => tail::read_after(&pool, cursor, limit as i64)
                            .await
                            .expect("read")
                            .into_iter()
                            .map(|e| (e.cursor, e.aggregate_id.clone(), e.sequence))
                            .collect(),
                        Some(c) => c
                            .read_after(cursor, limit)
                            .await
                            .expect("read")
                            .iter()
                            .map(|e| (e.cursor, e.aggregate_id.clone(), e.sequence))
                            .collect(),
                    };
                    assert!(batch.len() <= limit);
                    for (c, id, seq) in &batch {
                        assert!(*c > cursor, "tail went backwards: {c:?} after {cursor:?}");
                        cursor = *c;
                        seen.push((id.clone(), *seq));
                    }
                    if seen.len() >= expected.load(std::sync::atomic::Ordering::SeqCst) {
                        extra_reads += 1;
                    }
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                seen
            })
        })
        .collect();

    let mut written = Vec::new();
    for h in handles {
        written.extend(h.await.expect("writer"));
    }
    expected.store(written.len(), std::sync::atomic::Ordering::SeqCst);
    let written_set: HashSet<&(String, i64)> = written.iter().collect();
    let mut orders = Vec::new();
    for reader in readers {
        let seen = reader.await.expect("reader");
        let unique: HashSet<&(String, i64)> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "the tail reported an event twice");
        let missed: Vec<_> = written_set.difference(&unique).collect();
        assert!(
            missed.is_empty(),
            "the tail skipped {} committed events, e.g. {:?}",
            missed.len(),
            missed.first()
        );
        let phantom: Vec<_> = unique.difference(&written_set).collect();
        assert!(phantom.is_empty(), "the tail reported rolled-back events: {phantom:?}");
        orders.push(seen);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "the shared window serves the table's order"
    );
    assert!(
        written.len() > (WRITERS * TXS) as usize,
        "the writers wrote too little to prove anything"
    );
    db.drop_now().await;
}

fn probe(id: &str, seqs: std::ops::RangeInclusive<i64>, tag: &str) -> Vec<NewEvent> {
    seqs.map(|s| NewEvent {
        workspace_id: None,
        aggregate_type: "Probe",
        aggregate_id: id.to_string(),
        sequence: s,
        event_type: "Probed".into(),
        event_version: "1".into(),
        payload: serde_json::json!({"tag": tag, "s": s}),
    })
    .collect()
}

#[tokio::test]
async fn group_commit_checks_each_command_and_never_writes_half_of_one() {
    let db = Db::create().await;
    let writer = GroupCommit::start(db.pool.clone());
    // Another writer already holds sequence 2 of "b".
    let mut tx = db.pool.begin().await.unwrap();
    append_new(&mut tx, &probe("b", 1..=2, "other")).await.unwrap();
    tx.commit().await.unwrap();

    // Many commands at once, so they share transactions: two race for "a" 1, one for "b" 2..3
    // (2 is taken, 3 is free: none of it may stay), and 100 on aggregates of their own.
    let mut calls = vec![
        writer.append(probe("a", 1..=1, "first")),
        writer.append(probe("a", 1..=1, "second")),
        writer.append(probe("b", 2..=3, "late")),
    ];
    for i in 0..100 {
        calls.push(writer.append(probe(&format!("c{i}"), 1..=2, "own")));
    }
    let results: Vec<Appended> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("append"))
        .collect();
    assert_eq!(
        results[..2].iter().filter(|r| **r == Appended::Written).count(),
        1,
        "exactly one of two commands on the same version wins: {results:?}"
    );
    assert_eq!(results[2], Appended::Conflict);
    assert!(results[3..].iter().all(|r| *r == Appended::Written));

    let b: Vec<(i64, String)> =
        sqlx::query_as("SELECT sequence, payload->>'tag' FROM events WHERE aggregate_id = 'b' ORDER BY sequence")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        b,
        vec![(1, "other".to_string()), (2, "other".to_string())],
        "nothing of the refused command stays"
    );
    let a: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 'a'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(a, 1);
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id LIKE 'c%'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(own, 200);
    db.drop_now().await;
}
