//! Durable state: alerts, episodes, investigations and their event logs.
//!
//! [`Store`] is the seam; [`SqlStore`] implements it over sqlx for SQLite (the embedded
//! default, WAL, `synchronous=FULL`) and PostgreSQL (production, several replicas).
//! The two differ in connection setup, migrations and how a claim excludes other
//! workers; everything else is shared SQL.

mod ingest;
pub(crate) mod sql;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::OnResolved;
use crate::engine::{EventBody, Limits, State};
use crate::intake::Delivery;

pub use sql::{Backend, SqlStore};

/// Everything a store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("sqlite: {0}")]
    Sqlite(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open the store at {url}: {reason}")]
    Open { url: String, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

impl From<serde_rusqlite::Error> for StoreError {
    fn from(e: serde_rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// One delivery to store, with the routing facts intake derived from its labels.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub delivery: Delivery,
    pub team: String,
    pub service: Option<String>,
    /// The request body exactly as received.
    pub body: String,
}

/// How intake folds deliveries into episodes.
#[derive(Debug, Clone)]
pub struct IngestPolicy {
    pub cooldown: Duration,
    pub on_resolved: OnResolved,
}

/// What happened to one delivery.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestOutcome {
    /// Ids of the delivery's alerts, new or already stored, in payload order.
    pub alert_ids: Vec<String>,
    pub episode_ids: Vec<String>,
    /// Alerts that were already stored (a redelivery).
    pub duplicates: usize,
    pub new_episodes: usize,
    pub new_investigations: Vec<String>,
}

/// A worker's hold on an investigation. `epoch` is the attempt number at claim time;
/// every write under the lease checks it, so a worker whose lease was taken over can
/// no longer change anything (fencing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub investigation_id: String,
    pub worker: String,
    pub epoch: i64,
}

/// An investigation a worker just claimed. The claim already recorded what the state
/// machine said about it (`investigation.started` or `.resumed`), in the same
/// transaction, so no attempt goes unlogged.
#[derive(Debug, Clone)]
pub struct Claim {
    pub lease: Lease,
    /// The state before the claim: `Queued`, or `Running` for a takeover.
    pub prior_state: State,
    pub previous_owner: Option<String>,
    /// Whether the machine said to start work (always, for the states claims take).
    pub start: bool,
    /// Failed attempts so far; shutdowns and takeovers are not failures.
    pub failures: i64,
    pub investigation: InvestigationSummary,
}

/// One step of a leased investigation, as the runner records it.
#[derive(Debug, Clone, Default)]
pub struct Transition<'a> {
    pub to: Option<State>,
    pub events: &'a [EventBody],
    /// Give the lease up (the work is done, failed, or handed back).
    pub release: bool,
    pub summary: Option<&'a str>,
    /// This step records a failed attempt.
    pub failure: bool,
}

impl<'a> Transition<'a> {
    pub fn to(state: State, events: &'a [EventBody]) -> Transition<'a> {
        Transition { to: Some(state), events, ..Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InvestigationSummary {
    pub id: String,
    pub episode_id: String,
    pub title: String,
    pub team: String,
    pub service: Option<String>,
    pub state: State,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    /// The worker holding the lease, while one does.
    pub worker: Option<String>,
    pub summary: Option<String>,
    pub alert_count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoredEvent {
    /// Position in the investigation's log, from 1; also the SSE event id.
    pub seq: i64,
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoredAlert {
    pub id: String,
    pub source: String,
    pub status: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct InvestigationFilter {
    pub state: Option<State>,
    pub team: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// What became of a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    NotFound,
    /// Recorded as event `seq`; the investigation is queued to answer it.
    Queued {
        seq: i64,
    },
    /// The investigation is in `State`, which takes no question now.
    Refused(State),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores deliveries in one transaction (group commit) and answers per delivery.
    /// When this returns, everything it reports is durable. The batch is taken by
    /// value so that a backend may hand it to another thread without copying it.
    async fn ingest(
        &self,
        batch: Vec<IngestRequest>,
        policy: &IngestPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<IngestOutcome>>;

    /// Takes up to `capacity` investigations (queued, or running with an expired lease)
    /// within the limits, for `worker`, until `now + ttl`.
    async fn claim(
        &self,
        worker: &str,
        capacity: usize,
        limits: &Limits,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>>;

    /// Extends a lease; `false` means it was lost (taken over or finished elsewhere).
    async fn renew(&self, lease: &Lease, ttl: Duration, now: DateTime<Utc>) -> Result<bool>;

    /// Applies `change` to a leased investigation, atomically and only if the lease
    /// still holds. `false`: the lease was lost, nothing was written.
    async fn transition(&self, lease: &Lease, change: &Transition<'_>, now: DateTime<Utc>) -> Result<bool>;

    async fn list_investigations(&self, filter: &InvestigationFilter) -> Result<Vec<InvestigationSummary>>;
    async fn investigation(&self, id: &str) -> Result<Option<InvestigationSummary>>;
    /// Events with `seq > after`, oldest first.
    async fn events(&self, investigation_id: &str, after: i64, limit: i64) -> Result<Vec<StoredEvent>>;
    async fn episode_alerts(&self, episode_id: &str, limit: i64) -> Result<Vec<StoredAlert>>;
    async fn count_by_state(&self) -> Result<Vec<(State, i64)>>;

    /// Records a follow-up question through the state machine: a finished (or queued)
    /// investigation is queued to answer it; one that is working refuses it for now.
    async fn ask(&self, investigation_id: &str, question: &crate::engine::Input, now: DateTime<Utc>) -> Result<Asked>;

    /// Ids of investigations whose logs grew in this process.
    fn subscribe(&self) -> broadcast::Receiver<String>;
    async fn ping(&self) -> Result<()>;
}

/// Milliseconds since the epoch, the stored form of every time.
pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
