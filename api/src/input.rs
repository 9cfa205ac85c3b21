//! Reading request bodies and query strings into validated values, with errors that name the
//! field. Bodies are parsed as a JSON object and read field by field (rather than through a
//! derived struct) so every problem — malformed JSON, a wrong type, an unknown field — becomes a
//! 400 that says which field and why.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::ApiError;

pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// A request body must arrive within this (a client trickling its body holds a connection and a
/// handler otherwise).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON object body.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), MAX_BODY_BYTES).await?;
        parse_object(&bytes, MAX_BODY_BYTES).map(JsonObject)
    }
}

/// Reads a body of at most `max` bytes within [`BODY_READ_TIMEOUT`]. Reading stops as soon as
/// the limit is passed (a `Content-Length` above it is refused before anything is read).
pub async fn read_body(body: axum::body::Body, max: usize) -> Result<Bytes, ApiError> {
    // A Content-Length over the limit is refused before a byte of the body is read.
    if axum::body::HttpBody::size_hint(&body).lower() > max as u64 {
        return Err(ApiError::TooLarge(max));
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::TooLarge(max)),
        Err(_) => Err(ApiError::BodyTimeout),
    }
}

/// A body of at most `max` bytes that must be a JSON object.
pub fn parse_object(bytes: &[u8], max: usize) -> Result<Map<String, Value>, ApiError> {
    if bytes.len() > max {
        return Err(ApiError::TooLarge(max));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => {
            refuse_nul_in_object(&map, "")?;
            Ok(map)
        }
        Ok(_) => Err(ApiError::BadRequest {
            code: "invalid_json",
            message: "the body must be a JSON object".into(),
            field: None,
        }),
        Err(e) => Err(ApiError::BadRequest {
            code: "invalid_json",
            message: format!("malformed JSON: {e}"),
            field: None,
        }),
    }
}

/// The message of every NUL refusal.
const NUL: &str = "must not contain the NUL character (U+0000)";

/// Refuses U+0000 anywhere in a body: in any string value or key, at any depth. PostgreSQL's
/// `text` and `jsonb` cannot hold it, so a stored NUL would be refused by the read models
/// later, away from the request that brought it. Checked once here, where every JSON body
/// passes, so no route can forget it; the error names the field (`headers.X-Token`,
/// `items[3].body`).
fn refuse_nul_in_object(map: &Map<String, Value>, prefix: &str) -> Result<(), ApiError> {
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if k.contains('\0') {
            return Err(ApiError::field(
                without_nul(&path),
                "invalid_character",
                format!("field names {NUL}"),
            ));
        }
        refuse_nul(v, &path)?;
    }
    Ok(())
}

