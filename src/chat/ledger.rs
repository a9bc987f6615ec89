//! Where each medium's threads stand, over the shared [`SqlStore`]: the thread's
//! reference at the medium, the last event posted (posts go in log order, so one number
//! says it), the status line shown, and a claim so that one relay at a time posts a
//! thread. Decides nothing: the relay does.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;

use crate::store::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// A claimed thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRow {
    /// The medium's reference, once the thread was opened.
    pub thread_ref: Option<String>,
    /// The last event posted (or passed over: bookkeeping is not posted).
    pub posted_seq: i64,
    /// The status line the thread shows.
    pub status: String,
}

#[derive(Clone)]
pub struct Ledger {
    store: Arc<SqlStore>,
}

impl Ledger {
    pub fn new(store: Arc<SqlStore>) -> Ledger {
        Ledger { store }
    }

    /// Investigations changed since `since_ms` whose log goes further than `sink` posted,
    /// least recently changed first, at most `limit`.
    pub async fn behind(&self, sink: &str, since_ms: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT i.id FROM investigations i \
             LEFT JOIN chat_threads t ON t.sink = $1 AND t.investigation_id = i.id \
             WHERE i.updated_at >= $2 AND i.next_seq - 1 > COALESCE(t.posted_seq, 0) \
             ORDER BY i.updated_at LIMIT $3",
        )
        .bind(sink)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.store.read)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>(0).map_err(LedgerError::from)).collect()
    }

    /// Claims the thread of `investigation_id` at `sink` for `worker` until `now + lease`,
    /// unless another worker holds it; the thread as it stands.
    pub async fn claim(
        &self,
        sink: &str,
        investigation_id: &str,
        worker: &str,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Option<ThreadRow>> {
        sqlx::query(
            "INSERT INTO chat_threads (sink, investigation_id, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sink, investigation_id) DO NOTHING",
        )
        .bind(sink)
        .bind(investigation_id)
        .bind(now_ms)
        .execute(&self.store.write)
        .await?;
        let until = now_ms + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let row = sqlx::query(
            "UPDATE chat_threads SET claimed_by = $3, claimed_until = $4 \
             WHERE sink = $1 AND investigation_id = $2 \
             AND (claimed_until IS NULL OR claimed_until < $5 OR claimed_by = $3) \
             RETURNING thread_ref, posted_seq, status",
        )
        .bind(sink)
        .bind(investigation_id)
        .bind(worker)
        .bind(until)
        .bind(now_ms)
        .fetch_optional(&self.store.write)
        .await?;
        row.map(|r| {
            Ok(ThreadRow {
                thread_ref: r.try_get("thread_ref")?,
                posted_seq: r.try_get("posted_seq")?,
                status: r.try_get("status")?,
            })
        })
        .transpose()
    }

    /// Lets go of a claim.
    pub async fn release(&self, sink: &str, investigation_id: &str, worker: &str) -> Result<()> {
        sqlx::query(
            "UPDATE chat_threads SET claimed_by = NULL, claimed_until = NULL \
             WHERE sink = $1 AND investigation_id = $2 AND claimed_by = $3",
        )
        .bind(sink)
        .bind(investigation_id)
        .bind(worker)
        .execute(&self.store.write)
        .await?;
        Ok(())
    }

    pub async fn set_thread(&self, sink: &str, investigation_id: &str, thread_ref: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE chat_threads SET thread_ref = $3, updated_at = $4 WHERE sink = $1 AND investigation_id = $2",
        )
        .bind(sink)
        .bind(investigation_id)
        .bind(thread_ref)
        .bind(now_ms)
        .execute(&self.store.write)
        .await?;
        Ok(())
    }

    /// Records that event `seq` was posted as `remote_id` (`None`: passed over), in one
    /// transaction with the thread's progress.
    pub async fn posted(
        &self,
        sink: &str,
        investigation_id: &str,
        seq: i64,
        remote_id: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.store.write.begin().await?;
        if let Some(remote) = remote_id {
            sqlx::query(
                "INSERT INTO chat_posts (sink, investigation_id, seq, remote_id, posted_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (sink, investigation_id, seq) DO NOTHING",
            )
            .bind(sink)
            .bind(investigation_id)
            .bind(seq)
            .bind(remote)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE chat_threads SET posted_seq = $3, updated_at = $4 \
             WHERE sink = $1 AND investigation_id = $2 AND posted_seq < $3",
        )
        .bind(sink)
        .bind(investigation_id)
        .bind(seq)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_status(&self, sink: &str, investigation_id: &str, status: &str, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE chat_threads SET status = $3, updated_at = $4 WHERE sink = $1 AND investigation_id = $2")
            .bind(sink)
            .bind(investigation_id)
            .bind(status)
            .bind(now_ms)
            .execute(&self.store.write)
            .await?;
        Ok(())
    }

    /// The posts made for an investigation at `sink`: (seq, the medium's id), in order.
    pub async fn posts(&self, sink: &str, investigation_id: &str) -> Result<Vec<(i64, String)>> {
        let rows =
            sqlx::query("SELECT seq, remote_id FROM chat_posts WHERE sink = $1 AND investigation_id = $2 ORDER BY seq")
                .bind(sink)
                .bind(investigation_id)
                .fetch_all(&self.store.read)
                .await?;
        rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("remote_id")?))).collect()
    }

    /// The thread's reference at `sink`, if it was opened.
    pub async fn thread_ref(&self, sink: &str, investigation_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT thread_ref FROM chat_threads WHERE sink = $1 AND investigation_id = $2")
            .bind(sink)
            .bind(investigation_id)
            .fetch_optional(&self.store.read)
            .await?;
        Ok(row.and_then(|r| r.try_get::<Option<String>, _>(0).ok().flatten()))
    }

    /// The investigation whose thread at `sink` is `thread_ref` (to route a question
    /// asked in the thread).
    pub async fn investigation_of(&self, sink: &str, thread_ref: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT investigation_id FROM chat_threads WHERE sink = $1 AND thread_ref = $2")
            .bind(sink)
            .bind(thread_ref)
            .fetch_optional(&self.store.read)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }
}
