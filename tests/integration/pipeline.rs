//! End to end: the real binary, real PostgreSQL and NATS, a loopback target.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestEnv;
use serde_json::json;

fn ts(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time string"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn delayed_call_fires_on_time_with_its_request() {
    let env = TestEnv::start().await;
    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    let (status, job) = env
        .post(
            "/delayed",
            json!({
                "url": env.target_url("/hook"),
                "method": "POST",
                "headers": {"X-Custom": "yes", "Content-Type": "application/json"},
                "body": "{\"order\":42}",
                "execute_at": at.to_rfc3339(),
            }),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "pending");
    let run_id = job["run_id"].as_str().expect("run_id").to_string();

    let arrival = env
        .eventually(Duration::from_secs(10), "the delayed call to arrive", || async {
            env.target.arrivals_at("/hook").into_iter().next()
        })
        .await;
    let lateness = arrival.at - at;
    assert!(lateness >= chrono::Duration::zero(), "fired early: {lateness}");
    assert!(lateness < chrono::Duration::seconds(1), "fired {lateness} late");
    assert_eq!(arrival.method, "POST");
    assert_eq!(arrival.body, b"{\"order\":42}");
    assert_eq!(
        arrival.headers.get("x-custom").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    assert_eq!(arrival.run_id.as_deref(), Some(run_id.as_str()));

    let exec = env.wait_execution(&run_id, Duration::from_secs(10)).await;
    assert_eq!(exec["status"], "succeeded");
    assert_eq!(exec["status_code"], 200);
    assert_eq!(exec["trigger"], "delayed");
    assert_eq!(exec["response"]["body"], "ok");
    assert_eq!(exec["attempt_log"].as_array().map(Vec::len), Some(1));

    let (_, events) = env.get(&format!("/executions/{run_id}/events")).await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "RunScheduled",
            "RunDispatched",
            "AttemptStarted",
            "AttemptFinished",
            "RunSucceeded"
        ]
    );

    let job_id = job["id"].as_str().unwrap();
    let job = env
        .eventually(Duration::from_secs(5), "job status", || async {
            let (_, j) = env.get(&format!("/delayed/{job_id}")).await;
            (j["status"] == "succeeded").then_some(j)
        })
        .await;
    assert_eq!(job["last_status"], "succeeded");
    let (_, jev) = env.get(&format!("/delayed/{job_id}/events")).await;
    assert_eq!(jev["items"][0]["type"], "JobCreated");
    // Executed: it cannot be cancelled any more.
    let (status, body) = env.delete(&format!("/delayed/{job_id}")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_executed");
}

