//! The enterprise event stream over NATS, on a private operator-mode nats-server set up by
//! `cronbox nats init`: a Business workspace's events arrive on its subjects in the events
//! stream, a subscription's credentials read its own consumer, and they cannot read another
//! workspace's events, create consumers, or publish anything.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use common::{binary, free_port, TestEnv};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// A nats-server in operator mode, with the auth `cronbox nats init` wrote into `dir`.
async fn operator_nats(dir: &Path) -> (Child, String) {
    let out = std::process::Command::new(binary())
        .args(["nats", "init", "--dir"])
        .arg(dir)
        .output()
        .expect("cronbox nats init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "host: 127.0.0.1\nport: {port}\ninclude auth.conf\njetstream {{ store_dir: \"{}\" }}\n",
            dir.join("js").display()
        ),
    )
    .expect("write server.conf");
    let bin = std::env::var("CRONBOX_NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, format!("nats://127.0.0.1:{port}"))
}

/// A client on the subscriber's credentials; server errors (permission violations) are
/// forwarded to the returned channel.
async fn subscriber(
    url: &str,
    creds: &str,
    inbox: &str,
) -> (async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_credentials(creds)
        .expect("parse creds")
        .custom_inbox_prefix(inbox)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event.to_string());
            }
        })
        .connect(url)
        .await
        .expect("connect with the subscriber's credentials");
    (client, rx)
}

async fn violation(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no permissions violation for {what}"))
            .expect("event channel");
        if e.to_lowercase().contains("permissions violation") {
            return e;
        }
    }
}

