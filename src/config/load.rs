//! Reading the layers and turning them into a [`Config`], collecting every mistake.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use config::{Environment, File, FileFormat, Map, Value, ValueKind};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use super::{
    AgentConfig, BearerAuth, ChatConfig, Config, EngineConfig, EpisodeConfig, GithubConfig, GrafanaAuth,
    IdentityConfig, IntakeConfig, LlmConfig, LogConfig, LogFormat, OidcConfig, OnResolved, PagerDutyAuth, Price,
    PullRequestApprovers, RegistryConfig, StoreConfig, SvidConfig, TlsConfig,
};

/// Values given as command-line flags; they win over file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<String>,
}

/// One mistake, with the key it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Every mistake found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {}: {}", e.key, e.message)?;
        }
        Ok(())
    }
}

/// The log filter's environment variable: read by telemetry, not a configuration key.
const LOG_FILTER_VAR: &str = "INQUEST_LOG";

/// Keys whose environment variables belong to the command line, not to the config tree.
const CLI_ONLY_KEYS: &[&str] = &["config"];

/// Keys that hold a list; from the environment they are comma-separated.
const LIST_KEYS: &[&str] = &[
    "intake.alertmanager.bearer_tokens",
    "intake.generic.bearer_tokens",
    "intake.grafana.bearer_tokens",
    "intake.pagerduty.signing_secrets",
    "identity.oidc.algorithms",
    "identity.extra_peers",
    "registry.admins",
    "agent.redact",
    "github.webhook_secrets",
    "github.approvers",
    "github.labels",
    "github.reviewers",
];

/// Every key a config may hold; prefixes ending in `.` hold maps of user-chosen keys.
const KNOWN_KEYS: &[&str] = &[
    "listen",
    "mesh_listen",
    "data_dir",
    "log.format",
    "log.level",
    "tls.cert_file",
    "tls.key_file",
    "store.url",
    "store.max_connections",
    "intake.max_body_bytes",
    "intake.batch_max",
    "intake.alertmanager.bearer_tokens",
    "intake.generic.bearer_tokens",
    "intake.grafana.bearer_tokens",
    "intake.grafana.hmac_secret",
    "intake.grafana.signature_header",
    "intake.grafana.timestamp_header",
    "intake.grafana.max_skew",
    "intake.pagerduty.signing_secrets",
    "episodes.team_label",
    "episodes.service_label",
    "episodes.default_team",
    "episodes.cooldown",
    "episodes.on_resolved",
    "engine.worker_id",
    "engine.slots",
    "engine.max_running",
    "engine.team_max_running",
    "engine.team_quotas.",
    "engine.lease_ttl",
    "engine.poll_interval",
    "engine.grace_period",
    "engine.max_attempts",
    "engine.simulated_work",
    "identity.trust_domain",
    "identity.svid.source",
    "identity.svid.cert_file",
    "identity.svid.key_file",
    "identity.svid.bundle_file",
    "identity.svid.socket",
    "identity.oidc.issuer",
    "identity.oidc.audience",
    "identity.oidc.client_id",
    "identity.oidc.client_secret",
    "identity.oidc.groups_claim",
    "identity.oidc.algorithms",
    "identity.dev_login",
    "identity.extra_peers",
    "registry.public_url",
    "registry.url",
    "registry.admins",
    "registry.approval_ttl",
    "registry.probe_interval",
    "registry.pull_request_approvers",
    "chat.slack.",
    "chat.matrix.",
    "servers.",
    "agent.playbooks",
    "agent.prompts",
    "agent.call_timeout",
    "agent.max_call_timeout",
    "agent.redact",
    "llm.base_url",
    "llm.model",
    "llm.api_key",
    "llm.timeout",
    "llm.max_steps",
    "llm.max_tokens",
    "llm.max_cost_usd",
    "llm.max_time",
    "llm.max_tools",
    "llm.prices.",
    "github.webhook_secrets",
    "github.app_login",
    "github.approvers",
    "github.api_url",
    "github.web_url",
    "github.repository",
    "github.base",
    "github.token",
    "github.app_id",
    "github.installation_id",
    "github.private_key_file",
    "github.labels",
    "github.reviewers",
];

