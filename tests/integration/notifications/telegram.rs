//! The Telegram bot: linking a chat with a single-use code, the bot's commands, alerts in HTML
//! with everything user-supplied escaped, 429 `retry_after` honoured, a blocked bot disabling
//! its channel (and the admins told elsewhere), a group becoming a supergroup.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::Setup;
use crate::common::fakes::Answer;

fn sent_to(setup: &Setup, chat: i64) -> Vec<Value> {
    setup
        .telegram
        .received_at("sendMessage")
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["chat_id"] == chat)
        .collect()
}

async fn link(setup: &Setup, chat: i64) -> String {
    let (s, v) = setup
        .call(Method::POST, "/notification-channels/telegram/link", None)
        .await;
    assert_eq!(s, 201, "{v}");
    let code = v["code"].as_str().unwrap().to_string();
    assert!(
        code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );
    assert_eq!(v["deep_link"], format!("https://t.me/cronbox_test_bot?start={code}"));
    setup.telegram.say(chat, "group", &format!("/start {code}"), "en");
    setup
        .env
        .eventually(Duration::from_secs(15), "the link reply", || async {
            sent_to(setup, chat)
                .into_iter()
                .find(|b| b["text"].as_str().unwrap_or_default().contains("linked"))
        })
        .await;
    setup
        .env
        .eventually(Duration::from_secs(10), "the telegram channel", || async {
            let (_, list) = setup.call(Method::GET, "/notification-channels", None).await;
            list.as_array()?
                .iter()
                .find(|c| c["type"] == "telegram" && c["status"] == "active")
                .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        })
        .await
}

#[tokio::test]
async fn a_chat_links_with_a_code_and_gets_escaped_alerts_at_the_published_rate() {
    let setup = Setup::start().await;
    // A wrong code gets a clear answer, in the user's language.
    setup.telegram.say(-100, "group", "/link not-a-code", "ru");
    let reply = setup
        .env
        .eventually(Duration::from_secs(15), "the wrong-code reply", || async {
            sent_to(&setup, -100).into_iter().next()
        })
        .await;
    assert!(reply["text"].as_str().unwrap().contains("Код неверный"), "{reply}");
    assert_eq!(reply["parse_mode"], "HTML");

    let channel = link(&setup, -100).await;
    let (_, ch) = setup
        .call(Method::GET, &format!("/notification-channels/{channel}"), None)
        .await;
    assert_eq!(ch["status"], "active");
    assert_eq!(ch["target"], "Telegram: Ops <team>");
    // The code was single use.
    let used = setup.telegram.received_at("sendMessage").len();
    setup.wait_channels(1).await;

    // Rate limited once: the retry waits what Telegram asked.
    setup.telegram.answer(vec![Answer::RateLimited(2)]);
    let job = setup
        .cron_job(json!({
            "name": "<b>bold</b> & co",
            "url": setup.env.target_url("/fail/tg"),
            "schedule": "* * * * * *",
            "retry_count": 0,
        }))
        .await;
    let alerts = setup
        .env
        .eventually(Duration::from_secs(30), "the alert after the 429", || async {
            let a: Vec<_> = setup
                .telegram
                .received_at("sendMessage")
                .into_iter()
                .skip(used)
                .filter(|r| r.body["chat_id"] == -100)
                .collect();
            (a.len() >= 2).then_some(a)
        })
        .await;
    assert!(
        alerts[1].at - alerts[0].at >= Duration::from_millis(1900),
        "retry_after was honoured"
    );
    let text = alerts[1].body["text"].as_str().unwrap();
    assert!(text.contains("&lt;b&gt;bold&lt;/b&gt; &amp; co"), "{text}");
    assert!(!text.contains("<b>bold</b>"));
    assert_eq!(alerts[1].body["link_preview_options"]["is_disabled"], true);
    assert_eq!(alerts[1].body["parse_mode"], "HTML");
    setup.call(Method::POST, &format!("/cron/{job}/pause"), None).await;

    // /status lists the failing job.
    setup.telegram.say(-100, "group", "/status@cronbox_test_bot", "en");
    let status = setup
        .env
        .eventually(Duration::from_secs(15), "the /status reply", || async {
            sent_to(&setup, -100)
                .into_iter()
                .find(|b| b["text"].as_str().unwrap_or_default().contains("failed runs in a row"))
        })
        .await;
    assert!(status["text"].as_str().unwrap().contains("&lt;b&gt;bold"), "{status}");

    // The group becomes a supergroup: the link follows it.
    setup
        .telegram
        .push_update(json!({"message": {"message_id": 2, "date": 0,
        "chat": {"id": -100, "type": "group", "title": "Ops"}, "migrate_to_chat_id": -1001234}}));
    setup.more("ChannelResealed", 0, 1).await;
    let (s, _) = setup
        .call(Method::POST, &format!("/notification-channels/{channel}/test"), None)
        .await;
    assert_eq!(s, 202);
    setup
        .env
        .eventually(
            Duration::from_secs(15),
            "the test message in the supergroup",
            || async {
                sent_to(&setup, -1001234)
                    .into_iter()
                    .find(|b| b["text"].as_str().unwrap_or_default().contains("CronBox"))
            },
        )
        .await;
    // The chat id is sealed: not in the log.
    let log: String = sqlx::query_scalar("SELECT string_agg(payload::text, ' ') FROM events")
        .fetch_one(&setup.env.db.pool)
        .await
        .unwrap();
    assert!(!log.contains("1001234"));

    // /unlink removes it.
    setup.telegram.say(-1001234, "supergroup", "/unlink", "en");
    setup
        .env
        .eventually(Duration::from_secs(15), "the channel to go", || async {
            let (_, list) = setup.call(Method::GET, "/notification-channels", None).await;
            (list == json!([])).then_some(())
        })
        .await;
}

