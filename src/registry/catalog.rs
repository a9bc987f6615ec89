//! The catalog: which MCP servers exist, in which versions, who owns them, how they
//! are governed, how healthy they are and which tools they advertise.
//!
//! The official v0.1 API (`/v0.1/servers...`, `/v0.1/publish`) serves each version's
//! `server.json` as published, with the official `_meta` beside it and our own data
//! under `_meta["dev.inquest/registry"]` ([`ServerExt`]). Governance writes live under
//! `/v0.1/x/servers/{name}/...` ([`routes`]).
//!
//! Governance, health, tools and usage belong to the server (its name), not to one
//! version: a new version keeps its server's reviews and policy. Every write that
//! changes a decision input (publish, status, policy, reviews) takes the next policy
//! revision, which is how every registry replica's [`super::authz::PolicyCache`]
//! learns about it.

mod routes;
mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use routes::{Failure, finish_ext, is_admin, parse_body};
pub use routes::{ListResponse, OfficialMeta, ResponseMeta, ServerResponse, routes};

use super::prober::{HealthStatus, ProbeOutcome, ProbeSink, ProbeTarget, ToolSnapshot};
use super::server_json::{ServerJson, Transport, Violation, validate};
use crate::clock::Clock;
use crate::policy::{Access, ReviewState, ServerStatus, is_valid_matcher};
use crate::store::StoreError;

/// Everything the catalog can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{name} {version} is already published")]
    Exists { name: String, version: String },
    #[error("no {0}")]
    NotFound(String),
    #[error("stored registry data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// Who owns a server and where to ask for help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_channel: Option<String>,
}

/// A server's governance, as an admin writes it (`PUT /v0.1/x/servers/{name}/policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub owner: Owner,
    /// The SPIFFE ID the server itself runs as: it alone may report the server's usage,
    /// and it may ask the registry about the principals calling it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_identity: Option<String>,
    #[serde(default)]
    pub access: Access,
    /// Minutes a successful call of an unlisted tool saves (default [`DEFAULT_MINUTES_SAVED`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes_saved: Option<u32>,
}

/// Minutes a successful tool call saves when the policy says nothing: Pinterest's
/// published figures (about 7,000 hours from 66,000 monthly calls) round to six.
pub const DEFAULT_MINUTES_SAVED: u32 = 6;

impl PolicyDoc {
    /// Every mistake in the document, each with its field.
    pub fn violations(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        if self.owner.team.trim().is_empty() || self.owner.team.len() > 100 {
            v.push(Violation::new("owner.team", "must be 1 to 100 characters long"));
        }
        if self.owner.support_channel.as_ref().is_some_and(|c| c.trim().is_empty() || c.len() > 200) {
            v.push(Violation::new("owner.support_channel", "must be 1 to 200 characters long"));
        }
        if let Some(id) = &self.service_identity
            && (!id.starts_with("spiffe://") || id.ends_with("/*") || !is_valid_matcher(id))
        {
            v.push(Violation::new("service_identity", "must be a SPIFFE ID (spiffe://trust-domain/path)"));
        }
        check_matchers("access.allowed", &self.access.allowed, &mut v);
        check_matchers("access.preview", &self.access.preview, &mut v);
        if let Some(a) = &self.access.default_approvers {
            check_approvers("access.default_approvers", a, &mut v);
        }
        for (tool, rule) in &self.access.tools {
            let at = format!("access.tools[\"{tool}\"]");
            if !is_valid_tool_name(tool) {
                v.push(Violation::new(&at, "tool names are 1 to 128 of A-Z a-z 0-9 _ . -"));
            }
            if let Some(allowed) = &rule.allowed {
                check_matchers(&format!("{at}.allowed"), allowed, &mut v);
            }
            if let Some(a) = &rule.approval {
                check_approvers(&format!("{at}.approval"), a, &mut v);
            }
            if rule.minutes_saved.is_some_and(|m| m > 24 * 60) {
                v.push(Violation::new(format!("{at}.minutes_saved"), "must be at most 1440"));
            }
        }
        if self.minutes_saved.is_some_and(|m| m > 24 * 60) {
            v.push(Violation::new("minutes_saved", "must be at most 1440"));
        }
        v
    }
}

