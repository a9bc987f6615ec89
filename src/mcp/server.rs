//! Serving a [`Domain`] over MCP: the rmcp [`ServerHandler`] that lists the tools a
//! caller may use, and runs a call after authorization (and, for a sensitive tool, after
//! the approval was consumed), with progress, cancellation, a deadline, metrics, usage
//! and audit around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ErrorCode, Implementation, InputRequest, InputRequests, InputRequiredResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::approval::{Gate, Gatekeeper};
use super::authz::ToolAuthz;
use super::observe::{AuditLog, Outcome, ServerMetrics, Usage, UsageReporter};
use super::settings::ServerSettings;
use super::tool::{Domain, Progress, ToolCall, ToolError, ToolSpec};
use crate::identity::Principal;
use crate::policy::Decision;

/// JSON-RPC error of 2025-11-25: the call needs the person to visit a URL first.
pub const URL_ELICITATION_REQUIRED: i32 = -32042;

/// How long a cancelled or timed-out domain call gets to wind down before it is dropped.
const WIND_DOWN: Duration = Duration::from_secs(5);

/// Everything one server holds; shared by the per-session handlers.
pub struct Framework {
    pub settings: ServerSettings,
    pub domain: Arc<dyn Domain>,
    pub tools: Vec<ToolSpec>,
    pub authz: ToolAuthz,
    /// `None`: no approval service, so tools needing approval are refused.
    pub gate: Option<Gatekeeper>,
    pub metrics: ServerMetrics,
    pub usage: UsageReporter,
    pub audit: AuditLog,
}

/// The rmcp handler; cheap to clone (one per session or stateless request).
#[derive(Clone)]
pub struct McpServer(pub Arc<Framework>);

impl McpServer {
    fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.0.tools.iter().find(|t| t.name == name)
    }
}

/// The caller the authentication layer resolved for this request.
fn caller(ctx: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Principal>())
        .cloned()
        .ok_or_else(|| ErrorData::invalid_request("unauthenticated", None))
}

/// A tool as MCP lists it, every hint spelled out.
pub fn to_mcp_tool(spec: &ToolSpec) -> Tool {
    let annotations = ToolAnnotations::with_title(spec.title)
        .read_only(spec.hints.read_only)
        .destructive(spec.hints.destructive)
        .idempotent(spec.hints.idempotent)
        .open_world(spec.hints.open_world);
    Tool::new(spec.name, spec.description, Arc::new(spec.input_schema.clone()))
        .with_title(spec.title)
        .with_raw_output_schema(Arc::new(spec.output_schema.clone()))
        .with_annotations(annotations)
}

