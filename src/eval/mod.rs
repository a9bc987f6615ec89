//! `inquest eval`: runs investigation scenarios against recorded backend answers and
//! scores each run, so playbooks and models can be measured and compared.
//!
//! - `scenario`: the scenario file format, checked, every mistake named (parsing pure);
//! - `replay`: the [`crate::playbook::ToolCaller`] that answers from recorded responses;
//! - `tools`: the tools a scenario offers the planner, described as the built-in
//!   domains describe them;
//! - `score`: one run against its expectations, and percentiles and totals (pure);
//! - `render`: the table and the JSON (pure);
//! - `command`: the CLI command: configuration to planner, results to exit status.
//!
//! A scenario runs the same inquiry as a live investigation
//! ([`crate::agent::inquiry::investigate`]); only the tool caller differs.

pub mod command;
pub mod render;
pub mod replay;
pub mod scenario;
pub mod score;
pub mod tools;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tracing::{Instrument, info, info_span};

use crate::agent::inquiry::{self, Setup};
use crate::planner::{Planner, ToolInfo};
use crate::playbook::{AlertContext, Playbook};
use scenario::{Problem, Scenario, System};
use score::{Score, Summary};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Scenario files that cannot be read, parsed or run as written.
    #[error("{} problem(s) in the scenarios:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Scenarios(Vec<Problem>),
}

/// What every scenario runs with.
pub struct Options<'a> {
    pub playbooks: &'a [Playbook],
    /// `None`: playbooks alone.
    pub planner: Option<&'a Planner>,
    /// Runs per scenario (at least one).
    pub repeat: usize,
}

/// One scenario's runs.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub file: String,
    pub system: System,
    pub expected: Option<String>,
    pub summary: Summary,
    pub runs: Vec<Score>,
}

impl ScenarioResult {
    /// Every run passed.
    pub fn passed(&self) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|r| r.passed)
    }
}

/// Loads every scenario in `dir` (its `*.yaml` files, in name order) and runs each
/// `options.repeat` times, one after another so timings are not shared; `progress`
/// hears of each scenario as it finishes, with its position and the count.
pub async fn run_dir(
    dir: &Path,
    options: &Options<'_>,
    progress: &mut (dyn FnMut(usize, usize, &ScenarioResult) + Send),
) -> Result<Vec<ScenarioResult>, EvalError> {
    let scenarios = scenario::load_dir(dir).map_err(EvalError::Scenarios)?;
    let problems = unknown_causes(&scenarios, options.playbooks);
    if !problems.is_empty() {
        return Err(EvalError::Scenarios(problems));
    }
    let builtin = tools::builtin();
    let mut results = Vec::with_capacity(scenarios.len());
    for (i, s) in scenarios.iter().enumerate() {
        let result = run_with(s, options, &tools::offered(s, &builtin)).await;
        progress(i + 1, scenarios.len(), &result);
        results.push(result);
    }
    Ok(results)
}

/// Runs one scenario `options.repeat` times.
pub async fn run_scenario(scenario: &Scenario, options: &Options<'_>) -> ScenarioResult {
    run_with(scenario, options, &tools::offered(scenario, &tools::builtin())).await
}

/// The overall summary of every run of every scenario.
pub fn overall(results: &[ScenarioResult]) -> Summary {
    score::summarize(results.iter().flat_map(|r| r.runs.iter()))
}

async fn run_with(scenario: &Scenario, options: &Options<'_>, offered: &[ToolInfo]) -> ScenarioResult {
    let alert = AlertContext { labels: scenario.labels.clone(), annotations: scenario.annotations.clone() };
    let categories = known_categories(options.playbooks);
    let mut runs = Vec::new();
    for run in 1..=options.repeat.max(1) {
        let caller = replay::Replay::new(&scenario.responses);
        let setup = Setup {
            alert: &alert,
            team: &scenario.team,
            playbooks: options.playbooks,
            caller: &caller,
            tools: offered,
            planner: options.planner,
            question: None,
            waits: None,
            first_call: 1,
        };
        let started = Instant::now();
        let outcome = inquiry::investigate(setup).instrument(info_span!("eval", scenario = %scenario.name, run)).await;
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let score = score::score(&scenario.expect, outcome.as_ref(), millis, &categories);
        info!(scenario = %scenario.name, run, passed = score.passed, got = ?score.got, millis, "scenario run scored");
        runs.push(score);
    }
    ScenarioResult {
        name: scenario.name.clone(),
        file: scenario.file.clone(),
        system: scenario.system,
        expected: scenario.expect.root_cause.clone(),
        summary: score::summarize(&runs),
        runs,
    }
}

/// Expected causes no playbook knows: no report could name them (the planner turns an
/// unknown category into `other`), so the scenario could never pass; most likely a typo.
fn unknown_causes(scenarios: &[Scenario], playbooks: &[Playbook]) -> Vec<Problem> {
    let known = known_categories(playbooks);
    scenarios
        .iter()
        .filter_map(|s| {
            let cause = s.expect.root_cause.as_ref()?;
            (!known.contains(cause)).then(|| Problem {
                file: s.file.clone(),
                line: None,
                field: "expect.root_cause".into(),
                why: format!("`{cause}` is no category of the playbooks (known: {})", known.join(", ")),
            })
        })
        .collect()
}

/// The categories a report may name: the playbooks', and `other`.
fn known_categories(playbooks: &[Playbook]) -> Vec<String> {
    let mut known = inquiry::categories(playbooks);
    known.push("other".into());
    known
}
