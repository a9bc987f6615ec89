//! `server.json`, the official MCP registry's description of a server: validation
//! against the official schema's rules, and version ordering. Pure: no IO.
//!
//! Validation reports every violation at once, each with the field it concerns, so a
//! publisher fixes a document in one round. The document is stored as published; the
//! registry only reads the facts it needs ([`ServerJson`]). Unknown fields are allowed,
//! as the official schema allows them, so documents written for a newer schema still
//! publish.

use std::cmp::Ordering;

use serde::Serialize;
use serde_json::{Map, Value};

/// `_meta` keys only the registry writes; a published document may not carry them.
pub const RESERVED_META_KEYS: [&str; 2] = [OFFICIAL_META, EXTENSION_META];
/// The official registry's `_meta` namespace in responses.
pub const OFFICIAL_META: &str = "io.modelcontextprotocol.registry/official";
/// Our own `_meta` namespace in responses.
pub const EXTENSION_META: &str = "dev.inquest/registry";

/// One way a document breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Violation {
    /// Where: `name`, `remotes[0].url`, `_meta["x"]`, or `(document)`.
    pub field: String,
    pub message: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Violation {
        Violation { field: field.into(), message: message.into() }
    }
}

/// How a client reaches a remote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Transport {
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    #[serde(rename = "sse")]
    Sse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub transport: Transport,
    pub url: String,
}

/// The facts the registry reads from a valid document.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerJson {
    pub name: String,
    pub version: String,
    pub description: String,
    pub title: Option<String>,
    pub remotes: Vec<Remote>,
    /// The document as published.
    pub document: Value,
}

/// Validates `doc` against the official `server.json` rules.
pub fn validate(doc: &Value) -> Result<ServerJson, Vec<Violation>> {
    let mut v = Vec::new();
    let Some(obj) = doc.as_object() else {
        return Err(vec![Violation::new("(document)", "must be a JSON object")]);
    };
    let name = required_str(obj, "name", &mut v);
    if let Some(name) = name
        && let Err(m) = check_name(name)
    {
        v.push(Violation::new("name", m));
    }
    let description = required_str(obj, "description", &mut v);
    if let Some(d) = description {
        check_len("description", d, 1, 100, &mut v);
    }
    let version = required_str(obj, "version", &mut v);
    if let Some(version) = version
        && let Err(m) = check_exact_version(version)
    {
        v.push(Violation::new("version", m));
    }
    let title = optional_str(obj, "title", &mut v);
    if let Some(t) = title {
        check_len("title", t, 1, 100, &mut v);
    }
    optional_str(obj, "$schema", &mut v);
    if let Some(url) = optional_str(obj, "websiteUrl", &mut v) {
        check_url("websiteUrl", url, &mut v);
    }
    check_repository(obj.get("repository"), &mut v);
    let remotes = check_remotes(obj.get("remotes"), &mut v);
    check_packages(obj.get("packages"), &mut v);
    check_meta(obj.get("_meta"), &mut v);
    match (name, description, version) {
        (Some(name), Some(description), Some(version)) if v.is_empty() => Ok(ServerJson {
            name: name.to_string(),
            version: version.to_string(),
            description: description.to_string(),
            title: title.map(str::to_string),
            remotes,
            document: doc.clone(),
        }),
        _ => Err(v),
    }
}

/// A server name: `^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$`, 3 to 200 characters.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let len = name.chars().count();
    if !(3..=200).contains(&len) {
        return Err("must be 3 to 200 characters long");
    }
    let Some((namespace, server)) = name.split_once('/') else {
        return Err("must be a reverse-DNS namespace and a name, separated by one `/` (com.example/server)");
    };
    let namespace_ok =
        !namespace.is_empty() && namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let server_ok =
        !server.is_empty() && server.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if namespace_ok && server_ok {
        Ok(())
    } else {
        Err("must match ^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$ (com.example/server)")
    }
}

/// An exact version: not a range (`^1.2`, `~1`, `>=1`, `1.x`, `1 - 2`) and not `latest`.
/// Semantic versions are recommended, not required (`2025.03.1` is fine).
pub fn check_exact_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() {
        return Err("must not be empty");
    }
    if version.len() > 255 {
        return Err("must be at most 255 characters long");
    }
    if version.eq_ignore_ascii_case("latest") {
        return Err("`latest` is not a version: publish an exact version (1.2.3)");
    }
    let range = version.starts_with(['^', '~', '>', '<', '=']) || version.contains(['*', '|', ' ', '\t']);
    let core = version.split(['-', '+']).next().unwrap_or(version);
    let wildcard = core.split('.').any(|part| part.eq_ignore_ascii_case("x"));
    if range || wildcard {
        return Err("must be an exact version (1.2.3), not a range or wildcard");
    }
    Ok(())
}

