//! A domain MCP server served as `inquest server` serves it: mTLS with its dev SVID,
//! the registry's word fixed so the agent may use every tool. Shared by the
//! integration tests and the MCP benchmark (which includes this file by path).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use inquest::identity::devca;
use inquest::identity::mtls::{self, MtlsListener, MtlsPeer};
use inquest::identity::svid::SvidSource;
use inquest::mcp::authz::FixedPolicy;
use inquest::mcp::{self, Deps, Domain, ServerSettings};
use inquest::policy::{Access, ReviewState, ServerPolicy, UnlistedTools};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const TD: &str = "inquest.local";
pub const AGENT: &str = "spiffe://inquest.local/agent";

/// Where the server listens, and the agent's client for it (its SVID, the server's
/// SPIFFE ID expected).
pub struct Served {
    pub url: String,
    pub agent_http: reqwest::Client,
}

/// The registry's word when a test says nothing: the agent may use every tool.
pub fn allow_all() -> ServerPolicy {
    ServerPolicy {
        security_review: ReviewState::Approved,
        production: ReviewState::Approved,
        access: Access { allowed: vec![AGENT.to_string()], unlisted_tools: UnlistedTools::Allow, ..Default::default() },
        ..Default::default()
    }
}

/// Serves `domain` until `stop`, with identities and the audit log in `dir`.
pub async fn serve(domain: Arc<dyn Domain>, dir: &Path, stop: &CancellationToken) -> Result<Served> {
    serve_with(domain, dir, stop, allow_all()).await
}

/// As [`serve`], under `policy`.
pub async fn serve_with(
    domain: Arc<dyn Domain>,
    dir: &Path,
    stop: &CancellationToken,
    policy: ServerPolicy,
) -> Result<Served> {
    inquest::identity::install_crypto_provider();
    let id = domain.id();
    let server_id = format!("spiffe://{TD}/server/{id}");
    let paths = devca::ensure_dev_identities(dir, TD).context("dev identities")?;
    let server_svid: Arc<dyn SvidSource> = Arc::new(paths.file_source(&server_id)?);
    let agent_svid: Arc<dyn SvidSource> = Arc::new(paths.file_source(AGENT)?);

    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    let url = format!("https://{addr}/mcp/{id}");
    let deps = Deps {
        policy: Some(Arc::new(FixedPolicy(policy))),
        audit_dir: Some(dir.to_path_buf()),
        binds: vec![addr],
        ..Default::default()
    };
    let served = mcp::serve(domain, ServerSettings::new(id, &url), deps, stop.clone())?;
    let tls = mtls::server_config(server_svid, vec![AGENT.to_string()])?;
    let listener = MtlsListener::new(tcp, tls)?;
    let token = stop.clone();
    tokio::spawn(async move {
        let app = served.router.into_make_service_with_connect_info::<MtlsPeer>();
        let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
    });
    let agent_http = mtls::http_client(agent_svid, vec![server_id])?;
    Ok(Served { url, agent_http })
}
