//! The seam where real domains are built from the configuration. Whoever merges a
//! domain (airflow, presto, spark) adds its arm here; everything else (transport,
//! authentication, authorization, approvals, metrics) is the same for all of them.

use std::sync::Arc;

use super::tool::Domain;
use crate::config::Config;

/// The domains `inquest server <id>` knows.
pub const KNOWN: [&str; 3] = ["airflow", "presto", "spark"];

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("unknown server `{0}` (known: airflow, presto, spark)")]
    Unknown(String),
    #[error("the {0} server is not built in yet")]
    NotBuiltIn(String),
}

/// Builds the domain `id` from its `[servers.<id>]` settings.
pub fn build_domain(id: &str, _config: &Config) -> Result<Arc<dyn Domain>, DomainError> {
    match id {
        "airflow" | "presto" | "spark" => Err(DomainError::NotBuiltIn(id.to_string())),
        other => Err(DomainError::Unknown(other.to_string())),
    }
}