/// Orders two versions when both are semantic versions; `None` otherwise.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    Some(SemVer::parse(a)?.cmp_precedence(&SemVer::parse(b)?))
}

/// Which of `versions` (version, published at) is the latest: the highest semantic
/// version, or, when either of two is not a semantic version, the later published.
pub fn pick_latest<'a>(versions: impl IntoIterator<Item = (&'a str, i64)>) -> Option<&'a str> {
    let mut best: Option<(&str, i64)> = None;
    for (version, published) in versions {
        let newer = match best {
            None => true,
            Some((b, b_published)) => match compare_versions(version, b) {
                Some(Ordering::Equal) | None => (published, version) > (b_published, b),
                Some(o) => o == Ordering::Greater,
            },
        };
        if newer {
            best = Some((version, published));
        }
    }
    best.map(|(v, _)| v)
}

/// `MAJOR.MINOR.PATCH[-pre][+build]`, compared by the semver precedence rules.
struct SemVer<'a> {
    core: [u64; 3],
    pre: Option<&'a str>,
}

impl<'a> SemVer<'a> {
    fn parse(s: &'a str) -> Option<SemVer<'a>> {
        let s = s.split_once('+').map_or(s, |(v, _)| v);
        let (core, pre) = s.split_once('-').map_or((s, None), |(c, p)| (c, Some(p)));
        let mut parts = core.split('.');
        let mut out = [0u64; 3];
        for slot in &mut out {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        if parts.next().is_some() || pre.is_some_and(str::is_empty) {
            return None;
        }
        Some(SemVer { core: out, pre })
    }

    fn cmp_precedence(&self, other: &SemVer<'_>) -> Ordering {
        self.core.cmp(&other.core).then_with(|| match (self.pre, other.pre) {
            (None, None) => Ordering::Equal,
            // A pre-release sorts before its release.
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => {
                let mut a = a.split('.');
                let mut b = b.split('.');
                loop {
                    match (a.next(), b.next()) {
                        (None, None) => return Ordering::Equal,
                        (None, Some(_)) => return Ordering::Less,
                        (Some(_), None) => return Ordering::Greater,
                        (Some(x), Some(y)) => {
                            let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                                (Ok(x), Ok(y)) => x.cmp(&y),
                                (Ok(_), Err(_)) => Ordering::Less,
                                (Err(_), Ok(_)) => Ordering::Greater,
                                (Err(_), Err(_)) => x.cmp(y),
                            };
                            if o != Ordering::Equal {
                                return o;
                            }
                        }
                    }
                }
            }
        })
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, key: &str, v: &mut Vec<Violation>) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            v.push(Violation::new(key, "is required"));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            v.push(Violation::new(key, "must be a string"));
            None
        }
    }
}

fn optional_str<'a>(obj: &'a Map<String, Value>, key: &str, v: &mut Vec<Violation>) -> Option<&'a str> {
    optional_str_at(obj, key, key, v)
}

fn optional_str_at<'a>(obj: &'a Map<String, Value>, key: &str, field: &str, v: &mut Vec<Violation>) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            v.push(Violation::new(field, "must be a string"));
            None
        }
    }
}

fn required_str_at<'a>(obj: &'a Map<String, Value>, key: &str, field: &str, v: &mut Vec<Violation>) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            v.push(Violation::new(field, "is required"));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            v.push(Violation::new(field, "must be a string"));
            None
        }
    }
}

fn check_len(field: &str, s: &str, min: usize, max: usize, v: &mut Vec<Violation>) {
    let len = s.chars().count();
    if len < min || len > max {
        v.push(Violation::new(field, format!("must be {min} to {max} characters long (is {len})")));
    }
}

/// An absolute `http(s)` URL; `{variable}` placeholders (remote URL templates) allowed.
fn check_url(field: &str, url: &str, v: &mut Vec<Violation>) {
    let filled = fill_placeholders(url);
    let ok = reqwest::Url::parse(&filled)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()));
    if !ok {
        v.push(Violation::new(field, "must be an absolute http(s) URL"));
    }
}

fn fill_placeholders(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut depth = 0usize;
    for c in url.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push('x');
                }
            }
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

fn check_repository(repo: Option<&Value>, v: &mut Vec<Violation>) {
    match repo {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            if let Some(url) = required_str_at(r, "url", "repository.url", v) {
                check_url("repository.url", url, v);
            }
            if let Some(source) = required_str_at(r, "source", "repository.source", v)
                && source.is_empty()
            {
                v.push(Violation::new("repository.source", "must not be empty (github, gitlab, ...)"));
            }
            optional_str_at(r, "id", "repository.id", v);
            optional_str_at(r, "subfolder", "repository.subfolder", v);
        }
        Some(_) => v.push(Violation::new("repository", "must be an object {url, source}")),
    }
}

