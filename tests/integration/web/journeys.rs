//! More journeys in the browser: a delayed call created and cancelled, a viewer who cannot
//! edit, an API key shown once, the profile's language, and a superuser rebuilding a projection.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::journey::check_page;
use crate::common::browser::Browser;
use crate::common::users::{call, member_of, owned_workspace, PW};
use crate::common::TestEnv;

const WAIT: Duration = Duration::from_secs(15);

async fn log_in(b: &Browser, env: &TestEnv, email: &str, password: &str) {
    b.goto(&format!("{}/login", env.base())).await;
    b.fill("#email", email).await;
    b.fill("#password", password).await;
    b.click(&b.find("form[action='/login'] button[type=submit]").await)
        .await;
    b.wait_for("form[action='/logout']", WAIT).await;
}

#[tokio::test]
async fn a_delayed_call_is_created_in_the_zone_chosen_and_cancelled() {
    let env = TestEnv::start().await;
    let (token, ws) = owned_workspace(&env, "dana@example.com", "Calls", None).await;
    let b = Browser::start().await;
    log_in(&b, &env, "dana@example.com", PW).await;
    let base = env.base();

    b.goto(&format!("{base}/app/w/{ws}/delayed/new")).await;
    b.fill("#name", "Напомнить клиенту").await;
    b.click(&b.find("input[name=when][value=at]").await).await;
    // Tomorrow at 18:30 in Yekaterinburg (UTC+5).
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    b.set_value("#at", &format!("{tomorrow}T18:30")).await;
    b.set_value("#timezone", "Asia/Yekaterinburg").await;
    b.set_value("#url", &env.target_url("/remind")).await;
    check_page(&b, "delayed-new").await;
    b.click(&b.find("#delayed-editor > button[type=submit]").await).await;
    b.wait_text("Вызов запланирован", WAIT).await;
    b.wait_text("Напомнить клиенту", WAIT).await;
    check_page(&b, "delayed-list").await;

    let (_, list) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/delayed"), &token, None).await;
    let at: chrono::DateTime<chrono::Utc> = list["items"][0]["execute_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        at.format("%H:%M").to_string(),
        "13:30",
        "18:30 in Yekaterinburg is 13:30 UTC: {list}"
    );

    // Its page, then cancel it (the confirmation is accepted).
    b.click(&b.find("tr[data-call] a").await).await;
    b.wait_text("Ещё не сработал", WAIT).await;
    b.js("window.confirm = () => true", vec![]).await;
    b.click(&b.find("form[action$='/cancel'] button").await).await;
    b.wait_text("Вызов отменён", WAIT).await;
    let id = list["items"][0]["id"].as_str().unwrap();
    let (s, _) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/delayed/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, 404, "a cancelled call is gone from the API");
    // The list shows cancelled calls when asked.
    b.goto(&format!("{base}/app/w/{ws}/delayed?status=cancelled")).await;
    b.wait_text("Напомнить клиенту", WAIT).await;
    b.wait_text("отменён", WAIT).await;
    b.close().await;
}

#[tokio::test]
async fn a_viewer_sees_the_jobs_but_no_way_to_change_them() {
    let env = TestEnv::start().await;
    let (owner, ws) = owned_workspace(&env, "oleg@example.com", "Team", Some("business")).await;
    let (s, _) = call(
        &env,
        Method::POST,
        &format!("/v1/workspaces/{ws}/cron"),
        &owner,
        Some(json!({"name": "Nightly", "schedule": "0 3 * * *", "url": env.target_url("/x")})),
    )
    .await;
    assert_eq!(s, 201);
    member_of(&env, &owner, &ws, "vera@example.com", "viewer").await;

    let b = Browser::start_with_lang("en-GB,en").await;
    log_in(&b, &env, "vera@example.com", PW).await;
    b.goto(&format!("{}/app/w/{ws}/cron", env.base())).await;
    b.wait_text("Nightly", WAIT).await;
    b.wait_text("viewer", WAIT).await;
    assert!(b.try_find("button[formaction$='/pause']").await.is_none());
    assert!(b.try_find("a[href$='/cron/new']").await.is_none());
    assert!(b.try_find("input[name=ids]").await.is_none());
    b.goto(&format!("{}/app/w/{ws}/settings", env.base())).await;
    b.wait_text("Members", WAIT).await;
    assert!(
        b.try_find("form[action$='/settings/keys']").await.is_none(),
        "no key form below admin"
    );
    b.goto(&format!("{}/app/w/{ws}/cron/new", env.base())).await;
    b.wait_text("Your role in this workspace does not allow this.", WAIT)
        .await;
    b.close().await;
}