#[tokio::test]
async fn every_second_cron_fires_pauses_resumes_and_runs_now() {
    let env = TestEnv::start().await;
    let (status, job) = env
        .post(
            "/cron",
            json!({"name": "tick", "url": env.target_url("/tick"), "schedule": "* * * * * *", "timezone": "UTC"}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();

    env.eventually(Duration::from_secs(10), "3 ticks", || async {
        (env.target.arrivals_at("/tick").len() >= 3).then_some(())
    })
    .await;
    // Each tick belongs to its own second, consecutive, and arrives within that second. (Gaps
    // between arrivals are not compared: under a loaded CI machine one late tick makes the next
    // gap short without anything being wrong.)
    let ticks = env.target.arrivals_at("/tick");
    let mut seconds = Vec::new();
    for t in &ticks {
        let run_id = t.run_id.clone().expect("run id header");
        let run = env
            .eventually(Duration::from_secs(5), "the run in the execution log", || async {
                let (s, run) = env.get(&format!("/executions/{run_id}")).await;
                (s == 200).then_some(run)
            })
            .await;
        let due = ts(&run["scheduled_for"]);
        let late = (t.at - due).num_milliseconds();
        assert!((0..1000).contains(&late), "tick for {due} arrived {late} ms late");
        seconds.push(due.timestamp());
    }
    for pair in seconds.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "ticks are not one second apart: {seconds:?}");
    }

    let (status, paused) = env.post(&format!("/cron/{id}/pause"), json!({})).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    assert!(paused["next_run_at"].is_null());
    tokio::time::sleep(Duration::from_millis(400)).await; // a fire recorded before the pause may still land
    let count = env.target.arrivals_at("/tick").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(env.target.arrivals_at("/tick").len(), count, "a paused job fired");

    // Run now works on a paused job, once.
    let (status, run) = env.post(&format!("/cron/{id}/run"), json!({})).await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let exec = env.wait_execution(&run_id, Duration::from_secs(10)).await;
    assert_eq!(exec["trigger"], "manual");
    assert_eq!(exec["status"], "succeeded");
    assert_eq!(
        env.target
            .arrivals_at("/tick")
            .iter()
            .filter(|a| a.run_id.as_deref() == Some(&run_id))
            .count(),
        1
    );

    let (status, resumed) = env.post(&format!("/cron/{id}/resume"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(resumed["status"], "active");
    let before = env.target.arrivals_at("/tick").len();
    env.eventually(Duration::from_secs(10), "ticks after resume", || async {
        (env.target.arrivals_at("/tick").len() >= before + 2).then_some(())
    })
    .await;

    // The execution log lists them, newest first, filterable by job and paginated.
    let (status, page) = env.get(&format!("/executions?job_id={id}&limit=2")).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let first = ts(&page["items"][0]["scheduled_for"]);
    let second = ts(&page["items"][1]["scheduled_for"]);
    assert!(first >= second);
    let cursor = page["next_cursor"].as_str().expect("more pages").to_string();
    let (_, page2) = env
        .get(&format!("/executions?job_id={id}&limit=2&cursor={cursor}"))
        .await;
    assert!(ts(&page2["items"][0]["scheduled_for"]) <= second);
    assert_ne!(page2["items"][0]["id"], page["items"][1]["id"]);

    let (_, events) = env.get(&format!("/cron/{id}/events")).await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["JobCreated", "JobPaused", "RunRequested", "JobResumed"]);

    let (status, _) = env.delete(&format!("/cron/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = env.get(&format!("/cron/{id}")).await;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after_delete = env.target.arrivals_at("/tick").len();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        env.target.arrivals_at("/tick").len(),
        after_delete,
        "a deleted job fired"
    );
}

#[tokio::test]
async fn failed_calls_are_retried_then_fail_with_the_reason() {
    let env = TestEnv::start().await;
    let (status, job) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/fail"), "delay_seconds": 0, "retry_count": 2, "retry_delay_seconds": 1}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let run_id = job["run_id"].as_str().unwrap().to_string();
    let exec = env.wait_execution(&run_id, Duration::from_secs(20)).await;
    assert_eq!(exec["status"], "failed");
    assert_eq!(exec["attempts"], 3);
    assert_eq!(exec["error_type"], "http_status");
    assert_eq!(exec["status_code"], 500);
    let arrivals = env.target.arrivals_at("/fail");
    assert_eq!(arrivals.len(), 3);
    assert!(
        arrivals.iter().all(|a| a.run_id.as_deref() == Some(run_id.as_str())),
        "retries keep the run id"
    );
    for pair in arrivals.windows(2) {
        assert!(
            (pair[1].at - pair[0].at).num_milliseconds() >= 900,
            "retry came before its delay"
        );
    }
    let attempts: Vec<&str> = arrivals
        .iter()
        .map(|a| a.headers.get("x-cronbox-attempt").unwrap().to_str().unwrap())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);

    // A flaky target succeeds on the retry.
    let (_, job) = env
        .post("/delayed", json!({"url": env.target_url("/flaky/1/x"), "delay_seconds": 0, "retry_count": 3, "retry_delay_seconds": 1}))
        .await;
    let exec = env
        .wait_execution(job["run_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(exec["status"], "succeeded");
    assert_eq!(exec["attempts"], 2);

    // Transport errors are classified.
    let closed = format!("http://127.0.0.1:{}/nothing", common::free_port());
    let (_, job) = env.post("/delayed", json!({"url": closed, "delay_seconds": 0})).await;
    let exec = env
        .wait_execution(job["run_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(exec["status"], "failed");
    assert_eq!(exec["error_type"], "connect");
    let (_, job) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/slow/3000"), "delay_seconds": 0, "timeout_seconds": 1}),
        )
        .await;
    let exec = env
        .wait_execution(job["run_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(exec["error_type"], "timeout");
}

#[tokio::test]
async fn pending_delayed_call_can_be_cancelled_and_never_fires() {
    let env = TestEnv::start().await;
    let (_, job) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/cancelled"), "delay_seconds": 2}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let (status, body) = env.delete(&format!("/delayed/{id}")).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = env.get(&format!("/delayed/{id}")).await;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        env.target.arrivals_at("/cancelled").is_empty(),
        "a cancelled call fired"
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_existing_call() {
    let env = TestEnv::start().await;
    let body = json!({"url": env.target_url("/idem"), "delay_seconds": 60, "idempotency_key": "order-42"});
    let (s1, a) = env.post("/delayed", body.clone()).await;
    let (s2, b) = env.post("/delayed", body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a["id"], b["id"]);
    // The header works the same way, and is per workspace.
    let resp = env
        .http
        .post(env.ws_url("/delayed"))
        .bearer_auth(&env.api_key)
        .header("Idempotency-Key", "order-42")
        .json(&json!({"url": env.target_url("/idem"), "delay_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let c: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(c["id"], a["id"]);
    // Concurrent creates with one new key agree on one job.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (http, url, key, target) = (
            env.http.clone(),
            env.ws_url("/delayed"),
            env.api_key.clone(),
            env.target_url("/idem"),
        );
        handles.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"url": target, "delay_seconds": 60, "idempotency_key": "race"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (status, v["id"].as_str().unwrap().to_string())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for h in handles {
        let (status, id) = h.await.unwrap();
        assert!(status == 200 || status == 201, "{status}");
        created += usize::from(status == 201);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);

    // A retry of the very same request after its execute_at has passed is still a repeat,
    // not a new call in the past.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let body = json!({"url": env.target_url("/idem"), "execute_at": at, "idempotency_key": "late-retry"});
    let (s, first) = env.post("/delayed", body.clone()).await;
    assert_eq!(s, 201, "{first}");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (s, again) = env.post("/delayed", body).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
}

#[tokio::test]
async fn cron_preview_agrees_with_the_schedule() {
    let env = TestEnv::start().await;
    let url = format!(
        "{}/v1/cron/preview?schedule=0%203%20*%20*%20*&timezone=Europe/Moscow&count=3&after=2026-01-01T00:00:00Z",
        env.base()
    );
    let v: serde_json::Value = env.http.get(url).send().await.unwrap().json().await.unwrap();
    // 2026-01-01T00:00Z is 03:00 in Moscow: "strictly after" excludes it.
    assert_eq!(
        v["next"],
        json!([
            "2026-01-02T03:00:00+03:00",
            "2026-01-03T03:00:00+03:00",
            "2026-01-04T03:00:00+03:00"
        ])
    );
    assert!(v["description"].as_str().unwrap().len() > 5);
    // With a key, the timezone defaults to the workspace's; a bad key is still refused.
    let out = env
        .cli(&[
            "workspace",
            "create",
            "--name",
            "NY",
            "--timezone",
            "America/New_York",
            "--json",
        ])
        .await;
    let ny: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let url = format!(
        "{}/v1/cron/preview?schedule=0%203%20*%20*%20*&count=1&after=2026-01-01T00:00:00Z",
        env.base()
    );
    let v: serde_json::Value = env
        .http
        .get(&url)
        .bearer_auth(ny["api_key"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["next"], json!(["2026-01-01T03:00:00-05:00"]));
    assert_eq!(
        env.http
            .get(&url)
            .bearer_auth("cbx_wrong")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let bad = env
        .http
        .get(format!("{}/v1/cron/preview?schedule=0%200%2030%202%20*", env.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let v: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(v["error"]["field"], "schedule");
}

/// Cancels racing the dispatcher at the due instant: a 204 means the call never reaches the
/// target, a 409 means it ran. Never both, never neither.
#[tokio::test]
async fn cancel_at_the_due_instant_is_either_refused_or_final() {
    let env = TestEnv::start().await;
    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    // One request for all 60 (sixty one by one can outlast the lead on a loaded machine).
    let items: Vec<serde_json::Value> = (0..60)
        .map(|i| json!({"url": env.target_url(&format!("/race/{i}")), "execute_at": at.to_rfc3339()}))
        .collect();
    let (status, created) = env.post("/delayed/batch", json!({"items": items})).await;
    assert_eq!(status, 201, "{created}");
    let ids: Vec<String> = created["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| it["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 60);
    // Spread the cancels over ±40 ms around the due instant.
    let start = at - chrono::Duration::milliseconds(40);
    tokio::time::sleep((start - Utc::now()).to_std().unwrap_or_default()).await;
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (http, url, key) = (
            env.http.clone(),
            env.ws_url(&format!("/delayed/{id}")),
            env.api_key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(1300 * i as u64)).await;
            http.delete(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (mut cancelled, mut refused) = (0, 0);
    for (i, status) in outcomes.iter().enumerate() {
        let arrived = !env.target.arrivals_at(&format!("/race/{i}")).is_empty();
        match status {
            204 => {
                cancelled += 1;
                assert!(!arrived, "call {i} was cancelled (204) but still fired");
            }
            409 => {
                refused += 1;
                assert!(arrived, "call {i} was refused as executed (409) but never fired");
            }
            other => panic!("cancel of call {i} answered {other}"),
        }
    }
    eprintln!("cancelled {cancelled}, refused {refused}");
    assert_eq!(cancelled + refused, 60);
}
