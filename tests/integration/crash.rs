//! `kill -9` of a running `cronbox serve` in the middle of traffic, then a restart: no run is lost
//! and none is fired twice. Judged from the event log (the source of truth) and from what the
//! loopback target actually received.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestEnv;
use serde_json::json;
use sqlx::Row;

/// Every Run aggregate's events, grouped by run id, in order.
async fn run_events(env: &TestEnv) -> BTreeMap<String, Vec<(String, serde_json::Value)>> {
    let rows = sqlx::query(
        "SELECT aggregate_id, event_type, payload::jsonb AS payload FROM events
         WHERE aggregate_type = 'Run' ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&env.db.pool)
    .await
    .expect("read run events");
    let mut out: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    for r in rows {
        let id: String = r.get("aggregate_id");
        out.entry(id).or_default().push((r.get("event_type"), r.get("payload")));
    }
    out
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn kill_9_mid_traffic_loses_no_run_and_fires_none_twice() {
    let mut env = TestEnv::start().await;

    // An every-second cron job, and 80 delayed calls due every 60 ms over the next ~5 s. Some
    // targets are slow so that calls are in flight when the process dies.
    let (status, cron) = env
        .post(
            "/cron",
            json!({"name": "tick", "url": env.target_url("/tick"), "schedule": "* * * * * *", "timezone": "UTC"}),
        )
        .await;
    assert_eq!(status, 201, "{cron}");
    let cron_id = cron["id"].as_str().expect("id").to_string();

    let start = Utc::now() + chrono::Duration::milliseconds(800);
    let mut delayed: HashMap<String, String> = HashMap::new(); // job id -> path
    for i in 0..80 {
        let path = if i % 4 == 0 {
            format!("/slow/400/{i}")
        } else {
            format!("/d/{i}")
        };
        let at = start + chrono::Duration::milliseconds(60 * i);
        let (status, job) = env
            .post(
                "/delayed",
                json!({"url": env.target_url(&path), "execute_at": at.to_rfc3339()}),
            )
            .await;
        assert_eq!(status, 201, "{job}");
        delayed.insert(job["id"].as_str().expect("id").to_string(), path);
    }

    // Die in the middle of it, stay down long enough to miss cron fires and delayed calls.
    tokio::time::sleep(Duration::from_millis(2800)).await;
    env.kill_server().await;
    let killed_at = Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    env.start_server().await;

    // Every delayed call ends up executed, late or not.
    env.eventually(Duration::from_secs(60), "all delayed calls to finish", || async {
        let mut finished = 0;
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let q = match &cursor {
                Some(c) => format!("/delayed?limit=100&cursor={c}"),
                None => "/delayed?limit=100".to_string(),
            };
            let (_, page) = env.get(&q).await;
            finished += page["items"]
                .as_array()?
                .iter()
                .filter(|j| j["status"] == "succeeded")
                .count();
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        (finished == delayed.len()).then_some(())
    })
    .await;
    // Let the cron job tick a few more times after the restart, then stop it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = env.post(&format!("/cron/{cron_id}/pause"), json!({})).await;
    assert_eq!(status, 200);
    // Anything already dispatched finishes. A call cut off by the kill is repeated only after
    // its attempt's lease (request timeout + 15 s), so this can take a while.
    let runs = env
        .eventually(Duration::from_secs(60), "every recorded run to finish", || async {
            let runs = run_events(&env).await;
            let open = runs.values().any(|events| {
                events[0].0 == "RunScheduled"
                    && !matches!(
                        events.last().map(|(t, _)| t.as_str()),
                        Some("RunSucceeded" | "RunFailed")
                    )
            });
            (!open).then_some(runs)
        })
        .await;
    let arrivals = env.target.arrivals();
    let mut arrivals_per_run: HashMap<String, usize> = HashMap::new();
    for a in &arrivals {
        *arrivals_per_run
            .entry(a.run_id.clone().expect("every call carries X-CronBox-Run-Id"))
            .or_default() += 1;
    }

    let mut delayed_runs: HashMap<String, Vec<String>> = HashMap::new();
    let mut cron_fired: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut cron_skipped: Vec<(DateTime<Utc>, DateTime<Utc>, u64)> = Vec::new();
    for (run_id, events) in &runs {
        let (first_type, first) = &events[0];
        match first_type.as_str() {
            "RunScheduled" => {
                let plan = &first["RunScheduled"]["plan"];
                let job_id = plan["job_id"].as_str().expect("job_id").to_string();
                if job_id == cron_id {
                    cron_fired.push((time(&plan["scheduled_for"]), run_id.clone()));
                } else {
                    delayed_runs.entry(job_id).or_default().push(run_id.clone());
                }
            }
            "RunSkipped" => {
                let s = &first["RunSkipped"];
                cron_skipped.push((
                    time(&s["first_skipped"]),
                    time(&s["last_skipped"]),
                    s["skipped_count"].as_u64().expect("count"),
                ));
            }
            other => panic!("run {run_id} starts with {other}"),
        }
        // A call reaches the target only after its attempt was recorded as started: a target
        // sees a run more than once only when the process died between that record and the ack.
        let started = events.iter().filter(|(t, _)| t == "AttemptStarted").count();
        let seen = arrivals_per_run.get(run_id).copied().unwrap_or(0);
        assert!(
            seen <= started,
            "run {run_id} reached the target {seen} times but only {started} attempts were recorded"
        );
    }

    // Delayed calls: exactly one run each, succeeded, and the target saw it.
    for (job_id, path) in &delayed {
        let ids = delayed_runs
            .get(job_id)
            .unwrap_or_else(|| panic!("delayed call {job_id} has no run"));
        assert_eq!(ids.len(), 1, "delayed call {job_id} has runs {ids:?}");
        let run_id = &ids[0];
        let events = &runs[run_id];
        assert_eq!(
            events.last().map(|(t, _)| t.as_str()),
            Some("RunSucceeded"),
            "run {run_id}: {events:?}"
        );
        assert_eq!(events.iter().filter(|(t, _)| t == "RunScheduled").count(), 1);
        assert!(
            arrivals
                .iter()
                .any(|a| a.run_id.as_deref() == Some(run_id) && &a.path == path),
            "delayed run {run_id} never reached {path}"
        );
    }

    // Cron: every second from the first fire to the last is accounted for exactly once, either
    // as a run or inside a recorded skip, and the downtime really did cause a skip or a late run.
    cron_fired.sort();
    let mut covered: Vec<DateTime<Utc>> = cron_fired.iter().map(|(t, _)| *t).collect();
    let fired: HashSet<DateTime<Utc>> = covered.iter().copied().collect();
    assert_eq!(
        fired.len(),
        covered.len(),
        "a cron instant was fired twice: {cron_fired:?}"
    );
    for (first, last, count) in &cron_skipped {
        let n = (*last - *first).num_seconds() + 1;
        assert_eq!(n as u64, *count, "skip record {first}..{last} counts {count}");
        for k in 0..n {
            covered.push(*first + chrono::Duration::seconds(k));
        }
    }
    covered.sort();
    let first = covered[0];
    let last = *covered.last().expect("cron fired");
    assert!(last > killed_at, "cron did not fire after the restart");
    let expected: Vec<DateTime<Utc>> = (0..=(last - first).num_seconds())
        .map(|k| first + chrono::Duration::seconds(k))
        .collect();
    assert_eq!(
        covered, expected,
        "cron instants lost or doubled (fired {cron_fired:?}, skipped {cron_skipped:?})"
    );
    assert!(
        !cron_skipped.is_empty() || cron_fired.iter().any(|(t, _)| *t > killed_at),
        "downtime left no trace"
    );
    for (_, run_id) in &cron_fired {
        let events = &runs[run_id];
        assert_eq!(
            events.last().map(|(t, _)| t.as_str()),
            Some("RunSucceeded"),
            "cron run {run_id}: {events:?}"
        );
    }
}
