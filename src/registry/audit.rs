//! The audit log: every approval transition and refusal (and later the catalog's admin
//! writes), append-only and hash-chained.
//!
//! Record `seq` (dense from 1) carries `hash = sha256_hex(prev_hash || canonical record)`
//! where `prev_hash` is the previous record's hash ([`GENESIS_HASH`] for the first) and the
//! canonical record is the canonical JSON of `{seq, at (ms), actor, action, subject,
//! data}`. Changing, inserting or deleting any record but the last breaks the chain at
//! that point, which `inquest audit verify` finds; the head hash it prints lets an
//! operator notice a truncated tail by comparing with an earlier run. The tables also
//! refuse UPDATE and DELETE by trigger, so that breaking the chain takes a deliberate act.
//!
//! Appends are serialized so the chain has one order: on PostgreSQL under a
//! transaction-scoped advisory lock, on SQLite by the store's single write transaction.
//! They happen inside the caller's transaction, so a change and its record commit
//! together or not at all.

use std::process::ExitCode;

use async_trait::async_trait;
use axum::Json;
use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::RegistryState;
use super::approvals::ApprovalContext;
use super::approvals::canonical::{canonical_json, sha256_hex};
use crate::identity::Authenticated;
use crate::store::{Backend, SqlStore, StoreError, from_ms, to_ms};
use crate::web::ApiError;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The PostgreSQL advisory lock that serializes appends (7400 serializes claims).
const AUDIT_LOCK_KEY: i64 = 7401;

/// Records read per query when verifying.
const VERIFY_PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to record; the log adds the sequence number and the hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The principal's id, or `system` for the expiry sweep.
    pub actor: String,
    /// What happened, `<area>.<event>`: `approval.approved`, `approval.decision_refused`.
    pub action: String,
    /// What it happened to: `approval:<id>`.
    pub subject: String,
    pub data: serde_json::Value,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The chain hash of record `seq` after `prev_hash`.
pub fn record_hash(prev_hash: &str, seq: i64, entry: &AuditEntry) -> String {
    let record = serde_json::json!({
        "seq": seq,
        "at": to_ms(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "data": entry.data,
    });
    let mut bytes = prev_hash.as_bytes().to_vec();
    bytes.extend_from_slice(canonical_json(&record).as_bytes());
    sha256_hex(&bytes)
}

/// Where a chain stops holding together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("seq {expected} is missing (the next record is {found})")]
    Missing { expected: i64, found: i64 },
    #[error("seq {seq} does not follow the record before it (prev_hash differs)")]
    Unlinked { seq: i64 },
    #[error("seq {seq} was altered (its hash does not match its content)")]
    Altered { seq: i64 },
    #[error("seq {seq} is unreadable: {reason}")]
    Unreadable { seq: i64, reason: String },
}

impl ChainBreak {
    /// The first sequence number that is not as it was written.
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Missing { expected, .. } => *expected,
            ChainBreak::Unlinked { seq } | ChainBreak::Altered { seq } | ChainBreak::Unreadable { seq, .. } => *seq,
        }
    }
}

/// Checks records one at a time, in order (pure: the caller reads them).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { next_seq: 1, prev_hash: GENESIS_HASH.to_string() }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if record.seq != self.next_seq {
            return Err(ChainBreak::Missing { expected: self.next_seq, found: record.seq });
        }
        if record.prev_hash != self.prev_hash {
            return Err(ChainBreak::Unlinked { seq: record.seq });
        }
        let entry = AuditEntry {
            at: record.at,
            actor: record.actor.clone(),
            action: record.action.clone(),
            subject: record.subject.clone(),
            data: record.data.clone(),
        };
        if record_hash(&record.prev_hash, record.seq, &entry) != record.hash {
            return Err(ChainBreak::Altered { seq: record.seq });
        }
        self.next_seq += 1;
        self.prev_hash = record.hash.clone();
        Ok(())
    }
}

