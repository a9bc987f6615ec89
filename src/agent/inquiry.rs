//! One investigation's work, given its alert and a way to call tools: the playbook's
//! steps, then (when configured) the planner, ending in a [`Report`] whose claims
//! cite tool calls by id.
//!
//! Everything here goes through the [`ToolCaller`] seam, so the same code runs over
//! live MCP sessions (the investigator), recorded answers (`inquest eval`) and fakes.
//! Every call is recorded with an id (`c1`, `c2`, ...) that the events and the report
//! use to cite it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::approval::{Approvals, Decision};
use super::report::{Confidence, Evidence, Mode, Remedy, Report, Suspicious, Usage};
use super::untrusted;
use crate::engine::{EventBody, Input, Progress};
use crate::planner::{Brief, Plan, Planner, ToolInfo};
use crate::playbook::{self, AlertContext, Playbook, PlaybookRun, StepOutcome, ToolCaller};

/// Results longer than this are cut in the event log (the full result stays with the
/// server's audit record); the finding rules and the planner saw all of it.
const RESULT_CHARS: usize = 4_000;

/// One tool call as made.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub id: String,
    pub server: String,
    pub tool: String,
    pub args: Map<String, Value>,
    pub result: Result<Value, String>,
    pub millis: u64,
    /// Who asked for it: a playbook step's id, or `planner`.
    pub by: String,
}

impl CallRecord {
    /// `server__tool`, as the model and the playbooks name tools.
    pub fn tool_name(&self) -> String {
        format!("{}__{}", self.server, self.tool)
    }

    /// The `tool.called` event.
    pub fn event(&self) -> EventBody {
        let mut data = json!({
            "call_id": self.id, "tool": self.tool_name(), "args": self.args, "by": self.by, "millis": self.millis,
        });
        match &self.result {
            Ok(v) => {
                data["outcome"] = json!("ok");
                data["result"] = clip(v);
            }
            Err(e) => {
                data["outcome"] = json!("failed");
                data["error"] = json!(e);
            }
        }
        EventBody::new("tool.called", data)
    }
}

/// Where a call that needs a person's approval waits, and where the wait is recorded.
#[derive(Clone, Copy)]
pub struct Waits<'a> {
    pub approvals: &'a dyn Approvals,
    pub progress: &'a dyn Progress,
}

/// Wraps a [`ToolCaller`], numbering and keeping every call.
pub struct Recorder<'a> {
    inner: &'a dyn ToolCaller,
    /// Where calls that need a person wait; none: such a call fails with the link.
    waits: Option<Waits<'a>>,
    /// Ids are given when a call starts, so they follow the order calls were asked for.
    next: AtomicUsize,
    calls: Mutex<Vec<(usize, CallRecord)>>,
    by: Mutex<String>,
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a dyn ToolCaller) -> Recorder<'a> {
        Recorder {
            inner,
            waits: None,
            next: AtomicUsize::new(1),
            calls: Mutex::new(Vec::new()),
            by: Mutex::new(String::new()),
        }
    }

    /// Numbers calls from `c<first>`.
    pub fn numbered_from(self, first: usize) -> Recorder<'a> {
        self.next.store(first.max(1), Ordering::Relaxed);
        self
    }

    /// Calls that need a person's approval wait for it through `waits`.
    pub fn with_waits(mut self, waits: Option<Waits<'a>>) -> Recorder<'a> {
        self.waits = waits;
        self
    }

    /// Names who makes the calls from now on (`planner`, or a step id when set by `call_as`).
    pub fn attribute(&self, by: &str) {
        if let Ok(mut b) = self.by.lock() {
            *b = by.to_string();
        }
    }

    /// Calls and records, returning the call's id with its result.
    pub async fn call_as(
        &self,
        by: &str,
        server: &str,
        tool: &str,
        args: Map<String, Value>,
    ) -> (String, Result<Value, String>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("c{n}");
        let started = Instant::now();
        let result = self.call_waiting(&id, server, tool, &args).await;
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.push((
            n,
            CallRecord {
                id: id.clone(),
                server: server.into(),
                tool: tool.into(),
                args,
                result: result.clone(),
                millis,
                by: by.into(),
            },
        ));
        (id, result)
    }

    /// One call; when it needs a person's approval, the approval is recorded, waited
    /// for, and the call made again once it is given.
    async fn call_waiting(
        &self,
        id: &str,
        server: &str,
        tool: &str,
        args: &Map<String, Value>,
    ) -> Result<Value, String> {
        let failure = match self.inner.call_detailed(server, tool, args.clone()).await {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        let (Some(needed), Some(waits)) = (failure.approval.clone(), &self.waits) else {
            return Err(failure.message);
        };
        let requested = Input::ApprovalRequested {
            approval_id: needed.approval_id.clone(),
            url: needed.url.clone(),
            tool: format!("{server}__{tool}"),
            call_id: id.to_string(),
        };
        waits.progress.record(requested).await.map_err(|e| e.to_string())?;
        let decision = waits.approvals.decided(&needed).await;
        let settled = Input::ApprovalSettled {
            approval_id: needed.approval_id.clone(),
            outcome: decision.outcome().to_string(),
            call_id: id.to_string(),
        };
        waits.progress.record(settled).await.map_err(|e| e.to_string())?;
        match decision {
            Decision::Approved => self.inner.call_detailed(server, tool, args.clone()).await.map_err(|f| f.message),
            Decision::Refused(why) => Err(format!("not run: {why}")),
        }
    }

    /// The finished calls, in the order they were asked for.
    pub fn calls(&self) -> Vec<CallRecord> {
        let mut calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        calls.sort_by_key(|(n, _)| *n);
        calls.into_iter().map(|(_, c)| c).collect()
    }
}

#[async_trait]
impl ToolCaller for Recorder<'_> {
    async fn call(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, String> {
        let by = self.by.lock().map(|b| b.clone()).unwrap_or_default();
        self.call_as(&by, server, tool, args).await.1
    }
}

/// The playbook's results with the call ids of its steps.
pub struct PlaybookPart<'p> {
    pub playbook: &'p Playbook,
    pub run: PlaybookRun,
    /// Step id → call id, for the steps that were called.
    pub step_calls: Vec<(String, String)>,
}

