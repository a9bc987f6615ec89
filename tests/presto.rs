//! The Presto domain against the protocol-faithful test coordinator, and the
//! coordinator itself against the official `trino` Python client.

use std::time::Duration;

use inquest::domains::presto::PrestoDomain;
use inquest::domains::presto::config::{Dialect, PrestoAuth, PrestoConfig};
use inquest::identity::Principal;
use inquest::mcp::{Domain, Hints, NoProgress, ToolCall, ToolError};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::presto::Coordinator;

fn config(coordinator: &Coordinator) -> PrestoConfig {
    PrestoConfig {
        url: coordinator.url.clone(),
        user: "inquest".to_string(),
        catalog: Some("hive".to_string()),
        schema: Some("warehouse".to_string()),
        timeout: Duration::from_secs(20),
        ..PrestoConfig::default()
    }
}

fn domain(config: PrestoConfig) -> PrestoDomain {
    PrestoDomain::new(config).unwrap()
}

async fn call(domain: &PrestoDomain, tool: &str, args: Value) -> Result<Value, ToolError> {
    call_with(domain, tool, args, CancellationToken::new()).await
}

async fn call_with(
    domain: &PrestoDomain,
    tool: &str,
    args: Value,
    cancel: CancellationToken,
) -> Result<Value, ToolError> {
    let caller = Principal::user("alice", &["sre"]);
    let args: Map<String, Value> = serde_json::from_value(args).unwrap();
    let call =
        ToolCall { tool, args, caller: &caller, progress: &NoProgress, cancel, deadline: Duration::from_secs(30) };
    domain.call(call).await
}

