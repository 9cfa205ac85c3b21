//! Delayed-call callbacks: after the final outcome the result is POSTed to `callback_url`,
//! signed, retried when the receiver fails, recorded as events and shown on the execution.

use crate::common;

use std::time::Duration;

use common::TestEnv;
use serde_json::{json, Value};

fn header(a: &common::target::Arrival, name: &str) -> Option<String> {
    a.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test]
async fn results_reach_the_callback_and_failed_deliveries_are_retried() {
    let env = TestEnv::start().await;

    // A call that succeeds; its callback is delivered at the first try.
    let (s, v) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/work"), "delay_seconds": 0, "callback_url": env.target_url("/cb/one")}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let cb = env
        .eventually(Duration::from_secs(20), "the callback", || async {
            env.target.arrivals_at("/cb/one").pop()
        })
        .await;
    assert_eq!(cb.method, "POST");
    assert_eq!(header(&cb, "webhook-id"), Some(format!("{run_id}.callback")));
    assert!(header(&cb, "webhook-signature").is_some_and(|s| s.starts_with("v1,")));
    assert_eq!(header(&cb, "content-type").as_deref(), Some("application/json"));
    let body: Value = serde_json::from_slice(&cb.body).unwrap();
    assert_eq!(body["type"], "run.finished");
    assert_eq!(body["run_id"], run_id.as_str());
    assert_eq!(body["job_id"], v["id"]);
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["status_code"], 200);
    assert_eq!(body["attempts"], 1);
    assert_eq!(body["response_body"], "ok");
    assert!(body["duration_ms"].is_u64());
    let detail = env
        .eventually(Duration::from_secs(10), "delivered in the execution log", || async {
            let (_, r) = env.get(&format!("/executions/{run_id}")).await;
            (r["callback"]["status"] == "delivered").then_some(r)
        })
        .await;
    assert_eq!(detail["callback"]["attempts"], 1);
    assert_eq!(detail["callback"]["url"], env.target_url("/cb/one").as_str());

    // A call that fails; its callback receiver fails once, then accepts.
    let (s, v) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/status/422/x"), "delay_seconds": 0,
                   "callback_url": env.target_url("/flaky/1/cb-two")}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let (_, retrying) = env
        .eventually(Duration::from_secs(20), "a failed first delivery", || async {
            let (_, r) = env.get(&format!("/executions/{run_id}")).await;
            (r["callback"]["status"] == "retrying").then_some(((), r))
        })
        .await;
    assert!(retrying["callback"]["error"].as_str().is_some(), "{retrying}");
    assert!(retrying["callback"]["next_at"].as_str().is_some(), "{retrying}");
    let (s, list) = env.get("/executions?callback_status=retrying").await;
    assert_eq!(s, 200);
    assert_eq!(list["items"][0]["id"], run_id.as_str());
    let deliveries = env
        .eventually(Duration::from_secs(30), "the retried delivery", || async {
            let a = env.target.arrivals_at("/flaky/1/cb-two");
            (a.len() == 2).then_some(a)
        })
        .await;
    let body: Value = serde_json::from_slice(&deliveries[1].body).unwrap();
    assert_eq!(
        (body["status"].as_str(), body["status_code"].as_i64()),
        (Some("failed"), Some(422))
    );
    assert_eq!(body["error_type"], "http_status");
    assert_eq!(
        header(&deliveries[0], "webhook-id"),
        header(&deliveries[1], "webhook-id")
    );
    let done = env
        .eventually(Duration::from_secs(10), "delivered after a retry", || async {
            let (_, r) = env.get(&format!("/executions/{run_id}")).await;
            (r["callback"]["status"] == "delivered").then_some(r)
        })
        .await;
    assert_eq!(done["callback"]["attempts"], 2);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Run' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&run_id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    // Each try is scheduled on the dispatcher's timers, handed out, attempted.
    let tail: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with("Callback"))
        .collect();
    assert_eq!(
        tail,
        [
            "CallbackScheduled",
            "CallbackDispatched",
            "CallbackAttempted",
            "CallbackScheduled",
            "CallbackDispatched",
            "CallbackAttempted",
            "CallbackDelivered"
        ],
        "{types:?}"
    );

    let (s, v) = env.get("/executions?callback_status=lost").await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("callback_status")));
}
