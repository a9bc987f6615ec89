//! Follows investigations' logs and posts what is new to each medium, in order: opens
//! the thread on its first event, posts each event the renderer has a line for,
//! records each post before the next, and edits the status line when it changed. One
//! relay at a time posts a thread (a claim with a lease), so replicas share the work.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ledger::{Ledger, LedgerError};
use super::{ChatError, ChatSink, Thread, render};
use crate::clock::Clock;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a claim on a thread holds; a relay that died loses it after this.
const LEASE: Duration = Duration::from_secs(60);
/// Investigations changed longer ago than this are no longer followed.
const WINDOW: chrono::Duration = chrono::Duration::days(7);
/// Threads looked at per round, per medium.
const ROUND: i64 = 100;
/// Events read per look at one thread.
const PAGE: i64 = 500;
/// Posts made under one claim: well within its lease even when a medium paces posts
/// at one a second, so no other relay takes the thread over while this one posts. The
/// rest waits for the next round.
const POSTS_PER_CLAIM: usize = 30;

pub struct Relay {
    pub sinks: Vec<Arc<dyn ChatSink>>,
    pub ledger: Ledger,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// This process, as claims name it.
    pub worker: String,
    /// Where the web thread is (`<this>/investigations/<id>`).
    pub web_base: String,
    /// Longest wait between rounds when nothing wakes the relay.
    pub poll: Duration,
}

impl Relay {
    /// Posts until `stop`, woken whenever a log grows in this process.
    pub async fn run(self, stop: CancellationToken) {
        let mut grew = self.store.subscribe();
        loop {
            for sink in &self.sinks {
                if let Err(e) = self.round(&**sink).await {
                    warn!(sink = sink.name(), error = %e, "posting to chat failed; trying again");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = grew.recv() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Posts everything new of every followed investigation to `sink`; how many threads
    /// were brought up to date.
    pub async fn round(&self, sink: &dyn ChatSink) -> Result<usize, RelayError> {
        let since = (self.clock.now() - WINDOW).timestamp_millis();
        let mut done = 0;
        for id in self.ledger.behind(sink.name(), since, ROUND).await? {
            match self.bring_up_to_date(sink, &id).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(e) => warn!(sink = sink.name(), investigation = %id, error = %e, "a chat thread fell behind"),
            }
        }
        Ok(done)
    }

    /// Posts what `sink` has not shown of investigation `id`; `false` if another relay
    /// holds the thread.
    pub async fn bring_up_to_date(&self, sink: &dyn ChatSink, id: &str) -> Result<bool, RelayError> {
        let name = sink.name();
        let Some(mut row) = self.ledger.claim(name, id, &self.worker, self.now(), LEASE).await? else {
            return Ok(false);
        };
        let result = self.post_all(sink, id, &mut row).await;
        if let Err(e) = self.ledger.release(name, id, &self.worker).await {
            debug!(sink = name, investigation = id, error = %e, "releasing a thread failed; its lease ends it");
        }
        result.map(|()| true)
    }

    async fn post_all(
        &self,
        sink: &dyn ChatSink,
        id: &str,
        row: &mut super::ledger::ThreadRow,
    ) -> Result<(), RelayError> {
        let name = sink.name();
        let Some(inv) = self.store.investigation(id).await? else { return Ok(()) };
        let thread = Thread::of(&inv, &self.web_base);
        let status = render::status_line(&inv);
        let thread_ref = match &row.thread_ref {
            Some(r) => r.clone(),
            None => {
                let r = sink.open_thread(&thread, &status).await?;
                self.ledger.set_thread(name, id, &r, self.now()).await?;
                self.ledger.set_status(name, id, &status, self.now()).await?;
                row.status = status.clone();
                info!(sink = name, investigation = id, thread = %r, "chat thread opened");
                r
            }
        };
        let mut posts = 0;
        loop {
            let events = self.store.events(id, row.posted_seq, PAGE).await?;
            if events.is_empty() {
                break;
            }
            for event in &events {
                if posts == POSTS_PER_CLAIM {
                    debug!(sink = name, investigation = id, "more to post; the next round goes on");
                    return Ok(());
                }
                let remote = match render::post(id, event) {
                    Some(post) => {
                        posts += 1;
                        Some(sink.post(&thread_ref, &thread, &post).await?)
                    }
                    None => None,
                };
                self.ledger.posted(name, id, event.seq, remote.as_deref(), self.now()).await?;
                row.posted_seq = event.seq;
            }
        }
        if row.status != status {
            sink.set_status(&thread_ref, &thread, &status).await?;
            self.ledger.set_status(name, id, &status, self.now()).await?;
            row.status = status;
        }
        Ok(())
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }
}
