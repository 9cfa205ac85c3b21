//! Requests per minute from the plan, shared by several API processes through PostgreSQL;
//! per-address limits on routes without credentials; `RateLimit-*`, `Retry-After` and
//! `X-Request-Id` on every answer.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestEnv;
use serde_json::Value;

/// Waits for a fresh one-minute window if the current one ends within `need`, so a test's
/// requests all count against one window.
async fn fresh_window(need: u64) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let left = 60 - secs % 60;
    if left < need {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test]
async fn the_plans_rate_holds_across_two_api_processes() {
    let env = TestEnv::start().await;
    sqlx::query("INSERT INTO plans VALUES ('slow', 'Slow', 9, 0, 100, 1000, 1, 300, 10, 30, 10, 10, 10)")
        .execute(&env.db.pool)
        .await
        .unwrap();
    env.cli(&[
        "workspace",
        "set-plan",
        "--workspace",
        &env.workspace_id,
        "--plan",
        "slow",
    ])
    .await;
    let (_other, other_base) = env.start_extra_api().await;
    let bases = [env.base(), other_base];

    fresh_window(30).await;
    let (mut ok, mut limited) = (0, 0);
    for i in 0..16 {
        let url = format!("{}/v1/workspaces/{}/cron", bases[i % 2], env.workspace_id);
        let r = env.http.get(&url).bearer_auth(&env.api_key).send().await.unwrap();
        assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("10"));
        assert!(header(&r, "x-request-id").is_some_and(|id| !id.is_empty()));
        let reset: u64 = header(&r, "ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
        match r.status().as_u16() {
            200 => {
                ok += 1;
                assert_eq!(header(&r, "ratelimit-remaining"), Some((10 - ok).to_string()));
            }
            429 => {
                limited += 1;
                assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("0"));
                let retry: u64 = header(&r, "retry-after").expect("Retry-After").parse().unwrap();
                assert!((1..=60).contains(&retry), "retry after {retry}");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, limited), (10, 6), "ten a minute in all, whichever process answers");
}

#[tokio::test]
async fn routes_without_credentials_are_limited_per_address() {
    let env = TestEnv::start_with(vec![("CRONBOX_RATE_LIMIT_PER_ADDRESS", "5")]).await;
    fresh_window(20).await;
    let plans = format!("{}/v1/plans", env.base());
    for i in 0..5 {
        let r = env.http.get(&plans).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(header(&r, "ratelimit-remaining"), Some((4 - i).to_string()));
    }
    // Every unauthenticated route shares the address's budget, bad input included.
    let r = env
        .http
        .post(format!("{}/v1/auth/login", env.base()))
        .json(&serde_json::json!({"email": "x@example.com", "password": "nope nope nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(header(&r, "retry-after").is_some());
    // Health checks are never limited, and authenticated requests count against the key.
    let r = env.http.get(format!("{}/healthz", env.base())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(header(&r, "ratelimit-limit").is_none());
    let (s, _) = env.get("/cron").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made_up() {
    let env = TestEnv::start().await;
    let url = format!("{}/v1/workspaces/{}/cron", env.base(), env.workspace_id);
    let r = env
        .http
        .get(&url)
        .bearer_auth(&env.api_key)
        .header("x-request-id", "client-42.a:b_c")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("client-42.a:b_c"));
    // Unusable ids (spaces, too long) are replaced, and errors get one too.
    for bad in ["has space", &"x".repeat(129)] {
        let r = env.http.get(&url).header("x-request-id", bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let id = header(&r, "x-request-id").unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let r = env
        .http
        .get(format!("{}/no/such/route", env.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(header(&r, "x-request-id").is_some());
}
