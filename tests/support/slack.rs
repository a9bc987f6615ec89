//! A Slack Web API test server, and Slack's side of interactivity and the Events API.
//!
//! The server answers the methods Inquest calls (`auth.test`, `chat.postMessage`,
//! `chat.update`, `chat.postEphemeral`, `conversations.replies`,
//! `conversations.history`) under `<url>/api/<method>`, as Slack does: over GET or POST,
//! JSON bodies (`application/json`) or form bodies (`application/x-www-form-urlencoded`)
//! or query strings, the token as `Authorization: Bearer` (or a `token` argument outside
//! JSON bodies), and answers `{"ok": true, ...}` or `{"ok": false, "error": "<code>"}`
//! with Slack's codes (`not_authed`, `invalid_auth`, `channel_not_found`,
//! `not_in_channel`, `no_text`, `invalid_blocks`, `invalid_metadata_format`,
//! `message_not_found`, `cant_update_message`, `thread_not_found`, `ratelimited` with
//! `Retry-After`, ...).
//!
//! Every request is checked against its method's documented arguments: required ones
//! present, no undocumented ones, each of its type (strings, booleans, integers,
//! timestamps, JSON arrays and objects, the latter also as JSON text in forms), blocks
//! against Block Kit's documented limits for the blocks Inquest uses (section, context,
//! actions, header, divider; buttons), metadata as `{event_type, event_payload}`. What
//! does not fit is answered with Slack's error and kept as a violation; a server dropped
//! with violations fails the test (unless it is already failing).
//!
//! Channels hold messages with their `ts`, thread replies, metadata and edits. The
//! server can answer `ratelimited` once, or do a call and lose its answer once (a 502
//! after the write, as if the connection broke). [`block_actions`] and
//! [`SlackServer::mention`] build what Slack sends when a person presses a button or
//! mentions the app; [`send_interaction`] and [`send_event`] sign and send them.
//!
//! Socket Mode: `apps.connections.open` (with the app-level token [`APP_TOKEN`] only;
//! the bot token is `not_allowed_token_type` there, as the app token is everywhere
//! else) hands out a single-use `ws://<server>/link/?ticket=...`. A connection to it is
//! greeted with `hello` and a ping; [`SlackServer::push`] (and [`SlackServer::push_event`],
//! [`SlackServer::push_interaction`]) send envelopes to the newest open connection, and
//! what comes back is checked as an acknowledgement: JSON naming an envelope sent on
//! that connection, within Slack's three seconds, a `payload` only where the envelope
//! accepts one. [`SlackServer::disconnect`] sends `disconnect` and closes the
//! connection two seconds later, as Slack refreshes a connection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const BOT_TOKEN: &str = "xoxb-0000-inquest-test";
/// The app-level token Socket Mode connects with.
pub const APP_TOKEN: &str = "xapp-1-A0INQUEST-0000-inquest-test";
pub const SIGNING_SECRET: &str = "0123456789abcdef0123456789abcdef";
pub const TEAM_ID: &str = "T0INQUEST";
pub const APP_ID: &str = "A0INQUEST";
pub const BOT_ID: &str = "B0INQUEST";
pub const BOT_USER: &str = "U0INQUEST";

/// A message in a channel, as the server keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    /// The parent's `ts`, for replies.
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Vec<Value>,
    pub metadata: Option<Value>,
    /// Who wrote it: [`BOT_USER`] for the app.
    pub user: String,
    /// Times it was edited.
    pub edits: usize,
}

impl Message {
    /// The keys of the posts it carries (the `inquest_post` metadata).
    pub fn keys(&self) -> Vec<String> {
        let Some(m) = &self.metadata else { return Vec::new() };
        let payload = &m["event_payload"];
        let mut keys: Vec<String> =
            payload["keys"].as_str().unwrap_or_default().split_whitespace().map(str::to_string).collect();
        if let Some(k) = payload["key"].as_str()
            && !keys.iter().any(|x| x == k)
        {
            keys.insert(0, k.to_string());
        }
        keys
    }

    /// Whether it shows buttons.
    pub fn has_buttons(&self) -> bool {
        self.blocks.iter().any(|b| b["type"] == "actions")
    }

    /// All the mrkdwn and plain text its blocks show.
    pub fn shown(&self) -> String {
        let mut out = Vec::new();
        for b in &self.blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                out.push(t.to_string());
            }
            for e in b["elements"].as_array().into_iter().flatten() {
                if let Some(t) = e["text"].as_str().or(e["text"]["text"].as_str()) {
                    out.push(t.to_string());
                }
            }
        }
        out.join("\n")
    }
}

/// A message shown to one person only.
#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
    pub thread_ts: Option<String>,
}

/// One call the server answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub channel: Option<String>,
    pub at: Instant,
    /// The answer's `error`, if it was not ok.
    pub error: Option<String>,
}

#[derive(Default)]
struct World {
    /// Channel id -> whether the app is a member.
    channels: BTreeMap<String, bool>,
    /// Every message, in `ts` order.
    messages: Vec<Message>,
    ephemerals: Vec<Ephemeral>,
    ticks: u64,
    calls: Vec<Call>,
    violations: Vec<String>,
    ratelimit: HashMap<String, usize>,
    lose: HashMap<String, usize>,
    socket: Socket,
    stop: CancellationToken,
}

/// Slack's side of Socket Mode.
#[derive(Default)]
struct Socket {
    /// `ws://<address>`, where connections are made.
    base: String,
    /// Tickets handed out -> whether a connection used it.
    tickets: HashMap<String, bool>,
    links: Vec<Link>,
    /// Envelope id -> the connection it was sent on, when, and whether it accepts a
    /// response payload.
    sent: HashMap<String, (usize, Instant, bool)>,
    acks: Vec<Ack>,
    pongs: usize,
    envelopes: u64,
}

