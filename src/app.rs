//! Builds the running service from settings: which roles run in this process and how they
//! share the database pool, the NATS connection and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cronbox_nats::{ConsumerSettings, RunQueue};
use cronbox_store::aggregates::Stores;
use cronbox_store::tail::Waker;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub api: bool,
    pub dispatcher: bool,
    pub executor: bool,
}

impl Roles {
    pub fn all() -> Self {
        Self {
            api: true,
            dispatcher: true,
            executor: true,
        }
    }
    pub fn none() -> Self {
        Self {
            api: false,
            dispatcher: false,
            executor: false,
        }
    }
}

async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let pool = cronbox_store::db::pool(&config.database_url, config.db_max_connections)
        .context("invalid CRONBOX_DATABASE_URL")?;
    // Wait for the database at start-up (it may still be starting), but not for ever.
    let mut last = None;
    for _ in 0..60 {
        match cronbox_store::db::migrate(&pool).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "database migrated");
                }
                return Ok(pool);
            }
            Err(e) => {
                tracing::warn!(error = %e, "database not ready; retrying");
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(anyhow::Error::from(last.expect("loop ran at least once")).context("cannot migrate the database"))
}

fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

/// A stable lock key per NATS prefix, so separate instances sharing one database each get a
/// leader.
fn lock_key(prefix: &str) -> i64 {
    prefix.bytes().fold(0xcb0f_29ce_4842_2325_u64 as i64, |h, b| {
        (h ^ i64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

pub async fn serve(config: Config, roles: Roles) -> anyhow::Result<()> {
    let pool = connect(&config).await?;
    let stores = Arc::new(Stores::new(pool.clone()));
    let shutdown = shutdown_signal();
    let waker = Waker::spawn(pool.clone(), shutdown.clone());
    let queue = RunQueue::connect(&config.nats_url, &config.nats_prefix, config.nats_creds.as_deref())
        .await
        .context("cannot set up NATS")?;
    let mut tasks = tokio::task::JoinSet::new();
    // Signing secrets are sealed with a key that never enters the database.
    let keyring = if roles.api || roles.executor {
        let text = config.secrets_key.as_deref().context(
            "CRONBOX_SECRETS_KEY is required: 32 random bytes as 64 hex digits (e.g. `openssl rand -hex 32`); \
             scripts/dev.sh and scripts/test.sh make one",
        )?;
        let key = cronbox_store::signing::MasterKey::parse(text).context("invalid CRONBOX_SECRETS_KEY")?;
        Some(Arc::new(cronbox_store::signing::Keyring::new(pool.clone(), key)))
    } else {
        None
    };

    if roles.api || roles.dispatcher {
        for projection in cronbox_projections::all() {
            let task = cronbox_projections::run_projection(pool.clone(), waker.clone(), projection, shutdown.clone());
            tasks.spawn(async move {
                task.await;
                "projection"
            });
        }
        // The enterprise event stream: a projection whose sink is JetStream.
        let max_age = Duration::from_secs(config.event_stream_max_age_days * 86_400);
        queue
            .ensure_events_stream(max_age)
            .await
            .context("cannot create the events stream")?;
        let export = cronbox_nats::export::EventExport { queue: queue.clone() };
        let task = cronbox_nats::export::run(
            pool.clone(),
            waker.clone(),
            export,
            lock_key(&format!("{}:event-export", config.nats_prefix)),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            task.await;
            "event export"
        });
        let every = Duration::from_secs(config.retention_sweep_seconds);
        let task = cronbox_projections::retention::run(pool.clone(), every, shutdown.clone());
        tasks.spawn(async move {
            task.await;
            "retention"
        });
    }
    let notify = match (&keyring, roles.api || roles.dispatcher) {
        (Some(keyring), true) => {
            Some(start_notifications(&config, &pool, &stores, &waker, keyring, &shutdown, &mut tasks).await?)
        }
        _ => None,
    };
    if roles.dispatcher {
        let cfg = cronbox_dispatcher::DispatcherConfig {
            grace: chrono::Duration::seconds(config.misfire_grace_seconds),
            lock_key: lock_key(&config.nats_prefix),
            reconcile_after: Duration::from_secs(config.reconcile_after_seconds),
            reconcile_batch: config.reconcile_batch,
            max_runs_in_flight: config.max_runs_in_flight,
            preload: chrono::Duration::seconds(config.dispatcher_preload_seconds as i64),
            lead: chrono::Duration::milliseconds(config.dispatch_lead_ms as i64),
            ..Default::default()
        };
        let task = cronbox_dispatcher::run(
            pool.clone(),
            stores.clone(),
            queue.clone(),
            waker.clone(),
            cfg,
            shutdown.clone(),
        );
        tasks.spawn(async move {
            task.await;
            "dispatcher"
        });
    }
    if roles.executor {
        let cfg = cronbox_executor::ExecutorConfig {
            concurrency: config.executor_concurrency,
            per_host_concurrency: config.executor_per_host_concurrency,
            targets: config.targets.clone(),
            max_response_bytes: config.max_response_bytes,
            // Inside the 10 s the process gives its roles at shutdown.
            shutdown_grace: Duration::from_secs(8),
            consumer: ConsumerSettings {
                ack_wait: Duration::from_secs(config.ack_wait_seconds),
                max_ack_pending: (config.executor_concurrency as i64 * 8).max(1000),
                ..Default::default()
            },
        };
        let (stores, queue, shutdown) = (stores.clone(), queue.clone(), shutdown.clone());
        let keyring = keyring.clone().context("the executor needs the keyring")?;
        tasks.spawn(async move {
            if let Err(e) = cronbox_executor::run(stores, queue, cfg, keyring, shutdown).await {
                tracing::error!(error = %e, "executor stopped");
            }
            "executor"
        });
    }
    if roles.api {
        let gates = cronbox_store::db::pool(&config.database_url, 4).context("invalid CRONBOX_DATABASE_URL")?;
        let jwt = cronbox_api::accounts::load_jwt_key(&pool, config.jwt_secret.as_deref())
            .await
            .context("cannot load the JWT signing key")?;
        let state = cronbox_api::AppState {
            jwt,
            gates,
            stores: stores.clone(),
            pool: pool.clone(),
            queue: Some(queue.clone()),
            targets: config.targets.clone(),
            probe: cronbox_executor::http::HttpCaller::new(config.targets.clone(), config.max_response_bytes)
                .context("cannot build the HTTP client for test requests")?,
            keyring: keyring.clone().context("the API needs the keyring")?,
            plans: Default::default(),
            creates: cronbox_store::create_batch::CreateBatcher::start(pool.clone()),
            feed: Some(cronbox_api::feed::Feed::spawn(
                pool.clone(),
                waker.clone(),
                config.sse_max_streams,
                config.sse_max_streams_per_workspace,
                shutdown.clone(),
            )),
            rebuilds: Default::default(),
            subscriptions: config
                .nats_account_seed
                .clone()
                .map(|account_seed| cronbox_api::subscriptions::Issuer {
                    account_seed,
                    public_url: config
                        .nats_public_url
                        .clone()
                        .unwrap_or_else(|| config.nats_url.clone()),
                }),
            max_workspaces_per_user: config.max_workspaces_per_user,
            public_url: config.public_url.clone(),
            notify: notify.as_ref().map(|n| n.notify.clone()),
            min_realert_seconds: config.min_realert_seconds,
            telegram_webhook: match (
                &config.telegram_webhook_secret,
                notify.as_ref().and_then(|n| n.bot.clone()),
            ) {
                (Some(secret), Some(bot)) => Some((secret.clone(), bot)),
                _ => None,
            },
            limiter: cronbox_api::rate_limit::RateLimiter::new(
                pool.clone(),
                config.rate_limit_per_address,
                config.rate_limit,
            ),
        };
        let (sweep_pool, token, sweep_queue) = (pool.clone(), shutdown.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                if let Err(e) = cronbox_api::rate_limit::forget_old_windows(&sweep_pool).await {
                    tracing::warn!(error = %e, "cannot drop old rate-limit windows");
                }
                if let Err(e) = cronbox_api::subscriptions::sweep(&sweep_pool, &sweep_queue).await {
                    tracing::warn!(error = %e, "cannot sweep expired event subscriptions");
                }
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
            "rate-limit cleanup"
        });
        cronbox_api::accounts::password::set_concurrency(config.password_hash_concurrency);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "API listening");
        let token = shutdown.clone();
        tasks.spawn(async move {
            let app = cronbox_api::router(state);
            if let Err(e) = cronbox_api::server::serve(listener, app, token).await {
                tracing::error!(error = %e, "API server stopped");
            }
            "api"
        });
    }
    // Every role runs until shutdown; one that ends early takes the process down with it, so a
    // supervisor restarts the whole thing instead of leaving a half-working process up.
    let mut died = None;
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        Some(ended) = tasks.join_next() => {
            // A role that returns because shutdown began (the signal raced this select) is
            // not a death.
            if !shutdown.is_cancelled() {
                let role = ended.unwrap_or("a task (panicked)");
                tracing::error!(role, "role stopped unexpectedly; shutting down");
                died = Some(role);
                shutdown.cancel();
            }
        }
    }
    // Give in-flight work a moment to finish; executors ack only after commit, so anything cut
    // off here is redelivered.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    match died {
        Some(role) => anyhow::bail!("the {role} role stopped unexpectedly"),
        None => Ok(()),
    }
}

