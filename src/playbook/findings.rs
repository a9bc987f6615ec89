//! Applying a playbook's finding rules to tool results (pure).

use std::collections::BTreeMap;

use serde_json::Value;

use super::check::FindingRule;

/// What a rule found in a step's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule: String,
    pub category: String,
    /// The text the regex matched, for the report's evidence.
    pub quote: String,
    /// The regex's named groups that took part.
    pub groups: BTreeMap<String, String>,
}

impl FindingRule {
    /// Runs the rule over `result`, the step's structured output: over `field` when the
    /// rule names one (a dotted path, numbers index arrays), else over the whole
    /// result. A missing field finds nothing.
    pub fn apply(&self, result: &Value) -> Option<Match> {
        // A string is read as itself, anything else as its JSON text.
        let target = match &self.field {
            Some(path) => result.pointer(&pointer(path))?,
            None => result,
        };
        let text = match target {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let caps = self.regex.captures(&text)?;
        let groups = self
            .regex
            .capture_names()
            .flatten()
            .filter_map(|name| caps.name(name).map(|m| (name.to_string(), m.as_str().to_string())))
            .collect();
        let quote = caps.get(0).map(|m| m.as_str().to_string()).unwrap_or_default();
        Some(Match { rule: self.id.clone(), category: self.category.clone(), quote, groups })
    }
}

/// `a.b.0.c` as the JSON pointer `/a/b/0/c`, each key escaped as RFC 6901 asks.
fn pointer(path: &str) -> String {
    path.split('.').map(|key| format!("/{}", key.replace('~', "~0").replace('/', "~1"))).collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use crate::playbook::{Playbook, load};

    fn shipped(name: &str) -> Playbook {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        load(&[dir]).unwrap().into_iter().find(|p| p.name == name).unwrap()
    }

    fn find(p: &Playbook, step: &str, result: &serde_json::Value) -> Vec<(String, Vec<(String, String)>)> {
        p.findings
            .iter()
            .filter(|f| f.step == step)
            .filter_map(|f| f.apply(result))
            .map(|m| (m.category, m.groups.into_iter().collect()))
            .collect()
    }

    #[test]
    fn the_airflow_playbook_names_the_missing_table_from_a_task_log() {
        let p = shipped("airflow-task-failure");
        // What get_task_log returns for the test DAG that reads a missing table.
        let log = json!({"text": "ProgrammingError: Table analytics.orders_raw not found\n  File \"/dags/orders_daily_load.py\"", "exceptions": []});
        assert_eq!(
            find(&p, "log", &log),
            [("missing_table".to_string(), vec![("table".to_string(), "analytics.orders_raw".to_string())])]
        );
        assert!(find(&p, "log", &json!({"text": "all good"})).is_empty());
        assert!(find(&p, "log", &json!({"no_text": 1})).is_empty(), "a missing field finds nothing");
    }

    #[test]
    fn the_spark_playbook_recognises_executor_oom() {
        let p = shipped("spark-executor-oom");
        let tasks = json!({"tasks": [{"task_id": 7, "error_message": "java.lang.OutOfMemoryError: Java heap space\n\tat ...", "out_of_memory": true}], "truncated": false});
        let found = find(&p, "failed_tasks", &tasks);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "out_of_memory");
        assert_eq!(found[0].1, [("kind".to_string(), "Java heap space".to_string())]);
        // The executors' listing, as the History Server names the field.
        let executors = json!({"executors": [{"id": "3", "isActive": false, "removeReason": "Container killed: OOM"}]});
        assert_eq!(
            find(&p, "executors", &executors)[0].1,
            [("reason".to_string(), "Container killed: OOM".to_string())]
        );
    }

    #[test]
    fn the_presto_playbook_tells_limits_from_missing_tables() {
        let p = shipped("presto-query-failure");
        let limit = json!({"query_id": "q1", "state": "FAILED", "error_type": "INSUFFICIENT_RESOURCES", "error_code": "EXCEEDED_TIME_LIMIT"});
        assert_eq!(find(&p, "query", &limit)[0].0, "query_limit_exceeded");
        // As get_query answers: the error's type and code, no message.
        let missing =
            json!({"query_id": "q2", "state": "FAILED", "error_type": "USER_ERROR", "error_code": "TABLE_NOT_FOUND"});
        assert_eq!(find(&p, "query", &missing)[0].0, "missing_table");
    }
}
