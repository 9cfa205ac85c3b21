//! A live stream ends (`stream_error` `access_revoked`) as soon as its caller loses access: a
//! revoked key, a removed member, a logged-out session, a deleted workspace. And one workspace
//! cannot hold every stream slot of a process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;

use crate::common::users::{call, owned_workspace, token_from_mail, user};
use crate::common::TestEnv;

/// An open stream whose text a task collects; `ended` once the server closed it.
struct Sse {
    status: u16,
    text: Arc<Mutex<String>>,
    ended: Arc<Mutex<bool>>,
}

impl Sse {
    async fn open(env: &TestEnv, ws: &str, token: &str) -> Self {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/workspaces/{ws}/executions/stream", env.base()))
            .bearer_auth(token)
            .send()
            .await
            .expect("open stream");
        let status = resp.status().as_u16();
        let text = Arc::new(Mutex::new(String::new()));
        let ended = Arc::new(Mutex::new(false));
        let (t, e) = (text.clone(), ended.clone());
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                t.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk));
            }
            *e.lock().unwrap() = true;
        });
        let sse = Self { status, text, ended };
        if status == 200 {
            env.eventually(Duration::from_secs(10), "the stream to connect", || async {
                sse.text.lock().unwrap().contains(": connected").then_some(())
            })
            .await;
        }
        sse
    }

    async fn revoked(&self, env: &TestEnv, what: &str) {
        env.eventually(Duration::from_secs(10), what, || async {
            let text = self.text.lock().unwrap().clone();
            (text.contains("event: stream_error") && text.contains("access_revoked") && *self.ended.lock().unwrap())
                .then_some(())
        })
        .await;
    }

    fn still_open(&self) -> bool {
        !*self.ended.lock().unwrap() && !self.text.lock().unwrap().contains("stream_error")
    }
}

#[tokio::test]
async fn streams_end_when_access_ends() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "owner@example.com", "Streams", Some("business")).await;
    let p = |path: &str| format!("/v1/workspaces/{ws}{path}");

    // A second key, revoked while its stream is open; the first key's stream goes on.
    let (_, k1) = call(&env, Method::POST, &p("/keys"), &owner, Some(json!({"name": "one"}))).await;
    let (_, k2) = call(&env, Method::POST, &p("/keys"), &owner, Some(json!({"name": "two"}))).await;
    let stays = Sse::open(&env, &ws, k1["key"].as_str().unwrap()).await;
    let revoked = Sse::open(&env, &ws, k2["key"].as_str().unwrap()).await;
    let (s, _) = call(
        &env,
        Method::DELETE,
        &p(&format!("/keys/{}", k2["id"].as_str().unwrap())),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 204);
    revoked.revoked(&env, "the revoked key's stream to end").await;
    assert!(stays.still_open(), "another key's stream ended too");

    // A member removed; a session logged out.
    let member = user(&env, "member@example.com").await;
    let (s, v) = call(
        &env,
        Method::POST,
        &p("/invites"),
        &owner,
        Some(json!({"email": "member@example.com", "role": "member"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let invite = token_from_mail(&env, "member@example.com").await;
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/invites/accept",
        &member,
        Some(json!({"token": invite})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let member_id = v["user_id"].as_str().map(str::to_string);
    let as_member = Sse::open(&env, &ws, &member).await;
    let (_, me) = call(&env, Method::GET, "/v1/me", &member, None).await;
    let member_id = member_id
        .or_else(|| me["id"].as_str().map(str::to_string))
        .expect("member id");
    let (s, v) = call(&env, Method::DELETE, &p(&format!("/members/{member_id}")), &owner, None).await;
    assert_eq!(s, 204, "{v}");
    as_member.revoked(&env, "the removed member's stream to end").await;

    let as_owner = Sse::open(&env, &ws, &owner).await;
    let (s, _) = call(&env, Method::POST, "/v1/auth/logout", &owner, None).await;
    assert_eq!(s, 204);
    as_owner.revoked(&env, "the logged-out session's stream to end").await;

    // The workspace deleted (by a new session of its owner): every stream of it ends.
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": "owner@example.com", "password": crate::common::users::PW})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let owner = v["access_token"].as_str().unwrap().to_string();
    let (s, _) = call(&env, Method::DELETE, &p(""), &owner, None).await;
    assert_eq!(s, 204);
    stays.revoked(&env, "the deleted workspace's streams to end").await;
}

#[tokio::test]
async fn one_workspace_cannot_take_every_stream() {
    let env = TestEnv::start_with(vec![("CRONBOX_SSE_MAX_STREAMS_PER_WORKSPACE", "2")]).await;
    let a = Sse::open(&env, &env.workspace_id, &env.api_key).await;
    let b = Sse::open(&env, &env.workspace_id, &env.api_key).await;
    assert_eq!((a.status, b.status), (200, 200));
    let c = Sse::open(&env, &env.workspace_id, &env.api_key).await;
    assert_eq!(c.status, 429, "a third stream of one workspace");
    // Another workspace still gets one.
    let out = env
        .cli(&["workspace", "create", "--name", "Other", "--plan", "business", "--json"])
        .await;
    let other: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let d = Sse::open(
        &env,
        other["workspace_id"].as_str().unwrap(),
        other["api_key"].as_str().unwrap(),
    )
    .await;
    assert_eq!(d.status, 200);
    drop(a);
}
