//! Users for tests that act as people rather than API keys: register and log in, read mailed
//! tokens, make a superuser.

use reqwest::Method;
use serde_json::{json, Value};

use super::TestEnv;

pub const PW: &str = "correct horse battery";

pub async fn call(env: &TestEnv, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = env
        .http
        .request(method, format!("{}{path}", env.base()))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Registers, confirms the address and logs in; returns the access token.
pub async fn user(env: &TestEnv, email: &str) -> String {
    let token = unverified_user(env, email).await;
    verify(env, email).await;
    token
}

/// Registers and logs in without confirming the address.
pub async fn unverified_user(env: &TestEnv, email: &str) -> String {
    let (s, v) = call(
        env,
        Method::POST,
        "/v1/auth/register",
        "-",
        Some(json!({"email": email, "password": PW, "name": email})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    login(env, email).await
}

async fn login(env: &TestEnv, email: &str) -> String {
    login_as(env, email, PW).await
}

/// Logs in through the API; returns the access token.
pub async fn login_as(env: &TestEnv, email: &str, password: &str) -> String {
    let (s, v) = call(
        env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

/// Confirms `email` with the token of its verification mail.
pub async fn verify(env: &TestEnv, email: &str) {
    let token: String = sqlx::query_scalar(
        "SELECT params->>'token' FROM mail_outbox WHERE to_email = $1 AND kind = 'verify_email' ORDER BY id DESC LIMIT 1",
    )
    .bind(email.trim().to_lowercase())
    .fetch_one(&env.db.pool)
    .await
    .expect("verification mail");
    let (s, v) = call(
        env,
        Method::POST,
        "/v1/auth/verify-email",
        "-",
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

pub async fn token_from_mail(env: &TestEnv, to: &str) -> String {
    sqlx::query_scalar(
        "SELECT params->>'token' FROM mail_outbox WHERE to_email = $1 AND kind = 'invite' ORDER BY id DESC LIMIT 1",
    )
    .bind(to)
    .fetch_one(&env.db.pool)
    .await
    .expect("invite mail")
}

/// A superuser created with the CLI; returns the password it generated.
pub async fn new_superuser(env: &TestEnv, email: &str) -> String {
    let out = env
        .cli(&["admin", "create-user", "--email", email, "--superuser", "--json"])
        .await;
    let created: Value = serde_json::from_str(out.trim()).expect("create-user --json prints JSON");
    created["password"].as_str().expect("generated password").to_string()
}

/// A superuser created with the CLI, logged in; returns the access token.
pub async fn superuser(env: &TestEnv, email: &str) -> String {
    let password = new_superuser(env, email).await;
    let password = password.as_str();
    let (s, v) = call(
        env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

/// A verified user who created workspace `name` (so owns it), on `plan` when given: (access
/// token, workspace id).
pub async fn owned_workspace(env: &TestEnv, email: &str, name: &str, plan: Option<&str>) -> (String, String) {
    let token = user(env, email).await;
    let (s, ws) = call(
        env,
        Method::POST,
        "/v1/workspaces",
        &token,
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(s, 201, "{ws}");
    let id = ws["id"].as_str().expect("workspace id").to_string();
    if let Some(plan) = plan {
        env.cli(&["workspace", "set-plan", "--workspace", &id, "--plan", plan])
            .await;
    }
    (token, id)
}

/// A verified user `email` who joined workspace `ws` as `role`, invited by `owner` (an access
/// token of an admin there); returns their access token.
pub async fn member_of(env: &TestEnv, owner: &str, ws: &str, email: &str, role: &str) -> String {
    let token = user(env, email).await;
    let (s, v) = call(
        env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/invites"),
        owner,
        Some(json!({"email": email, "role": role})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let invite = token_from_mail(env, email).await;
    let (s, v) = call(
        env,
        Method::POST,
        "/v1/invites/accept",
        &token,
        Some(json!({"token": invite})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    token
}

/// Asks for a run of cron job `job` now and waits until it has succeeded; returns the run's id.
pub async fn run_now_and_wait(env: &TestEnv, token: &str, ws: &str, job: &str) -> String {
    let (s, run) = call(
        env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/cron/{job}/run"),
        token,
        None,
    )
    .await;
    assert!(s == 202 || s == 200, "{run}");
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    env.eventually(std::time::Duration::from_secs(20), "the run to succeed", || async {
        let (s, v) = call(
            env,
            Method::GET,
            &format!("/v1/workspaces/{ws}/executions/{run_id}"),
            token,
            None,
        )
        .await;
        (s == 200 && v["status"] == "succeeded").then_some(())
    })
    .await;
    run_id
}
