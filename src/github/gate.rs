//! The approval gate of one drafted pull request, as pure decisions: what an event
//! from GitHub does to it. Nothing here does IO; the webhook processor loads the gate,
//! asks [`apply`], and stores the answer (compare-and-set), and the drafter makes
//! GitHub match the gate's state (ready for review once approved; closed and the
//! branch deleted once declined or expired).
//!
//! What counts as an approval follows the gate's rules: it is bound to the exact head
//! commit it was given for, a new push takes it back, and neither the person who asked
//! for the change nor the app that drafted it can give it.

use serde::{Deserialize, Serialize};

use super::events::{GithubEvent, PrAction, Review, ReviewAction};

/// Where a gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    /// Waiting for an approval of the recorded head.
    Pending,
    /// Approved for the recorded head; the PR is (to be) marked ready for review.
    Approved,
    /// A person said no; the PR is (to be) closed and its branch deleted.
    Declined,
    /// Nobody decided in time; handled like a decline.
    Expired,
    /// The PR was closed or merged on GitHub; the gate has nothing left to guard.
    Closed,
}

impl GateState {
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Pending => "pending",
            GateState::Approved => "approved",
            GateState::Declined => "declined",
            GateState::Expired => "expired",
            GateState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<GateState> {
        Some(match s {
            "pending" => GateState::Pending,
            "approved" => GateState::Approved,
            "declined" => GateState::Declined,
            "expired" => GateState::Expired,
            "closed" => GateState::Closed,
            _ => return None,
        })
    }
}

/// How an approval was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Approval {
    /// The registry's approval service (web page, Slack button).
    Registry { approval_id: String, by: String },
    /// An approving GitHub review of the recorded head.
    Review { review_id: u64, by: String },
}

/// The gate as the decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// `owner/name`.
    pub repo: String,
    pub number: u64,
    /// The head commit the approval is bound to.
    pub head_sha: String,
    /// The GitHub login of the person the change was drafted for, if a person asked.
    pub requester_login: Option<String>,
    pub state: GateState,
    pub approval: Option<Approval>,
    /// The digest of the drafted change (`draft::digest`), bound into the registry's
    /// approval request beside the head.
    pub diff_digest: String,
    /// The registry's approval request for this head, once asked. Cleared whenever the
    /// head changes or the gate leaves `pending` by another way, so that the old request
    /// is withdrawn and, where the gate waits again, a new one is asked for.
    pub request: Option<String>,
}

/// Who may approve by review, and who is the app.
#[derive(Debug, Clone, Default)]
pub struct Reviewers {
    /// GitHub logins whose approving review counts (compared case-insensitively).
    pub approvers: Vec<String>,
    /// The app's own login (`inquest[bot]`), which never approves its own change.
    pub app_login: String,
}

impl Reviewers {
    fn allowed(&self, login: &str) -> bool {
        self.approvers.iter().any(|a| a.eq_ignore_ascii_case(login))
    }
}

/// What an event does to a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gate changes to this; `why` says what happened, for the thread and the log.
    Changed { gate: Gate, why: String },
    /// Nothing changes, and why not.
    Unchanged(String),
}

/// Applies `event` to `gate`.
pub fn apply(gate: &Gate, event: &GithubEvent, reviewers: &Reviewers) -> Outcome {
    match event {
        GithubEvent::Review { action: ReviewAction::Submitted, review, .. } => on_review(gate, review, reviewers),
        GithubEvent::Review { action: ReviewAction::Dismissed, review, .. } => on_dismissal(gate, review),
        GithubEvent::PullRequest { action, head_sha, sender, .. } => match action {
            PrAction::Synchronize => on_push(gate, head_sha, sender),
            PrAction::Closed { merged } => on_closed(gate, *merged, sender),
            PrAction::Reopened => on_reopened(gate, head_sha, sender),
            PrAction::ReadyForReview => Outcome::Unchanged(match gate.state {
                GateState::Approved => "marked ready for review, as approved".into(),
                _ => format!(
                    "{sender} marked it ready for review before it was approved; the gate still waits for an approval"
                ),
            }),
        },
        GithubEvent::Ping | GithubEvent::Ignored { .. } => Outcome::Unchanged("not an event the gate follows".into()),
    }
}