/// Takes the append lock for the rest of `tx` (PostgreSQL; SQLite's write transaction
/// already excludes other writers). A transaction that changes several rows before
/// appending should call this first, so that it never holds row locks while waiting
/// here (which could deadlock with another appender).
pub async fn lock(tx: &mut Transaction<'static, Any>, backend: Backend) -> Result<(), AuditError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_LOCK_KEY).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends one record inside `tx`; it becomes visible when `tx` commits, together with
/// whatever else `tx` changed.
pub async fn append(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    entry: &AuditEntry,
) -> Result<AuditRecord, AuditError> {
    // Re-entrant: taking the lock again in the same transaction is a no-op.
    lock(tx, backend).await?;
    let last =
        sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut **tx).await?;
    let (seq, prev_hash) = match last {
        Some(row) => (row.try_get::<i64, _>("seq")? + 1, row.try_get::<String, _>("hash")?),
        None => (1, GENESIS_HASH.to_string()),
    };
    let at = from_ms(to_ms(entry.at));
    let entry = AuditEntry { at, ..entry.clone() };
    let hash = record_hash(&prev_hash, seq, &entry);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, subject, data, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(to_ms(at))
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(canonical_json(&entry.data))
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    tracing::debug!(seq, action = %entry.action, subject = %entry.subject, "audit record appended");
    Ok(AuditRecord {
        seq,
        at,
        actor: entry.actor,
        action: entry.action,
        subject: entry.subject,
        data: entry.data,
        prev_hash,
        hash,
    })
}

/// The audit log as the rest of the registry uses it outside a transaction of its own.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `entries` in one transaction, in order.
    async fn append_entries(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>, AuditError>;
    /// Records with `seq > after`, in order, at most `limit`.
    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, AuditError>;
}

#[async_trait]
impl AuditLog for SqlStore {
    async fn append_entries(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>, AuditError> {
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(append(&mut tx, self.backend(), e).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, AuditError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, data, prev_hash, hash FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                record_from_row(row)?
                    .map_err(|(seq, reason)| StoreError::Corrupt(format!("audit record {seq}: {reason}")).into())
            })
            .collect()
    }
}

/// What verifying the whole log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records that checked out, from seq 1.
    pub count: u64,
    /// The last good record's seq and hash.
    pub head: Option<(i64, String)>,
    pub broken: Option<ChainBreak>,
}

/// Recomputes the chain from the first record to the last, stopping at the first break.
pub async fn verify(store: &SqlStore) -> Result<Verification, AuditError> {
    let mut verifier = ChainVerifier::default();
    let mut result = Verification { count: 0, head: None, broken: None };
    let mut after = 0;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, data, prev_hash, hash FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(VERIFY_PAGE)
        .fetch_all(&store.read)
        .await?;
        for row in &rows {
            let checked = match record_from_row(row)? {
                Ok(record) => verifier.check(&record).map(|()| record),
                Err((seq, reason)) => Err(ChainBreak::Unreadable { seq, reason }),
            };
            match checked {
                Ok(record) => {
                    result.count += 1;
                    after = record.seq;
                    result.head = Some((record.seq, record.hash));
                }
                Err(b) => {
                    result.broken = Some(b);
                    return Ok(result);
                }
            }
        }
        if (rows.len() as i64) < VERIFY_PAGE {
            return Ok(result);
        }
    }
}

/// `inquest audit verify`.
pub async fn verify_command(cfg: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let store = SqlStore::open(&cfg.store.url, cfg.store.max_connections).await?;
    let result = verify(&store).await;
    store.close().await;
    let result = result?;
    let head = match &result.head {
        Some((seq, hash)) => format!("head seq {seq}, hash {hash}"),
        None => "empty".to_string(),
    };
    match result.broken {
        None => {
            println!("audit log OK: {} records ({head})", result.count);
            Ok(ExitCode::SUCCESS)
        }
        Some(b) => {
            println!("audit log BROKEN at seq {}: {b}", b.seq());
            println!("the {} records before it check out ({head})", result.count);
            Ok(ExitCode::from(1))
        }
    }
}

