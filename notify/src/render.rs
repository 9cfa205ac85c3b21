//! What a notification says, in Russian or English, for each kind of channel: a title, labelled
//! facts, the first lines of the response and a link. E-mail bodies go through askama templates
//! (`templates/`, HTML escaped by askama); Telegram gets HTML with every user-supplied piece
//! escaped here; webhooks get the facts as JSON.

use askama::Template;
use chrono::{DateTime, Utc};
use cronbox_domain::alert::AlertDetails;
use cronbox_domain::channel::{DisableReason, Language};
use cronbox_domain::notification::{NotificationContent, NotificationKind};
use uuid::Uuid;

/// A message before it is shaped for a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub title: String,
    pub rows: Vec<(String, String)>,
    pub response_head: Option<String>,
    pub response_label: String,
    pub link: Option<String>,
    pub link_label: String,
}

fn pick(lang: Language, ru: &str, en: &str) -> String {
    match lang {
        Language::Ru => ru.to_string(),
        Language::En => en.to_string(),
    }
}

/// An error kind in plain words.
pub fn error_words(kind: &str, lang: Language) -> String {
    let (ru, en) = match kind {
        "timeout" => ("превышено время ожидания ответа", "the request timed out"),
        "connect" => ("не удалось подключиться к серверу", "could not connect to the server"),
        "dns" => ("имя сервера не найдено (DNS)", "the host name did not resolve (DNS)"),
        "tls" => ("ошибка TLS или сертификата", "a TLS or certificate error"),
        "too_large" => ("ответ слишком большой", "the response was too large"),
        "http_status" => (
            "сервер ответил кодом ошибки",
            "the server answered with an error status",
        ),
        "assertion" => ("ответ не прошёл проверку", "the response failed a check"),
        "blocked_target" => (
            "адрес запрещён: частная сеть",
            "the address is not allowed: a private network",
        ),
        _ => ("другая ошибка", "another error"),
    };
    pick(lang, ru, en)
}

/// `2 h 5 min` / `2 ч 5 мин` (no plural forms needed).
pub fn duration_words(seconds: i64, lang: Language) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    let units = match lang {
        Language::Ru => ["дн", "ч", "мин", "с"],
        Language::En => ["d", "h", "min", "s"],
    };
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d} {}", units[0]));
    }
    if h > 0 {
        parts.push(format!("{h} {}", units[1]));
    }
    if m > 0 && d == 0 {
        parts.push(format!("{m} {}", units[2]));
    }
    if parts.is_empty() {
        parts.push(format!("{} {}", s % 60, units[3]));
    }
    parts.join(" ")
}

/// A time in a zone, with the zone shown: `2026-12-01 03:00:00 MSK (Europe/Moscow)`.
pub fn local_time(at: DateTime<Utc>, zone: &str) -> String {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) if zone != "UTC" => format!("{} ({zone})", at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z")),
        _ => format!("{} UTC", at.format("%Y-%m-%d %H:%M:%S")),
    }
}

fn disable_words(reason: DisableReason, lang: Language) -> String {
    match reason {
        DisableReason::BotBlocked => pick(
            lang,
            "бот заблокирован или удалён из чата",
            "the bot was blocked or removed from the chat",
        ),
        DisableReason::Gone => pick(lang, "адрес ответил 410 Gone", "the endpoint answered 410 Gone"),
        DisableReason::Unsubscribed => pick(lang, "получатель отписался", "the recipient unsubscribed"),
        DisableReason::ByAdmin => pick(lang, "отключён администратором", "switched off by an admin"),
    }
}

/// Where a person sees the run: the execution in the API under `CRONBOX_PUBLIC_URL`.
pub fn run_link(public_url: &str, workspace_id: Uuid, run_id: Uuid) -> String {
    format!(
        "{}/v1/workspaces/{workspace_id}/executions/{run_id}",
        public_url.trim_end_matches('/')
    )
}

