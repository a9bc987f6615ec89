//! The investigation agent's side of MCP: sessions to the permitted servers.
//!
//! - `sessions`: pooled sessions per server, timeouts, retries for read-only tools,
//!   a breaker per server; the real [`crate::playbook::ToolCaller`];
//! - `breaker`: the circuit breaker's decisions (pure);
//! - `investigator`: the playbook path of an investigation, through a `Discovery` seam;
//! - `discovery`: the registry's permitted servers as session targets (mapping pure).

mod breaker;
pub mod discovery;
pub mod investigator;
pub mod sessions;

pub use discovery::RegistryDiscovery;
pub use investigator::{Discovery, FixedDiscovery, PlaybookInvestigator};
pub use sessions::{Limits, SessionError, SessionManager, Target};
