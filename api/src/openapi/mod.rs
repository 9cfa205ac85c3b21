//! The OpenAPI 3.1 document, generated from the code: every route is registered through
//! `utoipa_axum`'s `routes!`, which reads the handler's `#[utoipa::path]` annotation, so a
//! route cannot be served without being documented. [`schemas`] describes the wire format;
//! the modifiers below add the two security schemes and the error responses every operation
//! shares (so each annotation lists only what is particular to it).

pub mod schemas;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi};
use uuid::Uuid;

/// Scheme names used in `security(...)` of the annotations.
pub const API_KEY: &str = "api_key";
pub const ACCESS_TOKEN: &str = "access_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CronBox API",
        description = "Scheduled HTTP requests: cron jobs and one-off delayed calls. Errors always have the shape `{\"error\": {\"code\", \"message\", \"field\"}}`; every response carries `X-Request-Id` and, where a rate limit applies, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`.",
        license(name = "Proprietary")
    ),
    components(schemas(schemas::ErrorResponse, schemas::ErrorDetail)),
    tags(
        (name = "accounts", description = "Sign-up, login and sessions"),
        (name = "workspaces", description = "Workspaces, members, invitations"),
        (name = "api keys", description = "Workspace API keys"),
        (name = "plans", description = "Plans, limits and usage"),
        (name = "signing", description = "The secret that signs every outgoing request (Standard Webhooks)"),
        (name = "cron jobs", description = "Recurring jobs"),
        (name = "delayed calls", description = "One-off calls at an instant"),
        (name = "executions", description = "Runs and their attempts; the live execution feed (SSE)"),
        (name = "events", description = "The workspace's event stream (HTTP and NATS subscriptions)"),
        (name = "notifications", description = "Alert channels (e-mail, webhooks, Telegram), their deliveries, alerts"),
        (name = "links", description = "The pages behind the links in CronBox's mails; Telegram's webhook"),
        (name = "admin", description = "Operators: projections, rebuilds, any aggregate's events, re-runs"),
        (name = "tools", description = "Cron preview"),
        (name = "service", description = "Health, readiness, this document"),
    )
)]
pub struct ApiDoc;

/// Applied by [`crate::router`] to the assembled document (the derive's own modifiers would run
/// before the nested routes are merged in).
pub fn modifiers() -> [&'static dyn Modify; 2] {
    [&Security, &SharedResponses]
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut key = Http::new(HttpAuthScheme::Bearer);
        key.bearer_format = Some("cbx_<workspace id>_<secret>".into());
        key.description = Some("A workspace API key. Acts as `member`, or `viewer` if the key is read-only.".into());
        components.add_security_scheme(API_KEY, SecurityScheme::Http(key));
        let mut jwt = Http::new(HttpAuthScheme::Bearer);
        jwt.bearer_format = Some("JWT".into());
        jwt.description = Some(
            "A user's access token from `/v1/auth/login` (15 minutes). Acts with the user's role in the workspace."
                .into(),
        );
        components.add_security_scheme(ACCESS_TOKEN, SecurityScheme::Http(jwt));
    }
}

fn error(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorResponse"))),
            )
            .build(),
    )
}

/// Response headers every answer may carry (the `RateLimit-*` ones where a limit applied).
const HEADERS: [(&str, &str); 5] = [
    (
        "X-Request-Id",
        "The request's id: the client's `X-Request-Id` if well-formed, else a new one; also in the server's logs",
    ),
    ("RateLimit-Limit", "Requests allowed per window"),
    ("RateLimit-Remaining", "Requests left in the current window"),
    ("RateLimit-Reset", "Seconds until the window resets"),
    ("RateLimit-Policy", "`<limit>;w=<window seconds>`"),
];

/// Adds the errors any operation of its kind can give, unless its annotation already says more.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, doc: &mut Document) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops: [(HttpMethod, &mut Option<Operation>); 5] = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Delete, &mut item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op.as_mut() else { continue };
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, text: &str| {
                    responses.entry(code.to_string()).or_insert_with(|| error(text));
                };
                // Any path or query string can be refused (`invalid_character`, a bad cursor or
                // filter), not only bodies.
                add(
                    "400",
                    "Invalid input; `field` names the offending field (a body field, a query parameter, or `path`)",
                );
                if matches!(method, HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch) && op.request_body.is_some()
                {
                    add("413", "Request body over 256 KiB (4 MiB for a batch)");
                    add("408", "`body_timeout`: the request body did not arrive within 10 s");
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                if secured {
                    add("401", "Missing, invalid, expired or revoked credentials");
                    if path.starts_with("/v1/workspaces/{ws}") {
                        add(
                            "404",
                            "Unknown id, or a workspace (or anything in one) you are not a member of",
                        );
                        // Reads of keys, invitations and the signing secret need admin too.
                        add("403", "Your role does not allow this");
                    }
                }
                if path != "/healthz" && path != "/readyz" {
                    add("429", "Rate limit exceeded; see `Retry-After`");
                }
                add("500", "Unexpected error (details only in the server log)");
                for response in responses.values_mut() {
                    if let RefOr::T(r) = response {
                        for (name, text) in HEADERS {
                            let header = HeaderBuilder::new()
                                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                                .description(Some(text))
                                .build();
                            r.headers.entry(name.to_string()).or_insert(RefOr::T(header));
                        }
                    }
                }
            }
        }
    }
}

/// `{ws}` in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WsPath {
    /// Workspace id.
    pub ws: Uuid,
}

/// `{ws}` and `{id}` in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WsIdPath {
    /// Workspace id.
    pub ws: Uuid,
    /// The resource's id.
    pub id: Uuid,
}

/// `{ws}` and `{user_id}` in a path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WsUserPath {
    /// Workspace id.
    pub ws: Uuid,
    /// The member's user id.
    pub user_id: Uuid,
}

static DOCUMENT: OnceLock<String> = OnceLock::new();

/// Keeps the finished document for [`openapi_json`]. The document is a pure function of the
/// code, so every router built in this process produces the same one.
pub fn publish(doc: &Document) {
    let _ = DOCUMENT.get_or_init(|| doc.to_json().unwrap_or_else(|_| "{}".into()));
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get().cloned().unwrap_or_else(|| "{}".into()),
    )
}

/// Interactive documentation: Swagger UI, served by this binary (`/assets/…`), so it works
/// offline and behind a firewall.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "service",
    responses((status = 200, description = "An HTML page rendering /v1/openapi.json", content_type = "text/html", body = String))
)]
pub async fn docs() -> axum::response::Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let asset = |name| crate::assets::url(name).unwrap_or_default();
        format!(
            r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>CronBox API</title>
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="ui"></div>
  <noscript>The raw document is at <a href="/v1/openapi.json">/v1/openapi.json</a>.</noscript>
  <script src="{bundle}"></script>
  <script src="{init}"></script>
</body>
</html>
"##,
            css = asset("swagger-ui.css"),
            bundle = asset("swagger-ui-bundle.js"),
            init = asset("docs.js"),
        )
    });
    let mut r = Html(page.as_str()).into_response();
    let h = r.headers_mut();
    // Scripts only from this origin and never inline; Swagger UI sets inline styles and draws
    // its icons from data: URLs.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; font-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, axum::http::HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    r
}
