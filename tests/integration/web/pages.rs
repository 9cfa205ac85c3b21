//! The web app's pages over plain HTTP: a cookie session from the login form, anti-forgery
//! refusals, roles enforced by the same checks as the API, and hostile names escaped.

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
        let t = self.csrf("/login").await;
        let (s, body, h) = self
            .post(
                "/login",
                &[("_csrf", &t), ("email", email), ("password", PW), ("next", "/app")],
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