impl PlaybookPart<'_> {
    pub fn call_of(&self, step: &str) -> Option<&str> {
        self.step_calls.iter().find(|(s, _)| s == step).map(|(_, c)| c.as_str())
    }
}

/// Runs `playbook` through `recorder`, matching each step to the call it made.
pub async fn run_playbook<'p>(
    playbook: &'p Playbook,
    alert: &AlertContext,
    recorder: &Recorder<'_>,
) -> PlaybookPart<'p> {
    recorder.attribute("playbook");
    let before = recorder.calls().len();
    let run = playbook::run(playbook, alert, recorder).await;
    let calls = recorder.calls();
    let mut unclaimed: Vec<&CallRecord> = calls[before..].iter().collect();
    let mut step_calls = Vec::new();
    for (step_id, outcome) in &run.steps {
        let args = match outcome {
            StepOutcome::Done { args, .. } | StepOutcome::Failed { args, .. } => args,
            StepOutcome::Skipped { .. } => continue,
        };
        let Some(step) = playbook.steps.iter().find(|s| &s.id == step_id) else { continue };
        if let Some(i) =
            unclaimed.iter().position(|c| c.server == step.server && c.tool == step.tool && &c.args == args)
        {
            step_calls.push((step_id.clone(), unclaimed.remove(i).id.clone()));
        }
    }
    PlaybookPart { playbook, run, step_calls }
}

