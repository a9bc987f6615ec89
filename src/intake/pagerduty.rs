//! PagerDuty v3 webhooks: one event per delivery, grouped by incident.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Alert, AlertStatus, Delivery, ParseError, Source, digest, from_json, parse_time};

#[derive(Debug, Deserialize)]
struct Envelope {
    event: Event,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    event_type: String,
    resource_type: String,
    occurred_at: String,
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Incident {
    id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    incident_key: Option<String>,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    service: Option<Reference>,
    #[serde(default)]
    teams: Vec<Reference>,
    #[serde(default)]
    priority: Option<Reference>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    #[serde(default)]
    summary: Option<String>,
}

/// `delivery_id` is the `X-Webhook-Id` header: PagerDuty's idempotency key.
pub fn parse(body: &[u8], delivery_id: Option<&str>) -> Result<Delivery, ParseError> {
    let envelope: Envelope = from_json(body)?;
    let event = envelope.event;
    if event.resource_type != "incident" || !event.event_type.starts_with("incident.") {
        return Err(ParseError::new(
            "event.event_type",
            format!("`{}` is not an incident event; subscribe the webhook to incident events only", event.event_type),
        ));
    }
    let incident: Incident = serde_json::from_value(event.data.clone()).map_err(|e| {
        let msg = e.to_string();
        let field = super::missing_field(&msg).map_or("event.data".to_string(), |f| format!("event.data.{f}"));
        ParseError::new(field, msg)
    })?;
    let status = match event.event_type.as_str() {
        "incident.resolved" => AlertStatus::Resolved,
        _ => AlertStatus::Firing,
    };
    let occurred = parse_time("event.occurred_at", Some(&event.occurred_at))?;
    let title = incident.title.clone().unwrap_or_else(|| format!("PagerDuty incident {}", incident.id));
    let mut labels =
        BTreeMap::from([("alertname".to_string(), title.clone()), ("incident_id".to_string(), incident.id.clone())]);
    let optional = [
        ("service", incident.service.as_ref().and_then(|s| s.summary.clone())),
        ("team", incident.teams.first().and_then(|t| t.summary.clone())),
        ("priority", incident.priority.as_ref().and_then(|p| p.summary.clone())),
        ("urgency", incident.urgency.clone()),
        ("incident_key", incident.incident_key.clone()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            labels.insert(k.to_string(), v);
        }
    }
    let mut annotations = BTreeMap::from([("event_type".to_string(), event.event_type.clone())]);
    if let Some(s) = &incident.status {
        annotations.insert("incident_status".to_string(), s.clone());
    }
    annotations.insert("summary".to_string(), title.clone());
    // X-Webhook-Id is stable across PagerDuty's retries; the event id is too, and is
    // the fallback when a proxy strips the header.
    let key = delivery_id.filter(|s| !s.is_empty()).unwrap_or(&event.id);
    let alert = Alert {
        source: Source::Pagerduty,
        status,
        labels,
        annotations,
        starts_at: if status == AlertStatus::Firing { occurred } else { None },
        ends_at: if status == AlertStatus::Resolved { occurred } else { None },
        fingerprint: incident.id.clone(),
        generator_url: incident.html_url.clone(),
        dedup_key: digest(&["pagerduty", key]),
        raw: serde_json::json!({ "event": {
            "id": event.id, "event_type": event.event_type, "occurred_at": event.occurred_at, "data": event.data,
        }}),
    };
    Ok(Delivery {
        source: Source::Pagerduty,
        episode_key: format!("pagerduty:incident:{}", incident.id),
        title,
        repeat: false,
        alerts: vec![alert],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../tests/fixtures/pagerduty.json");

    #[test]
    fn parses_the_real_format() {
        let d = parse(SAMPLE.as_bytes(), Some("wh-1")).unwrap();
        assert_eq!(d.episode_key, "pagerduty:incident:Q2W3E4R5T6Y7U8");
        assert_eq!(d.title, "Presto query exceeded its memory limit");
        let a = &d.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.labels["team"], "data-eng");
        assert_eq!(a.labels["service"], "Presto Coordinator");
        assert_eq!(a.labels["priority"], "P2");
        assert_eq!(a.annotations["event_type"], "incident.triggered");
        assert_eq!(a.fingerprint, "Q2W3E4R5T6Y7U8");
        assert_eq!(a.starts_at.unwrap().to_rfc3339(), "2026-11-26T10:05:07.517+00:00");
    }

    #[test]
    fn webhook_id_is_the_idempotency_key() {
        let a = parse(SAMPLE.as_bytes(), Some("wh-1")).unwrap();
        let b = parse(SAMPLE.as_bytes(), Some("wh-1")).unwrap();
        let c = parse(SAMPLE.as_bytes(), Some("wh-2")).unwrap();
        assert_eq!(a.alerts[0].dedup_key, b.alerts[0].dedup_key);
        assert_ne!(a.alerts[0].dedup_key, c.alerts[0].dedup_key);
    }

    #[test]
    fn resolved_and_bad_events() {
        let resolved = SAMPLE.replace("incident.triggered", "incident.resolved");
        let d = parse(resolved.as_bytes(), None).unwrap();
        assert_eq!(d.alerts[0].status, AlertStatus::Resolved);
        let svc = SAMPLE
            .replace("incident.triggered", "service.updated")
            .replace("\"resource_type\": \"incident\"", "\"resource_type\": \"service\"");
        assert_eq!(parse(svc.as_bytes(), None).unwrap_err().field, "event.event_type");
        assert_eq!(parse(br#"{"event":{"id":"x","event_type":"incident.triggered","resource_type":"incident","occurred_at":"2026-01-01T00:00:00Z","data":{}}}"#, None).unwrap_err().field, "event.data.id");
        assert_eq!(parse(br#"{"event":{}}"#, None).unwrap_err().field, "event.id");
    }
}