/// Loads file, environment and flags. `env` replaces the process environment (tests
/// pass a map; production passes `None`).
pub fn load(overrides: &Overrides, env: Option<HashMap<String, String>>) -> Result<Config, ConfigErrors> {
    let mut builder = config::Config::builder();
    if let Some(path) = &overrides.config_file {
        builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml).required(true));
    }
    let mut environment =
        Environment::with_prefix("INQUEST").prefix_separator("_").separator("__").try_parsing(true).list_separator(",");
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    // INQUEST_LOG is the log filter directive (telemetry reads it), not the `[log]` table.
    let env: HashMap<String, String> = env
        .unwrap_or_else(|| {
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
        })
        .into_iter()
        .filter(|(key, _)| key != LOG_FILTER_VAR)
        .collect();
    builder = builder.add_source(environment.source(Some(env)));
    let flag_values = [
        ("listen", overrides.listen.clone()),
        ("data_dir", overrides.data_dir.as_ref().map(|p| p.display().to_string())),
        ("log.format", overrides.log_format.clone()),
    ];
    for (key, value) in flag_values {
        if let Some(value) = value {
            builder = builder
                .set_override(key, value)
                .map_err(|e| ConfigErrors(vec![ConfigError { key: key.into(), message: e.to_string() }]))?;
        }
    }
    let raw = builder
        .build()
        .map_err(|e| ConfigErrors(vec![ConfigError { key: "(source)".into(), message: e.to_string() }]))?;
    from_raw(&raw)
}

