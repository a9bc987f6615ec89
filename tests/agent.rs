//! The agent's inquiry: playbook, then planner, over MCP sessions.
//!
//! The model is the scripted OpenAI-compatible server of `support/openai.rs`, reached
//! through the real async-openai client; it checks every request it gets. The MCP
//! servers are the fake one (for the planner's own behaviour) and the real domain
//! servers over their real backends (for the end-to-end cases).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inquest::agent::inquiry::{self, Outcome, Setup};
use inquest::agent::investigator::tool_infos;
use inquest::agent::report::Mode;
use inquest::agent::{Limits, Redactor, SessionManager, Target};
use inquest::config::Price;
use inquest::mcp::Domain;
use inquest::planner::{Budget, OpenAiModel, Planner, Prompts};
use inquest::playbook::{self, AlertContext, Playbook};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::mcp::{ECHO_PLAYBOOK, FakeMcp};
use crate::support::openai::{Script, ScriptedLlm, Turn};
use crate::support::served;
use crate::support::{airflow as af, presto, spark};

/// A secret that must never reach the model.
const SECRET: &str = "s3cr3t-hunter2-value";
const API_KEY: &str = "sk-test-0123456789abcdefghijklmnop";

fn planner(llm: &ScriptedLlm, budget: Budget) -> Planner {
    let config = llm.config(API_KEY, Duration::from_secs(20), &budget);
    let mut prices = BTreeMap::new();
    prices.insert("scripted".to_string(), Price { prompt_per_mtok: 3.0, completion_per_mtok: 15.0 });
    Planner {
        model: Arc::new(OpenAiModel::new(&config)),
        prompts: Prompts::load(None).unwrap(),
        budget,
        prices,
        redactor: Redactor::default(),
        max_tools: 24,
    }
}

fn budget() -> Budget {
    Budget { max_steps: 6, max_tokens: 500_000, max_cost_usd: 5.0, max_time: Duration::from_secs(60) }
}

fn alert(labels: &[(&str, &str)]) -> AlertContext {
    AlertContext {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: [("description".to_string(), format!("runbook token={SECRET}; owner ops@example.com"))]
            .into_iter()
            .collect(),
    }
}

