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

/// Posts threads to a Matrix homeserver as the bot.
pub struct MatrixSink {
    http: reqwest::Client,
    /// The homeserver, without a trailing `/`.
    base: String,
    token: SecretString,
    user_id: String,
    rooms: BTreeMap<String, String>,
    default_room: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MatrixSetupError {
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl MatrixSink {
    /// Checks `config` and builds the client; nothing is sent yet.
    pub fn new(config: &MatrixConfig) -> Result<MatrixSink, MatrixSetupError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(MatrixSetupError::Invalid(problems));
        }
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(MatrixSink {
            http,
            base: config.homeserver.trim_end_matches('/').to_string(),
            token: config.access_token.clone(),
            user_id: config.user_id.clone(),
            rooms: config.rooms.clone(),
            default_room: config.default_room.clone(),
        })
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Checks that the token is the configured bot's (`/account/whoami`).
    pub async fn check(&self) -> Result<(), ChatError> {
        let me = self.call(Method::GET, "/_matrix/client/v3/account/whoami", &[], None, REQUEST_TIMEOUT).await?;
        match me["user_id"].as_str() {
            Some(id) if id == self.user_id => Ok(()),
            other => Err(ChatError::Refused(format!(
                "the access token belongs to {}, not to {}",
                other.unwrap_or("nobody"),
                self.user_id
            ))),
        }
    }

    /// Joins every configured room (accepting an invitation; a no-op where the bot is
    /// in already).
    pub async fn join_rooms(&self) -> Result<(), ChatError> {
        for room in self.all_rooms() {
            let path = format!("/_matrix/client/v3/join/{}", encode(&room));
            self.call(Method::POST, &path, &[], Some(&json!({})), REQUEST_TIMEOUT).await?;
            debug!(room = %room, "in the Matrix room");
        }
        Ok(())
    }

    /// Messages mentioning the bot in threads of the configured rooms since `since`
    /// (`None`: the rooms' latest messages), waiting up to `wait` for one to come.
    pub async fn poll_mentions(&self, since: Option<&str>, wait: Duration) -> Result<Mentions, ChatError> {
        let filter = sync_filter(&self.all_rooms(), &self.user_id).to_string();
        let mut query = vec![("filter", filter), ("timeout", wait.as_millis().to_string())];
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        let sync = self.call(Method::GET, "/_matrix/client/v3/sync", &query, None, REQUEST_TIMEOUT + wait).await?;
        let next_batch = sync["next_batch"]
            .as_str()
            .ok_or_else(|| ChatError::Unavailable("a /sync answer without next_batch".to_string()))?
            .to_string();
        let mut mentions = Vec::new();
        let joined = sync["rooms"]["join"].as_object().cloned().unwrap_or_default();
        for (room_id, room) in &joined {
            let timeline = &room["timeline"];
            // A gap: more came than one sync holds; read it back to where we were.
            if let (Some(since), true, Some(prev)) =
                (since, timeline["limited"].as_bool() == Some(true), timeline["prev_batch"].as_str())
            {
                let missed = self.read_gap(room_id, prev, since).await?;
                mentions.extend(missed.iter().filter_map(|e| mention_in(room_id, e, &self.user_id)));
            }
            let events = timeline["events"].as_array().map(Vec::as_slice).unwrap_or_default();
            mentions.extend(events.iter().filter_map(|e| mention_in(room_id, e, &self.user_id)));
        }
        Ok(Mentions { mentions, next_batch })
    }

    /// Where [`MatrixQuestions`] saved it had read to, in the bot's account data.
    pub async fn saved_cursor(&self) -> Result<Option<String>, ChatError> {
        match self.call(Method::GET, &self.cursor_path(), &[], None, REQUEST_TIMEOUT).await {
            Ok(data) => Ok(data["next_batch"].as_str().map(str::to_string)),
            Err(ChatError::Refused(why)) if why.contains("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn save_cursor(&self, next_batch: &str) -> Result<(), ChatError> {
        let body = json!({"next_batch": next_batch});
        self.call(Method::PUT, &self.cursor_path(), &[], Some(&body), REQUEST_TIMEOUT).await.map(drop)
    }

    /// Answers `mention` in its thread (once per mention).
    pub async fn reply(&self, mention: &Mention, text: &str) -> Result<String, ChatError> {
        let content = reply_content(&mention.root_event_id, &mention.event_id, text);
        let txn = txn_id("reply", &[&mention.room_id, &mention.event_id]);
        self.send(&mention.room_id, &txn, &content).await
    }

    /// The team's room.
    fn room_of(&self, team: &str) -> Result<&str, ChatError> {
        self.rooms
            .get(team)
            .or(self.default_room.as_ref())
            .map(String::as_str)
            .ok_or_else(|| ChatError::Refused(format!("no Matrix room for team `{team}` and no default_room")))
    }

    fn all_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.rooms.values().chain(&self.default_room).cloned().collect();
        rooms.sort();
        rooms.dedup();
        rooms
    }

    fn cursor_path(&self) -> String {
        format!("/_matrix/client/v3/user/{}/account_data/{CURSOR_TYPE}", encode(&self.user_id))
    }

    /// Sends `content` as `m.room.message` under `txn`; the event's id.
    async fn send(&self, room_id: &str, txn: &str, content: &Value) -> Result<String, ChatError> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room_id), encode(txn));
        let answer = self.call(Method::PUT, &path, &[], Some(content), REQUEST_TIMEOUT).await?;
        answer["event_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ChatError::Unavailable(format!("PUT {path}: no event_id in the answer")))
    }

