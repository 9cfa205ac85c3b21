//! The HTTP request a job sends, shared by cron jobs and delayed calls. `RequestSpec::parse` is the
//! only way to build one from user input, so everything inward can trust its fields.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::policy::{self, Backoff, JsonCheck, RetryOn, StatusMatch};
use crate::target::TargetPolicy;
use crate::FieldError;

pub const MAX_URL_LEN: usize = 2048;
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 50;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 10;
pub const MAX_TIMEOUT_SECONDS: u32 = 300;
pub const MAX_RETRY_COUNT: u32 = 10;
pub const DEFAULT_RETRY_DELAY_SECONDS: u32 = 60;
pub const MAX_RETRY_DELAY_SECONDS: u32 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl HttpMethod {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Ok(Self::Get),
            "POST" => Ok(Self::Post),
            "PUT" => Ok(Self::Put),
            "PATCH" => Ok(Self::Patch),
            "DELETE" => Ok(Self::Delete),
            "HEAD" => Ok(Self::Head),
            _ => Err(FieldError::new(
                "method",
                "invalid_method",
                "method must be one of GET, POST, PUT, PATCH, DELETE, HEAD",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The request a run sends. Built only through [`RequestSpec::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub url: String,
    pub method: HttpMethod,
    pub headers: Vec<Header>,
    pub body: Option<String>,
    pub timeout_seconds: u32,
    pub retry_count: u32,
    pub retry_delay_seconds: u32,
    // Fields added after the first events were written default when an old event is read.
    #[serde(default)]
    pub retry_backoff: Backoff,
    #[serde(default = "default_max_delay")]
    pub retry_max_delay_seconds: u32,
    #[serde(default = "policy::default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    #[serde(default = "policy::default_expected_status")]
    pub expected_status: Vec<StatusMatch>,
    #[serde(default)]
    pub expect_body_contains: Option<String>,
    #[serde(default)]
    pub expect_json: Option<JsonCheck>,
    /// Headers (lower-case names) the user marked as credentials: their values never appear in
    /// the events customers read (`crate::public`), like headers the built-in rule catches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive_headers: Vec<String>,
}

fn default_max_delay() -> u32 {
    policy::DEFAULT_RETRY_MAX_DELAY_SECONDS
}

/// Raw user input for a request spec; `None` means "use the default".
#[derive(Debug, Clone, Default)]
pub struct RequestInput {
    pub url: String,
    pub method: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout_seconds: Option<i64>,
    pub retry_count: Option<i64>,
    pub retry_delay_seconds: Option<i64>,
    pub retry_backoff: Option<String>,
    pub retry_max_delay_seconds: Option<i64>,
    pub retry_on: Option<Vec<String>>,
    pub expected_status: Option<Vec<String>>,
    /// Names of headers to treat as credentials (each must be one of `headers`).
    pub sensitive_headers: Vec<String>,
    pub expect_body_contains: Option<String>,
    /// (path, expected value)
    pub expect_json: Option<(String, serde_json::Value)>,
}

/// Headers the HTTP client owns; letting users set them would corrupt framing or routing.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "x-cronbox-run-id",
];

impl RequestSpec {
    /// Validates user input. `targets` decides which literal addresses the url may name
    /// (operators and the test suite); host names are checked again at execution time.
    pub fn parse(input: RequestInput, targets: &TargetPolicy) -> Result<Self, FieldError> {
        let url = parse_target_url("url", &input.url, targets)?;
        let method = match input.method.as_deref() {
            None => HttpMethod::Get,
            Some(m) => HttpMethod::parse(m)?,
        };
        let headers = parse_headers(input.headers)?;
        let mut sensitive_headers: Vec<String> = Vec::new();
        for name in &input.sensitive_headers {
            let lower = name.trim().to_ascii_lowercase();
            if !headers.iter().any(|h| h.name.eq_ignore_ascii_case(&lower)) {
                return Err(FieldError::new(
                    "sensitive_headers",
                    "unknown_header",
                    format!("{name} is not one of the request's headers"),
                ));
            }
            if !sensitive_headers.contains(&lower) {
                sensitive_headers.push(lower);
            }
        }
        if let Some(body) = &input.body {
            if body.len() > MAX_BODY_BYTES {
                return Err(FieldError::new(
                    "body",
                    "too_large",
                    format!("body is {} bytes; the limit is {MAX_BODY_BYTES}", body.len()),
                ));
            }
        }
        let timeout_seconds = bounded(
            "timeout_seconds",
            input.timeout_seconds,
            DEFAULT_TIMEOUT_SECONDS,
            1,
            MAX_TIMEOUT_SECONDS,
        )?;
        let retry_count = bounded("retry_count", input.retry_count, 0, 0, MAX_RETRY_COUNT)?;
        let retry_delay_seconds = bounded(
            "retry_delay_seconds",
            input.retry_delay_seconds,
            DEFAULT_RETRY_DELAY_SECONDS,
            0,
            MAX_RETRY_DELAY_SECONDS,
        )?;
        let retry_backoff = match input.retry_backoff.as_deref() {
            None => Backoff::Fixed,
            Some(b) => Backoff::parse("retry_backoff", b)?,
        };
        let retry_max_delay_seconds = bounded(
            "retry_max_delay_seconds",
            input.retry_max_delay_seconds,
            policy::DEFAULT_RETRY_MAX_DELAY_SECONDS,
            1,
            policy::MAX_RETRY_MAX_DELAY_SECONDS,
        )?;
        let retry_on = match input.retry_on {
            None => policy::default_retry_on(),
            Some(list) => short_list("retry_on", list, RetryOn::parse)?,
        };
        let expected_status = match input.expected_status {
            None => policy::default_expected_status(),
            Some(list) if list.is_empty() => {
                return Err(FieldError::new(
                    "expected_status",
                    "invalid",
                    "give at least one status",
                ))
            }
            Some(list) => short_list("expected_status", list, StatusMatch::parse)?,
        };
        if let Some(needle) = &input.expect_body_contains {
            if needle.is_empty() || needle.len() > MAX_CHECK_BYTES {
                return Err(FieldError::new(
                    "expect_body_contains",
                    "out_of_range",
                    format!("1 to {MAX_CHECK_BYTES} bytes"),
                ));
            }
        }
        let expect_json = match input.expect_json {
            None => None,
            Some((path, equals)) => {
                if equals.to_string().len() > MAX_CHECK_BYTES {
                    return Err(FieldError::new(
                        "expect_json.equals",
                        "too_large",
                        format!("at most {MAX_CHECK_BYTES} bytes"),
                    ));
                }
                Some(JsonCheck::parse("expect_json.path", path, equals)?)
            }
        };
        Ok(Self {
            url,
            method,
            headers,
            body: input.body,
            timeout_seconds,
            retry_count,
            retry_delay_seconds,
            retry_backoff,
            retry_max_delay_seconds,
            retry_on,
            expected_status,
            expect_body_contains: input.expect_body_contains,
            expect_json,
            sensitive_headers,
        })
    }
}

/// Longest `expect_body_contains` or `expect_json.equals`.
const MAX_CHECK_BYTES: usize = 1024;

/// Parses up to 20 entries of a policy list, naming the entry at fault.
fn short_list<T>(
    field: &str,
    list: Vec<String>,
    parse: impl Fn(&str, &str) -> Result<T, FieldError>,
) -> Result<Vec<T>, FieldError> {
    if list.len() > 20 {
        return Err(FieldError::new(field, "too_many", "at most 20 entries"));
    }
    list.iter().map(|s| parse(field, s)).collect()
}

fn bounded(field: &str, v: Option<i64>, default: u32, min: u32, max: u32) -> Result<u32, FieldError> {
    let Some(v) = v else { return Ok(default) };
    if v < i64::from(min) || v > i64::from(max) {
        return Err(FieldError::new(
            field,
            "out_of_range",
            format!("{field} must be between {min} and {max}"),
        ));
    }
    // In range of u32 by the check above.
    Ok(v as u32)
}

fn parse_headers(raw: Vec<(String, String)>) -> Result<Vec<Header>, FieldError> {
    if raw.len() > MAX_HEADERS {
        return Err(FieldError::new(
            "headers",
            "too_many",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    let mut total = 0;
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let field = format!("headers.{name}");
        let valid_name = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(FieldError::new(field, "invalid_header", "invalid header name"));
        }
        let lower = name.to_ascii_lowercase();
        // The whole `X-CronBox-` namespace is ours: run id, attempt, and signatures later.
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-cronbox-") {
            return Err(FieldError::new(
                field,
                "reserved_header",
                "this header is set by CronBox and cannot be overridden",
            ));
        }
        // Visible ASCII, space and tab only: CR/LF would allow header injection.
        if !value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Err(FieldError::new(field, "invalid_header", "invalid header value"));
        }
        total += name.len() + value.len();
        if total > MAX_HEADER_BYTES {
            return Err(FieldError::new(
                "headers",
                "too_large",
                format!("headers exceed {MAX_HEADER_BYTES} bytes"),
            ));
        }
        out.push(Header { name, value });
    }
    Ok(out)
}

/// Parses an absolute http(s) URL. Literal IP hosts are checked here; names are resolved and
/// checked by the executor at call time (so a name cannot be re-pointed after creation).
pub fn parse_target_url(field: &str, raw: &str, targets: &TargetPolicy) -> Result<String, FieldError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(FieldError::new(field, "required", "url is required"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(FieldError::new(
            field,
            "too_large",
            format!("url is longer than {MAX_URL_LEN} characters"),
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| FieldError::new(field, "invalid_url", format!("invalid url: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(FieldError::new(field, "invalid_url", "url must use http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(
            field,
            "invalid_url",
            "credentials in the url are not allowed; use an Authorization header",
        ));
    }
    let host = match url.host() {
        Some(h) => h,
        None => return Err(FieldError::new(field, "invalid_url", "url has no host")),
    };
    if !targets.is_open() {
        let ip = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
                } else {
                    None
                }
            }
        };
        if let Some(ip) = ip {
            if !targets.permits(ip) {
                return Err(FieldError::new(
                    field,
                    "blocked_target",
                    "url points to a private, loopback or reserved address",
                ));
            }
        }
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(url: &str) -> RequestInput {
        RequestInput {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_applied() {
        let spec = RequestSpec::parse(input("https://example.com/hook"), &TargetPolicy::guarded()).unwrap();
        assert_eq!(spec.method, HttpMethod::Get);
        assert_eq!(spec.timeout_seconds, 10);
        assert_eq!(spec.retry_count, 0);
        assert_eq!(spec.retry_delay_seconds, 60);
    }

    #[test]
    fn rejects_bad_urls_naming_the_field() {
        for bad in [
            "",
            "ftp://example.com",
            "example.com",
            "http://",
            "https://u:p@example.com/",
        ] {
            let err = RequestSpec::parse(input(bad), &TargetPolicy::guarded()).unwrap_err();
            assert_eq!(err.field, "url", "{bad}");
        }
    }

    #[test]
    fn rejects_private_literals_unless_allowed() {
        for bad in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://100.64.0.1/",
        ] {
            let err = RequestSpec::parse(input(bad), &TargetPolicy::guarded()).unwrap_err();
            assert_eq!(err.code, "blocked_target", "{bad}");
            assert!(RequestSpec::parse(input(bad), &TargetPolicy::open()).is_ok(), "{bad}");
        }
        assert!(RequestSpec::parse(input("http://93.184.215.14/"), &TargetPolicy::guarded()).is_ok());
    }

    #[test]
    fn method_timeout_retry_bounds() {
        let mut i = input("https://example.com");
        i.method = Some("TRACE".into());
        assert_eq!(
            RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap_err().field,
            "method"
        );
        let mut i = input("https://example.com");
        i.timeout_seconds = Some(301);
        assert_eq!(
            RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap_err().field,
            "timeout_seconds"
        );
        let mut i = input("https://example.com");
        i.retry_count = Some(11);
        assert_eq!(
            RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap_err().field,
            "retry_count"
        );
        let mut i = input("https://example.com");
        i.retry_count = Some(10);
        i.timeout_seconds = Some(300);
        i.method = Some("post".into());
        let spec = RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap();
        assert_eq!(
            (spec.retry_count, spec.timeout_seconds, spec.method),
            (10, 300, HttpMethod::Post)
        );
    }

    #[test]
    fn header_rules() {
        let mut i = input("https://example.com");
        i.headers = vec![("X-Ok".into(), "a\r\nInjected: 1".into())];
        assert_eq!(
            RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap_err().field,
            "headers.X-Ok"
        );
        let mut i = input("https://example.com");
        i.headers = vec![("Host".into(), "evil".into())];
        assert_eq!(
            RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap_err().code,
            "reserved_header"
        );
        let mut i = input("https://example.com");
        i.headers = vec![("x-CronBox-Attempt".into(), "7".into())];
        assert_eq!(
            RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap_err().code,
            "reserved_header"
        );
        let mut i = input("https://example.com");
        i.body = Some("x".repeat(MAX_BODY_BYTES + 1));
        assert_eq!(
            RequestSpec::parse(i, &TargetPolicy::guarded()).unwrap_err().field,
            "body"
        );
    }
}
