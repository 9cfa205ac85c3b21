//! A private CronBox for one scenario: its own database (dropped afterwards) and NATS prefix,
//! its processes started from the given binary, a workspace on an unlimited plan, and the
//! CPU and memory each process used.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The master key the bench's processes share (their secrets die with the database).
const SECRETS_KEY: &str = "be0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0c";

#[derive(Clone)]
pub struct Env {
    pub binary: String,
    /// A URL of the PostgreSQL server whose user may create databases.
    pub admin_url: String,
    pub nats_url: String,
    /// Extra settings for every process (`KEY=VALUE`).
    pub extra: Vec<(String, String)>,
}

/// A started process and what it printed last (for error reports).
pub struct Proc {
    pub role: String,
    child: Child,
    pub pid: u32,
    pub started: Instant,
    log: Arc<Mutex<VecDeque<String>>>,
    /// When the dispatcher printed that its index is loaded.
    pub index_loaded: Arc<Mutex<Option<Instant>>>,
}

/// CPU and memory of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
    pub rss_mb: f64,
}

impl Proc {
    pub fn usage(&self) -> Usage {
        proc_usage(self.pid).unwrap_or_default()
    }

    pub fn tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// CPU seconds (user + system) and resident memory from /proc.
fn proc_usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 of `rest`.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some(Usage {
        // USER_HZ is 100 on every Linux this runs on.
        cpu_s: ticks / 100.0,
        peak_rss_mb: kb("VmHWM:") / 1024.0,
        rss_mb: kb("VmRSS:") / 1024.0,
    })
}

pub struct Stack {
    pub env: Env,
    pub db_name: String,
    pub db_url: String,
    pub pool: PgPool,
    pub prefix: String,
    pub port: u16,
    pub base: String,
    pub workspace_id: String,
    pub api_key: String,
    pub procs: Vec<Proc>,
    pub http: reqwest::Client,
}

