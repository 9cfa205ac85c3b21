//! Keyset pagination: `limit` and an opaque `cursor` (the sort key of the last item returned),
//! so pages stay stable and cheap however deep a client reads.

use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

pub fn limit(raw: Option<&str>) -> Result<i64, ApiError> {
    limit_within(raw, DEFAULT_LIMIT, MAX_LIMIT)
}

/// `limit` for lists with their own default and largest page.
pub fn limit_within(raw: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::field(
                "limit",
                "out_of_range",
                format!("limit must be an integer from 1 to {max}"),
            )),
        },
    }
}

/// A position: (time, id) of the last item of the previous page.
pub fn encode(t: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", t.timestamp_micros(), id))
}

pub fn decode(raw: Option<&str>) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || ApiError::field("cursor", "invalid_cursor", "cursor is not one this API returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (micros, id) = s.split_once(':').ok_or_else(bad)?;
    let t = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok(Some((t, Uuid::try_parse(id).map_err(|_| bad())?)))
}

/// A position in a list sorted by something other than time: the sort's name, the last item's
/// key (as text) and id. A cursor of another sort is refused rather than read as this one's.
pub fn encode_keyed(sort: &str, key: &str, id: Uuid) -> String {
    let raw = serde_json::json!([sort, key, id]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_keyed(raw: Option<&str>, sort: &str) -> Result<Option<(String, Uuid)>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || {
        ApiError::field(
            "cursor",
            "invalid_cursor",
            "cursor is not one this API returned for this sort",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad())?;
    let (s, key, id): (String, String, Uuid) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if s != sort {
        return Err(bad());
    }
    Ok(Some((key, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_cursor_reads_back_only_for_its_own_sort() {
        // Given a cursor of the name sort over a name with a quote and a colon
        let id = Uuid::new_v4();
        let c = encode_keyed("name", "a \"b\": c", id);
        // Then it reads back as it was, and is refused for another sort or as a time cursor
        assert_eq!(
            decode_keyed(Some(&c), "name").unwrap(),
            Some(("a \"b\": c".to_string(), id))
        );
        assert!(decode_keyed(Some(&c), "next_run").is_err());
        assert!(decode(Some(&c)).is_err());
        assert!(decode_keyed(Some(&encode(Utc::now(), id)), "name").is_err());
    }
}
