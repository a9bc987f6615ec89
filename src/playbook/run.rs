//! Running a playbook's steps: arguments rendered from the alert and earlier results,
//! every step whose inputs are ready called at once, then the finding rules.
//!
//! The calls go through [`ToolCaller`], the seam the MCP session manager fills; tests
//! put a fake there. Rendering and findings are pure; only `run` awaits.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use minijinja::Environment;
use minijinja::value::Serde;
use serde::Serialize;
use serde_json::{Map, Value};

use super::check::{Edit, Playbook, Remediation, Step};
use super::findings::Match;

/// Calls one tool on one server. `Err` carries a message a person can act on.
#[async_trait]
pub trait ToolCaller: Send + Sync {
    async fn call(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, String>;

    /// As [`ToolCaller::call`], saying when the call waits for a person's approval.
    async fn call_detailed(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, CallFailure> {
        self.call(server, tool, args).await.map_err(|message| CallFailure { message, approval: None })
    }
}

/// A call that did not answer: why, and the approval it waits for, if that is why.
#[derive(Debug, Clone, PartialEq)]
pub struct CallFailure {
    pub message: String,
    pub approval: Option<crate::agent::approval::ApprovalNeeded>,
}

/// What the templates see of the alert.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertContext {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// What became of one step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Done {
        args: Map<String, Value>,
        result: Value,
    },
    Failed {
        args: Map<String, Value>,
        error: String,
    },
    /// Not called: an argument could not be made, or a step it needs did not succeed.
    Skipped {
        why: String,
    },
}

/// A finding with the evidence it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: String,
    pub category: String,
    pub summary: String,
    /// The step whose result it was found in, and the text that matched.
    pub step: String,
    pub quote: String,
    /// Further steps that support it.
    pub cite: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookRun {
    pub playbook: String,
    /// In the playbook's order.
    pub steps: Vec<(String, StepOutcome)>,
    pub findings: Vec<Finding>,
    /// Remediations all of whose findings were made.
    pub remediations: Vec<String>,
    /// Those remediations rendered for this alert: what a pull request would change.
    pub proposals: Vec<Proposal>,
    /// Remediations that could not be rendered, and why.
    pub proposal_errors: Vec<String>,
}

/// How a file is to change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileEdit {
    /// The whole file, created if absent.
    Content { path: String, content: String },
    /// Every match of `find` (a regex) replaced; the file must exist and match.
    Replace { path: String, find: String, replace: String },
}

impl FileEdit {
    pub fn path(&self) -> &str {
        match self {
            FileEdit::Content { path, .. } | FileEdit::Replace { path, .. } => path,
        }
    }
}

/// A remediation rendered for one alert.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    /// The playbook remediation's id.
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub edits: Vec<FileEdit>,
}

