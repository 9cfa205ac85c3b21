//! Retry policies and success criteria end to end: which failures are retried, fixed and
//! exponential waits, `Retry-After` honoured up to the cap, expected statuses and body checks.
//! Waits are read from the recorded events (`RetryScheduled.retry_at` against the attempt's
//! finish), so the test checks the decision, not the clock.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{free_port, TestEnv};
use serde_json::{json, Value};

async fn run_to_end(env: &TestEnv, body: Value) -> Value {
    let (s, v) = env.post("/delayed", body.clone()).await;
    assert_eq!(s, 201, "{body} -> {v}");
    env.wait_execution(v["run_id"].as_str().unwrap(), Duration::from_secs(30))
        .await
}

/// Seconds between each attempt's finish and the retry it scheduled, from the run's events.
async fn waits(env: &TestEnv, run_id: &str) -> Vec<i64> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, payload::jsonb FROM events WHERE aggregate_type = 'Run' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(run_id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    let time = |v: &Value| v.as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok()).unwrap();
    let mut out = Vec::new();
    let mut finished = None;
    for (t, p) in rows {
        match t.as_str() {
            "AttemptFinished" => finished = Some(time(&p[&t]["at"])),
            "RetryScheduled" => out.push((time(&p[&t]["retry_at"]) - finished.unwrap()).num_milliseconds()),
            _ => {}
        }
    }
    out.into_iter().map(|ms| (ms as f64 / 1000.0).round() as i64).collect()
}

