//! [`ApprovalStore`]: where approval requests live, implemented for [`SqlStore`].
//!
//! Every write takes the audit lock first and appends its audit records in the same
//! transaction, so a state change is never stored without its record (or the reverse).
//! Writes to an existing request are compare-and-set on its `version`: the routes decide
//! on what they read, and a concurrent change makes the write miss instead of
//! overwriting it. The store decides nothing itself.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::canonical::canonical_json;
use super::{ApprovalRequest, ApprovalState};
use crate::registry::audit::{self, AuditEntry, AuditError, AuditLog};
use crate::store::{SqlStore, StoreError, from_ms, to_ms};

#[derive(Debug, thiserror::Error)]
pub enum ApprovalStoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    #[error("stored approval request is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = ApprovalStoreError> = std::result::Result<T, E>;

/// What [`ApprovalStore::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(ApprovalRequest),
    /// The requester already had an open request for the same resource and digest;
    /// nothing was stored. A service retrying its call lands on the same page.
    Existing(ApprovalRequest),
}

#[async_trait]
pub trait ApprovalStore: AuditLog {
    /// Stores `request` with `audit`, unless its requester has an open request (pending,
    /// or approved and unused, not expired at `request.created_at`) for the same
    /// resource, digest and principal it acts for.
    async fn create(&self, request: &ApprovalRequest, audit: &[AuditEntry]) -> Result<Created>;

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRequest>>;

    /// Requests stored in `state`, newest first, at most `limit`.
    async fn approvals_in(&self, state: ApprovalState, limit: i64) -> Result<Vec<ApprovalRequest>>;

    /// Open requests whose expiry is at or before `now`, oldest expiry first.
    async fn open_past_expiry(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<ApprovalRequest>>;

    /// Replaces the request with `next` if its stored version is still
    /// `expected_version`, appending `audit` in the same transaction. `false`: it changed
    /// in the meantime and nothing was written.
    async fn save(&self, next: &ApprovalRequest, expected_version: i64, audit: &[AuditEntry]) -> Result<bool>;
}

const COLUMNS: &str = "id, action, digest, requester, on_behalf_of, resource, policy, state, approvals, closed_by, \
     created_at, expires_at, updated_at, version";

#[async_trait]
impl ApprovalStore for SqlStore {
    async fn create(&self, request: &ApprovalRequest, entries: &[AuditEntry]) -> Result<Created> {
        let mut tx = self.begin_write().await?;
        // First, before any row is touched: it also makes the open-request check and the
        // insert atomic across PostgreSQL replicas.
        audit::lock(&mut tx, self.backend()).await?;
        let resource = json_text(&request.resource)?;
        let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE requester_id = $1 AND digest = $2 AND resource = $3 \
             AND on_behalf_of_id = $4 AND state IN ('pending', 'approved') AND expires_at > $5 \
             ORDER BY created_at DESC LIMIT 1"
        )))
        .bind(request.requester.id())
        .bind(&request.digest)
        .bind(&resource)
        .bind(on_behalf_of_id(request))
        .bind(to_ms(request.created_at))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            tx.rollback().await?;
            return Ok(Created::Existing(request_from_row(&row)?));
        }
        sqlx::query(
            "INSERT INTO approval_requests (id, kind, action, digest, requester_id, requester, on_behalf_of_id, \
             on_behalf_of, resource, policy, state, approvals, closed_by, created_at, expires_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&request.id)
        .bind(request.kind().as_str())
        .bind(canonical_json(&request.action))
        .bind(&request.digest)
        .bind(request.requester.id())
        .bind(json_text(&request.requester)?)
        .bind(on_behalf_of_id(request))
        .bind(request.on_behalf_of.as_ref().map(json_text).transpose()?)
        .bind(&resource)
        .bind(json_text(&request.policy)?)
        .bind(request.state.as_str())
        .bind(json_text(&request.approvals)?)
        .bind(request.closed_by.as_ref().map(json_text).transpose()?)
        .bind(to_ms(request.created_at))
        .bind(to_ms(request.expires_at))
        .bind(to_ms(request.updated_at))
        .bind(request.version)
        .execute(&mut *tx)
        .await?;
        for e in entries {
            audit::append(&mut tx, self.backend(), e).await?;
        }
        tx.commit().await?;
        Ok(Created::New(request.clone()))
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRequest>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM approval_requests WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    async fn approvals_in(&self, state: ApprovalState, limit: i64) -> Result<Vec<ApprovalRequest>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE state = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        )))
        .bind(state.as_str())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(request_from_row).collect()
    }

    async fn open_past_expiry(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<ApprovalRequest>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE state IN ('pending', 'approved') AND expires_at <= $1 \
             ORDER BY expires_at, id LIMIT $2"
        )))
        .bind(to_ms(now))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(request_from_row).collect()
    }

    async fn save(&self, next: &ApprovalRequest, expected_version: i64, entries: &[AuditEntry]) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        audit::lock(&mut tx, self.backend()).await?;
        let updated = sqlx::query(
            "UPDATE approval_requests SET state = $3, approvals = $4, closed_by = $5, updated_at = $6, \
             version = version + 1 WHERE id = $1 AND version = $2",
        )
        .bind(&next.id)
        .bind(expected_version)
        .bind(next.state.as_str())
        .bind(json_text(&next.approvals)?)
        .bind(next.closed_by.as_ref().map(json_text).transpose()?)
        .bind(to_ms(next.updated_at))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for e in entries {
            audit::append(&mut tx, self.backend(), e).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// The stored id of whom the request is for; '' for nobody (the column is NOT NULL so
/// that equality finds "the same open request" on both backends).
fn on_behalf_of_id(request: &ApprovalRequest) -> String {
    request.on_behalf_of.as_ref().map(|p| p.id()).unwrap_or_default()
}

fn json_text<T: Serialize>(value: &T) -> Result<String> {
    let value = serde_json::to_value(value).map_err(|e| ApprovalStoreError::Corrupt(e.to_string()))?;
    Ok(canonical_json(&value))
}

fn from_json_text<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| ApprovalStoreError::Corrupt(format!("{column}: {e}")))
}

fn request_from_row(row: &AnyRow) -> Result<ApprovalRequest> {
    let state: String = row.try_get("state")?;
    let closed_by: Option<String> = row.try_get("closed_by")?;
    let on_behalf_of: Option<String> = row.try_get("on_behalf_of")?;
    Ok(ApprovalRequest {
        id: row.try_get("id")?,
        action: from_json_text("action", &row.try_get::<String, _>("action")?)?,
        digest: row.try_get("digest")?,
        requester: from_json_text("requester", &row.try_get::<String, _>("requester")?)?,
        on_behalf_of: on_behalf_of.as_deref().map(|t| from_json_text("on_behalf_of", t)).transpose()?,
        resource: from_json_text("resource", &row.try_get::<String, _>("resource")?)?,
        policy: from_json_text("policy", &row.try_get::<String, _>("policy")?)?,
        state: ApprovalState::parse(&state)
            .ok_or_else(|| ApprovalStoreError::Corrupt(format!("unknown state `{state}`")))?,
        approvals: from_json_text("approvals", &row.try_get::<String, _>("approvals")?)?,
        closed_by: closed_by.as_deref().map(|t| from_json_text("closed_by", t)).transpose()?,
        created_at: from_ms(row.try_get("created_at")?),
        expires_at: from_ms(row.try_get("expires_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}
