//! Chat threads people follow: every investigation's story, posted from its event log
//! to each configured medium (Slack, Matrix; the web thread reads the log itself), in
//! order, each event once.
//!
//! - [`render`]: what an event says in a thread (pure);
//! - [`ledger`]: per medium and investigation, the thread and how far it was posted;
//! - [`relay`]: follows the logs and posts what is new, through a [`ChatSink`].
//!
//! Nothing is posted twice after a restart: the ledger records each post with the
//! event's place in the log, in order, and a sink makes its send idempotent on the
//! post's key (`<investigation>/<seq>`) where its medium allows, so a crash between the
//! send and the record sends nothing new.

pub mod ledger;
pub mod matrix;
pub mod relay;
pub mod render;
pub mod slack;

use async_trait::async_trait;

pub use render::{ApprovalCard, Post, Thread};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Unreachable, rate limited, a 5xx: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// Refused for good (a bad token, a channel the bot is not in).
    #[error("refused: {0}")]
    Refused(String),
}

/// One chat medium.
#[async_trait]
pub trait ChatSink: Send + Sync {
    /// The ledger's name for it (`slack`, `matrix`).
    fn name(&self) -> &str;

    /// Opens the investigation's thread (its root message carries `status`); the
    /// medium's reference to it, which the ledger keeps.
    async fn open_thread(&self, thread: &Thread, status: &str) -> Result<String, ChatError>;

    /// Posts `post` in the thread, at most once per `post.key` where the medium allows;
    /// the medium's id of the post.
    async fn post(&self, thread_ref: &str, thread: &Thread, post: &Post) -> Result<String, ChatError>;

    /// Shows `status` as the thread's status line (an edit of the root message where
    /// the medium can edit).
    async fn set_status(&self, thread_ref: &str, thread: &Thread, status: &str) -> Result<(), ChatError>;
}
