//! Each domain server (Airflow, Presto, Spark, on their real test backends) against MCP
//! clients nobody here wrote: the MCP Inspector CLI 0.15.0, the Python MCP SDK 2.3.0 and
//! the MCP conformance suite 0.1.16. The server is served in-process with `mcp::serve`,
//! plain HTTP on 127.0.0.1, `auth = "none"` (see `support::refclients`).

use std::sync::Arc;

use inquest::domains::airflow::AirflowDomain;
use inquest::domains::presto::PrestoDomain;
use inquest::domains::presto::config::PrestoConfig;
use inquest::domains::spark::{SparkConfig, SparkDomain};
use inquest::mcp::Domain;
use serde_json::{Value, json};

use crate::support::presto::Coordinator;
use crate::support::refclients::{Output, RefServer, run_conformance, run_inspector, run_python_client};
use crate::support::{airflow, spark};

/// One domain server on its backend, and one read call with what its result must hold.
struct Case {
    server: RefServer,
    tool: &'static str,
    args: Value,
    /// Checks the call's `structuredContent`.
    expect: Box<dyn Fn(&Value) -> bool + Send>,
    /// Keeps a per-test backend alive.
    _backend: Option<Coordinator>,
}

async fn airflow_case() -> Case {
    let af = airflow::shared().await;
    let domain: Arc<dyn Domain> = Arc::new(AirflowDomain::new(&af.config()).unwrap());
    let run = af.failed_load_run.clone();
    let expected = run.clone();
    Case {
        server: RefServer::start(domain).await,
        tool: "get_dag_run",
        args: json!({"dag_id": airflow::FAILING_LOAD_DAG, "dag_run_id": run}),
        expect: Box::new(move |v| v["dag_run_id"] == expected.as_str() && v["state"] == "failed"),
        _backend: None,
    }
}

async fn presto_case() -> Case {
    let coordinator = Coordinator::start().await;
    let config = PrestoConfig { url: coordinator.url.clone(), ..Default::default() };
    let domain: Arc<dyn Domain> = Arc::new(PrestoDomain::new(config).unwrap());
    Case {
        server: RefServer::start(domain).await,
        tool: "list_catalogs",
        args: json!({}),
        expect: Box::new(|v| v["names"].as_array().is_some_and(|n| n.iter().any(|c| c == "hive"))),
        _backend: Some(coordinator),
    }
}

async fn spark_case() -> Case {
    let history = spark::history().await;
    let config = SparkConfig { history_url: history.url.clone(), ..Default::default() };
    let domain: Arc<dyn Domain> = Arc::new(SparkDomain::new(&config).unwrap());
    let app = history.runs.bad_record.clone();
    let expected = app.clone();
    Case {
        server: RefServer::start(domain).await,
        tool: "get_application",
        args: json!({"app_id": app}),
        expect: Box::new(move |v| v["application"]["id"] == expected.as_str()),
        _backend: None,
    }
}

/// The tool names in a `tools/list` result.
fn names(list: &Value, out: &Output) -> Vec<String> {
    let tools = list.as_array().unwrap_or_else(|| panic!("no tool list in {out}"));
    tools.iter().map(|t| t["name"].as_str().unwrap_or_default().to_string()).collect()
}

/// A `CallToolResult` (as JSON) that is no error, whose structured content passes
/// `expect` and whose text content is that same JSON.
fn check_result(case: &Case, result: &Value, out: &Output) {
    assert_ne!(result["isError"], json!(true), "{} answered an error: {out}", case.tool);
    let structured = &result["structuredContent"];
    assert!((case.expect)(structured), "unexpected result of {}: {out}", case.tool);
    let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text content: {out}"));
    let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("text content is not JSON ({e}): {out}"));
    assert_eq!(&parsed, structured, "text and structured content differ: {out}");
}

// ---- the MCP Inspector CLI ----

async fn inspector(case: Case) {
    let url = &case.server.url;
    let out = run_inspector(url, &["--method", "tools/list"]).await;
    assert!(out.success(), "{out}");
    assert_eq!(names(&out.json()["tools"], &out), case.server.tools, "{out}");

    let mut args = vec!["--method".to_string(), "tools/call".into(), "--tool-name".into(), case.tool.into()];
    for (k, v) in case.args.as_object().unwrap() {
        args.push("--tool-arg".into());
        args.push(format!("{k}={}", v.as_str().unwrap()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_inspector(url, &args).await;
    assert!(out.success(), "{out}");
    check_result(&case, &out.json(), &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_cli_airflow() {
    inspector(airflow_case().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_cli_presto() {
    inspector(presto_case().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_cli_spark() {
    inspector(spark_case().await).await;
}

// ---- the Python MCP SDK ----

async fn python_sdk(case: Case) {
    let out = run_python_client(&case.server.url, case.tool, &case.args).await;
    assert!(out.success(), "{out}");
    let answer = out.json();
    let tools: Vec<String> =
        serde_json::from_value(answer["tools"].clone()).unwrap_or_else(|e| panic!("no tool names ({e}): {out}"));
    assert_eq!(tools, case.server.tools, "{out}");
    check_result(&case, &answer["result"], &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_airflow() {
    python_sdk(airflow_case().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_presto() {
    python_sdk(presto_case().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spark() {
    python_sdk(spark_case().await).await;
}

// ---- the conformance suite ----

const SCENARIOS: &[&str] = &["server-initialize", "ping", "tools-list", "dns-rebinding-protection"];

async fn conformance(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    for scenario in SCENARIOS {
        let out_dir = dir.path().join(scenario);
        let out = run_conformance(&case.server.url, scenario, &out_dir).await;
        assert!(out.success(), "scenario {scenario} failed: {out}");
        // The exit code aside, every check the scenario recorded must have passed.
        let checks = recorded_checks(&out_dir);
        assert!(!checks.is_empty(), "scenario {scenario} recorded no checks: {out}");
        let failed: Vec<&Value> =
            checks.iter().filter(|c| !matches!(c["status"].as_str(), Some("SUCCESS" | "INFO"))).collect();
        assert!(failed.is_empty(), "scenario {scenario}: failed checks {failed:#?}\n{out}");
    }
}

/// Every `checks.json` the suite wrote under `dir`, concatenated.
fn recorded_checks(dir: &std::path::Path) -> Vec<Value> {
    let mut checks = Vec::new();
    for run in std::fs::read_dir(dir).unwrap() {
        let file = run.unwrap().path().join("checks.json");
        if let Ok(text) = std::fs::read_to_string(&file) {
            let list: Vec<Value> = serde_json::from_str(&text).unwrap();
            checks.extend(list);
        }
    }
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_airflow() {
    conformance(airflow_case().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_presto() {
    conformance(presto_case().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_spark() {
    conformance(spark_case().await).await;
}
