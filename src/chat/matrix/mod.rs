//! Matrix: each investigation a thread in its team's room, over the client-server API,
//! and follow-up questions asked by mentioning the bot in a thread.
//!
//! - The thread's root is a message in the team's room; every post is a reply in the
//!   thread (`m.thread`, with the reply fallback for clients that show no threads); the
//!   status line is an edit of the root (`m.replace`).
//! - Every message is sent with `PUT .../send/m.room.message/{txnId}`, the txnId derived
//!   from what the message is: the investigation for the root, the post's key for a
//!   post, the status and the edit it follows for an edit. A homeserver answers a
//!   repeated txnId from the same device with the event it already made, so a send
//!   repeated after a crash posts nothing new. Synapse remembers txnIds for a day, per
//!   device: a new access token (a new login) starts afresh.
//! - Matrix has no buttons: an approval card is a link to the registry's page.
//! - [`MatrixQuestions`] reads the rooms with `/sync`: a message in a thread that
//!   mentions the bot is asked of the thread's investigation.
//!
//! This module reads no configuration and binds nothing: the caller builds a
//! [`MatrixSink`] from a [`MatrixConfig`] and runs the loops it wants.
//!
//! - `sink`: the sends (idempotent txnIds, retries, the root's status);
//! - `content`: what is sent and how mentions are read back (pure);
//! - `questions`: the `/sync` loop that asks mentions of their investigations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ledger::{Ledger, LedgerError};
use super::render::clip;
use super::{ChatError, ChatSink, Post, Thread};
use crate::clock::Clock;
use crate::engine::{Input, State};
use crate::percent::encode;
use crate::store::{Asked, Store, StoreError};

/// The ledger's name for Matrix threads.
pub const SINK_NAME: &str = "matrix";

/// The content field naming the post's key (`<investigation>/<seq>`).
pub const POST_KEY: &str = "dev.inquest.post";

/// The bot's account data where [`MatrixQuestions`] keeps how far it read.
const CURSOR_TYPE: &str = "dev.inquest.questions";
/// One request's timeout (a `/sync` gets its wait on top).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries per request when the homeserver is busy (429), failing (5xx) or unreachable.
const ATTEMPTS: u32 = 4;
/// The first pause between tries; it doubles.
const BACKOFF: Duration = Duration::from_millis(500);
/// A 429 asking for a longer pause than this fails the request instead (the relay
/// comes back to it next round).
const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// Characters of a post's line, and of its raw data, shown in Matrix (the web thread
/// has all of it); smaller again when an event would not fit.
const TEXT_CHARS: usize = 4_000;
const DETAIL_CHARS: usize = 4_000;
/// Matrix refuses events over 64 KiB; the content stays well below.
const MAX_CONTENT_BYTES: usize = 48_000;
/// Messages per room per `/sync` (more, and the gap is read with `/messages`).
const TIMELINE_LIMIT: u32 = 100;
/// Pages of `/messages` read to fill one gap.
const GAP_PAGES: u32 = 10;
/// A question already in the log at most this long before the message was sent (the
/// homeserver's clock against ours) was asked by that message.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// How often the read position is saved when no question came.
const SAVE_EVERY: Duration = Duration::from_secs(300);

/// `[chat.matrix]`: the account Inquest posts as, and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// The homeserver's client-server API, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// The bot's access token. Sends are idempotent per device: keep one token (one
    /// login) rather than logging in at every start.
    #[serde(deserialize_with = "secret")]
    pub access_token: SecretString,
    /// The bot (`@inquest:example.org`): a mention of it is a question, and its own
    /// messages never are.
    pub user_id: String,
    /// Team label -> room id (`!...`): where a team's investigations go. The bot must
    /// be invited (it joins at start) or already in the room.
    #[serde(default)]
    pub rooms: BTreeMap<String, String>,
    /// Where investigations of a team with no room of its own go; none: they are not
    /// posted to Matrix (the relay reports a refusal for each).
    #[serde(default)]
    pub default_room: Option<String>,
}

