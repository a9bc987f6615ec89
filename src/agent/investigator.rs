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

use super::approval::Approvals;
use super::inquiry::{self, Setup, Waits};
use super::sessions::{SessionManager, SessionPool, Target};
use crate::engine::work::WorkOutcome;
use crate::engine::{EventBody, Investigator, PlaceholderInvestigator, WorkContext, WorkError};
use crate::github::drafter::Proposed;
use crate::planner::{Planner, ToolInfo};
use crate::playbook::{AlertContext, Playbook};
use crate::store::StoredEvent;

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
    /// The process's sessions, shared by every investigation it runs.
    pub sessions: Arc<SessionPool>,
    pub planner: Option<Arc<Planner>>,
    /// Where calls that need a person's approval wait; none: they fail with the link.
    pub approvals: Option<Arc<dyn Approvals>>,
    /// Extra time spent before the work (tests and demos of leases and shutdown).
    pub simulated_work: Duration,
    /// Where token use, cost and tool calls are counted per team.
    pub metrics: Option<crate::telemetry::Metrics>,
    /// Where proposed changes become draft pull requests; none: they stay in the report.
    pub drafting: Option<Arc<crate::github::drafter::Drafting>>,
}

#[async_trait]
impl Investigator for AgentInvestigator {
    async fn investigate(&self, ctx: &WorkContext) -> Result<WorkOutcome, WorkError> {
        let inv = &ctx.investigation;
        let log = ctx.store.events(&inv.id, 0, 100_000).await?;
        let prior = Prior::read(&log);
        let alerts = ctx.store.episode_alerts(&inv.episode_id, 1).await?;
        let alert = alerts
            .first()
            .map(|a| AlertContext { labels: a.labels.clone(), annotations: a.annotations.clone() })
            .unwrap_or_default();

        // Taken up again for questions: answer them from what is known, nothing else.
        if let Some(report) = &prior.report {
            let mut sessions = None;
            let events = self.answer(ctx, &alert, &mut sessions, report, prior.calls, &prior.questions).await;
            let summary = inv.summary.clone().unwrap_or_default();
            return Ok(WorkOutcome { events, summary });
        }

        // What the alerts say comes first, whatever follows.
        let context = PlaceholderInvestigator { delay: self.simulated_work }.investigate(ctx).await?;
        let has_playbook = self.playbooks.iter().any(|p| p.matches(&alert.labels, &alert.annotations));
        if !has_playbook && self.planner.is_none() {
            let mut events = context.events;
            for (seq, question) in &prior.questions {
                events.push(EventBody::new(
                    "question.answered",
                    json!({"question_seq": seq, "question": question, "mode": "none",
                           "answer": "Nothing was investigated (no playbook matches this alert and no LLM is configured), so there is nothing to answer from."}),
                ));
            }
            // The context's own line (how many alerts, for whom), and why nothing more.
            let context_line = context.summary.split(';').next().unwrap_or_default();
            return Ok(WorkOutcome {
                events,
                summary: format!(
                    "{context_line}; no playbook matches this alert and no LLM is configured, so only the context was recorded"
                ),
            });
        }
        let mut events = context.events;
        let sessions = match self.sessions(&inv.team, &mut events).await {
            Some(s) => s,
            None => {
                let why = events.last().and_then(|e| e.data["why"].as_str()).unwrap_or_default().to_string();
                return Ok(WorkOutcome { events, summary: format!("could not find the servers to ask: {why}") });
            }
        };
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
            waits: self.waits(ctx),
            first_call: 1,
        };
        let Some(outcome) = inquiry::investigate(setup).await else {
            return Ok(WorkOutcome { events, summary: "nothing to investigate with".into() });
        };
        info!(investigation = %inv.id, calls = outcome.calls.len(), root_cause = ?outcome.report.root_cause, "investigated");
        if let Some(m) = &self.metrics {
            m.investigation_usage(&inv.team, &outcome.report);
        }
        events.extend(outcome.events);
        if let Some(drafting) = &self.drafting {
            let proposals: Vec<Proposed<'_>> = outcome
                .report
                .remediation
                .iter()
                .filter(|r| !r.edits.is_empty())
                .map(|r| Proposed { title: &r.title, description: r.description.as_deref(), edits: &r.edits })
                .collect();
            if !proposals.is_empty() {
                let summary = outcome.report.to_markdown();
                events.extend(drafting.propose(&inv.id, &summary, &proposals).await);
            }
        }
        // Questions asked while it waited in the queue.
        if !prior.questions.is_empty() {
            let markdown = outcome.report.to_markdown();
            let first = outcome.calls.len() + 1;
            let mut sessions = Some(sessions);
            events.extend(self.answer(ctx, &alert, &mut sessions, &markdown, first, &prior.questions).await);
        }
        Ok(WorkOutcome { events, summary: outcome.report.summary })
    }
}

