//! Workspace defaults for new jobs' policies: applied to creates that leave a field out,
//! overridden by the body, validated like the job fields, admin only.

use crate::common;

use common::TestEnv;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn defaults_fill_what_a_create_leaves_out() {
    let env = TestEnv::start().await;
    let path = env.ws_url("/job-defaults");
    let (s, v) = env.request(Method::PUT, &path, Some(json!({"retry_count": 2}))).await;
    assert_eq!(s, 403, "an API key acts as member: {v}");

    // The harness's workspace has no owner: the rest happens in a user's own workspace.
    let anna = common::users::user(&env, "anna@example.com").await;
    let (s, ws) = common::users::call(&env, Method::POST, "/v1/workspaces", &anna, Some(json!({"name": "D"}))).await;
    assert_eq!(s, 201, "{ws}");
    let ws = ws["id"].as_str().unwrap().to_string();
    let defaults = format!("/v1/workspaces/{ws}/job-defaults");
    let (s, v) = common::users::call(
        &env,
        Method::PUT,
        &defaults,
        &anna,
        Some(
            json!({"retry_count": 2, "retry_backoff": "exponential", "expected_status": [204],
                    "misfire_policy": "skip", "overlap_policy": "queue_one", "timeout_seconds": 20}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["retry_on"], serde_json::Value::Null);
    let (_, got) = common::users::call(&env, Method::GET, &defaults, &anna, None).await;
    assert_eq!(got, v);

    let cron = format!("/v1/workspaces/{ws}/cron");
    let (s, job) = common::users::call(
        &env,
        Method::POST,
        &cron,
        &anna,
        Some(json!({"name": "a", "url": "https://example.com/", "schedule": "@hourly", "retry_count": 1})),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["retry_count"], 1, "the body wins");
    assert_eq!(job["retry_backoff"], "exponential");
    assert_eq!(job["expected_status"], json!(["204"]));
    assert_eq!(job["timeout_seconds"], 20);
    assert_eq!(
        (job["misfire_policy"].as_str(), job["overlap_policy"].as_str()),
        (Some("skip"), Some("queue_one"))
    );
    assert_eq!(
        job["retry_on"],
        json!(["transport", "timeout", "5xx", "408", "429"]),
        "unset: built in"
    );

    for (body, field) in [
        (json!({"retry_on": ["200"]}), "retry_on"),
        (json!({"timeout_seconds": 0}), "timeout_seconds"),
        (json!({"overlap_policy": "x"}), "overlap_policy"),
        (json!({"url": "https://x/"}), "url"),
    ] {
        let (s, v) = common::users::call(&env, Method::PUT, &defaults, &anna, Some(body.clone())).await;
        assert_eq!((s, v["error"]["field"].as_str()), (400, Some(field)), "{body}: {v}");
    }
    // Clearing: an empty object returns every field to the built-in default.
    let (s, v) = common::users::call(&env, Method::PUT, &defaults, &anna, Some(json!({}))).await;
    assert_eq!((s, v["retry_count"].clone()), (200, serde_json::Value::Null));
}
