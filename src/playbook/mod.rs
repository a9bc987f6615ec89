//! Playbooks: what to look at for a kind of alert, and what the results mean.
//!
//! A playbook (`playbooks/*.yaml`) matches alerts by Alertmanager matchers over their
//! labels and annotations, names the tool calls to make (arguments templated from the
//! alert and earlier results; steps that do not depend on each other run in
//! parallel), the deterministic finding rules over the results, the known fixes to
//! propose and the minutes a person would have spent. Without an LLM the playbook
//! alone produces the report; with one it is the planner's starting point.
//!
//! - `model`: the file as written, with lines for every mistake;
//! - `check`: from that to a [`Playbook`], or every [`Problem`] at once (pure);
//! - `findings`: a finding rule applied to a step's result (pure);
//! - `run`: the steps called wave by wave through the [`ToolCaller`] seam, then the
//!   findings and the remediations they call for;
//! - `matcher`: Alertmanager's matcher syntax.

mod check;
mod findings;
mod matcher;
mod model;
mod run;

use std::path::{Path, PathBuf};

pub use check::{Edit, FileChange, FindingRule, Playbook, Problem, Remediation, Step, parse};
pub use findings::Match;
pub use matcher::{Matcher, MatcherError, Op};
pub use run::{
    AlertContext, CallFailure, FileEdit, Finding, PlaybookRun, Proposal, StepOutcome, ToolCaller, findings, propose,
    render_args, run,
};

/// The playbook files among `paths`: files as given, directories' `*.yaml` and
/// `*.yml` files in name order.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Problem> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| io_problem(path, &e))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Loads and checks every playbook in `paths` (see [`files`]). Also refuses two
/// playbooks with the same name, since investigations record which one they used.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Playbook>, Vec<Problem>> {
    let files = files(paths).map_err(|p| vec![p])?;
    let mut playbooks: Vec<(String, Playbook)> = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(io_problem(file, &e));
                continue;
            }
        };
        match parse(&name, &text) {
            Ok(p) => {
                if let Some((first, _)) = playbooks.iter().find(|(_, q)| q.name == p.name) {
                    problems.push(Problem {
                        file: name.clone(),
                        line: None,
                        field: "name".into(),
                        why: format!("`{}` is also the name of the playbook in {first}", p.name),
                    });
                }
                playbooks.push((name, p));
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() { Ok(playbooks.into_iter().map(|(_, p)| p).collect()) } else { Err(problems) }
}

fn io_problem(path: &Path, e: &std::io::Error) -> Problem {
    Problem { file: path.display().to_string(), line: None, field: "(file)".into(), why: format!("cannot read: {e}") }
}
