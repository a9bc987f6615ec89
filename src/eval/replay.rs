//! A [`ToolCaller`] that answers from a scenario's recorded responses, so an
//! investigation runs against the backend state as it was, with no server up.
//!
//! It keeps no record of its own: the inquiry's recorder numbers and keeps the calls.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::scenario::Recorded;
use crate::playbook::ToolCaller;

/// Answers calls from recorded responses.
pub struct Replay<'a> {
    responses: &'a [Recorded],
}

impl<'a> Replay<'a> {
    pub fn new(responses: &'a [Recorded]) -> Replay<'a> {
        Replay { responses }
    }
}

#[async_trait]
impl ToolCaller for Replay<'_> {
    async fn call(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, String> {
        let name = format!("{server}__{tool}");
        let answer = answer(self.responses, &name, &args);
        tracing::debug!(tool = %name, answered = answer.is_ok(), "replayed a tool call");
        answer
    }
}

/// The first recorded response for `tool` whose arguments are all among `args`; a
/// call nothing was recorded for fails, as a call to a server that cannot answer it.
pub fn answer(responses: &[Recorded], tool: &str, args: &Map<String, Value>) -> Result<Value, String> {
    responses
        .iter()
        .find(|r| r.tool == tool && r.args.iter().all(|(k, want)| args.get(k).is_some_and(|got| fits(want, got))))
        .map(|r| r.answer.clone())
        .unwrap_or_else(|| {
            Err(format!("no recorded response for `{tool}` with arguments {}", Value::Object(args.clone())))
        })
}

/// Whether `got` is `want` or holds it: objects by subset of keys, numbers by value
/// (a YAML `2` and a rendered `2.0` are one number), everything else by equality.
fn fits(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| fits(v, gv))),
        (Value::Number(w), Value::Number(g)) => w.as_f64() == g.as_f64(),
        (Value::Array(w), Value::Array(g)) => w.len() == g.len() && w.iter().zip(g).all(|(a, b)| fits(a, b)),
        _ => want == got,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn rec(tool: &str, args: Value, answer: Result<Value, String>) -> Recorded {
        Recorded { tool: tool.into(), args: map(args), answer }
    }

    #[test]
    fn the_first_fitting_response_answers() {
        let responses = [
            rec("airflow__get_task_log", json!({"task_id": "load"}), Ok(json!({"text": "load failed"}))),
            rec("airflow__get_task_log", json!({}), Ok(json!({"text": "any other task"}))),
            rec("spark__get_stage", json!({"stage_id": 3, "filter": {"a": 1}}), Err("gone".into())),
            rec("presto__list_tables", json!({"schema": "x"}), Ok(json!({"names": []}))),
        ];
        let cases: [(&str, Value, Result<Value, String>); 5] = [
            ("airflow__get_task_log", json!({"dag_id": "d", "task_id": "load"}), Ok(json!({"text": "load failed"}))),
            ("airflow__get_task_log", json!({"task_id": "other"}), Ok(json!({"text": "any other task"}))),
            // Numbers by value; objects by subset.
            ("spark__get_stage", json!({"stage_id": 3.0, "filter": {"a": 1, "b": 2}}), Err("gone".into())),
            (
                "presto__list_tables",
                json!({"schema": "y"}),
                Err(r#"no recorded response for `presto__list_tables` with arguments {"schema":"y"}"#.into()),
            ),
            (
                "presto__run_query",
                json!({}),
                Err("no recorded response for `presto__run_query` with arguments {}".into()),
            ),
        ];
        for (tool, args, want) in cases {
            assert_eq!(answer(&responses, tool, &map(args.clone())), want, "{tool} {args}");
        }
    }

    #[test]
    fn arrays_must_match_whole() {
        assert!(fits(&json!(["failed", "upstream_failed"]), &json!(["failed", "upstream_failed"])));
        assert!(!fits(&json!(["failed"]), &json!(["failed", "upstream_failed"])));
        assert!(!fits(&json!("2"), &json!(2)));
    }
}