/// A query straight through the protocol (no domain code), for comparison:
/// `(column names, rows)`.
async fn direct(coordinator: &Coordinator, sql: &str) -> (Vec<String>, Vec<Value>) {
    let http = reqwest::Client::new();
    let mut answer: Value = http
        .post(format!("{}/v1/statement", coordinator.url))
        .header("X-Trino-User", "direct")
        .header("X-Trino-Catalog", "hive")
        .header("X-Trino-Schema", "warehouse")
        .body(sql.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (mut columns, mut rows) = (Vec::new(), Vec::new());
    loop {
        assert!(answer.get("error").is_none(), "{sql}: {answer}");
        if let Some(cols) = answer["columns"].as_array()
            && columns.is_empty()
        {
            columns = cols.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
        }
        rows.extend(answer["data"].as_array().cloned().unwrap_or_default());
        let Some(next) = answer["nextUri"].as_str() else { break };
        answer = http.get(next).send().await.unwrap().json().await.unwrap();
    }
    (columns, rows)
}

fn names(value: &Value) -> Vec<String> {
    serde_json::from_value(value["names"].clone()).unwrap()
}

#[tokio::test]
async fn the_official_client_accepts_the_coordinator() {
    let plain = Coordinator::builder().page_rows(50).start().await;
    let basic = Coordinator::builder().basic("alice", "s3cret").start().await;
    let bearer = Coordinator::builder().bearer("tok-123").start().await;
    let script = r#"
import json, sys, threading, time
import trino
from trino.auth import BasicAuthentication, JWTAuthentication
plain, basic, bearer = (int(p) for p in sys.argv[1:4])
out = {}
def connect(port, **kw):
    return trino.dbapi.connect(host="127.0.0.1", port=port, user="alice", catalog="hive", schema="warehouse", **kw)
conn = connect(plain)
cur = conn.cursor()
cur.execute("SELECT order_id, amount, ds FROM orders_daily ORDER BY order_id")
rows = cur.fetchall()
out["rows"] = len(rows)
out["first"] = [rows[0][0], str(rows[0][1]), rows[0][2]]
out["types"] = [d[1] for d in cur.description]
cur.execute("SELECT DISTINCT ds FROM hive.warehouse.orders_daily ORDER BY ds")
out["days"] = [r[0] for r in cur.fetchall()]
cur.execute("SHOW TABLES FROM hive.warehouse")
out["tables"] = [r[0] for r in cur.fetchall()]
try:
    cur.execute("SELECT * FROM hive.warehouse.no_such_table")
    cur.fetchall()
except trino.exceptions.TrinoUserError as e:
    out["error"] = [e.error_name, e.error_type, e.error_code, list(e.error_location), e.message]
slow = connect(plain).cursor()
def run():
    try:
        slow.execute("SELECT sleep(30)")
        slow.fetchall()
    except Exception as e:
        out["slow_error"] = type(e).__name__
t = threading.Thread(target=run); t.start()
time.sleep(0.8)
slow.cancel()
t.join(10)
out["slow_done"] = not t.is_alive()
cur.execute("SET SESSION query_max_run_time = '1h'")
cur.fetchall()
out["session"] = conn._client_session.properties
for name, port, auth in [("basic", basic, BasicAuthentication("alice", "s3cret")), ("bearer", bearer, JWTAuthentication("tok-123"))]:
    c = connect(port, auth=auth, allow_insecure_auth=True).cursor()
    c.execute("SELECT count(*) FROM orders_daily")
    out[name] = c.fetchall()[0][0]
    try:
        c = connect(port).cursor()
        c.execute("SELECT 1")
        c.fetchall()
        out[name + "_anonymous"] = "accepted"
    except Exception as e:
        out[name + "_anonymous"] = str(e)[:9]
print(json.dumps(out))
"#;
    let ports = [plain.port.to_string(), basic.port.to_string(), bearer.port.to_string()];
    let stdout = Coordinator::run_python(script, &ports.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["rows"], 240, "{out}");
    assert_eq!(out["first"], json!([1, "1.75", "2026-11-20"]));
    assert_eq!(out["types"], json!(["bigint", "decimal(12,2)", "varchar"]));
    assert_eq!(
        out["days"],
        json!(["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-25", "2026-11-26"])
    );
    assert_eq!(out["tables"], json!(["customers", "orders_daily"]));
    assert_eq!(
        out["error"],
        json!([
            "TABLE_NOT_FOUND",
            "USER_ERROR",
            46,
            [1, 15],
            "line 1:15: Table 'hive.warehouse.no_such_table' does not exist"
        ])
    );
    assert_eq!(out["slow_done"], true);
    assert_eq!(out["session"], json!({"query_max_run_time": "1h"}));
    assert_eq!((&out["basic"], &out["bearer"]), (&json!(240), &json!(240)));
    assert_eq!((&out["basic_anonymous"], &out["bearer_anonymous"]), (&json!("error 401"), &json!("error 401")));
    // The 240 rows came in pages of 50, and the cancel reached the coordinator.
    let cancels = plain.events_of("cancel").await;
    assert_eq!(cancels.len(), 1, "{cancels:?}");
}

#[tokio::test]
async fn each_tool_returns_what_the_coordinator_holds() {
    let coordinator = Coordinator::builder().page_rows(50).start().await;
    let presto = domain(config(&coordinator));

    let sql = "SELECT order_id, customer_id, amount, status, ds FROM hive.warehouse.orders_daily ORDER BY order_id";
    let got = call(&presto, "run_query", json!({"sql": sql})).await.unwrap();
    let (columns, rows) = direct(&coordinator, sql).await;
    assert_eq!(got["rows"], Value::Array(rows));
    assert_eq!(got["row_count"], 240);
    assert_eq!(got["truncated"], false);
    let got_columns: Vec<&str> =
        got["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(got_columns, columns);
    assert_eq!(got["columns"][2], json!({"name": "amount", "type": "decimal(12,2)"}));

    assert_eq!(names(&call(&presto, "list_catalogs", json!({})).await.unwrap()), ["hive", "system"]);
    let schemas = names(&call(&presto, "list_schemas", json!({"catalog": "hive"})).await.unwrap());
    let (_, direct_schemas) = direct(&coordinator, "SHOW SCHEMAS FROM hive").await;
    assert_eq!(json!(schemas.iter().map(|s| json!([s])).collect::<Vec<_>>()), Value::Array(direct_schemas));
    let tables = call(&presto, "list_tables", json!({"catalog": "hive", "schema": "warehouse"})).await.unwrap();
    assert_eq!(names(&tables), ["customers", "orders_daily"]);
    let like = call(&presto, "list_tables", json!({"catalog": "hive", "schema": "warehouse", "like": "orders%"})).await;
    assert_eq!(names(&like.unwrap()), ["orders_daily"]);

    let table =
        call(&presto, "describe_table", json!({"catalog": "hive", "schema": "warehouse", "table": "orders_daily"}))
            .await
            .unwrap();
    assert_eq!(table["partition_keys"], json!(["ds"]));
    assert_eq!(table["columns"][4], json!({"name": "ds", "type": "varchar", "extra": "partition key", "comment": ""}));
    let (_, direct_columns) = direct(&coordinator, "DESCRIBE hive.warehouse.orders_daily").await;
    assert_eq!(table["columns"].as_array().unwrap().len(), direct_columns.len());

    let plan = call(&presto, "explain", json!({"sql": "SELECT count(*) FROM orders_daily"})).await.unwrap();
    assert!(!plan["plan"].as_str().unwrap().is_empty(), "{plan}");

    // The missing partition shows in the data, as an investigation would find it.
    let days = call(&presto, "run_query", json!({"sql": "SELECT DISTINCT ds FROM orders_daily ORDER BY ds"})).await;
    assert!(!days.unwrap()["rows"].as_array().unwrap().contains(&json!(["2026-11-24"])));

    let queries = call(&presto, "list_running_queries", json!({"include_finished": true})).await.unwrap();
    let listed = queries["queries"].as_array().unwrap();
    let first_id = got["query_id"].as_str().unwrap();
    let ours = listed.iter().find(|q| q["query_id"] == first_id).unwrap_or_else(|| panic!("{queries}"));
    assert_eq!((&ours["state"], &ours["user"], &ours["query"]), (&json!("FINISHED"), &json!("inquest"), &json!(sql)));
    let one = call(&presto, "get_query", json!({"query_id": first_id})).await.unwrap();
    assert_eq!(&one, ours);
    let running = call(&presto, "list_running_queries", json!({})).await.unwrap();
    assert!(running["queries"].as_array().unwrap().iter().all(|q| q["state"] != "FINISHED"), "{running}");
}

#[tokio::test]
async fn wrong_arguments_and_query_errors_are_named() {
    let coordinator = Coordinator::start().await;
    let presto = domain(config(&coordinator));
    let cases = [
        ("run_query", json!({}), "sql"),
        ("run_query", json!({"sql": 1}), "sql"),
        ("run_query", json!({"sql": "SELECT * FROM no_such_table"}), "sql"),
        ("describe_table", json!({"catalog": "hive", "schema": "warehouse"}), "table"),
        ("describe_table", json!({"catalog": "hive", "schema": "", "table": "t"}), "schema"),
        ("get_query", json!({"query_id": "x'; DROP TABLE t; --"}), "query_id"),
        ("kill_query", json!({"query_id": "nope"}), "query_id"),
    ];
    for (tool, args, name) in cases {
        match call(&presto, tool, args.clone()).await {
            // A missing argument is named in `why` (serde reports it at the object's level).
            Err(ToolError::InvalidArgument { name: got, why }) => {
                assert!(
                    got == name || got.is_empty() && why.contains(&format!("`{name}`")),
                    "{tool} {args}: {got} {why}"
                )
            }
            other => panic!("{tool} {args}: {other:?}"),
        }
    }
    let missing = call(&presto, "run_query", json!({"sql": "SELECT * FROM no_such_table"})).await.unwrap_err();
    assert!(missing.to_string().contains("TABLE_NOT_FOUND"), "{missing}");
    let unknown = call(&presto, "get_query", json!({"query_id": "20260101_000000_00001_aaaaa"})).await;
    assert!(matches!(unknown, Err(ToolError::NotFound { .. })), "{unknown:?}");
    assert!(matches!(call(&presto, "nope", json!({})).await, Err(ToolError::UnknownTool(_))));
}

#[tokio::test]
async fn writes_are_refused_before_they_reach_the_coordinator() {
    let coordinator = Coordinator::start().await;
    let presto = domain(config(&coordinator));
    for sql in [
        "INSERT INTO orders_daily VALUES (1, 1, 1, 'x', '2026-11-24')",
        "DROP TABLE hive.warehouse.orders_daily",
        "CREATE TABLE t AS SELECT 1",
        "CALL system.runtime.kill_query(query_id => '20261126_000000_00001_aaaaa', message => 'x')",
        "SET SESSION query_max_run_time = '1h'",
        "SELECT 1; DROP TABLE orders_daily",
        "EXPLAIN ANALYZE DELETE FROM orders_daily",
    ] {
        let result = call(&presto, "run_query", json!({"sql": sql})).await;
        assert!(matches!(result, Err(ToolError::Refused(_))), "{sql}: {result:?}");
    }
    let explain = call(&presto, "explain", json!({"sql": "ANALYZE DROP TABLE orders_daily"})).await;
    assert!(matches!(explain, Err(ToolError::Refused(_))), "{explain:?}");
    assert_eq!(coordinator.events_of("statement").await, Vec::<Value>::new());
}

#[tokio::test]
async fn caps_truncate_say_so_and_stop_the_query() {
    let coordinator = Coordinator::builder().page_rows(20).start().await;
    let presto = domain(PrestoConfig { max_rows: 30, max_bytes: 4096, ..config(&coordinator) });
    let sql = "SELECT order_id, status FROM orders_daily ORDER BY order_id";

    let rows = call(&presto, "run_query", json!({"sql": sql})).await.unwrap();
    assert_eq!((&rows["row_count"], &rows["truncated"]), (&json!(30), &json!(true)));
    assert_eq!(rows["note"], "result truncated: stopped at the row cap of 30 rows");
    let asked = call(&presto, "run_query", json!({"sql": sql, "max_rows": 5})).await.unwrap();
    assert_eq!((&asked["row_count"], &asked["truncated"]), (&json!(5), &json!(true)));

    let wide = "SELECT order_id, repeat('x', 500) AS padding FROM orders_daily ORDER BY order_id";
    let bytes = call(&presto, "run_query", json!({"sql": wide})).await.unwrap();
    assert_eq!(bytes["truncated"], true);
    assert_eq!(bytes["note"], "result truncated: stopped at the byte cap of 4096 bytes");
    assert!(serde_json::to_string(&bytes["rows"]).unwrap().len() <= 4096);

    let small = call(&presto, "run_query", json!({"sql": "SELECT 1 AS one"})).await.unwrap();
    assert_eq!((&small["truncated"], small.get("note")), (&json!(false), None));

    // Each capped query was stopped on the coordinator; the uncapped one was not.
    let cancelled: Vec<Value> = coordinator.events_of("cancel").await.iter().map(|e| e["query_id"].clone()).collect();
    assert_eq!(cancelled, [rows["query_id"].clone(), asked["query_id"].clone(), bytes["query_id"].clone()]);
}

#[tokio::test]
async fn a_timeout_or_a_cancel_deletes_the_query() {
    let coordinator = Coordinator::start().await;
    let presto = domain(PrestoConfig { timeout: Duration::from_millis(800), ..config(&coordinator) });
    let result = call(&presto, "run_query", json!({"sql": "SELECT sleep(30)"})).await;
    assert!(matches!(result, Err(ToolError::Timeout(d)) if d == Duration::from_millis(800)), "{result:?}");
    let statements = coordinator.events_of("statement").await;
    let cancels = coordinator.events_of("cancel").await;
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0]["query_id"], statements[0]["query_id"]);

    let presto = domain(config(&coordinator));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let result = call_with(&presto, "run_query", json!({"sql": "SELECT sleep(30)"}), cancel).await;
    assert!(matches!(result, Err(ToolError::Cancelled)), "{result:?}");
    let cancels = coordinator.events_of("cancel").await;
    assert_eq!(cancels.len(), 2, "{cancels:?}");
    let second = call(&presto, "get_query", json!({"query_id": cancels[1]["query_id"]})).await.unwrap();
    assert_eq!((&second["state"], &second["error_code"]), (&json!("FAILED"), &json!("USER_CANCELED")));
}

