//! The investigation state machine: `step(state, input) -> (state, commands)`.
//!
//! This module never does IO. The runner (and intake, for resolutions) feed it inputs
//! and carry out the commands; the store records the state and events they produce.

use serde::{Deserialize, Serialize};

use crate::config::OnResolved;

/// Where an investigation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a worker (new, retried, or handed back at shutdown).
    Queued,
    /// A worker holds its lease and is working on it.
    Running,
    /// A worker holds its lease and waits for a person to decide on an approval.
    AwaitingApproval,
    Completed,
    Cancelled,
    Failed,
}

impl State {
    pub const ALL: [State; 6] =
        [State::Queued, State::Running, State::AwaitingApproval, State::Completed, State::Cancelled, State::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::AwaitingApproval => "awaiting_approval",
            State::Completed => "completed",
            State::Cancelled => "cancelled",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Cancelled | State::Failed)
    }

    /// Held under a worker's lease (running, or waiting on a person while running).
    pub fn is_leased(self) -> bool {
        matches!(self, State::Running | State::AwaitingApproval)
    }
}

/// Something that happened to an investigation.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A worker took the lease. `previous_owner` is set when it took over an expired lease.
    Claimed { owner: String, attempt: u32, previous_owner: Option<String> },
    /// The work finished with a summary of what it found.
    WorkFinished { summary: String },
    /// The work failed; `attempt` counts this try, `max_attempts` is the budget.
    WorkFailed { error: String, attempt: u32, max_attempts: u32 },
    /// More alerts joined the episode.
    AlertsAttached { alert_ids: Vec<String> },
    /// Every alert of the episode resolved.
    EpisodeResolved { policy: OnResolved },
    /// This process is shutting down and hands the work back.
    Suspend,
    /// A tool call needs a person's approval; the work waits for the decision.
    ApprovalRequested { approval_id: String, url: String, tool: String, call_id: String },
    /// The approval was decided (`approved`, `declined`, `expired`, ...); the work goes on.
    ApprovalSettled { approval_id: String, outcome: String, call_id: String },
    /// A person asks a follow-up question; a finished investigation is taken up again
    /// to answer it.
    QuestionAsked { question: String, asked_by: Option<String> },
}

/// What the caller must do; events are appended to the investigation's log in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Record(EventBody),
    /// Begin the investigation's work under the lease.
    StartWork,
    /// Give up the lease so another worker can take the investigation at once.
    ReleaseLease,
}

/// An entry of the investigation's append-only log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    pub kind: String,
    pub data: serde_json::Value,
}

impl EventBody {
    pub fn new(kind: &str, data: serde_json::Value) -> EventBody {
        EventBody { kind: kind.to_string(), data }
    }
}

