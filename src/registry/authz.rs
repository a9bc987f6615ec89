//! (being written)

use axum::Router;

use super::RegistryState;

pub fn routes() -> Router<RegistryState> {
    Router::new()
}

/// The registry's access policy, cached and invalidated on change (being written).
#[derive(Default)]
pub struct PolicyCache {}
