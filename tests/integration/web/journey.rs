//! A newcomer's first session in a real browser: sign up, confirm the address from the mail,
//! create a workspace and a cron job with the builder, run it, watch it arrive in the log
//! without a reload, open it, pause the job. Screenshots of each main page land in
//! `target/screenshots/`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::browser::Browser;
use crate::common::fakes::FakeSmtp;
use crate::common::users::{call, PW};
use crate::common::TestEnv;
use crate::notifications::link_in;

const WAIT: Duration = Duration::from_secs(15);

/// Saves a screenshot of the page as `name` and checks it with axe-core: no serious or
/// critical accessibility problem.
pub async fn check_page(b: &Browser, name: &str) {
    b.screenshot(name).await;
    let problems = b.accessibility_problems().await;
    assert!(problems.is_empty(), "{name}: {}", problems.join("\n"));
}

#[tokio::test]
async fn a_newcomer_signs_up_creates_a_job_runs_it_and_watches_it_arrive_live() {
    let smtp = FakeSmtp::start().await;
    let smtp_url = smtp.url();
    let env = TestEnv::start_with(vec![
        ("CRONBOX_SMTP_URL", smtp_url.as_str()),
        ("CRONBOX_MAIL_FROM", "CronBox <noreply@cronbox.test>"),
    ])
    .await;
    let b = Browser::start().await;
    let base = env.base();

    // The start page of a stranger is the login, in Russian (the browser asks for it).
    b.goto(&format!("{base}/")).await;
    assert!(b.url().await.ends_with("/login"), "{}", b.url().await);
    b.wait_text("Вход", WAIT).await;
    let lang = b.js("return document.documentElement.lang", vec![]).await;
    assert_eq!(lang, "ru");
    check_page(&b, "login").await;

    // The language switch: English, then back to Russian.
    b.click(&b.find("form.lang button").await).await;
    b.wait_text("Log in", WAIT).await;
    assert_eq!(b.js("return document.documentElement.lang", vec![]).await, "en");
    b.click(&b.find("form.lang button").await).await;
    b.wait_text("Вход", WAIT).await;

    // Sign up.
    b.click(&b.find("a[href='/signup']").await).await;
    b.fill("#name", "Анна").await;
    b.fill("#email", "anna@example.com").await;
    b.fill("#password", PW).await;
    b.click(&b.find("form button[type=submit]").await).await;
    b.wait_text("Мы отправили ссылку", WAIT).await;
    assert!(b.url().await.contains("/app"), "{}", b.url().await);

    // The verification mail, in Russian, and its link.
    let mail = env
        .eventually(WAIT, "the verification mail", || async {
            smtp.mails_to("anna@example.com").into_iter().next()
        })
        .await;
    let link = link_in(&mail.text(), "/verify-email?token=").expect("a verification link");
    b.goto(&link).await;
    b.click(&b.find("form button").await).await;
    b.wait_text("подтвержд", WAIT).await;

    // A workspace.
    b.goto(&format!("{base}/app")).await;
    b.fill("#ws-name", "Интеграция 1С").await;
    b.click(&b.find("form[action='/app/workspaces'] button").await).await;
    b.wait_text("Обзор", WAIT).await;
    let ws_url = b.url().await;
    let ws = ws_url.rsplit('/').next().expect("workspace id").to_string();
    check_page(&b, "dashboard").await;

    // A cron job from the builder: every day at 03:00 Moscow time. The preview shows the
    // same next runs as the API's preview.
    b.goto(&format!("{base}/app/w/{ws}/cron/new")).await;
    b.fill("#name", "Выгрузка заказов").await;
    b.set_value("#mode", "daily").await;
    b.set_value("#time", "03:00").await;
    b.set_value("#timezone", "Europe/Moscow").await;
    b.wait_text("0 3 * * *", WAIT).await;
    let (_, api) = call(
        &env,
        Method::GET,
        "/v1/cron/preview?schedule=0%203%20*%20*%20*&timezone=Europe/Moscow",
        "-",
        None,
    )
    .await;
    let first: chrono::DateTime<chrono::Utc> = api["next"][0].as_str().unwrap().parse().unwrap();
    let shown = b.text(&b.find("#schedule-preview ol li").await).await;
    let moscow = first.with_timezone(&chrono_tz::Europe::Moscow);
    assert!(
        shown.starts_with(&moscow.format("%-d ").to_string()) && shown.contains("03:00:00 MSK"),
        "the page shows {shown:?}, the API {first}"
    );
    let items = b
        .js(
            "return document.querySelectorAll('#schedule-preview ol li').length",
            vec![],
        )
        .await;
    assert_eq!(items, 5);
    // Every 15 minutes, typed: the preview follows without a reload.
    b.set_value("#mode", "minutes").await;
    b.set_value("#every_minutes", "15").await;
    b.wait_text("*/15 * * * *", WAIT).await;
    b.set_value("#url", &env.target_url("/orders")).await;
    // A test request before saving: it reaches the target once, the outcome shows, and the
    // editor keeps what was typed.
    b.click(&b.find("#test-button").await).await;
    b.wait_for("#test-result", WAIT).await;
    b.wait_text("HTTP 200", WAIT).await;
    assert_eq!(env.target.arrivals_at("/orders").len(), 1, "one test request");
    b.wait_text("*/15 * * * *", WAIT).await;
    check_page(&b, "cron-editor").await;
    b.click(&b.find("#cron-editor > button[type=submit]").await).await;
    b.wait_text("Cron-задача сохранена", WAIT).await;
    b.wait_text("Выгрузка заказов", WAIT).await;
    check_page(&b, "cron-list").await;

    // The log, open in one tab; "run now" from another; the run appears without a reload.
    let log_tab = b.window().await;
    b.goto(&format!("{base}/app/w/{ws}/executions")).await;
    b.wait_text("В реальном времени", WAIT).await;
    b.js("window.__stillHere = true", vec![]).await;
    let other = b.new_tab().await;
    b.switch_to(&other).await;
    b.goto(&format!("{base}/app/w/{ws}/cron")).await;
    b.click(&b.find("button[formaction$='/run']").await).await;
    b.wait_text("Запуск отправлен", WAIT).await;
    b.switch_to(&log_tab).await;
    b.wait_for("#runs-body tr[data-run]", WAIT).await;
    b.wait_text("успешно", WAIT).await;
    assert_eq!(
        b.js("return window.__stillHere === true", vec![]).await,
        true,
        "the log page was not reloaded"
    );
    check_page(&b, "executions").await;
    b.wait_text("Выгрузка заказов", WAIT).await;

    // The run's page (the row may be rendered again by the live log meanwhile).
    b.click_css("#runs-body tr[data-run] a").await;
    b.wait_text("HTTP 200", WAIT).await;
    check_page(&b, "execution").await;

    // Pause the job from the list.
    b.goto(&format!("{base}/app/w/{ws}/cron")).await;
    b.click(&b.find("button[formaction$='/pause']").await).await;
    b.wait_text("Задача приостановлена", WAIT).await;
    let token = crate::common::users::login_as(&env, "anna@example.com", PW).await;
    let job_id = b
        .js("return document.querySelector('tr[data-job]').dataset.job", vec![])
        .await;
    let job_id = job_id.as_str().expect("a job row");
    let (s, job) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron/{job_id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["status"], "paused", "{job}");
    assert_eq!(job["schedule"], json!("*/15 * * * *"));
    b.wait_text("на паузе", WAIT).await;

    // The job's page: three charts (its one run is in them) and its audit trail.
    b.goto(&format!("{base}/app/w/{ws}/cron/{job_id}")).await;
    b.wait_text("раз в 15 минут", WAIT).await;
    b.wait_text("JobPaused", WAIT).await;
    assert_eq!(
        b.js("return document.querySelectorAll('svg.chart').length", vec![])
            .await,
        3
    );
    check_page(&b, "job").await;

    // Log out: the session ends, the console is closed.
    b.click(&b.find("form[action='/logout'] button").await).await;
    b.wait_text("Вы вышли", WAIT).await;
    b.goto(&format!("{base}/app")).await;
    assert!(b.url().await.contains("/login?next="), "{}", b.url().await);
    b.close().await;
}
