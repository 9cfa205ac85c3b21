//! Misfire policies after downtime: `run_all` catches up every missed second, `skip` records
//! the missed ones as skipped; both keep each instant exactly once.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestEnv;
use serde_json::{json, Value};

/// (scheduled instants of the job's runs, skip records as (first, last, count)).
async fn history(env: &TestEnv, job_id: &str) -> (Vec<DateTime<Utc>>, Vec<(DateTime<Utc>, DateTime<Utc>, u64)>) {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, payload::jsonb FROM events WHERE aggregate_type = 'Run'
            AND event_type IN ('RunScheduled', 'RunSkipped') ORDER BY global_seq",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    let t = |v: &Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let (mut fired, mut skipped) = (Vec::new(), Vec::new());
    for (ty, p) in rows {
        let e = &p[&ty];
        if ty == "RunScheduled" && e["plan"]["job_id"] == job_id {
            fired.push(t(&e["plan"]["scheduled_for"]));
        } else if ty == "RunSkipped" && e["job_id"] == job_id {
            skipped.push((
                t(&e["first_skipped"]),
                t(&e["last_skipped"]),
                e["skipped_count"].as_u64().unwrap(),
            ));
        }
    }
    fired.sort();
    (fired, skipped)
}

#[tokio::test]
async fn run_all_catches_up_and_skip_records_what_it_missed() {
    let mut env = TestEnv::start().await;
    let mut ids = Vec::new();
    for policy in ["run_all", "skip"] {
        let (s, job) = env
            .post(
                "/cron",
                json!({"name": policy, "url": env.target_url(&format!("/{policy}")), "schedule": "* * * * * *",
                       "misfire_policy": policy, "misfire_grace_seconds": 1}),
            )
            .await;
        assert_eq!(s, 201, "{job}");
        assert_eq!(
            (job["misfire_policy"].as_str(), job["misfire_grace_seconds"].as_i64()),
            (Some(policy), Some(1))
        );
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    env.eventually(Duration::from_secs(20), "both firing", || async {
        (!env.target.arrivals_at("/run_all").is_empty() && !env.target.arrivals_at("/skip").is_empty()).then_some(())
    })
    .await;
    env.stop_server().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.start_server().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let (s, _) = env.post(&format!("/cron/{id}/pause"), json!({})).await;
        assert_eq!(s, 200);
    }

    // run_all: every second from the first fire to the last ran, once.
    let (fired, skipped) = history(&env, &ids[0]).await;
    assert!(skipped.is_empty(), "run_all skipped {skipped:?}");
    let span = (*fired.last().unwrap() - fired[0]).num_seconds() as usize;
    assert_eq!(fired.len(), span + 1, "a second is missing or doubled: {fired:?}");
    assert!(span >= 5, "the downtime is inside the span: {fired:?}");

    // skip: the downtime's seconds are recorded as skipped, and no instant appears twice.
    let (fired, skipped) = history(&env, &ids[1]).await;
    assert!(!skipped.is_empty(), "nothing recorded as skipped: {fired:?}");
    let missed: u64 = skipped.iter().map(|(_, _, n)| n).sum();
    assert!(missed >= 2, "{skipped:?}");
    let mut seen = std::collections::HashSet::new();
    for t in &fired {
        assert!(seen.insert(*t), "{t} fired twice");
    }
    for (first, last, n) in &skipped {
        assert_eq!((*last - *first).num_seconds() as u64 + 1, *n);
        for k in 0..*n {
            assert!(
                seen.insert(*first + chrono::Duration::seconds(k as i64)),
                "skipped and fired"
            );
        }
    }

    let (s, v) = env
        .post(
            "/cron",
            json!({"name": "x", "url": env.target_url("/x"), "schedule": "@daily", "misfire_policy": "sometimes"}),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("misfire_policy")));
    let (s, v) = env
        .post(
            "/cron",
            json!({"name": "x", "url": env.target_url("/x"), "schedule": "@daily", "misfire_grace_seconds": 0}),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("misfire_grace_seconds")));
}
