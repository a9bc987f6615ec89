//! From a playbook as written to one the agent can run, or every mistake in it.
//!
//! Pure: the text comes in, a [`Playbook`] or the list of [`Problem`]s comes out. Every
//! problem names the line and the field, and all of them are reported at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use minijinja::Environment;
use regex::Regex;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::matcher::Matcher;
use super::model::{RawFileChange, RawPlaybook};

/// One mistake in a playbook file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<u64>,
    /// Where in the playbook, as a path: `steps[2].args.dag_id`.
    pub field: String,
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.field, self.why),
            None => write!(f, "{}: {}: {}", self.file, self.field, self.why),
        }
    }
}

/// A checked playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    pub manual_minutes: u32,
    pub label_matchers: Vec<Matcher>,
    pub annotation_matchers: Vec<Matcher>,
    /// In an order where every step comes after the steps it needs.
    pub steps: Vec<Step>,
    pub findings: Vec<FindingRule>,
    pub remediations: Vec<Remediation>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub server: String,
    pub tool: String,
    /// String values are templates over `labels`, `annotations` and `steps`.
    pub args: Map<String, Value>,
    /// The steps this one waits for: those its arguments refer to and those it names.
    pub needs: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct FindingRule {
    pub id: String,
    pub step: String,
    /// Reads the step's error message instead of its result.
    pub on_error: bool,
    /// Further steps the finding cites.
    pub cite: Vec<String>,
    pub field: Option<String>,
    pub regex: Regex,
    pub category: String,
    pub summary: String,
}

#[derive(Debug, Clone)]
pub struct Remediation {
    pub id: String,
    pub when: Vec<String>,
    pub title: String,
    pub description: Option<String>,
    pub files: Vec<FileChange>,
}

#[derive(Debug, Clone)]
pub struct FileChange {
    pub path: String,
    pub edit: Edit,
}

#[derive(Debug, Clone)]
pub enum Edit {
    Content(String),
    Replace { find: Regex, replace: String },
}

impl Playbook {
    /// Whether an alert with these labels and annotations is this playbook's to handle.
    pub fn matches(&self, labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> bool {
        self.label_matchers.iter().all(|m| m.matches(labels))
            && self.annotation_matchers.iter().all(|m| m.matches(annotations))
    }
}

/// What templates may read, by where they are.
const ARG_ROOTS: &[&str] = &["labels", "annotations", "steps"];
const SUMMARY_ROOTS: &[&str] = &["labels", "annotations", "steps", "match"];
const REMEDIATION_ROOTS: &[&str] = &["labels", "annotations", "steps", "findings"];

/// Parses and checks one playbook file's text; `file` names it in problems.
pub fn parse(file: &str, text: &str) -> Result<Playbook, Vec<Problem>> {
    let raw: RawPlaybook = serde_saphyr::from_str(text).map_err(|e| {
        vec![Problem {
            file: file.into(),
            line: e.location().map(|l| l.line()),
            field: "(document)".into(),
            why: e.to_string(),
        }]
    })?;
    Checker { file, problems: Vec::new(), env: super::run::environment() }.check(raw)
}

struct Checker<'a> {
    file: &'a str,
    problems: Vec<Problem>,
    env: Environment<'static>,
}

