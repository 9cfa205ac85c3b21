//! Accepting an invitation: the mail's link opens this page (after login or sign-up with the
//! invited address), which asks before joining.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;

use super::{error_text, html, see_other, Chrome, PageResult, Posted, SignedIn, Tr};
use crate::AppState;

#[derive(Template)]
#[template(path = "app/invite.html")]
struct InvitePage {
    c: Chrome,
    token: String,
    /// "You are invited into …", when the token names a workspace.
    invited: Option<String>,
}

pub async fn page(State(state): State<AppState>, s: SignedIn, Query(q): Query<HashMap<String, String>>) -> PageResult {
    let tr = Tr::new(s.visitor.lang);
    let token = q.get("token").cloned().unwrap_or_default();
    let workspace = match token.len() {
        1..=200 => crate::workspaces::invited_to(&state, &token).await?.map(|w| w.name),
        _ => None,
    };
    let status = if workspace.is_some() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = InvitePage {
        c: Chrome::for_visitor(&s.visitor, tr.t("invite.title"), "workspaces"),
        token,
        invited: workspace.map(|w| tr.f("invite.into", &[("workspace", &w)])),
    };
    Ok(html(status, &page, &s.visitor.set_cookies))
}

pub async fn accept(State(state): State<AppState>, s: SignedIn, form: Posted) -> PageResult {
    let token = form.get("token").unwrap_or_default();
    match crate::workspaces::join(&state, &s.user, &token).await {
        Ok(ws) => Ok(see_other(&format!("/app/w/{}?n=joined", ws.id.unwrap_or_default()))),
        Err(e) => {
            let (status, code, _) = e.classify();
            if status.is_server_error() {
                return Err(e.into());
            }
            let tr = Tr::new(s.visitor.lang);
            let mut c = Chrome::for_visitor(&s.visitor, tr.t("invite.title"), "workspaces");
            c.notice = Some(error_text(tr, code, &e.to_string()));
            let page = InvitePage {
                c,
                token,
                invited: None,
            };
            Ok(html(status, &page, &s.visitor.set_cookies))
        }
    }
}
