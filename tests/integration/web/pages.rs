//! The web app's pages over plain HTTP: a cookie session from the login form, anti-forgery
//! refusals, roles enforced by the same checks as the API, and hostile names escaped.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::users::{call, member_of, owned_workspace, user, PW};
use crate::common::TestEnv;

/// A browser-like client: keeps cookies, does not follow redirects.
struct Web {
    http: reqwest::Client,
    base: String,
    cookies: std::sync::Mutex<Vec<(String, String)>>,
}

impl Web {
    fn new(env: &TestEnv) -> Self {
        Web {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: env.base(),
            cookies: Default::default(),
        }
    }

    fn cookie_header(&self) -> String {
        let c = self.cookies.lock().unwrap();
        c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&self, r: &reqwest::Response) {
        let mut c = self.cookies.lock().unwrap();
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            c.retain(|(n, _)| n != k);
            if !v.contains("Max-Age=0") {
                c.push((k.to_string(), val.to_string()));
            }
        }
    }

    async fn get(&self, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let h = r.headers().clone();
        (r.status().as_u16(), r.text().await.unwrap(), h)
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        self.keep(&r);
        let h = r.headers().clone();
        (r.status().as_u16(), r.text().await.unwrap(), h)
    }

    /// The anti-forgery token of the page at `path`.
    async fn csrf(&self, path: &str) -> String {
        let (s, html, _) = self.get(path).await;
        assert_eq!(s, 200, "{html}");
        let at = html.find("name=\"_csrf\" value=\"").expect("a form token") + 20;
        html[at..at + 32].to_string()
    }

    async fn log_in(&self, email: &str) {
        self.log_in_with(email, PW).await
    }

    async fn log_in_with(&self, email: &str, password: &str) {
        let t = self.csrf("/login").await;
        let (s, body, h) = self
            .post(
                "/login",
                &[
                    ("_csrf", &t),
                    ("email", email),
                    ("password", password),
                    ("next", "/app"),
                ],
                &[],
            )
            .await;
        assert_eq!(s, 303, "{body}");
        assert_eq!(h["location"], "/app");
        let set = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>();
        let session = set
            .iter()
            .find(|c| c.starts_with("cbx_session="))
            .expect("a session cookie");
        assert!(
            session.contains("HttpOnly") && session.contains("SameSite=Lax"),
            "{session}"
        );
    }
}

