//! Plans and limits at the edge: n allowed, n+1 refused with 403 `plan_limit` naming the limit,
//! the plan and the usage — also under concurrency; per-job limits name the field; plans are
//! rows that superusers move workspaces between; the usage report and its counters, which a
//! replay of the log rebuilds exactly.

use crate::common;

use std::time::Duration;

use common::users::{call, superuser, token_from_mail, user};
use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

async fn workspace(env: &TestEnv, owner: &str) -> String {
    let (s, ws) = call(
        env,
        Method::POST,
        "/v1/workspaces",
        owner,
        Some(json!({"name": "Shop", "timezone": "Europe/Moscow"})),
    )
    .await;
    assert_eq!(s, 201, "{ws}");
    assert_eq!(ws["plan"], "free", "new workspaces are on the free plan");
    ws["id"].as_str().unwrap().to_string()
}

fn cron(name: &str, env: &TestEnv) -> Value {
    json!({"name": name, "url": env.target_url("/hook"), "schedule": "*/5 * * * *"})
}

fn assert_plan_limit(v: &Value, limit: &str, plan: &str, usage: i64, allowed: i64) {
    let e = &v["error"];
    assert_eq!(e["code"], "plan_limit", "{v}");
    assert_eq!(e["limit"], limit, "{v}");
    assert_eq!(e["plan"], plan, "{v}");
    assert_eq!(e["usage"], usage, "{v}");
    assert_eq!(e["allowed"], allowed, "{v}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains(&allowed.to_string())),
        "{v}"
    );
}

