//! `POST /v1/chat/slack/interactivity`: a press of an approval card's button becomes a
//! person's decision at the registry's approval service.
//!
//! Slack posts `payload=<JSON>` form-encoded, signed, and wants an answer within three
//! seconds. The route checks the signature and answers at once; the decision and the
//! card's update follow in a task of their own.
//!
//! Who decides comes from the signed payload's `user.id`, mapped through
//! [`SlackConfig::users`] to a directory identity; the button carries nothing but the
//! approval id. The decision goes through the same handler as the approval page's
//! (`approvals::routes::decide`), so the same policy applies: approvers only, never the
//! requester nor whom the action is for, the digest bound, refusals audited. The digest
//! quoted is the request's own, read back from the registry's store: an approval id names
//! one request, bound to one action for its whole life, and the card showed that action.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::api::SlackApi;
use super::blocks::{self, APPROVE_ACTION, DECLINE_ACTION};
use super::signature::verify_request;
use super::{SlackConfig, form_value};
use crate::identity::{Authenticated, Principal};
use crate::registry::approvals::machine::Refusal;
use crate::registry::approvals::routes::{self, ApprovalError, ApprovalView};
use crate::registry::approvals::{ApprovalContext, ApprovalState};
use crate::web::ApiError;

/// Interactivity payloads are small; this leaves room for a message's blocks.
const MAX_BODY: usize = 1 << 20;

/// What the interactivity endpoint reaches.
#[derive(Clone)]
pub struct SlackInteractivity {
    pub config: Arc<SlackConfig>,
    /// The registry's approval service (its clock also judges signatures' freshness).
    pub approvals: ApprovalContext,
    pub api: SlackApi,
}

pub fn interactivity_router(state: SlackInteractivity) -> Router {
    Router::new()
        .route("/v1/chat/slack/interactivity", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A press of Approve or Decline, as the signed payload says.
#[derive(Debug, Clone, PartialEq)]
pub struct Press {
    pub slack_user: String,
    pub approval_id: String,
    pub approve: bool,
    pub channel: String,
    pub message_ts: String,
    pub thread_ts: Option<String>,
    /// The card as Slack shows it now.
    pub blocks: Vec<Value>,
    pub text: String,
}

impl Press {
    /// The press a `block_actions` payload reports, if it is one of a card's buttons
    /// (the link to the approval page, and everything else, is not).
    pub fn of(payload: &Value) -> Option<Press> {
        if payload["type"] != "block_actions" {
            return None;
        }
        let action = payload["actions"]
            .as_array()?
            .iter()
            .find(|a| a["action_id"] == APPROVE_ACTION || a["action_id"] == DECLINE_ACTION)?;
        let s = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        Some(Press {
            slack_user: s(&payload["user"]["id"])?,
            approval_id: s(&action["value"])?,
            approve: action["action_id"] == APPROVE_ACTION,
            channel: s(&payload["container"]["channel_id"]).or_else(|| s(&payload["channel"]["id"]))?,
            message_ts: s(&payload["container"]["message_ts"]).or_else(|| s(&payload["message"]["ts"]))?,
            thread_ts: s(&payload["message"]["thread_ts"]),
            blocks: payload["message"]["blocks"].as_array().cloned().unwrap_or_default(),
            text: s(&payload["message"]["text"]).unwrap_or_default(),
        })
    }
}

/// What became of a press.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The person is not in [`SlackConfig::users`]; told so, nothing decided.
    Unmapped,
    /// Decided; the card now says `line` (and keeps its buttons while more people must
    /// approve).
    Decided { line: String, closed: bool },
    /// Refused because of who pressed (not an approver, the requester, twice): told
    /// to them alone; the card stays.
    RefusedForThem(String),
    /// The request can no longer be decided (expired, declined, revoked, used): the
    /// card says why and loses its buttons.
    Closed(String),
    /// The registry could not be asked; the person is told to try again.
    Failed(String),
}

async fn receive(State(state): State<SlackInteractivity>, headers: HeaderMap, body: Bytes) -> Response {
    let now = state.approvals.clock.now();
    if let Err(e) = verify_request(&state.config.signing_secret, &headers, &body, now) {
        warn!(error = %e, "a Slack interactivity request was refused");
        return ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()).into_response();
    }
    let Some(payload) = form_value(&body, "payload").and_then(|p| serde_json::from_str::<Value>(&p).ok()) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "expected a form field `payload` holding JSON")
            .into_response();
    };
    if let Some(press) = Press::of(&payload) {
        // Slack wants its answer within three seconds; the decision and the card's
        // update need not hold it up.
        tokio::spawn(async move {
            state.handle(&press).await;
        });
    }
    StatusCode::OK.into_response()
}