/// Runs `playbook` for an alert: wave after wave, every step whose needs have
/// succeeded is called concurrently; a step whose needs failed is skipped with the
/// reason. Then applies the finding rules to the results.
pub async fn run(playbook: &Playbook, alert: &AlertContext, caller: &dyn ToolCaller) -> PlaybookRun {
    let mut outcomes: BTreeMap<String, StepOutcome> = BTreeMap::new();
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    while outcomes.len() < playbook.steps.len() {
        let before = outcomes.len();
        let pending: Vec<&Step> = playbook.steps.iter().filter(|s| !outcomes.contains_key(&s.id)).collect();
        let mut wave = Vec::new();
        for step in pending {
            if let Some(blocked) =
                step.needs.iter().find(|n| outcomes.get(*n).is_some_and(|o| !matches!(o, StepOutcome::Done { .. })))
            {
                outcomes
                    .insert(step.id.clone(), StepOutcome::Skipped { why: format!("step `{blocked}` did not succeed") });
            } else if step.needs.iter().all(|n| results.contains_key(n)) {
                match render_args(&step.args, alert, &results) {
                    Ok(args) => wave.push((step, args)),
                    Err(why) => {
                        outcomes.insert(step.id.clone(), StepOutcome::Skipped { why });
                    }
                }
            }
        }
        if wave.is_empty() {
            if outcomes.len() == before {
                // Cannot happen for a checked playbook (steps come in dependency order),
                // but a loop that cannot progress must not spin.
                let left: Vec<String> =
                    playbook.steps.iter().filter(|s| !outcomes.contains_key(&s.id)).map(|s| s.id.clone()).collect();
                for id in left {
                    outcomes.insert(id, StepOutcome::Skipped { why: "its inputs never became ready".into() });
                }
            }
            continue;
        }
        let calls = wave.into_iter().map(|(step, args)| async move {
            let outcome = match caller.call(&step.server, &step.tool, args.clone()).await {
                Ok(result) => StepOutcome::Done { args, result },
                Err(error) => StepOutcome::Failed { args, error },
            };
            (step.id.clone(), outcome)
        });
        for (id, outcome) in futures::future::join_all(calls).await {
            if let StepOutcome::Done { result, .. } = &outcome {
                results.insert(id.clone(), result.clone());
            }
            outcomes.insert(id, outcome);
        }
    }
    let errors: BTreeMap<String, String> = outcomes
        .iter()
        .filter_map(|(id, o)| match o {
            StepOutcome::Failed { error, .. } => Some((id.clone(), error.clone())),
            _ => None,
        })
        .collect();
    let findings = findings(playbook, alert, &results, &errors);
    let made: BTreeSet<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    let remediations: Vec<String> = playbook
        .remediations
        .iter()
        .filter(|r| r.when.iter().all(|w| made.contains(w.as_str())))
        .map(|r| r.id.clone())
        .collect();
    let (mut proposals, mut proposal_errors) = (Vec::new(), Vec::new());
    for r in playbook.remediations.iter().filter(|r| remediations.contains(&r.id)) {
        match propose(r, alert, &results, &findings) {
            Ok(p) => proposals.push(p),
            Err(e) => proposal_errors.push(format!("remediation `{}`: {e}", r.id)),
        }
    }
    let steps = playbook.steps.iter().filter_map(|s| outcomes.remove(&s.id).map(|o| (s.id.clone(), o))).collect();
    PlaybookRun { playbook: playbook.name.clone(), steps, findings, remediations, proposals, proposal_errors }
}

/// Renders a remediation's title, description, paths and contents with the alert, the
/// steps' results and the findings (`findings.<rule>.summary`, `.category`, `.quote`).
pub fn propose(
    r: &Remediation,
    alert: &AlertContext,
    results: &BTreeMap<String, Value>,
    findings: &[Finding],
) -> Result<Proposal, String> {
    let env = environment();
    let made: BTreeMap<&str, Value> = findings
        .iter()
        .map(|f| (f.rule.as_str(), serde_json::json!({"summary": f.summary, "category": f.category, "quote": f.quote})))
        .collect();
    let ctx = minijinja::context! {
        labels => &alert.labels, annotations => &alert.annotations,
        steps => minijinja::Value::from(Serde(results)), findings => minijinja::Value::from(Serde(&made)),
    };
    let render = |field: &str, source: &str| env.render_str(source, &ctx).map_err(|e| format!("{field}: {e}"));
    let mut edits = Vec::new();
    for (i, f) in r.files.iter().enumerate() {
        let path = render(&format!("files[{i}].path"), &f.path)?;
        if path.trim().is_empty() || path.starts_with('/') || path.split('/').any(|s| s == "..") {
            return Err(format!("files[{i}].path renders to `{path}`, not a path inside the repository"));
        }
        edits.push(match &f.edit {
            Edit::Content(c) => FileEdit::Content { path, content: render(&format!("files[{i}].content"), c)? },
            Edit::Replace { find, replace } => FileEdit::Replace {
                path,
                find: find.as_str().to_string(),
                replace: render(&format!("files[{i}].replace"), replace)?,
            },
        });
    }
    Ok(Proposal {
        id: r.id.clone(),
        title: render("title", &r.title)?,
        description: r.description.as_deref().map(|d| render("description", d)).transpose()?,
        edits,
    })
}

