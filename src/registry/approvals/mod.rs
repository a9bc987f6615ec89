//! The approval service: a person approves one exact action before a service may do it.
//!
//! A service (an MCP server about to run a sensitive tool, the PR drafter about to mark
//! a pull request ready) creates an [`ApprovalRequest`] for an action; the request is
//! bound to the SHA-256 of the action's canonical JSON. People allowed by the registry's
//! policy for the resource approve or decline it on the approval page, quoting the digest
//! they were shown; the requesting service then consumes the approval once, quoting the
//! digest of what it is about to do.
//!
//! ```text
//! pending ──approve (enough distinct people)──► approved ──consume (requester, once)──► consumed
//!    │ decline (any allowed approver)             │
//!    ├──────────────► declined                    │ revoke (requester or admin)
//!    │ revoke ───────► revoked ◄──────────────────┤
//!    └ past expires_at ► expired ◄────────────────┘ past expires_at
//! ```
//!
//! - [`machine`]: every transition and refusal as a pure function.
//! - [`service`]: load, decide, store with the audit records, retry on a concurrent
//!   change; the expiry sweep.
//! - [`store`]: [`ApprovalStore`], the requests' persistence, each change written in one
//!   transaction with its audit records.
//! - [`routes`]: the HTTP API under `/v0.1/x/approvals`.
//! - [`canonical`]: canonical JSON and the action digest.
//! - [`client`]: the API as a requesting service calls it.

pub mod canonical;
pub mod client;
pub mod machine;
pub mod routes;
pub mod service;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use canonical::{action_digest, canonical_json};
pub use routes::{ApprovalContext, router, routes};
pub use service::{run_sweeper, sweep_expired};
pub use store::{ApprovalStore, Created};

use super::authz::PolicyCache;
use crate::config::PullRequestApprovers;
use crate::identity::Principal;
use crate::policy::ApproverPolicy;
use crate::store::SqlStore;

/// One request for a person's approval of one exact action.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    pub id: String,
    /// What is to be done, as canonical JSON allows: the digest covers exactly this.
    pub action: serde_json::Value,
    /// Lowercase hex SHA-256 of the canonical JSON of `action`.
    pub digest: String,
    /// The service that asked, and the only one that may consume the approval.
    pub requester: Principal,
    /// Who the action is done for, as the requester authenticated them (for a tool call,
    /// the tool's caller: a person with a bearer token, or a service). Like the
    /// requester, they may never decide the request: a person in the approver group must
    /// not approve their own call. `None` when the service acts for nobody else.
    pub on_behalf_of: Option<Principal>,
    /// What the action is done to; the approver policy was looked up for it.
    pub resource: Resource,
    /// Who may decide and how many distinct people must approve; fixed at creation
    /// from the registry's policy, never from the request body.
    pub policy: ApproverPolicy,
    /// The stored state; see [`machine::effective_state`] for what it means at a time.
    pub state: ApprovalState,
    /// Distinct people who approved, in order.
    pub approvals: Vec<Vote>,
    /// Who moved the request into `declined`, `revoked` or `consumed`.
    pub closed_by: Option<Vote>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped on every stored change; writes are compare-and-set on it.
    pub version: i64,
}

impl ApprovalRequest {
    pub fn kind(&self) -> ApprovalKind {
        self.resource.kind()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// A call of a sensitive MCP tool.
    ToolCall,
    /// Marking a drafted pull request ready for review.
    PullRequest,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::ToolCall => "tool_call",
            ApprovalKind::PullRequest => "pull_request",
        }
    }
}

/// What an action is done to. Serialized without a tag: the request's `kind` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Resource {
    ToolCall {
        server: String,
        tool: String,
    },
    PullRequest {
        /// `owner/name`.
        repository: String,
        number: u64,
        /// The head commit the approval is bound to; a new push needs a new approval.
        head_sha: String,
    },
}

