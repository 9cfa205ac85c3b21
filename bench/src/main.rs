//! `cronbox-bench`: runs CronBox's benchmark scenarios against private CronBox processes on
//! loopback and prints one JSON object per scenario and a summary table. See `bench/README.md`.

mod pages;
mod peer;
mod receivers;
mod scenarios;
mod stack;
mod stats;
mod target;

use std::path::PathBuf;

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "cronbox-bench", about = "CronBox benchmark suite")]
struct Cli {
    /// Scenarios to run, comma-separated: w1, light, max, cron, scale, ingest, feed, fairness.
    #[arg(
        long,
        default_value = "w1,light,max,cron,scale,ingest,feed,fairness,alerts,pages",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Concurrent SSE streams of the feed scenario.
    #[arg(long, default_value_t = 2000)]
    feed_streams: usize,
    /// A seconds-long version of every scenario (CI's smoke run): tiny sizes, no peer.
    #[arg(long)]
    smoke: bool,
    /// Also run W1 and Light on the reference design and print our/peer ratios.
    #[arg(long)]
    peer: bool,
    #[arg(long, default_value = "../shared/bench-peer")]
    peer_dir: PathBuf,
    /// The cronbox binary to measure.
    #[arg(long, default_value = "target/release/cronbox")]
    cronbox: String,
    /// Offered rates of the max-sustained steps (calls/s).
    #[arg(
        long,
        default_value = "1000,1500,2000,3000,4000,6000,8000,12000,16000",
        value_delimiter = ','
    )]
    rates: Vec<usize>,
    /// Where the JSON lines are also written.
    #[arg(long, default_value = ".cronbox/bench/results.jsonl")]
    out: PathBuf,
    /// Runs in flight the fairness scenario's flooding workspace may have (its plan's cap).
    #[arg(long, default_value_t = 50)]
    fairness_cap: usize,
    /// Cron jobs created per second (sets how far ahead the cron fleet's minute is).
    #[arg(long, default_value_t = 600.0)]
    cron_create_hint: f64,
}

/// Deletes the JetStream stream a scenario's prefix made.
pub async fn nats_cleanup(url: &str, prefix: &str) {
    let Ok(Ok(client)) = tokio::time::timeout(std::time::Duration::from_secs(2), async_nats::connect(url)).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    for kind in ["RUNS", "EVENTS"] {
        let stream = format!("{}_{kind}", prefix.to_ascii_uppercase());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), js.delete_stream(stream)).await;
    }
}

