//! [`SlackSink`]: investigations' threads in Slack.
//!
//! The root message (`chat.postMessage` in the team's channel) shows the status line and
//! is edited in place (`chat.update`); its thread reference is `<channel>:<ts>`. Every
//! post is a reply in the thread (`thread_ts`).
//!
//! Each post is written at most once although Slack has no idempotency key: the post's
//! message carries metadata naming its key, and before writing, the sink reads the
//! thread from the newest reply it knows on (`conversations.replies` with
//! `include_all_metadata`) and adopts a message carrying the key. A root is looked for
//! the same way among the channel's newest messages (`conversations.history`). So a
//! write whose answer was lost, or a process that died between the write and the
//! ledger's record, leads to no second message. What the sink has read is kept per
//! thread, so each look reads only what is new.
//!
//! Pacing: Slack allows about one message per second per channel, so new messages wait
//! for their channel's next slot. Tool calls come in bursts; a tool call arriving while
//! its channel's slot is taken, right after another tool call this sink posted in the
//! same thread (still the thread's newest message), is folded into that message
//! (`chat.update`) instead of waiting, up to [`FOLD_MAX`] calls a message. The folded
//! message's metadata then names every key it carries, and the update that adds a key is
//! the only write of that post: if its answer is lost, the next look finds the key. Edits
//! are not paced by the per-channel limit (Slack limits them per workspace, and its
//! `ratelimited` answers are waited out by the client).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info};

use super::api::{SlackApi, SlackApiError};
use super::{SINK_NAME, SlackConfig, blocks};
use crate::chat::{ChatError, ChatSink, Post, Thread};

/// Slack's limit for posting: about one message per second per channel.
pub const PACE: Duration = Duration::from_secs(1);
/// Tool calls folded into one message at most.
pub const FOLD_MAX: usize = 8;
/// How many of a channel's newest messages are searched for a root already posted.
const ROOT_LOOKBACK: u32 = 100;
/// Threads whose reading is remembered; the least recently used is forgotten first
/// (forgetting costs one full read of that thread, nothing else).
const REMEMBERED_THREADS: usize = 1024;

pub struct SlackSink {
    api: SlackApi,
    channels: BTreeMap<String, String>,
    default_channel: Option<String>,
    pacer: Pacer,
    fold_max: usize,
    threads: Mutex<HashMap<String, Remembered>>,
}

/// A thread's memo and when it was last used.
type Remembered = (Arc<Mutex<Memo>>, Instant);

/// What the sink knows of one thread.
#[derive(Default)]
struct Memo {
    /// Post keys -> the `ts` of the message carrying them.
    keys: HashMap<String, String>,
    /// The newest reply seen; the next read starts there (included, so that an edit of
    /// it, a fold, is seen too).
    newest: Option<String>,
    /// Tool calls this sink posted as the thread's newest message, which the next tool
    /// call may join.
    fold: Option<Fold>,
}

struct Fold {
    ts: String,
    calls: Vec<Post>,
}

impl SlackSink {
    pub fn new(api: SlackApi, config: &SlackConfig) -> SlackSink {
        SlackSink {
            api,
            channels: config.channels.clone(),
            default_channel: config.default_channel.clone(),
            pacer: Pacer::new(config.pace),
            fold_max: FOLD_MAX,
            threads: Mutex::new(HashMap::new()),
        }
    }

    /// Another interval between messages of a channel (tests use a short one).
    pub fn with_pace(mut self, interval: Duration) -> SlackSink {
        self.pacer = Pacer::new(interval);
        self
    }

    /// At most `max` tool calls a message; 1 turns folding off.
    pub fn with_fold_max(mut self, max: usize) -> SlackSink {
        self.fold_max = max.max(1);
        self
    }

    fn channel_for(&self, team: &str) -> Result<&str, ChatError> {
        self.channels
            .get(team)
            .or(self.default_channel.as_ref())
            .map(String::as_str)
            .ok_or_else(|| ChatError::Refused(format!("no Slack channel for team `{team}` and no default channel")))
    }

