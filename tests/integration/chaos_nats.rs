//! JetStream loses acknowledged messages (what a power failure does to nats-server's lazy
//! fsync): its store is deleted while runs sit in the stream. PostgreSQL still has every run as
//! dispatched, so the dispatcher's reconciler publishes them again and each runs exactly once.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::{free_port, nats_server, TestEnv};
use serde_json::json;
use tokio::process::Child;

/// A private nats-server with its own JetStream store, on a fixed port across restarts.
struct Nats {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Nats {
    async fn start(port: u16, dir: PathBuf) -> Self {
        let child = nats_server(port, &dir).await;
        Self {
            port,
            dir,
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then the store is gone: nothing it acknowledged survives.
    async fn crash_and_lose_everything(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.start_kill().expect("kill nats-server");
            let _ = c.wait().await;
        }
        std::fs::remove_dir_all(&self.dir).expect("delete the JetStream store");
        let fresh = Self::start(self.port, self.dir.clone()).await;
        *self = fresh;
    }
}

#[tokio::test]
async fn runs_lost_by_jetstream_are_published_again_and_run_once() {
    let dir = std::env::temp_dir().join(format!("cronbox-nats-{}", uuid::Uuid::new_v4().simple()));
    let mut nats = Nats::start(free_port(), dir.clone()).await;
    let url = nats.url();
    let mut env = TestEnv::start_with(vec![
        ("CRONBOX_NATS_URL", url.as_str()),
        ("CRONBOX_RECONCILE_AFTER_SECONDS", "2"),
    ])
    .await;
    // API and dispatcher only: runs are published and wait in the stream for an executor.
    env.stop_server().await;
    let _api = env.spawn_role("api", &[]);
    let _dispatcher = env.spawn_role("dispatcher", &[]);
    env.wait_ready().await;

    const CALLS: usize = 20;
    let mut runs = Vec::new();
    for i in 0..CALLS {
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": env.target_url(&format!("/lost/{i}")), "delay_seconds": 0}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        runs.push(v["run_id"].as_str().unwrap().to_string());
    }
    env.eventually(Duration::from_secs(20), "every run dispatched", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'dispatched'")
            .fetch_one(&env.db.pool)
            .await
            .ok()?;
        (n == CALLS as i64).then_some(())
    })
    .await;

    nats.crash_and_lose_everything().await;
    let _executor = env.spawn_role("executor", &[]);

    for run in &runs {
        let r = env.wait_execution(run, Duration::from_secs(60)).await;
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    for i in 0..CALLS {
        let hits = env.target.arrivals_at(&format!("/lost/{i}"));
        assert_eq!(hits.len(), 1, "call {i} arrived {} times", hits.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
