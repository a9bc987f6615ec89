//! `inquest eval`: the shipped scenarios on the playbooks alone, a model (scripted)
//! that names the wrong cause, and broken scenario files; through the library, then as
//! a user runs the command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use inquest::agent::Redactor;
use inquest::config::{LlmConfig, Price};
use inquest::eval::scenario::{self, System};
use inquest::eval::{self, EvalError, Options, ScenarioResult};
use inquest::planner::{Budget, OpenAiModel, Planner, Prompts};
use inquest::playbook::{self, Playbook};
use serde_json::{Value, json};

use crate::support::openai::{Script, ScriptedLlm, Turn};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn evals() -> PathBuf {
    root().join("tests/evals")
}

fn shipped_playbooks() -> Vec<Playbook> {
    playbook::load(&[root().join("playbooks")]).unwrap()
}

async fn run_dir(dir: &Path, options: &Options<'_>) -> Result<Vec<ScenarioResult>, EvalError> {
    eval::run_dir(dir, options, &mut |_, _, _| {}).await
}

/// Why each failed scenario failed, for an assertion message.
fn failures(results: &[ScenarioResult]) -> String {
    results.iter().filter(|r| !r.passed()).map(|r| format!("{}: {:?}\n", r.name, r.runs)).collect()
}

#[tokio::test]
async fn every_shipped_scenario_passes_on_the_playbooks_alone() {
    let playbooks = shipped_playbooks();
    let options = Options { playbooks: &playbooks, planner: None, repeat: 1 };
    let mut heard = Vec::new();
    let results =
        eval::run_dir(&evals(), &options, &mut |at, of, r: &ScenarioResult| heard.push((at, of, r.name.clone())))
            .await
            .unwrap();
    assert!(results.len() >= 12, "{} scenarios", results.len());
    assert_eq!(failures(&results), "");
    let overall = eval::overall(&results);
    assert_eq!((overall.passed, overall.runs, overall.accuracy), (results.len(), results.len(), 1.0));
    assert_eq!((overall.mean_steps, overall.total_tokens), (0.0, 0), "no model was asked");
    // Progress came once per scenario, in order.
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(heard.iter().map(|(_, _, n)| n.as_str()).collect::<Vec<_>>(), names);
    assert_eq!(heard.last().map(|(at, of, _)| (*at, *of)), Some((results.len(), results.len())));

    // What the set covers: every system, cross-system causes and red herrings.
    for system in [System::Airflow, System::Presto, System::Spark, System::Cross] {
        assert!(results.iter().filter(|r| r.system == system).count() >= 2, "{system:?}");
    }
    assert!(names.iter().filter(|n| n.contains("red-herring")).count() >= 2, "{names:?}");
    for cause in ["missing_table", "task_timeout", "out_of_memory", "missing_partition", "upstream_failure"] {
        assert!(results.iter().any(|r| r.expected.as_deref() == Some(cause)), "{cause}");
    }
}

fn planner(llm: &ScriptedLlm) -> Planner {
    let config = LlmConfig {
        base_url: llm.base_url(),
        model: "scripted-1".into(),
        api_key: Some("sk-test-0123456789abcdefghijklmnop".to_string().into()),
        timeout: Duration::from_secs(20),
        max_steps: 4,
        max_tokens: 200_000,
        max_cost_usd: 5.0,
        max_time: Duration::from_secs(60),
        max_tools: 24,
        prices: BTreeMap::new(),
    };
    let prices = BTreeMap::from([("scripted".to_string(), Price { prompt_per_mtok: 3.0, completion_per_mtok: 15.0 })]);
    Planner {
        model: Arc::new(OpenAiModel::new(&config)),
        prompts: Prompts::load(None).unwrap(),
        budget: Budget::from_config(&config),
        prices,
        redactor: Redactor::default(),
        max_tools: 24,
    }
}

/// The model falls for the red herring: it blames the failing upstream DAG. The
/// playbook had it right, but the report is the model's, and the run fails.
#[tokio::test]
async fn a_model_that_names_the_wrong_cause_fails_the_run() {
    let scenario = scenario::load_file(&evals().join("airflow-upstream-red-herring.yaml")).unwrap();
    let llm = ScriptedLlm::start(Script::new(vec![Turn::ToolCalls(vec![(
        "submit_report".into(),
        json!({
            "summary": "revenue_daily_report failed because the fx_rates_ingest failure caused its FX join to break.",
            "root_cause": "upstream_failure",
            "evidence": [{"claim": "aggregate_revenue failed in the same run", "calls": ["c2"]}],
            "confidence": "medium",
        }),
    )])]))
    .await;
    let playbooks = shipped_playbooks();
    let planner = planner(&llm);
    let options = Options { playbooks: &playbooks, planner: Some(&planner), repeat: 2 };
    let result = eval::run_scenario(&scenario, &options).await;
    assert_eq!(llm.violations(), Vec::<String>::new());
    assert_eq!(llm.request_count(), 2, "one turn per run");

    assert!(!result.passed());
    assert_eq!(result.runs.len(), 2);
    let run = &result.runs[0];
    assert_eq!(run.got.as_deref(), Some("upstream_failure"));
    assert!(!run.correct_cause && !run.passed);
    assert_eq!(run.forbidden_drawn, ["upstream_failure", "fx_rates_ingest failure caused"]);
    // The playbook's calls were made and its finding is still cited; the cause is what failed.
    assert!(run.consulted_ok && run.cited_ok, "{run:?}");
    assert_eq!(run.steps, 1);
    assert!(run.tokens > 0 && run.cost_usd > 0.0, "{run:?}");
    assert_eq!((result.summary.passed, result.summary.accuracy, result.summary.cause_accuracy), (0, 0.0, 0.0));
}