/// A Socket Mode connection, as the server keeps it.
struct Link {
    out: mpsc::UnboundedSender<Out>,
    open: bool,
    /// The client sent the close frame.
    closed_by_client: bool,
    /// Connections open when this one was made.
    others_open: usize,
}

/// What the server sends on a connection.
enum Out {
    Text(String),
    Close,
}

/// An envelope acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    pub envelope_id: String,
    /// The connection (0 the first).
    pub link: usize,
    /// How long after the envelope was sent.
    pub after: Duration,
    pub payload: Option<Value>,
}

impl World {
    fn next_ts(&mut self) -> String {
        self.ticks += 1;
        format!("{}.{:06}", 1_780_000_000 + self.ticks / 1_000_000, self.ticks % 1_000_000)
    }

    fn find(&self, channel: &str, ts: &str) -> Option<&Message> {
        self.messages.iter().find(|m| m.channel == channel && m.ts == ts)
    }
}

pub struct SlackServer {
    /// The Web API's base URL (`SlackConfig::api_url`).
    pub api_url: String,
    world: Arc<Mutex<World>>,
    stop: CancellationToken,
}

impl Drop for SlackServer {
    fn drop(&mut self) {
        self.stop.cancel();
        let violations = self.violations();
        if !violations.is_empty() && !std::thread::panicking() {
            panic!("the Slack test server saw requests that do not fit Slack's API:\n{}", violations.join("\n"));
        }
    }
}

impl SlackServer {
    /// A workspace whose `channels` the app is a member of.
    pub async fn start(channels: &[&str]) -> SlackServer {
        let world = Arc::new(Mutex::new(World::default()));
        {
            let mut w = world.lock().unwrap();
            for c in channels {
                w.channels.insert(c.to_string(), true);
            }
        }
        let app =
            Router::new().route("/api/{method}", any(method)).route("/link/", get(link)).with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}/api", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        {
            let mut w = world.lock().unwrap();
            w.socket.base = format!("ws://{}", listener.local_addr().unwrap());
            w.stop = stop.clone();
        }
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        SlackServer { api_url, world, stop }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// A channel the app is not a member of.
    pub fn add_foreign_channel(&self, id: &str) {
        self.world().channels.insert(id.to_string(), false);
    }

    /// The next call of `method` is answered `ratelimited` (429, `Retry-After: 1`).
    pub fn ratelimit_once(&self, method: &str) {
        *self.world().ratelimit.entry(method.to_string()).or_default() += 1;
    }

    /// The next call of `method` is carried out, but its answer is lost (a 502).
    pub fn lose_answer_once(&self, method: &str) {
        *self.world().lose.entry(method.to_string()).or_default() += 1;
    }

    /// The channel's top-level messages, oldest first.
    pub fn roots(&self, channel: &str) -> Vec<Message> {
        let w = self.world();
        w.messages.iter().filter(|m| m.channel == channel && m.thread_ts.is_none()).cloned().collect()
    }

    /// The replies in the thread of `root`, oldest first.
    pub fn replies(&self, channel: &str, root: &str) -> Vec<Message> {
        let w = self.world();
        w.messages.iter().filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(root)).cloned().collect()
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<Message> {
        self.world().find(channel, ts).cloned()
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.world().ephemerals.clone()
    }

    /// Calls of `method` answered so far, in order.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.world().calls.iter().filter(|c| c.method == method).cloned().collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.world().violations.clone()
    }

    /// The violations so far, forgotten (for tests of the server's own checks).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.world().violations)
    }

    pub fn assert_conforms(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "requests that do not fit Slack's API:\n{}", v.join("\n"));
    }

    /// A person writes in a channel (in a thread, with `thread_ts`); the message's `ts`.
    pub fn post_as(&self, user: &str, channel: &str, thread_ts: Option<&str>, text: &str) -> String {
        let mut w = self.world();
        let ts = w.next_ts();
        w.messages.push(Message {
            channel: channel.into(),
            ts: ts.clone(),
            thread_ts: thread_ts.map(str::to_string),
            text: text.into(),
            blocks: Vec::new(),
            metadata: None,
            user: user.into(),
            edits: 0,
        });
        ts
    }

    /// `user` mentions the app in the thread `thread_ts`: the message is written and the
    /// Events API envelope Slack sends for it returned.
    pub fn mention(&self, event_id: &str, user: &str, channel: &str, thread_ts: &str, question: &str) -> Value {
        let text = format!("<@{BOT_USER}> {question}");
        let ts = self.post_as(user, channel, Some(thread_ts), &text);
        json!({
            "token": "unused-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": {
                "type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel,
                "event_ts": ts, "thread_ts": thread_ts, "team": TEAM_ID,
                "blocks": [{"type": "rich_text", "block_id": "m1", "elements": []}],
            },
            "type": "event_callback",
            "event_id": event_id,
            "event_time": chrono::Utc::now().timestamp(),
            "authorizations": [{"enterprise_id": null, "team_id": TEAM_ID, "user_id": BOT_USER,
                                "is_bot": true, "is_enterprise_install": false}],
            "is_ext_shared_channel": false,
            "event_context": "4-unused",
        })
    }

    /// Socket Mode connections made so far (each greeted with `hello`).
    pub fn links(&self) -> usize {
        self.world().socket.links.len()
    }

    /// Socket Mode connections open now.
    pub fn open_links(&self) -> usize {
        self.world().socket.links.iter().filter(|l| l.open).count()
    }

    /// Whether the client closed the connection `link` (0 the first) itself.
    pub fn closed_by_client(&self, link: usize) -> bool {
        self.world().socket.links.get(link).is_some_and(|l| l.closed_by_client)
    }

    /// How many other connections were open when the connection `link` was made.
    pub fn open_when_made(&self, link: usize) -> usize {
        self.world().socket.links[link].others_open
    }

    /// Waits until `n` Socket Mode connections were made.
    pub async fn wait_for_links(&self, n: usize) {
        for _ in 0..500 {
            if self.links() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for Socket Mode connection {n} (made: {})", self.links());
    }

    /// The acknowledgements received, in order.
    pub fn acks(&self) -> Vec<Ack> {
        self.world().socket.acks.clone()
    }

    /// Pongs received (each connection is pinged once, as it opens).
    pub fn pongs(&self) -> usize {
        self.world().socket.pongs
    }

    /// Sends an envelope of `kind` carrying `payload` on the newest open Socket Mode
    /// connection; its `envelope_id`.
    pub fn push(&self, kind: &str, payload: Value, accepts_response_payload: bool) -> String {
        let mut w = self.world();
        let link = w.socket.links.iter().rposition(|l| l.open).expect("no open Socket Mode connection");
        w.socket.envelopes += 1;
        let id = format!("{:08x}-7c1e-4bd5-9a7e-{:012x}", 0x5eed_0000 + w.socket.envelopes, w.socket.envelopes);
        let frame = json!({
            "envelope_id": id, "type": kind, "payload": payload,
            "accepts_response_payload": accepts_response_payload, "retry_attempt": 0, "retry_reason": "",
        });
        w.socket.sent.insert(id.clone(), (link, Instant::now(), accepts_response_payload));
        let _ = w.socket.links[link].out.send(Out::Text(frame.to_string()));
        id
    }

    /// An Events API envelope (an `event_callback`, as [`SlackServer::mention`] builds)
    /// over Socket Mode.
    pub fn push_event(&self, callback: &Value) -> String {
        self.push("events_api", callback.clone(), false)
    }

    /// An interaction payload (as [`SlackServer::block_actions`] builds) over Socket
    /// Mode; `block_actions` accept no response payload.
    pub fn push_interaction(&self, payload: &Value) -> String {
        self.push("interactive", payload.clone(), payload["type"] != "block_actions")
    }

    /// Slack refreshes the newest open connection: `disconnect` with `reason`, and the
    /// connection closed two seconds later unless the client closed it first.
    pub fn disconnect(&self, reason: &str) {
        let w = self.world();
        let link = w.socket.links.iter().rposition(|l| l.open).expect("no open Socket Mode connection");
        let out = w.socket.links[link].out.clone();
        let frame = json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-test"}});
        let _ = out.send(Out::Text(frame.to_string()));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = out.send(Out::Close);
        });
    }

    /// What Slack sends when `user` presses the button `action_id` of the message `ts`:
    /// a `block_actions` payload carrying the message as it is now.
    pub fn block_actions(&self, user: &str, channel: &str, ts: &str, action_id: &str) -> Value {
        let message = self.message(channel, ts).unwrap_or_else(|| panic!("no message {channel}/{ts}"));
        let (block_id, button) = message
            .blocks
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().unwrap().iter().map(move |e| (b["block_id"].clone(), e)))
            .find(|(_, e)| e["action_id"] == action_id)
            .unwrap_or_else(|| panic!("the message {ts} has no button {action_id}: {:?}", message.blocks));
        let mut action = json!({
            "action_id": action_id, "block_id": block_id, "text": button["text"], "type": "button",
            "action_ts": format!("{}.000100", chrono::Utc::now().timestamp()),
        });
        for field in ["value", "style", "url"] {
            if !button[field].is_null() {
                action[field] = button[field].clone();
            }
        }
        let mut container = json!({"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false});
        if let Some(t) = &message.thread_ts {
            container["thread_ts"] = t.as_str().into();
        }
        json!({
            "type": "block_actions",
            "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "unused-verification-token",
            "container": container,
            "trigger_id": "1234567890.1234567890.abcdef",
            "team": {"id": TEAM_ID, "domain": "inquest-test"},
            "enterprise": null,
            "is_enterprise_install": false,
            "channel": {"id": channel, "name": "incidents"},
            "message": message_json(&message, true),
            "state": {"values": {}},
            "response_url": format!("https://hooks.slack.com/actions/{TEAM_ID}/1/unused"),
            "actions": [action],
        })
    }
}

