//! The composition root: picks the real implementation of every seam, wires the
//! roles together, and runs them until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

use crate::agent::approval::RegistryApprovals;
use crate::agent::{AgentInvestigator, Limits, Redactor, RegistryDiscovery, SessionPool};
use crate::chat::ChatSink;
use crate::chat::ledger::Ledger;
use crate::chat::matrix::{MatrixQuestions, MatrixSink};
use crate::chat::relay::Relay;
use crate::chat::slack::{self, SlackApi, SlackEvents, SlackInteractivity, SlackSink, SocketMode};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, SvidConfig};
use crate::engine::Runner;
use crate::github::drafter::{Drafter, Drafting};
use crate::github::octo::{GithubAuth, OctoHost};
use crate::github::{GateWatch, GithubStore, PullApprovals, RegistryPullApprovals, Reviewers, Webhooks};
use crate::identity::mtls::{self, MtlsListener, MtlsPeer};
use crate::identity::oidc::WebAuth;
use crate::identity::{devca, svid};
use crate::intake::writer::IntakeWriter;
use crate::mcp;
use crate::planner::{Budget, OpenAiModel, Planner, Prompts};
use crate::registry::approvals::client::ApprovalClient;
use crate::registry::authz::PolicyCache;
use crate::registry::catalog::{CatalogStore, ProbeRecorder};
use crate::registry::{self, RegistryState, approvals, prober};
use crate::store::{IngestPolicy, SqlStore, Store};
use crate::telemetry::Metrics;
use crate::web::auth::{Authn, authenticate};
use crate::web::{self, AppState};

/// Which roles this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything in one process: the embedded default.
    All,
    /// Alert intake and investigations.
    Agent,
    /// Catalog, policy, approvals, audit, usage, health probes, web UI.
    Registry,
}

impl Role {
    fn runs_agent(self) -> bool {
        matches!(self, Role::All | Role::Agent)
    }

    fn runs_registry(self) -> bool {
        matches!(self, Role::All | Role::Registry)
    }

    /// The SPIFFE path of this process's mesh identity.
    fn identity(self) -> &'static str {
        match self {
            Role::All | Role::Registry => "registry",
            Role::Agent => "agent",
        }
    }
}

