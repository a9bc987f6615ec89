//! (being written)

use axum::Router;

use super::RegistryState;

pub fn routes() -> Router<RegistryState> {
    Router::new()
}

/// `inquest audit verify`.
pub async fn verify_command(_cfg: &crate::config::Config) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not built yet")
}