/// `v0=<hex>` for a request Slack signs.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mac = inquest::intake::auth::hmac_sha256(secret.as_bytes(), &[format!("v0:{timestamp}:{body}").as_bytes()]);
    format!("v0={}", hex::encode(mac))
}

/// Sends `body` to `url` as Slack does, signed with `secret` at `timestamp`.
pub async fn deliver(url: &str, secret: &str, content_type: &str, body: String, timestamp: i64) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", sign(secret, timestamp, &body))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// An interactivity payload, form-encoded and signed now.
pub async fn send_interaction(url: &str, secret: &str, payload: &Value) -> reqwest::Response {
    let body = format!("payload={}", inquest::percent::encode(&payload.to_string()));
    deliver(url, secret, "application/x-www-form-urlencoded", body, chrono::Utc::now().timestamp()).await
}

/// An Events API envelope, signed now.
pub async fn send_event(url: &str, secret: &str, envelope: &Value) -> reqwest::Response {
    deliver(url, secret, "application/json", envelope.to_string(), chrono::Utc::now().timestamp()).await
}

// ---- The Web API ----

/// An argument's documented type.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Bool,
    Int,
    /// A message timestamp, `<seconds>.<micros>`.
    Ts,
    /// A JSON array (in forms, as JSON text).
    Array,
    /// A JSON object (in forms, as JSON text).
    Object,
}

