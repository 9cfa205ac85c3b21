//! The published form of events: what the live feed, `GET …/events` and the NATS export hand to
//! customers. Stored events are internal (they carry key hashes, invite token hashes, credential
//! headers); this module decides, per event type, what leaves and with which fields masked.
//!
//! Published payloads are a contract: [`SCHEMA_VERSION`] changes whenever a published field is
//! removed or changes meaning (adding a field does not). docs/events.md describes every type.

use serde_json::Value;

/// The version of the published envelope and payloads (`"schema_version"` in every message).
pub const SCHEMA_VERSION: u32 = 1;

/// What a masked value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Request and response headers whose values are credentials. A header is sensitive when its
/// name (any case) is one of these, or contains one of [`SENSITIVE_PARTS`].
const SENSITIVE_NAMES: &[&str] = &["authorization", "proxy-authorization", "cookie", "set-cookie"];
const SENSITIVE_PARTS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "signature",
    "auth",
    "session",
];

/// Whether a header's value is never published.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_NAMES.contains(&name.as_str()) || SENSITIVE_PARTS.iter().any(|p| name.contains(p))
}

/// Event types customers can read, by aggregate. Everything else (users, sessions) is private.
pub const JOB_TYPES: &[&str] = &[
    "JobCreated",
    "JobUpdated",
    "JobPaused",
    "JobResumed",
    "JobDeleted",
    "RunRequested",
];
pub const RUN_TYPES: &[&str] = &[
    "RunScheduled",
    "RunSkipped",
    "RunDispatched",
    "AttemptStarted",
    "AttemptFinished",
    "RetryScheduled",
    "RunSucceeded",
    "RunFailed",
    "RunCancelled",
    "CallbackScheduled",
    "CallbackDispatched",
    "CallbackAttempted",
    "CallbackDelivered",
    "CallbackFailed",
    "CallbackCancelled",
];
pub const WORKSPACE_TYPES: &[&str] = &[
    "WorkspaceCreated",
    "WorkspaceUpdated",
    "WorkspacePlanChanged",
    "JobDefaultsChanged",
    "SigningSecretRotated",
    "WorkspaceDeleted",
    "ApiKeyCreated",
    "ApiKeyRevoked",
    "MemberInvited",
    "InviteRevoked",
    "MemberAdded",
    "MemberRoleChanged",
    "MemberRemoved",
];

/// Every published type, for validating a `types=` filter.
pub fn is_published_type(event_type: &str) -> bool {
    JOB_TYPES.contains(&event_type) || RUN_TYPES.contains(&event_type) || WORKSPACE_TYPES.contains(&event_type)
}

/// The published payload of a stored event (`data`, the inner object of `{"Type": {...}}`), or
/// None when this type is not published.
pub fn public_data(aggregate_type: &str, event_type: &str, data: &Value) -> Option<Value> {
    let published = match aggregate_type {
        "Job" => JOB_TYPES,
        "Run" => RUN_TYPES,
        "Workspace" => WORKSPACE_TYPES,
        _ => return None,
    };
    if !published.contains(&event_type) {
        return None;
    }
    let mut data = data.clone();
    match event_type {
        "JobCreated" | "JobUpdated" => {
            if let Some(request) = data.pointer_mut("/definition/request") {
                mask_request(request);
            }
        }
        "RunScheduled" => {
            if let Some(request) = data.pointer_mut("/plan/request") {
                mask_request(request);
            }
        }
        "AttemptFinished" | "CallbackAttempted" => {
            if let Some(headers) = data.pointer_mut("/outcome/response_headers") {
                mask_header_pairs(headers);
            }
        }
        "ApiKeyCreated" => remove(&mut data, "secret_hash"),
        "MemberInvited" => remove(&mut data, "token_hash"),
        _ => {}
    }
    Some(data)
}

fn remove(data: &mut Value, field: &str) {
    if let Value::Object(o) = data {
        o.remove(field);
    }
}

/// Whether a request header's value is a credential: the built-in rule, or the user marked it
/// (`marked`: the request's `sensitive_headers`, lower case).
pub fn is_credential_header(name: &str, marked: &[String]) -> bool {
    is_sensitive_header(name) || marked.iter().any(|m| m.eq_ignore_ascii_case(name))
}

