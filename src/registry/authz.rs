//! Authorization: the [`PolicyCache`] every decision reads, and the API that answers
//! "may this principal use this server (and tool)?" and "which servers may I use?".
//!
//! The decision itself is [`crate::policy::decide`], pure; this module only keeps its
//! inputs at hand. The cache holds every server's policy in memory, so a decision is a
//! map lookup and the pure function (no IO, no await). It learns about writes through
//! the policy revision: every write that changes a decision input stamps its server
//! with the next revision, and a refresh loads only the servers stamped after the
//! highest revision the cache has seen. The replica that wrote refreshes at once;
//! other replicas within `max_staleness` (one second by default) of their next request.
//!
//! Callers ask about themselves only: the principal decided about is the
//! authenticated caller (with the groups of its credential, not of the request body).
//! Admins may ask about anyone, and a server's own service identity may ask about the
//! principals calling it, since it is where the decision is enforced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use tracing::debug;

use super::RegistryState;
use super::catalog::{CatalogEntry, CatalogStore, Failure, Health, Owner, PolicyDoc, Review, is_admin, parse_body};
use crate::identity::{Authenticated, Principal};
use crate::policy::{self, ApproverPolicy, Decision, ServerPolicy, ServerStatus, UnlistedTools};
use crate::store::SqlStore;

/// Everything authorization can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored policy of {server} is corrupt: {reason}")]
    Corrupt { server: String, reason: String },
}

impl From<AuthzError> for Failure {
    fn from(e: AuthzError) -> Failure {
        Failure::Api(crate::web::ApiError::internal(e))
    }
}

/// One server's decision inputs, as the store holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub name: String,
    pub rev: i64,
    pub status: ServerStatus,
    pub security_review: Review,
    pub production: Review,
    /// `None` until an admin writes the server's policy (then nobody may use it).
    pub doc: Option<PolicyDoc>,
}

/// Where the cache reads policies. [`SqlStore`] implements it; tests may put a fake here.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The servers whose policy changed after revision `rev`, in revision order.
    async fn policies_since(&self, rev: i64) -> Result<Vec<StoredPolicy>, AuthzError>;
}

/// One server as the cache holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedServer {
    pub name: String,
    pub rev: i64,
    pub policy: ServerPolicy,
    pub owner: Option<Owner>,
    pub service_identity: Option<String>,
    /// Minutes a successful call of an unlisted tool saves.
    pub minutes_saved: u32,
}

impl CachedServer {
    fn from_stored(s: StoredPolicy) -> CachedServer {
        let (owner, service_identity, access, minutes) = match s.doc {
            Some(d) => (Some(d.owner), d.service_identity, d.access, d.minutes_saved),
            None => (None, None, Default::default(), None),
        };
        CachedServer {
            name: s.name,
            rev: s.rev,
            policy: ServerPolicy {
                status: s.status,
                security_review: s.security_review.state,
                production: s.production.state,
                access,
            },
            owner,
            service_identity,
            minutes_saved: minutes.unwrap_or(super::catalog::DEFAULT_MINUTES_SAVED),
        }
    }

    /// Minutes a successful call of `tool` saves: the tool's own figure, else the server's.
    pub fn minutes_saved_by(&self, tool: &str) -> u32 {
        self.policy.access.tools.get(tool).and_then(|t| t.minutes_saved).unwrap_or(self.minutes_saved)
    }
}

/// The registry's policy, in memory: every server's decision inputs.
pub struct PolicyCache {
    servers: RwLock<HashMap<String, Arc<CachedServer>>>,
    /// The highest revision loaded; held while loading, so loads never overlap.
    loaded_rev: tokio::sync::Mutex<i64>,
    /// When the store was last asked, in nanoseconds after `epoch` (0: never).
    checked_at: AtomicU64,
    epoch: Instant,
    max_staleness: Duration,
}

impl Default for PolicyCache {
    fn default() -> PolicyCache {
        PolicyCache::new(Duration::from_secs(1))
    }
}