impl MatrixConfig {
    /// Everything wrong with it, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.homeserver) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                out.push(format!("chat.matrix.homeserver: scheme `{}` is not http or https", url.scheme()))
            }
            Ok(url) if url.host_str().is_none() => out.push("chat.matrix.homeserver: has no host".to_string()),
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                out.push("chat.matrix.homeserver: must not carry credentials".to_string())
            }
            Ok(_) => {}
            Err(e) => out.push(format!("chat.matrix.homeserver: `{}` is not a URL: {e}", self.homeserver)),
        }
        if self.access_token.expose_secret().trim().is_empty() {
            out.push("chat.matrix.access_token: empty".to_string());
        }
        if localpart(&self.user_id).is_none() {
            out.push(format!("chat.matrix.user_id: `{}` is not a user id (@name:server)", self.user_id));
        }
        // Sends take room ids only; an alias (`#...`) is refused here rather than at the
        // first post.
        for (team, room) in &self.rooms {
            if !is_room_id(room) {
                out.push(format!("chat.matrix.rooms.{team}: `{room}` is not a room id (!...)"));
            }
        }
        if let Some(room) = self.default_room.as_deref().filter(|r| !is_room_id(r)) {
            out.push(format!("chat.matrix.default_room: `{room}` is not a room id (!...)"));
        }
        if self.rooms.is_empty() && self.default_room.is_none() {
            out.push("chat.matrix: no rooms and no default_room: nothing would be posted".to_string());
        }
        out
    }
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

/// An investigation's thread: the room and the root message, as the ledger keeps it
/// (`<room id>/<root event id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRef {
    pub room_id: String,
    pub root_event_id: String,
}

impl ThreadRef {
    pub fn parse(text: &str) -> Option<ThreadRef> {
        // Room ids and event ids never hold a `/` (their opaque parts are letters,
        // digits and URL-safe base64; a server name is a host and port).
        let (room, root) = text.split_once('/')?;
        (is_room_id(room) && root.len() > 1 && root.starts_with('$'))
            .then(|| ThreadRef { room_id: room.to_string(), root_event_id: root.to_string() })
    }
}

impl std::fmt::Display for ThreadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.room_id, self.root_event_id)
    }
}

/// A message in one of our threads that mentions the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub room_id: String,
    pub root_event_id: String,
    pub event_id: String,
    /// Who asked (`@alice:example.org`).
    pub sender: String,
    /// The question, the mention taken out.
    pub question: String,
    /// When the homeserver received it, in milliseconds.
    pub sent_at_ms: i64,
}

impl Mention {
    pub fn thread_ref(&self) -> ThreadRef {
        ThreadRef { room_id: self.room_id.clone(), root_event_id: self.root_event_id.clone() }
    }
}

/// What one `/sync` brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mentions {
    pub mentions: Vec<Mention>,
    /// Where the next `/sync` starts.
    pub next_batch: String,
}

mod content;
mod questions;
mod sink;

