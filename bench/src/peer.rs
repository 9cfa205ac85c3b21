//! The reference design (`../shared/bench-peer`) on the same workload, for our/peer ratios.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::process::Command;

/// Runs the reference harness for `n` calls over `window` seconds in its best configuration
/// (2 workers × 200 jobs) and returns its JSON line.
pub async fn run(dir: &Path, n: usize, window: u64) -> anyhow::Result<Value> {
    let work = std::env::temp_dir().join(format!("cronbox-bench-peer-{}", std::process::id()));
    let status = Command::new("bash")
        .arg(dir.join("run.sh"))
        .env("N", n.to_string())
        .env("WINDOW", window.to_string())
        .env("SCENARIOS", "2:200")
        .env("WORK", &work)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("run the reference harness")?;
    if !status.success() {
        bail!("the reference harness failed ({status})");
    }
    let text = std::fs::read_to_string(work.join("results.jsonl")).context("reference results")?;
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("no reference result")?;
    Ok(serde_json::from_str(last)?)
}
