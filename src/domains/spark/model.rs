//! What the History Server's REST API (`/api/v1`) answers, as far as the tools use it.
//!
//! Field names follow Spark's JSON (camelCase) so a tool's output can be checked
//! against the REST API directly. Fields Spark leaves out in some versions or states
//! are optional; unknown fields are ignored, so a newer Spark does not break decoding.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One application (`/applications`, `/applications/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub attempts: Vec<ApplicationAttempt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationAttempt {
    /// Absent for applications that run once (local mode, client mode).
    pub attempt_id: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub last_updated: Option<String>,
    /// Milliseconds; for a running application, the time so far.
    #[serde(default)]
    pub duration: i64,
    pub spark_user: Option<String>,
    #[serde(default)]
    pub completed: bool,
    pub app_spark_version: Option<String>,
}

/// One job (`/applications/{id}/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub job_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub submission_time: Option<String>,
    pub completion_time: Option<String>,
    #[serde(default)]
    pub stage_ids: Vec<i64>,
    pub job_group: Option<String>,
    /// `RUNNING`, `SUCCEEDED`, `FAILED` or `UNKNOWN`.
    pub status: String,
    #[serde(default)]
    pub num_tasks: i64,
    #[serde(default)]
    pub num_completed_tasks: i64,
    #[serde(default)]
    pub num_skipped_tasks: i64,
    #[serde(default)]
    pub num_failed_tasks: i64,
    #[serde(default)]
    pub num_killed_tasks: i64,
    #[serde(default)]
    pub num_completed_stages: i64,
    #[serde(default)]
    pub num_skipped_stages: i64,
    #[serde(default)]
    pub num_failed_stages: i64,
}

/// One attempt of one stage (`/applications/{id}/stages[/{stage}[/{attempt}]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// `ACTIVE`, `COMPLETE`, `FAILED`, `PENDING` or `SKIPPED`.
    pub status: String,
    pub stage_id: i64,
    pub attempt_id: i64,
    pub name: String,
    #[serde(default)]
    pub num_tasks: i64,
    #[serde(default)]
    pub num_complete_tasks: i64,
    #[serde(default)]
    pub num_failed_tasks: i64,
    #[serde(default)]
    pub num_killed_tasks: i64,
    pub submission_time: Option<String>,
    pub completion_time: Option<String>,
    /// Why the stage failed: for a Python UDF, the Python traceback.
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub executor_run_time: i64,
    #[serde(default)]
    pub jvm_gc_time: i64,
    #[serde(default)]
    pub input_bytes: i64,
    #[serde(default)]
    pub shuffle_read_bytes: i64,
    #[serde(default)]
    pub shuffle_write_bytes: i64,
    #[serde(default)]
    pub memory_bytes_spilled: i64,
    #[serde(default)]
    pub disk_bytes_spilled: i64,
    #[serde(default)]
    pub peak_execution_memory: i64,
}

/// Quantiles of task metrics over a stage attempt's successful tasks
/// (`/stages/{stage}/{attempt}/taskSummary?quantiles=...`). Each list is aligned with
/// `quantiles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    pub quantiles: Vec<f64>,
    #[serde(default)]
    pub duration: Vec<f64>,
    #[serde(default)]
    pub executor_run_time: Vec<f64>,
    #[serde(default)]
    pub jvm_gc_time: Vec<f64>,
    #[serde(default)]
    pub peak_execution_memory: Vec<f64>,
    #[serde(default)]
    pub memory_bytes_spilled: Vec<f64>,
    #[serde(default)]
    pub disk_bytes_spilled: Vec<f64>,
}

/// One task (`/stages/{stage}/{attempt}/taskList`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_id: i64,
    pub index: i64,
    pub attempt: i64,
    pub launch_time: Option<String>,
    pub duration: Option<i64>,
    pub executor_id: String,
    pub host: String,
    /// `SUCCESS`, `FAILED`, `KILLED`, `RUNNING`.
    pub status: String,
    pub error_message: Option<String>,
}

/// One executor, alive or removed (`/executors`, `/allexecutors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Executor {
    pub id: String,
    pub host_port: String,
    pub is_active: bool,
    #[serde(default)]
    pub total_cores: i64,
    #[serde(default)]
    pub max_memory: i64,
    #[serde(default)]
    pub memory_used: i64,
    #[serde(default)]
    pub disk_used: i64,
    #[serde(default)]
    pub active_tasks: i64,
    #[serde(default)]
    pub failed_tasks: i64,
    #[serde(default)]
    pub completed_tasks: i64,
    #[serde(default)]
    pub total_tasks: i64,
    /// Milliseconds.
    #[serde(default)]
    pub total_duration: i64,
    /// Milliseconds spent in JVM garbage collection.
    #[serde(rename = "totalGCTime", default)]
    pub total_gc_time: i64,
    pub add_time: Option<String>,
    pub remove_time: Option<String>,
    pub remove_reason: Option<String>,
    /// Peak JVM and process memory (`JVMHeapMemory`, `OnHeapExecutionMemory`, ...), in bytes.
    pub peak_memory_metrics: Option<BTreeMap<String, i64>>,
}

/// `/applications/{id}/environment`, as the tools use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub runtime: Runtime,
    /// `[key, value]` pairs, as Spark lists them.
    #[serde(default)]
    pub spark_properties: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Runtime {
    pub java_version: Option<String>,
    pub java_home: Option<String>,
    pub scala_version: Option<String>,
}

/// `/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Version {
    pub spark: String,
}