fn check_remotes(remotes: Option<&Value>, v: &mut Vec<Violation>) -> Vec<Remote> {
    let mut out = Vec::new();
    let items = match remotes {
        None | Some(Value::Null) => return out,
        Some(Value::Array(items)) => items,
        Some(_) => {
            v.push(Violation::new("remotes", "must be an array"));
            return out;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("remotes[{i}].{f}");
        let Some(r) = item.as_object() else {
            v.push(Violation::new(format!("remotes[{i}]"), "must be an object {type, url}"));
            continue;
        };
        let transport = match required_str_at(r, "type", &at("type"), v) {
            Some("streamable-http") => Some(Transport::StreamableHttp),
            Some("sse") => Some(Transport::Sse),
            Some(other) => {
                v.push(Violation::new(at("type"), format!("must be `streamable-http` or `sse`, not `{other}`")));
                None
            }
            None => None,
        };
        let url = required_str_at(r, "url", &at("url"), v);
        if let Some(url) = url {
            check_url(&at("url"), url, v);
        }
        check_headers(r.get("headers"), &at("headers"), v);
        if let (Some(transport), Some(url)) = (transport, url) {
            out.push(Remote { transport, url: url.to_string() });
        }
    }
    out
}

fn check_headers(headers: Option<&Value>, field: &str, v: &mut Vec<Violation>) {
    let items = match headers {
        None | Some(Value::Null) => return,
        Some(Value::Array(items)) => items,
        Some(_) => return v.push(Violation::new(field, "must be an array")),
    };
    for (i, h) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match h.as_object() {
            Some(h) => {
                if let Some(name) = required_str_at(h, "name", &format!("{at}.name"), v)
                    && name.is_empty()
                {
                    v.push(Violation::new(format!("{at}.name"), "must not be empty"));
                }
            }
            None => v.push(Violation::new(at, "must be an object {name, ...}")),
        }
    }
}

fn check_packages(packages: Option<&Value>, v: &mut Vec<Violation>) {
    let items = match packages {
        None | Some(Value::Null) => return,
        Some(Value::Array(items)) => items,
        Some(_) => return v.push(Violation::new("packages", "must be an array")),
    };
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("packages[{i}].{f}");
        let Some(p) = item.as_object() else {
            v.push(Violation::new(format!("packages[{i}]"), "must be an object {registryType, identifier, transport}"));
            continue;
        };
        for key in ["registryType", "identifier"] {
            if let Some(s) = required_str_at(p, key, &at(key), v)
                && s.is_empty()
            {
                v.push(Violation::new(at(key), "must not be empty"));
            }
        }
        if let Some(version) = optional_str_at(p, "version", &at("version"), v)
            && let Err(m) = check_exact_version(version)
        {
            v.push(Violation::new(at("version"), m));
        }
        match p.get("transport") {
            Some(Value::Object(t)) => match required_str_at(t, "type", &at("transport.type"), v) {
                Some("stdio") | None => {}
                Some("streamable-http" | "sse") => {
                    if let Some(url) = required_str_at(t, "url", &at("transport.url"), v) {
                        check_url(&at("transport.url"), url, v);
                    }
                }
                Some(other) => v.push(Violation::new(
                    at("transport.type"),
                    format!("must be `stdio`, `streamable-http` or `sse`, not `{other}`"),
                )),
            },
            None | Some(Value::Null) => v.push(Violation::new(at("transport"), "is required")),
            Some(_) => v.push(Violation::new(at("transport"), "must be an object {type}")),
        }
    }
}

fn check_meta(meta: Option<&Value>, v: &mut Vec<Violation>) {
    let keys = match meta {
        None | Some(Value::Null) => return,
        Some(Value::Object(m)) => m.keys(),
        Some(_) => return v.push(Violation::new("_meta", "must be an object")),
    };
    for key in keys {
        let field = format!("_meta[\"{key}\"]");
        if RESERVED_META_KEYS.contains(&key.as_str()) {
            v.push(Violation::new(field, "is written by the registry, not by publishers"));
        } else if !is_reverse_dns_key(key) {
            v.push(Violation::new(field, "keys must be reverse-DNS namespaced (com.example/key)"));
        }
    }
}

