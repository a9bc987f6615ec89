//! The Slack Web API, as the sink and the endpoints use it: `POST <api_url>/<method>`
//! with the bot token as `Authorization: Bearer`, JSON bodies for the writes and form
//! bodies for the reads (some read methods ignore JSON bodies), and Slack's answers:
//! `{"ok": true, ...}` or `{"ok": false, "error": "<code>"}`.
//!
//! `ratelimited` (HTTP 429) is waited out as its `Retry-After` says, a few times and for
//! a bounded time; longer, it is an error the caller retries later. Nothing else is
//! retried here: a write whose answer was lost may have happened, and only the caller
//! knows how to look before writing again.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tracing::{debug, warn};

use super::SlackConfig;
use crate::chat::ChatError;

/// Rate-limited answers waited out per call.
const RATE_LIMIT_RETRIES: u32 = 3;
/// The longest `Retry-After` waited out in a call; longer is the caller's to retry.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);
/// When a 429 names no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a Web API call failed.
#[derive(Debug, thiserror::Error)]
pub enum SlackApiError {
    /// Slack answered `ok: false`.
    #[error("{method}: Slack answered `{error}`")]
    Slack { method: String, error: String },
    /// Still rate limited after the waits this call allows.
    #[error("{method}: rate limited; Slack asks to retry after {retry_after:?}")]
    RateLimited { method: String, retry_after: Duration },
    /// Slack was not reached, or answered with something that is not a Web API answer
    /// (a 5xx, a body that is not JSON). A write may or may not have happened.
    #[error("{method}: {message}")]
    Transport { method: String, message: String },
}

impl SlackApiError {
    /// Slack's error code, for `ok: false` answers.
    pub fn code(&self) -> Option<&str> {
        match self {
            SlackApiError::Slack { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether trying again later may succeed. Slack's codes for its own trouble are;
    /// the rest (a bad token, a channel the bot is not in, malformed blocks) are not.
    pub fn is_transient(&self) -> bool {
        match self {
            SlackApiError::Slack { error, .. } => matches!(
                error.as_str(),
                "internal_error"
                    | "fatal_error"
                    | "service_unavailable"
                    | "request_timeout"
                    | "team_added_to_org"
                    | "org_login_required"
                    | "ratelimited"
                    | "update_failed"
            ),
            SlackApiError::RateLimited { .. } | SlackApiError::Transport { .. } => true,
        }
    }
}

impl From<SlackApiError> for ChatError {
    fn from(e: SlackApiError) -> ChatError {
        if e.is_transient() { ChatError::Unavailable(e.to_string()) } else { ChatError::Refused(e.to_string()) }
    }
}

pub type Result<T, E = SlackApiError> = std::result::Result<T, E>;

/// A page of `conversations.replies` or `conversations.history`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub messages: Vec<Value>,
    /// Where the next page starts; none: this was the last.
    pub next_cursor: Option<String>,
}

/// The Web API client; cheap to clone.
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<SecretString>,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi").field("base", &self.base).finish_non_exhaustive()
    }
}

impl SlackApi {
    /// A client for `config.api_url` with the bot token, over `http` (which carries the
    /// timeouts and TLS settings).
    pub fn new(http: reqwest::Client, config: &SlackConfig) -> SlackApi {
        SlackApi {
            http,
            base: Arc::from(config.api_url.trim_end_matches('/')),
            token: Arc::new(config.bot_token.clone()),
        }
    }

    /// `chat.postMessage`; the message's `ts`.
    pub async fn post_message(&self, message: &Value) -> Result<String> {
        let answer = self.write("chat.postMessage", message).await?;
        string_field(&answer, "ts", "chat.postMessage")
    }

    /// `chat.update` of the message `message.ts` in `message.channel`.
    pub async fn update(&self, message: &Value) -> Result<()> {
        self.write("chat.update", message).await.map(drop)
    }

    /// `chat.postEphemeral`: `text` shown to `user` only, in `channel` (in the thread
    /// `thread_ts`, if given).
    pub async fn post_ephemeral(&self, channel: &str, user: &str, text: &str, thread_ts: Option<&str>) -> Result<()> {
        let mut body = serde_json::json!({"channel": channel, "user": user, "text": text});
        if let Some(ts) = thread_ts {
            body["thread_ts"] = ts.into();
        }
        self.write("chat.postEphemeral", &body).await.map(drop)
    }