#[tokio::test]
async fn kill_query_kills_a_running_query() {
    let coordinator = Coordinator::start().await;
    let presto = domain(config(&coordinator));
    let runner = presto.clone();
    let slow =
        tokio::spawn(async move { call(&runner, "run_query", json!({"sql": "SELECT sleep(30) AS slept"})).await });

    let mut running = Vec::new();
    for _ in 0..50 {
        let listed = call(&presto, "list_running_queries", json!({})).await.unwrap();
        running = listed["queries"].as_array().unwrap().clone();
        if running.iter().any(|q| q["query"] == "SELECT sleep(30) AS slept") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let victim = running.iter().find(|q| q["query"] == "SELECT sleep(30) AS slept").expect("the slow query runs");
    assert_eq!(victim["state"], "RUNNING");
    let id = victim["query_id"].clone();

    let killed =
        call(&presto, "kill_query", json!({"query_id": id, "message": "runaway, see incident"})).await.unwrap();
    assert_eq!(killed, json!({"query_id": id, "killed": true, "state_before": "RUNNING"}));
    let outcome = tokio::time::timeout(Duration::from_secs(10), slow).await.unwrap().unwrap();
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("ADMINISTRATIVELY_KILLED") && error.contains("runaway, see incident"), "{error}");
    let after = call(&presto, "get_query", json!({"query_id": id})).await.unwrap();
    assert_eq!((&after["state"], &after["error_code"]), (&json!("FAILED"), &json!("ADMINISTRATIVELY_KILLED")));
    assert_eq!(coordinator.events_of("kill").await[0]["query_id"], id);

    // Killing it again: the coordinator says it is not running.
    let again = call(&presto, "kill_query", json!({"query_id": id})).await.unwrap_err();
    assert!(again.to_string().contains("not running"), "{again}");
}

