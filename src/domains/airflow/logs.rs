//! Renders an Airflow 3 task log (a list of structured events) for a model to read.
//!
//! The exception comes first, because that is what an investigation needs and what a
//! cap must never cut; the events follow in order, one line each, with the middle cut
//! when they exceed the head and tail sizes (the start shows what the task set out to
//! do, the end shows how it died). This module does no IO.

use std::fmt::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Frames shown per exception: the outermost few and the innermost ones, where the
/// error was raised.
const OUTER_FRAMES: usize = 2;
const INNER_FRAMES: usize = 8;

/// One exception of the failure, outermost first when chained (`is_cause`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogException {
    pub exc_type: String,
    pub exc_value: String,
    /// `file:line in function`, innermost last.
    pub frames: Vec<String>,
}

/// A log as rendered for the tool's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RenderedLog {
    /// The exceptions the log carries (from `error_detail`), in the order Airflow gave.
    pub exceptions: Vec<LogException>,
    /// The exception(s) first, then one line per event.
    pub text: String,
    pub events_total: usize,
    pub events_shown: usize,
    /// What the caps cut, when they cut something.
    pub truncated: Option<String>,
}

/// Head and tail sizes in characters of the events part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub head_chars: usize,
    pub tail_chars: usize,
}

/// Renders `events` (the `content` of a JSON log answer).
pub fn render(events: &[Value], caps: Caps) -> RenderedLog {
    let exceptions: Vec<LogException> = events.iter().flat_map(exceptions_of).collect();
    let lines: Vec<String> = events.iter().map(event_line).collect();

    let mut text = String::new();
    for (i, exc) in exceptions.iter().enumerate() {
        let lead = if i == 0 { "EXCEPTION" } else { "  during handling / caused by" };
        let _ = writeln!(text, "{lead} {}: {}", exc.exc_type, exc.exc_value);
        for frame in &exc.frames {
            let _ = writeln!(text, "    at {frame}");
        }
    }
    if exceptions.is_empty() {
        text.push_str("(no exception in this log)\n");
    }

    let (shown, truncated) = cap_lines(&lines, caps);
    let events_shown = shown.len() - usize::from(truncated.is_some());
    let _ = writeln!(text, "EVENTS ({events_shown} of {}):", lines.len());
    for line in &shown {
        text.push_str(line);
        text.push('\n');
    }
    RenderedLog { events_shown, exceptions, text, events_total: lines.len(), truncated }
}

/// Keeps whole lines from the start up to `head_chars` and from the end up to
/// `tail_chars`; a marker line says what was left out.
fn cap_lines(lines: &[String], caps: Caps) -> (Vec<String>, Option<String>) {
    let total: usize = lines.iter().map(|l| l.chars().count() + 1).sum();
    if total <= caps.head_chars + caps.tail_chars {
        return (lines.to_vec(), None);
    }
    let mut head = 0;
    let mut used = 0;
    while head < lines.len() && used + lines[head].chars().count() < caps.head_chars {
        used += lines[head].chars().count() + 1;
        head += 1;
    }
    let mut tail_start = lines.len();
    let mut used = 0;
    while tail_start > head && used + lines[tail_start - 1].chars().count() < caps.tail_chars {
        used += lines[tail_start - 1].chars().count() + 1;
        tail_start -= 1;
    }
    let cut = &lines[head..tail_start];
    let cut_chars: usize = cut.iter().map(|l| l.chars().count() + 1).sum();
    let note = format!(
        "cut {} of {} events ({cut_chars} characters) in the middle; head {} and tail {} characters kept",
        cut.len(),
        lines.len(),
        caps.head_chars,
        caps.tail_chars
    );
    let mut shown = lines[..head].to_vec();
    shown.push(format!("[… {note} …]"));
    shown.extend_from_slice(&lines[tail_start..]);
    (shown, Some(note))
}

/// The exceptions of one event's `error_detail` (a list, or one object).
fn exceptions_of(event: &Value) -> Vec<LogException> {
    let Some(detail) = event.get("error_detail") else {
        return Vec::new();
    };
    let items: Vec<&Value> = match detail {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![detail],
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(|item| LogException {
            exc_type: string_of(item.get("exc_type")).unwrap_or_else(|| "Exception".to_string()),
            exc_value: string_of(item.get("exc_value")).unwrap_or_default(),
            frames: frames_of(item.get("frames")),
        })
        .collect()
}

fn frames_of(frames: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(frames)) = frames else {
        return Vec::new();
    };
    let all: Vec<String> = frames
        .iter()
        .map(|f| {
            let file = string_of(f.get("filename")).unwrap_or_else(|| "?".to_string());
            let line = f.get("lineno").map(Value::to_string).unwrap_or_else(|| "?".to_string());
            let name = string_of(f.get("name")).unwrap_or_else(|| "?".to_string());
            format!("{file}:{line} in {name}")
        })
        .collect();
    if all.len() <= OUTER_FRAMES + INNER_FRAMES {
        return all;
    }
    let mut kept = all[..OUTER_FRAMES].to_vec();
    kept.push(format!("… {} frames …", all.len() - OUTER_FRAMES - INNER_FRAMES));
    kept.extend_from_slice(&all[all.len() - INNER_FRAMES..]);
    kept
}

