//! Credential header values are shown to admins and owners only: members, viewers and API keys
//! see them masked in jobs and executions, and the audit trail masks them for everyone — by the
//! public event stream's rule.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::users::{call, owned_workspace};
use crate::common::TestEnv;

const SECRET: &str = "Bearer s3cret-token";
const REDACTED: &str = "[redacted]";

#[tokio::test]
async fn credentials_are_masked_below_admin_and_in_the_audit_trail() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "owner@example.com", "Keys", Some("business")).await;
    let p = |path: &str| format!("/v1/workspaces/{ws}{path}");
    let key = |read_only: bool| {
        let (env, owner, url) = (&env, owner.clone(), p("/keys"));
        async move {
            let (s, v) = call(
                env,
                Method::POST,
                &url,
                &owner,
                Some(json!({"name": "k", "read_only": read_only})),
            )
            .await;
            assert_eq!(s, 201, "{v}");
            v["key"].as_str().unwrap().to_string()
        }
    };
    let (member_key, viewer_key) = (key(false).await, key(true).await);

    let (s, job) = call(
        &env,
        Method::POST,
        &p("/cron"),
        &owner,
        Some(
            json!({"name": "billing", "schedule": "0 0 1 1 *", "url": env.target_url("/cookie"),
                    "headers": {"Authorization": SECRET, "X-Tenant": "acme-42", "X-Plain": "shown"},
                    "sensitive_headers": ["X-Tenant"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["headers"]["Authorization"], SECRET, "the owner sees what they set");

    for (who, token) in [("member key", &member_key), ("read-only key", &viewer_key)] {
        let (s, v) = call(&env, Method::GET, &p(&format!("/cron/{id}")), token, None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["headers"]["Authorization"], REDACTED, "{who}: {v}");
        assert_eq!(v["headers"]["X-Tenant"], REDACTED, "{who}: marked sensitive");
        assert_eq!(v["headers"]["X-Plain"], "shown", "{who}");
        let list = env
            .eventually(Duration::from_secs(10), "the job listed", || async {
                let (_, list) = call(&env, Method::GET, &p("/cron"), token, None).await;
                (!list["items"].as_array()?.is_empty()).then_some(list)
            })
            .await;
        assert_eq!(list["items"][0]["headers"]["Authorization"], REDACTED, "{who}: list");
    }
    let (_, v) = call(&env, Method::GET, &p(&format!("/cron/{id}")), &owner, None).await;
    assert_eq!(v["headers"]["X-Tenant"], "acme-42");

    // An execution: its request and the target's cookie.
    let (s, run) = call(&env, Method::POST, &p(&format!("/cron/{id}/run")), &member_key, None).await;
    assert_eq!(s, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let detail = |token: String| {
        let (env, url) = (&env, p(&format!("/executions/{run_id}")));
        async move {
            env.eventually(Duration::from_secs(20), "the run to finish", || async {
                let (_, v) = call(env, Method::GET, &url, &token, None).await;
                (v["status"] == "succeeded").then_some(v)
            })
            .await
        }
    };
    let header = |v: &Value, name: &str| {
        v["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"].clone())
    };
    let cookie = |v: &Value| {
        v["response"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "set-cookie")
            .map(|h| h[1].clone())
    };
    let as_viewer = detail(viewer_key.clone()).await;
    assert_eq!(
        header(&as_viewer, "Authorization"),
        Some(json!(REDACTED)),
        "{as_viewer}"
    );
    assert_eq!(header(&as_viewer, "X-Tenant"), Some(json!(REDACTED)));
    assert_eq!(cookie(&as_viewer), Some(json!(REDACTED)));
    assert_eq!(
        as_viewer["attempt_log"][0]["outcome"]["response_headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "set-cookie")
            .map(|h| h[1].clone()),
        Some(json!(REDACTED))
    );
    assert!(!as_viewer.to_string().contains("s3cret"), "{as_viewer}");
    let as_owner = detail(owner.clone()).await;
    assert_eq!(header(&as_owner, "Authorization"), Some(json!(SECRET)));
    assert_eq!(cookie(&as_owner), Some(json!("sid=target-secret")));

    // The audit trails mask for everyone, the owner included.
    for url in [
        p(&format!("/cron/{id}/events")),
        p(&format!("/executions/{run_id}/events")),
    ] {
        let (s, trail) = call(&env, Method::GET, &url, &owner, None).await;
        assert_eq!(s, 200, "{trail}");
        let text = trail.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("acme-42") && !text.contains("target-secret"),
            "{text}"
        );
        assert!(text.contains(REDACTED), "{text}");
    }
}