fn from_raw(raw: &config::Config) -> Result<Config, ConfigErrors> {
    let mut r = Reader { raw, errors: Vec::new() };
    r.reject_unknown_keys();

    let listen = r
        .parsed("listen", "127.0.0.1:7400", |s| {
            s.parse::<SocketAddr>().map_err(|e| format!("`{s}` is not an address like 127.0.0.1:7400: {e}"))
        })
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7400)));
    let mesh_listen = r
        .parsed("mesh_listen", "127.0.0.1:7401", |s| {
            s.parse::<SocketAddr>().map_err(|e| format!("`{s}` is not an address like 127.0.0.1:7401: {e}"))
        })
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7401)));
    let data_dir = PathBuf::from(r.or("data_dir", "./.inquest".to_string()));
    let log = LogConfig {
        format: r
            .parsed("log.format", "text", |s| match s {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(format!("`{other}` is not a log format; use `text` or `json`")),
            })
            .unwrap_or(LogFormat::Text),
        level: r.or("log.level", "info".to_string()),
    };
    let tls = match (r.opt::<String>("tls.cert_file"), r.opt::<String>("tls.key_file")) {
        (Some(cert), Some(key)) => Some(TlsConfig { cert_file: cert.into(), key_file: key.into() }),
        (None, None) => None,
        (Some(_), None) => {
            r.error("tls.key_file", "tls.cert_file is set, so the key is needed too");
            None
        }
        (None, Some(_)) => {
            r.error("tls.cert_file", "tls.key_file is set, so the certificate is needed too");
            None
        }
    };
    let default_store_url = format!("sqlite://{}", data_dir.join("inquest.db").display());
    let store = StoreConfig {
        url: r
            .parsed("store.url", &default_store_url, |s| {
                if s.starts_with("sqlite:") || s.starts_with("postgres://") || s.starts_with("postgresql://") {
                    Ok(s.to_string())
                } else {
                    Err("must start with `sqlite:` or `postgres://`".to_string())
                }
            })
            .unwrap_or(default_store_url.clone()),
        max_connections: r.positive("store.max_connections", 8),
    };

    let intake = IntakeConfig {
        max_body_bytes: r.positive("intake.max_body_bytes", 2 * 1024 * 1024),
        batch_max: r.positive("intake.batch_max", 256),
        alertmanager: BearerAuth { tokens: r.secrets("intake.alertmanager.bearer_tokens") },
        generic: BearerAuth { tokens: r.secrets("intake.generic.bearer_tokens") },
        grafana: GrafanaAuth {
            tokens: r.secrets("intake.grafana.bearer_tokens"),
            hmac_secret: r.opt::<String>("intake.grafana.hmac_secret").map(SecretString::from),
            signature_header: r.or("intake.grafana.signature_header", "X-Grafana-Alerting-Signature".to_string()),
            timestamp_header: r.opt("intake.grafana.timestamp_header"),
            max_skew: r.duration("intake.grafana.max_skew", "5m"),
        },
        pagerduty: PagerDutyAuth { signing_secrets: r.secrets("intake.pagerduty.signing_secrets") },
    };

    let episodes = EpisodeConfig {
        team_label: r.or("episodes.team_label", "team".to_string()),
        service_label: r.or("episodes.service_label", "service".to_string()),
        default_team: r.or("episodes.default_team", "unassigned".to_string()),
        cooldown: r.duration("episodes.cooldown", "30m"),
        on_resolved: r
            .parsed("episodes.on_resolved", "continue", |s| match s {
                "continue" => Ok(OnResolved::Continue),
                "cancel_if_not_started" => Ok(OnResolved::CancelIfNotStarted),
                other => Err(format!("`{other}` is not a choice; use `continue` or `cancel_if_not_started`")),
            })
            .unwrap_or(OnResolved::Continue),
    };

    let default_worker = format!("{}-{}", gethostname::gethostname().to_string_lossy(), std::process::id());
    let engine = EngineConfig {
        worker_id: r.or("engine.worker_id", default_worker),
        slots: r.positive("engine.slots", 32),
        max_running: r.positive("engine.max_running", 64),
        team_max_running: r.positive("engine.team_max_running", 16),
        team_quotas: r.opt::<BTreeMap<String, u32>>("engine.team_quotas").unwrap_or_default(),
        lease_ttl: r.duration("engine.lease_ttl", "30s"),
        poll_interval: r.duration("engine.poll_interval", "500ms"),
        grace_period: r.duration("engine.grace_period", "20s"),
        max_attempts: r.positive("engine.max_attempts", 3),
        simulated_work: r.duration("engine.simulated_work", "0s"),
    };
    if engine.lease_ttl < Duration::from_secs(1) && !r.errors.iter().any(|e| e.key == "engine.lease_ttl") {
        r.error("engine.lease_ttl", "must be at least 1s, or leases expire while work is healthy");
    }

    let identity = identity(&mut r);
    let default_url = format!("{}://{listen}", if tls.is_some() { "https" } else { "http" });
    let admins: Vec<String> = r.opt("registry.admins").unwrap_or_else(|| vec!["group:inquest-admins".to_string()]);
    let pull_request_approvers = pull_request_approvers(&mut r, &admins);
    let registry = RegistryConfig {
        public_url: r.or("registry.public_url", default_url.clone()).trim_end_matches('/').to_string(),
        // Role-to-role calls go over the mesh listener, where certificates are seen.
        url: r.or("registry.url", format!("https://{mesh_listen}")).trim_end_matches('/').to_string(),
        admins,
        approval_ttl: r.duration("registry.approval_ttl", "1h"),
        probe_interval: r.duration("registry.probe_interval", "30s"),
        pull_request_approvers,
    };

    let (servers, server_errors) =
        super::servers::parse(r.opt::<BTreeMap<String, serde_json::Value>>("servers").unwrap_or_default());
    for (key, message) in server_errors {
        r.error(&key, message);
    }

    let (agent, llm) = agent(&mut r);
    let github = github(&mut r);
    let chat = chat(&mut r);
    let cfg = Config {
        agent,
        llm,
        github,
        chat,
        listen,
        mesh_listen,
        data_dir,
        log,
        tls,
        store,
        intake,
        episodes,
        engine,
        identity,
        registry,
        servers,
    };
    r.check_exposure(&cfg);
    if r.errors.is_empty() { Ok(cfg) } else { Err(ConfigErrors(r.errors)) }
}

