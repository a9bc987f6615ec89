//! Prometheus Alertmanager webhook (`version: "4"`); Grafana reuses the shape.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Alert, AlertStatus, Delivery, ParseError, Source, digest, from_json, labels_fingerprint, parse_time};

/// The part of the payload both Alertmanager and Grafana send.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupPayload {
    #[serde(default)]
    pub group_key: Option<String>,
    pub status: String,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    pub alerts: Vec<serde_json::Value>,
    #[serde(default)]
    pub title: Option<String>,
    /// Newer Alertmanagers say why they notified; repeats must not start new work.
    #[serde(default, rename = "notification_reason", alias = "notificationReason")]
    pub notification_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertItem {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let payload: GroupPayload = from_json(body)?;
    let group_key = payload
        .group_key
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ParseError::new("groupKey", "missing field `groupKey`"))?;
    normalize(Source::Alertmanager, payload, Some(group_key))
}

/// Turns the shared group shape into a [`Delivery`]; `group_key` is what the sender
/// groups by, if anything.
pub(crate) fn normalize(
    source: Source,
    payload: GroupPayload,
    group_key: Option<String>,
) -> Result<Delivery, ParseError> {
    AlertStatus::parse(&payload.status)
        .ok_or_else(|| ParseError::new("status", format!("`{}` is not firing or resolved", payload.status)))?;
    if payload.alerts.is_empty() {
        return Err(ParseError::new("alerts", "must hold at least one alert"));
    }
    let mut alerts = Vec::with_capacity(payload.alerts.len());
    for (i, raw) in payload.alerts.into_iter().enumerate() {
        let at = |f: &str| format!("alerts[{i}].{f}");
        let item: AlertItem = serde_json::from_value(raw.clone()).map_err(|e| {
            let msg = e.to_string();
            match super::missing_field(&msg) {
                Some(name) => ParseError::new(at(name), msg.clone()),
                None => ParseError::new(format!("alerts[{i}]"), msg.clone()),
            }
        })?;
        let status = AlertStatus::parse(&item.status)
            .ok_or_else(|| ParseError::new(at("status"), format!("`{}` is not firing or resolved", item.status)))?;
        if item.labels.is_empty() {
            return Err(ParseError::new(at("labels"), "must hold at least one label"));
        }
        let starts_at = parse_time(&at("startsAt"), item.starts_at.as_deref())?;
        let ends_at = parse_time(&at("endsAt"), item.ends_at.as_deref())?;
        let fingerprint =
            item.fingerprint.filter(|f| !f.is_empty()).unwrap_or_else(|| labels_fingerprint(&item.labels));
        let mut labels = payload.common_labels.clone();
        labels.extend(item.labels);
        let mut annotations = payload.common_annotations.clone();
        annotations.extend(item.annotations);
        let started = starts_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        // A redelivery repeats group, fingerprint, status and start: the same key.
        let dedup_key =
            digest(&[source.as_str(), group_key.as_deref().unwrap_or(""), &fingerprint, status.as_str(), &started]);
        alerts.push(Alert {
            source,
            status,
            labels,
            annotations,
            starts_at,
            ends_at,
            fingerprint,
            generator_url: item.generator_url.filter(|u| !u.is_empty()),
            dedup_key,
            raw,
        });
    }
    let episode_key = match &group_key {
        Some(k) => format!("{source}:group:{k}"),
        None => {
            let mut fps: Vec<&str> = alerts.iter().map(|a| a.fingerprint.as_str()).collect();
            fps.sort_unstable();
            fps.dedup();
            format!("{source}:fingerprints:{}", digest(&fps))
        }
    };
    let title = payload
        .title
        .filter(|t| !t.is_empty())
        .or_else(|| payload.group_labels.get("alertname").cloned())
        .or_else(|| alerts.first().and_then(|a| a.labels.get("alertname").cloned()))
        .unwrap_or_else(|| "alert".to_string());
    let repeat =
        payload.notification_reason.as_deref().is_some_and(|r| r.eq_ignore_ascii_case("repeat interval elapsed"));
    Ok(Delivery { source, episode_key, title, repeat, alerts })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../tests/fixtures/alertmanager.json");

    #[test]
    fn parses_the_real_format() {
        let d = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(d.source, Source::Alertmanager);
        assert_eq!(d.title, "AirflowTaskFailed");
        assert!(!d.repeat);
        assert_eq!(d.alerts.len(), 2);
        let a = &d.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.fingerprint, "4c5a8b4d1b3e2f10");
        assert_eq!(a.labels["dag_id"], "daily_sales_rollup");
        assert_eq!(a.labels["team"], "data-eng", "common labels are merged in");
        assert_eq!(a.annotations["summary"], "Task load_sales failed");
        assert_eq!(a.starts_at.unwrap().to_rfc3339(), "2026-11-26T09:00:00+00:00");
        assert_eq!(a.ends_at, None, "the zero time means not ended");
        assert_eq!(a.generator_url.as_deref(), Some("http://prometheus.local/graph?g0.expr=airflow_task_failed"));
        assert_eq!(a.raw["fingerprint"], "4c5a8b4d1b3e2f10");
        assert_eq!(d.episode_key, format!("alertmanager:group:{}", "{}:{alertname=\"AirflowTaskFailed\"}"));
    }

    #[test]
    fn redelivery_has_the_same_keys_and_a_change_does_not() {
        let a = parse(SAMPLE.as_bytes()).unwrap();
        let b = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(a.alerts[0].dedup_key, b.alerts[0].dedup_key);
        let resolved = SAMPLE.replacen("\"status\": \"firing\"", "\"status\": \"resolved\"", 2);
        let c = parse(resolved.as_bytes()).unwrap();
        assert_ne!(a.alerts[0].dedup_key, c.alerts[0].dedup_key);
    }

    #[test]
    fn repeat_notifications_are_marked() {
        let mut v: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        v["notification_reason"] = "repeat interval elapsed".into();
        let d = parse(v.to_string().as_bytes()).unwrap();
        assert!(d.repeat);
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases: &[(&str, &str)] = &[
            ("{", "(body)"),
            ("[]", "(body)"),
            (r#"{"status":"firing","alerts":[]}"#, "groupKey"),
            (r#"{"groupKey":"g","alerts":[]}"#, "status"),
            (r#"{"groupKey":"g","status":"firing","alerts":[]}"#, "alerts"),
            (r#"{"groupKey":"g","status":"burning","alerts":[{}]}"#, "status"),
            (r#"{"groupKey":"g","status":"firing","alerts":[{"status":"firing"}]}"#, "alerts[0].labels"),
            (r#"{"groupKey":"g","status":"firing","alerts":[{"status":"firing","labels":{"a":1}}]}"#, "alerts[0]"),
            (
                r#"{"groupKey":"g","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"yesterday"}]}"#,
                "alerts[0].startsAt",
            ),
        ];
        for (body, field) in cases {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_eq!(&err.field, field, "{body} -> {err}");
        }
    }
}
