//! A parallel burst of wrong passwords gets exactly the throttle's allowance of tries, and
//! password hashing is bounded: beyond its slots a request is refused with 503, not queued
//! without limit.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::json;

use crate::common::users::{call, user, PW};
use crate::common::TestEnv;

#[tokio::test]
async fn a_parallel_burst_of_wrong_passwords_gets_five_tries() {
    let env = TestEnv::start_with(vec![("CRONBOX_PASSWORD_HASH_CONCURRENCY", "64")]).await;
    user(&env, "victim@example.com").await;
    let burst = (0..40).map(|i| {
        let env = &env;
        async move {
            call(
                env,
                Method::POST,
                "/v1/auth/login",
                "-",
                Some(json!({"email": "victim@example.com", "password": format!("guess {i}")})),
            )
            .await
            .0
        }
    });
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for s in futures::future::join_all(burst).await {
        *counts.entry(s).or_default() += 1;
    }
    assert_eq!(counts.get(&401), Some(&5), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&35), "{counts:?}");
    // The right password is refused too until the window ends: the account is locked, not the
    // guesser.
    let (s, _) = call(
        &env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": "victim@example.com", "password": PW})),
    )
    .await;
    assert_eq!(s, 429);
}

#[tokio::test]
async fn password_hashing_beyond_its_slots_is_refused_with_503() {
    let env = TestEnv::start_with(vec![("CRONBOX_PASSWORD_HASH_CONCURRENCY", "1")]).await;
    // Distinct accounts (unknown ones cost a dummy hash), so the per-account throttle does not
    // answer first; fewer than the per-address allowance.
    let burst = (0..24).map(|i| {
        let env = &env;
        async move {
            let resp = env
                .http
                .post(format!("{}/v1/auth/login", env.base()))
                .json(&json!({"email": format!("nobody{i}@example.com"), "password": "wrong password"}))
                .send()
                .await
                .expect("request");
            let retry_after = resp.headers().get("retry-after").is_some();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (
                status,
                retry_after,
                body["error"]["code"].as_str().unwrap_or_default().to_string(),
            )
        }
    });
    let results = futures::future::join_all(burst).await;
    assert!(results.iter().all(|(s, ..)| matches!(s, 401 | 503)), "{results:?}");
    let busy: Vec<_> = results.iter().filter(|(s, ..)| *s == 503).collect();
    assert!(
        !busy.is_empty(),
        "one slot for 24 parallel hashes refused none: {results:?}"
    );
    assert!(busy.iter().all(|(_, retry, code)| *retry && code == "busy"), "{busy:?}");
    assert!(results.iter().any(|(s, ..)| *s == 401));
}