async fn counters(env: &TestEnv) -> Vec<(String, String, String, i64)> {
    sqlx::query_as("SELECT workspace_id::text, counter, period, used FROM usage_counters ORDER BY 1, 2, 3")
        .fetch_all(&env.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn active_cron_jobs_are_capped_exactly_under_concurrency() {
    let env = TestEnv::start().await;
    let anna = user(&env, "anna@example.com").await;
    let ws = workspace(&env, &anna).await;
    let path = format!("/v1/workspaces/{ws}/cron");

    // Eight at once against a limit of five: exactly five get in.
    let creates = (0..8).map(|i| call(&env, Method::POST, &path, &anna, Some(cron(&format!("job {i}"), &env))));
    let results = futures::future::join_all(creates).await;
    let created: Vec<&Value> = results.iter().filter(|(s, _)| *s == 201).map(|(_, v)| v).collect();
    let refused: Vec<&Value> = results.iter().filter(|(s, _)| *s == 403).map(|(_, v)| v).collect();
    assert_eq!((created.len(), refused.len()), (5, 3), "{results:?}");
    for v in refused {
        assert_plan_limit(v, "max_active_cron_jobs", "free", 5, 5);
    }

    let (s, usage) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/usage"), &anna, None).await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage["plan"]["code"], "free");
    assert_eq!(usage["usage"]["active_cron_jobs"], json!({"used": 5, "limit": 5}));
    assert_eq!(usage["period"]["timezone"], "Europe/Moscow");

    // A paused job frees its slot; resuming it needs one.
    let first = created[0]["id"].as_str().unwrap();
    let second = created[1]["id"].as_str().unwrap();
    let (s, v) = call(&env, Method::POST, &format!("{path}/{first}/pause"), &anna, None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(&env, Method::POST, &path, &anna, Some(cron("replacement", &env))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(&env, Method::POST, &format!("{path}/{first}/resume"), &anna, None).await;
    assert_eq!(s, 403, "{v}");
    assert_plan_limit(&v, "max_active_cron_jobs", "free", 5, 5);
    let (s, v) = call(&env, Method::GET, &format!("{path}/{first}"), &anna, None).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("paused")),
        "refused resume left it paused"
    );
    let (s, _) = call(&env, Method::DELETE, &format!("{path}/{second}"), &anna, None).await;
    assert_eq!(s, 204);
    let (s, v) = call(&env, Method::POST, &format!("{path}/{first}/resume"), &anna, None).await;
    assert_eq!(s, 200, "{v}");
    // Deleting a paused job gives nothing back (it held no slot).
    let (s, v) = call(&env, Method::POST, &format!("{path}/{first}/pause"), &anna, None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(&env, Method::DELETE, &format!("{path}/{first}"), &anna, None).await;
    assert_eq!(s, 204);
    let (_, usage) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/usage"), &anna, None).await;
    assert_eq!(usage["usage"]["active_cron_jobs"]["used"], 4, "{usage}");

    // The counters are a function of the log: replaying it gives the same rows.
    let before = counters(&env).await;
    let out = env.cli(&["projections", "rebuild", "usage_counters"]).await;
    assert!(out.contains("usage_counters"), "{out}");
    assert_eq!(counters(&env).await, before);
}

#[tokio::test]
async fn per_job_limits_name_the_field_and_store_nothing() {
    let env = TestEnv::start().await;
    let anna = user(&env, "anna@example.com").await;
    let ws = workspace(&env, &anna).await;
    let path = format!("/v1/workspaces/{ws}/cron");
    let url = env.target_url("/hook");

    let cases = [
        (
            json!({"name": "n", "url": url, "schedule": "* * * * *"}),
            "schedule",
            "min_cron_interval_seconds",
            60,
            300,
        ),
        // Two fires a minute apart every hour: the shortest interval counts, not the average.
        (
            json!({"name": "n", "url": url, "schedule": "0,1 * * * *"}),
            "schedule",
            "min_cron_interval_seconds",
            60,
            300,
        ),
        (
            json!({"name": "n", "url": url, "schedule": "@hourly", "timeout_seconds": 31}),
            "timeout_seconds",
            "max_timeout_seconds",
            31,
            30,
        ),
        (
            json!({"name": "n", "url": url, "schedule": "@hourly", "retry_count": 4}),
            "retry_count",
            "max_retries",
            4,
            3,
        ),
    ];
    for (body, field, limit, usage, allowed) in cases {
        let (s, v) = call(&env, Method::POST, &path, &anna, Some(body.clone())).await;
        assert_eq!(s, 403, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
        assert_plan_limit(&v, limit, "free", usage, allowed);
    }
    let (s, v) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/delayed"),
        &anna,
        Some(json!({"url": url, "delay_seconds": 60, "timeout_seconds": 60})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["field"], "timeout_seconds");

    // An update is held to the same limits and a refused one changes nothing.
    let (s, job) = call(
        &env,
        Method::POST,
        &path,
        &anna,
        Some(json!({"name": "n", "url": url, "schedule": "*/5 * * * *"})),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let (s, v) = call(
        &env,
        Method::PATCH,
        &format!("{path}/{id}"),
        &anna,
        Some(json!({"schedule": "*/2 * * * *"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_plan_limit(&v, "min_cron_interval_seconds", "free", 120, 300);
    let (_, now) = call(&env, Method::GET, &format!("{path}/{id}"), &anna, None).await;
    assert_eq!(now["schedule"], "*/5 * * * *");

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Job'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "only the one accepted create is in the log");
}

#[tokio::test]
async fn plans_are_data_and_superusers_move_workspaces_between_them() {
    let env = TestEnv::start().await;
    let anna = user(&env, "anna@example.com").await;
    let root = superuser(&env, "root@example.com").await;
    let ws = workspace(&env, &anna).await;

    let resp = env.http.get(format!("{}/v1/plans", env.base())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the price list is public");
    let plans: Value = resp.json().await.unwrap();
    let codes: Vec<&str> = plans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["free", "starter", "pro", "business"]);
    assert_eq!(plans["items"][1]["price_kopecks"], 49_000);
    assert_eq!(plans["items"][0]["limits"]["max_active_cron_jobs"], 5);

    // A plan added as a row is usable at once, with no code change.
    sqlx::query("INSERT INTO plans VALUES ('tiny', 'Tiny', 0, 100, 1, 3, 60, 10, 0, 1, 1, 1, 1000)")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let plan_path = format!("/v1/workspaces/{ws}/plan");
    let (s, _) = call(&env, Method::PUT, &plan_path, &anna, Some(json!({"plan": "tiny"}))).await;
    assert_eq!(s, 404, "only superusers move plans");
    let (s, v) = call(&env, Method::PUT, &plan_path, &root, Some(json!({"plan": "platinum"}))).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("plan")), "{v}");
    let (s, v) = call(&env, Method::PUT, &plan_path, &root, Some(json!({"plan": "tiny"}))).await;
    assert_eq!(s, 200, "{v}");

    let delayed = format!("/v1/workspaces/{ws}/delayed");
    let body = |key: &str| json!({"url": env.target_url("/hook"), "delay_seconds": 0, "idempotency_key": key});
    for key in ["a", "b", "c"] {
        let (s, v) = call(&env, Method::POST, &delayed, &anna, Some(body(key))).await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = call(&env, Method::POST, &delayed, &anna, Some(body("d"))).await;
    assert_eq!(s, 403, "{v}");
    assert_plan_limit(&v, "max_delayed_per_month", "tiny", 3, 3);
    // Repeating a create that already happened is not a new call: still answered.
    let (s, v) = call(&env, Method::POST, &delayed, &anna, Some(body("b"))).await;
    assert_eq!(s, 200, "{v}");

    let usage_path = format!("/v1/workspaces/{ws}/usage");
    let (_, usage) = call(&env, Method::GET, &usage_path, &anna, None).await;
    assert_eq!(usage["plan"]["code"], "tiny");
    assert_eq!(
        usage["usage"]["delayed_calls_this_month"],
        json!({"used": 3, "limit": 3})
    );
    // The three calls run; runs are counted by the asynchronous usage projection.
    let runs = env
        .eventually(Duration::from_secs(20), "three runs counted", || async {
            let (_, u) = call(&env, Method::GET, &usage_path, &anna, None).await;
            (u["usage"]["runs_this_month"]["used"] == 3).then_some(u)
        })
        .await;
    assert_eq!(runs["usage"]["runs_this_month"]["limit"], Value::Null);

    // A new month starts from zero: the counter is keyed by the workspace's local month.
    sqlx::query("UPDATE usage_counters SET period = '2000-01' WHERE counter = 'delayed_calls'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let (s, v) = call(&env, Method::POST, &delayed, &anna, Some(body("d"))).await;
    assert_eq!(s, 201, "{v}");

    // Upgrading lifts the limit at once.
    let (s, _) = call(&env, Method::PUT, &plan_path, &root, Some(json!({"plan": "starter"}))).await;
    assert_eq!(s, 200);
    for key in ["e", "f", "g"] {
        let (s, v) = call(&env, Method::POST, &delayed, &anna, Some(body(key))).await;
        assert_eq!(s, 201, "{v}");
    }
    let (_, w) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}"), &anna, None).await;
    assert_eq!(w["plan"], "starter");
}

#[tokio::test]
async fn members_and_api_keys_are_capped_by_the_plan() {
    let env = TestEnv::start().await;
    let anna = user(&env, "anna@example.com").await;
    let bob = user(&env, "bob@example.com").await;
    let carol = user(&env, "carol@example.com").await;
    let ws = workspace(&env, &anna).await;

    // Free allows two members. Both invitations go out while Anna is alone...
    for email in ["bob@example.com", "carol@example.com"] {
        let (s, v) = call(
            &env,
            Method::POST,
            &format!("/v1/workspaces/{ws}/invites"),
            &anna,
            Some(json!({"email": email, "role": "member"})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let bob_token = token_from_mail(&env, "bob@example.com").await;
    let carol_token = token_from_mail(&env, "carol@example.com").await;
    // ...but only the first to accept gets in.
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/invites/accept",
        &bob,
        Some(json!({"token": bob_token})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/invites/accept",
        &carol,
        Some(json!({"token": carol_token})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_plan_limit(&v, "max_members", "free", 2, 2);
    let (s, v) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/invites"),
        &anna,
        Some(json!({"email": "dave@example.com"})),
    )
    .await;
    assert_eq!(s, 403, "a full team invites no one: {v}");
    assert_plan_limit(&v, "max_members", "free", 2, 2);

    let keys = format!("/v1/workspaces/{ws}/keys");
    let mut ids = vec![];
    for name in ["one", "two"] {
        let (s, v) = call(&env, Method::POST, &keys, &anna, Some(json!({"name": name}))).await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (s, v) = call(&env, Method::POST, &keys, &anna, Some(json!({"name": "three"}))).await;
    assert_eq!(s, 403, "{v}");
    assert_plan_limit(&v, "max_api_keys", "free", 2, 2);
    let (s, _) = call(&env, Method::DELETE, &format!("{keys}/{}", ids[0]), &anna, None).await;
    assert_eq!(s, 204);
    let (s, v) = call(&env, Method::POST, &keys, &anna, Some(json!({"name": "three"}))).await;
    assert_eq!(s, 201, "a revoked key frees its slot: {v}");

    let (_, usage) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/usage"), &anna, None).await;
    assert_eq!(usage["usage"]["members"], json!({"used": 2, "limit": 2}));
    assert_eq!(usage["usage"]["api_keys"], json!({"used": 2, "limit": 2}));
}

#[tokio::test]
async fn runs_past_retention_leave_the_execution_log_but_not_the_event_log() {
    let env = TestEnv::start_with(vec![("CRONBOX_RETENTION_SWEEP_SECONDS", "1")]).await;
    let anna = user(&env, "anna@example.com").await;
    let free = workspace(&env, &anna).await;
    let body = json!({"url": env.target_url("/hook"), "delay_seconds": 0});

    // One run on the free plan (7 days), one in the harness's business workspace (365 days).
    let (s, job) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{free}/delayed"),
        &anna,
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let free_run = job["run_id"].as_str().expect("run_id").to_string();
    let (s, job) = env.post("/delayed", body).await;
    assert_eq!(s, 201, "{job}");
    let business_run = job["run_id"].as_str().expect("run_id").to_string();
    let free_get = format!("/v1/workspaces/{free}/executions/{free_run}");
    env.eventually(Duration::from_secs(20), "the free run to finish", || async {
        let (_, r) = call(&env, Method::GET, &free_get, &anna, None).await;
        (r["status"] == "succeeded").then_some(())
    })
    .await;
    env.wait_execution(&business_run, Duration::from_secs(20)).await;

    // Ten days pass (for the read model).
    sqlx::query("UPDATE runs SET scheduled_for = scheduled_for - interval '10 days'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    env.eventually(Duration::from_secs(20), "the sweep to remove the free run", || async {
        let (s, _) = call(&env, Method::GET, &free_get, &anna, None).await;
        (s == 404).then_some(())
    })
    .await;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM run_attempts WHERE run_id = $1::uuid")
        .bind(&free_run)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "its attempts went with it");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Run' AND aggregate_id = $1")
            .bind(&free_run)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(events >= 4, "the event log keeps the run: {events} events");
    let (s, _) = env.get(&format!("/executions/{business_run}")).await;
    assert_eq!(s, 200, "the business plan keeps a year");
}
