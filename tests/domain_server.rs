//! Adding a domain server, as a domain team would (the README's "Adding a domain
//! server"): a `freshness` domain written here against the framework's `Domain` trait
//! and run by `mcp::standalone::run` beside `inquest all`. An administrator lists it in
//! the registry with a policy naming its SPIFFE ID; the server registers itself, the
//! registry's prober finds it healthy, and an alert's playbook reaches it through the
//! registry's answer and cites what it said.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use inquest::app::{Listeners, Role, run};
use inquest::config::{self, Overrides};
use inquest::identity::devca;
use inquest::identity::mtls;
use inquest::mcp::tool::output;
use inquest::mcp::{Domain, Hints, ToolCall, ToolError, ToolSpec, standalone};
use reqwest::{Method, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::oidc::Browser;
use crate::support::process::until;
use crate::support::server::{config_with, list_server};

const NAME: &str = "dev.inquest/freshness";
const PATH: &str = "dev.inquest%2Ffreshness";
const SERVER_ID: &str = "spiffe://inquest.local/server/freshness";
const AGENT_ID: &str = "spiffe://inquest.local/agent";
const REGISTRY_ID: &str = "spiffe://inquest.local/registry";
const TABLE: &str = "warehouse.orders";
const LOAD_ERROR: &str = "source file s3://landing/orders/2026-11-27.csv not found";

// ---------------------------------------------------------------------------------
// The domain: when warehouse tables last loaded, read from a load log (in memory here;
// a real team's would query its scheduler or warehouse).

/// The domain's own keys in `[servers.freshness]`, beside the framework's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreshnessConfig {
    /// A table whose last successful load is older than this is stale.
    max_age_minutes: i64,
}

#[derive(Debug, Clone)]
struct Load {
    table: &'static str,
    started_at: DateTime<Utc>,
    succeeded: bool,
    error: Option<&'static str>,
}

/// One call as the domain saw it: who asked, for which tool, with what.
type Seen = (String, String, Value);

struct Freshness {
    max_age_minutes: i64,
    loads: Vec<Load>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TableArgs {
    /// `schema.table`.
    table: String,
}

#[derive(Serialize, JsonSchema)]
struct TableFreshness {
    table: String,
    /// When the newest successful load started (RFC 3339); none: never loaded.
    last_success_at: Option<String>,
    age_minutes: Option<i64>,
    max_age_minutes: i64,
    stale: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LoadsArgs {
    table: String,
    /// At most this many, newest first (default 5).
    limit: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
struct Loads {
    table: String,
    loads: Vec<LoadView>,
}

#[derive(Serialize, JsonSchema)]
struct LoadView {
    started_at: String,
    /// `succeeded` or `failed`.
    status: String,
    error: Option<String>,
}

impl Freshness {
    /// The table's loads, newest first; a table the log never saw is not found.
    fn loads_of(&self, table: &str) -> Result<Vec<&Load>, ToolError> {
        let mut loads: Vec<&Load> = self.loads.iter().filter(|l| l.table == table).collect();
        if loads.is_empty() {
            return Err(ToolError::NotFound { what: format!("table {table}") });
        }
        loads.sort_by_key(|l| std::cmp::Reverse(l.started_at));
        Ok(loads)
    }
}

#[async_trait]
impl Domain for Freshness {
    fn id(&self) -> &'static str {
        "freshness"
    }

    fn description(&self) -> &'static str {
        "Table freshness: when each warehouse table last loaded, and how its recent loads went"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec::new::<TableArgs, TableFreshness>(
                "table_freshness",
                "Get a table's freshness",
                "When the table last loaded successfully, how old that is, and whether that is over its limit.",
                Hints::READ,
            ),
            ToolSpec::new::<LoadsArgs, Loads>(
                "recent_loads",
                "List a table's recent loads",
                "The table's latest loads, newest first, with the error of each that failed.",
                Hints::READ,
            ),
        ]
    }

    fn backend(&self) -> String {
        "load log at memory".to_string()
    }