/// The notification roles of a process that runs projections and holds the master key.
struct Notifications {
    notify: cronbox_notify::channels::Notify,
    bot: Option<cronbox_notify::bot::Bot>,
}

async fn start_notifications(
    config: &Config,
    pool: &sqlx::PgPool,
    stores: &Arc<Stores>,
    waker: &Waker,
    keyring: &Arc<cronbox_store::signing::Keyring>,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<&'static str>,
) -> anyhow::Result<Notifications> {
    use cronbox_notify::{bot, decider, deliver, mail, outbox, reminders, telegram, webhook};
    let mailer = mail::Mailer::from_settings(
        config.smtp_url.as_deref(),
        config.resend_api_key.as_deref(),
        &config.resend_api_url,
        config.mail_from.as_deref(),
    )
    .context("cannot set up mail")?;
    // A bot that cannot be reached at start-up is reported and left out; alerts to Telegram
    // wait (and retry) until a restart finds it.
    let telegram = match &config.telegram_bot_token {
        None => None,
        Some(token) => match tokio::time::timeout(
            Duration::from_secs(15),
            telegram::TelegramBot::connect(&config.telegram_api_url, token),
        )
        .await
        {
            Ok(Ok(b)) => {
                tracing::info!(bot = %b.username, "telegram bot connected");
                Some(b)
            }
            Ok(Err(e)) => {
                tracing::error!(error = ?e, "telegram getMe failed; the bot is off in this process");
                None
            }
            Err(_) => {
                tracing::error!("telegram getMe timed out; the bot is off in this process");
                None
            }
        },
    };
    let notify = cronbox_notify::channels::Notify {
        stores: stores.clone(),
        pool: pool.clone(),
        key: keyring.key().clone(),
        public_url: config.public_url.clone(),
        telegram_bot: telegram.as_ref().map(|b| b.username.clone()),
    };
    let task = cronbox_projections::run_projection(
        pool.clone(),
        waker.clone(),
        Box::new(decider::AlertDecider),
        shutdown.clone(),
    );
    tasks.spawn(async move {
        task.await;
        "alert decider"
    });
    let task = reminders::run(pool.clone(), Duration::from_secs(1), shutdown.clone());
    tasks.spawn(async move {
        task.await;
        "alert reminders"
    });
    let senders = Arc::new(deliver::Senders {
        mailer: mailer.clone(),
        webhooks: webhook::WebhookSender::new(config.targets.clone()).context("cannot build the webhook client")?,
        telegram: telegram.clone(),
        key: keyring.key().clone(),
    });
    let cfg = deliver::DeliverConfig {
        public_url: config.public_url.clone(),
        digest_threshold: config.alert_digest_threshold,
        ..Default::default()
    };
    let task = deliver::run(
        pool.clone(),
        stores.clone(),
        waker.clone(),
        senders,
        cfg,
        lock_key(&format!("{}:deliverer", config.nats_prefix)),
        shutdown.clone(),
    );
    tasks.spawn(async move {
        task.await;
        "notification deliverer"
    });
    let task = outbox::run(
        pool.clone(),
        mailer,
        lock_key(&format!("{}:mail", config.nats_prefix)),
        shutdown.clone(),
    );
    tasks.spawn(async move {
        task.await;
        // Without a transport the sender ends at once; that is not a death.
        std::future::pending::<()>().await;
        "mail sender"
    });
    let bot = telegram.map(|telegram| bot::Bot {
        notify: notify.clone(),
        telegram,
    });
    if let Some(b) = bot.clone() {
        match &config.telegram_webhook_secret {
            Some(secret) => {
                let url = format!("{}/v1/telegram/webhook", config.public_url);
                if let Err(e) = b.telegram.set_webhook(&url, secret).await {
                    tracing::error!(error = ?e, "cannot set the telegram webhook");
                }
            }
            None => {
                let task = bot::poll(
                    b,
                    lock_key(&format!("{}:telegram", config.nats_prefix)),
                    shutdown.clone(),
                );
                tasks.spawn(async move {
                    task.await;
                    "telegram poller"
                });
            }
        }
    }
    Ok(Notifications { notify, bot })
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = cronbox_store::db::pool(&config.database_url, 2)?;
    let applied = cronbox_store::db::migrate(&pool).await.context("migration failed")?;
    println!("{} migration(s) applied", applied.len());
    Ok(())
}