fn check_matchers(field: &str, matchers: &[String], v: &mut Vec<Violation>) {
    for (i, m) in matchers.iter().enumerate() {
        if !is_valid_matcher(m) {
            v.push(Violation::new(
                format!("{field}[{i}]"),
                format!(
                    "`{m}` is not a principal matcher (*, group:<g>, user:<subject>, spiffe://..., spiffe://.../*)"
                ),
            ));
        }
    }
}

fn check_approvers(field: &str, a: &crate::policy::ApproverPolicy, v: &mut Vec<Violation>) {
    if a.approvers.is_empty() {
        v.push(Violation::new(format!("{field}.approvers"), "must name at least one approver"));
    }
    check_matchers(&format!("{field}.approvers"), &a.approvers, v);
    if a.required == 0 {
        v.push(Violation::new(format!("{field}.required"), "must be at least 1"));
    }
}

/// MCP tool names: 1 to 128 of `[A-Za-z0-9_.-]`.
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A review's outcome: who decided, when, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub state: ReviewState,
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Which review a write concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewKind {
    SecurityReview,
    Production,
}

impl ReviewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewKind::SecurityReview => "security_review",
            ReviewKind::Production => "production",
        }
    }
}

/// A server's health as the catalog shows it: never probed is `unknown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    #[default]
    Unknown,
    Healthy,
    Degraded,
    Unreachable,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unreachable => "unreachable",
        }
    }

    pub fn parse(s: &str) -> Option<HealthState> {
        [HealthState::Unknown, HealthState::Healthy, HealthState::Degraded, HealthState::Unreachable]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
}

impl From<HealthStatus> for HealthState {
    fn from(s: HealthStatus) -> HealthState {
        match s {
            HealthStatus::Healthy => HealthState::Healthy,
            HealthStatus::Degraded => HealthState::Degraded,
            HealthStatus::Unreachable => HealthState::Unreachable,
        }
    }
}

/// The last probe's result and how long the server has been in that state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub status: HealthState,
    pub checked_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// Probes in a row that were not healthy.
    pub consecutive_failures: u32,
    /// When the status last changed.
    pub since: Option<DateTime<Utc>>,
    /// No probe for three probe intervals: the prober itself may be stuck.
    pub stale: bool,
}

/// One probe's result, as the prober reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport<'a> {
    pub status: HealthStatus,
    pub latency_ms: Option<u64>,
    pub error: Option<&'a str>,
}

/// What a probe changes about a server's health, and the event to record when its
/// status changed (`health.changed`).
pub fn next_health(prev: &Health, probe: &ProbeReport<'_>, now: DateTime<Utc>) -> (Health, Option<Value>) {
    let status = HealthState::from(probe.status);
    let changed = status != prev.status;
    let health = Health {
        status,
        checked_at: Some(now),
        latency_ms: probe.latency_ms,
        error: probe.error.map(str::to_string),
        consecutive_failures: match probe.status {
            HealthStatus::Healthy => 0,
            HealthStatus::Degraded | HealthStatus::Unreachable => prev.consecutive_failures.saturating_add(1),
        },
        since: if changed { Some(now) } else { prev.since.or(Some(now)) },
        stale: false,
    };
    let event =
        changed.then(|| serde_json::json!({"from": prev.status.as_str(), "to": status.as_str(), "error": probe.error}));
    (health, event)
}

/// The server's live tools, as the prober last saw them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolList {
    /// When a probe last listed them; `None`: never.
    pub seen_at: Option<DateTime<Utc>>,
    /// When the list last changed.
    pub changed_at: Option<DateTime<Utc>>,
    pub items: Vec<ToolSnapshot>,
}

/// How a server's tool list changed (the `tools.changed` event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolsChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, different title, description or annotations.
    pub changed: Vec<String>,
}

