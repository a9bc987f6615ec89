//! The seam where real domains are built from the configuration: each `[servers.<id>]`
//! table's domain keys (those the framework does not read) become the domain's own
//! config; everything else (transport, authentication, authorization, approvals,
//! metrics) is the same for all of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::tool::Domain;
use crate::config::Config;
use crate::domains::airflow::AirflowDomain;
use crate::domains::airflow::config::AirflowConfig;
use crate::domains::presto::PrestoDomain;
use crate::domains::presto::config::PrestoConfig;
use crate::domains::spark::{SparkConfig, SparkDomain};

/// The domains `inquest server <id>` knows.
pub const KNOWN: [&str; 3] = ["airflow", "presto", "spark"];

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("unknown server `{0}` (known: airflow, presto, spark)")]
    Unknown(String),
    /// Every mistake in the domain's keys, each with its full key.
    #[error("invalid configuration: {}", .0.iter().map(|(k, why)| format!("{k}: {why}")).collect::<Vec<_>>().join("; "))]
    Config(Vec<(String, String)>),
    #[error("the {id} server cannot start: {why}")]
    Start { id: String, why: String },
}

/// Builds the domain `id` from its `[servers.<id>]` settings.
pub fn build_domain(id: &str, config: &Config) -> Result<Arc<dyn Domain>, DomainError> {
    let extra = config.servers.get(id).map(|s| s.extra.clone()).unwrap_or_default();
    let start = |why: String| DomainError::Start { id: id.to_string(), why };
    match id {
        "airflow" => {
            let cfg: AirflowConfig = domain_config(id, extra, AirflowConfig::validate)?;
            Ok(Arc::new(AirflowDomain::new(&cfg).map_err(|e| start(e.to_string()))?))
        }
        "spark" => {
            let cfg: SparkConfig = domain_config(id, extra, SparkConfig::validate)?;
            Ok(Arc::new(SparkDomain::new(&cfg).map_err(|e| start(e.to_string()))?))
        }
        "presto" => {
            let cfg: PrestoConfig = domain_config(id, extra, PrestoConfig::validate)?;
            Ok(Arc::new(PrestoDomain::new(cfg).map_err(|e| start(e.to_string()))?))
        }
        other => Err(DomainError::Unknown(other.to_string())),
    }
}

/// The mistakes in a `[servers.<id>]` table's domain keys, for the configuration
/// loader (none for an id that is not a built-in domain: `build_domain` names those).
pub fn check(id: &str, extra: &BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    let problems = match id {
        "airflow" => domain_config::<AirflowConfig>(id, extra.clone(), AirflowConfig::validate).err(),
        "presto" => domain_config::<PrestoConfig>(id, extra.clone(), PrestoConfig::validate).err(),
        "spark" => domain_config::<SparkConfig>(id, extra.clone(), SparkConfig::validate).err(),
        _ => None,
    };
    match problems {
        Some(DomainError::Config(problems)) => problems,
        _ => Vec::new(),
    }
}

/// The domain's keys as its config type, checked; mistakes named `servers.<id>.<key>`.
fn domain_config<T: DeserializeOwned>(
    id: &str,
    extra: BTreeMap<String, serde_json::Value>,
    validate: fn(&T) -> Vec<(String, String)>,
) -> Result<T, DomainError> {
    let value = serde_json::Value::Object(extra.into_iter().collect());
    let cfg: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { format!("servers.{id}") } else { format!("servers.{id}.{path}") };
        DomainError::Config(vec![(key, e.into_inner().to_string())])
    })?;
    let problems = validate(&cfg);
    if problems.is_empty() {
        return Ok(cfg);
    }
    let prefix = format!("{id}.");
    Err(DomainError::Config(
        problems
            .into_iter()
            .map(|(k, why)| (format!("servers.{id}.{}", k.strip_prefix(&prefix).unwrap_or(&k)), why))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn domain_mistakes_are_named_by_their_full_key() {
        let extra = BTreeMap::from([("history_url".to_string(), json!("ftp://x")), ("max_items".into(), json!(0))]);
        let Err(DomainError::Config(problems)) = domain_config::<SparkConfig>("spark", extra, SparkConfig::validate)
        else {
            panic!("accepted")
        };
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["servers.spark.history_url", "servers.spark.max_items"]);

        let extra = BTreeMap::from([("histroy_url".to_string(), json!("http://x"))]);
        let err = domain_config::<SparkConfig>("spark", extra, SparkConfig::validate).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("servers.spark") && e.contains("histroy_url")));
    }
}
