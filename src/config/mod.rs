//! One typed, validated `Config` for every role.
//!
//! Settings come from a TOML file, then `INQUEST_*` environment variables (nested keys
//! joined with `__`, e.g. `INQUEST_STORE__URL`), then command-line flags, each layer
//! overriding the one before. [`load`] reads every key before it reports anything, so a
//! user sees all mistakes at once, each with the key it belongs to.

mod load;
mod servers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use load::{ConfigError, ConfigErrors, Overrides, load};
pub use servers::{ServerConfig, defaults as server_defaults};

/// The whole configuration, validated. Nothing in here needs checking again.
#[derive(Debug, Clone)]
pub struct Config {
    /// The one listener every HTTP API and page is served on.
    pub listen: SocketAddr,
    /// The mesh listener: role-to-role APIs over mTLS, peers authorized by SPIFFE ID.
    pub mesh_listen: SocketAddr,
    /// Where the embedded store and generated files live.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// TLS for the listener; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    pub store: StoreConfig,
    pub intake: IntakeConfig,
    pub episodes: EpisodeConfig,
    pub engine: EngineConfig,
    pub identity: IdentityConfig,
    pub registry: RegistryConfig,
    /// `[servers.<id>]`: the domain MCP servers.
    pub servers: BTreeMap<String, ServerConfig>,
    /// `[agent]`: how investigations are carried out.
    pub agent: AgentConfig,
    /// `[llm]`: the planner's model; absent, investigations run on playbooks alone.
    pub llm: Option<LlmConfig>,
    /// `[github]`: webhooks and the approval gates of drafted pull requests.
    pub github: GithubConfig,
    /// `[chat.*]`: the chat threads investigations are posted to.
    pub chat: ChatConfig,
}

/// Chat media; each absent one is not posted to (the web thread always exists).
#[derive(Debug, Clone, Default)]
pub struct ChatConfig {
    pub slack: Option<crate::chat::slack::SlackConfig>,
    pub matrix: Option<crate::chat::matrix::MatrixConfig>,
}

/// GitHub: who signs webhooks, who the app is, who may approve by review.
#[derive(Debug, Clone, Serialize)]
pub struct GithubConfig {
    /// Secrets of `X-Hub-Signature-256`; any may match (rotation). None: the webhook
    /// route refuses every delivery, since an unsigned one proves nothing.
    #[serde(skip)]
    pub webhook_secrets: Vec<SecretString>,
    /// The app's login (`<app-slug>[bot]`): its own reviews never approve.
    pub app_login: String,
    /// GitHub logins whose approving review of the recorded head approves a gate.
    pub approvers: Vec<String>,
    /// The REST API: `https://api.github.com`, or GitHub Enterprise's `.../api/v3`.
    pub api_url: String,
    /// Where people open pull requests (`https://github.com`), for links.
    pub web_url: String,
    /// `owner/name` that drafted pull requests go to; none: nothing is drafted.
    pub repository: Option<String>,
    /// The branch changes are proposed to (never written).
    pub base: String,
    /// A personal access token: development only.
    #[serde(skip)]
    pub token: Option<SecretString>,
    /// A GitHub App: its id, its installation on the repository and its private key.
    pub app_id: Option<u64>,
    pub installation_id: Option<u64>,
    pub private_key_file: Option<PathBuf>,
    /// Labels on every drafted pull request.
    pub labels: Vec<String>,
    /// Asked to review once a draft is approved.
    pub reviewers: Vec<String>,
}

/// How the agent investigates.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    /// Folder of playbook files (`*.yaml`).
    pub playbooks: PathBuf,
    /// Folder of prompt templates overriding the built-in ones, file by file.
    pub prompts: Option<PathBuf>,
    /// A tool call's timeout, and the most any call may be given.
    #[serde(with = "humantime_serde_compat")]
    pub call_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_call_timeout: Duration,
    /// Regexes for text to redact before anything reaches the model, besides the
    /// built-in ones (tokens, keys, emails).
    pub redact: Vec<String>,
}

