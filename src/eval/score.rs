//! Scoring one run of a scenario against what it expects, and summing runs up (pure).

use serde::Serialize;

use super::scenario::Expect;
use crate::agent::inquiry::Outcome;

/// How one run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// False when no playbook matched the alert and no planner was configured.
    pub investigated: bool,
    /// The root cause the report named.
    pub got: Option<String>,
    pub correct_cause: bool,
    /// Every tool in `expect.consulted` was called successfully.
    pub consulted_ok: bool,
    /// Those that were not.
    pub missing: Vec<String>,
    /// Every tool in `expect.cited` is cited by the report's evidence.
    pub cited_ok: bool,
    pub uncited: Vec<String>,
    /// The entries of `expect.not_conclude` the report drew anyway.
    pub forbidden_drawn: Vec<String>,
    pub passed: bool,
    /// Model turns.
    pub steps: u32,
    pub tool_calls: u32,
    /// Prompt and completion tokens.
    pub tokens: u64,
    pub cost_usd: f64,
    pub millis: u64,
}

/// Scores a run: `outcome` is what the inquiry returned (`None`: it had nothing to
/// investigate with), `millis` the run's wall time. `categories` are the root-cause
/// categories a report may name: an entry of `expect.not_conclude` that is one of them
/// is held against the root cause only (a summary may well say it was ruled out); any
/// other entry is a phrase, drawn when the summary says it.
pub fn score(expect: &Expect, outcome: Option<&Outcome>, millis: u64, categories: &[String]) -> Score {
    let Some(outcome) = outcome else {
        return Score {
            investigated: false,
            got: None,
            correct_cause: false,
            consulted_ok: expect.consulted.is_empty(),
            missing: expect.consulted.clone(),
            cited_ok: expect.cited.is_empty(),
            uncited: expect.cited.clone(),
            forbidden_drawn: Vec::new(),
            passed: false,
            steps: 0,
            tool_calls: 0,
            tokens: 0,
            cost_usd: 0.0,
            millis,
        };
    };
    let report = &outcome.report;
    let got = report.root_cause.clone();
    let correct_cause = got == expect.root_cause;
    let succeeded = |tool: &str| outcome.calls.iter().any(|c| c.tool_name() == tool && c.result.is_ok());
    let missing: Vec<String> = expect.consulted.iter().filter(|t| !succeeded(t)).cloned().collect();
    let cited_tools: Vec<String> = report
        .evidence
        .iter()
        .flat_map(|e| e.calls.iter())
        .filter_map(|id| outcome.calls.iter().find(|c| &c.id == id))
        .map(|c| c.tool_name())
        .collect();
    let uncited: Vec<String> = expect.cited.iter().filter(|t| !cited_tools.contains(t)).cloned().collect();
    let cause = got.as_deref().unwrap_or_default().to_lowercase();
    let summary = report.summary.to_lowercase();
    let forbidden_drawn: Vec<String> = expect
        .not_conclude
        .iter()
        .filter(|entry| {
            let e = entry.to_lowercase();
            cause == e || (!categories.contains(entry) && says(&summary, &e))
        })
        .cloned()
        .collect();
    let passed = correct_cause && missing.is_empty() && uncited.is_empty() && forbidden_drawn.is_empty();
    let usage = &report.usage;
    Score {
        investigated: true,
        got,
        correct_cause,
        consulted_ok: missing.is_empty(),
        missing,
        cited_ok: uncited.is_empty(),
        uncited,
        forbidden_drawn,
        passed,
        steps: usage.model_turns,
        tool_calls: usage.tool_calls,
        tokens: usage.prompt_tokens + usage.completion_tokens,
        cost_usd: usage.cost_usd,
        millis,
    }
}

/// Whether `text` holds `phrase` as whole words: `other` is not in `another`.
fn says(text: &str, phrase: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    !phrase.is_empty()
        && text
            .match_indices(phrase)
            .any(|(at, _)| !word(text[..at].chars().next_back()) && !word(text[at + phrase.len()..].chars().next()))
}

/// Runs summed up: per scenario, or over all of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub passed: usize,
    /// Runs that named the expected cause (whether or not they passed the rest).
    pub correct_causes: usize,
    /// `passed / runs`; 0 without runs.
    pub accuracy: f64,
    pub cause_accuracy: f64,
    pub mean_steps: f64,
    pub mean_tool_calls: f64,
    pub mean_tokens: f64,
    pub total_tokens: u64,
    pub mean_cost_usd: f64,
    pub total_cost_usd: f64,
    /// Nearest-rank percentiles of the runs' wall time.
    pub p50_millis: Option<u64>,
    pub p95_millis: Option<u64>,
}

