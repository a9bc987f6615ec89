//! Alertmanager matchers: `name op "value"` with `=`, `!=`, `=~` and `!~`.
//!
//! The same syntax as Alertmanager's routes and silences, so a playbook's matchers can
//! be copied from a route. Regexes are anchored at both ends, as Alertmanager anchors
//! them, and an absent label matches as the empty string.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("`{0}` is not a matcher; write name=\"value\" with one of =, !=, =~, !~")]
    Syntax(String),
    #[error("`{0}` is not a label name (letters, digits and _, not starting with a digit)")]
    BadName(String),
    #[error("the value of `{matcher}` is not a valid string: {why}")]
    BadValue { matcher: String, why: String },
    #[error("the regex in `{matcher}` does not compile: {why}")]
    BadRegex { matcher: String, why: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    regex: Option<Regex>,
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

impl Matcher {
    /// Parses one matcher, for example `severity=~"critical|page"` or `team!=data`.
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        let text = text.trim();
        let at = text.find(['=', '!']).ok_or_else(|| MatcherError::Syntax(text.into()))?;
        let name = text[..at].trim();
        let rest = &text[at..];
        // Longest operator first: `!=` and `=~` before `=`.
        let (op, value) = [("=~", Op::Regex), ("!~", Op::NotRegex), ("!=", Op::NotEqual), ("=", Op::Equal)]
            .into_iter()
            .find_map(|(token, op)| rest.strip_prefix(token).map(|v| (op, v.trim())))
            .ok_or_else(|| MatcherError::Syntax(text.into()))?;
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(MatcherError::BadName(name.into()));
        }
        let value = if value.starts_with('"') {
            // Alertmanager's quoted values use Go's escapes, which JSON's string syntax covers.
            serde_json::from_str::<String>(value)
                .map_err(|e| MatcherError::BadValue { matcher: text.into(), why: e.to_string() })?
        } else if value.contains(['"', ',', '{', '}']) {
            return Err(MatcherError::BadValue { matcher: text.into(), why: "quote a value like this one".into() });
        } else {
            value.to_string()
        };
        let regex = match op {
            Op::Regex | Op::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| MatcherError::BadRegex { matcher: text.into(), why: e.to_string() })?,
            ),
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Matcher { name: name.into(), op, value, regex })
    }

    /// Whether `values` (labels or annotations) satisfy this matcher.
    pub fn matches(&self, values: &BTreeMap<String, String>) -> bool {
        let actual = values.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (Op::Equal, _) => actual == self.value,
            (Op::NotEqual, _) => actual != self.value,
            (Op::Regex, Some(re)) => re.is_match(actual),
            (Op::NotRegex, Some(re)) => !re.is_match(actual),
            // parse() compiles a regex for both regex operators.
            (Op::Regex | Op::NotRegex, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn operators_match_as_in_alertmanager() {
        let l = labels(&[("alertname", "AirflowTaskFailed"), ("severity", "page"), ("team", "data")]);
        let cases = [
            (r#"alertname="AirflowTaskFailed""#, true),
            (r#"alertname = "AirflowTaskFailed""#, true),
            ("alertname=AirflowTaskFailed", true),
            (r#"alertname="Airflow""#, false),
            (r#"alertname=~"Airflow.*""#, true),
            // Anchored: a substring is not enough.
            (r#"alertname=~"Task""#, false),
            (r#"alertname!~"Spark.*""#, true),
            (r#"severity=~"critical|page""#, true),
            (r#"team!="data""#, false),
            // An absent label is the empty string.
            (r#"dag_id="""#, true),
            (r#"dag_id!="""#, false),
            (r#"dag_id=~".+""#, false),
        ];
        for (text, expected) in cases {
            let m = Matcher::parse(text).unwrap();
            assert_eq!(m.matches(&l), expected, "{text}");
        }
    }

    #[test]
    fn quoted_values_take_escapes() {
        let m = Matcher::parse(r#"msg="a \"quoted\" word""#).unwrap();
        assert_eq!(m.value, r#"a "quoted" word"#);
    }

    #[test]
    fn bad_matchers_say_what_is_wrong() {
        assert!(matches!(Matcher::parse("alertname"), Err(MatcherError::Syntax(_))));
        assert!(matches!(Matcher::parse(r#"9lives="x""#), Err(MatcherError::BadName(_))));
        assert!(matches!(Matcher::parse(r#"a-b="x""#), Err(MatcherError::BadName(_))));
        assert!(matches!(Matcher::parse(r#"a=~"(""#), Err(MatcherError::BadRegex { .. })));
        assert!(matches!(Matcher::parse(r#"a="unterminated"#), Err(MatcherError::BadValue { .. })));
        assert!(matches!(Matcher::parse(r#"a=x,b"#), Err(MatcherError::BadValue { .. })));
    }
}
