//! The results for people (a table) and for programs (JSON), pure.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::ScenarioResult;
use super::score::{Score, Summary};

/// How the runs were made, for the header and the JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// `playbook` or `planner`.
    pub mode: &'static str,
    /// The model, when a planner ran.
    pub model: Option<String>,
    pub playbooks: String,
    pub repeat: usize,
}

/// One line per scenario, each failed run's reasons under it, then the overall line.
pub fn table(meta: &Meta, results: &[ScenarioResult], overall: &Summary) -> String {
    let mut out = String::new();
    let model = meta.model.as_deref().map(|m| format!(", model {m}")).unwrap_or_default();
    let _ = writeln!(
        out,
        "mode: {}{model}; playbooks: {}; {} run(s) per scenario\n",
        meta.mode, meta.playbooks, meta.repeat
    );
    let rows: Vec<[String; 10]> = results.iter().map(row).collect();
    let header = ["scenario", "system", "result", "expected", "got", "steps", "tokens", "cost", "p50", "p95"]
        .map(str::to_string);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 10]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Numbers align right, words left.
            if i >= 5 {
                let _ = write!(l, "{cell:>w$}  ");
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header));
    for (result, r) in results.iter().zip(&rows) {
        let _ = writeln!(out, "{}", line(r));
        let mut said: Vec<String> = Vec::new();
        for (n, run) in result.runs.iter().enumerate().filter(|(_, r)| !r.passed) {
            let why = reasons(result.expected.as_deref(), run);
            if !said.contains(&why) {
                let _ = writeln!(out, "    run {}: {why}", n + 1);
                said.push(why);
            }
        }
    }
    let scenarios_passed = results.iter().filter(|r| r.passed()).count();
    let o = overall;
    let _ = writeln!(
        out,
        "\noverall: {}/{} runs passed ({}), right cause in {}/{} ({}); {}/{} scenarios passed",
        o.passed,
        o.runs,
        percent(o.accuracy),
        o.correct_causes,
        o.runs,
        percent(o.cause_accuracy),
        scenarios_passed,
        results.len()
    );
    let _ = writeln!(
        out,
        "per run: {:.1} steps, {:.1} tool calls, {:.0} tokens, ${:.4}; total {} tokens, ${:.4}; time p50 {}, p95 {}",
        o.mean_steps,
        o.mean_tool_calls,
        o.mean_tokens,
        o.mean_cost_usd,
        o.total_tokens,
        o.total_cost_usd,
        duration(o.p50_millis),
        duration(o.p95_millis)
    );
    out
}

/// The line shown as a scenario finishes.
pub fn progress(position: usize, count: usize, result: &ScenarioResult) -> String {
    let width = count.to_string().len();
    format!(
        "[{position:>width$}/{count}] {} {} (expected {}, got {}) {}",
        verdict(result),
        result.name,
        cause(result.expected.as_deref()),
        got(&result.runs),
        duration(result.summary.p50_millis)
    )
}

/// Everything, for comparing models and runs by program.
pub fn json(meta: &Meta, results: &[ScenarioResult], overall: &Summary) -> Value {
    json!({
        "mode": meta.mode,
        "model": meta.model,
        "playbooks": meta.playbooks,
        "repeat": meta.repeat,
        "passed": results.iter().all(ScenarioResult::passed),
        "overall": overall,
        "scenarios": results,
    })
}

fn row(r: &ScenarioResult) -> [String; 10] {
    let s = &r.summary;
    [
        r.name.clone(),
        r.system.as_str().to_string(),
        verdict(r),
        cause(r.expected.as_deref()),
        got(&r.runs),
        format!("{:.1}", s.mean_steps),
        format!("{:.0}", s.mean_tokens),
        format!("${:.4}", s.mean_cost_usd),
        duration(s.p50_millis),
        duration(s.p95_millis),
    ]
}

/// `pass` or `FAIL`, with the count of passed runs when there were several.
fn verdict(r: &ScenarioResult) -> String {
    let word = if r.passed() { "pass" } else { "FAIL" };
    if r.runs.len() > 1 { format!("{word} {}/{}", r.summary.passed, r.runs.len()) } else { word.to_string() }
}