#[tokio::test]
async fn pages_refuse_forged_posts_and_escape_hostile_names() {
    let env = TestEnv::start().await;
    let hostile_ws = "<script>alert(1)</script>";
    let (token, ws) = owned_workspace(&env, "eve@example.com", hostile_ws, None).await;
    let hostile_job = "\"><img src=x onerror=alert(1)>";
    let (s, v) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/cron"),
        &token,
        Some(json!({"name": hostile_job, "schedule": "0 3 * * *", "url": env.target_url("/x"), "tags": ["<b>t</b>"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // The lists read a projection: wait until it holds the job (the API's lists lag the same way).
    env.eventually(Duration::from_secs(5), "the job listed", || async {
        let (_, v) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/cron"), &token, None).await;
        (v["items"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;

    let web = Web::new(&env);
    // Signed out: the console sends you to the login and back.
    let (s, _, h) = web.get(&format!("/app/w/{ws}/cron")).await;
    assert_eq!(s, 303);
    assert_eq!(
        h["location"].to_str().unwrap(),
        format!("/login?next=%2Fapp%2Fw%2F{ws}%2Fcron")
    );
    // A login post without the form's token, or from another site, is refused.
    let (s, body, _) = web
        .post("/login", &[("email", "eve@example.com"), ("password", PW)], &[])
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("Форма устарела"), "{body}");
    let t = web.csrf("/login").await;
    let (s, _, _) = web
        .post(
            "/login",
            &[("_csrf", &t), ("email", "eve@example.com"), ("password", PW)],
            &[("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(s, 403);
    // A wrong password says so, in the page's language, and sets no session.
    let (s, body, h) = web
        .post(
            "/login",
            &[
                ("_csrf", &t),
                ("email", "eve@example.com"),
                ("password", "wrong password!"),
            ],
            &[],
        )
        .await;
    assert_eq!(s, 401);
    assert!(body.contains("Неверная почта или пароль"), "{body}");
    assert!(h
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("cbx_session=cbs_")));

    web.log_in("eve@example.com").await;
    for path in [
        "/app".to_string(),
        format!("/app/w/{ws}"),
        format!("/app/w/{ws}/cron"),
        format!("/app/w/{ws}/executions"),
        format!("/app/w/{ws}/cron/new"),
    ] {
        let (s, html, h) = web.get(&path).await;
        assert_eq!(s, 200, "{path}: {html}");
        assert!(!html.contains("<script>alert"), "{path} shows the name unescaped");
        assert!(!html.contains("<img src=x"), "{path} shows the job name unescaped");
        assert!(!html.contains("<b>t</b>"), "{path} shows the tag unescaped");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(
            !html.contains("<script>") || html.matches("<script").count() == 1,
            "{path}: inline script"
        );
    }
    let (_, html, _) = web.get(&format!("/app/w/{ws}/cron")).await;
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{html}");
    assert!(
        html.contains("&#34;&#62;&#60;img src=x onerror=alert(1)&#62;"),
        "{html}"
    );

    // The list's search: by name, any case; LIKE's wildcards are plain characters.
    let (s, found) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron?q=IMG"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    for miss in ["zzz", "%25", "_"] {
        let (_, none) = call(
            &env,
            Method::GET,
            &format!("/v1/workspaces/{ws}/cron?q={miss}"),
            &token,
            None,
        )
        .await;
        assert_eq!(none["items"].as_array().unwrap().len(), 0, "q={miss}: {none}");
    }
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron?q=onerror")).await;
    assert_eq!(s, 200);
    assert!(html.contains("data-job="), "the search finds the job: {html}");

    // A state change without the token is refused, and changes nothing.
    let (s, _, _) = web.post("/app/workspaces", &[("name", "Forged")], &[]).await;
    assert_eq!(s, 403);
    let (_, list) = call(&env, Method::GET, "/v1/workspaces", &token, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    // Another workspace's pages are a 404, like its API.
    let (_, other) = owned_workspace(&env, "mallory@example.com", "Other", None).await;
    let (s, _, _) = web.get(&format!("/app/w/{other}/cron")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_viewer_sees_no_edit_buttons_and_is_refused_if_they_post_anyway() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "olga@example.com", "Team", Some("business")).await;
    let (s, job) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/cron"),
        &owner,
        Some(json!({"name": "Nightly", "schedule": "0 3 * * *", "url": env.target_url("/x")})),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    member_of(&env, &owner, &ws, "victor@example.com", "viewer").await;

    let web = Web::new(&env);
    web.log_in("victor@example.com").await;
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron")).await;
    assert_eq!(s, 200);
    assert!(html.contains("Nightly"));
    assert!(!html.contains("/pause\""), "a viewer sees no pause button");
    assert!(!html.contains("/cron/new"), "a viewer sees no create link");
    let (s, _, _) = web.get(&format!("/app/w/{ws}/cron/new")).await;
    assert_eq!(s, 403);
    let t = web.csrf(&format!("/app/w/{ws}/cron")).await;
    let (s, body, _) = web
        .post(&format!("/app/w/{ws}/cron/{job_id}/pause"), &[("_csrf", &t)], &[])
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("Ваша роль"), "{body}");
    let (_, j) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron/{job_id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(j["status"], "active", "nothing changed: {j}");

    // Logging out ends the session: the old cookie opens nothing.
    let stale = web.cookie_header();
    let (s, _, _) = web.post("/logout", &[("_csrf", &t)], &[]).await;
    assert_eq!(s, 303);
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/app", env.base()))
        .header("cookie", stale)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "a logged-out cookie is not a session");
}

/// The text of the first `<textarea id="{id}" …>…</textarea>` in `html` (askama escapes `&`,
/// `<`, `>`, `"` and `'`; undone here).
fn textarea(html: &str, id: &str) -> String {
    let start = html.find(&format!("<textarea id=\"{id}\"")).expect("the textarea");
    let open = start + html[start..].find('>').unwrap() + 1;
    let end = open + html[open..].find("</textarea>").unwrap();
    html[open..end]
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
}

#[tokio::test]
async fn a_member_edits_a_job_without_overwriting_its_secret_header_and_clones_it() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "owen@example.com", "Team", Some("business")).await;
    let (s, job) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/cron"),
        &owner,
        Some(
            json!({"name": "Sync", "schedule": "30 9 * * 1,3", "timezone": "Europe/Moscow",
                    "url": env.target_url("/sync"), "body": "{\"a\":1}",
                    "headers": {"Authorization": "Bearer s3cret", "X-Trace": "on"},
                    "sensitive_headers": ["Authorization"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    member_of(&env, &owner, &ws, "mia@example.com", "member").await;

    let web = Web::new(&env);
    web.log_in("mia@example.com").await;
    // The job's page: its facts, three charts and its audit trail.
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron/{id}?range=7d")).await;
    assert_eq!(s, 200, "{html}");
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 3, "{html}");
    assert!(html.contains("JobCreated"), "the audit trail: {html}");
    // The editor opens on the builder's weekly tab with the job's fields.
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron/{id}/edit")).await;
    assert_eq!(s, 200, "{html}");
    assert!(
        html.contains("<option value=\"weekly\" selected>"),
        "the weekly tab: {html}"
    );
    assert!(html.contains("value=\"09:30\""));
    let headers = textarea(&html, "headers");
    assert!(
        !headers.contains("s3cret"),
        "a member sees the secret masked: {headers}"
    );
    assert!(headers.contains("X-Trace: on"), "{headers}");
    let t = web.csrf(&format!("/app/w/{ws}/cron/{id}/edit")).await;
    let url = env.target_url("/sync");
    let (s, body, h) = web
        .post(
            &format!("/app/w/{ws}/cron/{id}/edit"),
            &[
                ("_csrf", &t),
                ("name", "Sync every 5"),
                ("mode", "minutes"),
                ("every_minutes", "5"),
                ("timezone", "Europe/Moscow"),
                ("method", "POST"),
                ("url", &url),
                ("headers", &headers),
                ("headers_orig", &headers),
                ("body", "{\"a\":1}"),
            ],
            &[],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    assert!(h["location"].to_str().unwrap().ends_with("/cron?n=saved"));
    let (_, j) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron/{id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(j["schedule"], "*/5 * * * *", "{j}");
    assert_eq!(j["name"], "Sync every 5");
    assert_eq!(
        j["headers"]["Authorization"], "Bearer s3cret",
        "the secret survived the edit: {j}"
    );

    // A bad schedule comes back on the form with the reason, and changes nothing.
    let (s, body, _) = web
        .post(
            &format!("/app/w/{ws}/cron/{id}/edit"),
            &[
                ("_csrf", &t),
                ("name", "x"),
                ("mode", "custom"),
                ("expression", "61 * * * *"),
                ("url", &url),
                ("headers_orig", ""),
            ],
            &[],
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("schedule"), "{body}");
    let (_, j) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron/{id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(j["schedule"], "*/5 * * * *");

    // Clone: the editor opens filled in, under a new name, and saving makes a second job.
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron/new?from={id}")).await;
    assert_eq!(s, 200);
    assert!(html.contains("Sync every 5 (копия)"), "{html}");
    assert!(
        !html.contains("name=\"headers_orig\""),
        "a clone sends its headers as a new job"
    );
    let cloned = textarea(&html, "headers");
    assert!(
        !cloned.contains("Authorization"),
        "a member's clone leaves the secret header out: {cloned}"
    );
    assert!(cloned.contains("X-Trace: on"), "{cloned}");
    assert!(html.contains("Секретные заголовки не скопированы"), "{html}");
}

#[tokio::test]
async fn a_curl_command_pasted_into_the_url_field_fills_the_editor_and_saves_nothing() {
    let env = TestEnv::start().await;
    let (token, ws) = owned_workspace(&env, "cora@example.com", "Curl", None).await;
    let web = Web::new(&env);
    web.log_in("cora@example.com").await;
    let t = web.csrf(&format!("/app/w/{ws}/cron/new")).await;
    let curl = format!(
        "curl -X PUT '{}' -H 'X-Api-Key: k1' -H \"Content-Type: application/json\" --data-raw '{{\"sync\": true}}' -s",
        env.target_url("/orders")
    );
    let (s, html, _) = web
        .post(
            &format!("/app/w/{ws}/cron/new"),
            &[
                ("_csrf", &t),
                ("name", "From curl"),
                ("mode", "daily"),
                ("time", "04:00"),
                ("url", &curl),
            ],
            &[],
        )
        .await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("Поля заполнены из команды curl"), "{html}");
    assert!(html.contains("<option selected>PUT</option>"), "{html}");
    assert!(
        html.contains(&format!("value=\"{}\"", env.target_url("/orders"))),
        "{html}"
    );
    let headers = textarea(&html, "headers");
    assert!(
        headers.contains("X-Api-Key: k1") && headers.contains("Content-Type: application/json"),
        "{headers}"
    );
    assert_eq!(textarea(&html, "body"), "{\"sync\": true}");
    assert!(html.contains("value=\"From curl\""), "the other fields stay as typed");
    let (_, list) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/cron"), &token, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing saved yet");
    // A command that cannot be read says why, on the form.
    let (s, html, _) = web
        .post(
            &format!("/app/w/{ws}/cron/new"),
            &[
                ("_csrf", &t),
                ("name", "x"),
                ("url", "curl -F f=@a.png https://example.com"),
            ],
            &[],
        )
        .await;
    assert_eq!(s, 400);
    assert!(html.contains("file uploads"), "{html}");
}

#[tokio::test]
async fn the_profile_lists_the_sessions_and_ends_another_one() {
    let env = TestEnv::start().await;
    let api_token = user(&env, "sasha@example.com").await;
    let web = Web::new(&env);
    web.log_in("sasha@example.com").await;
    let (s, html, _) = web.get("/profile").await;
    assert_eq!(s, 200, "{html}");
    assert_eq!(
        html.matches("data-session=").count(),
        2,
        "the browser's and the API's: {html}"
    );
    assert!(html.contains("этот браузер"), "{html}");
    // End the other one (the API login's): its tokens stop working.
    let at = html.find("action=\"/profile/sessions/").expect("an end button") + 26;
    let id = &html[at..at + 36];
    let t = web.csrf("/profile").await;
    let (s, body, _) = web
        .post(&format!("/profile/sessions/{id}/end"), &[("_csrf", &t)], &[])
        .await;
    assert_eq!(s, 303, "{body}");
    let (s, _) = call(&env, Method::GET, "/v1/me", &api_token, None).await;
    assert_eq!(s, 401, "the ended session's access token is refused");
    let (_, html, _) = web.get("/profile").await;
    assert_eq!(html.matches("data-session=").count(), 1, "{html}");
    // A session that is not this person's is not found.
    let (s, _, _) = web
        .post(
            &format!("/profile/sessions/{}/end", uuid::Uuid::new_v4()),
            &[("_csrf", &t)],
            &[],
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_run_page_shows_a_binary_body_as_hex_its_trail_and_lets_an_admin_run_it_again() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "rita@example.com", "Runs", Some("business")).await;
    let (s, job) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/cron"),
        &owner,
        Some(
            json!({"name": "Blob", "schedule": "0 3 * * *", "url": env.target_url("/binary/nul"),
                    "headers": {"X-Trace": "<b>on</b>"}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let run_id = crate::common::users::run_now_and_wait(&env, &owner, &ws, &id).await;
    member_of(&env, &owner, &ws, "vera@example.com", "viewer").await;

    let web = Web::new(&env);
    web.log_in("rita@example.com").await;
    // The job list shows the run in the job's strip of recent runs.
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron")).await;
    assert_eq!(s, 200, "{html}");
    assert!(
        html.contains("<svg class=\"strip\"") && html.contains("#2e7d32"),
        "{html}"
    );
    let page = format!("/app/w/{ws}/executions/{run_id}");
    let (s, html, _) = web.get(&page).await;
    assert_eq!(s, 200, "{html}");
    // The body `a\0b` is not text: a hex dump (and its base64) instead of a mangled string.
    assert!(html.contains("00000000  61 00 62"), "hex dump: {html}");
    assert!(html.contains("YQBi"), "the base64: {html}");
    assert!(
        html.contains("&#60;b&#62;on&#60;/b&#62;"),
        "request headers escaped: {html}"
    );
    assert!(!html.contains("<b>on</b>"));
    assert!(
        html.contains("RunScheduled") && html.contains("RunSucceeded"),
        "the trail: {html}"
    );
    assert!(
        html.contains(&format!("/executions/{run_id}/rerun")),
        "the re-run button"
    );
    // Re-run without the form token is refused; with it, the new run's page opens.
    let (s, _, _) = web.post(&format!("{page}/rerun"), &[], &[]).await;
    assert_eq!(s, 403);
    let t = web.csrf(&page).await;
    let (s, body, h) = web.post(&format!("{page}/rerun"), &[("_csrf", &t)], &[]).await;
    assert_eq!(s, 303, "{body}");
    let to = h["location"].to_str().unwrap().to_string();
    assert!(
        to.starts_with(&format!("/app/w/{ws}/executions/")) && !to.ends_with(&run_id),
        "{to}"
    );
    let (s, html, _) = web.get(&to).await;
    assert_eq!(s, 200, "{html}");
    assert!(
        html.contains(&format!("/executions/{run_id}\"")),
        "links back to the run it repeats: {html}"
    );

    // A viewer sees the run but no re-run, and is refused if they post anyway.
    let viewer = Web::new(&env);
    viewer.log_in("vera@example.com").await;
    let (s, html, _) = viewer.get(&page).await;
    assert_eq!(s, 200, "{html}");
    assert!(!html.contains("/rerun"), "no re-run for a viewer");
    let t = viewer.csrf(&page).await;
    let (s, _, _) = viewer.post(&format!("{page}/rerun"), &[("_csrf", &t)], &[]).await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn the_invitation_page_names_the_workspace_and_joins_only_with_a_valid_token() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "olga@example.com", "<script>alert(1)</script>", None).await;
    user(&env, "ivan@example.com").await;
    let (s, v) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/invites"),
        &owner,
        Some(json!({"email": "ivan@example.com", "role": "member"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let token = crate::common::users::token_from_mail(&env, "ivan@example.com").await;

    let web = Web::new(&env);
    // A stranger is sent to log in first, and comes back here.
    let path = format!("/app/invites/accept?token={token}");
    let (s, _, h) = web.get(&path).await;
    assert_eq!(s, 303);
    assert!(h["location"].to_str().unwrap().starts_with("/login"), "{h:?}");
    web.log_in("ivan@example.com").await;
    let (s, html, _) = web.get(&path).await;
    assert_eq!(s, 200, "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "the name, escaped: {html}"
    );
    assert!(!html.contains("<script>alert"));
    // A made-up token says so, as a 4xx page.
    let (s, html, _) = web.get("/app/invites/accept?token=nope").await;
    assert_eq!(s, 400, "{html}");
    // Joining needs the form token.
    let (s, _, _) = web.post("/app/invites/accept", &[("token", &token)], &[]).await;
    assert_eq!(s, 403);
    let t = web.csrf(&path).await;
    let (s, body, h) = web
        .post("/app/invites/accept", &[("_csrf", &t), ("token", &token)], &[])
        .await;
    assert_eq!(s, 303, "{body}");
    assert_eq!(h["location"], format!("/app/w/{ws}?n=joined").as_str());
    let (s, html, _) = web.get(&format!("/app/w/{ws}")).await;
    assert_eq!(s, 200, "{html}");
    // The token is spent: a second use is a clear refusal, not a second membership or a 500.
    let (s, html, _) = web
        .post("/app/invites/accept", &[("_csrf", &t), ("token", &token)], &[])
        .await;
    assert!((400..500).contains(&s), "{s} {html}");
}

#[tokio::test]
async fn the_editor_sends_a_test_request_as_typed_saves_nothing_and_keeps_its_policies() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "tess@example.com", "Probe", Some("business")).await;
    let web = Web::new(&env);
    web.log_in("tess@example.com").await;
    let t = web.csrf(&format!("/app/w/{ws}/cron/new")).await;
    let url = env.target_url("/probe/ok");
    let form = |url: &str| {
        vec![
            ("_csrf", t.clone()),
            ("name", "Probe".to_string()),
            ("mode", "daily".to_string()),
            ("time", "04:30".to_string()),
            ("timezone", "Europe/Moscow".to_string()),
            ("method", "POST".to_string()),
            ("url", url.to_string()),
            ("headers", "X-Token: t0k".to_string()),
            ("sensitive_headers", "X-Token".to_string()),
            ("body", "{\"hello\":1}".to_string()),
            ("flags", "1".to_string()),
            ("notify_on_failure", "1".to_string()),
            ("retry_delay_seconds", "7".to_string()),
            ("retry_backoff", "exponential".to_string()),
            ("expected_status", "200, 201".to_string()),
            ("expect_body_contains", "ok".to_string()),
            ("overlap_policy", "skip".to_string()),
            ("misfire_policy", "skip".to_string()),
            ("alert_after_failures", "3".to_string()),
            ("realert_every", "6h".to_string()),
        ]
    };
    let pairs = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let post = |path: String, f: Vec<(&'static str, String)>| {
        let web = &web;
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            web.post(&path, &f, &[]).await
        }
    };

    // The test request goes out as typed, signed, marked as a test; the editor comes back
    // with the outcome and the form as it was; nothing is saved.
    let (s, html, _) = post(format!("/app/w/{ws}/cron/test"), pairs(&form(&url))).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("id=\"test-result\""), "{html}");
    assert!(html.contains("HTTP 200"), "{html}");
    assert!(
        html.contains("value=\"exponential\" selected"),
        "the form as typed: {html}"
    );
    let got = env.target.arrivals_at("/probe/ok");
    assert_eq!(got.len(), 1, "one request");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].headers["x-token"], "t0k");
    assert_eq!(got[0].body, b"{\"hello\":1}");
    assert!(got[0].headers["webhook-id"].to_str().unwrap().starts_with("test."));
    assert!(got[0].headers.contains_key("webhook-signature"));
    let (_, list) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/cron"), &owner, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing saved: {list}");
    // A failing target: the failure in words and what to check.
    let (s, html, _) = post(
        format!("/app/w/{ws}/cron/test"),
        pairs(&form(&env.target_url("/status/503/x"))),
    )
    .await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("HTTP 503") && html.contains("class=\"hint\""), "{html}");
    // A private address is refused by the same guard as a run's (the test env allows loopback
    // only), and a bad field is named.
    let mut bad = pairs(&form(&url));
    bad.retain(|(k, _)| *k != "retry_delay_seconds");
    bad.push(("retry_delay_seconds", "soon".into()));
    let (s, html, _) = post(format!("/app/w/{ws}/cron/test"), bad).await;
    assert_eq!(s, 400, "{html}");
    assert!(html.contains("retry_delay_seconds"), "{html}");

    // Saved, every policy lands in the job as the API shows it.
    let (s, body, _) = post(format!("/app/w/{ws}/cron/new"), pairs(&form(&url))).await;
    assert_eq!(s, 303, "{body}");
    let (_, list) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/cron"), &owner, None).await;
    let job = &list["items"][0];
    assert_eq!(job["retry_delay_seconds"], 7, "{job}");
    assert_eq!(job["retry_backoff"], "exponential");
    assert_eq!(job["expected_status"], json!(["200", "201"]));
    assert_eq!(job["expect_body_contains"], "ok");
    assert_eq!(job["overlap_policy"], "skip");
    assert_eq!(job["misfire_policy"], "skip");
    assert_eq!(job["alert_after_failures"], 3);
    assert_eq!(job["realert_every"], "6h");
    assert_eq!(job["notify_on_failure"], true);
    assert_eq!(job["notify_on_recovery"], false, "an unticked box is off");
    assert_eq!(job["sensitive_headers"], json!(["x-token"]));
    let id = job["id"].as_str().unwrap().to_string();
    // The editor shows them back; a test of the saved job with the form unchanged sends its
    // stored secret, not the mask.
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron/{id}/edit")).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("<option value=\"skip\" selected>"), "{html}");
    assert!(html.contains("value=\"6h\""), "{html}");
    let headers_shown = textarea(&html, "headers");
    let t = web.csrf(&format!("/app/w/{ws}/cron/{id}/edit")).await;
    let mut f = pairs(&form(&env.target_url("/probe/saved")));
    for (k, v) in f.iter_mut() {
        if *k == "_csrf" {
            *v = t.clone();
        }
        if *k == "headers" {
            *v = headers_shown.clone();
        }
    }
    f.push(("headers_orig", headers_shown.clone()));
    let (s, html, _) = post(format!("/app/w/{ws}/cron/{id}/test"), f).await;
    assert_eq!(s, 200, "{html}");
    let got = env.target.arrivals_at("/probe/saved");
    assert_eq!(got.len(), 1, "{html}");
    assert_eq!(got[0].headers["x-token"], "t0k");
}

#[tokio::test]
async fn lists_sort_by_name_and_next_run_and_page_through_each_order() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "sora@example.com", "Sorts", Some("business")).await;
    for (name, schedule) in [
        ("b", "0 5 * * *"),
        ("a", "0 7 * * *"),
        ("d", "0 6 * * *"),
        ("c", "0 4 * * *"),
    ] {
        let (s, v) = call(
            &env,
            Method::POST,
            &format!("/v1/workspaces/{ws}/cron"),
            &owner,
            Some(json!({"name": name, "schedule": schedule, "timezone": "UTC", "url": env.target_url("/x")})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    env.eventually(Duration::from_secs(5), "the jobs listed", || async {
        let (_, v) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/cron"), &owner, None).await;
        (v["items"].as_array().map_or(0, Vec::len) == 4).then_some(())
    })
    .await;
    for (sort, want) in [("name", ["a", "b", "c", "d"]), ("next_run", ["c", "b", "d", "a"])] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..4 {
            let q = match &cursor {
                Some(c) => format!("?sort={sort}&limit=3&cursor={c}"),
                None => format!("?sort={sort}&limit=3"),
            };
            let (s, v) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/cron{q}"), &owner, None).await;
            assert_eq!(s, 200, "{v}");
            seen.extend(names(&v));
            cursor = v["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, want, "sort {sort}");
    }
    // A cursor of one order does not continue another, and an unknown order is named.
    let (_, v) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron?sort=name&limit=1"),
        &owner,
        None,
    )
    .await;
    let c = v["next_cursor"].as_str().unwrap();
    let (s, v) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron?sort=next_run&cursor={c}"),
        &owner,
        None,
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("cursor")), "{v}");
    let (s, v) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron?sort=random"),
        &owner,
        None,
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("sort")), "{v}");
    // The page offers the orders and keeps the chosen one.
    let web = Web::new(&env);
    web.log_in("sora@example.com").await;
    let (s, html, _) = web.get(&format!("/app/w/{ws}/cron?sort=name")).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("<option value=\"name\" selected>"), "{html}");
    let a = html.find(">a</a>").unwrap();
    let d = html.find(">d</a>").unwrap();
    assert!(a < d, "A to Z on the page");
}

#[tokio::test]
async fn a_superuser_deactivates_an_account_grants_rights_moves_a_plan_and_deletes_a_workspace() {
    let env = TestEnv::start().await;
    let root_pw = crate::common::users::new_superuser(&env, "root@example.com").await;
    let (uma, ws) = owned_workspace(&env, "uma@example.com", "Shop <b>x</b>", None).await;
    let (_, me) = call(&env, Method::GET, "/v1/me", &uma, None).await;
    let uma_id = me["id"].as_str().unwrap().to_string();
    let uma_web = Web::new(&env);
    uma_web.log_in("uma@example.com").await;
    // Not a superuser: the panel does not exist.
    let (s, _, _) = uma_web.get("/admin/users").await;
    assert_eq!(s, 404);

    let root = Web::new(&env);
    root.log_in_with("root@example.com", &root_pw).await;
    // The panel's first tab: the system's figures (polled by the page) above the projections.
    let (s, html, _) = root.get("/admin").await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("id=\"figures\" data-poll=\"5000\""), "{html}");
    assert!(
        html.contains("Запусков в работе") && html.contains("id=\"projections\""),
        "{html}"
    );
    let (s, html, _) = root.get("/admin/users?q=UMA").await;
    assert_eq!(s, 200, "{html}");
    assert!(
        html.contains("uma@example.com") && !html.contains("root@example.com"),
        "{html}"
    );
    let act = |a: &str| format!("/admin/users/{uma_id}/{a}");
    let (s, _, _) = root.post(&act("deactivate"), &[], &[]).await;
    assert_eq!(s, 403, "no form token");
    let t = root.csrf("/admin/users").await;
    let (s, body, h) = root.post(&act("deactivate"), &[("_csrf", &t)], &[]).await;
    assert_eq!(s, 303, "{body}");
    assert_eq!(h["location"], "/admin/users?n=user_deactivated");
    // Shut out everywhere: the browser session, the access token, a new login.
    let (s, _, h) = uma_web.get("/app").await;
    assert_eq!(s, 303);
    assert!(h["location"].to_str().unwrap().starts_with("/login"));
    let (s, _) = call(&env, Method::GET, "/v1/me", &uma, None).await;
    assert_eq!(s, 401);
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": "uma@example.com", "password": PW})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    // Let back in, and made a superuser: both are in the account's events.
    let (s, _, _) = root.post(&act("activate"), &[("_csrf", &t)], &[]).await;
    assert_eq!(s, 303);
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": "uma@example.com", "password": PW})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = root.post(&act("grant"), &[("_csrf", &t)], &[]).await;
    assert_eq!(s, 303);
    let (s, html, _) = root.get(&format!("/admin/events?type=user&id={uma_id}")).await;
    assert_eq!(s, 200, "{html}");
    for e in ["UserDeactivated", "UserReactivated", "SuperuserChanged"] {
        assert!(html.contains(e), "{e}: {html}");
    }
    assert!(!html.contains("argon2"), "no password hash on the page");
    // Not to oneself.
    let (_, me) = call(
        &env,
        Method::GET,
        "/v1/me",
        &crate::common::users::login_as(&env, "root@example.com", &root_pw).await,
        None,
    )
    .await;
    let (s, html, _) = root
        .post(
            &format!("/admin/users/{}/deactivate", me["id"].as_str().unwrap()),
            &[("_csrf", &t)],
            &[],
        )
        .await;
    assert_eq!(s, 409, "{html}");

    // Workspaces: found by name (escaped), moved to a plan, deleted.
    let (s, html, _) = root.get("/admin/workspaces?q=shop").await;
    assert_eq!(s, 200, "{html}");
    assert!(
        html.contains("Shop &#60;b&#62;x") && !html.contains("<b>x</b>"),
        "{html}"
    );
    let t = root.csrf("/admin/workspaces").await;
    let (s, body, _) = root
        .post(
            &format!("/admin/workspaces/{ws}/plan"),
            &[("_csrf", &t), ("plan", "business")],
            &[],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    let (s, html, _) = root
        .post(
            &format!("/admin/workspaces/{ws}/plan"),
            &[("_csrf", &t), ("plan", "gold")],
            &[],
        )
        .await;
    assert_eq!(s, 400, "an unknown plan is named: {html}");
    let (s, body, _) = root
        .post(&format!("/admin/workspaces/{ws}/delete"), &[("_csrf", &t)], &[])
        .await;
    assert_eq!(s, 303, "{body}");
    let (s, _) = call(&env, Method::GET, "/v1/me", &uma, None).await;
    assert_eq!(s, 401, "a token from before the deactivation stays over after it");
    let uma = crate::common::users::login_as(&env, "uma@example.com", PW).await;
    let (s, _) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}"), &uma, None).await;
    assert_eq!(s, 404, "the owner no longer sees it");
}