/// The registry's answer about the gate's approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryDecision<'a> {
    /// Approved, and consumed by the gate: `by` is who approved.
    Approved {
        by: &'a str,
    },
    Declined {
        by: &'a str,
    },
    /// Withdrawn by someone other than the gate (an administrator).
    Revoked {
        by: &'a str,
    },
    Expired,
}

/// Records that the registry was asked for an approval of the gate's head (request
/// `request_id`).
pub fn asked(gate: &Gate, request_id: &str, url: &str) -> Outcome {
    if gate.state != GateState::Pending || gate.request.is_some() {
        return Outcome::Unchanged("the gate is not waiting for a request".into());
    }
    let next = Gate { request: Some(request_id.into()), ..gate.clone() };
    Outcome::Changed {
        gate: next,
        why: format!("asked the registry for an approval of {} (approval {request_id}): {url}", short(&gate.head_sha)),
    }
}

/// Applies the registry's decision on request `request_id`, which was asked for
/// `head_sha`. Only the gate's current request, for its current head, counts.
pub fn from_registry(gate: &Gate, request_id: &str, head_sha: &str, decision: RegistryDecision<'_>) -> Outcome {
    if gate.state != GateState::Pending {
        return Outcome::Unchanged(format!("the gate is {}, not pending", gate.state.as_str()));
    }
    if gate.request.as_deref() != Some(request_id) {
        return Outcome::Unchanged(format!("approval {request_id} is not the one the gate waits for"));
    }
    if head_sha != gate.head_sha {
        return Outcome::Unchanged(format!(
            "the approval was given for {}, but the head is now {}",
            short(head_sha),
            short(&gate.head_sha)
        ));
    }
    let head = short(head_sha);
    let (state, approval, why) = match decision {
        RegistryDecision::Approved { by } => (
            GateState::Approved,
            Some(Approval::Registry { approval_id: request_id.into(), by: by.into() }),
            format!("{by} approved {head} (approval {request_id})"),
        ),
        RegistryDecision::Declined { by } => {
            (GateState::Declined, None, format!("{by} declined {head} (approval {request_id})"))
        }
        RegistryDecision::Revoked { by } => {
            (GateState::Declined, None, format!("{by} withdrew the approval request for {head} ({request_id})"))
        }
        RegistryDecision::Expired => {
            (GateState::Expired, None, format!("nobody decided on {head} in time (approval {request_id})"))
        }
    };
    Outcome::Changed { gate: Gate { state, approval, ..gate.clone() }, why }
}

/// The registry request a change from `before` to `after` leaves open for nothing:
/// asked while pending and no longer the gate's request (the head moved, a review
/// approved, the pull request closed). It should be withdrawn.
pub fn abandoned_request<'a>(before: &'a Gate, after: &Gate) -> Option<&'a str> {
    let open = before.state == GateState::Pending;
    before.request.as_deref().filter(|r| open && after.request.as_deref() != Some(*r))
}

fn on_review(gate: &Gate, review: &Review, reviewers: &Reviewers) -> Outcome {
    let by = review.login.as_str();
    if !review.state.eq_ignore_ascii_case("approved") {
        return Outcome::Unchanged(format!("{by}'s review is `{}`, not an approval", review.state));
    }
    if gate.state != GateState::Pending {
        return Outcome::Unchanged(format!("the gate is {}, not pending", gate.state.as_str()));
    }
    if by.eq_ignore_ascii_case(&reviewers.app_login) || review.is_bot {
        return Outcome::Unchanged(format!("{by} is an app; an app's review does not approve"));
    }
    if gate.requester_login.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(by)) {
        return Outcome::Unchanged(format!("{by} asked for this change and cannot approve it"));
    }
    if !reviewers.allowed(by) {
        return Outcome::Unchanged(format!("{by} is not among the approvers of {}", gate.repo));
    }
    if review.commit_id != gate.head_sha {
        return Outcome::Unchanged(format!(
            "{by} reviewed {}, not the head {}",
            short(&review.commit_id),
            short(&gate.head_sha)
        ));
    }
    let next = Gate {
        state: GateState::Approved,
        approval: Some(Approval::Review { review_id: review.id, by: by.into() }),
        request: None,
        ..gate.clone()
    };
    Outcome::Changed { gate: next, why: format!("{by} approved {} in a review", short(&gate.head_sha)) }
}

