//! SQLite batches on a connection of our own, in one handoff.
//!
//! Through sqlx every statement is a round trip between the writer task and sqlx's
//! SQLite thread, and rows travel as one JSON array that SQLite parses again for every
//! column it extracts. For batches of small deliveries that cost more than storing
//! them: profiled at 1 alert per delivery, half of the SQLite thread's time went to
//! JSON and the machine stood half idle between round trips. Here the whole batch
//! (reads, the plan, the writes and the commit) runs on one thread that owns a
//! rusqlite connection, with cached prepared statements binding each row's fields.
//!
//! The decisions are still `Plan`'s, so both paths store the same rows. The caller
//! holds sqlx's only write connection while a batch runs (see `SqlStore::ingest_batch`),
//! so within the process this connection and sqlx's never wait for each other's lock;
//! another process on the same file is waited for by SQLite's busy timeout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{error, warn};

use super::plan::{Latest, Locked, Plan, Writes};
use crate::engine::State;
use crate::intake::grouping::EpisodeView;
use crate::store::{IngestOutcome, IngestPolicy, IngestRequest, Result, StoreError};

/// What a batch answers: the outcomes in delivery order and the investigations whose
/// logs it touched.
type Answer = Result<(Vec<IngestOutcome>, Vec<String>)>;

struct Job {
    batch: Vec<IngestRequest>,
    policy: IngestPolicy,
    now_ms: i64,
    reply: oneshot::Sender<Answer>,
}

/// Handle to the ingest thread; the thread ends when the handle is dropped.
pub(crate) struct NativeIngest {
    tx: mpsc::Sender<Job>,
}

impl NativeIngest {
    /// Opens a second connection to the (already migrated) database at `path` and
    /// starts the thread that owns it.
    pub fn open(path: &Path) -> Result<NativeIngest> {
        let conn = Connection::open(path)?;
        // The same settings as sqlx's connections: FULL so that a commit survives a
        // power cut, not just a crash.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // 64 MiB of page cache (the default is 2 MiB): the dedup index is keyed by
        // hashes, so a batch touches pages all over it.
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.set_prepared_statement_cache_capacity(32);
        // Checkpoints run on a thread of their own (`checkpoints`), not inside a
        // batch's commit, where copying the WAL back stalled a batch every ~1,000 pages.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Checkpointer::start(path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("sqlite-ingest".into())
            .spawn(move || {
                let mut conn = conn;
                // Dropped with this thread, which ends the checkpointer after a last checkpoint.
                let _checkpointer = checkpointer;
                for job in rx {
                    let answer = store_batch(&mut conn, &job.batch, &job.policy, job.now_ms);
                    if let Err(e) = &answer {
                        error!(error = %e, batch = job.batch.len(), "storing a batch failed");
                    }
                    // The caller may have gone; the batch is stored (or not) either way.
                    let _ = job.reply.send(answer);
                }
            })
            .map_err(|e| StoreError::Sqlite(format!("starting the ingest thread: {e}")))?;
        Ok(NativeIngest { tx })
    }

    /// Stores `batch` in one transaction, returning once it is committed.
    pub async fn ingest(&self, batch: Vec<IngestRequest>, policy: IngestPolicy, now_ms: i64) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { batch, policy, now_ms, reply })
            .map_err(|_| StoreError::Sqlite("the ingest thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Sqlite("the ingest thread stopped during a batch".into()))?
    }
}

/// Copies the WAL back into the database every [`CHECKPOINT_EVERY`], on its own
/// connection. PASSIVE checkpoints take no lock a writer needs, so batches commit
/// meanwhile; the WAL is reused from its start once a checkpoint has caught up.
struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // A WAL that grew during a burst is cut back to this once checkpointed.
        conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                loop {
                    let last =
                        matches!(stopped.recv_timeout(CHECKPOINT_EVERY), Err(mpsc::RecvTimeoutError::Disconnected));
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        warn!(error = %e, "WAL checkpoint failed; the next one retries");
                    }
                    if last {
                        break;
                    }
                }
            })
            .map_err(|e| StoreError::Sqlite(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer { _stop: stop })
    }
}

fn store_batch(conn: &mut Connection, batch: &[IngestRequest], policy: &IngestPolicy, now_ms: i64) -> Answer {
    // IMMEDIATE: take the write lock before the reads, so what they see stays true.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored = stored_alerts(&tx, batch)?;
    let latest = latest_episodes(&tx, batch)?;
    let mut plan = Plan::new(now_ms, policy, stored, latest);
    for req in batch {
        plan.add(req)?;
    }
    let locked = investigations(&tx, plan.investigations_to_lock())?;
    let (outcomes, writes, touched) = plan.finish(&locked, policy)?;
    write(&tx, &writes, now_ms)?;
    tx.commit()?;
    Ok((outcomes, touched))
}

