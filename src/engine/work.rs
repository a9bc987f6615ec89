//! The seam where an investigation's real work plugs in.
//!
//! The runner owns leases, state and shutdown; an [`Investigator`] only investigates.
//! Later work (discovery, MCP sessions, playbooks, the planner) implements this trait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{EventBody, Input};
use crate::store::{InvestigationSummary, Store, StoreError};

/// What the work gets to see.
pub struct WorkContext {
    pub investigation: InvestigationSummary,
    pub store: Arc<dyn Store>,
    /// Where the work records what happens before it ends (a wait on a person).
    pub progress: Arc<dyn Progress>,
}

impl WorkContext {
    /// A context whose progress goes nowhere, for work run outside the runner.
    pub fn detached(investigation: InvestigationSummary, store: Arc<dyn Store>) -> WorkContext {
        WorkContext { investigation, store, progress: Arc::new(Unrecorded) }
    }
}

/// Records an input to the investigation's state machine while its work runs: the
/// resulting events and state are written at once, under the work's lease, so people
/// see them (an approval link) while the work waits.
#[async_trait]
pub trait Progress: Send + Sync {
    async fn record(&self, input: Input) -> Result<(), WorkError>;
}

/// Progress nobody keeps.
pub struct Unrecorded;

#[async_trait]
impl Progress for Unrecorded {
    async fn record(&self, _input: Input) -> Result<(), WorkError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Failed(String),
}

/// The result of investigating: events to append and a one-line summary.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOutcome {
    pub events: Vec<EventBody>,
    pub summary: String,
}

#[async_trait]
pub trait Investigator: Send + Sync + 'static {
    async fn investigate(&self, ctx: &WorkContext) -> Result<WorkOutcome, WorkError>;
}

/// Records the alert context and finishes. `delay` stands in for the time real work
/// takes, so leases, takeovers and shutdown can be observed before real work exists.
pub struct PlaceholderInvestigator {
    pub delay: Duration,
}

#[async_trait]
impl Investigator for PlaceholderInvestigator {
    async fn investigate(&self, ctx: &WorkContext) -> Result<WorkOutcome, WorkError> {
        let inv = &ctx.investigation;
        let alerts = ctx.store.episode_alerts(&inv.episode_id, 50).await?;
        let firing = alerts.iter().filter(|a| a.status == "firing").count();
        // Each label with the distinct values it takes across the episode's alerts.
        let mut labels: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
        for a in &alerts {
            for (k, v) in &a.labels {
                let values = labels.entry(k.as_str()).or_default();
                if !values.contains(&v.as_str()) {
                    values.push(v.as_str());
                }
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let summary = format!(
            "{} alert(s) ({} firing) for team {}{}; no investigators are configured yet, so only the context was recorded",
            alerts.len(),
            firing,
            inv.team,
            inv.service.as_deref().map(|s| format!(", service {s}")).unwrap_or_default(),
        );
        Ok(WorkOutcome {
            events: vec![EventBody::new(
                "context.recorded",
                json!({"alerts": alerts.len(), "firing": firing, "labels": labels}),
            )],
            summary,
        })
    }
}