/// The transition function. Inputs that make no sense in a state change nothing and
/// ask for nothing, so a late or repeated input is harmless.
pub fn step(state: State, input: &Input) -> (State, Vec<Command>) {
    use Command::*;
    use serde_json::json;
    match (state, input) {
        (State::Running, Input::ApprovalRequested { approval_id, url, tool, call_id }) => (
            State::AwaitingApproval,
            vec![Record(EventBody::new(
                "approval.requested",
                json!({"approval_id": approval_id, "url": url, "tool": tool, "call_id": call_id}),
            ))],
        ),
        (State::AwaitingApproval, Input::ApprovalSettled { approval_id, outcome, call_id }) => (
            State::Running,
            vec![Record(EventBody::new(
                "approval.settled",
                json!({"approval_id": approval_id, "outcome": outcome, "call_id": call_id}),
            ))],
        ),
        (State::Completed | State::Failed | State::Queued, Input::QuestionAsked { question, asked_by }) => (
            State::Queued,
            vec![Record(EventBody::new("question.asked", json!({"question": question, "asked_by": asked_by})))],
        ),
        // Waiting on a person is running for everything else: a takeover, the end of
        // the work, a failure or a shutdown.
        (
            State::AwaitingApproval,
            Input::Claimed { .. } | Input::WorkFinished { .. } | Input::WorkFailed { .. } | Input::Suspend,
        ) => step(State::Running, input),
        (State::Queued, Input::Claimed { owner, attempt, previous_owner }) => {
            let kind = if previous_owner.is_some() { "investigation.resumed" } else { "investigation.started" };
            (
                State::Running,
                vec![
                    Record(EventBody::new(
                        kind,
                        json!({"worker": owner, "attempt": attempt, "previous_worker": previous_owner}),
                    )),
                    StartWork,
                ],
            )
        }
        // A lease that expired while running is taken over: the same as a claim from
        // the queue, but the log says who held it before.
        (State::Running, Input::Claimed { previous_owner: Some(_), .. }) => step(State::Queued, input),
        (State::Running, Input::WorkFinished { summary }) => (
            State::Completed,
            vec![Record(EventBody::new("investigation.completed", json!({"summary": summary}))), ReleaseLease],
        ),
        (State::Running, Input::WorkFailed { error, attempt, max_attempts }) => {
            if attempt < max_attempts {
                (
                    State::Queued,
                    vec![
                        Record(EventBody::new(
                            "investigation.retrying",
                            json!({"error": error, "attempt": attempt, "max_attempts": max_attempts}),
                        )),
                        ReleaseLease,
                    ],
                )
            } else {
                (
                    State::Failed,
                    vec![
                        Record(EventBody::new("investigation.failed", json!({"error": error, "attempts": attempt}))),
                        ReleaseLease,
                    ],
                )
            }
        }
        (State::Running, Input::Suspend) => (
            State::Queued,
            vec![
                Record(EventBody::new("investigation.suspended", json!({"reason": "worker shutting down"}))),
                ReleaseLease,
            ],
        ),
        (s, Input::AlertsAttached { alert_ids }) => (
            s,
            vec![Record(EventBody::new("alerts.attached", json!({"count": alert_ids.len(), "alert_ids": alert_ids})))],
        ),
        (State::Queued, Input::EpisodeResolved { policy: OnResolved::CancelIfNotStarted }) => (
            State::Cancelled,
            vec![
                Record(EventBody::new("episode.resolved", json!({"action": "cancelled"}))),
                Record(EventBody::new("investigation.cancelled", json!({"reason": "resolved before it started"}))),
            ],
        ),
        (s, Input::EpisodeResolved { .. }) => {
            (s, vec![Record(EventBody::new("episode.resolved", json!({"action": "recorded"})))])
        }
        (s, _) => (s, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(cmds: &[Command]) -> Vec<String> {
        cmds.iter()
            .map(|c| match c {
                Command::Record(e) => e.kind.clone(),
                Command::StartWork => "START".into(),
                Command::ReleaseLease => "RELEASE".into(),
            })
            .collect()
    }

    #[test]
    fn transition_table() {
        let claim = Input::Claimed { owner: "w1".into(), attempt: 1, previous_owner: None };
        let takeover = Input::Claimed { owner: "w2".into(), attempt: 2, previous_owner: Some("w1".into()) };
        let done = Input::WorkFinished { summary: "ok".into() };
        let fail_retry = Input::WorkFailed { error: "boom".into(), attempt: 1, max_attempts: 3 };
        let fail_last = Input::WorkFailed { error: "boom".into(), attempt: 3, max_attempts: 3 };
        let attached = Input::AlertsAttached { alert_ids: vec!["a1".into(), "a2".into()] };
        let resolved_keep = Input::EpisodeResolved { policy: OnResolved::Continue };
        let resolved_cancel = Input::EpisodeResolved { policy: OnResolved::CancelIfNotStarted };
        let asked = Input::ApprovalRequested {
            approval_id: "ap1".into(),
            url: "u".into(),
            tool: "t".into(),
            call_id: "c1".into(),
        };
        let settled =
            Input::ApprovalSettled { approval_id: "ap1".into(), outcome: "approved".into(), call_id: "c1".into() };
        let asked_q = Input::QuestionAsked { question: "why?".into(), asked_by: None };
        use State::*;
        let table: Vec<(State, &Input, State, Vec<&str>)> = vec![
            (Queued, &claim, Running, vec!["investigation.started", "START"]),
            (Queued, &takeover, Running, vec!["investigation.resumed", "START"]),
            (Running, &takeover, Running, vec!["investigation.resumed", "START"]),
            (Running, &claim, Running, vec![]),
            (Completed, &claim, Completed, vec![]),
            (Running, &done, Completed, vec!["investigation.completed", "RELEASE"]),
            (Queued, &done, Queued, vec![]),
            (Completed, &done, Completed, vec![]),
            (Running, &fail_retry, Queued, vec!["investigation.retrying", "RELEASE"]),
            (Running, &fail_last, Failed, vec!["investigation.failed", "RELEASE"]),
            (Running, &Input::Suspend, Queued, vec!["investigation.suspended", "RELEASE"]),
            (Queued, &Input::Suspend, Queued, vec![]),
            (Queued, &attached, Queued, vec!["alerts.attached"]),
            (Running, &attached, Running, vec!["alerts.attached"]),
            (Completed, &attached, Completed, vec!["alerts.attached"]),
            (Queued, &resolved_keep, Queued, vec!["episode.resolved"]),
            (Running, &resolved_keep, Running, vec!["episode.resolved"]),
            (Queued, &resolved_cancel, Cancelled, vec!["episode.resolved", "investigation.cancelled"]),
            (Running, &resolved_cancel, Running, vec!["episode.resolved"]),
            (Completed, &resolved_cancel, Completed, vec!["episode.resolved"]),
            (Cancelled, &claim, Cancelled, vec![]),
            (Failed, &done, Failed, vec![]),
            (Running, &asked, AwaitingApproval, vec!["approval.requested"]),
            (Queued, &asked, Queued, vec![]),
            (AwaitingApproval, &asked, AwaitingApproval, vec![]),
            (AwaitingApproval, &settled, Running, vec!["approval.settled"]),
            (Running, &settled, Running, vec![]),
            (AwaitingApproval, &takeover, Running, vec!["investigation.resumed", "START"]),
            (AwaitingApproval, &done, Completed, vec!["investigation.completed", "RELEASE"]),
            (AwaitingApproval, &Input::Suspend, Queued, vec!["investigation.suspended", "RELEASE"]),
            (AwaitingApproval, &attached, AwaitingApproval, vec!["alerts.attached"]),
            (Completed, &asked_q, Queued, vec!["question.asked"]),
            (Failed, &asked_q, Queued, vec!["question.asked"]),
            (Queued, &asked_q, Queued, vec!["question.asked"]),
            (Running, &asked_q, Running, vec![]),
            (AwaitingApproval, &asked_q, AwaitingApproval, vec![]),
            (Cancelled, &asked_q, Cancelled, vec![]),
        ];
        for (from, input, to, expected) in table {
            let (state, cmds) = step(from, input);
            assert_eq!(
                (state, kinds(&cmds)),
                (to, expected.iter().map(|s| s.to_string()).collect()),
                "{from:?} x {input:?}"
            );
        }
    }

    #[test]
    fn states_round_trip_through_text() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("exploded"), None);
    }
}
