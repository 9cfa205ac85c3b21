//! One NUL character, one binary response or one event a read model cannot hold must never
//! freeze the execution log for every tenant: NUL is refused at the edge, bodies are stored as
//! base64 when they are not text, and a projection quarantines what it cannot apply and goes on.

use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::users::{call, superuser, user};
use crate::common::TestEnv;

const WAIT: Duration = Duration::from_secs(20);

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or_default()
}

/// Every projection has applied everything committed, and none quarantined anything.
async fn caught_up(env: &TestEnv, root: &str) -> Value {
    env.eventually(WAIT, "every projection to catch up", || async {
        let (s, v) = call(env, Method::GET, "/v1/admin/projections", root, None).await;
        assert_eq!(s, 200, "{v}");
        let items = v["items"].as_array()?.clone();
        items.iter().all(|p| p["lag_events"] == 0).then_some(v)
    })
    .await
}

#[tokio::test]
async fn nul_is_refused_at_every_input_naming_the_field() {
    let env = TestEnv::start().await;
    let token = user(&env, "nul@example.com").await;
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &token,
        Some(json!({"name": "x\u{0}y"})),
    )
    .await;
    assert_eq!((s, field(&v)), (400, "name"), "{v}");

    let url = env.target_url("/hook");
    let soon = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/cron",
            json!({"name": "n\u{0}", "schedule": "* * * * *", "url": url}),
            "name",
        ),
        (
            "/cron",
            json!({"name": "n", "description": "\u{0}", "schedule": "* * * * *", "url": url}),
            "description",
        ),
        (
            "/cron",
            json!({"name": "n", "schedule": "* * * * *", "url": url, "body": "\u{0}"}),
            "body",
        ),
        (
            "/cron",
            json!({"name": "n", "schedule": "* * * * *", "url": url, "tags": ["ok", "b\u{0}d"]}),
            "tags[1]",
        ),
        (
            "/cron",
            json!({"name": "n", "schedule": "* * * * *", "url": url, "headers": {"X-T": "a\u{0}"}}),
            "headers.X-T",
        ),
        (
            "/cron",
            json!({"name": "n", "schedule": "* * * * *", "url": format!("{url}\u{0}")}),
            "url",
        ),
        (
            "/delayed",
            json!({"url": url, "execute_at": soon, "body": "a\u{0}b"}),
            "body",
        ),
        (
            "/delayed/batch",
            json!({"items": [{"url": url, "execute_at": soon}, {"url": url, "execute_at": soon, "name": "\u{0}"}]}),
            "items[1].name",
        ),
    ];
    for (path, body, want) in cases {
        let (s, v) = env.post(path, body.clone()).await;
        assert_eq!((s, field(&v)), (400, want), "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_character");
    }
    // Query strings and paths: a 400 naming the parameter, never a 500.
    let (s, v) = env.get("/executions?cursor=a%00b").await;
    assert_eq!((s, field(&v)), (400, "cursor"), "{v}");
    let (s, v) = env.get("/cron?tag=%FF").await;
    assert_eq!((s, field(&v)), (400, "tag"), "{v}");
    let (s, v) = env
        .request(Method::GET, &format!("{}/v1/workspaces/%00/cron", env.base()), None)
        .await;
    assert_eq!((s, field(&v)), (400, "path"), "{v}");
    // Nothing of it was stored.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Job'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn binary_responses_are_kept_as_base64_and_the_log_keeps_up() {
    let env = TestEnv::start().await;
    let root = superuser(&env, "root@example.com").await;
    let at = (Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let mut runs = Vec::new();
    for path in ["/binary/nul", "/binary/png", "/binary/gzip", "/text"] {
        let (s, v) = env
            .post("/delayed", json!({"url": env.target_url(path), "execute_at": at}))
            .await;
        assert_eq!(s, 201, "{v}");
        runs.push((path, v["run_id"].as_str().unwrap().to_string()));
    }
    // A cron job too, so `jobs` and `schedule` must keep up with the run events after them.
    let (s, cron) = env
        .post(
            "/cron",
            json!({"name": "every second", "schedule": "* * * * * *", "url": env.target_url("/binary/nul/cron")}),
        )
        .await;
    assert_eq!(s, 201, "{cron}");
    for (path, run_id) in &runs {
        let exec = env.wait_execution(run_id, WAIT).await;
        assert_eq!(exec["status"], "succeeded", "{path}: {exec}");
        let arrived = env.target.arrivals_at(path);
        assert_eq!(arrived.len(), 1, "{path}");
        let body = exec["response"]["body"].as_str().unwrap();
        if *path == "/text" {
            assert_eq!((body, exec["response"]["encoding"].as_str()), ("ok", Some("text")));
            continue;
        }
        assert_eq!(exec["response"]["encoding"], "base64", "{path}: {exec}");
        let bytes = base64_decode(body);
        let expected = match *path {
            "/binary/nul" => b"a\0b".to_vec(),
            "/binary/png" => b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe".to_vec(),
            _ => b"\x1f\x8b\x08\0\0\0\0\0\0\x03\xcb\x07\0".to_vec(),
        };
        assert_eq!(bytes, expected, "{path}: stored losslessly");
        assert_eq!(exec["attempt_log"][0]["outcome"]["response_body_encoding"], "base64");
    }
    // Runs after them still appear, and no projection lags or quarantined anything.
    let job_id = cron["id"].as_str().unwrap();
    env.eventually(WAIT, "cron runs in the log", || async {
        let (_, v) = env.get(&format!("/executions?job_id={job_id}&status=succeeded")).await;
        (v["items"].as_array()?.len() >= 2).then_some(())
    })
    .await;
    let (s, _) = env.post(&format!("/cron/{job_id}/pause"), json!({})).await;
    assert_eq!(s, 200);
    let status = caught_up(&env, &root).await;
    for p in status["items"].as_array().unwrap() {
        assert_eq!(p["quarantined"], 0, "{p}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}

/// Writes an event the way an older CronBox did, before NUL was refused: a copy of `job_id`'s
/// `JobCreated` for a new job whose name holds `\u0000`. Returns the new job's id.
async fn legacy_poison_job(env: &TestEnv, job_id: &str) -> String {
    let (payload, ws): (String, Uuid) = sqlx::query_as(
        "SELECT payload::text, workspace_id FROM events WHERE aggregate_type = 'Job' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(job_id)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    let new_id = Uuid::new_v4().to_string();
    let poisoned = payload
        .replace(job_id, &new_id)
        .replace("\"legacy\"", "\"leg\\u0000acy\"");
    assert!(poisoned.contains("\\u0000"));
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, workspace_id)
         VALUES ('Job', $1, 1, 'JobCreated', '1', $2::json, '{}', $3)",
    )
    .bind(&new_id)
    .bind(poisoned)
    .bind(ws)
    .execute(&env.db.pool)
    .await
    .unwrap();
    new_id
}

#[tokio::test]
async fn a_poison_event_is_quarantined_the_rest_keeps_flowing_and_a_retry_applies_it_after_a_fix() {
    let env = TestEnv::start().await;
    let root = superuser(&env, "root@example.com").await;
    let url = env.target_url("/hook");
    let (s, legacy) = env
        .post("/cron", json!({"name": "legacy", "schedule": "0 0 1 1 *", "url": url}))
        .await;
    assert_eq!(s, 201, "{legacy}");
    caught_up(&env, &root).await;

    // 1. An event stored by an older version with a NUL in a name: `jobs` and `schedule` cannot
    //    apply it. Everything after it must still appear.
    let poison = legacy_poison_job(&env, legacy["id"].as_str().unwrap()).await;
    let at = (Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let (s, call_after) = env
        .post("/delayed", json!({"url": url, "execute_at": at, "name": "after"}))
        .await;
    assert_eq!(s, 201, "{call_after}");
    let exec = env.wait_execution(call_after["run_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(exec["status"], "succeeded");
    let status = caught_up(&env, &root).await;
    let quarantined = |name: &str| {
        status["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["quarantined"].as_i64().unwrap())
    };
    assert_eq!(quarantined("jobs"), Some(1), "{status}");
    assert_eq!(quarantined("schedule"), Some(1), "{status}");
    assert_eq!(quarantined("runs"), Some(0), "{status}");
    let (_, list) = env.get("/delayed").await;
    assert!(
        list["items"].as_array().unwrap().iter().any(|j| j["name"] == "after"),
        "{list}"
    );
    let (s, failures) = call(&env, Method::GET, "/v1/admin/projections/jobs/failures", &root, None).await;
    assert_eq!(s, 200, "{failures}");
    let f = &failures["items"][0];
    assert_eq!(
        (f["aggregate_id"].as_str(), f["state"].as_str()),
        (Some(poison.as_str()), Some("quarantined"))
    );
    assert!(
        f["error"].as_str().unwrap().contains("Unicode") || f["error"].as_str().unwrap().contains("0x00"),
        "{f}"
    );
    let cli = env.cli(&["projections", "status"]).await;
    assert!(
        cli.contains("quarantined") && cli.contains("projections failures"),
        "{cli}"
    );
    // A rebuild replays the same event: it finishes, and records the event again.
    env.cli(&["projections", "rebuild", "jobs"]).await;
    let (_, failures) = call(&env, Method::GET, "/v1/admin/projections/jobs/failures", &root, None).await;
    assert_eq!(failures["items"].as_array().unwrap().len(), 1, "{failures}");

    // 2. A failure with a cause an operator can fix (here a constraint standing in for a bug in a
    //    projection): the job's later events are held behind it, other jobs go on, and a retry
    //    after the fix applies them in order.
    sqlx::query("ALTER TABLE jobs ADD CONSTRAINT no_doomed CHECK (name <> 'doomed')")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let (s, doomed) = env
        .post("/cron", json!({"name": "doomed", "schedule": "0 0 1 1 *", "url": url}))
        .await;
    assert_eq!(s, 201, "{doomed}");
    let doomed_id = doomed["id"].as_str().unwrap();
    let (s, _) = env.post(&format!("/cron/{doomed_id}/pause"), json!({})).await;
    assert_eq!(s, 200);
    let (s, fine) = env
        .post("/cron", json!({"name": "fine", "schedule": "0 0 1 1 *", "url": url}))
        .await;
    assert_eq!(s, 201, "{fine}");
    env.eventually(WAIT, "the next job listed", || async {
        let (_, v) = env.get("/cron").await;
        v["items"].as_array()?.iter().any(|j| j["name"] == "fine").then_some(())
    })
    .await;
    caught_up(&env, &root).await;
    let (_, failures) = call(&env, Method::GET, "/v1/admin/projections/jobs/failures", &root, None).await;
    let states: Vec<(String, String)> = failures["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["aggregate_id"] == doomed_id)
        .map(|f| {
            (
                f["event_type"].as_str().unwrap().into(),
                f["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("JobCreated".to_string(), "quarantined".to_string()),
            ("JobPaused".into(), "parked".into())
        ]
    );
    sqlx::query("ALTER TABLE jobs DROP CONSTRAINT no_doomed")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let (s, report) = call(
        &env,
        Method::POST,
        "/v1/admin/projections/jobs/failures/retry",
        &root,
        None,
    )
    .await;
    assert_eq!(s, 200, "{report}");
    // The legacy NUL event still cannot be stored: it stays quarantined; the doomed job's two apply.
    assert_eq!(
        (report["resolved"].as_u64(), report["still_failing"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    let (_, list) = env.get("/cron").await;
    let row = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == doomed_id)
        .cloned();
    assert_eq!(row.map(|j| j["status"].clone()), Some(json!("paused")), "{list}");
}