/// The `sensitive_headers` of a request as JSON.
fn marked_of(request: &Value) -> Vec<String> {
    request
        .get("sensitive_headers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

/// Masks credential headers of a stored `RequestSpec` (`headers: [{name, value}]`): those the
/// built-in rule catches and those the user listed in `sensitive_headers`. Also what the API
/// shows people below `admin` (the execution's request).
pub fn mask_request(request: &mut Value) {
    let marked = marked_of(request);
    if let Some(Value::Array(headers)) = request.get_mut("headers") {
        for h in headers.iter_mut() {
            let sensitive = h
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| is_credential_header(n, &marked));
            if sensitive {
                if let Some(v) = h.get_mut("value") {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
    }
}

/// The same for a job as the API shows it (`headers: {name: value}` beside `sensitive_headers`).
pub fn mask_job_view(job: &mut Value) {
    let marked = marked_of(job);
    if let Some(Value::Object(headers)) = job.get_mut("headers") {
        for (name, value) in headers.iter_mut() {
            if is_credential_header(name, &marked) {
                *value = Value::String(REDACTED.into());
            }
        }
    }
}

/// Masks response headers stored as `[name, value]` pairs (cookies a target set, and the like).
pub fn mask_header_pairs(headers: &mut Value) {
    if let Value::Array(pairs) = headers {
        for pair in pairs.iter_mut() {
            if let Value::Array(kv) = pair {
                let sensitive = kv.first().and_then(Value::as_str).is_some_and(is_sensitive_header);
                if sensitive {
                    if let Some(v) = kv.get_mut(1) {
                        *v = Value::String(REDACTED.into());
                    }
                }
            }
        }
    }
}

/// The inner object of a stored payload (`{"JobCreated": {...}}` → `{...}`).
pub fn inner<'a>(event_type: &str, payload: &'a Value) -> &'a Value {
    payload.get(event_type).unwrap_or(payload)
}

/// Run state a run event moves to, for the live feed's `status` (and its `status=` filter).
pub fn run_status_after(event_type: &str, data: &Value) -> Option<&'static str> {
    Some(match event_type {
        "RunScheduled" => "scheduled",
        "RunSkipped" => "skipped",
        "RunDispatched" => "dispatched",
        "AttemptStarted" => "running",
        "AttemptFinished" => {
            let ok = data.pointer("/outcome/error_kind").is_none_or(Value::is_null)
                && match data.pointer("/outcome/accepted").and_then(Value::as_bool) {
                    Some(a) => a,
                    None => data
                        .pointer("/outcome/status_code")
                        .and_then(Value::as_u64)
                        .is_some_and(|c| (200..300).contains(&c)),
                };
            if ok {
                "attempt_succeeded"
            } else {
                "attempt_failed"
            }
        }
        "RetryScheduled" => "retry_scheduled",
        "RunSucceeded" => "succeeded",
        "RunFailed" => "failed",
        "RunCancelled" => "cancelled",
        _ => return None,
    })
}

/// The statuses a feed client may filter on.
pub const FEED_STATUSES: &[&str] = &[
    "scheduled",
    "skipped",
    "dispatched",
    "running",
    "attempt_succeeded",
    "attempt_failed",
    "retry_scheduled",
    "succeeded",
    "failed",
    "cancelled",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_headers_are_masked_in_definitions_and_runs() {
        let data = json!({"job_id": "j", "definition": {"request": {"url": "https://x", "headers": [
            {"name": "Authorization", "value": "Bearer s3cret"},
            {"name": "X-Api-Key", "value": "k"},
            {"name": "X-Auth-Token", "value": "t"},
            {"name": "Content-Type", "value": "application/json"}]}}});
        let out = public_data("Job", "JobCreated", &data).expect("published");
        let headers = out.pointer("/definition/request/headers").expect("headers");
        assert_eq!(headers[0]["value"], REDACTED);
        assert_eq!(headers[1]["value"], REDACTED);
        assert_eq!(headers[2]["value"], REDACTED);
        assert_eq!(headers[3]["value"], "application/json");
        assert!(!out.to_string().contains("s3cret"));

        let marked = json!({"definition": {"request": {"sensitive_headers": ["x-tenant"], "headers": [
            {"name": "X-Tenant", "value": "acme-42"}, {"name": "X-Other", "value": "shown"}]}}});
        let out = public_data("Job", "JobUpdated", &marked).expect("published");
        assert_eq!(
            out.pointer("/definition/request/headers/0/value"),
            Some(&json!(REDACTED))
        );
        assert_eq!(
            out.pointer("/definition/request/headers/1/value"),
            Some(&json!("shown"))
        );

        let run = json!({"run_id": "r", "plan": {"request": {"headers": [{"name": "cookie", "value": "a=b"}]}}});
        let out = public_data("Run", "RunScheduled", &run).expect("published");
        assert_eq!(out.pointer("/plan/request/headers/0/value"), Some(&json!(REDACTED)));
    }

    #[test]
    fn response_cookies_and_stored_hashes_never_leave() {
        let fin = json!({"attempt": 1, "outcome": {"status_code": 200, "response_headers": [["Set-Cookie", "sid=1"], ["content-type", "text/plain"]]}});
        let out = public_data("Run", "AttemptFinished", &fin).expect("published");
        assert_eq!(out.pointer("/outcome/response_headers/0/1"), Some(&json!(REDACTED)));
        assert_eq!(out.pointer("/outcome/response_headers/1/1"), Some(&json!("text/plain")));

        let key = json!({"key_id": "k", "name": "ci", "prefix": "cbx_1234", "secret_hash": "argon2..."});
        let out = public_data("Workspace", "ApiKeyCreated", &key).expect("published");
        assert!(out.get("secret_hash").is_none());
        assert_eq!(out["prefix"], "cbx_1234");
        let invite = json!({"invite_id": "i", "email": "a@b", "token_hash": "h"});
        assert!(public_data("Workspace", "MemberInvited", &invite)
            .expect("published")
            .get("token_hash")
            .is_none());
    }

    #[test]
    fn private_aggregates_and_unknown_types_are_not_published() {
        assert!(public_data("User", "UserRegistered", &json!({})).is_none());
        assert!(public_data("Session", "SessionStarted", &json!({})).is_none());
        assert!(public_data("Run", "SomethingNew", &json!({})).is_none());
        assert!(is_published_type("RunSucceeded"));
        assert!(!is_published_type("UserRegistered"));
    }

    #[test]
    fn feed_status_follows_the_outcome() {
        let ok = json!({"outcome": {"status_code": 204, "error_kind": null}});
        let refused = json!({"outcome": {"status_code": 200, "error_kind": null, "accepted": false}});
        let down = json!({"outcome": {"status_code": null, "error_kind": "connect"}});
        assert_eq!(run_status_after("AttemptFinished", &ok), Some("attempt_succeeded"));
        assert_eq!(run_status_after("AttemptFinished", &refused), Some("attempt_failed"));
        assert_eq!(run_status_after("AttemptFinished", &down), Some("attempt_failed"));
        assert_eq!(run_status_after("RunSucceeded", &json!({})), Some("succeeded"));
        assert_eq!(run_status_after("JobCreated", &json!({})), None);
    }
}
