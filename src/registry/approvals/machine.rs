//! The approval state machine as pure functions: each takes a request, an actor and a
//! time, and returns either the next request with its [`Effect`]s (what the caller
//! records in the audit log) or a [`Refusal`] saying exactly why not. Nothing here does
//! IO or reads a clock; the routes load, call, and store.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{ApprovalRequest, ApprovalState, Resource, Vote};
use crate::identity::Principal;
use crate::policy::{ApproverPolicy, matches};

/// A person's answer to a request, with the digest they were shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Decline,
}

/// A request after a transition, and what happened, for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub request: ApprovalRequest,
    pub effects: Vec<Effect>,
}

/// Something that happened to a request. Each becomes one audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Created,
    /// A person approved; more distinct approvals are needed.
    ApprovalCounted {
        by: String,
        have: u32,
        need: u32,
    },
    /// The approval that made the request approved.
    Approved {
        by: String,
    },
    Declined {
        by: String,
    },
    Expired,
    Revoked {
        by: String,
    },
    Consumed {
        by: String,
    },
}

impl Effect {
    /// The audit record's `action`.
    pub fn audit_action(&self) -> &'static str {
        match self {
            Effect::Created => "approval.created",
            Effect::ApprovalCounted { .. } => "approval.approval_counted",
            Effect::Approved { .. } => "approval.approved",
            Effect::Declined { .. } => "approval.declined",
            Effect::Expired => "approval.expired",
            Effect::Revoked { .. } => "approval.revoked",
            Effect::Consumed { .. } => "approval.consumed",
        }
    }
}

/// Why an actor may not do what it asked. Each has a stable code for API answers and
/// audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Only services create requests: a person asking for an approval would be asking
    /// themselves or their peers for something no service will carry out.
    #[error("only services create approval requests")]
    OnlyServicesRequest,
    /// The registry's policy names no approvers for the resource.
    #[error("the policy names no approvers for this resource")]
    NoApproverPolicy,
    #[error("the requester cannot decide its own request")]
    SelfApproval,
    /// The action is done for the actor (they called the tool): someone else decides.
    #[error("the action is done on your behalf; someone else must decide it")]
    OwnAction,
    #[error("services cannot approve or decline; only people can")]
    ServiceCannotDecide,
    #[error("you are not an approver of this request")]
    NotAnApprover,
    #[error("only the service that made the request may consume it")]
    NotRequester,
    #[error("only the requester or an administrator may revoke a request")]
    NotAllowedToRevoke,
    #[error("the digest does not match the request's action")]
    DigestMismatch,
    #[error("the request has expired")]
    Expired,
    #[error("the request has not been approved yet")]
    NotApproved,
    #[error("the request is already approved")]
    AlreadyApproved,
    #[error("you already approved this request; each person counts once")]
    DuplicateApproval,
    #[error("the request was declined")]
    Declined,
    #[error("the request was revoked")]
    Revoked,
    #[error("the approval was already used")]
    AlreadyConsumed,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::OnlyServicesRequest => "only_services_request",
            Refusal::NoApproverPolicy => "no_approver_policy",
            Refusal::SelfApproval => "self_approval",
            Refusal::OwnAction => "own_action",
            Refusal::ServiceCannotDecide => "service_cannot_decide",
            Refusal::NotAnApprover => "not_an_approver",
            Refusal::NotRequester => "not_requester",
            Refusal::NotAllowedToRevoke => "not_allowed_to_revoke",
            Refusal::DigestMismatch => "digest_mismatch",
            Refusal::Expired => "expired",
            Refusal::NotApproved => "not_approved",
            Refusal::AlreadyApproved => "already_approved",
            Refusal::DuplicateApproval => "duplicate_approval",
            Refusal::Declined => "declined",
            Refusal::Revoked => "revoked",
            Refusal::AlreadyConsumed => "already_consumed",
        }
    }

    /// Refused because of who is asking (403), rather than the request's state or the
    /// digest (409).
    pub fn is_about_identity(self) -> bool {
        matches!(
            self,
            Refusal::OnlyServicesRequest
                | Refusal::SelfApproval
                | Refusal::OwnAction
                | Refusal::ServiceCannotDecide
                | Refusal::NotAnApprover
                | Refusal::NotRequester
                | Refusal::NotAllowedToRevoke
        )
    }
}

