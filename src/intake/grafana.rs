//! Grafana alerting webhook: the Alertmanager shape with `version: "1"` and extras.

use super::alertmanager::{GroupPayload, normalize};
use super::{Delivery, ParseError, Source, digest, from_json};

pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let payload: GroupPayload = from_json(body)?;
    let group_key = payload.group_key.clone().filter(|k| !k.is_empty());
    let mut delivery = normalize(Source::Grafana, payload, group_key)?;
    // Grafana gives no delivery id, so the same payload (byte for byte) is the same
    // delivery: fold a digest of the body into each alert's key.
    let body_digest = digest(&[&String::from_utf8_lossy(body)]);
    for (i, alert) in delivery.alerts.iter_mut().enumerate() {
        alert.dedup_key = digest(&["grafana", &body_digest, &i.to_string()]);
    }
    Ok(delivery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::AlertStatus;

    const SAMPLE: &str = include_str!("../../tests/fixtures/grafana.json");

    #[test]
    fn parses_the_real_format() {
        let d = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(d.source, Source::Grafana);
        assert_eq!(d.title, "[FIRING:1] SparkExecutorOOM Data Platform (nightly_sessionize data-eng)");
        assert!(d.episode_key.starts_with("grafana:group:{}/{alertname=\"SparkExecutorOOM\"}"));
        let a = &d.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.labels["app_name"], "nightly_sessionize");
        assert_eq!(a.fingerprint, "b0c4f1a2c6a35e1d");
        assert_eq!(a.raw["values"]["B"], 3);
        assert_eq!(a.ends_at, None);
    }

    #[test]
    fn same_payload_same_key_other_payload_other_key() {
        let a = parse(SAMPLE.as_bytes()).unwrap();
        let b = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(a.alerts[0].dedup_key, b.alerts[0].dedup_key);
        let changed = SAMPLE.replace("\"C\": 1", "\"C\": 2");
        let c = parse(changed.as_bytes()).unwrap();
        assert_ne!(a.alerts[0].dedup_key, c.alerts[0].dedup_key);
    }

    #[test]
    fn without_group_key_groups_by_fingerprints() {
        let mut v: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        v.as_object_mut().unwrap().remove("groupKey");
        let d = parse(v.to_string().as_bytes()).unwrap();
        assert!(d.episode_key.starts_with("grafana:fingerprints:"));
    }
}