impl Checker<'_> {
    fn problem(&mut self, line: u64, field: impl Into<String>, why: impl Into<String>) {
        self.problems.push(Problem { file: self.file.into(), line: Some(line), field: field.into(), why: why.into() });
    }

    fn check(mut self, raw: RawPlaybook) -> Result<Playbook, Vec<Problem>> {
        for (field, value) in [("name", &raw.name), ("description", &raw.description)] {
            if value.value.trim().is_empty() {
                self.problem(line(value), field, "must not be empty");
            }
        }
        let name_ok = raw.name.value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            self.problem(line(&raw.name), "name", "use lowercase letters, digits and -");
        }
        if raw.manual_minutes.value == 0 {
            self.problem(line(&raw.manual_minutes), "manual_minutes", "must be at least 1");
        }
        let label_matchers = self.matchers(&raw.matchers.value.labels, "match.labels");
        let annotation_matchers = self.matchers(&raw.matchers.value.annotations, "match.annotations");
        if raw.matchers.value.labels.is_empty() && raw.matchers.value.annotations.is_empty() {
            self.problem(line(&raw.matchers), "match", "needs at least one matcher, or the playbook takes every alert");
        }

        let steps = self.steps(&raw);
        let step_ids: BTreeSet<String> = raw.steps.iter().map(|s| s.value.id.clone()).collect();
        let findings = self.findings(&raw, &step_ids);
        let finding_ids: BTreeSet<String> = raw.findings.iter().map(|f| f.value.id.clone()).collect();
        let remediations = self.remediations(&raw, &finding_ids, &step_ids);

        if self.problems.is_empty() {
            Ok(Playbook {
                name: raw.name.value,
                description: raw.description.value,
                manual_minutes: raw.manual_minutes.value,
                label_matchers,
                annotation_matchers,
                steps,
                findings,
                remediations,
            })
        } else {
            Err(self.problems)
        }
    }

    fn matchers(&mut self, texts: &[Spanned<String>], field: &str) -> Vec<Matcher> {
        let mut out = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match Matcher::parse(&text.value) {
                Ok(m) => out.push(m),
                Err(e) => self.problem(line(text), format!("{field}[{i}]"), e.to_string()),
            }
        }
        out
    }

    /// Checks the steps and returns them in dependency order.
    fn steps(&mut self, raw: &RawPlaybook) -> Vec<Step> {
        if raw.steps.is_empty() {
            self.problem(line(&raw.name), "steps", "needs at least one step");
        }
        let ids: BTreeSet<&str> = raw.steps.iter().map(|s| s.value.id.as_str()).collect();
        let mut seen = BTreeSet::new();
        let mut steps = Vec::new();
        let mut lines = HashMap::new();
        for (i, spanned) in raw.steps.iter().enumerate() {
            let (s, at) = (&spanned.value, line(spanned));
            let field = format!("steps[{i}]");
            if !is_identifier(&s.id) {
                self.problem(at, format!("{field}.id"), "use lowercase letters, digits and _, starting with a letter");
            } else if !seen.insert(s.id.as_str()) {
                self.problem(at, format!("{field}.id"), format!("`{}` is used by an earlier step", s.id));
            }
            let (server, tool) = match s.tool.split_once("__") {
                Some((server, tool)) if !server.is_empty() && !tool.is_empty() => (server, tool),
                _ => {
                    self.problem(at, format!("{field}.tool"), format!("`{}` is not `server__tool`", s.tool));
                    ("", "")
                }
            };
            let mut needs: BTreeSet<String> = BTreeSet::new();
            for need in &s.needs {
                if !ids.contains(need.as_str()) {
                    self.problem(at, format!("{field}.needs"), format!("no step is called `{need}`"));
                }
                needs.insert(need.clone());
            }
            let mut templates = Vec::new();
            collect_strings(&Value::Object(s.args.clone()), format!("{field}.args"), &mut templates);
            for (path, source) in templates {
                for step in self.template(at, &path, &source, ARG_ROOTS, &ids) {
                    needs.insert(step);
                }
            }
            if needs.contains(&s.id) {
                self.problem(at, format!("{field}.args"), "a step cannot use its own result");
                needs.remove(&s.id);
            }
            lines.insert(s.id.clone(), at);
            steps.push(Step {
                id: s.id.clone(),
                server: server.into(),
                tool: tool.into(),
                args: s.args.clone(),
                needs,
            });
        }
        match order(&steps) {
            Ok(ordered) => ordered,
            Err(cycle) => {
                let at = lines.get(&cycle[0]).copied().unwrap_or(0);
                self.problem(at, "steps", format!("the steps wait for each other in a cycle: {}", cycle.join(" -> ")));
                steps
            }
        }
    }

    fn findings(&mut self, raw: &RawPlaybook, step_ids: &BTreeSet<String>) -> Vec<FindingRule> {
        let ids: BTreeSet<&str> = step_ids.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, spanned) in raw.findings.iter().enumerate() {
            let (f, at) = (&spanned.value, line(spanned));
            let field = format!("findings[{i}]");
            if !is_identifier(&f.id) {
                self.problem(at, format!("{field}.id"), "use lowercase letters, digits and _, starting with a letter");
            } else if !seen.insert(f.id.as_str()) {
                self.problem(at, format!("{field}.id"), format!("`{}` is used by an earlier finding", f.id));
            }
            if !step_ids.contains(&f.step) {
                self.problem(at, format!("{field}.step"), format!("no step is called `{}`", f.step));
            }
            if !is_identifier(&f.category) {
                self.problem(at, format!("{field}.category"), "use lowercase letters, digits and _");
            }
            let regex = match Regex::new(&f.regex) {
                Ok(re) => Some(re),
                Err(e) => {
                    self.problem(at, format!("{field}.regex"), format!("does not compile: {e}"));
                    None
                }
            };
            self.template(at, &format!("{field}.summary"), &f.summary, SUMMARY_ROOTS, &ids);
            let on_error = match f.on.as_deref() {
                None | Some("result") => false,
                Some("error") => true,
                Some(other) => {
                    self.problem(at, format!("{field}.on"), format!("`{other}` is not `result` or `error`"));
                    false
                }
            };
            for (i, step) in f.cite.iter().enumerate() {
                if !step_ids.contains(step) {
                    self.problem(at, format!("{field}.cite[{i}]"), format!("no step is called `{step}`"));
                }
            }
            if on_error && f.field.is_some() {
                self.problem(at, format!("{field}.field"), "an error is a message; a rule `on: error` names no field");
            }
            if let Some(regex) = regex {
                out.push(FindingRule {
                    id: f.id.clone(),
                    step: f.step.clone(),
                    on_error,
                    cite: f.cite.clone(),
                    field: f.field.clone(),
                    regex,
                    category: f.category.clone(),
                    summary: f.summary.clone(),
                });
            }
        }
        out
    }

    fn remediations(
        &mut self,
        raw: &RawPlaybook,
        finding_ids: &BTreeSet<String>,
        step_ids: &BTreeSet<String>,
    ) -> Vec<Remediation> {
        let ids: BTreeSet<&str> = step_ids.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, spanned) in raw.remediations.iter().enumerate() {
            let (r, at) = (&spanned.value, line(spanned));
            let field = format!("remediations[{i}]");
            if !is_identifier(&r.id) {
                self.problem(at, format!("{field}.id"), "use lowercase letters, digits and _, starting with a letter");
            } else if !seen.insert(r.id.as_str()) {
                self.problem(at, format!("{field}.id"), format!("`{}` is used by an earlier remediation", r.id));
            }
            if r.when.is_empty() {
                self.problem(at, format!("{field}.when"), "name the findings this fix answers");
            }
            for w in &r.when {
                if !finding_ids.contains(w) {
                    self.problem(at, format!("{field}.when"), format!("no finding is called `{w}`"));
                }
            }
            if r.files.is_empty() {
                self.problem(at, format!("{field}.files"), "a fix changes at least one file");
            }
            for (source, name) in [(Some(&r.title), "title"), (r.description.as_ref(), "description")] {
                if let Some(source) = source {
                    self.template(at, &format!("{field}.{name}"), source, REMEDIATION_ROOTS, &ids);
                }
            }
            let mut files = Vec::new();
            for (j, change) in r.files.iter().enumerate() {
                if let Some(fc) = self.file_change(at, &format!("{field}.files[{j}]"), change, &ids) {
                    files.push(fc);
                }
            }
            out.push(Remediation {
                id: r.id.clone(),
                when: r.when.clone(),
                title: r.title.clone(),
                description: r.description.clone(),
                files,
            });
        }
        out
    }

    fn file_change(&mut self, at: u64, field: &str, c: &RawFileChange, ids: &BTreeSet<&str>) -> Option<FileChange> {
        self.template(at, &format!("{field}.path"), &c.path, REMEDIATION_ROOTS, ids);
        let edit = match (&c.content, &c.find, &c.replace) {
            (Some(content), None, None) => {
                self.template(at, &format!("{field}.content"), content, REMEDIATION_ROOTS, ids);
                Edit::Content(content.clone())
            }
            (None, Some(find), Some(replace)) => {
                self.template(at, &format!("{field}.replace"), replace, REMEDIATION_ROOTS, ids);
                match Regex::new(find) {
                    Ok(find) => Edit::Replace { find, replace: replace.clone() },
                    Err(e) => {
                        self.problem(at, format!("{field}.find"), format!("does not compile: {e}"));
                        return None;
                    }
                }
            }
            _ => {
                self.problem(at, field, "give either `content`, or both `find` and `replace`");
                return None;
            }
        };
        Some(FileChange { path: c.path.clone(), edit })
    }

    /// Checks a template's syntax and what it reads; returns the steps it reads.
    fn template(&mut self, at: u64, field: &str, source: &str, roots: &[&str], steps: &BTreeSet<&str>) -> Vec<String> {
        let template = match self.env.template_from_str(source) {
            Ok(t) => t,
            Err(e) => {
                self.problem(at, field, format!("template error: {e}"));
                return Vec::new();
            }
        };
        let mut used = Vec::new();
        let mut reads: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        reads.sort();
        for read in reads {
            let mut parts = read.split('.');
            let root = parts.next().unwrap_or_default();
            if !roots.contains(&root) {
                self.problem(at, field, format!("`{root}` is not available here; use {}", roots.join(", ")));
                continue;
            }
            if root == "steps" {
                match parts.next() {
                    Some(step) if steps.contains(step) => used.push(step.to_string()),
                    Some(step) => self.problem(at, field, format!("no step is called `{step}`")),
                    None => self.problem(at, field, "name the step: steps.<id>"),
                }
            }
        }
        used
    }
}

