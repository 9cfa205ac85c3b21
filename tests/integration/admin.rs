//! Operators' tools: projections with checkpoint and lag, rebuilds with progress through the
//! API, any aggregate's events, and re-runs (superusers for any run, workspace admins for
//! their own). Everyone else finds no admin route at all.

use crate::common;

use std::time::Duration;

use common::users::{call, superuser, user};
use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

async fn failed_run(env: &TestEnv, ws: &str, token: &str) -> String {
    let (s, v) = call(
        env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/delayed"),
        token,
        Some(json!({"url": env.target_url("/fail/admin"), "delay_seconds": 0})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let job = v["id"].as_str().expect("id").to_string();
    env.eventually(Duration::from_secs(20), "the call to fail", || async {
        let (_, v) = call(
            env,
            Method::GET,
            &format!("/v1/workspaces/{ws}/executions?job_id={job}"),
            token,
            None,
        )
        .await;
        let run = &v["items"][0];
        (run["status"] == "failed").then(|| run["id"].as_str().unwrap_or_default().to_string())
    })
    .await
}

#[tokio::test]
async fn superusers_inspect_rebuild_and_rerun() {
    let env = TestEnv::start().await;
    let root = superuser(&env, "root@example.com").await;
    let nobody = user(&env, "nobody@example.com").await;
    for token in [nobody.as_str(), env.api_key.as_str()] {
        let (s, _) = call(&env, Method::GET, "/v1/admin/projections", token, None).await;
        assert_eq!(s, 404, "only superusers see admin routes");
    }

    let run = failed_run(&env, &env.workspace_id, &env.api_key).await;
    // A key acts as a member: re-runs need a workspace admin.
    let (s, v) = env.post(&format!("/executions/{run}/rerun"), json!({})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = call(&env, Method::POST, &format!("/v1/admin/runs/{run}/rerun"), &root, None).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["rerun_of"], run.as_str());
    let again = v["run_id"].as_str().expect("new run").to_string();
    let detail = env.wait_execution(&again, Duration::from_secs(20)).await;
    assert_eq!(detail["rerun_of"], run.as_str());
    assert_eq!(detail["trigger"], "manual");
    assert_eq!(
        env.target.arrivals_at("/fail/admin").len(),
        2,
        "the re-run called again"
    );

    // Any aggregate's events.
    let (s, v) = call(
        &env,
        Method::GET,
        &format!("/v1/admin/aggregates/run/{again}/events"),
        &root,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let items = v["items"].as_array().expect("items");
    assert_eq!(items[0]["type"], "RunScheduled");
    assert_eq!(items[0]["data"]["plan"]["rerun_of"], run.as_str());
    assert_eq!(items.last().map(|e| e["type"].clone()), Some(json!("RunFailed")));
    let (s, v) = call(&env, Method::GET, "/v1/admin/aggregates/gadget/x/events", &root, None).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("aggregate_type")));
    let (s, _) = call(
        &env,
        Method::GET,
        &format!("/v1/admin/aggregates/run/{}/events", uuid::Uuid::new_v4()),
        &root,
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Status, then a rebuild with progress, while the service keeps serving.
    let (s, v) = call(&env, Method::GET, "/v1/admin/projections", &root, None).await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for n in ["jobs", "runs", "schedule", "workspaces", "usage", "usage_counters"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let runs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&env.db.pool)
        .await
        .expect("count");
    let (s, v) = call(&env, Method::POST, "/v1/admin/projections/runs/rebuild", &root, None).await;
    assert_eq!(s, 202, "{v}");
    assert!(v["events_total"].as_i64().unwrap_or(0) > 0);
    let done = env
        .eventually(Duration::from_secs(60), "the rebuild to finish", || async {
            let (_, v) = call(&env, Method::GET, "/v1/admin/projections/runs/rebuild", &root, None).await;
            (v["status"] != "running").then_some(v)
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["events_replayed"].as_u64().unwrap_or(0) > 0, "{done}");
    let runs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&env.db.pool)
        .await
        .expect("count");
    assert_eq!(runs_after, runs_before);
    let (s, v) = env.get(&format!("/executions/{again}")).await;
    assert_eq!(
        (s, v["rerun_of"].as_str()),
        (200, Some(run.as_str())),
        "served from the rebuilt table"
    );
    let (s, _) = call(&env, Method::POST, "/v1/admin/projections/gizmos/rebuild", &root, None).await;
    assert_eq!(s, 404);
    let (_, v) = call(&env, Method::GET, "/v1/admin/projections", &root, None).await;
    let runs = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["name"] == "runs")
        .cloned()
        .expect("runs");
    assert_eq!(runs["rebuild"]["status"], "succeeded");

    // The same from the CLI.
    let out = env.cli(&["projections", "status", "--json"]).await;
    let status: Value = serde_json::from_str(&out).expect("status --json");
    assert!(status
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["name"] == "schedule")));
    let out = env.cli(&["events", "run", &run]).await;
    let first: Value = serde_json::from_str(out.lines().next().expect("a line")).expect("json line");
    assert_eq!(first["type"], "RunScheduled");
}

#[tokio::test]
async fn workspace_admins_rerun_their_own_runs_only() {
    let env = TestEnv::start().await;
    let owner = user(&env, "owner@example.com").await;
    let (s, ws) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &owner,
        Some(json!({"name": "Mine"})),
    )
    .await;
    assert_eq!(s, 201, "{ws}");
    let ws = ws["id"].as_str().expect("id").to_string();
    let run = failed_run(&env, &ws, &owner).await;
    let (s, v) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/executions/{run}/rerun"),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["rerun_of"], run.as_str());
    assert_eq!(v["workspace_id"], ws.as_str());

    // A run of another workspace is not found through this one.
    let theirs = failed_run(&env, &env.workspace_id, &env.api_key).await;
    let (s, _) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/executions/{theirs}/rerun"),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 404);
    // Nor through theirs, where the owner is no member.
    let (s, _) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{}/executions/{theirs}/rerun", env.workspace_id),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 404);
}
