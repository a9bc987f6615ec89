//! The report an investigation ends with: what happened, why, and the tool calls each
//! claim rests on. Stored as JSON in the event log (`report`), rendered as Markdown
//! for people. Building it is the investigation's business; this module only holds
//! its shape and renders it (pure).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the report was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The playbook's steps and finding rules alone (no LLM configured).
    Playbook,
    /// The LLM planner, starting from the playbook's results when one matched.
    Planner,
    /// The planner failed or timed out; the playbook's results stand.
    PlaybookFallback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// One claim and the tool calls (their `call_id`s) that show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub claim: String,
    pub calls: Vec<String>,
}

/// A cause considered and rejected, with the calls that rule it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuledOut {
    pub hypothesis: String,
    pub why: String,
    #[serde(default)]
    pub calls: Vec<String>,
}

/// A change to propose (a pull request draft, later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remedy {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The playbook remediation it comes from, if any.
    #[serde(default)]
    pub remediation: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    /// The file changes a pull request would make (playbook remediations only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<crate::playbook::FileEdit>,
}

/// Text in a tool's output that reads like instructions to the agent. It was handed
/// to the model as data only; the report points it out to people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspicious {
    pub call: String,
    pub quote: String,
    pub why: String,
}

/// What the investigation cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tool calls made.
    pub tool_calls: u32,
    /// Model turns taken.
    pub model_turns: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mode: Mode,
    pub playbook: Option<String>,
    pub summary: String,
    /// The root-cause category (`missing_table`, `executor_oom`, ...), when one was found.
    pub root_cause: Option<String>,
    pub evidence: Vec<Evidence>,
    pub ruled_out: Vec<RuledOut>,
    pub remediation: Vec<Remedy>,
    pub confidence: Confidence,
    pub suspicious: Vec<Suspicious>,
    /// The budget that ended the investigation early (`steps`, `tokens`, `cost`, `time`).
    pub stopped_by: Option<String>,
    /// Things a reader should know about how the report came about.
    pub notes: Vec<String>,
    pub usage: Usage,
    /// What a person would have spent, from the playbook.
    pub manual_minutes: Option<u32>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The report for people. Call ids appear as `[c3]` so a reader can find the call
    /// in the investigation's timeline.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## Investigation report\n");
        let _ = writeln!(md, "{}\n", self.summary);
        if let Some(cause) = &self.root_cause {
            let _ = writeln!(md, "**Root cause:** `{cause}` (confidence: {:?})\n", self.confidence);
        } else {
            let _ = writeln!(md, "**Root cause:** not determined (confidence: {:?})\n", self.confidence);
        }
        if let Some(budget) = &self.stopped_by {
            let _ = writeln!(md, "> Stopped early: the {budget} budget ran out. This report is partial.\n");
        }
        if !self.evidence.is_empty() {
            let _ = writeln!(md, "### Evidence\n");
            for e in &self.evidence {
                let _ = writeln!(md, "- {} {}", e.claim, cites(&e.calls));
            }
            md.push('\n');
        }
        if !self.ruled_out.is_empty() {
            let _ = writeln!(md, "### Ruled out\n");
            for r in &self.ruled_out {
                let _ = writeln!(md, "- {}: {} {}", r.hypothesis, r.why, cites(&r.calls));
            }
            md.push('\n');
        }
        if !self.remediation.is_empty() {
            let _ = writeln!(md, "### Proposed remediation\n");
            for r in &self.remediation {
                let _ = write!(md, "- **{}**", r.title);
                if let Some(d) = &r.description {
                    let _ = write!(md, ": {d}");
                }
                if !r.files.is_empty() {
                    let _ = write!(md, " (files: {})", r.files.join(", "));
                }
                md.push('\n');
            }
            md.push('\n');
        }
        if !self.suspicious.is_empty() {
            let _ = writeln!(md, "### Suspicious tool output\n");
            for s in &self.suspicious {
                let _ = writeln!(md, "- [{}] {}: \"{}\"", s.call, s.why, s.quote);
            }
            md.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(md, "_{n}_\n");
        }
        let u = &self.usage;
        let _ = write!(
            md,
            "---\n{:?} mode; {} tool calls, {} model turns, {} tokens, ${:.4}, {:.1} s",
            self.mode,
            u.tool_calls,
            u.model_turns,
            u.prompt_tokens + u.completion_tokens,
            u.cost_usd,
            u.millis as f64 / 1000.0
        );
        if let Some(m) = self.manual_minutes {
            let _ = write!(md, "; about {m} minutes of manual work");
        }
        md.push('\n');
        md
    }
}

fn cites(calls: &[String]) -> String {
    calls.iter().map(|c| format!("[{c}]")).collect::<Vec<_>>().join("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cites_calls_and_says_when_a_budget_stopped_it() {
        let r = Report {
            mode: Mode::Planner,
            playbook: Some("airflow-task-failure".into()),
            summary: "The task failed because a table is missing.".into(),
            root_cause: Some("missing_table".into()),
            evidence: vec![Evidence { claim: "The log says the table is missing".into(), calls: vec!["c1".into()] }],
            ruled_out: vec![RuledOut {
                hypothesis: "upstream failure".into(),
                why: "upstream succeeded".into(),
                calls: vec!["c2".into()],
            }],
            remediation: vec![],
            confidence: Confidence::High,
            suspicious: vec![],
            stopped_by: Some("tokens".into()),
            notes: vec![],
            usage: Usage::default(),
            manual_minutes: Some(45),
        };
        let md = r.to_markdown();
        assert!(md.contains("The log says the table is missing [c1]"), "{md}");
        assert!(md.contains("upstream failure: upstream succeeded [c2]"), "{md}");
        assert!(md.contains("the tokens budget ran out"), "{md}");
        assert!(md.contains("`missing_table`"), "{md}");
        let back: Report = serde_json::from_value(r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