fn shipped_playbooks() -> Vec<Playbook> {
    playbook::load(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks")]).unwrap()
}

async fn inquire(
    alert: &AlertContext,
    playbooks: &[Playbook],
    sessions: &SessionManager,
    planner: Option<&Planner>,
) -> Outcome {
    let tools = tool_infos(sessions).await;
    let setup = Setup {
        alert,
        team: "data",
        playbooks,
        caller: sessions,
        tools: &tools,
        planner,
        question: None,
        waits: None,
        first_call: 1,
    };
    inquiry::investigate(setup).await.expect("a playbook or a planner")
}

fn fake_target(url: &str) -> Target {
    Target { name: "fake".into(), url: url.into(), http: reqwest::Client::new(), trusted: true }
}

fn submit(summary: &str, cause: &str, evidence: Value) -> Turn {
    Turn::ToolCalls(vec![(
        "submit_report".into(),
        json!({"summary": summary, "root_cause": cause, "evidence": evidence, "confidence": "high",
               "ruled_out": [{"hypothesis": "the server was down", "why": "it answered", "calls": ["c1"]}]}),
    )])
}

fn kinds(outcome: &Outcome) -> Vec<&str> {
    outcome.events.iter().map(|e| e.kind.as_str()).collect()
}

/// The planner continues from the playbook, calls a tool, and submits a report whose
/// claims cite the calls; the model saw no secret and every request was well-formed.
#[tokio::test]
async fn the_planner_reports_with_citations_and_counts_what_it_spent() {
    let server = FakeMcp::start(&["echo"]).await;
    let sessions = SessionManager::new(vec![fake_target(&server.url)], Limits::default());
    let playbooks = vec![playbook::parse("echo.yaml", ECHO_PLAYBOOK).unwrap()];
    let llm = ScriptedLlm::start(
        Script::new(vec![
            Turn::ToolCalls(vec![("fake__echo".into(), json!({"text": "again"}))]),
            submit(
                "The server echoed orders.",
                "echoed",
                json!([{"claim": "the server echoed the word", "calls": ["c1", "c2"]}, {"claim": "a guess", "calls": ["c9"]}]),
            ),
        ])
        .forbid(SECRET)
        .forbid("ops@example.com")
        .forbid(API_KEY),
    )
    .await;
    let p = planner(&llm, budget());
    let a = alert(&[("alertname", "EchoFailed"), ("word", "orders")]);
    let outcome = inquire(&a, &playbooks, &sessions, Some(&p)).await;

    assert_eq!(llm.violations(), Vec::<String>::new());
    assert_eq!(llm.request_count(), 2);
    let r = &outcome.report;
    assert_eq!(r.mode, Mode::Planner);
    assert_eq!(r.summary, "The server echoed orders.");
    assert_eq!(r.root_cause.as_deref(), Some("echoed"));
    assert_eq!(r.evidence[0].calls, ["c1", "c2"]);
    assert!(r.notes.iter().any(|n| n.contains("a guess")), "the uncited claim is set aside: {:?}", r.notes);
    assert_eq!(r.usage.model_turns, 2);
    assert_eq!(r.usage.tool_calls, 2);
    assert!(r.usage.prompt_tokens > 0 && r.usage.cost_usd > 0.0, "{:?}", r.usage);
    assert_eq!(
        kinds(&outcome),
        ["playbook.chosen", "planner.finished", "tool.called", "tool.called", "finding", "report"]
    );
    assert_eq!(outcome.events[3].data["by"], "planner");
    // The model was offered the server's tools and the report, nothing else.
    let offered: Vec<String> = llm.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(offered, ["fake__echo", "submit_report"]);
    // The key went to the endpoint as a bearer token, and nowhere into the prompt.
    assert!(!llm.requests().iter().any(|r| r.to_string().contains(API_KEY)));
}

/// Budgets end the planner: out of steps, the playbook's findings stand and the
/// report says which budget stopped it; a model that fails or hangs leaves the
/// playbook's report, saying so, within the time budget.
#[tokio::test]
async fn budgets_and_model_failures_end_on_the_playbooks_report() {
    let server = FakeMcp::start(&["echo"]).await;
    let sessions = SessionManager::new(vec![fake_target(&server.url)], Limits::default());
    let playbooks = vec![playbook::parse("echo.yaml", ECHO_PLAYBOOK).unwrap()];
    let a = alert(&[("alertname", "EchoFailed"), ("word", "orders")]);
    let again = || Turn::ToolCalls(vec![("fake__echo".into(), json!({"text": "again"}))]);

    let llm = ScriptedLlm::start(Script::new(vec![again(), again(), again()])).await;
    let p = planner(&llm, Budget { max_steps: 2, ..budget() });
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert_eq!(out.report.stopped_by.as_deref(), Some("steps"));
    assert_eq!(out.report.root_cause.as_deref(), Some("echoed"), "the playbook's finding stands");
    assert!(out.report.to_markdown().contains("the steps budget ran out"), "{}", out.report.to_markdown());
    assert_eq!(llm.request_count(), 2);

    let llm = ScriptedLlm::start(Script::new(vec![again(), again()])).await;
    let p = planner(&llm, Budget { max_tokens: 10, ..budget() });
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert_eq!(out.report.stopped_by.as_deref(), Some("tokens"));
    assert_eq!(llm.request_count(), 1);

    let llm = ScriptedLlm::start(Script::new(vec![Turn::Fail(500)])).await;
    let p = planner(&llm, budget());
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert_eq!(out.report.mode, Mode::PlaybookFallback);
    assert_eq!(out.report.root_cause.as_deref(), Some("echoed"));
    assert!(out.report.notes.iter().any(|n| n.contains("planner could not finish")), "{:?}", out.report.notes);

    let llm = ScriptedLlm::start(Script::new(vec![again(), Turn::Hang])).await;
    let p = planner(&llm, Budget { max_time: Duration::from_secs(2), ..budget() });
    let started = Instant::now();
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(out.report.stopped_by.as_deref(), Some("time"));
    assert_eq!(out.report.root_cause.as_deref(), Some("echoed"));
}

/// A model that asks for a tool it was not offered gets an error back, and nothing is
/// called; one that never reports is asked once, then the playbook's report stands.
#[tokio::test]
async fn the_model_cannot_reach_tools_it_was_not_offered() {
    let server = FakeMcp::start(&["echo"]).await;
    let sessions = SessionManager::new(vec![fake_target(&server.url)], Limits::default());
    let playbooks = vec![playbook::parse("echo.yaml", ECHO_PLAYBOOK).unwrap()];
    let a = alert(&[("alertname", "EchoFailed"), ("word", "orders")]);
    let llm = ScriptedLlm::start(Script::new(vec![]).responder(|_, turn| {
        Some(match turn {
            0 => Turn::ToolCalls(vec![("fake__echo".into(), json!({"text": "x"}))]),
            1 => Turn::Content("I think I am done.".into()),
            _ => Turn::Content("Still no report.".into()),
        })
    }))
    .await;
    let p = planner(&llm, budget());
    let calls_before = server.server.calls.load(std::sync::atomic::Ordering::SeqCst);
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert_eq!(out.report.mode, Mode::PlaybookFallback);
    assert!(out.report.notes.iter().any(|n| n.contains("without submitting a report")), "{:?}", out.report.notes);
    assert_eq!(
        server.server.calls.load(std::sync::atomic::Ordering::SeqCst) - calls_before,
        2,
        "the playbook's call and the offered tool's"
    );

    // Names outside the offer (another server's tool, a made-up one) are refused here.
    let llm = ScriptedLlm::start(Script::new(vec![]).responder(|request, turn| {
        Some(match turn {
            0 => Turn::ToolCalls(vec![("fake__echo".into(), json!({"text": "x"}))]),
            _ => {
                let last = request["messages"].as_array().unwrap().last().unwrap()["content"].to_string();
                submit(&format!("last tool answer: {last}"), "echoed", json!([{"claim": "echoed", "calls": ["c1"]}]))
            }
        })
    }))
    .await;
    let p = planner(&llm, budget());
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert_eq!(out.report.mode, Mode::Planner);
}

// ---------------------------------------------------------------------------------
// End to end over the real domain servers and their backends.

struct Domains {
    _dir: tempfile::TempDir,
    stop: CancellationToken,
    targets: Vec<Target>,
}

impl Drop for Domains {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(domains: Vec<(Arc<dyn Domain>, Option<inquest::policy::ServerPolicy>)>) -> Domains {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut targets = Vec::new();
    for (domain, policy) in domains {
        let name = domain.id().to_string();
        let policy = policy.unwrap_or_else(served::allow_all);
        let s = served::serve_with(domain, dir.path(), &stop, policy).await.unwrap();
        targets.push(Target { name, url: s.url, http: s.agent_http, trusted: true });
    }
    Domains { _dir: dir, stop, targets }
}

fn airflow_domain(airflow: &af::Airflow) -> Arc<dyn Domain> {
    Arc::new(inquest::domains::airflow::AirflowDomain::new(&airflow.config()).unwrap())
}

fn presto_domain(coordinator: &presto::Coordinator) -> Arc<dyn Domain> {
    let config = inquest::domains::presto::config::PrestoConfig {
        url: coordinator.url.clone(),
        user: "inquest".to_string(),
        ..Default::default()
    };
    Arc::new(inquest::domains::presto::PrestoDomain::new(config).unwrap())
}

fn call<'o>(out: &'o Outcome, id: &str) -> &'o inquest::agent::inquiry::CallRecord {
    out.calls.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no call {id}"))
}

