//! Socket Mode: what Slack would POST to the events and interactivity endpoints comes
//! over a websocket this process opens instead, for deployments Slack cannot reach.
//!
//! A connection starts with `apps.connections.open`, called with the app-level token
//! (`xapp-...`, scope `connections:write`), which answers a single-use `wss://` URL.
//! Over it Slack sends JSON frames:
//!
//! - `hello` once the connection is ready;
//! - `disconnect` (`reason`: `refresh_requested`, `warning`, `link_disabled`) when Slack
//!   is about to drop it: a new connection is opened (a fresh URL) *before* the old one
//!   is closed, and what the old one still delivers meanwhile is handled;
//! - envelopes, `{envelope_id, type, payload, accepts_response_payload, ...}`, each
//!   acknowledged at once with `{"envelope_id": ...}` on the connection it came on (Slack
//!   wants that within three seconds, and redelivers unacknowledged events), and handled
//!   after: `events_api` as the events endpoint's `event_callback`s
//!   ([`SlackEvents::handle_callback`]), `interactive` `block_actions` as the
//!   interactivity endpoint's presses ([`SlackInteractivity::handle`]). Slash commands
//!   are not Inquest's; they are acknowledged and dropped.
//!
//! No signature is checked here, unlike the HTTP endpoints: nothing reaches this
//! socket but Slack, which authenticated the app by its app-level token when it handed
//! out the URL, over TLS. The signing secret plays no part in Socket Mode.
//!
//! The connection is kept alive: tungstenite answers Slack's pings, this side pings
//! every [`PING_EVERY`], and a connection that says nothing for three of those (a
//! half-open TCP connection behind a NAT says nothing, forever) is given up. Failures to
//! connect or a lost connection are retried with jittered exponential backoff (reset once
//! Slack says `hello`), for as long as the process runs; `ratelimited` is waited out as
//! Slack asks.
//!
//! Slack sends each envelope to one of the app's open connections, whichever process
//! holds it. So one process must hold them all, and it must have the registry's approval
//! service if approvals are to be decided from Slack ([`SocketMode::new`]'s `presses`).
//!
//! The pure part, which frame is what and what an envelope asks for, is [`parse_frame`],
//! [`ack`] and [`plan`].

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::api::SlackApiError;
use super::events::SlackEvents;
use super::interactivity::{Press, SlackInteractivity};

/// How often this side pings; three of these without a word from Slack and the
/// connection is taken for dead.
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// The method handing out websocket URLs.
const OPEN_METHOD: &str = "apps.connections.open";
/// How long `apps.connections.open` and the websocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection being closed may take to finish (Slack's close answer, and
/// what it still delivers).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping client waits for handlers still running.
const HANDLERS_GRACE: Duration = Duration::from_secs(10);
/// When a 429 names no `Retry-After` (`apps.connections.open` is in Slack's tier 1).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The backoff between attempts to connect.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// Attempts at handling an event whose handling failed (the store or the ledger could
/// not be reached): it was acknowledged, so Slack will not deliver it again.
const EVENT_ATTEMPTS: usize = 4;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum SocketModeError {
    #[error("chat.slack.app_token: Socket Mode connects with an app-level token (xapp-...), and none is configured")]
    NoAppToken,
}

/// The Socket Mode client: see the module's documentation.
pub struct SocketMode {
    http: reqwest::Client,
    api_url: String,
    app_token: SecretString,
    events: SlackEvents,
    presses: Option<SlackInteractivity>,
    backoff: ExponentialBuilder,
}

impl std::fmt::Debug for SocketMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketMode")
            .field("api_url", &self.api_url)
            .field("presses", &self.presses.is_some())
            .finish_non_exhaustive()
    }
}

