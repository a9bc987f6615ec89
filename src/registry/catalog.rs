//! (being written)

use axum::Router;

use super::RegistryState;

pub fn routes() -> Router<RegistryState> {
    Router::new()
}
