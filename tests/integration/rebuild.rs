//! `cronbox projections rebuild` replays the whole log into fresh tables and swaps them in while
//! the service runs; the rebuilt read models must equal the live ones row for row.

use crate::common;

use std::time::Duration;

use common::TestEnv;
use serde_json::json;

const TABLES: &[&str] = &[
    "jobs",
    "runs",
    "run_attempts",
    "schedule_jobs",
    "schedule_runs",
    "workspaces",
    "workspace_members",
    "usage_timezones",
    "usage_runs",
    "usage_counters",
];

async fn dump(env: &TestEnv) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for t in TABLES {
        let rows: serde_json::Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb) FROM {t} t"
        ))
        .fetch_one(&env.db.pool)
        .await
        .expect("dump table");
        out.push((t.to_string(), rows));
    }
    out
}

async fn index_names(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
        .fetch_all(&env.db.pool)
        .await
        .expect("indexes")
}

#[tokio::test]
async fn rebuilt_read_models_equal_the_live_ones() {
    let env = TestEnv::start().await;
    // A little of everything: cron fires, a retried failure, an update, a manual run, a pause,
    // a deleted cron job, delayed calls that succeed, fail and are cancelled, an idempotent
    // create, and a re-run of a failed run.
    let (status, cron) = env
        .post(
            "/cron",
            json!({"name": "tick", "url": env.target_url("/flaky/1/tick"), "schedule": "* * * * * *", "timezone": "UTC",
                   "retry_count": 1, "retry_delay_seconds": 1, "tags": ["a", "b"]}),
        )
        .await;
    assert_eq!(status, 201, "{cron}");
    let cron_id = cron["id"].as_str().expect("id").to_string();
    let (status, _) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/ok"), "delay_seconds": 0, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, failing) = env
        .post("/delayed", json!({"url": env.target_url("/fail"), "delay_seconds": 0}))
        .await;
    assert_eq!(status, 201);
    // A cron job that fires a few times and is then deleted.
    let (status, doomed) = env
        .post(
            "/cron",
            json!({"name": "doomed", "url": env.target_url("/ok/doomed"), "schedule": "* * * * * *"}),
        )
        .await;
    assert_eq!(status, 201, "{doomed}");
    let (_, later) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/never"), "delay_seconds": 300}),
        )
        .await;
    let (status, _) = env
        .delete(&format!("/delayed/{}", later["id"].as_str().expect("id")))
        .await;
    assert_eq!(status, 204);
    // Both cron jobs have fired a few times, and the flaky one has been retried.
    env.eventually(Duration::from_secs(20), "cron fires and a retry", || async {
        let tick = env.target.arrivals_at("/flaky/1/tick").len();
        let doomed = env.target.arrivals_at("/ok/doomed").len();
        (tick >= 3 && doomed >= 2).then_some(())
    })
    .await;
    let (status, _) = env
        .request(
            reqwest::Method::PATCH,
            &env.ws_url(&format!("/cron/{cron_id}")),
            Some(json!({"description": "changed"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, manual) = env.post(&format!("/cron/{cron_id}/run"), json!({})).await;
    assert!(status == 200 || status == 202, "run now: {status}");
    let manual_run = manual["run_id"].as_str().expect("run id").to_string();
    env.wait_execution(&manual_run, Duration::from_secs(20)).await;
    let (status, _) = env.post(&format!("/cron/{cron_id}/pause"), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = env
        .delete(&format!("/cron/{}", doomed["id"].as_str().expect("id")))
        .await;
    assert_eq!(status, 204);
    // An operator re-runs the failed call: a new run linked to the old one.
    let (_, runs) = env
        .get(&format!("/executions?job_id={}", failing["id"].as_str().expect("id")))
        .await;
    let failed_run = runs["items"][0]["id"]
        .as_str()
        .expect("the failed call's run")
        .to_string();
    env.wait_execution(&failed_run, Duration::from_secs(20)).await;
    let out = env.cli(&["runs", "rerun", &failed_run]).await;
    let rerun: serde_json::Value = serde_json::from_str(out.trim()).expect("rerun prints JSON");
    assert_eq!(rerun["rerun_of"], failed_run.as_str());

    // Quiesce: nothing left to run, and the live projections have caught up with the log.
    env.eventually(Duration::from_secs(30), "runs to settle", || async {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE status NOT IN ('succeeded', 'failed', 'skipped')")
                .fetch_one(&env.db.pool)
                .await
                .ok()?;
        let behind: i64 = sqlx::query_scalar(
            // The newest event written at all, not the newest below the visibility horizon: that
            // horizon is cluster-wide, so another test's open transaction can hold it back and
            // make lagging projections look caught up.
            "WITH head AS (SELECT xid::text::int8 AS xid, global_seq FROM events
                            ORDER BY xid DESC, global_seq DESC LIMIT 1)
             SELECT 5 - count(*) FROM projection_checkpoints c, head h
              WHERE c.name IN ('jobs', 'runs', 'schedule', 'workspaces', 'usage')
                AND c.last_xid = h.xid AND c.last_seq = h.global_seq",
        )
        .fetch_one(&env.db.pool)
        .await
        .ok()?;
        (open == 0 && behind == 0).then_some(())
    })
    .await;
    let live = dump(&env).await;
    let indexes = index_names(&env).await;
    let runs = live
        .iter()
        .find(|(t, _)| t == "runs")
        .and_then(|(_, v)| v.as_array().map(Vec::len))
        .unwrap_or(0);
    assert!(runs >= 5, "too little traffic to compare: {runs} runs");

    let out = env.cli(&["projections", "rebuild"]).await;
    assert!(!out.is_empty());
    let rebuilt = dump(&env).await;
    for ((table, a), (_, b)) in live.iter().zip(rebuilt.iter()) {
        if a != b {
            // Show only the rows that differ, field by field.
            let (ra, rb) = (
                a.as_array().cloned().unwrap_or_default(),
                b.as_array().cloned().unwrap_or_default(),
            );
            let mut diffs = Vec::new();
            for (x, y) in ra.iter().zip(rb.iter()) {
                if x != y {
                    let keys: Vec<String> = x
                        .as_object()
                        .map(|o| {
                            o.keys()
                                .filter(|k| x[k.as_str()] != y[k.as_str()])
                                .map(|k| format!("{k}: {} vs {}", x[k.as_str()], y[k.as_str()]))
                                .collect()
                        })
                        .unwrap_or_default();
                    diffs.push(keys.join(", "));
                }
            }
            panic!(
                "table {table} differs after the rebuild ({} vs {} rows): {diffs:?}",
                ra.len(),
                rb.len()
            );
        }
    }
    assert_eq!(index_names(&env).await, indexes, "the rebuild renamed indexes");

    // The service keeps working on the swapped-in tables.
    let (status, _) = env.post(&format!("/cron/{cron_id}/resume"), json!({})).await;
    assert_eq!(status, 200);
    let before = env.target.arrivals_at("/flaky/1/tick").len();
    env.eventually(Duration::from_secs(10), "a fire after the rebuild", || async {
        (env.target.arrivals_at("/flaky/1/tick").len() > before).then_some(())
    })
    .await;
    let (status, job) = env.get(&format!("/cron/{cron_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["description"], "changed");
}
