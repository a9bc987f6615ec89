//! The registry's health prober against real MCP peers (rmcp over Streamable HTTP).

use std::time::Duration;

use inquest::registry::prober::{HealthStatus, probe};

use crate::support::mcp::FakeMcp;

#[tokio::test]
async fn a_healthy_server_answers_both_revisions_with_its_tools() {
    let mcp = FakeMcp::start(&["list_dags", "clear_task_instances"]).await;
    let outcome = probe(&reqwest::Client::new(), &mcp.url, Duration::from_secs(5)).await;
    assert_eq!(outcome.status, HealthStatus::Healthy, "{outcome:?}");
    assert_eq!(outcome.revisions, ["2026-07-28", "2025-11-25"]);
    let names: Vec<&str> = outcome.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["list_dags", "clear_task_instances"]);
    assert_eq!(outcome.tools[1].annotations["destructiveHint"], true);
    assert_eq!(outcome.error, None);

    mcp.set_tools(&["list_dags"]);
    let again = probe(&reqwest::Client::new(), &mcp.url, Duration::from_secs(5)).await;
    assert_eq!(again.tools.len(), 1, "the live list is what is recorded");
}

#[tokio::test]
async fn an_unreachable_server_is_reported_not_dropped() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let outcome = probe(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}/mcp"), Duration::from_secs(2)).await;
    assert_eq!(outcome.status, HealthStatus::Unreachable);
    assert!(outcome.tools.is_empty());
    assert!(outcome.error.as_deref().unwrap_or("").contains("2026-07-28"), "{outcome:?}");
}