/// `[chat.slack]` and `[chat.matrix]`, each checked as a whole (every problem named).
fn chat(r: &mut Reader<'_>) -> ChatConfig {
    let slack: Option<crate::chat::slack::SlackConfig> = r.opt("chat.slack");
    let matrix: Option<crate::chat::matrix::MatrixConfig> = r.opt("chat.matrix");
    let problems = slack.iter().flat_map(|s| s.problems()).chain(matrix.iter().flat_map(|m| m.problems()));
    for problem in problems.collect::<Vec<_>>() {
        match problem.split_once(": ") {
            Some((key, message)) if key.starts_with("chat.") => r.error(key, message),
            _ => r.error("chat", problem),
        }
    }
    ChatConfig { slack, matrix }
}

/// Who approves drafted pull requests; without rules, the administrators, for every
/// repository.
fn pull_request_approvers(r: &mut Reader<'_>, admins: &[String]) -> Vec<PullRequestApprovers> {
    const KEY: &str = "registry.pull_request_approvers";
    let Some(rules) = r.opt::<Vec<PullRequestApprovers>>(KEY) else {
        return vec![PullRequestApprovers { repository: "*".into(), approvers: admins.to_vec(), required: 1 }];
    };
    for (i, rule) in rules.iter().enumerate() {
        let repo = rule.repository.as_str();
        let parts: Vec<&str> = repo.split('/').collect();
        let valid = repo == "*"
            || (parts.len() == 2
                && parts.iter().all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
                && !parts[0].contains('*')
                && (parts[1] == "*" || !parts[1].contains('*')));
        if !valid {
            r.error(&format!("{KEY}[{i}].repository"), format!("`{repo}` is not `owner/name`, `owner/*` or `*`"));
        }
        if rule.approvers.is_empty() {
            r.error(&format!("{KEY}[{i}].approvers"), "name at least one approver, or nobody could approve");
        }
        for (j, m) in rule.approvers.iter().enumerate() {
            if !crate::policy::is_valid_matcher(m) {
                r.error(
                    &format!("{KEY}[{i}].approvers[{j}]"),
                    format!("`{m}` is not `group:<name>` or `user:<subject>`"),
                );
            }
        }
        if rule.required == 0 {
            r.error(&format!("{KEY}[{i}].required"), "must be at least 1");
        }
    }
    rules
}

