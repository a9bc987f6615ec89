//! Per-tool authorization: the server's policy from the registry, decided with
//! [`policy::decide`] for each caller and tool.
//!
//! The policy is fetched over mTLS with the server's own SVID and cached. A cached
//! policy younger than `ttl` is used as is; an older one is refetched, and if the
//! registry cannot be reached the old one keeps serving until it is `max_staleness`
//! old, after which every call is refused (fail closed): a server must not keep
//! granting access that the registry may long have withdrawn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::identity::Principal;
use crate::policy::{self, Access, Decision, ReviewState, ServerPolicy, ServerStatus};

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthzError {
    /// The registry did not answer, or answered with an error.
    #[error("the registry's policy cannot be fetched: {0}")]
    Unreachable(String),
    /// The registry's answer is not a server's policy.
    #[error("the registry's policy of {server} cannot be read: {why}")]
    Malformed { server: String, why: String },
    /// No good policy within the staleness bound.
    #[error("no current policy from the registry (last good one is too old or missing): {0}")]
    Stale(String),
}

/// Where the policy comes from: the registry, or a fixed one (tests, `auth = "none"`).
#[async_trait]
pub trait PolicySource: Send + Sync {
    async fn fetch(&self) -> Result<ServerPolicy, AuthzError>;
}

/// A policy that never changes.
pub struct FixedPolicy(pub ServerPolicy);

#[async_trait]
impl PolicySource for FixedPolicy {
    async fn fetch(&self) -> Result<ServerPolicy, AuthzError> {
        Ok(self.0.clone())
    }
}

/// `GET {registry}/v0.1/x/servers/{name}` with the server's mTLS client.
pub struct RegistryPolicy {
    pub http: reqwest::Client,
    /// The registry API's base URL.
    pub registry_url: String,
    /// The server's registry name.
    pub name: String,
}

/// The parts of `_meta["dev.inquest/registry"]` a decision reads.
#[derive(Deserialize)]
struct ServerDetail {
    #[serde(rename = "dev.inquest/registry")]
    registry: Ext,
}

#[derive(Deserialize)]
struct Ext {
    status: ServerStatus,
    security_review: ReviewOnly,
    production: ReviewOnly,
    #[serde(default)]
    access: Access,
}

#[derive(Deserialize)]
struct ReviewOnly {
    state: ReviewState,
}

#[async_trait]
impl PolicySource for RegistryPolicy {
    async fn fetch(&self) -> Result<ServerPolicy, AuthzError> {
        let name = self.name.replace('/', "%2F");
        let url = format!("{}/v0.1/x/servers/{name}", self.registry_url.trim_end_matches('/'));
        let resp = self.http.get(&url).send().await.map_err(|e| AuthzError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            // Not registered yet: nobody may use it. A decision, not an outage.
            return Ok(ServerPolicy { status: ServerStatus::Deleted, ..Default::default() });
        }
        if !status.is_success() {
            return Err(AuthzError::Unreachable(format!("{url} answered {status}")));
        }
        let detail: ServerDetail =
            resp.json().await.map_err(|e| AuthzError::Malformed { server: self.name.clone(), why: e.to_string() })?;
        let ext = detail.registry;
        Ok(ServerPolicy {
            status: ext.status,
            security_review: ext.security_review.state,
            production: ext.production.state,
            access: ext.access,
        })
    }
}

/// What to do with the cached policy at a given age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use it.
    Fresh,
    /// Refetch; on failure keep using it.
    Refresh,
    /// Refetch; on failure refuse.
    Expired,
}

/// Pure: how a policy `age` old (or none) is treated.
pub fn freshness(age: Option<Duration>, ttl: Duration, max_staleness: Duration) -> Freshness {
    match age {
        Some(a) if a < ttl => Freshness::Fresh,
        Some(a) if a < max_staleness => Freshness::Refresh,
        _ => Freshness::Expired,
    }
}

/// The cached policy and the decisions over it.
pub struct ToolAuthz {
    source: Arc<dyn PolicySource>,
    ttl: Duration,
    max_staleness: Duration,
    /// The last good policy and when it was fetched; the lock also keeps fetches single-flight.
    cached: Mutex<Option<(Arc<ServerPolicy>, Instant)>>,
}

impl ToolAuthz {
    pub fn new(source: Arc<dyn PolicySource>, ttl: Duration, max_staleness: Duration) -> ToolAuthz {
        ToolAuthz { source, ttl, max_staleness: max_staleness.max(ttl), cached: Mutex::new(None) }
    }

    /// The policy to decide with now.
    pub async fn policy(&self) -> Result<Arc<ServerPolicy>, AuthzError> {
        let mut cached = self.cached.lock().await;
        let age = cached.as_ref().map(|(_, at)| at.elapsed());
        let verdict = freshness(age, self.ttl, self.max_staleness);
        if verdict == Freshness::Fresh
            && let Some((p, _)) = cached.as_ref()
        {
            return Ok(p.clone());
        }
        match self.source.fetch().await {
            Ok(p) => {
                let p = Arc::new(p);
                *cached = Some((p.clone(), Instant::now()));
                Ok(p)
            }
            Err(e) => match (verdict, cached.as_ref()) {
                (Freshness::Refresh, Some((p, _))) => {
                    tracing::warn!(error = %e, "the registry is unreachable; serving the cached policy");
                    Ok(p.clone())
                }
                _ => {
                    tracing::error!(error = %e, "no current policy; refusing calls");
                    Err(AuthzError::Stale(e.to_string()))
                }
            },
        }
    }

    /// The decision for `principal` on `tool` (or the server, without a tool).
    pub async fn decide(&self, principal: &Principal, tool: Option<&str>) -> Result<Decision, AuthzError> {
        let p = self.policy().await?;
        Ok(policy::decide(&p, principal, tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_table() {
        let s = Duration::from_secs;
        let cases = [
            (None, Freshness::Expired),
            (Some(s(1)), Freshness::Fresh),
            (Some(s(5)), Freshness::Refresh),
            (Some(s(299)), Freshness::Refresh),
            (Some(s(300)), Freshness::Expired),
        ];
        for (age, want) in cases {
            assert_eq!(freshness(age, s(5), s(300)), want, "{age:?}");
        }
    }
}
