//! The one integration-test binary. Each module is one area; `support` holds what
//! they share.

// Test helpers may unwrap: a panic there is a failed test with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod agent;
mod airflow;
mod api;
mod approvals;
mod browser;
mod chat;
mod chat_matrix;
mod chat_slack;
mod deploy;
mod domain_server;
mod durability;
mod evals;
mod fleet;
mod github;
mod github_wire;
mod jwt;
mod llm_script;
mod mcp_domains;
mod mcp_server;
mod mtls;
mod openapi;
mod playbooks;
mod presto;
mod prober;
mod reference_clients;
mod registry;
mod replicas;
mod sessions;
mod spark;
mod store;