/// `com.example/key`: a dotted namespace of at least two labels, one `/`, a name.
fn is_reverse_dns_key(key: &str) -> bool {
    check_name(key).is_ok()
        && key.split_once('/').is_some_and(|(ns, _)| ns.split('.').filter(|l| !l.is_empty()).count() >= 2)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> Value {
        json!({
            "$schema": "https://static.modelcontextprotocol.io/schemas/2025-10-17/server.schema.json",
            "name": "com.example/airflow",
            "title": "Airflow",
            "description": "DAG runs, task logs and retries",
            "version": "1.2.0",
            "websiteUrl": "https://example.com/airflow",
            "repository": {"url": "https://github.com/example/airflow-mcp", "source": "github"},
            "remotes": [{"type": "streamable-http", "url": "https://airflow.example.com/mcp",
                         "headers": [{"name": "X-Tenant", "isRequired": true}]}],
            "packages": [{"registryType": "oci", "identifier": "ghcr.io/example/airflow-mcp", "version": "1.2.0",
                          "transport": {"type": "stdio"}}],
            "_meta": {"com.example/build": {"sha": "abc"}},
            "futureField": true
        })
    }

    #[test]
    fn a_valid_document_yields_its_facts() {
        let s = validate(&valid()).unwrap();
        assert_eq!(
            (s.name.as_str(), s.version.as_str(), s.title.as_deref()),
            ("com.example/airflow", "1.2.0", Some("Airflow"))
        );
        assert_eq!(
            s.remotes,
            vec![Remote { transport: Transport::StreamableHttp, url: "https://airflow.example.com/mcp".into() }]
        );
        let minimal = json!({"name": "io.github.x/y", "description": "d", "version": "2025.03.1"});
        assert!(validate(&minimal).is_ok());
        let templated = json!({"name": "a.b/c", "description": "d", "version": "1.0.0",
                               "remotes": [{"type": "sse", "url": "https://{tenant}.example.com/sse"}]});
        assert!(validate(&templated).is_ok());
    }

    #[test]
    fn every_violation_is_listed() {
        let doc = json!({
            "name": "airflow",
            "description": "x".repeat(101),
            "version": "^1.2",
            "title": "",
            "websiteUrl": "ftp://example.com",
            "repository": {"url": "not a url"},
            "remotes": [{"type": "stdio", "url": "https://a.example.com"}, {"type": "sse"}, 7],
            "packages": [{"identifier": "x", "version": "latest", "transport": {"type": "carrier-pigeon"}}],
            "_meta": {"nonamespace": 1, "dev.inquest/registry": {}}
        });
        let fields: Vec<String> = validate(&doc).unwrap_err().into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "description",
                "version",
                "title",
                "websiteUrl",
                "repository.url",
                "repository.source",
                "remotes[0].type",
                "remotes[1].url",
                "remotes[2]",
                "packages[0].registryType",
                "packages[0].version",
                "packages[0].transport.type",
                "_meta[\"dev.inquest/registry\"]",
                "_meta[\"nonamespace\"]",
            ]
        );
        assert_eq!(
            validate(&json!({"name": 3})).unwrap_err(),
            vec![
                Violation::new("name", "must be a string"),
                Violation::new("description", "is required"),
                Violation::new("version", "is required")
            ]
        );
        assert_eq!(validate(&json!([])).unwrap_err()[0].field, "(document)");
    }

    #[test]
    fn names() {
        for ok in ["com.example/airflow", "io.github.user/my_server-2", "a.b/c.d"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        let long = format!("com.example/{}", "a".repeat(200));
        for bad in ["ab", "noslash", "a/b/c", "/x", "x/", "com example/x", "com.example/x y", "com_example/x", &long] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_versions_only() {
        for ok in ["1.2.3", "1.0.0-rc.1+build.5", "2025.03.1", "v1.2.3", "1.2", "20250301"] {
            assert_eq!(check_exact_version(ok), Ok(()), "{ok}");
        }
        for bad in
            ["", "latest", "LATEST", "^1.2", "~1", ">=1.0", "<2", "=1.0", "1.x", "1.2.X", "*", "1.*", "1 - 2", "1||2"]
        {
            assert!(check_exact_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_order() {
        let cases = [
            ("1.2.3", "1.10.0", Some(Ordering::Less)),
            ("1.0.0-rc.1", "1.0.0", Some(Ordering::Less)),
            ("1.0.0-alpha", "1.0.0-alpha.1", Some(Ordering::Less)),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Some(Ordering::Less)),
            ("1.0.0-beta.11", "1.0.0-beta.2", Some(Ordering::Greater)),
            ("1.0.0+a", "1.0.0+b", Some(Ordering::Equal)),
            ("2025.03.1", "1.0.0", Some(Ordering::Greater)),
            ("1.2", "1.2.0", None),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        }
        assert_eq!(pick_latest([("1.2.0", 3), ("1.10.0", 1), ("1.9.0", 2)]), Some("1.10.0"));
        assert_eq!(pick_latest([("1.0.0", 1), ("2.0.0-rc.1", 2)]), Some("2.0.0-rc.1"));
        // Not semantic versions: the later published wins.
        assert_eq!(pick_latest([("beta", 5), ("alpha", 9)]), Some("alpha"));
        assert_eq!(pick_latest(std::iter::empty()), None);
    }
}