fn refuse_nul(v: &Value, path: &str) -> Result<(), ApiError> {
    match v {
        Value::String(s) if s.contains('\0') => {
            Err(ApiError::field(path, "invalid_character", format!("{path} {NUL}")))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| refuse_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => refuse_nul_in_object(map, path),
        _ => Ok(()),
    }
}

fn without_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// Refuses a query string or path that decodes to something no route can use: a NUL
/// character or bytes that are not UTF-8. Named after the parameter (or `path`), as a 400.
pub fn check_uri(uri: &axum::http::Uri) -> Result<(), ApiError> {
    let path = uri.path();
    if path.contains('%') {
        let decoded: Vec<u8> = percent_decode(path.as_bytes());
        if decoded.contains(&0) || std::str::from_utf8(&decoded).is_err() {
            return Err(ApiError::field(
                "path",
                "invalid_character",
                "the path must be UTF-8 without the NUL character (U+0000)",
            ));
        }
    }
    let Some(query) = uri.query() else { return Ok(()) };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name_bytes = percent_decode(name.replace('+', " ").as_bytes());
        let value_bytes = percent_decode(value.replace('+', " ").as_bytes());
        let shown = String::from_utf8_lossy(&name_bytes).replace('\0', "\u{FFFD}");
        for bytes in [&name_bytes, &value_bytes] {
            if bytes.contains(&0) {
                return Err(ApiError::field(
                    shown,
                    "invalid_character",
                    format!("query parameters {NUL}"),
                ));
            }
            if std::str::from_utf8(bytes).is_err() {
                return Err(ApiError::field(
                    shown,
                    "invalid_character",
                    "query parameters must be UTF-8",
                ));
            }
        }
    }
    Ok(())
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ApiError) -> Option<String> {
        match e {
            ApiError::BadRequest { field, code, .. } => {
                assert_eq!(code, "invalid_character");
                field
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn nul_is_refused_anywhere_in_a_body_naming_the_field() {
        let cases = [
            (r#"{"name": "x\u0000y"}"#, "name"),
            (r#"{"headers": {"X-Token": "a\u0000"}}"#, "headers.X-Token"),
            (r#"{"items": [{"body": "ok"}, {"body": "\u0000"}]}"#, "items[1].body"),
            (r#"{"tags": ["a", "b\u0000"]}"#, "tags[1]"),
        ];
        for (body, want) in cases {
            let e = parse_object(body.as_bytes(), 1 << 20).unwrap_err();
            assert_eq!(field(e).as_deref(), Some(want), "{body}");
        }
        // An escaped backslash followed by u0000 is six ordinary characters, not a NUL.
        assert!(parse_object(br#"{"body": "\\u0000"}"#, 1 << 20).is_ok());
    }

    #[test]
    fn nul_and_invalid_utf8_are_refused_in_the_uri() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert_eq!(
            field(check_uri(&uri("/v1/x?cursor=a%00b")).unwrap_err()).as_deref(),
            Some("cursor")
        );
        assert_eq!(
            field(check_uri(&uri("/v1/x?status=%FF")).unwrap_err()).as_deref(),
            Some("status")
        );
        assert_eq!(
            field(check_uri(&uri("/v1/w/%00/cron")).unwrap_err()).as_deref(),
            Some("path")
        );
        assert!(check_uri(&uri("/v1/x?q=%D0%B6+1&t=a%2Cb")).is_ok());
    }
}

/// Typed access to a JSON object's fields; each getter consumes its field so that whatever is
/// left at the end is unknown.
pub struct Fields(pub Map<String, Value>);

fn wrong(field: &str, expected: &str) -> ApiError {
    ApiError::field(field, "invalid_type", format!("{field} must be {expected}"))
}

impl Fields {
    fn take(&mut self, field: &str) -> Option<Value> {
        match self.0.remove(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn string(&mut self, field: &str) -> Result<Option<String>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong(field, "a string")),
        }
    }

    pub fn int(&mut self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| wrong(field, "an integer")),
            Some(_) => Err(wrong(field, "an integer")),
        }
    }

    pub fn bool(&mut self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(wrong(field, "true or false")),
        }
    }

    pub fn strings(&mut self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(wrong(field, "an array of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong(field, "an array of strings")),
        }
    }

    /// An array of strings or integers, as strings (status codes may be given either way).
    pub fn codes(&mut self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    Value::Number(n) if n.is_u64() => Ok(n.to_string()),
                    _ => Err(wrong(field, "an array of strings or status codes")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong(field, "an array of strings or status codes")),
        }
    }

    /// `{"path": "$.a.b", "equals": <any JSON>}`.
    pub fn json_check(&mut self, field: &str) -> Result<Option<(String, Value)>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Object(mut m)) => {
                let path = match m.remove("path") {
                    Some(Value::String(p)) => p,
                    _ => return Err(wrong(&format!("{field}.path"), "a string")),
                };
                let equals = m
                    .remove("equals")
                    .ok_or_else(|| ApiError::field(format!("{field}.equals"), "required", "equals is required"))?;
                if let Some(k) = m.keys().next() {
                    return Err(ApiError::field(
                        format!("{field}.{k}"),
                        "unknown_field",
                        format!("unknown field {k}"),
                    ));
                }
                Ok(Some((path, equals)))
            }
            Some(_) => Err(wrong(field, "an object {\"path\", \"equals\"}")),
        }
    }

    /// Headers as a JSON object of name → string value.
    pub fn headers(&mut self, field: &str) -> Result<Option<Vec<(String, String)>>, ApiError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(ApiError::field(
                        format!("{field}.{k}"),
                        "invalid_type",
                        "header values must be strings",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong(field, "an object of header names to values")),
        }
    }

    pub fn time(&mut self, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.string(field)? {
            None => Ok(None),
            Some(s) => parse_time(field, &s).map(Some),
        }
    }

    /// Refuses fields nobody read (typos should not be silently ignored).
    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::field(
                k.clone(),
                "unknown_field",
                format!("unknown field {k}"),
            )),
        }
    }
}

pub fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::field(
                field,
                "invalid_time",
                format!("{field} must be an RFC 3339 time with offset"),
            )
        })
}

pub fn parse_uuid(field: &str, s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(s).map_err(|_| ApiError::field(field, "invalid_id", format!("{field} must be a UUID")))
}

/// A name search `q` as an ILIKE pattern for "contains, any case", LIKE's own wildcards matching
/// themselves (None: no filter). Longer than 200 characters is refused, naming `q`. The job
/// lists and the admin panel's searches read `q` by this one rule.
pub fn contains_pattern(q: &str) -> Result<Option<String>, ApiError> {
    let q = q.trim();
    if q.chars().count() > 200 {
        return Err(ApiError::field("q", "too_long", "q must be at most 200 characters"));
    }
    Ok((!q.is_empty()).then(|| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))))
}