pub fn message(content: &NotificationContent, lang: Language, public_url: &str, workspace_id: Uuid) -> Message {
    let d: &AlertDetails = &content.details;
    let name = &d.job_name;
    let title = match content.kind {
        NotificationKind::Failure => pick(
            lang,
            &format!("❌ Задание «{name}» не выполняется"),
            &format!("❌ Job “{name}” is failing"),
        ),
        NotificationKind::Reminder => pick(
            lang,
            &format!("⏰ Задание «{name}» всё ещё не выполняется"),
            &format!("⏰ Job “{name}” is still failing"),
        ),
        NotificationKind::Recovery => pick(
            lang,
            &format!("✅ Задание «{name}» снова работает"),
            &format!("✅ Job “{name}” recovered"),
        ),
        NotificationKind::CallFailed => pick(
            lang,
            &format!("❌ Отложенный вызов «{name}» не выполнен"),
            &format!("❌ Delayed call “{name}” failed"),
        ),
        NotificationKind::CallbackFailed => pick(
            lang,
            &format!("❌ Не удалось доставить callback вызова «{name}»"),
            &format!("❌ The callback of delayed call “{name}” could not be delivered"),
        ),
        NotificationKind::ChannelDisabled => pick(
            lang,
            &format!(
                "⚠️ Канал уведомлений «{}» отключён",
                content.disabled_channel.as_deref().unwrap_or(name)
            ),
            &format!(
                "⚠️ Notification channel “{}” was disabled",
                content.disabled_channel.as_deref().unwrap_or(name)
            ),
        ),
        NotificationKind::Test => pick(lang, "🔔 Тестовое уведомление CronBox", "🔔 CronBox test notification"),
    };
    let mut rows = Vec::new();
    let mut row = |ru: &str, en: &str, value: String| rows.push((pick(lang, ru, en), value));
    match content.kind {
        NotificationKind::Test => row(
            "Что это",
            "What this is",
            pick(
                lang,
                "Канал настроен: сюда будут приходить уведомления о сбоях заданий.",
                "The channel works: job failure alerts will arrive here.",
            ),
        ),
        NotificationKind::ChannelDisabled => {
            if let Some(r) = content.disabled_reason {
                row("Причина", "Reason", disable_words(r, lang));
            }
            if let Some(detail) = d.error_message.as_ref().filter(|s| !s.is_empty()) {
                row("Ответ", "Answer", detail.clone());
            }
            row(
                "Что делать",
                "What to do",
                pick(
                    lang,
                    "Исправьте канал и включите его снова в настройках уведомлений.",
                    "Fix the channel and enable it again in the notification settings.",
                ),
            );
        }
        _ => {
            if !d.url.is_empty() {
                row("Адрес", "URL", d.url.clone());
            }
            if content.kind != NotificationKind::Recovery {
                if let Some(kind) = &d.error_kind {
                    row("Ошибка", "Error", error_words(kind, lang));
                }
                if let Some(code) = d.status_code {
                    row("Код ответа", "Status code", code.to_string());
                }
                if let Some(msg) = d.error_message.as_ref().filter(|s| !s.is_empty()) {
                    row("Подробности", "Details", msg.chars().take(300).collect());
                }
                if d.attempts > 0 {
                    row("Попыток", "Attempts", d.attempts.to_string());
                }
                if let Some(at) = d.scheduled_for {
                    row("Запуск по расписанию", "Scheduled for", local_time(at, &d.timezone));
                }
            }
            if let Some(since) = d.failing_since {
                if content.kind != NotificationKind::Failure || d.failures > 1 {
                    row("Не работает с", "Failing since", local_time(since, &d.timezone));
                }
            }
            if let Some(secs) = content.failing_seconds {
                let (ru, en) = if content.kind == NotificationKind::Recovery {
                    ("Не работало", "Was failing for")
                } else {
                    ("Не работает уже", "Failing for")
                };
                row(ru, en, duration_words(secs, lang));
            }
            let failed = content.failed_runs.unwrap_or(d.failures);
            if failed > 1 || content.kind == NotificationKind::Recovery {
                row("Неудачных запусков", "Failed runs", failed.to_string());
            }
        }
    }
    let link = d.run_id.map(|run| run_link(public_url, workspace_id, run));
    Message {
        title,
        rows,
        response_head: d
            .response_head
            .clone()
            .filter(|_| content.kind != NotificationKind::Recovery),
        response_label: pick(lang, "Начало ответа", "Start of the response"),
        link,
        link_label: pick(lang, "Открыть запуск", "Open the run"),
    }
}

/// Several messages for one channel at once, when a burst passes the digest threshold.
pub fn digest_title(count: usize, lang: Language) -> String {
    pick(
        lang,
        &format!("⚠️ CronBox: {count} уведомлений сразу"),
        &format!("⚠️ CronBox: {count} notifications at once"),
    )
}

/// Escapes text for Telegram's HTML parse mode.
pub fn telegram_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A message as Telegram HTML (at most 4096 characters).
pub fn telegram_text(m: &Message) -> String {
    let mut out = format!("<b>{}</b>\n", telegram_escape(&m.title));
    for (label, value) in &m.rows {
        out.push_str(&format!("{}: {}\n", telegram_escape(label), telegram_escape(value)));
    }
    if let Some(head) = &m.response_head {
        out.push_str(&format!(
            "{}:\n<pre>{}</pre>\n",
            telegram_escape(&m.response_label),
            telegram_escape(head)
        ));
    }
    if let Some(link) = &m.link {
        out.push_str(&format!(
            "<a href=\"{}\">{}</a>",
            telegram_escape(link).replace('"', "&quot;"),
            telegram_escape(&m.link_label)
        ));
    }
    truncate_chars(out, 4096)
}

