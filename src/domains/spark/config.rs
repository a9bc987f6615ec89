//! Where the Spark History Server is and how long to wait for it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The Spark domain's settings, as read from configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparkConfig {
    /// Base URL of the History Server (the REST API is under `/api/v1`).
    pub history_url: String,
    /// Per-request timeout, written like `30s` or `2m`.
    #[serde(with = "crate::config::humantime_serde_compat")]
    pub timeout: Duration,
    /// Most items any list tool returns, so one call cannot flood a model's context.
    pub max_items: usize,
    /// Most requests in flight to the History Server at once; more wait their turn.
    /// Its Jetty accepts few connections at a time (a burst of new ones sees SYNs
    /// dropped and waits out TCP's retransmit timer), so a burst of tool calls queues
    /// here, on kept-alive connections, instead.
    pub max_concurrent_requests: usize,
}

impl Default for SparkConfig {
    fn default() -> Self {
        SparkConfig {
            history_url: "http://127.0.0.1:18080".into(),
            timeout: Duration::from_secs(30),
            max_items: 200,
            max_concurrent_requests: 16,
        }
    }
}

impl SparkConfig {
    /// Every mistake at once, as `(key, why)`, so a user fixes them in one go.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.history_url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                problems.push(("history_url".into(), format!("scheme `{}` is not http or https", url.scheme())))
            }
            Ok(url) if url.host_str().is_none() => problems.push(("history_url".into(), "has no host".into())),
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                problems.push(("history_url".into(), "must not carry credentials".into()))
            }
            Ok(_) => {}
            Err(e) => problems.push(("history_url".into(), format!("is not a URL: {e}"))),
        }
        if self.timeout.is_zero() {
            problems.push(("timeout".into(), "must be more than zero".into()));
        } else if self.timeout > Duration::from_secs(600) {
            problems.push(("timeout".into(), "must be at most 10m".into()));
        }
        if !(1..=10_000).contains(&self.max_items) {
            problems.push(("max_items".into(), "must be between 1 and 10000".into()));
        }
        if !(1..=1_000).contains(&self.max_concurrent_requests) {
            problems.push(("max_concurrent_requests".into(), "must be between 1 and 1000".into()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SparkConfig::default().validate(), Vec::<(String, String)>::new());
    }

    #[test]
    fn durations_read_as_text() {
        let config: SparkConfig = serde_json::from_str(r#"{"timeout": "1m 30s"}"#).unwrap();
        assert_eq!(config.timeout, Duration::from_secs(90));
        assert_eq!(config.history_url, "http://127.0.0.1:18080");
    }

    #[test]
    fn every_mistake_is_reported() {
        let config = SparkConfig {
            history_url: "ftp://x".into(),
            timeout: Duration::ZERO,
            max_items: 0,
            max_concurrent_requests: 0,
        };
        let keys: Vec<String> = config.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["history_url", "timeout", "max_items", "max_concurrent_requests"]);
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        let config = SparkConfig { history_url: "http://u:p@host:18080".into(), ..SparkConfig::default() };
        assert_eq!(config.validate().len(), 1);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_json::from_str::<SparkConfig>(r#"{"histroy_url": "http://x"}"#).is_err());
    }
}
