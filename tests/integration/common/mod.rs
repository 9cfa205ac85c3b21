//! Test harness: every test gets its own PostgreSQL database, its own NATS prefix (so its own
//! JetStream stream and consumer), a loopback target server that records what arrives, and the
//! real `cronbox` binary started against them. Nothing is mocked.
//!
//! Environment (set by scripts/test.sh; defaults suit a machine with local servers):
//! `CRONBOX_TEST_DATABASE_URL` (a database to connect to for CREATE DATABASE),
//! `CRONBOX_NATS_URL`.
#![allow(dead_code)]

pub mod browser;
pub mod fakes;
pub mod pg;
pub mod target;
pub mod users;

use std::net::TcpListener as StdListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub use target::Target;

pub fn admin_url() -> String {
    std::env::var("CRONBOX_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn nats_url() -> String {
    std::env::var("CRONBOX_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn with_database(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/{db}", &url[..i]),
        None => format!("{url}/{db}"),
    }
}

/// A nats-server of a test's own (JetStream file store in `dir`, fixed `port` so it can be
/// restarted in place), for tests that stop or wipe it; killed when dropped.
pub async fn nats_server(port: u16, dir: &std::path::Path) -> Child {
    let bin = std::env::var("CRONBOX_NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server (CRONBOX_NATS_SERVER_BIN)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// The master key the test servers seal signing secrets with.
pub const TEST_SECRETS_KEY: &str = "5c0ffee05c0ffee05c0ffee05c0ffee05c0ffee05c0ffee05c0ffee05c0ffee0";

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh database, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("cbx_test_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(&admin_url())
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&admin_url(), &name);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .expect("connect to test database");
        cronbox_store::db::migrate(&pool).await.expect("migrate test database");
        Self { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, off the test's runtime (Drop cannot await). The pool's connections belong
        // to the test's runtime, which is blocked here, so they are not closed gracefully:
        // `WITH (FORCE)` ends them.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = PgPool::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// One running `cronbox` process.
pub struct Server {
    pub child: Child,
    pub base: String,
}

/// A complete environment: database, NATS prefix, target, server, workspace.
pub struct TestEnv {
    pub db: TestDb,
    pub prefix: String,
    pub port: u16,
    pub server: Option<Server>,
    pub target: Target,
    pub workspace_id: String,
    pub api_key: String,
    pub http: reqwest::Client,
    pub extra_env: Vec<(String, String)>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cronbox")
}

impl TestEnv {
    pub async fn start() -> Self {
        Self::start_with(vec![]).await
    }

    pub async fn start_with(extra_env: Vec<(&str, &str)>) -> Self {
        let db = TestDb::create().await;
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let target = Target::start().await;
        let mut env = TestEnv {
            db,
            prefix,
            port: free_port(),
            server: None,
            target,
            workspace_id: String::new(),
            api_key: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            extra_env: extra_env
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let out = env
            .cli(&[
                "workspace",
                "create",
                "--name",
                "Test workspace",
                "--plan",
                "business",
                "--json",
            ])
            .await;
        let v: Value = serde_json::from_str(out.trim()).expect("workspace create --json prints JSON");
        env.workspace_id = v["workspace_id"].as_str().expect("workspace_id").to_string();
        env.api_key = v["api_key"].as_str().expect("api_key").to_string();
        env.start_server().await;
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.args(args)
            .env("CRONBOX_DATABASE_URL", &self.db.url)
            .env("CRONBOX_NATS_URL", nats_url())
            .env("CRONBOX_NATS_PREFIX", &self.prefix)
            .env("CRONBOX_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("CRONBOX_ALLOW_PRIVATE_TARGETS", "1")
            .env("CRONBOX_SECRETS_KEY", TEST_SECRETS_KEY)
            .env("CRONBOX_ACK_WAIT_SECONDS", "6")
            .env("CRONBOX_DB_MAX_CONNECTIONS", "8")
            // Every delayed call more than a second out takes the dispatcher's slim path (held
            // without its definition, read from the log when due).
            .env("CRONBOX_DISPATCHER_PRELOAD_SECONDS", "1")
            .env("CRONBOX_EXECUTOR_CONCURRENCY", "64")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .kill_on_drop(true);
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// Runs a CLI command to completion and returns its stdout.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run cronbox");
        assert!(
            out.status.success(),
            "cronbox {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `cronbox serve` and waits until it answers for this test's workspace. Another
    /// test's server can take the port between `free_port` and our bind (ours then exits, and
    /// the other one answers `/readyz`): that is detected and retried on a new port.
    pub async fn start_server(&mut self) {
        for _ in 0..5 {
            let mut child = self
                .command(&["serve"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn cronbox serve");
            let base = format!("http://127.0.0.1:{}", self.port);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                // Our key names our workspace: our server answers another workspace's path with
                // 404 (before any rate limit counts the request); a stranger's says 401.
                let ours = self
                    .http
                    .get(format!("{base}/v1/workspaces/{}", Uuid::nil()))
                    .bearer_auth(&self.api_key)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::NOT_FOUND);
                let ready = ours
                    && self
                        .http
                        .get(format!("{base}/readyz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                if ready {
                    self.server = Some(Server { child, base });
                    return;
                }
                assert!(Instant::now() < deadline, "cronbox serve did not become ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Our server exited (most likely: the port was taken): a new port.
            self.port = free_port();
        }
        panic!("cronbox serve could not start");
    }

    /// Starts one role (`api`, `dispatcher`, `executor`) as its own process with this test's
    /// settings plus `extra`; killed when dropped.
    pub fn spawn_role(&self, role: &str, extra: &[(&str, &str)]) -> Child {
        let mut c = self.command(&[role]);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a cronbox role")
    }

    /// The server's OpenAPI document.
    pub async fn openapi(&self) -> Value {
        self.http
            .get(format!("{}/v1/openapi.json", self.base()))
            .send()
            .await
            .expect("GET /v1/openapi.json")
            .json()
            .await
            .expect("the document is JSON")
    }

    /// Waits until the API on this test's port answers `/readyz` (after starting roles by hand).
    pub async fn wait_ready(&self) {
        self.eventually(Duration::from_secs(30), "the API to be ready", || async {
            self.http
                .get(format!("{}/readyz", self.base()))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
    }

    /// Starts one more `cronbox api` process on its own port against the same database; returns
    /// it (killed when dropped) and its base URL.
    pub async fn start_extra_api(&self) -> (Child, String) {
        let port = free_port();
        let child = self
            .command(&["api"])
            .env("CRONBOX_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cronbox api");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "cronbox api did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (child, base)
    }

    /// SIGKILL: no graceful shutdown, no flushing.
    pub async fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.child.start_kill().expect("kill -9");
            let _ = s.child.wait().await;
        }
    }

    /// SIGTERM, then the exit status (None if it did not exit within 15 s).
    pub async fn terminate_server(&mut self) -> Option<i32> {
        let mut s = self.server.take()?;
        let pid = s.child.id()?;
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        match tokio::time::timeout(Duration::from_secs(15), s.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = s.child.start_kill();
                None
            }
        }
    }

    pub async fn stop_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            if let Some(pid) = s.child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(15), s.child.wait()).await;
            let _ = s.child.start_kill();
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}/v1/workspaces/{}{path}", self.base(), self.workspace_id)
    }

    pub async fn request(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, url).bearer_auth(&self.api_key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, &self.ws_url(path), Some(body))
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, &self.ws_url(path), None).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, &self.ws_url(path), None).await
    }

    pub fn target_url(&self, path: &str) -> String {
        self.target.url(path)
    }

    /// Polls `f` until it returns Some, or panics after `timeout`.
    pub async fn eventually<T, F, Fut>(&self, timeout: Duration, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an execution of `run_id` reaches a final status; returns it.
    pub async fn wait_execution(&self, run_id: &str, timeout: Duration) -> Value {
        self.eventually(timeout, &format!("execution {run_id} to finish"), || async {
            let (s, v) = self.get(&format!("/executions/{run_id}")).await;
            (s == 200 && matches!(v["status"].as_str(), Some("succeeded" | "failed"))).then_some(v)
        })
        .await
    }

    pub async fn delete_stream(&self) {
        if let Ok(client) = async_nats::connect(nats_url()).await {
            let js = async_nats::jetstream::new(client);
            let _ = js
                .delete_stream(format!("{}_RUNS", self.prefix.to_ascii_uppercase()))
                .await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.child.start_kill();
        }
        let upper = self.prefix.to_ascii_uppercase();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(Ok(client)) =
                    tokio::time::timeout(Duration::from_secs(2), async_nats::connect(nats_url())).await
                {
                    let js = async_nats::jetstream::new(client);
                    for stream in [format!("{upper}_RUNS"), format!("{upper}_EVENTS")] {
                        let _ = tokio::time::timeout(Duration::from_secs(2), js.delete_stream(stream)).await;
                    }
                }
            });
        })
        .join();
    }
}
