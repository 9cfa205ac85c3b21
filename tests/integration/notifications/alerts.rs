//! Alerts on e-mail and webhooks: a failing job alerts once per channel, a recovery alerts
//! once, reminders come on time, webhooks are signed and retried, a 410 disables the endpoint,
//! unsubscribe is one click, bad input is a 400 naming the field, tenants see only their own.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{signature_valid, Setup};
use crate::common::users::{call, owned_workspace};

fn webhook_events(setup: &Setup, path: &str) -> Vec<(Value, reqwest::header::HeaderMap, Vec<u8>)> {
    setup
        .env
        .target
        .arrivals_at(path)
        .into_iter()
        .map(|a| {
            (
                serde_json::from_slice(&a.body).unwrap_or(Value::Null),
                a.headers,
                a.body,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_failing_job_alerts_once_per_channel_and_its_recovery_once() {
    let setup = Setup::start().await;
    let mail_channel = setup.email_channel("ops@example.com").await;
    let (hook_channel, secret) = setup.webhook_channel("/hooks/alerts").await;
    setup.wait_channels(2).await;
    // Fails three times, then succeeds; alerts on the second failure.
    let job = setup
        .cron_job(json!({
            "name": "1C <export> & sync",
            "url": setup.env.target_url("/flaky/3/export?token=SECRET"),
            "schedule": "* * * * * *",
            "timezone": "Europe/Moscow",
            "retry_count": 0,
            "alert_after_failures": 2,
        }))
        .await;
    let (_, v) = setup.call(Method::GET, &format!("/cron/{job}"), None).await;
    assert_eq!(
        (v["alert_after_failures"].as_u64(), v["alert_channels"].is_null()),
        (Some(2), true),
        "{v}"
    );

    let recovered = setup
        .env
        .eventually(Duration::from_secs(30), "the recovery webhook", || async {
            let events = webhook_events(&setup, "/hooks/alerts");
            events
                .iter()
                .any(|(b, _, _)| b["type"] == "job.recovered")
                .then_some(events)
        })
        .await;
    // Let it keep succeeding for a few more runs: nothing more may come of them.
    setup.more("RunSucceeded", setup.count("RunSucceeded").await, 2).await;
    let (s, _) = setup.call(Method::POST, &format!("/cron/{job}/pause"), None).await;
    assert_eq!(s, 200);
    setup.settled().await;

    let hooks = webhook_events(&setup, "/hooks/alerts");
    let types: Vec<&str> = hooks.iter().filter_map(|(b, _, _)| b["type"].as_str()).collect();
    assert_eq!(types, vec!["job.failing", "job.recovered"], "once each: {types:?}");
    assert!(recovered.len() <= hooks.len());
    let (failing, headers, raw) = &hooks[0];
    assert!(
        signature_valid(&secret, headers, raw),
        "Standard Webhooks signature with the endpoint's own secret"
    );
    assert!(headers["webhook-id"].to_str().unwrap().starts_with("msg_"));
    let data = &failing["data"];
    assert_eq!(data["job_name"], "1C <export> & sync");
    assert_eq!(data["status_code"], 503);
    assert_eq!(data["error_kind"], "http_status");
    assert_eq!(data["failures"], 2);
    assert_eq!(data["timezone"], "Europe/Moscow");
    assert!(
        !data["url"].as_str().unwrap().contains("SECRET"),
        "the query string stays out of alerts"
    );
    assert!(data["link"].as_str().unwrap().contains("/executions/"));
    assert_eq!(hooks[1].0["data"]["failed_runs"], 3);

    let mails = setup.smtp.mails_to("ops@example.com");
    let alerts: Vec<_> = mails
        .iter()
        .filter(|m| m.header("List-Unsubscribe").is_some())
        .collect();
    assert_eq!(
        alerts.len(),
        2,
        "a failure mail and a recovery mail: {:?}",
        mails.iter().map(|m| m.header("Subject")).collect::<Vec<_>>()
    );
    let failure = alerts[0];
    assert!(
        failure.header("Subject").unwrap().contains("is failing"),
        "{:?}",
        failure.header("Subject")
    );
    assert_eq!(
        failure.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let text = failure.text();
    assert!(text.contains("503"), "{text}");
    assert!(text.contains("MSK (Europe/Moscow)"), "{text}");
    assert!(
        text.contains("&#60;export&#62;") || text.contains("&lt;export&gt;"),
        "HTML part escapes the name: {text}"
    );
    assert!(alerts[1].header("Subject").unwrap().contains("recovered"));

    // The alert is resolved, with the streak's length; deliveries are logged.
    let (_, list) = setup.call(Method::GET, "/alerts?state=resolved", None).await;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["kind"], "job_failing");
    assert_eq!(list[0]["failed_runs"], 3);
    assert_eq!(list[0]["resolve_reason"], "recovered");
    let (_, open) = setup.call(Method::GET, "/alerts?state=open", None).await;
    assert_eq!(open, json!([]));
    for channel in [&mail_channel, &hook_channel] {
        let d = setup.deliveries(channel).await;
        let kinds: Vec<&str> = d.iter().filter_map(|x| x["kind"].as_str()).collect();
        assert!(kinds.contains(&"failure") && kinds.contains(&"recovery"), "{kinds:?}");
        assert!(d.iter().all(|x| x["status"] == "delivered"), "{d:?}");
    }
    // The audit trail: the run that raised the alert lists where it went.
    let run = list[0]["run_id"].as_str().unwrap();
    let (_, exec) = setup.call(Method::GET, &format!("/executions/{run}"), None).await;
    let went: Vec<&str> = exec["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["channel_id"].as_str())
        .collect();
    assert!(
        went.contains(&mail_channel.as_str()) && went.contains(&hook_channel.as_str()),
        "{exec}"
    );
    // Exactly one decision per event, in the log.
    let raised: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AlertRaised'")
        .fetch_one(&setup.env.db.pool)
        .await
        .unwrap();
    assert_eq!(raised, 1);
}

#[tokio::test]
async fn reminders_come_while_it_keeps_failing_and_unsubscribe_is_one_click() {
    let setup = Setup::start().await;
    let mail_channel = setup.email_channel("oncall@example.com").await;
    setup.wait_channels(1).await;
    let job = setup
        .cron_job(json!({
            "name": "always broken",
            "url": setup.env.target_url("/fail/always"),
            "schedule": "* * * * * *",
            "retry_count": 0,
            "realert_every": "2s",
        }))
        .await;
    let (_, v) = setup.call(Method::GET, &format!("/cron/{job}"), None).await;
    assert_eq!(v["realert_every"], "2s");
    let reminders = setup
        .env
        .eventually(Duration::from_secs(30), "two reminders", || async {
            let d = setup.deliveries(&mail_channel).await;
            let r: Vec<Value> = d
                .into_iter()
                .filter(|x| x["kind"] == "reminder" && x["status"] == "delivered")
                .collect();
            (r.len() >= 2).then_some(r)
        })
        .await;
    assert!(reminders.iter().all(|r| r["status"] == "delivered"), "{reminders:?}");
    let (_, open) = setup.call(Method::GET, "/alerts?state=open", None).await;
    let alert = &open[0];
    assert!(alert["reminders"].as_i64().unwrap() >= 2, "{alert}");
    let failures = setup
        .env
        .eventually(Duration::from_secs(5), "the failure alert mail", || async {
            setup
                .smtp
                .mails_to("oncall@example.com")
                .into_iter()
                .find(|m| m.header("Subject").is_some_and(|s| s.contains("is failing")))
        })
        .await;
    // One-click unsubscribe (RFC 8058): a POST to the List-Unsubscribe URL.
    let header = failures.header("List-Unsubscribe").unwrap();
    let url = header.trim_matches(['<', '>']);
    let r = setup
        .env
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, ch) = setup
        .call(Method::GET, &format!("/notification-channels/{mail_channel}"), None)
        .await;
    assert_eq!(
        (ch["status"].as_str(), ch["disabled_reason"].as_str()),
        (Some("disabled"), Some("unsubscribed"))
    );
    // A forged token changes nothing.
    let forged = format!("{}x", url);
    let r = setup.env.http.post(&forged).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn webhooks_are_retried_with_backoff_and_a_410_disables_the_endpoint() {
    let setup = Setup::start().await;
    let (flaky, secret) = setup.webhook_channel("/flaky/1/hook").await;
    let (gone, _) = setup.webhook_channel("/status/410/hook").await;
    setup.wait_channels(2).await;
    let (s, v) = setup
        .call(Method::POST, &format!("/notification-channels/{flaky}/test"), None)
        .await;
    assert_eq!(s, 202, "{v}");
    let delivered = setup
        .env
        .eventually(Duration::from_secs(20), "the retried test delivery", || async {
            let d = setup.deliveries(&flaky).await;
            d.into_iter().find(|x| x["status"] == "delivered")
        })
        .await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    let arrivals = setup.env.target.arrivals_at("/flaky/1/hook");
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1].at - arrivals[0].at;
    assert!(
        gap >= chrono::Duration::milliseconds(4400),
        "the first retry waits about 5 s: {gap}"
    );
    assert_eq!(
        arrivals[0].headers["webhook-id"], arrivals[1].headers["webhook-id"],
        "the same id on every try"
    );
    assert!(signature_valid(&secret, &arrivals[1].headers, &arrivals[1].body));

    let (s, _) = setup
        .call(Method::POST, &format!("/notification-channels/{gone}/test"), None)
        .await;
    assert_eq!(s, 202);
    let ch = setup
        .env
        .eventually(Duration::from_secs(15), "the gone endpoint to be disabled", || async {
            let (_, ch) = setup
                .call(Method::GET, &format!("/notification-channels/{gone}"), None)
                .await;
            (ch["status"] == "disabled").then_some(ch)
        })
        .await;
    assert_eq!(ch["disabled_reason"], "gone");
    let (s, v) = setup
        .call(Method::POST, &format!("/notification-channels/{gone}/test"), None)
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("channel_not_active")));
    // The other channel is told that this one stopped.
    let notice = setup
        .env
        .eventually(Duration::from_secs(15), "the channel-disabled notice", || async {
            webhook_events(&setup, "/flaky/1/hook")
                .into_iter()
                .find(|(b, _, _)| b["type"] == "channel.disabled")
        })
        .await;
    assert_eq!(notice.0["data"]["disabled_reason"], "gone");

    // Rotation: a new secret signs from now on.
    let (s, v) = setup
        .call(
            Method::POST,
            &format!("/notification-channels/{flaky}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let new_secret = v["secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let before = setup.env.target.arrivals_at("/flaky/1/hook").len();
    setup
        .call(Method::POST, &format!("/notification-channels/{flaky}/test"), None)
        .await;
    let last = setup
        .env
        .eventually(
            Duration::from_secs(15),
            "a delivery signed with the new secret",
            || async {
                let a = setup.env.target.arrivals_at("/flaky/1/hook");
                (a.len() > before).then(|| a.last().cloned()).flatten()
            },
        )
        .await;
    assert!(signature_valid(&new_secret, &last.headers, &last.body));
    assert!(!signature_valid(&secret, &last.headers, &last.body));
}

#[tokio::test]
async fn channels_refuse_bad_input_by_field_keep_secrets_sealed_and_stay_in_their_workspace() {
    let setup = Setup::start().await;
    let bad = [
        (json!({"type": "sms", "name": "x"}), "type"),
        (
            json!({"type": "email", "name": "x", "address": "not an address"}),
            "address",
        ),
        (
            json!({"type": "email", "name": "x", "address": "a@b.c\u{0}d"}),
            "address",
        ),
        (
            json!({"type": "webhook", "name": "x", "url": "ftp://example.com/"}),
            "url",
        ),
        (
            json!({"type": "webhook", "name": "", "url": "https://example.com/"}),
            "name",
        ),
        (
            json!({"type": "webhook", "name": "x".repeat(101), "url": "https://example.com/"}),
            "name",
        ),
        (
            json!({"type": "webhook", "name": "x", "url": "https://example.com/", "language": "de"}),
            "language",
        ),
        (json!({"type": "telegram", "name": "x"}), "type"),
    ];
    for (body, field) in bad {
        let (s, v) = setup
            .call(Method::POST, "/notification-channels", Some(body.clone()))
            .await;
        assert_eq!((s, v["error"]["field"].as_str()), (400, Some(field)), "{body} → {v}");
    }
    // Job fields.
    for (body, field) in [
        (json!({"alert_after_failures": 0}), "alert_after_failures"),
        (json!({"realert_every": "1s"}), "realert_every"),
        (json!({"realert_every": "soon"}), "realert_every"),
        (json!({"alert_channels": ["nope"]}), "alert_channels[0]"),
        (json!({"alert_channels": [uuid::Uuid::new_v4()]}), "alert_channels[0]"),
    ] {
        let mut job = json!({"name": "j", "url": "https://example.com/", "schedule": "0 3 * * *"});
        job.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        let (s, v) = setup.call(Method::POST, "/cron", Some(job)).await;
        assert_eq!((s, v["error"]["field"].as_str()), (400, Some(field)), "{body} → {v}");
    }
    let (s, v) = setup
        .call(
            Method::POST,
            "/delayed",
            Some(json!({"url": "https://example.com/", "delay_seconds": 60, "realert_every": "6h"})),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("realert_every")));

    // A hostile name is stored as given and escaped wherever it is shown.
    let (s, v) = setup
        .call(
            Method::POST,
            "/notification-channels",
            Some(json!({"type": "webhook", "name": "<script>alert(1)</script>", "url": "https://example.com/hook?key=s3cr3t"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["name"], "<script>alert(1)</script>");
    assert_eq!(
        v["target"], "https://example.com/hook",
        "no query string in the display"
    );
    let (s, _) = setup
        .call(
            Method::POST,
            "/notification-channels",
            Some(json!({"type": "email", "name": "hidden", "address": "hidden@example.com"})),
        )
        .await;
    assert_eq!(s, 201);
    // Sealed at rest: neither the URL's key, the secret nor the address is in the log.
    let log: String = sqlx::query_scalar("SELECT string_agg(payload::text, ' ') FROM events")
        .fetch_one(&setup.env.db.pool)
        .await
        .unwrap();
    let secret = v["secret"].as_str().unwrap();
    assert!(!log.contains("s3cr3t") && !log.contains(secret.trim_start_matches("whsec_")));
    assert!(!log.contains("hidden@example.com"));

    // Members read, admins manage: an API key acts as a member.
    let (s, _) = setup.env.get("/notification-channels").await;
    assert_eq!(s, 200);
    let (s, _) = setup
        .env
        .post(
            "/notification-channels",
            json!({"type": "webhook", "name": "x", "url": "https://example.com/"}),
        )
        .await;
    assert_eq!(s, 403);
    // Another workspace sees none of it.
    let (other, other_ws) = owned_workspace(&setup.env, "other@example.com", "Other", None).await;
    for (method, p) in [
        (Method::GET, format!("/notification-channels/{id}")),
        (Method::DELETE, format!("/notification-channels/{id}")),
        (Method::POST, format!("/notification-channels/{id}/test")),
        (Method::GET, format!("/notification-channels/{id}/deliveries")),
    ] {
        let (s, _) = call(
            &setup.env,
            method.clone(),
            &format!("/v1/workspaces/{other_ws}{p}"),
            &other,
            None,
        )
        .await;
        assert_eq!(s, 404, "{method} {p}");
    }
    let (s, v) = call(
        &setup.env,
        Method::GET,
        &format!("/v1/workspaces/{other_ws}/notification-channels"),
        &other,
        None,
    )
    .await;
    assert_eq!((s, v), (200, json!([])));
    let (s, _) = call(
        &setup.env,
        Method::GET,
        &format!("/v1/workspaces/{}/notification-channels", setup.ws),
        &other,
        None,
    )
    .await;
    assert_eq!(s, 404, "not a member");
    // Deleting removes it.
    let (s, _) = setup
        .call(Method::DELETE, &format!("/notification-channels/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = setup
        .call(Method::GET, &format!("/notification-channels/{id}"), None)
        .await;
    assert_eq!(s, 404);
}

fn burst_names(text: &str) -> std::collections::BTreeSet<u32> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("burst-") {
        rest = &rest[i + 6..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            out.insert(n);
        }
    }
    out
}

#[tokio::test]
async fn a_burst_of_failures_reaches_every_webhook_and_goes_to_mail_as_a_digest() {
    let setup = Setup::start().await;
    setup.email_channel("burst@example.com").await;
    let (hook, _) = setup.webhook_channel("/hooks/burst").await;
    setup.wait_channels(2).await;
    let n = 30;
    // Cron jobs failing in the same second too (their alerts stay open, to the webhook only).
    let crons = 4;
    let mut cron_ids = Vec::new();
    for i in 0..crons {
        let (s, v) = setup
            .call(
                Method::POST,
                "/cron",
                Some(
                    json!({"name": format!("tick-{i}"), "url": setup.env.target_url("/fail/tick"),
                            "schedule": "* * * * * *", "retry_count": 0, "alert_channels": [hook]}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        cron_ids.push(v["id"].as_str().unwrap().to_string());
    }
    let due = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("burst-{i}"), "url": setup.env.target_url("/fail/burst"), "execute_at": due, "retry_count": 0}))
        .collect();
    let (s, v) = setup
        .call(Method::POST, "/delayed/batch", Some(json!({"items": items})))
        .await;
    assert_eq!(s, 201, "{v}");
    let pool = setup.env.db.pool.clone();
    setup
        .env
        .eventually(Duration::from_secs(40), "every notification delivered", || async {
            let d: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'NotificationDelivered'")
                .fetch_one(&pool)
                .await
                .unwrap();
            (d >= 2 * n as i64 + crons).then_some(())
        })
        .await;
    for id in &cron_ids {
        let (s, _) = setup.call(Method::POST, &format!("/cron/{id}/pause"), None).await;
        assert_eq!(s, 200);
    }
    let (calls, ticks): (Vec<_>, Vec<_>) = webhook_events(&setup, "/hooks/burst")
        .into_iter()
        .partition(|(b, _, _)| b["type"] == "delayed_call.failed");
    assert_eq!(ticks.len() as i64, crons, "one alert per failing cron job: {ticks:?}");
    let hooks = calls;
    assert_eq!(hooks.len(), n, "one signed delivery per notification, none twice");
    let named: std::collections::BTreeSet<u32> = hooks
        .iter()
        .filter_map(|(b, _, _)| b["data"]["job_name"].as_str()?.strip_prefix("burst-")?.parse().ok())
        .collect();
    assert_eq!(named.len(), n);
    let mails: Vec<_> = setup
        .smtp
        .mails_to("burst@example.com")
        .into_iter()
        .filter(|m| m.header("List-Unsubscribe").is_some())
        .collect();
    assert!(
        mails.len() < n / 2,
        "a burst is digested: {} mails for {n} alerts",
        mails.len()
    );
    let mut covered = std::collections::BTreeSet::new();
    for m in &mails {
        covered.extend(burst_names(&m.text()));
    }
    assert_eq!(covered.len(), n, "every alert is in some mail");
    // From the log, which the wait above read (the read model may be a moment behind it).
    let digested: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE event_type = 'NotificationDelivered' AND payload -> 'NotificationDelivered' ->> 'digest' IS NOT NULL",
    )
    .fetch_one(&setup.env.db.pool)
    .await
    .unwrap();
    assert!(digested > 0, "some deliveries were digests");

    // The burst was projected in groups (a statement per run of alerts, of notifications, of
    // failed runs); a rebuild applies the same events one by one, and must find the same rows.
    let settled = |pool: sqlx::PgPool| async move {
        // Nothing left to run or deliver, and every projection at the head of the log.
        let (open, behind): (i64, i64) = sqlx::query_as(
            "WITH head AS (SELECT xid::text::int8 AS xid, global_seq FROM events
                            ORDER BY events.xid DESC, events.global_seq DESC LIMIT 1)
             SELECT (SELECT count(*) FROM runs WHERE status NOT IN ('succeeded', 'failed', 'skipped'))
                    + (SELECT count(*) FROM notifications WHERE status NOT IN ('delivered', 'failed')),
                    (SELECT count(*) FROM projection_checkpoints c, head h
                      WHERE (c.last_xid, c.last_seq) < (h.xid, h.global_seq))",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (open == 0 && behind == 0).then_some(())
    };
    setup
        .env
        .eventually(Duration::from_secs(30), "the read models to show the burst", || {
            settled(pool.clone())
        })
        .await;
    let tables = [
        "alerts",
        "notifications",
        "notification_channels",
        "runs",
        "run_attempts",
        "jobs",
    ];
    let dump = |pool: sqlx::PgPool| async move {
        let mut out = Vec::new();
        for t in tables {
            let rows: Value = sqlx::query_scalar(&format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb) FROM {t} t"
            ))
            .fetch_one(&pool)
            .await
            .unwrap();
            out.push((t, rows));
        }
        out
    };
    let live = dump(pool.clone()).await;
    setup.env.cli(&["projections", "rebuild"]).await;
    for ((table, a), (_, b)) in live.iter().zip(dump(pool.clone()).await.iter()) {
        assert_eq!(a, b, "{table} differs after a rebuild");
    }
}
