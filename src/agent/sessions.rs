//! MCP sessions to the servers an investigation may use: one session per server for
//! the whole agent process (not one per call, nor one per investigation; see
//! [`SessionPool`]), both protocol revisions (`ClientLifecycleMode::Auto`),
//! a per-call timeout under a hard maximum, retries for read-only tools only, and a
//! circuit breaker per server.
//!
//! Tool names are namespaced `server__tool` by the callers (see `playbook`); here a
//! call names the server and the tool apart. Servers that are not ours (registered in
//! the registry by someone else) are `trusted: false`: their annotations are not
//! believed, so none of their tools is retried.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ProtocolVersion, Tool};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::approval::{self, ApprovalNeeded};
use super::breaker::Breaker;
use super::client::AgentClient;
use crate::mcp::server::URL_ELICITATION_REQUIRED;
use crate::playbook::{CallFailure, ToolCaller};

type Client = RunningService<RoleClient, AgentClient>;

/// One MCP server an investigation may use, as the registry permitted it.
#[derive(Clone)]
pub struct Target {
    /// The registry's name for it; the `server` in `server__tool`.
    pub name: String,
    pub url: String,
    /// Carries the agent's mesh identity (mTLS) or no credentials for plain HTTP.
    pub http: reqwest::Client,
    /// One of our domain servers: its tool annotations are believed.
    pub trusted: bool,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// A call's timeout when the caller gives none.
    pub call_timeout: Duration,
    /// No call waits longer than this, whatever the caller asks for.
    pub max_call_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of a trusted read-only tool after a timeout or a transport failure.
    pub read_retries: usize,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(30),
            max_call_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            read_retries: 2,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("no MCP server `{0}` is permitted for this investigation")]
    UnknownServer(String),
    #[error("`{server}` failed repeatedly; it is not called again for {seconds} s")]
    CircuitOpen { server: String, seconds: u64 },
    #[error("cannot reach `{server}` at {url}: {why}")]
    Connect { server: String, url: String, why: String },
    #[error("`{server}__{tool}` did not answer within {timeout:?}")]
    Timeout { server: String, tool: String, timeout: Duration },
    #[error("`{server}__{tool}` could not be called: {why}")]
    Transport { server: String, tool: String, why: String },
    #[error("`{server}__{tool}` answered with an error: {message}")]
    Tool { server: String, tool: String, message: String },
    #[error("`{server}__{tool}` needs a person's approval first{}", approval.as_ref().map(|a| format!(": {}", a.url)).unwrap_or_default())]
    NeedsApproval { server: String, tool: String, approval: Option<ApprovalNeeded> },
}

impl SessionError {
    /// Worth another try: the server may answer next time. A tool's own error is not.
    fn retryable(&self) -> bool {
        matches!(self, SessionError::Timeout { .. } | SessionError::Transport { .. } | SessionError::Connect { .. })
    }

    /// Counts against the server's breaker: the server, not the call, is unwell.
    fn server_fault(&self) -> bool {
        self.retryable()
    }
}

/// How long a server's tool listing is used before it is asked again. Policy changes
/// reach the agent within this (the server refuses a withdrawn tool at once anyway).
const LISTING_TTL: Duration = Duration::from_secs(30);

struct Server {
    target: Target,
    session: tokio::sync::Mutex<Option<Arc<Client>>>,
    breaker: Mutex<Breaker>,
    /// Tools whose `readOnlyHint` is true, from the last listing (trusted servers only).
    read_only: Mutex<HashSet<String>>,
    /// The last listing and when it was taken.
    listing: Mutex<Option<(Instant, Arc<Vec<Tool>>)>>,
    /// Sessions opened to this server so far.
    connects: AtomicU64,
}

/// The agent process's sessions: one entry per permitted server, shared by every
/// investigation. Two hundred investigations at once use one MCP session (and its
/// pooled connections) per server instead of two hundred handshakes, initializes and
/// listings, and a server's circuit breaker sees every investigation's failures.
///
/// An entry is keyed by the server's name, URL and trust; the first target's HTTP
/// client is the one kept (every target discovery hands out carries the agent's own).
pub struct SessionPool {
    limits: Limits,
    servers: Mutex<HashMap<(String, String, bool), Arc<Server>>>,
}

impl SessionPool {
    pub fn new(limits: Limits) -> SessionPool {
        SessionPool { limits, servers: Mutex::new(HashMap::new()) }
    }

    /// The sessions to `targets`, for one investigation: shared entries, opened on
    /// first use.
    pub fn manager(&self, targets: Vec<Target>) -> SessionManager {
        let limits = &self.limits;
        let mut pool = self.servers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let servers = targets
            .into_iter()
            .map(|target| {
                let key = (target.name.clone(), target.url.clone(), target.trusted);
                let server = pool
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(Server {
                            target: target.clone(),
                            session: tokio::sync::Mutex::new(None),
                            breaker: Mutex::new(Breaker::new(limits.breaker_failures, limits.breaker_cooldown)),
                            read_only: Mutex::new(HashSet::new()),
                            listing: Mutex::new(None),
                            connects: AtomicU64::new(0),
                        })
                    })
                    .clone();
                (target.name, server)
            })
            .collect();
        SessionManager { servers, limits: limits.clone() }
    }
}

