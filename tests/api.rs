//! The HTTP API of the agent, booted in-process: intake answers, authentication,
//! investigations, the live event stream, metrics.

use futures::StreamExt;
use inquest::intake::auth::hmac_sha256;

use crate::support::server::{TestServer, alertmanager};

const AM: &str = include_str!("fixtures/alertmanager.json");
const GRAFANA: &str = include_str!("fixtures/grafana.json");
const PAGERDUTY: &str = include_str!("fixtures/pagerduty.json");
const GENERIC: &str = include_str!("fixtures/generic.json");

#[tokio::test]
async fn accepts_every_source_and_recognizes_redelivery() {
    let srv = TestServer::start(&[]).await;
    for (source, body) in [("alertmanager", AM), ("grafana", GRAFANA), ("generic", GENERIC)] {
        let (status, first) = srv.post(source, body, &[]).await;
        assert_eq!(status, 202, "{source}: {first}");
        let (status, again) = srv.post(source, body, &[]).await;
        assert_eq!(status, 202);
        assert_eq!(again["alert_ids"], first["alert_ids"], "{source}");
        assert_eq!(again["duplicates"], first["alert_ids"].as_array().unwrap().len());
    }
    let (status, first) = srv.post("pagerduty", PAGERDUTY, &[("x-webhook-id", "w-1")]).await;
    assert_eq!(status, 202);
    let (_, again) = srv.post("pagerduty", PAGERDUTY, &[("x-webhook-id", "w-1")]).await;
    assert_eq!((again["alert_ids"].clone(), again["duplicates"].clone()), (first["alert_ids"].clone(), 1.into()));
    let (_, list) = srv.get("/v1/investigations").await;
    assert_eq!(list["investigations"].as_array().unwrap().len(), 4);
    srv.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_problem() {
    let srv = TestServer::start(&[("INQUEST_INTAKE__MAX_BODY_BYTES", "4096")]).await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("alertmanager", "{not json".into(), 400, "(body)"),
        ("alertmanager", r#"{"status":"firing","alerts":[]}"#.into(), 400, "groupKey"),
        (
            "alertmanager",
            r#"{"groupKey":"g","status":"firing","alerts":[{"status":"firing"}]}"#.into(),
            400,
            "alerts[0].labels",
        ),
        ("generic", r#"{"labels":{"a":"b"},"starts_at":"noon"}"#.into(), 400, "starts_at"),
        ("pagerduty", r#"{"event":{"id":"x"}}"#.into(), 400, "event.event_type"),
        ("alertmanager", format!("{{\"pad\":\"{}\"}}", "x".repeat(5000)), 413, ""),
        ("nagios", "{}".into(), 404, ""),
    ];
    for (source, body, status, field) in cases {
        let (got, v) = srv.post(source, &body, &[]).await;
        assert_eq!(got, status, "{source} {body:.60} -> {v}");
        assert!(v["message"].is_string(), "a JSON error body: {v}");
        if !field.is_empty() {
            assert_eq!(v["field"], field, "{v}");
        }
    }
    let (_, list) = srv.get("/v1/investigations").await;
    assert!(list["investigations"].as_array().unwrap().is_empty(), "bad input stores nothing");
    srv.stop().await;
}

#[tokio::test]
async fn credentials_and_signatures_are_checked() {
    let srv = TestServer::start(&[
        ("INQUEST_INTAKE__ALERTMANAGER__BEARER_TOKENS", "am-old,am-new"),
        ("INQUEST_INTAKE__GRAFANA__HMAC_SECRET", "g-secret"),
        ("INQUEST_INTAKE__PAGERDUTY__SIGNING_SECRETS", "pd-1,pd-2"),
    ])
    .await;
    assert_eq!(srv.post("alertmanager", AM, &[]).await.0, 401);
    assert_eq!(srv.post("alertmanager", AM, &[("authorization", "Bearer wrong")]).await.0, 401);
    assert_eq!(srv.post("alertmanager", AM, &[("authorization", "Bearer am-new")]).await.0, 202);

    let good = hex::encode(hmac_sha256(b"g-secret", &[GRAFANA.as_bytes()]));
    assert_eq!(srv.post("grafana", GRAFANA, &[]).await.0, 401);
    assert_eq!(srv.post("grafana", GRAFANA, &[("x-grafana-alerting-signature", &"0".repeat(64))]).await.0, 401);
    assert_eq!(srv.post("grafana", GRAFANA, &[("x-grafana-alerting-signature", &good)]).await.0, 202);

    let sig = hex::encode(hmac_sha256(b"pd-2", &[PAGERDUTY.as_bytes()]));
    let rotated = format!("v1={},v1={sig}", "ab".repeat(32));
    assert_eq!(srv.post("pagerduty", PAGERDUTY, &[("x-pagerduty-signature", "v1=00")]).await.0, 401);
    assert_eq!(srv.post("pagerduty", PAGERDUTY, &[("x-pagerduty-signature", &rotated)]).await.0, 202);
    // Unauthenticated sources that have no credentials still only take loopback (we are).
    assert_eq!(srv.post("generic", GENERIC, &[]).await.0, 202);
    let (_, metrics) = srv.get("/metrics").await;
    let text = metrics.as_str().unwrap();
    assert!(text.contains(r#"inquest_alerts_total{source="alertmanager",outcome="unauthorized"} 2"#), "{text}");
    assert!(text.contains("inquest_intake_latency_seconds_bucket"), "{text}");
    srv.stop().await;
}

#[tokio::test]
async fn investigations_are_listed_shown_and_streamed() {
    let srv = TestServer::start(&[("INQUEST_ENGINE__SIMULATED_WORK", "300ms")]).await;
    let (_, a) = srv.post("alertmanager", &alertmanager("g1", "firing", "alpha", &["f1", "f2"]), &[]).await;
    srv.post("alertmanager", &alertmanager("g2", "firing", "beta", &["f1"]), &[]).await;
    let (_, list) = srv.get("/v1/investigations?team=alpha").await;
    let invs = list["investigations"].as_array().unwrap();
    assert_eq!(invs.len(), 1);
    let id = invs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(invs[0]["episode_id"], a["episode_ids"][0]);

    // Stream from the start while the work is still going on: the events arrive live.
    let resp = reqwest::get(format!("{}/v1/investigations/{id}/events", srv.url)).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains("event: investigation.completed") {
        let chunk = tokio::time::timeout_at(deadline, body.next()).await.expect("events in time").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(kinds, ["alert.received", "investigation.started", "context.recorded", "investigation.completed"]);
    assert!(text.contains("id: 1\n") && text.contains("id: 4\n"), "{text}");

    // Resuming with Last-Event-ID sends only what came after.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/investigations/{id}/events", srv.url))
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: investigation.completed") {
        let chunk =
            tokio::time::timeout(std::time::Duration::from_secs(5), body.next()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids, ["3", "4"]);

    let done = srv.wait_state(&id, "completed").await;
    assert_eq!(done["alerts"].as_array().unwrap().len(), 2);
    assert!(done["summary"].as_str().unwrap().contains("2 alert(s)"));
    let (_, filtered) = srv.get("/v1/investigations?state=completed&team=beta").await;
    assert!(filtered["investigations"].as_array().unwrap().iter().all(|i| i["team"] == "beta"));
    assert_eq!(srv.get("/v1/investigations?state=bogus").await.0, 400);
    assert_eq!(srv.get("/v1/investigations/nope").await.0, 404);
    assert_eq!(srv.get("/v1/investigations/nope/events").await.0, 404);
    srv.stop().await;
}

#[tokio::test]
async fn health_readiness_and_openapi_are_served() {
    let srv = TestServer::start(&[]).await;
    assert_eq!(srv.get("/healthz").await.0, 200);
    assert_eq!(srv.get("/readyz").await.0, 200);
    let (status, doc) = srv.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/alerts/{source}"]["post"].is_object());
    srv.stop().await;
}
