//! `[servers.<id>]`: the settings every domain server shares. Keys this module does not
//! know are left for the domain (its backend's address, credentials), which reads them
//! from `extra` when it is built.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One domain server's common settings, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// Whether `inquest all` mounts it.
    pub enabled: bool,
    /// Where `inquest server <id>` listens.
    pub listen: SocketAddr,
    /// The URL clients use for the MCP endpoint (the token audience); by default
    /// `https://<listen>/mcp` for `inquest server` and `<registry.public_url>/mcp/<id>` in `all`.
    pub public_url: Option<String>,
    /// `required` (mTLS or bearer JWT) or `none` (loopback only).
    pub auth: String,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub required_scope: Option<String>,
    #[serde(with = "super::humantime_serde_compat")]
    pub call_timeout: Duration,
    #[serde(with = "super::humantime_serde_compat")]
    pub policy_ttl: Duration,
    #[serde(with = "super::humantime_serde_compat")]
    pub policy_max_staleness: Duration,
    /// The domain's own keys, untouched (never printed: they may hold credentials).
    #[serde(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// As written in the file or environment.
#[derive(Debug, Default, Deserialize)]
struct RawServer {
    enabled: Option<bool>,
    listen: Option<String>,
    public_url: Option<String>,
    auth: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    required_scope: Option<String>,
    call_timeout: Option<String>,
    policy_ttl: Option<String>,
    policy_max_staleness: Option<String>,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

/// The default port of `inquest server <id>`.
fn default_port(id: &str) -> u16 {
    match id {
        "airflow" => 7411,
        "presto" => 7412,
        "spark" => 7413,
        _ => 7410,
    }
}

/// The settings of server `id` when nothing is configured for it.
pub fn defaults(id: &str) -> ServerConfig {
    ServerConfig {
        enabled: true,
        listen: SocketAddr::from(([127, 0, 0, 1], default_port(id))),
        public_url: None,
        auth: "required".into(),
        allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        allowed_origins: Vec::new(),
        required_scope: None,
        call_timeout: Duration::from_secs(60),
        policy_ttl: Duration::from_secs(5),
        policy_max_staleness: Duration::from_secs(300),
        extra: BTreeMap::new(),
    }
}

/// Parses every `[servers.<id>]` table; each mistake comes back with its key.
pub fn parse(raw: BTreeMap<String, serde_json::Value>) -> (BTreeMap<String, ServerConfig>, Vec<(String, String)>) {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (id, value) in raw {
        let key = |k: &str| format!("servers.{id}.{k}");
        let r: RawServer = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                errors.push((format!("servers.{id}"), e.to_string()));
                continue;
            }
        };
        let mut s = defaults(&id);
        s.enabled = r.enabled.unwrap_or(true);
        if let Some(l) = r.listen {
            match l.parse() {
                Ok(a) => s.listen = a,
                Err(e) => errors.push((key("listen"), format!("`{l}` is not an address: {e}"))),
            }
        }
        s.public_url = r.public_url.map(|u| u.trim_end_matches('/').to_string());
        if let Some(a) = r.auth {
            if a == "required" || a == "none" {
                s.auth = a;
            } else {
                errors.push((key("auth"), format!("`{a}` is not a mode; use `required` or `none`")));
            }
        }
        if s.auth == "none" && !s.listen.ip().is_loopback() {
            errors.push((key("auth"), format!("`none` is only allowed on loopback, and listen is {}", s.listen)));
        }
        if let Some(h) = r.allowed_hosts {
            s.allowed_hosts = h;
        }
        if let Some(o) = r.allowed_origins {
            s.allowed_origins = o;
        }
        s.required_scope = r.required_scope;
        for (name, value, slot) in [
            ("call_timeout", r.call_timeout, &mut s.call_timeout),
            ("policy_ttl", r.policy_ttl, &mut s.policy_ttl),
            ("policy_max_staleness", r.policy_max_staleness, &mut s.policy_max_staleness),
        ] {
            if let Some(v) = value {
                match humantime::parse_duration(&v) {
                    Ok(d) => *slot = d,
                    Err(e) => errors.push((key(name), format!("`{v}` is not a duration: {e}"))),
                }
            }
        }
        s.extra = r.extra;
        // A switched-off server needs none of its backend's settings (its password, say).
        if s.enabled {
            errors.extend(crate::mcp::domains::check(&id, &s.extra));
        }
        out.insert(id, s);
    }
    // Every built-in domain runs unless its table says `enabled = false`.
    for id in crate::mcp::domains::KNOWN {
        out.entry(id.to_string()).or_insert_with(|| defaults(id));
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_disabled_server_needs_no_backend_settings() {
        let raw = BTreeMap::from([("airflow".to_string(), json!({"enabled": false}))]);
        let (servers, errors) = parse(raw);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!servers["airflow"].enabled);
        let (_, errors) = parse(BTreeMap::from([("airflow".to_string(), json!({}))]));
        assert!(!errors.is_empty(), "an enabled Airflow still needs its password");
    }

    #[test]
    fn mistakes_are_named_and_domain_keys_kept() {
        let raw = BTreeMap::from([
            ("airflow".to_string(), json!({"listen": "0.0.0.0:1", "auth": "none", "url": "http://a", "password": "p"})),
            ("spark".to_string(), json!({"call_timeout": "soon", "auth": "maybe", "histroy_url": "http://s"})),
        ]);
        let (servers, errors) = parse(raw);
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        // The domain's own keys are checked by the domain: a misspelt one is named too.
        assert_eq!(
            keys,
            ["servers.airflow.auth", "servers.spark.auth", "servers.spark.call_timeout", "servers.spark.histroy_url"]
        );
        assert!(errors[3].1.contains("histroy_url"), "{}", errors[3].1);
        assert_eq!(servers["airflow"].extra["url"], json!("http://a"));
        // Built-in domains nobody configured still run, with defaults.
        assert!(servers["presto"].enabled);
    }
}
