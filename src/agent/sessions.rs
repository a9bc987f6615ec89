//! MCP sessions to the servers an investigation may use: one pooled session per
//! server (not one per call), both protocol revisions (`ClientLifecycleMode::Auto`),
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

struct Server {
    target: Target,
    session: tokio::sync::Mutex<Option<Arc<Client>>>,
    breaker: Mutex<Breaker>,
    /// Tools whose `readOnlyHint` is true, from the last listing (trusted servers only).
    read_only: Mutex<HashSet<String>>,
}

/// Sessions to every permitted server of one investigation (or one agent).
pub struct SessionManager {
    servers: HashMap<String, Arc<Server>>,
    limits: Limits,
    connects: AtomicU64,
}

impl SessionManager {
    pub fn new(targets: Vec<Target>, limits: Limits) -> SessionManager {
        let servers = targets
            .into_iter()
            .map(|target| {
                let breaker = Breaker::new(limits.breaker_failures, limits.breaker_cooldown);
                let server = Server {
                    target: target.clone(),
                    session: tokio::sync::Mutex::new(None),
                    breaker: Mutex::new(breaker),
                    read_only: Mutex::new(HashSet::new()),
                };
                (target.name, Arc::new(server))
            })
            .collect();
        SessionManager { servers, limits, connects: AtomicU64::new(0) }
    }

    /// Whether `server` is one of ours, whose annotations are believed.
    pub fn is_trusted(&self, server: &str) -> bool {
        self.servers.get(server).is_some_and(|s| s.target.trusted)
    }

    /// How many sessions were opened so far (one per server unless one broke).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Every server's tools as `server__tool`, listed concurrently; a server that
    /// cannot be listed is left out with a warning.
    pub async fn tools(&self) -> Vec<(String, Tool)> {
        let lists = self.servers.values().map(|server| async move {
            match self.session(server).await {
                Ok(client) => match client.list_all_tools().await {
                    Ok(tools) => {
                        remember_read_only(server, &tools);
                        tools.into_iter().map(|t| (format!("{}__{}", server.target.name, t.name), t)).collect()
                    }
                    Err(e) => {
                        warn!(server = %server.target.name, error = %e, "listing tools failed");
                        Vec::new()
                    }
                },
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
                if client.is_closed() {
                    // The next call connects afresh.
                    srv.session.lock().await.take();
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
        self.connects.fetch_add(1, Ordering::Relaxed);
        if target.trusted {
            match tokio::time::timeout(self.limits.connect_timeout, client.list_all_tools()).await {
                Ok(Ok(tools)) => remember_read_only(srv, &tools),
                Ok(Err(e)) => warn!(server = %target.name, error = %e, "listing tools failed; no tool is retried"),
                Err(_) => warn!(server = %target.name, "listing tools timed out; no tool is retried"),
            }
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

fn remember_read_only(srv: &Server, tools: &[Tool]) {
    if !srv.target.trusted {
        return;
    }
    let read_only = tools
        .iter()
        .filter(|t| t.annotations.as_ref().and_then(|a| a.read_only_hint).unwrap_or(false))
        .map(|t| t.name.to_string())
        .collect();
    if let Ok(mut r) = srv.read_only.lock() {
        *r = read_only;
    }
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
