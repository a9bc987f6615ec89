//! [`SqlStore`]: the [`Store`] over sqlx's `Any` driver, for SQLite and PostgreSQL.
//!
//! Queries are written once in the SQL both engines accept (`$1` placeholders, integer
//! milliseconds, JSON as text). Where they differ, [`Backend`] chooses:
//! - SQLite: one writer connection (writes are serialized anyway) beside a pool of
//!   readers; write transactions start with `BEGIN IMMEDIATE` so a second process
//!   waits for the lock instead of failing half-way; WAL with `synchronous=FULL`.
//!   Intake batches run on a rusqlite connection of their own (`ingest::native`)
//!   while holding sqlx's writer, so the two never contend.
//! - PostgreSQL: one pool; claims lock candidate rows `FOR UPDATE SKIP LOCKED` under
//!   a transaction-scoped advisory lock so the running caps hold across replicas.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::broadcast;

use super::{
    Asked, Claim, IngestOutcome, IngestPolicy, IngestRequest, InvestigationFilter, InvestigationSummary, Lease, Result,
    Store, StoreError, StoredAlert, StoredEvent, Transition, from_ms, to_ms,
};
use crate::engine::{Command, EventBody, Input, Limits, State, quota, step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    pub(crate) backend: Backend,
    pub(crate) write: AnyPool,
    pub(crate) read: AnyPool,
    /// SQLite only: the connection intake batches run on.
    pub(crate) native: Option<super::ingest::NativeIngest>,
    events_tx: broadcast::Sender<String>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl SqlStore {
    /// Opens (creating if needed) and migrates the store at `url`.
    pub async fn open(url: &str, max_connections: u32) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let open_err = |reason: String| StoreError::Open { url: crate::config::redact_url(url), reason };
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let path = path.split('?').next().unwrap_or(path);
            if path == ":memory:" || path.is_empty() {
                // Every connection would see a database of its own, and a restart none.
                return Err(open_err(
                    "an in-memory SQLite store would lose every alert on restart; give a file".into(),
                ));
            }
            let parent = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(parent) = parent {
                std::fs::create_dir_all(parent).map_err(|e| open_err(format!("creating {}: {e}", parent.display())))?;
            }
            let url = format!("sqlite://{path}?mode=rwc");
            let sqlite_pool = |n: u32| {
                AnyPoolOptions::new()
                    .max_connections(n)
                    .acquire_timeout(Duration::from_secs(30))
                    // A file on this machine does not go stale like a network
                    // connection; the check would cost a round trip to sqlx's SQLite
                    // thread on every acquire.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // FULL: a commit survives a power cut, not just a crash.
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA busy_timeout = 30000",
                                "PRAGMA foreign_keys = ON",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
            };
            let write = sqlite_pool(1).await.map_err(|e| open_err(e.to_string()))?;
            SQLITE_MIGRATIONS.run(&write).await?;
            let read = sqlite_pool(max_connections.max(2)).await.map_err(|e| open_err(e.to_string()))?;
            let native = super::ingest::NativeIngest::open(Path::new(path))?;
            let mut store = SqlStore::new(Backend::Sqlite, write, read);
            store.native = Some(native);
            Ok(store)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // An answered alert must survive the server's crash: never relax this.
                        sqlx::query("SET synchronous_commit = on").execute(&mut *conn).await?;
                        // A replica frozen inside a transaction must not hold the claim
                        // lock (and with it every other replica) for longer than this.
                        sqlx::query("SET idle_in_transaction_session_timeout = '10s'").execute(&mut *conn).await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await
                .map_err(|e| open_err(e.to_string()))?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Ok(SqlStore::new(Backend::Postgres, pool.clone(), pool))
        } else {
            Err(open_err("the URL must start with sqlite: or postgres://".into()))
        }
    }

    fn new(backend: Backend, write: AnyPool, read: AnyPool) -> SqlStore {
        let (events_tx, _) = broadcast::channel(1024);
        SqlStore { backend, write, read, native: None, events_tx }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A write transaction that holds the database's write lock from its first statement.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    pub(crate) fn notify(&self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            // No receivers is fine: nobody is watching.
            let _ = self.events_tx.send(id);
        }
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Appends events to an investigation's log inside `tx`, allocating their sequence
/// numbers from the investigation row (which the update also locks).
pub(super) async fn append_events(
    tx: &mut Transaction<'static, Any>,
    investigation_id: &str,
    events: &[EventBody],
    now_ms: i64,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len() as i64;
    let row = sqlx::query(
        "UPDATE investigations SET next_seq = next_seq + $2, updated_at = $3 WHERE id = $1 RETURNING next_seq",
    )
    .bind(investigation_id)
    .bind(n)
    .bind(now_ms)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("investigation {investigation_id} vanished")))?;
    let first = row.try_get::<i64, _>(0)? - n;
    insert_events(tx, investigation_id, first, events, now_ms).await
}