use content::*;
pub use questions::*;
pub use sink::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn thread() -> Thread {
        Thread {
            investigation_id: "inv1".into(),
            title: "EchoFailed".into(),
            team: "data".into(),
            service: Some("etl".into()),
            url: "https://inquest.example/investigations/inv1".into(),
        }
    }

    const BOT: &str = "@inquest:example.org";

    #[test]
    fn txn_ids_are_the_same_for_the_same_message_only() {
        let a = txn_id("post", &["!r:x", "$root", "inv1/4"]);
        assert_eq!(a, txn_id("post", &["!r:x", "$root", "inv1/4"]));
        assert!(a.starts_with("inquest.post.") && a.len() == "inquest.post.".len() + 32, "{a}");
        let others = [
            txn_id("post", &["!r:x", "$root", "inv1/5"]),
            txn_id("post", &["!r:y", "$root", "inv1/4"]),
            txn_id("root", &["!r:x", "$root", "inv1/4"]),
            // Parts are separated: moving a character between them changes the id.
            txn_id("post", &["!r:x", "$roo", "tinv1/4"]),
        ];
        assert!(others.iter().all(|o| *o != a), "{others:?}");
    }

    #[test]
    fn thread_refs_round_trip_and_refuse_what_is_not_one() {
        let r = ThreadRef { room_id: "!abc:example.org".into(), root_event_id: "$Ev-1_x".into() };
        assert_eq!(r.to_string(), "!abc:example.org/$Ev-1_x");
        assert_eq!(ThreadRef::parse(&r.to_string()), Some(r));
        let v12 = ThreadRef::parse("!aV-ADSWtKxp3A0M_RmesoIPeqhzNAKjvtXg-rftbOCY/$oHxKY9Gt").unwrap();
        assert_eq!(v12.room_id, "!aV-ADSWtKxp3A0M_RmesoIPeqhzNAKjvtXg-rftbOCY");
        for bad in ["", "!abc:x", "#alias:x/$e", "!abc:x/", "!abc:x/$", "!abc:x/e1", "1700000000.0001"] {
            assert_eq!(ThreadRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_root_and_its_edits_carry_the_status_line() {
        let root = root_content(&thread(), "🔎 EchoFailed — running", BOT);
        assert_eq!(
            root,
            json!({
                "msgtype": "m.text",
                "body": "🔎 EchoFailed — running\nTeam data, service etl · https://inquest.example/investigations/inv1\n\
                         Mention @inquest:example.org in this thread to ask a question.",
                "format": "org.matrix.custom.html",
                "formatted_body": "<p><strong>🔎 EchoFailed — running</strong><br>Team data, service etl · \
                    <a href=\"https://inquest.example/investigations/inv1\">the whole investigation</a><br>\
                    <em>Mention @inquest:example.org in this thread to ask a question.</em></p>",
                "m.mentions": {},
            })
        );
        let edit = edit_content("$root", &thread(), "✅ EchoFailed — completed: <b>ok</b>", BOT);
        assert_eq!(edit["m.relates_to"], json!({"rel_type": "m.replace", "event_id": "$root"}));
        let new = &edit["m.new_content"];
        assert!(new["body"].as_str().unwrap().starts_with("✅ EchoFailed — completed: <b>ok</b>\n"));
        assert!(new["formatted_body"].as_str().unwrap().starts_with("<p><strong>✅ EchoFailed — completed: &lt;b&gt;"));
        assert_eq!(edit["body"], format!("* {}", new["body"].as_str().unwrap()));
        assert_eq!(new.get("m.relates_to"), None);
    }

    #[test]
    fn a_post_is_a_threaded_reply_with_its_raw_data_collapsed_and_approvals_as_links() {
        let post = Post {
            key: "inv1/4".into(),
            seq: 4,
            kind: "tool.called".into(),
            text: "✔ Called fake__echo (3 ms) [c1]".into(),
            detail: Some("{\n  \"a\": \"<x>\"\n}".into()),
            approval: None,
        };
        assert_eq!(
            post_content("$root", &thread(), &post),
            json!({
                "msgtype": "m.notice",
                "body": "✔ Called fake__echo (3 ms) [c1]\n\n{\n  \"a\": \"<x>\"\n}",
                "format": "org.matrix.custom.html",
                "formatted_body": "<p>✔ Called fake__echo (3 ms) [c1]</p><details><summary>Raw data</summary>\
                    <pre><code>{\n  &quot;a&quot;: &quot;&lt;x&gt;&quot;\n}</code></pre></details>",
                "m.mentions": {},
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": "$root",
                    "is_falling_back": true,
                    "m.in_reply_to": {"event_id": "$root"},
                },
                "dev.inquest.post": "inv1/4",
            })
        );

        let asked = Post {
            key: "inv1/5".into(),
            seq: 5,
            kind: "approval.requested".into(),
            text: "✋ Approval needed to call airflow__clear: https://reg.example/approvals/ap1".into(),
            detail: None,
            approval: Some(super::super::ApprovalCard {
                approval_id: "ap1".into(),
                url: "https://reg.example/approvals/ap1".into(),
                what: "call airflow__clear (c2)".into(),
            }),
        };
        let content = post_content("$root", &thread(), &asked);
        assert_eq!(content["msgtype"], "m.text", "someone must act on it: it notifies");
        assert_eq!(
            content["body"],
            "✋ Approval needed to call airflow__clear: https://reg.example/approvals/ap1\n\n\
             Approve or decline call airflow__clear (c2) at https://reg.example/approvals/ap1"
        );
        assert_eq!(
            content["formatted_body"],
            "<p>✋ Approval needed to call airflow__clear: <a href=\"https://reg.example/approvals/ap1\">\
             https://reg.example/approvals/ap1</a></p><p>✋ <a href=\"https://reg.example/approvals/ap1\">\
             <strong>Approve or decline</strong></a> call airflow__clear (c2)</p>"
        );
    }

    #[test]
    fn a_post_too_big_for_an_event_is_cut_to_fit() {
        let post = Post {
            key: "inv1/4".into(),
            seq: 4,
            kind: "tool.called".into(),
            text: "\"".repeat(20_000),
            detail: Some("\"".repeat(20_000)),
            approval: None,
        };
        let content = post_content("$root", &thread(), &post);
        assert!(content.to_string().len() <= MAX_CONTENT_BYTES, "{}", content.to_string().len());
        assert!(
            content["body"]
                .as_str()
                .unwrap()
                .ends_with("(cut: all of it is at https://inquest.example/investigations/inv1)")
        );
    }

    #[test]
    fn urls_become_links_and_the_rest_is_escaped() {
        let table = [
            ("plain <b> & 'q'", "plain &lt;b&gt; &amp; &#39;q&#39;"),
            (
                "see https://a.example/x?y=1&z=2.",
                "see <a href=\"https://a.example/x?y=1&amp;z=2\">https://a.example/x?y=1&amp;z=2</a>.",
            ),
            ("(http://a/b) and https://", "(<a href=\"http://a/b\">http://a/b</a>) and https://"),
            ("two\nlines", "two<br>lines"),
        ];
        for (text, html) in table {
            assert_eq!(linkify(text), html, "{text}");
        }
    }

    fn message_event(sender: &str, content: Value) -> Value {
        json!({"type": "m.room.message", "event_id": "$m1", "sender": sender, "origin_server_ts": 1_700_000_000_000i64,
               "content": content})
    }

    fn threaded(body: &str, mentions: Option<Value>) -> Value {
        let mut c = json!({"msgtype": "m.text", "body": body,
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true,
                              "m.in_reply_to": {"event_id": "$root"}}});
        if let Some(m) = mentions {
            c["m.mentions"] = m;
        }
        c
    }

    #[test]
    fn a_mention_in_a_thread_is_a_question() {
        let to_bot = Some(json!({"user_ids": [BOT]}));
        let table: Vec<(&str, Value, Option<&str>)> = vec![
            // (sender, content, the question found)
            ("@alice:x", threaded("inquest: why did it fail?", to_bot.clone()), Some("why did it fail?")),
            ("@alice:x", threaded("@inquest:example.org what changed", to_bot.clone()), Some("what changed")),
            ("@alice:x", threaded("> <@bob:x> earlier\n\nInquest, and now?", to_bot.clone()), Some("and now?")),
            // Older clients without m.mentions: the text names the bot.
            ("@alice:x", threaded("@inquest:example.org is it fixed?", None), Some("is it fixed?")),
            ("@alice:x", threaded("inquest: is it fixed?", None), Some("is it fixed?")),
            // m.mentions present and not naming the bot: the text does not count.
            ("@alice:x", threaded("inquest: hello", Some(json!({"user_ids": ["@bob:x"]}))), None),
            ("@alice:x", threaded("an inquest is what this is", None), None),
            // The bot itself, a bare mention, a message outside any thread.
            (BOT, threaded("inquest: why?", to_bot.clone()), None),
            ("@alice:x", threaded("inquest:", to_bot.clone()), None),
            (
                "@alice:x",
                json!({"msgtype": "m.text", "body": "inquest: why?", "m.mentions": {"user_ids": [BOT]}}),
                None,
            ),
        ];
        for (sender, content, question) in table {
            let found = mention_in("!r:x", &message_event(sender, content.clone()), BOT);
            assert_eq!(found.as_ref().map(|m| m.question.as_str()), question, "{content}");
        }
        let found = mention_in("!r:x", &message_event("@alice:x", threaded("inquest: why?", to_bot)), BOT).unwrap();
        assert_eq!(
            found,
            Mention {
                room_id: "!r:x".into(),
                root_event_id: "$root".into(),
                event_id: "$m1".into(),
                sender: "@alice:x".into(),
                question: "why?".into(),
                sent_at_ms: 1_700_000_000_000,
            }
        );
        assert_eq!(found.thread_ref().to_string(), "!r:x/$root");
    }

    #[test]
    fn busy_and_failing_homeservers_are_tried_again_and_refusals_are_final() {
        let limited = json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 1500});
        let table = [
            (200, json!({"event_id": "$e"}), None, Verdict::Done),
            (
                429,
                limited,
                Some(Duration::from_secs(9)),
                Verdict::Retry {
                    after: Some(Duration::from_millis(1500)),
                    why: "429 M_LIMIT_EXCEEDED: Too Many Requests".into(),
                },
            ),
            (
                429,
                json!({}),
                Some(Duration::from_secs(2)),
                Verdict::Retry { after: Some(Duration::from_secs(2)), why: "429 no errcode: ".into() },
            ),
            (502, Value::Null, None, Verdict::Retry { after: None, why: "502 no errcode: ".into() }),
            (
                403,
                json!({"errcode": "M_FORBIDDEN", "error": "not in room"}),
                None,
                Verdict::Refused("403 M_FORBIDDEN: not in room".into()),
            ),
            (
                401,
                json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}),
                None,
                Verdict::Refused("401 M_UNKNOWN_TOKEN: Invalid access token passed.".into()),
            ),
        ];
        for (status, answer, header, verdict) in table {
            assert_eq!(judge(status, &answer, header), verdict, "{status} {answer}");
        }
    }

    #[test]
    fn the_config_names_every_mistake() {
        let config: MatrixConfig = serde_json::from_value(json!({
            "homeserver": "ftp://matrix.example.org",
            "access_token": " ",
            "user_id": "inquest",
            "rooms": {"data": "#data:example.org", "web": "!web:example.org"},
            "default_room": "general",
        }))
        .unwrap();
        assert_eq!(
            config.problems(),
            [
                "chat.matrix.homeserver: scheme `ftp` is not http or https",
                "chat.matrix.access_token: empty",
                "chat.matrix.user_id: `inquest` is not a user id (@name:server)",
                "chat.matrix.rooms.data: `#data:example.org` is not a room id (!...)",
                "chat.matrix.default_room: `general` is not a room id (!...)",
            ]
        );
        let unknown = serde_json::from_value::<MatrixConfig>(json!({
            "homeserver": "https://m.example.org", "access_token": "t", "user_id": "@i:x", "room": "!r:x",
        }));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `room`"));
        let fine: MatrixConfig = serde_json::from_value(json!({
            "homeserver": "https://m.example.org", "access_token": "syt_s3cret", "user_id": "@i:x", "default_room": "!r:x",
        }))
        .unwrap();
        assert_eq!(fine.problems(), Vec::<String>::new());
        assert!(!format!("{fine:?}").contains("s3cret"), "the token stays out of Debug");
        let sink = MatrixSink::new(&fine).unwrap();
        assert_eq!((sink.room_of("any").unwrap(), sink.all_rooms()), ("!r:x", vec!["!r:x".to_string()]));
    }

    #[test]
    fn the_root_shows_its_latest_edit() {
        let root = json!({"content": {"body": "first"}, "unsigned": {"m.relations": {"m.replace": {
            "event_id": "$edit2", "content": {"body": "* second", "m.new_content": {"body": "second"}}}}}});
        assert_eq!(Shown::of(&root), Shown { edit_id: Some("$edit2".into()), body: "second".into() });
        assert_eq!(Shown::of(&json!({"content": {"body": "first"}})), Shown { edit_id: None, body: "first".into() });
    }
}
