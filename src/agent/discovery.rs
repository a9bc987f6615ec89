//! Discovery from the registry: `GET /v0.1/x/servers/permitted?team=T`, asked with the
//! agent's own mesh identity, so an investigation for team T reaches only what both
//! the agent and T may use. The answer is cached briefly per team.
//!
//! Which servers become targets is decided by [`targets`] (pure): servers whose
//! health is `unreachable` are left out (the registry still lists them, so the
//! report can say what was skipped), a server needs a `streamable-http` remote, and
//! only our own domain servers (`trusted_prefix`) have their annotations believed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::investigator::Discovery;
use super::sessions::Target;

/// How long one team's answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
struct Permitted {
    servers: Vec<PermittedServer>,
}

#[derive(Debug, Deserialize)]
struct PermittedServer {
    name: String,
    #[serde(default)]
    remotes: Value,
    #[serde(default)]
    health: Option<Health>,
}

#[derive(Debug, Deserialize)]
struct Health {
    status: String,
}

/// A permitted server that is not a target, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub why: String,
}

/// The targets in a permitted-servers answer. `http` is the client (with the agent's
/// identity) every target is called with.
pub fn targets(
    answer: &Value,
    http: &reqwest::Client,
    trusted_prefix: &str,
) -> Result<(Vec<Target>, Vec<Skipped>), String> {
    let permitted: Permitted =
        serde_json::from_value(answer.clone()).map_err(|e| format!("the registry's answer is not understood: {e}"))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for s in permitted.servers {
        if s.health.as_ref().is_some_and(|h| h.status == "unreachable") {
            skipped.push(Skipped { name: s.name, why: "the registry's prober cannot reach it".into() });
            continue;
        }
        let url = s.remotes.as_array().and_then(|remotes| {
            remotes.iter().find(|r| r["type"] == "streamable-http").and_then(|r| r["url"].as_str())
        });
        let Some(url) = url else {
            skipped.push(Skipped { name: s.name, why: "it has no streamable-http remote".into() });
            continue;
        };
        // `server__tool` needs a server part without the namespace's `/` and dots.
        let short = s.name.rsplit('/').next().unwrap_or(&s.name).replace(['.', '-'], "_");
        out.push(Target {
            name: short,
            url: url.to_string(),
            http: http.clone(),
            trusted: s.name.starts_with(trusted_prefix),
        });
    }
    Ok((out, skipped))
}

/// Asks the registry at `base` (its mesh URL) with `http` (the agent's mTLS client).
pub struct RegistryDiscovery {
    pub base: String,
    pub http: reqwest::Client,
    pub trusted_prefix: String,
    /// URL prefixes replaced before use: where this process reaches a server by
    /// another address than the one it registered (`inquest all`'s mesh listener).
    pub rewrite: Vec<(String, String)>,
    cache: Mutex<HashMap<String, (Instant, Vec<Target>)>>,
}

impl RegistryDiscovery {
    pub fn new(base: impl Into<String>, http: reqwest::Client, trusted_prefix: impl Into<String>) -> Self {
        RegistryDiscovery {
            base: base.into(),
            http,
            trusted_prefix: trusted_prefix.into(),
            rewrite: Vec::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Discovery for RegistryDiscovery {
    async fn servers(&self, team: &str) -> Result<Vec<Target>, String> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, targets)) = cache.get(team)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(targets.clone());
        }
        let url = format!("{}/v0.1/x/servers/permitted", self.base.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .query(&[("team", team)])
            .send()
            .await
            .map_err(|e| format!("cannot reach the registry at {url}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("the registry at {url} answered {status}: {e}"))?;
        if !status.is_success() {
            return Err(format!("the registry at {url} answered {status}: {body}"));
        }
        let (mut found, skipped) = targets(&body, &self.http, &self.trusted_prefix)?;
        for t in &mut found {
            if let Some((from, to)) = self.rewrite.iter().find(|(from, _)| t.url.starts_with(from.as_str())) {
                t.url = format!("{to}{}", &t.url[from.len()..]);
            }
        }
        for s in &skipped {
            tracing::info!(server = %s.name, why = %s.why, team, "permitted server not used");
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(team.to_string(), (Instant::now(), found.clone()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn permitted_servers_become_targets_by_health_remote_and_owner() {
        let answer = json!({
            "principal": "spiffe://inquest.local/agent", "team": "data", "count": 4,
            "servers": [
                {"name": "dev.inquest/airflow", "remotes": [{"type": "streamable-http", "url": "https://127.0.0.1:7443/mcp/airflow"}],
                 "health": {"status": "healthy"}, "decision": "allow"},
                {"name": "io.github.someone/airflow-mcp", "remotes": [{"type": "sse", "url": "http://x/sse"}, {"type": "streamable-http", "url": "http://127.0.0.1:9000/mcp"}],
                 "health": {"status": "degraded"}},
                {"name": "dev.inquest/spark", "remotes": [{"type": "streamable-http", "url": "https://127.0.0.1:7443/mcp/spark"}],
                 "health": {"status": "unreachable"}},
                {"name": "com.example/legacy", "remotes": [{"type": "sse", "url": "http://x/sse"}]},
            ],
        });
        let (found, skipped) = targets(&answer, &reqwest::Client::new(), "dev.inquest/").unwrap();
        let found: Vec<(&str, &str, bool)> =
            found.iter().map(|t| (t.name.as_str(), t.url.as_str(), t.trusted)).collect();
        assert_eq!(
            found,
            [
                ("airflow", "https://127.0.0.1:7443/mcp/airflow", true),
                ("airflow_mcp", "http://127.0.0.1:9000/mcp", false),
            ]
        );
        let skipped: Vec<&str> = skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, ["dev.inquest/spark", "com.example/legacy"]);
        assert!(targets(&json!({"nope": 1}), &reqwest::Client::new(), "x").is_err());
    }
}
