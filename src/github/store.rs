//! Where webhook deliveries wait and gates live, over the shared [`SqlStore`] (SQLite
//! or PostgreSQL). The store decides nothing: the processor and the drafter decide
//! (see `gate`), and a gate is changed only by compare-and-set on its version, with
//! its log entry in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::draft::{DraftPlan, DraftProgress};
use super::gate::{Approval, Gate, GateState};
use crate::engine::EventBody;
use crate::store::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum GithubStoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored gate is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub type Result<T, E = GithubStoreError> = std::result::Result<T, E>;

/// A delivery claimed for processing.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub body: String,
}

/// A gate as stored: its id and version beside what the decisions see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGate {
    pub id: String,
    pub investigation_id: String,
    pub version: i64,
    /// When it last changed, in milliseconds since the epoch.
    pub updated_at_ms: i64,
    /// The last version GitHub was made to show.
    pub settled_version: i64,
    /// The changed files' CODEOWNERS owners, asked to review once approved.
    pub code_owners: Vec<String>,
    pub gate: Gate,
}

/// One change of a gate, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateLogEntry {
    pub version: i64,
    pub state: GateState,
    pub head_sha: String,
    pub why: String,
    /// What changed it: `created`, `webhook:<delivery id>`, `registry`, ...
    pub source: String,
}

#[derive(Clone)]
pub struct GithubStore {
    store: Arc<SqlStore>,
}

impl GithubStore {
    pub fn new(store: Arc<SqlStore>) -> GithubStore {
        GithubStore { store }
    }

