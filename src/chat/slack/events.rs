//! `POST /v1/chat/slack/events`: the Events API. `url_verification` is answered with its
//! challenge; an `app_mention` inside an investigation's thread is a follow-up question
//! to that investigation.
//!
//! Slack delivers an event again when it heard no answer within three seconds (up to
//! three times, over minutes), under the same `event_id`. A question is asked once:
//!
//! - event ids seen by this process are remembered (a bounded set, in memory), which
//!   answers the common case, a retry reaching the same process, without a read;
//! - across processes and restarts, the investigation's log decides: a `question.asked`
//!   with the same text from the same person, recorded no earlier than a minute before
//!   the event happened at Slack (`event_time`), is this event's. The minute covers the
//!   clocks' disagreement. The engine's `question.asked` has no field for Slack's event
//!   id, hence this rule; its cost is that the same person asking the very same words
//!   twice within a minute of the first asks once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::api::SlackApi;
use super::signature::verify_request;
use super::{SINK_NAME, SlackConfig};
use crate::chat::ledger::{Ledger, LedgerError};
use crate::clock::Clock;
use crate::engine::{Input, State as InvestigationState};
use crate::store::{Asked, Store, StoreError};
use crate::web::ApiError;

/// Event ids remembered per process.
const REMEMBERED_EVENTS: usize = 10_000;
/// How much earlier than Slack's `event_time` a recorded question may be and still be
/// the same event's (clock disagreement).
const CLOCK_SLACK_SECS: i64 = 60;
/// The web's limit on a question, kept here too.
const QUESTION_CHARS: usize = 2000;
const MAX_BODY: usize = 1 << 20;
/// Events read per page when looking for a question already asked.
const PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What the events endpoint reaches.
#[derive(Clone)]
pub struct SlackEvents {
    pub config: Arc<SlackConfig>,
    pub store: Arc<dyn Store>,
    pub ledger: Ledger,
    /// For short answers in the thread (the investigation is busy, the question empty).
    pub api: SlackApi,
    pub clock: Arc<dyn Clock>,
    seen: Arc<Mutex<Seen>>,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Asked as event `seq` of the investigation.
    Asked { investigation_id: String, seq: i64 },
    /// A delivery of an event already handled.
    Duplicate,
    /// Not a mention in a thread Inquest posts (or not a mention at all).
    Ignored,
    /// The investigation takes no question now, or the question was empty or too
    /// long; the thread was told.
    Declined(String),
}

impl SlackEvents {
    pub fn new(
        config: Arc<SlackConfig>,
        store: Arc<dyn Store>,
        ledger: Ledger,
        api: SlackApi,
        clock: Arc<dyn Clock>,
    ) -> SlackEvents {
        SlackEvents { config, store, ledger, api, clock, seen: Arc::new(Mutex::new(Seen::default())) }
    }