#[tokio::test]
async fn a_blocked_bot_disables_its_channel_and_the_admins_are_told_elsewhere() {
    let setup = Setup::start().await;
    let channel = link(&setup, 555).await;
    setup.webhook_channel("/hooks/admins").await;
    setup.wait_channels(2).await;
    setup.telegram.answer(vec![Answer::Blocked]);
    let (s, _) = setup
        .call(Method::POST, &format!("/notification-channels/{channel}/test"), None)
        .await;
    assert_eq!(s, 202);
    let ch = setup
        .env
        .eventually(Duration::from_secs(15), "the channel to be disabled", || async {
            let (_, ch) = setup
                .call(Method::GET, &format!("/notification-channels/{channel}"), None)
                .await;
            (ch["status"] == "disabled").then_some(ch)
        })
        .await;
    assert_eq!(ch["disabled_reason"], "bot_blocked");
    let notice = setup
        .env
        .eventually(Duration::from_secs(15), "the notice on the webhook", || async {
            setup
                .env
                .target
                .arrivals_at("/hooks/admins")
                .into_iter()
                .map(|a| serde_json::from_slice::<Value>(&a.body).unwrap_or(Value::Null))
                .find(|b| b["type"] == "channel.disabled")
        })
        .await;
    assert_eq!(notice["data"]["disabled_reason"], "bot_blocked");
    // The channel is disabled as the try is recorded: wait for the record too.
    let failed = setup
        .env
        .eventually(Duration::from_secs(10), "the failed delivery in the log", || async {
            setup
                .deliveries(&channel)
                .await
                .into_iter()
                .find(|d| d["status"] == "failed")
        })
        .await;
    assert!(failed["error"].as_str().unwrap().contains("blocked"), "{failed}");
    // Linking the chat again switches it back on.
    let again = link(&setup, 555).await;
    assert_eq!(again, channel);
    let (_, ch) = setup
        .call(Method::GET, &format!("/notification-channels/{channel}"), None)
        .await;
    assert_eq!(ch["status"], "active");
}

#[tokio::test]
async fn in_webhook_mode_updates_need_the_secret_and_are_handled() {
    let setup = Setup::start_with(vec![("CRONBOX_TELEGRAM_WEBHOOK_SECRET", "s3cret_token-1")]).await;
    // The webhook was registered with Telegram, pointing at the public URL.
    let set = setup
        .env
        .eventually(Duration::from_secs(10), "setWebhook", || async {
            setup.telegram.received_at("setWebhook").into_iter().next()
        })
        .await;
    assert_eq!(set.body["url"], format!("{}/v1/telegram/webhook", setup.env.base()));
    assert_eq!(set.body["secret_token"], "s3cret_token-1");
    let (s, v) = setup
        .call(Method::POST, "/notification-channels/telegram/link", None)
        .await;
    assert_eq!(s, 201, "{v}");
    let code = v["code"].as_str().unwrap();
    let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 0,
        "chat": {"id": 777, "type": "private", "first_name": "Anna"},
        "from": {"id": 777, "is_bot": false, "first_name": "Anna", "language_code": "ru"},
        "text": format!("/start {code}")}});
    let url = format!("{}/v1/telegram/webhook", setup.env.base());
    for wrong in [None, Some("nope"), Some("s3cret_token-")] {
        let mut r = setup.env.http.post(&url).json(&update);
        if let Some(w) = wrong {
            r = r.header("X-Telegram-Bot-Api-Secret-Token", w);
        }
        assert_eq!(r.send().await.unwrap().status().as_u16(), 401, "{wrong:?}");
    }
    let r = setup
        .env
        .http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", "s3cret_token-1")
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let reply = setup
        .env
        .eventually(Duration::from_secs(10), "the link reply", || async {
            sent_to(&setup, 777).into_iter().next()
        })
        .await;
    assert!(reply["text"].as_str().unwrap().contains("Чат привязан"), "{reply}");
    assert!(
        setup.telegram.received_at("getUpdates").is_empty(),
        "no polling in webhook mode"
    );
}
