//! Slow, hanging and trickling targets do not stall other runs: concurrency is bounded per
//! target host as well as per process, and the request timeout covers the whole response.

use crate::common;

use std::time::Duration;

use common::{Target, TestEnv};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers with headers at once, then one body byte a second, for ever.
async fn trickler() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
                    .await;
                for _ in 0..120 {
                    if sock.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn hanging_and_trickling_hosts_do_not_hold_up_other_hosts() {
    let env = TestEnv::start_with(vec![
        ("CRONBOX_EXECUTOR_CONCURRENCY", "6"),
        ("CRONBOX_EXECUTOR_PER_HOST_CONCURRENCY", "2"),
    ])
    .await;
    let fast = Target::start().await;
    let trickle = trickler().await;

    // Six calls to a host that takes 15 s and two to one that never finishes its body: without
    // a per-host bound they would take every one of the six slots.
    for _ in 0..6 {
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": env.target_url("/slow/15000/hang"), "delay_seconds": 0, "timeout_seconds": 20}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let mut trickling = Vec::new();
    for _ in 0..2 {
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": format!("http://127.0.0.1:{trickle}/"), "delay_seconds": 0, "timeout_seconds": 3}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        trickling.push(v["run_id"].as_str().unwrap().to_string());
    }
    env.eventually(Duration::from_secs(10), "the slow host to be busy", || async {
        (env.target.arrivals_at("/slow/15000/hang").len() >= 2).then_some(())
    })
    .await;

    let mut quick = Vec::new();
    for i in 0..5 {
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": fast.url(&format!("/quick/{i}")), "delay_seconds": 0}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        quick.push(v["run_id"].as_str().unwrap().to_string());
    }
    // Well before the slow host's first answer (15 s).
    for run in &quick {
        let r = env.wait_execution(run, Duration::from_secs(10)).await;
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    assert_eq!(
        env.target.arrivals_at("/slow/15000/hang").len(),
        2,
        "the slow host never had more than its two calls at once"
    );
    for run in &trickling {
        let r = env.wait_execution(run, Duration::from_secs(20)).await;
        assert_eq!(
            (r["status"].as_str(), r["error_type"].as_str()),
            (Some("failed"), Some("timeout")),
            "{r}"
        );
    }
}