#[tokio::test]
async fn both_header_dialects_are_spoken() {
    let coordinator = Coordinator::start().await;
    for dialect in [Dialect::Trino, Dialect::Presto] {
        let presto = domain(PrestoConfig { dialect, ..config(&coordinator) });
        let got = call(&presto, "run_query", json!({"sql": "SELECT count(*) AS n FROM orders_daily"})).await.unwrap();
        assert_eq!(got["rows"], json!([[240]]), "{dialect:?}");
    }
    let dialects: Vec<Value> = coordinator.events_of("statement").await.iter().map(|e| e["dialect"].clone()).collect();
    assert_eq!(dialects, [json!("Trino"), json!("Presto")]);
    // The Presto dialect is answered in kind.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/statement", coordinator.url))
        .header("X-Presto-User", "p")
        .body("SET SESSION query_max_run_time = '1h'")
        .send()
        .await
        .unwrap();
    let mut answer: Value = response.json().await.unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    while let Some(next) = answer["nextUri"].as_str().map(str::to_string) {
        let r = reqwest::Client::new().get(next).header("X-Presto-User", "p").send().await.unwrap();
        headers.extend(r.headers().clone());
        answer = r.json().await.unwrap();
    }
    assert_eq!(headers.get("X-Presto-Set-Session").unwrap(), "query_max_run_time=1h");
    assert!(headers.get("X-Trino-Set-Session").is_none());
}

