//! Tool calls that wait for a person. A sensitive tool answers with a URL-mode
//! elicitation pointing at the registry's approval page (2026-07-28: an
//! `input_required` result; 2025-11-25: error -32042). The agent records the link,
//! waits until the request is decided or expires, then calls again or records the
//! refusal. Nothing the agent or the model says can approve: only the registry's
//! record of a person's decision counts, and the server checks it again.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tracing::{debug, info, warn};

/// The approval a call waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeeded {
    pub approval_id: String,
    /// The registry's approval page, for people.
    pub url: String,
}

/// The URL elicitation among 2026-07-28 `inputRequests` (`{key: {method, params}}`).
pub fn from_input_requests(requests: &Value) -> Option<ApprovalNeeded> {
    requests.as_object()?.values().find_map(|r| url_elicitation(r.get("params").unwrap_or(r)))
}

/// The URL elicitation in the data of a 2025-11-25 -32042 error (`{elicitations: [...]}`).
pub fn from_error_data(data: &Value) -> Option<ApprovalNeeded> {
    data.get("elicitations")?.as_array()?.iter().find_map(url_elicitation)
}

fn url_elicitation(params: &Value) -> Option<ApprovalNeeded> {
    if params.get("mode").and_then(Value::as_str) != Some("url") {
        return None;
    }
    Some(ApprovalNeeded {
        approval_id: params.get("elicitationId")?.as_str()?.to_string(),
        url: params.get("url")?.as_str()?.to_string(),
    })
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved,
    /// Declined, expired, revoked, or not decided in time; the text says which.
    Refused(String),
}

impl Decision {
    /// The word the event log uses.
    pub fn outcome(&self) -> &str {
        match self {
            Decision::Approved => "approved",
            Decision::Refused(_) => "refused",
        }
    }
}

/// Waits for the decision on an approval request.
#[async_trait]
pub trait Approvals: Send + Sync {
    async fn decided(&self, needed: &ApprovalNeeded) -> Decision;
}

/// Asks the registry (`GET /v0.1/x/approvals/{id}`) with the agent's mesh identity: the
/// agent may read the requests made on its behalf, never decide them.
pub struct RegistryApprovals {
    pub base: String,
    pub http: reqwest::Client,
    pub poll: Duration,
    /// Longest wait; the registry's own expiry usually ends it first.
    pub max_wait: Duration,
}

#[async_trait]
impl Approvals for RegistryApprovals {
    async fn decided(&self, needed: &ApprovalNeeded) -> Decision {
        let url = format!("{}/v0.1/x/approvals/{}", self.base.trim_end_matches('/'), needed.approval_id);
        let started = Instant::now();
        loop {
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(view) => {
                        if let Some(decision) = decision(&view) {
                            info!(approval_id = %needed.approval_id, ?decision, "approval decided");
                            return decision;
                        }
                    }
                    Err(e) => warn!(error = %e, %url, "the registry's answer about an approval is not JSON"),
                },
                Ok(r) => warn!(status = %r.status(), %url, "the registry would not show the approval"),
                Err(e) => warn!(error = %e, %url, "cannot reach the registry for an approval"),
            }
            if started.elapsed() >= self.max_wait {
                return Decision::Refused(format!("no decision within {:?}", self.max_wait));
            }
            debug!(approval_id = %needed.approval_id, "still waiting for a person");
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// The decision an approval view shows, if it is decided (pure).
pub fn decision(view: &Value) -> Option<Decision> {
    let state = view.get("state").and_then(Value::as_str)?;
    let by = view.pointer("/closed_by/by").and_then(Value::as_str);
    match state {
        "pending" => None,
        // Approved, or already used by the server for this very call.
        "approved" | "consumed" => Some(Decision::Approved),
        other => Some(Decision::Refused(match by {
            Some(by) => format!("the approval request was {other} by {by}"),
            None => format!("the approval request is {other}"),
        })),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn both_revisions_name_the_approval_and_its_page() {
        let modern = json!({"approval": {"method": "elicitation/create",
            "params": {"mode": "url", "url": "https://reg/approvals/ap1", "elicitationId": "ap1", "message": "m"}}});
        let legacy =
            json!({"elicitations": [{"mode": "url", "elicitationId": "ap2", "url": "https://reg/approvals/ap2"}]});
        let want = |id: &str| ApprovalNeeded { approval_id: id.into(), url: format!("https://reg/approvals/{id}") };
        assert_eq!(from_input_requests(&modern), Some(want("ap1")));
        assert_eq!(from_error_data(&legacy), Some(want("ap2")));
        let form = json!({"confirm": {"method": "elicitation/create", "params": {"mode": "form", "message": "ok?"}}});
        assert_eq!(from_input_requests(&form), None, "a form is not an approval");
    }

    #[test]
    fn only_a_decided_request_ends_the_wait() {
        assert_eq!(decision(&json!({"state": "pending"})), None);
        assert_eq!(decision(&json!({"state": "approved"})), Some(Decision::Approved));
        let declined = json!({"state": "declined", "closed_by": {"by": "user:bob", "at": "2026-11-27T00:00:00Z"}});
        assert_eq!(
            decision(&declined),
            Some(Decision::Refused("the approval request was declined by user:bob".into()))
        );
        assert!(matches!(decision(&json!({"state": "expired"})), Some(Decision::Refused(_))));
        assert_eq!(decision(&json!({})), None);
    }
}
