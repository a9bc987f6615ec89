//! The health prober: connects to every registered server over MCP, in both protocol
//! revisions, and records status, latency and the tool list.
//!
//! A server that cannot be reached is recorded as unreachable, never dropped: the
//! catalog keeps showing it, with the error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::ProtocolVersion;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How a server answered its last probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Both protocol revisions answered.
    Healthy,
    /// One revision answered, or listing tools failed: usable, but something is off.
    Degraded,
    /// Nothing answered.
    Unreachable,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unreachable => "unreachable",
        }
    }
}

/// One tool as a server advertised it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolSnapshot {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The server's annotations, as hints (the registry's policy decides what is sensitive).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub annotations: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub status: HealthStatus,
    pub latency_ms: u64,
    /// The protocol revisions that answered.
    pub revisions: Vec<String>,
    pub tools: Vec<ToolSnapshot>,
    pub error: Option<String>,
}

/// A server to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTarget {
    pub name: String,
    pub url: String,
}

/// Where the prober gets its targets and puts its results (the catalog store).
#[async_trait]
pub trait ProbeSink: Send + Sync + 'static {
    async fn probe_targets(&self) -> Result<Vec<ProbeTarget>, String>;
    async fn record_probe(&self, target: &ProbeTarget, outcome: &ProbeOutcome) -> Result<(), String>;
}

/// Probes `url` once in each protocol revision, within `timeout` each.
pub async fn probe(http: &reqwest::Client, url: &str, timeout: Duration) -> ProbeOutcome {
    let started = Instant::now();
    let modern = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    let modern = tokio::time::timeout(timeout, list_tools(http, url, modern)).await;
    let modern_latency = started.elapsed();
    let legacy = tokio::time::timeout(timeout, list_tools(http, url, ClientLifecycleMode::Initialize)).await;

    let mut revisions = Vec::new();
    let mut errors = Vec::new();
    let mut tools = None;
    for (revision, result) in [("2026-07-28", modern), ("2025-11-25", legacy)] {
        match result {
            Ok(Ok(list)) => {
                revisions.push(revision.to_string());
                tools.get_or_insert(list);
            }
            Ok(Err(e)) => errors.push(format!("{revision}: {e}")),
            Err(_) => errors.push(format!("{revision}: no answer within {timeout:?}")),
        }
    }
    let status = match revisions.len() {
        2 => HealthStatus::Healthy,
        1 => HealthStatus::Degraded,
        _ => HealthStatus::Unreachable,
    };
    ProbeOutcome {
        status,
        latency_ms: u64::try_from(modern_latency.as_millis()).unwrap_or(u64::MAX),
        revisions,
        tools: tools.unwrap_or_default(),
        error: if errors.is_empty() { None } else { Some(errors.join("; ")) },
    }
}

async fn list_tools(
    http: &reqwest::Client,
    url: &str,
    lifecycle: ClientLifecycleMode,
) -> Result<Vec<ToolSnapshot>, String> {
    let transport =
        StreamableHttpClientTransport::with_client(http.clone(), StreamableHttpClientTransportConfig::with_uri(url));
    let client = ().serve_with_lifecycle(transport, lifecycle).await.map_err(|e| e.to_string())?;
    let listed = client.list_all_tools().await.map_err(|e| e.to_string());
    // Closing is best effort; the answer is what matters.
    let _ = client.cancel().await;
    let tools = listed?;
    Ok(tools
        .into_iter()
        .map(|t| ToolSnapshot {
            name: t.name.to_string(),
            title: t.title.clone(),
            description: t.description.as_deref().map(str::to_string),
            annotations: t.annotations.as_ref().and_then(|a| serde_json::to_value(a).ok()).unwrap_or_default(),
        })
        .collect())
}

/// Probes every target each `interval` until `shutdown`.
pub async fn run(sink: Arc<dyn ProbeSink>, http: reqwest::Client, interval: Duration, shutdown: CancellationToken) {
    info!(?interval, "health prober started");
    loop {
        match sink.probe_targets().await {
            Ok(targets) => {
                let probes = targets.into_iter().map(|t| {
                    let http = http.clone();
                    let sink = sink.clone();
                    async move {
                        let outcome = probe(&http, &t.url, Duration::from_secs(10)).await;
                        debug!(server = %t.name, status = outcome.status.as_str(), latency_ms = outcome.latency_ms, "probed");
                        if let Err(error) = sink.record_probe(&t, &outcome).await {
                            warn!(server = %t.name, %error, "recording a probe failed");
                        }
                    }
                });
                futures::future::join_all(probes).await;
            }
            Err(error) => warn!(%error, "listing servers to probe failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