/// The listeners, bound by the caller so tests can pass port 0.
pub struct Listeners {
    /// People and alerting systems: APIs and pages.
    pub public: TcpListener,
    /// Role-to-role traffic over mTLS; `None` runs without one (agent-only processes
    /// that call out but serve nothing on the mesh yet).
    pub mesh: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tls(#[from] web::listener::TlsError),
    #[error("mesh identity: {0}")]
    Identity(String),
    #[error("web login: {0}")]
    WebAuth(#[from] crate::identity::oidc::WebAuthError),
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
    #[error("playbooks:\n{0}")]
    Playbooks(String),
    #[error("planner: {0}")]
    Planner(String),
    #[error("chat: {0}")]
    Chat(String),
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `role` until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    config: Config,
    role: Role,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let mut config = config;
    if role == Role::All
        && let Some(mesh) = &listeners.mesh
    {
        // In `all` the registry is this process: its own mesh listener, wherever that
        // was bound (tests bind port 0).
        let addr = mesh.local_addr()?;
        config.mesh_listen = addr;
        config.registry.url = format!("https://{addr}");
    }
    let config = Arc::new(config);
    let sql = Arc::new(SqlStore::open(&config.store.url, config.store.max_connections).await?);
    let store: Arc<dyn Store> = sql.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut background: JoinSet<()> = JoinSet::new();
    let mut router = Router::new();

    // Agent: intake and investigations.
    let mut writer_parts = None;
    let mut thread_pages = None;
    if role.runs_agent() {
        // One client with the agent's mesh identity, for discovery, tool approvals and
        // the PR gates' approvals alike.
        let agent_http = agent_registry_http(&config).await?;
        let mut investigator = agent_investigator(&config, role, agent_http.clone())?;
        investigator.metrics = Some(metrics.clone());
        let gate_approvals = gate_approvals(&config, agent_http);
        let drafting = drafting(&config, &sql, &clock, gate_approvals.clone())?;
        investigator.drafting = drafting.clone();
        let investigator = Arc::new(investigator);
        let runner = Arc::new(Runner::new(store.clone(), investigator, clock.clone(), config.engine.clone()));
        let policy = IngestPolicy { cooldown: config.episodes.cooldown, on_resolved: config.episodes.on_resolved };
        let writer_stop = CancellationToken::new();
        let (writer, writer_task) = IntakeWriter::start(
            store.clone(),
            policy,
            config.intake.batch_max,
            clock.clone(),
            runner.waker(),
            metrics.clone(),
            writer_stop.clone(),
        );
        let state = AppState {
            config: config.clone(),
            store: store.clone(),
            writer,
            metrics: metrics.clone(),
            clock: clock.clone(),
            ready: ready.clone(),
            shutdown: shutdown.clone(),
        };
        // The web thread takes logged-in people (the question box): it is layered with
        // the authentication below, once the registry's login is known.
        thread_pages = Some(web::thread::routes(state.clone()));
        router = router.merge(web::router(state));
        // GitHub webhooks: stored by the route, applied to gates by the processor.
        let hooks = Webhooks {
            store: GithubStore::new(sql.clone()),
            secrets: Arc::new(config.github.webhook_secrets.clone()),
            reviewers: Arc::new(Reviewers {
                approvers: config.github.approvers.clone(),
                app_login: config.github.app_login.clone(),
            }),
            clock: clock.clone(),
            wake: Arc::new(tokio::sync::Notify::new()),
            drafting: drafting.clone(),
            approvals: Some(gate_approvals.clone()),
        };
        router = router.merge(crate::github::webhook::router(hooks.clone()));
        background.spawn(hooks.run(shutdown.child_token()));
        // Pending gates and the registry's approval service.
        let watch = GateWatch {
            approvals: gate_approvals,
            store: GithubStore::new(sql.clone()),
            clock: clock.clone(),
            drafting,
            poll: Duration::from_secs(5),
        };
        background.spawn(watch.run(shutdown.child_token()));
        // Chat threads: each configured medium follows the investigations' logs.
        let (chat_router, chat_tasks) = chat(&config, &sql, store.clone(), clock.clone(), role, &shutdown).await?;
        router = router.merge(chat_router);
        for task in chat_tasks {
            background.spawn(task);
        }
        // The runner drains at the same time as the HTTP server: it stops claiming
        // as soon as shutdown begins.
        background.spawn(runner.run(shutdown.child_token()));
        writer_parts = Some((writer_stop, writer_task));
    } else {
        router = router.merge(web::health_router(store.clone(), metrics.clone(), ready.clone()));
    }

    // Mesh identity, for the mesh listener and for calls to other roles.
    let identity = mesh_identity(&config, role).await?;

    // Registry: catalog, policy, approvals, audit, usage, pages, login.
    let mut authn = Authn::default();
    let mut mesh_router = None;
    if role.runs_registry() {
        let allow_dev_login = role == Role::All && config.listen.ip().is_loopback();
        let web_auth = Arc::new(WebAuth::from_config(&config, sql.clone(), allow_dev_login)?);
        authn.web = Some(web_auth.clone());
        let state = RegistryState {
            config: Arc::new(config.registry.clone()),
            store: sql.clone(),
            clock: clock.clone(),
            policy: Arc::new(PolicyCache::default()),
        };
        if let Some(slack) = &config.chat.slack {
            // Slack signs its requests: outside the authentication layer.
            let press = SlackInteractivity {
                config: Arc::new(slack.clone()),
                approvals: <approvals::ApprovalContext as axum::extract::FromRef<RegistryState>>::from_ref(&state),
                api: SlackApi::new(chat_http()?, slack),
            };
            if slack.socket_mode && role == Role::All {
                // One Socket Mode client, where both mentions (the agent's store) and
                // presses (the registry's approvals) can be handled.
                let events = SlackEvents::new(
                    Arc::new(slack.clone()),
                    store.clone(),
                    Ledger::new(sql.clone()),
                    SlackApi::new(chat_http()?, slack),
                    clock.clone(),
                );
                let socket = SocketMode::new(chat_http()?, events, Some(press.clone()))
                    .map_err(|e| AppError::Chat(e.to_string()))?;
                background.spawn(socket.run(shutdown.child_token()));
                info!("Slack Socket Mode on");
            }
            router = router.merge(slack::interactivity_router(press));
        }
        let registry_routes = registry::router(state);
        mesh_router = Some(registry_routes.clone());
        // Only the registry's routes take user credentials: the intake has its own
        // (its bearer tokens are not JWTs).
        let people = registry_routes.merge(crate::identity::oidc::routes().with_state(web_auth));
        router = router.merge(people.layer(from_fn_with_state(authn.clone(), authenticate)));

        let sink = Arc::new(ProbeRecorder { store: sql.clone() as Arc<dyn CatalogStore>, clock: clock.clone() });
        let td = &config.identity.trust_domain;
        let mut servers = vec![format!("spiffe://{td}/server/*")];
        servers.extend(config.identity.extra_peers.iter().cloned());
        let http = mtls::http_client(identity.clone(), servers).map_err(|e| AppError::Identity(e.to_string()))?;
        background.spawn(prober::run(sink, http, config.registry.probe_interval, shutdown.child_token()));
        background.spawn(approvals::run_sweeper(
            sql.clone(),
            clock.clone(),
            Duration::from_secs(30),
            shutdown.child_token(),
        ));
    }
    if let Some(pages) = thread_pages {
        router = router.merge(pages.layer(from_fn_with_state(authn.clone(), authenticate)));
    }
    if role == Role::All {
        let mut binds = vec![listeners.public.local_addr()?];
        if let Some(m) = &listeners.mesh {
            binds.push(m.local_addr()?);
        }
        let mounted = mount_servers(&config, binds, &shutdown).await?;
        mesh_router = mesh_router.map(|m| m.merge(mounted.clone()));
        router = router.merge(mounted);
    }
    let router = router.layer(TraceLayer::new_for_http());

    let mut servers: Vec<Task> = Vec::new();
    let public = listeners.public;
    let local = public.local_addr()?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    servers.push(serve_public(config.clone(), public, router, shutdown.clone(), ready.clone())?);
    if let (Some(mesh), Some(mesh_router)) = (listeners.mesh, mesh_router) {
        let td = &config.identity.trust_domain;
        let mut allowed = vec![format!("spiffe://{td}/agent"), format!("spiffe://{td}/server/*")];
        allowed.extend(config.identity.extra_peers.iter().cloned());
        let tls = mtls::server_config(identity.clone(), allowed).map_err(|e| AppError::Identity(e.to_string()))?;
        let mesh_local = mesh.local_addr()?;
        let app = mesh_router
            .layer(from_fn_with_state(authn, authenticate))
            .layer(TraceLayer::new_for_http())
            .into_make_service_with_connect_info::<MtlsPeer>();
        let listener = MtlsListener::new(mesh, tls)?;
        let stop = shutdown.clone();
        servers.push(Box::pin(async move {
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
                warn!(%error, "the mesh listener failed");
            }
        }));
        info!(address = %mesh_local, identity = identity.current().spiffe_id(), "mesh listener (mTLS) on {mesh_local}");
    }
    info!(address = %local, role = ?role, "inquest is listening on {scheme}://{local}");
    ready.store(true, Ordering::SeqCst);

    // Requests in flight get the grace period to finish once shutdown begins; every
    // 202 already sent is on disk, so cutting the rest off loses nothing answered.
    let grace = config.engine.grace_period;
    tokio::select! {
        _ = futures::future::join_all(servers) => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "requests still open after the grace period; closing them");
        }
    }
    // Connections that outlived the grace period may still hold writer handles; the
    // writer answers what is queued and ends regardless.
    if let Some((writer_stop, writer_task)) = writer_parts {
        writer_stop.cancel();
        while let Some(done) = background.join_next().await {
            if let Err(e) = done {
                warn!(error = %e, "a background task ended abnormally");
            }
        }
        if let Err(e) = writer_task.await {
            warn!(error = %e, "the intake writer ended abnormally");
        }
    } else {
        while background.join_next().await.is_some() {}
    }
    sql.close().await;
    info!("stopped");
    Ok(())
}

