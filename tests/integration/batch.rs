//! `POST …/delayed/batch`: all or nothing with per-item errors, idempotency keys across and
//! within batches, the plan's monthly allowance charged for the batch as a whole, and created
//! calls that fire like single ones.

use crate::common;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::users::{call, user};
use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

fn item(env: &TestEnv, path: &str, delay_ms: i64) -> Value {
    let at = Utc::now() + chrono::Duration::milliseconds(delay_ms);
    json!({"url": env.target_url(path), "execute_at": at.to_rfc3339_opts(SecondsFormat::Millis, true)})
}

async fn delayed_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'Job'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_creates_every_item_and_each_one_fires() {
    let env = TestEnv::start().await;
    let items: Vec<Value> = (0..5).map(|i| item(&env, &format!("/batch/{i}"), 1500)).collect();
    let (s, v) = env.post("/delayed/batch", json!({"items": items})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["created"], 5, "{v}");
    assert_eq!(v["existing"], 0, "{v}");
    let out = v["items"].as_array().unwrap();
    assert_eq!(out.len(), 5);
    for (i, it) in out.iter().enumerate() {
        assert_eq!(it["index"], i as i64, "{v}");
        assert_eq!(it["status"], "created", "{v}");
        let id = it["id"].as_str().unwrap();
        let (s, call) = env.get(&format!("/delayed/{id}")).await;
        assert_eq!(s, 200, "{call}");
        assert_eq!(call["url"], env.target_url(&format!("/batch/{i}")));
        assert_eq!(call["run_id"], it["run_id"], "{call}");
    }
    for it in out {
        let run = env
            .wait_execution(it["run_id"].as_str().unwrap(), Duration::from_secs(20))
            .await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    for i in 0..5 {
        assert_eq!(
            env.target.arrivals_at(&format!("/batch/{i}")).len(),
            1,
            "call {i} exactly once"
        );
    }
}

#[tokio::test]
async fn one_bad_item_refuses_the_whole_batch_and_names_each_fault() {
    let env = TestEnv::start().await;
    let before = delayed_count(&env).await;
    let mut items: Vec<Value> = (0..4).map(|_| item(&env, "/never", 60_000)).collect();
    items[1].as_object_mut().unwrap().remove("url");
    items[2]["execute_at"] = json!("2001-01-01T00:00:00Z");
    items.push(json!("not an object"));
    items[3]["colour"] = json!("blue");
    let (s, v) = env.post("/delayed/batch", json!({"items": items})).await;
    assert_eq!(s, 400, "{v}");
    let e = &v["error"];
    assert_eq!(e["code"], "invalid_items", "{v}");
    assert_eq!(e["field"], "items", "{v}");
    let bad: Vec<(i64, Value, Value)> = e["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["index"].as_i64().unwrap(), x["field"].clone(), x["code"].clone()))
        .collect();
    assert_eq!(
        bad,
        vec![
            (1, json!("url"), json!("required")),
            (2, json!("execute_at"), json!("in_past")),
            (3, json!("colour"), json!("unknown_field")),
            (4, Value::Null, json!("invalid_type")),
        ],
        "{v}"
    );
    assert!(e["message"].as_str().unwrap().contains("4 of 5"), "{v}");
    assert_eq!(
        delayed_count(&env).await,
        before,
        "nothing of a refused batch is stored"
    );

    // The shape of the batch itself.
    let (s, v) = env.post("/delayed/batch", json!({"items": []})).await;
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("items")), "{v}");
    let (s, v) = env.post("/delayed/batch", json!({})).await;
    assert_eq!((s, v["error"]["code"].clone()), (400, json!("required")), "{v}");
    let (s, v) = env.post("/delayed/batch", json!({"items": {}})).await;
    assert_eq!((s, v["error"]["code"].clone()), (400, json!("invalid_type")), "{v}");
    let too_many: Vec<Value> = (0..1001).map(|_| item(&env, "/never", 60_000)).collect();
    let (s, v) = env.post("/delayed/batch", json!({"items": too_many})).await;
    assert_eq!((s, v["error"]["code"].clone()), (400, json!("out_of_range")), "{v}");
    let (s, v) = env
        .post(
            "/delayed/batch",
            json!({"items": [item(&env, "/x", 60_000)], "extra": 1}),
        )
        .await;
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("extra")), "{v}");
    assert_eq!(delayed_count(&env).await, before);
}