fn on_dismissal(gate: &Gate, review: &Review) -> Outcome {
    match &gate.approval {
        Some(Approval::Review { review_id, by }) if *review_id == review.id && gate.state == GateState::Approved => {
            let next = Gate { state: GateState::Pending, approval: None, request: None, ..gate.clone() };
            Outcome::Changed { gate: next, why: format!("{by}'s approving review was dismissed; the gate asks again") }
        }
        _ => Outcome::Unchanged("the dismissed review was not the gate's approval".into()),
    }
}

fn on_push(gate: &Gate, head_sha: &str, sender: &str) -> Outcome {
    if head_sha == gate.head_sha {
        // Our own push, whose head the gate already holds.
        return Outcome::Unchanged("the head is the one the gate holds".into());
    }
    match gate.state {
        GateState::Pending | GateState::Approved => {
            let taken_back = gate.approval.is_some();
            let next = Gate {
                head_sha: head_sha.into(),
                state: GateState::Pending,
                approval: None,
                request: None,
                ..gate.clone()
            };
            let why = format!(
                "{sender} pushed {}; {}the gate asks again for the new head",
                short(head_sha),
                if taken_back { "the approval no longer holds and " } else { "" }
            );
            Outcome::Changed { gate: next, why }
        }
        other => Outcome::Unchanged(format!("a push to a {} gate changes nothing", other.as_str())),
    }
}

fn on_closed(gate: &Gate, merged: bool, sender: &str) -> Outcome {
    match gate.state {
        GateState::Closed => Outcome::Unchanged("already closed".into()),
        // Our own close after a decline or expiry.
        GateState::Declined | GateState::Expired if !merged => Outcome::Unchanged("closed as decided".into()),
        _ => {
            let next = Gate { state: GateState::Closed, request: None, ..gate.clone() };
            let why = if merged { format!("{sender} merged it") } else { format!("{sender} closed it") };
            Outcome::Changed { gate: next, why }
        }
    }
}

fn on_reopened(gate: &Gate, head_sha: &str, sender: &str) -> Outcome {
    match gate.state {
        GateState::Closed | GateState::Declined | GateState::Expired => {
            let next = Gate {
                head_sha: head_sha.into(),
                state: GateState::Pending,
                approval: None,
                request: None,
                ..gate.clone()
            };
            Outcome::Changed { gate: next, why: format!("{sender} reopened it; the gate asks for an approval again") }
        }
        _ => Outcome::Unchanged("the gate was still open".into()),
    }
}

/// What GitHub must be made to show for a gate's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    MarkReady,
    RequestReviewers,
    /// A comment carrying `marker`, unless one with it exists.
    Comment {
        marker: String,
        body: String,
    },
    Close,
    DeleteBranch,
}