/// What a new request needs besides its identity and time.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub requester: Principal,
    /// Who the action is for, as the requester says (it authenticated them).
    pub on_behalf_of: Option<Principal>,
    pub resource: Resource,
    pub action: serde_json::Value,
    /// The registry's policy for `resource`, looked up by the caller.
    pub policy: Option<ApproverPolicy>,
    pub ttl: Duration,
}

/// Opens a request: pending, bound to the digest of `action`, expiring after `ttl`.
pub fn open(new: NewRequest, now: DateTime<Utc>) -> Result<Transition, Refusal> {
    if !new.requester.is_service() {
        return Err(Refusal::OnlyServicesRequest);
    }
    let mut policy = new.policy.filter(|p| !p.approvers.is_empty()).ok_or(Refusal::NoApproverPolicy)?;
    // A policy asking for zero approvals would approve on creation; never let it.
    policy.required = policy.required.max(1);
    let ttl = chrono::Duration::from_std(new.ttl).unwrap_or(chrono::Duration::MAX);
    let request = ApprovalRequest {
        id: new.id,
        digest: super::action_digest(&new.action),
        action: new.action,
        requester: new.requester,
        on_behalf_of: new.on_behalf_of,
        resource: new.resource,
        policy,
        state: ApprovalState::Pending,
        approvals: Vec::new(),
        closed_by: None,
        created_at: now,
        expires_at: now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC),
        updated_at: now,
        version: 1,
    };
    Ok(Transition { request, effects: vec![Effect::Created] })
}

/// A person approves or declines. Approvals count once per person; the request is
/// approved when `policy.required` distinct people approved; one decline declines it.
pub fn decide(
    request: &ApprovalRequest,
    actor: &Principal,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    // Who is asking comes first, so that nobody else learns anything about the request.
    if actor.id() == request.requester.id() {
        return Err(Refusal::SelfApproval);
    }
    if is_on_behalf_of(request, actor) {
        return Err(Refusal::OwnAction);
    }
    if actor.is_service() {
        return Err(Refusal::ServiceCannotDecide);
    }
    if !names(&request.policy, actor) {
        return Err(Refusal::NotAnApprover);
    }
    if decision.digest != request.digest {
        return Err(Refusal::DigestMismatch);
    }
    match effective_state(request, now) {
        ApprovalState::Pending => {}
        ApprovalState::Approved => return Err(Refusal::AlreadyApproved),
        closed => return Err(refusal_for_closed(closed)),
    }
    let vote = Vote::new(actor, now);
    let mut next = request.clone();
    next.updated_at = now;
    match decision.verdict {
        // Declining is allowed even after approving: it only ever makes things safer.
        Verdict::Decline => {
            next.state = ApprovalState::Declined;
            next.closed_by = Some(vote.clone());
            Ok(Transition { request: next, effects: vec![Effect::Declined { by: vote.by }] })
        }
        Verdict::Approve => {
            if request.approvals.iter().any(|v| v.by == vote.by) {
                return Err(Refusal::DuplicateApproval);
            }
            next.approvals.push(vote.clone());
            // Distinct people, counted again rather than trusted from the list's length.
            let people: std::collections::BTreeSet<&str> = next.approvals.iter().map(|v| v.by.as_str()).collect();
            let have = u32::try_from(people.len()).unwrap_or(u32::MAX);
            let need = request.policy.required.max(1);
            let effect = if have >= need {
                next.state = ApprovalState::Approved;
                Effect::Approved { by: vote.by }
            } else {
                Effect::ApprovalCounted { by: vote.by, have, need }
            };
            Ok(Transition { request: next, effects: vec![effect] })
        }
    }
}

