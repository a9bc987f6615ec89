//! [`CatalogStore`] and the prober's [`ProbeSink`] over [`SqlStore`], for SQLite and
//! PostgreSQL alike.
//!
//! Writes that change a decision input first take the next policy revision from the
//! one-row `registry_policy_rev` table. On PostgreSQL that row lock also serializes
//! those writes, so revisions become visible in the order they were taken and a cache
//! that reads `policy_rev > its revision` never misses one. Health and tool writes do
//! not change decisions; they lock only their server's row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{
    CatalogEntry, CatalogError, CatalogStore, DEFAULT_MINUTES_SAVED, Health, HealthState, ListQuery, Page, PolicyDoc,
    ProbeReport, RegistryEvent, Result, Review, ReviewKind, ServerExt, ToolList, ToolsChange, UsageCounters,
    diff_tools, next_health,
};
use crate::policy::ServerStatus;
use crate::registry::prober::ToolSnapshot;
use crate::registry::server_json::{ServerJson, pick_latest};
use crate::store::{Backend, SqlStore, from_ms, to_ms};

/// The columns every entry query selects, versions `v` joined with servers `s`.
macro_rules! entry_select {
    () => {
        "SELECT v.name, v.version, v.server_json, v.status, v.published_at, v.updated_at, v.is_latest, \
         s.status AS server_status, s.latest_version, s.policy, s.security_review, s.production, \
         s.health_status, s.health_checked_at, s.health_latency_ms, s.health_error, s.health_failures, \
         s.health_since, s.tools, s.tools_seen_at, s.tools_changed_at, \
         s.usage_month, s.usage_invocations, s.usage_users, s.usage_total \
         FROM registry_server_versions v JOIN registry_servers s ON s.name = v.name"
    };
}

/// The same server columns without a version.
const EXT_SELECT: &str = "SELECT s.status AS server_status, s.latest_version, s.policy, s.security_review, \
     s.production, s.health_status, s.health_checked_at, s.health_latency_ms, s.health_error, s.health_failures, \
     s.health_since, s.tools, s.tools_seen_at, s.tools_changed_at, \
     s.usage_month, s.usage_invocations, s.usage_users, s.usage_total \
     FROM registry_servers s WHERE s.name = $1";