#[tokio::test]
async fn an_api_key_is_shown_once_and_works_and_the_profile_sets_the_language() {
    let env = TestEnv::start().await;
    let (_, ws) = owned_workspace(&env, "kira@example.com", "Keys", None).await;
    let b = Browser::start().await;
    log_in(&b, &env, "kira@example.com", PW).await;
    b.goto(&format!("{}/app/w/{ws}/settings", env.base())).await;
    b.fill("#key-name", "1С обмен").await;
    b.click(&b.find("form[action$='/settings/keys'] button").await).await;
    let shown = b.text(&b.wait_for("#new-key-value", WAIT).await).await;
    assert!(shown.starts_with("cbx_"), "{shown}");
    check_page(&b, "settings").await;
    let (s, _) = call(
        &env,
        Method::GET,
        &format!("/v1/workspaces/{ws}/cron"),
        shown.trim(),
        None,
    )
    .await;
    assert_eq!(s, 200, "the key shown works");
    b.goto(&format!("{}/app/w/{ws}/settings", env.base())).await;
    b.wait_text("1С обмен", WAIT).await;
    assert!(
        !b.page_text().await.contains(shown.trim()),
        "the secret is not shown again"
    );

    // A webhook alert channel: its signing secret is shown once; a test goes out.
    b.goto(&format!("{}/app/w/{ws}/channels", env.base())).await;
    b.set_value("#ch-kind", "webhook").await;
    b.fill("#ch-name", "Дежурный вебхук").await;
    b.fill("#ch-target", &env.target_url("/alerts")).await;
    b.click(&b.find("form[action$='/channels'] button[type=submit]").await)
        .await;
    let secret = b.text(&b.wait_for("#new-secret-value", WAIT).await).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    check_page(&b, "channels").await;
    b.click(&b.find("tr[data-channel] form[action$='/test'] button").await)
        .await;
    b.wait_text("Проверочное сообщение отправлено", WAIT).await;
    env.eventually(WAIT, "the test message at the webhook", || async {
        env.target
            .arrivals()
            .into_iter()
            .find(|a| a.path.starts_with("/alerts"))
    })
    .await;

    // The profile's language wins over the browser's.
    b.goto(&format!("{}/profile", env.base())).await;
    b.set_value("#p-lang", "en").await;
    b.click(&b.find("form[action='/profile'] button").await).await;
    b.wait_text("Saved.", WAIT).await;
    check_page(&b, "profile").await;
    b.close().await;
}

#[tokio::test]
async fn a_superuser_rebuilds_a_projection_and_watches_its_progress() {
    let env = TestEnv::start().await;
    let (token, ws) = owned_workspace(&env, "ivan@example.com", "Ops", None).await;
    for i in 0..3 {
        let (s, _) = call(
            &env,
            Method::POST,
            &format!("/v1/workspaces/{ws}/cron"),
            &token,
            Some(json!({"name": format!("job {i}"), "schedule": "0 3 * * *", "url": env.target_url("/x")})),
        )
        .await;
        assert_eq!(s, 201);
    }
    let password = crate::common::users::new_superuser(&env, "root@example.com").await;

    let b = Browser::start().await;
    // Not a superuser: the panel does not exist.
    log_in(&b, &env, "ivan@example.com", PW).await;
    b.goto(&format!("{}/admin", env.base())).await;
    b.wait_text("Не найдено", WAIT).await;
    b.goto(&format!("{}/app", env.base())).await;
    b.click(&b.find("form[action='/logout'] button").await).await;
    b.wait_text("Вы вышли", WAIT).await;

    log_in(&b, &env, "root@example.com", &password).await;
    b.goto(&format!("{}/admin", env.base())).await;
    b.wait_for("tr[data-projection='jobs']", WAIT).await;
    check_page(&b, "admin").await;
    b.js("window.confirm = () => true", vec![]).await;
    b.click(&b.find("tr[data-projection='jobs'] form button").await).await;
    b.wait_text("Пересборка началась", WAIT).await;
    // The page follows the rebuild until it is done.
    b.wait_for(
        "tr[data-projection='jobs'] .rebuild-status.succeeded",
        Duration::from_secs(60),
    )
    .await;
    let (_, list) = call(&env, Method::GET, &format!("/v1/workspaces/{ws}/cron"), &token, None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        3,
        "the rebuilt list has every job: {list}"
    );
    // The users tab: found by address, with the actions an operator has.
    b.goto(&format!("{}/admin/users?q=ivan", env.base())).await;
    b.wait_for("#users tr[data-user]", WAIT).await;
    b.wait_text("ivan@example.com", WAIT).await;
    check_page(&b, "admin-users").await;
    b.close().await;
}
