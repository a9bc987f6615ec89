//! What Airflow's REST API v2 answers, typed for the tools. Field names are the API's,
//! so a tool's output reads like the API's own documentation. Fields the tools do not
//! need are left out; every field that Airflow may leave null is an `Option`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Dag {
    pub dag_id: String,
    #[serde(default)]
    pub dag_display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub is_paused: bool,
    #[serde(default)]
    pub is_stale: Option<bool>,
    #[serde(default)]
    pub has_import_errors: Option<bool>,
    #[serde(default)]
    pub fileloc: Option<String>,
    #[serde(default)]
    pub relative_fileloc: Option<String>,
    #[serde(default)]
    pub owners: Vec<String>,
    #[serde(default)]
    pub tags: Vec<DagTag>,
    #[serde(default)]
    pub timetable_summary: Option<String>,
    #[serde(default)]
    pub last_parsed_time: Option<String>,
    #[serde(default)]
    pub next_dagrun_run_after: Option<String>,
    #[serde(default)]
    pub max_active_runs: Option<i64>,
    #[serde(default)]
    pub bundle_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DagTag {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DagList {
    pub dags: Vec<Dag>,
    pub total_entries: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportError {
    pub import_error_id: i64,
    #[serde(default)]
    pub timestamp: Option<String>,
    pub filename: String,
    #[serde(default)]
    pub bundle_name: Option<String>,
    pub stack_trace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportErrorList {
    pub import_errors: Vec<ImportError>,
    pub total_entries: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DagRun {
    pub dag_run_id: String,
    pub dag_id: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub run_type: Option<String>,
    #[serde(default)]
    pub logical_date: Option<String>,
    #[serde(default)]
    pub run_after: Option<String>,
    #[serde(default)]
    pub queued_at: Option<String>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    #[serde(default)]
    pub triggered_by: Option<String>,
    #[serde(default)]
    pub conf: Option<Value>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DagRunList {
    pub dag_runs: Vec<DagRun>,
    pub total_entries: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskInstance {
    pub task_id: String,
    pub dag_id: String,
    pub dag_run_id: String,
    #[serde(default)]
    pub map_index: Option<i64>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub try_number: Option<i64>,
    #[serde(default)]
    pub max_tries: Option<i64>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskInstanceList {
    pub task_instances: Vec<TaskInstance>,
    pub total_entries: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DagSource {
    pub dag_id: String,
    #[serde(default)]
    pub version_number: Option<i64>,
    #[serde(default)]
    pub content: Option<String>,
}

/// `GET .../logs/{try}` with `Accept: application/json`: structured events (objects, or
/// plain strings from older writers).
#[derive(Debug, Clone, Deserialize)]
pub struct TaskLogPage {
    #[serde(default)]
    pub content: Vec<Value>,
    #[serde(default)]
    pub continuation_token: Option<String>,
}
