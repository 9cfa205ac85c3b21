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