/// What an open (or closed) pull request still needs for `gate`'s state, given its
/// comments: approved, ready for review with reviewers asked and a comment saying who
/// approved and when; declined or expired, a comment saying so, closed, its branch
/// deleted. Nothing for a pending or closed gate. `when` is the approval's time as
/// people read it. Each effect is safe to repeat; comments are looked for first.
pub fn effects(gate: &Gate, pull_open: bool, pull_draft: bool, comments: &[String], when: &str) -> Vec<Effect> {
    let has = |marker: &str| comments.iter().any(|c| c.contains(marker));
    let head = short(&gate.head_sha);
    match gate.state {
        GateState::Approved => {
            let marker = format!("<!-- inquest:approved {} -->", gate.head_sha);
            let (by, via) = match &gate.approval {
                Some(Approval::Registry { by, approval_id }) => (by.as_str(), format!("approval {approval_id}")),
                Some(Approval::Review { by, review_id }) => (by.as_str(), format!("review {review_id}")),
                None => ("someone", "an unrecorded approval".to_string()),
            };
            let mut out = Vec::new();
            if pull_open && pull_draft {
                out.push(Effect::MarkReady);
            }
            if pull_open {
                out.push(Effect::RequestReviewers);
            }
            if !has(&marker) {
                out.push(Effect::Comment {
                    body: format!("Approved by **{by}** at {when} ({via}) for {head}; ready for review.\n\n{marker}\n"),
                    marker,
                });
            }
            out
        }
        GateState::Declined | GateState::Expired => {
            let marker = format!("<!-- inquest:closed {} -->", gate.head_sha);
            let why = if gate.state == GateState::Declined { "was declined" } else { "expired without a decision" };
            let mut out = Vec::new();
            if !has(&marker) && pull_open {
                out.push(Effect::Comment {
                    body: format!("The approval of {head} {why} ({when}); closing this draft and deleting its branch.\n\n{marker}\n"),
                    marker,
                });
            }
            if pull_open {
                out.push(Effect::Close);
            }
            out.push(Effect::DeleteBranch);
            out
        }
        GateState::Pending | GateState::Closed => Vec::new(),
    }
}

