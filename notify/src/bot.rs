//! The Telegram bot's side of the conversation: `/start <code>` or `/link <code>` links a chat
//! to a workspace, `/status` lists its failing jobs, `/unlink` removes the links, `/help` says
//! what it can do, and a group that becomes a supergroup takes its links along.
//!
//! Updates arrive by long polling (one poller in the installation, under a session lock) or by
//! webhook (`POST /v1/telegram/webhook`, checked against `secret_token`). Replies are in the
//! user's Telegram language when it is Russian or English, otherwise Russian.

use std::time::Duration;

use cronbox_domain::channel::Language;
use cronbox_store::leader;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::channels::{self, Notify, NotifyError};
use crate::render::telegram_escape;
use crate::telegram::{TelegramBot, TelegramError};

#[derive(Clone)]
pub struct Bot {
    pub notify: Notify,
    pub telegram: TelegramBot,
}

fn pick(lang: Language, ru: &str, en: &str) -> String {
    match lang {
        Language::Ru => ru.to_string(),
        Language::En => en.to_string(),
    }
}

fn help(lang: Language) -> String {
    pick(
        lang,
        "Я присылаю уведомления CronBox о сбоях заданий.\n\n\
         /link &lt;код&gt; — привязать этот чат к рабочему пространству (код — в настройках уведомлений)\n\
         /status — задания, которые сейчас не выполняются\n\
         /unlink — отвязать этот чат\n\
         /help — эта справка",
        "I send CronBox alerts when jobs fail.\n\n\
         /link &lt;code&gt; — link this chat to a workspace (the code is in the notification settings)\n\
         /status — the jobs failing now\n\
         /unlink — unlink this chat\n\
         /help — this help",
    )
}

/// The reply to one message's text, if it is a command.
pub async fn answer(bot: &Bot, chat_id: i64, chat_title: &str, text: &str, lang: Language) -> Option<String> {
    let text = text.trim();
    if !text.starts_with('/') {
        return None;
    }
    let mut parts = text.split_whitespace();
    let command = parts.next()?.split('@').next()?.to_ascii_lowercase();
    let arg = parts.next().unwrap_or_default();
    let n = &bot.notify;
    Some(match command.as_str() {
        "/start" | "/link" if !arg.is_empty() => match channels::link_telegram(n, arg, chat_id, chat_title).await {
            Ok(linked) if linked.already => pick(
                lang,
                &format!("Этот чат уже привязан к «{}».", telegram_escape(&linked.workspace_name)),
                &format!("This chat is already linked to “{}”.", telegram_escape(&linked.workspace_name)),
            ),
            Ok(linked) => pick(
                lang,
                &format!(
                    "✅ Чат привязан к рабочему пространству «{}». Сюда будут приходить уведомления о сбоях.",
                    telegram_escape(&linked.workspace_name)
                ),
                &format!(
                    "✅ This chat is linked to the workspace “{}”. Alerts will arrive here.",
                    telegram_escape(&linked.workspace_name)
                ),
            ),
            Err(NotifyError::BadToken) => pick(
                lang,
                "❌ Код неверный, уже использован или истёк (он действует 10 минут). Получите новый в настройках уведомлений.",
                "❌ The code is wrong, used or expired (it lasts 10 minutes). Get a new one in the notification settings.",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "telegram link failed");
                pick(lang, "Не получилось, попробуйте позже.", "That did not work; please try again later.")
            }
        },
        "/start" | "/help" => help(lang),
        "/status" => match channels::chat_links(n, chat_id).await {
            Ok(links) if links.is_empty() => pick(
                lang,
                "Этот чат не привязан ни к одному рабочему пространству. /help",
                "This chat is not linked to any workspace. /help",
            ),
            Ok(links) => {
                let mut out = String::new();
                for (_, workspace_id) in links {
                    let name = match n.stores.workspaces.load(&workspace_id.to_string()).await {
                        Ok((ws, _)) => ws.name,
                        Err(_) => continue,
                    };
                    let failing = channels::failing_jobs(&n.pool, workspace_id, 20).await.unwrap_or_default();
                    out.push_str(&format!("<b>{}</b>\n", telegram_escape(&name)));
                    if failing.is_empty() {
                        out.push_str(&pick(lang, "✅ Все задания работают\n", "✅ All jobs are working\n"));
                    }
                    for (job, failures) in failing {
                        out.push_str(&pick(
                            lang,
                            &format!("❌ {} — неудачных запусков подряд: {failures}\n", telegram_escape(&job)),
                            &format!("❌ {} — failed runs in a row: {failures}\n", telegram_escape(&job)),
                        ));
                    }
                }
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "telegram status failed");
                pick(lang, "Не получилось, попробуйте позже.", "That did not work; please try again later.")
            }
        },
        "/unlink" => match channels::unlink_telegram(n, chat_id).await {
            Ok(0) => pick(lang, "Этот чат и так не привязан.", "This chat was not linked."),
            Ok(_) => pick(
                lang,
                "Чат отвязан: уведомлений сюда больше не будет.",
                "The chat is unlinked: no more alerts will come here.",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "telegram unlink failed");
                pick(lang, "Не получилось, попробуйте позже.", "That did not work; please try again later.")
            }
        },
        _ => help(lang),
    })
}

