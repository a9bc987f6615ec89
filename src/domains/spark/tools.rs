//! The Spark tools: their arguments, their outputs and how each is answered from the
//! History Server. All of them only read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::analysis::{self, ConfigDifference, QUANTILES, RunSummary, StageHealth};
use super::client::{AppQuery, AppStatus, SparkClient};
use super::model::{Application, Executor, Job, Runtime, Stage, Task, TaskSummary};
use crate::mcp::{Hints, ToolError, ToolSpec, parse_args, tool::output};

/// The tools, as the registry lists them.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec::new::<ListApplications, Applications>(
            "list_applications",
            "List Spark applications",
            "Applications the Spark History Server knows, newest first; filter by status (completed, running) and start date.",
            Hints::READ,
        ),
        ToolSpec::new::<AppArgs, ApplicationDetail>(
            "get_application",
            "Get a Spark application",
            "One application's attempts, durations and how many of its jobs and stages failed.",
            Hints::READ,
        ),
        ToolSpec::new::<ListJobs, Jobs>(
            "list_jobs",
            "List an application's jobs",
            "Jobs of one application with task and stage counts; filter by status (running, succeeded, failed, unknown).",
            Hints::READ,
        ),
        ToolSpec::new::<AppArgs, Stages>(
            "list_failed_stages",
            "List failed stages",
            "Failed stage attempts of one application with their failure reason (for a Python UDF, the traceback).",
            Hints::READ,
        ),
        ToolSpec::new::<GetStage, StageDetail>(
            "get_stage",
            "Get a stage with task metrics",
            "One stage attempt with a summary of its tasks: skew (max/median duration), spill, GC time, peak execution memory.",
            Hints::READ,
        ),
        ToolSpec::new::<ListFailedTasks, FailedTasks>(
            "list_failed_tasks",
            "List failed tasks",
            "Failed tasks with their error messages (for example java.lang.OutOfMemoryError), of one stage or of the whole application.",
            Hints::READ,
        ),
        ToolSpec::new::<ListExecutors, Executors>(
            "list_executors",
            "List executors",
            "Executors with memory, GC time, task failures and, for removed ones, why they were removed.",
            Hints::READ,
        ),
        ToolSpec::new::<AppArgs, EnvironmentView>(
            "get_environment",
            "Get the Spark configuration",
            "The application's Spark properties and runtime; values of keys that look like secrets are redacted.",
            Hints::READ,
        ),
        ToolSpec::new::<CompareApplications, Comparison>(
            "compare_applications",
            "Compare two applications",
            "Durations, job and stage counts, failures and the configuration differences of two applications (e.g. a good and a bad run).",
            Hints::READ,
        ),
    ]
}

/// Answers one call of tool `name`.
pub async fn call(
    client: &SparkClient,
    max_items: usize,
    name: &str,
    args: &serde_json::Map<String, Value>,
) -> Result<Value, ToolError> {
    match name {
        "list_applications" => output(&list_applications(client, max_items, parse_args(args)?).await?),
        "get_application" => output(&get_application(client, parse_args(args)?).await?),
        "list_jobs" => output(&list_jobs(client, max_items, parse_args(args)?).await?),
        "list_failed_stages" => output(&list_failed_stages(client, max_items, parse_args(args)?).await?),
        "get_stage" => output(&get_stage(client, parse_args(args)?).await?),
        "list_failed_tasks" => output(&list_failed_tasks(client, max_items, parse_args(args)?).await?),
        "list_executors" => output(&list_executors(client, max_items, parse_args(args)?).await?),
        "get_environment" => output(&get_environment(client, parse_args(args)?).await?),
        "compare_applications" => output(&compare_applications(client, parse_args(args)?).await?),
        other => Err(ToolError::UnknownTool(other.to_string())),
    }
}