pub fn summarize<'a>(scores: impl IntoIterator<Item = &'a Score>) -> Summary {
    let scores: Vec<&Score> = scores.into_iter().collect();
    let runs = scores.len();
    let share = |n: usize| if runs == 0 { 0.0 } else { n as f64 / runs as f64 };
    let mean = |total: f64| if runs == 0 { 0.0 } else { total / runs as f64 };
    let passed = scores.iter().filter(|s| s.passed).count();
    let correct_causes = scores.iter().filter(|s| s.correct_cause).count();
    let total_tokens: u64 = scores.iter().map(|s| s.tokens).sum();
    let total_cost_usd: f64 = scores.iter().map(|s| s.cost_usd).sum();
    let mut millis: Vec<u64> = scores.iter().map(|s| s.millis).collect();
    millis.sort_unstable();
    Summary {
        runs,
        passed,
        correct_causes,
        accuracy: share(passed),
        cause_accuracy: share(correct_causes),
        mean_steps: mean(scores.iter().map(|s| f64::from(s.steps)).sum()),
        mean_tool_calls: mean(scores.iter().map(|s| f64::from(s.tool_calls)).sum()),
        mean_tokens: mean(total_tokens as f64),
        total_tokens,
        mean_cost_usd: mean(total_cost_usd),
        total_cost_usd,
        p50_millis: percentile(&millis, 50.0),
        p95_millis: percentile(&millis, 95.0),
    }
}