#[tokio::test]
async fn idempotency_keys_hold_across_batches_and_single_creates() {
    let env = TestEnv::start().await;
    let mut a = item(&env, "/k", 60_000);
    a["idempotency_key"] = json!("order-1");
    let mut b = item(&env, "/k", 60_000);
    b["idempotency_key"] = json!("order-2");
    let (s, first) = env.post("/delayed/batch", json!({"items": [a, b]})).await;
    assert_eq!(s, 201, "{first}");

    // A repeat of order-1 plus a new order-3: one existing (same id), one created.
    let mut c = item(&env, "/k", 60_000);
    c["idempotency_key"] = json!("order-3");
    let mut a2 = item(&env, "/k", 90_000);
    a2["idempotency_key"] = json!("order-1");
    let (s, second) = env.post("/delayed/batch", json!({"items": [c, a2]})).await;
    assert_eq!(s, 201, "{second}");
    assert_eq!(
        (second["created"].clone(), second["existing"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(second["items"][1]["status"], "existing");
    assert_eq!(second["items"][1]["id"], first["items"][0]["id"]);
    assert_eq!(
        second["items"][1]["execute_at"], first["items"][0]["execute_at"],
        "an existing item is shown as it was created"
    );

    // A single create with a key a batch used returns the batch's call.
    let mut single = item(&env, "/k", 60_000);
    single["idempotency_key"] = json!("order-2");
    let (s, v) = env.post("/delayed", single).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], first["items"][1]["id"]);

    // All existing: 200, nothing new.
    let mut again = item(&env, "/k", 60_000);
    again["idempotency_key"] = json!("order-3");
    let (s, v) = env.post("/delayed/batch", json!({"items": [again]})).await;
    assert_eq!((s, v["created"].clone()), (200, json!(0)), "{v}");

    // The same key twice in one batch is the client's mistake.
    let mut d1 = item(&env, "/k", 60_000);
    d1["idempotency_key"] = json!("order-9");
    let d2 = d1.clone();
    let (s, v) = env.post("/delayed/batch", json!({"items": [d1, d2]})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["items"][0]["index"], 1, "{v}");
    assert_eq!(v["error"]["items"][0]["code"], "duplicate", "{v}");
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM delayed_idempotency")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(calls, 3, "order-1, order-2, order-3");
}

#[tokio::test]
async fn the_monthly_allowance_is_charged_for_the_whole_batch() {
    let env = TestEnv::start().await;
    let anna = user(&env, "anna@example.com").await;
    let (s, ws) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &anna,
        Some(json!({"name": "Shop"})),
    )
    .await;
    assert_eq!(s, 201, "{ws}");
    let path = format!("/v1/workspaces/{}/delayed/batch", ws["id"].as_str().unwrap());
    let batch = |n: usize| json!({"items": (0..n).map(|_| item(&env, "/free", 3_600_000)).collect::<Vec<_>>()});

    // Free allows 1000 a month: 999, then 2 at once is refused whole, then 1 fits.
    let (s, v) = call(&env, Method::POST, &path, &anna, Some(batch(999))).await;
    assert_eq!((s, v["created"].clone()), (201, json!(999)), "{v}");
    let (s, v) = call(&env, Method::POST, &path, &anna, Some(batch(2))).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "plan_limit", "{v}");
    assert_eq!(v["error"]["limit"], "max_delayed_per_month", "{v}");
    assert_eq!(v["error"]["usage"], 999, "{v}");
    let (s, v) = call(&env, Method::POST, &path, &anna, Some(batch(1))).await;
    assert_eq!((s, v["created"].clone()), (201, json!(1)), "{v}");

    // A per-job limit names the item and the field.
    let mut slow = item(&env, "/free", 3_600_000);
    slow["timeout_seconds"] = json!(120);
    let (s, v) = call(&env, Method::POST, &path, &anna, Some(json!({"items": [slow]}))).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["items"][0]["code"], "plan_limit", "{v}");
    assert_eq!(v["error"]["items"][0]["field"], "timeout_seconds", "{v}");
}