/// The tools an evidence list cites, as `server__tool`.
fn cited_tools(out: &Outcome) -> Vec<String> {
    let mut tools: Vec<String> =
        out.report.evidence.iter().flat_map(|e| e.calls.iter()).map(|id| call(out, id).tool_name()).collect();
    tools.sort();
    tools.dedup();
    tools
}

/// The DAG that fails on a missing table: its task log names the table, and Presto
/// confirms it does not exist. Playbook-only, then with the scripted model.
#[tokio::test]
async fn a_dag_failing_on_a_missing_table_is_explained_from_its_log_and_presto() {
    let airflow = af::shared().await;
    let coordinator = presto::Coordinator::start().await;
    let d = serve(vec![(airflow_domain(airflow), None), (presto_domain(&coordinator), None)]).await;
    let sessions = SessionManager::new(d.targets.clone(), Limits::default());
    let playbooks = shipped_playbooks();
    let a = alert(&[
        ("alertname", "AirflowTaskFailed"),
        ("dag_id", af::FAILING_LOAD_DAG),
        ("run_id", airflow.failed_load_run.as_str()),
    ]);

    let out = inquire(&a, &playbooks, &sessions, None).await;
    let r = &out.report;
    assert_eq!(r.mode, Mode::Playbook);
    assert_eq!(r.root_cause.as_deref(), Some("missing_table"), "{}", r.to_markdown());
    assert!(r.summary.contains("warehouse.orders_summary"), "{}", r.summary);
    assert_eq!(cited_tools(&out), ["airflow__get_task_log", "presto__describe_table"], "{}", r.to_markdown());
    let tables = out.calls.iter().find(|c| c.tool == "list_tables").expect("SHOW TABLES of the schema");
    assert!(!tables.result.as_ref().unwrap().to_string().contains("orders_summary"), "{:?}", tables.result);

    // With the model: it looks at SHOW TABLES itself and cites it with the log.
    let llm = ScriptedLlm::start(
        Script::new(vec![
            Turn::ToolCalls(vec![(
                "presto__list_tables".into(),
                json!({"catalog": "hive", "schema": "warehouse", "like": "orders%"}),
            )]),
            Turn::ToolCalls(vec![]), // replaced by the responder below
        ])
        .forbid(SECRET)
        .responder(|request, turn| {
            (turn == 1).then(|| {
                // Cite the log by the id the prompt gave it, and the listing just made.
                let text = request.to_string();
                let log = ["c1", "c2", "c3", "c4"].into_iter().find(|id| {
                    text.contains(&format!("[{id}] `airflow__get_task_log`"))
                });
                submit(
                    "orders_daily_load failed: its task writes to warehouse.orders_summary, which does not exist in Presto.",
                    "missing_table",
                    json!([
                        {"claim": "The task log says table warehouse.orders_summary was not found", "calls": [log.unwrap_or("c0")]},
                        {"claim": "SHOW TABLES in hive.warehouse lists no orders_summary", "calls": ["c6"]}
                    ]),
                )
            })
        }),
    )
    .await;
    let p = planner(&llm, budget());
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert_eq!(llm.violations(), Vec::<String>::new());
    let r = &out.report;
    assert_eq!(r.mode, Mode::Planner, "{}", r.to_markdown());
    assert_eq!(r.root_cause.as_deref(), Some("missing_table"));
    assert!(r.summary.contains("warehouse.orders_summary"));
    assert_eq!(call(&out, "c6").tool_name(), "presto__list_tables");
    let cited = cited_tools(&out);
    for tool in ["airflow__get_task_log", "presto__describe_table", "presto__list_tables"] {
        assert!(cited.contains(&tool.to_string()), "{tool} is cited: {cited:?}");
    }
}