/// Each method's documented arguments (besides `token`): (name, type, required).
fn arguments(method: &str) -> Option<&'static [(&'static str, Kind, bool)]> {
    use Kind::*;
    Some(match method {
        "auth.test" => &[],
        "apps.connections.open" => &[],
        "chat.postMessage" => &[
            ("channel", Str, true),
            ("text", Str, false),
            ("blocks", Array, false),
            ("attachments", Array, false),
            ("metadata", Object, false),
            ("thread_ts", Ts, false),
            ("reply_broadcast", Bool, false),
            ("unfurl_links", Bool, false),
            ("unfurl_media", Bool, false),
            ("mrkdwn", Bool, false),
            ("parse", Str, false),
            ("link_names", Bool, false),
            ("username", Str, false),
            ("icon_emoji", Str, false),
            ("icon_url", Str, false),
            ("as_user", Bool, false),
            ("markdown_text", Str, false),
        ],
        "chat.update" => &[
            ("channel", Str, true),
            ("ts", Ts, true),
            ("text", Str, false),
            ("blocks", Array, false),
            ("attachments", Array, false),
            ("metadata", Object, false),
            ("as_user", Bool, false),
            ("file_ids", Array, false),
            ("link_names", Bool, false),
            ("markdown_text", Str, false),
            ("parse", Str, false),
            ("reply_broadcast", Bool, false),
        ],
        "chat.postEphemeral" => &[
            ("channel", Str, true),
            ("user", Str, true),
            ("text", Str, false),
            ("blocks", Array, false),
            ("attachments", Array, false),
            ("thread_ts", Ts, false),
            ("as_user", Bool, false),
            ("icon_emoji", Str, false),
            ("icon_url", Str, false),
            ("link_names", Bool, false),
            ("parse", Str, false),
            ("username", Str, false),
            ("markdown_text", Str, false),
        ],
        "conversations.replies" => &[
            ("channel", Str, true),
            ("ts", Ts, true),
            ("cursor", Str, false),
            ("inclusive", Bool, false),
            ("latest", Ts, false),
            ("limit", Int, false),
            ("oldest", Ts, false),
            ("include_all_metadata", Bool, false),
        ],
        "conversations.history" => &[
            ("channel", Str, true),
            ("cursor", Str, false),
            ("inclusive", Bool, false),
            ("latest", Ts, false),
            ("limit", Int, false),
            ("oldest", Ts, false),
            ("include_all_metadata", Bool, false),
        ],
        _ => return None,
    })
}

/// The arguments of one call, each as JSON when the body was JSON, else as text.
type Args = BTreeMap<String, Value>;

/// A refusal: Slack's error code, and the violation it records (none for errors a
/// correct client may meet, like `ratelimited`).
struct Refusal {
    status: StatusCode,
    error: String,
    violation: Option<String>,
}

fn refuse(error: &str, violation: impl Into<Option<String>>) -> Refusal {
    Refusal { status: StatusCode::OK, error: error.to_string(), violation: violation.into() }
}

async fn method(
    State(world): State<Arc<Mutex<World>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut w = world.lock().unwrap();
    let channel_hint = std::cell::RefCell::new(None::<String>);
    let result = (|| -> Result<(Value, bool), Refusal> {
        let (args, json_body) = parse_args(&headers, query.as_deref(), &body)?;
        check_token(&method, &headers, &args, json_body)?;
        let spec = arguments(&method).ok_or_else(|| {
            let mut r = refuse("unknown_method", format!("{method}: not a method this server knows"));
            r.status = StatusCode::NOT_FOUND;
            r
        })?;
        let args = check_args(&method, spec, args)?;
        *channel_hint.borrow_mut() = args.get("channel").and_then(Value::as_str).map(str::to_string);
        if take(&mut w.ratelimit, &method) {
            return Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                error: "ratelimited".into(),
                violation: None,
            });
        }
        let answer = carry_out(&mut w, &method, &args)?;
        let lost = take(&mut w.lose, &method);
        Ok((answer, lost))
    })();
    let channel = channel_hint.into_inner();
    match result {
        Ok((_, true)) => {
            w.calls.push(Call { method, channel, at: Instant::now(), error: Some("(answer lost)".into()) });
            (StatusCode::BAD_GATEWAY, "upstream connect error or disconnect/reset before headers").into_response()
        }
        Ok((mut answer, false)) => {
            w.calls.push(Call { method, channel, at: Instant::now(), error: None });
            answer["ok"] = true.into();
            if headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/json") && !ct.contains("charset"))
            {
                answer["response_metadata"]["warnings"] = json!(["missing_charset"]);
            }
            axum::Json(answer).into_response()
        }
        Err(r) => {
            if let Some(v) = r.violation {
                w.violations.push(format!("{method}: {v}"));
            }
            w.calls.push(Call { method, channel, at: Instant::now(), error: Some(r.error.clone()) });
            let mut response = (r.status, axum::Json(json!({"ok": false, "error": r.error}))).into_response();
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                response.headers_mut().insert(header::RETRY_AFTER, "1".parse().unwrap());
            }
            response
        }
    }
}

