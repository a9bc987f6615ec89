//! A playbook file as written: YAML, every place a mistake can be reported with its line.
//!
//! Unknown keys are refused, so a misspelt `finding:` does not silently disable every
//! finding rule.

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    pub name: Spanned<String>,
    pub description: Spanned<String>,
    /// What the same investigation takes a person, for the hours-saved figure.
    pub manual_minutes: Spanned<u32>,
    #[serde(rename = "match")]
    pub matchers: Spanned<RawMatch>,
    pub steps: Vec<Spanned<RawStep>>,
    #[serde(default)]
    pub findings: Vec<Spanned<RawFinding>>,
    #[serde(default)]
    pub remediations: Vec<Spanned<RawRemediation>>,
}

/// Alertmanager matchers; all of them must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub labels: Vec<Spanned<String>>,
    #[serde(default)]
    pub annotations: Vec<Spanned<String>>,
}

/// One tool call. String values in `args` are templates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub id: String,
    /// `server__tool`, as the agent namespaces tools.
    pub tool: String,
    #[serde(default)]
    pub args: Map<String, Value>,
    /// Steps to wait for besides those the arguments refer to.
    #[serde(default)]
    pub needs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFinding {
    pub id: String,
    /// The step whose result the rule reads.
    pub step: String,
    /// `result` (default): the rule reads the step's result; `error`: the message of
    /// its failure (a table that does not exist is an answer too).
    #[serde(default)]
    pub on: Option<String>,
    /// Further steps whose results support the finding; the report cites them too.
    #[serde(default)]
    pub cite: Vec<String>,
    /// A dotted path into the result (`text`, `exceptions.0.message`); none: the whole
    /// result as JSON text.
    #[serde(default)]
    pub field: Option<String>,
    pub regex: String,
    /// The root-cause category this finding stands for (`missing_table`, ...).
    pub category: String,
    /// A template; `match` holds the regex's named groups.
    pub summary: String,
}

/// A known fix, proposed when all its findings were made.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemediation {
    pub id: String,
    pub when: Vec<String>,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub files: Vec<RawFileChange>,
}

/// One file change: `content` replaces the file, or `find` (a regex) and `replace`
/// edit it. All are templates except `find`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileChange {
    pub path: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub find: Option<String>,
    #[serde(default)]
    pub replace: Option<String>,
}