/// `time LEVEL event [logger] key=value …`; the exception is rendered apart.
fn event_line(event: &Value) -> String {
    let Value::Object(map) = event else {
        return string_of(Some(event)).unwrap_or_default();
    };
    let mut line = String::new();
    let mut push = |part: &str| {
        if !part.is_empty() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(part);
        }
    };
    push(&string_of(map.get("timestamp")).unwrap_or_default());
    push(&string_of(map.get("level")).map(|l| l.to_uppercase()).unwrap_or_default());
    push(&string_of(map.get("event")).unwrap_or_default());
    if let Some(logger) = string_of(map.get("logger")) {
        push(&format!("[{logger}]"));
    }
    for (key, value) in extras(map) {
        push(&format!("{key}={value}"));
    }
    if map.contains_key("error_detail") {
        push("(exception above)");
    }
    line
}

/// The fields of an event worth a reader's attention. Left out: what is shown apart,
/// the task's identity (the same on every event and known to the caller) and the
/// location in Airflow's own code.
fn extras(map: &Map<String, Value>) -> impl Iterator<Item = (&String, String)> {
    const LEFT_OUT: [&str; 13] = [
        "timestamp",
        "level",
        "event",
        "logger",
        "error_detail",
        "dag_id",
        "run_id",
        "task_id",
        "ti_id",
        "try_number",
        "map_index",
        "filename",
        "lineno",
    ];
    map.iter()
        .filter(|(k, v)| !LEFT_OUT.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k, string_of(Some(v)).unwrap_or_default()))
}

/// A string as itself, anything else as compact JSON.
fn string_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const WIDE: Caps = Caps { head_chars: 10_000, tail_chars: 10_000 };

    fn failure_log() -> Vec<Value> {
        vec![
            json!({"timestamp": "2026-11-26T18:50:01.100Z", "level": "info", "event": "DAG bundles loaded", "logger": "airflow.dag_processing"}),
            json!({"timestamp": "2026-11-26T18:50:01.200Z", "level": "info", "event": "loading 42 rows", "logger": "task.stdout"}),
            json!({
                "timestamp": "2026-11-26T18:50:01.300Z", "level": "error", "event": "Task failed with exception",
                "logger": "task",
                "error_detail": [{
                    "exc_type": "ProgrammingError", "exc_value": "Table warehouse.orders_daily not found",
                    "frames": [
                        {"filename": "/venv/task_runner.py", "lineno": 900, "name": "run"},
                        {"filename": "/dags/orders_daily_load.py", "lineno": 18, "name": "execute"},
                    ],
                    "is_cause": false,
                }],
            }),
            json!("a plain string line"),
        ]
    }

    #[test]
    fn the_exception_comes_first_then_every_event() {
        let log = render(&failure_log(), WIDE);
        let expected = "\
EXCEPTION ProgrammingError: Table warehouse.orders_daily not found
    at /venv/task_runner.py:900 in run
    at /dags/orders_daily_load.py:18 in execute
EVENTS (4 of 4):
2026-11-26T18:50:01.100Z INFO DAG bundles loaded [airflow.dag_processing]
2026-11-26T18:50:01.200Z INFO loading 42 rows [task.stdout]
2026-11-26T18:50:01.300Z ERROR Task failed with exception [task] (exception above)
a plain string line
";
        assert_eq!(log.text, expected);
        assert_eq!(log.exceptions.len(), 1);
        assert_eq!(log.truncated, None);
        assert_eq!((log.events_total, log.events_shown), (4, 4));
    }

    #[test]
    fn extra_fields_are_shown_as_key_values() {
        let line = event_line(&json!({
            "event": "x", "level": "warning", "try_number": 2, "pid": null, "host": "h", "filename": "t.py", "rows": 3,
        }));
        assert_eq!(line, "WARNING x host=h rows=3");
    }

    #[test]
    fn the_middle_is_cut_and_the_cut_is_named() {
        let mut events: Vec<Value> = (0..100).map(|i| json!({"event": format!("line {i:03}")})).collect();
        events.extend(failure_log());
        let log = render(&events, Caps { head_chars: 30, tail_chars: 200 });
        assert!(log.text.starts_with("EXCEPTION ProgrammingError: Table warehouse.orders_daily not found\n"));
        assert!(
            log.text.contains("EVENTS (6 of 104):\nline 000\nline 001\nline 002\n[… cut 98 of 104 events"),
            "{}",
            log.text
        );
        assert!(log.text.contains("a plain string line\n"));
        let note = log.truncated.unwrap();
        assert!(note.starts_with("cut ") && note.contains("of 104 events"), "{note}");
        assert!(log.events_shown < 104);
    }

    #[test]
    fn long_tracebacks_keep_the_outer_and_the_inner_frames() {
        let frames: Vec<Value> = (0..30).map(|i| json!({"filename": "f.py", "lineno": i, "name": "g"})).collect();
        let shown = frames_of(Some(&Value::Array(frames)));
        assert_eq!(shown.len(), OUTER_FRAMES + 1 + INNER_FRAMES);
        assert_eq!(shown[0], "f.py:0 in g");
        assert_eq!(shown[OUTER_FRAMES], "… 20 frames …");
        assert_eq!(shown.last().map(String::as_str), Some("f.py:29 in g"));
    }

    #[test]
    fn a_log_without_exception_says_so() {
        let log = render(&[json!({"event": "done", "level": "info"})], WIDE);
        assert_eq!(log.text, "(no exception in this log)\nEVENTS (1 of 1):\nINFO done\n");
    }
}
