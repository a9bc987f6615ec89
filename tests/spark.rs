//! The Spark domain against a real Spark 4.3.0 History Server holding three real runs
//! of one PySpark job: clean, a Python UDF failing on a bad record, and a task out of
//! JVM heap. Every tool goes through `SparkDomain::call`, and what it returns is held
//! against the REST API itself.

use std::time::Duration;

use inquest::domains::spark::{SparkConfig, SparkDomain};
use inquest::identity::Principal;
use inquest::mcp::{Domain, NoProgress, ToolCall, ToolError};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::spark::{self, SparkHistory};

fn domain(url: &str) -> SparkDomain {
    let config = SparkConfig { history_url: url.into(), timeout: Duration::from_secs(10), ..SparkConfig::default() };
    assert_eq!(config.validate(), vec![]);
    SparkDomain::new(&config).unwrap()
}

async fn call(domain: &SparkDomain, tool: &str, args: Value) -> Result<Value, ToolError> {
    let caller = Principal::service("spiffe://inquest.local/agent");
    let Value::Object(args) = args else { panic!("arguments must be an object") };
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

async fn ok(domain: &SparkDomain, tool: &str, args: Value) -> Value {
    call(domain, tool, args).await.unwrap_or_else(|e| panic!("{tool}: {e}"))
}

async fn setup() -> (&'static SparkHistory, SparkDomain) {
    let history = spark::history().await;
    (history, domain(&history.url))
}

/// Every field a tool returns under Spark's name holds what the REST API holds
/// (tools keep Spark's names and leave out what they do not need; `null` is absent).
fn same_fields(tool: &Value, rest: &Value) {
    match (tool, rest) {
        (Value::Object(tool), Value::Object(rest)) => {
            let mut compared = 0;
            for (key, value) in tool {
                if let Some(expected) = rest.get(key) {
                    same_fields(value, expected);
                    compared += 1;
                } else {
                    assert!(value.is_null(), "`{key}` is {value} but absent from the REST answer");
                }
            }
            assert!(compared >= 1, "nothing in common: {tool:?} / {rest:?}");
        }
        (Value::Array(tool), Value::Array(rest)) => {
            assert_eq!(tool.len(), rest.len(), "{tool:?} / {rest:?}");
            tool.iter().zip(rest).for_each(|(t, r)| same_fields(t, r));
        }
        (tool, rest) => assert_eq!(tool, rest),
    }
}

#[tokio::test]
async fn the_server_binds_loopback_only_and_is_healthy() {
    let (history, domain) = setup().await;
    assert_eq!(spark::listen_addresses(history.port), vec!["127.0.0.1".to_string()]);
    domain.healthy().await.unwrap();
    assert_eq!(domain.backend(), format!("spark history server at {}", history.url));
    assert_eq!(history.rest("version").await["spark"], "4.3.0");
}

#[tokio::test]
async fn applications_are_listed_and_filtered() {
    let (history, domain) = setup().await;
    let listed = ok(&domain, "list_applications", json!({"status": "completed", "limit": 50})).await;
    let rest = history.rest("applications?status=completed&limit=50").await;
    same_fields(&listed["applications"], &rest);
    let ids: Vec<&str> = listed["applications"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    for id in [&history.runs.ok, &history.runs.bad_record, &history.runs.oom] {
        assert!(ids.contains(&id.as_str()), "{id} in {ids:?}");
    }
    let one = ok(&domain, "list_applications", json!({"limit": 1})).await;
    assert_eq!(one["applications"].as_array().unwrap().len(), 1);
    let none = ok(&domain, "list_applications", json!({"min_date": "2999-01-01"})).await;
    assert_eq!(none["applications"], json!([]));
    let running = ok(&domain, "list_applications", json!({"status": "running"})).await;
    assert_eq!(running["applications"], json!([]));
}

#[tokio::test]
async fn an_application_and_its_jobs() {
    let (history, domain) = setup().await;
    let app = &history.runs.bad_record;
    let got = ok(&domain, "get_application", json!({"app_id": app})).await;
    same_fields(&got["application"], &history.rest(&format!("applications/{app}")).await);
    assert_eq!(got["summary"]["failed_jobs"], 1);
    assert!(got["summary"]["failed_stages"].as_u64().unwrap() >= 1);

    let jobs = ok(&domain, "list_jobs", json!({"app_id": app})).await;
    let rest = history.rest(&format!("applications/{app}/jobs")).await;
    let rest = rest.as_array().unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), rest.len());
    for (tool, rest) in jobs["jobs"].as_array().unwrap().iter().zip(rest) {
        same_fields(tool, rest);
    }
    let failed = ok(&domain, "list_jobs", json!({"app_id": app, "status": "failed"})).await;
    let failed = failed["jobs"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status"], "FAILED");
    let clean = ok(&domain, "list_jobs", json!({"app_id": history.runs.ok, "status": "failed"})).await;
    assert_eq!(clean["jobs"], json!([]));
}

#[tokio::test]
async fn the_udf_traceback_is_in_the_failed_stage() {
    let (history, domain) = setup().await;
    let app = &history.runs.bad_record;
    let stages = ok(&domain, "list_failed_stages", json!({"app_id": app})).await;
    let rest = history.rest(&format!("applications/{app}/stages?status=failed")).await;
    let stages = stages["stages"].as_array().unwrap();
    assert_eq!(stages.len(), rest.as_array().unwrap().len());
    for (tool, rest) in stages.iter().zip(rest.as_array().unwrap()) {
        same_fields(tool, rest);
    }
    let reason = stages[0]["failureReason"].as_str().unwrap();
    assert!(reason.contains("Traceback (most recent call last)"), "{reason}");
    assert!(reason.contains("ValueError: invalid literal for int() with base 10: 'n/a'"), "{reason}");
    assert!(reason.contains("in parse_amount"), "{reason}");

    let tasks = ok(&domain, "list_failed_tasks", json!({"app_id": app})).await;
    let task = &tasks["tasks"][0];
    assert!(task["errorMessage"].as_str().unwrap().contains("ValueError"), "{task}");
    assert_eq!(task["out_of_memory"], false);
}

#[tokio::test]
async fn a_stage_has_a_task_summary() {
    let (history, domain) = setup().await;
    let app = &history.runs.ok;
    let all = history.rest(&format!("applications/{app}/stages")).await;
    let stage = all.as_array().unwrap().iter().find(|s| s["status"] == "COMPLETE").unwrap();
    let (id, attempt) = (stage["stageId"].as_u64().unwrap(), stage["attemptId"].as_u64().unwrap());
    let got = ok(&domain, "get_stage", json!({"app_id": app, "stage_id": id})).await;
    same_fields(&got["stage"], stage);
    let summary = history
        .rest(&format!("applications/{app}/stages/{id}/{attempt}/taskSummary?quantiles=0.0,0.25,0.5,0.75,1.0"))
        .await;
    assert_eq!(got["task_summary"]["duration"], summary["duration"]);
    let median = summary["duration"][2].as_f64().unwrap();
    let max = summary["duration"][4].as_f64().unwrap();
    assert_eq!(got["health"]["median_task_ms"], json!(median));
    assert_eq!(got["health"]["max_task_ms"], json!(max));
    if median > 0.0 {
        assert_eq!(got["health"]["skew_ratio"], json!(max / median));
    }
    assert_eq!(got["health"]["gc_time_ms"], stage["jvmGcTime"]);
    assert_eq!(got["health"]["memory_bytes_spilled"], stage["memoryBytesSpilled"]);

    let missing = call(&domain, "get_stage", json!({"app_id": app, "stage_id": 9999})).await;
    assert!(matches!(missing, Err(ToolError::NotFound { .. })), "{missing:?}");
}

#[tokio::test]
async fn the_out_of_memory_run_shows_in_tasks_stages_and_executors() {
    let (history, domain) = setup().await;
    let app = &history.runs.oom;
    let tasks = ok(&domain, "list_failed_tasks", json!({"app_id": app})).await;
    let oom: Vec<&Value> = tasks["tasks"].as_array().unwrap().iter().filter(|t| t["out_of_memory"] == true).collect();
    assert!(!oom.is_empty(), "{tasks}");
    let message = oom[0]["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("java.lang.OutOfMemoryError: Java heap space"), "{message}");
    let (stage, attempt) = (&oom[0]["stage_id"], &oom[0]["stage_attempt_id"]);
    let rest = history.rest(&format!("applications/{app}/stages/{stage}/{attempt}/taskList?status=FAILED")).await;
    assert!(rest.as_array().unwrap().iter().any(|t| t["errorMessage"] == message));

    let stages = ok(&domain, "list_failed_stages", json!({"app_id": app})).await;
    assert!(!stages["stages"].as_array().unwrap().is_empty(), "{stages}");
    let reason = stages["stages"][0]["failureReason"].as_str().unwrap();
    assert!(reason.contains("java.lang.OutOfMemoryError: Java heap space"), "{reason}");
    let detail = ok(&domain, "get_stage", json!({"app_id": app, "stage_id": stage})).await;
    assert_eq!(detail["stage"]["status"], "FAILED");
    let findings = detail["health"]["findings"].as_array().unwrap();
    assert!(findings.contains(&json!("the failure looks like running out of memory")), "{findings:?}");
    assert!(detail["stage"]["numFailedTasks"].as_u64().unwrap() >= 1);

    let executors = ok(&domain, "list_executors", json!({"app_id": app})).await;
    let rest = history.rest(&format!("applications/{app}/allexecutors")).await;
    let executors = executors["executors"].as_array().unwrap();
    assert_eq!(executors.len(), rest.as_array().unwrap().len());
    for (tool, rest) in executors.iter().zip(rest.as_array().unwrap()) {
        same_fields(tool, rest);
    }
    let driver = executors.iter().find(|e| e["id"] == "driver").unwrap();
    assert!(driver["failedTasks"].as_u64().unwrap() >= 1, "{driver}");
    assert!(driver["maxMemory"].as_u64().unwrap() < 512 * 1024 * 1024, "a small heap: {driver}");
}

#[tokio::test]
async fn the_environment_hides_secrets() {
    let (history, domain) = setup().await;
    let app = &history.runs.ok;
    let env = ok(&domain, "get_environment", json!({"app_id": app})).await;
    let rest = history.rest(&format!("applications/{app}/environment")).await;
    let props = env["spark_properties"].as_object().unwrap();
    assert_eq!(props.len(), rest["sparkProperties"].as_array().unwrap().len());
    assert_eq!(props["spark.app.name"], "orders-ok");
    assert_eq!(props["spark.master"], "local[2]");
    let secret = props["spark.inquest.test.password"].as_str().unwrap();
    assert!(!secret.contains("hunter2"), "{secret}");
    assert!(!env.to_string().contains("hunter2"));
    assert_eq!(env["runtime"]["javaVersion"], rest["runtime"]["javaVersion"]);
}

#[tokio::test]
async fn two_runs_are_compared() {
    let (history, domain) = setup().await;
    let (good, bad) = (&history.runs.ok, &history.runs.oom);
    let got = ok(&domain, "compare_applications", json!({"left_app_id": good, "right_app_id": bad})).await;
    assert_eq!(got["left"]["app_id"], json!(good));
    assert_eq!(got["right"]["app_id"], json!(bad));
    assert_eq!(got["left"]["failed_jobs"], 0);
    assert!(got["right"]["failed_stages"].as_u64().unwrap() >= 1);
    let left_ms = got["left"]["duration_ms"].as_i64().unwrap();
    let right_ms = got["right"]["duration_ms"].as_i64().unwrap();
    assert_eq!(got["duration_change_ms"], json!(right_ms - left_ms));
    let diff: Map<String, Value> = got["config_differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["key"].as_str().unwrap().to_string(), json!([d["left"], d["right"]])))
        .collect();
    assert_eq!(diff["spark.driver.memory"], json!(["1g", "512m"]), "{diff:?}");
    assert_eq!(diff["spark.sql.shuffle.partitions"], json!(["4", "2"]), "{diff:?}");
    assert!(!diff.contains_key("spark.app.id"), "run identity is left out");
}

#[tokio::test]
async fn wrong_arguments_are_named() {
    let domain = domain("http://127.0.0.1:9");
    let table = [
        ("list_applications", json!({"limit": "ten"}), "limit"),
        ("list_applications", json!({"limit": 0}), "limit"),
        ("list_applications", json!({"status": "sleeping"}), "status"),
        ("list_applications", json!({"min_date": "last tuesday"}), "min_date"),
        ("list_jobs", json!({"app_id": "a", "status": "done"}), "status"),
        ("list_jobs", json!({}), ""),
        ("get_stage", json!({"app_id": "a", "stage_id": -1}), "stage_id"),
        ("get_application", json!({"app_id": "../etc"}), "app_id"),
        ("compare_applications", json!({"left_app_id": "a", "right_app_id": "x/y"}), "right_app_id"),
    ];
    for (tool, args, name) in table {
        match call(&domain, tool, args.clone()).await {
            Err(ToolError::InvalidArgument { name: got, why }) => {
                if name.is_empty() {
                    assert!(why.contains("app_id"), "{tool} {args}: {why}");
                } else {
                    assert_eq!(got, name, "{tool} {args}: {why}");
                }
            }
            other => panic!("{tool} {args}: {other:?}"),
        }
    }
    assert!(matches!(call(&domain, "drop_tables", json!({})).await, Err(ToolError::UnknownTool(_))));
}

#[tokio::test]
async fn an_unknown_application_is_not_found() {
    let (_, domain) = setup().await;
    let got = call(&domain, "get_environment", json!({"app_id": "local-0"})).await;
    assert!(matches!(&got, Err(ToolError::NotFound { what }) if what.contains("local-0")), "{got:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_backend_error_naming_the_address() {
    let url = format!("http://127.0.0.1:{}", spark::closed_port());
    let domain = domain(&url);
    match call(&domain, "list_applications", json!({})).await {
        Err(ToolError::Backend { backend, address, why }) => {
            assert_eq!(backend, "spark history server");
            assert_eq!(address, url);
            assert!(why.contains("cannot reach"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let health = domain.healthy().await;
    assert!(health.is_err_and(|e| e.to_string().contains(&url)));
}