/// The first 7 characters of a commit id, as GitHub shows it.
fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OLD: &str = "0000000bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn gate(state: GateState) -> Gate {
        Gate {
            repo: "acme/etl".into(),
            number: 7,
            head_sha: HEAD.into(),
            requester_login: Some("alice".into()),
            state,
            approval: None,
            diff_digest: "d".repeat(64),
            request: Some("r1".into()),
        }
    }

    fn reviewers() -> Reviewers {
        Reviewers {
            approvers: vec!["Bob".into(), "alice".into(), "inquest[bot]".into()],
            app_login: "inquest[bot]".into(),
        }
    }

    fn review(id: u64, login: &str, state: &str, commit: &str) -> GithubEvent {
        GithubEvent::Review {
            action: ReviewAction::Submitted,
            repo: "acme/etl".into(),
            number: 7,
            review: Review {
                id,
                login: login.into(),
                is_bot: login.ends_with("[bot]"),
                state: state.into(),
                commit_id: commit.into(),
            },
        }
    }

    fn dismissed(id: u64, login: &str) -> GithubEvent {
        match review(id, login, "dismissed", HEAD) {
            GithubEvent::Review { repo, number, review, .. } => {
                GithubEvent::Review { action: ReviewAction::Dismissed, repo, number, review }
            }
            other => other,
        }
    }

    fn pr(action: PrAction, head: &str) -> GithubEvent {
        GithubEvent::PullRequest {
            action,
            repo: "acme/etl".into(),
            number: 7,
            head_sha: head.into(),
            sender: "carol".into(),
        }
    }

    fn state_after(gate: &Gate, event: &GithubEvent) -> GateState {
        match apply(gate, event, &reviewers()) {
            Outcome::Changed { gate, .. } => gate.state,
            Outcome::Unchanged(_) => gate.state,
        }
    }

    /// Who may approve: the scenario table.
    #[test]
    fn who_may_approve_by_review() {
        let pending = gate(GateState::Pending);
        let table: [(&str, GithubEvent, GateState); 8] = [
            ("an allowed reviewer of the head", review(1, "bob", "approved", HEAD), GateState::Approved),
            ("the same, login in another case", review(1, "BOB", "APPROVED", HEAD), GateState::Approved),
            ("the requester, even though listed", review(2, "alice", "approved", HEAD), GateState::Pending),
            ("the app, even though listed", review(3, "inquest[bot]", "approved", HEAD), GateState::Pending),
            ("a reviewer who is not allowed", review(4, "mallory", "approved", HEAD), GateState::Pending),
            ("an allowed reviewer of an older head", review(5, "bob", "approved", OLD), GateState::Pending),
            ("a review asking for changes", review(6, "bob", "changes_requested", HEAD), GateState::Pending),
            ("a comment", review(7, "bob", "commented", HEAD), GateState::Pending),
        ];
        for (case, event, expected) in table {
            assert_eq!(state_after(&pending, &event), expected, "{case}");
        }
    }

    #[test]
    fn an_approval_records_who_and_which_review() {
        let Outcome::Changed { gate, why } =
            apply(&gate(GateState::Pending), &review(9, "bob", "approved", HEAD), &reviewers())
        else {
            panic!("not approved")
        };
        assert_eq!(gate.approval, Some(Approval::Review { review_id: 9, by: "bob".into() }));
        assert_eq!(why, "bob approved 1111111 in a review");
    }

    #[test]
    fn a_dismissed_approving_review_takes_the_approval_back_and_others_do_not() {
        let approved = match apply(&gate(GateState::Pending), &review(9, "bob", "approved", HEAD), &reviewers()) {
            Outcome::Changed { gate, .. } => gate,
            other => panic!("{other:?}"),
        };
        assert_eq!(state_after(&approved, &dismissed(8, "bob")), GateState::Approved, "another review");
        assert_eq!(state_after(&approved, &dismissed(9, "bob")), GateState::Pending, "the approving review");
        let by_registry = Gate {
            state: GateState::Approved,
            approval: Some(Approval::Registry { approval_id: "a1".into(), by: "dave".into() }),
            ..gate(GateState::Pending)
        };
        assert_eq!(state_after(&by_registry, &dismissed(9, "bob")), GateState::Approved);
    }

    #[test]
    fn a_new_push_takes_an_approval_back_and_the_gate_asks_again() {
        let approved = Gate {
            state: GateState::Approved,
            approval: Some(Approval::Registry { approval_id: "a1".into(), by: "dave".into() }),
            ..gate(GateState::Pending)
        };
        let Outcome::Changed { gate: next, why } = apply(&approved, &pr(PrAction::Synchronize, OLD), &reviewers())
        else {
            panic!("unchanged")
        };
        assert_eq!((next.state, next.head_sha.as_str(), &next.approval), (GateState::Pending, OLD, &None));
        assert!(why.contains("no longer holds"), "{why}");
        // Our own push, already recorded: nothing.
        assert_eq!(
            apply(&approved, &pr(PrAction::Synchronize, HEAD), &reviewers()),
            Outcome::Unchanged("the head is the one the gate holds".into())
        );
        // An approval for the old head after the push does not count.
        assert_eq!(state_after(&next, &review(1, "bob", "approved", HEAD)), GateState::Pending);
    }

    #[test]
    fn closing_reopening_and_marking_ready() {
        let pending = gate(GateState::Pending);
        assert_eq!(state_after(&pending, &pr(PrAction::Closed { merged: false }, HEAD)), GateState::Closed);
        assert_eq!(
            state_after(&gate(GateState::Declined), &pr(PrAction::Closed { merged: false }, HEAD)),
            GateState::Declined
        );
        assert_eq!(
            state_after(&gate(GateState::Approved), &pr(PrAction::Closed { merged: true }, HEAD)),
            GateState::Closed
        );
        assert_eq!(state_after(&gate(GateState::Closed), &pr(PrAction::Reopened, OLD)), GateState::Pending);
        assert_eq!(state_after(&pending, &pr(PrAction::Reopened, HEAD)), GateState::Pending);
        match apply(&pending, &pr(PrAction::ReadyForReview, HEAD), &reviewers()) {
            Outcome::Unchanged(why) => assert!(why.contains("before it was approved"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn registry_decisions_count_only_for_the_gates_request_and_head() {
        let pending = gate(GateState::Pending);
        let approved = RegistryDecision::Approved { by: "dave" };
        let state = |g: &Gate, r: &str, head: &str, d| match from_registry(g, r, head, d) {
            Outcome::Changed { gate, .. } => gate.state,
            Outcome::Unchanged(_) => g.state,
        };
        assert_eq!(state(&pending, "r1", HEAD, approved), GateState::Approved);
        assert_eq!(state(&pending, "r1", OLD, approved), GateState::Pending, "given for an older head");
        assert_eq!(state(&pending, "r0", HEAD, approved), GateState::Pending, "an earlier request");
        assert_eq!(state(&gate(GateState::Declined), "r1", HEAD, approved), GateState::Declined);
        assert_eq!(state(&pending, "r1", HEAD, RegistryDecision::Declined { by: "dave" }), GateState::Declined);
        assert_eq!(state(&pending, "r1", HEAD, RegistryDecision::Revoked { by: "admin" }), GateState::Declined);
        assert_eq!(state(&pending, "r1", HEAD, RegistryDecision::Expired), GateState::Expired);
        match from_registry(&pending, "r1", HEAD, approved) {
            Outcome::Changed { gate, why } => {
                assert_eq!(gate.approval, Some(Approval::Registry { approval_id: "r1".into(), by: "dave".into() }));
                assert_eq!(why, "dave approved 1111111 (approval r1)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_gate_asks_once_per_head_and_withdraws_what_it_no_longer_needs() {
        let fresh = Gate { request: None, ..gate(GateState::Pending) };
        let Outcome::Changed { gate: asked_gate, .. } = asked(&fresh, "r2", "https://reg/approvals/r2") else {
            panic!("not asked")
        };
        assert_eq!(asked_gate.request.as_deref(), Some("r2"));
        assert!(matches!(asked(&asked_gate, "r3", "u"), Outcome::Unchanged(_)), "already asked");
        // A push: the request for the old head is abandoned and the gate asks again.
        let Outcome::Changed { gate: pushed, .. } = apply(&asked_gate, &pr(PrAction::Synchronize, OLD), &reviewers())
        else {
            panic!("unchanged")
        };
        assert_eq!((pushed.request.as_deref(), abandoned_request(&asked_gate, &pushed)), (None, Some("r2")));
        // An approving review: the registry request is no longer needed.
        let Outcome::Changed { gate: reviewed, .. } =
            apply(&asked_gate, &review(1, "bob", "approved", HEAD), &reviewers())
        else {
            panic!("unchanged")
        };
        assert_eq!(abandoned_request(&asked_gate, &reviewed), Some("r2"));
        // Approved through the registry: consumed, nothing to withdraw.
        let Outcome::Changed { gate: approved, .. } =
            from_registry(&asked_gate, "r2", HEAD, RegistryDecision::Approved { by: "dave" })
        else {
            panic!("unchanged")
        };
        assert_eq!(abandoned_request(&asked_gate, &approved), None);
    }

    #[test]
    fn what_github_must_show_for_each_state() {
        let approved = Gate {
            state: GateState::Approved,
            approval: Some(Approval::Review { review_id: 9, by: "bob".into() }),
            ..gate(GateState::Pending)
        };
        let e = effects(&approved, true, true, &[], "2026-11-27 05:00 UTC");
        assert_eq!(e[..2], [Effect::MarkReady, Effect::RequestReviewers]);
        let Effect::Comment { body, marker } = &e[2] else { panic!("{e:?}") };
        assert!(body.starts_with("Approved by **bob** at 2026-11-27 05:00 UTC (review 9)"), "{body}");
        // Once ready and commented: only the (idempotent) reviewer request is left.
        assert_eq!(effects(&approved, true, false, std::slice::from_ref(body), "t"), [Effect::RequestReviewers]);
        assert!(body.contains(marker));

        let declined = gate(GateState::Declined);
        let e = effects(&declined, true, true, &[], "t");
        assert!(matches!(&e[0], Effect::Comment { body, .. } if body.contains("was declined")));
        assert_eq!(e[1..], [Effect::Close, Effect::DeleteBranch]);
        assert_eq!(effects(&declined, false, true, &[], "t"), [Effect::DeleteBranch], "already closed");
        assert!(effects(&gate(GateState::Pending), true, true, &[], "t").is_empty());
        assert!(effects(&gate(GateState::Closed), false, false, &[], "t").is_empty());
    }

    #[test]
    fn states_round_trip_through_text() {
        for s in [GateState::Pending, GateState::Approved, GateState::Declined, GateState::Expired, GateState::Closed] {
            assert_eq!(GateState::parse(s.as_str()), Some(s));
        }
        assert_eq!(GateState::parse("merged"), None);
    }
}