async fn delayed(env: &TestEnv, key: &str, ws: &str, path: &str) {
    let resp = env
        .http
        .post(format!("{}/v1/workspaces/{ws}/delayed", env.base()))
        .bearer_auth(key)
        .json(&json!({"url": env.target_url(path), "delay_seconds": 0}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);
}

#[tokio::test]
async fn scoped_credentials_read_their_own_workspace_only_and_publish_nothing() {
    let dir = tempdir();
    let (nats, url) = operator_nats(&dir).await;
    let seed = std::fs::read_to_string(dir.join("account.seed")).expect("seed");
    let creds_path = dir.join("cronbox.creds").display().to_string();
    let env = TestEnv::start_with(vec![
        ("CRONBOX_NATS_URL", url.as_str()),
        ("CRONBOX_NATS_CREDS", creds_path.as_str()),
        ("CRONBOX_NATS_ACCOUNT_SEED", seed.trim()),
    ])
    .await;
    let out = env
        .cli(&["workspace", "create", "--name", "Other", "--plan", "business", "--json"])
        .await;
    let other: Value = serde_json::from_str(out.trim()).expect("json");
    let (b_ws, b_key) = (
        other["workspace_id"].as_str().expect("ws").to_string(),
        other["api_key"].as_str().expect("key").to_string(),
    );

    // Bad input first: a 400 naming the field, nothing created.
    let (s, v) = env
        .post("/event-subscriptions", json!({"types": ["NoSuchEvent"]}))
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("types")), "{v}");
    let (s, v) = env.post("/event-subscriptions", json!({"expires_in_days": 0})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("expires_in_days")), "{v}");

    let (s, sub) = env.post("/event-subscriptions", json!({"name": "erp"})).await;
    assert_eq!(s, 201, "{sub}");
    let b_sub: Value = env
        .http
        .post(format!("{}/v1/workspaces/{b_ws}/event-subscriptions", env.base()))
        .bearer_auth(&b_key)
        .json(&json!({}))
        .send()
        .await
        .expect("b subscription")
        .json()
        .await
        .expect("json");
    let creds = sub["credentials"].as_str().expect("credentials");
    let stream = sub["nats"]["stream"].as_str().expect("stream").to_string();
    let consumer = sub["nats"]["consumer"].as_str().expect("consumer").to_string();
    let inbox = sub["nats"]["inbox_prefix"].as_str().expect("inbox").to_string();
    assert_eq!(sub["nats"]["url"], url.as_str());
    let (s, list) = env.get("/event-subscriptions").await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert!(!list.to_string().contains("NKEY"), "credentials are shown once only");

    delayed(&env, &env.api_key, &env.workspace_id, "/ok/a").await;
    delayed(&env, &b_key, &b_ws, "/ok/b").await;

    // Our own consumer: this workspace's events, in order, and nothing else.
    let (client, mut errors) = subscriber(&url, creds, &inbox).await;
    let js = jetstream::new(client.clone());
    let pull: jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(&consumer, &stream)
        .await
        .expect("the subscriber reads its consumer");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|e: &Value| e["type"] == "RunSucceeded") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RunSucceeded among {seen:#?}"
        );
        let mut batch = pull
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        while let Some(Ok(m)) = batch.next().await {
            let e: Value = serde_json::from_slice(&m.payload).expect("json event");
            assert_eq!(
                m.subject.as_str(),
                format!(
                    "{}.ws.{}.events.{}",
                    env.prefix,
                    env.workspace_id,
                    e["type"].as_str().unwrap_or("")
                )
            );
            m.ack().await.expect("ack");
            seen.push(e);
        }
    }
    assert!(
        seen.iter().all(|e| e["workspace_id"] == env.workspace_id.as_str()),
        "{seen:#?}"
    );
    assert_eq!(seen[0]["type"], "WorkspaceCreated");
    let ids: Vec<&str> = seen.iter().filter_map(|e| e["id"].as_str()).collect();
    let (s, page) = env.get("/events?limit=1000").await;
    assert_eq!(s, 200);
    let http_ids: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    assert_eq!(
        ids[..],
        http_ids[..ids.len()],
        "NATS and HTTP carry the same events in the same order"
    );

    // Everything else is refused by the server.
    let b_subject = format!("{}.ws.{b_ws}.events.>", env.prefix);
    let _sub = client.subscribe(b_subject.clone()).await.expect("subscribe call");
    violation(&mut errors, "subscribing to another workspace").await;
    let _own = client
        .subscribe(format!("{}.ws.{}.events.>", env.prefix, env.workspace_id))
        .await
        .expect("subscribe call");
    violation(&mut errors, "a core subscription beside the consumer").await;
    client
        .publish(
            format!("{}.ws.{}.events.Forged", env.prefix, env.workspace_id),
            "x".into(),
        )
        .await
        .expect("publish call");
    client.flush().await.expect("flush");
    violation(&mut errors, "publishing an event").await;
    client
        .publish(format!("{}.runs.dispatch.x", env.prefix), "x".into())
        .await
        .expect("publish call");
    client.flush().await.expect("flush");
    violation(&mut errors, "publishing a run").await;
    let b_consumer = b_sub["nats"]["consumer"].as_str().expect("b consumer");
    assert!(
        tokio::time::timeout(
            Duration::from_secs(5),
            js.get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(b_consumer, &stream)
        )
        .await
        .map_or(true, |r| r.is_err()),
        "read another workspace's consumer"
    );
    let made = tokio::time::timeout(
        Duration::from_secs(5),
        js.create_consumer_on_stream(
            jetstream::consumer::pull::Config {
                durable_name: Some("mine".into()),
                filter_subject: b_subject.replace(".>", ".*"),
                ..Default::default()
            },
            &stream,
        ),
    )
    .await;
    assert!(
        made.map_or(true, |r| r.is_err()),
        "created a consumer on another workspace"
    );

    // The service's view: nothing forged reached the stream, and B's consumer is untouched.
    let service = async_nats::ConnectOptions::with_credentials_file(dir.join("cronbox.creds"))
        .await
        .expect("service creds")
        .connect(&url)
        .await
        .expect("service connects");
    let sjs = jetstream::new(service);
    let mut events = sjs.get_stream(&stream).await.expect("stream");
    let forged = events
        .get_last_raw_message_by_subject(&format!("{}.ws.{}.events.Forged", env.prefix, env.workspace_id))
        .await;
    assert!(forged.is_err(), "a forged event got in");
    assert!(events.consumer_info("mine").await.is_err());
    let info = events.info().await.expect("info");
    assert!(info.state.messages > 0);

    // Deleting a workspace revokes its subscriptions: their consumers go with it.
    let owner = common::users::user(&env, "owner-c@example.com").await;
    let (s, c) = common::users::call(
        &env,
        reqwest::Method::POST,
        "/v1/workspaces",
        &owner,
        Some(json!({"name": "C"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let c_ws = c["id"].as_str().expect("id").to_string();
    env.cli(&["workspace", "set-plan", "--workspace", &c_ws, "--plan", "business"])
        .await;
    let (s, c_sub) = common::users::call(
        &env,
        reqwest::Method::POST,
        &format!("/v1/workspaces/{c_ws}/event-subscriptions"),
        &owner,
        Some(json!({"name": "c"})),
    )
    .await;
    assert_eq!(s, 201, "{c_sub}");
    let c_consumer = c_sub["nats"]["consumer"].as_str().expect("c consumer").to_string();
    assert!(events.consumer_info(&c_consumer).await.is_ok());
    let (s, _) = common::users::call(
        &env,
        reqwest::Method::DELETE,
        &format!("/v1/workspaces/{c_ws}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 204);
    assert!(
        events.consumer_info(&c_consumer).await.is_err(),
        "a deleted workspace's subscription still reads"
    );

    // Revoking deletes the consumer: the credentials reach nothing any more.
    let id = sub["id"].as_str().expect("id");
    let (s, _) = env.delete(&format!("/event-subscriptions/{id}")).await;
    assert_eq!(s, 204);
    assert!(js
        .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(&consumer, &stream)
        .await
        .is_err());
    let (s, _) = env.delete(&format!("/event-subscriptions/{id}")).await;
    assert_eq!(s, 404);
    drop(env);
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cronbox-natsauth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
