//! The Airflow domain against a real Airflow 3.3.2 (see `support::airflow`): each read
//! tool returns what the REST API holds, logs lead with the exception, writes act, bad
//! arguments are named, and a backend that is down is reported by address after retries.

use std::time::{Duration, Instant};

use inquest::domains::airflow::AirflowDomain;
use inquest::domains::airflow::config::AirflowConfig;
use inquest::domains::airflow::models::{Dag, DagList, DagRun, DagRunList, ImportErrorList, TaskInstanceList};
use inquest::domains::airflow::tools::{DagWithErrors, TaskInstances};
use inquest::identity::Principal;
use inquest::mcp::{Domain, NoProgress, ToolCall, ToolError};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::airflow::{self as af, Rest, encode};

async fn call(domain: &AirflowDomain, tool: &str, args: Value) -> Result<Value, ToolError> {
    let caller = Principal::user("u-test", &["sre"]);
    let args: Map<String, Value> = serde_json::from_value(args).unwrap();
    domain
        .call(ToolCall {
            tool,
            args,
            caller: &caller,
            progress: &NoProgress,
            cancel: CancellationToken::new(),
            deadline: Duration::from_secs(60),
        })
        .await
}

async fn ok(domain: &AirflowDomain, tool: &str, args: Value) -> Value {
    call(domain, tool, args.clone()).await.unwrap_or_else(|e| panic!("{tool} {args}: {e}"))
}

fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value}"))
}

async fn setup() -> (&'static af::Airflow, AirflowDomain, Rest) {
    let airflow = af::shared().await;
    let domain = AirflowDomain::new(&airflow.config()).unwrap();
    let rest = airflow.rest().await.unwrap();
    (airflow, domain, rest)
}

#[tokio::test]
async fn dag_tools_return_what_the_api_holds() {
    let (_, domain, rest) = setup().await;

    let listed: DagList = typed(ok(&domain, "list_dags", json!({"limit": 100})).await);
    let direct: DagList = typed(rest.get("/dags?limit=100&order_by=dag_id").await.unwrap());
    let ids = |l: &DagList| l.dags.iter().map(|d| d.dag_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&listed), ids(&direct));
    assert_eq!(listed.total_entries, direct.total_entries);
    let load = |l: &DagList| l.dags.iter().find(|d| d.dag_id == af::FAILING_LOAD_DAG).cloned().unwrap();
    assert_eq!(load(&listed), load(&direct));

    let by_tag: DagList = typed(ok(&domain, "list_dags", json!({"tag": "orders"})).await);
    assert_eq!(ids(&by_tag), [af::FAILING_LOAD_DAG]);
    let by_owner: DagList = typed(ok(&domain, "list_dags", json!({"owner": "sre", "dag_id_contains": "heart"})).await);
    assert_eq!(ids(&by_owner), [af::HEALTHY_DAG]);
    let paged: DagList = typed(ok(&domain, "list_dags", json!({"limit": 1, "offset": 1})).await);
    assert_eq!(ids(&paged), [ids(&direct)[1].clone()]);

    let dag: DagWithErrors = typed(ok(&domain, "get_dag", json!({"dag_id": af::FAILING_LOAD_DAG})).await);
    let direct: Dag = typed(rest.get(&format!("/dags/{}", af::FAILING_LOAD_DAG)).await.unwrap());
    assert_eq!(dag.dag, direct);
    assert_eq!(dag.import_errors, []);

    let source = ok(&domain, "get_dag_source", json!({"dag_id": af::FAILING_LOAD_DAG})).await;
    let direct = rest.get(&format!("/dagSources/{}", af::FAILING_LOAD_DAG)).await.unwrap();
    assert_eq!(source["content"], direct["content"]);
    assert!(source["content"].as_str().unwrap().contains("Table {table} not found"));

    let missing = call(&domain, "get_dag", json!({"dag_id": "no_such_dag"})).await.unwrap_err();
    assert!(matches!(&missing, ToolError::NotFound { what } if what.contains("no_such_dag")), "{missing}");
}