/// The requester uses its approval, once, for exactly the approved action.
pub fn consume(
    request: &ApprovalRequest,
    actor: &Principal,
    digest: &str,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    if actor.id() != request.requester.id() {
        return Err(Refusal::NotRequester);
    }
    if digest != request.digest {
        return Err(Refusal::DigestMismatch);
    }
    match effective_state(request, now) {
        ApprovalState::Approved => {}
        ApprovalState::Pending => return Err(Refusal::NotApproved),
        closed => return Err(refusal_for_closed(closed)),
    }
    let vote = Vote::new(actor, now);
    let mut next = request.clone();
    next.state = ApprovalState::Consumed;
    next.closed_by = Some(vote.clone());
    next.updated_at = now;
    Ok(Transition { request: next, effects: vec![Effect::Consumed { by: vote.by }] })
}

/// The requester or an administrator withdraws a request, pending or approved, until
/// it is consumed.
pub fn revoke(
    request: &ApprovalRequest,
    actor: &Principal,
    actor_is_admin: bool,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    if actor.id() != request.requester.id() && !actor_is_admin {
        return Err(Refusal::NotAllowedToRevoke);
    }
    match effective_state(request, now) {
        ApprovalState::Pending | ApprovalState::Approved => {}
        closed => return Err(refusal_for_closed(closed)),
    }
    let vote = Vote::new(actor, now);
    let mut next = request.clone();
    next.state = ApprovalState::Revoked;
    next.closed_by = Some(vote.clone());
    next.updated_at = now;
    Ok(Transition { request: next, effects: vec![Effect::Revoked { by: vote.by }] })
}

/// Marks an open request past its expiry as expired; `None` if it is not one.
pub fn expire(request: &ApprovalRequest, now: DateTime<Utc>) -> Option<Transition> {
    if !request.state.is_open() || now < request.expires_at {
        return None;
    }
    let mut next = request.clone();
    next.state = ApprovalState::Expired;
    next.updated_at = now;
    Some(Transition { request: next, effects: vec![Effect::Expired] })
}

/// The state as of `now`: an open request past its expiry is expired, whether or not
/// a sweep has stored that yet.
pub fn effective_state(request: &ApprovalRequest, now: DateTime<Utc>) -> ApprovalState {
    if request.state.is_open() && now >= request.expires_at { ApprovalState::Expired } else { request.state }
}

/// A person the request's policy names, who is neither its requester nor the one it is
/// for: may decide it (subject to its state) and may see it.
pub fn is_allowed_approver(request: &ApprovalRequest, actor: &Principal) -> bool {
    !actor.is_service()
        && actor.id() != request.requester.id()
        && !is_on_behalf_of(request, actor)
        && names(&request.policy, actor)
}

/// Whether the request's action is done for `actor`.
pub fn is_on_behalf_of(request: &ApprovalRequest, actor: &Principal) -> bool {
    request.on_behalf_of.as_ref().is_some_and(|p| p.id() == actor.id())
}

/// Whether `actor` could approve or decline the request right now.
pub fn may_decide(request: &ApprovalRequest, actor: &Principal, now: DateTime<Utc>) -> bool {
    let id = actor.id();
    is_allowed_approver(request, actor)
        && effective_state(request, now) == ApprovalState::Pending
        && !request.approvals.iter().any(|v| v.by == id)
}

/// The requester, the one it is for (the approval page is where their call sent them),
/// an allowed approver, or an administrator.
pub fn may_view(request: &ApprovalRequest, actor: &Principal, actor_is_admin: bool) -> bool {
    actor_is_admin
        || actor.id() == request.requester.id()
        || is_on_behalf_of(request, actor)
        || is_allowed_approver(request, actor)
}

fn names(policy: &ApproverPolicy, actor: &Principal) -> bool {
    policy.approvers.iter().any(|m| matches(m, actor))
}