/// A digest as Telegram HTML: one line per message.
pub fn telegram_digest(messages: &[Message], lang: Language) -> String {
    let mut out = format!("<b>{}</b>\n", telegram_escape(&digest_title(messages.len(), lang)));
    for m in messages {
        out.push_str(&format!("• {}\n", telegram_escape(&m.title)));
    }
    truncate_chars(out, 4096)
}

fn truncate_chars(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

#[derive(Template)]
#[template(path = "alert.html")]
struct AlertHtml<'a> {
    lang: &'a str,
    messages: &'a [Message],
    heading: &'a str,
    unsubscribe: Option<&'a str>,
    unsubscribe_label: &'a str,
}

#[derive(Template)]
#[template(path = "alert.txt")]
struct AlertText<'a> {
    messages: &'a [Message],
    heading: &'a str,
    unsubscribe: Option<&'a str>,
    unsubscribe_label: &'a str,
}

/// An alert mail (one message, or a digest of several): subject, HTML and plain text.
pub fn alert_mail(
    messages: &[Message],
    lang: Language,
    unsubscribe: Option<&str>,
) -> Result<(String, String, String), askama::Error> {
    let heading = if messages.len() == 1 {
        messages[0].title.clone()
    } else {
        digest_title(messages.len(), lang)
    };
    let unsubscribe_label = pick(lang, "Отписаться от этих уведомлений", "Unsubscribe from these alerts");
    let html = AlertHtml {
        lang: lang.as_str(),
        messages,
        heading: &heading,
        unsubscribe,
        unsubscribe_label: &unsubscribe_label,
    }
    .render()?;
    let text = AlertText {
        messages,
        heading: &heading,
        unsubscribe,
        unsubscribe_label: &unsubscribe_label,
    }
    .render()?;
    Ok((heading, html, text))
}

/// An account mail: a greeting, what it is for, one button and what happens if ignored.
#[derive(Debug, Clone)]
pub struct AccountMail {
    pub subject: String,
    pub lines: Vec<String>,
    pub action: String,
    pub link: String,
    pub footer: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountHtml<'a> {
    lang: &'a str,
    m: &'a AccountMail,
}

#[derive(Template)]
#[template(path = "account.txt")]
struct AccountText<'a> {
    m: &'a AccountMail,
}

pub fn account_mail_bodies(m: &AccountMail, lang: Language) -> Result<(String, String), askama::Error> {
    Ok((
        AccountHtml { lang: lang.as_str(), m }.render()?,
        AccountText { m }.render()?,
    ))
}