    async fn healthy(&self) -> Result<(), ToolError> {
        Ok(())
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<Value, ToolError> {
        self.seen.lock().unwrap().push((call.caller.id(), call.tool.to_string(), Value::Object(call.args.clone())));
        match call.tool {
            "table_freshness" => {
                let args: TableArgs = call.args()?;
                let loads = self.loads_of(&args.table)?;
                let last = loads.iter().find(|l| l.succeeded).map(|l| l.started_at);
                let age = last.map(|t| (Utc::now() - t).num_minutes());
                output(&TableFreshness {
                    table: args.table,
                    last_success_at: last.map(|t| t.to_rfc3339()),
                    age_minutes: age,
                    max_age_minutes: self.max_age_minutes,
                    stale: age.is_none_or(|a| a > self.max_age_minutes),
                })
            }
            "recent_loads" => {
                let args: LoadsArgs = call.args()?;
                let loads = self.loads_of(&args.table)?;
                let loads = loads
                    .into_iter()
                    .take(args.limit.unwrap_or(5))
                    .map(|l| LoadView {
                        started_at: l.started_at.to_rfc3339(),
                        status: if l.succeeded { "succeeded" } else { "failed" }.to_string(),
                        error: l.error.map(str::to_string),
                    })
                    .collect();
                output(&Loads { table: args.table, loads })
            }
            other => Err(ToolError::UnknownTool(other.to_string())),
        }
    }
}

/// The playbook the team ships with its server: its steps call `freshness__<tool>`.
const PLAYBOOK: &str = r#"
name: table-freshness
description: A table is stale; ask the freshness server when it last loaded and how its latest loads went.
manual_minutes: 20
match:
  labels:
    - alertname="TableStale"
    - table=~".+"
steps:
  - id: freshness
    tool: freshness__table_freshness
    args:
      table: "{{ labels.table }}"
  - id: loads
    tool: freshness__recent_loads
    args:
      table: "{{ steps.freshness.table }}"
      limit: 3
findings:
  - id: last_load_failed
    step: loads
    field: loads.0.status
    regex: "^failed$"
    cite: [freshness]
    category: upstream_failure
    summary: "{{ labels.table }} last loaded {{ steps.freshness.age_minutes }} minutes ago; its latest load failed: {{ steps.loads.loads[0].error }}"
  - id: stale
    step: freshness
    field: stale
    regex: "^true$"
    category: stale_table
    summary: "{{ labels.table }} is older than its limit of {{ steps.freshness.max_age_minutes }} minutes."
"#;

// ---------------------------------------------------------------------------------
// The registry's side, as an administrator logged in with the development login.

struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Admin {
    async fn login(base: &str) -> Admin {
        let mut browser = Browser::new();
        browser
            .post_form(&format!("{base}/auth/dev-login"), &[("subject", "root"), ("groups", "inquest-admins")])
            .await;
        let session = browser.cookie(base, "inquest_session").expect("a session");
        Admin { http: reqwest::Client::new(), base: base.to_string(), cookie: format!("inquest_session={session}") }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("origin", &self.base);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_teams_server_registers_is_probed_and_is_used_by_an_investigation() {
    inquest::identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    std::fs::write(playbooks.join("table-freshness.yaml"), PLAYBOOK).unwrap();

    // `inquest all` (registry and agent). Presto and Spark are off and Airflow without a
    // password is not mounted: the team's server is the only one to find.
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let mesh = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mesh_url = format!("https://{}", mesh.local_addr().unwrap());
    let playbook_dir = playbooks.display().to_string();
    let all_config = config_with(
        dir.path(),
        &[
            ("INQUEST_REGISTRY__PUBLIC_URL", &base),
            ("INQUEST_REGISTRY__PROBE_INTERVAL", "500ms"),
            ("INQUEST_AGENT__PLAYBOOKS", &playbook_dir),
            ("INQUEST_ENGINE__POLL_INTERVAL", "100ms"),
            ("INQUEST_SERVERS__PRESTO__ENABLED", "false"),
            ("INQUEST_SERVERS__SPARK__ENABLED", "false"),
        ],
    );
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let all = tokio::spawn(run(all_config, Role::All, Listeners { public, mesh: Some(mesh) }, stop.clone()));
    let http = reqwest::Client::new();
    until("inquest all to be ready", 20, async || {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // The server's address is known before it runs, so the admin can list it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_url = format!("https://{addr}/mcp");

    // Until an admin's policy names the server's SPIFFE ID, it may not publish itself.
    let ids = devca::ensure_dev_identities_with(dir.path(), "inquest.local", &[SERVER_ID.to_string()]).unwrap();
    let as_server = mtls::http_client(Arc::new(ids.file_source(SERVER_ID).unwrap()), vec![REGISTRY_ID.into()]).unwrap();
    let own = json!({"name": NAME, "description": "freshness", "version": "0.0.1",
                     "remotes": [{"type": "streamable-http", "url": server_url}]});
    let r = as_server.post(format!("{mesh_url}/v0.1/publish")).json(&own).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", r.text().await.unwrap());

    // The administrator lists it, writes its policy (naming its SPIFFE ID; the agent,
    // the registry's prober and team `data` may use it) and approves it.
    let admin = Admin::login(&base).await;
    let listing = json!({"name": NAME, "description": "Table freshness", "version": "0.0.0",
                         "remotes": [{"type": "streamable-http", "url": server_url}]});
    let policy = json!({
        "owner": {"team": "data-platform", "support_channel": "#data-platform"},
        "service_identity": SERVER_ID,
        "access": {
            "allowed": [AGENT_ID, REGISTRY_ID, "group:data"],
            "tools": {"table_freshness": {}, "recent_loads": {}},
            "unlisted_tools": "deny",
        },
    });
    let as_admin = |r: reqwest::RequestBuilder| r.header("cookie", &admin.cookie).header("origin", &admin.base);
    list_server(&admin.http, &base, as_admin, listing, policy).await;

    // The team's server, run by the framework from its own configuration file.
    let file = dir.path().join("freshness.toml");
    std::fs::write(
        &file,
        format!(
            "[registry]\nurl = \"{mesh_url}\"\n\n[servers.freshness]\ncall_timeout = \"10s\"\nmax_age_minutes = 360\n"
        ),
    )
    .unwrap();
    let overrides =
        Overrides { config_file: Some(file), data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let server_config = config::load(&overrides, Some(Default::default())).expect("the server's configuration");
    let keys = server_config.servers["freshness"].extra.clone();
    let own_keys: FreshnessConfig = serde_json::from_value(Value::Object(keys.into_iter().collect())).unwrap();
    let now = Utc::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let domain = Arc::new(Freshness {
        max_age_minutes: own_keys.max_age_minutes,
        loads: vec![
            Load { table: TABLE, started_at: now - TimeDelta::hours(26), succeeded: true, error: None },
            Load { table: TABLE, started_at: now - TimeDelta::hours(2), succeeded: false, error: Some(LOAD_ERROR) },
            Load { table: "warehouse.customers", started_at: now, succeeded: true, error: None },
        ],
        seen: seen.clone(),
    });
    let server_stop = CancellationToken::new();
    let token = server_stop.clone();
    let server = tokio::spawn(async move { standalone::run(&server_config, domain, listener, token).await });

    // It registers itself: the version it publishes carries its own tool snapshot.
    let version = env!("CARGO_PKG_VERSION");
    let entry = until("the server to register itself", 20, async || {
        let (status, entry) = admin.send(Method::GET, &format!("/v0.1/servers/{PATH}/versions/latest"), None).await;
        (status == StatusCode::OK && entry["server"]["version"] == version).then_some(entry)
    })
    .await;
    let published = &entry["server"];
    assert_eq!(published["remotes"], json!([{"type": "streamable-http", "url": server_url}]), "{entry}");
    let snapshot = &published["_meta"]["dev.inquest/server"];
    let tools: Vec<&str> = snapshot["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tools, ["table_freshness", "recent_loads"], "{snapshot}");
    for tool in snapshot["tools"].as_array().unwrap() {
        assert_eq!(tool["annotations"]["readOnlyHint"], true, "{tool}");
        assert_eq!(tool["outputSchema"]["type"], "object", "{tool}");
    }
    assert!(snapshot["tools"][0]["outputSchema"]["properties"]["stale"].is_object(), "{snapshot}");
    assert_eq!(snapshot["suggested_policy"]["sensitive_tools"], json!([]));
    let events = admin.get(&format!("/v0.1/x/servers/{PATH}/events")).await;
    let publishers: Vec<(&str, &str)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "server.published")
        .map(|e| (e["data"]["version"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(publishers, [("0.0.0", "user:root"), (version, SERVER_ID)], "{events}");

    // The registry's prober finds it healthy, in both protocol revisions, and sees
    // its tools live.
    let detail = until("the prober to find the server healthy", 20, async || {
        let detail = admin.get(&format!("/v0.1/x/servers/{PATH}")).await;
        (detail["dev.inquest/registry"]["health"]["status"] == "healthy").then_some(detail)
    })
    .await;
    let ext = &detail["dev.inquest/registry"];
    assert_eq!(ext["health"]["error"], Value::Null, "{detail}");
    assert!(ext["health"]["latency_ms"].is_u64(), "{detail}");
    let mut live: Vec<&str> =
        ext["tools"]["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    live.sort_unstable();
    assert_eq!(live, ["recent_loads", "table_freshness"], "{detail}");
    // And Kubernetes would find it ready.
    let agent_ids = devca::ensure_dev_identities(dir.path(), "inquest.local").unwrap();
    let as_agent =
        mtls::http_client(Arc::new(agent_ids.file_source(AGENT_ID).unwrap()), vec![SERVER_ID.into()]).unwrap();
    let ready = as_agent.get(format!("https://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(seen.lock().unwrap().is_empty(), "nothing called a tool yet");

    // An alert for team `data`: its playbook calls the server the registry permits.
    let alert = json!({"title": "orders is stale",
                       "labels": {"alertname": "TableStale", "table": TABLE, "team": "data"}});
    let r = http.post(format!("{base}/v1/alerts/generic")).json(&alert).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let accepted: Value = r.json().await.unwrap();
    let episode = accepted["episode_ids"][0].as_str().unwrap().to_string();
    let id = until("the investigation to complete", 30, async || {
        let list: Value = http.get(format!("{base}/v1/investigations")).send().await.ok()?.json().await.ok()?;
        let found = list["investigations"].as_array()?.iter().find(|i| i["episode_id"] == episode.as_str())?;
        (found["state"] == "completed").then(|| found["id"].as_str().unwrap().to_string())
    })
    .await;
    let detail: Value = http.get(format!("{base}/v1/investigations/{id}")).send().await.unwrap().json().await.unwrap();
    let events = detail["events"].as_array().unwrap();
    let of = |kind: &str| events.iter().filter(|e| e["kind"] == kind).map(|e| &e["data"]).collect::<Vec<_>>();

    assert_eq!(
        of("servers.discovered"),
        [&json!({"servers": [{"name": "freshness", "url": server_url, "trusted": true}]})],
        "{detail}"
    );
    assert_eq!(of("playbook.chosen")[0]["playbook"], "table-freshness");
    let called = of("tool.called");
    let calls: Vec<(&str, &str, &str)> = called
        .iter()
        .map(|c| (c["call_id"].as_str().unwrap(), c["tool"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [("c1", "freshness__table_freshness", "ok"), ("c2", "freshness__recent_loads", "ok")],
        "{detail}"
    );
    let first = &called[0]["result"];
    assert_eq!((first["stale"].as_bool(), first["max_age_minutes"].as_i64()), (Some(true), Some(360)), "{first}");
    assert!(first["age_minutes"].as_i64().is_some_and(|m| m >= 26 * 60), "{first}");
    let categories: Vec<&str> = of("finding").iter().map(|f| f["category"].as_str().unwrap()).collect();
    assert_eq!(categories, ["upstream_failure", "stale_table"], "{detail}");
    let report = of("report")[0];
    assert_eq!(report["root_cause"], "upstream_failure", "{report}");
    assert!(report["summary"].as_str().unwrap().contains(LOAD_ERROR), "{report}");
    let cited: Vec<&str> =
        report["evidence"][0]["calls"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(cited, ["c2", "c1"], "the failed load, then the freshness it explains: {report}");

    // The domain saw both calls, from the agent's mesh identity, with the rendered arguments.
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (AGENT_ID.to_string(), "table_freshness".to_string(), json!({"table": TABLE})),
            (AGENT_ID.to_string(), "recent_loads".to_string(), json!({"table": TABLE, "limit": 3})),
        ]
    );
    // Its metrics count them, and the registry learns of them from the server itself.
    let metrics = as_agent.get(format!("{server_url}/metrics")).send().await.unwrap().text().await.unwrap();
    for tool in ["table_freshness", "recent_loads"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("inquest_mcp_calls_total") && l.contains(&format!("tool=\"{tool}\"")))
            .unwrap_or_else(|| panic!("no count of {tool} in {metrics}"));
        assert!(line.contains("outcome=\"ok\"") && line.ends_with(" 1"), "{line}");
    }
    until("the server's usage reports", 10, async || {
        let detail = admin.get(&format!("/v0.1/x/servers/{PATH}")).await;
        (detail["dev.inquest/registry"]["usage"]["invocations"] == 2).then_some(())
    })
    .await;

    // Both stop cleanly on their signals.
    server_stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server stops");
    stopped.unwrap().expect("the server ran without an error");
    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), all).await.expect("inquest all stops");
    stopped.unwrap().expect("inquest all ran without an error");
}