/// The report from the playbook alone.
pub fn playbook_report(part: &PlaybookPart<'_>, mode: Mode) -> Report {
    let run = &part.run;
    // A finding cites its own step, then the steps its rule names, where they answered.
    let answered =
        |step: &&String| run.steps.iter().any(|(id, o)| id == *step && matches!(o, StepOutcome::Done { .. }));
    let evidence = run
        .findings
        .iter()
        .map(|f| {
            let steps = std::iter::once(&f.step).chain(f.cite.iter().filter(answered));
            let calls = steps.filter_map(|s| part.call_of(s)).map(str::to_string).collect();
            Evidence { claim: format!("{} (\"{}\")", f.summary, f.quote), calls }
        })
        .collect();
    // Rendered for this alert: the titles and paths people read are the real ones.
    let remediation = run
        .proposals
        .iter()
        .map(|p| Remedy {
            title: p.title.clone(),
            description: p.description.clone(),
            remediation: Some(p.id.clone()),
            files: p.edits.iter().map(|e| e.path().to_string()).collect(),
            edits: p.edits.clone(),
        })
        .collect();
    let done = run.steps.iter().filter(|(_, o)| matches!(o, StepOutcome::Done { .. })).count();
    let (summary, confidence) = match run.findings.first() {
        Some(f) => (f.summary.clone(), Confidence::High),
        None => (format!("no known cause found; {done} of {} steps answered", run.steps.len()), Confidence::Low),
    };
    let mut notes = run.proposal_errors.clone();
    for (id, outcome) in &run.steps {
        match outcome {
            StepOutcome::Failed { error, .. } => notes.push(format!("step `{id}` failed: {error}")),
            StepOutcome::Skipped { why } => notes.push(format!("step `{id}` was skipped: {why}")),
            StepOutcome::Done { .. } => {}
        }
    }
    Report {
        mode,
        playbook: Some(part.playbook.name.clone()),
        summary,
        root_cause: run.findings.first().map(|f| f.category.clone()),
        evidence,
        ruled_out: Vec::new(),
        remediation,
        confidence,
        suspicious: Vec::new(),
        stopped_by: None,
        notes,
        usage: Usage::default(),
        manual_minutes: Some(part.playbook.manual_minutes),
    }
}

