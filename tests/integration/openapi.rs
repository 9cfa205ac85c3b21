//! The OpenAPI document against the router that serves it: every documented operation is
//! served, no undocumented method is served on a documented path, every path parameter, body,
//! response and `$ref` is declared, and both security schemes are there.

use crate::common;

use std::collections::BTreeSet;

use common::TestEnv;
use reqwest::Method;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn concrete(path: &str, ws: &str) -> String {
    let nil = "00000000-0000-4000-8000-000000000000";
    path.replace("{ws}", ws).replace("{id}", nil).replace("{user_id}", nil)
}

/// Every `"$ref"` string anywhere under `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.insert(s.to_string());
                    }
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_lists_every_route_and_only_routes_that_exist() {
    let env = TestEnv::start().await;
    let resp = env
        .http
        .get(format!("{}/v1/openapi.json", env.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["access_token"]["bearerFormat"], "JWT");

    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for method in METHODS {
            let mut url = format!("{}{}", env.base(), concrete(path, &env.workspace_id));
            if path.ends_with("/stream") {
                // A live stream never ends: a bad filter proves the route is there without one.
                url.push_str("?status=bogus");
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = env.http.request(m, &url).bearer_auth(&env.api_key);
            if method != "get" && method != "delete" {
                req = req.json(&serde_json::json!({}));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let unknown_route = status == 404 && body["error"]["message"] == "route not found";
            let Some(op) = item.get(method) else {
                // Not documented: the router must not serve it either.
                assert!(
                    status == 405 || unknown_route,
                    "{method} {path} is served ({status}) but not documented"
                );
                continue;
            };
            operations += 1;
            assert!(
                !unknown_route && status != 405,
                "{method} {path} is documented but not served: {status} {body}"
            );

            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{method} {path}: no success response"
            );
            assert!(responses.contains_key("500"), "{method} {path}: no 500");
            if path.starts_with("/v1/workspaces/{ws}") {
                assert!(
                    op["security"].as_array().is_some_and(|s| !s.is_empty()),
                    "{method} {path}: no security"
                );
                for code in ["401", "404"] {
                    assert!(responses.contains_key(code), "{method} {path}: no {code}");
                }
            }
            if matches!(method, "post" | "put" | "patch") && !op["requestBody"].is_null() {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
            for (code, r) in responses {
                // 304 Not Modified never has a body (RFC 9110 §15.4.5).
                if !matches!(code.as_str(), "204" | "202" | "304") {
                    assert!(r.get("content").is_some(), "{method} {path} {code}: no body schema");
                }
            }
        }
    }
    assert!(operations >= 45, "only {operations} operations documented");

    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd $ref {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "$ref {r} is not defined"
        );
    }

    let html = env.http.get(format!("{}/docs", env.base())).send().await.unwrap();
    assert_eq!(html.status().as_u16(), 200);
    assert!(html.text().await.unwrap().contains("/v1/openapi.json"));
}

/// The keys of `value` against the schema `name`: every key the server sends is documented,
/// and every property the document calls required is sent.
/// The properties and required keys of `schema`, through `allOf` (a type that flattens
/// another is documented as the other's `$ref` plus its own fields).
fn fields_of(doc: &Value, schema: &Value) -> (serde_json::Map<String, Value>, Vec<String>) {
    let mut props = schema["properties"].as_object().cloned().unwrap_or_default();
    let mut required: Vec<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let part = match part["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        {
            Some(name) => &doc["components"]["schemas"][name],
            None => part,
        };
        let (p, r) = fields_of(doc, part);
        props.extend(p);
        required.extend(r);
    }
    (props, required)
}

fn assert_matches_schema(doc: &Value, name: &str, value: &Value) {
    let schema = &doc["components"]["schemas"][name];
    let (props, required) = fields_of(doc, schema);
    assert!(!props.is_empty(), "schema {name} has no properties");
    let sent = value
        .as_object()
        .unwrap_or_else(|| panic!("{name}: not an object: {value}"));
    for key in sent.keys() {
        assert!(
            props.contains_key(key),
            "{name}: the server sends `{key}`, the document does not list it"
        );
    }
    for key in required.iter().map(String::as_str) {
        assert!(
            sent.contains_key(key),
            "{name}: `{key}` is required by the document but not sent"
        );
    }
}