fn github(r: &mut Reader<'_>) -> GithubConfig {
    let api_url = r.or("github.api_url", "https://api.github.com".to_string()).trim_end_matches('/').to_string();
    let web_default = match api_url.as_str() {
        "https://api.github.com" => "https://github.com".to_string(),
        other => other.strip_suffix("/api/v3").unwrap_or(other).to_string(),
    };
    let github = GithubConfig {
        webhook_secrets: r.secrets("github.webhook_secrets"),
        app_login: r.or("github.app_login", "inquest[bot]".to_string()),
        approvers: r.opt("github.approvers").unwrap_or_default(),
        web_url: r.or("github.web_url", web_default).trim_end_matches('/').to_string(),
        api_url,
        repository: r.opt("github.repository"),
        base: r.or("github.base", "main".to_string()),
        token: r.opt::<String>("github.token").map(SecretString::from),
        app_id: r.opt("github.app_id"),
        installation_id: r.opt("github.installation_id"),
        private_key_file: r.opt::<String>("github.private_key_file").map(PathBuf::from),
        labels: r.opt("github.labels").unwrap_or_else(|| vec!["inquest".to_string()]),
        reviewers: r.opt("github.reviewers").unwrap_or_default(),
    };
    if !matches!(reqwest::Url::parse(&github.api_url), Ok(u) if matches!(u.scheme(), "http" | "https")) {
        r.error("github.api_url", format!("`{}` is not an http(s) URL", github.api_url));
    }
    if let Some(repo) = &github.repository {
        let part = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !repo.split_once('/').is_some_and(|(o, n)| part(o) && part(n)) {
            r.error("github.repository", format!("`{repo}` is not `owner/name`"));
        }
        let app = [github.app_id.is_some(), github.installation_id.is_some(), github.private_key_file.is_some()];
        match (github.token.is_some(), app) {
            (_, [true, true, true]) | (true, [false, false, false]) => {}
            (false, [false, false, false]) => r.error(
                "github.repository",
                "drafting pull requests needs credentials: github.app_id, github.installation_id and \
                 github.private_key_file (or github.token, for development)",
            ),
            _ => r.error("github.app_id", "a GitHub App needs all of app_id, installation_id and private_key_file"),
        }
    }
    // GitHub logins: letters, digits and single hyphens; an app's ends in `[bot]`.
    let login = |s: &str| {
        let name = s.strip_suffix("[bot]").unwrap_or(s);
        !name.is_empty() && name.len() <= 39 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !login(&github.app_login) {
        r.error("github.app_login", format!("`{}` is not a GitHub login", github.app_login));
    }
    for (i, a) in github.approvers.iter().enumerate() {
        if !login(a) {
            r.error(&format!("github.approvers[{i}]"), format!("`{a}` is not a GitHub login"));
        } else if a.eq_ignore_ascii_case(&github.app_login) {
            r.error(&format!("github.approvers[{i}]"), "the app cannot approve its own changes");
        }
    }
    github
}

fn agent(r: &mut Reader<'_>) -> (AgentConfig, Option<LlmConfig>) {
    let agent = AgentConfig {
        playbooks: PathBuf::from(r.or("agent.playbooks", "playbooks".to_string())),
        prompts: r.opt::<String>("agent.prompts").map(PathBuf::from),
        call_timeout: r.duration("agent.call_timeout", "30s"),
        max_call_timeout: r.duration("agent.max_call_timeout", "2m"),
        redact: r.opt("agent.redact").unwrap_or_default(),
    };
    for (i, pattern) in agent.redact.iter().enumerate() {
        if let Err(e) = regex::Regex::new(pattern) {
            r.error(&format!("agent.redact[{i}]"), format!("`{pattern}` is not a regex: {e}"));
        }
    }
    if agent.call_timeout > agent.max_call_timeout {
        r.error("agent.call_timeout", "is longer than agent.max_call_timeout, which caps every call");
    }
    let llm = r.opt::<String>("llm.base_url").map(|base_url| {
        let model = r.opt::<String>("llm.model").unwrap_or_else(|| {
            r.error("llm.model", "required when llm.base_url is set");
            String::new()
        });
        let prices: BTreeMap<String, Price> = r.opt("llm.prices").unwrap_or_default();
        LlmConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            model,
            api_key: r.opt::<String>("llm.api_key").map(SecretString::from),
            timeout: r.duration("llm.timeout", "60s"),
            max_steps: r.positive("llm.max_steps", 12),
            max_tokens: r.positive("llm.max_tokens", 200_000),
            max_cost_usd: r.positive("llm.max_cost_usd", 2.0),
            max_time: r.duration("llm.max_time", "5m"),
            max_tools: r.positive("llm.max_tools", 24),
            prices,
        }
    });
    if llm.is_none() && r.opt::<String>("llm.model").is_some() {
        r.error("llm.base_url", "llm.model is set but not the endpoint; set llm.base_url too");
    }
    (agent, llm)
}