    async fn memo(&self, thread_ref: &str) -> Arc<Mutex<Memo>> {
        let mut threads = self.threads.lock().await;
        let now = Instant::now();
        if let Some((memo, used)) = threads.get_mut(thread_ref) {
            *used = now;
            return memo.clone();
        }
        if threads.len() >= REMEMBERED_THREADS
            && let Some(oldest) = threads.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            threads.remove(&oldest);
        }
        let memo = Arc::new(Mutex::new(Memo::default()));
        threads.insert(thread_ref.to_string(), (memo.clone(), now));
        memo
    }

    /// Reads the thread's replies from the newest one known on, remembering every key.
    async fn catch_up(&self, channel: &str, root: &str, memo: &mut Memo) -> Result<(), SlackApiError> {
        let oldest = memo.newest.clone();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.api.replies(channel, root, oldest.as_deref(), cursor.as_deref()).await?;
            for message in &page.messages {
                let Some(ts) = message["ts"].as_str().filter(|ts| *ts != root) else { continue };
                for key in blocks::keys_of(message) {
                    memo.keys.insert(key, ts.to_string());
                }
                if memo.newest.as_deref().is_none_or(|n| ts_cmp(ts, n) == Ordering::Greater) {
                    memo.newest = Some(ts.to_string());
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // A fold stays open only while it is the thread's newest message: a person's
        // reply, or anything else, in between starts a new message.
        if memo.fold.as_ref().is_some_and(|f| Some(&f.ts) != memo.newest.as_ref()) {
            memo.fold = None;
        }
        Ok(())
    }

    fn foldable(&self, post: &Post) -> bool {
        self.fold_max > 1 && post.kind == "tool.called" && post.approval.is_none()
    }
}

#[async_trait]
impl ChatSink for SlackSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    async fn open_thread(&self, thread: &Thread, status: &str) -> Result<String, ChatError> {
        let channel = self.channel_for(&thread.team)?;
        // A root posted before a lost answer or a crash is among the channel's newest
        // messages; adopt it (and bring its status line up to date).
        let recent = self.api.history(channel, ROOT_LOOKBACK).await?;
        let found = recent.messages.iter().find(|m| blocks::investigation_of(m) == Some(&thread.investigation_id));
        if let Some(ts) = found.and_then(|m| m["ts"].as_str()) {
            let thread_ref = format!("{channel}:{ts}");
            info!(investigation = %thread.investigation_id, thread = %thread_ref, "adopting a Slack root posted before");
            if found.and_then(|m| m["text"].as_str()) != Some(status) {
                self.set_status(&thread_ref, thread, status).await?;
            }
            return Ok(thread_ref);
        }
        let mut message = blocks::root(thread, status);
        message["channel"] = channel.into();
        self.pacer.wait(channel).await;
        let ts = self.api.post_message(&message).await?;
        Ok(format!("{channel}:{ts}"))
    }

    async fn post(&self, thread_ref: &str, thread: &Thread, post: &Post) -> Result<String, ChatError> {
        let (channel, root) = split(thread_ref)?;
        let memo = self.memo(thread_ref).await;
        let mut guard = memo.lock().await;
        let memo: &mut Memo = &mut guard;
        self.catch_up(channel, root, memo).await?;
        if let Some(ts) = memo.keys.get(&post.key) {
            debug!(key = %post.key, %ts, "the post is in the thread already; adopting it");
            return Ok(ts.clone());
        }
        let foldable = self.foldable(post);
        if foldable
            && self.pacer.busy(channel)
            && let Some(fold) = memo.fold.as_mut().filter(|f| f.calls.len() < self.fold_max)
        {
            let mut calls: Vec<&Post> = fold.calls.iter().collect();
            calls.push(post);
            let mut message = blocks::tool_calls(thread, &calls);
            message["channel"] = channel.into();
            message["ts"] = fold.ts.as_str().into();
            self.api.update(&message).await?;
            fold.calls.push(post.clone());
            let ts = fold.ts.clone();
            let calls = fold.calls.len();
            memo.keys.insert(post.key.clone(), ts.clone());
            debug!(key = %post.key, %ts, calls, "tool call folded into the message before");
            return Ok(ts);
        }
        let mut message = blocks::post(thread, post);
        message["channel"] = channel.into();
        message["thread_ts"] = root.into();
        self.pacer.wait(channel).await;
        let ts = self.api.post_message(&message).await?;
        memo.keys.insert(post.key.clone(), ts.clone());
        memo.newest = Some(ts.clone());
        memo.fold = foldable.then(|| Fold { ts: ts.clone(), calls: vec![post.clone()] });
        Ok(ts)
    }

    async fn set_status(&self, thread_ref: &str, thread: &Thread, status: &str) -> Result<(), ChatError> {
        let (channel, root) = split(thread_ref)?;
        let mut message = blocks::root(thread, status);
        message["channel"] = channel.into();
        message["ts"] = root.into();
        self.api.update(&message).await?;
        Ok(())
    }
}

