//! The outgoing HTTP call: one shared client with connection reuse, a resolver that refuses
//! private addresses (so DNS cannot be used to reach them, nor re-pointed between check and
//! connect), redirects re-checked on every hop, a response body cap.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cronbox_domain::policy;
use cronbox_domain::request::RequestSpec;
use cronbox_domain::run::{stored_body, AttemptOutcome, ErrorKind, MAX_STORED_BODY_BYTES};
use cronbox_domain::target::TargetPolicy;
use cronbox_domain::webhook::{self, SigningSecret};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use uuid::Uuid;

const MAX_REDIRECTS: usize = 5;
const MAX_STORED_HEADERS: usize = 50;
const MAX_STORED_HEADER_VALUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("target address {0} is private, loopback or reserved")]
pub struct BlockedTarget(pub IpAddr);

#[derive(Debug, thiserror::Error)]
#[error("host {0} resolves to no public address")]
pub struct NoPublicAddress(pub String);

/// Resolves with the system resolver and drops forbidden addresses. The connection is made to
/// exactly the addresses returned here, so a name cannot resolve to a public address for a
/// check and a private one for the connect.
struct GuardedResolver {
    targets: Arc<TargetPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.targets.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| targets.permits(a.ip())).collect();
            if allowed.is_empty() {
                if let Some(first) = addrs.first() {
                    return Err(Box::new(BlockedTarget(first.ip())) as Box<dyn std::error::Error + Send + Sync>);
                }
                return Err(Box::new(NoPublicAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A literal IP host that is forbidden (literal hosts never reach the resolver).
pub fn blocked_literal(url: &reqwest::Url, targets: &TargetPolicy) -> Option<IpAddr> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    (!targets.permits(ip)).then_some(ip)
}

/// A client for CronBox's own deliveries to user URLs (alert webhooks): the same address guard
/// as job calls, and no redirects (a 3xx is an answer, not a hop to follow).
pub fn unredirected_client(targets: TargetPolicy) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            targets: Arc::new(targets),
        }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(15))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("CronBox/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[derive(Clone)]
pub struct HttpCaller {
    client: reqwest::Client,
    targets: Arc<TargetPolicy>,
    max_response_bytes: usize,
}

impl HttpCaller {
    pub fn new(targets: TargetPolicy, max_response_bytes: usize) -> Result<Self, reqwest::Error> {
        let targets = Arc::new(targets);
        let hop_targets = targets.clone();
        // Browsers' method rules apply (reqwest's own: 301/302/303 turn POST into GET, 307/308
        // keep it) and credentials are dropped when the host changes.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            if !matches!(attempt.url().scheme(), "http" | "https") {
                return attempt.error("redirect to a non-http(s) url");
            }
            if let Some(ip) = blocked_literal(attempt.url(), &hop_targets) {
                return attempt.error(BlockedTarget(ip));
            }
            attempt.follow()
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                targets: targets.clone(),
            }))
            .no_proxy()
            .redirect(policy)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("CronBox/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            targets,
            max_response_bytes,
        })
    }

    /// Performs one attempt, signed with `secrets` (Standard Webhooks). `message_id` becomes
    /// `webhook-id`: the run id for the run's own request (the same for every attempt and
    /// redelivery), `<run id>.callback` for its callback. Never fails: every failure is an
    /// outcome to record.
    pub async fn call(
        &self,
        request: &RequestSpec,
        run_id: Uuid,
        attempt: u32,
        message_id: &str,
        secrets: &[SigningSecret],
    ) -> AttemptOutcome {
        let started = Instant::now();
        let mut outcome = self.call_inner(request, run_id, attempt, message_id, secrets).await;
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        // Whatever the wire or an error text carried, the record holds nothing the read models
        // would refuse.
        outcome.storable()
    }

    async fn call_inner(
        &self,
        spec: &RequestSpec,
        run_id: Uuid,
        attempt: u32,
        message_id: &str,
        secrets: &[SigningSecret],
    ) -> AttemptOutcome {
        let fail = |kind: ErrorKind, message: String| AttemptOutcome {
            error_kind: Some(kind),
            error_message: Some(message),
            ..Default::default()
        };
        let url = match reqwest::Url::parse(&spec.url) {
            Ok(u) => u,
            Err(e) => return fail(ErrorKind::Other, format!("invalid url: {e}")),
        };
        if let Some(ip) = blocked_literal(&url, &self.targets) {
            return fail(ErrorKind::BlockedTarget, BlockedTarget(ip).to_string());
        }
        let method = reqwest::Method::from_bytes(spec.method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self
            .client
            .request(method, url)
            .timeout(Duration::from_secs(u64::from(spec.timeout_seconds)))
            .header("X-CronBox-Run-Id", run_id.to_string())
            .header("X-CronBox-Attempt", attempt.to_string());
        for h in &spec.headers {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        let id = message_id;
        let timestamp = chrono::Utc::now().timestamp();
        let body = spec.body.as_deref().unwrap_or_default().as_bytes();
        req = req
            .header(webhook::ID_HEADER, id)
            .header(webhook::TIMESTAMP_HEADER, timestamp)
            .header(
                webhook::SIGNATURE_HEADER,
                webhook::signature_header(secrets, id, timestamp, body),
            );
        if let Some(body) = &spec.body {
            req = req.body(body.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let (kind, message) = classify(&e);
                return fail(kind, message);
            }
        };
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .take(MAX_STORED_HEADERS)
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes());
                (
                    k.as_str().to_string(),
                    v.chars().take(MAX_STORED_HEADER_VALUE).collect(),
                )
            })
            .collect();
        let mut kept = Vec::new();
        // The whole body (up to the response cap) only when a body check needs it.
        let checks_body = spec.expect_body_contains.is_some() || spec.expect_json.is_some();
        let mut full = Vec::new();
        let mut size: u64 = 0;
        let mut error = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    size += chunk.len() as u64;
                    if kept.len() < MAX_STORED_BODY_BYTES {
                        let room = MAX_STORED_BODY_BYTES - kept.len();
                        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    if checks_body && full.len() < self.max_response_bytes {
                        let room = self.max_response_bytes - full.len();
                        full.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    if size > self.max_response_bytes as u64 {
                        // Stop reading; dropping the response closes the connection.
                        error = Some((
                            ErrorKind::TooLarge,
                            format!("response body exceeds {} bytes", self.max_response_bytes),
                        ));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(classify(&e));
                    break;
                }
            }
        }
        let (error_kind, error_message) = match error {
            Some((k, m)) => (Some(k), Some(m)),
            None => {
                let body = if checks_body { &full } else { &kept };
                match policy::response_verdict(
                    &spec.expected_status,
                    spec.expect_body_contains.as_deref(),
                    spec.expect_json.as_ref(),
                    status,
                    body,
                ) {
                    Some((kind, why)) => (Some(kind), Some(why)),
                    None => (None, None),
                }
            }
        };
        // Binary bodies (images, gzip, NUL bytes) are kept as base64: lossless, and storable.
        let (body, encoding) = stored_body(&kept, size > kept.len() as u64);
        AttemptOutcome {
            status_code: Some(status),
            response_headers: headers,
            response_body: Some(body),
            response_body_encoding: encoding,
            response_size: size,
            duration_ms: 0,
            accepted: Some(error_kind.is_none()),
            error_kind,
            error_message,
        }
    }
}

/// Maps a reqwest error to the error type users see.
fn classify(e: &reqwest::Error) -> (ErrorKind, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut chain = Vec::new();
    while let Some(s) = source {
        if s.downcast_ref::<BlockedTarget>().is_some() {
            return (ErrorKind::BlockedTarget, s.to_string());
        }
        if s.downcast_ref::<NoPublicAddress>().is_some() {
            return (ErrorKind::Dns, s.to_string());
        }
        chain.push(s.to_string());
        source = s.source();
    }
    let message = chain.join(": ");
    let lower = message.to_ascii_lowercase();
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
    {
        ErrorKind::Dns
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        ErrorKind::Tls
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    };
    (kind, message)
}