fn attempts(run: &Value) -> usize {
    run["attempt_log"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn which_failures_are_retried_and_what_counts_as_success() {
    let env = TestEnv::start().await;
    let base = |path: &str| json!({"url": env.target_url(path), "delay_seconds": 0, "retry_count": 2, "retry_delay_seconds": 0});
    let with = |path: &str, extra: Value| {
        let mut b = base(path);
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };

    // 4xx is not retried by default; 5xx and transport failures are.
    let r = run_to_end(&env, base("/status/404/a")).await;
    assert_eq!(
        (r["status"].as_str(), r["error_type"].as_str(), attempts(&r)),
        (Some("failed"), Some("http_status"), 1),
        "{r}"
    );
    let r = run_to_end(&env, base("/status/503/b")).await;
    assert_eq!((r["status"].as_str(), attempts(&r)), (Some("failed"), 3), "{r}");
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let r = run_to_end(
        &env,
        json!({"url": closed, "delay_seconds": 0, "retry_count": 1, "retry_delay_seconds": 0}),
    )
    .await;
    assert_eq!((r["error_type"].as_str(), attempts(&r)), (Some("connect"), 2), "{r}");
    // retry_on can say otherwise.
    let r = run_to_end(&env, with("/status/404/c", json!({"retry_on": ["4xx"]}))).await;
    assert_eq!(attempts(&r), 3, "{r}");
    let r = run_to_end(&env, with("/status/503/d", json!({"retry_on": ["429"]}))).await;
    assert_eq!(attempts(&r), 1, "{r}");

    // Expected statuses and body checks decide success.
    let r = run_to_end(&env, with("/status/404/e", json!({"expected_status": [404, "2xx"]}))).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let r = run_to_end(&env, with("/plain", json!({"expected_status": ["201"]}))).await;
    assert_eq!(r["error_type"], "http_status", "{r}");
    let r = run_to_end(&env, with("/plain", json!({"expect_body_contains": "ok"}))).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let r = run_to_end(&env, with("/plain", json!({"expect_body_contains": "not there"}))).await;
    assert_eq!(
        (r["error_type"].as_str(), attempts(&r)),
        (Some("assertion"), 1),
        "an assertion is not retried by default: {r}"
    );
    let r = run_to_end(
        &env,
        with(
            "/json/f",
            json!({"expect_json": {"path": "$.data.state", "equals": "done"}}),
        ),
    )
    .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let r = run_to_end(
        &env,
        with(
            "/json/g",
            json!({"expect_json": {"path": "$.data.state", "equals": "new"}}),
        ),
    )
    .await;
    assert_eq!(r["error_type"], "assertion", "{r}");
    assert!(r["error_message"].as_str().unwrap().contains("expected \"new\""), "{r}");
}

#[tokio::test]
async fn waits_follow_the_backoff_and_retry_after() {
    let env = TestEnv::start().await;
    // Retry-After: 2 is honoured...
    let r = run_to_end(&env, json!({"url": env.target_url("/retry-after/2/1/a"), "delay_seconds": 0, "retry_count": 1, "retry_delay_seconds": 0})).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(waits(&env, r["id"].as_str().unwrap()).await, [2]);
    // ...up to retry_max_delay_seconds.
    let r = run_to_end(
        &env,
        json!({"url": env.target_url("/retry-after/30/1/b"), "delay_seconds": 0, "retry_count": 1, "retry_delay_seconds": 0, "retry_max_delay_seconds": 1}),
    )
    .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(waits(&env, r["id"].as_str().unwrap()).await, [1]);
    // Fixed: the same wait each time.
    let r = run_to_end(
        &env,
        json!({"url": env.target_url("/fail/c"), "delay_seconds": 0, "retry_count": 2, "retry_delay_seconds": 1}),
    )
    .await;
    assert_eq!(waits(&env, r["id"].as_str().unwrap()).await, [1, 1]);
    // Exponential with full jitter: at most 1, 2, 4 (capped at 3) seconds.
    let r = run_to_end(
        &env,
        json!({"url": env.target_url("/fail/d"), "delay_seconds": 0, "retry_count": 3, "retry_delay_seconds": 1,
               "retry_backoff": "exponential", "retry_max_delay_seconds": 3}),
    )
    .await;
    assert_eq!(attempts(&r), 4, "{r}");
    let w = waits(&env, r["id"].as_str().unwrap()).await;
    assert_eq!(w.len(), 3);
    for (wait, cap) in w.iter().zip([1, 2, 3]) {
        assert!((0..=cap).contains(wait), "{w:?}");
    }
}

#[tokio::test]
async fn policies_are_validated_shown_and_kept_on_update() {
    let env = TestEnv::start().await;
    let url = env.target_url("/x");
    for (extra, field) in [
        (json!({"retry_on": ["200"]}), "retry_on"),
        (json!({"retry_on": "5xx"}), "retry_on"),
        (json!({"retry_backoff": "linear"}), "retry_backoff"),
        (json!({"retry_max_delay_seconds": 0}), "retry_max_delay_seconds"),
        (json!({"expected_status": []}), "expected_status"),
        (json!({"expected_status": ["7xx"]}), "expected_status"),
        (json!({"expect_body_contains": ""}), "expect_body_contains"),
        (
            json!({"expect_json": {"path": "$..a", "equals": 1}}),
            "expect_json.path",
        ),
        (json!({"expect_json": {"path": "$.a"}}), "expect_json.equals"),
        (
            json!({"expect_json": {"path": "$.a", "equals": 1, "x": 2}}),
            "expect_json.x",
        ),
    ] {
        let mut body = json!({"name": "p", "url": url, "schedule": "0 3 * * *"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (s, v) = env.post("/cron", body).await;
        assert_eq!((s, v["error"]["field"].as_str()), (400, Some(field)), "{extra}: {v}");
    }
    let (s, job) = env
        .post(
            "/cron",
            json!({"name": "p", "url": url, "schedule": "0 3 * * *", "retry_backoff": "exponential",
                   "retry_on": ["timeout", "503"], "expected_status": [200, "3xx"],
                   "expect_json": {"path": "$.ok", "equals": true}}),
        )
        .await;
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["retry_backoff"], "exponential");
    assert_eq!(job["retry_on"], json!(["timeout", "503"]));
    assert_eq!(job["expected_status"], json!(["200", "3xx"]));
    assert_eq!(job["expect_json"], json!({"path": "$.ok", "equals": true}));
    assert_eq!(job["retry_max_delay_seconds"], 3600);
    // An update that does not mention them keeps them; null clears a check.
    let id = job["id"].as_str().unwrap();
    let (s, job) = env
        .request(
            reqwest::Method::PATCH,
            &env.ws_url(&format!("/cron/{id}")),
            Some(json!({"name": "q", "expect_json": null})),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["retry_on"], json!(["timeout", "503"]));
    assert_eq!(job["expect_json"], Value::Null);
}
