//! Account mail is really sent: verification, password reset and invitations reach the
//! provider (SMTP or Resend) with links to the public URL, and the links work.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::{link_in, post_form};
use crate::common::fakes::{Answer, FakeHttp, FakeSmtp};
use crate::common::users::{call, PW};
use crate::common::TestEnv;

#[tokio::test]
async fn sign_up_mails_a_link_that_verifies_the_address_in_the_browsers_language() {
    let smtp = FakeSmtp::start().await;
    let url = smtp.url();
    let env = TestEnv::start_with(vec![
        ("CRONBOX_SMTP_URL", url.as_str()),
        ("CRONBOX_MAIL_FROM", "CronBox <noreply@cronbox.test>"),
    ])
    .await;
    let r = env
        .http
        .post(format!("{}/v1/auth/register", env.base()))
        .header("accept-language", "en-GB,en;q=0.9")
        .json(&json!({"email": "new@example.com", "password": PW, "name": "New"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let mail = env
        .eventually(Duration::from_secs(15), "the verification mail", || async {
            smtp.mails_to("new@example.com").into_iter().next()
        })
        .await;
    assert_eq!(mail.from, "noreply@cronbox.test");
    assert_eq!(mail.header("Subject").as_deref(), Some("Confirm your CronBox e-mail"));
    assert!(mail
        .header("Content-Type")
        .unwrap_or_default()
        .contains("multipart/alternative"));
    let text = mail.text();
    let link = link_in(&text, "/verify-email?token=").expect("a verification link");
    assert!(
        link.starts_with(&env.base()),
        "links point to CRONBOX_PUBLIC_URL (here the listen address): {link}"
    );

    // Unverified until the link is followed.
    let (_, login) = call(
        &env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": "new@example.com", "password": PW})),
    )
    .await;
    let token = login["access_token"].as_str().unwrap().to_string();
    let (_, me) = call(&env, Method::GET, "/v1/me", &token, None).await;
    assert_eq!(me["email_verified"], false, "{me}");
    let (s, page) = post_form(&env, &link, &[]).await;
    assert_eq!(s, 200, "{page}");
    let (_, me) = call(&env, Method::GET, "/v1/me", &token, None).await;
    assert_eq!(me["email_verified"], true, "{me}");
    // The link works once.
    let (s, _) = post_form(&env, &link, &[]).await;
    assert_eq!(s, 400);
    let sent: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT sent_at FROM mail_outbox WHERE to_email = 'new@example.com'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(sent.is_some(), "the outbox records the send");
}

#[tokio::test]
async fn a_password_reset_mail_goes_through_resend_with_an_idempotency_key_and_honours_429() {
    let resend = FakeHttp::resend().await;
    // The first try is rate limited for 2 s; the second goes through.
    resend.answer(vec![Answer::RateLimited(2)]);
    let url = resend.url();
    let env = TestEnv::start_with(vec![
        ("CRONBOX_RESEND_API_KEY", "re_test_key"),
        ("CRONBOX_RESEND_API_URL", url.as_str()),
        ("CRONBOX_MAIL_FROM", "CronBox <noreply@cronbox.test>"),
    ])
    .await;
    let (s, v) = call(
        &env,
        Method::POST,
        "/v1/auth/register",
        "-",
        Some(json!({"email": "r@example.com", "password": PW, "name": "R"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // The verification mail (rate limited once, then sent).
    let sends = env
        .eventually(
            Duration::from_secs(20),
            "the verification mail after the 429",
            || async {
                let r = resend.received_at("/emails");
                (r.len() >= 2).then_some(r)
            },
        )
        .await;
    assert!(
        sends[1].at - sends[0].at >= Duration::from_millis(1900),
        "retry-after was honoured"
    );
    assert_eq!(
        sends[0].headers.get("idempotency-key"),
        sends[1].headers.get("idempotency-key"),
        "the retry carries the same key"
    );
    assert_eq!(sends[0].headers["authorization"], "Bearer re_test_key");

    let r = env
        .http
        .post(format!("{}/v1/auth/password-reset", env.base()))
        .json(&json!({"email": "r@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let mail = env
        .eventually(Duration::from_secs(15), "the reset mail", || async {
            resend.received_at("/emails").into_iter().find(|m| {
                m.body["text"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("/reset-password?token=")
            })
        })
        .await;
    assert_eq!(mail.body["to"], json!(["r@example.com"]));
    assert_eq!(mail.body["from"], "CronBox <noreply@cronbox.test>");
    assert!(
        mail.body["subject"].as_str().unwrap().contains("пароля"),
        "Russian by default: {}",
        mail.body["subject"]
    );
    assert!(mail.body["html"].as_str().unwrap().contains("<a href="));
    let link = link_in(mail.body["text"].as_str().unwrap(), "/reset-password?token=").unwrap();
    let (s, page) = post_form(&env, &link, &[("password", "a much newer password")]).await;
    assert_eq!(s, 200, "{page}");
    let (s, _) = call(
        &env,
        Method::POST,
        "/v1/auth/login",
        "-",
        Some(json!({"email": "r@example.com", "password": "a much newer password"})),
    )
    .await;
    assert_eq!(s, 200, "the new password works");
}
