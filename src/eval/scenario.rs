//! The scenario file: an alert, the answers the domain servers gave (recorded MCP
//! results), and what a good investigation of it concludes.
//!
//! Parsing and checking are pure ([`parse`]); [`load_dir`] reads the files. Every
//! mistake is a [`Problem`] naming the file and the field (`responses[2].tool`), and
//! all of a folder's mistakes are reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file it came from, as given.
    pub file: String,
    pub name: String,
    pub description: String,
    pub system: System,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub team: String,
    /// In the file's order: the first that fits a call answers it.
    pub responses: Vec<Recorded>,
    /// What the planner is offered; `None`: every tool named in `responses`.
    pub tools: Option<Vec<OfferedTool>>,
    pub expect: Expect,
}

/// Which system the incident is in; `cross` when the cause is in another system than
/// the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Airflow,
    Presto,
    Spark,
    Cross,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Airflow => "airflow",
            System::Presto => "presto",
            System::Spark => "spark",
            System::Cross => "cross",
        }
    }
}

/// One recorded answer of a domain server.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `server__tool`.
    pub tool: String,
    /// Must be a subset of the call's arguments for this answer to be given.
    pub args: Map<String, Value>,
    /// The tool's result, or the error message the caller saw.
    pub answer: Result<Value, String>,
}

/// A tool offered to the planner; what is left out is taken from the built-in domain
/// with that tool, if any.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferedTool {
    /// `server__tool`.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub read_only: Option<bool>,
    /// JSON Schema of the arguments.
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// What a good investigation of the scenario does and concludes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The root-cause category; absent or null: no cause should be named.
    #[serde(default)]
    pub root_cause: Option<String>,
    /// Tools (`server__tool`) that must have been called successfully.
    #[serde(default)]
    pub consulted: Vec<String>,
    /// Tools the report's evidence must cite.
    #[serde(default)]
    pub cited: Vec<String>,
    /// Categories or phrases that must not be the root cause nor appear in the summary.
    #[serde(default)]
    pub not_conclude: Vec<String>,
}

/// One mistake in a scenario file: the playbooks' kind, `file:line: field: why`, with
/// the field a path into the scenario (`responses[2].tool`).
pub use crate::playbook::Problem;

/// The scenario files in `dir`: its `*.yaml` and `*.yml` files in name order.
/// Subfolders are not read, so scenarios kept apart stay apart.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, Problem> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_problem(dir, &e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    found.sort();
    Ok(found)
}

/// Loads and checks every scenario in `dir`; refuses two with one name, since results
/// are reported by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, Vec<Problem>> {
    let files = files(dir).map_err(|p| vec![p])?;
    if files.is_empty() {
        return Err(vec![Problem {
            file: dir.display().to_string(),
            line: None,
            field: "(folder)".into(),
            why: "holds no scenario files (*.yaml)".into(),
        }]);
    }
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match load_file(file) {
            Ok(s) => {
                if let Some(first) = scenarios.iter().find(|o| o.name == s.name) {
                    problems.push(Problem {
                        file: s.file.clone(),
                        line: None,
                        field: "name".into(),
                        why: format!("`{}` is also the name of the scenario in {}", s.name, first.file),
                    });
                }
                scenarios.push(s);
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() { Ok(scenarios) } else { Err(problems) }
}

/// Reads and checks one scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![io_problem(path, &e)])?;
    parse(&path.display().to_string(), &text)
}

/// Parses and checks one scenario's text; `file` names it in problems.
pub fn parse(file: &str, text: &str) -> Result<Scenario, Vec<Problem>> {
    // The path of the field serde stopped at, which saphyr's own message may not name.
    let mut path = None;
    let raw: RawScenario = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        let field = path.take().filter(|p| p != ".").unwrap_or_else(|| "(document)".into());
        vec![Problem {
            file: file.into(),
            line: e.location().map(|l| l.line()),
            field,
            why: first_line(&e.to_string()),
        }]
    })?;
    check(file, raw)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    description: String,
    system: System,
    alert: RawAlert,
    #[serde(default = "default_team")]
    team: String,
    #[serde(default)]
    responses: Vec<RawResponse>,
    #[serde(default)]
    tools: Option<Vec<OfferedTool>>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    tool: String,
    #[serde(default)]
    args: Map<String, Value>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

fn default_team() -> String {
    "data".into()
}