    /// `/messages` back from `from` to `to`, oldest first.
    async fn read_gap(&self, room_id: &str, from: &str, to: &str) -> Result<Vec<Value>, ChatError> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages", encode(room_id));
        let filter = room_event_filter(&self.user_id).to_string();
        let mut events = Vec::new();
        let mut from = from.to_string();
        for _ in 0..GAP_PAGES {
            let query = [
                ("dir", "b".to_string()),
                ("from", from.clone()),
                ("to", to.to_string()),
                ("limit", TIMELINE_LIMIT.to_string()),
                ("filter", filter.clone()),
            ];
            let page = self.call(Method::GET, &path, &query, None, REQUEST_TIMEOUT).await?;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            events.extend(chunk.iter().cloned());
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() && end != from => from = end.to_string(),
                _ => {
                    events.reverse();
                    return Ok(events);
                }
            }
        }
        warn!(room = room_id, pages = GAP_PAGES, "a long gap in a Matrix room: older mentions are not read");
        events.reverse();
        Ok(events)
    }

    /// One request, tried again while the homeserver is busy, failing or unreachable
    /// (every request here is safe to repeat: sends carry their txnId).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, ChatError> {
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.token.expose_secret())
                .timeout(timeout)
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let pause = match request.send().await {
                Err(e) => {
                    last = format!("{method} {path}: {e}");
                    backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = match response.bytes().await {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            last = format!("{method} {path}: reading the answer: {e}");
                            tokio::time::sleep(backoff(attempt)).await;
                            continue;
                        }
                    };
                    let answer: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
                    match judge(status, &answer, retry_after) {
                        Verdict::Done => return Ok(answer),
                        Verdict::Refused(why) => return Err(ChatError::Refused(format!("{method} {path}: {why}"))),
                        Verdict::Retry { after, why } => {
                            last = format!("{method} {path}: {why}");
                            match after {
                                Some(wait) if wait > LONGEST_WAIT => {
                                    return Err(ChatError::Unavailable(format!("{last} for {wait:?}")));
                                }
                                Some(wait) => wait,
                                None => backoff(attempt),
                            }
                        }
                    }
                }
            };
            if attempt + 1 < ATTEMPTS {
                debug!(%method, path, attempt, ?pause, error = %last, "Matrix request failed; trying again");
                tokio::time::sleep(pause).await;
            }
        }
        Err(ChatError::Unavailable(last))
    }
}

