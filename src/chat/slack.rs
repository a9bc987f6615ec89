//! Slack: each investigation's thread in its team's channel, approvals as buttons, and
//! follow-up questions asked by mentioning the app in a thread.
//!
//! - [`api`]: the Web API client (bearer token, Slack's `ok:false` errors, `ratelimited`
//!   waited out as `Retry-After` says);
//! - [`blocks`]: what a root message, a post and a decided approval card look like in
//!   Block Kit (pure);
//! - [`sink`]: [`SlackSink`], the [`ChatSink`](super::ChatSink): one root message per
//!   investigation whose status line is edited in place, every post a reply in its
//!   thread, paced per channel, bursts of tool calls folded into one message;
//! - [`signature`]: `X-Slack-Signature` v0;
//! - [`interactivity`]: `POST /v1/chat/slack/interactivity`, where a button press
//!   becomes a person's decision at the registry's approval service;
//! - [`events`]: `POST /v1/chat/slack/events`, where a mention in a thread becomes a
//!   follow-up question;
//! - [`socket`]: Socket Mode, the same events and presses over a websocket this process
//!   opens, for deployments without a public URL ([`SlackConfig::socket_mode`]).
//!
//! Slack has no idempotency key. Every post carries message metadata naming its key
//! (`inquest_post`, `{key}`), and every root names its investigation (`inquest_thread`,
//! `{investigation}`); before writing, the sink reads what is already there and adopts a
//! message carrying the key instead of sending it again. That is what makes a restart,
//! or a lost answer, post nothing twice.

pub mod api;
pub mod blocks;
pub mod events;
pub mod interactivity;
pub mod signature;
pub mod sink;
pub mod socket;

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

pub use api::{SlackApi, SlackApiError};
pub use events::{SlackEvents, events_router};
pub use interactivity::{SlackInteractivity, interactivity_router};
pub use signature::{SignatureError, verify_signature};
pub use sink::SlackSink;
pub use socket::SocketMode;

use crate::identity::Principal;

/// The ledger's name for Slack threads.
pub const SINK_NAME: &str = "slack";

/// `[chat.slack]`: the Slack app Inquest posts as, and who its users are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The Web API's base URL (a test server's in tests).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The bot token (`xoxb-...`), with `chat:write` and `channels:history` (plus
    /// `groups:history` for private channels) and `app_mentions:read` for questions.
    pub bot_token: SecretString,
    /// The app's signing secret, which signs what Slack sends (interactivity, events).
    pub signing_secret: SecretString,
    /// Team label -> channel id (`C...`/`G...`): where a team's investigations go.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// Where investigations of a team with no channel of its own go; none: they are
    /// not posted to Slack (the relay reports a refusal for each).
    #[serde(default)]
    pub default_channel: Option<String>,
    /// Slack user id (`U...`/`W...`) -> the person in the directory. Only mapped
    /// people can approve or decline from Slack; the mapping is the whole of their
    /// identity there, so it must agree with the directory (same subject and groups
    /// as their web login).
    #[serde(default)]
    pub users: BTreeMap<String, SlackUser>,
    /// Receive interactivity and events over Socket Mode (a websocket this process
    /// opens to Slack) instead of at the HTTP endpoints; needs [`Self::app_token`].
    #[serde(default)]
    pub socket_mode: bool,
    /// The app-level token (`xapp-...`, scope `connections:write`) Socket Mode connects
    /// with.
    #[serde(default)]
    pub app_token: Option<SecretString>,
    /// Least time between two messages to one channel from this process: Slack allows
    /// about one a second per channel and answers faster posting with 429s. Lower it
    /// only against a test server.
    #[serde(default = "default_pace", with = "crate::config::humantime_serde_compat")]
    pub pace: std::time::Duration,
}

/// A directory identity, as a Slack user is known to the approval service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackUser {
    pub subject: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl SlackUser {
    pub fn principal(&self) -> Principal {
        Principal::User { subject: self.subject.clone(), groups: self.groups.clone(), name: self.name.clone() }
    }
}

fn default_pace() -> std::time::Duration {
    sink::PACE
}

fn default_api_url() -> String {
    "https://slack.com/api".to_string()
}

impl SlackConfig {
    /// The channel a team's investigations go to.
    pub fn channel_for(&self, team: &str) -> Option<&str> {
        self.channels.get(team).or(self.default_channel.as_ref()).map(String::as_str)
    }

    /// The person a Slack user is, when configured.
    pub fn principal_of(&self, slack_user: &str) -> Option<Principal> {
        self.users.get(slack_user).map(SlackUser::principal)
    }