/// An HTTP client for chat media's APIs.
fn chat_http() -> Result<reqwest::Client, AppError> {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| AppError::Chat(e.to_string()))
}

/// The chat media configured: the routes they take requests on (Slack's events), and
/// the tasks that post threads (the relay) and read questions (Matrix).
async fn chat(
    config: &Config,
    sql: &Arc<SqlStore>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    role: Role,
    shutdown: &CancellationToken,
) -> Result<(Router, Vec<Task>), AppError> {
    let mut router = Router::new();
    let mut tasks: Vec<Task> = Vec::new();
    let mut sinks: Vec<Arc<dyn ChatSink>> = Vec::new();
    if let Some(cfg) = &config.chat.slack {
        let api = SlackApi::new(chat_http()?, cfg);
        sinks.push(Arc::new(SlackSink::new(api.clone(), cfg)));
        let events =
            SlackEvents::new(Arc::new(cfg.clone()), store.clone(), Ledger::new(sql.clone()), api, clock.clone());
        if cfg.socket_mode && role == Role::Agent {
            // Without the registry here, presses cannot be decided: the client says so to
            // whoever presses (run `all`, or decide on the approval page).
            let socket =
                SocketMode::new(chat_http()?, events.clone(), None).map_err(|e| AppError::Chat(e.to_string()))?;
            tasks.push(Box::pin(socket.run(shutdown.child_token())));
            info!("Slack Socket Mode on (mentions only: approvals need the registry in this process)");
        }
        router = router.merge(slack::events_router(events));
        info!(channels = cfg.channels.len(), "Slack threads on");
    }
    if let Some(cfg) = &config.chat.matrix {
        let sink = Arc::new(MatrixSink::new(cfg).map_err(|e| AppError::Chat(e.to_string()))?);
        // Not fatal: the homeserver may come up later; the relay retries its posts.
        if let Err(e) = sink.check().await {
            warn!(error = %e, "the Matrix account could not be checked");
        }
        if let Err(e) = sink.join_rooms().await {
            warn!(error = %e, "joining the Matrix rooms failed");
        }
        sinks.push(sink.clone());
        let questions = MatrixQuestions::new(sink, Ledger::new(sql.clone()), store.clone(), clock.clone());
        tasks.push(Box::pin(questions.run(shutdown.child_token())));
        info!(rooms = cfg.rooms.len(), "Matrix threads on");
    }
    if !sinks.is_empty() {
        let relay = Relay {
            sinks,
            ledger: Ledger::new(sql.clone()),
            store,
            clock,
            worker: config.engine.worker_id.clone(),
            web_base: config.registry.public_url.clone(),
            poll: Duration::from_secs(2),
        };
        tasks.push(Box::pin(relay.run(shutdown.child_token())));
    }
    Ok((router, tasks))
}