fn identity(r: &mut Reader<'_>) -> IdentityConfig {
    let svid = match r.or("identity.svid.source", "dev".to_string()).as_str() {
        "dev" => SvidConfig::Dev,
        "files" => {
            let mut path = |key: &str| {
                r.opt::<String>(key).map(PathBuf::from).unwrap_or_else(|| {
                    r.error(key, "required when identity.svid.source = \"files\"");
                    PathBuf::new()
                })
            };
            SvidConfig::Files {
                cert_file: path("identity.svid.cert_file"),
                key_file: path("identity.svid.key_file"),
                bundle_file: path("identity.svid.bundle_file"),
            }
        }
        "workload_api" => SvidConfig::WorkloadApi {
            socket: r.or("identity.svid.socket", "unix:///tmp/spire-agent/public/api.sock".to_string()),
        },
        other => {
            r.error("identity.svid.source", format!("`{other}` is not a source; use dev, files or workload_api"));
            SvidConfig::Dev
        }
    };
    let oidc = r.opt::<String>("identity.oidc.issuer").map(|issuer| OidcConfig {
        issuer: issuer.trim_end_matches('/').to_string(),
        audience: r.or("identity.oidc.audience", "inquest".to_string()),
        client_id: r.or("identity.oidc.client_id", "inquest".to_string()),
        client_secret: r.opt::<String>("identity.oidc.client_secret").map(SecretString::from),
        groups_claim: r.or("identity.oidc.groups_claim", "groups".to_string()),
        algorithms: r.opt("identity.oidc.algorithms").unwrap_or_else(|| vec!["RS256".to_string(), "ES256".to_string()]),
    });
    let weak = |a: &String| a.eq_ignore_ascii_case("none") || a.to_ascii_uppercase().starts_with("HS");
    if oidc.as_ref().is_some_and(|o| o.algorithms.iter().any(weak)) {
        r.error("identity.oidc.algorithms", "only asymmetric algorithms may be pinned (never `none` or HS*)");
    }
    IdentityConfig {
        trust_domain: r.or("identity.trust_domain", "inquest.local".to_string()),
        svid,
        oidc,
        dev_login: r.or("identity.dev_login", true),
        extra_peers: r.opt("identity.extra_peers").unwrap_or_default(),
    }
}

/// Reads keys one at a time, remembering every failure instead of stopping at the first.
struct Reader<'a> {
    raw: &'a config::Config,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.to_string(), message: message.into() });
    }

    fn opt<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.raw.get::<T>(key) {
            Ok(v) => Some(v),
            Err(config::ConfigError::NotFound(_)) => None,
            Err(e) => {
                self.error(key, strip_key(&e.to_string()));
                None
            }
        }
    }

    fn or<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        self.opt(key).unwrap_or(default)
    }

    /// Parses a text setting; on a mistake records it and answers `None`, so the caller
    /// falls back to a default and the remaining keys are still checked.
    fn parsed<T>(&mut self, key: &str, default: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let text = self.or(key, default.to_string());
        match parse(text.trim()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(key, message);
                None
            }
        }
    }

    fn positive<T>(&mut self, key: &str, default: T) -> T
    where
        T: DeserializeOwned + Copy + PartialOrd + Default + fmt::Display,
    {
        let v = self.or(key, default);
        if v <= T::default() {
            self.error(key, format!("must be greater than zero, got {v}"));
            return default;
        }
        v
    }

    fn duration(&mut self, key: &str, default: &str) -> Duration {
        self.parsed(key, default, |s| {
            humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like `30s` or `5m`: {e}"))
        })
        .unwrap_or_default()
    }

    fn secrets(&mut self, key: &str) -> Vec<SecretString> {
        let list: Vec<String> = self.opt(key).unwrap_or_default();
        if list.iter().any(|s| s.trim().is_empty()) {
            self.error(key, "an empty secret would match an empty credential; remove it");
        }
        list.into_iter().filter(|s| !s.trim().is_empty()).map(SecretString::from).collect()
    }

    fn reject_unknown_keys(&mut self) {
        let mut found = BTreeSet::new();
        if let Ok(table) = self.raw.cache.clone().into_table() {
            collect_keys("", &table, &mut found);
        }
        for key in found {
            let known = KNOWN_KEYS.iter().any(|k| if k.ends_with('.') { key.starts_with(k) } else { key == *k });
            if !known && !CLI_ONLY_KEYS.contains(&key.as_str()) {
                self.error(&key, "unknown setting (see deploy/inquest.example.toml)");
            }
        }
    }

    /// Refuses to expose unauthenticated intake beyond this machine.
    fn check_exposure(&mut self, cfg: &Config) {
        if cfg.listen.ip().is_loopback() {
            return;
        }
        let i = &cfg.intake;
        let sources = [
            ("intake.alertmanager.bearer_tokens", !i.alertmanager.tokens.is_empty()),
            ("intake.generic.bearer_tokens", !i.generic.tokens.is_empty()),
            ("intake.grafana.hmac_secret", !i.grafana.tokens.is_empty() || i.grafana.hmac_secret.is_some()),
            ("intake.pagerduty.signing_secrets", !i.pagerduty.signing_secrets.is_empty()),
        ];
        for (key, has_credentials) in sources {
            if !has_credentials {
                self.error(
                    key,
                    format!(
                        "listen is {}, which other machines can reach, and this alert source has no \
                         credentials: anyone could open investigations. Configure credentials, or \
                         listen on 127.0.0.1",
                        cfg.listen
                    ),
                );
            }
        }
    }
}

