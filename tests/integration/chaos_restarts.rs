//! Processes and servers going away during traffic: the dispatcher killed (-9) again and
//! again, nats-server restarted (its file store kept), and a graceful SIGTERM with a call in
//! flight. Every time: no run lost, none recorded or called twice, no operator action.

use crate::common;

use std::time::Duration;

use common::pg::Postgres;
use common::{free_port, nats_server, TestEnv};
use serde_json::json;

/// Creates `n` delayed calls due over the next `spread`; returns (run id, target path) pairs.
async fn traffic(env: &TestEnv, tag: &str, n: usize, spread: Duration) -> Vec<(String, String)> {
    let start = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let step = spread.as_millis() as i64 / n as i64;
    let mut out = Vec::new();
    for i in 0..n {
        let path = format!("/{tag}/{i}");
        let at = start + chrono::Duration::milliseconds(step * i as i64);
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": env.target_url(&path), "execute_at": at.to_rfc3339()}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        out.push((v["run_id"].as_str().unwrap().to_string(), path));
    }
    out
}

/// Every run succeeded, each target got exactly one call, each run was scheduled once.
async fn assert_each_exactly_once(env: &TestEnv, runs: &[(String, String)], within: Duration) {
    assert_each_exactly_once_in(env, &env.db.pool, runs, within).await
}

async fn assert_each_exactly_once_in(env: &TestEnv, pool: &sqlx::PgPool, runs: &[(String, String)], within: Duration) {
    for (run, _) in runs {
        let r = env.wait_execution(run, within).await;
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    for (run, path) in runs {
        let hits = env.target.arrivals_at(path);
        assert_eq!(hits.len(), 1, "{path} was called {} times", hits.len());
        assert_eq!(hits[0].run_id.as_deref(), Some(run.as_str()));
    }
    let scheduled: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events WHERE aggregate_type = 'Run' AND event_type = 'RunScheduled' GROUP BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        scheduled.iter().all(|(_, n)| *n == 1),
        "a run was scheduled twice: {scheduled:?}"
    );
}

#[tokio::test]
async fn the_dispatcher_killed_again_and_again_loses_and_doubles_nothing() {
    let mut env = TestEnv::start().await;
    env.stop_server().await;
    let _api = env.spawn_role("api", &[]);
    let _executor = env.spawn_role("executor", &[]);
    let mut dispatcher = env.spawn_role("dispatcher", &[]);
    env.wait_ready().await;

    let runs = traffic(&env, "d", 60, Duration::from_secs(6)).await;
    // Kill it three times while calls fall due, each time restarting at once.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        dispatcher.start_kill().expect("kill -9 the dispatcher");
        let _ = dispatcher.wait().await;
        dispatcher = env.spawn_role("dispatcher", &[]);
    }
    assert_each_exactly_once(&env, &runs, Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_nats_restart_during_traffic_needs_no_operator() {
    let dir = std::env::temp_dir().join(format!("cronbox-nats-{}", uuid::Uuid::new_v4().simple()));
    let port = free_port();
    let mut server = nats_server(port, &dir).await;
    let url = format!("nats://127.0.0.1:{port}");
    let env = TestEnv::start_with(vec![("CRONBOX_NATS_URL", url.as_str())]).await;

    let runs = traffic(&env, "n", 60, Duration::from_secs(6)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Down for two seconds, then back with its store.
    let pid = server.id().expect("pid").to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _server = nats_server(port, &dir).await;

    assert_each_exactly_once(&env, &runs, Duration::from_secs(60)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_finishes_the_call_in_flight_and_exits_cleanly() {
    let mut env = TestEnv::start().await;
    let (s, v) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/slow/2000/inflight"), "delay_seconds": 0}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    env.eventually(Duration::from_secs(20), "the call in flight", || async {
        (!env.target.arrivals_at("/slow/2000/inflight").is_empty()).then_some(())
    })
    .await;
    let status = env.terminate_server().await;
    assert_eq!(status, Some(0), "exit status after SIGTERM");
    // Recorded by the process that made the call: no redelivery, no second call.
    let (s, types): (i64, Vec<String>) = {
        let types: Vec<String> = sqlx::query_scalar(
            "SELECT event_type FROM events WHERE aggregate_type = 'Run' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(&run_id)
        .fetch_all(&env.db.pool)
        .await
        .unwrap();
        (types.iter().filter(|t| *t == "RunSucceeded").count() as i64, types)
    };
    assert_eq!(s, 1, "the in-flight call was recorded before exit: {types:?}");
    env.start_server().await;
    let r = env.wait_execution(&run_id, Duration::from_secs(10)).await;
    assert_eq!(r["status"], "succeeded");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.target.arrivals_at("/slow/2000/inflight").len(), 1);
}

#[tokio::test]
async fn a_postgres_restart_during_traffic_needs_no_operator() {
    let Some(pg) = Postgres::init() else {
        panic!("no initdb found (set CRONBOX_PG_BINDIR); scripts/provision.sh installs PostgreSQL");
    };
    pg.start();
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.expect("connect");
    sqlx::query("CREATE DATABASE cronbox").execute(&admin).await.unwrap();
    admin.close().await;
    let url = pg.url("cronbox");
    let env = TestEnv::start_with(vec![("CRONBOX_DATABASE_URL", url.as_str())]).await;

    let runs = traffic(&env, "p", 40, Duration::from_secs(6)).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    pg.stop_immediately();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start();

    let pool = sqlx::PgPool::connect(&url).await.expect("connect after restart");
    assert_each_exactly_once_in(&env, &pool, &runs, Duration::from_secs(90)).await;
}
