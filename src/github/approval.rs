//! The gate and the registry's approval service. A pending gate asks the registry for
//! an approval of exactly its pull request, head commit and change (kind
//! `pull_request`, resource `{repository, number, head_sha}`, the diff digest in the
//! action); people allowed by the registry's policy decide it on the approval page; the
//! [`GateWatch`] reads the decision, consumes an approval (quoting the action's digest,
//! so a changed head or change cannot use it), and moves the gate. A request the gate no
//! longer needs (a push moved the head, a review approved) is withdrawn.
//!
//! The decisions are `gate::asked`, `gate::from_registry` and [`reading`]; this module
//! does the IO around them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::drafter::Drafting;
use super::gate::{self, Gate, GateState, Outcome, RegistryDecision};
use super::store::{GithubStore, GithubStoreError, StoredGate};
use crate::clock::Clock;
use crate::registry::approvals::action_digest;
use crate::registry::approvals::client::{ApprovalClient, ApprovalError, Ticket};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error(transparent)]
    Store(#[from] GithubStoreError),
}

/// The registry's approval service, as a gate needs it.
#[async_trait]
pub trait PullApprovals: Send + Sync {
    /// Opens a request for the gate's pull request at its head (or answers the open one
    /// for the same action).
    async fn ask(&self, gate: &Gate) -> Result<Ticket, ApprovalError>;
    async fn show(&self, id: &str) -> Result<Ticket, ApprovalError>;
    /// Uses approval `id` once, for the action with `digest`.
    async fn consume(&self, id: &str, digest: &str) -> Result<Ticket, ApprovalError>;
    async fn withdraw(&self, id: &str, why: &str) -> Result<(), ApprovalError>;
}

/// What a person approves: marking this pull request, at this head, holding this
/// change, ready for review.
pub fn action(gate: &Gate) -> Value {
    json!({
        "operation": "mark_pull_request_ready_for_review",
        "repository": gate.repo,
        "number": gate.number,
        "head_sha": gate.head_sha,
        "diff_digest": gate.diff_digest,
    })
}

/// The registry's `/v0.1/x/approvals` over the agent's mTLS client.
pub struct RegistryPullApprovals {
    pub client: ApprovalClient,
}

#[async_trait]
impl PullApprovals for RegistryPullApprovals {
    async fn ask(&self, gate: &Gate) -> Result<Ticket, ApprovalError> {
        let resource = json!({"repository": gate.repo, "number": gate.number, "head_sha": gate.head_sha});
        self.client.create("pull_request", resource, &action(gate), Value::Null).await
    }

    async fn show(&self, id: &str) -> Result<Ticket, ApprovalError> {
        self.client.show(id).await
    }

    async fn consume(&self, id: &str, digest: &str) -> Result<Ticket, ApprovalError> {
        self.client.consume(id, digest).await
    }

    async fn withdraw(&self, id: &str, why: &str) -> Result<(), ApprovalError> {
        self.client.revoke(id, why).await.map(|_| ())
    }
}

/// What a request's state means for its gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Nobody has decided yet.
    Wait,
    /// Approved: consume it, then the gate is approved by `by`.
    Consume { by: String },
    /// Decided; `Approved` here means consumed already (by an earlier round that did not
    /// get to store the gate).
    Decided(Decided),
}

/// An owned [`RegistryDecision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    Approved { by: String },
    Declined { by: String },
    Revoked { by: String },
    Expired,
}

impl Decided {
    pub fn as_decision(&self) -> RegistryDecision<'_> {
        match self {
            Decided::Approved { by } => RegistryDecision::Approved { by },
            Decided::Declined { by } => RegistryDecision::Declined { by },
            Decided::Revoked { by } => RegistryDecision::Revoked { by },
            Decided::Expired => RegistryDecision::Expired,
        }
    }
}

/// Reads a request as the registry shows it (pure).
pub fn reading(ticket: &Ticket) -> Reading {
    let approver = || ticket.approvals.last().map_or("someone", |v| v.who()).to_string();
    let closer = || ticket.closed_by.as_ref().map_or("someone", |v| v.who()).to_string();
    match ticket.state.as_str() {
        "approved" => Reading::Consume { by: approver() },
        "consumed" => Reading::Decided(Decided::Approved { by: approver() }),
        "declined" => Reading::Decided(Decided::Declined { by: closer() }),
        "revoked" => Reading::Decided(Decided::Revoked { by: closer() }),
        "expired" => Reading::Decided(Decided::Expired),
        _ => Reading::Wait,
    }
}