    /// Handles an `event_callback` envelope.
    pub async fn handle_callback(&self, envelope: &Value) -> Result<Outcome, EventsError> {
        let event_id = envelope["event_id"].as_str().unwrap_or_default().to_string();
        if !event_id.is_empty() && !self.seen().insert(&event_id) {
            debug!(event_id, "a Slack event delivered again");
            return Ok(Outcome::Duplicate);
        }
        let result = self.mention(envelope).await;
        if result.is_err() {
            // Not handled: Slack's next delivery must be handled, not skipped.
            self.seen().forget(&event_id);
        }
        result
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn mention(&self, envelope: &Value) -> Result<Outcome, EventsError> {
        let event = &envelope["event"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        // Bots (this app included) do not ask.
        if event["type"] != "app_mention" || !event["bot_id"].is_null() {
            return Ok(Outcome::Ignored);
        }
        let (channel, thread_ts, user) = (s(&event["channel"]), s(&event["thread_ts"]), s(&event["user"]));
        if channel.is_empty() || thread_ts.is_empty() || user.is_empty() {
            return Ok(Outcome::Ignored);
        }
        let thread_ref = format!("{channel}:{thread_ts}");
        let Some(investigation_id) = self.ledger.investigation_of(SINK_NAME, &thread_ref).await? else {
            return Ok(Outcome::Ignored);
        };
        let question = without_mentions(&s(&event["text"]));
        let asked_by = match self.config.principal_of(&user) {
            Some(person) => person.display(),
            None => user.clone(),
        };
        if question.is_empty() || question.chars().count() > QUESTION_CHARS {
            let why = format!("A question is 1 to {QUESTION_CHARS} characters, after the mention.");
            self.reply(&channel, &thread_ts, &why).await;
            return Ok(Outcome::Declined(why));
        }
        let event_time = envelope["event_time"].as_i64().unwrap_or_else(|| self.clock.now().timestamp());
        if self.asked_already(&investigation_id, &question, &asked_by, event_time).await? {
            debug!(investigation = %investigation_id, "a Slack question recorded before; not asking again");
            return Ok(Outcome::Duplicate);
        }
        let input = Input::QuestionAsked { question, asked_by: Some(asked_by) };
        match self.store.ask(&investigation_id, &input, self.clock.now()).await? {
            Asked::Queued { seq } => {
                info!(investigation = %investigation_id, seq, slack_user = %user, "a question asked in Slack");
                Ok(Outcome::Asked { investigation_id, seq })
            }
            Asked::NotFound => Ok(Outcome::Ignored),
            Asked::Refused(state) => {
                let why = busy(state);
                self.reply(&channel, &thread_ts, &why).await;
                Ok(Outcome::Declined(why))
            }
        }
    }

    /// Whether the log holds this question from this person, recorded no earlier than
    /// the event happened (less the clocks' slack).
    async fn asked_already(
        &self,
        id: &str,
        question: &str,
        asked_by: &str,
        event_time: i64,
    ) -> Result<bool, StoreError> {
        let since = event_time - CLOCK_SLACK_SECS;
        let mut after = 0;
        loop {
            let page = self.store.events(id, after, PAGE).await?;
            let Some(last) = page.last() else { return Ok(false) };
            after = last.seq;
            if page.iter().any(|e| {
                e.kind == "question.asked"
                    && e.at.timestamp() >= since
                    && e.data["question"] == question
                    && e.data["asked_by"] == asked_by
            }) {
                return Ok(true);
            }
        }
    }

    /// A short answer in the thread; a failure is logged, not returned (the event was
    /// handled).
    async fn reply(&self, channel: &str, thread_ts: &str, text: &str) {
        let message = json!({"channel": channel, "thread_ts": thread_ts, "text": text});
        if let Err(e) = self.api.post_message(&message).await {
            warn!(channel, error = %e, "could not answer in a Slack thread");
        }
    }
}

pub fn events_router(state: SlackEvents) -> Router {
    Router::new().route("/v1/chat/slack/events", post(receive)).layer(DefaultBodyLimit::max(MAX_BODY)).with_state(state)
}

async fn receive(State(state): State<SlackEvents>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = verify_request(&state.config.signing_secret, &headers, &body, state.clock.now()) {
        warn!(error = %e, "a Slack event was refused");
        return ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()).into_response();
    }
    let Ok(envelope) = serde_json::from_slice::<Value>(&body) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "the body is not JSON").into_response();
    };
    match envelope["type"].as_str() {
        Some("url_verification") => Json(json!({"challenge": envelope["challenge"]})).into_response(),
        Some("event_callback") => match state.handle_callback(&envelope).await {
            Ok(_) => StatusCode::OK.into_response(),
            // Not handled: an error answer makes Slack deliver it again.
            Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()).into_response(),
        },
        _ => StatusCode::OK.into_response(),
    }
}

/// Why an investigation in `state` takes no question now.
fn busy(state: InvestigationState) -> String {
    format!("The investigation is {}; ask again once it has reported.", state.as_str())
}

/// The text after the leading mentions (`<@U123>` or `<@U123|name>`).
fn without_mentions(text: &str) -> String {
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix("<@") {
        match after.find('>') {
            Some(end) => rest = after[end + 1..].trim_start(),
            None => break,
        }
    }
    rest.trim().to_string()
}

/// Event ids seen, oldest forgotten first.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// `false` if `id` was seen already.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > REMEMBERED_EVENTS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    fn forget(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.order.retain(|x| x != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_mentions_are_not_part_of_the_question() {
        assert_eq!(without_mentions("<@U0APP> why did it fail?"), "why did it fail?");
        assert_eq!(without_mentions("  <@U0APP|inquest> <@U0B>  and <@U0C>? "), "and <@U0C>?");
        assert_eq!(without_mentions("<@U0APP>"), "");
        assert_eq!(without_mentions("<@broken why"), "<@broken why");
    }

    #[test]
    fn the_seen_set_is_bounded_and_forgets_on_request() {
        let mut seen = Seen::default();
        assert!(seen.insert("Ev1"));
        assert!(!seen.insert("Ev1"));
        seen.forget("Ev1");
        assert!(seen.insert("Ev1"));
        for i in 0..REMEMBERED_EVENTS {
            seen.insert(&format!("x{i}"));
        }
        assert!(seen.insert("Ev1"), "the oldest was forgotten");
        assert_eq!(seen.ids.len(), REMEMBERED_EVENTS);
    }
}
