//! The investigation agent: discovery, MCP sessions to the permitted servers, and the
//! inquiry that turns an alert into a report.
//!
//! - `sessions`: pooled sessions per server, timeouts, retries for read-only tools,
//!   a breaker per server; the real [`crate::playbook::ToolCaller`];
//! - `breaker`: the circuit breaker's decisions (pure);
//! - `approval`: calls that wait for a person: the link, the wait, the decision;
//! - `client`: the agent's MCP client handler, which declines every elicitation;
//! - `discovery`: the registry's permitted servers as session targets (mapping pure);
//! - `inquiry`: one investigation's work over the `ToolCaller` seam: the playbook,
//!   then the planner, every call numbered for citation;
//! - `investigator`: the runner's [`crate::engine::Investigator`], through a
//!   `Discovery` seam;
//! - `report`: the report's shape, JSON and Markdown (pure);
//! - `untrusted`: text in tool output that reads like instructions (pure);
//! - `redact`: secrets and personal data removed before anything reaches the model (pure).

pub mod approval;
mod breaker;
pub mod client;
pub mod discovery;
pub mod inquiry;
pub mod investigator;
pub mod redact;
pub mod report;
pub mod sessions;
pub mod untrusted;

pub use discovery::RegistryDiscovery;
pub use investigator::{AgentInvestigator, Discovery, FixedDiscovery};
pub use redact::Redactor;
pub use report::Report;
pub use sessions::{Limits, SessionError, SessionManager, SessionPool, Target};
