//! Where the Airflow domain finds its backend and how it logs in.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The `[airflow]` settings: an Airflow 3 API server and the account the domain uses
/// (its own, never the caller's).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AirflowConfig {
    /// Base URL of the API server, without `/api/v2`.
    pub url: String,
    pub username: String,
    #[serde(deserialize_with = "crate::domains::text::secret")]
    pub password: SecretString,
    /// Limit for one HTTP request to Airflow.
    #[serde(deserialize_with = "crate::domains::text::duration")]
    pub timeout: Duration,
    /// Limit for connecting, shorter than `timeout` so a down backend is noticed fast.
    #[serde(deserialize_with = "crate::domains::text::duration")]
    pub connect_timeout: Duration,
    /// Characters of a task log shown from its start and from its end; the middle is cut.
    pub log_head_chars: usize,
    pub log_tail_chars: usize,
}

impl Default for AirflowConfig {
    fn default() -> AirflowConfig {
        AirflowConfig {
            url: "http://127.0.0.1:28080".to_string(),
            username: "admin".to_string(),
            password: SecretString::from(String::new()),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            log_head_chars: 4_000,
            log_tail_chars: 8_000,
        }
    }
}

impl AirflowConfig {
    /// Every mistake at once, as `(key, why)`; empty when the settings are usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, why: &str| problems.push((format!("airflow.{key}"), why.to_string()));
        match reqwest::Url::parse(&self.url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => problem("url", "must be an http or https URL"),
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                problem("url", "must not carry credentials; use airflow.username and airflow.password")
            }
            Ok(_) => {}
            Err(e) => problem("url", &format!("is not a URL: {e}")),
        }
        if self.username.trim().is_empty() {
            problem("username", "must not be empty");
        }
        if self.password.expose_secret().is_empty() {
            problem("password", "must not be empty");
        }
        if self.timeout.is_zero() {
            problem("timeout", "must be more than zero");
        }
        if self.connect_timeout.is_zero() {
            problem("connect_timeout", "must be more than zero");
        }
        if self.log_head_chars + self.log_tail_chars < 200 {
            problem("log_head_chars", "log_head_chars + log_tail_chars must be at least 200");
        }
        problems
    }

    /// The base URL without a trailing slash, as it appears in error messages.
    pub fn address(&self) -> String {
        self.url.trim_end_matches('/').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_password() -> AirflowConfig {
        AirflowConfig { password: SecretString::from("pw".to_string()), ..AirflowConfig::default() }
    }

    #[test]
    fn defaults_with_a_password_are_valid() {
        assert_eq!(with_password().validate(), Vec::<(String, String)>::new());
    }

    #[test]
    fn every_mistake_is_reported() {
        let config = AirflowConfig {
            url: "ftp://user:pw@host".to_string(),
            username: " ".to_string(),
            timeout: Duration::ZERO,
            ..AirflowConfig::default()
        };
        let keys: Vec<String> = config.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["airflow.url", "airflow.username", "airflow.password", "airflow.timeout"]);
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        let config = AirflowConfig { url: "http://admin:pw@127.0.0.1:8080".to_string(), ..with_password() };
        let problems = config.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].1.contains("credentials"));
    }

    #[test]
    fn parses_durations_and_hides_the_password() {
        let json = serde_json::json!({"url": "http://af:8080/", "password": "hunter2", "timeout": "10s"});
        let config: AirflowConfig = serde_json::from_value(json).unwrap();
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.address(), "http://af:8080");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