/// Text in the calls' results that reads like instructions to the agent.
pub fn suspicious(calls: &[CallRecord]) -> Vec<Suspicious> {
    calls
        .iter()
        .filter_map(|c| c.result.as_ref().ok().map(|v| (c, v)))
        .flat_map(|(c, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            untrusted::scan(&text)
                .into_iter()
                .map(|f| Suspicious { call: c.id.clone(), quote: f.quote, why: f.why.to_string() })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The result as stored in the event log: whole, or its JSON text cut to a bound.
pub fn clip(result: &Value) -> Value {
    let text = result.to_string();
    if text.len() <= RESULT_CHARS {
        return result.clone();
    }
    let end = text.floor_char_boundary(RESULT_CHARS);
    json!({"truncated": true, "chars": text.len(), "head": &text[..end]})
}

/// The events of a finished inquiry: each call, each finding, the report.
pub fn events(calls: &[CallRecord], part: Option<&PlaybookPart<'_>>, report: &Report) -> Vec<EventBody> {
    let mut out: Vec<EventBody> = calls.iter().map(CallRecord::event).collect();
    if let Some(part) = part {
        for f in &part.run.findings {
            out.push(EventBody::new(
                "finding",
                json!({"rule": f.rule, "category": f.category, "summary": f.summary,
                       "evidence": {"step": f.step, "call_id": part.call_of(&f.step), "quote": f.quote}}),
            ));
        }
    }
    let mut data = report.to_json();
    data["markdown"] = json!(report.to_markdown());
    out.push(EventBody::new("report", data));
    out
}

/// What one inquiry works with.
pub struct Setup<'a> {
    pub alert: &'a AlertContext,
    pub team: &'a str,
    pub playbooks: &'a [Playbook],
    pub caller: &'a dyn ToolCaller,
    /// The permitted tools, for the planner.
    pub tools: &'a [ToolInfo],
    pub planner: Option<&'a Planner>,
    /// A follow-up question and the report it follows (Markdown).
    pub question: Option<(&'a str, &'a str)>,
    /// Where calls that need a person's approval wait.
    pub waits: Option<Waits<'a>>,
    /// The id number of the first call (`c<n>`): after an earlier run's calls, so
    /// citations stay unique in the investigation's log.
    pub first_call: usize,
}

/// What an inquiry found, and the events that tell it.
pub struct Outcome {
    pub events: Vec<EventBody>,
    pub report: Report,
    pub calls: Vec<CallRecord>,
}

/// The root-cause categories the playbooks know, each once, in order.
pub fn categories(playbooks: &[Playbook]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in playbooks.iter().flat_map(|p| p.findings.iter()) {
        if !out.contains(&f.category) {
            out.push(f.category.clone());
        }
    }
    out
}

/// Runs the alert's playbook, then the planner when there is one. `None` when there
/// is neither a playbook for the alert nor a planner: nothing to investigate with.
pub async fn investigate(setup: Setup<'_>) -> Option<Outcome> {
    let started = Instant::now();
    let chosen = setup.playbooks.iter().find(|p| p.matches(&setup.alert.labels, &setup.alert.annotations));
    if chosen.is_none() && setup.planner.is_none() {
        return None;
    }
    let recorder = Recorder::new(setup.caller).with_waits(setup.waits).numbered_from(setup.first_call);
    let mut head = Vec::new();
    if let Some(p) = chosen {
        head.push(EventBody::new(
            "playbook.chosen",
            json!({"playbook": p.name, "description": p.description, "manual_minutes": p.manual_minutes}),
        ));
    }
    let part = match chosen {
        Some(p) => Some(run_playbook(p, setup.alert, &recorder).await),
        None => None,
    };
    let mut report = match setup.planner {
        None => part.as_ref().map(|p| playbook_report(p, Mode::Playbook)),
        Some(planner) => {
            let brief = Brief {
                alert: setup.alert,
                team: setup.team,
                tools: setup.tools,
                playbook: part.as_ref(),
                categories: categories(setup.playbooks),
                question: setup.question,
                earlier_calls: setup.first_call.saturating_sub(1),
            };
            let plan = planner.run(brief, &recorder).await;
            head.push(EventBody::new(
                "planner.finished",
                json!({"turns": plan.spent.steps, "prompt_tokens": plan.spent.prompt_tokens,
                       "completion_tokens": plan.spent.completion_tokens, "cost_usd": plan.spent.cost_usd,
                       "stopped_by": plan.stopped_by, "failure": plan.failure}),
            ));
            Some(planned_report(plan, part.as_ref()))
        }
    }
    .unwrap_or_else(|| empty_report(Mode::Playbook));
    let calls = recorder.calls();
    report.suspicious = suspicious(&calls);
    if !report.suspicious.is_empty() {
        report.notes.push(
            "Some tool output reads like instructions to the agent (see Suspicious tool output); it was treated as data only."
                .into(),
        );
    }
    report.usage.tool_calls = u32::try_from(calls.len()).unwrap_or(u32::MAX);
    report.usage.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut events = head;
    events.extend(self::events(&calls, part.as_ref(), &report));
    Some(Outcome { events, report, calls })
}

/// The report from the planner's end, with the playbook's as the floor: a budget or a
/// failure leaves the playbook's findings standing, and says so.
fn planned_report(plan: Plan, part: Option<&PlaybookPart<'_>>) -> Report {
    let base = |mode| part.map(|p| playbook_report(p, mode)).unwrap_or_else(|| empty_report(mode));
    let mut report = match (plan.draft, plan.failure) {
        (Some(draft), _) => {
            let mut r = base(Mode::Planner);
            r.summary = draft.summary;
            if draft.root_cause.is_some() {
                r.root_cause = draft.root_cause;
            }
            // The model's evidence first; the playbook's findings stay cited as well.
            let mut evidence = draft.evidence;
            evidence.extend(r.evidence);
            r.evidence = evidence;
            r.ruled_out = draft.ruled_out;
            r.remediation.extend(draft.remediation);
            r.confidence = draft.confidence.unwrap_or(Confidence::Medium);
            r.notes.extend(draft.dropped);
            r
        }
        (None, Some(failure)) => {
            let mut r = base(Mode::PlaybookFallback);
            r.notes.push(format!("The planner could not finish ({failure}); this report is the playbook's alone."));
            r
        }
        (None, None) => {
            let mut r = base(Mode::Planner);
            if let Some(b) = plan.stopped_by {
                r.notes.push(format!(
                    "The {b} budget ran out before the planner reported; what the playbook found stands."
                ));
            }
            r
        }
    };
    report.stopped_by = plan.stopped_by.map(str::to_string);
    report.usage.model_turns = plan.spent.steps;
    report.usage.prompt_tokens = plan.spent.prompt_tokens;
    report.usage.completion_tokens = plan.spent.completion_tokens;
    report.usage.cost_usd = plan.spent.cost_usd;
    report
}

fn empty_report(mode: Mode) -> Report {
    Report {
        mode,
        playbook: None,
        summary: "no cause was found".into(),
        root_cause: None,
        evidence: Vec::new(),
        ruled_out: Vec::new(),
        remediation: Vec::new(),
        confidence: Confidence::Low,
        suspicious: Vec::new(),
        stopped_by: None,
        notes: Vec::new(),
        usage: Usage::default(),
        manual_minutes: None,
    }
}
