//! Accounts end to end: sign-up, login, refresh rotation and reuse detection, logout, e-mail
//! verification, password reset, login throttling, and bad input on every auth route.

use crate::common;

use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

async fn call(
    env: &TestEnv,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = env.http.request(method, format!("{}{path}", env.base()));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
}

async fn post(env: &TestEnv, path: &str, body: Value) -> (u16, Value) {
    let (s, v, _) = call(env, Method::POST, path, None, Some(body)).await;
    (s, v)
}

/// The token in the newest mail of `kind` to `to`.
async fn mailed_token(env: &TestEnv, to: &str, kind: &str) -> String {
    sqlx::query_scalar(
        "SELECT params->>'token' FROM mail_outbox WHERE to_email = $1 AND kind = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(to)
    .bind(kind)
    .fetch_one(&env.db.pool)
    .await
    .expect("a mail in the outbox")
}

const PW: &str = "correct horse battery";

#[tokio::test]
async fn register_login_refresh_rotation_reuse_and_logout() {
    let env = TestEnv::start().await;
    let (s, user) = post(
        &env,
        "/v1/auth/register",
        json!({"email": " Anna@Example.com ", "password": PW, "name": "Anna"}),
    )
    .await;
    assert_eq!(s, 201, "{user}");
    assert_eq!(user["email"], "anna@example.com");
    assert_eq!(user["email_verified"], false);
    assert!(user["id"].is_string());
    // The password is stored as an argon2id hash, never in clear.
    let stored: String = sqlx::query_scalar("SELECT payload::text FROM events WHERE aggregate_type = 'User'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(stored.contains("$argon2id$") && !stored.contains(PW));
    let (s, v) = post(
        &env,
        "/v1/auth/register",
        json!({"email": "anna@example.com", "password": PW, "name": "Other"}),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("email_taken")));

    // Wrong password and unknown account: the same answer.
    let (s1, v1) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "anna@example.com", "password": "wrong password!"}),
    )
    .await;
    let (s2, v2) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "nobody@example.com", "password": PW}),
    )
    .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(v1, v2);
    assert_eq!(v1["error"]["code"], "invalid_credentials");

    let (s, t1) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "ANNA@example.com", "password": PW}),
    )
    .await;
    assert_eq!(s, 200, "{t1}");
    assert_eq!(t1["expires_in"], 900);
    let access1 = t1["access_token"].as_str().unwrap().to_string();
    let refresh1 = t1["refresh_token"].as_str().unwrap().to_string();
    let (s, me, _) = call(&env, Method::GET, "/v1/me", Some(&access1), None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["email"], "anna@example.com");
    // Refresh tokens are stored hashed.
    let sessions: String =
        sqlx::query_scalar("SELECT string_agg(payload::text, ' ') FROM events WHERE aggregate_type = 'Session'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(!sessions.contains(&refresh1[refresh1.len() - 64..]));

    // Rotation: a new pair; the old refresh token is spent.
    let (s, t2) = post(&env, "/v1/auth/refresh", json!({"refresh_token": refresh1})).await;
    assert_eq!(s, 200, "{t2}");
    let refresh2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    let access2 = t2["access_token"].as_str().unwrap().to_string();
    // Reuse of the spent token: refused, and the whole family dies with it.
    let (s, v) = post(&env, "/v1/auth/refresh", json!({"refresh_token": refresh1})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("invalid_token")));
    let (s, _) = post(&env, "/v1/auth/refresh", json!({"refresh_token": refresh2})).await;
    assert_eq!(s, 401, "the rotated-to token must die with its family");
    let (s, _, _) = call(&env, Method::GET, "/v1/me", Some(&access2), None).await;
    assert_eq!(s, 401, "access tokens of a revoked family stop working");

    // A second login, then logout.
    let (_, t3) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "anna@example.com", "password": PW}),
    )
    .await;
    let access3 = t3["access_token"].as_str().unwrap().to_string();
    let (s, _, _) = call(&env, Method::POST, "/v1/auth/logout", Some(&access3), None).await;
    assert_eq!(s, 204);
    let (s, _, _) = call(&env, Method::GET, "/v1/me", Some(&access3), None).await;
    assert_eq!(s, 401);
    let (s, _) = post(&env, "/v1/auth/refresh", json!({"refresh_token": t3["refresh_token"]})).await;
    assert_eq!(s, 401);

    // Neither an API key nor garbage is a user token.
    for bad in [env.api_key.as_str(), "x.y.z", "nonsense"] {
        let (s, _, h) = call(&env, Method::GET, "/v1/me", Some(bad), None).await;
        assert_eq!(s, 401);
        assert!(h.contains_key("www-authenticate"));
    }
    let (s, _, _) = call(&env, Method::GET, "/v1/me", None, None).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn email_verification_and_password_reset_are_single_use() {
    let env = TestEnv::start().await;
    let (s, _) = post(
        &env,
        "/v1/auth/register",
        json!({"email": "bob@example.com", "password": PW, "name": "Bob"}),
    )
    .await;
    assert_eq!(s, 201);
    let token = mailed_token(&env, "bob@example.com", "verify_email").await;
    let (s, user) = post(&env, "/v1/auth/verify-email", json!({"token": token})).await;
    assert_eq!(s, 200, "{user}");
    assert_eq!(user["email_verified"], true);
    let (s, v) = post(&env, "/v1/auth/verify-email", json!({"token": token})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("token")));

    let (_, old) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "bob@example.com", "password": PW}),
    )
    .await;
    // Unknown addresses get the same 202 and no mail.
    let (s, _) = post(&env, "/v1/auth/password-reset", json!({"email": "nobody@example.com"})).await;
    assert_eq!(s, 202);
    let mails: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE to_email = 'nobody@example.com'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(mails, 0);
    let (s, _) = post(&env, "/v1/auth/password-reset", json!({"email": "bob@example.com"})).await;
    assert_eq!(s, 202);
    let token = mailed_token(&env, "bob@example.com", "reset_password").await;
    let (s, v) = post(
        &env,
        "/v1/auth/password-reset/confirm",
        json!({"token": token, "password": "short"}),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("password")));
    let new_pw = "a much better passphrase";
    let (s, _) = post(
        &env,
        "/v1/auth/password-reset/confirm",
        json!({"token": token, "password": new_pw}),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = post(
        &env,
        "/v1/auth/password-reset/confirm",
        json!({"token": token, "password": new_pw}),
    )
    .await;
    assert_eq!(s, 400, "a reset token works once");
    // Sessions from before the reset are over; the old password is dead, the new one works.
    let (s, _) = post(&env, "/v1/auth/refresh", json!({"refresh_token": old["refresh_token"]})).await;
    assert_eq!(s, 401);
    let (s, _) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "bob@example.com", "password": PW}),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "bob@example.com", "password": new_pw}),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let env = TestEnv::start().await;
    post(
        &env,
        "/v1/auth/register",
        json!({"email": "carl@example.com", "password": PW, "name": "Carl"}),
    )
    .await;
    for i in 0..5 {
        let (s, _) = post(
            &env,
            "/v1/auth/login",
            json!({"email": "carl@example.com", "password": format!("wrong password {i}")}),
        )
        .await;
        assert_eq!(s, 401);
    }
    // Locked now, even with the right password; the answer says when to come back.
    let (s, v, h) = call(
        &env,
        Method::POST,
        "/v1/auth/login",
        None,
        Some(json!({"email": "carl@example.com", "password": PW})),
    )
    .await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    let retry: u64 = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=900).contains(&retry));
    // Another account from the same address is not locked.
    post(
        &env,
        "/v1/auth/register",
        json!({"email": "dora@example.com", "password": PW, "name": "Dora"}),
    )
    .await;
    let (s, _) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "dora@example.com", "password": PW}),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn bad_input_on_auth_routes_is_a_clear_4xx() {
    let env = TestEnv::start().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/auth/register",
            json!({"email": "not-an-email", "password": PW, "name": "X"}),
            "email",
        ),
        (
            "/v1/auth/register",
            json!({"email": "x@example.com", "password": "short", "name": "X"}),
            "password",
        ),
        (
            "/v1/auth/register",
            json!({"email": "x@example.com", "password": PW, "name": ""}),
            "name",
        ),
        (
            "/v1/auth/register",
            json!({"email": "x@example.com", "password": PW}),
            "name",
        ),
        (
            "/v1/auth/register",
            json!({"email": "x@example.com", "password": 12345678901i64, "name": "X"}),
            "password",
        ),
        (
            "/v1/auth/register",
            json!({"email": "x@example.com", "password": PW, "name": "X", "admin": true}),
            "admin",
        ),
        ("/v1/auth/login", json!({"email": "x@example.com"}), "password"),
        ("/v1/auth/login", json!({"password": PW}), "email"),
        ("/v1/auth/refresh", json!({}), "refresh_token"),
        ("/v1/auth/verify-email", json!({"token": 5}), "token"),
        ("/v1/auth/password-reset", json!({"email": "nope"}), "email"),
        ("/v1/auth/password-reset/confirm", json!({"token": "t"}), "password"),
    ];
    for (path, body, field) in cases {
        let (s, v) = post(&env, path, body.clone()).await;
        assert_eq!(s, 400, "{path} {body}: {v}");
        assert_eq!(v["error"]["field"], field, "{path} {body}: {v}");
    }
    for path in ["/v1/auth/register", "/v1/auth/login", "/v1/auth/refresh"] {
        let resp = env
            .http
            .post(format!("{}{path}", env.base()))
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["code"].is_string());
    }
    let (s, v) = post(&env, "/v1/auth/refresh", json!({"refresh_token": "cbr_garbage"})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("invalid_token")));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'User'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(users, 0, "refused input stored nothing");
}

#[tokio::test]
async fn admin_create_user_prints_a_working_login() {
    let env = TestEnv::start().await;
    let out = env
        .cli(&[
            "admin",
            "create-user",
            "--email",
            "Root@Example.com",
            "--superuser",
            "--json",
        ])
        .await;
    let created: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(created["email"], "root@example.com");
    let password = created["password"].as_str().expect("generated password");
    assert!(password.len() >= 10);
    let (s, t) = post(
        &env,
        "/v1/auth/login",
        json!({"email": "root@example.com", "password": password}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let (_, me, _) = call(&env, Method::GET, "/v1/me", t["access_token"].as_str(), None).await;
    assert_eq!(me["superuser"], true);
    assert_eq!(me["email_verified"], true);
}
