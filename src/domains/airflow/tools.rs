//! The Airflow tools: their arguments, outputs and specs, and the checks on argument
//! values that serde cannot express. Nothing here does IO.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::logs::{LogException, RenderedLog};
use super::models::{Dag, DagRun, ImportError, TaskInstance};
use crate::mcp::{Hints, ToolError, ToolSpec};

/// Page size when the caller gives none, and the most a caller may ask for.
pub const DEFAULT_LIMIT: u32 = 25;
pub const MAX_LIMIT: u32 = 100;
/// The most characters a caller may ask to see of a log (head + tail).
pub const MAX_LOG_CHARS: usize = 100_000;

/// The states a DAG run can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DagRunState {
    Queued,
    Running,
    Success,
    Failed,
}

/// The states a task instance can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskInstanceState {
    Removed,
    Scheduled,
    Queued,
    Running,
    Success,
    Restarting,
    Failed,
    UpForRetry,
    UpForReschedule,
    UpstreamFailed,
    Skipped,
    Deferred,
}

impl DagRunState {
    pub fn as_str(self) -> &'static str {
        match self {
            DagRunState::Queued => "queued",
            DagRunState::Running => "running",
            DagRunState::Success => "success",
            DagRunState::Failed => "failed",
        }
    }
}

impl TaskInstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskInstanceState::Removed => "removed",
            TaskInstanceState::Scheduled => "scheduled",
            TaskInstanceState::Queued => "queued",
            TaskInstanceState::Running => "running",
            TaskInstanceState::Success => "success",
            TaskInstanceState::Restarting => "restarting",
            TaskInstanceState::Failed => "failed",
            TaskInstanceState::UpForRetry => "up_for_retry",
            TaskInstanceState::UpForReschedule => "up_for_reschedule",
            TaskInstanceState::UpstreamFailed => "upstream_failed",
            TaskInstanceState::Skipped => "skipped",
            TaskInstanceState::Deferred => "deferred",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDagsArgs {
    /// Only DAGs with this tag.
    pub tag: Option<String>,
    /// Only DAGs owned by this owner (the `owner` of their tasks).
    pub owner: Option<String>,
    /// Only paused (true) or only active (false) DAGs.
    pub paused: Option<bool>,
    /// Only DAGs whose id contains this text.
    pub dag_id_contains: Option<String>,
    /// Page size, 1-100 (default 25).
    pub limit: Option<u32>,
    /// How many to skip, for paging.
    pub offset: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DagIdArgs {
    pub dag_id: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDagRunsArgs {
    pub dag_id: String,
    /// Only runs in these states.
    pub state: Option<Vec<DagRunState>>,
    /// Page size, 1-100 (default 25); newest runs first.
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DagRunArgs {
    pub dag_id: String,
    pub dag_run_id: String,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTaskInstancesArgs {
    /// The DAG; leave out (with `dag_run_id`) to search all DAGs.
    pub dag_id: Option<String>,
    /// The run; needs `dag_id`. Leave out to search all runs.
    pub dag_run_id: Option<String>,
    /// Only task instances in these states. Defaults to `failed` when no run is named.
    pub state: Option<Vec<TaskInstanceState>>,
    /// Page size, 1-100 (default 25); most recently started first.
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskLogArgs {
    pub dag_id: String,
    pub dag_run_id: String,
    pub task_id: String,
    /// The try, from 1; defaults to the task instance's latest try.
    pub try_number: Option<u32>,
    /// For mapped tasks: the map index (default -1, not mapped).
    pub map_index: Option<i64>,
    /// Characters of events to keep from the start (default from the settings).
    pub head_chars: Option<usize>,
    /// Characters of events to keep from the end (default from the settings).
    pub tail_chars: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportErrorsArgs {
    /// Only errors of files whose path contains this text.
    pub filename_contains: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerDagRunArgs {
    pub dag_id: String,
    /// The new run's id; Airflow makes one when left out.
    pub dag_run_id: Option<String>,
    /// The run's configuration (`dag_run.conf`), a JSON object.
    pub conf: Option<Map<String, Value>>,
    /// Why the run was triggered; shown in Airflow as the run's note.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearTaskInstancesArgs {
    pub dag_id: String,
    /// The run whose task instances are cleared (required: clearing is per run).
    pub dag_run_id: String,
    /// Only these tasks; all tasks of the run when left out.
    pub task_ids: Option<Vec<String>>,
    /// Clear only failed and upstream-failed task instances (default true).
    pub only_failed: Option<bool>,
    /// Also clear the tasks downstream of the named ones (default false).
    pub include_downstream: Option<bool>,
    /// List what would be cleared without clearing it (default false).
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDagPausedArgs {
    pub dag_id: String,
    /// true pauses the DAG (no new runs are scheduled), false unpauses it.
    pub paused: bool,
}

/// `get_dag`: the DAG and the import errors of its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DagWithErrors {
    pub dag: Dag,
    pub import_errors: Vec<ImportError>,
}

/// `list_task_instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskInstances {
    pub task_instances: Vec<TaskInstance>,
    pub total_entries: i64,
}

/// `get_task_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskLog {
    pub dag_id: String,
    pub dag_run_id: String,
    pub task_id: String,
    pub try_number: u32,
    pub exceptions: Vec<LogException>,
    /// The exception first, then the events, capped.
    pub text: String,
    pub events_total: usize,
    pub events_shown: usize,
    pub truncated: Option<String>,
}

impl TaskLog {
    pub fn new(args: &TaskLogArgs, try_number: u32, log: RenderedLog) -> TaskLog {
        TaskLog {
            dag_id: args.dag_id.clone(),
            dag_run_id: args.dag_run_id.clone(),
            task_id: args.task_id.clone(),
            try_number,
            exceptions: log.exceptions,
            text: log.text,
            events_total: log.events_total,
            events_shown: log.events_shown,
            truncated: log.truncated,
        }
    }
}

/// `get_dag_source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DagSourceOut {
    pub dag_id: String,
    pub version_number: Option<i64>,
    pub content: String,
}

/// `set_dag_paused`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PausedOut {
    pub dag_id: String,
    pub is_paused: bool,
}

/// `clear_task_instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClearedOut {
    pub dry_run: bool,
    pub task_instances: Vec<TaskInstance>,
}

/// The tool names, in one place for the dispatcher and the specs.
pub mod names {
    pub const LIST_DAGS: &str = "list_dags";
    pub const GET_DAG: &str = "get_dag";
    pub const LIST_DAG_RUNS: &str = "list_dag_runs";
    pub const GET_DAG_RUN: &str = "get_dag_run";
    pub const LIST_TASK_INSTANCES: &str = "list_task_instances";
    pub const GET_TASK_LOG: &str = "get_task_log";
    pub const GET_IMPORT_ERRORS: &str = "get_import_errors";
    pub const GET_DAG_SOURCE: &str = "get_dag_source";
    pub const TRIGGER_DAG_RUN: &str = "trigger_dag_run";
    pub const CLEAR_TASK_INSTANCES: &str = "clear_task_instances";
    pub const SET_DAG_PAUSED: &str = "set_dag_paused";
}

/// Every tool of the domain.
pub fn specs() -> Vec<ToolSpec> {
    use super::models::{DagList, DagRunList, ImportErrorList};
    use names::*;
    vec![
        ToolSpec::new::<ListDagsArgs, DagList>(
            LIST_DAGS,
            "List DAGs",
            "List Airflow DAGs with their paused state, owners, tags and import-error flag, filtered by tag, owner, paused or id text.",
            Hints::READ,
        ),
        ToolSpec::new::<DagIdArgs, DagWithErrors>(
            GET_DAG,
            "Get a DAG",
            "Get one DAG's details (schedule, paused, file, owners, tags) together with the import errors of its file.",
            Hints::READ,
        ),
        ToolSpec::new::<ListDagRunsArgs, DagRunList>(
            LIST_DAG_RUNS,
            "List DAG runs",
            "List a DAG's runs, newest first, optionally only those in given states (queued, running, success, failed).",
            Hints::READ,
        ),
        ToolSpec::new::<DagRunArgs, DagRun>(
            GET_DAG_RUN,
            "Get a DAG run",
            "Get one DAG run's state, type, timing, trigger and conf.",
            Hints::READ,
        ),
        ToolSpec::new::<ListTaskInstancesArgs, TaskInstances>(
            LIST_TASK_INSTANCES,
            "List task instances",
            "List the task instances of one DAG run, or with no run given the failed task instances across all DAGs, most recent first.",
            Hints::READ,
        ),
        ToolSpec::new::<TaskLogArgs, TaskLog>(
            GET_TASK_LOG,
            "Get a task log",
            "Get a task instance's log for one try: the exception and traceback first, then the log events, with the middle cut when long.",
            Hints::READ,
        ),
        ToolSpec::new::<ImportErrorsArgs, ImportErrorList>(
            GET_IMPORT_ERRORS,
            "Get DAG import errors",
            "List the DAG files Airflow failed to import, with each file's stack trace.",
            Hints::READ,
        ),
        ToolSpec::new::<DagIdArgs, DagSourceOut>(
            GET_DAG_SOURCE,
            "Get a DAG's source",
            "Get the Python source code of the file that defines a DAG.",
            Hints::READ,
        ),
        ToolSpec::new::<TriggerDagRunArgs, DagRun>(
            TRIGGER_DAG_RUN,
            "Trigger a DAG run",
            "Start a new run of a DAG now, with an optional run id, conf object and note; each call starts another run.",
            Hints::DESTRUCTIVE,
        )
        .sensitive(),
        ToolSpec::new::<ClearTaskInstancesArgs, ClearedOut>(
            CLEAR_TASK_INSTANCES,
            "Clear task instances",
            "Clear task instances of one DAG run (by default only the failed ones) so the scheduler runs them again; use dry_run to preview.",
            Hints::DESTRUCTIVE,
        )
        .sensitive(),
        ToolSpec::new::<SetDagPausedArgs, PausedOut>(
            SET_DAG_PAUSED,
            "Pause or unpause a DAG",
            "Pause a DAG so no new runs are scheduled, or unpause it; running tasks are not stopped.",
            Hints::WRITE_IDEMPOTENT,
        )
        .sensitive(),
    ]
}

/// The page size to ask for, or the argument error.
pub fn limit(limit: Option<u32>) -> Result<u32, ToolError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(invalid("limit", "must be at least 1")),
        n if n > MAX_LIMIT => Err(invalid("limit", &format!("must be at most {MAX_LIMIT}"))),
        n => Ok(n),
    }
}