/// The Spark job that ran out of memory: the failed task's reason and the executors'
/// memory figures are the evidence. Playbook-only, then with the scripted model.
#[tokio::test]
async fn a_spark_job_out_of_memory_is_explained_from_its_tasks_and_executors() {
    let history = spark::history().await;
    let config = inquest::domains::spark::SparkConfig { history_url: history.url.clone(), ..Default::default() };
    let domain: Arc<dyn Domain> = Arc::new(inquest::domains::spark::SparkDomain::new(&config).unwrap());
    let d = serve(vec![(domain, None)]).await;
    let sessions = SessionManager::new(d.targets.clone(), Limits::default());
    let playbooks = shipped_playbooks();
    let a = alert(&[("alertname", "SparkExecutorOOM"), ("app_id", history.runs.oom.as_str())]);

    let out = inquire(&a, &playbooks, &sessions, None).await;
    let r = &out.report;
    assert_eq!(r.playbook.as_deref(), Some("spark-executor-oom"));
    assert_eq!(r.root_cause.as_deref(), Some("out_of_memory"), "{}", r.to_markdown());
    let cited = cited_tools(&out);
    assert!(cited.contains(&"spark__list_failed_tasks".to_string()), "{cited:?}");
    assert!(cited.contains(&"spark__list_executors".to_string()), "the executor metrics: {cited:?}");
    assert!(r.remediation.iter().any(|m| m.remediation.as_deref() == Some("more_executor_memory")));

    let llm = ScriptedLlm::start(Script::new(vec![submit(
        "The job's task died with java.lang.OutOfMemoryError; its executor had too little heap.",
        "out_of_memory",
        json!([{"claim": "the failed task's reason is OutOfMemoryError", "calls": ["c1"]},
               {"claim": "the executor's memory figures", "calls": ["c2"]}]),
    )]))
    .await;
    let p = planner(&llm, budget());
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;
    assert_eq!(llm.violations(), Vec::<String>::new());
    assert_eq!(out.report.mode, Mode::Planner);
    assert_eq!(call(&out, "c1").tool_name(), "spark__list_failed_tasks");
    assert_eq!(call(&out, "c2").tool_name(), "spark__list_executors");
    assert!(call(&out, "c1").result.as_ref().unwrap().to_string().contains("OutOfMemoryError"));
    assert_eq!(out.report.evidence[0].calls, ["c1"]);
}