impl SlackInteractivity {
    /// Decides as the press says and shows the outcome in Slack.
    pub async fn handle(&self, press: &Press) -> Outcome {
        let outcome = self.decide(press).await;
        let show = match &outcome {
            Outcome::Unmapped => {
                Err("Your Slack account is not linked to a person Inquest knows, so this decides nothing. \
                 Use the approval page, or ask an administrator to add you to `chat.slack.users`."
                    .to_string())
            }
            Outcome::RefusedForThem(why) => Err(format!("Not recorded: {why}.")),
            Outcome::Failed(why) => Err(format!("Your decision could not be recorded ({why}); try again.")),
            Outcome::Decided { line, closed } => Ok(blocks::decided(&press.blocks, line, !closed)),
            Outcome::Closed(why) => Ok(blocks::decided(&press.blocks, &format!("⚠️ {why}"), false)),
        };
        let shown = match show {
            Ok(card) => {
                let message = json!({"channel": press.channel, "ts": press.message_ts,
                                     "text": press.text, "blocks": card});
                self.api.update(&message).await
            }
            Err(text) => {
                self.api.post_ephemeral(&press.channel, &press.slack_user, &text, press.thread_ts.as_deref()).await
            }
        };
        if let Err(e) = shown {
            warn!(approval_id = %press.approval_id, error = %e, "the outcome of a press could not be shown in Slack");
        }
        outcome
    }

    async fn decide(&self, press: &Press) -> Outcome {
        let Some(person) = self.config.principal_of(&press.slack_user) else {
            info!(slack_user = %press.slack_user, approval_id = %press.approval_id, "a press by an unmapped Slack user");
            return Outcome::Unmapped;
        };
        let ctx = &self.approvals;
        let request = match ctx.store.approval(&press.approval_id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Closed(format!("no approval request {}", press.approval_id)),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let verdict = if press.approve { "approve" } else { "decline" };
        let body = json!({"decision": verdict, "digest": request.digest}).to_string();
        let decided = routes::decide(
            State(ctx.clone()),
            Authenticated(person.clone()),
            Path(press.approval_id.clone()),
            Bytes::from(body),
        )
        .await;
        info!(
            approval_id = %press.approval_id, slack_user = %press.slack_user, actor = %person.id(), verdict,
            ok = decided.is_ok(), "a decision from Slack"
        );
        match decided {
            Ok(axum::Json(view)) => decided_line(&view, &person, press.approve),
            Err(ApprovalError::Refused(r)) if r.is_about_identity() || r == Refusal::DuplicateApproval => {
                Outcome::RefusedForThem(r.to_string())
            }
            Err(ApprovalError::Refused(r)) => Outcome::Closed(capitalized(&r.to_string())),
            Err(ApprovalError::NotFound(id)) => Outcome::Closed(format!("no approval request {id}")),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// The card's line once a decision was recorded.
fn decided_line(view: &ApprovalView, person: &Principal, approved: bool) -> Outcome {
    let who = person.display();
    match view.state {
        ApprovalState::Pending if approved => Outcome::Decided {
            line: format!(
                "👍 Approved by {who} ({} of {} approvals)",
                view.approvals.len(),
                view.approver_policy.required
            ),
            closed: false,
        },
        ApprovalState::Approved => {
            let names: Vec<String> =
                view.approvals.iter().map(|v| v.name.clone().unwrap_or_else(|| v.by.clone())).collect();
            Outcome::Decided { line: format!("✅ Approved by {}", names.join(", ")), closed: true }
        }
        ApprovalState::Declined => Outcome::Decided { line: format!("❌ Declined by {who}"), closed: true },
        other => Outcome::Decided { line: format!("The request is {}", other.as_str()), closed: !other.is_open() },
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