fn var(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = stack::Env {
        binary: cli.cronbox.clone(),
        admin_url: var(
            "CRONBOX_TEST_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ),
        nats_url: var("CRONBOX_NATS_URL", "nats://127.0.0.1:4222"),
        extra: Vec::new(),
    };
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::File::create(&cli.out)?;
    let mut results: Vec<Value> = Vec::new();
    let s = cli.smoke;
    for name in &cli.scenarios {
        eprintln!("cronbox-bench: {name}{}", if s { " (smoke)" } else { "" });
        let r = match name.as_str() {
            "w1" => {
                scenarios::burst(
                    &env,
                    "w1",
                    if s { 400 } else { 20_000 },
                    if s { 2.0 } else { 10.0 },
                    10_000.0,
                )
                .await
            }
            "light" => {
                scenarios::burst(
                    &env,
                    "light",
                    if s { 100 } else { 2_000 },
                    if s { 1.0 } else { 10.0 },
                    10_000.0,
                )
                .await
            }
            "max" => {
                let rates: Vec<usize> = if s { vec![500] } else { cli.rates.clone() };
                scenarios::max_sustained(&env, &rates, if s { 1.0 } else { 10.0 }).await
            }
            "cron" if s => continue, // waits for a minute boundary: not seconds-long
            "cron" => scenarios::cron_fleet(&env, 50_000, cli.cron_create_hint).await,
            "scale" => scenarios::scale(&env, if s { 5_000 } else { 1_000_000 }, if s { 200 } else { 100_000 }).await,
            "ingest" => scenarios::ingest(&env, if s { 1.0 } else { 10.0 }, if s { 2 } else { 100 }).await,
            "feed" => {
                // Latency with a few watchers, then what thousands of streams cost: with every
                // stream on one loopback machine, the clients' own parsing is most of the load.
                let latency = scenarios::feed(&env, 20, if s { 20 } else { 200 }, if s { 1.0 } else { 5.0 }).await;
                let fanout = scenarios::feed(
                    &env,
                    if s { 50 } else { cli.feed_streams },
                    20,
                    if s { 1.0 } else { 5.0 },
                )
                .await;
                match (latency, fanout) {
                    (Ok(l), Ok(f)) => Ok(json!({"scenario": "feed", "latency": l, "fanout": f})),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            "fairness" => {
                // 2,000 calls held 60 s by the target against a workspace allowed 50 in flight,
                // beside a neighbour's 200 calls/s.
                scenarios::fairness(
                    &env,
                    if s { 200 } else { 2000 },
                    if s { 50 } else { 200 },
                    if s { 1.0 } else { 10.0 },
                    60_000,
                    cli.fairness_cap,
                )
                .await
            }
            "alerts" => scenarios::alerts(&env, if s { 100 } else { 1000 }).await,
            "pages" => {
                let (jobs, runs, samples) = if s { (200, 10_000, 5) } else { (10_000, 1_000_000, 200) };
                pages::pages(&env, jobs, runs, samples).await
            }
            other => anyhow::bail!("unknown scenario {other}"),
        };
        let mut r = match r {
            Ok(v) => v,
            Err(e) => json!({"scenario": name, "error": format!("{e:#}")}),
        };
        if cli.peer && !s && matches!(name.as_str(), "w1" | "light") {
            let (n, window) = if name == "w1" { (20_000, 10) } else { (2_000, 10) };
            match peer::run(&cli.peer_dir, n, window).await {
                Ok(p) => {
                    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
                        (Some(a), Some(b)) if b != 0.0 => {
                            json!(format!("{:.3}", a / b).parse::<f64>().unwrap_or(f64::NAN))
                        }
                        _ => Value::Null,
                    };
                    r["peer"] = json!({
                        "result": p,
                        "executed_per_s_ratio": ratio(&r["executed_per_s"], &p["executions_per_s"]),
                        "p99_lateness_ratio": ratio(&r["lateness_ms"]["p99"], &p["lateness_ms"]["p99"]),
                    });
                }
                Err(e) => r["peer"] = json!({"error": format!("{e:#}")}),
            }
            // Let the reference's servers finish shutting down before our next scenario.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
        use std::io::Write;
        println!("{r}");
        writeln!(out, "{r}")?;
        results.push(r);
    }
    print_table(&results);
    let failed = results.iter().filter(|r| r.get("error").is_some()).count();
    if failed > 0 {
        anyhow::bail!("{failed} scenario(s) failed");
    }
    Ok(())
}

fn f(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cpu_rss(p: &Value) -> String {
    p.as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| format!("{} {}s/{}MB", f(&p["role"]), f(&p["cpu_s"]), f(&p["peak_rss_mb"])))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// One row per measured figure, with its target.
fn print_table(results: &[Value]) {
    println!();
    println!("| scenario | offered/s | executed/s | lateness p50 / p90 / p99 / max (ms) | lost | dup | CPU s / peak RSS | target |");
    println!("|---|---|---|---|---|---|---|---|");
    let lat = |r: &Value| {
        let l = &r["lateness_ms"];
        format!(
            "{} / {} / {} / {}",
            f(&l["p50"]),
            f(&l["p90"]),
            f(&l["p99"]),
            f(&l["max"])
        )
    };
    for r in results {
        if let Some(e) = r.get("error") {
            println!("| {} | error: {} |", f(&r["scenario"]), f(e));
            continue;
        }
        match r["scenario"].as_str().unwrap_or("") {
            "w1" | "light" => {
                let target = if r["scenario"] == "w1" { "p99 ≤ 100 ms, 0 lost, 0 dup" } else { "p99 ≤ 10 ms" };
                println!(
                    "| {} | {} | {} (durable {}) | {} | {} | {} | {} | {} |",
                    f(&r["scenario"]), f(&r["offered_per_s"]), f(&r["executed_per_s"]), f(&r["durable_per_s"]),
                    lat(r), f(&r["lost"]), f(&r["duplicated"]), cpu_rss(&r["processes"]), target
                );
                if let Some(p) = r.get("peer").filter(|p| p.get("result").is_some()) {
                    let pr = &p["result"];
                    println!(
                        "| {} (reference) | {} | {} | {} | {} | {} | - | ratio executed/s {}, p99 {} |",
                        f(&r["scenario"]), f(&pr["offered_per_s"]), f(&pr["executions_per_s"]), lat(pr),
                        f(&pr["lost"]), f(&pr["duplicates_http"]), f(&p["executed_per_s_ratio"]), f(&p["p99_lateness_ratio"])
                    );
                }
            }
            "max_sustained" => {
                for s in r["steps"].as_array().into_iter().flatten() {
                    let x = &s["result"];
                    println!(
                        "| max step {} | {} | {} (durable {}) | {} | {} | {} | {} | held: {} |",
                        f(&s["offered_per_s"]), f(&x["offered_per_s"]), f(&x["executed_per_s"]), f(&x["durable_per_s"]),
                        lat(x), f(&x["lost"]), f(&x["duplicated"]), cpu_rss(&x["processes"]), f(&s["held"])
                    );
                }
                println!("| max sustained | | **{}/s held** | | | | | ≥ 5000/s |", f(&r["highest_rate_held_per_s"]));
            }
            "cron_fleet" => println!(
                "| cron fleet ({} jobs, one minute) | | drained in {} s = {}/s | {} | {} | {} | {} | ≥ max sustained |",
                f(&r["jobs"]), f(&r["drain_s"]), f(&r["drain_per_s"]), lat(r), f(&r["lost"]), f(&r["duplicated"]), cpu_rss(&r["processes"])
            ),
            "scale" => println!(
                "| scale ({} delayed + {} cron) | | cold start {} s, RSS {} MB | create p99 {} ms, list page p99 {} ms | | | {} | ≤ 15 s, ≤ 300 MB, ≤ 20 ms |",
                f(&r["pending_delayed"]), f(&r["cron_jobs"]), f(&r["dispatcher_cold_start_s"]), f(&r["dispatcher_peak_rss_mb"]),
                f(&r["api_create_ms"]["p99"]), f(&r["api_list_page_ms"]["p99"]), cpu_rss(&r["processes"])
            ),
            "ingest" => println!(
                "| API ingest | | single {}/s (p99 {} ms), batch {} items/s | | | | {} | ≥ 5000/s, ≥ 50000 items/s |",
                f(&r["single"]["created_per_s"]), f(&r["single"]["latency_ms"]["p99"]), f(&r["batch"]["items_per_s"]),
                cpu_rss(&r["single"]["processes"])
            ),
            "alerts" => {
                for (channel, target) in [("email", "p99 ≤ 2000 ms"), ("webhook", "p99 ≤ 2000 ms")] {
                    let c = &r[channel];
                    println!(
                        "| alerts: {} jobs failing at once, {channel} (commit → provider; {} mails) | | | p50 {} / p99 {} / max {} ms | {} | {} | {} | {target} |",
                        f(&r["jobs"]), f(&c["mails"]), f(&c["latency_ms"]["p50"]), f(&c["latency_ms"]["p99"]),
                        f(&c["latency_ms"]["max"]), f(&c["lost"]), f(&c["doubled"]), cpu_rss(&r["processes"])
                    );
                }
                let t = &r["telegram"];
                println!(
                    "| alerts: {} jobs failing at once, telegram (one chat; {} messages, at most {} in a second) | | | p50 {} / p99 {} / max {} ms | {} | {} | {} | ≤ 1 message/s per chat |",
                    f(&r["jobs"]), f(&t["messages"]), f(&t["most_in_one_second"]), f(&t["latency_ms"]["p50"]),
                    f(&t["latency_ms"]["p99"]), f(&t["latency_ms"]["max"]), f(&t["lost"]), f(&t["doubled"]),
                    cpu_rss(&r["processes"])
                );
            }
            "fairness" => println!(
                "| fairness ({} calls at a tarpit, cap {}; neighbour {}/s) | | | neighbour p99 {} ms alone, {} ms with the flood = ×{} | {} | {} | {} | ≤ ×2 |",
                f(&r["flood_calls"]), f(&r["flooder_max_runs_in_flight"]), f(&r["victim_calls_per_s"]),
                f(&r["victim_alone_lateness_ms"]["p99"]), f(&r["victim_with_flood_lateness_ms"]["p99"]), f(&r["p99_ratio"]),
                f(&r["lost"]), f(&r["duplicated"]), cpu_rss(&r["processes"])
            ),
            "pages" => {
                if let Some(pages) = r["page_ms"].as_object() {
                    for (page, ms) in pages {
                        println!(
                            "| web page {page} ({} cron jobs, {} executions) | | | p50 {} / p99 {} / max {} ms | | | {} | p99 ≤ 50 ms |",
                            f(&r["cron_jobs"]), f(&r["executions"]), f(&ms["p50"]), f(&ms["p99"]), f(&ms["max"]),
                            cpu_rss(&r["processes"])
                        );
                    }
                }
            }
            "feed" => {
                for r in [&r["latency"], &r["fanout"]] {
                    println!(
                        "| live feed ({} SSE streams, {} msgs each) | | delivered to all: {} | feed latency {} | short {} | extra {} | serve RSS {} → {} MB idle, {} KB/stream | commit → client ≤ 100 ms |",
                        f(&r["streams"]), f(&r["messages_per_stream"]), f(&r["all_delivered"]),
                        format!("{} / {} / {} / {}", f(&r["feed_latency_ms"]["p50"]), f(&r["feed_latency_ms"]["p90"]), f(&r["feed_latency_ms"]["p99"]), f(&r["feed_latency_ms"]["max"])),
                        f(&r["streams_short"]), f(&r["streams_with_extra"]),
                        f(&r["serve_rss_mb"]["before_streams"]), f(&r["serve_rss_mb"]["with_streams_idle"]), f(&r["rss_per_stream_kb"])
                    );
                }
            }
            _ => {}
        }
    }
}