/// Keeps pending gates in step with the registry: asks for their approvals and applies
/// the decisions, then makes the pull requests show them.
#[derive(Clone)]
pub struct GateWatch {
    pub approvals: Arc<dyn PullApprovals>,
    pub store: GithubStore,
    pub clock: Arc<dyn Clock>,
    /// Settles a pull request once its gate is decided; `None` leaves GitHub as it is.
    pub drafting: Option<Arc<Drafting>>,
    pub poll: Duration,
}

/// Gates looked at per round.
const ROUND: i64 = 200;
/// How long a decided gate is left to the one who decided it before the watch settles it.
const SETTLE_GRACE_MS: i64 = 30_000;

impl GateWatch {
    /// Checks every pending gate each `poll` until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if let Err(e) = self.round().await {
                warn!(error = %e, "checking pending gates failed; trying again");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// One look at every pending gate, and at decided gates whose pull request does not
    /// show their state yet (a settle that failed); how many gates changed.
    pub async fn round(&self) -> Result<usize, WatchError> {
        if let Some(d) = &self.drafting {
            // Only gates left alone for a while: a fresh change is being settled by whoever
            // made it, and two settles at once could both post the same comment.
            let before = self.clock.now().timestamp_millis() - SETTLE_GRACE_MS;
            for stored in self.store.unsettled_gates(before, ROUND).await? {
                let (repo, number) = (stored.gate.repo.as_str(), stored.gate.number);
                if let Err(e) = d.drafter.settle(repo, number, &d.reviewers).await {
                    warn!(repo, number, error = %e, "the pull request does not show its gate's state yet");
                }
            }
        }
        let mut changed = 0;
        for stored in self.store.pending_gates(ROUND).await? {
            let (repo, number) = (stored.gate.repo.clone(), stored.gate.number);
            match self.check(stored).await {
                Ok(Some(_)) => changed += 1,
                Ok(None) => {}
                Err(e) => warn!(repo, number, error = %e, "checking a gate failed"),
            }
        }
        Ok(changed)
    }

