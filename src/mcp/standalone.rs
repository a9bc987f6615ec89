//! One domain server on its own listener: what `inquest server <id>` runs for a
//! built-in domain, and what a domain team's own binary runs for theirs. Only the
//! [`Domain`] is the caller's; everything else comes from the [`Config`]:
//!
//! - `[servers.<id>]`: public URL, `Host`/`Origin` allow lists, authentication, call
//!   timeout, policy freshness ([`settings`]);
//! - `identity`: the server's SVID, `spiffe://<trust domain>/server/<id>` with
//!   development identities, which is also what the registry's policy must name;
//! - `registry.url`: where policy, approvals, usage and self-registration go;
//! - `identity.oidc`: the issuer of people's bearer tokens (audience: the public URL).
//!
//! The listener is TLS with the server's SVID: a client certificate is verified when
//! one is presented (services, by SPIFFE ID), bearer JWTs are accepted otherwise.
//! `/healthz` (the process is up) and `/readyz` (the domain's backend answers) sit
//! beside the MCP endpoint and `<path>/metrics`. The caller binds the listener and owns
//! the shutdown signal, so tests pass port 0 and their own token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::info;

use super::http::{Deps, RegistryLink, ServeError, serve};
use super::settings::{AuthMode, ServerSettings};
use super::tool::Domain;
use crate::config::{Config, SvidConfig};
use crate::identity::jwt::{JwtValidator, ValidatorSettings};
use crate::identity::mtls::{self, MtlsListener, MtlsPeer};
use crate::identity::{devca, svid};

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// The server's SVID could not be loaded, or TLS or the registry client could not
    /// be built with it, or the token issuer's settings are unusable.
    #[error("server {id}: identity: {why}")]
    Identity { id: String, why: String },
    /// The framework refused the settings (authentication off on a network address,
    /// no policy source).
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `domain` on `listener` until `shutdown`, configured by `config`.
pub async fn run(
    config: &Config,
    domain: Arc<dyn Domain>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StandaloneError> {
    let id = domain.id();
    let local = listener.local_addr()?;
    let settings = settings(config, id, &format!("https://{local}/mcp"));
    let (identity, deps) = deps(config, id, vec![local]).await?;
    let served = serve(domain.clone(), settings, deps, shutdown.clone())?;
    let router = with_health(served.router, domain).layer(TraceLayer::new_for_http());
    let tls = mtls::server_config_client_optional(identity.clone(), vec!["*".to_string()])
        .map_err(|e| StandaloneError::Identity { id: id.to_string(), why: e.to_string() })?;
    let listener = MtlsListener::new(listener, tls)?;
    info!(address = %local, server = id, identity = identity.current().spiffe_id(), "MCP server {id} on https://{local}/mcp");
    let app = router.into_make_service_with_connect_info::<MtlsPeer>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    info!(server = id, "stopped");
    Ok(())
}

/// The settings of server `id`: its `[servers.<id>]` table (or the defaults), with
/// `fallback_url` as its public URL unless one is configured.
pub fn settings(config: &Config, id: &str, fallback_url: &str) -> ServerSettings {
    let sc = config.servers.get(id).cloned().unwrap_or_else(|| crate::config::server_defaults(id));
    let mut s = ServerSettings::new(id, sc.public_url.as_deref().unwrap_or(fallback_url));
    s.auth = if sc.auth == "none" { AuthMode::None } else { AuthMode::Required };
    s.allowed_hosts = sc.allowed_hosts;
    s.allowed_origins = sc.allowed_origins;
    s.required_scope = sc.required_scope;
    s.call_timeout = sc.call_timeout;
    s.policy_ttl = sc.policy_ttl;
    s.policy_max_staleness = sc.policy_max_staleness;
    s
}

/// What server `id` needs from outside: its SVID (for its listener and for the
/// registry), the registry link and the people's token validator. `binds` are the
/// addresses it will be served on.
pub async fn deps(
    config: &Config,
    id: &str,
    binds: Vec<SocketAddr>,
) -> Result<(Arc<dyn svid::SvidSource>, Deps), StandaloneError> {
    let failed = |why: String| StandaloneError::Identity { id: id.to_string(), why };
    let td = &config.identity.trust_domain;
    let identity = server_identity(config, id).await?;
    // The registry by its role's ID, or as `identity.extra_peers` names it (Istio and
    // SPIRE deployments give workloads IDs of their own), as the agent's client does.
    let mut registry_ids = vec![devca::role_id(td, "registry")];
    registry_ids.extend(config.identity.extra_peers.iter().cloned());
    let http = mtls::http_client(identity.clone(), registry_ids).map_err(|e| failed(e.to_string()))?;
    let jwt = match &config.identity.oidc {
        Some(oidc) => Some(
            JwtValidator::discover(reqwest::Client::new(), ValidatorSettings::from_oidc(oidc))
                .map_err(|e| failed(e.to_string()))?,
        ),
        None => None,
    };
    let deps = Deps {
        jwt,
        registry: Some(RegistryLink { url: config.registry.url.clone(), http }),
        audit_dir: Some(config.data_dir.clone()),
        binds,
        ..Default::default()
    };
    Ok((identity, deps))
}

/// `/healthz` and `/readyz` beside the server's own routes: Kubernetes restarts a
/// process that stops answering the first, and routes no traffic while the backend
/// fails the second.
fn with_health(router: Router, domain: Arc<dyn Domain>) -> Router {
    router.route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let domain = domain.clone();
            async move {
                match domain.healthy().await {
                    Ok(()) => (StatusCode::OK, "ready".to_string()),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                }
            }
        }),
    )
}

/// The SVID source of `spiffe://<trust domain>/server/<id>`. Development identities
/// are issued first (including one for a domain that is not built in), off the async
/// workers, since that may generate keys.
async fn server_identity(config: &Config, id: &str) -> Result<Arc<dyn svid::SvidSource>, StandaloneError> {
    let failed = |why: String| StandaloneError::Identity { id: id.to_string(), why };
    let spiffe_id = devca::role_id(&config.identity.trust_domain, &format!("server/{id}"));
    if matches!(config.identity.svid, SvidConfig::Dev) {
        let data_dir = config.data_dir.clone();
        let td = config.identity.trust_domain.clone();
        let wanted = vec![spiffe_id.clone()];
        tokio::task::spawn_blocking(move || devca::ensure_dev_identities_with(&data_dir, &td, &wanted))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
    }
    svid::source_from_config(&config.identity, &config.data_dir, &spiffe_id).await.map_err(|e| failed(e.to_string()))
}