/// Applies every finding rule whose step succeeded; summaries are rendered with the
/// regex's named groups as `match`.
pub fn findings(
    playbook: &Playbook,
    alert: &AlertContext,
    results: &BTreeMap<String, Value>,
    errors: &BTreeMap<String, String>,
) -> Vec<Finding> {
    let env = environment();
    playbook
        .findings
        .iter()
        .filter_map(|rule| {
            let Match { rule: id, category, quote, groups } = if rule.on_error {
                rule.apply(&Value::String(errors.get(&rule.step)?.clone()))?
            } else {
                rule.apply(results.get(&rule.step)?)?
            };
            let ctx = minijinja::context! {
                labels => &alert.labels, annotations => &alert.annotations,
                steps => minijinja::Value::from(Serde(results)), match => groups,
            };
            // The template was checked at load; a render error leaves the summary as written.
            let summary = env.render_str(&rule.summary, ctx).unwrap_or_else(|_| rule.summary.clone());
            Some(Finding { rule: id, category, summary, step: rule.step.clone(), quote, cite: rule.cite.clone() })
        })
        .collect()
}

/// The template environment of playbooks: minijinja's, plus `capture`.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.add_filter("capture", capture);
    env
}

/// `{{ text | capture(regex, group) }}`: the named (or numbered, default 1) group of
/// the first match, or none. Lets a step take a name out of an earlier step's log.
fn capture(text: &str, regex: &str, group: Option<minijinja::Value>) -> Result<minijinja::Value, minijinja::Error> {
    let re = regex::Regex::new(regex)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("capture: {e}")))?;
    let Some(caps) = re.captures(text) else { return Ok(minijinja::Value::from(())) };
    let m = match &group {
        Some(g) if g.as_str().is_some() => caps.name(g.as_str().unwrap_or_default()),
        Some(g) => caps.get(usize::try_from(g.clone()).unwrap_or(1)),
        None => caps.get(1),
    };
    Ok(m.map_or(minijinja::Value::from(()), |m| minijinja::Value::from(m.as_str())))
}

/// Renders a step's arguments. A string that is exactly one `{{ expression }}` keeps
/// the expression's type (a stage id stays a number); other strings are rendered as
/// text. An argument that renders empty is an error naming it, since the tool would
/// only refuse it less clearly.
pub fn render_args(
    args: &Map<String, Value>,
    alert: &AlertContext,
    results: &BTreeMap<String, Value>,
) -> Result<Map<String, Value>, String> {
    let env = environment();
    let ctx = minijinja::context! {
        labels => &alert.labels, annotations => &alert.annotations, steps => minijinja::Value::from(Serde(results)),
    };
    let mut out = Map::new();
    for (key, value) in args {
        out.insert(key.clone(), render_value(&env, &ctx, key, value)?);
    }
    Ok(out)
}