pub async fn create_workspace(
    config: &Config,
    name: &str,
    timezone: &str,
    plan: &str,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let stores = Stores::new(pool);
    let (id, key) = cronbox_api::workspaces::create_workspace(&stores, name, timezone, plan)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::json!({"workspace_id": id, "api_key": key}));
    } else {
        println!("workspace_id: {id}\napi_key:      {key}\n(the key is shown only once)");
    }
    Ok(())
}

pub async fn set_plan(config: &Config, workspace: uuid::Uuid, plan: &str) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let stores = Stores::new(pool);
    let plan = cronbox_api::workspaces::set_plan(&stores, workspace, plan)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("workspace {workspace} is now on the {} plan", plan.name);
    Ok(())
}

pub async fn create_user(
    config: &Config,
    email: &str,
    name: &str,
    password: Option<String>,
    superuser: bool,
    json: bool,
) -> anyhow::Result<()> {
    use cronbox_domain::user::{check_name, check_password, normalize_email, UserCommand};
    let email = normalize_email(email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = check_name(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let generated = password.is_none();
    let password = password.unwrap_or_else(|| {
        use rand::RngCore;
        let mut b = [0u8; 12];
        rand::rng().fill_bytes(&mut b);
        hex::encode(b)
    });
    check_password("password", &password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool = connect(config).await?;
    let stores = Stores::new(pool);
    let user = cronbox_api::accounts::register_user(&stores, &email, &name, password.clone(), superuser)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = user.id.context("user was not created")?;
    // An operator vouches for the address.
    stores
        .users
        .execute(&id.to_string(), UserCommand::VerifyEmail { at: chrono::Utc::now() })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let shown = if generated { password.as_str() } else { "(as given)" };
    if json {
        println!(
            "{}",
            serde_json::json!({"user_id": id, "email": email, "password": shown, "superuser": superuser})
        );
    } else {
        println!("user_id:   {id}\nemail:     {email}\npassword:  {shown}\nsuperuser: {superuser}");
    }
    Ok(())
}

/// The name `projections rebuild` knows the plan-limit counters by.
pub async fn rebuild(config: &Config, name: Option<&str>) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let total = cronbox_projections::admin::log_size(&pool).await?.max(1) as f64;
    let started = std::time::Instant::now();
    let done = cronbox_projections::admin::rebuild(&pool, name, |p, n| {
        if p == cronbox_projections::admin::USAGE_COUNTERS {
            eprintln!("  {p}: {n} counter(s)");
        } else {
            eprintln!(
                "  {p}: {n} events replayed ({:.0}%)",
                (n as f64 / total * 100.0).min(100.0)
            );
        }
    })
    .await?;
    for (p, n) in done {
        println!("{p}: rebuilt ({n})");
    }
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

pub async fn projection_status(config: &Config, json: bool) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let status = cronbox_projections::admin::status(&pool).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<24} {:>12} {:>10} {:>12} {:>8}",
        "projection", "checkpoint", "lag events", "lag s", "quarantined", "held"
    );
    let mut any = false;
    for s in status {
        any |= s.quarantined > 0;
        println!(
            "{:<12} {:<24} {:>12} {:>10.1} {:>12} {:>8}",
            s.name, s.checkpoint, s.lag_events, s.lag_seconds, s.quarantined, s.parked
        );
    }
    if any {
        println!("\nSome events could not be applied: `cronbox projections failures` shows them and why;");
        println!("after a fix, `cronbox projections retry NAME` applies them again.");
    }
    Ok(())
}

