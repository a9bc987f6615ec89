//! Alert intake: webhook formats in, one normalized [`Alert`] type out.
//!
//! Parsing and signature checks are pure (`parse`, `auth`); grouping decisions are pure
//! (`grouping`); the HTTP handlers (`routes`) and the group-commit writer (`writer`) do
//! the IO. Nothing here decides how an investigation runs.

pub mod alertmanager;
pub mod auth;
pub mod generic;
pub mod grafana;
pub mod grouping;
pub mod pagerduty;
pub mod routes;
pub mod writer;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where an alert came from; also the last path segment of its intake URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Alertmanager,
    Grafana,
    Pagerduty,
    Generic,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Alertmanager, Source::Grafana, Source::Pagerduty, Source::Generic];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Grafana => "grafana",
            Source::Pagerduty => "pagerduty",
            Source::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|src| src.as_str() == s)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// One alert, whatever system sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub source: Source,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Stable identity of the alert within its source.
    pub fingerprint: String,
    pub generator_url: Option<String>,
    /// Redeliveries of this same alert carry the same key; the store keeps one.
    pub dedup_key: String,
    /// The alert exactly as the source sent it (its element of the payload).
    pub raw: serde_json::Value,
}

/// One webhook request, parsed: the alerts in it and how they group.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub source: Source,
    /// Alerts with the same key fold into one episode.
    pub episode_key: String,
    /// Human title for the episode (alert name, incident title).
    pub title: String,
    /// A re-notification of something already sent (Alertmanager repeat interval).
    pub repeat: bool,
    pub alerts: Vec<Alert>,
}

/// Why a payload was refused; `field` names what was wrong, for the 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParseError {
    pub field: String,
    pub message: String,
}

impl ParseError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ParseError { field: field.into(), message: message.into() }
    }
}

/// Parses a body for `source`. `delivery_id` is a header-borne idempotency key
/// (PagerDuty's `X-Webhook-Id`) where the source has one.
pub fn parse(source: Source, body: &[u8], delivery_id: Option<&str>) -> Result<Delivery, ParseError> {
    match source {
        Source::Alertmanager => alertmanager::parse(body),
        Source::Grafana => grafana::parse(body),
        Source::Pagerduty => pagerduty::parse(body, delivery_id),
        Source::Generic => generic::parse(body),
    }
}

/// Deserializes JSON, naming the offending field on failure (`alerts[0].labels`).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde reports a missing field at its parent; name the field itself.
        let field = match missing_field(&message) {
            Some(name) if path == "." || path == "?" => name.to_string(),
            Some(name) => format!("{path}.{name}"),
            None if path == "." || path == "?" => "(body)".to_string(),
            None => path,
        };
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        ParseError { field, message }
    })
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// Hex SHA-256 over several parts, with separators so that ("ab","c") != ("a","bc").
pub(crate) fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Parses an RFC 3339 time; the zero time some senders use for "none" becomes `None`.
pub(crate) fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ParseError> {
    let Some(text) = value.filter(|s| !s.is_empty()) else { return Ok(None) };
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|e| ParseError::new(field, format!("`{text}` is not an RFC 3339 time: {e}")))?
        .with_timezone(&Utc);
    // Alertmanager and Grafana send 0001-01-01T00:00:00Z for "not ended".
    if t.timestamp() <= 0 { Ok(None) } else { Ok(Some(t)) }
}

/// A fingerprint for alerts whose sender gives none: a digest of the sorted labels.
pub(crate) fn labels_fingerprint(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    digest(&refs)[..16].to_string()
}
