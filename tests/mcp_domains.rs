//! Each domain server through the full stack: the real domain over its real backend
//! (tests/support), served by the MCP framework over mTLS with the dev CA's SVIDs, called
//! by an rmcp client as the agent on both protocol revisions. A tool's answer through
//! MCP must be what the domain reads from the backend (the domain's own suites compare
//! that with the backend's REST API), and its `tools/list` must match the domain's.

use std::sync::Arc;
use std::time::Duration;

use inquest::agent::{Limits, SessionError, SessionManager, Target};
use inquest::mcp::{Domain, NoProgress, ToolCall};
use inquest::playbook::{self, AlertContext, Playbook, StepOutcome};
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{airflow as af, presto, spark};

use crate::support::served::{self, AGENT};

/// A domain served over mTLS, and the agent's client settings for it.
struct Served {
    _dir: tempfile::TempDir,
    url: String,
    agent_http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(domain: Arc<dyn Domain>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let served::Served { url, agent_http } = served::serve(domain, dir.path(), &stop).await.unwrap();
    Served { _dir: dir, url, agent_http, stop }
}

async fn agent(served: &Served, lifecycle: ClientLifecycleMode) -> RunningService<RoleClient, ()> {
    let transport = StreamableHttpClientTransport::with_client(
        served.agent_http.clone(),
        StreamableHttpClientTransportConfig::with_uri(served.url.clone()),
    );
    ().serve_with_lifecycle(transport, lifecycle).await.unwrap()
}

fn revisions() -> [(&'static str, ClientLifecycleMode); 2] {
    [
        ("2026-07-28", ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }),
        ("2025-11-25", ClientLifecycleMode::Initialize),
    ]
}

/// The domain's own answer, without MCP.
async fn direct(domain: &dyn Domain, tool: &str, args: &Value) -> Value {
    let caller = inquest::identity::Principal::service(AGENT);
    let call = ToolCall {
        tool,
        args: args.as_object().cloned().unwrap_or_default(),
        caller: &caller,
        progress: &NoProgress,
        cancel: CancellationToken::new(),
        deadline: Duration::from_secs(60),
    };
    domain.call(call).await.unwrap_or_else(|e| panic!("{tool} directly: {e}"))
}

/// The Presto domain over the test coordinator, in the `hive.warehouse` the fixtures use.
fn presto_domain(coordinator: &presto::Coordinator) -> Arc<dyn Domain> {
    let config = inquest::domains::presto::config::PrestoConfig {
        url: coordinator.url.clone(),
        user: "inquest".to_string(),
        catalog: Some("hive".to_string()),
        schema: Some("warehouse".to_string()),
        ..Default::default()
    };
    Arc::new(inquest::domains::presto::PrestoDomain::new(config).unwrap())
}

/// The agent's sessions to one served domain, under the registry name `name`.
fn agent_sessions(served: &Served, name: &str) -> SessionManager {
    let target = Target { name: name.into(), url: served.url.clone(), http: served.agent_http.clone(), trusted: true };
    SessionManager::new(vec![target], Limits::default())
}

fn shipped_playbooks() -> Vec<Playbook> {
    playbook::load(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks")]).unwrap()
}

fn alert(labels: &[(&str, &str)]) -> AlertContext {
    AlertContext {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: Default::default(),
    }
}

/// The one shipped playbook that takes `alert`, which must be `expected`.
fn only_match<'p>(playbooks: &'p [Playbook], alert: &AlertContext, expected: &str) -> &'p Playbook {
    let chosen: Vec<&Playbook> = playbooks.iter().filter(|p| p.matches(&alert.labels, &alert.annotations)).collect();
    assert_eq!(chosen.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), [expected]);
    chosen[0]
}

/// Lists and calls `cases` through MCP on both revisions; each answer must equal the
/// domain's direct answer, as `structuredContent` and as its text copy.
async fn through_the_stack(domain: Arc<dyn Domain>, cases: &[(&str, Value)]) {
    let served = serve(domain.clone()).await;
    let mut expected: Vec<String> = domain.tools().iter().map(|t| t.name.to_string()).collect();
    expected.sort();
    for (revision, lifecycle) in revisions() {
        let client = agent(&served, lifecycle).await;
        let mut listed: Vec<String> =
            client.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
        listed.sort();
        assert_eq!(listed, expected, "{revision}: tools/list of {}", domain.id());
        for (tool, args) in cases {
            let want = direct(&*domain, tool, args).await;
            let mut params = CallToolRequestParams::new(tool.to_string());
            params.arguments = args.as_object().cloned();
            let got = client.call_tool(params).await.unwrap_or_else(|e| panic!("{revision} {tool}: {e}"));
            assert_ne!(got.is_error, Some(true), "{revision} {tool}: {:?}", got.content);
            let structured =
                got.structured_content.clone().unwrap_or_else(|| panic!("{revision} {tool}: no structuredContent"));
            assert_eq!(stable(&structured), stable(&want), "{revision} {tool}: through MCP and directly differ");
            let text = got.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default();
            let text: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{revision} {tool}: text is not JSON: {e}"));
            assert_eq!(text, structured, "{revision} {tool}: the text copy differs");
        }
        let _ = client.cancel().await;
    }
}

