//! Sensitive tools: nothing runs until a person approved this exact call at the registry.
//!
//! The first call creates an approval request at the registry (kind `tool_call`), bound
//! to the SHA-256 of the canonical JSON of `{server, tool, arguments, caller}`, and the
//! client is sent to the registry's approval page (URL-mode elicitation). The request
//! names the caller as the one it is `on_behalf_of`, so that a caller who is also an
//! approver cannot approve their own call there. A later call with the same arguments
//! finds the request (the registry answers an open request for the same action instead
//! of making a new one), consumes it there (digest checked, unexpired, unused) and only
//! then runs. What the client says about the elicitation
//! never counts: the approval record decides.
//!
//! On `2026-07-28` the pending answer is `input_required` carrying a sealed
//! `requestState` (HMAC, bound to the caller, the tool and the digest, with a TTL, used
//! once). The state is hostile input: a forged, altered, expired, replayed or foreign
//! one is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::{RequestStateCodec, SealOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::identity::Principal;
use crate::registry::approvals::action_digest;
use crate::registry::approvals::client::ApprovalClient;

pub use crate::registry::approvals::client::{ApprovalError, Ticket};

/// The registry's approval service, as a sensitive call needs it.
#[async_trait]
pub trait ApprovalDesk: Send + Sync {
    /// Opens a request for `action` on `tool`, done for `caller` (or returns the open one
    /// for the same action). The registry never lets `caller` decide it.
    async fn open(&self, tool: &str, caller: &Principal, action: &Value) -> Result<Ticket, ApprovalError>;
    /// Uses approval `id` once for the action with `digest`.
    async fn consume(&self, id: &str, digest: &str) -> Result<(), ApprovalError>;
}

/// The registry's `/v0.1/x/approvals` API over the server's mTLS client.
pub struct RegistryDesk {
    pub client: ApprovalClient,
    /// The server's registry name (the resource's `server`).
    pub server: String,
}

#[async_trait]
impl ApprovalDesk for RegistryDesk {
    async fn open(&self, tool: &str, caller: &Principal, action: &Value) -> Result<Ticket, ApprovalError> {
        let resource = json!({"server": self.server, "tool": tool});
        self.client.create("tool_call", resource, action, json!(caller)).await
    }

    async fn consume(&self, id: &str, digest: &str) -> Result<(), ApprovalError> {
        self.client.consume(id, digest).await.map(|_| ())
    }
}

/// What a sensitive call may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The approval was consumed: run the tool, once.
    Proceed { approval_id: String },
    /// A person has to approve first at `url`; `request_state` for 2026-07-28 clients.
    Pending { approval_id: String, url: String, request_state: Option<String> },
    /// Never going to run with what was presented.
    Refused(String),
}

/// What is sealed into `requestState`.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    approval: String,
    nonce: String,
}

/// The approval gate of one server.
pub struct Gatekeeper {
    desk: Arc<dyn ApprovalDesk>,
    server: String,
    codec: RequestStateCodec,
    state_ttl: Duration,
    /// Nonces of states already presented, until they would have expired anyway.
    used: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Gatekeeper {
    /// `key` seals request states (at least 32 bytes; random per process is fine for
    /// one replica, replicas behind one URL need a shared one).
    pub fn new(
        desk: Arc<dyn ApprovalDesk>,
        server: &str,
        key: &[u8],
        state_ttl: Duration,
    ) -> Result<Gatekeeper, String> {
        let codec = RequestStateCodec::try_new(key.to_vec()).map_err(|e| e.to_string())?;
        Ok(Gatekeeper { desk, server: server.to_string(), codec, state_ttl, used: Default::default() })
    }

    /// The exact action an approval is bound to.
    pub fn action(&self, caller: &Principal, tool: &str, args: &Map<String, Value>) -> Value {
        json!({"server": self.server, "tool": tool, "arguments": args, "caller": caller.id()})
    }

    /// Decides whether this call of a sensitive tool may run. `request_state` is what a
    /// 2026-07-28 client echoed; `modern` says whether to seal a new one.
    pub async fn check(
        &self,
        caller: &Principal,
        tool: &str,
        args: &Map<String, Value>,
        request_state: Option<&str>,
        modern: bool,
    ) -> Gate {
        let action = self.action(caller, tool, args);
        let digest = action_digest(&action);
        let bound = binding(caller, tool, &digest);
        if let Some(state) = request_state {
            let sealed: Sealed = match self.codec.open_json_with(state, bound.as_bytes()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(tool, caller = %caller.id(), error = %e, "requestState refused");
                    return Gate::Refused(format!("the requestState is not valid for this call: {e}"));
                }
            };
            if !self.first_use(&sealed.nonce) {
                tracing::warn!(tool, caller = %caller.id(), "requestState replayed");
                return Gate::Refused("the requestState was already used".into());
            }
            return self.consume_or_wait(caller, tool, &digest, sealed.approval, None, modern).await;
        }
        let ticket = match self.desk.open(tool, caller, &action).await {
            Ok(t) => t,
            Err(e) => return Gate::Refused(format!("cannot ask for approval: {e}")),
        };
        if ticket.digest != digest {
            return Gate::Refused("the registry bound the approval to another action".into());
        }
        match ticket.state.as_str() {
            "approved" => self.consume_or_wait(caller, tool, &digest, ticket.id, Some(ticket.url), modern).await,
            "pending" => self.pending(caller, tool, &digest, ticket.id, ticket.url, modern),
            other => Gate::Refused(format!("the approval request is {other}")),
        }
    }

    async fn consume_or_wait(
        &self,
        caller: &Principal,
        tool: &str,
        digest: &str,
        approval_id: String,
        url: Option<String>,
        modern: bool,
    ) -> Gate {
        match self.desk.consume(&approval_id, digest).await {
            Ok(()) => {
                tracing::info!(tool, caller = %caller.id(), approval_id, "approval consumed");
                Gate::Proceed { approval_id }
            }
            Err(ApprovalError::Refused { code, .. }) if code == "not_approved" => {
                let url = url.unwrap_or_else(|| format!("(approval {approval_id})"));
                self.pending(caller, tool, digest, approval_id, url, modern)
            }
            Err(e) => Gate::Refused(format!("the approval cannot be used: {e}")),
        }
    }

    fn pending(
        &self,
        caller: &Principal,
        tool: &str,
        digest: &str,
        approval_id: String,
        url: String,
        modern: bool,
    ) -> Gate {
        let request_state = modern.then(|| self.seal(caller, tool, digest, &approval_id)).flatten();
        Gate::Pending { approval_id, url, request_state }
    }

    fn seal(&self, caller: &Principal, tool: &str, digest: &str, approval_id: &str) -> Option<String> {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let bound = binding(caller, tool, digest);
        let options = SealOptions::new().associated_data(bound.as_bytes()).ttl(self.state_ttl);
        self.codec.seal_json_with(&Sealed { approval: approval_id.to_string(), nonce }, &options).ok()
    }

    /// Records `nonce` as used; false if it already was.
    fn first_use(&self, nonce: &str) -> bool {
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        used.retain(|_, until| *until > now);
        used.insert(nonce.to_string(), now + self.state_ttl).is_none()
    }
}

/// The context a state is bound to: who, which tool, which exact action.
fn binding(caller: &Principal, tool: &str, digest: &str) -> String {
    format!("{}\n{tool}\n{digest}", caller.id())
}