/// Handles one update; never fails (a bad update is logged and skipped, the queue goes on).
pub async fn handle_update(bot: &Bot, update: &Value) {
    let Some(message) = update.get("message").or_else(|| update.get("channel_post")) else {
        return;
    };
    let Some(chat_id) = message.pointer("/chat/id").and_then(Value::as_i64) else {
        return;
    };
    if let Some(to) = message.get("migrate_to_chat_id").and_then(Value::as_i64) {
        match channels::migrate_chat(&bot.notify, chat_id, to).await {
            Ok(n) if n > 0 => tracing::info!(links = n, "telegram group became a supergroup; links moved"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot move telegram links to the supergroup"),
        }
        return;
    }
    let Some(text) = message.get("text").and_then(Value::as_str) else {
        return;
    };
    let lang = match message.pointer("/from/language_code").and_then(Value::as_str) {
        Some(l) if l.starts_with("en") => Language::En,
        _ => Language::Ru,
    };
    let title = message
        .pointer("/chat/title")
        .or_else(|| message.pointer("/chat/username"))
        .or_else(|| message.pointer("/chat/first_name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(reply) = answer(bot, chat_id, title, text, lang).await else {
        return;
    };
    match bot.telegram.send_message(chat_id, &reply).await {
        Ok(()) | Err(TelegramError::Blocked(_)) => {}
        Err(e) => tracing::warn!(error = ?e, "cannot answer a telegram command"),
    }
}

/// Long-polls `getUpdates` while this process holds the poller's lock.
pub async fn poll(bot: Bot, lock_key: i64, shutdown: CancellationToken) {
    let pool = bot.notify.pool.clone();
    let name = bot.telegram.username.clone();
    while !shutdown.is_cancelled() {
        let Some(lock) = leader::acquire(&pool, lock_key, "telegram poller", &shutdown).await else {
            return;
        };
        // A webhook set earlier would make getUpdates fail.
        if let Err(e) = bot.telegram.delete_webhook().await {
            tracing::warn!(error = ?e, "cannot remove the telegram webhook before polling");
        }
        let mut offset: i64 = sqlx::query_scalar("SELECT next_offset FROM telegram_offsets WHERE bot = $1")
            .bind(&name)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let lost = lock.lost();
        while !shutdown.is_cancelled() && lock.check().is_ok() {
            let updates = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lost.cancelled() => break,
                r = bot.telegram.get_updates(offset, 25) => r,
            };
            match updates {
                Ok(updates) => {
                    for u in &updates {
                        handle_update(&bot, u).await;
                        if let Some(id) = u.get("update_id").and_then(Value::as_i64) {
                            offset = offset.max(id + 1);
                        }
                    }
                    if !updates.is_empty() {
                        let saved = sqlx::query(
                            "INSERT INTO telegram_offsets (bot, next_offset) VALUES ($1, $2)
                             ON CONFLICT (bot) DO UPDATE SET next_offset = $2",
                        )
                        .bind(&name)
                        .bind(offset)
                        .execute(&pool)
                        .await;
                        if let Err(e) = saved {
                            tracing::warn!(error = %e, "cannot save the telegram offset");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "telegram getUpdates failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                    }
                }
            }
        }
    }
}
