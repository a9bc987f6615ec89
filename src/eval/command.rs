//! `inquest eval <dir>`: from the configuration to the playbooks and the planner, the
//! runs to a table or JSON on stdout, progress on stderr, and the exit status.

use std::path::PathBuf;
use std::process::ExitCode;

use super::render::{self, Meta};
use super::{Options, run_dir};
use crate::config::{Config, LogConfig};
use crate::playbook::{self, Playbook};

/// Every run passed.
pub const PASSED: u8 = 0;
/// Some run failed.
pub const FAILED: u8 = 1;
/// The scenarios, the playbooks or the planner's settings cannot be used as given.
pub const BAD_INPUT: u8 = 2;

/// The command's arguments.
#[derive(Debug, Clone)]
pub struct Args {
    pub dir: PathBuf,
    pub repeat: usize,
    pub playbook_only: bool,
    pub json: bool,
    /// Instead of `agent.playbooks`.
    pub playbooks: Option<PathBuf>,
}

/// Runs the scenarios in `args.dir` with the configured planner (unless playbook-only
/// was asked or no `[llm]` is set) and prints the results.
pub async fn run(config: &Config, args: Args) -> ExitCode {
    // stderr carries the progress; only warnings join it unless INQUEST_LOG asks for more.
    crate::telemetry::init_logging(&LogConfig { level: "warn".into(), ..config.log.clone() });
    let path = args.playbooks.clone().unwrap_or_else(|| config.agent.playbooks.clone());
    let planner = if args.playbook_only {
        None
    } else {
        match crate::app::planner(config) {
            Ok(p) => p,
            Err(e) => return bad_input(&e.to_string()),
        }
    };
    let playbooks: Vec<Playbook> = if path.exists() {
        match playbook::load(std::slice::from_ref(&path)) {
            Ok(p) => p,
            Err(problems) => {
                let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                return bad_input(&format!("the playbooks have problems:\n{}", list.join("\n")));
            }
        }
    } else if planner.is_some() {
        eprintln!("inquest: no playbooks at {}; the planner works alone", path.display());
        Vec::new()
    } else {
        return bad_input(&format!(
            "no playbooks at {} and no [llm] configured: nothing to investigate with (set agent.playbooks or --playbooks)",
            path.display()
        ));
    };
    let meta = Meta {
        mode: if planner.is_some() { "planner" } else { "playbook" },
        model: planner.as_ref().and(config.llm.as_ref()).map(|l| l.model.clone()),
        playbooks: path.display().to_string(),
        repeat: args.repeat.max(1),
    };
    let options = Options { playbooks: &playbooks, planner: planner.as_ref(), repeat: meta.repeat };
    let mut progress = |position: usize, count: usize, result: &super::ScenarioResult| {
        eprintln!("{}", render::progress(position, count, result));
    };
    let results = match run_dir(&args.dir, &options, &mut progress).await {
        Ok(r) => r,
        Err(e) => return bad_input(&e.to_string()),
    };
    let overall = super::overall(&results);
    if args.json {
        match serde_json::to_string_pretty(&render::json(&meta, &results, &overall)) {
            Ok(text) => println!("{text}"),
            Err(e) => return bad_input(&format!("cannot write the results as JSON: {e}")),
        }
    } else {
        print!("{}", render::table(&meta, &results, &overall));
    }
    ExitCode::from(if results.iter().all(super::ScenarioResult::passed) { PASSED } else { FAILED })
}

fn bad_input(why: &str) -> ExitCode {
    eprintln!("inquest: {why}");
    ExitCode::from(BAD_INPUT)
}
