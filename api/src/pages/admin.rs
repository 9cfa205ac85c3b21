//! The admin panel (superusers; anyone else gets the API's 404): projections with their
//! checkpoint, lag and quarantine, and rebuilds with a progress bar.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::{html, see_other, Chrome, PageResult, Posted, SignedIn};
use crate::admin;
use crate::AppState;

struct Rebuild {
    status: String,
    status_key: String,
    done: i64,
    total: i64,
    error: Option<String>,
}

struct Projection {
    name: String,
    checkpoint: String,
    lag: String,
    quarantined: i64,
    rebuildable: bool,
    rebuild: Option<Rebuild>,
}

#[derive(Template)]
#[template(path = "app/admin.html")]
struct AdminPage {
    c: Chrome,
    items: Vec<Projection>,
    running: bool,
}

pub async fn projections(
    State(state): State<AppState>,
    s: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    admin::require_superuser(&s.user)?;
    let tr = super::Tr::new(s.visitor.lang);
    let rebuildable = cronbox_projections::admin::rebuildable();
    let items: Vec<Projection> = admin::projection_overview(&state)
        .await?
        .into_iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let rebuild = v["rebuild"].as_object().map(|r| {
                let status = r["status"].as_str().unwrap_or_default().to_string();
                Rebuild {
                    status_key: format!("admin.rebuild_{status}"),
                    status,
                    done: r["events_replayed"].as_i64().unwrap_or(0),
                    total: r["events_total"].as_i64().unwrap_or(0).max(1),
                    error: r["error"].as_str().map(str::to_string),
                }
            });
            Projection {
                rebuildable: rebuildable.contains(&name.as_str()),
                checkpoint: v["checkpoint"].as_str().unwrap_or("—").to_string(),
                lag: tr.f(
                    "admin.lag_value",
                    &[
                        ("events", &tr.n("admin.events", v["lag_events"].as_i64().unwrap_or(0))),
                        ("seconds", &format!("{:.1}", v["lag_seconds"].as_f64().unwrap_or(0.0))),
                    ],
                ),
                quarantined: v["quarantined"].as_i64().unwrap_or(0),
                name,
                rebuild,
            }
        })
        .collect();
    let running = items
        .iter()
        .any(|p| p.rebuild.as_ref().is_some_and(|r| r.status == "running"));
    let page = AdminPage {
        c: Chrome::for_visitor(&s.visitor, tr.t("admin.title"), "admin").notice(super::notice(tr, &q)),
        items,
        running,
    };
    Ok(html(StatusCode::OK, &page, &s.visitor.set_cookies))
}

pub async fn rebuild(
    State(state): State<AppState>,
    s: SignedIn,
    Path(name): Path<String>,
    _form: Posted,
) -> PageResult {
    admin::begin_rebuild(&state, &s.user, &name).await?;
    Ok(see_other("/admin?n=rebuild_started"))
}