fn render_value(env: &Environment<'_>, ctx: &minijinja::Value, path: &str, value: &Value) -> Result<Value, String> {
    match value {
        Value::String(source) => {
            let rendered = match single_expression(source) {
                Some(expr) => {
                    let v = env
                        .compile_expression(expr)
                        .and_then(|e| e.eval(ctx))
                        .map_err(|e| format!("argument `{path}`: {e}"))?;
                    if v.is_undefined() || v.is_none() {
                        Value::String(String::new())
                    } else {
                        serde_json::to_value(&v).map_err(|e| format!("argument `{path}`: {e}"))?
                    }
                }
                None => Value::String(env.render_str(source, ctx).map_err(|e| format!("argument `{path}`: {e}"))?),
            };
            if rendered.as_str().is_some_and(|s| s.trim().is_empty()) && !source.trim().is_empty() {
                return Err(format!(
                    "argument `{path}` came out empty from `{source}`: the alert or an earlier step lacks it"
                ));
            }
            Ok(rendered)
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| render_value(env, ctx, &format!("{path}[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), render_value(env, ctx, &format!("{path}.{k}"), v)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// `expr` when `source` is `{{ expr }}` and nothing else.
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner.trim())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::playbook::parse;

    /// Answers from a table; records the calls and how many ran at once.
    struct Fake {
        answers: BTreeMap<String, Result<Value, String>>,
        calls: Mutex<Vec<(String, Map<String, Value>)>>,
        running: Mutex<(usize, usize)>,
    }

    #[async_trait]
    impl ToolCaller for Fake {
        async fn call(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, String> {
            let name = format!("{server}__{tool}");
            self.calls.lock().unwrap().push((name.clone(), args));
            {
                let mut r = self.running.lock().unwrap();
                r.0 += 1;
                r.1 = r.1.max(r.0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.lock().unwrap().0 -= 1;
            self.answers.get(&name).cloned().unwrap_or_else(|| Err(format!("no answer for {name}")))
        }
    }

    const PLAYBOOK: &str = r#"
name: t
description: d
manual_minutes: 1
match: {labels: ['alertname="X"']}
steps:
  - id: tasks
    tool: airflow__list_task_instances
    args: {dag_id: "{{ labels.dag_id }}", limit: 5}
  - id: run
    tool: airflow__get_dag_run
    args: {dag_id: "{{ labels.dag_id }}", dag_run_id: "{{ labels.run_id }}"}
  - id: log
    tool: airflow__get_task_log
    args:
      task_id: "{{ steps.tasks.task_instances[0].task_id }}"
      try_number: "{{ steps.tasks.task_instances[0].try_number }}"
      note: "task {{ steps.tasks.task_instances[0].task_id }} of {{ labels.dag_id }}"
findings:
  - id: missing_table
    step: log
    field: text
    regex: 'Table (?P<table>[\w.]+) not found'
    category: missing_table
    summary: "{{ match.table }} is missing ({{ labels.dag_id }})"
remediations:
  - id: fix
    when: [missing_table]
    title: t
    files: [{path: p, content: c}]
"#;

    fn alert() -> AlertContext {
        AlertContext {
            labels: BTreeMap::from([("dag_id".into(), "etl".into()), ("run_id".into(), "r1".into())]),
            annotations: BTreeMap::new(),
        }
    }

    fn fake(log: Result<Value, String>) -> Fake {
        Fake {
            answers: BTreeMap::from([
                (
                    "airflow__list_task_instances".into(),
                    Ok(json!({"task_instances": [{"task_id": "load", "try_number": 2}]})),
                ),
                ("airflow__get_dag_run".into(), Ok(json!({"state": "failed"}))),
                ("airflow__get_task_log".into(), log),
            ]),
            calls: Mutex::new(Vec::new()),
            running: Mutex::new((0, 0)),
        }
    }

    #[tokio::test]
    async fn independent_steps_run_together_and_results_feed_later_ones() {
        let p = parse("t.yaml", PLAYBOOK).unwrap();
        let f = fake(Ok(json!({"text": "ProgrammingError: Table raw.orders not found"})));
        let out = run(&p, &alert(), &f).await;
        assert_eq!(f.running.lock().unwrap().1, 2, "tasks and run are called at once");
        let calls = f.calls.lock().unwrap().clone();
        let (_, log_args) = calls.iter().find(|(n, _)| n == "airflow__get_task_log").unwrap();
        // A lone expression keeps its type; mixed text is text.
        assert_eq!(log_args["try_number"], json!(2));
        assert_eq!(log_args["task_id"], json!("load"));
        assert_eq!(log_args["note"], json!("task load of etl"));
        assert_eq!(out.findings.len(), 1);
        assert_eq!(out.findings[0].summary, "raw.orders is missing (etl)");
        assert_eq!(out.findings[0].step, "log");
        assert_eq!(out.findings[0].quote, "Table raw.orders not found");
        assert_eq!(out.remediations, ["fix"]);
        let order: Vec<&str> = out.steps.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(order, ["tasks", "run", "log"]);
    }

    #[tokio::test]
    async fn failures_skip_what_depends_on_them_and_empty_arguments_are_named() {
        let p = parse("t.yaml", PLAYBOOK).unwrap();
        let mut f = fake(Ok(json!({})));
        f.answers.insert("airflow__list_task_instances".into(), Err("backend down".into()));
        let out = run(&p, &alert(), &f).await;
        let get = |id: &str| out.steps.iter().find(|(s, _)| s == id).map(|(_, o)| o.clone()).unwrap();
        assert!(matches!(get("tasks"), StepOutcome::Failed { error, .. } if error == "backend down"));
        assert!(matches!(get("run"), StepOutcome::Done { .. }));
        assert!(matches!(get("log"), StepOutcome::Skipped { why } if why.contains("`tasks`")));
        assert!(out.findings.is_empty() && out.remediations.is_empty());

        // No run_id label: `run` is not called, and says which argument is missing.
        let mut a = alert();
        a.labels.remove("run_id");
        let out = run(&p, &a, &fake(Ok(json!({})))).await;
        let (_, run_step) = out.steps.iter().find(|(s, _)| s == "run").unwrap();
        assert!(matches!(run_step, StepOutcome::Skipped { why } if why.contains("`dag_run_id`")), "{run_step:?}");
    }
}