impl SocketMode {
    /// A client for the app whose configuration `events` carries (`api_url`,
    /// `app_token`), calling `apps.connections.open` over `http`. `events` handles
    /// mentions; `presses` decides approvals, and must be given where the registry's
    /// approval service is in this process (without it, a press is answered, to the
    /// person alone, that it decides nothing here).
    pub fn new(
        http: reqwest::Client,
        events: SlackEvents,
        presses: Option<SlackInteractivity>,
    ) -> Result<SocketMode, SocketModeError> {
        let app_token = events.config.app_token.clone().ok_or(SocketModeError::NoAppToken)?;
        Ok(SocketMode {
            http,
            api_url: events.config.api_url.trim_end_matches('/').to_string(),
            app_token,
            events,
            presses,
            backoff: ExponentialBuilder::default()
                .with_min_delay(MIN_BACKOFF)
                .with_max_delay(MAX_BACKOFF)
                .with_jitter()
                .without_max_times(),
        })
    }

    /// The backoff between attempts to connect (by default 1 s doubling to 2 min).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> SocketMode {
        self.backoff = self.backoff.with_min_delay(min).with_max_delay(max);
        self
    }

    /// Connects, and stays connected until `stop`; then closes the connection, handles
    /// what was already acknowledged, and returns.
    pub async fn run(self, stop: CancellationToken) {
        let (reports_tx, mut reports) = mpsc::unbounded_channel::<Report>();
        let mut links: JoinSet<()> = JoinSet::new();
        let mut handlers: JoinSet<()> = JoinSet::new();
        let mut backoff = self.backoff.build();
        let mut current: Option<Link> = None;
        let mut next_id: u64 = 0;
        let mut retry_at: Option<Instant> = Some(Instant::now());

        loop {
            let wake = retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                report = reports.recv() => {
                    let Some(report) = report else { break };
                    match report {
                        Report::Envelope(envelope) => self.dispatch(envelope, &mut handlers),
                        Report::Hello { link } if is_current(&current, link) => {
                            info!(link, "Slack Socket Mode connected");
                            backoff = self.backoff.build();
                        }
                        Report::Disconnect { link, reason } if is_current(&current, link) => {
                            info!(link, reason, "Slack asks for a new Socket Mode connection");
                            // The new one first: the old still delivers until it is closed.
                            let Some(opened) = self.connect_unless_stopped(&stop).await else { break };
                            match opened {
                                Ok(ws) => {
                                    next_id += 1;
                                    let fresh = spawn_link(next_id, ws, &reports_tx, &stop, &mut links);
                                    if let Some(old) = current.replace(fresh) {
                                        old.close.cancel();
                                    }
                                }
                                Err(e) => {
                                    warn!(error = %e, "could not open a new Socket Mode connection; \
                                                      keeping the old one while it lasts");
                                }
                            }
                        }
                        Report::Closed { link, why } if is_current(&current, link) => {
                            current = None;
                            let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                            match why {
                                Some(why) => warn!(link, why, ?wait, "the Slack Socket Mode connection was lost"),
                                None => info!(link, ?wait, "Slack closed the Socket Mode connection"),
                            }
                            retry_at = Some(Instant::now() + wait);
                        }
                        Report::Hello { link } | Report::Disconnect { link, .. } | Report::Closed { link, .. } => {
                            debug!(link, "a frame from a Socket Mode connection being closed");
                        }
                    }
                }
                () = sleep_until(wake), if current.is_none() && retry_at.is_some() => {
                    retry_at = None;
                    let Some(opened) = self.connect_unless_stopped(&stop).await else { break };
                    match opened {
                        Ok(ws) => {
                            next_id += 1;
                            current = Some(spawn_link(next_id, ws, &reports_tx, &stop, &mut links));
                        }
                        Err(e) => {
                            let mut wait = backoff.next().unwrap_or(MAX_BACKOFF);
                            if let ConnectError::Open(SlackApiError::RateLimited { retry_after, .. }) = &e {
                                wait = wait.max(*retry_after);
                            }
                            if e.is_permanent() {
                                error!(error = %e, ?wait, "Slack refuses Socket Mode connections; \
                                                           check chat.slack.app_token and the app's settings");
                            } else {
                                warn!(error = %e, ?wait, "could not connect to Slack's Socket Mode");
                            }
                            retry_at = Some(Instant::now() + wait);
                        }
                    }
                }
                Some(joined) = handlers.join_next(), if !handlers.is_empty() => {
                    if let Err(e) = joined {
                        error!(error = %e, "a Socket Mode handler failed");
                    }
                }
                Some(_) = links.join_next(), if !links.is_empty() => {}
            }
        }

        // Stopping: every connection closes (their tokens are children of `stop`), and
        // what they still deliver, acknowledged, is handled.
        let deadline = Instant::now() + CLOSE_GRACE + Duration::from_secs(1);
        while !links.is_empty() {
            tokio::select! {
                Some(report) = reports.recv() => {
                    if let Report::Envelope(envelope) = report {
                        self.dispatch(envelope, &mut handlers);
                    }
                }
                _ = links.join_next() => {}
                () = sleep_until(deadline) => break,
            }
        }
        links.abort_all();
        while let Ok(report) = reports.try_recv() {
            if let Report::Envelope(envelope) = report {
                self.dispatch(envelope, &mut handlers);
            }
        }
        if timeout(HANDLERS_GRACE, async { while handlers.join_next().await.is_some() {} }).await.is_err() {
            warn!(left = handlers.len(), "Socket Mode handlers still running at shutdown were cancelled");
        }
        info!("Slack Socket Mode stopped");
    }

    async fn connect_unless_stopped(&self, stop: &CancellationToken) -> Option<Result<Ws, ConnectError>> {
        tokio::select! {
            () = stop.cancelled() => None,
            connected = timeout(CONNECT_TIMEOUT, self.connect()) => {
                Some(connected.unwrap_or_else(|_| Err(ConnectError::Socket("timed out connecting".to_string()))))
            }
        }
    }

    /// A fresh URL, and a websocket to it.
    async fn connect(&self) -> Result<Ws, ConnectError> {
        let url = self.open_url().await.map_err(ConnectError::Open)?;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| ConnectError::Socket(format!("{}: {e}", without_query(&url))))?;
        debug!(url = without_query(&url), "a Socket Mode websocket is open");
        Ok(ws)
    }

    /// `apps.connections.open`, with the app-level token: a single-use websocket URL.
    async fn open_url(&self) -> Result<String, SlackApiError> {
        let request = self.http.post(format!("{}/{OPEN_METHOD}", self.api_url));
        let answer = super::api::send_once(OPEN_METHOD, request, &self.app_token, DEFAULT_RETRY_AFTER).await?;
        match answer["url"].as_str() {
            Some(url) if url.starts_with("wss://") || url.starts_with("ws://") => Ok(url.to_string()),
            _ => Err(SlackApiError::Transport {
                method: OPEN_METHOD.to_string(),
                message: "the answer has no websocket `url`".to_string(),
            }),
        }
    }

    /// Starts handling an envelope already acknowledged.
    fn dispatch(&self, envelope: Envelope, handlers: &mut JoinSet<()>) {
        if envelope.retry_attempt > 0 {
            debug!(envelope_id = envelope.id, retry_attempt = envelope.retry_attempt, "Slack delivers again");
        }
        match plan(&envelope) {
            Todo::Event(callback) => {
                let events = self.events.clone();
                handlers.spawn(async move { ask(events, callback).await });
            }
            Todo::Press(press) => match &self.presses {
                Some(presses) => {
                    let presses = presses.clone();
                    handlers.spawn(async move {
                        presses.handle(&press).await;
                    });
                }
                None => {
                    warn!(
                        approval_id = press.approval_id,
                        slack_user = press.slack_user,
                        "an approval card's button was pressed, but approvals are decided by the registry, \
                         which is not in this process; run Socket Mode where the registry is"
                    );
                    let api = self.events.api.clone();
                    handlers.spawn(async move {
                        let text = "This Inquest process cannot record decisions, so the press decided nothing. \
                                    Use the approval page.";
                        if let Err(e) = api
                            .post_ephemeral(&press.channel, &press.slack_user, text, press.thread_ts.as_deref())
                            .await
                        {
                            warn!(error = %e, "could not tell a person their press decided nothing");
                        }
                    });
                }
            },
            Todo::Ignore(why) => {
                debug!(envelope_id = envelope.id, kind = envelope.kind, why, "a Slack envelope ignored")
            }
        }
    }
}