/// Lists quarantined and held events (all projections, or the one named).
pub async fn projection_failures(config: &Config, name: Option<&str>, json: bool) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let items = cronbox_projections::quarantine::list(&pool, name, 10_000).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if items.is_empty() {
        println!("no quarantined events");
    }
    for f in items {
        println!(
            "{} {} {} {}/{}#{} ({}) at {} tries {}: {}",
            f.projection,
            f.state,
            f.cursor,
            f.aggregate_type,
            f.aggregate_id,
            f.sequence,
            f.event_type,
            f.failed_at,
            f.attempts,
            f.error
        );
    }
    Ok(())
}

/// Applies quarantined events again (all projections, or the one named).
pub async fn retry_projection_failures(config: &Config, name: Option<&str>) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    for (p, report) in cronbox_projections::admin::retry(&pool, name).await? {
        println!(
            "{p}: {} applied, {} still failing",
            report.resolved, report.still_failing
        );
    }
    Ok(())
}

/// Prints an aggregate's stored events, one JSON object per line.
pub async fn show_events(config: &Config, aggregate_type: &str, id: &str) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let items = cronbox_api::admin::aggregate_events(&pool, aggregate_type, id).await?;
    if items.is_empty() {
        anyhow::bail!("no events for {aggregate_type} {id}");
    }
    for item in items {
        println!("{item}");
    }
    Ok(())
}

