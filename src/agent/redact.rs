//! Removes secrets and personal data from text before it reaches an LLM (pure).
//!
//! Each rule is a regex with a short kind; a match is replaced by `[REDACTED:<kind>]`.
//! A rule with capture groups named `secret…` replaces only the group that took part
//! (the value of `password=…`, the password in a URL), so the reader keeps the context.
//! Spans are collected from the original text and merged before anything is replaced,
//! so one rule never sees another's marker and overlapping matches never leave a piece
//! of a secret behind.

use std::borrow::Cow;

use regex::{Regex, RegexSet};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactError {
    /// A user-supplied pattern is not a valid regex.
    #[error("the redaction pattern `{pattern}` does not compile: {why}")]
    Pattern { pattern: String, why: String },
}

/// The kind user patterns are reported under.
const CUSTOM: &str = "custom";

/// What a value under a secret-looking object key becomes.
const FIELD: &str = "[REDACTED:field]";

/// Substrings of an object key (lowercased, `_` and `-` removed) that mark its value a
/// secret whatever the value looks like.
const SECRET_FIELDS: &[&str] = &["password", "passwd", "secret", "token", "apikey", "authorization", "privatekey"];

/// The default rules, in priority order: where matches overlap, the earlier rule names
/// the kind. `(?-u:\b)` is an ASCII word boundary: a Unicode one would make the regex
/// engine give up its fast DFA on any non-ASCII input, and secrets are ASCII anyway.
const DEFAULTS: &[(&str, &str)] = &[
    (
        "private_key",
        // A key cut off before its END line is still redacted, up to the end of its body.
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|[A-Za-z0-9+/=\s\\:,-]*)",
    ),
    ("jwt", r"(?-u:\b)eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    ("aws_key", r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)"),
    ("aws_secret", r#"(?i)aws_?secret_?access_?key\\?["']?[ \t]*[:=][ \t]*\\?["']?(?P<secret>[A-Za-z0-9/+=]{20,})"#),
    ("github_token", r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    ("openai_key", r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}"),
    ("slack_token", r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("bearer", r"(?i)(?-u:\b)bearer[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{8,}=*)"),
    (
        "authorization",
        r#"(?i)(?-u:\b)authorization\\?["']?[ \t]*[:=][ \t]*\\?["']?(?:[A-Za-z]+[ \t]+)?(?P<secret>[^\s"'\\,;]+)"#,
    ),
    ("url_credentials", r#"(?i)(?-u:\b)[a-z][a-z0-9+.-]*://[^\s:/?#"'<>\\]*:(?P<secret>[^\s/?#"'<>\\]+)@"#),
    (
        "secret",
        // The value of `key=value`, `key: value`, `"key": "value"` and the same with the
        // quotes escaped (JSON inside a JSON string), where the key ends in a secret word.
        r#"(?i)[a-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|private[_-]?key)\\?["']?[ \t]*[:=][ \t]*(?:"(?P<secret_dq>(?:[^"\\\r\n]|\\.)+)"|'(?P<secret_sq>[^'\r\n]+)'|\\"(?P<secret_eq>[^"\\\r\n]+)\\"|(?P<secret>[^\s"'\\,;&<>)}\]]+))"#,
    ),
    (
        "email",
        // The first branch consumes a URL's user part (`scheme://user:pass@`) without
        // naming a secret, so `pass@host` is not taken for an address: the password is
        // url_credentials' and the host stays readable.
        r#"(?i)[a-z][a-z0-9+.-]*://[^\s/?#"'<>\\]*@|(?:^|[^A-Za-z0-9._%+-])(?P<secret>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"#,
    ),
];

/// Removes secrets from text and JSON. Build it once: compiling the rules is the
/// expensive part.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<Rule>,
    /// Which rules match at all, in one pass; `None` only if the defaults failed to
    /// compile, and then everything is redacted.
    any: Option<RegexSet>,
}

impl Redactor {
    /// The default rules plus `extra_patterns` (kind `custom`). A user pattern with a
    /// group named `secret` has only that group replaced.
    pub fn new(extra_patterns: &[String]) -> Result<Redactor, RedactError> {
        let mut rules = Vec::with_capacity(DEFAULTS.len() + extra_patterns.len());
        for (kind, pattern) in DEFAULTS {
            rules.push(Rule::new(kind, pattern)?);
        }
        for pattern in extra_patterns {
            rules.push(Rule::new(CUSTOM, pattern)?);
        }
        let any = RegexSet::new(rules.iter().map(|r| r.regex.as_str()))
            .map_err(|e| RedactError::Pattern { pattern: "(all patterns together)".into(), why: e.to_string() })?;
        Ok(Redactor { rules, any: Some(any) })
    }

    /// `text` with every secret replaced by `[REDACTED:<kind>]`; borrowed when there
    /// was nothing to replace.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(any) = &self.any else {
            return Cow::Owned("[REDACTED:all]".into());
        };
        let mut spans = Vec::new();
        for index in any.matches(text).iter() {
            self.rules[index].spans(index, text, &mut spans);
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable_by_key(|s| (s.start, s.rule));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut merged = spans.into_iter().peekable();
        while let Some(mut span) = merged.next() {
            // Overlapping matches become one: the earliest (then highest priority) names it.
            while let Some(next) = merged.next_if(|n| n.start < span.end) {
                span.end = span.end.max(next.end);
            }
            out.push_str(&text[at..span.start]);
            out.push_str("[REDACTED:");
            out.push_str(self.rules[span.rule].kind);
            out.push(']');
            at = span.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// `v` with every string redacted, object keys included. A string or number under
    /// a key that names a secret (`password`, `apiKey`, `client_secret`, ...) is replaced
    /// wholesale: such a value need not look like a secret to be one.
    pub fn redact_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.redact(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.redact_value(i)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, value)| {
                        let value = match value {
                            Value::String(_) | Value::Number(_) if is_secret_field(key) => Value::String(FIELD.into()),
                            other => self.redact_value(other),
                        };
                        (self.redact(key).into_owned(), value)
                    })
                    .collect(),
            ),
            Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
        }
    }
}

