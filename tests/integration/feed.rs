//! The live execution feed (`GET …/executions/stream`) and the workspace event stream
//! (`GET …/events`): run state changes arrive live, a reconnect with `Last-Event-ID` resumes with
//! no gap and no duplicate at the seam, filters hold, and nobody sees another workspace.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestEnv;
use futures::StreamExt;
use serde_json::{json, Value};

/// One SSE message as the client saw it.
#[derive(Debug, Clone)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// An open stream whose messages a background task collects.
struct Stream {
    messages: Arc<Mutex<Vec<Message>>>,
    connected: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    async fn open(env: &TestEnv, key: &str, ws: &str, query: &str, last_event_id: Option<&str>) -> (u16, Self) {
        let url = format!("{}/v1/workspaces/{ws}/executions/stream{query}", env.base());
        let client = reqwest::Client::new();
        let mut req = client.get(url).bearer_auth(key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("open stream");
        let status = resp.status().as_u16();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(Mutex::new(false));
        let (m, c) = (messages.clone(), connected.clone());
        let task = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (None, None, String::new());
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = Some(v.to_string());
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            event = Some(v.to_string());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push_str(v);
                        } else if line == ": connected" {
                            *c.lock().unwrap() = true;
                        }
                    }
                    if !data.is_empty() {
                        let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                        m.lock().unwrap().push(Message { id, event, data });
                    }
                }
            }
        });
        (
            status,
            Self {
                messages,
                connected,
                task,
            },
        )
    }

    fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    async fn wait_connected(&self, env: &TestEnv) {
        env.eventually(Duration::from_secs(10), "the stream to connect", || async {
            (*self.connected.lock().unwrap()).then_some(())
        })
        .await;
    }

    async fn wait_for(&self, env: &TestEnv, what: &str, f: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        env.eventually(Duration::from_secs(30), what, || async {
            let m = self.messages();
            f(&m).then_some(m)
        })
        .await
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn statuses_of(messages: &[Message], run: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.data["run_id"] == run)
        .map(|m| m.data["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().filter_map(|m| m.id.clone()).collect()
}

fn cursor(id: &str) -> (i64, i64) {
    let (a, b) = id.split_once('-').expect("cursor form");
    (a.parse().expect("xid"), b.parse().expect("seq"))
}

async fn delayed(env: &TestEnv, path: &str, retries: u32) -> (String, String) {
    let (s, v) = env
        .post(
            "/delayed",
            json!({"url": env.target_url(path), "delay_seconds": 0, "retry_count": retries, "retry_delay_seconds": 1}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let job = v["id"].as_str().expect("id").to_string();
    let (_, runs) = env
        .eventually(Duration::from_secs(20), "the call's run", || async {
            let (s, v) = env.get(&format!("/executions?job_id={job}")).await;
            (s == 200 && v["items"].as_array().is_some_and(|a| !a.is_empty())).then_some((s, v))
        })
        .await;
    (job, runs["items"][0]["id"].as_str().expect("run id").to_string())
}

#[tokio::test]
async fn feed_is_live_resumable_and_filtered() {
    let env = TestEnv::start().await;
    let (status, live) = Stream::open(&env, &env.api_key, &env.workspace_id, "", None).await;
    assert_eq!(status, 200);
    live.wait_connected(&env).await;

    // One call that succeeds, one that fails once then is retried and fails for good.
    let (ok_job, ok_run) = delayed(&env, "/ok/feed", 0).await;
    let (_, bad_run) = delayed(&env, "/fail/feed", 1).await;
    let seen = live
        .wait_for(&env, "both runs to finish on the feed", |m| {
            statuses_of(m, &ok_run).last().map(String::as_str) == Some("succeeded")
                && statuses_of(m, &bad_run).last().map(String::as_str) == Some("failed")
        })
        .await;
    assert_eq!(
        statuses_of(&seen, &ok_run),
        ["scheduled", "dispatched", "running", "attempt_succeeded", "succeeded"],
        "{seen:#?}"
    );
    assert_eq!(
        statuses_of(&seen, &bad_run),
        [
            "scheduled",
            "dispatched",
            "running",
            "attempt_failed",
            "retry_scheduled",
            "dispatched",
            "running",
            "attempt_failed",
            "failed"
        ]
    );
    let all = ids(&seen);
    assert!(
        all.windows(2).all(|w| cursor(&w[0]) < cursor(&w[1])),
        "ids increase: {all:?}"
    );
    for m in &seen {
        assert_eq!(m.data["workspace_id"], env.workspace_id.as_str());
        assert_eq!(m.data["schema_version"], 1);
        assert_eq!(m.id.as_deref(), m.data["id"].as_str());
    }
    let ok_messages: Vec<&Message> = seen.iter().filter(|m| m.data["run_id"] == ok_run.as_str()).collect();
    assert!(ok_messages.iter().all(|m| m.data["job_id"] == ok_job.as_str()));

    // Reconnect from the middle while new runs keep coming: everything after the cursor, once.
    let seam = all[all.len() / 2].clone();
    let (status, resumed) = Stream::open(&env, &env.api_key, &env.workspace_id, "", Some(&seam)).await;
    assert_eq!(status, 200);
    let (_, third) = delayed(&env, "/ok/third", 0).await;
    let both = |m: &[Message]| statuses_of(m, &third).last().map(String::as_str) == Some("succeeded");
    let after_seam = resumed
        .wait_for(&env, "the resumed stream to reach the new run", both)
        .await;
    let live_all = live.wait_for(&env, "the first stream to see the new run", both).await;
    let expected: Vec<String> = ids(&live_all)
        .into_iter()
        .filter(|id| cursor(id) > cursor(&seam))
        .collect();
    let got = ids(&after_seam);
    assert_eq!(
        got[..expected.len().min(got.len())],
        expected[..],
        "gap or duplicate at the seam"
    );
    // `?after=` is the same as the header.
    let (_, by_query) = Stream::open(&env, &env.api_key, &env.workspace_id, &format!("?after={seam}"), None).await;
    let by_query = by_query.wait_for(&env, "?after= to catch up", both).await;
    assert_eq!(ids(&by_query)[..expected.len()], expected[..]);

    // The feed's ids are exactly the run events of the workspace event stream after the seam.
    let (s, page) = env
        .get(&format!(
            "/events?after={seam}&limit=1000&types=RunScheduled,RunSkipped,RunDispatched,AttemptStarted,AttemptFinished,RetryScheduled,RunSucceeded,RunFailed"
        ))
        .await;
    assert_eq!(s, 200, "{page}");
    let from_api: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    assert_eq!(from_api[..expected.len()], expected[..]);

    // Filters.
    let (_, only_job) = Stream::open(
        &env,
        &env.api_key,
        &env.workspace_id,
        &format!("?job_id={ok_job}&after=0-0"),
        None,
    )
    .await;
    let (_, only_failed) = Stream::open(
        &env,
        &env.api_key,
        &env.workspace_id,
        "?status=failed,retry_scheduled&after=0-0",
        None,
    )
    .await;
    let j = only_job.wait_for(&env, "the job filter", |m| m.len() >= 5).await;
    assert!(j.iter().all(|m| m.data["job_id"] == ok_job.as_str()), "{j:#?}");
    let f = only_failed.wait_for(&env, "the status filter", |m| m.len() >= 2).await;
    assert!(f
        .iter()
        .all(|m| m.data["status"] == "failed" || m.data["status"] == "retry_scheduled"));
}

#[tokio::test]
async fn feed_errors_and_tenancy() {
    let env = TestEnv::start().await;
    // Malformed filters and cursors are plain 400s naming the field.
    for (query, field) in [
        ("?after=nope", "after"),
        ("?status=exploded", "status"),
        ("?job_id=42", "job_id"),
    ] {
        let url = format!("{}{query}", env.ws_url("/executions/stream"));
        let (s, v) = env.request(reqwest::Method::GET, &url, None).await;
        assert_eq!((s, v["error"]["field"].as_str()), (400, Some(field)), "{query}: {v}");
    }

    let (_, run) = delayed(&env, "/ok/err", 0).await;
    env.wait_execution(&run, Duration::from_secs(20)).await;

    // A cursor that names no event, and one older than the plan's retention.
    let (_, unknown) = Stream::open(&env, &env.api_key, &env.workspace_id, "?after=1-1", None).await;
    let m = unknown
        .wait_for(&env, "the unknown cursor error", |m| !m.is_empty())
        .await;
    assert_eq!(m[0].event.as_deref(), Some("stream_error"));
    assert_eq!(m[0].data["code"], "unknown_cursor");
    let (xid, seq): (i64, i64) = sqlx::query_as(
        "UPDATE events SET recorded_at = now() - interval '400 days'
          WHERE global_seq = (SELECT min(global_seq) FROM events WHERE aggregate_type = 'Run')
          RETURNING xid::text::int8, global_seq",
    )
    .fetch_one(&env.db.pool)
    .await
    .expect("age one event");
    let old = format!("{xid}-{seq}");
    let (_, expired) = Stream::open(&env, &env.api_key, &env.workspace_id, "", Some(&old)).await;
    let m = expired
        .wait_for(&env, "the expired cursor error", |m| !m.is_empty())
        .await;
    assert_eq!(m[0].data["code"], "cursor_expired", "{m:#?}");
    let (s, v) = env.get(&format!("/events?after={old}")).await;
    assert_eq!((s, v["error"]["code"].as_str()), (410, Some("cursor_expired")));

    // Another workspace sees none of this one's runs, and cannot open this one's stream.
    let out = env
        .cli(&["workspace", "create", "--name", "Other", "--plan", "business", "--json"])
        .await;
    let other: Value = serde_json::from_str(out.trim()).expect("json");
    let (other_ws, other_key) = (
        other["workspace_id"].as_str().expect("ws").to_string(),
        other["api_key"].as_str().expect("key").to_string(),
    );
    let (s, _) = Stream::open(&env, &other_key, &env.workspace_id, "", None).await;
    assert_eq!(s, 404);
    let (s, theirs) = Stream::open(&env, &other_key, &other_ws, "?after=0-0", None).await;
    assert_eq!(s, 200);
    theirs.wait_connected(&env).await;
    let (_, mine) = Stream::open(&env, &env.api_key, &env.workspace_id, "", None).await;
    mine.wait_connected(&env).await;
    let (_, run2) = delayed(&env, "/ok/private", 0).await;
    mine.wait_for(&env, "my stream to see my run", |m| {
        statuses_of(m, &run2).last().map(String::as_str) == Some("succeeded")
    })
    .await;
    assert!(theirs.messages().is_empty(), "{:#?}", theirs.messages());
    let v: Value = reqwest::Client::new()
        .get(format!("{}/v1/workspaces/{other_ws}/events", env.base()))
        .bearer_auth(&other_key)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let theirs_events = v["items"].as_array().cloned().expect("items");
    assert!(theirs_events.iter().any(|e| e["type"] == "WorkspaceCreated"), "{v}");
    assert!(
        theirs_events.iter().all(|e| e["workspace_id"] == other_ws.as_str()),
        "{v}"
    );

    // NATS subscriptions need the operator's NATS account (tests/event_subscriptions.rs has one).
    let (s, v) = env.post("/event-subscriptions", json!({})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("not_configured")), "{v}");

    // The event stream is a Business feature.
    env.cli(&[
        "workspace",
        "set-plan",
        "--workspace",
        &env.workspace_id,
        "--plan",
        "free",
    ])
    .await;
    env.eventually(Duration::from_secs(15), "the plan change to apply", || async {
        let (s, v) = env.get("/events").await;
        (s == 403 && v["error"]["code"] == "plan_feature").then_some(())
    })
    .await;
}

#[tokio::test]
async fn event_stream_pages_are_stable_and_mask_secrets() {
    let env = TestEnv::start().await;
    let (s, _) = env
        .post(
            "/cron",
            json!({"name": "secret", "url": env.target_url("/ok/h"), "schedule": "0 3 * * *",
                   "headers": {"Authorization": "Bearer very-secret", "X-Trace": "visible", "X-Tenant": "acme-tenant-42"},
                   "sensitive_headers": ["x-tenant"]}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = env
        .post(
            "/cron",
            json!({"name": "bad", "url": env.target_url("/ok/h"), "schedule": "0 3 * * *",
                   "headers": {"X-Trace": "1"}, "sensitive_headers": ["X-Missing"]}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("sensitive_headers")),
        "{v}"
    );
    for _ in 0..3 {
        delayed(&env, "/ok/p", 0).await;
    }
    // Page through with a small limit; pages join up to the full list with nothing repeated.
    let (s, full) = env.get("/events?limit=1000").await;
    assert_eq!(s, 200, "{full}");
    let full: Vec<Value> = full["items"].as_array().cloned().expect("items");
    let text = serde_json::to_string(&full).expect("json");
    assert!(!text.contains("very-secret"), "a credential header left: {text}");
    assert!(
        !text.contains("acme-tenant-42"),
        "a header marked sensitive left: {text}"
    );
    assert!(text.contains("visible"));
    assert!(!text.contains("secret_hash"));
    assert!(full.iter().any(|e| e["type"] == "WorkspaceCreated"));
    assert!(full.iter().any(|e| e["type"] == "JobCreated"));
    // `workspace create` made the test's key: published without its hash.
    assert!(full
        .iter()
        .any(|e| e["type"] == "ApiKeyCreated" && e["data"]["prefix"].is_string()));
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let q = match &after {
            Some(a) => format!("/events?limit=3&after={a}"),
            None => "/events?limit=3".to_string(),
        };
        let (s, page) = env.get(&q).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let next = page["next_cursor"].as_str().map(String::from);
        if items.is_empty() {
            // An empty page keeps the cursor, so polling with it is safe.
            assert_eq!(next, after);
            break;
        }
        paged.extend(items);
        after = next;
    }
    let ids = |v: &[Value]| {
        v.iter()
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&paged)[..full.len()], ids(&full)[..]);

    let (s, only) = env.get("/events?types=JobCreated,ApiKeyCreated").await;
    assert_eq!(s, 200);
    assert!(only["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|e| e["type"] == "JobCreated" || e["type"] == "ApiKeyCreated"));
    for (q, field) in [
        ("?types=UserRegistered", "types"),
        ("?limit=0", "limit"),
        ("?after=x", "after"),
    ] {
        let (s, v) = env.get(&format!("/events{q}")).await;
        assert_eq!((s, v["error"]["field"].as_str()), (400, Some(field)), "{q}: {v}");
    }
}