fn error_result(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let s = &self.0.settings;
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(format!("inquest-{}", s.id), env!("CARGO_PKG_VERSION")))
            .with_instructions(self.0.domain.description())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let who = caller(&ctx)?;
        let policy = self.0.authz.policy().await.map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let tools = self
            .0
            .tools
            .iter()
            .filter(|t| !crate::policy::decide(&policy, &who, Some(t.name)).is_deny())
            .map(to_mcp_tool)
            .collect();
        // What is listed depends on who asks.
        Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let who = caller(&ctx)?;
        let started = Instant::now();
        let name = request.name.to_string();
        let args = request.arguments.clone().unwrap_or_default();
        let fw = &self.0;
        let finish = |outcome: Outcome, output: &Value| {
            let elapsed = started.elapsed();
            fw.metrics.record(&name, outcome, elapsed);
            fw.usage.report(Usage {
                server: fw.settings.registry_name.clone(),
                tool: name.clone(),
                principal: who.id(),
                outcome,
                latency_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            });
            fw.audit.record(&fw.settings.registry_name, &name, &who.id(), &args, outcome, output);
        };

        let refuse = |message: String| {
            finish(Outcome::Denied, &json!({"refused": message}));
            Ok(error_result(message).into())
        };
        let Some(spec) = self.spec(&name) else {
            return refuse(format!("unknown tool `{name}`"));
        };
        let decision = match fw.authz.decide(&who, Some(spec.name)).await {
            Ok(d) => d,
            Err(e) => return refuse(format!("authorization is unavailable: {e}")),
        };
        match decision {
            Decision::Deny { .. } => {
                tracing::info!(tool = %name, caller = %who.id(), "call refused by policy");
                // Said as for a tool that does not exist: a caller learns nothing of tools it may not use.
                return refuse(format!("unknown tool `{name}`"));
            }
            // Fail closed: a tool its domain marks sensitive never runs on a plain allow,
            // whatever the policy says of unlisted tools; the policy must name who approves.
            Decision::Allow { .. } if spec.sensitive => {
                tracing::warn!(tool = %name, caller = %who.id(), "sensitive tool allowed without approval: refused");
                return refuse(format!(
                    "`{name}` is a sensitive tool and the registry's policy names nobody to approve it; \
                     an admin must list it with approvers (access.tools.{name}.approval) before it can run"
                ));
            }
            Decision::Allow { .. } => {}
            Decision::NeedsApproval { .. } => {
                let Some(gate) = &fw.gate else {
                    return refuse("this tool needs a person's approval and no approval service is configured".into());
                };
                let modern = ctx.protocol_version().is_some_and(|v| !v.has_initialize());
                let mut verdict = gate.check(&who, &name, &args, request.request_state.as_deref(), modern).await;
                if let Gate::Pending { approval_id, url, .. } = &verdict
                    && !modern
                    && ctx.peer.supported_elicitation_modes().contains(&rmcp::service::ElicitationMode::Url)
                {
                    // The answer does not count; the person may finish meanwhile, so look again.
                    let params = url_elicitation(&name, approval_id, url);
                    let answer =
                        ctx.peer.create_elicitation_with_timeout(params, Some(fw.settings.elicitation_wait)).await;
                    tracing::debug!(?answer, approval_id, "URL elicitation answered (not counted)");
                    verdict = gate.check(&who, &name, &args, None, false).await;
                }
                match verdict {
                    Gate::Proceed { .. } => {}
                    Gate::Refused(why) => return refuse(why),
                    Gate::Pending { approval_id, url, request_state } => {
                        finish(Outcome::Denied, &json!({"pending_approval": approval_id}));
                        return pending_answer(&name, &approval_id, &url, request_state, modern);
                    }
                }
            }
        }

        let cancel = CancellationToken::new();
        let progress = PeerProgress { peer: ctx.peer.clone(), token: ctx.meta.get_progress_token() };
        let deadline = fw.settings.call_timeout;
        let call = ToolCall {
            tool: spec.name,
            args: args.clone(),
            caller: &who,
            progress: &progress,
            cancel: cancel.clone(),
            deadline,
        };
        let work = fw.domain.call(call);
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => r,
            _ = ctx.ct.cancelled() => {
                cancel.cancel();
                let _ = tokio::time::timeout(WIND_DOWN, &mut work).await;
                Err(ToolError::Cancelled)
            }
            _ = tokio::time::sleep(deadline) => {
                cancel.cancel();
                let _ = tokio::time::timeout(WIND_DOWN, &mut work).await;
                Err(ToolError::Timeout(deadline))
            }
        };
        match result {
            Ok(value) => {
                finish(Outcome::Ok, &value);
                Ok(CallToolResult::structured(value).into())
            }
            Err(e) => {
                tracing::info!(tool = %name, error = %e, "tool call failed");
                let message = e.to_string();
                finish(Outcome::Error, &json!({"error": message}));
                Ok(error_result(message).into())
            }
        }
    }
}

fn approval_message(tool: &str) -> String {
    format!("`{tool}` needs a person's approval. Open the link, have an approver approve, then call again.")
}

fn url_elicitation(tool: &str, approval_id: &str, url: &str) -> ElicitRequestParams {
    ElicitRequestParams::UrlElicitationParams {
        meta: None,
        message: approval_message(tool),
        url: url.to_string(),
        elicitation_id: approval_id.to_string(),
    }
}

/// The answer while an approval is pending: `input_required` on 2026-07-28, the -32042
/// error on earlier revisions. Both carry the same URL-mode elicitation.
fn pending_answer(
    tool: &str,
    approval_id: &str,
    url: &str,
    request_state: Option<String>,
    modern: bool,
) -> Result<CallToolResponse, ErrorData> {
    let message = approval_message(tool);
    if modern {
        let params = url_elicitation(tool, approval_id, url);
        let mut requests = InputRequests::new();
        requests.insert("approval".to_string(), InputRequest::Elicitation(ElicitRequest::new(params)));
        return Ok(InputRequiredResult::new(Some(requests), request_state).into());
    }
    let data = json!({"elicitations": [{"mode": "url", "elicitationId": approval_id, "url": url, "message": message}]});
    Err(ErrorData::new(ErrorCode(URL_ELICITATION_REQUIRED), "this call needs a person's approval first", Some(data)))
}

/// Sends `notifications/progress` when the client gave a progress token.
struct PeerProgress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
}

#[async_trait]
impl Progress for PeerProgress {
    async fn report(&self, progress: f64, total: Option<f64>, message: &str) {
        let Some(token) = &self.token else { return };
        let mut param = ProgressNotificationParam::new(token.clone(), progress);
        param.total = total;
        param.message = (!message.is_empty()).then(|| message.to_string());
        if let Err(e) = self.peer.notify_progress(param).await {
            tracing::debug!(error = %e, "a progress notification was not delivered");
        }
    }
}

/// Arguments as a map, for places that hold them as a value.
pub fn as_map(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}