#[async_trait]
impl ChatSink for MatrixSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    async fn open_thread(&self, thread: &Thread, status: &str) -> Result<String, ChatError> {
        let room = self.room_of(&thread.team)?;
        let content = root_content(thread, status, &self.user_id);
        // The same investigation in the same room: the same root, however often tried.
        let txn = txn_id("root", &[room, &thread.investigation_id]);
        let root = self.send(room, &txn, &content).await?;
        Ok(ThreadRef { room_id: room.to_string(), root_event_id: root }.to_string())
    }

    async fn post(&self, thread_ref: &str, thread: &Thread, post: &Post) -> Result<String, ChatError> {
        let at = parse_ref(thread_ref)?;
        let content = post_content(&at.root_event_id, thread, post);
        let txn = txn_id("post", &[&at.room_id, &at.root_event_id, &post.key]);
        self.send(&at.room_id, &txn, &content).await
    }

    async fn set_status(&self, thread_ref: &str, thread: &Thread, status: &str) -> Result<(), ChatError> {
        let at = parse_ref(thread_ref)?;
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(&at.room_id), encode(&at.root_event_id));
        let root = self.call(Method::GET, &path, &[], None, REQUEST_TIMEOUT).await?;
        let shown = Shown::of(&root);
        let content = edit_content(&at.root_event_id, thread, status, &self.user_id);
        if content["m.new_content"]["body"].as_str() == Some(shown.body.as_str()) {
            return Ok(());
        }
        // Keyed on the edit this one follows too, so that a status shown again later
        // (running, awaiting approval, running) is a new edit, while a repeat of this
        // very edit is not.
        let after = shown.edit_id.as_deref().unwrap_or(&at.root_event_id);
        let txn = txn_id("status", &[&at.room_id, &at.root_event_id, after, status]);
        self.send(&at.room_id, &txn, &content).await.map(drop)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuestionError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of a mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Recorded as event `seq` of the investigation.
    Asked { investigation_id: String, seq: i64 },
    /// Its question is in the log already (read again after a restart).
    AlreadyAsked { investigation_id: String },
    /// The investigation takes no question now; the person was told in the thread.
    Refused { investigation_id: String, state: State },
    /// Not a thread of ours.
    NotOurs,
}

/// Follow-up questions: reads the configured rooms with `/sync`, and asks each mention
/// of the bot in one of our threads of the thread's investigation.
///
/// How far it read is kept in the bot's account data, so a restart reads on from
/// there (the first start ever reads from then on: older mentions are history). A
/// restart between a question and that save reads the mention again; it is not asked
/// twice because the investigation's log already holds the same question by the same
/// person from about then (the log is the record, and `Store::ask` takes no key).
/// Run it in one process: two would both ask a new mention.
pub struct MatrixQuestions {
    sink: Arc<MatrixSink>,
    ledger: Ledger,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// How long one `/sync` waits for news.
    wait: Duration,
    cursor: Option<String>,
    saved: Option<Instant>,
}

impl MatrixQuestions {
    pub fn new(sink: Arc<MatrixSink>, ledger: Ledger, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        MatrixQuestions { sink, ledger, store, clock, wait: Duration::from_secs(30), cursor: None, saved: None }
    }