/// `<channel>:<ts>`.
fn split(thread_ref: &str) -> Result<(&str, &str), ChatError> {
    thread_ref
        .split_once(':')
        .filter(|(c, t)| !c.is_empty() && !t.is_empty())
        .ok_or_else(|| ChatError::Refused(format!("`{thread_ref}` is not a Slack thread (<channel>:<ts>)")))
}

/// Slack's `ts` values (`<seconds>.<micros>`) in time order.
pub fn ts_cmp(a: &str, b: &str) -> Ordering {
    fn parts(ts: &str) -> (u64, u64) {
        let (s, f) = ts.split_once('.').unwrap_or((ts, "0"));
        (s.parse().unwrap_or(0), f.parse().unwrap_or(0))
    }
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}

/// One message per `interval` per channel: each new message takes its channel's next
/// slot, in the order they asked.
struct Pacer {
    interval: Duration,
    next: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    fn new(interval: Duration) -> Pacer {
        Pacer { interval, next: std::sync::Mutex::new(HashMap::new()) }
    }

    /// Whether a message now would have to wait.
    fn busy(&self, channel: &str) -> bool {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        next.get(channel).is_some_and(|slot| *slot > Instant::now())
    }

    /// Waits for the channel's next slot, and takes it.
    async fn wait(&self, channel: &str) {
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = next.get(channel).copied().filter(|s| *s > now).unwrap_or(now);
            next.insert(channel.to_string(), slot + self.interval);
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_order_by_time_not_by_text() {
        assert_eq!(ts_cmp("1503435956.000247", "1503435956.000248"), Ordering::Less);
        assert_eq!(ts_cmp("999999999.000001", "1000000000.000001"), Ordering::Less);
        assert_eq!(ts_cmp("1.5", "1.5"), Ordering::Equal);
    }

    #[test]
    fn thread_references_are_channel_and_ts() {
        assert_eq!(split("C01:1503435956.000247").unwrap(), ("C01", "1503435956.000247"));
        assert!(matches!(split("C01"), Err(ChatError::Refused(_))));
        assert!(matches!(split(":1.2"), Err(ChatError::Refused(_))));
    }

    #[tokio::test]
    async fn the_pacer_gives_each_channel_one_slot_per_interval() {
        let interval = Duration::from_millis(60);
        let pacer = Pacer::new(interval);
        let start = Instant::now();
        pacer.wait("C1").await;
        assert!(pacer.busy("C1") && !pacer.busy("C2"));
        pacer.wait("C2").await;
        assert!(start.elapsed() < interval, "channels do not wait for each other");
        pacer.wait("C1").await;
        pacer.wait("C1").await;
        assert!(start.elapsed() >= 2 * interval, "{:?}", start.elapsed());
        tokio::time::sleep(interval).await;
        assert!(!pacer.busy("C1"));
    }
}
