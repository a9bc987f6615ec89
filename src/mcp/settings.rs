//! How one domain server is run: its public identity, transport limits, authentication
//! and policy freshness. Built from `[servers.<id>]` by the configuration loader, or by
//! hand in tests.

use std::time::Duration;

/// Whether callers must present credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// mTLS (SPIFFE ID) or a bearer JWT whose audience is this server's URL.
    Required,
    /// No credentials: every caller is the anonymous user. Only for reference clients on
    /// loopback; [`crate::mcp::serve`] refuses it on any other bind.
    None,
}

/// One server's settings, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `airflow`, `presto`, `spark` (or a test domain's id).
    pub id: String,
    /// The registry's name for it, e.g. `dev.inquest/airflow`.
    pub registry_name: String,
    /// The URL clients use for the MCP endpoint; also the audience tokens must carry
    /// (RFC 8707) and the `resource` of the protected-resource metadata.
    pub public_url: String,
    /// `Host` values accepted (DNS-rebinding defence); `host` or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted; a request with any other `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    pub auth: AuthMode,
    /// Scope a bearer token must hold, when set (`insufficient_scope` otherwise).
    pub required_scope: Option<String>,
    /// Longest a tool call may run.
    pub call_timeout: Duration,
    /// How long a policy fetched from the registry is used before it is fetched again.
    pub policy_ttl: Duration,
    /// How long the last good policy keeps serving while the registry is unreachable.
    pub policy_max_staleness: Duration,
    /// Lifetime of a sealed `requestState` (2026-07-28 approvals).
    pub request_state_ttl: Duration,
    /// How long a 2025-11-25 call waits on a URL elicitation before answering -32042.
    pub elicitation_wait: Duration,
}

impl ServerSettings {
    /// Defaults for a server `id` reachable at `public_url`.
    pub fn new(id: &str, public_url: &str) -> ServerSettings {
        ServerSettings {
            id: id.to_string(),
            registry_name: format!("dev.inquest/{id}"),
            public_url: public_url.trim_end_matches('/').to_string(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
            auth: AuthMode::Required,
            required_scope: None,
            call_timeout: Duration::from_secs(60),
            policy_ttl: Duration::from_secs(5),
            policy_max_staleness: Duration::from_secs(300),
            request_state_ttl: Duration::from_secs(3600),
            elicitation_wait: Duration::from_secs(30),
        }
    }

    /// The origin (`https://host:port`) and path (`/mcp/airflow`, or `/`) of the public URL.
    pub fn origin_and_path(&self) -> (&str, &str) {
        let scheme_end = self.public_url.find("://").map_or(0, |i| i + 3);
        match self.public_url[scheme_end..].find('/') {
            Some(i) => self.public_url.split_at(scheme_end + i),
            None => (self.public_url.as_str(), "/"),
        }
    }

    /// The path part of the public URL.
    pub fn path(&self) -> &str {
        self.origin_and_path().1
    }

    /// Where the RFC 9728 metadata of this resource is served.
    pub fn metadata_url(&self) -> String {
        let (origin, path) = self.origin_and_path();
        let suffix = if path == "/" { "" } else { path };
        format!("{origin}/.well-known/oauth-protected-resource{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_rfc_9728() {
        let s = ServerSettings::new("airflow", "https://mcp.example:8443/mcp/airflow");
        assert_eq!(s.path(), "/mcp/airflow");
        assert_eq!(s.metadata_url(), "https://mcp.example:8443/.well-known/oauth-protected-resource/mcp/airflow");
        let s = ServerSettings::new("airflow", "https://airflow.example");
        assert_eq!(s.path(), "/");
        assert_eq!(s.metadata_url(), "https://airflow.example/.well-known/oauth-protected-resource");
    }
}