/// The causes the runs named, each once, in order.
fn got(runs: &[Score]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for r in runs {
        let c = cause(r.got.as_deref());
        if !seen.contains(&c) {
            seen.push(c);
        }
    }
    seen.join(",")
}

fn cause(c: Option<&str>) -> String {
    c.unwrap_or("-").to_string()
}

/// Why a run failed, in words.
fn reasons(expected: Option<&str>, run: &Score) -> String {
    if !run.investigated {
        return "nothing investigated: no playbook matches the alert and no planner is configured".into();
    }
    let mut why = Vec::new();
    if !run.correct_cause {
        why.push(format!("expected cause {}, got {}", cause(expected), cause(run.got.as_deref())));
    }
    if !run.missing.is_empty() {
        why.push(format!("not consulted: {}", run.missing.join(", ")));
    }
    if !run.uncited.is_empty() {
        why.push(format!("not cited: {}", run.uncited.join(", ")));
    }
    if !run.forbidden_drawn.is_empty() {
        why.push(format!("concluded what it must not: {}", run.forbidden_drawn.join(", ")));
    }
    why.join("; ")
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn duration(millis: Option<u64>) -> String {
    match millis {
        None => "-".into(),
        Some(ms) if ms < 1_000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::scenario::System;
    use crate::eval::score::summarize;

    fn run(got: Option<&str>, passed: bool, millis: u64) -> Score {
        Score {
            investigated: true,
            got: got.map(str::to_string),
            correct_cause: passed,
            consulted_ok: passed,
            missing: if passed { vec![] } else { vec!["presto__describe_table".into()] },
            cited_ok: true,
            uncited: vec![],
            forbidden_drawn: vec![],
            passed,
            steps: 0,
            tool_calls: 3,
            tokens: 0,
            cost_usd: 0.0,
            millis,
        }
    }

    fn result(name: &str, runs: Vec<Score>) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            file: format!("{name}.yaml"),
            system: System::Cross,
            expected: Some("missing_table".into()),
            summary: summarize(&runs),
            runs,
        }
    }

    #[test]
    fn the_table_shows_each_scenario_why_runs_failed_and_the_overall_line() {
        let meta = Meta { mode: "playbook", model: None, playbooks: "playbooks".into(), repeat: 2 };
        let results = vec![
            result("good", vec![run(Some("missing_table"), true, 3), run(Some("missing_table"), true, 5)]),
            result("flaky-one", vec![run(Some("missing_table"), true, 4), run(None, false, 1_500)]),
        ];
        let text = table(&meta, &results, &crate::eval::overall(&results));
        let expected = "\
mode: playbook; playbooks: playbooks; 2 run(s) per scenario

scenario   system  result    expected       got              steps  tokens     cost   p50    p95
good       cross   pass 2/2  missing_table  missing_table      0.0       0  $0.0000  3 ms   5 ms
flaky-one  cross   FAIL 1/2  missing_table  missing_table,-    0.0       0  $0.0000  4 ms  1.5 s
    run 2: expected cause missing_table, got -; not consulted: presto__describe_table

overall: 3/4 runs passed (75.0%), right cause in 3/4 (75.0%); 1/2 scenarios passed
per run: 0.0 steps, 3.0 tool calls, 0 tokens, $0.0000; total 0 tokens, $0.0000; time p50 4 ms, p95 1.5 s
";
        assert_eq!(text, expected);
        assert_eq!(
            progress(2, 12, &results[1]),
            "[ 2/12] FAIL 1/2 flaky-one (expected missing_table, got missing_table,-) 4 ms"
        );

        let v = json(&meta, &results, &crate::eval::overall(&results));
        assert_eq!(v["passed"], false);
        assert_eq!(v["overall"]["runs"], 4);
        assert_eq!(v["scenarios"][1]["runs"][1]["missing"][0], "presto__describe_table");
        assert_eq!(v["scenarios"][0]["system"], "cross");
    }
}
