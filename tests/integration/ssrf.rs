//! The SSRF guard with its default setting (on), on real servers: hostile URLs are refused at
//! creation, and what gets past creation (a redirect, a name that resolves privately) is refused
//! at execution as `blocked_target`. A trap listener on 127.0.0.1 proves nothing reached it.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestEnv;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counts every connection made to it.
async fn trap() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    (port, hits)
}

/// An HTTP server on `ip` that answers every request with `status` and `Location: location`.
async fn redirector(ip: &str, status: u16, location: String) -> u16 {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
                let reply = format!(
                    "HTTP/1.1 {status} Moved\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

/// This machine's name: /etc/hosts maps it to a loopback address, which makes it a name that
/// resolves to 127.0.0.1 without any DNS server.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[tokio::test]
async fn hostile_urls_are_refused_at_creation_and_reach_nothing() {
    let env = TestEnv::start_with(vec![("CRONBOX_ALLOW_PRIVATE_TARGETS", "0")]).await;
    let (t, hits) = trap().await;
    let host = hostname();
    let hostile: Vec<String> = [
        // loopback, every spelling
        "http://127.0.0.1:{t}/",
        "http://127.1:{t}/",
        "http://127.0.1:{t}/",
        "http://127.000.000.001:{t}/",
        "http://2130706433:{t}/",
        "http://0x7f000001:{t}/",
        "http://0x7f.0.0.1:{t}/",
        "http://0177.0.0.1:{t}/",
        "http://0177.1:{t}/",
        "http://127.0.0.1.:{t}/",
        "http://%31%32%37.0.0.1:{t}/",
        "http://localhost:{t}/",
        "http://LOCALHOST:{t}/",
        "http://localhost.:{t}/",
        "http://foo.localhost:{t}/",
        "http://{host}:{t}/",
        "https://{host}:{t}/",
        "http://[::1]:{t}/",
        "http://[0:0:0:0:0:0:0:1]:{t}/",
        "http://[::ffff:127.0.0.1]:{t}/",
        "http://[::ffff:7f00:1]:{t}/",
        "http://[::127.0.0.1]:{t}/",
        "http://[64:ff9b::7f00:1]:{t}/",
        "http://[2002:7f00:1::]:{t}/",
        "http://[fe80::1%25lo]:{t}/",
        // unspecified, "this network"
        "http://0:{t}/",
        "http://0.0.0.0:{t}/",
        "http://[::]:{t}/",
        // userinfo tricks
        "http://example.com@127.0.0.1:{t}/",
        "http://user:pass@127.0.0.1:{t}/",
        "http://127.0.0.1:{t}#@example.com/",
        "http://127.0.0.1:{t}\\@example.com/",
        // private, link-local, metadata, CGNAT, reserved, multicast, broadcast
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[fec0::1]/",
        "http://[ff02::1]/",
        "http://224.0.0.251/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://198.18.0.1/",
        "http://192.0.0.170/",
        // not http
        "ftp://127.0.0.1:{t}/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{t}/",
    ]
    .iter()
    .map(|u| u.replace("{t}", &t.to_string()).replace("{host}", &host))
    .collect();
    assert!(hostile.len() >= 40);

    let mut blocked = 0;
    for url in &hostile {
        for (path, body) in [
            ("/delayed", json!({"url": url, "delay_seconds": 0})),
            ("/cron", json!({"name": "x", "url": url, "schedule": "* * * * * *"})),
            (
                "/delayed",
                json!({"url": "https://example.com/", "delay_seconds": 60, "callback_url": url}),
            ),
        ] {
            let (s, v) = env.post(path, body.clone()).await;
            assert_eq!(s, 400, "{url} via {path} was accepted: {v}");
            let code = v["error"]["code"].as_str().unwrap_or_default();
            assert!(code == "blocked_target" || code == "invalid_url", "{url}: {v}");
            let field = if body.get("callback_url").is_some() {
                "callback_url"
            } else {
                "url"
            };
            assert_eq!(v["error"]["field"], field, "{url}: {v}");
            blocked += usize::from(code == "blocked_target");
        }
    }
    assert!(
        blocked >= 3 * 35,
        "most are refused for their address, not their syntax: {blocked}"
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Job'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "nothing was stored");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "something reached the trap");
}

#[tokio::test]
async fn redirects_and_names_to_private_addresses_fail_at_execution() {
    let (t, hits) = trap().await;
    // The guard is on, with one block allowed so a first hop exists: 127.0.0.2 plays a public
    // server. Proxy variables point at the trap and must be ignored.
    let trap_url = format!("http://127.0.0.1:{t}");
    let env = TestEnv::start_with(vec![
        ("CRONBOX_ALLOW_PRIVATE_TARGETS", "0"),
        ("CRONBOX_ALLOWED_TARGET_CIDRS", "127.0.0.2/32"),
        ("HTTP_PROXY", trap_url.as_str()),
        ("http_proxy", trap_url.as_str()),
        ("HTTPS_PROXY", trap_url.as_str()),
        ("ALL_PROXY", trap_url.as_str()),
    ])
    .await;
    let host = hostname();
    let mut cases = Vec::new();
    for (status, location) in [
        (302, format!("http://127.0.0.1:{t}/")),
        (307, format!("http://[::1]:{t}/")),
        (301, format!("http://{host}:{t}/")),
        (308, format!("http://0x7f.1:{t}/")),
        (303, format!("http://[::ffff:127.0.0.1]:{t}/")),
    ] {
        let port = redirector("127.0.0.2", status, location.clone()).await;
        cases.push((format!("http://127.0.0.2:{port}/hop"), location));
    }
    let mut runs = Vec::new();
    for (url, location) in &cases {
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": url, "method": "POST", "body": "{}", "delay_seconds": 0}),
            )
            .await;
        assert_eq!(s, 201, "{url}: {v}");
        runs.push((v["run_id"].as_str().unwrap().to_string(), location.clone()));
    }
    for (run_id, location) in runs {
        let run = env.wait_execution(&run_id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "failed", "redirect to {location}: {run}");
        assert_eq!(run["error_type"], "blocked_target", "redirect to {location}: {run}");
    }
    // An allowed block is allowed: a plain call to 127.0.0.2 goes through (not via the proxy).
    let ok_port = redirector("127.0.0.2", 204, "/".into()).await;
    let (s, v) = env
        .post(
            "/delayed",
            json!({"url": format!("http://127.0.0.2:{ok_port}/"), "delay_seconds": 0}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let run = env
        .wait_execution(v["run_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "something reached the trap");
}