/// `value` without what differs on every call by design: a Presto query's id.
fn stable(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("query_id");
    }
    value
}

#[tokio::test]
async fn spark_tools_answer_through_the_stack() {
    let history = spark::history().await;
    let config = inquest::domains::spark::SparkConfig { history_url: history.url.clone(), ..Default::default() };
    let domain = Arc::new(inquest::domains::spark::SparkDomain::new(&config).unwrap());
    let bad = history.runs.bad_record.clone();
    let cases = [
        ("list_applications", json!({"limit": 50})),
        ("get_application", json!({"app_id": bad})),
        ("list_jobs", json!({"app_id": bad})),
        ("list_failed_stages", json!({"app_id": bad})),
        ("list_failed_tasks", json!({"app_id": bad})),
        ("get_stage", json!({"app_id": bad, "stage_id": 0})),
        ("list_executors", json!({"app_id": history.runs.oom})),
        ("get_environment", json!({"app_id": bad})),
        ("compare_applications", json!({"left_app_id": history.runs.ok, "right_app_id": bad})),
    ];
    through_the_stack(domain, &cases).await;
}

#[tokio::test]
async fn airflow_tools_answer_through_the_stack() {
    let airflow = af::shared().await;
    let domain = Arc::new(inquest::domains::airflow::AirflowDomain::new(&airflow.config()).unwrap());
    let run = airflow.failed_load_run.clone();
    let cases = [
        ("get_dag", json!({"dag_id": af::FAILING_LOAD_DAG})),
        ("get_dag_source", json!({"dag_id": af::FAILING_LOAD_DAG})),
        ("get_import_errors", json!({})),
        ("get_dag_run", json!({"dag_id": af::FAILING_LOAD_DAG, "dag_run_id": run})),
        ("list_task_instances", json!({"dag_id": af::FAILING_LOAD_DAG, "dag_run_id": run})),
        ("get_task_log", json!({"dag_id": af::FAILING_LOAD_DAG, "dag_run_id": run, "task_id": af::FAILING_LOAD_TASK})),
    ];
    through_the_stack(domain, &cases).await;
}

#[tokio::test]
async fn presto_tools_answer_through_the_stack() {
    let coordinator = presto::Coordinator::start().await;
    let domain = presto_domain(&coordinator);
    let cases = [
        ("run_query", json!({"sql": "SELECT ds, count(*) AS orders FROM orders_daily GROUP BY ds ORDER BY ds"})),
        ("list_catalogs", json!({})),
        ("list_schemas", json!({"catalog": "hive"})),
        ("list_tables", json!({"catalog": "hive", "schema": "warehouse"})),
        ("describe_table", json!({"catalog": "hive", "schema": "warehouse", "table": "orders_daily"})),
        ("explain", json!({"sql": "SELECT count(*) FROM orders_daily"})),
    ];
    through_the_stack(domain, &cases).await;
}

/// The playbook path end to end: the shipped Airflow playbook, run by the agent's
/// session manager over mTLS against the Airflow MCP server and the real Airflow,
/// names the missing table from the failed task's log.
#[tokio::test]
async fn the_airflow_playbook_finds_the_missing_table_through_the_stack() {
    let airflow = af::shared().await;
    let domain = Arc::new(inquest::domains::airflow::AirflowDomain::new(&airflow.config()).unwrap());
    let served = serve(domain).await;
    let sessions = agent_sessions(&served, "airflow");
    let playbooks = shipped_playbooks();
    let alert = alert(&[
        ("alertname", "AirflowTaskFailed"),
        ("dag_id", af::FAILING_LOAD_DAG),
        ("run_id", airflow.failed_load_run.as_str()),
    ]);
    let chosen = only_match(&playbooks, &alert, "airflow-task-failure");

    let run = playbook::run(chosen, &alert, &sessions).await;
    // Only Airflow is served here; the Presto steps are the agent tests' business.
    for (id, outcome) in run.steps.iter().filter(|(id, _)| !["tables", "table"].contains(&id.as_str())) {
        assert!(matches!(outcome, StepOutcome::Done { .. }), "{id}: {outcome:?}");
    }
    let finding = run.findings.iter().find(|f| f.category == "missing_table").expect("a missing-table finding");
    assert_eq!(finding.step, "log", "cites the task log");
    assert!(finding.summary.contains("warehouse.orders_summary"), "{}", finding.summary);
    assert!(finding.quote.contains("not found"), "{}", finding.quote);
    assert_eq!(sessions.connects(), 1, "three calls, one session");
}