/// The nearest-rank `p`th percentile of `sorted` (ascending): the smallest value with
/// at least `p`% of the values at or below it. `None` for no values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // p * n first: 95 * 20 / 100 is exactly 19, where 0.95 * 20 need not be.
    let rank = (p * sorted.len() as f64 / 100.0).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::agent::inquiry::CallRecord;
    use crate::agent::report::{Confidence, Evidence, Mode, Report, Usage};

    fn call(id: &str, tool: &str, ok: bool) -> CallRecord {
        let (server, tool) = tool.split_once("__").unwrap();
        CallRecord {
            id: id.into(),
            server: server.into(),
            tool: tool.into(),
            args: Map::new(),
            result: if ok { Ok(json!({})) } else { Err("down".into()) },
            millis: 1,
            by: "playbook".into(),
        }
    }

    fn outcome(cause: Option<&str>, summary: &str, calls: Vec<CallRecord>, cited: &[&str]) -> Outcome {
        Outcome {
            events: Vec::new(),
            calls,
            report: Report {
                mode: Mode::Planner,
                playbook: None,
                summary: summary.into(),
                root_cause: cause.map(str::to_string),
                evidence: vec![Evidence { claim: "c".into(), calls: cited.iter().map(|c| c.to_string()).collect() }],
                ruled_out: Vec::new(),
                remediation: Vec::new(),
                confidence: Confidence::High,
                suspicious: Vec::new(),
                stopped_by: None,
                notes: Vec::new(),
                usage: Usage {
                    tool_calls: 2,
                    model_turns: 3,
                    prompt_tokens: 100,
                    completion_tokens: 20,
                    cost_usd: 0.5,
                    millis: 9,
                },
                manual_minutes: None,
            },
        }
    }

    fn categories() -> Vec<String> {
        ["out_of_memory", "upstream_failure", "other"].map(String::from).to_vec()
    }

    #[test]
    fn phrases_are_whole_words() {
        assert!(says("the upstream dag failed", "upstream dag"));
        assert!(says("other", "other"));
        assert!(!says("another task", "other"));
        assert!(!says("upstream dags", "upstream dag"));
        assert!(!says("anything", ""));
    }

    fn expect() -> Expect {
        Expect {
            root_cause: Some("out_of_memory".into()),
            consulted: vec!["airflow__get_task_log".into(), "airflow__list_dag_runs".into()],
            cited: vec!["airflow__get_task_log".into()],
            not_conclude: vec!["upstream_failure".into(), "upstream DAG".into(), "other".into()],
        }
    }

    #[test]
    fn a_run_is_scored_on_cause_calls_citations_and_what_it_must_not_conclude() {
        let calls = || vec![call("c1", "airflow__get_task_log", true), call("c2", "airflow__list_dag_runs", false)];
        // (cause, summary, cited) -> (correct_cause, missing, uncited, forbidden_drawn, passed)
        type Case<'a> = (Option<&'a str>, &'a str, &'a [&'a str], bool, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                Some("out_of_memory"),
                "the worker ran out of memory",
                &["c1"],
                true,
                vec!["airflow__list_dag_runs"],
                vec![],
                vec![],
            ),
            (
                Some("out_of_memory"),
                "oom",
                &["c2"],
                true,
                vec!["airflow__list_dag_runs"],
                vec!["airflow__get_task_log"],
                vec![],
            ),
            (
                Some("upstream_failure"),
                "the upstream DAG failed",
                &["c1"],
                false,
                vec!["airflow__list_dag_runs"],
                vec![],
                vec!["upstream_failure", "upstream DAG"],
            ),
            (None, "no cause found", &[], false, vec!["airflow__list_dag_runs"], vec!["airflow__get_task_log"], vec![]),
        ];
        for (cause, summary, cited, correct, missing, uncited, drawn) in cases {
            let s = score(&expect(), Some(&outcome(cause, summary, calls(), cited)), 42, &categories());
            assert_eq!(s.correct_cause, correct, "{cause:?}");
            assert_eq!(s.missing, missing, "{cause:?}");
            assert_eq!(s.uncited, uncited, "{cause:?}");
            assert_eq!(s.forbidden_drawn, drawn, "{cause:?}");
            assert!(!s.passed, "a failed consult fails the run");
        }

        let ok = vec![call("c1", "airflow__get_task_log", true), call("c2", "airflow__list_dag_runs", true)];
        // `other` is a category: the summary may use the word.
        let summary = "the worker ran out of memory; other tasks and another job were fine";
        let s = score(&expect(), Some(&outcome(Some("out_of_memory"), summary, ok, &["c1"])), 42, &categories());
        assert_eq!(
            s,
            Score {
                investigated: true,
                got: Some("out_of_memory".into()),
                correct_cause: true,
                consulted_ok: true,
                missing: vec![],
                cited_ok: true,
                uncited: vec![],
                forbidden_drawn: vec![],
                passed: true,
                steps: 3,
                tool_calls: 2,
                tokens: 120,
                cost_usd: 0.5,
                millis: 42,
            }
        );
    }

    #[test]
    fn nothing_investigated_fails_and_an_expected_no_cause_can_pass() {
        let s = score(&expect(), None, 5, &categories());
        assert!(!s.investigated && !s.passed && !s.correct_cause);
        assert_eq!(s.missing.len(), 2);

        let none = Expect { root_cause: None, ..Expect::default() };
        assert!(score(&none, Some(&outcome(None, "nothing found", vec![], &[])), 1, &[]).passed);
        assert!(!score(&none, Some(&outcome(Some("x"), "x", vec![], &[])), 1, &[]).passed);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let cases: [(&[u64], f64, Option<u64>); 7] = [
            (&[], 50.0, None),
            (&[7], 50.0, Some(7)),
            (&[7], 95.0, Some(7)),
            (&[1, 2, 3, 4], 50.0, Some(2)),
            (&[1, 2, 3, 4], 95.0, Some(4)),
            (&[15, 20, 35, 40, 50], 30.0, Some(20)),
            (&(1..=20).collect::<Vec<u64>>(), 95.0, Some(19)),
        ];
        for (values, p, want) in cases {
            assert_eq!(percentile(values, p), want, "{values:?} p{p}");
        }
    }

    #[test]
    fn a_summary_counts_passes_causes_and_means() {
        let run = |passed, correct, millis, cost| Score {
            investigated: true,
            got: None,
            correct_cause: correct,
            consulted_ok: true,
            missing: vec![],
            cited_ok: true,
            uncited: vec![],
            forbidden_drawn: vec![],
            passed,
            steps: 2,
            tool_calls: 4,
            tokens: 100,
            cost_usd: cost,
            millis,
        };
        let runs = [
            run(true, true, 30, 0.25),
            run(false, true, 10, 0.25),
            run(false, false, 20, 0.5),
            run(true, true, 40, 0.0),
        ];
        let s = summarize(&runs);
        assert_eq!((s.runs, s.passed, s.correct_causes), (4, 2, 3));
        assert_eq!((s.accuracy, s.cause_accuracy), (0.5, 0.75));
        assert_eq!((s.mean_steps, s.mean_tool_calls, s.mean_tokens, s.total_tokens), (2.0, 4.0, 100.0, 400));
        assert_eq!((s.total_cost_usd, s.mean_cost_usd), (1.0, 0.25));
        assert_eq!((s.p50_millis, s.p95_millis), (Some(20), Some(40)));
        assert_eq!(summarize(&[]).accuracy, 0.0);
    }
}