// ---- arguments ----

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListApplications {
    /// `completed` or `running`; both when absent.
    pub status: Option<AppStatusArg>,
    /// At most this many (1-1000, default 20).
    pub limit: Option<u32>,
    /// Only applications started on or after this date (`2026-01-31` or `2026-01-31T10:00:00.000GMT`).
    pub min_date: Option<String>,
    /// Only applications started on or before this date.
    pub max_date: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppStatusArg {
    Completed,
    Running,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppArgs {
    /// Spark application id, e.g. `local-1700000000000` or `application_1700000000000_0001`.
    pub app_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListJobs {
    pub app_id: String,
    /// Only jobs with this status.
    pub status: Option<JobStatusArg>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatusArg {
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetStage {
    pub app_id: String,
    pub stage_id: u32,
    /// The stage attempt; the latest when absent.
    pub attempt_id: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFailedTasks {
    pub app_id: String,
    /// Only tasks of this stage (all its attempts); every stage with failed tasks when absent.
    pub stage_id: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListExecutors {
    pub app_id: String,
    /// Also executors that were removed (default true: a lost executor is often the story).
    pub include_removed: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareApplications {
    /// The reference run (e.g. the last good one).
    pub left_app_id: String,
    /// The run to explain (e.g. the failed one).
    pub right_app_id: String,
}

// ---- outputs ----

#[derive(Debug, Serialize, JsonSchema)]
pub struct Applications {
    pub applications: Vec<Application>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApplicationDetail {
    pub application: Application,
    pub summary: RunSummary,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Jobs {
    pub jobs: Vec<Job>,
    /// More matched than were returned.
    pub truncated: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Stages {
    pub stages: Vec<Stage>,
    pub truncated: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StageDetail {
    pub stage: Stage,
    /// Quantiles of the attempt's successful tasks; absent when none succeeded.
    pub task_summary: Option<TaskSummary>,
    pub health: StageHealth,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FailedTask {
    pub stage_id: i64,
    pub stage_attempt_id: i64,
    #[serde(flatten)]
    pub task: Task,
    /// The error looks like running out of memory.
    pub out_of_memory: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FailedTasks {
    pub tasks: Vec<FailedTask>,
    pub truncated: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Executors {
    pub executors: Vec<Executor>,
    pub truncated: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvironmentView {
    pub runtime: Runtime,
    /// Spark properties by key; secrets redacted.
    pub spark_properties: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Comparison {
    pub left: RunSummary,
    pub right: RunSummary,
    /// `right.duration_ms - left.duration_ms`.
    pub duration_change_ms: i64,
    /// Keys whose values differ (run identity such as `spark.app.id` left out; secrets redacted).
    pub config_differences: Vec<ConfigDifference>,
}

// ---- the calls ----

async fn list_applications(client: &SparkClient, max: usize, a: ListApplications) -> Result<Applications, ToolError> {
    let limit = a.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ToolError::InvalidArgument {
            name: "limit".into(),
            why: format!("{limit} is not between 1 and 1000"),
        });
    }
    for (name, date) in [("min_date", &a.min_date), ("max_date", &a.max_date)] {
        if let Some(date) = date {
            analysis::check_date(name, date)?;
        }
    }
    let status = a.status.map(|s| match s {
        AppStatusArg::Completed => AppStatus::Completed,
        AppStatusArg::Running => AppStatus::Running,
    });
    let limit = limit.min(u32::try_from(max).unwrap_or(u32::MAX));
    let query = AppQuery { status, limit: Some(limit), min_date: a.min_date, max_date: a.max_date };
    Ok(Applications { applications: client.applications(&query).await? })
}

async fn get_application(client: &SparkClient, a: AppArgs) -> Result<ApplicationDetail, ToolError> {
    analysis::check_app_id("app_id", &a.app_id)?;
    let application = client.application(&a.app_id).await?;
    let jobs = client.jobs(&a.app_id, None).await?;
    let stages = client.stages(&a.app_id, None).await?;
    let summary = analysis::run_summary(&application, &jobs, &stages);
    Ok(ApplicationDetail { application, summary })
}

async fn list_jobs(client: &SparkClient, max: usize, a: ListJobs) -> Result<Jobs, ToolError> {
    analysis::check_app_id("app_id", &a.app_id)?;
    let status = a.status.map(|s| match s {
        JobStatusArg::Running => "running",
        JobStatusArg::Succeeded => "succeeded",
        JobStatusArg::Failed => "failed",
        JobStatusArg::Unknown => "unknown",
    });
    let (jobs, truncated) = cap(client.jobs(&a.app_id, status).await?, max);
    Ok(Jobs { jobs, truncated })
}

async fn list_failed_stages(client: &SparkClient, max: usize, a: AppArgs) -> Result<Stages, ToolError> {
    analysis::check_app_id("app_id", &a.app_id)?;
    let (stages, truncated) = cap(client.stages(&a.app_id, Some("failed")).await?, max);
    Ok(Stages { stages, truncated })
}

async fn get_stage(client: &SparkClient, a: GetStage) -> Result<StageDetail, ToolError> {
    analysis::check_app_id("app_id", &a.app_id)?;
    let attempts = client.stage_attempts(&a.app_id, a.stage_id.into()).await?;
    let stage = match a.attempt_id {
        Some(wanted) => {
            attempts.into_iter().find(|s| s.attempt_id == i64::from(wanted)).ok_or_else(|| ToolError::NotFound {
                what: format!("attempt {wanted} of stage {} of application `{}`", a.stage_id, a.app_id),
            })?
        }
        None => attempts.into_iter().max_by_key(|s| s.attempt_id).ok_or_else(|| ToolError::NotFound {
            what: format!("stage {} of application `{}`", a.stage_id, a.app_id),
        })?,
    };
    let task_summary = client.task_summary(&a.app_id, stage.stage_id, stage.attempt_id, &QUANTILES).await?;
    let health = analysis::stage_health(&stage, task_summary.as_ref());
    Ok(StageDetail { stage, task_summary, health })
}

async fn list_failed_tasks(client: &SparkClient, max: usize, a: ListFailedTasks) -> Result<FailedTasks, ToolError> {
    analysis::check_app_id("app_id", &a.app_id)?;
    let stages = match a.stage_id {
        Some(id) => client.stage_attempts(&a.app_id, id.into()).await?,
        None => client.stages(&a.app_id, None).await?,
    };
    let mut tasks = Vec::new();
    for stage in stages.iter().filter(|s| s.num_failed_tasks > 0) {
        if tasks.len() > max {
            break;
        }
        let failed = client.tasks(&a.app_id, stage.stage_id, stage.attempt_id, Some("FAILED"), max + 1).await?;
        tasks.extend(failed.into_iter().map(|task| FailedTask {
            stage_id: stage.stage_id,
            stage_attempt_id: stage.attempt_id,
            out_of_memory: task.error_message.as_deref().is_some_and(analysis::looks_like_oom),
            task,
        }));
    }
    let (tasks, truncated) = cap(tasks, max);
    Ok(FailedTasks { tasks, truncated })
}

async fn list_executors(client: &SparkClient, max: usize, a: ListExecutors) -> Result<Executors, ToolError> {
    analysis::check_app_id("app_id", &a.app_id)?;
    let (executors, truncated) = cap(client.executors(&a.app_id, a.include_removed.unwrap_or(true)).await?, max);
    Ok(Executors { executors, truncated })
}

async fn get_environment(client: &SparkClient, a: AppArgs) -> Result<EnvironmentView, ToolError> {
    analysis::check_app_id("app_id", &a.app_id)?;
    let env = client.environment(&a.app_id).await?;
    let spark_properties = env.spark_properties.iter().map(|(k, v)| (k.clone(), analysis::redact(k, v))).collect();
    Ok(EnvironmentView { runtime: env.runtime, spark_properties })
}

async fn compare_applications(client: &SparkClient, a: CompareApplications) -> Result<Comparison, ToolError> {
    analysis::check_app_id("left_app_id", &a.left_app_id)?;
    analysis::check_app_id("right_app_id", &a.right_app_id)?;
    let (left, left_env) = run(client, &a.left_app_id).await?;
    let (right, right_env) = run(client, &a.right_app_id).await?;
    Ok(Comparison {
        duration_change_ms: right.duration_ms - left.duration_ms,
        config_differences: analysis::config_diff(&left_env, &right_env),
        left,
        right,
    })
}

/// One application's summary and Spark properties.
async fn run(client: &SparkClient, app: &str) -> Result<(RunSummary, Vec<(String, String)>), ToolError> {
    let application = client.application(app).await?;
    let jobs = client.jobs(app, None).await?;
    let stages = client.stages(app, None).await?;
    let env = client.environment(app).await?;
    Ok((analysis::run_summary(&application, &jobs, &stages), env.spark_properties))
}

/// The first `max` items, and whether there were more.
fn cap<T>(mut items: Vec<T>, max: usize) -> (Vec<T>, bool) {
    let truncated = items.len() > max;
    items.truncate(max);
    (items, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_unique_and_read_only() {
        let specs = specs();
        let mut names: Vec<_> = specs.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs.len());
        assert!(specs.iter().all(|s| s.hints == Hints::READ && !s.sensitive));
        assert!(specs.iter().all(|s| s.description.len() <= 200), "descriptions stay short");
    }

    #[test]
    fn cap_says_when_it_cut() {
        assert_eq!(cap(vec![1, 2, 3], 2), (vec![1, 2], true));
        assert_eq!(cap(vec![1, 2], 2), (vec![1, 2], false));
    }
}
