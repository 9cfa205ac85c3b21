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
    /// (label key, value in words)
    figures: Vec<(&'static str, String)>,
    tabs: [(&'static str, &'static str); 4],
    /// The tab this page is (its href in [`TABS`]).
    tab: &'static str,
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
                        ("seconds", &decimal(tr, v["lag_seconds"].as_f64().unwrap_or(0.0))),
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
        tabs: TABS,
        tab: "/admin",
        figures: figures(tr, &admin::system_figures(&state).await?),
        items,
        running,
    };
    Ok(html(StatusCode::OK, &page, &s.visitor.set_cookies))
}

/// One decimal, with the reader's decimal sign (`0,5` in Russian).
fn decimal(tr: super::Tr, x: f64) -> String {
    let s = format!("{x:.1}");
    if tr.lang == cronbox_domain::channel::Language::Ru {
        s.replace('.', ",")
    } else {
        s
    }
}

fn figures(tr: super::Tr, f: &admin::SystemFigures) -> Vec<(&'static str, String)> {
    let dec = |x: f64| decimal(tr, x);
    vec![
        (
            "admin.runs_per_second",
            tr.f(
                "admin.per_second",
                &[
                    ("n", &dec(f.runs_per_second)),
                    ("s", &format!("{:.0}", f.window_seconds)),
                ],
            ),
        ),
        (
            "admin.lateness_p99",
            f.lateness_p99_ms.map_or_else(
                || "—".into(),
                |ms| tr.f("runs.ms", &[("ms", &tr.num(ms.round() as i64))]),
            ),
        ),
        ("admin.in_flight", tr.num(f.in_flight)),
        (
            "admin.projection_lag",
            tr.f("admin.seconds", &[("s", &dec(f.projection_lag_seconds))]),
        ),
    ]
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

/// The admin panel's sections, for its tab bar.
const TABS: [(&str, &str); 4] = [
    ("/admin", "admin.projections"),
    ("/admin/users", "admin.users"),
    ("/admin/workspaces", "admin.workspaces"),
    ("/admin/events", "admin.events_tab"),
];

/// The zone an operator reads times in: their own setting, else Moscow's.
fn zone_of(s: &SignedIn) -> String {
    s.user.user.timezone.clone().unwrap_or_else(|| "Europe/Moscow".into())
}

pub struct UserItem {
    id: String,
    email: String,
    name: String,
    superuser: bool,
    active: bool,
    verified: bool,
    created: String,
    workspaces: i64,
    is_me: bool,
}

#[derive(Template)]
#[template(path = "app/admin_users.html")]
struct UsersPage {
    c: Chrome,
    tabs: [(&'static str, &'static str); 4],
    /// The tab this page is (its href in [`TABS`]).
    tab: &'static str,
    q: String,
    items: Vec<UserItem>,
}

pub async fn users(State(state): State<AppState>, s: SignedIn, Query(q): Query<HashMap<String, String>>) -> PageResult {
    admin::require_superuser(&s.user)?;
    let tr = super::Tr::new(s.visitor.lang);
    let search = q.get("q").cloned().unwrap_or_default();
    let zone = zone_of(&s);
    let items = crate::operators::find_users(&state, &search)
        .await?
        .into_iter()
        .map(|u| UserItem {
            is_me: u.id == s.user.user_id,
            id: u.id.to_string(),
            email: u.email,
            name: u.name,
            superuser: u.superuser,
            active: u.active,
            verified: u.verified,
            created: u.created_at.map_or_else(|| "—".into(), |t| tr.when(t, &zone)),
            workspaces: u.workspaces,
        })
        .collect();
    let page = UsersPage {
        c: Chrome::for_visitor(&s.visitor, tr.t("admin.title"), "admin").notice(super::notice(tr, &q)),
        tabs: TABS,
        tab: "/admin/users",
        q: search,
        items,
    };
    Ok(html(StatusCode::OK, &page, &s.visitor.set_cookies))
}

/// `POST /admin/users/{id}/{deactivate|activate|grant|withdraw}`.
pub async fn user_action(
    State(state): State<AppState>,
    s: SignedIn,
    Path((id, action)): Path<(String, String)>,
    _form: Posted,
) -> PageResult {
    admin::require_superuser(&s.user)?;
    let id = uuid::Uuid::try_parse(&id).map_err(|_| crate::error::ApiError::NotFound("user"))?;
    let notice = match action.as_str() {
        "deactivate" => crate::operators::set_active(&state, &s.user, id, false)
            .await
            .map(|_| "user_deactivated"),
        "activate" => crate::operators::set_active(&state, &s.user, id, true)
            .await
            .map(|_| "user_activated"),
        "grant" => crate::operators::set_superuser(&state, &s.user, id, true)
            .await
            .map(|_| "superuser_granted"),
        "withdraw" => crate::operators::set_superuser(&state, &s.user, id, false)
            .await
            .map(|_| "superuser_withdrawn"),
        _ => Err(crate::error::ApiError::NotFound("route")),
    }?;
    Ok(see_other(&format!("/admin/users?n={notice}")))
}

pub struct WorkspaceItem {
    id: String,
    name: String,
    slug: String,
    plan: String,
    members: i64,
    cron_jobs: i64,
    created: String,
}

#[derive(Template)]
#[template(path = "app/admin_workspaces.html")]
struct WorkspacesPage {
    c: Chrome,
    tabs: [(&'static str, &'static str); 4],
    /// The tab this page is (its href in [`TABS`]).
    tab: &'static str,
    q: String,
    items: Vec<WorkspaceItem>,
    plans: Vec<String>,
}

pub async fn workspaces(
    State(state): State<AppState>,
    s: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    admin::require_superuser(&s.user)?;
    let tr = super::Tr::new(s.visitor.lang);
    let search = q.get("q").cloned().unwrap_or_default();
    let zone = zone_of(&s);
    let plans: Vec<String> = sqlx::query_scalar("SELECT code FROM plans ORDER BY code")
        .fetch_all(&state.pool)
        .await?;
    let items = crate::operators::find_workspaces(&state, &search)
        .await?
        .into_iter()
        .map(|w| WorkspaceItem {
            id: w.id.to_string(),
            name: w.name,
            slug: w.slug.unwrap_or_default(),
            plan: w.plan,
            members: w.members,
            cron_jobs: w.cron_jobs,
            created: tr.when(w.created_at, &zone),
        })
        .collect();
    let page = WorkspacesPage {
        c: Chrome::for_visitor(&s.visitor, tr.t("admin.title"), "admin").notice(super::notice(tr, &q)),
        tabs: TABS,
        tab: "/admin/workspaces",
        q: search,
        items,
        plans,
    };
    Ok(html(StatusCode::OK, &page, &s.visitor.set_cookies))
}

/// `POST /admin/workspaces/{id}/plan` (field `plan`) and `…/delete`.
pub async fn workspace_action(
    State(state): State<AppState>,
    s: SignedIn,
    Path((id, action)): Path<(String, String)>,
    form: Posted,
) -> PageResult {
    admin::require_superuser(&s.user)?;
    let id = uuid::Uuid::try_parse(&id).map_err(|_| crate::error::ApiError::NotFound("workspace"))?;
    let notice = match action.as_str() {
        "plan" => {
            let code = form.get("plan").unwrap_or_default();
            crate::operators::set_plan(&state, &s.user, id, &code).await?;
            "plan_changed"
        }
        "delete" => {
            crate::operators::delete_workspace(&state, &s.user, id).await?;
            "workspace_deleted"
        }
        _ => return Err(crate::error::ApiError::NotFound("route").into()),
    };
    Ok(see_other(&format!("/admin/workspaces?n={notice}")))
}

pub struct EventItem {
    sequence: i64,
    event_type: String,
    at: String,
    data: String,
}

#[derive(Template)]
#[template(path = "app/admin_events.html")]
struct EventsPage {
    c: Chrome,
    tabs: [(&'static str, &'static str); 4],
    /// The tab this page is (its href in [`TABS`]).
    tab: &'static str,
    kinds: [&'static str; 8],
    kind: String,
    id: String,
    searched: bool,
    items: Vec<EventItem>,
}

/// Any aggregate's stored events (`?type=run&id=…`), and a re-run of any run from there.
pub async fn events(
    State(state): State<AppState>,
    s: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    admin::require_superuser(&s.user)?;
    let tr = super::Tr::new(s.visitor.lang);
    let zone = zone_of(&s);
    let kind = q.get("type").cloned().unwrap_or_else(|| "run".into());
    let id = q.get("id").map(|s| s.trim().to_string()).unwrap_or_default();
    let searched = !id.is_empty();
    let items = if searched {
        if id.len() > 100 {
            return Err(crate::error::ApiError::field("id", "too_long", "id must be at most 100 characters").into());
        }
        admin::aggregate_events(&state.pool, &kind, &id)
            .await?
            .into_iter()
            .map(|e| EventItem {
                sequence: e["sequence"].as_i64().unwrap_or(0),
                event_type: e["type"].as_str().unwrap_or_default().to_string(),
                at: e["recorded_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map_or_else(|| "—".into(), |t| tr.when(t.to_utc(), &zone)),
                data: serde_json::to_string(&e["data"]).unwrap_or_default(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let page = EventsPage {
        c: Chrome::for_visitor(&s.visitor, tr.t("admin.title"), "admin").notice(super::notice(tr, &q)),
        tabs: TABS,
        tab: "/admin/events",
        kinds: [
            "run",
            "job",
            "workspace",
            "user",
            "session",
            "alert",
            "notification",
            "notification_channel",
        ],
        kind,
        id,
        searched,
        items,
    };
    Ok(html(StatusCode::OK, &page, &s.visitor.set_cookies))
}

/// `POST /admin/runs/{id}/rerun`: any finished run again (the admin API's re-run), then its
/// events.
pub async fn rerun(State(state): State<AppState>, s: SignedIn, Path(id): Path<String>, _form: Posted) -> PageResult {
    admin::require_superuser(&s.user)?;
    let id = uuid::Uuid::try_parse(&id).map_err(|_| crate::error::ApiError::NotFound("execution"))?;
    let (run_id, _) = crate::executions::rerun(&state.stores, id, None, Ok(()), None).await?;
    tracing::info!(run_id = %run_id, rerun_of = %id, by = %s.user.user_id, "operator re-run from the admin panel");
    Ok(see_other(&format!(
        "/admin/events?type=run&id={run_id}&n=rerun_scheduled"
    )))
}
