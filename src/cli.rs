//! The command line: roles to run and helper commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "inquest", version, about = "Autonomous incident investigation for data platforms")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// TOML configuration file (see deploy/inquest.example.toml).
    #[arg(long, global = true, env = "INQUEST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where data and generated files live [default: ./.inquest].
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7400].
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Log format [default: text].
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: the embedded default (SQLite, local identities).
    All,
    /// The agent role: alert intake and investigations.
    Agent,
    /// The registry role: server catalog, policy, approvals, audit, usage, web UI.
    Registry,
    /// One domain MCP server (airflow, presto or spark), listening on its own address.
    Server {
        /// Which domain: airflow, presto or spark.
        id: String,
    },
    /// Create a development CA and issue SVIDs for every role into the data dir.
    DevCa {
        /// Also issue an SVID for this SPIFFE ID (repeatable), e.g. for a test client.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
    /// The registry's append-only audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Send an alert payload to a running Inquest.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Look at investigations of a running Inquest.
    Investigations {
        #[command(subcommand)]
        command: InvestigationsCommand,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Playbook helpers.
    Playbooks {
        #[command(subcommand)]
        command: PlaybooksCommand,
    },
    /// Run investigation scenarios (see tests/evals/) and score each run: accuracy,
    /// steps, tokens, cost and p50/p95 time per scenario and overall.
    ///
    /// Uses the planner over the configured `[llm]` endpoint (any OpenAI-compatible one;
    /// INQUEST_LLM__BASE_URL, INQUEST_LLM__MODEL, INQUEST_LLM__API_KEY), and playbooks
    /// alone when none is configured or with --playbook-only.
    #[command(after_help = "Exit status: 0 when every run passed, 1 when any run failed, \
                            2 on bad input (a scenario file, the playbooks or the configuration).")]
    Eval {
        /// Folder of scenario files (`*.yaml`, in name order; subfolders are not read).
        dir: PathBuf,
        /// Runs per scenario; p50 and p95 are over all of them.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        repeat: u16,
        /// Playbooks alone, even when `[llm]` is configured.
        #[arg(long)]
        playbook_only: bool,
        /// Print the results as JSON (to compare models) instead of a table.
        #[arg(long)]
        json: bool,
        /// Playbook folder [default: agent.playbooks, `playbooks`].
        #[arg(long)]
        playbooks: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlaybooksCommand {
    /// Check playbooks: prints every problem as `file:line: field: why` and exits 1 on
    /// any.
    Check {
        /// Playbook files or directories of them [default: playbooks].
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// POST a payload file to the intake; signs it with the configured secret where the
    /// source expects a signature.
    Send {
        #[arg(long, value_enum)]
        source: SourceArg,
        /// The JSON payload, in the source's webhook format.
        #[arg(long)]
        file: PathBuf,
        /// Base URL of the Inquest to send to [default: from `listen`].
        #[arg(long)]
        url: Option<String>,
        /// Bearer token [default: the first configured for the source].
        #[arg(long, env = "INQUEST_ALERT_TOKEN")]
        token: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceArg {
    Alertmanager,
    Grafana,
    Pagerduty,
    Generic,
}

#[derive(Debug, Subcommand)]
pub enum InvestigationsCommand {
    /// List investigations, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        url: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one investigation with its alerts and events.
    Show {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit log; exit non-zero at the first break.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration; print it with secrets hidden.
    Check,
}