#[tokio::test]
async fn import_errors_are_listed_and_pointed_at() {
    let (_, domain, rest) = setup().await;
    let errors: ImportErrorList = typed(ok(&domain, "get_import_errors", json!({})).await);
    let direct: ImportErrorList = typed(rest.get("/importErrors").await.unwrap());
    assert_eq!(errors, direct);
    let broken = errors.import_errors.iter().find(|e| e.filename == af::BROKEN_FILE).unwrap();
    assert!(broken.stack_trace.contains("No module named 'warehouse_client'"), "{}", broken.stack_trace);

    let filtered: ImportErrorList =
        typed(ok(&domain, "get_import_errors", json!({"filename_contains": "nothing"})).await);
    assert_eq!(filtered.total_entries, 0);

    // The DAG in the broken file never exists as a DAG: the error says where to look.
    let err = call(&domain, "get_dag", json!({"dag_id": "broken_import"})).await.unwrap_err();
    let ToolError::NotFound { what } = &err else { panic!("{err}") };
    assert!(what.contains(af::BROKEN_FILE) && what.contains("get_import_errors"), "{what}");
}

#[tokio::test]
async fn run_and_task_instance_tools_return_what_the_api_holds() {
    let (airflow, domain, rest) = setup().await;
    let run_id = &airflow.failed_load_run;

    let runs: DagRunList =
        typed(ok(&domain, "list_dag_runs", json!({"dag_id": af::FAILING_LOAD_DAG, "state": ["failed"]})).await);
    let direct: DagRunList = typed(
        rest.get(&format!("/dags/{}/dagRuns?state=failed&order_by=-run_after", af::FAILING_LOAD_DAG)).await.unwrap(),
    );
    assert_eq!(runs, direct);
    assert!(runs.dag_runs.iter().any(|r| &r.dag_run_id == run_id));

    let run: DagRun =
        typed(ok(&domain, "get_dag_run", json!({"dag_id": af::FAILING_LOAD_DAG, "dag_run_id": run_id})).await);
    let direct: DagRun =
        typed(rest.get(&format!("/dags/{}/dagRuns/{}", af::FAILING_LOAD_DAG, encode(run_id))).await.unwrap());
    assert_eq!(run, direct);
    assert_eq!(run.state.as_deref(), Some("failed"));

    let tis: TaskInstances =
        typed(ok(&domain, "list_task_instances", json!({"dag_id": af::FAILING_LOAD_DAG, "dag_run_id": run_id})).await);
    let direct: TaskInstanceList = typed(
        rest.get(&format!(
            "/dags/{}/dagRuns/{}/taskInstances?order_by=-start_date",
            af::FAILING_LOAD_DAG,
            encode(run_id)
        ))
        .await
        .unwrap(),
    );
    assert_eq!(tis.task_instances, direct.task_instances);
    let states: Vec<(&str, Option<&str>)> =
        tis.task_instances.iter().map(|t| (t.task_id.as_str(), t.state.as_deref())).collect();
    assert!(states.contains(&(af::FAILING_LOAD_TASK, Some("failed"))), "{states:?}");
    assert!(states.contains(&("extract_orders", Some("success"))), "{states:?}");

    // Across all DAGs, failed by default.
    let failed: TaskInstances = typed(ok(&domain, "list_task_instances", json!({"limit": 100})).await);
    let direct: TaskInstanceList =
        typed(rest.get("/dags/~/dagRuns/~/taskInstances?state=failed&limit=100&order_by=-start_date").await.unwrap());
    assert_eq!(failed.total_entries, direct.total_entries);
    let found = |dag: &str, run: &str, task: &str| {
        failed.task_instances.iter().any(|t| t.dag_id == dag && t.dag_run_id == run && t.task_id == task)
    };
    assert!(found(af::FAILING_LOAD_DAG, run_id, af::FAILING_LOAD_TASK), "{failed:?}");
    assert!(found(af::TIMEOUT_DAG, &airflow.failed_timeout_run, af::TIMEOUT_TASK), "{failed:?}");
    assert!(failed.task_instances.iter().all(|t| t.state.as_deref() == Some("failed")));
}