impl Default for Redactor {
    /// The default rules only.
    fn default() -> Redactor {
        // The defaults are fixed and compiled by the tests; were one ever to fail,
        // redacting everything is the safe way to be wrong.
        Redactor::new(&[]).unwrap_or_else(|_| Redactor { rules: Vec::new(), any: None })
    }
}

#[derive(Debug, Clone)]
struct Rule {
    kind: &'static str,
    regex: Regex,
    /// Capture groups named `secret…`; empty means the whole match is the secret.
    secret_groups: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    rule: usize,
}

impl Rule {
    fn new(kind: &'static str, pattern: &str) -> Result<Rule, RedactError> {
        let regex = Regex::new(pattern)
            .map_err(|e| RedactError::Pattern { pattern: pattern.to_string(), why: e.to_string() })?;
        let secret_groups = regex
            .capture_names()
            .enumerate()
            .filter(|(_, name)| name.is_some_and(|n| n.starts_with("secret")))
            .map(|(i, _)| i)
            .collect();
        Ok(Rule { kind, regex, secret_groups })
    }

    fn spans(&self, rule: usize, text: &str, out: &mut Vec<Span>) {
        if self.secret_groups.is_empty() {
            let found = self.regex.find_iter(text).filter(|m| !m.is_empty());
            out.extend(found.map(|m| Span { start: m.start(), end: m.end(), rule }));
            return;
        }
        for caps in self.regex.captures_iter(text) {
            // A match none of whose secret groups took part only consumed context.
            if let Some(m) = self.secret_groups.iter().find_map(|&g| caps.get(g))
                && !m.is_empty()
            {
                out.push(Span { start: m.start(), end: m.end(), rule });
            }
        }
    }
}