/// The registry's approval service for pull-request gates, called with the agent's
/// mesh identity (the requester of every gate's approval).
fn gate_approvals(config: &Config, http: reqwest::Client) -> Arc<dyn PullApprovals> {
    Arc::new(RegistryPullApprovals { client: ApprovalClient { http, registry_url: config.registry.url.clone() } })
}

/// An HTTP client with the agent's mesh identity, for the registry and the servers.
async fn agent_registry_http(config: &Config) -> Result<reqwest::Client, AppError> {
    let td = &config.identity.trust_domain;
    let identity = role_identity(config, "agent").await?;
    let mut peers = vec![devca::role_id(td, "registry"), format!("spiffe://{td}/server/*")];
    peers.extend(config.identity.extra_peers.iter().cloned());
    mtls::http_client(identity, peers).map_err(|e| AppError::Identity(e.to_string()))
}

/// Drafting of pull requests, when `github.repository` is set.
fn drafting(
    config: &Config,
    sql: &Arc<SqlStore>,
    clock: &Arc<dyn Clock>,
    approvals: Arc<dyn PullApprovals>,
) -> Result<Option<Arc<Drafting>>, AppError> {
    let g = &config.github;
    let Some(repo) = &g.repository else { return Ok(None) };
    let auth = match (&g.app_id, &g.installation_id, &g.private_key_file, &g.token) {
        (Some(app_id), Some(installation_id), Some(key_file), _) => {
            let key = std::fs::read_to_string(key_file)
                .map_err(|e| AppError::Identity(format!("github.private_key_file {}: {e}", key_file.display())))?;
            GithubAuth::App { app_id: *app_id, private_key: key.into(), installation_id: *installation_id }
        }
        (_, _, _, Some(token)) => GithubAuth::Token(token.clone()),
        // The config loader refuses a repository without credentials.
        _ => return Ok(None),
    };
    let host = Arc::new(OctoHost::new(&g.api_url, auth, repo));
    let drafter = Drafter {
        host,
        store: GithubStore::new(sql.clone()),
        clock: clock.clone(),
        author: ("Inquest".to_string(), "inquest@users.noreply.github.com".to_string()),
        approvals: Some(approvals),
    };
    info!(repository = %repo, base = %g.base, "pull requests are drafted for proposed changes");
    Ok(Some(Arc::new(Drafting {
        drafter,
        repo: repo.clone(),
        base: g.base.clone(),
        labels: g.labels.clone(),
        reviewers: g.reviewers.clone(),
        thread_base: format!("{}/v1/investigations", config.registry.public_url.trim_end_matches('/')),
        web_base: g.web_url.clone(),
    })))
}