#[async_trait]
impl CatalogStore for SqlStore {
    async fn publish(&self, server: &ServerJson, actor: &str, now: DateTime<Utc>) -> Result<CatalogEntry> {
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        let rev = next_rev(&mut tx).await?;
        let pending = json_text(&Review::default())?;
        sqlx::query(
            "INSERT INTO registry_servers (name, status, security_review, production, policy_rev, created_at, updated_at) \
             VALUES ($1, 'active', $2, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&server.name)
        .bind(&pending)
        .bind(rev)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO registry_server_versions \
             (name, version, server_json, search_text, status, is_latest, published_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'active', 0, $5, $5) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(&server.name)
        .bind(&server.version)
        .bind(server.document.to_string())
        .bind(search_text(server))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(CatalogError::Exists { name: server.name.clone(), version: server.version.clone() });
        }
        refresh_latest(&mut tx, &server.name, rev, now_ms).await?;
        record_event(
            &mut tx,
            &server.name,
            "server.published",
            Some(actor),
            &json!({"version": server.version}),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        self.version(&server.name, &server.version)
            .await?
            .ok_or_else(|| CatalogError::Corrupt(format!("{} {} vanished", server.name, server.version)))
    }

    async fn set_status(
        &self,
        name: &str,
        version: &str,
        status: ServerStatus,
        message: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<CatalogEntry> {
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        let rev = next_rev(&mut tx).await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT status FROM registry_server_versions WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(before) = before else {
            return Err(CatalogError::NotFound(format!("version {version} of {name}")));
        };
        if before != status.as_str() {
            sqlx::query(
                "UPDATE registry_server_versions SET status = $3, updated_at = $4 WHERE name = $1 AND version = $2",
            )
            .bind(name)
            .bind(version)
            .bind(status.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            refresh_latest(&mut tx, name, rev, now_ms).await?;
            let data = json!({"version": version, "from": before, "to": status.as_str(), "message": message});
            record_event(&mut tx, name, "version.status_changed", Some(actor), &data, now_ms).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        self.version(name, version).await?.ok_or_else(|| CatalogError::Corrupt(format!("{name} {version} vanished")))
    }

    async fn list(&self, q: &ListQuery) -> Result<Page> {
        let (after_name, after_version) = q.after.clone().unwrap_or_default();
        let pattern = match &q.search {
            Some(s) if !s.is_empty() => format!("%{}%", escape_like(&s.to_lowercase())),
            _ => String::new(),
        };
        let limit = i64::from(q.limit.max(1));
        let rows = sqlx::query(concat!(
            entry_select!(),
            " WHERE (v.name, v.version) > ($1, $2) \
              AND ($3 = 0 OR v.is_latest = 1) \
              AND ($4 = 1 OR v.status <> 'deleted') \
              AND v.updated_at >= $5 \
              AND ($6 = '' OR v.search_text LIKE $6 ESCAPE '\\') \
              ORDER BY v.name, v.version LIMIT $7"
        ))
        .bind(after_name)
        .bind(after_version)
        .bind(i64::from(q.latest_only))
        .bind(i64::from(q.include_deleted))
        .bind(q.updated_since.map_or(i64::MIN, to_ms))
        .bind(pattern)
        .bind(limit + 1)
        .fetch_all(&self.read)
        .await?;
        let mut entries = rows.iter().map(entry_from_row).collect::<Result<Vec<_>>>()?;
        let next = if entries.len() as i64 > limit {
            entries.truncate(limit as usize);
            entries.last().map(|e| (e.name.clone(), e.version.clone()))
        } else {
            None
        };
        Ok(Page { entries, next })
    }

    async fn versions(&self, name: &str, include_deleted: bool) -> Result<Vec<CatalogEntry>> {
        let rows = sqlx::query(concat!(
            entry_select!(),
            " WHERE v.name = $1 AND ($2 = 1 OR v.status <> 'deleted') ORDER BY v.published_at, v.version"
        ))
        .bind(name)
        .bind(i64::from(include_deleted))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn version(&self, name: &str, version: &str) -> Result<Option<CatalogEntry>> {
        let row = if version == "latest" {
            sqlx::query(concat!(entry_select!(), " WHERE v.name = $1 AND v.is_latest = 1"))
                .bind(name)
                .fetch_optional(&self.read)
                .await?
        } else {
            sqlx::query(concat!(entry_select!(), " WHERE v.name = $1 AND v.version = $2"))
                .bind(name)
                .bind(version)
                .fetch_optional(&self.read)
                .await?
        };
        row.as_ref().map(entry_from_row).transpose()
    }

    async fn latest_entries(&self) -> Result<Vec<CatalogEntry>> {
        let rows =
            sqlx::query(concat!(entry_select!(), " WHERE v.is_latest = 1 AND v.status <> 'deleted' ORDER BY v.name"))
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn server_ext(&self, name: &str) -> Result<Option<ServerExt>> {
        let row = sqlx::query(EXT_SELECT).bind(name).fetch_optional(&self.read).await?;
        row.as_ref().map(ext_from_row).transpose()
    }

    async fn set_policy(&self, name: &str, policy: &PolicyDoc, actor: &str, now: DateTime<Utc>) -> Result<()> {
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        let rev = next_rev(&mut tx).await?;
        let doc = json_text(policy)?;
        let updated = sqlx::query(
            "UPDATE registry_servers SET policy = $2, owner_team = $3, service_identity = $4, policy_rev = $5, \
             updated_at = $6 WHERE name = $1",
        )
        .bind(name)
        .bind(&doc)
        .bind(&policy.owner.team)
        .bind(policy.service_identity.as_deref())
        .bind(rev)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("server {name}")));
        }
        let data = serde_json::to_value(policy).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        record_event(&mut tx, name, "policy.updated", Some(actor), &data, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_review(&self, name: &str, kind: ReviewKind, review: &Review, now: DateTime<Utc>) -> Result<()> {
        let now_ms = to_ms(now);
        let mut tx = self.begin_write().await?;
        let rev = next_rev(&mut tx).await?;
        let sql = match kind {
            ReviewKind::SecurityReview => {
                "UPDATE registry_servers SET security_review = $2, policy_rev = $3, updated_at = $4 WHERE name = $1"
            }
            ReviewKind::Production => {
                "UPDATE registry_servers SET production = $2, policy_rev = $3, updated_at = $4 WHERE name = $1"
            }
        };
        let updated =
            sqlx::query(sql).bind(name).bind(json_text(review)?).bind(rev).bind(now_ms).execute(&mut *tx).await?;
        if updated.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("server {name}")));
        }
        let data = json!({"review": kind.as_str(), "state": review.state, "note": review.note});
        record_event(&mut tx, name, "review.updated", review.by.as_deref(), &data, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_probe(
        &self,
        name: &str,
        probe: &ProbeReport<'_>,
        tools: Option<&[ToolSnapshot]>,
        now: DateTime<Utc>,
    ) -> Result<Option<ToolsChange>> {
        let mut tx = self.begin_write().await?;
        self.health_in(&mut tx, name, probe, now).await?;
        let change = match tools {
            Some(tools) => self.tools_in(&mut tx, name, tools, now).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(change)
    }

    async fn record_tools(
        &self,
        name: &str,
        tools: &[ToolSnapshot],
        now: DateTime<Utc>,
    ) -> Result<Option<ToolsChange>> {
        let mut tx = self.begin_write().await?;
        let change = self.tools_in(&mut tx, name, tools, now).await?;
        tx.commit().await?;
        Ok(change)
    }

    async fn events(&self, name: &str, after: i64, limit: i64) -> Result<Vec<RegistryEvent>> {
        let rows = sqlx::query(
            "SELECT id, server, kind, actor, data, at FROM registry_events WHERE server = $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(name)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RegistryEvent {
                    id: r.try_get("id")?,
                    server: r.try_get("server")?,
                    kind: r.try_get("kind")?,
                    actor: r.try_get("actor")?,
                    data: parse_json(&r.try_get::<String, _>("data")?)?,
                    at: from_ms(r.try_get("at")?),
                })
            })
            .collect()
    }
}

/// Takes the next policy revision (and, on PostgreSQL, the lock that orders them).
pub(crate) async fn next_rev(tx: &mut Transaction<'static, Any>) -> Result<i64> {
    Ok(sqlx::query_scalar("UPDATE registry_policy_rev SET rev = rev + 1 WHERE id = 1 RETURNING rev")
        .fetch_one(&mut **tx)
        .await?)
}

/// Marks the latest version of `name` (deleted versions never are), bumping the
/// `updated_at` of every version whose `isLatest` flips, and copies its status to the
/// server; a server whose every version is deleted is deleted.
async fn refresh_latest(tx: &mut Transaction<'static, Any>, name: &str, rev: i64, now_ms: i64) -> Result<()> {
    let rows = sqlx::query("SELECT version, status, published_at FROM registry_server_versions WHERE name = $1")
        .bind(name)
        .fetch_all(&mut **tx)
        .await?;
    let mut live = Vec::with_capacity(rows.len());
    for r in &rows {
        let status: String = r.try_get("status")?;
        if status != ServerStatus::Deleted.as_str() {
            live.push((r.try_get::<String, _>("version")?, status, r.try_get::<i64, _>("published_at")?));
        }
    }
    let latest = pick_latest(live.iter().map(|(v, _, p)| (v.as_str(), *p)));
    let status = latest
        .and_then(|l| live.iter().find(|(v, _, _)| v == l))
        .map_or(ServerStatus::Deleted.as_str(), |(_, s, _)| s.as_str());
    sqlx::query(
        "UPDATE registry_server_versions SET is_latest = CASE WHEN version = $2 THEN 1 ELSE 0 END, updated_at = $3 \
         WHERE name = $1 AND is_latest <> CASE WHEN version = $2 THEN 1 ELSE 0 END",
    )
    .bind(name)
    .bind(latest.unwrap_or_default())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE registry_servers SET latest_version = $2, status = $3, policy_rev = $4, updated_at = $5 WHERE name = $1",
    )
    .bind(name)
    .bind(latest)
    .bind(status)
    .bind(rev)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The parts of recording a probe, each inside a caller's transaction.
impl SqlStore {
    /// A probe's health, in `tx`; a status change is recorded as `health.changed`.
    async fn health_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        name: &str,
        probe: &ProbeReport<'_>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now_ms = to_ms(now);
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT health_status, health_checked_at, health_latency_ms, health_error, health_failures, \
                 health_since FROM registry_servers WHERE name = $1 FOR UPDATE"
            }
            Backend::Sqlite => {
                "SELECT health_status, health_checked_at, health_latency_ms, health_error, health_failures, \
                 health_since FROM registry_servers WHERE name = $1"
            }
        };
        let Some(row) = sqlx::query(sql).bind(name).fetch_optional(&mut **tx).await? else {
            return Err(CatalogError::NotFound(format!("server {name}")));
        };
        let (health, event) = next_health(&health_from_row(&row)?, probe, now);
        sqlx::query(
            "UPDATE registry_servers SET health_status = $2, health_checked_at = $3, health_latency_ms = $4, \
             health_error = $5, health_failures = $6, health_since = $7 WHERE name = $1",
        )
        .bind(name)
        .bind(health.status.as_str())
        .bind(now_ms)
        .bind(health.latency_ms.map(saturating_i64))
        .bind(health.error.as_deref())
        .bind(i64::from(health.consecutive_failures))
        .bind(health.since.map(to_ms))
        .execute(&mut **tx)
        .await?;
        if let Some(data) = event {
            record_event(tx, name, "health.changed", None, &data, now_ms).await?;
        }
        Ok(())
    }

    /// A probe's tool list, in `tx`; a changed list is recorded as `tools.changed`.
    async fn tools_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        name: &str,
        tools: &[ToolSnapshot],
        now: DateTime<Utc>,
    ) -> Result<Option<ToolsChange>> {
        let now_ms = to_ms(now);
        let sql = match self.backend {
            Backend::Postgres => "SELECT tools FROM registry_servers WHERE name = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT tools FROM registry_servers WHERE name = $1",
        };
        let Some(row) = sqlx::query(sql).bind(name).fetch_optional(&mut **tx).await? else {
            return Err(CatalogError::NotFound(format!("server {name}")));
        };
        let old: Option<Vec<ToolSnapshot>> =
            row.try_get::<Option<String>, _>(0)?.map(|t| parse_json(&t)).transpose()?;
        let change = diff_tools(old.as_deref(), tools);
        match &change {
            Some(change) => {
                sqlx::query(
                    "UPDATE registry_servers SET tools = $2, tools_seen_at = $3, tools_changed_at = $3 WHERE name = $1",
                )
                .bind(name)
                .bind(json_text(&tools)?)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
                let data = serde_json::to_value(change).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
                record_event(tx, name, "tools.changed", None, &data, now_ms).await?;
            }
            None => {
                sqlx::query("UPDATE registry_servers SET tools_seen_at = $2 WHERE name = $1")
                    .bind(name)
                    .bind(now_ms)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(change)
    }
}

async fn record_event(
    tx: &mut Transaction<'static, Any>,
    server: &str,
    kind: &str,
    actor: Option<&str>,
    data: &Value,
    now_ms: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO registry_events (server, kind, actor, data, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(server)
        .bind(kind)
        .bind(actor)
        .bind(data.to_string())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What `search` looks in: name, title and description, lower-cased.
fn search_text(s: &ServerJson) -> String {
    format!("{} {} {}", s.name, s.title.as_deref().unwrap_or_default(), s.description).to_lowercase()
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

fn entry_from_row(row: &AnyRow) -> Result<CatalogEntry> {
    let status: String = row.try_get("status")?;
    Ok(CatalogEntry {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        server: parse_json(&row.try_get::<String, _>("server_json")?)?,
        status: parse_status(&status)?,
        published_at: from_ms(row.try_get("published_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        is_latest: row.try_get::<i64, _>("is_latest")? == 1,
        ext: ext_from_row(row)?,
    })
}

fn parse_status(s: &str) -> Result<ServerStatus> {
    ServerStatus::parse(s).ok_or_else(|| CatalogError::Corrupt(format!("unknown status `{s}`")))
}

fn ext_from_row(row: &AnyRow) -> Result<ServerExt> {
    let policy: Option<PolicyDoc> = row.try_get::<Option<String>, _>("policy")?.map(|p| parse_json(&p)).transpose()?;
    let tools: Option<Vec<ToolSnapshot>> =
        row.try_get::<Option<String>, _>("tools")?.map(|t| parse_json(&t)).transpose()?;
    let opt_time =
        |name: &str| -> Result<Option<DateTime<Utc>>> { Ok(row.try_get::<Option<i64>, _>(name)?.map(from_ms)) };
    let (owner, service_identity, access, minutes_saved) = match policy {
        Some(p) => (Some(p.owner), p.service_identity, p.access, p.minutes_saved),
        None => (None, None, Default::default(), None),
    };
    Ok(ServerExt {
        status: parse_status(&row.try_get::<String, _>("server_status")?)?,
        latest_version: row.try_get("latest_version")?,
        owner,
        service_identity,
        security_review: parse_json(&row.try_get::<String, _>("security_review")?)?,
        production: parse_json(&row.try_get::<String, _>("production")?)?,
        access,
        minutes_saved: minutes_saved.unwrap_or(DEFAULT_MINUTES_SAVED),
        health: health_from_row(row)?,
        tools: ToolList {
            seen_at: opt_time("tools_seen_at")?,
            changed_at: opt_time("tools_changed_at")?,
            items: tools.unwrap_or_default(),
        },
        usage: UsageCounters {
            month: row.try_get("usage_month")?,
            invocations: row.try_get("usage_invocations")?,
            active_users: row.try_get("usage_users")?,
            total_invocations: row.try_get("usage_total")?,
        },
    })
}

fn health_from_row(row: &AnyRow) -> Result<Health> {
    let status: String = row.try_get("health_status")?;
    Ok(Health {
        status: HealthState::parse(&status)
            .ok_or_else(|| CatalogError::Corrupt(format!("unknown health status `{status}`")))?,
        checked_at: row.try_get::<Option<i64>, _>("health_checked_at")?.map(from_ms),
        latency_ms: row.try_get::<Option<i64>, _>("health_latency_ms")?.map(|l| u64::try_from(l).unwrap_or(0)),
        error: row.try_get("health_error")?,
        consecutive_failures: u32::try_from(row.try_get::<i64, _>("health_failures")?).unwrap_or(u32::MAX),
        since: row.try_get::<Option<i64>, _>("health_since")?.map(from_ms),
        stale: false,
    })
}
