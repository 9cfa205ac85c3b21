//! Processes that stop without dying. A stopped nats-server must not stop the log's tails (no
//! transaction waits on it), and a stopped dispatcher leader must lose its lock within a bound,
//! so a standby fires — and nothing fires twice when the old leader wakes up.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use crate::common::pg::Postgres;
use crate::common::{free_port, nats_server, TestEnv};

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// Oldest open transaction of this test's database that holds a transaction id, in seconds.
async fn oldest_xid_holder(env: &TestEnv) -> f64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8 FROM pg_stat_activity
          WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stopped_nats_server_does_not_stop_the_read_models() {
    let dir = std::env::temp_dir().join(format!("cbx-nats-stall-{}", uuid::Uuid::new_v4().simple()));
    let port = free_port();
    let mut nats = nats_server(port, &dir).await;
    let url = format!("nats://127.0.0.1:{port}");
    let env = TestEnv::start_with(vec![("CRONBOX_NATS_URL", url.as_str())]).await;
    // The test workspace is on Business: its events go out on NATS.
    let (s, _) = env
        .post(
            "/cron",
            json!({"name": "before", "schedule": "0 0 1 1 *", "url": env.target_url("/x")}),
        )
        .await;
    assert_eq!(s, 201);
    let pid = nats.id().expect("nats pid");
    signal(pid, "STOP");
    // Events the export must publish (and wait for) while the server does not answer.
    for i in 0..5 {
        let (s, v) = env
            .post(
                "/cron",
                json!({"name": format!("during {i}"), "schedule": "0 0 1 1 *", "url": env.target_url("/x")}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let worst = std::cell::Cell::new(0.0f64);
    let started = Instant::now();
    env.eventually(Duration::from_secs(10), "the jobs read model to keep up", || async {
        worst.set(worst.get().max(oldest_xid_holder(&env).await));
        let (_, v) = env.get("/cron?limit=100").await;
        (v["items"].as_array()?.len() == 6).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the read model took {:?}",
        started.elapsed()
    );
    // Sampled for a while longer: no transaction holds the horizon while NATS is stopped.
    for _ in 0..20 {
        worst.set(worst.get().max(oldest_xid_holder(&env).await));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(pid, "CONT");
    let worst = worst.get();
    assert!(
        worst < 2.0,
        "a transaction held an xid for {worst:.1} s while NATS was stopped"
    );
    let _ = nats.start_kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stopped_leader_is_replaced_within_fifteen_seconds_and_nothing_fires_twice() {
    // Its own cluster: the stopped process may hold a transaction, and the tail's horizon is
    // cluster-wide (it would stall every other test's tails until PostgreSQL ends it).
    let pg = Postgres::init().expect("initdb (set CRONBOX_PG_BINDIR)");
    pg.start();
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.expect("connect");
    sqlx::query("CREATE DATABASE cronbox").execute(&admin).await.unwrap();
    admin.close().await;
    let url = pg.url("cronbox");
    let mut env = TestEnv::start_with(vec![("CRONBOX_DATABASE_URL", url.as_str())]).await;
    let db = sqlx::PgPool::connect(&url).await.expect("connect");
    env.stop_server().await;
    let _api = env.spawn_role("api", &[]);
    let _executor = env.spawn_role("executor", &[]);
    let leader = env.spawn_role("dispatcher", &[]);
    env.wait_ready().await;
    let (s, cron) = env
        .post(
            "/cron",
            json!({"name": "tick", "schedule": "* * * * * *", "url": env.target_url("/tick")}),
        )
        .await;
    assert_eq!(s, 201, "{cron}");
    env.eventually(Duration::from_secs(20), "the leader to fire", || async {
        (env.target.arrivals_at("/tick").len() >= 2).then_some(())
    })
    .await;
    let _standby = env.spawn_role("dispatcher", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = leader.id().expect("leader pid");
    signal(pid, "STOP");
    let stopped = Utc::now();
    // Delayed calls due while the leader is stopped.
    let mut calls = Vec::new();
    for i in 0..5 {
        let at = Utc::now() + chrono::Duration::milliseconds(500 + 300 * i);
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": env.target_url(&format!("/call/{i}")), "execute_at": at.to_rfc3339()}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        calls.push(format!("/call/{i}"));
    }
    let first_after = env
        .eventually(Duration::from_secs(30), "a fire after the leader stopped", || async {
            env.target
                .arrivals_at("/tick")
                .into_iter()
                .find(|a| a.at > stopped + chrono::Duration::milliseconds(900))
        })
        .await;
    let gap = (first_after.at - stopped).num_milliseconds();
    eprintln!("the standby fired {gap} ms after the leader was stopped");
    assert!(gap <= 15_000, "the standby took {gap} ms to fire");
    for c in &calls {
        env.eventually(Duration::from_secs(20), "each delayed call", || async {
            (!env.target.arrivals_at(c).is_empty()).then_some(())
        })
        .await;
    }
    // The old leader wakes up: it must step down, and nothing is fired twice.
    signal(pid, "CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    for c in &calls {
        assert_eq!(env.target.arrivals_at(c).len(), 1, "{c} was called twice");
    }
    let ticks = env.target.arrivals_at("/tick");
    let mut runs: Vec<String> = ticks.iter().filter_map(|a| a.run_id.clone()).collect();
    let n = runs.len();
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), n, "a cron fire was called twice");
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT aggregate_id FROM events WHERE event_type = 'RunScheduled'
                                GROUP BY aggregate_id HAVING count(*) > 1) d",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(doubled, 0);
    drop(leader);
}