fn is_secret_field(key: &str) -> bool {
    let key: String = key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    SECRET_FIELDS.iter().any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: &str, expected: &str) {
        assert_eq!(Redactor::default().redact(input), expected, "input: {input}");
    }

    #[test]
    fn every_default_kind_is_redacted() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let cases: &[(&str, &str)] = &[
            ("Authorization: Bearer abcdef0123456789", "Authorization: Bearer [REDACTED:bearer]"),
            ("curl -H 'authorization: bearer tok_12345678'", "curl -H 'authorization: bearer [REDACTED:bearer]'"),
            ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED:authorization]"),
            (&format!("id_token {jwt} issued"), "id_token [REDACTED:jwt] issued"),
            (
                "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nx+y/z==\n-----END RSA PRIVATE KEY-----\nnext",
                "key:\n[REDACTED:private_key]\nnext",
            ),
            (
                r#"{"pem":"-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n"}"#,
                r#"{"pem":"[REDACTED:private_key]\n"}"#,
            ),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r", "[REDACTED:private_key]"),
            ("using AKIAIOSFODNN7EXAMPLE in us-east-1", "using [REDACTED:aws_key] in us-east-1"),
            ("ASIAY34FZKBOKMUTVV7A", "[REDACTED:aws_key]"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key = [REDACTED:aws_secret]",
            ),
            ("push with ghp_16C7e42F292c6912E7710c838347Ae178B4a", "push with [REDACTED:github_token]"),
            ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "[REDACTED:github_token]"),
            ("ghs_16C7e42F292c6912E7710c838347Ae178B4a", "[REDACTED:github_token]"),
            ("ghu_16C7e42F292c6912E7710c838347Ae178B4a", "[REDACTED:github_token]"),
            ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "[REDACTED:github_token]"),
            ("OPENAI_KEY sk-proj-AbCdEf0123456789_GhIjKlMn-op", "OPENAI_KEY [REDACTED:openai_key]"),
            ("slack xoxb-123456789012-abcdefABCDEF rejected", "slack [REDACTED:slack_token] rejected"),
            ("xoxp-1234-5678-abcdef", "[REDACTED:slack_token]"),
            ("login password=hunter2 ok", "login password=[REDACTED:secret] ok"),
            ("passwd: hunter2", "passwd: [REDACTED:secret]"),
            ("?client_secret=s3cr3t&page=2", "?client_secret=[REDACTED:secret]&page=2"),
            ("token=abc123, next", "token=[REDACTED:secret], next"),
            ("API_KEY='a b c'", "API_KEY='[REDACTED:secret]'"),
            ("PGPASSWORD=pg1 psql", "PGPASSWORD=[REDACTED:secret] psql"),
            (r#"{"password": "correct horse", "user": "bob"}"#, r#"{"password": "[REDACTED:secret]", "user": "bob"}"#),
            (r#"{"api_key":"a\"b"}"#, r#"{"api_key":"[REDACTED:secret]"}"#),
            (r#""{\"password\":\"pw1\"}""#, r#""{\"password\":\"[REDACTED:secret]\"}""#),
            (
                "postgres://etl:s3cr3t@db.internal:5432/warehouse",
                "postgres://etl:[REDACTED:url_credentials]@db.internal:5432/warehouse",
            ),
            ("https://bob:p@ss@host.example.com/x", "https://bob:[REDACTED:url_credentials]@host.example.com/x"),
            ("owner alice.smith+etl@example.co.uk paged", "owner [REDACTED:email] paged"),
            ("mailto:bob@example.com", "mailto:[REDACTED:email]"),
            ("<ops@corp.example.com>", "<[REDACTED:email]>"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn overlapping_matches_redact_the_whole_secret_once() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        check(&format!("Authorization: Bearer {jwt}"), "Authorization: Bearer [REDACTED:jwt]");
        check(&format!("token={jwt}&x=1"), "token=[REDACTED:jwt]&x=1");
        check("a@b.io,c@d.io", "[REDACTED:email],[REDACTED:email]");
    }

    #[test]
    fn benign_text_is_untouched() {
        let benign = [
            "table warehouse.orders_daily not found",
            "2024-05-01T12:34:56.789Z scheduler heartbeat",
            "run 3f2b8c1e-9d4a-4e6f-8a7b-1c2d3e4f5a6b failed",
            "commit 9c3b1f0e5d7a2b4c6e8f0a1b3c5d7e9f1a3b5c7d",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "Lost task 3.0 in stage 12.0 (TID 345, executor 7): ExecutorLostFailure",
            "java.lang.OutOfMemoryError: Java heap space",
            "https://spark-history.internal:18080/api/v1/applications/app-20240501123456-0001",
            "max_tokens exceeded; prompt_tokens=512",
            "user@host",
            "password is wrong",
            "risk-assessment-daily-backfill-job-v2 retried",
            "Привет, мир: ключ не найден",
        ];
        let r = Redactor::default();
        for text in benign {
            assert!(matches!(r.redact(text), Cow::Borrowed(_)), "changed: {text} -> {}", r.redact(text));
        }
    }

    #[test]
    fn custom_patterns_add_rules_and_may_name_the_secret() {
        let r = Redactor::new(&[r"\bACME-[0-9]{6}\b".into(), r"customer_id=(?P<secret>\d+)".into()]).unwrap();
        assert_eq!(r.redact("badge ACME-123456 at gate"), "badge [REDACTED:custom] at gate");
        assert_eq!(r.redact("customer_id=42 churned"), "customer_id=[REDACTED:custom] churned");
        assert_eq!(r.redact("bob@example.com"), "[REDACTED:email]", "the defaults stay");
        // A pattern that can match nothing replaces nothing.
        let r = Redactor::new(&["x*".into()]).unwrap();
        assert_eq!(r.redact("abc"), "abc");
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = Redactor::new(&["ok".into(), "(unclosed".into()]).unwrap_err();
        let RedactError::Pattern { pattern, why } = &err;
        assert_eq!(pattern, "(unclosed");
        assert!(!why.is_empty());
        assert!(err.to_string().contains("`(unclosed`"), "{err}");
    }

    #[test]
    fn values_are_redacted_recursively_and_secret_fields_wholesale() {
        let input = json!({
            "query": "select 1 -- by bob@example.com",
            "config": {
                "db_password": "plain",
                "apiKey": 12345,
                "Client-Secret": "x",
                "Authorization": "Basic Zm9v",
                "token_ttl_seconds": 60,
                "access_token": null,
                "private_key": {"path": "/etc/key.pem"},
                "retries": 3,
                "enabled": true,
            },
            "steps": [{"log": "conn postgres://u:pw@db/x"}, 7, null],
            "alice@example.com": "owner",
        });
        let expected = json!({
            "query": "select 1 -- by [REDACTED:email]",
            "config": {
                "db_password": "[REDACTED:field]",
                "apiKey": "[REDACTED:field]",
                "Client-Secret": "[REDACTED:field]",
                "Authorization": "[REDACTED:field]",
                "token_ttl_seconds": "[REDACTED:field]",
                "access_token": null,
                "private_key": {"path": "/etc/key.pem"},
                "retries": 3,
                "enabled": true,
            },
            "steps": [{"log": "conn postgres://u:[REDACTED:url_credentials]@db/x"}, 7, null],
            "[REDACTED:email]": "owner",
        });
        assert_eq!(Redactor::default().redact_value(&input), expected);
    }

    #[test]
    fn large_outputs_are_redacted_in_one_piece() {
        let line = "2024-05-01T12:00:00Z INFO stage 3.0 finished, 1200 rows; owner ops@example.com\n";
        let text = line.repeat(2_000);
        let out = Redactor::default().redact(&text);
        assert_eq!(out.matches("[REDACTED:email]").count(), 2_000);
        assert!(!out.contains("ops@example.com"));
    }
}