/// Compares two tool lists by name; `None` when nothing changed. A first list (no
/// previous one) counts as all added.
pub fn diff_tools(old: Option<&[ToolSnapshot]>, new: &[ToolSnapshot]) -> Option<ToolsChange> {
    let old: BTreeMap<&str, &ToolSnapshot> = old.unwrap_or_default().iter().map(|t| (t.name.as_str(), t)).collect();
    let new_by_name: BTreeMap<&str, &ToolSnapshot> = new.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut change = ToolsChange::default();
    for (name, tool) in &new_by_name {
        match old.get(name) {
            None => change.added.push(name.to_string()),
            Some(before) if before != tool => change.changed.push(name.to_string()),
            Some(_) => {}
        }
    }
    change.removed = old.keys().filter(|n| !new_by_name.contains_key(*n)).map(|n| n.to_string()).collect();
    let empty = change.added.is_empty() && change.removed.is_empty() && change.changed.is_empty();
    (!empty).then_some(change)
}

/// Invocations of a server this month, as the catalog shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageCounters {
    /// `YYYY-MM`.
    pub month: Option<String>,
    pub invocations: i64,
    /// Distinct principals this month.
    pub active_users: i64,
    /// Invocations since the server was registered.
    pub total_invocations: i64,
}

impl UsageCounters {
    /// The counters as of `month`: stored counters of an earlier month count as zero.
    pub fn as_of(self, month: &str) -> UsageCounters {
        if self.month.as_deref() == Some(month) {
            self
        } else {
            UsageCounters { month: Some(month.to_string()), invocations: 0, active_users: 0, ..self }
        }
    }
}

/// Our data about a server, served as `_meta["dev.inquest/registry"]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerExt {
    /// The server's lifecycle (its latest version's status).
    pub status: ServerStatus,
    pub latest_version: Option<String>,
    /// `None` until an admin writes the server's policy.
    pub owner: Option<Owner>,
    pub service_identity: Option<String>,
    pub security_review: Review,
    pub production: Review,
    pub access: Access,
    pub minutes_saved: u32,
    pub health: Health,
    pub tools: ToolList,
    pub usage: UsageCounters,
}

/// One published version with everything the catalog knows about its server.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub name: String,
    pub version: String,
    /// The `server.json` as published.
    pub server: Value,
    pub status: ServerStatus,
    pub published_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_latest: bool,
    pub ext: ServerExt,
}

/// A page of the catalog, in (name, version) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Continue after this (name, version).
    pub after: Option<(String, String)>,
    pub limit: u32,
    /// Case-insensitive substring of the name, title or description.
    pub search: Option<String>,
    /// Only versions updated at or after this time.
    pub updated_since: Option<DateTime<Utc>>,
    pub latest_only: bool,
    pub include_deleted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entries: Vec<CatalogEntry>,
    /// Present when more entries follow.
    pub next: Option<(String, String)>,
}

/// One entry of a server's history (`registry_events`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistryEvent {
    pub id: i64,
    pub server: String,
    /// `server.published`, `version.status_changed`, `policy.updated`, `review.updated`,
    /// `health.changed`, `tools.changed`.
    pub kind: String,
    /// Who did it (`user:<subject>`, a SPIFFE ID); `None` for the prober.
    pub actor: Option<String>,
    pub data: Value,
    pub at: DateTime<Utc>,
}

