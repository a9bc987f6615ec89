//! Shared test support: databases, processes, in-process servers, fixtures.
#![allow(dead_code)]

pub mod airflow;
pub mod codehost;
pub mod fixed;
pub mod fixtures;
pub mod gh_openapi;
pub mod github;
pub mod host;
pub mod mcp;
pub mod oidc;
pub mod openai;
pub mod pg;
pub mod presto;
pub mod process;
pub mod refclients;
pub mod served;
pub mod server;
pub mod slack;
pub mod spark;
pub mod synapse;
pub mod venv;
