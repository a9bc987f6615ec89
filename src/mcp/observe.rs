//! What a server records about each call, without slowing it: Prometheus metrics (in
//! memory), a usage report to the registry and an audit record (both queued and written
//! by background tasks; a full queue drops the record with a warning rather than wait).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a call ended, as metrics, usage and audit name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    /// Refused by policy, or waiting on an approval.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Denied => "denied",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

/// One server's metrics, served on its `/metrics`.
#[derive(Clone)]
pub struct ServerMetrics {
    registry: Arc<Registry>,
    calls: Family<CallLabels, Counter>,
    errors: Family<ToolLabel, Counter>,
    latency: Family<ToolLabel, Histogram>,
}

impl ServerMetrics {
    pub fn new(server: &str) -> ServerMetrics {
        let mut registry = Registry::with_prefix_and_labels(
            "inquest_mcp",
            [(std::borrow::Cow::Borrowed("server"), std::borrow::Cow::Owned(server.to_string()))].into_iter(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Tool calls, by tool and outcome", calls.clone());
        let errors = Family::<ToolLabel, Counter>::default();
        registry.register("errors", "Tool calls that ended in an error, by tool", errors.clone());
        let latency = Family::<ToolLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("call_latency_seconds", "Tool call latency, by tool", latency.clone());
        ServerMetrics { registry: Arc::new(registry), calls, errors, latency }
    }

    pub fn record(&self, tool: &str, outcome: Outcome, elapsed: Duration) {
        let tool = tool.to_string();
        self.calls.get_or_create(&CallLabels { tool: tool.clone(), outcome: outcome.as_str().into() }).inc();
        if outcome == Outcome::Error {
            self.errors.get_or_create(&ToolLabel { tool: tool.clone() }).inc();
        }
        self.latency.get_or_create(&ToolLabel { tool }).observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// One usage report (`POST /v0.1/x/usage`).
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub server: String,
    pub tool: String,
    pub principal: String,
    pub outcome: Outcome,
    pub latency_ms: u64,
}

/// Usage reports sent in one POST at most (the registry takes up to 1000).
const USAGE_BATCH: usize = 256;

/// Queues usage reports and sends them from a background task.
#[derive(Clone)]
pub struct UsageReporter {
    tx: Option<mpsc::Sender<Usage>>,
}

impl UsageReporter {
    /// Reports to nobody (no registry configured).
    pub fn disabled() -> UsageReporter {
        UsageReporter { tx: None }
    }

    /// Starts the sender; it drains what is queued when `stop` is cancelled.
    pub fn start(http: reqwest::Client, registry_url: &str, stop: CancellationToken) -> UsageReporter {
        let (tx, mut rx) = mpsc::channel::<Usage>(4096);
        let url = format!("{}/v0.1/x/usage", registry_url.trim_end_matches('/'));
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    u = rx.recv() => u,
                    _ = stop.cancelled() => { rx.close(); rx.recv().await }
                };
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < USAGE_BATCH
                    && let Ok(u) = rx.try_recv()
                {
                    batch.push(u);
                }
                // What queued while the last POST was out goes in one: a busy server
                // makes one request per batch, not one per call.
                let sent = (|| send_usage(&http, &url, &batch))
                    .retry(usage_backoff())
                    // Only what surely was not recorded is sent again (a report whose
                    // answer was lost may have been), and not once stopping.
                    .when(|e: &Unsent| e.retry && !stop.is_cancelled())
                    .notify(
                        |e: &Unsent, wait| tracing::debug!(why = %e.why, ?wait, "usage reports wait to be sent again"),
                    )
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(why = %e.why, reports = batch.len(), "usage reports were not recorded");
                }
            }
        });
        UsageReporter { tx: Some(tx) }
    }

    pub fn report(&self, usage: Usage) {
        if let Some(tx) = &self.tx
            && tx.try_send(usage).is_err()
        {
            tracing::warn!("the usage queue is full; a report was dropped");
        }
    }
}

/// Why a batch of usage reports was not recorded, and whether sending it again is safe.
#[derive(Debug)]
struct Unsent {
    retry: bool,
    why: String,
}