/// A mention, asked; retried a few times when the store or the ledger fails, since
/// Slack, answered already, will not deliver it again.
async fn ask(events: SlackEvents, callback: Value) {
    let event_id = callback["event_id"].as_str().unwrap_or_default().to_string();
    let attempt = || async { events.handle_callback(&callback).await };
    let handled = attempt
        .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(500)).with_max_times(EVENT_ATTEMPTS))
        .notify(|error, after| warn!(%error, ?after, event_id, "handling a Slack event failed; retrying"))
        .await;
    match handled {
        Ok(outcome) => debug!(event_id, ?outcome, "a Slack event over Socket Mode"),
        Err(e) => error!(error = %e, event_id, "a Slack event could not be handled, and Slack will not send it again"),
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Open(SlackApiError),
    #[error("websocket: {0}")]
    Socket(String),
}

impl ConnectError {
    /// Slack refuses the token or the app (retrying is kept up, but this needs a person).
    fn is_permanent(&self) -> bool {
        matches!(self, ConnectError::Open(e) if !e.is_transient())
    }
}

/// A connection's task, as the client knows it.
struct Link {
    id: u64,
    /// Closes the connection (a child of the client's `stop`).
    close: CancellationToken,
}

fn is_current(current: &Option<Link>, link: u64) -> bool {
    current.as_ref().is_some_and(|c| c.id == link)
}