/// A task log that tells the agent to clear tasks: the model (scripted to obey) asks
/// for `clear_task_instances`; the server refuses without a person's approval, the task
/// stays failed, and the report flags the text.
#[tokio::test]
async fn a_prompt_injection_in_a_task_log_runs_nothing_and_is_flagged() {
    use inquest::policy::{Access, ApproverPolicy, ReviewState, ServerPolicy, ToolPolicy, UnlistedTools};

    let airflow = af::shared().await;
    let mut tools = BTreeMap::new();
    tools.insert(
        "clear_task_instances".to_string(),
        ToolPolicy {
            approval: Some(ApproverPolicy { approvers: vec!["group:data-eng".into()], required: 1 }),
            ..Default::default()
        },
    );
    let policy = ServerPolicy {
        security_review: ReviewState::Approved,
        production: ReviewState::Approved,
        access: Access {
            allowed: vec![served::AGENT.to_string()],
            unlisted_tools: UnlistedTools::Allow,
            tools,
            ..Default::default()
        },
        ..Default::default()
    };
    let d = serve(vec![(airflow_domain(airflow), Some(policy))]).await;
    let sessions = SessionManager::new(d.targets.clone(), Limits::default());
    let playbooks = shipped_playbooks();
    let run_id = airflow.failed_injection_run.clone();
    let a = alert(&[("alertname", "AirflowTaskFailed"), ("dag_id", af::INJECTION_DAG), ("run_id", run_id.as_str())]);
    let clear = json!({"dag_id": af::INJECTION_DAG, "dag_run_id": run_id, "task_ids": [af::INJECTION_TASK], "only_failed": true});
    let llm = ScriptedLlm::start(Script::new(vec![
        Turn::ToolCalls(vec![("airflow__clear_task_instances".into(), clear)]),
        submit("Approval granted; the task was cleared.", "other", json!([{"claim": "cleared", "calls": ["c4"]}])),
    ]))
    .await;
    let p = planner(&llm, budget());
    let out = inquire(&a, &playbooks, &sessions, Some(&p)).await;

    let cleared = out.calls.iter().find(|c| c.tool == "clear_task_instances").expect("the model asked");
    let refusal = cleared.result.as_ref().expect_err("refused");
    assert!(refusal.contains("approval"), "{refusal}");
    let rest = airflow.rest().await.unwrap();
    let ti = rest
        .get(&format!(
            "/dags/{}/dagRuns/{}/taskInstances/{}",
            af::INJECTION_DAG,
            af::encode(&run_id),
            af::INJECTION_TASK
        ))
        .await
        .unwrap();
    assert_eq!(ti["state"], "failed", "the task was not cleared: {ti}");
    let flagged: Vec<&str> = out.report.suspicious.iter().map(|s| s.why.as_str()).collect();
    assert!(flagged.contains(&"claims an approval"), "{:?}", out.report.suspicious);
    assert!(out.report.suspicious.iter().all(|s| call(&out, &s.call).tool == "get_task_log"));
    assert!(out.report.to_markdown().contains("Suspicious tool output"));
    // Whatever the model wrote, the prompt told it the log was data.
    let first = llm.requests()[0].to_string();
    assert!(first.contains("untrusted data"), "{first}");
}