    /// One page of the thread `ts` in `channel` (its parent first on the first page),
    /// messages from `oldest` on (that one included), with their metadata.
    pub async fn replies(&self, channel: &str, ts: &str, oldest: Option<&str>, cursor: Option<&str>) -> Result<Page> {
        let mut args = vec![
            ("channel", channel.to_string()),
            ("ts", ts.to_string()),
            ("include_all_metadata", "true".to_string()),
            ("limit", "200".to_string()),
        ];
        if let Some(o) = oldest {
            args.push(("oldest", o.to_string()));
            args.push(("inclusive", "true".to_string()));
        }
        if let Some(c) = cursor {
            args.push(("cursor", c.to_string()));
        }
        page(self.read("conversations.replies", &args).await?)
    }

    /// The newest `limit` messages of `channel` (not replies), newest first, with their
    /// metadata.
    pub async fn history(&self, channel: &str, limit: u32) -> Result<Page> {
        let args = [
            ("channel", channel.to_string()),
            ("include_all_metadata", "true".to_string()),
            ("limit", limit.to_string()),
        ];
        page(self.read("conversations.history", &args).await?)
    }

    /// `auth.test`: who the token is (`user_id`, `bot_id`, `team_id`).
    pub async fn auth_test(&self) -> Result<Value> {
        self.read("auth.test", &[]).await
    }

    async fn write(&self, method: &str, body: &Value) -> Result<Value> {
        self.call(method, || {
            self.http.post(self.url(method)).header(CONTENT_TYPE, "application/json; charset=utf-8").json(body)
        })
        .await
    }

    async fn read(&self, method: &str, args: &[(&str, String)]) -> Result<Value> {
        self.call(method, || self.http.post(self.url(method)).form(args)).await
    }

    fn url(&self, method: &str) -> String {
        format!("{}/{method}", self.base)
    }

    async fn call(&self, method: &str, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Value> {
        let mut waited = 0;
        loop {
            match send_once(method, request(), &self.token, DEFAULT_RETRY_AFTER).await {
                Err(SlackApiError::RateLimited { retry_after: wait, .. })
                    if waited < RATE_LIMIT_RETRIES && wait <= MAX_RATE_LIMIT_WAIT =>
                {
                    waited += 1;
                    warn!(method, ?wait, "Slack rate limited a call; waiting as it asks");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// One call of Web API `method` with `token`: its answer when `ok`; rate limiting (with
/// the wait Slack asks for, else `default_wait`), Slack's error code, or a transport
/// failure otherwise.
pub(super) async fn send_once(
    method: &str,
    request: reqwest::RequestBuilder,
    token: &SecretString,
    default_wait: Duration,
) -> Result<Value> {
    let transport = |message: String| SlackApiError::Transport { method: method.to_string(), message };
    let bearer = format!("Bearer {}", token.expose_secret());
    let response = request.header(AUTHORIZATION, bearer).send().await.map_err(|e| transport(e.to_string()))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.map_err(|e| transport(e.to_string()))?;
    let answer: Option<Value> = serde_json::from_slice(&body).ok();
    let code = answer.as_ref().and_then(|a| a.get("error")).and_then(Value::as_str).map(str::to_string);
    if status == StatusCode::TOO_MANY_REQUESTS || code.as_deref() == Some("ratelimited") {
        let retry_after = retry_after.unwrap_or(default_wait);
        return Err(SlackApiError::RateLimited { method: method.to_string(), retry_after });
    }
    let Some(answer) = answer.filter(|a| a.get("ok").and_then(Value::as_bool).is_some()) else {
        return Err(transport(format!("HTTP {status}: not a Web API answer")));
    };
    if answer["ok"] == Value::Bool(true) {
        if let Some(warnings) = answer.pointer("/response_metadata/warnings") {
            debug!(method, %warnings, "Slack warns about a call");
        }
        return Ok(answer);
    }
    Err(SlackApiError::Slack { method: method.to_string(), error: code.unwrap_or_else(|| "unknown_error".to_string()) })
}

fn string_field(answer: &Value, field: &str, method: &str) -> Result<String> {
    answer.get(field).and_then(Value::as_str).map(str::to_string).ok_or_else(|| SlackApiError::Transport {
        method: method.to_string(),
        message: format!("the answer has no `{field}`"),
    })
}

fn page(answer: Value) -> Result<Page> {
    let messages = answer.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let next_cursor = answer
        .pointer("/response_metadata/next_cursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty() && answer.get("has_more").and_then(Value::as_bool) != Some(false))
        .map(str::to_string);
    Ok(Page { messages, next_cursor })
}