    /// Moves one gate on, as far as the registry allows now: the gate as stored after,
    /// if it changed.
    pub async fn check(&self, stored: StoredGate) -> Result<Option<Gate>, WatchError> {
        if stored.gate.state != GateState::Pending {
            return Ok(None);
        }
        let Some(id) = stored.gate.request.clone() else {
            return ask(&*self.approvals, &self.store, &*self.clock, &stored).await.map(|asked| asked.map(|(g, _)| g));
        };
        let ticket = self.approvals.show(&id).await?;
        let decided = match reading(&ticket) {
            Reading::Wait => return Ok(None),
            Reading::Consume { by } => {
                let digest = action_digest(&action(&stored.gate));
                match self.approvals.consume(&id, &digest).await {
                    Ok(_) => Decided::Approved { by },
                    // Taken back or expired meanwhile: the next round reads what it is now.
                    Err(ApprovalError::Refused { code, message }) => {
                        info!(approval_id = %id, code, message, "the approval could not be used");
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Reading::Decided(d) => d,
        };
        let head = ticket.resource.get("head_sha").and_then(Value::as_str).unwrap_or(&stored.gate.head_sha);
        match gate::from_registry(&stored.gate, &id, head, decided.as_decision()) {
            Outcome::Unchanged(why) => {
                debug!(approval_id = %id, why, "the registry's decision changes nothing");
                Ok(None)
            }
            Outcome::Changed { gate, why } => {
                let now = self.clock.now().timestamp_millis();
                if !self.store.save_gate(&stored.id, &gate, stored.version, &why, "registry", now).await? {
                    // Changed meanwhile (a webhook): the next round decides on what is there.
                    return Ok(None);
                }
                info!(repo = %gate.repo, number = gate.number, state = gate.state.as_str(), why, "gate changed");
                self.settle(&gate).await;
                Ok(Some(gate))
            }
        }
    }

    /// Makes the pull request show its gate's state; a failure is logged and retried by
    /// the next round (the gate stays unsettled until it succeeds).
    pub async fn settle(&self, gate: &Gate) {
        if let Some(d) = &self.drafting
            && let Err(e) = d.drafter.settle(&gate.repo, gate.number, &d.reviewers).await
        {
            warn!(repo = %gate.repo, number = gate.number, error = %e, "the pull request does not show its gate's state yet");
        }
    }
}

/// Withdraws the request a gate change from `before` to `after` left open for nothing
/// (best effort: an open request expires by itself, and a decision on it no longer
/// moves the gate).
pub async fn withdraw_abandoned(approvals: &dyn PullApprovals, before: &Gate, after: &Gate) {
    if let Some(id) = gate::abandoned_request(before, after) {
        let why = format!(
            "no longer needed: {}#{} is {} at {}",
            after.repo,
            after.number,
            after.state.as_str(),
            after.head_sha
        );
        match approvals.withdraw(id, &why).await {
            Ok(()) => info!(approval_id = id, why, "approval request withdrawn"),
            Err(e) => debug!(approval_id = id, error = %e, "withdrawing an approval request failed"),
        }
    }
}

/// Asks the registry for the approval a pending gate without a request needs and stores
/// the request in the gate: the gate as stored and the approval page, or `None` if the
/// gate needs no request (or changed meanwhile; a later look asks again).
pub async fn ask(
    approvals: &dyn PullApprovals,
    store: &GithubStore,
    clock: &dyn Clock,
    stored: &StoredGate,
) -> Result<Option<(Gate, String)>, WatchError> {
    if stored.gate.state != GateState::Pending || stored.gate.request.is_some() {
        return Ok(None);
    }
    // The registry answers the open request for the same action rather than a new one,
    // so asking again after a crash here finds the same request.
    let ticket = approvals.ask(&stored.gate).await?;
    match gate::asked(&stored.gate, &ticket.id, &ticket.url) {
        Outcome::Unchanged(_) => Ok(None),
        Outcome::Changed { gate, why } => {
            let now = clock.now().timestamp_millis();
            if store.save_gate(&stored.id, &gate, stored.version, &why, "registry", now).await? {
                info!(repo = %gate.repo, number = gate.number, approval_id = %ticket.id, "approval asked for");
                Ok(Some((gate, ticket.url)))
            } else {
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(state: &str, approvals: &[&str], closed_by: Option<&str>) -> Ticket {
        serde_json::from_value(json!({
            "id": "r1", "state": state, "digest": "d", "url": "u",
            "approvals": approvals.iter().map(|a| json!({"by": format!("user:{a}"), "name": a})).collect::<Vec<_>>(),
            "closed_by": closed_by.map(|c| json!({"by": c})),
        }))
        .unwrap()
    }

    #[test]
    fn what_each_state_means_for_the_gate() {
        assert_eq!(reading(&ticket("pending", &["ann"], None)), Reading::Wait, "one of two approvals");
        assert_eq!(reading(&ticket("approved", &["ann", "bo"], None)), Reading::Consume { by: "bo".into() });
        assert_eq!(
            reading(&ticket("consumed", &["ann"], Some("spiffe://td/agent"))),
            Reading::Decided(Decided::Approved { by: "ann".into() }),
            "consumed by an earlier round: approved by the person, not by the agent"
        );
        assert_eq!(
            reading(&ticket("declined", &[], Some("user:cy"))),
            Reading::Decided(Decided::Declined { by: "cy".into() })
        );
        assert_eq!(
            reading(&ticket("revoked", &[], Some("spiffe://td/ops/admin"))),
            Reading::Decided(Decided::Revoked { by: "spiffe://td/ops/admin".into() })
        );
        assert_eq!(reading(&ticket("expired", &[], None)), Reading::Decided(Decided::Expired));
        assert_eq!(reading(&ticket("something-new", &[], None)), Reading::Wait);
    }

    #[test]
    fn the_action_binds_the_pull_request_head_and_change() {
        let gate = Gate {
            repo: "acme/etl".into(),
            number: 7,
            head_sha: "a".repeat(40),
            requester_login: None,
            state: GateState::Pending,
            approval: None,
            diff_digest: "d".repeat(64),
            request: None,
        };
        let digest = action_digest(&action(&gate));
        let moved = Gate { head_sha: "b".repeat(40), ..gate.clone() };
        let changed = Gate { diff_digest: "e".repeat(64), ..gate.clone() };
        assert_ne!(digest, action_digest(&action(&moved)));
        assert_ne!(digest, action_digest(&action(&changed)));
        assert_eq!(digest, action_digest(&action(&Gate { request: Some("r".into()), ..gate })));
    }
}