/// What a connection's task tells the client.
enum Report {
    Hello {
        link: u64,
    },
    Disconnect {
        link: u64,
        reason: String,
    },
    /// An envelope, acknowledged already.
    Envelope(Envelope),
    /// The connection is gone: closed by Slack (`why` none), or lost.
    Closed {
        link: u64,
        why: Option<String>,
    },
}

fn spawn_link(
    id: u64,
    ws: Ws,
    reports: &mpsc::UnboundedSender<Report>,
    stop: &CancellationToken,
    links: &mut JoinSet<()>,
) -> Link {
    let close = stop.child_token();
    links.spawn(serve_link(id, ws, reports.clone(), close.clone()));
    Link { id, close }
}

/// Reads one connection until it ends or `close`: acknowledges each envelope on it at
/// once, and reports everything to the client.
async fn serve_link(id: u64, ws: Ws, reports: mpsc::UnboundedSender<Report>, close: CancellationToken) {
    let (mut sink, mut stream) = ws.split();
    let mut pings = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let mut closing: Option<Instant> = None;
    let why = loop {
        let give_up = closing.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = close.cancelled(), if closing.is_none() => {
                closing = Some(Instant::now() + CLOSE_GRACE);
                if let Err(e) = sink.send(Message::Close(None)).await {
                    break Some(e.to_string());
                }
            }
            () = sleep_until(give_up), if closing.is_some() => break None,
            _ = pings.tick() => {
                if heard.elapsed() > PING_EVERY * 3 {
                    break Some(format!("nothing heard for {:?}", heard.elapsed()));
                }
                if closing.is_none() && let Err(e) = sink.send(Message::Ping(Bytes::from_static(b"inquest"))).await {
                    break Some(e.to_string());
                }
            }
            frame = stream.next() => {
                let frame = match frame {
                    None => break None,
                    Some(Err(e)) => break Some(e.to_string()),
                    Some(Ok(frame)) => frame,
                };
                heard = Instant::now();
                let Message::Text(text) = frame else {
                    // Pings are answered by tungstenite as it reads; a close is answered
                    // likewise, and the stream then ends.
                    continue;
                };
                match parse_frame(text.as_str()) {
                    Ok(Frame::Envelope(envelope)) => {
                        // Acknowledged before it is handled: handling may take longer than
                        // the three seconds Slack waits.
                        let acked = sink.send(Message::text(ack(&envelope.id))).await;
                        // Handled even when the ack could not be sent: a delivery again
                        // is recognized as such (events by their id, a second decision
                        // by the approval service).
                        let _ = reports.send(Report::Envelope(envelope));
                        if let Err(e) = acked {
                            break Some(e.to_string());
                        }
                    }
                    Ok(Frame::Hello) => {
                        let _ = reports.send(Report::Hello { link: id });
                    }
                    Ok(Frame::Disconnect { reason }) => {
                        let _ = reports.send(Report::Disconnect { link: id, reason });
                    }
                    Ok(Frame::Other(kind)) => debug!(link = id, kind, "a Socket Mode frame of a type not used here"),
                    Err(e) => warn!(link = id, error = e, "a Socket Mode frame that makes no sense"),
                }
            }
        }
    };
    let _ = reports.send(Report::Closed { link: id, why });
}

fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

// ---- The pure part ----

/// A frame Slack sends over the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The connection is ready.
    Hello,
    /// Slack will close the connection soon; a new one should be opened.
    Disconnect { reason: String },
    /// Something to acknowledge and handle.
    Envelope(Envelope),
    /// A frame of a type Inquest has no use for.
    Other(String),
}

/// An envelope: an event, an interaction or a slash command.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: String,
    /// `events_api`, `interactive` or `slash_commands`.
    pub kind: String,
    /// What the HTTP endpoint would have been sent: an `event_callback`, an interaction
    /// payload, a slash command's fields.
    pub payload: Value,
    pub accepts_response_payload: bool,
    /// How many times Slack delivered it before (0 the first time).
    pub retry_attempt: u64,
}

/// What a frame is; an error says why it makes no sense.
pub fn parse_frame(text: &str) -> Result<Frame, String> {
    let mut frame: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !frame.is_object() {
        return Err("not a JSON object".to_string());
    }
    let kind = frame["type"].as_str().unwrap_or_default().to_string();
    if let Some(id) = frame.get("envelope_id") {
        let id = id.as_str().filter(|id| !id.is_empty()).ok_or("an envelope_id that is not a string")?.to_string();
        if kind.is_empty() {
            return Err(format!("the envelope {id} has no type"));
        }
        return Ok(Frame::Envelope(Envelope {
            id,
            kind,
            payload: frame.get_mut("payload").map(Value::take).unwrap_or(Value::Null),
            accepts_response_payload: frame["accepts_response_payload"].as_bool().unwrap_or(false),
            retry_attempt: frame["retry_attempt"].as_u64().unwrap_or(0),
        }));
    }
    match kind.as_str() {
        "hello" => Ok(Frame::Hello),
        "disconnect" => Ok(Frame::Disconnect { reason: frame["reason"].as_str().unwrap_or("unknown").to_string() }),
        "" => Err("a frame without a type".to_string()),
        _ => Ok(Frame::Other(kind)),
    }
}

/// The acknowledgement of the envelope `envelope_id` (with no response payload).
pub fn ack(envelope_id: &str) -> String {
    json!({"envelope_id": envelope_id}).to_string()
}

/// What an envelope asks of Inquest.
#[derive(Debug, Clone, PartialEq)]
pub enum Todo {
    /// An `event_callback`, for [`SlackEvents::handle_callback`].
    Event(Value),
    /// An approval card's button, pressed.
    Press(Press),
    /// Nothing; why.
    Ignore(String),
}

