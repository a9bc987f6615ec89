//! The playbook path of an investigation: the alert's playbook, run over sessions to
//! the servers discovery permits, recorded as events (what was called, what came
//! back, what was found) and summed up in a report.
//!
//! Discovery is a seam ([`Discovery`]): the registry's `/v0.1/x/servers/permitted`
//! in production, a fixed list in tests.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::info;

use super::sessions::{Limits, SessionManager, Target};
use crate::engine::work::WorkOutcome;
use crate::engine::{EventBody, Investigator, WorkContext, WorkError};
use crate::playbook::{self, AlertContext, Playbook, PlaybookRun, StepOutcome};

/// Results longer than this are cut in the event log (the full result stays with the
/// server's audit record); the finding rules saw all of it.
const RESULT_CHARS: usize = 4_000;

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

pub struct PlaybookInvestigator {
    pub playbooks: Vec<Playbook>,
    pub discovery: Arc<dyn Discovery>,
    pub limits: Limits,
}

#[async_trait]
impl Investigator for PlaybookInvestigator {
    async fn investigate(&self, ctx: &WorkContext) -> Result<WorkOutcome, WorkError> {
        let inv = &ctx.investigation;
        let alerts = ctx.store.episode_alerts(&inv.episode_id, 1).await?;
        let alert = alerts
            .first()
            .map(|a| AlertContext { labels: a.labels.clone(), annotations: a.annotations.clone() })
            .unwrap_or_default();
        let mut events = Vec::new();
        let Some(chosen) = self.playbooks.iter().find(|p| p.matches(&alert.labels, &alert.annotations)) else {
            events.push(EventBody::new("playbook.none", json!({"labels": alert.labels})));
            return Ok(WorkOutcome {
                events,
                summary: "no playbook matches this alert; nothing was investigated".into(),
            });
        };
        events.push(EventBody::new(
            "playbook.chosen",
            json!({"playbook": chosen.name, "description": chosen.description, "manual_minutes": chosen.manual_minutes}),
        ));
        let targets = match self.discovery.servers(&inv.team).await {
            Ok(t) => t,
            Err(why) => {
                events.push(EventBody::new("servers.unavailable", json!({"why": why})));
                return Ok(WorkOutcome { events, summary: format!("could not find the servers to ask: {why}") });
            }
        };
        events.push(EventBody::new(
            "servers.discovered",
            json!({"servers": targets.iter().map(|t| json!({"name": t.name, "url": t.url})).collect::<Vec<_>>()}),
        ));
        let sessions = SessionManager::new(targets, self.limits.clone());
        let run = playbook::run(chosen, &alert, &sessions).await;
        info!(investigation = %inv.id, playbook = %chosen.name, findings = run.findings.len(), "playbook ran");
        let summary = summary(&run);
        events.extend(run_events(chosen, &run));
        events.push(EventBody::new("report", report(chosen, &run, &summary)));
        Ok(WorkOutcome { events, summary })
    }
}

fn summary(run: &PlaybookRun) -> String {
    match run.findings.first() {
        Some(f) => f.summary.clone(),
        None => {
            let done = run.steps.iter().filter(|(_, o)| matches!(o, StepOutcome::Done { .. })).count();
            format!("no known cause found; {done} of {} steps answered", run.steps.len())
        }
    }
}

/// One event per step, then one per finding. Tool calls are named `server__tool`.
fn run_events(p: &Playbook, run: &PlaybookRun) -> Vec<EventBody> {
    let mut events = Vec::new();
    for (id, outcome) in &run.steps {
        let tool = p.steps.iter().find(|s| &s.id == id).map(|s| format!("{}__{}", s.server, s.tool));
        let data = match outcome {
            StepOutcome::Done { args, result } => {
                json!({"step": id, "tool": tool, "args": args, "outcome": "ok", "result": clip(result)})
            }
            StepOutcome::Failed { args, error } => {
                json!({"step": id, "tool": tool, "args": args, "outcome": "failed", "error": error})
            }
            StepOutcome::Skipped { why } => json!({"step": id, "tool": tool, "outcome": "skipped", "why": why}),
        };
        events.push(EventBody::new("tool.called", data));
    }
    for f in &run.findings {
        events.push(EventBody::new(
            "finding",
            json!({"rule": f.rule, "category": f.category, "summary": f.summary, "evidence": {"step": f.step, "quote": f.quote}}),
        ));
    }
    events
}

fn report(p: &Playbook, run: &PlaybookRun, summary: &str) -> Value {
    let remediations: Vec<Value> = p
        .remediations
        .iter()
        .filter(|r| run.remediations.contains(&r.id))
        .map(|r| json!({"id": r.id, "title": r.title, "description": r.description, "files": r.files.iter().map(|f| &f.path).collect::<Vec<_>>()}))
        .collect();
    json!({
        "mode": "playbook",
        "playbook": p.name,
        "summary": summary,
        "root_cause": run.findings.first().map(|f| &f.category),
        "findings": run.findings.iter().map(|f| json!({"category": f.category, "summary": f.summary, "evidence": [f.step]})).collect::<Vec<_>>(),
        "remediations": remediations,
        "manual_minutes": p.manual_minutes,
    })
}

/// The result as stored in the event log: whole, or its JSON text cut to a bound.
fn clip(result: &Value) -> Value {
    let text = result.to_string();
    if text.len() <= RESULT_CHARS {
        return result.clone();
    }
    let mut end = RESULT_CHARS;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    json!({"truncated": true, "chars": text.len(), "head": &text[..end]})
}
