//! The API edge: authentication, tenancy and bad input. Every refusal is a 4xx JSON error that
//! names the field, and nothing stored changes.

use crate::common;

use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

async fn raw(env: &TestEnv, method: Method, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut r = env
        .http
        .request(method, env.ws_url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

async fn event_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&env.db.pool)
        .await
        .expect("count events")
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_and_other_tenants_are_404() {
    let env = TestEnv::start().await;
    let (status, body) = raw(&env, Method::GET, "/cron", None, "").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["code"].is_string());
    let (status, _) = raw(&env, Method::GET, "/cron", Some("cbx_nonsense"), "").await;
    assert_eq!(status, 401);
    // A well-formed key of this workspace with a wrong secret.
    let forged = format!("{}{}", &env.api_key[..env.api_key.len() - 4], "0000");
    let (status, _) = raw(&env, Method::GET, "/cron", Some(&forged), "").await;
    assert_eq!(status, 401);

    // A second tenant, with its own job.
    let out = env.cli(&["workspace", "create", "--name", "Other", "--json"]).await;
    let other: Value = serde_json::from_str(out.trim()).expect("json");
    let other_ws = other["workspace_id"].as_str().expect("ws").to_string();
    let other_key = other["api_key"].as_str().expect("key").to_string();
    let url = format!("{}/v1/workspaces/{other_ws}/cron", env.base());
    let resp = env
        .http
        .post(&url)
        .bearer_auth(&other_key)
        .json(&json!({"name": "theirs", "url": "https://example.com/x", "schedule": "0 3 * * *"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);
    let theirs: Value = resp.json().await.expect("json");
    let their_id = theirs["id"].as_str().expect("id").to_string();

    // Our key on their workspace: 404, never 403.
    let resp = env.http.get(&url).bearer_auth(&env.api_key).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 404);
    // Their job id under our workspace: 404 for every verb.
    let before = event_count(&env).await;
    for (m, path) in [
        (Method::GET, format!("/cron/{their_id}")),
        (Method::PATCH, format!("/cron/{their_id}")),
        (Method::DELETE, format!("/cron/{their_id}")),
        (Method::POST, format!("/cron/{their_id}/pause")),
        (Method::POST, format!("/cron/{their_id}/run")),
        (Method::GET, format!("/cron/{their_id}/events")),
        (Method::GET, format!("/delayed/{their_id}")),
        (Method::GET, format!("/executions/{their_id}")),
    ] {
        let (status, body) = raw(&env, m.clone(), &path, Some(&env.api_key), "{\"name\": \"x\"}").await;
        assert_eq!(status, 404, "{m} {path}: {body}");
    }
    assert_eq!(event_count(&env).await, before, "a refused request stored something");
    // Our list does not contain their job.
    let (_, list) = env.get("/cron").await;
    assert!(list["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|j| j["id"] != their_id.as_str()));
    // Unknown and malformed ids.
    let (status, _) = env.get(&format!("/cron/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    let (status, _) = env.get("/cron/not-a-uuid").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field_and_stores_nothing() {
    let env = TestEnv::start().await;
    let good = json!({"name": "ok", "url": "https://example.com/hook", "schedule": "*/5 * * * *"});
    let (status, job) = env.post("/cron", good.clone()).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let before = event_count(&env).await;

    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("/cron", "{not json".into(), ""),
        ("/cron", "[1, 2]".into(), ""),
        ("/cron", with("method", json!("FETCH")), "method"),
        ("/cron", with("url", json!("ftp://example.com/x")), "url"),
        ("/cron", with("url", json!("not a url")), "url"),
        ("/cron", with("schedule", json!("61 * * * *")), "schedule"),
        ("/cron", with("schedule", json!("0 0 30 2 *")), "schedule"),
        ("/cron", with("timezone", json!("Mars/Olympus")), "timezone"),
        ("/cron", with("timeout_seconds", json!(301)), "timeout_seconds"),
        ("/cron", with("timeout_seconds", json!("10")), "timeout_seconds"),
        ("/cron", with("retry_count", json!(11)), "retry_count"),
        ("/cron", with("headers", json!({"Host": "evil"})), "headers.Host"),
        ("/cron", with("headers", json!({"X-A": "a\r\nB: c"})), "headers.X-A"),
        ("/cron", with("body", json!("x".repeat(64 * 1024 + 1))), "body"),
        ("/cron", with("name", json!("")), "name"),
        ("/cron", with("surprise", json!(1)), "surprise"),
        (
            "/delayed",
            json!({"url": "https://example.com/x", "execute_at": "2020-01-01T00:00:00Z"}).to_string(),
            "execute_at",
        ),
        (
            "/delayed",
            json!({"url": "https://example.com/x", "execute_at": "tomorrow"}).to_string(),
            "execute_at",
        ),
        (
            "/delayed",
            json!({"url": "https://example.com/x"}).to_string(),
            "execute_at",
        ),
        (
            "/delayed",
            json!({"url": "https://example.com/x", "delay_seconds": -5}).to_string(),
            "delay_seconds",
        ),
    ];
    for (path, body, field) in &cases {
        let (status, v) = raw(&env, Method::POST, path, Some(&env.api_key), body).await;
        assert!((400..500).contains(&status), "{path} {field}: {status} {v}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{path} {field}: {v}"
        );
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], *field, "{path}: {v}");
        }
    }
    // Beyond the request size limit: refused with 413 before the body is read. The server may
    // close the connection while the client is still uploading, which the client sees as an error.
    let big = with("body", json!("x".repeat(2 * 1024 * 1024)));
    // Its own client: the connection the server closes early must not go back to the shared pool.
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let sent = once
        .post(env.ws_url("/cron"))
        .bearer_auth(&env.api_key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await;
    match sent {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    // Bad updates leave the job as it was.
    let (status, v) = raw(
        &env,
        Method::PATCH,
        &format!("/cron/{id}"),
        Some(&env.api_key),
        &json!({"schedule": "bogus"}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "schedule");
    assert_eq!(event_count(&env).await, before, "refused input stored events");
    let (_, now) = env.get(&format!("/cron/{id}")).await;
    assert_eq!(now["schedule"], "*/5 * * * *");

    // Query parameters are checked too.
    for q in [
        "/executions?limit=0",
        "/executions?limit=abc",
        "/executions?status=weird",
        "/executions?cursor=%%%",
        "/cron?status=weird",
    ] {
        let (status, v) = env.get(q).await;
        assert_eq!(status, 400, "{q}: {v}");
    }
    let (status, v) = env.get("/executions?job_id=nope").await;
    assert!(status == 400 || status == 404, "{v}");
    // Unknown routes and methods answer JSON too.
    let (status, v) = raw(&env, Method::GET, "/nothing-here", Some(&env.api_key), "").await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = raw(&env, Method::PUT, "/cron", Some(&env.api_key), "{}").await;
    assert_eq!(status, 405, "{v}");
}