fn take(counts: &mut HashMap<String, usize>, method: &str) -> bool {
    match counts.get_mut(method) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// The call's arguments: the query string, then the body (JSON or form); whether the
/// body was JSON.
fn parse_args(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Result<(Args, bool), Refusal> {
    let mut args = Args::new();
    for (k, v) in form_pairs(query.unwrap_or_default().as_bytes()) {
        args.insert(k, Value::String(v));
    }
    if body.is_empty() {
        return Ok((args, false));
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Err(refuse("missing_post_type", "a body without a Content-Type".to_string()));
    };
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if let Some(charset) = ct.split(';').skip(1).find_map(|p| p.trim().strip_prefix("charset=")) {
        let cs = charset.trim_matches('"').to_ascii_lowercase();
        if cs != "utf-8" && cs != "iso-8859-1" {
            return Err(refuse("invalid_charset", format!("charset `{charset}`")));
        }
    }
    match mime.as_str() {
        "application/json" => {
            let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
                return Err(refuse("invalid_json", "a JSON body that is not a JSON object".to_string()));
            };
            args.extend(map);
            Ok((args, true))
        }
        "application/x-www-form-urlencoded" => {
            for (k, v) in form_pairs(body) {
                args.insert(k, Value::String(v));
            }
            Ok((args, false))
        }
        other => Err(refuse("invalid_post_type", format!("Content-Type `{other}`"))),
    }
}

fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    let decode =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().map(|c| c.into_owned()).ok();
    std::str::from_utf8(raw)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn check_token(method: &str, headers: &HeaderMap, args: &Args, json_body: bool) -> Result<(), Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    // A JSON body cannot carry the token: Slack takes it from the header only.
    let in_args = if json_body { None } else { args.get("token").and_then(Value::as_str).map(str::to_string) };
    // Socket Mode's method takes the app-level token, and only it; the rest the bot's.
    let (wanted, other, kind) = if method == "apps.connections.open" {
        (APP_TOKEN, BOT_TOKEN, "an app-level token (xapp-...)")
    } else {
        (BOT_TOKEN, APP_TOKEN, "a bot token (xoxb-...)")
    };
    match bearer.or(in_args) {
        None => Err(refuse("not_authed", "no token (send `Authorization: Bearer <token>`)".to_string())),
        Some(t) if t == wanted => Ok(()),
        Some(t) if t == other => Err(refuse("not_allowed_token_type", format!("{method} takes {kind}"))),
        Some(_) => Err(refuse("invalid_auth", None)),
    }
}

/// The arguments checked against the method's documentation and converted to JSON
/// (booleans, integers and JSON text parsed).
fn check_args(method: &str, spec: &[(&str, Kind, bool)], args: Args) -> Result<Args, Refusal> {
    let bad = |v: String| refuse("invalid_arguments", v);
    let mut out = Args::new();
    for (name, value) in args {
        if name == "token" {
            continue;
        }
        let Some((_, kind, _)) = spec.iter().find(|(n, _, _)| *n == name) else {
            return Err(bad(format!("`{name}` is not an argument of {method}")));
        };
        let converted = match (kind, &value) {
            (Kind::Str, Value::String(_)) => Some(value.clone()),
            (Kind::Bool, Value::Bool(_)) => Some(value.clone()),
            (Kind::Bool, Value::String(s)) => match s.as_str() {
                "true" | "1" => Some(Value::Bool(true)),
                "false" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            (Kind::Int, Value::Number(n)) if n.is_u64() => Some(value.clone()),
            (Kind::Int, Value::String(s)) => s.parse::<u64>().ok().map(Value::from),
            (Kind::Ts, Value::String(s)) if is_ts(s) => Some(value.clone()),
            (Kind::Array, Value::Array(_)) | (Kind::Object, Value::Object(_)) => Some(value.clone()),
            (Kind::Array | Kind::Object, Value::String(s)) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(|v| if *kind == Kind::Array { v.is_array() } else { v.is_object() }),
            _ => None,
        };
        let Some(converted) = converted else {
            return Err(bad(format!("`{name}` = {value} is not of its documented type")));
        };
        out.insert(name, converted);
    }
    if let Some((name, _, _)) = spec.iter().find(|(n, _, required)| *required && !out.contains_key(*n)) {
        let error = match *name {
            "channel" => "channel_not_found",
            "ts" if method == "conversations.replies" => "thread_not_found",
            "ts" => "message_not_found",
            _ => "invalid_arguments",
        };
        return Err(refuse(error, format!("the required argument `{name}` is missing")));
    }
    Ok(out)
}

fn is_ts(s: &str) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.len() == 6 && b.bytes().all(|c| c.is_ascii_digit())
    })
}

