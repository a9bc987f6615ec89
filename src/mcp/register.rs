//! Self-registration: at start a server publishes its `server.json` to the registry
//! (its remote URL, a snapshot of its tools, and the domain's sensitive tools as the
//! policy it suggests). The registry lets a server publish only its own entry (the one
//! whose policy names its SPIFFE ID); an admin still decides the policy itself.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::http::RegistryLink;
use super::server::to_mcp_tool;
use super::settings::ServerSettings;
use super::tool::ToolSpec;

/// Where publishers put their own data in `server.json`.
pub const SERVER_META: &str = "dev.inquest/server";

/// The `server.json` this server publishes.
pub fn server_json(settings: &ServerSettings, description: &str, tools: &[ToolSpec]) -> Value {
    let description: String = description.chars().take(100).collect();
    let snapshot: Vec<Value> =
        tools.iter().map(|t| serde_json::to_value(to_mcp_tool(t)).unwrap_or(Value::Null)).collect();
    let sensitive: Vec<&str> = tools.iter().filter(|t| t.sensitive).map(|t| t.name).collect();
    json!({
        "name": settings.registry_name,
        "title": format!("Inquest {}", settings.id),
        "description": description,
        "version": env!("CARGO_PKG_VERSION"),
        "remotes": [{"type": "streamable-http", "url": settings.public_url}],
        "_meta": {SERVER_META: {"tools": snapshot, "suggested_policy": {"sensitive_tools": sensitive}}},
    })
}

/// Publishes `doc`, and keeps trying (backing off to one attempt every 30 s) while the
/// registry is unreachable or refuses it: a server usually starts before an admin has
/// written the policy that names its SPIFFE ID, and must register once that is done
/// without a restart. An already published version is success.
pub async fn publish(link: RegistryLink, doc: Value, stop: CancellationToken) {
    let url = format!("{}/v0.1/publish", link.url.trim_end_matches('/'));
    let name = doc["name"].as_str().unwrap_or_default().to_string();
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build();
    for attempt in 1u32.. {
        match link.http.post(&url).json(&doc).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(server = %name, attempt, "published to the registry");
                return;
            }
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                tracing::debug!(server = %name, "this version is already published");
                return;
            }
            // Expected until an admin lists the server: say so once, then quietly.
            Ok(r) if r.status() == reqwest::StatusCode::FORBIDDEN && attempt > 1 => {
                tracing::debug!(server = %name, attempt, "still waiting for a policy naming this server")
            }
            Ok(r) if r.status() == reqwest::StatusCode::FORBIDDEN => tracing::warn!(
                server = %name,
                "the registry refuses the publication until an admin's policy names this server's SPIFFE ID; retrying"
            ),
            Ok(r) => {
                tracing::warn!(server = %name, status = %r.status(), attempt, "the registry refused the publication")
            }
            Err(e) => tracing::warn!(server = %name, error = %e, attempt, "publishing to the registry failed"),
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