impl PolicyCache {
    /// An empty cache that asks the store for changes at most every `max_staleness`.
    pub fn new(max_staleness: Duration) -> PolicyCache {
        PolicyCache {
            servers: RwLock::new(HashMap::new()),
            loaded_rev: tokio::sync::Mutex::new(0),
            checked_at: AtomicU64::new(0),
            epoch: Instant::now(),
            max_staleness,
        }
    }

    /// Loads every policy written since the last load. Writers call this right after
    /// their write, so their own next request sees it.
    pub async fn refresh(&self, store: &dyn PolicyStore) -> Result<(), AuthzError> {
        let mut rev = self.loaded_rev.lock().await;
        self.load(&mut rev, store).await
    }

    /// Refreshes when the last look at the store is older than `max_staleness`.
    pub async fn ensure_fresh(&self, store: &dyn PolicyStore) -> Result<(), AuthzError> {
        if self.is_fresh() {
            return Ok(());
        }
        let mut rev = self.loaded_rev.lock().await;
        // Another request may have refreshed while this one waited.
        if self.is_fresh() {
            return Ok(());
        }
        self.load(&mut rev, store).await
    }

    fn is_fresh(&self) -> bool {
        let checked = self.checked_at.load(Ordering::Acquire);
        checked != 0 && self.nanos_since_epoch().saturating_sub(checked) < self.max_staleness.as_nanos() as u64
    }