/// Alerts already stored under the batch's dedup keys: dedup key -> (alert id, episode id).
fn stored_alerts(conn: &Connection, batch: &[IngestRequest]) -> Result<HashMap<String, (String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT id, episode_id FROM alerts WHERE dedup_key = ?1")?;
    let mut stored = HashMap::new();
    for key in batch.iter().flat_map(|r| &r.delivery.alerts).map(|a| a.dedup_key.as_str()) {
        if stored.contains_key(key) {
            continue;
        }
        if let Some(ids) = stmt.query_row([key], |r| Ok((r.get(0)?, r.get(1)?))).optional()? {
            stored.insert(key.to_string(), ids);
        }
    }
    Ok(stored)
}

/// The latest episode of each of the batch's episode keys that has one.
fn latest_episodes(conn: &Connection, batch: &[IngestRequest]) -> Result<HashMap<String, Latest>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.last_alert_at, e.investigation_id, i.state FROM episodes e \
         LEFT JOIN investigations i ON i.id = e.investigation_id \
         WHERE e.episode_key = ?1 ORDER BY e.opened_at DESC, e.id DESC LIMIT 1",
    )?;
    let mut latest = HashMap::new();
    for key in batch.iter().map(|r| r.delivery.episode_key.as_str()) {
        if latest.contains_key(key) {
            continue;
        }
        let row = stmt
            .query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        if let Some((id, last_alert_at_ms, investigation, state)) = row {
            let view =
                EpisodeView { id, last_alert_at_ms, investigation_state: state.as_deref().and_then(State::parse) };
            latest.insert(key.to_string(), Latest { view, investigation });
        }
    }
    Ok(latest)
}

/// State and next sequence number of the investigations the batch gives events (the
/// transaction's write lock keeps them as read).
fn investigations(conn: &Connection, ids: Vec<&str>) -> Result<Locked> {
    let mut stmt = conn.prepare_cached("SELECT state, next_seq FROM investigations WHERE id = ?1")?;
    let mut locked = Locked::new();
    for id in ids {
        let row = stmt.query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).optional()?;
        if let Some((state, next_seq)) = row {
            let state = State::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("unknown state `{state}`")))?;
            locked.insert(id.to_string(), (state, next_seq));
        }
    }
    Ok(locked)
}

/// Writes the batch, parents before children, each row through a cached statement
/// whose `:name` parameters are the row's fields (and `:now`, the batch's time).
fn write(conn: &Connection, w: &Writes<'_>, now_ms: i64) -> Result<()> {
    rows(
        conn,
        "INSERT INTO deliveries (id, source, body, received_at) VALUES (:id, :source, :body, :now)",
        &w.deliveries,
        now_ms,
    )?;
    rows(
        conn,
        "INSERT INTO episodes (id, episode_key, source, title, team, service, opened_at, last_alert_at, \
         resolved_at, alert_count, investigation_id) VALUES (:id, :episode_key, :source, :title, :team, :service, \
         :now, :now, :resolved_at, :alert_count, :investigation_id)",
        &w.episodes,
        now_ms,
    )?;
    rows(
        conn,
        "INSERT INTO investigations (id, episode_id, title, team, service, state, created_at, updated_at, \
         finished_at, resolved_at, next_seq) VALUES (:id, :episode_id, :title, :team, :service, :state, :now, :now, \
         :finished_at, :resolved_at, :next_seq)",
        &w.investigations,
        now_ms,
    )?;
    rows(
        conn,
        "INSERT INTO alerts (id, dedup_key, episode_id, delivery_id, source, status, fingerprint, labels, \
         annotations, starts_at, ends_at, generator_url, raw, received_at) VALUES (:id, :dedup_key, :episode_id, \
         :delivery_id, :source, :status, :fingerprint, :labels, :annotations, :starts_at, :ends_at, :generator_url, \
         :raw, :now)",
        &w.alerts,
        now_ms,
    )?;
    rows(
        conn,
        "UPDATE episodes SET alert_count = alert_count + :added, last_alert_at = :now, resolved_at = :resolved_at \
         WHERE id = :id",
        &w.episode_updates,
        now_ms,
    )?;
    rows(
        conn,
        "UPDATE investigations SET state = :state, next_seq = next_seq + :events, updated_at = :now, \
         resolved_at = COALESCE(:resolved_at, resolved_at), finished_at = COALESCE(:finished_at, finished_at) \
         WHERE id = :id",
        &w.investigation_updates,
        now_ms,
    )?;
    rows(
        conn,
        "INSERT INTO investigation_events (investigation_id, seq, kind, data, at) \
         VALUES (:investigation_id, :seq, :kind, :data, :now)",
        &w.events,
        now_ms,
    )
}

fn rows<T: Serialize>(conn: &Connection, sql: &str, rows: &[T], now_ms: i64) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(sql)?;
    for row in rows {
        let mut params = serde_rusqlite::to_params_named(row)?;
        params.push((":now".to_string(), Box::new(now_ms)));
        stmt.execute(&*params.to_slice())?;
    }
    Ok(())
}