fn collect_keys(prefix: &str, table: &Map<String, Value>, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match &v.kind {
            ValueKind::Table(inner) => collect_keys(&key, inner, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

/// `config` appends "for key `x`" to its messages; we print the key ourselves.
fn strip_key(message: &str) -> String {
    match message.find(" for key") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_need_no_file() {
        let cfg = load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(cfg.data_dir, PathBuf::from("./.inquest"));
        assert_eq!(cfg.store.url, "sqlite://./.inquest/inquest.db");
        assert_eq!(cfg.intake.max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(cfg.episodes.on_resolved, OnResolved::Continue);
        assert!(cfg.tls.is_none());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[engine]\nslots = 3\n").unwrap();
        let overrides = Overrides { config_file: Some(file.clone()), ..Default::default() };
        let cfg = load(&overrides, env(&[("INQUEST_ENGINE__SLOTS", "5")])).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:1");
        assert_eq!(cfg.engine.slots, 5);
        let overrides = Overrides { config_file: Some(file), listen: Some("127.0.0.1:2".into()), ..Default::default() };
        let cfg = load(&overrides, env(&[("INQUEST_LISTEN", "127.0.0.1:3")])).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:2");
    }

    #[test]
    fn the_log_filter_variable_is_not_a_setting() {
        let cfg = load(&Overrides::default(), env(&[("INQUEST_LOG", "debug,hyper=info")])).unwrap();
        assert_eq!(cfg.log.level, "info", "the `[log]` table keeps its default; telemetry reads INQUEST_LOG");
    }

    #[test]
    fn drafting_needs_a_repository_and_credentials() {
        let keys = |pairs: &[(&str, &str)]| -> Vec<String> {
            match load(&Overrides::default(), env(pairs)) {
                Ok(_) => Vec::new(),
                Err(e) => e.0.into_iter().map(|e| e.key).collect(),
            }
        };
        assert_eq!(keys(&[("INQUEST_GITHUB__REPOSITORY", "acme/etl")]), ["github.repository"], "no credentials");
        assert_eq!(
            keys(&[("INQUEST_GITHUB__REPOSITORY", "acme"), ("INQUEST_GITHUB__TOKEN", "t")]),
            ["github.repository"]
        );
        assert_eq!(
            keys(&[("INQUEST_GITHUB__REPOSITORY", "acme/etl"), ("INQUEST_GITHUB__APP_ID", "1")]),
            ["github.app_id"]
        );
        assert!(keys(&[("INQUEST_GITHUB__REPOSITORY", "acme/etl"), ("INQUEST_GITHUB__TOKEN", "t")]).is_empty());
        assert_eq!(keys(&[("INQUEST_GITHUB__APPROVERS", "inquest[bot]")]), ["github.approvers[0]"], "the app itself");
        let cfg =
            load(&Overrides::default(), env(&[("INQUEST_GITHUB__API_URL", "https://ghe.example.com/api/v3")])).unwrap();
        assert_eq!(cfg.github.web_url, "https://ghe.example.com");
        assert_eq!(load(&Overrides::default(), env(&[])).unwrap().github.web_url, "https://github.com");
    }

    #[test]
    fn pull_request_approvers_default_to_the_admins_and_are_checked() {
        let cfg = load(&Overrides::default(), env(&[])).unwrap();
        let rules = &cfg.registry.pull_request_approvers;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].approvers, cfg.registry.admins);
        assert!(rules[0].covers("Acme/ETL"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[[registry.pull_request_approvers]]\nrepository = \"acme/etl\"\napprovers = [\"group:data-eng\"]\n\
             required = 2\n[[registry.pull_request_approvers]]\nrepository = \"acme/*\"\napprovers = [\"user:ann\"]\n",
        )
        .unwrap();
        let cfg = load(&Overrides { config_file: Some(file.clone()), ..Default::default() }, env(&[])).unwrap();
        let rules = &cfg.registry.pull_request_approvers;
        assert_eq!((rules[0].required, rules[1].required), (2, 1));
        assert!(rules[0].covers("ACME/etl") && !rules[0].covers("acme/etl2"));
        assert!(rules[1].covers("acme/other") && !rules[1].covers("other/acme"));

        std::fs::write(
            &file,
            "[[registry.pull_request_approvers]]\nrepository = \"acme\"\napprovers = []\nrequired = 0\n\
             [[registry.pull_request_approvers]]\nrepository = \"*/x\"\napprovers = [\"data-eng\"]\n",
        )
        .unwrap();
        let errors = load(&Overrides { config_file: Some(file), ..Default::default() }, env(&[])).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "registry.pull_request_approvers[0].repository",
                "registry.pull_request_approvers[0].approvers",
                "registry.pull_request_approvers[0].required",
                "registry.pull_request_approvers[1].repository",
                "registry.pull_request_approvers[1].approvers[0]",
            ]
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_key() {
        let errors = load(
            &Overrides::default(),
            env(&[
                ("INQUEST_LISTEN", "not-an-address"),
                ("INQUEST_ENGINE__LEASE_TTL", "soon"),
                ("INQUEST_EPISODES__ON_RESOLVED", "explode"),
                ("INQUEST_ENGINE__SLOTS", "0"),
                ("INQUEST_STORE__URL", "mysql://x"),
                ("INQUEST_NO_SUCH_THING", "1"),
            ]),
        )
        .unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["no_such_thing", "listen", "store.url", "episodes.on_resolved", "engine.slots", "engine.lease_ttl"]
        );
    }

    #[test]
    fn public_listener_without_credentials_refuses_to_start() {
        let errors = load(&Overrides::default(), env(&[("INQUEST_LISTEN", "0.0.0.0:7400")])).unwrap_err();
        assert_eq!(errors.0.len(), 4);
        assert!(errors.0[0].message.contains("no credentials"), "{errors}");
        let ok = load(
            &Overrides::default(),
            env(&[
                ("INQUEST_LISTEN", "0.0.0.0:7400"),
                ("INQUEST_INTAKE__ALERTMANAGER__BEARER_TOKENS", "a,b"),
                ("INQUEST_INTAKE__GENERIC__BEARER_TOKENS", "c"),
                ("INQUEST_INTAKE__GRAFANA__HMAC_SECRET", "d"),
                ("INQUEST_INTAKE__PAGERDUTY__SIGNING_SECRETS", "e"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.intake.alertmanager.tokens.len(), 2);
    }

    #[test]
    fn the_annotated_example_is_valid() {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/inquest.example.toml"));
        let cfg = load(&Overrides { config_file: Some(path), ..Default::default() }, env(&[])).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(cfg.engine.slots, 32);
    }

    #[test]
    fn redacted_hides_secrets() {
        let cfg = load(
            &Overrides::default(),
            env(&[("INQUEST_INTAKE__GRAFANA__HMAC_SECRET", "hunter2"), ("INQUEST_STORE__URL", "postgres://u:pw@h/db")]),
        )
        .unwrap();
        let text = cfg.redacted().to_string();
        assert!(!text.contains("hunter2") && !text.contains(":pw@"), "{text}");
    }
}
