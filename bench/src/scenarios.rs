//! The scenarios. Each one starts its own CronBox (fresh database and NATS prefix), drives it
//! through the public API, and returns one JSON object.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::stack::{Env, Stack};
use crate::stats::{delivery, round, summary};
use crate::target::{now_ns, Target};

fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Creates delayed calls `(key, due_ms)` through `POST …/delayed/batch` (1000 per request,
/// `concurrency` requests in flight). Returns items per second.
pub async fn create_delayed(
    stack: &Stack,
    target: &Target,
    calls: &[(u64, i64)],
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let bodies: Vec<Value> = calls
        .chunks(1000)
        .map(|chunk| {
            json!({"items": chunk.iter().map(|(key, due)| json!({
                "url": target.url(*key, *due),
                "method": "POST",
                "body": "{\"bench\":true}",
                "execute_at": rfc3339_ms(*due),
            })).collect::<Vec<_>>()})
        })
        .collect();
    let mut results =
        futures::stream::iter(bodies.iter().map(|b| stack.post("/delayed/batch", b))).buffer_unordered(concurrency);
    while let Some(r) = results.next().await {
        let (status, v) = r?;
        if status != 201 {
            bail!("batch create answered {status}: {v}");
        }
    }
    Ok(calls.len() as f64 / started.elapsed().as_secs_f64())
}

/// Creates cron jobs through `POST …/cron` with `concurrency` clients. `url(i)` and
/// `schedule(i)` describe job i. Returns jobs per second.
async fn create_cron(
    stack: &Stack,
    n: usize,
    concurrency: usize,
    job: impl Fn(usize) -> (String, String),
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let bodies: Vec<Value> = (0..n)
        .map(|i| {
            let (url, schedule) = job(i);
            json!({"name": format!("bench {i}"), "url": url, "schedule": schedule, "timezone": "UTC"})
        })
        .collect();
    let mut results =
        futures::stream::iter(bodies.iter().map(|b| stack.post("/cron", b))).buffer_unordered(concurrency);
    while let Some(r) = results.next().await {
        let (status, v) = r?;
        if status != 201 {
            bail!("cron create answered {status}: {v}");
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Polls `f` every 50 ms until it is true or `timeout` passes.
async fn wait_for<F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await? {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(false)
}

/// `n` delayed calls due evenly over `window` seconds, created beforehand; how late each
/// arrives, how many never do or arrive twice, and when the last outcome is committed.
pub async fn burst(env: &Env, name: &str, n: usize, window: f64, ingest_hint: f64) -> anyhow::Result<Value> {
    let target = Target::start().await?;
    let mut stack = Stack::create(env, name).await?;
    let result = async {
        stack.start("serve").await?;
        // Enough lead for the creates (at the expected ingest rate) and the dispatcher to see them.
        let lead_ms = (n as f64 / ingest_hint * 1000.0) as i64 + 3000;
        let t0 = now_ms() + lead_ms;
        let window_ms = (window * 1000.0) as i64;
        let calls: Vec<(u64, i64)> = (0..n)
            .map(|i| (i as u64, t0 + (i as i64 * window_ms) / n.max(1) as i64))
            .collect();
        let ingest = create_delayed(&stack, &target, &calls, 2).await?;
        let spare_ms = t0 - now_ms();
        let before = stack.usage();
        let deadline = Duration::from_millis((t0 + window_ms - now_ms()).max(0) as u64) + Duration::from_secs(60);
        wait_for(deadline, || async { Ok(target.count() >= n) }).await?;
        // Late duplicates, if any, would show up now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let committed_all = wait_for(Duration::from_secs(60), || async {
            Ok(stack.committed_successes().await? >= n as i64)
        })
        .await?;
        let processes = stack.processes_json(&before);
        let committed = stack.committed_successes().await?;
        let last_commit_ms = stack.last_success_ms().await?.unwrap_or(t0);
        let arrivals = target.take();
        let first_arrival = arrivals.iter().map(|a| a.arrival_ns).min().unwrap_or(0);
        let mut d = delivery(&arrivals, n);
        let active_s = ((d.last_arrival_ns - first_arrival) as f64 / 1e9).max(1e-3);
        let durable_s = ((last_commit_ms - t0) as f64 / 1000.0).max(1e-3);
        Ok::<_, anyhow::Error>(json!({
            "scenario": name,
            "calls": n,
            "window_s": window,
            "offered_per_s": round(n as f64 / window),
            "executed": d.executed,
            "executed_per_s": round(d.executed as f64 / active_s),
            "durable_per_s": round(committed as f64 / durable_s),
            "committed": committed,
            "all_committed": committed_all,
            "lateness_ms": summary(&mut d.lateness_ms),
            "lost": d.lost,
            "duplicated": d.duplicated,
            "setup": {"batch_ingest_per_s": round(ingest), "spare_before_first_due_ms": spare_ms},
            "processes": processes,
        }))
    }
    .await;
    stack.destroy().await;
    result
}

/// One workspace floods `flood` calls at a tarpit (each held `tarpit_ms`) while another runs
/// `rate` calls/s for `window` s: the second's lateness, against the same load without the flood
/// (measured first, on the same stack). The flooder's plan caps its runs in flight at `cap`.
pub async fn fairness(
    env: &Env,
    flood: usize,
    rate: usize,
    window: f64,
    tarpit_ms: u64,
    cap: usize,
) -> anyhow::Result<Value> {
    let target = Target::start().await?;
    // The slow service is another service (its own address), as it would be.
    let slow = Target::start().await?;
    let mut stack = Stack::create(env, "fairness").await?;
    let result = async {
        stack.start("serve").await?;
        sqlx::query(
            "INSERT INTO plans (code, name, position, price_kopecks, max_active_cron_jobs, max_delayed_per_month,
                                min_cron_interval_seconds, max_timeout_seconds, max_retries, log_retention_days,
                                max_members, max_api_keys, requests_per_minute, event_stream, max_runs_in_flight)
             VALUES ('flood', 'Flood', 98, 0, NULL, NULL, 1, 300, 10, 7, NULL, NULL, 100000000, false, $1)",
        )
        .bind(cap as i32)
        .execute(&stack.pool)
        .await?;
        let (flooder, flooder_key) = stack.workspace("flooder", "flood").await?;
        let n = (rate as f64 * window) as usize;
        let window_ms = (window * 1000.0) as i64;
        // The victim's load alone, then with the flood; keys apart so the two phases never mix.
        let phase = |base: u64, t0: i64| -> Vec<(u64, i64)> {
            (0..n)
                .map(|i| (base + i as u64, t0 + (i as i64 * window_ms) / n.max(1) as i64))
                .collect()
        };
        let t0 = now_ms() + 3000;
        let alone = phase(0, t0);
        create_delayed(&stack, &target, &alone, 2).await?;
        wait_for(
            Duration::from_millis((t0 + window_ms - now_ms()).max(0) as u64) + Duration::from_secs(30),
            || async { Ok(target.count() >= n) },
        )
        .await?;
        let mut a = target.take();
        let baseline = delivery(&a, n);
        a.clear();
        // The flood: all due at once, each call held by the target far longer than the window.
        let t1 = now_ms() + 4000;
        let flood_items: Vec<Value> = (0..flood)
            .map(|_| json!({"url": slow.tarpit_url(tarpit_ms), "execute_at": rfc3339_ms(t1), "timeout_seconds": 60}))
            .collect();
        for chunk in flood_items.chunks(1000) {
            let (status, v) = stack
                .post_as(&flooder, &flooder_key, "/delayed/batch", &json!({"items": chunk}))
                .await?;
            if status != 201 {
                bail!("flood batch answered {status}: {v}");
            }
        }
        let with_flood = phase(1_000_000, t1 + 500);
        create_delayed(&stack, &target, &with_flood, 2).await?;
        let before = stack.usage();
        wait_for(
            Duration::from_millis((t1 + 500 + window_ms - now_ms()).max(0) as u64) + Duration::from_secs(60),
            || async { Ok(target.count() >= n) },
        )
        .await?;
        let processes = stack.processes_json(&before);
        let flooded = delivery(&target.take(), n);
        let (mut b, mut f) = (baseline, flooded);
        let (sb, sf) = (summary(&mut b.lateness_ms), summary(&mut f.lateness_ms));
        let ratio = match (sf["p99"].as_f64(), sb["p99"].as_f64()) {
            (Some(x), Some(y)) if y > 0.0 => json!(round(x / y)),
            _ => Value::Null,
        };
        Ok::<_, anyhow::Error>(json!({
            "scenario": "fairness",
            "flood_calls": flood,
            "flood_tarpit_ms": tarpit_ms,
            "flooder_max_runs_in_flight": cap,
            "victim_calls_per_s": rate,
            "window_s": window,
            "victim_alone_lateness_ms": sb,
            "victim_with_flood_lateness_ms": sf,
            "p99_ratio": ratio,
            "lost": f.lost + b.lost,
            "duplicated": f.duplicated + b.duplicated,
            "processes": processes,
        }))
    }
    .await;
    stack.destroy().await;
    result
}

/// Steps the offered rate up until p99 lateness passes 1 s or a call is lost.
pub async fn max_sustained(env: &Env, rates: &[usize], step_s: f64) -> anyhow::Result<Value> {
    let mut steps = Vec::new();
    let mut held = 0usize;
    let mut hint = 10_000.0;
    for &rate in rates {
        let n = (rate as f64 * step_s) as usize;
        let r = burst(env, &format!("max_{rate}"), n, step_s, hint).await?;
        hint = r["setup"]["batch_ingest_per_s"].as_f64().unwrap_or(hint).max(1000.0) * 0.7;
        let p99 = r["lateness_ms"]["p99"].as_f64().unwrap_or(f64::INFINITY);
        let ok = r["lost"] == 0 && r["duplicated"] == 0 && p99 <= 1000.0 && r["all_committed"] == true;
        eprintln!(
            "  max: {rate}/s -> executed {}/s, durable {}/s, p99 {p99} ms, lost {}, {}",
            r["executed_per_s"],
            r["durable_per_s"],
            r["lost"],
            if ok { "held" } else { "NOT held" }
        );
        steps.push(json!({"offered_per_s": rate, "held": ok, "result": r}));
        if !ok {
            break;
        }
        held = rate;
    }
    Ok(json!({"scenario": "max_sustained", "highest_rate_held_per_s": held, "steps": steps}))
}

/// `n` cron jobs all due at the same minute: how long until every one has fired.
pub async fn cron_fleet(env: &Env, n: usize, create_hint: f64) -> anyhow::Result<Value> {
    let target = Target::start().await?;
    let mut stack = Stack::create(env, "cron").await?;
    let result = async {
        stack.start("serve").await?;
        // The first whole minute the creates can finish before (at the expected create rate).
        let ready_by = Utc::now() + chrono::Duration::milliseconds((n as f64 / create_hint * 1000.0) as i64 + 15_000);
        let due = ready_by
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .map(|t| t + chrono::Duration::minutes(1))
            .context("minute")?;
        let due_ms = due.timestamp_millis();
        let schedule = format!("{} {} * * *", due.minute(), due.hour());
        let rate = create_cron(&stack, n, 64, |i| (target.url(i as u64, due_ms), schedule.clone())).await?;
        let spare_ms = due_ms - now_ms();
        if spare_ms < 1000 {
            bail!("creating {n} cron jobs ran past their minute ({rate:.0}/s); raise --cron-create-hint");
        }
        let before = stack.usage();
        let wait = Duration::from_millis(spare_ms as u64) + Duration::from_secs(120);
        wait_for(wait, || async { Ok(target.count() >= n) }).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let processes = stack.processes_json(&before);
        let mut d = delivery(&target.take(), n);
        let drain_s = ((d.last_arrival_ns - due_ms * 1_000_000) as f64 / 1e9).max(1e-3);
        Ok::<_, anyhow::Error>(json!({
            "scenario": "cron_fleet",
            "jobs": n,
            "executed": d.executed,
            "drain_s": round(drain_s),
            "drain_per_s": round(d.executed as f64 / drain_s),
            "lateness_ms": summary(&mut d.lateness_ms),
            "lost": d.lost,
            "duplicated": d.duplicated,
            "setup": {"cron_create_per_s": round(rate)},
            "processes": processes,
        }))
    }
    .await;
    stack.destroy().await;
    result
}

/// Latencies (ms) of `n` calls of `f`, `concurrency` at a time.
async fn latencies<F, Fut>(n: usize, concurrency: usize, f: F) -> anyhow::Result<Vec<f64>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut out = Vec::with_capacity(n);
    let mut s = futures::stream::iter((0..n).map(|i| {
        let fut = f(i);
        async move {
            let t = Instant::now();
            fut.await.map(|()| t.elapsed().as_secs_f64() * 1000.0)
        }
    }))
    .buffer_unordered(concurrency);
    while let Some(r) = s.next().await {
        out.push(r?);
    }
    Ok(out)
}