    fn nanos_since_epoch(&self) -> u64 {
        // Never 0, which means "never checked".
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    async fn load(&self, rev: &mut i64, store: &dyn PolicyStore) -> Result<(), AuthzError> {
        let started = self.nanos_since_epoch();
        let changed = store.policies_since(*rev).await?;
        if !changed.is_empty() {
            let mut servers = self.servers.write().unwrap_or_else(PoisonError::into_inner);
            for stored in changed {
                *rev = (*rev).max(stored.rev);
                debug!(server = %stored.name, rev = stored.rev, "policy loaded");
                servers.insert(stored.name.clone(), Arc::new(CachedServer::from_stored(stored)));
            }
        }
        self.checked_at.store(started, Ordering::Release);
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<CachedServer>>> {
        self.servers.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// One server's cached policy.
    pub fn get(&self, server: &str) -> Option<Arc<CachedServer>> {
        self.read().get(server).cloned()
    }

    /// Every cached server, in no particular order.
    pub fn servers(&self) -> Vec<Arc<CachedServer>> {
        self.read().values().cloned().collect()
    }

    /// The decision for `principal` on `server` (and `tool`); an unknown server is denied.
    pub fn decide(&self, server: &str, principal: &Principal, tool: Option<&str>) -> Decision {
        match self.read().get(server) {
            Some(s) => policy::decide(&s.policy, principal, tool),
            None => Decision::Deny { reason: "the registry knows no such server".to_string() },
        }
    }

    /// Who approves calls of `tool` on `server`, when they need approval: the tool's
    /// approvers if it is sensitive, the server's default approvers if the tool is
    /// unlisted and unlisted tools need approval, else `None`.
    pub fn approvers(&self, server: &str, tool: &str) -> Option<ApproverPolicy> {
        self.read().get(server).and_then(|s| s.policy.approvers(tool).cloned())
    }

    /// The server's sensitive tools with their approvers, by name.
    pub fn sensitive_tools(&self, server: &str) -> Vec<(String, ApproverPolicy)> {
        self.read()
            .get(server)
            .map(|s| s.policy.sensitive_tools().map(|(name, a)| (name.to_string(), a.clone())).collect())
            .unwrap_or_default()
    }

    /// The SPIFFE ID the server runs as, when its policy names one.
    pub fn service_identity(&self, server: &str) -> Option<String> {
        self.read().get(server).and_then(|s| s.service_identity.clone())
    }

    /// Whether any approver policy (of any tool, or any server's unlisted tools) names
    /// `principal`.
    pub fn is_approver(&self, principal: &Principal) -> bool {
        self.read().values().any(|s| {
            let access = &s.policy.access;
            let defaults =
                access.default_approvers.iter().filter(|_| access.unlisted_tools == UnlistedTools::NeedsApproval);
            s.policy
                .sensitive_tools()
                .map(|(_, a)| a)
                .chain(defaults)
                .any(|a| policy::any_matches(&a.approvers, principal))
        })
    }
}

#[async_trait]
impl PolicyStore for SqlStore {
    async fn policies_since(&self, rev: i64) -> Result<Vec<StoredPolicy>, AuthzError> {
        let rows = sqlx::query(
            "SELECT name, policy_rev, status, policy, security_review, production FROM registry_servers \
             WHERE policy_rev > $1 ORDER BY policy_rev",
        )
        .bind(rev)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get("name")?;
                let corrupt = |reason: String| AuthzError::Corrupt { server: name.clone(), reason };
                let status: String = r.try_get("status")?;
                let json = |col: &str| -> Result<String, AuthzError> { Ok(r.try_get::<String, _>(col)?) };
                Ok(StoredPolicy {
                    rev: r.try_get("policy_rev")?,
                    status: ServerStatus::parse(&status).ok_or_else(|| corrupt(format!("status `{status}`")))?,
                    security_review: serde_json::from_str(&json("security_review")?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    production: serde_json::from_str(&json("production")?).map_err(|e| corrupt(e.to_string()))?,
                    doc: r
                        .try_get::<Option<String>, _>("policy")?
                        .map(|p| serde_json::from_str(&p))
                        .transpose()
                        .map_err(|e| corrupt(e.to_string()))?,
                    name,
                })
            })
            .collect()
    }
}

pub fn routes() -> Router<RegistryState> {
    Router::new().route("/v0.1/x/authz/check", post(check)).route("/v0.1/x/servers/permitted", get(permitted))
}

/// `POST /v0.1/x/authz/check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Whom to decide about; absent: the caller.
    #[serde(default)]
    pub principal: Option<Principal>,
    pub server: String,
    #[serde(default)]
    pub tool: Option<String>,
}

async fn check(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    body: Bytes,
) -> Result<Json<Decision>, Failure> {
    let req: CheckRequest = parse_body(&body)?;
    state.policy.ensure_fresh(&*state.store).await?;
    let subject = subject_of(&state, caller, req.principal, &req.server)?;
    let decision = state.policy.decide(&req.server, &subject, req.tool.as_deref());
    debug!(
        server = %req.server,
        tool = req.tool.as_deref().unwrap_or(""),
        principal = %subject.id(),
        decision = decision.kind(),
        "authorization checked"
    );
    Ok(Json(decision))
}

/// The principal a check is about; see the module documentation for who may ask what.
fn subject_of(
    state: &RegistryState,
    caller: Principal,
    asked: Option<Principal>,
    server: &str,
) -> Result<Principal, Failure> {
    let Some(asked) = asked else { return Ok(caller) };
    if asked.id() == caller.id() {
        // Groups come from the credential, never from what the caller claims.
        return Ok(caller);
    }
    let is_the_server = match &caller {
        Principal::Service { spiffe_id } => state.policy.service_identity(server).is_some_and(|id| &id == spiffe_id),
        Principal::User { .. } => false,
    };
    if is_the_server || is_admin(&state.config, &caller) {
        Ok(asked)
    } else {
        Err(Failure::forbidden("you may ask about yourself only"))
    }
}

#[derive(Debug, Deserialize)]
struct PermittedParams {
    team: Option<String>,
}

/// `GET /v0.1/x/servers/permitted`: what the caller may use.
#[derive(Debug, Serialize)]
pub struct PermittedResponse {
    pub principal: String,
    pub team: Option<String>,
    pub count: usize,
    pub servers: Vec<PermittedServer>,
}

#[derive(Debug, Serialize)]
pub struct PermittedServer {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub version: String,
    pub status: ServerStatus,
    /// The latest version's `remotes`, as published: how to connect.
    pub remotes: Value,
    pub owner: Option<Owner>,
    pub health: Health,
    #[serde(flatten)]
    pub decision: Decision,
    /// The tools the caller may use (directly or with approval), from the live
    /// snapshot and the policy's list.
    pub tools: Vec<PermittedTool>,
}

#[derive(Debug, Serialize)]
pub struct PermittedTool {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// As the server advertised them (hints only); `null` when not seen live yet.
    pub annotations: Value,
    #[serde(flatten)]
    pub decision: Decision,
}

/// `?team=T` keeps what team `T` may use as well (its members, as `group:T`): an agent
/// working on team T's alert then reaches nothing that team could not reach itself.
async fn permitted(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    params: Result<Query<PermittedParams>, QueryRejection>,
) -> Result<Json<PermittedResponse>, Failure> {
    let team = params.map_err(|e| Failure::bad_request("(query)", e.body_text()))?.0.team.filter(|t| !t.is_empty());
    state.policy.ensure_fresh(&*state.store).await?;
    let team_principal =
        team.as_ref().map(|t| Principal::User { subject: format!("team:{t}"), groups: vec![t.clone()], name: None });
    let now = state.clock.now();
    let mut servers = Vec::new();
    for entry in state.store.latest_entries().await? {
        let Some(cached) = state.policy.get(&entry.name) else { continue };
        let decide = |tool: Option<&str>| {
            let own = policy::decide(&cached.policy, &caller, tool);
            match &team_principal {
                Some(t) => stricter(own, policy::decide(&cached.policy, t, tool)),
                None => own,
            }
        };
        let decision = decide(None);
        if decision.is_deny() {
            continue;
        }
        let tools = permitted_tools(&entry, &cached.policy, decide);
        servers.push(permitted_server(&state, entry, decision, tools, now));
    }
    debug!(principal = %caller.id(), team = team.as_deref().unwrap_or(""), servers = servers.len(), "permitted listed");
    Ok(Json(PermittedResponse { principal: caller.id(), team, count: servers.len(), servers }))
}

fn permitted_tools(
    entry: &CatalogEntry,
    policy: &ServerPolicy,
    decide: impl Fn(Option<&str>) -> Decision,
) -> Vec<PermittedTool> {
    let live = &entry.ext.tools.items;
    let mut tools: Vec<PermittedTool> = live
        .iter()
        .map(|t| PermittedTool {
            name: t.name.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            annotations: t.annotations.clone(),
            decision: decide(Some(&t.name)),
        })
        .collect();
    for name in policy.access.tools.keys().filter(|n| !live.iter().any(|t| &t.name == *n)) {
        tools.push(PermittedTool {
            name: name.clone(),
            title: None,
            description: None,
            annotations: Value::Null,
            decision: decide(Some(name)),
        });
    }
    tools.retain(|t| !t.decision.is_deny());
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    tools
}

fn permitted_server(
    state: &RegistryState,
    entry: CatalogEntry,
    decision: Decision,
    tools: Vec<PermittedTool>,
    now: chrono::DateTime<chrono::Utc>,
) -> PermittedServer {
    let text = |key: &str| entry.server.get(key).and_then(Value::as_str).map(str::to_string);
    let ext = super::catalog::finish_ext(state, entry.ext.clone(), now);
    PermittedServer {
        title: text("title"),
        description: text("description"),
        remotes: entry.server.get("remotes").cloned().unwrap_or_else(|| Value::Array(Vec::new())),
        name: entry.name,
        version: entry.version,
        status: entry.status,
        owner: ext.owner,
        health: ext.health,
        decision,
        tools,
    }
}

/// The stricter of two decisions: deny over needing approval over allow.
fn stricter(a: Decision, b: Decision) -> Decision {
    let rank = |d: &Decision| match d {
        Decision::Allow { .. } => 0,
        Decision::NeedsApproval { .. } => 1,
        Decision::Deny { .. } => 2,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::policy::{Access, ReviewState, ToolPolicy};

    /// A store that hands out what the test put in, counting the calls.
    #[derive(Default)]
    struct FakeStore {
        rows: Mutex<Vec<StoredPolicy>>,
        calls: AtomicU64,
    }

    #[async_trait]
    impl PolicyStore for FakeStore {
        async fn policies_since(&self, rev: i64) -> Result<Vec<StoredPolicy>, AuthzError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.rows.lock().unwrap().iter().filter(|r| r.rev > rev).cloned().collect())
        }
    }