/// The catalog's storage. [`crate::store::SqlStore`] implements it; tests may put a
/// fake in its place.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Adds a version (creating the server on its first version), recomputes which
    /// version is the latest, and records `server.published`.
    /// [`CatalogError::Exists`] when that version is already published.
    async fn publish(&self, server: &ServerJson, actor: &str, now: DateTime<Utc>) -> Result<CatalogEntry>;
    /// Sets a version's status, recomputes the latest version (deleted versions never
    /// are) and records `version.status_changed`.
    async fn set_status(
        &self,
        name: &str,
        version: &str,
        status: ServerStatus,
        message: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<CatalogEntry>;
    async fn list(&self, query: &ListQuery) -> Result<Page>;
    /// Every version of `name`, oldest first.
    async fn versions(&self, name: &str, include_deleted: bool) -> Result<Vec<CatalogEntry>>;
    /// One version, or the latest with `version == "latest"`.
    async fn version(&self, name: &str, version: &str) -> Result<Option<CatalogEntry>>;
    /// The latest version of every server that is not deleted.
    async fn latest_entries(&self) -> Result<Vec<CatalogEntry>>;
    /// A server's data without a version (its latest may be deleted).
    async fn server_ext(&self, name: &str) -> Result<Option<ServerExt>>;
    async fn set_policy(&self, name: &str, policy: &PolicyDoc, actor: &str, now: DateTime<Utc>) -> Result<()>;
    async fn set_review(&self, name: &str, kind: ReviewKind, review: &Review, now: DateTime<Utc>) -> Result<()>;
    /// Records a probe's result and, when given, the tools it listed, in one
    /// transaction (a reader never sees a probe's health without its tools). A status
    /// change is recorded as `health.changed`, a changed list as `tools.changed` and
    /// returned.
    async fn record_probe(
        &self,
        name: &str,
        probe: &ProbeReport<'_>,
        tools: Option<&[ToolSnapshot]>,
        now: DateTime<Utc>,
    ) -> Result<Option<ToolsChange>>;
    /// Records the tools a probe listed; a changed list is recorded as `tools.changed`
    /// and returned.
    async fn record_tools(&self, name: &str, tools: &[ToolSnapshot], now: DateTime<Utc>)
    -> Result<Option<ToolsChange>>;
    /// A server's history after event `after`, oldest first.
    async fn events(&self, name: &str, after: i64, limit: i64) -> Result<Vec<RegistryEvent>>;
}

/// Where the health prober puts its results: the catalog, at the clock's time.
pub struct ProbeRecorder {
    pub store: Arc<dyn CatalogStore>,
    pub clock: Arc<dyn Clock>,
}

