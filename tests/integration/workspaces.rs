//! Workspaces, teams and roles through the API: user tokens on workspace routes, invitations,
//! each role against each kind of action, API keys with a read-only scope, and tenancy.

use crate::common;

use std::time::Duration;

use common::users::{call, token_from_mail, user};
use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};

/// Creates a workspace owned by `owner` and adds a member with `role` (by invitation).
async fn team(env: &TestEnv, owner: &str, member_email: &str, member: &str, role: &str) -> String {
    let (s, ws) = call(
        env,
        Method::POST,
        "/v1/workspaces",
        owner,
        Some(json!({"name": "Team", "timezone": "UTC"})),
    )
    .await;
    assert_eq!(s, 201, "{ws}");
    let id = ws["id"].as_str().unwrap().to_string();
    // Teams here outgrow the free plan's two members; limits have their own tests.
    env.cli(&["workspace", "set-plan", "--workspace", &id, "--plan", "business"])
        .await;
    let (s, v) = call(
        env,
        Method::POST,
        &format!("/v1/workspaces/{id}/invites"),
        owner,
        Some(json!({"email": member_email, "role": role})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let token = token_from_mail(env, member_email).await;
    let (s, v) = call(
        env,
        Method::POST,
        "/v1/invites/accept",
        member,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["role"], role);
    // Single use.
    let (s, _) = call(
        env,
        Method::POST,
        "/v1/invites/accept",
        member,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(s, 400);
    id
}

#[tokio::test]
async fn owner_creates_lists_and_manages_a_workspace() {
    let env = TestEnv::start().await;
    let anna = user(&env, "anna@example.com").await;
    let (s, ws) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &anna,
        Some(json!({"name": "Shop", "slug": "shop", "timezone": "Europe/Berlin"})),
    )
    .await;
    assert_eq!(s, 201, "{ws}");
    assert_eq!(
        (ws["role"].as_str(), ws["slug"].as_str()),
        (Some("owner"), Some("shop"))
    );
    let id = ws["id"].as_str().unwrap().to_string();
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &anna,
        Some(json!({"name": "Other", "slug": "shop"})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("slug_taken")));
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &anna,
        Some(json!({"name": "Other", "slug": "Bad Slug"})),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("slug")));
    // An API key cannot create workspaces: that is a user's act.
    let (s, _) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &env.api_key,
        Some(json!({"name": "X"})),
    )
    .await;
    assert_eq!(s, 401);

    env.eventually(Duration::from_secs(5), "the workspace in my list", || async {
        let (_, list) = call(&env, Method::GET, "/v1/workspaces", &anna, None).await;
        list["items"]
            .as_array()?
            .iter()
            .any(|w| w["id"] == id.as_str() && w["role"] == "owner")
            .then_some(())
    })
    .await;
    let (s, v) = call(
        &env,
        Method::PATCH,
        &format!("/v1/workspaces/{id}"),
        &anna,
        Some(json!({"name": "Shop 2", "slug": "shop-2"})),
    )
    .await;
    assert_eq!(
        (s, v["name"].as_str(), v["slug"].as_str()),
        (200, Some("Shop 2"), Some("shop-2")),
        "{v}"
    );
    // The old slug is free again.
    let (s, _) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &anna,
        Some(json!({"name": "Reuse", "slug": "shop"})),
    )
    .await;
    assert_eq!(s, 201);

    // The owner runs jobs with a user token; the job uses the workspace's timezone.
    let (s, job) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{id}/cron"),
        &anna,
        Some(json!({"name": "n", "url": "https://example.com/x", "schedule": "0 3 * * *"})),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["timezone"], "Europe/Berlin");

    // Keys: created by an admin+, shown once, read-only scope, last use, revocation.
    let (s, k) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{id}/keys"),
        &anna,
        Some(json!({"name": "ci", "read_only": true})),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    assert!(key.starts_with(k["prefix"].as_str().unwrap()));
    let (s, _) = call(&env, Method::GET, &format!("/v1/workspaces/{id}/cron"), &key, None).await;
    assert_eq!(s, 200);
    let (s, v) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{id}/cron"),
        &key,
        Some(json!({"name": "n", "url": "https://example.com/x", "schedule": "0 3 * * *"})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")));
    let (_, keys) = call(&env, Method::GET, &format!("/v1/workspaces/{id}/keys"), &anna, None).await;
    let listed = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == k["id"])
        .cloned()
        .unwrap();
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(listed.get("key").is_none(), "the secret is shown only once");
    let stored: String =
        sqlx::query_scalar("SELECT string_agg(payload::text, ' ') FROM events WHERE aggregate_type = 'Workspace'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(!stored.contains(&key), "keys are stored hashed");
    let (s, _) = call(
        &env,
        Method::DELETE,
        &format!("/v1/workspaces/{id}/keys/{}", k["id"].as_str().unwrap()),
        &anna,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(&env, Method::GET, &format!("/v1/workspaces/{id}/cron"), &key, None).await;
    assert_eq!(s, 401, "a revoked key fails at once");

    // The last owner cannot leave; deleting the workspace ends it for everyone.
    let me: Value = call(&env, Method::GET, "/v1/me", &anna, None).await.1;
    let (s, v) = call(
        &env,
        Method::DELETE,
        &format!("/v1/workspaces/{id}/members/{}", me["id"].as_str().unwrap()),
        &anna,
        None,
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("last_owner")));
    let (s, _) = call(&env, Method::DELETE, &format!("/v1/workspaces/{id}"), &anna, None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&env, Method::GET, &format!("/v1/workspaces/{id}"), &anna, None).await;
    assert_eq!(s, 404);
    let (s, _) = call(&env, Method::GET, &format!("/v1/workspaces/{id}/cron"), &anna, None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn each_role_against_each_kind_of_action() {
    let env = TestEnv::start().await;
    let owner = user(&env, "owner@example.com").await;
    // (role, can read, can write jobs, can manage keys/members/settings, can delete workspace)
    let matrix = [
        ("viewer", true, false, false, false),
        ("member", true, true, false, false),
        ("admin", true, true, true, false),
        ("owner", true, true, true, true),
    ];
    for (role, read, write, admin, delete) in matrix {
        let email = format!("as-{role}@example.com");
        let tok = user(&env, &email).await;
        let ws = team(&env, &owner, &email, &tok, role).await;
        let p = |s: &str| format!("/v1/workspaces/{ws}{s}");
        let expect = |ok: bool, ok_status: u16| if ok { ok_status } else { 403 };

        let (s, _) = call(&env, Method::GET, &p("/cron"), &tok, None).await;
        assert_eq!(s, expect(read, 200), "{role} read");
        let (s, _) = call(&env, Method::GET, &p("/members"), &tok, None).await;
        assert_eq!(s, expect(read, 200), "{role} members");
        let (s, v) = call(
            &env,
            Method::POST,
            &p("/cron"),
            &tok,
            Some(json!({"name": "n", "url": "https://example.com/x", "schedule": "0 3 * * *"})),
        )
        .await;
        assert_eq!(s, expect(write, 201), "{role} write: {v}");
        let (s, _) = call(
            &env,
            Method::POST,
            &p("/delayed"),
            &tok,
            Some(json!({"url": "https://example.com/x", "delay_seconds": 600})),
        )
        .await;
        assert_eq!(s, expect(write, 201), "{role} delayed");
        let (s, _) = call(&env, Method::POST, &p("/keys"), &tok, Some(json!({"name": "k"}))).await;
        assert_eq!(s, expect(admin, 201), "{role} keys");
        let (s, _) = call(&env, Method::GET, &p("/keys"), &tok, None).await;
        assert_eq!(s, expect(admin, 200), "{role} list keys");
        let (s, _) = call(&env, Method::PATCH, &p(""), &tok, Some(json!({"name": "Renamed"}))).await;
        assert_eq!(s, expect(admin, 200), "{role} settings");
        let (s, _) = call(
            &env,
            Method::POST,
            &p("/invites"),
            &tok,
            Some(json!({"email": "guest@example.com", "role": "viewer"})),
        )
        .await;
        assert_eq!(s, expect(admin, 201), "{role} invite");
        // Only owners make owners.
        let (s, _) = call(
            &env,
            Method::POST,
            &p("/invites"),
            &tok,
            Some(json!({"email": "boss@example.com", "role": "owner"})),
        )
        .await;
        assert_eq!(s, expect(delete, 201), "{role} invite owner");
        let (s, _) = call(&env, Method::DELETE, &p(""), &tok, None).await;
        assert_eq!(s, expect(delete, 204), "{role} delete workspace");
    }
}

#[tokio::test]
async fn members_change_roles_and_leave_and_strangers_see_nothing() {
    let env = TestEnv::start().await;
    let owner = user(&env, "o@example.com").await;
    let bob = user(&env, "bob@example.com").await;
    let eve = user(&env, "eve@example.com").await;
    let ws = team(&env, &owner, "bob@example.com", &bob, "viewer").await;
    let bob_id = call(&env, Method::GET, "/v1/me", &bob, None).await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = |s: &str| format!("/v1/workspaces/{ws}{s}");

    // An invitation is for the invited address only.
    let (s, _) = call(
        &env,
        Method::POST,
        &p("/invites"),
        &owner,
        Some(json!({"email": "carl@example.com"})),
    )
    .await;
    assert_eq!(s, 201);
    let token = token_from_mail(&env, "carl@example.com").await;
    let (s, _) = call(
        &env,
        Method::POST,
        "/v1/invites/accept",
        &eve,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(s, 400);

    // A stranger: 404 on every route of the workspace, and nothing changes.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    for (m, path, body) in [
        (Method::GET, p(""), None),
        (Method::PATCH, p(""), Some(json!({"name": "x"}))),
        (Method::DELETE, p(""), None),
        (Method::GET, p("/cron"), None),
        (
            Method::POST,
            p("/cron"),
            Some(json!({"name": "n", "url": "https://example.com/x", "schedule": "0 3 * * *"})),
        ),
        (Method::GET, p("/delayed"), None),
        (Method::GET, p("/executions"), None),
        (Method::GET, p("/members"), None),
        (Method::DELETE, p(&format!("/members/{bob_id}")), None),
        (Method::POST, p("/invites"), Some(json!({"email": "eve@example.com"}))),
        (Method::GET, p("/keys"), None),
    ] {
        let (s, v) = call(&env, m.clone(), &path, &eve, body).await;
        assert_eq!(s, 404, "{m} {path}: {v}");
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(before, after);

    // Viewer → member: writing starts to work.
    let (s, _) = call(
        &env,
        Method::POST,
        &p("/cron"),
        &bob,
        Some(json!({"name": "n", "url": "https://example.com/x", "schedule": "0 3 * * *"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, v) = call(
        &env,
        Method::PATCH,
        &p(&format!("/members/{bob_id}")),
        &owner,
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(
        &env,
        Method::POST,
        &p("/cron"),
        &bob,
        Some(json!({"name": "n", "url": "https://example.com/x", "schedule": "0 3 * * *"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = call(
        &env,
        Method::PATCH,
        &p(&format!("/members/{bob_id}")),
        &owner,
        Some(json!({"role": "god"})),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("role")));
    // Bob leaves by himself; then he is a stranger.
    let (s, _) = call(&env, Method::DELETE, &p(&format!("/members/{bob_id}")), &bob, None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&env, Method::GET, &p("/cron"), &bob, None).await;
    assert_eq!(s, 404);
}
