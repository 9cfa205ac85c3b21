//! A crash between an alert's decision and its delivery delivers exactly what was decided:
//! nothing is lost, nothing decided twice.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::Setup;

#[tokio::test]
async fn a_crash_between_decision_and_delivery_still_delivers_each_decided_notification_once() {
    let setup = Setup::start().await;
    setup.email_channel("crash@example.com").await;
    setup.wait_channels(1).await;
    // The mail server refuses (451) everything for now: decided, not delivered.
    setup.smtp.fail_next(1000);
    setup
        .cron_job(json!({
            "name": "crashy",
            "url": setup.env.target_url("/fail/crash"),
            "schedule": "* * * * * *",
            "retry_count": 0,
        }))
        .await;
    let pool = setup.env.db.pool.clone();
    setup
        .env
        .eventually(
            Duration::from_secs(30),
            "the notification to be queued and tried",
            || async {
                let n: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'NotificationAttempted'")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                (n >= 1).then_some(())
            },
        )
        .await;
    let mut env = setup.env;
    env.kill_server().await;
    setup.smtp.fail_next(0);
    env.start_server().await;
    let setup = Setup { env, ..setup };
    let mails = setup
        .env
        .eventually(Duration::from_secs(30), "the alert mail after the restart", || async {
            let m: Vec<_> = setup
                .smtp
                .mails_to("crash@example.com")
                .into_iter()
                .filter(|m| m.header("List-Unsubscribe").is_some())
                .collect();
            (!m.is_empty()).then_some(m)
        })
        .await;
    // Let the job keep failing for a few more runs: still one alert, one mail.
    setup.more("RunFailed", setup.count("RunFailed").await, 3).await;
    setup.settled().await;
    let mails_now = setup
        .smtp
        .mails_to("crash@example.com")
        .into_iter()
        .filter(|m| m.header("List-Unsubscribe").is_some())
        .count();
    assert_eq!((mails.len(), mails_now), (1, 1));
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM events WHERE event_type IN ('AlertRaised', 'NotificationQueued', 'NotificationDelivered')
          GROUP BY event_type ORDER BY event_type",
    )
    .fetch_all(&setup.env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        counts,
        vec![
            ("AlertRaised".into(), 1),
            ("NotificationDelivered".into(), 1),
            ("NotificationQueued".into(), 1)
        ]
    );
    let (_, open) = setup.call(Method::GET, "/alerts?state=open", None).await;
    assert_eq!(open.as_array().unwrap().len(), 1);
}