fn carry_out(w: &mut World, method: &str, args: &Args) -> Result<Value, Refusal> {
    let s = |name: &str| args.get(name).and_then(Value::as_str).map(str::to_string);
    let flag = |name: &str| args.get(name).and_then(Value::as_bool).unwrap_or(false);
    if method == "auth.test" {
        return Ok(json!({"url": "https://inquest-test.slack.com/", "team": "Inquest Test", "user": "inquest",
                         "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": false}));
    }
    if method == "apps.connections.open" {
        let ticket = format!("{:016x}", 0x7ac0_0000_0000_u64 + w.socket.tickets.len() as u64);
        w.socket.tickets.insert(ticket.clone(), false);
        return Ok(json!({"url": format!("{}/link/?ticket={ticket}&app_id={APP_ID}", w.socket.base)}));
    }
    let channel = s("channel").unwrap_or_default();
    match w.channels.get(&channel) {
        None => return Err(refuse("channel_not_found", None)),
        Some(false) => return Err(refuse("not_in_channel", None)),
        Some(true) => {}
    }
    match method {
        "chat.postMessage" | "chat.postEphemeral" => {
            let (text, blocks, metadata) = content(args, true)?;
            let thread_ts = s("thread_ts");
            if let Some(t) = &thread_ts {
                match w.find(&channel, t) {
                    None => {
                        return Err(refuse("thread_not_found", format!("thread_ts {t} is no message of {channel}")));
                    }
                    Some(m) if m.thread_ts.is_some() => {
                        return Err(refuse("invalid_arguments", format!("thread_ts {t} is a reply; use its parent")));
                    }
                    Some(_) => {}
                }
            }
            let ts = w.next_ts();
            if method == "chat.postEphemeral" {
                w.ephemerals.push(Ephemeral { channel, user: s("user").unwrap_or_default(), text, thread_ts });
                return Ok(json!({"message_ts": ts}));
            }
            let message = Message {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts,
                text,
                blocks: blocks.unwrap_or_default(),
                metadata: metadata.filter(|m| m.as_object().is_some_and(|o| !o.is_empty())),
                user: BOT_USER.into(),
                edits: 0,
            };
            let shown = message_json(&message, true);
            w.messages.push(message);
            Ok(json!({"channel": channel, "ts": ts, "message": shown}))
        }
        "chat.update" => {
            let ts = s("ts").unwrap_or_default();
            let (text, blocks, metadata) = content(args, false)?;
            let Some(message) = w.messages.iter_mut().find(|m| m.channel == channel && m.ts == ts) else {
                return Err(refuse("message_not_found", None));
            };
            if message.user != BOT_USER {
                return Err(refuse("cant_update_message", format!("{ts} is a person's message")));
            }
            if args.contains_key("text") || blocks.is_some() {
                message.text = text;
            }
            if let Some(b) = blocks {
                message.blocks = b;
            }
            // Absent, the metadata stays; `{}` removes it.
            if let Some(m) = metadata {
                message.metadata = m.as_object().is_some_and(|o| !o.is_empty()).then_some(m);
            }
            message.edits += 1;
            let shown = message_json(message, true);
            Ok(json!({"channel": channel, "ts": ts, "text": message.text, "message": shown}))
        }
        "conversations.replies" => {
            let ts = s("ts").unwrap_or_default();
            let Some(target) = w.find(&channel, &ts) else { return Err(refuse("thread_not_found", None)) };
            let root = target.thread_ts.clone().unwrap_or(ts);
            let parent = w.find(&channel, &root).cloned().into_iter();
            let replies: Vec<Message> = w
                .messages
                .iter()
                .filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(&root))
                .filter(|m| in_range(&m.ts, args))
                .cloned()
                .collect();
            let all: Vec<Message> = parent.chain(replies).collect();
            page(all, args, 1000, flag("include_all_metadata"))
        }
        "conversations.history" => {
            let mut top: Vec<Message> = w
                .messages
                .iter()
                .filter(|m| m.channel == channel && m.thread_ts.is_none() && in_range(&m.ts, args))
                .cloned()
                .collect();
            top.reverse();
            page(top, args, 999, flag("include_all_metadata"))
        }
        _ => Err(refuse("unknown_method", None)),
    }
}

fn in_range(ts: &str, args: &Args) -> bool {
    let key = |t: &str| {
        let (a, b) = t.split_once('.').unwrap_or((t, "0"));
        (a.parse::<u64>().unwrap_or(0), b.parse::<u64>().unwrap_or(0))
    };
    let inclusive = args.get("inclusive").and_then(Value::as_bool).unwrap_or(false);
    let after = args
        .get("oldest")
        .and_then(Value::as_str)
        .is_none_or(|o| if inclusive { key(ts) >= key(o) } else { key(ts) > key(o) });
    let before = args
        .get("latest")
        .and_then(Value::as_str)
        .is_none_or(|l| if inclusive { key(ts) <= key(l) } else { key(ts) < key(l) });
    after && before
}

/// One page of `messages` from the cursor on (`c<index>`).
fn page(messages: Vec<Message>, args: &Args, max: u64, metadata: bool) -> Result<Value, Refusal> {
    let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(max).clamp(1, max) as usize;
    let start = match args.get("cursor").and_then(Value::as_str) {
        None | Some("") => 0,
        Some(c) => match c.strip_prefix('c').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n <= messages.len() => n,
            _ => return Err(refuse("invalid_cursor", format!("cursor `{c}` was never given out"))),
        },
    };
    let end = (start + limit).min(messages.len());
    let shown: Vec<Value> = messages[start..end].iter().map(|m| message_json(m, metadata)).collect();
    let has_more = end < messages.len();
    Ok(json!({
        "messages": shown,
        "has_more": has_more,
        "response_metadata": {"next_cursor": if has_more { format!("c{end}") } else { String::new() }},
    }))
}

/// A message's text, blocks and metadata, as a call asks for them.
type Content = (String, Option<Vec<Value>>, Option<Value>);

/// What a call asks a message to say: its text, blocks and metadata, checked.
fn content(args: &Args, new: bool) -> Result<Content, Refusal> {
    let text = args.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
    let blocks = args.get("blocks").and_then(Value::as_array).cloned();
    let has_content = !text.is_empty()
        || blocks.as_ref().is_some_and(|b| !b.is_empty())
        || args.get("attachments").is_some()
        || args.get("markdown_text").is_some();
    if (new || args.get("text").is_some() || blocks.is_some()) && !has_content {
        return Err(refuse("no_text", "no text, blocks or attachments".to_string()));
    }
    if text.chars().count() > 40_000 {
        return Err(refuse("msg_too_long", "text over 40,000 characters".to_string()));
    }
    let blocks = match blocks {
        Some(b) => Some(check_blocks(&b).map_err(|why| refuse("invalid_blocks", why))?),
        None => None,
    };
    let metadata = args.get("metadata").cloned();
    if let Some(m) = &metadata {
        check_metadata(m).map_err(|why| refuse("invalid_metadata_format", why))?;
    }
    Ok((text, blocks, metadata))
}

fn check_metadata(m: &Value) -> Result<(), String> {
    let o = m.as_object().ok_or("metadata is not an object")?;
    if o.is_empty() {
        return Ok(());
    }
    let event_type = o.get("event_type").and_then(Value::as_str).ok_or("metadata without an `event_type` string")?;
    if event_type.is_empty() || !event_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("metadata event_type `{event_type}` is not alphanumeric"));
    }
    if !o.get("event_payload").is_some_and(Value::is_object) {
        return Err("metadata without an `event_payload` object".into());
    }
    if let Some(other) = o.keys().find(|k| *k != "event_type" && *k != "event_payload") {
        return Err(format!("metadata has `{other}`"));
    }
    Ok(())
}