/// Schedules a re-run of a finished run and prints the new run.
pub async fn rerun(config: &Config, run_id: uuid::Uuid) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let stores = Stores::new(pool);
    let (id, plan) = cronbox_api::executions::rerun(&stores, run_id, None, Ok(()), None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", cronbox_api::executions::rerun_json(id, &plan));
    Ok(())
}

/// Writes a fresh NATS operator setup into `dir`: `auth.conf` (include it in nats-server's
/// configuration), `cronbox.creds` (CRONBOX_NATS_CREDS) and `account.seed`
/// (CRONBOX_NATS_ACCOUNT_SEED). Refuses to overwrite an existing setup.
pub fn nats_init(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let files = ["auth.conf", "cronbox.creds", "account.seed"];
    if let Some(f) = files.iter().find(|f| dir.join(f).exists()) {
        anyhow::bail!("{} exists; refusing to replace a NATS setup", dir.join(f).display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let setup = cronbox_nats::auth::init()?;
    for (name, text) in [
        ("auth.conf", &setup.server_conf),
        ("cronbox.creds", &setup.service_creds),
        ("account.seed", &setup.account_seed),
    ] {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(text.as_bytes())?;
    }
    println!("NATS operator setup written to {}:", dir.display());
    println!(
        "  nats-server: add `include {}` to its configuration",
        dir.join("auth.conf").display()
    );
    println!("  CRONBOX_NATS_CREDS={}", dir.join("cronbox.creds").display());
    println!(
        "  CRONBOX_NATS_ACCOUNT_SEED=$(cat {})",
        dir.join("account.seed").display()
    );
    println!("  account public key: {}", setup.account_public_key);
    Ok(())
}