    fn approved() -> Review {
        Review { state: ReviewState::Approved, ..Default::default() }
    }

    fn stored(name: &str, rev: i64, allowed: &[&str]) -> StoredPolicy {
        let approvers = ApproverPolicy { approvers: vec!["group:oncall".into()], required: 1 };
        StoredPolicy {
            name: name.into(),
            rev,
            status: ServerStatus::Active,
            security_review: approved(),
            production: approved(),
            doc: Some(PolicyDoc {
                owner: Owner { team: "data-platform".into(), support_channel: None },
                service_identity: Some(format!("spiffe://td/server/{name}")),
                access: Access {
                    allowed: allowed.iter().map(|s| s.to_string()).collect(),
                    tools: [
                        ("clear".to_string(), ToolPolicy { approval: Some(approvers), ..Default::default() }),
                        ("logs".to_string(), ToolPolicy { minutes_saved: Some(15), ..Default::default() }),
                    ]
                    .into(),
                    ..Default::default()
                },
                minutes_saved: None,
            }),
        }
    }

    #[tokio::test]
    async fn loads_changes_by_revision_and_throttles() {
        let store = FakeStore::default();
        store.rows.lock().unwrap().push(stored("a", 1, &["group:x"]));
        let cache = PolicyCache::new(Duration::from_secs(3600));
        let x = Principal::user("u", &["x"]);
        assert!(cache.decide("a", &x, None).is_deny(), "nothing loaded yet");
        cache.ensure_fresh(&store).await.unwrap();
        assert_eq!(cache.decide("a", &x, None).kind(), "allow");
        // A write elsewhere: a throttled check does not see it, a refresh does.
        store.rows.lock().unwrap().push(stored("a", 2, &["group:y"]));
        cache.ensure_fresh(&store).await.unwrap();
        assert_eq!(store.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.decide("a", &x, None).kind(), "allow");
        cache.refresh(&store).await.unwrap();
        assert!(cache.decide("a", &x, None).is_deny());
        assert_eq!(cache.get("a").unwrap().rev, 2);
    }