/// Like [`append_events`], for writers outside the engine (the PR gate): appends
/// nothing, and answers `false`, when the investigation is not stored here.
pub(crate) async fn append_if_present(
    tx: &mut Transaction<'static, Any>,
    investigation_id: &str,
    events: &[EventBody],
    now_ms: i64,
) -> Result<bool> {
    let exists = sqlx::query("SELECT 1 FROM investigations WHERE id = $1")
        .bind(investigation_id)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if exists {
        append_events(tx, investigation_id, events, now_ms).await?;
    }
    Ok(exists)
}

async fn insert_events(
    tx: &mut Transaction<'static, Any>,
    investigation_id: &str,
    first_seq: i64,
    events: &[EventBody],
    now_ms: i64,
) -> Result<()> {
    for (i, e) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO investigation_events (investigation_id, seq, kind, data, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(investigation_id)
        .bind(first_seq + i as i64)
        .bind(e.kind.as_str())
        .bind(e.data.to_string())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

const SUMMARY_COLUMNS: &str = "i.id, i.episode_id, i.title, i.team, i.service, i.state, i.created_at, i.updated_at, \
     i.started_at, i.finished_at, i.resolved_at, i.attempts, i.lease_owner, i.lease_expires_at, i.summary, e.alert_count";

fn summary_by_id_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT {SUMMARY_COLUMNS} FROM investigations i JOIN episodes e ON e.id = i.episode_id WHERE i.id = $1")
    })
}

fn summary_from_row(row: &AnyRow) -> Result<InvestigationSummary> {
    let state: String = row.try_get("state")?;
    let opt_time =
        |name: &str| -> Result<Option<DateTime<Utc>>> { Ok(row.try_get::<Option<i64>, _>(name)?.map(from_ms)) };
    Ok(InvestigationSummary {
        id: row.try_get("id")?,
        episode_id: row.try_get("episode_id")?,
        title: row.try_get("title")?,
        team: row.try_get("team")?,
        service: row.try_get("service")?,
        state: State::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("unknown state `{state}`")))?,
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        started_at: opt_time("started_at")?,
        finished_at: opt_time("finished_at")?,
        resolved_at: opt_time("resolved_at")?,
        attempts: row.try_get("attempts")?,
        worker: row.try_get("lease_owner")?,
        summary: row.try_get("summary")?,
        alert_count: row.try_get("alert_count")?,
    })
}

fn json_map(text: &str) -> Result<std::collections::BTreeMap<String, String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))
}

