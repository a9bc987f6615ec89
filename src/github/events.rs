//! The GitHub webhook events the approval gate follows, read from the event name
//! (`X-GitHub-Event`) and the payload into typed values. Everything else is
//! [`GithubEvent::Ignored`]: stored and acknowledged, never acted on.

use serde_json::Value;

/// A payload the gate follows but cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("`{0}` is missing or has the wrong type")]
    Field(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewAction {
    Submitted,
    Dismissed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrAction {
    /// New commits on the head branch.
    Synchronize,
    Closed {
        merged: bool,
    },
    Reopened,
    ReadyForReview,
}

/// A review as the gate judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub id: u64,
    pub login: String,
    /// The reviewer's account is a bot (`user.type == "Bot"`).
    pub is_bot: bool,
    /// `approved`, `commented`, `changes_requested`, `dismissed` (GitHub's case varies).
    pub state: String,
    /// The commit the review was given for.
    pub commit_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubEvent {
    Review {
        action: ReviewAction,
        repo: String,
        number: u64,
        review: Review,
    },
    PullRequest {
        action: PrAction,
        repo: String,
        number: u64,
        head_sha: String,
        sender: String,
    },
    /// Sent once when a webhook is created.
    Ping,
    /// An event or action the gate does not follow.
    Ignored {
        event: String,
        action: Option<String>,
    },
}

impl GithubEvent {
    /// The repository and pull request the event is about, if it is one the gate follows.
    pub fn pull_request(&self) -> Option<(&str, u64)> {
        match self {
            GithubEvent::Review { repo, number, .. } | GithubEvent::PullRequest { repo, number, .. } => {
                Some((repo, *number))
            }
            GithubEvent::Ping | GithubEvent::Ignored { .. } => None,
        }
    }
}

/// Reads the payload of an `event` delivery.
pub fn parse(event: &str, body: &[u8]) -> Result<GithubEvent, EventError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let action = v.get("action").and_then(Value::as_str);
    let ignored = || GithubEvent::Ignored { event: event.to_string(), action: action.map(str::to_string) };
    match (event, action) {
        ("ping", _) => Ok(GithubEvent::Ping),
        ("pull_request_review", Some(a @ ("submitted" | "dismissed"))) => {
            let action = if a == "submitted" { ReviewAction::Submitted } else { ReviewAction::Dismissed };
            let review = Review {
                id: u64_at(&v, &["review", "id"], "review.id")?,
                login: str_at(&v, &["review", "user", "login"], "review.user.login")?,
                is_bot: v.pointer("/review/user/type").and_then(Value::as_str) == Some("Bot"),
                state: str_at(&v, &["review", "state"], "review.state")?,
                commit_id: str_at(&v, &["review", "commit_id"], "review.commit_id")?,
            };
            Ok(GithubEvent::Review {
                action,
                repo: str_at(&v, &["repository", "full_name"], "repository.full_name")?,
                number: u64_at(&v, &["pull_request", "number"], "pull_request.number")?,
                review,
            })
        }
        ("pull_request", Some(a @ ("synchronize" | "closed" | "reopened" | "ready_for_review"))) => {
            let action = match a {
                "synchronize" => PrAction::Synchronize,
                "closed" => PrAction::Closed {
                    merged: v.pointer("/pull_request/merged").and_then(Value::as_bool).unwrap_or(false),
                },
                "reopened" => PrAction::Reopened,
                _ => PrAction::ReadyForReview,
            };
            Ok(GithubEvent::PullRequest {
                action,
                repo: str_at(&v, &["repository", "full_name"], "repository.full_name")?,
                number: u64_at(&v, &["pull_request", "number"], "pull_request.number")?,
                head_sha: str_at(&v, &["pull_request", "head", "sha"], "pull_request.head.sha")?,
                sender: str_at(&v, &["sender", "login"], "sender.login")?,
            })
        }
        _ => Ok(ignored()),
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

fn str_at(v: &Value, path: &[&str], name: &'static str) -> Result<String, EventError> {
    at(v, path).and_then(Value::as_str).map(str::to_string).ok_or(EventError::Field(name))
}

fn u64_at(v: &Value, path: &[&str], name: &'static str) -> Result<u64, EventError> {
    at(v, path).and_then(Value::as_u64).ok_or(EventError::Field(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_submitted_review_is_read() {
        let body = json!({
            "action": "submitted",
            "review": {"id": 5, "user": {"login": "bob", "type": "User"}, "state": "approved", "commit_id": "abc"},
            "pull_request": {"number": 7},
            "repository": {"full_name": "acme/etl"},
        });
        let event = parse("pull_request_review", body.to_string().as_bytes()).unwrap();
        assert_eq!(
            event,
            GithubEvent::Review {
                action: ReviewAction::Submitted,
                repo: "acme/etl".into(),
                number: 7,
                review: Review {
                    id: 5,
                    login: "bob".into(),
                    is_bot: false,
                    state: "approved".into(),
                    commit_id: "abc".into()
                },
            }
        );
        assert_eq!(event.pull_request(), Some(("acme/etl", 7)));
    }

    #[test]
    fn a_missing_field_is_named() {
        let body = json!({"action": "synchronize", "pull_request": {"number": 7, "head": {}}, "repository": {"full_name": "a/b"}});
        assert_eq!(parse("pull_request", body.to_string().as_bytes()), Err(EventError::Field("pull_request.head.sha")));
        assert!(matches!(parse("pull_request", b"{"), Err(EventError::NotJson(_))));
    }

    #[test]
    fn other_events_and_actions_are_ignored() {
        let labeled = json!({"action": "labeled"}).to_string();
        assert_eq!(
            parse("pull_request", labeled.as_bytes()),
            Ok(GithubEvent::Ignored { event: "pull_request".into(), action: Some("labeled".into()) })
        );
        assert_eq!(parse("push", b"{}"), Ok(GithubEvent::Ignored { event: "push".into(), action: None }));
        assert_eq!(parse("ping", b"{\"zen\": \"x\"}"), Ok(GithubEvent::Ping));
    }
}
