//! `GET /v1/cron/preview`: the next fire times of a schedule, computed by the same code the
//! dispatcher fires with, so the preview cannot disagree with reality.

use std::collections::HashMap;

use axum::extract::Query;
use axum::Json;
use chrono::Utc;
use cronbox_domain::schedule::{CronSchedule, ScheduleError, DEFAULT_TIMEZONE};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::parse_time;

pub const MAX_COUNT: usize = 100;

/// Needs no key (the UI's cron builder calls it before anything exists); with a key, the
/// timezone defaults to the workspace's, as it does for a new job.
#[utoipa::path(
    get,
    path = "/v1/cron/preview",
    tag = "tools",
    summary = "Next fire times of a cron expression",
    params(crate::openapi::schemas::PreviewQuery),
    responses((status = 200, description = "The next fires", body = crate::openapi::schemas::CronPreview)),
    security((), ("api_key" = []))
)]
pub async fn preview(
    caller: Option<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let schedule = q
        .get("schedule")
        .ok_or_else(|| ApiError::field("schedule", "required", "schedule is required"))?;
    let timezone = match (q.get("timezone"), &caller) {
        (Some(tz), _) => tz.as_str(),
        (None, Some(c)) => c.timezone.as_str(),
        (None, None) => DEFAULT_TIMEZONE,
    };
    let count = match q.get("count") {
        None => 5,
        Some(c) => match c.parse::<usize>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => n,
            _ => {
                return Err(ApiError::field(
                    "count",
                    "out_of_range",
                    format!("count must be an integer from 1 to {MAX_COUNT}"),
                ))
            }
        },
    };
    let after = match q.get("after") {
        None => Utc::now(),
        Some(a) => parse_time("after", a)?,
    };
    let s = CronSchedule::parse(schedule, timezone).map_err(|e| match e {
        ScheduleError::UnknownTimezone(_) => ApiError::field("timezone", "invalid_timezone", e.to_string()),
        _ => ApiError::field("schedule", "invalid_schedule", e.to_string()),
    })?;
    let next: Vec<String> = s.upcoming(after, count).into_iter().map(|t| t.to_rfc3339()).collect();
    Ok(Json(
        json!({"schedule": s.expression(), "timezone": timezone, "description": s.describe(), "next": next}),
    ))
}