/// The Spark playbooks end to end against the real History Server: the out-of-memory
/// run is recognised from its failed tasks, and the bad-record run as a code exception.
#[tokio::test]
async fn the_spark_playbooks_classify_oom_and_exceptions_through_the_stack() {
    let history = spark::history().await;
    let config = inquest::domains::spark::SparkConfig { history_url: history.url.clone(), ..Default::default() };
    let domain = Arc::new(inquest::domains::spark::SparkDomain::new(&config).unwrap());
    let served = serve(domain).await;
    let sessions = agent_sessions(&served, "spark");
    let playbooks = shipped_playbooks();
    let by_name = |name: &str| playbooks.iter().find(|p| p.name == name).unwrap();
    let alert_for = |app: &str| alert(&[("alertname", "SparkJobFailed"), ("app_id", app)]);

    let oom = playbook::run(by_name("spark-executor-oom"), &alert_for(&history.runs.oom), &sessions).await;
    for (id, outcome) in &oom.steps {
        assert!(matches!(outcome, StepOutcome::Done { .. }), "{id}: {outcome:?}");
    }
    let categories: Vec<&str> = oom.findings.iter().map(|f| f.category.as_str()).collect();
    assert!(categories.contains(&"out_of_memory"), "{:?}", oom.findings);
    assert_eq!(oom.remediations, ["more_executor_memory"]);
    // Rendered for this alert: the change a pull request would make.
    let app = &history.runs.oom;
    assert_eq!(oom.proposal_errors, Vec::<String>::new());
    assert_eq!(oom.proposals[0].title, format!("Give {app} more executor memory"));
    assert_eq!(
        oom.proposals[0].edits,
        [playbook::FileEdit::Replace {
            path: format!("jobs/{app}/spark-defaults.conf"),
            find: r"spark\.executor\.memory\s+\S+".into(),
            replace: "spark.executor.memory 8g".into(),
        }]
    );

    let bad = playbook::run(by_name("spark-job-failure"), &alert_for(&history.runs.bad_record), &sessions).await;
    let exception = bad.findings.iter().find(|f| f.category == "code_exception").expect("a code exception");
    assert!(exception.summary.contains("ValueError"), "{}", exception.summary);
    assert!(!bad.findings.iter().any(|f| f.category == "out_of_memory"), "{:?}", bad.findings);
}

/// The Presto playbook end to end: a query that failed on a missing table, alerted on
/// by its id, is classified from what `get_query` records of it.
#[tokio::test]
async fn the_presto_playbook_classifies_a_failed_query_through_the_stack() {
    let coordinator = presto::Coordinator::start().await;
    let domain = presto_domain(&coordinator);
    let served = serve(domain).await;
    let sessions = agent_sessions(&served, "presto");

    // The failure the alert is about.
    let sql = json!({"sql": "SELECT * FROM no_such_table"}).as_object().cloned().unwrap();
    let failed = sessions.call("presto", "run_query", sql, None).await;
    assert!(
        matches!(&failed, Err(SessionError::Tool { message, .. }) if message.contains("TABLE_NOT_FOUND")),
        "{failed:?}"
    );
    // Its id, as an alerting rule over the coordinator's queries would have it.
    let listed = json!({"include_finished": true, "limit": 10}).as_object().cloned().unwrap();
    let queries = sessions.call("presto", "list_running_queries", listed, None).await.unwrap();
    let query_id = queries["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["state"] == "FAILED" && q["query"].as_str().is_some_and(|s| s.contains("no_such_table")))
        .and_then(|q| q["query_id"].as_str())
        .unwrap_or_else(|| panic!("the failed query is listed: {queries}"))
        .to_string();

    let playbooks = shipped_playbooks();
    let alert = alert(&[("alertname", "PrestoQueryFailed"), ("query_id", query_id.as_str())]);
    let chosen = only_match(&playbooks, &alert, "presto-query-failure");
    let run = playbook::run(chosen, &alert, &sessions).await;
    let categories: Vec<&str> = run.findings.iter().map(|f| f.category.as_str()).collect();
    assert_eq!(categories, ["missing_table"], "{:?}", run.steps);
}