impl AgentInvestigator {
    fn waits<'a>(&'a self, ctx: &'a WorkContext) -> Option<Waits<'a>> {
        self.approvals.as_deref().map(|approvals| Waits { approvals, progress: &*ctx.progress })
    }

    /// Sessions to the servers discovery permits for `team`; the discovery's answer
    /// (or why there is none) goes into `events`.
    async fn sessions(&self, team: &str, events: &mut Vec<EventBody>) -> Option<SessionManager> {
        match self.discovery.servers(team).await {
            Ok(targets) => {
                events.push(EventBody::new(
                    "servers.discovered",
                    json!({"servers": targets.iter().map(|t| json!({"name": t.name, "url": t.url, "trusted": t.trusted})).collect::<Vec<_>>()}),
                ));
                Some(self.sessions.manager(targets))
            }
            Err(why) => {
                events.push(EventBody::new("servers.unavailable", json!({"why": why})));
                None
            }
        }
    }

    /// Answers each question with the planner (which may call tools again), or, with
    /// no LLM configured, with the report as it stands. Calls are numbered on from
    /// `first_call` so citations stay unique in the log.
    async fn answer(
        &self,
        ctx: &WorkContext,
        alert: &AlertContext,
        sessions: &mut Option<SessionManager>,
        report: &str,
        mut first_call: usize,
        questions: &[(i64, String)],
    ) -> Vec<EventBody> {
        let mut events = Vec::new();
        for (seq, question) in questions {
            let Some(planner) = self.planner.as_deref() else {
                events.push(EventBody::new(
                    "question.answered",
                    json!({"question_seq": seq, "question": question, "mode": "report",
                           "answer": "No LLM is configured, so questions are answered with the report as it stands.",
                           "markdown": report}),
                ));
                continue;
            };
            if sessions.is_none() {
                *sessions = self.sessions(&ctx.investigation.team, &mut events).await;
            }
            let Some(s) = sessions.as_ref() else { continue };
            let tools = tool_infos(s).await;
            let setup = Setup {
                alert,
                team: &ctx.investigation.team,
                playbooks: &[],
                caller: s,
                tools: &tools,
                planner: Some(planner),
                question: Some((question.as_str(), report)),
                waits: self.waits(ctx),
                first_call,
            };
            let Some(outcome) = inquiry::investigate(setup).await else { continue };
            first_call += outcome.calls.len();
            if let Some(m) = &self.metrics {
                // An answer costs tokens; it saves no further manual minutes.
                let mut spent = outcome.report.clone();
                spent.root_cause = None;
                m.investigation_usage(&ctx.investigation.team, &spent);
            }
            let mut answered = outcome.report.to_json();
            answered["question_seq"] = json!(seq);
            answered["question"] = json!(question);
            answered["answer"] = json!(outcome.report.summary);
            answered["markdown"] = json!(outcome.report.to_markdown());
            // The calls it made, then the answer (not a second `report`).
            events.extend(outcome.events.into_iter().filter(|e| e.kind == "tool.called"));
            events.push(EventBody::new("question.answered", answered));
        }
        events
    }
}

/// What an investigation's log already holds (pure).
#[derive(Debug, Default, PartialEq)]
pub struct Prior {
    /// The last report, as Markdown.
    pub report: Option<String>,
    /// Questions not answered yet: their event's sequence number and text.
    pub questions: Vec<(i64, String)>,
    /// Tool calls made so far.
    pub calls: usize,
}

impl Prior {
    pub fn read(log: &[StoredEvent]) -> Prior {
        let mut prior = Prior::default();
        let mut answered = std::collections::BTreeSet::new();
        for e in log {
            match e.kind.as_str() {
                "report" => prior.report = e.data["markdown"].as_str().map(str::to_string),
                "tool.called" => prior.calls += 1,
                "question.asked" => {
                    prior.questions.push((e.seq, e.data["question"].as_str().unwrap_or_default().to_string()))
                }
                "question.answered" => {
                    answered.insert(e.data["question_seq"].as_i64().unwrap_or_default());
                }
                _ => {}
            }
        }
        prior.questions.retain(|(seq, _)| !answered.contains(seq));
        prior
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