/// The investigator: playbooks from `agent.playbooks`, the planner when `[llm]` is
/// set, and discovery at the registry with the agent's own mesh identity.
fn agent_investigator(config: &Config, role: Role, http: reqwest::Client) -> Result<AgentInvestigator, AppError> {
    let playbooks = if config.agent.playbooks.is_dir() {
        crate::playbook::load(std::slice::from_ref(&config.agent.playbooks)).map_err(|problems| {
            AppError::Playbooks(problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))
        })?
    } else {
        warn!(path = %config.agent.playbooks.display(), "no playbook folder here; investigations use the planner only, if one is configured");
        Vec::new()
    };
    let planner = planner(config)?.map(Arc::new);
    info!(playbooks = playbooks.len(), planner = planner.is_some(), "investigator ready");

    let approvals = RegistryApprovals {
        base: config.registry.url.clone(),
        http: http.clone(),
        poll: Duration::from_secs(2),
        max_wait: config.registry.approval_ttl + Duration::from_secs(60),
    };
    let mut discovery = RegistryDiscovery::new(config.registry.url.clone(), http, "dev.inquest/");
    if role == Role::All {
        // The mounted servers register the public URL people use; the agent reaches
        // the same servers on the mesh listener, where its certificate is seen.
        discovery
            .rewrite
            .push((format!("{}/mcp/", config.registry.public_url), format!("https://{}/mcp/", config.mesh_listen)));
    }
    let limits = Limits {
        call_timeout: config.agent.call_timeout,
        max_call_timeout: config.agent.max_call_timeout,
        ..Limits::default()
    };
    Ok(AgentInvestigator {
        playbooks,
        discovery: Arc::new(discovery),
        sessions: Arc::new(SessionPool::new(limits)),
        planner,
        approvals: Some(Arc::new(approvals)),
        simulated_work: config.engine.simulated_work,
        metrics: None,
        drafting: None,
    })
}

/// The planner over the `[llm]` endpoint, or `None` when none is configured; shared by
/// the agent and `inquest eval`, so an eval measures the planner the agent runs.
pub fn planner(config: &Config) -> Result<Option<Planner>, AppError> {
    let Some(llm) = &config.llm else { return Ok(None) };
    Ok(Some(Planner {
        model: Arc::new(OpenAiModel::new(llm)),
        prompts: Prompts::load(config.agent.prompts.as_deref()).map_err(|e| AppError::Planner(e.to_string()))?,
        budget: Budget::from_config(llm),
        prices: llm.prices.clone(),
        redactor: Redactor::new(&config.agent.redact).map_err(|e| AppError::Planner(e.to_string()))?,
        max_tools: llm.max_tools,
    }))
}