#[tokio::test]
async fn responses_have_the_documented_shape() {
    let env = TestEnv::start().await;
    let doc: Value = env.openapi().await;
    let (s, cron) = env
        .post(
            "/cron",
            serde_json::json!({"name": "n", "url": env.target_url("/x"), "schedule": "0 3 * * *", "headers": {"X-A": "1"}}),
        )
        .await;
    assert_eq!(s, 201);
    assert_matches_schema(&doc, "CronJob", &cron);
    let (_, list) = env.get("/cron").await;
    assert_matches_schema(&doc, "CronJobList", &list);
    let (s, delayed) = env
        .post(
            "/delayed",
            serde_json::json!({"url": env.target_url("/x"), "delay_seconds": 0}),
        )
        .await;
    assert_eq!(s, 201);
    assert_matches_schema(&doc, "DelayedCall", &delayed);
    let run_id = delayed["run_id"].as_str().unwrap();
    let run = env.wait_execution(run_id, std::time::Duration::from_secs(20)).await;
    assert_matches_schema(&doc, "ExecutionDetail", &run);
    for attempt in run["attempt_log"].as_array().unwrap() {
        assert_matches_schema(&doc, "Attempt", attempt);
    }
    let (_, runs) = env.get("/executions").await;
    assert_matches_schema(&doc, "ExecutionList", &runs);
    assert_matches_schema(&doc, "Execution", &runs["items"][0]);
    let (_, events) = env.get(&format!("/executions/{run_id}/events")).await;
    assert_matches_schema(&doc, "EventList", &events);
    assert_matches_schema(&doc, "StoredEvent", &events["items"][0]);
    let (s, run_now) = env
        .post(
            &format!("/cron/{}/run", cron["id"].as_str().unwrap()),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 202);
    assert_matches_schema(&doc, "RunRequested", &run_now);
    let (_, ws) = env.get("").await;
    assert_matches_schema(&doc, "Workspace", &ws);
    let (_, usage) = env.get("/usage").await;
    assert_matches_schema(&doc, "Usage", &usage);
    let plans: Value = env
        .http
        .get(format!("{}/v1/plans", env.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_matches_schema(&doc, "Plan", &plans["items"][0]);
    let preview: Value = env
        .http
        .get(format!("{}/v1/cron/preview?schedule=0+3+*+*+*", env.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_matches_schema(&doc, "CronPreview", &preview);
    let (s, err) = env.post("/cron", serde_json::json!({})).await;
    assert_eq!(s, 400);
    assert_matches_schema(&doc, "ErrorDetail", &err["error"]);
}

/// Every `/assets/…` URL in `html`'s `src` and `href` attributes.
fn asset_urls(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let url = &rest[..rest.find('"').unwrap_or(rest.len())];
            if url.starts_with("/assets/") {
                out.push(url.to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn docs_load_nothing_from_elsewhere_and_their_assets_are_cached_by_content() {
    use std::io::Read;
    let env = TestEnv::start().await;
    let resp = env.http.get(format!("{}/docs", env.base())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let csp = header(&resp, "content-security-policy");
    let script_src = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap_or_else(|| panic!("no script-src in {csp}"));
    assert_eq!(script_src.trim(), "script-src 'self'", "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
    let html = resp.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    assert!(!html.contains("<script>"), "an inline script: {html}");
    let urls = asset_urls(&html);
    assert_eq!(urls.len(), 3, "{html}");

    for url in &urls {
        let plain = env.http.get(format!("{}{url}", env.base())).send().await.unwrap();
        assert_eq!(plain.status().as_u16(), 200, "{url}");
        assert_eq!(header(&plain, "cache-control"), "public, max-age=31536000, immutable");
        assert_eq!(header(&plain, "x-content-type-options"), "nosniff");
        let kind = header(&plain, "content-type");
        assert!(
            kind.starts_with("text/javascript") || kind.starts_with("text/css"),
            "{url}: {kind}"
        );
        assert!(header(&plain, "content-encoding").is_empty(), "gzip sent unasked");
        let etag = header(&plain, "etag");
        let body = plain.bytes().await.unwrap();
        assert!(!body.is_empty());

        // The same bytes compressed for a client that accepts gzip.
        let packed = env
            .http
            .get(format!("{}{url}", env.base()))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&packed, "content-encoding"), "gzip", "{url}");
        assert_eq!(header(&packed, "vary"), "Accept-Encoding");
        let packed = packed.bytes().await.unwrap();
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .expect("valid gzip");
        assert_eq!(unpacked, body.to_vec(), "{url}");

        // A revalidation is answered without the body.
        let again = env
            .http
            .get(format!("{}{url}", env.base()))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status().as_u16(), 304, "{url}");
    }
    let bundle = urls
        .iter()
        .find(|u| u.contains("swagger-ui-bundle."))
        .expect("the bundle");
    let js = env.http.get(format!("{}{bundle}", env.base())).send().await.unwrap();
    assert!(js.text().await.unwrap().contains("SwaggerUIBundle"));

    // An old hash (after an upgrade) or a made-up name is a JSON 404.
    for stale in [
        "/assets/swagger-ui-bundle.000000000000.js",
        "/assets/..%2FCargo.toml",
        "/assets/docs.js",
    ] {
        let r = env.http.get(format!("{}{stale}", env.base())).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{stale}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{stale}");
    }
}
