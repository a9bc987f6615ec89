//! Inquest's own JSON shape, for senders that are none of the others.
//!
//! Either one alert object or `{"alerts": [...]}`; every field but `labels` is optional:
//!
//! ```json
//! {"title": "...", "status": "firing", "labels": {"alertname": "..."},
//!  "annotations": {}, "starts_at": "RFC 3339", "ends_at": null, "url": "...",
//!  "fingerprint": "...", "episode_key": "...", "dedup_key": "..."}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Alert, AlertStatus, Delivery, ParseError, Source, digest, from_json, labels_fingerprint, parse_time};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Body {
    Many {
        alerts: Vec<serde_json::Value>,
        #[serde(default)]
        episode_key: Option<String>,
        #[serde(default)]
        title: Option<String>,
    },
    One(serde_json::Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    status: Option<String>,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    episode_key: Option<String>,
    #[serde(default)]
    dedup_key: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let parsed: Body = from_json(body)?;
    let (items, prefix, group_key, group_title) = match parsed {
        Body::Many { alerts, episode_key, title } => (alerts, "alerts", episode_key, title),
        Body::One(v) => (vec![v], "", None, None),
    };
    if items.is_empty() {
        return Err(ParseError::new("alerts", "must hold at least one alert"));
    }
    let body_digest = digest(&[&String::from_utf8_lossy(body)]);
    let mut alerts = Vec::with_capacity(items.len());
    let mut episode_key = group_key.map(|k| format!("generic:key:{k}"));
    let mut title = group_title;
    for (i, raw) in items.into_iter().enumerate() {
        let base = if prefix.is_empty() { String::new() } else { format!("{prefix}[{i}]") };
        let at = |f: &str| if base.is_empty() { f.to_string() } else { format!("{base}.{f}") };
        if !raw.is_object() {
            return Err(ParseError::new(
                if base.is_empty() { "(body)".into() } else { base.clone() },
                "must be a JSON object",
            ));
        }
        let item: Item = serde_json::from_value(raw.clone()).map_err(|e| {
            let msg = e.to_string();
            let field = super::missing_field(&msg)
                .map(&at)
                .or_else(|| unknown_field(&msg).map(&at))
                .unwrap_or_else(|| if base.is_empty() { "(body)".into() } else { base.clone() });
            ParseError::new(field, msg)
        })?;
        if item.labels.is_empty() {
            return Err(ParseError::new(at("labels"), "must hold at least one label"));
        }
        let status = match item.status.as_deref() {
            None => AlertStatus::Firing,
            Some(s) => AlertStatus::parse(s)
                .ok_or_else(|| ParseError::new(at("status"), format!("`{s}` is not firing or resolved")))?,
        };
        let starts_at = parse_time(&at("starts_at"), item.starts_at.as_deref())?;
        let ends_at = parse_time(&at("ends_at"), item.ends_at.as_deref())?;
        let fingerprint =
            item.fingerprint.filter(|f| !f.is_empty()).unwrap_or_else(|| labels_fingerprint(&item.labels));
        let dedup_key = match &item.dedup_key {
            Some(k) => digest(&["generic", "key", k, status.as_str()]),
            None => digest(&["generic", "body", &body_digest, &i.to_string()]),
        };
        if episode_key.is_none() {
            episode_key = Some(match &item.episode_key {
                Some(k) => format!("generic:key:{k}"),
                None => format!("generic:fingerprint:{fingerprint}"),
            });
        }
        if title.is_none() {
            title = item.title.clone().or_else(|| item.labels.get("alertname").cloned());
        }
        alerts.push(Alert {
            source: Source::Generic,
            status,
            labels: item.labels,
            annotations: item.annotations,
            starts_at,
            ends_at,
            fingerprint,
            generator_url: item.url,
            dedup_key,
            raw,
        });
    }
    Ok(Delivery {
        source: Source::Generic,
        episode_key: episode_key.unwrap_or_default(),
        title: title.unwrap_or_else(|| "alert".to_string()),
        repeat: false,
        alerts,
    })
}

fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../tests/fixtures/generic.json");

    #[test]
    fn parses_one_alert() {
        let d = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(d.title, "Partition missing for warehouse.sales");
        let a = &d.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.labels["table"], "warehouse.sales");
        assert_eq!(a.generator_url.as_deref(), Some("http://freshness.local/checks/42"));
        assert_eq!(d.episode_key, format!("generic:fingerprint:{}", a.fingerprint));
    }

    #[test]
    fn parses_a_list_with_keys() {
        let body = r#"{"episode_key":"e1","alerts":[{"labels":{"a":"1"},"dedup_key":"k1"},{"labels":{"a":"2"},"status":"resolved"}]}"#;
        let d = parse(body.as_bytes()).unwrap();
        assert_eq!(d.episode_key, "generic:key:e1");
        assert_eq!(d.alerts.len(), 2);
        assert_eq!(d.alerts[1].status, AlertStatus::Resolved);
        assert_eq!(d.alerts[0].dedup_key, digest(&["generic", "key", "k1", "firing"]));
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"title":"x"}"#, "labels"),
            (r#"{"labels":{}}"#, "labels"),
            (r#"{"labels":{"a":"b"},"status":"on"}"#, "status"),
            (r#"{"labels":{"a":"b"},"colour":"red"}"#, "colour"),
            (r#"{"alerts":[]}"#, "alerts"),
            (r#"{"alerts":[{"labels":{"a":"b"}},{"title":"t"}]}"#, "alerts[1].labels"),
            (r#"{"alerts":[3]}"#, "alerts[0]"),
            ("7", "(body)"),
        ];
        for (body, field) in cases {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(&err.field, field, "{body} -> {err}");
        }
    }
}