/// A million pending delayed calls and 100,000 cron jobs: the dispatcher's cold start and
/// memory, and API latency while it holds them.
pub async fn scale(env: &Env, delayed: usize, cron: usize) -> anyhow::Result<Value> {
    let target = Target::start().await?;
    let mut stack = Stack::create(env, "scale").await?;
    let result = async {
        stack.start("api").await?;
        stack.start("dispatcher").await?;
        stack.start("executor").await?;
        let started = Instant::now();
        let t0 = now_ms() + 600_000;
        let span = 86_400_000 - 600_000;
        let calls: Vec<(u64, i64)> = (0..delayed)
            .map(|i| (i as u64, t0 + (i as i64 * span) / delayed.max(1) as i64))
            .collect();
        let ingest = create_delayed(&stack, &target, &calls, 2).await?;
        let cron_rate = create_cron(&stack, cron, 64, |i| {
            // Daily, spread over the day's minutes.
            let m = i % 1440;
            (
                target.url(10_000_000 + i as u64, 0),
                format!("{} {} * * *", m % 60, m / 60),
            )
        })
        .await?;
        let setup_s = started.elapsed().as_secs_f64();
        let caught_up = wait_for(Duration::from_secs(900), || stack.projections_caught_up()).await?;
        if !caught_up {
            bail!("projections did not catch up with {delayed} calls in 15 min");
        }
        let settle_s = started.elapsed().as_secs_f64() - setup_s;

        // Cold start: a new dispatcher process, from spawn to "index loaded".
        stack.stop("dispatcher").await;
        stack.start("dispatcher").await?;
        let cold = stack.wait_index_loaded("dispatcher", Duration::from_secs(300)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dispatcher = stack
            .procs
            .iter()
            .find(|p| p.role == "dispatcher")
            .map(|p| p.usage())
            .unwrap_or_default();

        // API latency while it holds them.
        let far = now_ms() + 3_600_000;
        let mut create = latencies(if delayed >= 100_000 { 2000 } else { 200 }, 8, |i| {
            let body = json!({"url": target.url(20_000_000 + i as u64, far), "execute_at": rfc3339_ms(far)});
            let stack = &stack;
            async move {
                let (s, v) = stack.post("/delayed", &body).await?;
                if s != 201 {
                    bail!("create answered {s}: {v}");
                }
                Ok(())
            }
        })
        .await?;
        let mut pages = Vec::new();
        for kind in ["/delayed", "/cron"] {
            let mut cursor: Option<String> = None;
            for _ in 0..if delayed >= 100_000 { 500 } else { 50 } {
                let path = match &cursor {
                    Some(c) => format!("{kind}?limit=100&cursor={c}"),
                    None => format!("{kind}?limit=100"),
                };
                let t = Instant::now();
                let (s, v) = stack.get(&path).await?;
                pages.push(t.elapsed().as_secs_f64() * 1000.0);
                if s != 200 {
                    bail!("list answered {s}: {v}");
                }
                cursor = v["next_cursor"].as_str().map(String::from);
                if cursor.is_none() {
                    break;
                }
            }
        }
        Ok::<_, anyhow::Error>(json!({
            "scenario": "scale",
            "pending_delayed": delayed,
            "cron_jobs": cron,
            "dispatcher_cold_start_s": round(cold.as_secs_f64() * 100.0) / 100.0,
            "dispatcher_rss_mb": round(dispatcher.rss_mb),
            "dispatcher_peak_rss_mb": round(dispatcher.peak_rss_mb),
            "api_create_ms": summary(&mut create),
            "api_list_page_ms": summary(&mut pages),
            "setup": {
                "batch_ingest_per_s": round(ingest),
                "cron_create_per_s": round(cron_rate),
                "create_s": round(setup_s),
                "projections_settle_s": round(settle_s),
            },
            "processes": stack.processes_json(&[]),
        }))
    }
    .await;
    stack.destroy().await;
    result
}

/// Creates per second through `POST …/delayed` with 64 clients, and items per second through
/// the batch endpoint.
pub async fn ingest(env: &Env, seconds: f64, batches: usize) -> anyhow::Result<Value> {
    let target = Target::start().await?;
    let mut stack = Stack::create(env, "ingest").await?;
    let result = async {
        stack.start("serve").await?;
        let far = now_ms() + 86_400_000;
        let before = stack.usage();
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let workers = (0..64u64).map(|w| {
            let (stack, target) = (&stack, &target);
            async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < until {
                    let body = json!({"url": target.url(w * 1_000_000 + i, far), "method": "POST", "execute_at": rfc3339_ms(far)});
                    let t = Instant::now();
                    let (s, v) = stack.post("/delayed", &body).await?;
                    if s != 201 {
                        bail!("create answered {s}: {v}");
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    i += 1;
                }
                Ok::<_, anyhow::Error>(lat)
            }
        });
        let mut lat: Vec<f64> = Vec::new();
        for r in futures::future::join_all(workers).await {
            lat.extend(r?);
        }
        let single_s = started.elapsed().as_secs_f64();
        let single_cpu = stack.processes_json(&before);
        let singles = lat.len();

        let before = stack.usage();
        let calls: Vec<(u64, i64)> = (0..batches * 1000).map(|i| (90_000_000 + i as u64, far)).collect();
        let batch_rate = create_delayed(&stack, &target, &calls, 2).await?;
        Ok::<_, anyhow::Error>(json!({
            "scenario": "ingest",
            "single": {
                "clients": 64,
                "created": singles,
                "created_per_s": round(singles as f64 / single_s),
                "latency_ms": summary(&mut lat),
                "processes": single_cpu,
            },
            "batch": {
                "items": calls.len(),
                "items_per_request": 1000,
                "items_per_s": round(batch_rate),
                "processes": stack.processes_json(&before),
            },
        }))
    }
    .await;
    stack.destroy().await;
    result
}

/// What one SSE client saw: messages received, and (for the sampled clients) each message's
/// latency in ms: arrival at the client minus the event's `recorded_at` (its insert time, a
/// hair before its commit, so this slightly overstates the latency from commit).
struct FeedClient {
    received: std::sync::atomic::AtomicUsize,
    latencies: std::sync::Mutex<Vec<f64>>,
}

async fn feed_client(
    http: reqwest::Client,
    url: String,
    key: String,
    sample: bool,
    seen: std::sync::Arc<FeedClient>,
    connected: std::sync::Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let resp = http.get(url).bearer_auth(key).send().await?;
    if resp.status() != 200 {
        bail!("stream answered {}", resp.status());
    }
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut announced = false;
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if !announced && frame.starts_with(": connected") {
                announced = true;
                connected.add_permits(1);
            }
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            seen.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if sample {
                let at_ms = now_ns() as f64 / 1e6;
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if let Some(rec) = v["recorded_at"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                {
                    let rec_ms = rec.timestamp_nanos_opt().unwrap_or(0) as f64 / 1e6;
                    if let Ok(mut l) = seen.latencies.lock() {
                        l.push(at_ms - rec_ms);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The live feed: `clients` SSE streams on one workspace. The serve process's RSS is read before
/// and after they connect (memory per stream); then `calls` delayed calls run over `window` s,
/// and every stream must receive every run event of them.
pub async fn feed(env: &Env, clients: usize, calls: usize, window: f64) -> anyhow::Result<Value> {
    let target = Target::start().await?;
    let mut stack = Stack::create(env, "feed").await?;
    let result = async {
        stack.start("serve").await?;
        let serve = |stack: &Stack| stack.usage().into_iter().find(|(r, _)| r == "serve").map(|(_, u)| u).unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = serve(&stack);
        let url = stack.ws_url("/executions/stream");
        let connected = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let mut seen = Vec::with_capacity(clients);
        let mut tasks = tokio::task::JoinSet::new();
        // One connection each: a shared client would pool them onto few sockets.
        for i in 0..clients {
            let s = std::sync::Arc::new(FeedClient {
                received: Default::default(),
                latencies: Default::default(),
            });
            seen.push(s.clone());
            let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
            tasks.spawn(feed_client(http, url.clone(), stack.api_key.clone(), i < 20, s, connected.clone()));
        }
        let all = tokio::time::timeout(Duration::from_secs(120), connected.acquire_many(clients as u32)).await;
        if all.is_err() {
            bail!("only {} of {clients} streams connected in 120 s", connected.available_permits());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = serve(&stack);
        let per_stream_kb = (idle.rss_mb - before.rss_mb) * 1024.0 / clients.max(1) as f64;

        let t0 = now_ms() + 2000;
        let window_ms = (window * 1000.0) as i64;
        let keys: Vec<(u64, i64)> = (0..calls)
            .map(|i| (i as u64, t0 + (i as i64 * window_ms) / calls.max(1) as i64))
            .collect();
        create_delayed(&stack, &target, &keys, 2).await?;
        let cpu_before = serve(&stack);
        // scheduled, dispatched, running, attempt_succeeded, succeeded: five per call.
        let expected = calls * 5;
        let delivered = wait_for(Duration::from_secs(120) + Duration::from_millis(window_ms as u64), || async {
            Ok(seen.iter().all(|s| s.received.load(std::sync::atomic::Ordering::Relaxed) >= expected))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = serve(&stack);
        let counts: Vec<usize> = seen.iter().map(|s| s.received.load(std::sync::atomic::Ordering::Relaxed)).collect();
        let short = counts.iter().filter(|c| **c < expected).count();
        let extra = counts.iter().filter(|c| **c > expected).count();
        let mut lat: Vec<f64> = seen
            .iter()
            .flat_map(|s| s.latencies.lock().map(|l| l.clone()).unwrap_or_default())
            .collect();
        tasks.abort_all();
        Ok::<_, anyhow::Error>(json!({
            "scenario": "feed",
            "streams": clients,
            "calls": calls,
            "window_s": window,
            "messages_per_stream": expected,
            "all_delivered": delivered,
            "streams_short": short,
            "streams_with_extra": extra,
            "messages_delivered": counts.iter().sum::<usize>(),
            "feed_latency_ms": summary(&mut lat),
            "latency_sampled_streams": clients.min(20),
            "serve_rss_mb": {"before_streams": round(before.rss_mb), "with_streams_idle": round(idle.rss_mb), "after_traffic": round(after.rss_mb)},
            "rss_per_stream_kb": round(per_stream_kb),
            "serve_cpu_s_during_traffic": round(after.cpu_s - cpu_before.cpu_s),
        }))
    }
    .await;
    stack.destroy().await;
    result
}

/// Latencies (ms) of the first receipt of each job's alert, and how many were received twice.
fn receipts(inbox: &[(i64, String)], failed_ns: &std::collections::HashMap<u64, i64>) -> (Vec<f64>, usize, usize) {
    let mut first: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
    let mut doubled = 0;
    for (at, text) in inbox {
        // A mail names each job twice (its text and its HTML part): once per message counts.
        let mut names = crate::receivers::names(text);
        names.sort_unstable();
        names.dedup();
        for name in names {
            if first.insert(name, *at).is_some() {
                doubled += 1;
            }
        }
    }
    let latencies = first
        .iter()
        .filter_map(|(name, at)| failed_ns.get(name).map(|f| (at - f) as f64 / 1e6))
        .collect();
    (latencies, first.len(), doubled)
}

/// `n` jobs failing at once (delayed calls due at the same instant, to a closed port, no
/// retries), alerting on an e-mail, a webhook and a Telegram channel: the time from each failed
/// run's commit to the provider's receipt, what was lost, what arrived twice, and for Telegram
/// (bound by its rate of one message a second per chat) how many messages it took.
pub async fn alerts(env: &Env, n: usize) -> anyhow::Result<Value> {
    use crate::receivers::{self, Inbox};
    let (mail, hooks, tg) = (Inbox::default(), Inbox::default(), Inbox::default());
    let smtp_port = receivers::smtp(mail.clone()).await?;
    let hook_port = receivers::webhook(hooks.clone()).await?;
    let tg_port = receivers::telegram(tg.clone()).await?;
    const TG_SECRET: &str = "bench-telegram-secret";
    let mut env = env.clone();
    env.extra.push(("CRONBOX_TELEGRAM_BOT_TOKEN".into(), "1:bench".into()));
    env.extra
        .push(("CRONBOX_TELEGRAM_API_URL".into(), format!("http://127.0.0.1:{tg_port}")));
    env.extra
        .push(("CRONBOX_TELEGRAM_WEBHOOK_SECRET".into(), TG_SECRET.into()));
    env.extra
        .push(("CRONBOX_SMTP_URL".into(), format!("smtp://127.0.0.1:{smtp_port}")));
    env.extra
        .push(("CRONBOX_MAIL_FROM".into(), "CronBox <bench@cronbox.test>".into()));
    let mut stack = Stack::create(&env, "alerts").await?;
    let result = async {
        stack.start("serve").await?;
        let (ws, token) = stack.owned_workspace("alerts", "bench").await?;
        let channels = [
            json!({"type": "email", "name": "bench mail", "address": "oncall@bench.cronbox.test", "language": "en"}),
            json!({"type": "webhook", "name": "bench hook", "url": format!("http://127.0.0.1:{hook_port}/alerts")}),
        ];
        for c in &channels {
            let (status, v) = stack.post_as(&ws, &token, "/notification-channels", c).await?;
            if status != 201 {
                bail!("channel create answered {status}: {v}");
            }
        }
        // The address is confirmed as its owner would: the link's form, posted.
        let confirm: Option<String> = sqlx::query_scalar(
            "SELECT params->>'token' FROM mail_outbox WHERE kind = 'confirm_channel' ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&stack.pool)
        .await?;
        let confirm = confirm.context("no confirmation mail was queued")?;
        // A private chat linked as its user would: /start with the workspace's code.
        let (status, link) = stack
            .post_as(&ws, &token, "/notification-channels/telegram/link", &json!({}))
            .await?;
        if status != 201 {
            bail!("telegram link answered {status}: {link}");
        }
        let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 0,
            "chat": {"id": 4242, "type": "private", "first_name": "Bench"},
            "from": {"id": 4242, "is_bot": false, "first_name": "Bench", "language_code": "en"},
            "text": format!("/start {}", link["code"].as_str().unwrap_or_default())}});
        let r = stack
            .http
            .post(format!("{}/v1/telegram/webhook", stack.base))
            .header("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)
            .json(&update)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("the telegram webhook answered {}", r.status());
        }
        stack
            .http
            .post(format!("{}/notification-channels/confirm", stack.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={confirm}"))
            .send()
            .await?;
        let ready = wait_for(Duration::from_secs(30), || async {
            let usable: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM alert_channel_index WHERE verified AND NOT disabled",
            )
            .fetch_one(&stack.pool)
            .await?;
            Ok(usable == 3)
        })
        .await?;
        if !ready {
            bail!("the channels did not become active");
        }
        // Due well after the set-up has settled: what is measured is the failures' alerts, not
        // the creation of a thousand calls (checked below, and reported).
        let due = now_ms() + 10_000;
        let items: Vec<Value> = (0..n)
            .map(|i| {
                json!({"name": format!("bench-alert-{i}"), "url": "http://127.0.0.1:1/closed",
                       "execute_at": rfc3339_ms(due), "retry_count": 0, "timeout_seconds": 5})
            })
            .collect();
        for chunk in items.chunks(1000) {
            let (status, v) = stack.post_as(&ws, &token, "/delayed/batch", &json!({"items": chunk})).await?;
            if status != 201 {
                bail!("batch create answered {status}: {v}");
            }
        }
        let settled = wait_for(Duration::from_secs(8), || stack.projections_caught_up()).await?;
        let settled_before_due = settled && now_ms() < due;
        let before = stack.usage();
        let all_in = wait_for(Duration::from_secs(180), || async {
            let got = |inbox: &Inbox| {
                let mut seen = std::collections::HashSet::new();
                for (_, t) in inbox.take() {
                    seen.extend(receivers::names(&t));
                }
                seen.len()
            };
            Ok(got(&mail) >= n && got(&hooks) >= n && got(&tg) >= n)
        })
        .await?;
        // A moment more, to see anything that would arrive twice.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let processes = stack.processes_json(&before);
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT (extract(epoch FROM e.recorded_at) * 1e9)::int8, j.name
               FROM events e JOIN jobs j ON j.id = (e.payload -> 'RunFailed' ->> 'job_id')::uuid
              WHERE e.event_type = 'RunFailed'",
        )
        .fetch_all(&stack.pool)
        .await?;
        let failed_ns: std::collections::HashMap<u64, i64> = rows
            .into_iter()
            .filter_map(|(at, name)| Some((name.strip_prefix("bench-alert-")?.parse().ok()?, at)))
            .collect();
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT event_type, count(*) FROM events
              WHERE event_type IN ('AlertRaised', 'NotificationQueued', 'NotificationDelivered', 'NotificationFailed')
              GROUP BY event_type",
        )
        .fetch_all(&stack.pool)
        .await?;
        // Where the time goes: failed → queued (the decider, and its commit), queued → delivered
        // (the notifications projection, the deliverer, the provider, the record's commit).
        let stages: Vec<(f64, f64)> = sqlx::query_as(
            "WITH failed AS (SELECT aggregate_id AS run, recorded_at FROM events WHERE event_type = 'RunFailed'),
                  queued AS (SELECT aggregate_id AS n, recorded_at,
                                    payload -> 'NotificationQueued' -> 'content' -> 'details' ->> 'run_id' AS run
                               FROM events WHERE event_type = 'NotificationQueued'),
                  delivered AS (SELECT aggregate_id AS n, recorded_at FROM events WHERE event_type = 'NotificationDelivered')
             SELECT (extract(epoch FROM q.recorded_at - f.recorded_at) * 1000)::float8,
                    (extract(epoch FROM d.recorded_at - q.recorded_at) * 1000)::float8
               FROM queued q JOIN failed f ON f.run = q.run JOIN delivered d ON d.n = q.n",
        )
        .fetch_all(&stack.pool)
        .await?;
        let (mut decide, mut deliver): (Vec<f64>, Vec<f64>) = stages.into_iter().unzip();
        let mails = mail.take();
        let alert_mails = mails.iter().filter(|(_, t)| t.contains("List-Unsubscribe")).count();
        let (mut mail_lat, mail_got, mail_twice) = receipts(&mails, &failed_ns);
        let (mut hook_lat, hook_got, hook_twice) = receipts(&hooks.take(), &failed_ns);
        // Alert messages only (not the bot's answer to /start), and the most in any second.
        let tg_messages: Vec<(i64, String)> =
            tg.take().into_iter().filter(|(_, t)| t.contains("bench-alert-")).collect();
        let busiest = tg_messages
            .iter()
            .map(|(at, _)| tg_messages.iter().filter(|(b, _)| *b >= *at && *b - *at < 1_000_000_000).count())
            .max()
            .unwrap_or(0);
        let (mut tg_lat, tg_got, tg_twice) = receipts(&tg_messages, &failed_ns);
        Ok::<_, anyhow::Error>(json!({
            "scenario": "alerts",
            "jobs": n,
            "complete": all_in,
            "set_up_settled_before_due": settled_before_due,
            "failed_runs": failed_ns.len(),
            "events": counts.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<String, Value>>(),
            "email": {"received": mail_got, "lost": n.saturating_sub(mail_got), "doubled": mail_twice,
                      "mails": alert_mails, "latency_ms": summary(&mut mail_lat)},
            "webhook": {"received": hook_got, "lost": n.saturating_sub(hook_got), "doubled": hook_twice,
                        "latency_ms": summary(&mut hook_lat)},
            "telegram": {"received": tg_got, "lost": n.saturating_sub(tg_got), "doubled": tg_twice,
                         "messages": tg_messages.len(), "most_in_one_second": busiest,
                         "latency_ms": summary(&mut tg_lat)},
            "stages_ms": {"failed_to_queued": summary(&mut decide), "queued_to_delivered_record": summary(&mut deliver)},
            "processes": processes,
        }))
    }
    .await;
    stack.destroy().await;
    result
}