    /// How long one `/sync` waits for news (30 s unless set).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Asks questions until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                result = self.step() => match result {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let pause = (BACKOFF * 2u32.saturating_pow(failures.min(6))).min(LONGEST_WAIT);
                        warn!(sink = SINK_NAME, error = %e, ?pause, "reading Matrix questions failed; trying again");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                },
            }
        }
    }

    /// One `/sync`: the mentions it brought and what became of each.
    pub async fn step(&mut self) -> Result<Vec<(Mention, Handled)>, QuestionError> {
        if self.cursor.is_none() {
            self.cursor = self.sink.saved_cursor().await?;
        }
        let Some(since) = self.cursor.clone() else {
            self.read_from_now().await?;
            return Ok(Vec::new());
        };
        let batch = match self.sink.poll_mentions(Some(&since), self.wait).await {
            Ok(batch) => batch,
            Err(ChatError::Refused(why)) => {
                // A position the homeserver no longer takes: start again from now (if
                // the homeserver takes nothing, the position stays for the next try).
                warn!(sink = SINK_NAME, why, "the Matrix read position was refused; reading from now on");
                self.read_from_now().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut handled = Vec::new();
        for mention in batch.mentions {
            let outcome = self.handle(&mention).await?;
            handled.push((mention, outcome));
        }
        let due = self.saved.is_none_or(|at| at.elapsed() >= SAVE_EVERY);
        if batch.next_batch != since && (!handled.is_empty() || due) {
            self.sink.save_cursor(&batch.next_batch).await?;
            self.saved = Some(Instant::now());
        }
        self.cursor = Some(batch.next_batch);
        Ok(handled)
    }

    /// Starts reading at the rooms' present: what came before is history.
    async fn read_from_now(&mut self) -> Result<(), QuestionError> {
        let now = self.sink.poll_mentions(None, Duration::ZERO).await?;
        self.sink.save_cursor(&now.next_batch).await?;
        self.saved = Some(Instant::now());
        info!(sink = SINK_NAME, "reading Matrix questions from now on");
        self.cursor = Some(now.next_batch);
        Ok(())
    }

    async fn handle(&self, mention: &Mention) -> Result<Handled, QuestionError> {
        let thread_ref = mention.thread_ref().to_string();
        let Some(id) = self.ledger.investigation_of(SINK_NAME, &thread_ref).await? else {
            debug!(thread = %thread_ref, "a mention in a thread that is not an investigation's");
            return Ok(Handled::NotOurs);
        };
        if self.already_asked(&id, mention).await? {
            return Ok(Handled::AlreadyAsked { investigation_id: id });
        }
        let input = Input::QuestionAsked { question: mention.question.clone(), asked_by: Some(mention.sender.clone()) };
        match self.store.ask(&id, &input, self.clock.now()).await? {
            Asked::Queued { seq } => {
                info!(investigation = %id, asked_by = %mention.sender, seq, "a question from Matrix");
                Ok(Handled::Asked { investigation_id: id, seq })
            }
            Asked::Refused(state) => {
                let text = format!(
                    "I am still on this investigation ({}); ask me again once it has finished.",
                    state.as_str()
                );
                self.sink.reply(mention, &text).await?;
                Ok(Handled::Refused { investigation_id: id, state })
            }
            Asked::NotFound => Ok(Handled::NotOurs),
        }
    }

    /// Whether the log holds this person's same question from about when it was sent.
    async fn already_asked(&self, id: &str, mention: &Mention) -> Result<bool, QuestionError> {
        let since = chrono::DateTime::from_timestamp_millis(mention.sent_at_ms).unwrap_or_default() - CLOCK_SKEW;
        let mut after = 0;
        loop {
            let events = self.store.events(id, after, 500).await?;
            let Some(last) = events.last() else { return Ok(false) };
            after = last.seq;
            let same = |e: &crate::store::StoredEvent| {
                e.kind == "question.asked"
                    && e.at >= since
                    && e.data["question"].as_str() == Some(mention.question.as_str())
                    && e.data["asked_by"].as_str() == Some(mention.sender.as_str())
            };
            if events.iter().any(same) {
                return Ok(true);
            }
        }
    }
}

fn parse_ref(thread_ref: &str) -> Result<ThreadRef, ChatError> {
    ThreadRef::parse(thread_ref)
        .ok_or_else(|| ChatError::Refused(format!("`{thread_ref}` is not a Matrix thread (<room id>/<event id>)")))
}

/// What the root shows now: its latest edit (bundled by the homeserver), else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    edit_id: Option<String>,
    body: String,
}

impl Shown {
    fn of(root: &Value) -> Shown {
        let edit = &root["unsigned"]["m.relations"]["m.replace"];
        match (edit["event_id"].as_str(), edit["content"]["m.new_content"]["body"].as_str()) {
            (Some(id), Some(body)) => Shown { edit_id: Some(id.to_string()), body: body.to_string() },
            _ => Shown { edit_id: None, body: root["content"]["body"].as_str().unwrap_or_default().to_string() },
        }
    }
}

/// What to do with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Done,
    /// Busy or failing: try again, after `after` if the homeserver said.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Refused for good, with Matrix's errcode.
    Refused(String),
}