pub fn plan(envelope: &Envelope) -> Todo {
    let payload = &envelope.payload;
    let payload_type = payload["type"].as_str().unwrap_or("(none)");
    match envelope.kind.as_str() {
        "events_api" if payload_type == "event_callback" => Todo::Event(payload.clone()),
        "events_api" => Todo::Ignore(format!("an events_api payload of type `{payload_type}`")),
        "interactive" => match Press::of(payload) {
            Some(press) => Todo::Press(press),
            None => Todo::Ignore(format!("an interaction (`{payload_type}`) that is not an approval card's button")),
        },
        "slash_commands" => Todo::Ignore("Inquest has no slash commands".to_string()),
        other => Todo::Ignore(format!("an envelope of type `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, payload: Value) -> Envelope {
        let text = json!({"envelope_id": "e-1", "type": kind, "payload": payload,
                          "accepts_response_payload": false, "retry_attempt": 0, "retry_reason": ""})
        .to_string();
        match parse_frame(&text) {
            Ok(Frame::Envelope(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_are_told_apart() {
        let hello = r#"{"type":"hello","num_connections":1,"debug_info":{"host":"applink-1"},
                        "connection_info":{"app_id":"A1"}}"#;
        assert_eq!(parse_frame(hello), Ok(Frame::Hello));
        let bye = r#"{"type":"disconnect","reason":"refresh_requested","debug_info":{"host":"applink-1"}}"#;
        assert_eq!(parse_frame(bye), Ok(Frame::Disconnect { reason: "refresh_requested".into() }));
        assert_eq!(parse_frame(r#"{"type":"disconnect"}"#), Ok(Frame::Disconnect { reason: "unknown".into() }));
        let event = r#"{"envelope_id":"57d6a792","type":"events_api","accepts_response_payload":false,
                        "retry_attempt":2,"retry_reason":"timeout","payload":{"type":"event_callback"}}"#;
        assert_eq!(
            parse_frame(event),
            Ok(Frame::Envelope(Envelope {
                id: "57d6a792".into(),
                kind: "events_api".into(),
                payload: json!({"type": "event_callback"}),
                accepts_response_payload: false,
                retry_attempt: 2,
            }))
        );
        assert_eq!(parse_frame(r#"{"type":"welcome"}"#), Ok(Frame::Other("welcome".into())));
        assert!(parse_frame("nope").unwrap_err().starts_with("not JSON"));
        assert!(parse_frame("[1]").is_err());
        assert!(parse_frame(r#"{"reason":"x"}"#).is_err());
        assert!(parse_frame(r#"{"envelope_id":7,"type":"events_api"}"#).is_err());
        assert!(parse_frame(r#"{"envelope_id":"e"}"#).is_err());
    }

    #[test]
    fn an_ack_names_the_envelope_and_nothing_else() {
        assert_eq!(serde_json::from_str::<Value>(&ack("e-\"1")).unwrap(), json!({"envelope_id": "e-\"1"}));
    }

    #[test]
    fn envelopes_become_events_presses_or_nothing() {
        let callback = json!({"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention"}});
        assert_eq!(plan(&envelope("events_api", callback.clone())), Todo::Event(callback));
        assert!(matches!(plan(&envelope("events_api", json!({"type": "app_rate_limited"}))), Todo::Ignore(_)));

        let press = json!({
            "type": "block_actions", "user": {"id": "U1"},
            "container": {"type": "message", "channel_id": "C1", "message_ts": "1.000002"},
            "message": {"ts": "1.000002", "thread_ts": "1.000001", "text": "t", "blocks": []},
            "actions": [{"action_id": "inquest_approve", "value": "apr-1", "type": "button"}],
        });
        match plan(&envelope("interactive", press)) {
            Todo::Press(p) => {
                assert_eq!((p.slack_user.as_str(), p.approval_id.as_str(), p.approve), ("U1", "apr-1", true));
                assert_eq!((p.channel.as_str(), p.message_ts.as_str()), ("C1", "1.000002"));
            }
            other => panic!("{other:?}"),
        }
        let link = json!({"type": "block_actions", "user": {"id": "U1"},
                          "actions": [{"action_id": "inquest_open", "type": "button"}]});
        assert!(matches!(plan(&envelope("interactive", link)), Todo::Ignore(_)));
        assert!(matches!(plan(&envelope("interactive", json!({"type": "view_submission"}))), Todo::Ignore(_)));
        assert!(matches!(plan(&envelope("slash_commands", json!({"command": "/x"}))), Todo::Ignore(_)));
        assert!(matches!(plan(&envelope("something_new", json!({}))), Todo::Ignore(_)));
    }

    #[test]
    fn urls_are_logged_without_their_ticket() {
        assert_eq!(
            without_query("wss://wss-primary.slack.com/link/?ticket=s3cr3t"),
            "wss://wss-primary.slack.com/link/"
        );
        assert_eq!(without_query("ws://h/link/"), "ws://h/link/");
    }
}
