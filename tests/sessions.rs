//! The agent's MCP sessions against live (fake) servers over Streamable HTTP: a
//! hanging, an erroring and a slow server in one playbook run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use inquest::agent::{Limits, SessionError, SessionManager, SessionPool, Target};
use inquest::playbook::{self, AlertContext, StepOutcome};
use serde_json::json;

use crate::support::mcp::FakeMcp;

fn target(name: &str, url: &str, trusted: bool) -> Target {
    Target { name: name.into(), url: url.into(), http: reqwest::Client::new(), trusted }
}

fn limits() -> Limits {
    Limits {
        call_timeout: Duration::from_millis(400),
        max_call_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(5),
        read_retries: 1,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn tools_are_namespaced_and_calls_reuse_the_session() {
    let a = FakeMcp::start(&["echo", "clear_task"]).await;
    let m = SessionManager::new(vec![target("airflow", &a.url, true)], limits());
    let names: Vec<String> = m.tools().await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["airflow__clear_task", "airflow__echo"]);
    for i in 0..3 {
        let out = m.call("airflow", "echo", json!({"text": i}).as_object().unwrap().clone(), None).await.unwrap();
        assert_eq!(out, json!(format!("echo {{\"text\":{i}}}")));
    }
    assert_eq!(m.connects(), 1, "one session for the listing and every call");
    assert!(matches!(m.call("nope", "echo", Default::default(), None).await, Err(SessionError::UnknownServer(_))));
}

#[tokio::test]
async fn investigations_of_one_process_share_a_session_and_its_listing() {
    let a = FakeMcp::start(&["echo"]).await;
    let pool = SessionPool::new(limits());
    let first = pool.manager(vec![target("airflow", &a.url, true)]);
    let second = pool.manager(vec![target("airflow", &a.url, true)]);
    let (one, two) = tokio::join!(first.tools(), second.tools());
    assert_eq!(one.len(), 1);
    assert_eq!(two.len(), 1);
    let args = json!({"text": "x"}).as_object().unwrap().clone();
    first.call("airflow", "echo", args.clone(), None).await.unwrap();
    second.call("airflow", "echo", args, None).await.unwrap();
    assert_eq!(first.connects(), 1, "two investigations, one session");
    assert_eq!(second.connects(), 1);
    // The listing is kept: a changed list shows only once it is older than its TTL.
    a.set_tools(&["echo", "clear_task"]);
    assert_eq!(pool.manager(vec![target("airflow", &a.url, true)]).tools().await.len(), 1);
    // Another server under the same name is another entry.
    let b = FakeMcp::start(&["echo", "clear_task"]).await;
    let third = pool.manager(vec![target("airflow", &b.url, true)]);
    assert_eq!(third.tools().await.len(), 2);
    assert_eq!(third.connects(), 1);
}

#[tokio::test]
async fn a_hanging_an_erroring_and_a_slow_server_do_not_stop_the_investigation() {
    let hanging = FakeMcp::start(&["hang"]).await;
    let erroring = FakeMcp::start(&["fail"]).await;
    let slow = FakeMcp::start(&["slow"]).await;
    let m = SessionManager::new(
        vec![target("a", &hanging.url, true), target("b", &erroring.url, true), target("c", &slow.url, true)],
        limits(),
    );
    let p = playbook::parse(
        "t.yaml",
        r#"
name: three
description: d
manual_minutes: 1
match: {labels: ['alertname="X"']}
steps:
  - {id: hang, tool: a__hang, args: {text: "{{ labels.x }}"}}
  - {id: fail, tool: b__fail, args: {text: "{{ labels.x }}"}}
  - {id: slow, tool: c__slow, args: {text: "{{ labels.x }}"}}
"#,
    )
    .unwrap();
    let alert = AlertContext { labels: BTreeMap::from([("x".into(), "1".into())]), annotations: BTreeMap::new() };
    let started = Instant::now();
    let run = playbook::run(&p, &alert, &m).await;
    let took = started.elapsed();
    // One try and one retry of 400 ms for the read-only hanging tool, run beside the others.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let get = |id: &str| run.steps.iter().find(|(s, _)| s == id).map(|(_, o)| o.clone()).unwrap();
    assert!(
        matches!(get("hang"), StepOutcome::Failed { error, .. } if error.contains("did not answer within")),
        "{:?}",
        get("hang")
    );
    assert!(
        matches!(get("fail"), StepOutcome::Failed { error, .. } if error.contains("the backend said no")),
        "{:?}",
        get("fail")
    );
    assert!(matches!(get("slow"), StepOutcome::Done { .. }), "{:?}", get("slow"));
    assert_eq!(hanging.server.calls.load(std::sync::atomic::Ordering::SeqCst), 2, "a read-only tool is retried once");

    // Two timeouts opened the hanging server's breaker: the next call fails at once.
    let t = Instant::now();
    let again = m.call("a", "hang", Default::default(), None).await;
    assert!(matches!(again, Err(SessionError::CircuitOpen { .. })), "{again:?}");
    assert!(t.elapsed() < Duration::from_millis(100));
    // A tool's own error is not the server's fault: the erroring server stays callable.
    for _ in 0..3 {
        assert!(matches!(m.call("b", "fail", Default::default(), None).await, Err(SessionError::Tool { .. })));
    }
}

#[tokio::test]
async fn untrusted_servers_are_not_retried_and_unreachable_ones_say_where() {
    let hanging = FakeMcp::start(&["hang"]).await;
    let m = SessionManager::new(
        vec![target("third", &hanging.url, false), target("gone", "http://127.0.0.1:9/mcp", true)],
        limits(),
    );
    let r = m.call("third", "hang", Default::default(), None).await;
    assert!(matches!(r, Err(SessionError::Timeout { .. })), "{r:?}");
    assert_eq!(hanging.server.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "its read-only hint is not believed");
    let r = m.call("gone", "echo", Default::default(), None).await;
    assert!(matches!(&r, Err(SessionError::Connect { url, .. }) if url.contains("127.0.0.1:9")), "{r:?}");
    // A caller asking for more than the cap gets the cap.
    let t = Instant::now();
    let _ = m.call("third", "hang", Default::default(), Some(Duration::from_secs(60))).await;
    assert!(t.elapsed() < Duration::from_secs(2), "capped at max_call_timeout");
}

/// An investigation on the playbook path: the stored alert picks the playbook, the
/// steps go to the discovered servers, and the log records calls, findings and the
/// report.
#[tokio::test]
async fn an_investigation_records_its_calls_findings_and_report() {
    use std::sync::Arc;

    use inquest::agent::{AgentInvestigator, FixedDiscovery};
    use inquest::engine::{Investigator, WorkContext};
    use inquest::store::{SqlStore, Store};

    use crate::support::mcp::{ECHO_PLAYBOOK, echo_investigation};

    let server = FakeMcp::start(&["echo", "fail"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&format!("sqlite://{}/s.db", dir.path().display()), 2).await.unwrap();
    let investigation = echo_investigation(&store, "orders").await;
    // The echo playbook with a second step, whose tool fails.
    let yaml = ECHO_PLAYBOOK.replace("findings:", "  - {id: refuse, tool: fake__fail, args: {text: \"x\"}}\nfindings:");
    let playbooks = vec![playbook::parse("echo.yaml", &yaml).unwrap()];
    let investigator = AgentInvestigator {
        playbooks,
        discovery: Arc::new(FixedDiscovery(vec![target("fake", &server.url, true)])),
        sessions: Arc::new(SessionPool::new(limits())),
        planner: None,
        approvals: None,
        simulated_work: Duration::ZERO,
        metrics: None,
        drafting: None,
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let outcome = investigator.investigate(&WorkContext::detached(investigation, store)).await.unwrap();
    assert_eq!(outcome.summary, "the server echoed orders");
    let kinds: Vec<&str> = outcome.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "context.recorded",
            "servers.discovered",
            "playbook.chosen",
            "tool.called",
            "tool.called",
            "finding",
            "report"
        ]
    );
    assert_eq!(outcome.events[3].data["tool"], "fake__echo");
    assert_eq!(outcome.events[3].data["call_id"], "c1");
    assert_eq!(outcome.events[3].data["args"], json!({"text": "orders"}));
    assert_eq!(outcome.events[4].data["outcome"], "failed");
    assert_eq!(outcome.events[5].data["evidence"]["step"], "say");
    assert_eq!(outcome.events[5].data["evidence"]["call_id"], "c1");
    let report = &outcome.events[6].data;
    assert_eq!(report["mode"], "playbook");
    assert_eq!(report["root_cause"], "echoed");
    assert_eq!(report["manual_minutes"], 15);
    assert_eq!(report["evidence"][0]["calls"], json!(["c1"]));
    assert!(report["markdown"].as_str().unwrap().contains("[c1]"), "{report}");
}
