//! The `inquest` binary: parse the command line, load the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use inquest::cli::{AlertCommand, AuditCommand, Cli, Command, ConfigCommand, InvestigationsCommand, PlaybooksCommand};
use inquest::config::{self, Config, Overrides};
use inquest::{app, client, eval, telemetry};

// glibc's allocator spent a tenth of the intake path's CPU in malloc and free
// (profiled under the intake benchmark); mimalloc's per-thread pages cost a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    inquest::identity::install_crypto_provider();
    let cli = Cli::parse();
    // Checking playbook files needs no configuration: it works beside a broken one.
    if let Command::Playbooks { command: PlaybooksCommand::Check { paths } } = cli.command {
        return check_playbooks(paths);
    }
    let overrides = Overrides {
        config_file: cli.global.config.clone(),
        listen: cli.global.listen.clone(),
        data_dir: cli.global.data_dir.clone(),
        log_format: cli.global.log_format.clone(),
    };
    let cfg = match config::load(&overrides, None) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("inquest: {errors}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("inquest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command, cfg));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("inquest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::All => run_role(cfg, app::Role::All).await,
        Command::Agent => run_role(cfg, app::Role::Agent).await,
        Command::Registry => run_role(cfg, app::Role::Registry).await,
        Command::Server { id } => run_server(cfg, &id).await,
        Command::DevCa { ids } => inquest::identity::devca::command(&cfg, &ids),
        Command::Audit { command: AuditCommand::Verify } => inquest::registry::audit::verify_command(&cfg).await,
        Command::Alert { command: AlertCommand::Send { source, file, url, token } } => {
            client::send_alert(&cfg, source, &file, url, token).await
        }
        Command::Investigations { command } => match command {
            InvestigationsCommand::List { state, team, since, limit, url, json } => {
                client::list_investigations(&cfg, url, state, team, since, limit, json).await
            }
            InvestigationsCommand::Show { id, url, json } => client::show_investigation(&cfg, url, &id, json).await,
        },
        // Handled before the configuration is loaded.
        Command::Playbooks { command: PlaybooksCommand::Check { paths } } => Ok(check_playbooks(paths)),
        Command::Eval { dir, repeat, playbook_only, json, playbooks } => {
            let args = eval::command::Args { dir, repeat: repeat.into(), playbook_only, json, playbooks };
            Ok(eval::command::run(&cfg, args).await)
        }
        Command::Config { command: ConfigCommand::Check } => {
            println!("{}", serde_json::to_string_pretty(&cfg.redacted())?);
            eprintln!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_playbooks(mut paths: Vec<std::path::PathBuf>) -> ExitCode {
    if paths.is_empty() {
        paths.push("playbooks".into());
    }
    match inquest::playbook::load(&paths) {
        Ok(playbooks) => {
            for p in &playbooks {
                println!("ok  {} ({} step(s), {} finding rule(s))", p.name, p.steps.len(), p.findings.len());
            }
            eprintln!("{} playbook(s) checked, no problems", playbooks.len());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            eprintln!("{} problem(s)", problems.len());
            ExitCode::FAILURE
        }
    }
}

async fn run_role(cfg: Config, role: app::Role) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    telemetry::init_logging(&cfg.log);
    let public = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another Inquest running? use --listen)", cfg.listen))?;
    // Only the registry serves on the mesh so far; the agent only calls out.
    let mesh = match role {
        app::Role::Agent => None,
        app::Role::All | app::Role::Registry => Some(TcpListener::bind(cfg.mesh_listen).await.with_context(|| {
            format!("cannot listen on {} for the mesh (set mesh_listen, e.g. INQUEST_MESH_LISTEN)", cfg.mesh_listen)
        })?),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app::run(cfg, role, app::Listeners { public, mesh }, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_server(cfg: Config, id: &str) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    telemetry::init_logging(&cfg.log);
    let domain = inquest::mcp::domains::build_domain(id, &cfg)?;
    let listen = cfg.servers.get(id).cloned().unwrap_or_else(|| config::server_defaults(id)).listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (set servers.{id}.listen)"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app::run_server(cfg, domain, listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    token.cancel();
}