fn with_database(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/{db}", &url[..i]),
        None => format!("{url}/{db}"),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Stack {
    /// A fresh database with the schema, an unlimited `bench` plan and a workspace on it.
    pub async fn create(env: &Env, name: &str) -> anyhow::Result<Self> {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let db_name = format!("cbx_bench_{name}_{tag}");
        let admin = PgPool::connect(&env.admin_url)
            .await
            .context("connect to PostgreSQL (CRONBOX_TEST_DATABASE_URL)")?;
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        let db_url = with_database(&env.admin_url, &db_name);
        let port = free_port()?;
        let mut stack = Self {
            env: env.clone(),
            pool: sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect(&db_url)
                .await?,
            db_name,
            db_url,
            prefix: format!("bench{tag}"),
            port,
            base: format!("http://127.0.0.1:{port}"),
            workspace_id: String::new(),
            api_key: String::new(),
            procs: Vec::new(),
            http: reqwest::Client::builder().pool_max_idle_per_host(256).build()?,
        };
        stack.cli(&["migrate"]).await?;
        // An operator-defined plan without counters, so a scenario measures the pipeline, not
        // the plan's allowance.
        sqlx::query(
            "INSERT INTO plans VALUES ('bench', 'Bench', 99, 0, NULL, NULL, 1, 300, 10, 7, NULL, NULL, 100000000, false, 100000)",
        )
        .execute(&stack.pool)
        .await?;
        let out = stack
            .cli(&["workspace", "create", "--name", "bench", "--plan", "bench", "--json"])
            .await?;
        let ws: Value = serde_json::from_str(&out).context("workspace create output")?;
        stack.workspace_id = ws["workspace_id"].as_str().unwrap_or_default().to_string();
        stack.api_key = ws["api_key"].as_str().unwrap_or_default().to_string();
        Ok(stack)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.env.binary);
        c.args(args)
            .env("CRONBOX_DATABASE_URL", &self.db_url)
            .env("CRONBOX_NATS_URL", &self.env.nats_url)
            .env("CRONBOX_NATS_PREFIX", &self.prefix)
            .env("CRONBOX_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("CRONBOX_SECRETS_KEY", SECRETS_KEY)
            .env("CRONBOX_ALLOW_PRIVATE_TARGETS", "1")
            .env("CRONBOX_RATE_LIMIT", "0")
            .env("CRONBOX_LOG_FORMAT", "text")
            .env(
                "RUST_LOG",
                // BENCH_RUST_LOG (with BENCH_LOG_FILE to keep every line) is for profiling a run.
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn,cronbox_dispatcher=info".into()),
            )
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        for (k, v) in &self.env.extra {
            c.env(k, v);
        }
        c
    }

    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(args).output().await.context("run the cronbox binary")?;
        if !out.status.success() {
            bail!("cronbox {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `cronbox <role>`; `serve` and `api` are waited for until they answer /readyz.
    pub async fn start(&mut self, role: &str) -> anyhow::Result<()> {
        let mut child = self
            .command(&[role])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start cronbox")?;
        let started = Instant::now();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let index_loaded = Arc::new(Mutex::new(None));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, loaded) = (log.clone(), index_loaded.clone());
            let mut keep = match std::env::var("BENCH_LOG_FILE") {
                Ok(path) => std::fs::OpenOptions::new().create(true).append(true).open(path).ok(),
                Err(_) => None,
            };
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(f) = keep.as_mut() {
                        use std::io::Write;
                        let _ = writeln!(f, "{line}");
                    }
                    if line.contains("dispatcher loaded its index") {
                        if let Ok(mut l) = loaded.lock() {
                            l.get_or_insert(Instant::now());
                        }
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push_back(line);
                        if l.len() > 40 {
                            l.pop_front();
                        }
                    }
                }
            });
        }
        let pid = child.id().unwrap_or(0);
        self.procs.push(Proc {
            role: role.to_string(),
            child,
            pid,
            started,
            log,
            index_loaded,
        });
        if matches!(role, "serve" | "api") {
            self.wait_ready().await?;
        }
        Ok(())
    }

    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    bail!("cronbox {} exited with {status}:\n{}", p.role, p.tail());
                }
            }
            if Instant::now() > deadline {
                bail!("cronbox did not become ready in 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the dispatcher of `role` has loaded its index; returns the time from its
    /// start.
    pub async fn wait_index_loaded(&self, role: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let p = self
            .procs
            .iter()
            .rev()
            .find(|p| p.role == role)
            .context("no such process")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = p.index_loaded.lock().ok().and_then(|l| *l) {
                return Ok(t - p.started);
            }
            if Instant::now() > deadline {
                bail!("the dispatcher did not load its index in {timeout:?}:\n{}", p.tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the processes of `role` (SIGKILL: the bench does not measure shutdown).
    pub async fn stop(&mut self, role: &str) {
        for p in self.procs.iter_mut().filter(|p| p.role == role) {
            let _ = p.child.kill().await;
        }
        self.procs.retain(|p| p.role != role);
    }

    /// CPU and memory of every running process, keyed by role.
    pub fn usage(&self) -> Vec<(String, Usage)> {
        self.procs.iter().map(|p| (p.role.clone(), p.usage())).collect()
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}/v1/workspaces/{}{path}", self.base, self.workspace_id)
    }

    /// A workspace owned by a new user (admin routes need a person, not an API key), on
    /// `plan`: (id, the owner's access token).
    pub async fn owned_workspace(&self, name: &str, plan: &str) -> anyhow::Result<(String, String)> {
        let email = format!("{name}-owner@bench.cronbox.test");
        let password = "bench owner password";
        self.cli(&[
            "admin",
            "create-user",
            "--email",
            &email,
            "--password",
            password,
            "--json",
        ])
        .await?;
        let r = self
            .http
            .post(format!("{}/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?;
        let login: Value = r.json().await?;
        let token = login["access_token"]
            .as_str()
            .context("login answered no token")?
            .to_string();
        let r = self
            .http
            .post(format!("{}/v1/workspaces", self.base))
            .bearer_auth(&token)
            .json(&json!({"name": name}))
            .send()
            .await?;
        let ws: Value = r.json().await?;
        let id = ws["id"]
            .as_str()
            .context("workspace create answered no id")?
            .to_string();
        self.cli(&["workspace", "set-plan", "--workspace", &id, "--plan", plan])
            .await?;
        Ok((id, token))
    }

    /// Another workspace on `plan`: (id, API key).
    pub async fn workspace(&self, name: &str, plan: &str) -> anyhow::Result<(String, String)> {
        let out = self
            .cli(&["workspace", "create", "--name", name, "--plan", plan, "--json"])
            .await?;
        let ws: Value = serde_json::from_str(&out).context("workspace create output")?;
        Ok((
            ws["workspace_id"].as_str().unwrap_or_default().to_string(),
            ws["api_key"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// `POST` as workspace `ws` with `key`.
    pub async fn post_as(&self, ws: &str, key: &str, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}/v1/workspaces/{ws}{path}", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(self.ws_url(path))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .get(self.ws_url(path))
            .bearer_auth(&self.api_key)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Number of runs whose success is committed to the event log.
    pub async fn committed_successes(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RunSucceeded'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// When the last run success was committed (ms since the epoch).
    pub async fn last_success_ms(&self) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT (extract(epoch FROM max(recorded_at)) * 1000)::int8 FROM events WHERE event_type = 'RunSucceeded'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whether the projections have applied everything in the log.
    pub async fn projections_caught_up(&self) -> anyhow::Result<bool> {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projection_checkpoints c
              WHERE (c.last_xid, c.last_seq) < (SELECT xid::text::int8, global_seq FROM events ORDER BY events.xid DESC, events.global_seq DESC LIMIT 1)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(behind == 0)
    }

    pub fn processes_json(&self, before: &[(String, Usage)]) -> Value {
        let now = self.usage();
        Value::Array(
            now.iter()
                .map(|(role, u)| {
                    let base = before
                        .iter()
                        .find(|(r, _)| r == role)
                        .map(|(_, b)| b.cpu_s)
                        .unwrap_or(0.0);
                    json!({
                        "role": role,
                        "cpu_s": crate::stats::round(u.cpu_s - base),
                        "peak_rss_mb": crate::stats::round(u.peak_rss_mb),
                    })
                })
                .collect(),
        )
    }

    /// Stops everything and drops the database and the JetStream stream.
    pub async fn destroy(mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill().await;
        }
        self.pool.close().await;
        if let Ok(admin) = PgPool::connect(&self.env.admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
                .execute(&admin)
                .await;
        }
        crate::nats_cleanup(&self.env.nats_url, &self.prefix).await;
    }
}