/// An id used as a path segment must name something.
pub fn id<'a>(name: &str, value: &'a str) -> Result<&'a str, ToolError> {
    if value.trim().is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    Ok(value)
}

/// Which task instances `list_task_instances` asks for: `~` stands for "all" in the path.
pub fn task_instance_scope(args: &ListTaskInstancesArgs) -> Result<(String, String, Vec<&'static str>), ToolError> {
    let dag = match &args.dag_id {
        Some(d) => id("dag_id", d)?.to_string(),
        None if args.dag_run_id.is_some() => return Err(invalid("dag_id", "is needed when dag_run_id is given")),
        None => "~".to_string(),
    };
    let run = match &args.dag_run_id {
        Some(r) => id("dag_run_id", r)?.to_string(),
        None => "~".to_string(),
    };
    let states: Vec<&'static str> = match &args.state {
        Some(states) => states.iter().map(|s| s.as_str()).collect(),
        // Across runs the useful question is "what failed"; everything would be noise.
        None if run == "~" => vec![TaskInstanceState::Failed.as_str()],
        None => Vec::new(),
    };
    Ok((dag, run, states))
}

/// The log caps for a call: the caller's, else the settings'.
pub fn log_caps(args: &TaskLogArgs, head_default: usize, tail_default: usize) -> Result<super::logs::Caps, ToolError> {
    let head = args.head_chars.unwrap_or(head_default);
    let tail = args.tail_chars.unwrap_or(tail_default);
    if head > MAX_LOG_CHARS {
        return Err(invalid("head_chars", &format!("must be at most {MAX_LOG_CHARS}")));
    }
    if tail > MAX_LOG_CHARS {
        return Err(invalid("tail_chars", &format!("must be at most {MAX_LOG_CHARS}")));
    }
    Ok(super::logs::Caps { head_chars: head, tail_chars: tail })
}