/// Backs off to every 5 s, for about 20 s in all: a registry restarting (a
/// deploy) is waited out; one down for longer loses the batch, with a warning.
fn usage_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(8)
        .with_jitter()
}

/// POSTs one batch. A lone report is sent as an object, which registries older than
/// arrays also take. Safe to send again: no connection was made, or 429 (a rate
/// limiter in front turned it away). Not a 503: a proxy may answer that after the
/// registry took the batch.
async fn send_usage(http: &reqwest::Client, url: &str, batch: &[Usage]) -> Result<(), Unsent> {
    let request = match batch {
        [one] => http.post(url).json(one),
        many => http.post(url).json(many),
    };
    match request.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(Unsent {
            retry: r.status() == StatusCode::TOO_MANY_REQUESTS,
            why: format!("the registry answered {}", r.status()),
        }),
        Err(e) => Err(Unsent { retry: e.is_connect(), why: e.to_string() }),
    }
}

/// Keys whose values never reach the audit log.
const SECRET_KEYS: [&str; 7] = ["password", "token", "secret", "authorization", "api_key", "apikey", "credential"];

/// `value` with the value of every key that looks like a secret replaced by `***`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = SECRET_KEYS.iter().any(|s| lower.contains(s));
                    (k.clone(), if secret { Value::String("***".into()) } else { redact(v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Appends one JSON line per call to a file (`<data_dir>/mcp-audit-<server>.jsonl`).
#[derive(Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Value>>,
}

impl AuditLog {
    pub fn disabled() -> AuditLog {
        AuditLog { tx: None }
    }

    pub fn start(path: PathBuf) -> AuditLog {
        let (tx, mut rx) = mpsc::channel::<Value>(4096);
        tokio::spawn(async move {
            let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await;
            let mut file = match file {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the MCP audit log");
                    return;
                }
            };
            while let Some(record) = rx.recv().await {
                let mut line = record.to_string();
                line.push('\n');
                if let Err(e) = file.write_all(line.as_bytes()).await {
                    tracing::error!(path = %path.display(), error = %e, "writing the MCP audit log failed");
                }
                if rx.is_empty() {
                    let _ = file.flush().await;
                }
            }
        });
        AuditLog { tx: Some(tx) }
    }

    /// Records one call, secrets redacted.
    pub fn record(
        &self,
        server: &str,
        tool: &str,
        caller: &str,
        args: &Map<String, Value>,
        outcome: Outcome,
        output: &Value,
    ) {
        let Some(tx) = &self.tx else { return };
        let record = json!({
            "at": chrono::Utc::now().to_rfc3339(),
            "server": server,
            "tool": tool,
            "caller": caller,
            "outcome": outcome,
            "arguments": redact(&Value::Object(args.clone())),
            "output": redact(output),
        });
        if tx.try_send(record).is_err() {
            tracing::warn!(tool, "the audit queue is full; a record was dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn usage_waits_for_a_registry_that_is_not_up_yet() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let reporter = UsageReporter::start(reqwest::Client::new(), &format!("http://127.0.0.1:{port}"), stop.clone());
        let usage = |tool: &str| Usage {
            server: "s".into(),
            tool: tool.into(),
            principal: "p".into(),
            outcome: Outcome::Ok,
            latency_ms: 1,
        };
        for tool in ["a", "b", "c"] {
            reporter.report(usage(tool));
        }
        // Nothing listens yet: the first tries are refused.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/v0.1/x/usage",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| async move {
                match body {
                    Value::Array(items) => sink.lock().unwrap().extend(items),
                    one => sink.lock().unwrap().push(one),
                }
                axum::http::StatusCode::NO_CONTENT
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        for _ in 0..100 {
            if got.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tools: Vec<String> =
            got.lock().unwrap().iter().map(|u| u["tool"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(tools, ["a", "b", "c"]);
        stop.cancel();
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v =
            json!({"dag_id": "etl", "conn": {"Password": "p", "api_key": "k", "host": "h"}, "list": [{"token": 1}]});
        assert_eq!(
            redact(&v),
            json!({"dag_id": "etl", "conn": {"Password": "***", "api_key": "***", "host": "h"}, "list": [{"token": "***"}]})
        );
    }
}