#[async_trait]
impl ProbeSink for ProbeRecorder {
    /// Every server that is not deleted, at its latest version's first Streamable HTTP
    /// remote (else its first remote). Servers without remotes cannot be probed.
    async fn probe_targets(&self) -> std::result::Result<Vec<ProbeTarget>, String> {
        let entries = self.store.latest_entries().await.map_err(|e| e.to_string())?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let remotes = validate(&e.server).ok()?.remotes;
                let remote =
                    remotes.iter().find(|r| r.transport == Transport::StreamableHttp).or_else(|| remotes.first())?;
                Some(ProbeTarget { name: e.name, url: remote.url.clone() })
            })
            .collect())
    }

    async fn record_probe(&self, target: &ProbeTarget, outcome: &ProbeOutcome) -> std::result::Result<(), String> {
        let now = self.clock.now();
        let report = ProbeReport {
            status: outcome.status,
            latency_ms: Some(outcome.latency_ms),
            error: outcome.error.as_deref(),
        };
        // A probe nothing answered listed no tools: keep the last known list rather
        // than record every tool as removed.
        let tools = (!outcome.revisions.is_empty()).then_some(outcome.tools.as_slice());
        self.store.record_probe(&target.name, &report, tools, now).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Whether a last probe at `checked_at` is too old: the prober should have come by
/// three times since.
pub fn is_stale(checked_at: Option<DateTime<Utc>>, now: DateTime<Utc>, interval: Duration) -> bool {
    let limit = chrono::Duration::from_std(interval.saturating_mul(3)).unwrap_or(chrono::Duration::MAX);
    checked_at.is_some_and(|t| now.signed_duration_since(t) > limit)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::policy::{ApproverPolicy, ToolPolicy};

    fn tool(name: &str, title: &str) -> ToolSnapshot {
        ToolSnapshot { name: name.into(), title: Some(title.into()), description: None, annotations: Value::Null }
    }

    #[test]
    fn tool_diffs() {
        let a = tool("a", "A");
        let b = tool("b", "B");
        let b2 = tool("b", "B, renamed");
        let c = tool("c", "C");
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(diff_tools(Some(&[a.clone(), b.clone()]), &[b.clone(), a.clone()]), None);
        assert_eq!(
            diff_tools(None, std::slice::from_ref(&a)),
            Some(ToolsChange { added: names(&["a"]), ..Default::default() })
        );
        assert_eq!(
            diff_tools(Some(&[a.clone(), b]), &[b2, c]),
            Some(ToolsChange { added: names(&["c"]), removed: names(&["a"]), changed: names(&["b"]) })
        );
        assert_eq!(diff_tools(Some(&[]), &[]), None);
    }

    #[test]
    fn health_transitions() {
        let t = |s: i64| Utc.timestamp_opt(1_764_000_000 + s, 0).unwrap();
        let probe = |status, error| ProbeReport { status, latency_ms: Some(12), error };
        let (h1, e1) = next_health(&Health::default(), &probe(HealthStatus::Healthy, None), t(0));
        assert_eq!((h1.status, h1.consecutive_failures, h1.since), (HealthState::Healthy, 0, Some(t(0))));
        assert_eq!(e1.unwrap()["from"], "unknown");
        let (h2, e2) = next_health(&h1, &probe(HealthStatus::Healthy, None), t(30));
        assert_eq!((h2.since, e2), (Some(t(0)), None));
        let (h3, e3) = next_health(&h2, &probe(HealthStatus::Unreachable, Some("refused")), t(60));
        assert_eq!((h3.status, h3.consecutive_failures, h3.since), (HealthState::Unreachable, 1, Some(t(60))));
        assert_eq!(e3.unwrap(), serde_json::json!({"from": "healthy", "to": "unreachable", "error": "refused"}));
        let (h4, e4) = next_health(&h3, &probe(HealthStatus::Unreachable, Some("refused")), t(90));
        assert_eq!((h4.consecutive_failures, h4.since, e4), (2, Some(t(60)), None));
    }

    #[test]
    fn policy_documents_list_every_mistake() {
        let good = PolicyDoc {
            owner: Owner { team: "data-platform".into(), support_channel: Some("#data-platform".into()) },
            service_identity: Some("spiffe://td/server/airflow".into()),
            access: Access {
                allowed: vec!["group:data-eng".into()],
                tools: BTreeMap::from([(
                    "clear_task".into(),
                    ToolPolicy {
                        approval: Some(ApproverPolicy { approvers: vec!["group:oncall".into()], required: 1 }),
                        ..Default::default()
                    },
                )]),
                ..Default::default()
            },
            minutes_saved: Some(10),
        };
        assert_eq!(good.violations(), vec![]);
        let mut bad = good.clone();
        bad.owner.team = " ".into();
        bad.service_identity = Some("spiffe://td/server/*".into());
        bad.access.allowed.push("data-eng".into());
        bad.access.tools.insert("bad tool".into(), ToolPolicy::default());
        bad.access.tools.insert(
            "t".into(),
            ToolPolicy { approval: Some(ApproverPolicy { approvers: vec![], required: 0 }), ..Default::default() },
        );
        let fields: Vec<String> = bad.violations().into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "owner.team",
                "service_identity",
                "access.allowed[1]",
                "access.tools[\"bad tool\"]",
                "access.tools[\"t\"].approval.approvers",
                "access.tools[\"t\"].approval.required",
            ]
        );
    }

    #[test]
    fn usage_counters_roll_over_by_month() {
        let c = UsageCounters { month: Some("2026-02".into()), invocations: 5, active_users: 2, total_invocations: 9 };
        assert_eq!(c.clone().as_of("2026-02"), c);
        assert_eq!(
            c.as_of("2026-03"),
            UsageCounters { month: Some("2026-03".into()), invocations: 0, active_users: 0, total_invocations: 9 }
        );
    }
}
