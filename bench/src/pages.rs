//! The `pages` scenario: how long the web app's pages take with a big workspace — 10,000 cron
//! jobs and 1,000,000 executions — measured from a client on loopback (the server's time plus
//! a loopback round trip).
//!
//! The jobs are created through the API. The executions are written straight into the `runs`
//! read model the log pages read (a week of them, 2 % failed): replaying a million runs through
//! the pipeline would take this machine far longer than the pages take to read them, and the
//! pages never read the event log.

use std::time::Instant;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::stack::{Env, Stack};
use crate::stats::{round, summary};

/// A browser's cookies, enough for the login form and the session.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            if let Some((k, val)) = v.split(';').next().and_then(|p| p.split_once('=')) {
                self.cookies.retain(|(n, _)| n != k);
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.header())
            .send()
            .await?;
        self.keep(&r);
        Ok((r.status().as_u16(), r.text().await?))
    }

    async fn log_in(&mut self, email: &str, password: &str) -> anyhow::Result<()> {
        let (_, html) = self.get("/login").await?;
        let at = html.find("name=\"_csrf\" value=\"").context("a login form")? + 20;
        let token = html.get(at..at + 32).context("a form token")?.to_string();
        let r = self
            .http
            .post(format!("{}/login", self.base))
            .header("cookie", self.header())
            .form(&[
                ("_csrf", token.as_str()),
                ("email", email),
                ("password", password),
                ("next", "/app"),
            ])
            .send()
            .await?;
        self.keep(&r);
        if r.status().as_u16() != 303 {
            bail!("login answered {}", r.status());
        }
        Ok(())
    }
}

