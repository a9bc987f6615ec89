//! The approval API as a requesting service calls it: an MCP server about to run a
//! sensitive tool, the drafter about to mark a pull request ready. Over the service's
//! mTLS client, so the registry sees its mesh identity as the requester.

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApprovalError {
    /// The registry could not be reached or failed.
    #[error("the registry's approval service is unavailable: {0}")]
    Unavailable(String),
    /// The registry refused; `code` is its machine-readable reason.
    #[error("the registry refused ({code}): {message}")]
    Refused { code: String, message: String },
}

/// An approval request as the registry shows it to its requester.
#[derive(Debug, Clone, Deserialize)]
pub struct Ticket {
    pub id: String,
    /// `pending`, `approved`, ... (as of the answer; past its expiry it says `expired`).
    pub state: String,
    pub digest: String,
    /// The approval page.
    pub url: String,
    /// What the action is done to, as the request was made.
    #[serde(default)]
    pub resource: Value,
    /// Who approved, in order.
    #[serde(default)]
    pub approvals: Vec<TicketVote>,
    /// Who declined, revoked or consumed it.
    #[serde(default)]
    pub closed_by: Option<TicketVote>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TicketVote {
    pub by: String,
    #[serde(default)]
    pub name: Option<String>,
}

impl TicketVote {
    /// What people read for them: the name when known, else the id (a person's without
    /// its `user:` prefix).
    pub fn who(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.by.strip_prefix("user:").unwrap_or(&self.by))
    }
}

/// `/v0.1/x/approvals` of the registry at `registry_url`.
#[derive(Clone)]
pub struct ApprovalClient {
    pub http: reqwest::Client,
    pub registry_url: String,
}

impl ApprovalClient {
    /// Opens a request (or answers the open one for the same action).
    pub async fn create(&self, kind: &str, resource: Value, action: &Value, on_behalf_of: Value) -> Result<Ticket> {
        let mut body = json!({"kind": kind, "action": action, "resource": resource});
        if !on_behalf_of.is_null() {
            body["on_behalf_of"] = on_behalf_of;
        }
        ticket(self.send(reqwest::Method::POST, "/v0.1/x/approvals", Some(body)).await?)
    }

    pub async fn show(&self, id: &str) -> Result<Ticket> {
        ticket(self.send(reqwest::Method::GET, &format!("/v0.1/x/approvals/{id}"), None).await?)
    }

    /// Uses approval `id` once, for the action with `digest`.
    pub async fn consume(&self, id: &str, digest: &str) -> Result<Ticket> {
        let path = format!("/v0.1/x/approvals/{id}/consume");
        ticket(self.send(reqwest::Method::POST, &path, Some(json!({"digest": digest}))).await?)
    }

    /// Withdraws request `id`, saying why.
    pub async fn revoke(&self, id: &str, reason: &str) -> Result<Ticket> {
        let path = format!("/v0.1/x/approvals/{id}/revoke");
        ticket(self.send(reqwest::Method::POST, &path, Some(json!({"reason": reason}))).await?)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.registry_url.trim_end_matches('/'));
        let mut request = self.http.request(method, &url);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let resp = request.send().await.map_err(|e| ApprovalError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        if status.is_client_error() {
            let code = body["error"].as_str().unwrap_or("refused").to_string();
            let message = body["message"].as_str().unwrap_or_default().to_string();
            return Err(ApprovalError::Refused { code, message });
        }
        Err(ApprovalError::Unavailable(format!("{url} answered {status}")))
    }
}

pub type Result<T, E = ApprovalError> = std::result::Result<T, E>;

fn ticket(answer: Value) -> Result<Ticket> {
    serde_json::from_value(answer).map_err(|e| ApprovalError::Unavailable(format!("unexpected answer: {e}")))
}