/// Serves the public router, plain or TLS, until shutdown.
fn serve_public(
    config: Arc<Config>,
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
) -> Result<Task, AppError> {
    let app = router.into_make_service_with_connect_info::<web::listener::PeerAddr>();
    let stop = async move {
        shutdown.cancelled().await;
        ready.store(false, Ordering::SeqCst);
        info!("shutting down: no new connections; finishing requests in flight");
    };
    Ok(match &config.tls {
        Some(tls) => {
            let tls_config = web::listener::server_config(&tls.cert_file, &tls.key_file)?;
            let listener = web::listener::TlsListener::new(listener, tls_config)?;
            Box::pin(async move {
                if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    warn!(%error, "the public listener failed");
                }
            })
        }
        None => Box::pin(async move {
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                warn!(%error, "the public listener failed");
            }
        }),
    })
}

/// This process's SVID source: generated development identities unless configured.
async fn mesh_identity(config: &Config, role: Role) -> Result<Arc<dyn svid::SvidSource>, AppError> {
    role_identity(config, role.identity()).await
}

/// The SVID source of `path` (`agent`, `registry`, `server/airflow`) in the trust
/// domain, generating the development identities first when they are the source.
async fn role_identity(config: &Config, path: &str) -> Result<Arc<dyn svid::SvidSource>, AppError> {
    let td = &config.identity.trust_domain;
    if matches!(config.identity.svid, SvidConfig::Dev) {
        let data_dir = config.data_dir.clone();
        let td_owned = td.clone();
        // Key generation and file writes: keep them off the async workers.
        tokio::task::spawn_blocking(move || devca::ensure_dev_identities(&data_dir, &td_owned))
            .await
            .map_err(|e| AppError::Identity(e.to_string()))?
            .map_err(|e| AppError::Identity(e.to_string()))?;
    }
    svid::source_from_config(&config.identity, &config.data_dir, &devca::role_id(td, path))
        .await
        .map_err(|e| AppError::Identity(e.to_string()))
}

/// Runs one domain server (`inquest server <id>`) on `listener` until `shutdown`, as
/// [`mcp::standalone::run`] does for any domain.
pub async fn run_server(
    config: Config,
    domain: Arc<dyn mcp::Domain>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    mcp::standalone::run(&config, domain, listener, shutdown).await.map_err(standalone_error)
}

/// A standalone server's failure in this module's terms: its listener failing is a
/// serving error; the rest happens while it is set up (its SVID, TLS, settings).
fn standalone_error(e: mcp::standalone::StandaloneError) -> AppError {
    match e {
        mcp::standalone::StandaloneError::Io(e) => AppError::Serve(e),
        other => AppError::Identity(other.to_string()),
    }
}

/// Mounts every enabled `[servers.<id>]` whose domain is built in at `/mcp/<id>`
/// (`inquest all`); a domain that is not built in yet is skipped with a warning.
async fn mount_servers(
    config: &Config,
    binds: Vec<std::net::SocketAddr>,
    shutdown: &CancellationToken,
) -> Result<Router, AppError> {
    let mut router = Router::new();
    for (id, _) in config.servers.iter().filter(|(_, sc)| sc.enabled) {
        let domain = match mcp::domains::build_domain(id, config) {
            Ok(d) => d,
            Err(error) => {
                warn!(server = %id, %error, "not mounting this MCP server");
                continue;
            }
        };
        // Its `public_url` when configured, else its place on this process's listener.
        let settings = mcp::standalone::settings(config, id, &format!("{}/mcp/{id}", config.registry.public_url));
        let (_, deps) = mcp::standalone::deps(config, id, binds.clone()).await.map_err(standalone_error)?;
        let served =
            mcp::serve(domain, settings, deps, shutdown.clone()).map_err(|e| AppError::Identity(e.to_string()))?;
        info!(server = %id, "MCP server mounted at /mcp/{id}");
        router = router.merge(served.router);
    }
    Ok(router)
}