/// Sessions to every permitted server of one investigation.
pub struct SessionManager {
    servers: HashMap<String, Arc<Server>>,
    limits: Limits,
}

impl SessionManager {
    /// Sessions of their own (not shared with any other manager).
    pub fn new(targets: Vec<Target>, limits: Limits) -> SessionManager {
        SessionPool::new(limits).manager(targets)
    }

    /// Whether `server` is one of ours, whose annotations are believed.
    pub fn is_trusted(&self, server: &str) -> bool {
        self.servers.get(server).is_some_and(|s| s.target.trusted)
    }

    /// How many sessions were opened so far to this manager's servers (one per server
    /// unless one broke), counting those other investigations opened.
    pub fn connects(&self) -> u64 {
        self.servers.values().map(|s| s.connects.load(Ordering::Relaxed)).sum()
    }

    /// Every server's tools as `server__tool`, listed concurrently (a listing younger
    /// than [`LISTING_TTL`] is reused); a server that cannot be listed is left out with
    /// a warning.
    pub async fn tools(&self) -> Vec<(String, Tool)> {
        let lists = self.servers.values().map(|server| async move {
            match self.listing(server).await {
                Ok(tools) => tools.iter().map(|t| (format!("{}__{}", server.target.name, t.name), t.clone())).collect(),
                Err(e) => {
                    warn!(server = %server.target.name, error = %e, "cannot list tools");
                    Vec::new()
                }
            }
        });
        let mut all: Vec<(String, Tool)> = futures::future::join_all(lists).await.into_iter().flatten().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Calls `tool` on `server` with `args`, within `timeout` (default and cap from
    /// the limits). Trusted read-only tools are retried after timeouts and transport
    /// failures; nothing else is.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        args: Map<String, Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, SessionError> {
        let srv = self.servers.get(server).ok_or_else(|| SessionError::UnknownServer(server.into()))?;
        let timeout = timeout.unwrap_or(self.limits.call_timeout).min(self.limits.max_call_timeout);
        let attempt = || async {
            if let Err(until) = srv.breaker.lock().map_err(|_| poisoned(server))?.check(Instant::now()) {
                let seconds = until.saturating_duration_since(Instant::now()).as_secs().max(1);
                return Err(SessionError::CircuitOpen { server: server.into(), seconds });
            }
            let result = self.call_once(srv, tool, args.clone(), timeout).await;
            let mut breaker = srv.breaker.lock().map_err(|_| poisoned(server))?;
            match &result {
                Err(e) if e.server_fault() => breaker.failure(Instant::now()),
                _ => breaker.success(),
            }
            result
        };
        // Read when deciding, not before: the first connect is what lists the tools.
        let read_only = || srv.target.trusted && srv.read_only.lock().is_ok_and(|r| r.contains(tool));
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_times(self.limits.read_retries);
        attempt
            .retry(backoff)
            .when(|e: &SessionError| e.retryable() && read_only())
            .notify(|e, wait| debug!(server, tool, error = %e, ?wait, "retrying a read-only tool"))
            .await
    }

    async fn call_once(
        &self,
        srv: &Server,
        tool: &str,
        args: Map<String, Value>,
        timeout: Duration,
    ) -> Result<Value, SessionError> {
        let server = srv.target.name.as_str();
        let client = self.session(srv).await?;
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = Some(args);
        let answer = tokio::time::timeout(timeout, client.call_tool_once(params)).await;
        let response = match answer {
            Err(_) => return Err(SessionError::Timeout { server: server.into(), tool: tool.into(), timeout }),
            Ok(Err(rmcp::service::ServiceError::McpError(e))) if e.code.0 == URL_ELICITATION_REQUIRED => {
                let approval = e.data.as_ref().and_then(approval::from_error_data);
                return Err(SessionError::NeedsApproval { server: server.into(), tool: tool.into(), approval });
            }
            Ok(Err(e)) => {
                let error = SessionError::Transport { server: server.into(), tool: tool.into(), why: e.to_string() };
                // The next call connects afresh: the session outlives this investigation,
                // and one that broke (a restarted server, a dropped stream) must not fail
                // every later investigation's calls. Only if no other call replaced it.
                let mut slot = srv.session.lock().await;
                if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, &client)) {
                    slot.take();
                }
                return Err(error);
            }
            Ok(Ok(response)) => response,
        };
        match response {
            CallToolResponse::Complete(result) => result_value(server, tool, result),
            CallToolResponse::InputRequired(input) => Err(SessionError::NeedsApproval {
                server: server.into(),
                tool: tool.into(),
                approval: input
                    .input_requests
                    .as_ref()
                    .and_then(|r| serde_json::to_value(r).ok())
                    .and_then(|r| approval::from_input_requests(&r)),
            }),
            // Tasks (and whatever later revisions add) are not polled by the agent.
            _ => Err(SessionError::Transport {
                server: server.into(),
                tool: tool.into(),
                why: "the server answered with a task, which the agent does not poll".into(),
            }),
        }
    }

    /// The server's tools: the last listing while it is fresh, else a new one.
    async fn listing(&self, srv: &Server) -> Result<Arc<Vec<Tool>>, SessionError> {
        let fresh = |srv: &Server| {
            let listing = srv.listing.lock().ok()?;
            listing.as_ref().filter(|(at, _)| at.elapsed() < LISTING_TTL).map(|(_, tools)| tools.clone())
        };
        if let Some(tools) = fresh(srv) {
            return Ok(tools);
        }
        // Connecting lists the tools; an open session's listing may just be old.
        let client = self.session(srv).await?;
        if let Some(tools) = fresh(srv) {
            return Ok(tools);
        }
        let tools = tokio::time::timeout(self.limits.connect_timeout, client.list_all_tools())
            .await
            .map_err(|_| SessionError::Transport {
                server: srv.target.name.clone(),
                tool: String::new(),
                why: format!("listing tools took longer than {:?}", self.limits.connect_timeout),
            })?
            .map_err(|e| SessionError::Transport {
                server: srv.target.name.clone(),
                tool: String::new(),
                why: format!("listing tools failed: {e}"),
            })?;
        Ok(remember(srv, tools))
    }

    /// The server's session, connecting (and listing its tools) if there is none.
    async fn session(&self, srv: &Server) -> Result<Arc<Client>, SessionError> {
        let mut slot = srv.session.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let target = &srv.target;
        let connect_err =
            |why: String| SessionError::Connect { server: target.name.clone(), url: target.url.clone(), why };
        let transport = StreamableHttpClientTransport::with_client(
            target.http.clone(),
            StreamableHttpClientTransportConfig::with_uri(target.url.as_str()),
        );
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        };
        let client =
            tokio::time::timeout(self.limits.connect_timeout, AgentClient.serve_with_lifecycle(transport, lifecycle))
                .await
                .map_err(|_| connect_err(format!("no answer within {:?}", self.limits.connect_timeout)))?
                .map_err(|e| connect_err(e.to_string()))?;
        let client = Arc::new(client);
        srv.connects.fetch_add(1, Ordering::Relaxed);
        // Listed once per connect: what is read-only (for retries) and what the planner sees.
        match tokio::time::timeout(self.limits.connect_timeout, client.list_all_tools()).await {
            Ok(Ok(tools)) => {
                remember(srv, tools);
            }
            Ok(Err(e)) => warn!(server = %target.name, error = %e, "listing tools failed; no tool is retried"),
            Err(_) => warn!(server = %target.name, "listing tools timed out; no tool is retried"),
        }
        *slot = Some(client.clone());
        Ok(client)
    }
}

