//! Settings of the Presto domain: where the coordinator is, who we are to it, and the
//! limits every query runs under.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// How the coordinator is reached. Every field has a default so that a config file
/// names only what differs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrestoConfig {
    /// Base URL of the coordinator, e.g. `http://trino.internal:8080`.
    pub url: String,
    /// The user queries run as (`X-Trino-User`); the domain's own identity, never the caller's.
    pub user: String,
    pub dialect: Dialect,
    pub auth: PrestoAuth,
    /// Session catalog and schema for unqualified names.
    pub catalog: Option<String>,
    pub schema: Option<String>,
    /// A result stops (and the query is cancelled) after this many rows ...
    pub max_rows: usize,
    /// ... or this many bytes of row JSON, whichever comes first.
    pub max_bytes: usize,
    /// How long one query may take before it is cancelled.
    #[serde(deserialize_with = "crate::domains::text::duration")]
    pub timeout: Duration,
    /// `X-Trino-Source`, so that coordinator admins can tell our queries apart.
    pub source: String,
}

impl Default for PrestoConfig {
    fn default() -> PrestoConfig {
        PrestoConfig {
            url: "http://127.0.0.1:8080".to_string(),
            user: "inquest".to_string(),
            dialect: Dialect::Trino,
            auth: PrestoAuth::None,
            catalog: None,
            schema: None,
            max_rows: 1000,
            max_bytes: 1024 * 1024,
            timeout: Duration::from_secs(60),
            source: "inquest".to_string(),
        }
    }
}

/// Which header family the coordinator speaks: Trino (`X-Trino-*`) or PrestoDB (`X-Presto-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Trino,
    Presto,
}

impl Dialect {
    /// The header name for `name` (`User` -> `X-Trino-User`).
    pub fn header(self, name: &str) -> String {
        match self {
            Dialect::Trino => format!("X-Trino-{name}"),
            Dialect::Presto => format!("X-Presto-{name}"),
        }
    }
}

/// How we authenticate to the coordinator. Secrets stay out of `Debug` and logs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PrestoAuth {
    #[default]
    None,
    Basic {
        username: String,
        #[serde(deserialize_with = "crate::domains::text::secret")]
        password: SecretString,
    },
    Bearer {
        #[serde(deserialize_with = "crate::domains::text::secret")]
        token: SecretString,
    },
}

impl PrestoConfig {
    /// Every mistake at once, as `(key, why)`, so a person fixes them in one go.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, why: &str| problems.push((key.to_string(), why.to_string()));
        match reqwest::Url::parse(&self.url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => problem("url", "must be http:// or https://"),
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                problem("url", "must not carry credentials; use auth")
            }
            Ok(_) => {}
            Err(e) => problem("url", &format!("not a URL: {e}")),
        }
        if self.user.trim().is_empty() {
            problem("user", "must not be empty (the coordinator requires a user)");
        }
        if self.schema.is_some() && self.catalog.is_none() {
            problem("schema", "needs catalog as well");
        }
        if self.max_rows == 0 {
            problem("max_rows", "must be at least 1");
        }
        if self.max_bytes < 1024 {
            problem("max_bytes", "must be at least 1024");
        }
        if self.timeout.is_zero() {
            problem("timeout", "must be longer than zero");
        }
        match &self.auth {
            PrestoAuth::Basic { username, .. } if username.is_empty() => problem("auth.username", "must not be empty"),
            PrestoAuth::Basic { .. } | PrestoAuth::Bearer { .. } if self.url.starts_with("http://") => {
                tracing::warn!(url = %self.url, "presto credentials will be sent over plain HTTP");
            }
            _ => {}
        }
        problems
    }

    /// The coordinator's address for messages: scheme, host and port only.
    pub fn address(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => format!("{}://{}", url.scheme(), url.authority()),
            Err(_) => self.url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn parse(value: serde_json::Value) -> PrestoConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(PrestoConfig::default().validate(), vec![]);
    }

    #[test]
    fn a_full_config_parses() {
        let config = parse(json!({
            "url": "https://trino.internal:8443", "user": "svc", "dialect": "presto",
            "auth": {"kind": "basic", "username": "svc", "password": "pw"},
            "catalog": "hive", "schema": "warehouse", "max_rows": 10, "max_bytes": 4096, "timeout": "5s",
        }));
        assert_eq!(config.dialect, Dialect::Presto);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert!(matches!(&config.auth, PrestoAuth::Basic { password, .. } if password.expose_secret() == "pw"));
        assert!(!format!("{config:?}").contains("\"pw\""));
        assert_eq!(config.address(), "https://trino.internal:8443");
        assert_eq!(config.validate(), vec![]);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let config = parse(json!({
            "url": "ftp://x", "user": " ", "schema": "s", "max_rows": 0, "max_bytes": 1, "timeout": "0s",
        }));
        let keys: Vec<String> = config.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["url", "user", "schema", "max_rows", "max_bytes", "timeout"]);
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        assert!(serde_json::from_value::<PrestoConfig>(json!({"urll": "x"})).is_err());
        assert!(serde_json::from_value::<PrestoConfig>(json!({"timeout": "soon"})).is_err());
    }
}
