//! `cronbox`: one binary, several roles. See `cronbox --help`.

mod app;
mod config;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cronbox", version, about = "Scheduled and delayed HTTP calls, event-sourced")]
struct Cli {
    /// Optional KEY=VALUE file read before the environment (the environment wins).
    #[arg(long, global = true, env = "CRONBOX_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API + projections + dispatcher + executor in one process.
    Serve,
    /// The REST API (and the projections that feed its read models).
    Api,
    /// The dispatcher (one leads, others stand by) and the schedule projection it loads.
    Dispatcher,
    /// An executor consuming due runs.
    Executor,
    /// Applies database migrations.
    Migrate,
    /// Workspace administration.
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// User administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Read-model maintenance.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Prints every stored event of one aggregate (one JSON object per line).
    Events {
        /// workspace, job, run, user, session, alert, notification or notification_channel
        aggregate_type: String,
        id: String,
    },
    /// Run maintenance.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// NATS setup.
    Nats {
        #[command(subcommand)]
        command: NatsCommand,
    },
}

#[derive(Subcommand)]
enum NatsCommand {
    /// Generates an operator-mode NATS auth setup (server include, service credentials, the
    /// account seed that signs event subscribers' credentials) into DIR.
    Init {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Schedules a finished run again, now, as a new run linked to it (`rerun_of`).
    Rerun { run_id: uuid::Uuid },
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Creates a workspace and prints its id and a new API key.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = cronbox_domain::schedule::DEFAULT_TIMEZONE)]
        timezone: String,
        /// The plan's code (see `GET /v1/plans`).
        #[arg(long, default_value = cronbox_domain::workspace::DEFAULT_PLAN)]
        plan: String,
        /// Print {"workspace_id": "...", "api_key": "..."}.
        #[arg(long)]
        json: bool,
    },
    /// Moves a workspace to another plan.
    SetPlan {
        #[arg(long)]
        workspace: uuid::Uuid,
        #[arg(long)]
        plan: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Creates a user (verified e-mail) and prints the login. Without --password, one is
    /// generated and printed once.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
        /// Read from the environment rather than the command line where possible.
        #[arg(long, env = "CRONBOX_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        superuser: bool,
        /// Print {"user_id": "...", "email": "...", "password": "..."}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Replays the log from zero into fresh tables and swaps them in (all, or the one named).
    Rebuild { name: Option<String> },
    /// Lists projections with their checkpoint, lag and quarantined events.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Lists the events projections could not apply (quarantined) and those held behind them.
    Failures {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Applies quarantined and held events again, in log order (after fixing their cause).
    Retry { name: Option<String> },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Needs no database or configuration.
    if let Command::Nats {
        command: NatsCommand::Init { dir },
    } = &cli.command
    {
        return match app::nats_init(dir) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = match config::Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => app::serve(config, app::Roles::all()).await,
            Command::Api => {
                app::serve(
                    config,
                    app::Roles {
                        api: true,
                        ..app::Roles::none()
                    },
                )
                .await
            }
            Command::Dispatcher => {
                app::serve(
                    config,
                    app::Roles {
                        dispatcher: true,
                        ..app::Roles::none()
                    },
                )
                .await
            }
            Command::Executor => {
                app::serve(
                    config,
                    app::Roles {
                        executor: true,
                        ..app::Roles::none()
                    },
                )
                .await
            }
            Command::Migrate => app::migrate(&config).await,
            Command::Workspace {
                command:
                    WorkspaceCommand::Create {
                        name,
                        timezone,
                        plan,
                        json,
                    },
            } => app::create_workspace(&config, &name, &timezone, &plan, json).await,
            Command::Workspace {
                command: WorkspaceCommand::SetPlan { workspace, plan },
            } => app::set_plan(&config, workspace, &plan).await,
            Command::Admin {
                command:
                    AdminCommand::CreateUser {
                        email,
                        name,
                        password,
                        superuser,
                        json,
                    },
            } => app::create_user(&config, &email, &name, password, superuser, json).await,
            Command::Projections {
                command: ProjectionsCommand::Rebuild { name },
            } => app::rebuild(&config, name.as_deref()).await,
            Command::Projections {
                command: ProjectionsCommand::Status { json },
            } => app::projection_status(&config, json).await,
            Command::Projections {
                command: ProjectionsCommand::Failures { name, json },
            } => app::projection_failures(&config, name.as_deref(), json).await,
            Command::Projections {
                command: ProjectionsCommand::Retry { name },
            } => app::retry_projection_failures(&config, name.as_deref()).await,
            Command::Events { aggregate_type, id } => app::show_events(&config, &aggregate_type, &id).await,
            Command::Runs {
                command: RunsCommand::Rerun { run_id },
            } => app::rerun(&config, run_id).await,
            Command::Nats { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