#[tokio::test]
async fn task_logs_lead_with_the_exception() {
    let (airflow, domain, _) = setup().await;
    let log = ok(
        &domain,
        "get_task_log",
        json!({"dag_id": af::FAILING_LOAD_DAG, "dag_run_id": airflow.failed_load_run, "task_id": af::FAILING_LOAD_TASK}),
    )
    .await;
    let text = log["text"].as_str().unwrap();
    assert!(text.starts_with("EXCEPTION ProgrammingError: Table warehouse.orders_summary not found\n"), "{text}");
    assert!(text.contains("orders_daily_load.py"), "the frames name the DAG file: {text}");
    assert!(text.contains("loading 42 rows into warehouse.orders_summary"), "the task's own output: {text}");
    assert_eq!(log["try_number"], 1);
    assert_eq!(log["truncated"], Value::Null);

    let log = ok(
        &domain,
        "get_task_log",
        json!({"dag_id": af::TIMEOUT_DAG, "dag_run_id": airflow.failed_timeout_run, "task_id": af::TIMEOUT_TASK,
               "try_number": 1, "head_chars": 100, "tail_chars": 300}),
    )
    .await;
    let text = log["text"].as_str().unwrap();
    assert!(text.starts_with("EXCEPTION ") && text.lines().next().unwrap().contains("Timeout"), "{text}");
    assert!(log["truncated"].as_str().unwrap().starts_with("cut "), "{log}");
    assert!(text.contains("Task failed with exception"), "the tail keeps the end: {text}");

    let missing = call(
        &domain,
        "get_task_log",
        json!({"dag_id": af::FAILING_LOAD_DAG, "dag_run_id": airflow.failed_load_run, "task_id": "no_such_task"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(missing, ToolError::NotFound { .. }), "{missing}");
}

#[tokio::test]
async fn writes_act_on_airflow() {
    let (_, domain, rest) = setup().await;
    let dag_path = format!("/dags/{}", af::WRITES_DAG);

    let paused = ok(&domain, "set_dag_paused", json!({"dag_id": af::WRITES_DAG, "paused": true})).await;
    assert_eq!(paused, json!({"dag_id": af::WRITES_DAG, "is_paused": true}));
    assert_eq!(rest.get(&dag_path).await.unwrap()["is_paused"], true);
    ok(&domain, "set_dag_paused", json!({"dag_id": af::WRITES_DAG, "paused": false})).await;
    assert_eq!(rest.get(&dag_path).await.unwrap()["is_paused"], false);

    let run_id = format!("inquest_test_{}", uuid::Uuid::now_v7());
    let run: DagRun = typed(
        ok(
            &domain,
            "trigger_dag_run",
            json!({"dag_id": af::WRITES_DAG, "dag_run_id": run_id, "conf": {"reason": "test"}, "note": "from a test"}),
        )
        .await,
    );
    assert_eq!(run.dag_run_id, run_id);
    let direct = rest.get(&format!("{dag_path}/dagRuns/{run_id}")).await.unwrap();
    assert_eq!(direct["conf"], json!({"reason": "test"}));
    assert_eq!(direct["note"], "from a test");
    rest.wait_run_state(af::WRITES_DAG, &run_id, "success", Duration::from_secs(120)).await.unwrap();

    // A second trigger with the same id is refused by Airflow, not retried or hidden.
    let again = call(&domain, "trigger_dag_run", json!({"dag_id": af::WRITES_DAG, "dag_run_id": run_id})).await;
    assert!(matches!(again, Err(ToolError::Refused(_))), "{again:?}");

    let preview = ok(
        &domain,
        "clear_task_instances",
        json!({"dag_id": af::WRITES_DAG, "dag_run_id": run_id, "only_failed": false, "dry_run": true}),
    )
    .await;
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["task_instances"].as_array().unwrap().len(), 1, "{preview}");
    let ti_path = format!("{dag_path}/dagRuns/{run_id}/taskInstances/{}", af::WRITES_TASK);
    assert_eq!(rest.get(&ti_path).await.unwrap()["try_number"], 1, "a dry run clears nothing");

    let cleared = ok(
        &domain,
        "clear_task_instances",
        json!({"dag_id": af::WRITES_DAG, "dag_run_id": run_id, "task_ids": [af::WRITES_TASK], "only_failed": false}),
    )
    .await;
    assert_eq!(cleared["task_instances"][0]["task_id"], af::WRITES_TASK, "{cleared}");
    // Cleared means run again: the task instance comes back as its second try.
    let started = Instant::now();
    loop {
        let ti = rest.get(&ti_path).await.unwrap();
        if ti["try_number"] == 2 && ti["state"] == "success" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the cleared task did not run again: {ti}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn bad_arguments_are_named() {
    // No backend is needed: arguments are checked before any request.
    let domain = AirflowDomain::new(&closed_port_config()).unwrap();
    let cases = [
        ("list_dags", json!({"limit": "ten"}), "limit"),
        ("list_dags", json!({"limit": 1000}), "limit"),
        ("list_dags", json!({"paused": "no"}), "paused"),
        ("list_dag_runs", json!({"dag_id": "x", "state": ["exploded"]}), "state[0]"),
        ("get_dag_run", json!({"dag_id": "x"}), ""),
        ("list_task_instances", json!({"dag_run_id": "r"}), "dag_id"),
        ("get_task_log", json!({"dag_id": "d", "dag_run_id": "r", "task_id": "t", "try_number": 0}), "try_number"),
        ("get_task_log", json!({"dag_id": "d", "dag_run_id": "r", "task_id": "t", "try_number": -1}), "try_number"),
        ("trigger_dag_run", json!({"dag_id": "d", "conf": "x=1"}), "conf"),
        ("clear_task_instances", json!({"dag_id": "d", "dag_run_id": "r", "task_ids": []}), "task_ids"),
        ("set_dag_paused", json!({"dag_id": "d", "paused": "yes"}), "paused"),
        ("get_dag", json!({"dag_id": ""}), "dag_id"),
    ];
    for (tool, args, expected) in cases {
        match call(&domain, tool, args.clone()).await {
            Err(ToolError::InvalidArgument { name, .. }) => assert_eq!(name, expected, "{tool} {args}"),
            other => panic!("{tool} {args}: expected an invalid `{expected}`, got {other:?}"),
        }
    }
    let unknown = call(&domain, "drop_database", json!({})).await;
    assert!(matches!(unknown, Err(ToolError::UnknownTool(_))), "{unknown:?}");
}

#[tokio::test]
async fn a_backend_that_is_down_is_named_after_retries() {
    let config = closed_port_config();
    let domain = AirflowDomain::new(&config).unwrap();
    let started = Instant::now();
    let err = call(&domain, "list_dags", json!({})).await.unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        ToolError::Backend { backend, address, .. } => {
            assert_eq!(*backend, "airflow");
            assert_eq!(address, &config.url);
        }
        other => panic!("expected a Backend error, got {other}"),
    }
    assert!(err.to_string().contains(&config.url), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    // Three retries after the first try: at least 100 + 200 + 400 ms of backoff.
    assert!(elapsed >= Duration::from_millis(700), "no retries? took {elapsed:?}");

    // Writes are sent once.
    let started = Instant::now();
    let err = call(&domain, "set_dag_paused", json!({"dag_id": "d", "paused": true})).await.unwrap_err();
    assert!(matches!(err, ToolError::Backend { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(300), "a write was retried: {:?}", started.elapsed());

    assert!(matches!(domain.healthy().await, Err(ToolError::Backend { .. })));
    assert_eq!(domain.backend(), format!("airflow at {}", config.url));
}

#[tokio::test]
async fn a_wrong_password_is_a_backend_error_without_the_password() {
    let airflow = af::shared().await;
    let config = AirflowConfig { password: SecretString::from("not-the-password".to_string()), ..airflow.config() };
    let domain = AirflowDomain::new(&config).unwrap();
    domain.healthy().await.unwrap();
    let err = call(&domain, "list_dags", json!({})).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ToolError::Backend { .. }) && text.contains("refused the login"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

/// Settings for an Airflow that is not there: a port nothing listens on.
fn closed_port_config() -> AirflowConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    AirflowConfig {
        url: format!("http://127.0.0.1:{port}"),
        password: SecretString::from("not-the-password".to_string()),
        ..AirflowConfig::default()
    }
}