/// Blocks checked against Block Kit's documented limits, as Slack stores them (each
/// with a `block_id`, text objects with their defaults).
fn check_blocks(blocks: &[Value]) -> Result<Vec<Value>, String> {
    if blocks.len() > 50 {
        return Err(format!("{} blocks; a message holds 50", blocks.len()));
    }
    let mut block_ids = HashSet::new();
    let mut action_ids = HashSet::new();
    let mut out = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let o = block.as_object().ok_or(format!("block {i} is not an object"))?;
        let kind = o.get("type").and_then(Value::as_str).ok_or(format!("block {i} has no type"))?;
        let allowed: &[&str] = match kind {
            "section" => &["type", "block_id", "text", "fields", "accessory"],
            "context" => &["type", "block_id", "elements"],
            "actions" => &["type", "block_id", "elements"],
            "header" => &["type", "block_id", "text"],
            "divider" => &["type", "block_id"],
            other => return Err(format!("block {i}: type `{other}` is not one this server checks")),
        };
        if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!("block {i} ({kind}) has `{k}`"));
        }
        let mut stored = o.clone();
        match o.get("block_id") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 255 => {
                if !block_ids.insert(id.clone()) {
                    return Err(format!("block_id `{id}` twice"));
                }
            }
            Some(other) => return Err(format!("block {i}: block_id {other}")),
            None => {
                stored.insert("block_id".into(), Value::String(format!("b{i:03}")));
            }
        }
        match kind {
            "section" => {
                if o.get("text").is_none() && o.get("fields").is_none() {
                    return Err(format!("section {i} without text or fields"));
                }
                if let Some(t) = o.get("text") {
                    stored.insert("text".into(), text_object(t, 3000, None).map_err(|e| format!("section {i}: {e}"))?);
                }
                if let Some(f) = o.get("fields") {
                    let fields = f.as_array().filter(|a| !a.is_empty() && a.len() <= 10).ok_or("1 to 10 fields")?;
                    let checked: Result<Vec<Value>, String> =
                        fields.iter().map(|t| text_object(t, 2000, None)).collect();
                    stored.insert("fields".into(), Value::Array(checked?));
                }
                if let Some(a) = o.get("accessory") {
                    stored.insert("accessory".into(), button(a, &mut action_ids)?);
                }
            }
            "context" => {
                let elements = o
                    .get("elements")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty() && a.len() <= 10)
                    .ok_or(format!("context {i}: 1 to 10 elements"))?;
                let checked: Result<Vec<Value>, String> = elements.iter().map(|t| text_object(t, 3000, None)).collect();
                stored.insert("elements".into(), Value::Array(checked?));
            }
            "actions" => {
                let elements = o
                    .get("elements")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty() && a.len() <= 25)
                    .ok_or(format!("actions {i}: 1 to 25 elements"))?;
                let checked: Result<Vec<Value>, String> = elements.iter().map(|e| button(e, &mut action_ids)).collect();
                stored.insert("elements".into(), Value::Array(checked?));
            }
            "header" => {
                let t = o.get("text").ok_or(format!("header {i} without text"))?;
                stored.insert("text".into(), text_object(t, 150, Some("plain_text"))?);
            }
            _ => {}
        }
        out.push(Value::Object(stored));
    }
    Ok(out)
}

/// A text object (`plain_text` or `mrkdwn`), with Slack's defaults filled in.
fn text_object(t: &Value, max: usize, only: Option<&str>) -> Result<Value, String> {
    let o = t.as_object().ok_or("a text object that is not an object")?;
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    if !matches!(kind, "plain_text" | "mrkdwn") || only.is_some_and(|k| k != kind) {
        return Err(format!("text type `{kind}`"));
    }
    let text = o.get("text").and_then(Value::as_str).ok_or("a text object without text")?;
    if text.is_empty() || text.chars().count() > max {
        return Err(format!("text of {} characters (1 to {max})", text.chars().count()));
    }
    let extra: &[&str] = if kind == "plain_text" { &["emoji"] } else { &["verbatim"] };
    if let Some(k) = o.keys().find(|k| !["type", "text"].contains(&k.as_str()) && !extra.contains(&k.as_str())) {
        return Err(format!("a {kind} text object has `{k}`"));
    }
    let mut stored: Map<String, Value> = o.clone();
    if kind == "plain_text" {
        stored.entry("emoji").or_insert(Value::Bool(true));
    } else {
        stored.entry("verbatim").or_insert(Value::Bool(false));
    }
    Ok(Value::Object(stored))
}

fn button(e: &Value, action_ids: &mut HashSet<String>) -> Result<Value, String> {
    let o = e.as_object().ok_or("an element that is not an object")?;
    if o.get("type").and_then(Value::as_str) != Some("button") {
        return Err(format!("element type {} is not one this server checks", o.get("type").unwrap_or(&Value::Null)));
    }
    let allowed = ["type", "text", "action_id", "value", "url", "style", "confirm", "accessibility_label"];
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("a button has `{k}`"));
    }
    let mut stored = o.clone();
    stored.insert("text".into(), text_object(o.get("text").ok_or("a button without text")?, 75, Some("plain_text"))?);
    let limit = |field: &str, max: usize| match o.get(field) {
        None => Ok(()),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(()),
        Some(other) => Err(format!("button {field} {other} (1 to {max} characters)")),
    };
    limit("action_id", 255)?;
    limit("value", 2000)?;
    limit("url", 3000)?;
    if let Some(id) = o.get("action_id").and_then(Value::as_str)
        && !action_ids.insert(id.to_string())
    {
        return Err(format!("action_id `{id}` twice in one message"));
    }
    if let Some(style) = o.get("style")
        && style != "primary"
        && style != "danger"
    {
        return Err(format!("button style {style}"));
    }
    Ok(Value::Object(stored))
}