#[async_trait]
impl Store for SqlStore {
    async fn ingest(
        &self,
        batch: Vec<IngestRequest>,
        policy: &IngestPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<IngestOutcome>> {
        let (outcomes, touched) = self.ingest_batch(batch, policy, now).await?;
        self.notify(touched);
        Ok(outcomes)
    }

    async fn claim(
        &self,
        worker: &str,
        capacity: usize,
        limits: &Limits,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>> {
        if capacity == 0 {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        let candidates_sql = match self.backend {
            Backend::Postgres => {
                // Serializes claims across replicas so the running counts below are exact.
                sqlx::query("SELECT pg_advisory_xact_lock(7400)").execute(&mut *tx).await?;
                "SELECT id, team, state, lease_owner, attempts, failures FROM investigations \
                 WHERE state = 'queued' OR (state IN ('running', 'awaiting_approval') AND lease_expires_at <= $1) \
                 ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id, team, state, lease_owner, attempts, failures FROM investigations \
                 WHERE state = 'queued' OR (state IN ('running', 'awaiting_approval') AND lease_expires_at <= $1) \
                 ORDER BY created_at, id LIMIT $2"
            }
        };
        let mut running: HashMap<String, u32> = HashMap::new();
        for row in sqlx::query(
            "SELECT team, COUNT(*) FROM investigations WHERE state = 'running' AND lease_expires_at > $1 GROUP BY team",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?
        {
            running.insert(row.try_get(0)?, row.try_get::<i64, _>(1)? as u32);
        }
        // Look past the first few so one team at its quota does not starve the others.
        let scan = (capacity as i64) * 8 + 64;
        let rows = sqlx::query(candidates_sql).bind(now_ms).bind(scan).fetch_all(&mut *tx).await?;
        let teams: Vec<String> = rows.iter().map(|r| r.try_get("team")).collect::<Result<_, _>>()?;
        let team_refs: Vec<&str> = teams.iter().map(String::as_str).collect();
        let chosen = quota::select(&team_refs, &running, limits, capacity);
        let expires = now_ms + ttl.as_millis() as i64;
        let mut claimed = Vec::with_capacity(chosen.len());
        let mut ids = Vec::new();
        for i in chosen {
            let row = &rows[i];
            let id: String = row.try_get("id")?;
            let state: String = row.try_get("state")?;
            let previous_owner: Option<String> = row.try_get("lease_owner")?;
            let attempts: i64 = row.try_get("attempts")?;
            let failures: i64 = row.try_get("failures")?;
            let updated = sqlx::query(
                "UPDATE investigations SET state = 'running', lease_owner = $2, lease_expires_at = $3, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, $4), updated_at = $4 \
                 WHERE id = $1 AND attempts = $5",
            )
            .bind(&id)
            .bind(worker)
            .bind(expires)
            .bind(now_ms)
            .bind(attempts)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                continue;
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(summary_by_id_sql())).bind(&id).fetch_one(&mut *tx).await?;
            let prior_state = State::parse(&state).filter(|s| s.is_leased()).unwrap_or(State::Queued);
            let previous_owner = match prior_state {
                // A leased row always has an owner; "unknown" keeps a damaged one resumable.
                State::Running | State::AwaitingApproval => {
                    Some(previous_owner.unwrap_or_else(|| "unknown".to_string()))
                }
                _ => None,
            };
            let input = Input::Claimed {
                owner: worker.to_string(),
                attempt: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
                previous_owner: previous_owner.clone(),
            };
            let (_, commands) = step(prior_state, &input);
            let mut events = Vec::new();
            let mut start = false;
            for c in commands {
                match c {
                    Command::Record(e) => events.push(e),
                    Command::StartWork => start = true,
                    Command::ReleaseLease => {}
                }
            }
            append_events(&mut tx, &id, &events, now_ms).await?;
            claimed.push(Claim {
                lease: Lease { investigation_id: id.clone(), worker: worker.to_string(), epoch: attempts + 1 },
                prior_state,
                previous_owner,
                start,
                failures,
                investigation: summary_from_row(&row)?,
            });
            ids.push(id);
        }
        tx.commit().await?;
        self.notify(ids);
        Ok(claimed)
    }

    async fn renew(&self, lease: &Lease, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE investigations SET lease_expires_at = $4 \
             WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND state IN ('running', 'awaiting_approval')",
        )
        .bind(&lease.investigation_id)
        .bind(&lease.worker)
        .bind(lease.epoch)
        .bind(now_ms + ttl.as_millis() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn transition(&self, lease: &Lease, change: &Transition<'_>, now: DateTime<Utc>) -> Result<bool> {
        let now_ms = to_ms(now);
        let events = change.events;
        let n = events.len() as i64;
        let finished = change.to.filter(|s| s.is_terminal()).map(|_| now_ms);
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE investigations SET state = COALESCE($4, state), next_seq = next_seq + $5, updated_at = $6, \
             finished_at = COALESCE($7, finished_at), summary = COALESCE($8, summary), \
             lease_owner = CASE WHEN $9 = 1 THEN NULL ELSE lease_owner END, \
             lease_expires_at = CASE WHEN $9 = 1 THEN NULL ELSE lease_expires_at END, \
             failures = failures + $10 \
             WHERE id = $1 AND lease_owner = $2 AND attempts = $3 RETURNING next_seq",
        )
        .bind(&lease.investigation_id)
        .bind(&lease.worker)
        .bind(lease.epoch)
        .bind(change.to.map(State::as_str))
        .bind(n)
        .bind(now_ms)
        .bind(finished)
        .bind(change.summary)
        .bind(i64::from(change.release))
        .bind(i64::from(change.failure))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let first = row.try_get::<i64, _>(0)? - n;
        insert_events(&mut tx, &lease.investigation_id, first, events, now_ms).await?;
        tx.commit().await?;
        self.notify([lease.investigation_id.clone()]);
        Ok(true)
    }

    async fn list_investigations(&self, filter: &InvestigationFilter) -> Result<Vec<InvestigationSummary>> {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            format!(
                "SELECT {SUMMARY_COLUMNS} FROM investigations i JOIN episodes e ON e.id = i.episode_id \
                 WHERE ($1 IS NULL OR i.state = $1) AND ($2 IS NULL OR i.team = $2) AND ($3 IS NULL OR i.created_at >= $3) \
                 ORDER BY i.created_at DESC, i.id DESC LIMIT $4"
            )
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(filter.state.map(State::as_str))
            .bind(filter.team.as_deref())
            .bind(filter.since.map(to_ms))
            .bind(if filter.limit > 0 { filter.limit } else { 100 })
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn investigation(&self, id: &str) -> Result<Option<InvestigationSummary>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(summary_by_id_sql())).bind(id).fetch_optional(&self.read).await?;
        row.as_ref().map(summary_from_row).transpose()
    }

    async fn events(&self, investigation_id: &str, after: i64, limit: i64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, kind, data, at FROM investigation_events WHERE investigation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(investigation_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let data: String = r.try_get("data")?;
                Ok(StoredEvent {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
                    at: from_ms(r.try_get("at")?),
                })
            })
            .collect()
    }

    async fn episode_alerts(&self, episode_id: &str, limit: i64) -> Result<Vec<StoredAlert>> {
        let rows = sqlx::query(
            "SELECT id, source, status, fingerprint, labels, annotations, starts_at, ends_at, generator_url, received_at \
             FROM alerts WHERE episode_id = $1 ORDER BY received_at, id LIMIT $2",
        )
        .bind(episode_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredAlert {
                    id: r.try_get("id")?,
                    source: r.try_get("source")?,
                    status: r.try_get("status")?,
                    fingerprint: r.try_get("fingerprint")?,
                    labels: json_map(&r.try_get::<String, _>("labels")?)?,
                    annotations: json_map(&r.try_get::<String, _>("annotations")?)?,
                    starts_at: r.try_get::<Option<i64>, _>("starts_at")?.map(from_ms),
                    ends_at: r.try_get::<Option<i64>, _>("ends_at")?.map(from_ms),
                    generator_url: r.try_get("generator_url")?,
                    received_at: from_ms(r.try_get("received_at")?),
                })
            })
            .collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(State, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) FROM investigations GROUP BY state").fetch_all(&self.read).await?;
        let mut out = Vec::new();
        for r in rows {
            let s: String = r.try_get(0)?;
            if let Some(state) = State::parse(&s) {
                out.push((state, r.try_get::<i64, _>(1)?));
            }
        }
        Ok(out)
    }

    async fn ask(&self, investigation_id: &str, question: &Input, now: DateTime<Utc>) -> Result<Asked> {
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT state, next_seq FROM investigations WHERE id = $1")
            .bind(investigation_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Asked::NotFound);
        };
        let text: String = row.try_get("state")?;
        let state = State::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("unknown state `{text}`")))?;
        let (next, commands) = step(state, question);
        let events: Vec<EventBody> = commands
            .into_iter()
            .filter_map(|c| match c {
                Command::Record(e) => Some(e),
                _ => None,
            })
            .collect();
        if events.is_empty() {
            tx.rollback().await?;
            return Ok(Asked::Refused(state));
        }
        let seq: i64 = row.try_get("next_seq")?;
        sqlx::query(
            "UPDATE investigations SET state = $2, finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND state = $3",
        )
        .bind(investigation_id)
        .bind(next.as_str())
        .bind(state.as_str())
        .execute(&mut *tx)
        .await?;
        append_events(&mut tx, investigation_id, &events, now_ms).await?;
        tx.commit().await?;
        self.notify([investigation_id.to_string()]);
        Ok(Asked::Queued { seq })
    }

    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events_tx.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}
