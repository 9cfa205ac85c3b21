//! Standard Webhooks signatures on every outgoing request, checked by an independent
//! implementation (Python's hmac/hashlib/base64, not our code); rotation with overlap; the
//! secret sealed at rest and absent from the event log.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::target::Arrival;
use common::users::{call, user};
use common::TestEnv;
use reqwest::Method;
use serde_json::json;

/// Verifies like a receiver following the specification would; returns how many of the
/// header's signatures `secret` makes valid.
const VERIFY: &str = r#"
import base64, hashlib, hmac, sys
secret, msg_id, timestamp, header = sys.argv[1:5]
body = sys.stdin.buffer.read()
key = base64.b64decode(secret[len("whsec_"):])
expected = base64.b64encode(hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()).decode()
print(sum(1 for part in header.split(" ") if part.startswith("v1,") and hmac.compare_digest(part[3:], expected)))
"#;

fn valid_signatures(secret: &str, arrival: &Arrival) -> usize {
    let h = |name: &str| {
        arrival
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut child = Command::new("python3")
        .args([
            "-c",
            VERIFY,
            secret,
            &h("webhook-id"),
            &h("webhook-timestamp"),
            &h("webhook-signature"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(&arrival.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a count")
}

fn header(a: &Arrival, name: &str) -> String {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn every_request_is_signed_and_rotation_overlaps() {
    let env = TestEnv::start().await;
    let anna = user(&env, "anna@example.com").await;
    let (s, ws) = call(
        &env,
        Method::POST,
        "/v1/workspaces",
        &anna,
        Some(json!({"name": "Signed"})),
    )
    .await;
    assert_eq!(s, 201, "{ws}");
    let ws = ws["id"].as_str().unwrap().to_string();
    let secret_path = format!("/v1/workspaces/{ws}/signing-secret");
    let (s, first) = call(&env, Method::GET, &secret_path, &anna, None).await;
    assert_eq!(s, 200, "{first}");
    let first = first["secret"].as_str().unwrap().to_string();
    assert!(first.starts_with("whsec_"));

    // A POST that fails once and is retried: both attempts carry the run id as webhook-id.
    let delayed = format!("/v1/workspaces/{ws}/delayed");
    let body = r#"{"order": 42, "note": "привет"}"#;
    let (s, v) = call(
        &env,
        Method::POST,
        &delayed,
        &anna,
        Some(
            json!({"url": env.target_url("/flaky/1/signed"), "method": "POST", "body": body,
                    "delay_seconds": 0, "retry_count": 1, "retry_delay_seconds": 0}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let arrivals = env
        .eventually(Duration::from_secs(20), "two attempts", || async {
            let a = env.target.arrivals_at("/flaky/1/signed");
            (a.len() >= 2).then_some(a)
        })
        .await;
    for a in &arrivals {
        assert_eq!(header(a, "webhook-id"), run_id);
        assert_eq!(a.run_id.as_deref(), Some(run_id.as_str()));
        let ts: i64 = header(a, "webhook-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
        assert_eq!(a.body, body.as_bytes());
        assert_eq!(valid_signatures(&first, a), 1, "{:?}", header(a, "webhook-signature"));
        assert_eq!(
            valid_signatures("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", a),
            0
        );
    }

    // Rotate with an hour of overlap: both secrets sign, the new one first.
    let rotate = format!("{secret_path}/rotate");
    let (s, r) = call(
        &env,
        Method::POST,
        &rotate,
        &anna,
        Some(json!({"overlap_seconds": 3600})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let second = r["secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let (_, view) = call(&env, Method::GET, &secret_path, &anna, None).await;
    assert_eq!(view["secret"], second.as_str());
    assert_eq!(view["previous"].as_array().unwrap().len(), 1);
    let (s, v) = call(
        &env,
        Method::POST,
        &delayed,
        &anna,
        Some(json!({"url": env.target_url("/after-rotation"), "delay_seconds": 0})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let a = env
        .eventually(Duration::from_secs(20), "the call after rotation", || async {
            env.target.arrivals_at("/after-rotation").pop()
        })
        .await;
    assert_eq!(header(&a, "webhook-signature").split(' ').count(), 2);
    assert_eq!(valid_signatures(&second, &a), 1);
    assert_eq!(
        valid_signatures(&first, &a),
        1,
        "the old secret still signs during the overlap"
    );

    // Rotate again without overlap: the secret it replaces stops at once.
    let (s, r) = call(&env, Method::POST, &rotate, &anna, Some(json!({"overlap_seconds": 0}))).await;
    assert_eq!(s, 200, "{r}");
    let third = r["secret"].as_str().unwrap().to_string();
    let (s, v) = call(
        &env,
        Method::POST,
        &delayed,
        &anna,
        Some(json!({"url": env.target_url("/after-second-rotation"), "delay_seconds": 0})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let a = env
        .eventually(
            Duration::from_secs(20),
            "the call after the second rotation",
            || async { env.target.arrivals_at("/after-second-rotation").pop() },
        )
        .await;
    assert_eq!(valid_signatures(&third, &a), 1);
    assert_eq!(valid_signatures(&second, &a), 0, "replaced without overlap");
    assert_eq!(valid_signatures(&first, &a), 1, "its own overlap has not ended");

    // Bad input and roles.
    let (s, v) = call(&env, Method::POST, &rotate, &anna, Some(json!({"overlap_seconds": -1}))).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("overlap_seconds")));
    let (s, _) = env.get("/signing-secret").await;
    assert_eq!(s, 403, "an API key acts as member; reading the secret needs admin");

    // Sealed at rest, and never in the log.
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT ciphertext FROM signing_secrets")
        .fetch_all(&env.db.pool)
        .await
        .unwrap();
    assert!(rows.len() >= 3);
    let log: String = sqlx::query_scalar("SELECT coalesce(string_agg(payload::text, ' '), '') FROM events")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    use base64::Engine;
    for secret in [&first, &second, &third] {
        let raw = base64::engine::general_purpose::STANDARD.decode(&secret[6..]).unwrap();
        for row in &rows {
            assert!(
                !row.windows(raw.len()).any(|w| w == raw.as_slice()),
                "a secret is stored in clear"
            );
        }
        assert!(!log.contains(&secret[6..]), "a secret is in the event log");
    }
    let rotations: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SigningSecretRotated'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(rotations, 2, "each rotation is in the audit trail");
}