/// An OpenAI-compatible chat-completions endpoint (OpenAI, Azure OpenAI's v1 API,
/// vLLM, Ollama, LiteLLM) and the budgets one investigation may spend there.
#[derive(Debug, Clone, Serialize)]
pub struct LlmConfig {
    /// Up to and including `/v1`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    #[serde(skip)]
    pub api_key: Option<SecretString>,
    /// One model call's timeout.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Model turns per investigation.
    pub max_steps: u32,
    /// Prompt plus completion tokens per investigation.
    pub max_tokens: u64,
    /// Dollars per investigation, priced by `prices`.
    pub max_cost_usd: f64,
    /// Wall time of the planner per investigation.
    #[serde(with = "humantime_serde_compat")]
    pub max_time: Duration,
    /// Most tools offered to the model at once.
    pub max_tools: usize,
    /// Dollars per million tokens by model; models not listed cost nothing.
    pub prices: BTreeMap<String, Price>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Price {
    pub prompt_per_mtok: f64,
    pub completion_per_mtok: f64,
}

/// Mesh identity (SPIFFE SVIDs) and user identity (OIDC).
#[derive(Debug, Clone, Serialize)]
pub struct IdentityConfig {
    /// The SPIFFE trust domain, e.g. `inquest.local`.
    pub trust_domain: String,
    pub svid: SvidConfig,
    /// The OIDC provider people log in with; absent: only the development login
    /// (embedded default on loopback) or none.
    pub oidc: Option<OidcConfig>,
    /// The clearly marked development login (mints tokens from a local dev issuer).
    /// Honoured only by `inquest all` listening on loopback.
    pub dev_login: bool,
    /// SPIFFE IDs allowed to call each role over mTLS, beyond the built-in roles.
    pub extra_peers: Vec<String>,
}

/// Where this process gets its X.509 SVID.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum SvidConfig {
    /// Generated by `inquest dev-ca` into `<data_dir>/identity` (created if missing).
    Dev,
    /// PEM files written by cert-manager, Istio or spiffe-helper; reloaded on change.
    Files { cert_file: PathBuf, key_file: PathBuf, bundle_file: PathBuf },
    /// The SPIFFE Workload API (SPIRE agent socket).
    WorkloadApi { socket: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct OidcConfig {
    pub issuer: String,
    /// Expected `aud` of access tokens for the registry and the web UI.
    pub audience: String,
    pub client_id: String,
    #[serde(skip)]
    pub client_secret: Option<SecretString>,
    /// Claim holding the user's groups.
    pub groups_claim: String,
    /// Signing algorithms accepted, pinned (never `none`).
    pub algorithms: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistryConfig {
    /// Base URL people use to reach the registry's pages (approval links point here).
    pub public_url: String,
    /// Where the agent and servers reach the registry API; in `all`, this process.
    pub url: String,
    /// Principals allowed to administer the registry: `group:<name>` or a SPIFFE ID.
    pub admins: Vec<String>,
    #[serde(with = "humantime_serde_compat")]
    pub approval_ttl: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub probe_interval: Duration,
    /// Who approves the pull requests Inquest drafts, per repository; the first rule
    /// whose `repository` matches applies. By default the administrators approve all.
    pub pull_request_approvers: Vec<PullRequestApprovers>,
}

/// One rule of who approves drafted pull requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequestApprovers {
    /// `owner/name`, `owner/*` or `*`; compared without regard to case, as GitHub does.
    pub repository: String,
    /// Principal matchers: `group:<name>`, `user:<subject>`.
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    #[serde(default = "one")]
    pub required: u32,
}

fn one() -> u32 {
    1
}

impl PullRequestApprovers {
    /// Whether this rule covers `repository` (`owner/name`).
    pub fn covers(&self, repository: &str) -> bool {
        let pattern = self.repository.to_ascii_lowercase();
        let repository = repository.to_ascii_lowercase();
        match pattern.strip_suffix("/*") {
            _ if pattern == "*" => true,
            Some(owner) => repository.split_once('/').is_some_and(|(o, _)| o == owner),
            None => pattern == repository,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,inquest=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreConfig {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct IntakeConfig {
    pub max_body_bytes: usize,
    /// Most webhook deliveries written in one transaction (group commit).
    pub batch_max: usize,
    pub alertmanager: BearerAuth,
    pub generic: BearerAuth,
    pub grafana: GrafanaAuth,
    pub pagerduty: PagerDutyAuth,
}

/// Bearer tokens accepted for a source; any one of them matches (rotation).
#[derive(Debug, Clone, Default)]
pub struct BearerAuth {
    pub tokens: Vec<SecretString>,
}

#[derive(Debug, Clone)]
pub struct GrafanaAuth {
    pub tokens: Vec<SecretString>,
    pub hmac_secret: Option<SecretString>,
    /// Header carrying the hex HMAC-SHA256.
    pub signature_header: String,
    /// When set, the HMAC covers `"<timestamp>:<body>"` and the timestamp must be recent.
    pub timestamp_header: Option<String>,
    pub max_skew: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct PagerDutyAuth {
    /// Webhook signing secrets; several during a rotation.
    pub signing_secrets: Vec<SecretString>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodeConfig {
    /// Label that names the owning team (for quotas and routing).
    pub team_label: String,
    pub service_label: String,
    /// Team used when an alert carries no team label.
    pub default_team: String,
    /// After an episode's last alert, how long new alerts with its key still join it.
    #[serde(with = "humantime_serde_compat")]
    pub cooldown: Duration,
    pub on_resolved: OnResolved,
}

/// What a `resolved` notification does to its investigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnResolved {
    /// Record it and keep investigating: the cause is still worth knowing.
    Continue,
    /// Record it and cancel the investigation if no worker has started it yet.
    CancelIfNotStarted,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineConfig {
    /// Names this process in leases; unique per replica.
    pub worker_id: String,
    /// Investigations this process runs at once.
    pub slots: usize,
    /// Investigations running at once across all replicas.
    pub max_running: u32,
    /// Investigations one team may have running at once, unless `team_quotas` says otherwise.
    pub team_max_running: u32,
    pub team_quotas: BTreeMap<String, u32>,
    #[serde(with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// How long shutdown waits for running work before handing it back to the queue.
    #[serde(with = "humantime_serde_compat")]
    pub grace_period: Duration,
    pub max_attempts: u32,
    /// Time the placeholder investigation spends "working"; lets tests and demos
    /// observe leases, takeovers and shutdown while real work does not exist yet.
    #[serde(with = "humantime_serde_compat")]
    pub simulated_work: Duration,
}

impl Config {
    /// The configuration as a reader may see it: every secret replaced by `***`.
    pub fn redacted(&self) -> serde_json::Value {
        fn secrets(list: &[SecretString]) -> Vec<&'static str> {
            list.iter().map(|_| "***").collect()
        }
        serde_json::json!({
            "listen": self.listen.to_string(),
            "mesh_listen": self.mesh_listen.to_string(),
            "data_dir": self.data_dir.display().to_string(),
            "log": self.log,
            "tls": self.tls,
            "store": {
                "url": redact_url(&self.store.url),
                "max_connections": self.store.max_connections,
            },
            "intake": {
                "max_body_bytes": self.intake.max_body_bytes,
                "batch_max": self.intake.batch_max,
                "alertmanager": {"bearer_tokens": secrets(&self.intake.alertmanager.tokens)},
                "generic": {"bearer_tokens": secrets(&self.intake.generic.tokens)},
                "grafana": {
                    "bearer_tokens": secrets(&self.intake.grafana.tokens),
                    "hmac_secret": self.intake.grafana.hmac_secret.as_ref().map(|_| "***"),
                    "signature_header": self.intake.grafana.signature_header,
                    "timestamp_header": self.intake.grafana.timestamp_header,
                    "max_skew": humantime::format_duration(self.intake.grafana.max_skew).to_string(),
                },
                "pagerduty": {"signing_secrets": secrets(&self.intake.pagerduty.signing_secrets)},
            },
            "episodes": self.episodes,
            "engine": self.engine,
            "identity": self.identity,
            "registry": self.registry,
            "servers": self.servers,
            "agent": self.agent,
            "chat": {
                "slack": self.chat.slack.as_ref().map(|s| s.redacted()),
                "matrix": self.chat.matrix.as_ref().map(|m| serde_json::json!({
                    "homeserver": m.homeserver, "access_token": "***", "user_id": m.user_id,
                    "rooms": m.rooms, "default_room": m.default_room,
                })),
            },
            "github": {
                "webhook_secrets": secrets(&self.github.webhook_secrets),
                "app_login": self.github.app_login,
                "approvers": self.github.approvers,
                "api_url": self.github.api_url,
                "web_url": self.github.web_url,
                "repository": self.github.repository,
                "base": self.github.base,
                "token": self.github.token.as_ref().map(|_| "***"),
                "app_id": self.github.app_id,
                "installation_id": self.github.installation_id,
                "private_key_file": self.github.private_key_file,
                "labels": self.github.labels,
                "reviewers": self.github.reviewers,
            },
            "llm": self.llm.as_ref().map(|l| {
                let mut v = serde_json::to_value(l).unwrap_or_default();
                v["api_key"] = serde_json::json!(l.api_key.as_ref().map(|_| "***"));
                v
            }),
        })
    }
}

/// Hides the password of a `scheme://user:password@host/...` URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Durations the way users write them (`30s`, `1m 30s`), both ways.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