    #[tokio::test]
    async fn lookups_for_approvals_and_usage() {
        let store = FakeStore::default();
        store.rows.lock().unwrap().push(stored("a", 1, &["*"]));
        let cache = PolicyCache::default();
        cache.refresh(&store).await.unwrap();
        assert_eq!(cache.approvers("a", "clear").unwrap().approvers, ["group:oncall"]);
        assert_eq!(cache.approvers("a", "logs"), None);
        assert_eq!(cache.approvers("nope", "clear"), None);
        assert_eq!(cache.sensitive_tools("a").len(), 1);
        assert_eq!(cache.service_identity("a").as_deref(), Some("spiffe://td/server/a"));
        assert!(cache.is_approver(&Principal::user("o", &["oncall"])));
        assert!(!cache.is_approver(&Principal::user("o", &["other"])));
        let a = cache.get("a").unwrap();
        assert_eq!((a.minutes_saved_by("logs"), a.minutes_saved_by("clear")), (15, 6));
    }

    #[test]
    fn stricter_wins() {
        let allow = Decision::Allow { reason: "a".into() };
        let deny = Decision::Deny { reason: "d".into() };
        let ask = Decision::NeedsApproval {
            reason: "n".into(),
            approvers: ApproverPolicy { approvers: vec!["*".into()], required: 1 },
        };
        assert_eq!(stricter(allow.clone(), ask.clone()), ask);
        assert_eq!(stricter(ask.clone(), deny.clone()), deny);
        assert_eq!(stricter(deny.clone(), allow.clone()), deny);
        assert_eq!(stricter(allow.clone(), allow.clone()), allow);
    }

    #[test]
    fn decisions_are_fast() {
        // The benchmark target is 10 µs per in-process decision; this guards an order
        // of magnitude in a debug build.
        let cache = PolicyCache::default();
        cache.servers.write().unwrap().insert("a".into(), Arc::new(CachedServer::from_stored(stored("a", 1, &["*"]))));
        let p = Principal::user("u", &["x"]);
        let started = Instant::now();
        for _ in 0..10_000 {
            std::hint::black_box(cache.decide("a", &p, Some("clear")));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{:?} for 10,000 decisions", started.elapsed());
    }
}
