//! The registry: the control plane's source of truth for which MCP servers exist, who
//! owns them, who may use which server and tool, and the approval service through
//! which people approve sensitive actions.
//!
//! API compatible with the official MCP registry v0.1 (`/v0.1/servers...`), with our
//! extensions under `_meta["dev.inquest/registry"]` and `/v0.1/x/...`.

pub mod approvals;
pub mod audit;
pub mod authz;
pub mod catalog;
pub mod prober;
pub mod server_json;
pub mod ui;
pub mod usage;

use std::sync::Arc;

use axum::Router;

use crate::clock::Clock;
use crate::config::RegistryConfig;
use crate::store::SqlStore;

/// What every registry handler can reach.
#[derive(Clone)]
pub struct RegistryState {
    pub config: Arc<RegistryConfig>,
    pub store: Arc<SqlStore>,
    pub clock: Arc<dyn Clock>,
    pub policy: Arc<authz::PolicyCache>,
}

/// Every registry route; the caller adds authentication (which puts a `Principal`
/// into each request's extensions).
pub fn router(state: RegistryState) -> Router {
    Router::new()
        .merge(catalog::routes())
        .merge(authz::routes())
        .merge(approvals::routes())
        .merge(audit::routes())
        .merge(usage::routes())
        .merge(ui::routes())
        .with_state(state)
}