fn judge(status: u16, answer: &Value, retry_after: Option<Duration>) -> Verdict {
    let errcode = answer["errcode"].as_str().unwrap_or("no errcode");
    let error = answer["error"].as_str().unwrap_or_default();
    let why = format!("{status} {errcode}: {error}");
    match status {
        200..=299 => Verdict::Done,
        429 => {
            let after = answer["retry_after_ms"].as_u64().map(Duration::from_millis).or(retry_after);
            Verdict::Retry { after, why }
        }
        500..=599 => Verdict::Retry { after: None, why },
        _ => Verdict::Refused(why),
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF * 2u32.saturating_pow(attempt)
}

/// A txnId for the message `kind` identified by `parts`: the same parts, the same id.
fn txn_id(kind: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    for part in parts {
        hash.update([0u8]);
        hash.update(part.as_bytes());
    }
    format!("inquest.{kind}.{}", hex::encode(&hash.finalize()[..16]))
}

/// The root: the status line, who it is for, the web thread, and how to ask.
fn root_content(thread: &Thread, status: &str, bot: &str) -> Value {
    let (body, html) = root_text(thread, status, bot);
    message("m.text", body, html)
}

/// An edit of the root to show `status`.
fn edit_content(root: &str, thread: &Thread, status: &str, bot: &str) -> Value {
    let (body, html) = root_text(thread, status, bot);
    let mut content = message("m.text", format!("* {body}"), format!("* {html}"));
    content["m.new_content"] = message("m.text", body, html);
    content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": root});
    content
}

fn root_text(thread: &Thread, status: &str, bot: &str) -> (String, String) {
    let about = match &thread.service {
        Some(service) => format!("Team {}, service {service}", thread.team),
        None => format!("Team {}", thread.team),
    };
    let ask = format!("Mention {bot} in this thread to ask a question.");
    let body = format!("{status}\n{about} · {}\n{ask}", thread.url);
    let html = format!(
        "<p><strong>{}</strong><br>{} · <a href=\"{}\">the whole investigation</a><br><em>{}</em></p>",
        linkify(status),
        escape(&about),
        escape(&thread.url),
        escape(&ask)
    );
    (body, html)
}

/// A post in the thread: its line, an approval card as a link, the raw data collapsed.
/// Posts are notices (no notification, and other bots do not answer them), except an
/// approval card, which someone must act on.
fn post_content(root: &str, thread: &Thread, post: &Post) -> Value {
    let mut content = Value::Null;
    for shrink in [1, 4, 16, 64] {
        content = post_content_within(root, thread, post, TEXT_CHARS / shrink, DETAIL_CHARS / shrink);
        if content.to_string().len() <= MAX_CONTENT_BYTES {
            break;
        }
    }
    content
}

fn post_content_within(root: &str, thread: &Thread, post: &Post, text_chars: usize, detail_chars: usize) -> Value {
    let text = clip(&post.text, text_chars);
    let mut body = text.clone();
    let mut html = format!("<p>{}</p>", linkify(&text));
    if let Some(card) = &post.approval {
        body.push_str(&format!("\n\nApprove or decline {} at {}", card.what, card.url));
        html.push_str(&format!(
            "<p>✋ <a href=\"{}\"><strong>Approve or decline</strong></a> {}</p>",
            escape(&card.url),
            escape(&card.what)
        ));
    }
    if let Some(detail) = &post.detail {
        let mut shown = clip(detail, detail_chars);
        if shown.len() < detail.len() {
            shown.push_str(&format!("\n(cut: all of it is at {})", thread.url));
        }
        body.push_str(&format!("\n\n{shown}"));
        html.push_str(&format!(
            "<details><summary>Raw data</summary><pre><code>{}</code></pre></details>",
            escape(&shown)
        ));
    }
    let kind = if post.approval.is_some() { "m.text" } else { "m.notice" };
    let mut content = message(kind, body, html);
    content["m.relates_to"] = in_thread(root, root, true);
    // Which event of the investigation's log this tells (clients ignore unknown keys).
    content[POST_KEY] = json!(post.key);
    content
}

/// An answer to a person's message in the thread.
fn reply_content(root: &str, to: &str, text: &str) -> Value {
    let mut content = message("m.notice", text.to_string(), format!("<p>{}</p>", linkify(text)));
    content["m.relates_to"] = in_thread(root, to, false);
    content
}

/// In the thread of `root`; clients without threads show it as a reply to `reply_to`
/// (`fallback`: only for them; otherwise a real reply).
fn in_thread(root: &str, reply_to: &str, fallback: bool) -> Value {
    json!({
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": fallback,
        "m.in_reply_to": {"event_id": reply_to},
    })
}

/// An `m.room.message` content with HTML; it mentions nobody (a person's name in the
/// text does not ping them).
fn message(msgtype: &str, body: String, html: String) -> Value {
    json!({
        "msgtype": msgtype,
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": html,
        "m.mentions": {},
    })
}

/// The `/sync` filter: messages of our rooms by others, nothing else.
fn sync_filter(rooms: &[String], bot: &str) -> Value {
    let nothing = json!({"types": []});
    let mut timeline = room_event_filter(bot);
    timeline["limit"] = json!(TIMELINE_LIMIT);
    json!({
        "presence": nothing,
        "account_data": nothing,
        "room": {
            "rooms": rooms,
            "timeline": timeline,
            "state": {"types": [], "lazy_load_members": true},
            "ephemeral": nothing,
            "account_data": nothing,
        },
    })
}

fn room_event_filter(bot: &str) -> Value {
    json!({"types": ["m.room.message"], "not_senders": [bot]})
}

/// The question in `event`, if it is a person's message in a thread that mentions the
/// bot. A message with `m.mentions` mentions whom that lists; an older client's
/// message, whom its text names.
fn mention_in(room_id: &str, event: &Value, bot: &str) -> Option<Mention> {
    let sender = event["sender"].as_str()?;
    let content = &event["content"];
    if event["type"] != "m.room.message" || sender == bot || content["msgtype"] != "m.text" {
        return None;
    }
    let relation = &content["m.relates_to"];
    if relation["rel_type"] != "m.thread" {
        return None;
    }
    let root = relation["event_id"].as_str()?;
    let body = content["body"].as_str()?;
    let mentioned = match content.get("m.mentions") {
        Some(mentions) => {
            mentions["user_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(bot)))
        }
        None => {
            let html = content["formatted_body"].as_str().unwrap_or_default();
            body.contains(bot) || html.contains(&format!("matrix.to/#/{bot}")) || names_localpart(body, bot)
        }
    };
    let question = question_text(body, bot);
    (mentioned && !question.is_empty()).then(|| Mention {
        room_id: room_id.to_string(),
        root_event_id: root.to_string(),
        event_id: event["event_id"].as_str().unwrap_or_default().to_string(),
        sender: sender.to_string(),
        question,
        sent_at_ms: event["origin_server_ts"].as_i64().unwrap_or_default(),
    })
}

/// Whether `body` starts by addressing the bot by its localpart (`inquest: ...`,
/// `@inquest, ...`), the way clients write a mention pill as text.
fn names_localpart(body: &str, bot: &str) -> bool {
    let Some(local) = localpart(bot) else { return false };
    let text = body.trim_start().trim_start_matches('@');
    text.get(..local.len()).is_some_and(|head| head.eq_ignore_ascii_case(local))
        && text[local.len()..].starts_with([':', ','])
}

/// The question in a message's body: a quoted reply fallback and the mention taken out.
fn question_text(body: &str, bot: &str) -> String {
    let lines: Vec<&str> = body.lines().skip_while(|l| l.starts_with('>')).collect();
    let mut text = lines.join("\n").replace(bot, " ");
    let trimmed = text.trim_start();
    if let Some(local) = localpart(bot) {
        let head = trimmed.trim_start_matches('@');
        if head.get(..local.len()).is_some_and(|h| h.eq_ignore_ascii_case(local))
            && (head.len() == local.len() || head[local.len()..].starts_with([':', ',', ' ']))
        {
            text = head[local.len()..].to_string();
        }
    }
    text.trim().trim_start_matches([':', ',']).trim().to_string()
}

/// `inquest` of `@inquest:example.org`.
fn localpart(user_id: &str) -> Option<&str> {
    let (local, server) = user_id.strip_prefix('@')?.split_once(':')?;
    (!local.is_empty() && !server.is_empty()).then_some(local)
}

fn is_room_id(room: &str) -> bool {
    room.len() > 1 && room.starts_with('!') && !room.contains('/') && !room.contains(char::is_whitespace)
}

fn escape(text: &str) -> String {
    crate::identity::oidc::escape_html(text)
}

/// `text` as HTML, its `http(s)://` URLs as links, its line breaks kept.
fn linkify(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = [rest.find("https://"), rest.find("http://")].into_iter().flatten().min() {
        out.push_str(&escape(&rest[..start]));
        let tail = &rest[start..];
        let end = tail.find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"')).unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '\'', '”', '’']);
        if url.ends_with("://") {
            out.push_str(&escape(url));
        } else {
            out.push_str(&format!("<a href=\"{0}\">{0}</a>", escape(url)));
        }
        rest = &tail[url.len()..];
    }
    out.push_str(&escape(rest));
    out.replace('\n', "<br>")
}

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