    /// Stores a delivery unless one with its id is already stored; `true` if new.
    pub async fn record_delivery(&self, id: &str, event: &str, body: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO github_deliveries (delivery_id, event, body, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(id)
        .bind(event)
        .bind(body)
        .bind(now_ms)
        .execute(&self.store.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims the oldest unprocessed delivery nobody holds, for `lease`.
    pub async fn claim_delivery(&self, now_ms: i64, lease: Duration) -> Result<Option<Delivery>> {
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        // The outer conditions repeat the inner ones: on PostgreSQL a competing claim
        // that waited for the row lock re-checks them and claims nothing.
        let row = sqlx::query(
            "UPDATE github_deliveries SET claimed_until = $1 \
             WHERE delivery_id = (SELECT delivery_id FROM github_deliveries \
                 WHERE processed_at IS NULL AND (claimed_until IS NULL OR claimed_until < $2) \
                 ORDER BY received_at, delivery_id LIMIT 1) \
             AND processed_at IS NULL AND (claimed_until IS NULL OR claimed_until < $2) \
             RETURNING delivery_id, event, body",
        )
        .bind(until)
        .bind(now_ms)
        .fetch_optional(&self.store.write)
        .await?;
        row.map(|r| {
            Ok(Delivery { id: r.try_get("delivery_id")?, event: r.try_get("event")?, body: r.try_get("body")? })
        })
        .transpose()
    }

    /// Marks a delivery processed, with what came of it.
    pub async fn finish_delivery(&self, id: &str, outcome: &str, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE github_deliveries SET processed_at = $1, outcome = $2 WHERE delivery_id = $3")
            .bind(now_ms)
            .bind(outcome)
            .bind(id)
            .execute(&self.store.write)
            .await?;
        Ok(())
    }

    /// What came of a delivery: `None` if unknown, `Some(None)` while unprocessed.
    pub async fn delivery_outcome(&self, id: &str) -> Result<Option<Option<String>>> {
        let row = sqlx::query("SELECT outcome FROM github_deliveries WHERE delivery_id = $1")
            .bind(id)
            .fetch_optional(&self.store.read)
            .await?;
        row.map(|r| r.try_get::<Option<String>, _>("outcome").map_err(GithubStoreError::from)).transpose()
    }

    /// Stores a new gate (version 1) and its first log entry, unless the pull request
    /// has a gate already; `true` if this made it.
    pub async fn create_gate(
        &self,
        id: &str,
        investigation_id: &str,
        gate: &Gate,
        code_owners: &[String],
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO pr_gates (id, investigation_id, repo, number, head_sha, requester_login, state, approval, \
             created_at, updated_at, version, diff_digest, approval_request, code_owners) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 1, $10, $11, $12) \
             ON CONFLICT (repo, number) DO NOTHING",
        )
        .bind(id)
        .bind(investigation_id)
        .bind(repo_key(&gate.repo))
        .bind(number(gate.number))
        .bind(&gate.head_sha)
        .bind(gate.requester_login.as_deref())
        .bind(gate.state.as_str())
        .bind(approval_text(gate)?)
        .bind(now_ms)
        .bind(&gate.diff_digest)
        .bind(gate.request.as_deref())
        .bind(json(&code_owners)?)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        log(&mut tx, id, 1, gate, "the draft waits at its gate", "created", now_ms).await?;
        let told = tell(&mut tx, investigation_id, gate, "the draft waits at its gate", "created", now_ms).await?;
        tx.commit().await?;
        if told {
            self.store.notify([investigation_id.to_string()]);
        }
        Ok(true)
    }

    /// Stores a new draft (version 1) unless its investigation has draft `plan.n`
    /// already; the id of the draft that is stored either way.
    pub async fn create_draft(&self, id: &str, plan: &DraftPlan, now_ms: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO pr_drafts (id, investigation_id, n, plan, progress, created_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, 1) ON CONFLICT (investigation_id, n) DO NOTHING",
        )
        .bind(id)
        .bind(&plan.investigation_id)
        .bind(i64::from(plan.n))
        .bind(json(plan)?)
        .bind(json(&DraftProgress::default())?)
        .bind(now_ms)
        .execute(&self.store.write)
        .await?;
        let row = sqlx::query("SELECT id FROM pr_drafts WHERE investigation_id = $1 AND n = $2")
            .bind(&plan.investigation_id)
            .bind(i64::from(plan.n))
            .fetch_one(&self.store.write)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// A draft's plan, progress and version.
    pub async fn draft(&self, id: &str) -> Result<Option<(DraftPlan, DraftProgress, i64)>> {
        let row = sqlx::query("SELECT plan, progress, version FROM pr_drafts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.store.write)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let plan: String = row.try_get("plan")?;
        let progress: String = row.try_get("progress")?;
        Ok(Some((parse(&plan, "plan")?, parse(&progress, "progress")?, row.try_get("version")?)))
    }

    /// Replaces a draft's progress if its version is still `expected_version`.
    pub async fn save_progress(
        &self,
        id: &str,
        progress: &DraftProgress,
        expected_version: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE pr_drafts SET progress = $1, updated_at = $2, version = version + 1 WHERE id = $3 AND version = $4",
        )
        .bind(json(progress)?)
        .bind(now_ms)
        .bind(id)
        .bind(expected_version)
        .execute(&self.store.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The gate of a pull request, if Inquest drafted it.
    pub async fn gate_of(&self, repo: &str, number_: u64) -> Result<Option<StoredGate>> {
        let row = sqlx::query(
            "SELECT id, investigation_id, repo, number, head_sha, requester_login, state, approval, version, \
             updated_at, diff_digest, approval_request, settled_version, code_owners FROM pr_gates WHERE repo = $1 AND number = $2",
        )
        .bind(repo_key(repo))
        .bind(number(number_))
        .fetch_optional(&self.store.write)
        .await?;
        row.map(|r| stored_gate(&r)).transpose()
    }

    /// Gates waiting for an approval, least recently changed first, at most `limit`.
    pub async fn pending_gates(&self, limit: i64) -> Result<Vec<StoredGate>> {
        let rows = sqlx::query(
            "SELECT id, investigation_id, repo, number, head_sha, requester_login, state, approval, version, \
             updated_at, diff_digest, approval_request, settled_version, code_owners FROM pr_gates WHERE state = 'pending' \
             ORDER BY updated_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.store.read)
        .await?;
        rows.iter().map(stored_gate).collect()
    }

    /// Decided gates (approved, declined, expired), changed before `before_ms`, whose
    /// pull request has not been made to show their latest version; oldest change
    /// first, at most `limit`.
    pub async fn unsettled_gates(&self, before_ms: i64, limit: i64) -> Result<Vec<StoredGate>> {
        let rows = sqlx::query(
            "SELECT id, investigation_id, repo, number, head_sha, requester_login, state, approval, version, \
             updated_at, diff_digest, approval_request, settled_version, code_owners FROM pr_gates \
             WHERE state IN ('approved', 'declined', 'expired') AND settled_version < version \
             AND updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.store.read)
        .await?;
        rows.iter().map(stored_gate).collect()
    }

    /// Records that GitHub shows gate `id` as of `version`.
    pub async fn mark_settled(&self, id: &str, version: i64) -> Result<()> {
        sqlx::query("UPDATE pr_gates SET settled_version = $2 WHERE id = $1 AND settled_version < $2")
            .bind(id)
            .bind(version)
            .execute(&self.store.write)
            .await?;
        Ok(())
    }

    /// Replaces the gate with `next` if its version is still `expected_version`,
    /// logging `why` and `source`, and telling the investigation's thread (in the same
    /// transaction). `false`: it changed meanwhile; nothing was written.
    pub async fn save_gate(
        &self,
        id: &str,
        next: &Gate,
        expected_version: i64,
        why: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.store.begin_write().await?;
        let row = sqlx::query(
            "UPDATE pr_gates SET head_sha = $1, state = $2, approval = $3, updated_at = $4, approval_request = $5, \
             version = version + 1 WHERE id = $6 AND version = $7 RETURNING investigation_id",
        )
        .bind(&next.head_sha)
        .bind(next.state.as_str())
        .bind(approval_text(next)?)
        .bind(now_ms)
        .bind(next.request.as_deref())
        .bind(id)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let investigation_id: String = row.try_get("investigation_id")?;
        log(&mut tx, id, expected_version + 1, next, why, source, now_ms).await?;
        let told = tell(&mut tx, &investigation_id, next, why, source, now_ms).await?;
        tx.commit().await?;
        if told {
            self.store.notify([investigation_id]);
        }
        Ok(true)
    }

    /// A gate's changes, oldest first.
    pub async fn gate_log(&self, id: &str) -> Result<Vec<GateLogEntry>> {
        let rows = sqlx::query(
            "SELECT version, state, head_sha, why, source FROM pr_gate_log WHERE gate_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(&self.store.read)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(GateLogEntry {
                    version: r.try_get("version")?,
                    state: GateState::parse(&state)
                        .ok_or_else(|| GithubStoreError::Corrupt(format!("unknown gate state `{state}`")))?,
                    head_sha: r.try_get("head_sha")?,
                    why: r.try_get("why")?,
                    source: r.try_get("source")?,
                })
            })
            .collect()
    }
}

async fn log(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    version: i64,
    gate: &Gate,
    why: &str,
    source: &str,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO pr_gate_log (gate_id, version, at, state, head_sha, why, source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(version)
    .bind(now_ms)
    .bind(gate.state.as_str())
    .bind(&gate.head_sha)
    .bind(why)
    .bind(source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends a `pull_request.gate` event to the investigation's log, if the investigation
/// is stored here (a gate's investigation can live in another deployment's store).
async fn tell(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    investigation_id: &str,
    gate: &Gate,
    why: &str,
    source: &str,
    now_ms: i64,
) -> Result<bool> {
    let event = EventBody::new(
        "pull_request.gate",
        serde_json::json!({
            "repo": gate.repo, "number": gate.number, "state": gate.state.as_str(), "head_sha": gate.head_sha,
            "approval": gate.approval, "approval_request": gate.request, "why": why, "source": source,
        }),
    );
    Ok(crate::store::sql::append_if_present(tx, investigation_id, std::slice::from_ref(&event), now_ms).await?)
}

/// GitHub's owner and repository names are case-insensitive; stored lowercased.
fn repo_key(repo: &str) -> String {
    repo.to_ascii_lowercase()
}

/// Pull request numbers are far below `i64::MAX`; the column is signed.
fn number(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| GithubStoreError::Corrupt(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| GithubStoreError::Corrupt(format!("{what}: {e}")))
}

fn approval_text(gate: &Gate) -> Result<Option<String>> {
    gate.approval
        .as_ref()
        .map(|a| serde_json::to_string(a).map_err(|e| GithubStoreError::Corrupt(e.to_string())))
        .transpose()
}

fn stored_gate(r: &AnyRow) -> Result<StoredGate> {
    let state: String = r.try_get("state")?;
    let approval: Option<String> = r.try_get("approval")?;
    let approval: Option<Approval> = approval
        .map(|a| serde_json::from_str(&a).map_err(|e| GithubStoreError::Corrupt(format!("approval: {e}"))))
        .transpose()?;
    Ok(StoredGate {
        id: r.try_get("id")?,
        investigation_id: r.try_get("investigation_id")?,
        version: r.try_get("version")?,
        updated_at_ms: r.try_get("updated_at")?,
        settled_version: r.try_get("settled_version")?,
        code_owners: parse(&r.try_get::<String, _>("code_owners")?, "code_owners")?,
        gate: Gate {
            repo: r.try_get("repo")?,
            number: u64::try_from(r.try_get::<i64, _>("number")?).unwrap_or_default(),
            head_sha: r.try_get("head_sha")?,
            requester_login: r.try_get("requester_login")?,
            state: GateState::parse(&state)
                .ok_or_else(|| GithubStoreError::Corrupt(format!("unknown gate state `{state}`")))?,
            approval,
            diff_digest: r.try_get("diff_digest")?,
            request: r.try_get("approval_request")?,
        },
    })
}
