//! One domain server as an axum [`Router`]: the MCP endpoint (rmcp Streamable HTTP,
//! both protocol revisions on one path) behind authentication, the RFC 9728 metadata
//! beside it, and `<path>/metrics`. Where it is listened on is the caller's business.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::approval::{ApprovalDesk, Gatekeeper, RegistryDesk};
use super::auth::{self, Authenticator};
use super::authz::{PolicySource, RegistryPolicy, ToolAuthz};
use super::observe::{AuditLog, ServerMetrics, UsageReporter};
use super::server::{Framework, McpServer};
use super::settings::{AuthMode, ServerSettings};
use super::tool::Domain;
use crate::identity::jwt::JwtValidator;
use crate::registry::approvals::client::ApprovalClient;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("server {id}: `auth = \"none\"` is only allowed on a loopback address, not {bind}")]
    UnauthenticatedOnNetwork { id: String, bind: SocketAddr },
    #[error("server {0}: neither a registry nor a fixed policy is configured")]
    NoPolicy(String),
    #[error("server {id}: {why}")]
    Setup { id: String, why: String },
}

/// The registry as a server reaches it: base URL and an mTLS client with the server's SVID.
#[derive(Clone)]
pub struct RegistryLink {
    pub url: String,
    pub http: reqwest::Client,
}

/// What a server needs from outside.
#[derive(Default, Clone)]
pub struct Deps {
    /// Validator of the configured issuer; its audience is replaced by the server's URL.
    pub jwt: Option<JwtValidator>,
    pub registry: Option<RegistryLink>,
    /// Replaces the registry's policy (tests, reference-client setups).
    pub policy: Option<Arc<dyn PolicySource>>,
    /// Replaces the registry's approval service.
    pub desk: Option<Arc<dyn ApprovalDesk>>,
    /// Where the audit JSONL goes (`mcp-audit-<id>.jsonl`); `None`: no audit file.
    pub audit_dir: Option<PathBuf>,
    /// Every address the router will be served on, to refuse `auth = "none"` off loopback.
    pub binds: Vec<SocketAddr>,
}

/// A served domain: its router and its shared state (for health and tests).
pub struct Served {
    pub router: Router,
    pub framework: Arc<Framework>,
}

/// Builds the router serving `domain` with `settings` until `stop`.
pub fn serve(
    domain: Arc<dyn Domain>,
    settings: ServerSettings,
    deps: Deps,
    stop: CancellationToken,
) -> Result<Served, ServeError> {
    if settings.auth == AuthMode::None {
        if let Some(bind) = deps.binds.iter().find(|b| !b.ip().is_loopback()) {
            return Err(ServeError::UnauthenticatedOnNetwork { id: settings.id.clone(), bind: *bind });
        }
        tracing::warn!(
            server = %settings.id,
            "AUTHENTICATION IS OFF for this MCP server (auth = \"none\"): every caller is `user:anonymous`. \
             Loopback only; never use this outside a developer machine."
        );
    }
    let policy: Arc<dyn PolicySource> = match (&deps.policy, &deps.registry) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => Arc::new(RegistryPolicy {
            http: r.http.clone(),
            registry_url: r.url.clone(),
            name: settings.registry_name.clone(),
        }),
        (None, None) => return Err(ServeError::NoPolicy(settings.id.clone())),
    };
    let desk: Option<Arc<dyn ApprovalDesk>> = match (&deps.desk, &deps.registry) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(r)) => Some(Arc::new(RegistryDesk {
            client: ApprovalClient { http: r.http.clone(), registry_url: r.url.clone() },
            server: settings.registry_name.clone(),
        })),
        (None, None) => None,
    };
    let key: [u8; 32] = rand::random();
    let gate = desk
        .map(|d| Gatekeeper::new(d, &settings.registry_name, &key, settings.request_state_ttl))
        .transpose()
        .map_err(|why| ServeError::Setup { id: settings.id.clone(), why })?;
    if let Some(link) = &deps.registry {
        let doc = super::register::server_json(&settings, domain.description(), &domain.tools());
        tokio::spawn(super::register::publish(link.clone(), doc, stop.child_token()));
    }
    let usage = match &deps.registry {
        Some(r) => UsageReporter::start(r.http.clone(), &r.url, stop.child_token()),
        None => UsageReporter::disabled(),
    };
    let audit = match &deps.audit_dir {
        Some(dir) => AuditLog::start(dir.join(format!("mcp-audit-{}.jsonl", settings.id))),
        None => AuditLog::disabled(),
    };
    let jwt = deps.jwt.as_ref().map(|j| j.with_audience(&settings.public_url));
    let authenticator = Arc::new(Authenticator::new(&settings, jwt));
    let framework = Arc::new(Framework {
        tools: domain.tools(),
        domain,
        authz: ToolAuthz::new(policy, settings.policy_ttl, settings.policy_max_staleness),
        gate,
        metrics: ServerMetrics::new(&settings.id),
        usage,
        audit,
        settings,
    });

    let s = &framework.settings;
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop.child_token())
        .with_allowed_hosts(s.allowed_hosts.clone());
    // A plain JSON answer for a call that sends nothing before its result: no SSE
    // framing to write and parse on the path every tool call takes. rmcp falls back to
    // an event stream by itself when a call reports progress first.
    config.json_response = true;
    config = if s.allowed_origins.is_empty() {
        // No browser origin is expected: refuse any request that names one.
        config.enforce_origin_validation()
    } else {
        config.with_allowed_origins(s.allowed_origins.clone())
    };
    let handler = McpServer(framework.clone());
    let service: StreamableHttpService<McpServer, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(handler.clone()), Default::default(), config);

    let path = s.path().to_string();
    let metadata_path = match path.as_str() {
        "/" => "/.well-known/oauth-protected-resource".to_string(),
        p => format!("/.well-known/oauth-protected-resource{p}"),
    };
    let metrics_path = if path == "/" { "/metrics".to_string() } else { format!("{path}/metrics") };
    let mcp = Router::new()
        .route_service(&path, service)
        .layer(from_fn_with_state(authenticator.clone(), auth::authenticate));
    let metrics = framework.metrics.clone();
    let open = Router::new()
        .route(&metadata_path, get(auth::metadata))
        .with_state(authenticator)
        .route(&metrics_path, get(move || std::future::ready(metrics.render())));
    Ok(Served { router: mcp.merge(open), framework })
}