fn line<T>(s: &Spanned<T>) -> u64 {
    s.referenced.line()
}

fn is_identifier(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Every string in `value`, with its path.
fn collect_strings(value: &Value, path: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((path, s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_strings(v, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                collect_strings(v, format!("{path}.{k}"), out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The steps in an order where each comes after what it needs (file order among
/// equals), or the ids of a cycle.
fn order(steps: &[Step]) -> Result<Vec<Step>, Vec<String>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(steps.len());
    let known: BTreeSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    while out.len() < steps.len() {
        // Unknown names were reported already; they do not block the order.
        let ready = steps.iter().find(|s| {
            !done.contains(s.id.as_str())
                && s.needs.iter().all(|n| done.contains(n.as_str()) || !known.contains(n.as_str()))
        });
        match ready {
            Some(s) => {
                done.insert(&s.id);
                out.push(s.clone());
            }
            None => {
                let stuck: Vec<String> =
                    steps.iter().filter(|s| !done.contains(s.id.as_str())).map(|s| s.id.clone()).collect();
                return Err(stuck);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: airflow-task-failure
description: An Airflow task failed.
manual_minutes: 30
match:
  labels:
    - alertname="AirflowTaskFailed"
steps:
  - id: tasks
    tool: airflow__list_task_instances
    args:
      dag_id: "{{ labels.dag_id }}"
      dag_run_id: "{{ labels.run_id }}"
      state: [failed]
  - id: log
    tool: airflow__get_task_log
    args:
      dag_id: "{{ labels.dag_id }}"
      dag_run_id: "{{ labels.run_id }}"
      task_id: "{{ steps.tasks.task_instances[0].task_id }}"
  - id: run
    tool: airflow__get_dag_run
    args: {dag_id: "{{ labels.dag_id }}", dag_run_id: "{{ labels.run_id }}"}
findings:
  - id: missing_table
    step: log
    field: text
    regex: '(?i)table (?P<table>[\w.]+) does not exist'
    category: missing_table
    summary: "Table {{ match.table }} does not exist."
remediations:
  - id: create_table
    when: [missing_table]
    title: "Create {{ findings.missing_table.match.table }}"
    files:
      - path: "sql/{{ labels.dag_id }}.sql"
        content: "CREATE TABLE ..."
"#;

    #[test]
    fn a_good_playbook_is_checked_and_ordered() {
        let p = parse("good.yaml", GOOD).unwrap();
        assert_eq!(p.name, "airflow-task-failure");
        let order: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(order, ["tasks", "log", "run"]);
        assert_eq!(p.steps[1].needs, BTreeSet::from(["tasks".to_string()]));
        assert!(p.steps[0].needs.is_empty() && p.steps[2].needs.is_empty(), "independent steps need nothing");
        assert_eq!((p.steps[1].server.as_str(), p.steps[1].tool.as_str()), ("airflow", "get_task_log"));
        let labels = BTreeMap::from([("alertname".to_string(), "AirflowTaskFailed".to_string())]);
        assert!(p.matches(&labels, &BTreeMap::new()));
        assert!(!p.matches(&BTreeMap::new(), &BTreeMap::new()));
    }

    fn problems(text: &str) -> Vec<Problem> {
        parse("bad.yaml", text).expect_err("problems")
    }

    #[test]
    fn every_mistake_is_reported_with_its_line_and_field() {
        let bad = GOOD
            .replace("alertname=\"AirflowTaskFailed\"", "alertname=~\"(\"")
            .replace("tool: airflow__get_dag_run", "tool: get_dag_run")
            .replace("step: log", "step: logs")
            .replace("(?P<table>", "(?P<table")
            .replace("{{ match.table }}", "{{ secrets.key }}")
            .replace("when: [missing_table]", "when: [no_such_finding]");
        let found = problems(&bad);
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        for expected in [
            "match.labels[0]",
            "steps[2].tool",
            "findings[0].step",
            "findings[0].regex",
            "findings[0].summary",
            "remediations[0].when",
        ] {
            assert!(fields.contains(&expected), "{expected} not in {found:#?}");
        }
        let tool = found.iter().find(|p| p.field == "steps[2].tool").unwrap();
        assert_eq!(tool.line, Some(21), "{tool}");
        assert!(tool.to_string().starts_with("bad.yaml:21: steps[2].tool: "), "{tool}");
    }

    #[test]
    fn references_to_unknown_steps_and_cycles_are_refused() {
        let bad = GOOD.replace("steps.tasks.task_instances", "steps.nope.task_instances");
        assert!(problems(&bad).iter().any(|p| p.why.contains("no step is called `nope`")));
        let cycle = GOOD.replace("state: [failed]", "state: [\"{{ steps.log.text }}\"]");
        let found = problems(&cycle);
        assert!(found.iter().any(|p| p.why.contains("cycle")), "{found:#?}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_the_line() {
        let found = problems("name: x\n  bad: [\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].line.is_some(), "{:?}", found[0]);
        let typo = GOOD.replace("findings:", "finding:");
        let found = problems(&typo);
        assert!(found[0].why.contains("finding"), "{found:#?}");
        assert!(found[0].line.is_some());
    }

    #[test]
    fn a_file_change_is_content_or_find_and_replace() {
        let bad = GOOD.replace("content: \"CREATE TABLE ...\"", "find: \"x\"");
        assert!(problems(&bad).iter().any(|p| p.field == "remediations[0].files[0]"));
    }
}
