//! (being written)

use std::process::ExitCode;

/// `inquest dev-ca`.
pub fn command(_cfg: &crate::config::Config, _ids: &[String]) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
