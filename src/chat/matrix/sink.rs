//! The sink: sends to the homeserver (idempotent txnIds, retries, the root's status).

use super::*;

/// Posts threads to a Matrix homeserver as the bot.
pub struct MatrixSink {
    pub(super) http: reqwest::Client,
    /// The homeserver, without a trailing `/`.
    pub(super) base: String,
    pub(super) token: SecretString,
    pub(super) user_id: String,
    pub(super) rooms: BTreeMap<String, String>,
    pub(super) default_room: Option<String>,
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
    pub(super) fn room_of(&self, team: &str) -> Result<&str, ChatError> {
        self.rooms
            .get(team)
            .or(self.default_room.as_ref())
            .map(String::as_str)
            .ok_or_else(|| ChatError::Refused(format!("no Matrix room for team `{team}` and no default_room")))
    }

    pub(super) fn all_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.rooms.values().chain(&self.default_room).cloned().collect();
        rooms.sort();
        rooms.dedup();
        rooms
    }

    pub(super) fn cursor_path(&self) -> String {
        format!("/_matrix/client/v3/user/{}/account_data/{CURSOR_TYPE}", encode(&self.user_id))
    }

    /// Sends `content` as `m.room.message` under `txn`; the event's id.
    pub(super) async fn send(&self, room_id: &str, txn: &str, content: &Value) -> Result<String, ChatError> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room_id), encode(txn));
        let answer = self.call(Method::PUT, &path, &[], Some(content), REQUEST_TIMEOUT).await?;
        answer["event_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ChatError::Unavailable(format!("PUT {path}: no event_id in the answer")))
    }

    /// `/messages` back from `from` to `to`, oldest first.
    pub(super) async fn read_gap(&self, room_id: &str, from: &str, to: &str) -> Result<Vec<Value>, ChatError> {
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
    pub(super) async fn call(
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

pub(super) fn parse_ref(thread_ref: &str) -> Result<ThreadRef, ChatError> {
    ThreadRef::parse(thread_ref)
        .ok_or_else(|| ChatError::Refused(format!("`{thread_ref}` is not a Matrix thread (<room id>/<event id>)")))
}

/// What the root shows now: its latest edit (bundled by the homeserver), else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shown {
    pub(super) edit_id: Option<String>,
    pub(super) body: String,
}

impl Shown {
    pub(super) fn of(root: &Value) -> Shown {
        let edit = &root["unsigned"]["m.relations"]["m.replace"];
        match (edit["event_id"].as_str(), edit["content"]["m.new_content"]["body"].as_str()) {
            (Some(id), Some(body)) => Shown { edit_id: Some(id.to_string()), body: body.to_string() },
            _ => Shown { edit_id: None, body: root["content"]["body"].as_str().unwrap_or_default().to_string() },
        }
    }
}

/// What to do with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Done,
    /// Busy or failing: try again, after `after` if the homeserver said.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Refused for good, with Matrix's errcode.
    Refused(String),
}

pub(super) fn judge(status: u16, answer: &Value, retry_after: Option<Duration>) -> Verdict {
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

pub(super) fn backoff(attempt: u32) -> Duration {
    BACKOFF * 2u32.saturating_pow(attempt)
}

/// A txnId for the message `kind` identified by `parts`: the same parts, the same id.
pub(super) fn txn_id(kind: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    for part in parts {
        hash.update([0u8]);
        hash.update(part.as_bytes());
    }
    format!("inquest.{kind}.{}", hex::encode(&hash.finalize()[..16]))
}