/// The database row as a record; `Err((seq, reason))` when its content cannot be read
/// back (which verification reports as a break, not a failure to verify).
fn record_from_row(row: &AnyRow) -> Result<Result<AuditRecord, (i64, String)>, AuditError> {
    let seq: i64 = row.try_get("seq")?;
    let data: String = row.try_get("data")?;
    let data = match serde_json::from_str(&data) {
        Ok(d) => d,
        Err(e) => return Ok(Err((seq, format!("data is not JSON: {e}")))),
    };
    Ok(Ok(AuditRecord {
        seq,
        at: from_ms(row.try_get("at")?),
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        subject: row.try_get("subject")?,
        data,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    }))
}

pub fn routes() -> Router<RegistryState> {
    routes_for::<RegistryState>()
}

/// The routes over any state that holds an [`ApprovalContext`] (tests use the context
/// itself).
pub fn routes_for<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    ApprovalContext: FromRef<S>,
{
    Router::new().route("/v0.1/x/audit", get(page))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Records after this seq (default 0: from the start).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent at the end of the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// Read the audit log, oldest first. Administrators and approvers only.
#[utoipa::path(
    get,
    path = "/v0.1/x/audit",
    params(PageQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 401, body = ApiError),
        (status = 403, description = "Neither an administrator nor an approver", body = ApiError),
        (status = 503, description = "`policy_unavailable`: retry", body = ApiError),
    ),
    tag = "registry"
)]
pub async fn page(
    State(ctx): State<ApprovalContext>,
    Authenticated(caller): Authenticated,
    Query(q): Query<PageQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let allowed = ctx.is_admin(&caller)
        || ctx
            .approvers
            .is_approver(&caller)
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "policy_unavailable", e.to_string()))?;
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only administrators and approvers read the audit log",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let records = ctx.store.audit_page(q.after.unwrap_or(0).max(0), limit).await.map_err(ApiError::internal)?;
    let next_after = match records.last() {
        Some(last) if records.len() as i64 == limit => Some(last.seq),
        _ => None,
    };
    Ok(Json(AuditPage { records, next_after }))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let entry = AuditEntry {
                    at: Utc.timestamp_opt(1_764_000_000 + seq, 0).unwrap(),
                    actor: "user:alice".into(),
                    action: "approval.approved".into(),
                    subject: format!("approval:{seq}"),
                    data: json!({"n": seq}),
                };
                let hash = record_hash(&prev, seq, &entry);
                let r = AuditRecord {
                    seq,
                    at: entry.at,
                    actor: entry.actor,
                    action: entry.action,
                    subject: entry.subject,
                    data: entry.data,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn first_break(records: &[AuditRecord]) -> Option<ChainBreak> {
        let mut v = ChainVerifier::default();
        records.iter().find_map(|r| v.check(r).err())
    }

    #[test]
    fn verifier_table() {
        let good = chain(4);
        let altered = {
            let mut c = good.clone();
            c[1].data = json!({"n": 99});
            c
        };
        let missing = {
            let mut c = good.clone();
            c.remove(2);
            c
        };
        let relinked = {
            // Someone rewrites record 2 and recomputes its own hash: record 3 no longer links.
            let mut c = good.clone();
            c[1].actor = "user:mallory".into();
            let e = AuditEntry {
                at: c[1].at,
                actor: c[1].actor.clone(),
                action: c[1].action.clone(),
                subject: c[1].subject.clone(),
                data: c[1].data.clone(),
            };
            c[1].hash = record_hash(&c[1].prev_hash, 2, &e);
            c
        };
        let cases = [
            ("intact", good.clone(), None),
            ("empty", vec![], None),
            ("data changed", altered, Some(ChainBreak::Altered { seq: 2 })),
            ("record deleted", missing, Some(ChainBreak::Missing { expected: 3, found: 4 })),
            ("record rewritten with its hash", relinked, Some(ChainBreak::Unlinked { seq: 3 })),
            ("first record deleted", good[1..].to_vec(), Some(ChainBreak::Missing { expected: 1, found: 2 })),
        ];
        for (name, records, expected) in cases {
            assert_eq!(first_break(&records), expected, "{name}");
        }
    }
}