fn check(file: &str, raw: RawScenario) -> Result<Scenario, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |field: String, why: String| problems.push(Problem { file: file.into(), line: None, field, why });
    for (field, value) in [("name", &raw.name), ("description", &raw.description)] {
        if value.trim().is_empty() {
            problem(field.into(), "must not be empty".into());
        }
    }
    if raw.alert.labels.is_empty() {
        problem("alert.labels".into(), "needs at least one label (alertname) to match a playbook".into());
    }
    let mut responses = Vec::new();
    for (i, r) in raw.responses.into_iter().enumerate() {
        if let Err(why) = tool_name(&r.tool) {
            problem(format!("responses[{i}].tool"), why);
        }
        let answer = match (r.result, r.error) {
            (Some(v), None) => Ok(v),
            (None, Some(e)) => Err(e),
            (Some(_), Some(_)) => {
                problem(format!("responses[{i}]"), "has both `result` and `error`; give one".into());
                continue;
            }
            (None, None) => {
                problem(
                    format!("responses[{i}]"),
                    "needs `result` (the tool's output) or `error` (its message)".into(),
                );
                continue;
            }
        };
        responses.push(Recorded { tool: r.tool, args: r.args, answer });
    }
    if let Some(tools) = &raw.tools {
        for (i, t) in tools.iter().enumerate() {
            if let Err(why) = tool_name(&t.name) {
                problem(format!("tools[{i}].name"), why);
            }
        }
    }
    // A consulted tool must have answered; a cited one may have failed (a table that
    // does not exist is evidence too). Without that, no run could pass.
    for (list, names, needs_ok) in [("consulted", &raw.expect.consulted, true), ("cited", &raw.expect.cited, false)] {
        for (i, name) in names.iter().enumerate() {
            let recorded = responses.iter().any(|r| r.tool == *name && (r.answer.is_ok() || !needs_ok));
            match tool_name(name) {
                Err(why) => problem(format!("expect.{list}[{i}]"), why),
                Ok(()) if !recorded => problem(
                    format!("expect.{list}[{i}]"),
                    format!(
                        "`{name}` has no recorded {}response, so no run could pass",
                        if needs_ok { "successful " } else { "" }
                    ),
                ),
                Ok(()) => {}
            }
        }
    }
    if raw.expect.root_cause.as_deref().is_some_and(|c| c.trim().is_empty()) {
        problem("expect.root_cause".into(), "must be a category, or null for no cause".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Scenario {
        file: file.into(),
        name: raw.name,
        description: raw.description,
        system: raw.system,
        labels: raw.alert.labels,
        annotations: raw.alert.annotations,
        team: raw.team,
        responses,
        tools: raw.tools,
        expect: raw.expect,
    })
}

/// `server__tool`, as the agent names tools.
fn tool_name(name: &str) -> Result<(), String> {
    match name.split_once("__") {
        Some((server, tool)) if !server.is_empty() && !tool.is_empty() => Ok(()),
        _ => Err(format!("`{name}` is not a tool name of the form server__tool")),
    }
}

/// saphyr's message without what the problem says apart: its `error: line 8 column 5: `
/// lead and the source snippet after the first line.
fn first_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((_, why)) => why.to_string(),
        None => first.to_string(),
    }
}

fn io_problem(path: &Path, e: &std::io::Error) -> Problem {
    Problem { file: path.display().to_string(), line: None, field: "(file)".into(), why: format!("cannot read: {e}") }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GOOD: &str = r#"
name: t
description: a task failed
system: airflow
alert:
  labels: {alertname: AirflowTaskFailed, dag_id: etl}
responses:
  - tool: airflow__get_task_log
    args: {task_id: load}
    result: {text: "Table a.b not found"}
  - tool: presto__describe_table
    error: "does not exist"
expect:
  root_cause: missing_table
  consulted: [airflow__get_task_log]
  not_conclude: [upstream_failure]
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let s = parse("t.yaml", GOOD).unwrap();
        assert_eq!(s.team, "data");
        assert_eq!(s.system, System::Airflow);
        assert_eq!(s.tools, None);
        assert_eq!(
            s.responses,
            [
                Recorded {
                    tool: "airflow__get_task_log".into(),
                    args: json!({"task_id": "load"}).as_object().cloned().unwrap(),
                    answer: Ok(json!({"text": "Table a.b not found"})),
                },
                Recorded {
                    tool: "presto__describe_table".into(),
                    args: Map::new(),
                    answer: Err("does not exist".into())
                },
            ]
        );
        assert_eq!(s.expect.root_cause.as_deref(), Some("missing_table"));
    }

    fn problems(text: &str) -> Vec<(Option<u64>, String)> {
        parse("bad.yaml", text).unwrap_err().into_iter().map(|p| (p.line, p.field)).collect()
    }

    #[test]
    fn mistakes_name_the_field() {
        // An unknown key, nested: serde's path and saphyr's line.
        let text = GOOD.replace("  consulted:", "  consultd:");
        let found = parse("bad.yaml", &text).unwrap_err();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].file, "bad.yaml");
        assert_eq!(found[0].field, "expect.consultd", "{found:?}");
        assert!(found[0].why.starts_with("unknown field `consultd`"), "{found:?}");
        assert_eq!(found[0].line, Some(15), "{found:?}");

        // A wrong value deep inside.
        let text = GOOD.replace("system: airflow", "system: hadoop");
        assert_eq!(problems(&text)[0].1, "system");

        // Mistakes the checks find, all at once.
        let text = GOOD
            .replace("tool: presto__describe_table", "tool: describe_table")
            .replace("    error: \"does not exist\"", "    error: x\n    result: {}")
            .replace("consulted: [airflow__get_task_log]", "consulted: [airflow__list_dags]");
        assert_eq!(
            problems(&text),
            [
                (None, "responses[1].tool".to_string()),
                (None, "responses[1]".to_string()),
                (None, "expect.consulted[0]".to_string())
            ]
        );
    }
}