/// A message as the Web API shows it.
fn message_json(m: &Message, with_metadata: bool) -> Value {
    let mut v = json!({
        "type": "message", "ts": m.ts, "text": m.text, "user": m.user, "team": TEAM_ID,
    });
    if m.user == BOT_USER {
        v["bot_id"] = BOT_ID.into();
        v["app_id"] = APP_ID.into();
    }
    if !m.blocks.is_empty() {
        v["blocks"] = Value::Array(m.blocks.clone());
    }
    if let Some(t) = &m.thread_ts {
        v["thread_ts"] = t.as_str().into();
        v["parent_user_id"] = BOT_USER.into();
    }
    if m.edits > 0 {
        v["edited"] = json!({"user": BOT_USER, "ts": m.ts});
    }
    if with_metadata && let Some(meta) = &m.metadata {
        v["metadata"] = meta.clone();
    }
    v
}

// ---- Socket Mode ----

/// `GET /link/?ticket=...`: a Socket Mode connection, for a ticket handed out and not
/// used yet.
async fn link(
    State(world): State<Arc<Mutex<World>>>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ticket =
        form_pairs(query.unwrap_or_default().as_bytes()).into_iter().find(|(k, _)| k == "ticket").map(|(_, v)| v);
    let stop = {
        let mut w = world.lock().unwrap();
        let known = ticket.as_deref().and_then(|t| w.socket.tickets.get(t).copied());
        match known {
            Some(false) => {
                w.socket.tickets.insert(ticket.unwrap_or_default(), true);
            }
            Some(true) => {
                w.violations.push("socket: a ticket used twice (apps.connections.open's URLs are single-use)".into());
                return StatusCode::UNAUTHORIZED.into_response();
            }
            None => {
                w.violations.push("socket: a URL apps.connections.open did not hand out".into());
                return StatusCode::UNAUTHORIZED.into_response();
            }
        }
        w.stop.clone()
    };
    upgrade.on_upgrade(move |socket| serve_link(world, socket, stop))
}

async fn serve_link(world: Arc<Mutex<World>>, mut socket: WebSocket, stop: CancellationToken) {
    let (out, mut outgoing) = mpsc::unbounded_channel();
    let n = {
        let mut w = world.lock().unwrap();
        let others_open = w.socket.links.iter().filter(|l| l.open).count();
        w.socket.links.push(Link { out, open: true, closed_by_client: false, others_open });
        w.socket.links.len() - 1
    };
    let hello = json!({
        "type": "hello", "num_connections": 1,
        "debug_info": {"host": format!("applink-test-{n}"), "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID},
    });
    let greeted = socket.send(WsMessage::Text(hello.to_string().into())).await.is_ok()
        && socket.send(WsMessage::Ping(Bytes::from_static(b"slack"))).await.is_ok();
    if !greeted {
        world.lock().unwrap().socket.links[n].open = false;
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            sent = outgoing.recv() => match sent {
                Some(Out::Text(text)) => {
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close) | None => {
                    let bye = CloseFrame { code: 1001, reason: "link refreshed".into() };
                    let _ = socket.send(WsMessage::Close(Some(bye))).await;
                    // The client's answer, then the end.
                    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(2), socket.recv()).await {}
                    break;
                }
            },
            received = socket.recv() => match received {
                None | Some(Err(_)) => break,
                Some(Ok(WsMessage::Text(text))) => record_ack(&mut world.lock().unwrap(), n, text.as_str()),
                Some(Ok(WsMessage::Pong(_))) => world.lock().unwrap().socket.pongs += 1,
                Some(Ok(WsMessage::Close(_))) => world.lock().unwrap().socket.links[n].closed_by_client = true,
                Some(Ok(WsMessage::Binary(_))) => {
                    world.lock().unwrap().violations.push("socket: a binary frame (Slack reads JSON text)".into());
                }
                Some(Ok(WsMessage::Ping(_))) => {}
            },
        }
    }
    world.lock().unwrap().socket.links[n].open = false;
}

/// A frame from the client: an acknowledgement, checked.
fn record_ack(w: &mut World, link: usize, text: &str) {
    let mut bad = |why: String| w.violations.push(format!("socket: {why}"));
    let Ok(Value::Object(ack)) = serde_json::from_str::<Value>(text) else {
        return bad(format!("a frame that is not a JSON object: {text}"));
    };
    let Some(id) = ack.get("envelope_id").and_then(Value::as_str) else {
        return bad(format!("a frame without an envelope_id: {text}"));
    };
    if let Some(k) = ack.keys().find(|k| *k != "envelope_id" && *k != "payload") {
        return bad(format!("an acknowledgement with `{k}`: {text}"));
    }
    let Some(&(sent_on, at, accepts)) = w.socket.sent.get(id) else {
        return bad(format!("an acknowledgement of {id}, which was never sent"));
    };
    let after = at.elapsed();
    let mut problems = Vec::new();
    if sent_on != link {
        problems.push(format!("{id} acknowledged on connection {link}, sent on {sent_on}"));
    }
    if after > Duration::from_secs(3) {
        problems.push(format!("{id} acknowledged after {after:?}; Slack waits 3 s"));
    }
    if ack.contains_key("payload") && !accepts {
        problems.push(format!("{id} acknowledged with a payload it does not accept"));
    }
    if w.socket.acks.iter().any(|a| a.envelope_id == id) {
        problems.push(format!("{id} acknowledged twice"));
    }
    let payload = ack.get("payload").cloned();
    w.socket.acks.push(Ack { envelope_id: id.to_string(), link, after, payload });
    w.violations.extend(problems.into_iter().map(|p| format!("socket: {p}")));
}