#[tokio::test]
async fn basic_and_bearer_auth() {
    let basic = Coordinator::builder().basic("svc", "pw-1").start().await;
    let bearer = Coordinator::builder().bearer("token-1").start().await;
    let cases = [
        (&basic, PrestoAuth::Basic { username: "svc".into(), password: "pw-1".to_string().into() }, true),
        (&basic, PrestoAuth::Basic { username: "svc".into(), password: "wrong".to_string().into() }, false),
        (&basic, PrestoAuth::None, false),
        (&bearer, PrestoAuth::Bearer { token: "token-1".to_string().into() }, true),
        (&bearer, PrestoAuth::Bearer { token: "token-2".to_string().into() }, false),
    ];
    for (coordinator, auth, accepted) in cases {
        let presto = domain(PrestoConfig { auth: auth.clone(), ..config(coordinator) });
        let result = call(&presto, "list_catalogs", json!({})).await;
        if accepted {
            assert_eq!(names(&result.unwrap()), ["hive", "system"], "{auth:?}");
        } else {
            match result {
                Err(ToolError::Backend { backend: "presto", address, why }) => {
                    assert_eq!(address, coordinator.url);
                    assert!(why.contains("refused our credentials (401)"), "{why}");
                }
                other => panic!("{auth:?}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn overload_is_retried_and_a_down_coordinator_is_named() {
    let coordinator = Coordinator::start().await;
    let presto = domain(config(&coordinator));
    coordinator.fail_next(503, 2).await;
    assert_eq!(names(&call(&presto, "list_catalogs", json!({})).await.unwrap()), ["hive", "system"]);
    assert_eq!(coordinator.events_of("forced_status").await.len(), 2);
    presto.healthy().await.unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = domain(PrestoConfig { url: format!("http://127.0.0.1:{port}"), ..PrestoConfig::default() });
    match call(&down, "list_catalogs", json!({})).await {
        Err(ToolError::Backend { backend: "presto", address, why }) => {
            assert_eq!(address, format!("http://127.0.0.1:{port}"));
            assert!(why.contains("cannot be reached"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(down.healthy().await.is_err());
    assert_eq!(down.backend(), format!("presto at http://127.0.0.1:{port}"));
}

#[test]
fn kill_query_is_the_one_sensitive_tool() {
    let presto = domain(PrestoConfig::default());
    assert_eq!(presto.id(), "presto");
    for tool in presto.tools() {
        let expected = if tool.name == "kill_query" { (true, Hints::DESTRUCTIVE) } else { (false, Hints::READ) };
        assert_eq!((tool.sensitive, tool.hints), expected, "{}", tool.name);
        assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{}", tool.name);
    }
    assert_eq!(presto.tools().len(), 9);
}