const BROKEN_FIELD: &str = r#"
name: broken-field
description: d
system: airflow
alert: {labels: {alertname: AirflowTaskFailed}}
responses:
  - tool: airflow__get_task_log
    reslt: {text: "x"}
expect: {root_cause: missing_table}
"#;

const BROKEN_CHECKS: &str = r#"
name: broken-checks
description: d
system: airflow
alert: {labels: {alertname: AirflowTaskFailed}}
responses:
  - tool: get_task_log
    result: {text: "x"}
expect: {root_cause: missing_tabel, consulted: [airflow__get_task_log]}
"#;

#[tokio::test]
async fn broken_scenario_files_are_named_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), BROKEN_FIELD).unwrap();
    std::fs::write(dir.path().join("b.yaml"), BROKEN_CHECKS).unwrap();
    let playbooks = shipped_playbooks();
    let options = Options { playbooks: &playbooks, planner: None, repeat: 1 };
    let Err(EvalError::Scenarios(problems)) = run_dir(dir.path(), &options).await else {
        panic!("broken files must be refused");
    };
    let found: Vec<(String, String)> = problems
        .iter()
        .map(|p| (Path::new(&p.file).file_name().unwrap().to_string_lossy().into_owned(), p.field.clone()))
        .collect();
    // Both files at once; serde's mistake with its line.
    assert_eq!(
        found,
        [
            ("a.yaml".to_string(), "responses[0].reslt".to_string()),
            ("b.yaml".to_string(), "responses[0].tool".to_string()),
            ("b.yaml".to_string(), "expect.consulted[0]".to_string()),
        ],
        "{problems:#?}"
    );
    assert!(problems[0].why.starts_with("unknown field `reslt`") && problems[0].line == Some(8), "{:?}", problems[0]);

    // Once the files parse, an expected cause no playbook knows is refused too.
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let fixed = BROKEN_CHECKS.replace("tool: get_task_log", "tool: airflow__get_task_log");
    std::fs::write(dir.path().join("b.yaml"), fixed).unwrap();
    let Err(EvalError::Scenarios(problems)) = run_dir(dir.path(), &options).await else {
        panic!("an unknown cause must be refused");
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "expect.root_cause");
    assert!(problems[0].why.contains("missing_tabel"), "{:?}", problems[0]);
}

/// `inquest eval ...` in a scratch directory: exit status, stdout, stderr.
fn inquest_eval(args: &[&str], dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inquest"));
    // The child reads INQUEST_* as configuration and refuses keys it does not know (CI's
    // INQUEST_CACHE would be one): only what is set here goes in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("INQUEST_") {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.current_dir(dir).env("INQUEST_DATA_DIR", dir.join("data")).arg("eval").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_command_prints_a_table_or_json_and_its_exit_status_says_how_it_went() {
    let scratch = tempfile::tempdir().unwrap();
    let evals = evals();
    let playbooks = root().join("playbooks");
    let (evals, playbooks) = (evals.to_str().unwrap(), playbooks.to_str().unwrap());
    let count = scenario::files(Path::new(evals)).unwrap().len();

    // No [llm]: playbooks alone. Every scenario passes: 0.
    let (code, stdout, stderr) = inquest_eval(&[evals, "--playbooks", playbooks], scratch.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("mode: playbook;"), "{stdout}");
    assert!(stdout.contains(&format!("overall: {count}/{count} runs passed (100.0%)")), "{stdout}");
    assert!(stdout.contains("cross-airflow-task-presto-table-missing  cross "), "{stdout}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with('[') && l.contains("] pass ")).count(), count, "{stderr}");

    // JSON, repeated: every run is there.
    let (code, stdout, stderr) =
        inquest_eval(&[evals, "--playbooks", playbooks, "--json", "--repeat", "2", "--playbook-only"], scratch.path());
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((&v["mode"], &v["passed"], &v["repeat"]), (&json!("playbook"), &json!(true), &json!(2)));
    assert_eq!(v["overall"]["runs"], json!(count * 2));
    assert_eq!(v["scenarios"].as_array().map(Vec::len), Some(count));

    // A scenario the playbooks get wrong: 1, with the reason under the scenario.
    let wrong = scratch.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    let oom = std::fs::read_to_string(root().join("tests/evals/spark-executor-oom.yaml")).unwrap();
    let expects_exception = oom.replace("root_cause: out_of_memory", "root_cause: code_exception");
    assert_ne!(oom, expects_exception);
    std::fs::write(wrong.join("oom.yaml"), expects_exception).unwrap();
    let (code, stdout, _) = inquest_eval(&[wrong.to_str().unwrap(), "--playbooks", playbooks], scratch.path());
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("run 1: expected cause code_exception, got out_of_memory"), "{stdout}");

    // A broken file: 2, naming the file and the field.
    let broken = scratch.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("a.yaml"), BROKEN_FIELD).unwrap();
    let (code, stdout, stderr) = inquest_eval(&[broken.to_str().unwrap(), "--playbooks", playbooks], scratch.path());
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("a.yaml:8: responses[0].reslt: unknown field `reslt`"), "{stderr}");
}
