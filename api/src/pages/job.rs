//! A cron job's page: its facts, charts of success rate, duration (p50/p95) and lateness per
//! hour or day over a chosen range (server-side SVG), and its audit trail.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, DurationRound, Utc};
use uuid::Uuid;

use super::charts::{self, Point};
use super::{html, Chrome, Member, PageResult};
use crate::error::ApiError;
use crate::jobs::{self, Kind};
use crate::AppState;

#[derive(Template)]
#[template(path = "app/job.html")]
struct JobPage {
    c: Chrome,
    base: String,
    id: String,
    schedule: String,
    describe: String,
    timezone: String,
    status: String,
    status_key: String,
    next_run: String,
    method: String,
    url: String,
    can_edit: bool,
    range: String,
    ranges: [(&'static str, &'static str); 3],
    success_svg: String,
    duration_svg: String,
    lateness_svg: String,
    trail: Vec<(String, String)>,
    name: String,
    /// The published badge: (its path here, its public address).
    badge: Option<(String, String)>,
}

/// (bucket start, runs finished, of them succeeded, p50 ms, p95 ms, p95 lateness ms)
type Bucket = (DateTime<Utc>, i64, i64, Option<f64>, Option<f64>, Option<f64>);

pub async fn page(
    State(state): State<AppState>,
    m: Member,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let tr = m.tr();
    let v = jobs::view_any(&state, &m.caller, &id, Kind::Cron).await?;
    let job_id = Uuid::try_parse(&id).map_err(|_| ApiError::NotFound("cron job"))?;
    let range = match q.get("range").map(String::as_str) {
        Some(r @ ("7d" | "30d")) => r,
        _ => "24h",
    };
    let (span, step, unit) = match range {
        "7d" => (Duration::days(7), Duration::days(1), "day"),
        "30d" => (Duration::days(30), Duration::days(1), "day"),
        _ => (Duration::hours(24), Duration::hours(1), "hour"),
    };
    let now = Utc::now();
    // Buckets in UTC: hours are the same everywhere that matters here, and days are labelled.
    let rows: Vec<Bucket> = sqlx::query_as(
        "SELECT date_trunc($3, scheduled_for) AS b,
                count(*) FILTER (WHERE status IN ('succeeded', 'failed')),
                count(*) FILTER (WHERE status = 'succeeded'),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - scheduled_for) * 1000)
           FROM runs
          WHERE workspace_id = $1 AND job_id = $2 AND scheduled_for > $4
          GROUP BY 1 ORDER BY 1",
    )
    .bind(m.caller.workspace_id)
    .bind(job_id)
    .bind(unit)
    .bind(now - span)
    .fetch_all(&state.pool)
    .await?;
    let by: HashMap<DateTime<Utc>, &Bucket> = rows.iter().map(|r| (r.0, r)).collect();
    let first = (now - span).duration_trunc(step).unwrap_or(now - span) + step;
    let mut buckets = Vec::new();
    let mut t = first;
    while t <= now {
        buckets.push(t);
        t += step;
    }
    let label = |t: DateTime<Utc>| -> String {
        let zone: chrono_tz::Tz = m.zone().parse().unwrap_or(chrono_tz::UTC);
        let local = t.with_timezone(&zone);
        if unit == "hour" {
            local.format("%H:00").to_string()
        } else {
            format!(
                "{} {}",
                local.format("%-d"),
                tr.t(&format!("month.{}", local.format("%-m")))
            )
        }
    };
    let series = |f: &dyn Fn(&Bucket) -> Option<f64>| -> Vec<Point> {
        buckets
            .iter()
            .map(|b| Point {
                label: label(*b),
                value: by.get(b).and_then(|r| f(r)),
            })
            .collect()
    };
    let success = series(&|r| (r.1 > 0).then(|| r.2 as f64 * 100.0 / r.1 as f64));
    let p50 = series(&|r| r.3);
    let p95 = series(&|r| r.4);
    let late = series(&|r| r.5);
    let ms = tr.t("job.ms_unit");
    let trail = jobs::job_trail(&state, &m.caller, &id, Kind::Cron)
        .await?
        .into_iter()
        .rev()
        .take(50)
        .map(|e| (e.event_type, tr.when(e.recorded_at, &m.zone())))
        .collect();
    let status = v["status"].as_str().unwrap_or_default().to_string();
    let tz = v["timezone"].as_str().unwrap_or_default().to_string();
    let next_run = v["next_run_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or_else(
            || "—".to_string(),
            |t| format!("{} ({})", tr.when(t.to_utc(), &tz), tr.relative(t.to_utc(), now)),
        );
    let page = JobPage {
        c: Chrome::for_member(&m, v["name"].as_str().unwrap_or_default(), "cron").notice(super::notice(tr, &q)),
        base: m.href(""),
        id: id.clone(),
        schedule: v["schedule"].as_str().unwrap_or_default().to_string(),
        describe: super::describe_schedule(
            tr,
            v["schedule"].as_str().unwrap_or_default(),
            v["description_of_schedule"].as_str().unwrap_or_default(),
        ),
        timezone: tz,
        status_key: format!("status.{status}"),
        status,
        next_run,
        method: v["method"].as_str().unwrap_or_default().to_string(),
        url: v["url"].as_str().unwrap_or_default().to_string(),
        can_edit: m.caller.role >= cronbox_domain::workspace::Role::Member,
        range: range.to_string(),
        ranges: [
            ("24h", "job.range_24h"),
            ("7d", "job.range_7d"),
            ("30d", "job.range_30d"),
        ],
        success_svg: charts::percent_bars(tr.t("job.success"), &success),
        duration_svg: charts::lines(
            tr.t("job.duration"),
            ms,
            &[("p50", "#0b57d0", p50), ("p95", "#b3261e", p95)],
        ),
        lateness_svg: charts::lines(tr.t("job.lateness"), ms, &[("p95", "#7a4d00", late)]),
        trail,
        name: v["name"].as_str().unwrap_or_default().to_string(),
        badge: v["status_badge"].as_str().map(|t| {
            let path = format!("/badge/{t}.svg");
            (
                path.clone(),
                format!("{}{path}", state.public_url.trim_end_matches('/')),
            )
        }),
    };
    Ok(html(StatusCode::OK, &page, &m.visitor.set_cookies))
}