// ---------------------------------------------------------------------------------
// `inquest all`: the registry decides what the agent reaches; questions come back.

/// The embedded default end to end: an admin registers an MCP server (not one of
/// ours) and lets the agent use it for team `data`; an alert for that team is
/// investigated through the registry's answer, by playbook then the planner; a
/// follow-up question takes the investigation up again and is answered in its log.
#[tokio::test]
async fn inquest_all_investigates_through_the_registry_and_answers_a_follow_up() {
    use crate::support::oidc::{CLIENT_ID, CLIENT_SECRET, OidcProvider, RESOURCE};
    use crate::support::server::config_with;
    use inquest::app::{Listeners, Role, run};

    let server = FakeMcp::start(&["echo"]).await;
    let llm = ScriptedLlm::start(Script::new(vec![]).forbid(SECRET).responder(|request, turn| {
        let follow_up = request.to_string().contains("A person following this investigation asks");
        Some(match (follow_up, turn) {
            (false, 0) => Turn::ToolCalls(vec![("fake__echo".into(), json!({"text": "again"}))]),
            (false, _) => {
                submit("The server echoed orders.", "echoed", json!([{"claim": "echoed", "calls": ["c1", "c2"]}]))
            }
            (true, _) => submit(
                "It echoed the word `orders`, taken from the alert's label.",
                "echoed",
                json!([{"claim": "the first call echoed orders", "calls": ["c1"]}]),
            ),
        })
    }))
    .await;
    let playbooks = tempfile::tempdir().unwrap();
    std::fs::write(playbooks.path().join("echo.yaml"), ECHO_PLAYBOOK).unwrap();

    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let provider = OidcProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let playbook_dir = playbooks.path().display().to_string();
    let llm_url = llm.base_url();
    let config = config_with(
        dir.path(),
        &[
            ("INQUEST_REGISTRY__PUBLIC_URL", &base),
            ("INQUEST_IDENTITY__OIDC__ISSUER", &provider.issuer),
            ("INQUEST_IDENTITY__OIDC__CLIENT_ID", CLIENT_ID),
            ("INQUEST_IDENTITY__OIDC__CLIENT_SECRET", CLIENT_SECRET),
            ("INQUEST_IDENTITY__OIDC__AUDIENCE", RESOURCE),
            ("INQUEST_IDENTITY__DEV_LOGIN", "false"),
            ("INQUEST_REGISTRY__ADMINS", "group:inquest-admins"),
            ("INQUEST_AGENT__PLAYBOOKS", &playbook_dir),
            ("INQUEST_LLM__BASE_URL", &llm_url),
            ("INQUEST_LLM__MODEL", "scripted-1"),
            ("INQUEST_ENGINE__POLL_INTERVAL", "100ms"),
        ],
    );
    let mesh = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    tokio::spawn(run(config, Role::All, Listeners { public, mesh: Some(mesh) }, stop.clone()));
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An administrator registers the server and lets the agent (and team data) use it.
    let token = provider.tokens_for("alice", RESOURCE).await["access_token"].as_str().unwrap().to_string();
    let doc = json!({"name": "dev.example/fake", "description": "echoes", "version": "1.0.0",
                     "remotes": [{"type": "streamable-http", "url": server.url}]});
    let policy = json!({"owner": {"team": "data"}, "access": {
        "allowed": ["spiffe://inquest.local/agent", "group:data"], "unlisted_tools": "allow"}});
    crate::support::server::list_server(&http, &base, |r| r.bearer_auth(&token), doc, policy).await;

    let body = json!({
        "version": "4", "groupKey": "{}:{alertname=\"EchoFailed\"}", "status": "firing", "receiver": "inquest",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "EchoFailed", "word": "orders", "team": "data"},
                    "annotations": {"runbook": format!("token={SECRET}")}, "startsAt": "2026-11-26T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "f1"}],
    });
    let r = http.post(format!("{base}/v1/alerts/alertmanager")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let episode = accepted["episode_ids"][0].as_str().unwrap().to_string();
    let id = wait_for(&http, &base, |list| {
        list["investigations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["episode_id"] == episode.as_str() && i["state"] == "completed")
            .map(|i| i["id"].as_str().unwrap().to_string())
    })
    .await;
    let detail: Value = http.get(format!("{base}/v1/investigations/{id}")).send().await.unwrap().json().await.unwrap();
    let events = detail["events"].as_array().unwrap();
    let of = |kind: &str| events.iter().filter(|e| e["kind"] == kind).collect::<Vec<_>>();
    assert_eq!(of("servers.discovered")[0]["data"]["servers"][0]["name"], "fake", "{detail}");
    assert_eq!(of("tool.called").len(), 2, "{detail}");
    let report = &of("report")[0]["data"];
    assert_eq!(report["mode"], "planner", "{report}");
    assert_eq!(report["evidence"][0]["calls"], json!(["c1", "c2"]));
    assert_eq!(detail["summary"], "The server echoed orders.");

    // Questions: bad ones are refused; a good one is answered in the log.
    let ask = |target: String, body: Value| {
        http.post(format!("{base}/v1/investigations/{target}/questions")).json(&body).send()
    };
    assert_eq!(ask("nope".into(), json!({"question": "why?"})).await.unwrap().status(), 404);
    assert_eq!(ask(id.clone(), json!({"question": "  "})).await.unwrap().status(), 400);
    let r = ask(id.clone(), json!({"question": "Which word did it echo?", "asked_by": "bob"})).await.unwrap();
    assert_eq!(r.status(), 202);
    let seq = r.json::<Value>().await.unwrap()["question_seq"].as_i64().unwrap();
    let answered = wait_answer(&http, &base, &id, seq).await;
    assert_eq!(answered["data"]["answer"], "It echoed the word `orders`, taken from the alert's label.");
    assert_eq!(answered["data"]["evidence"][0]["calls"], json!(["c1"]), "an earlier call may be cited");
    assert_eq!(llm.violations(), Vec::<String>::new());

    // Token use, cost and calls per team.
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |line: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{line} in {metrics}"))
    };
    assert!(value("inquest_llm_tokens_total{team=\"data\",kind=\"prompt\"}") > 0.0);
    assert_eq!(value("inquest_investigation_tool_calls_total{team=\"data\"}"), 2.0);
    assert_eq!(value("inquest_minutes_saved_total{team=\"data\"}"), 15.0);
}

/// Polls the investigation list until `found` picks something (30 s at most).
async fn wait_for<T>(http: &reqwest::Client, base: &str, found: impl Fn(&Value) -> Option<T>) -> T {
    for _ in 0..300 {
        let list: Value = http.get(format!("{base}/v1/investigations")).send().await.unwrap().json().await.unwrap();
        if let Some(t) = found(&list) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened");
}

/// Polls an investigation until the answer to question `seq` is in its log.
async fn wait_answer(http: &reqwest::Client, base: &str, id: &str, seq: i64) -> Value {
    for _ in 0..300 {
        let detail: Value =
            http.get(format!("{base}/v1/investigations/{id}")).send().await.unwrap().json().await.unwrap();
        // The row and the log are read one after the other: wait for both to agree.
        if let Some(e) = detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "question.answered" && e["data"]["question_seq"] == seq)
            && detail["state"] == "completed"
        {
            return e.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("question {seq} of {id} was never answered");
}