#[async_trait]
impl ToolCaller for SessionManager {
    async fn call(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, String> {
        SessionManager::call(self, server, tool, args, None).await.map_err(|e| e.to_string())
    }

    async fn call_detailed(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, CallFailure> {
        SessionManager::call(self, server, tool, args, None).await.map_err(|e| {
            let approval = match &e {
                SessionError::NeedsApproval { approval, .. } => approval.clone(),
                _ => None,
            };
            CallFailure { message: e.to_string(), approval }
        })
    }
}

/// Keeps a listing (and, for a trusted server, which tools are read-only).
fn remember(srv: &Server, tools: Vec<Tool>) -> Arc<Vec<Tool>> {
    if srv.target.trusted {
        let read_only = tools
            .iter()
            .filter(|t| t.annotations.as_ref().and_then(|a| a.read_only_hint).unwrap_or(false))
            .map(|t| t.name.to_string())
            .collect();
        if let Ok(mut r) = srv.read_only.lock() {
            *r = read_only;
        }
    }
    let tools = Arc::new(tools);
    if let Ok(mut listing) = srv.listing.lock() {
        *listing = Some((Instant::now(), tools.clone()));
    }
    tools
}

/// The result as data: `structuredContent` when the server gives it, else the text
/// (parsed when it is JSON). `isError` results are errors carrying their text.
fn result_value(server: &str, tool: &str, result: CallToolResult) -> Result<Value, SessionError> {
    let text: Vec<String> = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
    let text = text.join("\n");
    if result.is_error == Some(true) {
        return Err(SessionError::Tool { server: server.into(), tool: tool.into(), message: text });
    }
    Ok(match result.structured_content {
        Some(v) => v,
        None => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    })
}

fn poisoned(server: &str) -> SessionError {
    SessionError::Transport { server: server.into(), tool: String::new(), why: "internal state poisoned".into() }
}
