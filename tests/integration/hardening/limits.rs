//! Plan allowances that must not multiply: workspaces per user (and only from a verified
//! address), manual runs counted against the month's one-off runs, and the request rate counted
//! per workspace as well as per key.

use reqwest::Method;
use serde_json::json;

use crate::common::users::{call, owned_workspace, unverified_user, verify};
use crate::common::TestEnv;

#[tokio::test]
async fn workspaces_need_a_verified_address_and_are_bounded_per_user() {
    let env = TestEnv::start_with(vec![("CRONBOX_MAX_WORKSPACES_PER_USER", "3")]).await;
    let token = unverified_user(&env, "new@example.com").await;
    let (s, v) = call(&env, Method::POST, "/v1/workspaces", &token, Some(json!({"name": "A"}))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("email_unverified")), "{v}");
    verify(&env, "new@example.com").await;

    // Six at once: exactly three get in.
    let creates = (0..6).map(|i| {
        let (env, token) = (&env, token.clone());
        async move {
            call(
                env,
                Method::POST,
                "/v1/workspaces",
                &token,
                Some(json!({"name": format!("W{i}")})),
            )
            .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let created: Vec<String> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(created.len(), 3, "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s != 201)
        .all(|(s, v)| *s == 403 && v["error"]["code"] == "workspace_limit"));
    // Deleting one frees its place.
    let (s, _) = call(
        &env,
        Method::DELETE,
        &format!("/v1/workspaces/{}", created[0]),
        &token,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &token,
        Some(json!({"name": "again"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

/// A plan with small allowances, for this test's workspace.
async fn tiny_plan(env: &TestEnv, ws: &str) {
    sqlx::query(
        "INSERT INTO plans (code, name, position, price_kopecks, max_active_cron_jobs, max_delayed_per_month,
                            min_cron_interval_seconds, max_timeout_seconds, max_retries, log_retention_days,
                            max_members, max_api_keys, requests_per_minute)
         VALUES ('tiny', 'Tiny', 9, 0, 5, 3, 60, 30, 3, 7, 5, 5, 10)",
    )
    .execute(&env.db.pool)
    .await
    .unwrap();
    env.cli(&["workspace", "set-plan", "--workspace", ws, "--plan", "tiny"])
        .await;
}

#[tokio::test]
async fn manual_runs_count_against_the_months_one_off_runs() {
    let env = TestEnv::start_with(vec![("CRONBOX_RATE_LIMIT", "0")]).await;
    let (s, job) = env
        .post(
            "/cron",
            json!({"name": "j", "schedule": "0 0 1 1 *", "url": env.target_url("/run")}),
        )
        .await;
    assert_eq!(s, 201, "{job}");
    tiny_plan(&env, &env.workspace_id).await;
    let id = job["id"].as_str().unwrap();
    for _ in 0..3 {
        let (s, v) = env.post(&format!("/cron/{id}/run"), json!({})).await;
        assert_eq!(s, 202, "{v}");
    }
    let (s, v) = env.post(&format!("/cron/{id}/run"), json!({})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["limit"].as_str()),
        (403, Some("plan_limit"), Some("max_delayed_per_month")),
        "{v}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RunScheduled'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 3, "a refused run was recorded");
    // So is a delayed call now.
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (s, v) = env
        .post("/delayed", json!({"url": env.target_url("/d"), "execute_at": at}))
        .await;
    assert_eq!(s, 403, "{v}");
}

#[tokio::test]
async fn new_keys_bring_no_new_request_allowance() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "owner@example.com", "Rate", None).await;
    let mut keys = Vec::new();
    for i in 0..2 {
        let (s, v) = call(
            &env,
            Method::POST,
            &format!("/v1/workspaces/{ws}/keys"),
            &owner,
            Some(json!({"name": format!("k{i}")})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        keys.push(v["key"].as_str().unwrap().to_string());
    }
    tiny_plan(&env, &ws).await;
    // 10 a minute for the workspace, whichever key asks.
    let mut statuses = Vec::new();
    for i in 0..14 {
        let (s, _) = call(
            &env,
            Method::GET,
            &format!("/v1/workspaces/{ws}/cron"),
            &keys[i % 2],
            None,
        )
        .await;
        statuses.push(s);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok <= 10, "{ok} of 14 passed a workspace limit of 10: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 200 | 429)), "{statuses:?}");
}