/// Account mails by kind, with their parameters (`token`, `workspace`, `role`, `hours`…).
pub fn account_mail(kind: &str, params: &serde_json::Value, lang: Language, public_url: &str) -> Option<AccountMail> {
    let base = public_url.trim_end_matches('/');
    let p = |k: &str| params.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let n = |k: &str| params.get(k).and_then(|v| v.as_i64()).unwrap_or_default();
    let token = p("token");
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    Some(match kind {
        "verify_email" => AccountMail {
            subject: pick(lang, "Подтвердите адрес для CronBox", "Confirm your CronBox e-mail"),
            lines: vec![pick(
                lang,
                "Чтобы подтвердить адрес и начать пользоваться CronBox, нажмите кнопку.",
                "To confirm your address and start using CronBox, press the button.",
            )],
            action: pick(lang, "Подтвердить адрес", "Confirm the address"),
            link: format!("{base}/verify-email?token={}", enc(&token)),
            footer: pick(
                lang,
                &format!("Ссылка работает один раз, {} ч. Если вы не регистрировались, просто удалите письмо.", n("hours")),
                &format!("The link works once, for {} hours. If you did not sign up, delete this mail.", n("hours")),
            ),
        },
        "reset_password" => AccountMail {
            subject: pick(lang, "Сброс пароля CronBox", "Reset your CronBox password"),
            lines: vec![pick(
                lang,
                "Кто-то (надеемся, вы) попросил сбросить пароль. Задайте новый по кнопке.",
                "Someone (we hope you) asked to reset your password. Set a new one with the button.",
            )],
            action: pick(lang, "Задать новый пароль", "Set a new password"),
            link: format!("{base}/reset-password?token={}", enc(&token)),
            footer: pick(
                lang,
                &format!("Ссылка работает один раз, {} мин. Все сеансы будут завершены. Если это были не вы, ничего не делайте.", n("minutes")),
                &format!("The link works once, for {} minutes, and ends every session. If it was not you, do nothing.", n("minutes")),
            ),
        },
        "invite" => AccountMail {
            subject: pick(
                lang,
                &format!("Приглашение в «{}» на CronBox", p("workspace")),
                &format!("You are invited to “{}” on CronBox", p("workspace")),
            ),
            lines: vec![
                pick(
                    lang,
                    &format!("Вас приглашают в рабочее пространство «{}» с ролью {}.", p("workspace"), p("role")),
                    &format!("You are invited to the workspace “{}” as {}.", p("workspace"), p("role")),
                ),
                pick(
                    lang,
                    &format!("Войдите (или зарегистрируйтесь с этим адресом) и примите приглашение. Код: {token}"),
                    &format!("Log in (or sign up with this address) and accept the invitation. Code: {token}"),
                ),
            ],
            action: pick(lang, "Принять приглашение", "Accept the invitation"),
            link: format!("{base}/invites/accept?token={}", enc(&token)),
            footer: pick(
                lang,
                &format!("Приглашение действует {} дн.", n("days")),
                &format!("The invitation expires in {} days.", n("days")),
            ),
        },
        "confirm_channel" => AccountMail {
            subject: pick(lang, "Подтвердите адрес для уведомлений CronBox", "Confirm this address for CronBox alerts"),
            lines: vec![pick(
                lang,
                &format!("Рабочее пространство «{}» хочет присылать сюда уведомления о сбоях заданий (канал «{}»).", p("workspace"), p("channel")),
                &format!("The workspace “{}” wants to send job failure alerts here (channel “{}”).", p("workspace"), p("channel")),
            )],
            action: pick(lang, "Получать уведомления", "Receive the alerts"),
            link: format!("{base}/notification-channels/confirm?token={}", enc(&token)),
            footer: pick(
                lang,
                &format!("Ссылка работает {} ч. Если вы не ждали этого письма, ничего не делайте: уведомлений не будет.", n("hours")),
                &format!("The link works for {} hours. If you did not expect this mail, do nothing: no alerts will come.", n("hours")),
            ),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(name: &str) -> NotificationContent {
        NotificationContent::new(
            NotificationKind::Failure,
            AlertDetails {
                job_name: name.into(),
                url: "https://example.com/hook".into(),
                run_id: Some(Uuid::from_u128(7)),
                error_kind: Some("http_status".into()),
                status_code: Some(503),
                response_head: Some("<h1>down</h1>".into()),
                attempts: 3,
                scheduled_for: DateTime::from_timestamp(1_800_000_000, 0),
                timezone: "Europe/Moscow".into(),
                failures: 1,
                ..Default::default()
            },
        )
    }

    #[test]
    fn telegram_text_escapes_everything_the_user_wrote() {
        let m = message(&failing("<script>&"), Language::En, "https://cron.example", Uuid::nil());
        let text = telegram_text(&m);
        assert!(text.contains("&lt;script&gt;&amp;"), "{text}");
        assert!(text.contains("&lt;h1&gt;down&lt;/h1&gt;"));
        assert!(!text.contains("<script>"));
        assert!(text.contains("Status code: 503"));
        assert!(text.contains("MSK (Europe/Moscow)"), "{text}");
    }

    #[test]
    fn mail_html_is_escaped_by_the_template_and_russian_by_default() {
        let m = message(&failing("<b>x</b>"), Language::Ru, "https://cron.example", Uuid::nil());
        let (subject, html, text) = alert_mail(&[m], Language::Ru, Some("https://cron.example/u?t=1")).unwrap();
        assert!(subject.contains("не выполняется"));
        assert!(!html.contains("<b>x</b>"), "{html}");
        assert!(
            html.contains("&lt;b&gt;x&lt;/b&gt;") || html.contains("&#60;b&#62;"),
            "{html}"
        );
        assert!(text.contains("<b>x</b>"), "plain text is not escaped");
        assert!(text.contains("Отписаться"));
    }

    #[test]
    fn account_mails_link_to_the_public_url() {
        let mail = account_mail(
            "verify_email",
            &serde_json::json!({"token": "abc", "hours": 48}),
            Language::En,
            "https://cron.example/",
        )
        .unwrap();
        assert_eq!(mail.link, "https://cron.example/verify-email?token=abc");
        assert!(mail.footer.contains("48 hours"));
        assert!(account_mail("nope", &serde_json::json!({}), Language::En, "x").is_none());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_words(7500, Language::En), "2 h 5 min");
        assert_eq!(duration_words(30, Language::Ru), "30 с");
        assert_eq!(duration_words(90_000, Language::En), "1 d 1 h");
    }
}