fn refusal_for_closed(state: ApprovalState) -> Refusal {
    match state {
        ApprovalState::Declined => Refusal::Declined,
        ApprovalState::Revoked => Refusal::Revoked,
        ApprovalState::Consumed => Refusal::AlreadyConsumed,
        // Pending and approved are handled by each caller; expired is the rest.
        ApprovalState::Expired | ApprovalState::Pending | ApprovalState::Approved => Refusal::Expired,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_764_000_000 + secs, 0).unwrap()
    }

    fn airflow() -> Principal {
        Principal::service("spiffe://inquest.local/server/airflow")
    }
    fn agent() -> Principal {
        Principal::service("spiffe://inquest.local/agent")
    }
    fn alice() -> Principal {
        Principal::user("alice", &["data-eng"])
    }
    fn bob() -> Principal {
        Principal::user("bob", &["data-eng"])
    }
    fn mallory() -> Principal {
        Principal::user("mallory", &["ml"])
    }
    /// An approver who called the tool themselves: the request is on their behalf. Known
    /// to the requester with other groups and a name, so only the id may count.
    fn carol() -> Principal {
        Principal::user("carol", &["data-eng"])
    }
    fn carol_as_caller() -> Principal {
        Principal::User { subject: "carol".into(), groups: vec![], name: Some("Carol".into()) }
    }

    fn request(required: u32) -> ApprovalRequest {
        let new = NewRequest {
            id: "r1".into(),
            requester: airflow(),
            on_behalf_of: Some(carol_as_caller()),
            resource: Resource::ToolCall { server: "airflow".into(), tool: "clear_task".into() },
            action: json!({"tool": "clear_task", "arguments": {"dag": "etl", "task": "load"}, "caller": "user:carol"}),
            policy: Some(ApproverPolicy { approvers: vec!["group:data-eng".into()], required }),
            ttl: TTL,
        };
        open(new, t(0)).unwrap().request
    }

    /// One step of a scenario and what it must give.
    enum Step {
        Decide(Principal, Verdict),
        /// A decision quoting some other digest.
        DecideWrongDigest(Principal),
        Consume(Principal),
        ConsumeWrongDigest(Principal),
        Revoke(Principal, bool),
        Expire,
    }

    fn run(req: &ApprovalRequest, step: &Step, now: DateTime<Utc>) -> Result<Transition, Refusal> {
        let d = |verdict| Decision { verdict, digest: req.digest.clone() };
        match step {
            Step::Decide(p, v) => decide(req, p, &d(*v), now),
            Step::DecideWrongDigest(p) => {
                decide(req, p, &Decision { verdict: Verdict::Approve, digest: "0".repeat(64) }, now)
            }
            Step::Consume(p) => consume(req, p, &req.digest, now),
            Step::ConsumeWrongDigest(p) => consume(req, p, &"0".repeat(64), now),
            Step::Revoke(p, admin) => revoke(req, p, *admin, now),
            Step::Expire => expire(req, now).ok_or(Refusal::Expired),
        }
    }

    #[test]
    fn scenario_table() {
        use ApprovalState::*;
        use Step::*;
        use Verdict::*;
        // (name, approvals required, steps with seconds after creation and the outcome:
        // the state afterwards, or the refusal)
        type Outcome = Result<ApprovalState, Refusal>;
        type Scenario = (&'static str, u32, Vec<(i64, Step, Outcome)>);
        let scenarios: Vec<Scenario> = vec![
            (
                "approve then consume",
                1,
                vec![(1, Decide(alice(), Approve), Ok(Approved)), (2, Consume(airflow()), Ok(Consumed))],
            ),
            ("self-approval refused", 1, vec![(1, Decide(airflow(), Approve), Err(Refusal::SelfApproval))]),
            (
                "approval of one's own tool call refused",
                1,
                vec![
                    (1, Decide(carol(), Approve), Err(Refusal::OwnAction)),
                    (2, Consume(airflow()), Err(Refusal::NotApproved)),
                ],
            ),
            ("decline of one's own tool call refused", 1, vec![(1, Decide(carol(), Decline), Err(Refusal::OwnAction))]),
            (
                "another approver approves the caller's tool call",
                1,
                vec![
                    (1, Decide(carol(), Approve), Err(Refusal::OwnAction)),
                    (2, Decide(alice(), Approve), Ok(Approved)),
                    (3, Consume(airflow()), Ok(Consumed)),
                ],
            ),
            (
                "the caller never counts towards two approvals",
                2,
                vec![
                    (1, Decide(alice(), Approve), Ok(Pending)),
                    (2, Decide(carol(), Approve), Err(Refusal::OwnAction)),
                    (3, Decide(bob(), Approve), Ok(Approved)),
                ],
            ),
            ("service approval refused", 1, vec![(1, Decide(agent(), Approve), Err(Refusal::ServiceCannotDecide))]),
            ("service decline refused", 1, vec![(1, Decide(agent(), Decline), Err(Refusal::ServiceCannotDecide))]),
            ("unauthorized approver refused", 1, vec![(1, Decide(mallory(), Approve), Err(Refusal::NotAnApprover))]),
            ("unauthorized decline refused", 1, vec![(1, Decide(mallory(), Decline), Err(Refusal::NotAnApprover))]),
            (
                "decision digest mismatch refused",
                1,
                vec![(1, DecideWrongDigest(alice()), Err(Refusal::DigestMismatch))],
            ),
            (
                "replayed consumption refused",
                1,
                vec![
                    (1, Decide(alice(), Approve), Ok(Approved)),
                    (2, Consume(airflow()), Ok(Consumed)),
                    (3, Consume(airflow()), Err(Refusal::AlreadyConsumed)),
                ],
            ),
            (
                "consumption digest mismatch refused",
                1,
                vec![
                    (1, Decide(alice(), Approve), Ok(Approved)),
                    (2, ConsumeWrongDigest(airflow()), Err(Refusal::DigestMismatch)),
                ],
            ),
            (
                "consumption by another service refused",
                1,
                vec![(1, Decide(alice(), Approve), Ok(Approved)), (2, Consume(agent()), Err(Refusal::NotRequester))],
            ),
            ("consumption before approval refused", 1, vec![(1, Consume(airflow()), Err(Refusal::NotApproved))]),
            ("expired pending refused", 1, vec![(3600, Decide(alice(), Approve), Err(Refusal::Expired))]),
            (
                "expired approval refused",
                1,
                vec![(1, Decide(alice(), Approve), Ok(Approved)), (3600, Consume(airflow()), Err(Refusal::Expired))],
            ),
            (
                "swept then refused",
                1,
                vec![(3600, Expire, Ok(Expired)), (3601, Decide(alice(), Approve), Err(Refusal::Expired))],
            ),
            ("pending does not expire early", 1, vec![(3599, Expire, Err(Refusal::Expired))]),
            (
                "revoked approval refused",
                1,
                vec![
                    (1, Decide(alice(), Approve), Ok(Approved)),
                    (2, Revoke(airflow(), false), Ok(Revoked)),
                    (3, Consume(airflow()), Err(Refusal::Revoked)),
                ],
            ),
            (
                "revoked by an admin, then no decision",
                1,
                vec![(1, Revoke(mallory(), true), Ok(Revoked)), (2, Decide(alice(), Approve), Err(Refusal::Revoked))],
            ),
            ("revocation by others refused", 1, vec![(1, Revoke(alice(), false), Err(Refusal::NotAllowedToRevoke))]),
            (
                "no revocation after consumption",
                1,
                vec![
                    (1, Decide(alice(), Approve), Ok(Approved)),
                    (2, Consume(airflow()), Ok(Consumed)),
                    (3, Revoke(airflow(), true), Err(Refusal::AlreadyConsumed)),
                ],
            ),
            (
                "two-approver policy needs two distinct people",
                2,
                vec![
                    (1, Decide(alice(), Approve), Ok(Pending)),
                    (2, Decide(alice(), Approve), Err(Refusal::DuplicateApproval)),
                    (3, Consume(airflow()), Err(Refusal::NotApproved)),
                    (4, Decide(bob(), Approve), Ok(Approved)),
                    (5, Decide(alice(), Decline), Err(Refusal::AlreadyApproved)),
                    (6, Consume(airflow()), Ok(Consumed)),
                ],
            ),
            (
                "decline by one approver declines",
                2,
                vec![
                    (1, Decide(alice(), Approve), Ok(Pending)),
                    (2, Decide(bob(), Decline), Ok(Declined)),
                    (3, Decide(bob(), Approve), Err(Refusal::Declined)),
                    (4, Consume(airflow()), Err(Refusal::Declined)),
                    (5, Revoke(airflow(), false), Err(Refusal::Declined)),
                ],
            ),
            (
                "an approver may still decline their own approval",
                2,
                vec![(1, Decide(alice(), Approve), Ok(Pending)), (2, Decide(alice(), Decline), Ok(Declined))],
            ),
        ];
        for (name, required, steps) in scenarios {
            let mut req = request(required);
            for (i, (secs, step, expected)) in steps.iter().enumerate() {
                let got = run(&req, step, t(*secs));
                assert_eq!(got.as_ref().map(|tr| tr.request.state), expected.as_ref().copied(), "{name}, step {i}");
                if let Ok(tr) = got {
                    req = tr.request;
                }
            }
        }
    }

    #[test]
    fn effects_say_what_happened() {
        let req = request(2);
        let d = |v| Decision { verdict: v, digest: req.digest.clone() };
        let one = decide(&req, &alice(), &d(Verdict::Approve), t(1)).unwrap();
        assert_eq!(one.effects, vec![Effect::ApprovalCounted { by: "user:alice".into(), have: 1, need: 2 }]);
        let two = decide(&one.request, &bob(), &d(Verdict::Approve), t(2)).unwrap();
        assert_eq!(two.effects, vec![Effect::Approved { by: "user:bob".into() }]);
        assert_eq!(two.request.approvals.iter().map(|v| v.by.as_str()).collect::<Vec<_>>(), ["user:alice", "user:bob"]);
        let used = consume(&two.request, &airflow(), &req.digest, t(3)).unwrap();
        assert_eq!(used.effects, vec![Effect::Consumed { by: airflow().id() }]);
        assert_eq!(used.request.closed_by.map(|v| v.by), Some(airflow().id()));
        assert_eq!(expire(&req, t(3600)).unwrap().effects, vec![Effect::Expired]);
    }

    #[test]
    fn opening_a_request() {
        let new = |requester: Principal, policy: Option<ApproverPolicy>| NewRequest {
            id: "r".into(),
            requester,
            on_behalf_of: None,
            resource: Resource::ToolCall { server: "s".into(), tool: "t".into() },
            action: json!({"b": 1, "a": 2}),
            policy,
            ttl: TTL,
        };
        let policy = |required| Some(ApproverPolicy { approvers: vec!["group:data-eng".into()], required });
        let opened = open(new(airflow(), policy(0)), t(0)).unwrap();
        assert_eq!(opened.request.digest, crate::registry::approvals::action_digest(&json!({"a": 2, "b": 1})));
        assert_eq!((opened.request.state, opened.request.policy.required), (ApprovalState::Pending, 1));
        assert_eq!(opened.request.expires_at, t(3600));
        assert_eq!(opened.effects, vec![Effect::Created]);
        assert_eq!(open(new(alice(), policy(1)), t(0)).unwrap_err(), Refusal::OnlyServicesRequest);
        assert_eq!(open(new(airflow(), None), t(0)).unwrap_err(), Refusal::NoApproverPolicy);
        let empty = Some(ApproverPolicy { approvers: vec![], required: 1 });
        assert_eq!(open(new(airflow(), empty), t(0)).unwrap_err(), Refusal::NoApproverPolicy);
    }

    #[test]
    fn who_sees_and_who_decides() {
        let req = request(2);
        let approved_once =
            decide(&req, &alice(), &Decision { verdict: Verdict::Approve, digest: req.digest.clone() }, t(1))
                .unwrap()
                .request;
        // (actor, admin, may view, may decide the fresh request, may decide after alice approved)
        let cases = [
            (alice(), false, true, true, false),
            (bob(), false, true, true, true),
            (mallory(), false, false, false, false),
            (mallory(), true, true, false, false),
            (airflow(), false, true, false, false),
            (agent(), false, false, false, false),
            // The caller sees the page their call sent them to, and may not decide.
            (carol(), false, true, false, false),
        ];
        for (actor, admin, view, fresh, after) in cases {
            assert_eq!(may_view(&req, &actor, admin), view, "{actor:?} view");
            assert_eq!(may_decide(&req, &actor, t(1)), fresh, "{actor:?} decide");
            assert_eq!(may_decide(&approved_once, &actor, t(2)), after, "{actor:?} decide after");
        }
        assert!(!may_decide(&req, &bob(), t(3600)), "nobody decides an expired request");
    }
}
