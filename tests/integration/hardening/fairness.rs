//! One tenant's backlog of slow calls must not hold up another tenant: a workspace has at most
//! its plan's number of runs in flight, and the rest wait in the dispatcher, not in the shared
//! stream and executors.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::common::TestEnv;

#[tokio::test]
async fn a_workspace_at_its_cap_waits_and_others_go_on() {
    let env = TestEnv::start_with(vec![("CRONBOX_RATE_LIMIT", "0")]).await;
    sqlx::query(
        "INSERT INTO plans (code, name, position, price_kopecks, max_active_cron_jobs, max_delayed_per_month,
                            min_cron_interval_seconds, max_timeout_seconds, max_retries, log_retention_days,
                            max_members, max_api_keys, requests_per_minute, max_runs_in_flight)
         VALUES ('narrow', 'Narrow', 9, 0, 50, 1000, 1, 30, 3, 7, 5, 5, 6000, 3)",
    )
    .execute(&env.db.pool)
    .await
    .unwrap();
    env.cli(&[
        "workspace",
        "set-plan",
        "--workspace",
        &env.workspace_id,
        "--plan",
        "narrow",
    ])
    .await;
    let out = env
        .cli(&[
            "workspace",
            "create",
            "--name",
            "Neighbour",
            "--plan",
            "business",
            "--json",
        ])
        .await;
    let other: Value = serde_json::from_str(out.trim()).unwrap();
    let (other_ws, other_key) = (
        other["workspace_id"].as_str().unwrap(),
        other["api_key"].as_str().unwrap(),
    );

    let at = (Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    // Ten slow calls of the narrow workspace, all due at once.
    let slow: Vec<Value> = (0..10)
        .map(|i| json!({"url": env.target_url(&format!("/slow/1500/flood/{i}")), "execute_at": at}))
        .collect();
    let (s, v) = env.post("/delayed/batch", json!({"items": slow})).await;
    assert_eq!(s, 201, "{v}");
    // Its neighbour's calls, due at the same instant.
    let fast: Vec<Value> = (0..10)
        .map(|i| json!({"url": env.target_url(&format!("/neighbour/{i}")), "execute_at": at}))
        .collect();
    let resp = env
        .http
        .post(format!("{}/v1/workspaces/{other_ws}/delayed/batch", env.base()))
        .bearer_auth(other_key)
        .json(&json!({"items": fast}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let due: chrono::DateTime<Utc> = at.parse().unwrap();

    // The neighbour is on time: nothing of the narrow workspace's backlog is in its way.
    env.eventually(Duration::from_secs(20), "the neighbour's calls", || async {
        (0..10)
            .all(|i| !env.target.arrivals_at(&format!("/neighbour/{i}")).is_empty())
            .then_some(())
    })
    .await;
    for i in 0..10 {
        let a = &env.target.arrivals_at(&format!("/neighbour/{i}"))[0];
        assert!(
            (a.at - due).num_milliseconds() < 1000,
            "a neighbour call was {} ms late",
            (a.at - due).num_milliseconds()
        );
    }
    // The narrow workspace: never more than three at once, every call once in the end.
    let arrivals = env
        .eventually(Duration::from_secs(40), "every slow call", || async {
            let a: Vec<_> = env
                .target
                .arrivals()
                .into_iter()
                .filter(|a| a.path.starts_with("/slow/1500/flood/"))
                .collect();
            (a.len() == 10).then_some(a)
        })
        .await;
    let mut starts: Vec<_> = arrivals.iter().map(|a| a.at).collect();
    starts.sort();
    for w in starts.windows(4) {
        let gap = (w[3] - w[0]).num_milliseconds();
        assert!(
            gap >= 1300,
            "four slow calls within {gap} ms: more than three in flight"
        );
    }
    let mut paths: Vec<_> = arrivals.iter().map(|a| a.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 10, "a call was made twice");
}
