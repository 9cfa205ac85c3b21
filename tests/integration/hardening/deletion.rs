//! Deleting a workspace stops everything of it — cron jobs, pending delayed calls, waiting
//! retries, callbacks — each with an event saying why; a run already in flight finishes and is
//! never retried. Pausing a job stops its waiting retries the same way.

use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::users::{call, owned_workspace};
use crate::common::TestEnv;

const WAIT: Duration = Duration::from_secs(20);

/// (event type, data) of an aggregate's events, from the log itself (the workspace is gone for
/// the API).
async fn events_of(env: &TestEnv, aggregate_type: &str, id: &str) -> Vec<(String, Value)> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, p)| {
            let data = p.get(&t).cloned().unwrap_or(p);
            (t, data)
        })
        .collect()
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test]
async fn deleting_a_workspace_stops_its_jobs_calls_retries_and_callbacks() {
    let env = TestEnv::start().await;
    let (owner, ws_id) = owned_workspace(&env, "owner@example.com", "Doomed", Some("business")).await;
    let post = |path: &str, body: Value| {
        let url = format!("/v1/workspaces/{ws_id}{path}");
        let owner = owner.clone();
        let env = &env;
        async move { call(env, Method::POST, &url, &owner, Some(body)).await }
    };
    let soon = |ms: i64| (Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339();

    // Every second, like the job that kept firing after the deletion.
    let (s, cron) = post(
        "/cron",
        json!({"name": "tick", "schedule": "* * * * * *", "url": env.target_url("/tick")}),
    )
    .await;
    assert_eq!(s, 201, "{cron}");
    // A delayed call due after the deletion.
    let (s, later) = post(
        "/delayed",
        json!({"url": env.target_url("/later"), "execute_at": soon(4000)}),
    )
    .await;
    assert_eq!(s, 201, "{later}");
    // A call failing now, with its retry waiting (a minute away).
    let (s, retrying) = post(
        "/delayed",
        json!({"url": env.target_url("/fail/retry"), "execute_at": soon(200), "retry_count": 3, "retry_delay_seconds": 60}),
    )
    .await;
    assert_eq!(s, 201, "{retrying}");
    // A call whose callback receiver fails, so the callback's next try waits.
    let (s, with_cb) = post(
        "/delayed",
        json!({"url": env.target_url("/ok"), "execute_at": soon(200), "callback_url": env.target_url("/fail/cb")}),
    )
    .await;
    assert_eq!(s, 201, "{with_cb}");
    // A slow call that will be in flight at the deletion, failing, with retries asked for.
    let (s, in_flight) = post(
        "/delayed",
        json!({"url": env.target_url("/slow/2500/inflight"), "execute_at": soon(200), "timeout_seconds": 1,
               "retry_count": 3, "retry_delay_seconds": 1}),
    )
    .await;
    assert_eq!(s, 201, "{in_flight}");

    let retry_run = retrying["run_id"].as_str().unwrap().to_string();
    let cb_run = with_cb["run_id"].as_str().unwrap().to_string();
    let slow_run = in_flight["run_id"].as_str().unwrap().to_string();
    env.eventually(
        WAIT,
        "the retry and the callback retry waiting, the slow call in flight",
        || async {
            let retry = events_of(&env, "Run", &retry_run).await;
            let cb = events_of(&env, "Run", &cb_run).await;
            let slow = events_of(&env, "Run", &slow_run).await;
            (types(&retry).contains(&"RetryScheduled")
                && types(&cb).iter().filter(|t| **t == "CallbackScheduled").count() == 2
                && types(&slow).contains(&"AttemptStarted")
                && !env.target.arrivals_at("/tick").is_empty())
            .then_some(())
        },
    )
    .await;

    let (s, v) = call(&env, Method::DELETE, &format!("/v1/workspaces/{ws_id}"), &owner, None).await;
    assert_eq!(s, 204, "{v}");
    let deleted_at = Utc::now();
    // Nobody can reach it any more, and nothing of it fires.
    let (s, _) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws_id}/cron/{}/pause", cron["id"].as_str().unwrap()),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late_ticks: Vec<_> = env
        .target
        .arrivals_at("/tick")
        .into_iter()
        .filter(|a| a.at > deleted_at)
        .collect();
    assert!(
        late_ticks.is_empty(),
        "the cron job fired {} times after the deletion",
        late_ticks.len()
    );
    assert!(
        env.target.arrivals_at("/later").is_empty(),
        "the pending delayed call fired"
    );
    assert_eq!(
        env.target.arrivals_at("/fail/retry").len(),
        1,
        "the waiting retry fired"
    );
    assert_eq!(
        env.target.arrivals_at("/fail/cb").len(),
        1,
        "the callback was tried again"
    );
    assert_eq!(
        env.target.arrivals_at("/slow/2500/inflight").len(),
        1,
        "the call in flight was retried"
    );

    // The audit trail says what stopped and why.
    let reason = json!("workspace_deleted");
    for job in [&cron, &later] {
        let evs = events_of(&env, "Job", job["id"].as_str().unwrap()).await;
        let (t, data) = evs.last().unwrap();
        assert_eq!((t.as_str(), &data["reason"]), ("JobDeleted", &reason), "{evs:?}");
    }
    let evs = events_of(&env, "Run", &retry_run).await;
    assert_eq!(types(&evs).last(), Some(&"RunCancelled"), "{evs:?}");
    assert_eq!(evs.last().unwrap().1["reason"], reason);
    let evs = events_of(&env, "Run", &cb_run).await;
    assert_eq!(types(&evs).last(), Some(&"CallbackCancelled"), "{evs:?}");
    // The run in flight finished; its retry was recorded, then cancelled, never dispatched.
    let evs = env
        .eventually(WAIT, "the slow run to settle", || async {
            let evs = events_of(&env, "Run", &slow_run).await;
            (types(&evs).last() == Some(&"RunCancelled")).then_some(evs)
        })
        .await;
    assert_eq!(
        types(&evs),
        [
            "RunScheduled",
            "RunDispatched",
            "AttemptStarted",
            "AttemptFinished",
            "RetryScheduled",
            "RunCancelled"
        ]
    );
    // The read models agree.
    let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1::uuid")
        .bind(&retry_run)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM schedule_jobs WHERE workspace_id = $1::uuid")
        .bind(&ws_id)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "nothing of the workspace is left to fire");
}

#[tokio::test]
async fn pausing_a_job_cancels_its_waiting_retry() {
    let env = TestEnv::start().await;
    let (s, job) = env
        .post(
            "/cron",
            json!({"name": "flaky", "schedule": "* * * * * *", "url": env.target_url("/fail/p"),
                   "retry_count": 2, "retry_delay_seconds": 30}),
        )
        .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let run = env
        .eventually(WAIT, "a retry waiting", || async {
            let (_, v) = env
                .get(&format!("/executions?job_id={id}&status=retry_scheduled"))
                .await;
            v["items"]
                .as_array()?
                .first()
                .map(|r| r["id"].as_str().unwrap().to_string())
        })
        .await;
    let (s, _) = env.post(&format!("/cron/{id}/pause"), json!({})).await;
    assert_eq!(s, 200);
    let exec = env
        .eventually(WAIT, "the retry cancelled", || async {
            let (_, v) = env.get(&format!("/executions/{run}")).await;
            (v["status"] == "cancelled").then_some(v)
        })
        .await;
    assert_eq!(exec["error_type"], "job_paused", "{exec}");
}