    /// Everything wrong with the configuration, all at once (empty: usable).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.api_url.starts_with("https://") || self.api_url.starts_with("http://")) {
            out.push(format!("chat.slack.api_url: `{}` is not an http(s) URL", self.api_url));
        }
        // `chat.update` takes channel ids only, so names are refused here rather than
        // at the first status edit.
        for (team, channel) in &self.channels {
            if !is_channel_id(channel) {
                out.push(format!("chat.slack.channels.{team}: `{channel}` is not a channel id (C..., G... or D...)"));
            }
        }
        if let Some(channel) = self.default_channel.as_deref().filter(|c| !is_channel_id(c)) {
            out.push(format!("chat.slack.default_channel: `{channel}` is not a channel id (C..., G... or D...)"));
        }
        for (id, user) in &self.users {
            if !is_user_id(id) {
                out.push(format!("chat.slack.users: `{id}` is not a Slack user id (U... or W...)"));
            }
            if user.subject.trim().is_empty() {
                out.push(format!("chat.slack.users.{id}.subject: empty"));
            }
        }
        match &self.app_token {
            None if self.socket_mode => out.push(
                "chat.slack.app_token: socket_mode needs the app-level token (xapp-..., scope connections:write)"
                    .to_string(),
            ),
            Some(_) if !self.socket_mode => out.push("chat.slack.app_token: only used with socket_mode".to_string()),
            Some(token) if !token.expose_secret().starts_with("xapp-") => {
                out.push("chat.slack.app_token: not an app-level token (xapp-...)".to_string());
            }
            _ => {}
        }
        out
    }

    /// The configuration as a reader may see it: secrets replaced by `***`.
    pub fn redacted(&self) -> Value {
        json!({
            "api_url": self.api_url,
            "bot_token": "***",
            "signing_secret": "***",
            "channels": self.channels,
            "default_channel": self.default_channel,
            "users": self.users.iter().map(|(id, u)| (id.clone(), json!({
                "subject": u.subject, "groups": u.groups, "name": u.name,
            }))).collect::<serde_json::Map<String, Value>>(),
            "socket_mode": self.socket_mode,
            "app_token": self.app_token.as_ref().map(|_| "***"),
        })
    }
}

/// The value of field `name` in a form-encoded body (`application/x-www-form-urlencoded`).
pub fn form_value(body: &[u8], name: &str) -> Option<String> {
    let decode = |raw: &str| {
        let spaced = raw.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced).decode_utf8().ok().map(|c| c.into_owned())
    };
    std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key)? == name).then(|| decode(value)).flatten()
    })
}

fn is_channel_id(s: &str) -> bool {
    s.len() >= 2
        && matches!(s.as_bytes()[0], b'C' | b'G' | b'D')
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn is_user_id(s: &str) -> bool {
    s.len() >= 2
        && matches!(s.as_bytes()[0], b'U' | b'W')
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_like: Value) -> SlackConfig {
        serde_json::from_value(toml_like).unwrap()
    }

    #[test]
    fn a_configuration_reads_with_defaults_and_reports_every_problem() {
        let c = config(json!({
            "bot_token": "xoxb-1", "signing_secret": "s",
            "channels": {"data": "C0DATA", "ml": "#ml"},
            "default_channel": "C0ALL",
            "users": {"U01ALICE": {"subject": "alice", "groups": ["data-eng"], "name": "Alice"},
                      "alice": {"subject": ""}},
        }));
        assert_eq!(c.api_url, "https://slack.com/api");
        assert_eq!(c.channel_for("data"), Some("C0DATA"));
        assert_eq!(c.channel_for("finance"), Some("C0ALL"));
        assert_eq!(
            c.principal_of("U01ALICE"),
            Some(Principal::User {
                subject: "alice".into(),
                groups: vec!["data-eng".into()],
                name: Some("Alice".into())
            })
        );
        assert_eq!(c.principal_of("U02BOB"), None);
        assert_eq!(
            c.problems(),
            [
                "chat.slack.channels.ml: `#ml` is not a channel id (C..., G... or D...)",
                "chat.slack.users: `alice` is not a Slack user id (U... or W...)",
                "chat.slack.users.alice.subject: empty",
            ]
        );
        let redacted = c.redacted().to_string();
        assert!(!redacted.contains("xoxb-1") && redacted.contains("***"), "{redacted}");
        assert!(!format!("{c:?}").contains("xoxb-1"), "secrets stay out of Debug");
    }

    #[test]
    fn form_fields_decode_as_browsers_encode_them() {
        let body = b"a=1&payload=%7B%22type%22%3A+%22block_actions%22%7D&b";
        assert_eq!(form_value(body, "payload").as_deref(), Some(r#"{"type": "block_actions"}"#));
        assert_eq!(form_value(body, "b").as_deref(), Some(""));
        assert_eq!(form_value(body, "c"), None);
    }

    #[test]
    fn unknown_fields_are_refused_and_socket_mode_needs_an_app_token() {
        let unknown =
            serde_json::from_value::<SlackConfig>(json!({"bot_token": "x", "signing_secret": "s", "channel": "C1"}));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `channel`"));
        let c = config(json!({"bot_token": "x", "signing_secret": "s", "socket_mode": true, "app_token": "xapp-1"}));
        assert_eq!(c.problems(), Vec::<String>::new());
        assert!(!c.redacted().to_string().contains("xapp-1"));
        let c = config(json!({"bot_token": "x", "signing_secret": "s", "socket_mode": true}));
        assert_eq!(c.problems().len(), 1);
        assert!(c.problems()[0].starts_with("chat.slack.app_token: socket_mode needs"), "{:?}", c.problems());
        let c = config(json!({"bot_token": "x", "signing_secret": "s", "socket_mode": true, "app_token": "xoxb-1"}));
        assert_eq!(c.problems(), ["chat.slack.app_token: not an app-level token (xapp-...)"]);
        let c = config(json!({"bot_token": "x", "signing_secret": "s", "app_token": "xapp-1"}));
        assert_eq!(c.problems(), ["chat.slack.app_token: only used with socket_mode"]);
    }
}