pub async fn pages(env: &Env, jobs: usize, runs: usize, samples: usize) -> anyhow::Result<Value> {
    let mut stack = Stack::create(env, "pages").await?;
    let result = async {
        stack.start("api").await?;
        let out = stack
            .cli(&[
                "admin",
                "create-user",
                "--email",
                "bench@cronbox.local",
                "--superuser",
                "--json",
            ])
            .await?;
        let user: Value = serde_json::from_str(out.trim()).context("create-user output")?;
        let password = user["password"].as_str().unwrap_or_default().to_string();
        let login: Value = stack
            .http
            .post(format!("{}/v1/auth/login", stack.base))
            .json(&json!({"email": "bench@cronbox.local", "password": password}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["access_token"].as_str().context("an access token")?.to_string();
        let ws: Value = stack
            .http
            .post(format!("{}/v1/workspaces", stack.base))
            .bearer_auth(&token)
            .json(&json!({"name": "Pages", "timezone": "Europe/Moscow"}))
            .send()
            .await?
            .json()
            .await?;
        let ws = ws["id"].as_str().context("a workspace")?.to_string();
        stack
            .cli(&["workspace", "set-plan", "--workspace", &ws, "--plan", "bench"])
            .await?;

        let started = Instant::now();
        let bodies: Vec<Value> = (0..jobs)
            .map(|i| {
                let m = i % 1440;
                json!({"name": format!("Выгрузка {i}"), "url": format!("https://example.com/hook/{i}"),
                       "schedule": format!("{} {} * * *", m % 60, m / 60), "tags": [format!("t{}", i % 10)]})
            })
            .collect();
        let mut created =
            futures::stream::iter(bodies.iter().map(|b| stack.post_as(&ws, &token, "/cron", b))).buffer_unordered(32);
        while let Some(r) = created.next().await {
            let (s, v) = r?;
            if s != 201 {
                bail!("cron create answered {s}: {v}");
            }
        }
        drop(created);
        let create_s = started.elapsed().as_secs_f64();
        while !stack.projections_caught_up().await? {
            if started.elapsed().as_secs() > 600 {
                bail!("projections did not catch up in 10 min");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let seeded = Instant::now();
        let ws_id = uuid::Uuid::parse_str(&ws)?;
        sqlx::query(
            "INSERT INTO runs (id, workspace_id, job_id, trigger, status, scheduled_for, attempts, dispatched_at,
                               started_at, finished_at, status_code, duration_ms, error_type, error_message, created_at)
             SELECT gen_random_uuid(), $1, j.ids[1 + (i % cardinality(j.ids))], 'schedule',
                    CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
                    now() - make_interval(secs => i * 604800.0 / $2), 1,
                    now() - make_interval(secs => i * 604800.0 / $2),
                    now() - make_interval(secs => i * 604800.0 / $2) + interval '20 ms',
                    now() - make_interval(secs => i * 604800.0 / $2) + interval '120 ms',
                    CASE WHEN i % 50 = 0 THEN 503 ELSE 200 END, 100,
                    CASE WHEN i % 50 = 0 THEN 'http_status' END,
                    CASE WHEN i % 50 = 0 THEN 'HTTP 503' END, now()
               FROM generate_series(1, $2) i,
                    (SELECT array_agg(id) AS ids FROM jobs WHERE workspace_id = $1) j",
        )
        .bind(ws_id)
        .bind(runs as i64)
        .execute(&stack.pool)
        .await?;
        sqlx::query("ANALYZE runs").execute(&stack.pool).await?;
        let seed_s = seeded.elapsed().as_secs_f64();

        let mut b = Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: stack.base.clone(),
            cookies: Vec::new(),
        };
        b.log_in("bench@cronbox.local", &password).await?;
        let job: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE workspace_id = $1 LIMIT 1")
            .bind(ws_id)
            .fetch_optional(&stack.pool)
            .await?;
        let run: Option<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE workspace_id = $1 ORDER BY scheduled_for DESC LIMIT 1 OFFSET 500",
        )
        .bind(ws_id)
        .fetch_optional(&stack.pool)
        .await?;
        let (job, run) = (job.unwrap_or_default(), run.unwrap_or_default());
        // A cursor deep in each list: the 50th page.
        let mut deep = std::collections::HashMap::new();
        for (name, path) in [("cron", "/cron"), ("executions", "/executions")] {
            let mut cursor: Option<String> = None;
            for _ in 0..50 {
                let url = match &cursor {
                    Some(c) => format!("/v1/workspaces/{ws}{path}?cursor={c}"),
                    None => format!("/v1/workspaces/{ws}{path}"),
                };
                let v: Value = stack
                    .http
                    .get(format!("{}{url}", stack.base))
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .json()
                    .await?;
                match v["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            deep.insert(name, cursor.unwrap_or_default());
        }
        let pages = [
            ("dashboard", format!("/app/w/{ws}")),
            ("cron_list", format!("/app/w/{ws}/cron")),
            ("cron_list_page_50", format!("/app/w/{ws}/cron?cursor={}", deep["cron"])),
            ("cron_list_by_tag", format!("/app/w/{ws}/cron?tag=t3")),
            ("cron_list_by_name", format!("/app/w/{ws}/cron?sort=name")),
            ("cron_list_by_next_run", format!("/app/w/{ws}/cron?sort=next_run")),
            ("job", format!("/app/w/{ws}/cron/{job}")),
            ("cron_editor", format!("/app/w/{ws}/cron/new")),
            ("executions", format!("/app/w/{ws}/executions")),
            (
                "executions_page_50",
                format!("/app/w/{ws}/executions?cursor={}", deep["executions"]),
            ),
            ("executions_failed", format!("/app/w/{ws}/executions?status=failed")),
            ("executions_of_job", format!("/app/w/{ws}/executions?job_id={job}")),
            ("execution", format!("/app/w/{ws}/executions/{run}")),
            ("delayed", format!("/app/w/{ws}/delayed")),
            ("settings", format!("/app/w/{ws}/settings")),
        ];
        let mut out = serde_json::Map::new();
        for (name, path) in &pages {
            let mut ms = Vec::with_capacity(samples);
            for _ in 0..samples {
                let t = Instant::now();
                let (s, body) = b.get(path).await?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                if s != 200 {
                    bail!("{name} answered {s}: {}", body.chars().take(300).collect::<String>());
                }
            }
            out.insert(name.to_string(), summary(&mut ms));
        }
        let worst = out.values().filter_map(|v| v["p99"].as_f64()).fold(0.0_f64, f64::max);
        Ok::<_, anyhow::Error>(json!({
            "scenario": "pages",
            "cron_jobs": jobs,
            "executions": runs,
            "samples_per_page": samples,
            "page_ms": out,
            "worst_p99_ms": round(worst),
            "setup": {"create_s": round(create_s), "seed_runs_s": round(seed_s)},
            "processes": stack.processes_json(&[]),
        }))
    }
    .await;
    stack.destroy().await;
    result
}