pub fn invalid(name: &str, why: &str) -> ToolError {
    ToolError::InvalidArgument { name: name.to_string(), why: why.to_string() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mcp::parse_args;

    fn args(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn arg_error<T: serde::de::DeserializeOwned>(value: Value) -> String {
        match parse_args::<T>(&args(value)) {
            Err(ToolError::InvalidArgument { name, .. }) => name,
            Err(other) => format!("not an argument error: {other}"),
            Ok(_) => "parsed".to_string(),
        }
    }

    #[test]
    fn wrong_types_and_values_name_the_argument() {
        assert_eq!(arg_error::<ListDagsArgs>(json!({"limit": "ten"})), "limit");
        assert_eq!(arg_error::<ListDagsArgs>(json!({"paused": "yes"})), "paused");
        assert_eq!(arg_error::<ListDagRunsArgs>(json!({"dag_id": "x", "state": ["broken"]})), "state[0]");
        assert_eq!(arg_error::<TaskLogArgs>(json!({"dag_id": "x", "dag_run_id": "r"})), "");
        assert_eq!(arg_error::<SetDagPausedArgs>(json!({"dag_id": "x", "paused": 1})), "paused");
        assert_eq!(arg_error::<TriggerDagRunArgs>(json!({"dag_id": "x", "conf": [1]})), "conf");
        assert_eq!(arg_error::<DagIdArgs>(json!({"dag_id": "x", "dagid": "y"})), "dagid");
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(limit(Some(100)).ok(), Some(100));
        for bad in [0, 101] {
            assert!(matches!(limit(Some(bad)), Err(ToolError::InvalidArgument { name, .. }) if name == "limit"));
        }
    }

    #[test]
    fn task_instance_scopes() {
        let scope = |value: Value| {
            task_instance_scope(&parse_args::<ListTaskInstancesArgs>(&args(value)).unwrap()).map_err(|e| e.to_string())
        };
        assert_eq!(scope(json!({})), Ok(("~".into(), "~".into(), vec!["failed"])));
        assert_eq!(scope(json!({"dag_id": "etl", "dag_run_id": "r1"})), Ok(("etl".into(), "r1".into(), vec![])));
        assert_eq!(
            scope(json!({"dag_id": "etl", "state": ["up_for_retry", "failed"]})),
            Ok(("etl".into(), "~".into(), vec!["up_for_retry", "failed"]))
        );
        assert!(scope(json!({"dag_run_id": "r1"})).unwrap_err().starts_with("invalid argument `dag_id`"));
        assert!(scope(json!({"dag_id": " "})).unwrap_err().starts_with("invalid argument `dag_id`"));
    }

    #[test]
    fn log_caps_are_bounded() {
        let args: TaskLogArgs =
            parse_args(&args(json!({"dag_id": "d", "dag_run_id": "r", "task_id": "t", "tail_chars": 1_000_000})))
                .unwrap();
        let err = log_caps(&args, 10, 10).unwrap_err();
        assert!(matches!(err, ToolError::InvalidArgument { name, .. } if name == "tail_chars"));
    }

    #[test]
    fn specs_have_unique_valid_names_and_object_schemas() {
        let specs = specs();
        let mut names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs.len());
        for spec in &specs {
            assert!(spec.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
            assert_eq!(spec.input_schema.get("type"), Some(&json!("object")), "{}", spec.name);
            assert_eq!(spec.output_schema.get("type"), Some(&json!("object")), "{}", spec.name);
            assert_eq!(spec.sensitive, !spec.hints.read_only, "{}", spec.name);
        }
    }
}
