//! The whole agent booted in-process on port 0, with its own data directory.

use std::collections::HashMap;

use inquest::config::{self, Config, Overrides};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub url: String,
    pub config: Config,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), inquest::app::AppError>>>,
}

/// Builds a configuration from `INQUEST_*`-style pairs, as the binary would.
pub fn config_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Config {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let overrides = Overrides { data_dir: Some(dir.to_path_buf()), ..Default::default() };
    config::load(&overrides, Some(env)).expect("test configuration is valid")
}

impl TestServer {
    pub async fn start(env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(dir.path(), env);
        TestServer::start_with(dir, config).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let listeners = inquest::app::Listeners { public: listener, mesh: None };
        let task =
            tokio::spawn(inquest::app::run(config.clone(), inquest::app::Role::Agent, listeners, shutdown.clone()));
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let ready = client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                return TestServer { url, config, dir, shutdown, task: Some(task) };
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the in-process server did not become ready");
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn post(&self, source: &str, body: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new().post(format!("{}/v1/alerts/{source}", self.url)).body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// Waits until the investigation reaches `state` (bounded).
    pub async fn wait_state(&self, id: &str, state: &str) -> serde_json::Value {
        for _ in 0..400 {
            let (_, v) = self.get(&format!("/v1/investigations/{id}")).await;
            if v["state"] == state {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("investigation {id} never reached {state}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An Alertmanager payload with one alert per fingerprint in `fingerprints`.
pub fn alertmanager(group: &str, status: &str, team: &str, fingerprints: &[&str]) -> String {
    let alerts: Vec<serde_json::Value> = fingerprints
        .iter()
        .map(|fp| {
            serde_json::json!({
                "status": status,
                "labels": {"alertname": "AirflowTaskFailed", "task_id": fp, "team": team},
                "annotations": {"summary": format!("task {fp} failed")},
                "startsAt": "2026-11-26T09:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.local/graph",
                "fingerprint": fp,
            })
        })
        .collect();
    serde_json::json!({
        "version": "4", "groupKey": group, "status": status, "receiver": "inquest",
        "groupLabels": {"alertname": "AirflowTaskFailed"}, "commonLabels": {"team": team},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.local", "truncatedAlerts": 0,
        "alerts": alerts,
    })
    .to_string()
}

/// What an administrator does over the registry's HTTP API to let a server be used:
/// publishes `doc` (a `server.json`), writes `policy` for it, and approves its security
/// review and production use; each answer must be 200. `auth` adds the admin's
/// credentials (a bearer token, or a session cookie with its Origin).
pub async fn list_server(
    http: &reqwest::Client,
    base: &str,
    auth: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    doc: Value,
    policy: Value,
) {
    let name = doc["name"].as_str().expect("server.json names the server").to_string();
    let path = format!("{base}/v0.1/x/servers/{}", name.replace('/', "%2F"));
    let calls = [
        (reqwest::Method::POST, format!("{base}/v0.1/publish"), doc, "publish"),
        (reqwest::Method::PUT, format!("{path}/policy"), policy, "policy"),
        (reqwest::Method::PUT, format!("{path}/security-review"), json!({"state": "approved"}), "security-review"),
        (
            reqwest::Method::PUT,
            format!("{path}/production-approval"),
            json!({"state": "approved"}),
            "production-approval",
        ),
    ];
    for (method, url, body, what) in calls {
        let r = auth(http.request(method, url)).json(&body).send().await.unwrap();
        let status = r.status();
        assert_eq!(status, reqwest::StatusCode::OK, "{what} of {name}: {}", r.text().await.unwrap());
    }
}
