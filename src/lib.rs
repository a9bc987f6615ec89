//! Inquest: an autonomous incident-investigation agent for data platforms.
//!
//! See the README's architecture section for the code map and the invariants.

pub mod agent;
pub mod app;
pub mod chat;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod domains;
pub mod engine;
pub mod eval;
pub mod github;
pub mod identity;
pub mod intake;
pub mod mcp;
pub mod percent;
pub mod planner;
pub mod playbook;
pub mod policy;
pub mod registry;
pub mod store;
pub mod telemetry;
pub mod web;
