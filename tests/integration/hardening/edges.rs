//! The smaller holes: the reconciler reaches every stuck run however long the queue, invitations
//! can be listed and withdrawn, a reset link ends the others, mail per address is bounded,
//! credentials are short-lived, and the HTTP server bounds slow heads and bodies and refuses an
//! oversized anonymous body before reading it.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::users::{call, token_from_mail, user, PW};
use crate::common::{nats_url, TestEnv};

#[tokio::test]
async fn the_reconciler_reaches_a_lost_run_behind_a_backlog() {
    let mut env = TestEnv::start_with(vec![
        ("CRONBOX_RECONCILE_BATCH", "3"),
        ("CRONBOX_RECONCILE_AFTER_SECONDS", "1"),
    ])
    .await;
    env.stop_server().await;
    // No executor: everything dispatched waits in the stream.
    let _api = env.spawn_role("api", &[]);
    let _dispatcher = env.spawn_role("dispatcher", &[]);
    env.wait_ready().await;
    let mut runs = Vec::new();
    for i in 0..10 {
        let at = (chrono::Utc::now() + chrono::Duration::milliseconds(300 + 20 * i)).to_rfc3339();
        let (s, v) = env
            .post(
                "/delayed",
                json!({"url": env.target_url(&format!("/q/{i}")), "execute_at": at}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        runs.push(v["run_id"].as_str().unwrap().to_string());
    }
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.expect("nats"));
    let mut stream = js
        .get_stream(format!("{}_RUNS", env.prefix.to_ascii_uppercase()))
        .await
        .expect("the runs stream");
    let subject = |run: &str| format!("{}.runs.dispatch.{run}", env.prefix);
    let lost = runs.last().unwrap().clone();
    let seq = env
        .eventually(Duration::from_secs(20), "the last run queued", || async {
            stream
                .get_last_raw_message_by_subject(&subject(&lost))
                .await
                .ok()
                .map(|m| m.sequence)
        })
        .await;
    // JetStream loses the newest one; nine older ones wait in front of it.
    stream.delete_message(seq).await.expect("delete");
    let back = env
        .eventually(Duration::from_secs(60), "the lost run published again", || async {
            stream.get_last_raw_message_by_subject(&subject(&lost)).await.ok()
        })
        .await;
    assert!(back.sequence > seq);
    let _ = stream.info().await;
    let _executor = env.spawn_role("executor", &[]);
    for (i, run) in runs.iter().enumerate() {
        let exec = env.wait_execution(run, Duration::from_secs(30)).await;
        assert_eq!(exec["status"], "succeeded");
        assert_eq!(env.target.arrivals_at(&format!("/q/{i}")).len(), 1);
    }
}

#[tokio::test]
async fn invitations_are_listed_and_withdrawn() {
    let env = TestEnv::start().await;
    let owner = user(&env, "owner@example.com").await;
    let (_, ws) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &owner,
        Some(json!({"name": "Team"})),
    )
    .await;
    let ws = ws["id"].as_str().unwrap().to_string();
    let p = |path: &str| format!("/v1/workspaces/{ws}{path}");
    let (s, inv) = call(
        &env,
        Method::POST,
        &p("/invites"),
        &owner,
        Some(json!({"email": "guest@example.com"})),
    )
    .await;
    assert_eq!(s, 201, "{inv}");
    let (s, list) = call(&env, Method::GET, &p("/invites"), &owner, None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"][0]["id"], inv["id"]);
    assert_eq!(list["items"][0]["email"], "guest@example.com");
    let token = token_from_mail(&env, "guest@example.com").await;
    let (s, _) = call(
        &env,
        Method::DELETE,
        &p(&format!("/invites/{}", inv["id"].as_str().unwrap())),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (_, list) = call(&env, Method::GET, &p("/invites"), &owner, None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0));
    let guest = user(&env, "guest@example.com").await;
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/invites/accept",
        &guest,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_invite")), "{v}");
    let (s, _) = call(
        &env,
        Method::DELETE,
        &p(&format!("/invites/{}", inv["id"].as_str().unwrap())),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 404, "withdrawn once");
}

async fn reset_tokens(env: &TestEnv, email: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT params->>'token' FROM mail_outbox WHERE to_email = $1 AND kind = 'reset_password' ORDER BY id",
    )
    .bind(email)
    .fetch_all(&env.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_new_reset_link_ends_the_older_ones_and_mail_per_address_is_bounded() {
    let env = TestEnv::start().await;
    user(&env, "r@example.com").await;
    let reset = || async {
        call(
            &env,
            Method::POST,
            "/v1/auth/password-reset",
            "-",
            Some(json!({"email": "r@example.com"})),
        )
        .await
        .0
    };
    assert_eq!(reset().await, 202);
    assert_eq!(reset().await, 202);
    let tokens = reset_tokens(&env, "r@example.com").await;
    assert_eq!(tokens.len(), 2);
    let confirm = |t: String| {
        let env = &env;
        async move {
            call(
                env,
                Method::POST,
                "/v1/auth/password-reset/confirm",
                "-",
                Some(json!({"token": t, "password": "another horse battery"})),
            )
            .await
            .0
        }
    };
    assert_eq!(confirm(tokens[0].clone()).await, 400, "the older link still worked");
    assert_eq!(confirm(tokens[1].clone()).await, 204);
    // A burst of requests: the address gets its hourly allowance of mail, no more (the answer
    // is the same: it must not tell whether an account exists).
    for _ in 0..10 {
        assert_eq!(reset().await, 202);
    }
    let mails: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE to_email = 'r@example.com'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(mails, 5, "mails to one address in an hour");
    let _ = PW;
}

#[tokio::test]
async fn subscription_credentials_are_short_lived() {
    let env = TestEnv::start().await;
    let (s, v) = env.post("/event-subscriptions", json!({"expires_in_days": 365})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("expires_in_days")), "{v}");
}

/// Writes `head` (and `body`) on a raw connection; returns what came back and how long it took.
async fn raw(env: &TestEnv, head: &str, body: &[u8], wait: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", env.port))
        .await
        .expect("connect");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
}

#[tokio::test]
async fn slow_heads_and_bodies_are_cut_off_and_big_anonymous_bodies_are_not_read() {
    let env = TestEnv::start().await;
    // A head that never ends: the connection is closed.
    let (out, took) = raw(
        &env,
        "GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        took < Duration::from_secs(15),
        "a half-sent head held the connection {took:?}"
    );
    assert!(!out.contains("200 OK"), "{out}");
    // A body that never arrives: 408.
    let head =
        "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let (out, took) = raw(&env, head, b"{\"email\"", Duration::from_secs(20)).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(took < Duration::from_secs(15));
    // An anonymous body announced at 5 MB: refused at once, nothing of it read.
    let head = "POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n";
    let (out, took) = raw(&env, head, b"", Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