impl Resource {
    pub fn kind(&self) -> ApprovalKind {
        match self {
            Resource::ToolCall { .. } => ApprovalKind::ToolCall,
            Resource::PullRequest { .. } => ApprovalKind::PullRequest,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Declined,
    Expired,
    Revoked,
    Consumed,
}

impl ApprovalState {
    pub const ALL: [ApprovalState; 6] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Declined,
        ApprovalState::Expired,
        ApprovalState::Revoked,
        ApprovalState::Consumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Declined => "declined",
            ApprovalState::Expired => "expired",
            ApprovalState::Revoked => "revoked",
            ApprovalState::Consumed => "consumed",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalState> {
        ApprovalState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Pending, or approved and not yet consumed: the states that can still expire.
    pub fn is_open(self) -> bool {
        matches!(self, ApprovalState::Pending | ApprovalState::Approved)
    }
}

/// One person's (or, for `consumed`, the requester's) act on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vote {
    /// The principal's stable id (`user:<subject>` or a SPIFFE ID).
    pub by: String,
    /// What pages show for them, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub at: DateTime<Utc>,
}

impl Vote {
    pub fn new(principal: &Principal, at: DateTime<Utc>) -> Vote {
        let name = match principal {
            Principal::User { name, .. } => name.clone(),
            Principal::Service { .. } => None,
        };
        Vote { by: principal.id(), name, at }
    }
}

/// The registry's policy could not be consulted (its store is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("the registry's policy cannot be read: {0}")]
pub struct PolicyUnavailable(pub String);

/// Who must approve what: the registry's policy, as the approval service needs it.
///
/// [`RegistryApprovers`] answers from the registry's `authz::PolicyCache`; tests put a
/// table in its place. `None` means the policy names no approvers for the resource, and
/// then no request can be made for it (fail closed: nobody could approve it anyway).
#[async_trait]
pub trait ApproverLookup: Send + Sync + 'static {
    /// Approvers of a call of `tool` on `server`.
    async fn tool_approvers(&self, server: &str, tool: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable>;
    /// Approvers of pull requests on `repository` (`owner/name`).
    async fn pull_request_approvers(&self, repository: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable>;
    /// Whether any approver policy names `principal`; such people may read the audit log.
    async fn is_approver(&self, principal: &Principal) -> Result<bool, PolicyUnavailable>;
}

/// The registry's policy cache, brought up to date from the store before each answer
/// (as the other registry handlers do), so a policy change reaches approvals within the
/// cache's staleness bound.
pub struct RegistryApprovers {
    pub cache: Arc<PolicyCache>,
    pub store: Arc<SqlStore>,
    /// Who approves drafted pull requests, per repository.
    pub pull_requests: Vec<PullRequestApprovers>,
}

impl RegistryApprovers {
    async fn fresh(&self) -> Result<&PolicyCache, PolicyUnavailable> {
        self.cache.ensure_fresh(&*self.store).await.map_err(|e| PolicyUnavailable(e.to_string()))?;
        Ok(&self.cache)
    }
}

#[async_trait]
impl ApproverLookup for RegistryApprovers {
    async fn tool_approvers(&self, server: &str, tool: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable> {
        Ok(self.fresh().await?.approvers(server, tool))
    }

    // From the registry's configuration (`registry.pull_request_approvers`): the first
    // rule covering the repository. None covering it: nobody may approve (fail closed).
    async fn pull_request_approvers(&self, repository: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable> {
        Ok(self
            .pull_requests
            .iter()
            .find(|rule| rule.covers(repository))
            .map(|rule| ApproverPolicy { approvers: rule.approvers.clone(), required: rule.required }))
    }

    async fn is_approver(&self, principal: &Principal) -> Result<bool, PolicyUnavailable> {
        let of_pull_requests = self.pull_requests.iter().any(|r| crate::policy::any_matches(&r.approvers, principal));
        Ok(of_pull_requests || self.fresh().await?.is_approver(principal))
    }
}