#[tokio::test]
async fn a_published_badge_shows_the_last_status_at_an_address_that_can_be_withdrawn() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "bea@example.com", "Badges", Some("business")).await;
    let (s, job) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/cron"),
        &owner,
        Some(
            json!({"name": "Nightly <sync>", "schedule": "0 3 * * *", "url": env.target_url("/ok"),
                    "status_badge": true}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let token = job["status_badge"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 48);
    let badge = |t: String| {
        let http = env.http.clone();
        let url = format!("{}/badge/{t}.svg", env.base());
        async move {
            let r = http.get(url).send().await.unwrap();
            let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), ct, r.text().await.unwrap())
        }
    };
    env.eventually(Duration::from_secs(5), "the badge to answer", || async {
        let (s, ct, body) = badge(token.clone()).await;
        (s == 200).then(|| {
            assert_eq!(ct.as_deref(), Some("image/svg+xml; charset=utf-8"));
            assert!(body.contains("no runs yet"), "{body}");
            assert!(
                body.contains("Nightly &lt;sync&gt;") && !body.contains("<sync>"),
                "{body}"
            );
        })
    })
    .await;
    crate::common::users::run_now_and_wait(&env, &owner, &ws, &id).await;
    env.eventually(Duration::from_secs(5), "the badge to say ok", || async {
        let (_, _, body) = badge(token.clone()).await;
        body.contains(">ok<").then_some(())
    })
    .await;
    // Tokens of the wrong shape, or unknown ones, are a plain 404.
    assert_eq!(badge("nope".into()).await.0, 404);
    assert_eq!(badge("0".repeat(48)).await.0, 404);

    // The job page shows it; a new address retires the old one; withdrawing ends it.
    let web = Web::new(&env);
    web.log_in("bea@example.com").await;
    let page = format!("/app/w/{ws}/cron/{id}");
    let (s, html, _) = web.get(&page).await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains(&format!("/badge/{token}.svg")), "{html}");
    let t = web.csrf(&page).await;
    let (s, body, _) = web
        .post(&format!("{page}/badge"), &[("_csrf", &t), ("do", "rotate")], &[])
        .await;
    assert_eq!(s, 303, "{body}");
    let (_, v) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron/{id}"),
        &owner,
        None,
    )
    .await;
    let fresh = v["status_badge"].as_str().unwrap().to_string();
    assert_ne!(fresh, token);
    env.eventually(Duration::from_secs(5), "the old address to stop", || async {
        (badge(token.clone()).await.0 == 404).then_some(())
    })
    .await;
    let (s, _, _) = web
        .post(&format!("{page}/badge"), &[("_csrf", &t), ("do", "off")], &[])
        .await;
    assert_eq!(s, 303);
    let (_, v) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron/{id}"),
        &owner,
        None,
    )
    .await;
    assert!(v["status_badge"].is_null(), "{v}");
    env.eventually(Duration::from_secs(5), "the badge to stop", || async {
        (badge(fresh.clone()).await.0 == 404).then_some(())
    })
    .await;
}
