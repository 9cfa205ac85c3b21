//! Cross-tenant access on every workspace route, enumerated from the OpenAPI document (which
//! the router is built from): another workspace's API key, a stranger's access token, and a
//! tenant's own workspace path with another tenant's ids all get 404 — never 403, which would
//! confirm the resource exists — and nothing in the log changes.

use crate::common;

use std::time::Duration;

use common::users::{call, user};
use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A body that would be valid for the operation, so a 404 cannot be a validation error
/// in disguise.
fn body_for(method: &str, path: &str, env: &TestEnv) -> Option<Value> {
    if method == "get" || method == "delete" {
        return None;
    }
    let target = env.target_url("/x");
    Some(match path {
        p if p.ends_with("/cron") => json!({"name": "n", "url": target, "schedule": "0 3 * * *"}),
        p if p.ends_with("/cron/{id}") => json!({"name": "renamed"}),
        p if p.ends_with("/delayed") => json!({"url": target, "delay_seconds": 3600}),
        p if p.ends_with("/members/{user_id}") => json!({"role": "viewer"}),
        p if p.ends_with("/invites") => json!({"email": "eve@example.com"}),
        p if p.ends_with("/keys") => json!({"name": "k"}),
        p if p.ends_with("/plan") => json!({"plan": "free"}),
        "/v1/workspaces/{ws}" => json!({"name": "renamed"}),
        _ => json!({}),
    })
}

async fn event_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

/// The event count once it has stayed the same for 300 ms (at most 10 s).
async fn quiet_event_count(env: &TestEnv) -> i64 {
    let mut last = event_count(env).await;
    for _ in 0..33 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = event_count(env).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the event log never went quiet")
}

#[tokio::test]
async fn every_workspace_route_is_a_404_for_other_tenants_and_changes_nothing() {
    let env = TestEnv::start().await;
    // Tenant A is the harness's workspace; it has a cron job, a pending delayed call and a run.
    let (s, cron) = env
        .post(
            "/cron",
            json!({"name": "a", "url": env.target_url("/a"), "schedule": "0 3 * * *"}),
        )
        .await;
    assert_eq!(s, 201, "{cron}");
    let (s, delayed) = env
        .post("/delayed", json!({"url": env.target_url("/a"), "delay_seconds": 3600}))
        .await;
    assert_eq!(s, 201, "{delayed}");
    let (s, fired) = env
        .post("/delayed", json!({"url": env.target_url("/a"), "delay_seconds": 0}))
        .await;
    assert_eq!(s, 201, "{fired}");
    let run_id = fired["run_id"].as_str().unwrap().to_string();
    env.wait_execution(&run_id, Duration::from_secs(20)).await;

    // Tenant B: its own workspace and key. A stranger: a user in no workspace.
    let out = env
        .cli(&["workspace", "create", "--name", "B", "--plan", "business", "--json"])
        .await;
    let b: Value = serde_json::from_str(out.trim()).unwrap();
    let (b_ws, b_key) = (b["workspace_id"].as_str().unwrap(), b["api_key"].as_str().unwrap());
    let stranger = user(&env, "stranger@example.com").await;

    let doc: Value = env.openapi().await;
    let a_ws = env.workspace_id.clone();
    let id_for = |path: &str| -> String {
        let v = if path.contains("/cron/") {
            &cron["id"]
        } else if path.contains("/delayed/") {
            &delayed["id"]
        } else {
            return run_id.clone();
        };
        v.as_str().unwrap().to_string()
    };

    // The "before" count once the log is quiet (the executed call's last events may still come).
    let before = quiet_event_count(&env).await;
    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/workspaces/{ws}") {
            continue;
        }
        for method in METHODS.into_iter().filter(|m| item.get(*m).is_some()) {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let concrete = |ws: &str| {
                path.replace("{ws}", ws)
                    .replace("{id}", &id_for(path))
                    .replace("{user_id}", "00000000-0000-4000-8000-000000000001")
            };
            let body = body_for(method, path, &env);
            // A's resources through A's path, with B's key and with a stranger's token;
            // then A's ids under B's own path, with B's key.
            for (url, token, who) in [
                (concrete(&a_ws), b_key, "B's key on A"),
                (concrete(&a_ws), stranger.as_str(), "a stranger on A"),
                (concrete(b_ws), b_key, "A's ids under B"),
            ] {
                // Under B's own path, B's key acts in B: only A's job and run ids are foreign
                // there (a missing role for B's own keys is rightly a 403).
                let foreign_id = ["/cron/{id}", "/delayed/{id}", "/executions/{id}"]
                    .iter()
                    .any(|p| path.contains(p));
                if who == "A's ids under B" && !foreign_id {
                    continue;
                }
                let (s, v) = call(&env, m.clone(), &url, token, body.clone()).await;
                assert_eq!(s, 404, "{who}: {method} {url} -> {s} {v}");
                assert_eq!(v["error"]["code"], "not_found", "{who}: {method} {url}: {v}");
                probed += 1;
            }
        }
    }
    assert!(probed >= 60, "only {probed} probes");
    assert_eq!(event_count(&env).await, before, "a refused request wrote events");
    // And A's things are as they were.
    let (s, still) = env.get(&format!("/cron/{}", cron["id"].as_str().unwrap())).await;
    assert_eq!((s, &still["name"]), (200, &json!("a")));
    let (s, still) = env.get(&format!("/delayed/{}", delayed["id"].as_str().unwrap())).await;
    assert_eq!((s, &still["status"]), (200, &json!("pending")));
}
