//! The investigator the runner calls: the alert's context, then discovery, sessions to
//! the permitted servers, and the inquiry (playbook, then planner) over them.
//!
//! Discovery is a seam ([`Discovery`]): the registry's `/v0.1/x/servers/permitted`
//! in production, a fixed list in tests.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tracing::info;

use super::inquiry::{self, Setup};
use super::sessions::{Limits, SessionManager, Target};
use crate::engine::work::WorkOutcome;
use crate::engine::{EventBody, Investigator, PlaceholderInvestigator, WorkContext, WorkError};
use crate::planner::{Planner, ToolInfo};
use crate::playbook::{AlertContext, Playbook};

/// Which MCP servers an investigation for `team` may use.
#[async_trait]
pub trait Discovery: Send + Sync {
    async fn servers(&self, team: &str) -> Result<Vec<Target>, String>;
}

/// A fixed list, for tests and for deployments without a registry.
pub struct FixedDiscovery(pub Vec<Target>);

#[async_trait]
impl Discovery for FixedDiscovery {
    async fn servers(&self, _team: &str) -> Result<Vec<Target>, String> {
        Ok(self.0.clone())
    }
}

pub struct AgentInvestigator {
    pub playbooks: Vec<Playbook>,
    pub discovery: Arc<dyn Discovery>,
    pub limits: Limits,
    pub planner: Option<Arc<Planner>>,
    /// Extra time spent before the work (tests and demos of leases and shutdown).
    pub simulated_work: Duration,
}

#[async_trait]
impl Investigator for AgentInvestigator {
    async fn investigate(&self, ctx: &WorkContext) -> Result<WorkOutcome, WorkError> {
        let inv = &ctx.investigation;
        // What the alerts say comes first, whatever follows.
        let context = PlaceholderInvestigator { delay: self.simulated_work }.investigate(ctx).await?;
        let alerts = ctx.store.episode_alerts(&inv.episode_id, 1).await?;
        let alert = alerts
            .first()
            .map(|a| AlertContext { labels: a.labels.clone(), annotations: a.annotations.clone() })
            .unwrap_or_default();
        let has_playbook = self.playbooks.iter().any(|p| p.matches(&alert.labels, &alert.annotations));
        if !has_playbook && self.planner.is_none() {
            return Ok(WorkOutcome {
                events: context.events,
                summary: "no playbook matches this alert and no LLM is configured; only the context was recorded"
                    .into(),
            });
        }
        let mut events = context.events;
        let targets = match self.discovery.servers(&inv.team).await {
            Ok(t) => t,
            Err(why) => {
                events.push(EventBody::new("servers.unavailable", json!({"why": why})));
                return Ok(WorkOutcome { events, summary: format!("could not find the servers to ask: {why}") });
            }
        };
        events.push(EventBody::new(
            "servers.discovered",
            json!({"servers": targets.iter().map(|t| json!({"name": t.name, "url": t.url, "trusted": t.trusted})).collect::<Vec<_>>()}),
        ));
        let sessions = SessionManager::new(targets, self.limits.clone());
        let tools = match &self.planner {
            Some(_) => tool_infos(&sessions).await,
            None => Vec::new(),
        };
        let setup = Setup {
            alert: &alert,
            team: &inv.team,
            playbooks: &self.playbooks,
            caller: &sessions,
            tools: &tools,
            planner: self.planner.as_deref(),
            question: None,
        };
        let Some(outcome) = inquiry::investigate(setup).await else {
            return Ok(WorkOutcome { events, summary: "nothing to investigate with".into() });
        };
        info!(investigation = %inv.id, calls = outcome.calls.len(), root_cause = ?outcome.report.root_cause, "investigated");
        events.extend(outcome.events);
        Ok(WorkOutcome { events, summary: outcome.report.summary })
    }
}

/// The permitted tools as the planner sees them; annotations only from our servers.
pub async fn tool_infos(sessions: &SessionManager) -> Vec<ToolInfo> {
    sessions
        .tools()
        .await
        .into_iter()
        .map(|(name, tool)| {
            let server = name.split_once("__").map_or("", |(s, _)| s);
            let read_only = sessions.is_trusted(server)
                && tool.annotations.as_ref().and_then(|a| a.read_only_hint).unwrap_or(false);
            ToolInfo {
                name,
                description: tool.description.as_deref().unwrap_or_default().to_string(),
                parameters: serde_json::Value::Object((*tool.input_schema).clone()),
                read_only,
            }
        })
        .collect()
}
