//! The Airflow domain: tools over an Airflow 3 API server (REST API v2).
//!
//! - `config`: where Airflow is and how the domain logs in.
//! - `client`: HTTP, token login, the error enum; no knowledge of tools.
//! - `models`: the API's answers, typed.
//! - `tools`: arguments, outputs, specs and the pure checks on arguments.
//! - `logs`: renders structured task logs (pure).
//!
//! Invariants: reads retry through [`retry_read`] only while the backend is down or
//! overloaded; writes are sent once. Errors name the backend's address, never the
//! credentials. The domain never decides about approvals: the framework does.

pub mod client;
pub mod config;
pub mod logs;
pub mod models;
pub mod tools;

use async_trait::async_trait;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument;

use self::client::{AirflowClient, AirflowError, Request};
use self::config::AirflowConfig;
use self::models::{
    Dag, DagList, DagRun, DagRunList, DagSource, ImportErrorList, TaskInstance, TaskInstanceList, TaskLogPage,
};
use self::tools::*;
use crate::mcp::tool::output;
use crate::mcp::{Domain, ToolCall, ToolError, ToolSpec, retry_read};

const BACKEND: &str = "airflow";

/// The Airflow domain server's tools.
pub struct AirflowDomain {
    client: AirflowClient,
    log_caps: logs::Caps,
}

impl AirflowDomain {
    pub fn new(config: &AirflowConfig) -> Result<AirflowDomain, AirflowError> {
        Ok(AirflowDomain {
            client: AirflowClient::new(config)?,
            log_caps: logs::Caps { head_chars: config.log_head_chars, tail_chars: config.log_tail_chars },
        })
    }

    async fn dispatch(&self, call: &ToolCall<'_>) -> Result<Value, ToolError> {
        match call.tool {
            names::LIST_DAGS => output(&self.list_dags(call.args()?).await?),
            names::GET_DAG => output(&self.get_dag(call.args()?).await?),
            names::LIST_DAG_RUNS => output(&self.list_dag_runs(call.args()?).await?),
            names::GET_DAG_RUN => output(&self.get_dag_run(call.args()?).await?),
            names::LIST_TASK_INSTANCES => output(&self.list_task_instances(call.args()?).await?),
            names::GET_TASK_LOG => output(&self.get_task_log(call.args()?).await?),
            names::GET_IMPORT_ERRORS => output(&self.get_import_errors(call.args()?).await?),
            names::GET_DAG_SOURCE => output(&self.get_dag_source(call.args()?).await?),
            names::TRIGGER_DAG_RUN => output(&self.trigger_dag_run(call.args()?).await?),
            names::CLEAR_TASK_INSTANCES => output(&self.clear_task_instances(call.args()?).await?),
            names::SET_DAG_PAUSED => output(&self.set_dag_paused(call.args()?).await?),
            other => Err(ToolError::UnknownTool(other.to_string())),
        }
    }

    /// Sends a read, retrying while Airflow is down or overloaded.
    async fn read<'r, T: serde::de::DeserializeOwned>(
        &self,
        request: impl Fn() -> Request<'r>,
    ) -> Result<T, ToolError> {
        retry_read(|| async { self.client.send(request()).await.map_err(|e| self.tool_error(e)) }).await
    }

    /// Sends a write once: a write that may have reached Airflow is never repeated.
    async fn write<T: serde::de::DeserializeOwned>(&self, request: Request<'_>) -> Result<T, ToolError> {
        self.client.send(request).await.map_err(|e| self.tool_error(e))
    }

    async fn list_dags(&self, args: ListDagsArgs) -> Result<DagList, ToolError> {
        let limit = limit(args.limit)?;
        self.read(|| {
            Request::get(&["dags"], "DAGs")
                .query("limit", limit)
                .query("offset", args.offset.unwrap_or(0))
                .query("order_by", "dag_id")
                .query_opt("tags", args.tag.as_ref())
                .query_opt("owners", args.owner.as_ref())
                .query_opt("paused", args.paused)
                .query_opt("dag_id_pattern", args.dag_id_contains.as_ref())
        })
        .await
    }

    async fn get_dag(&self, args: DagIdArgs) -> Result<DagWithErrors, ToolError> {
        let dag_id = id("dag_id", &args.dag_id)?;
        let what = format!("DAG `{dag_id}`");
        let dag: Dag = match self.read(|| Request::get(&["dags", dag_id], what.clone())).await {
            Ok(dag) => dag,
            Err(ToolError::NotFound { what }) => return Err(self.missing_dag_hint(dag_id, what).await),
            Err(e) => return Err(e),
        };
        let import_errors = match &dag.relative_fileloc {
            Some(file) => {
                let errors: ImportErrorList = self
                    .read(|| {
                        Request::get(&["importErrors"], "import errors").query("filename", file).query("limit", 100)
                    })
                    .await?;
                errors.import_errors
            }
            None => Vec::new(),
        };
        Ok(DagWithErrors { dag, import_errors })
    }

    /// A DAG whose file fails to import never appears as a DAG: point at the errors.
    async fn missing_dag_hint(&self, dag_id: &str, what: String) -> ToolError {
        let errors: Result<ImportErrorList, ToolError> = self
            .read(|| {
                Request::get(&["importErrors"], "import errors").query("filename_pattern", dag_id).query("limit", 10)
            })
            .await;
        match errors {
            Ok(list) if !list.import_errors.is_empty() => {
                let files: Vec<&str> = list.import_errors.iter().map(|e| e.filename.as_str()).collect();
                ToolError::NotFound {
                    what: format!(
                        "{what} (but files named like it fail to import: {}; see get_import_errors)",
                        files.join(", ")
                    ),
                }
            }
            _ => ToolError::NotFound { what },
        }
    }

    async fn list_dag_runs(&self, args: ListDagRunsArgs) -> Result<DagRunList, ToolError> {
        let dag_id = id("dag_id", &args.dag_id)?;
        let limit = limit(args.limit)?;
        let states: Vec<&str> = args.state.iter().flatten().map(|s| s.as_str()).collect();
        self.read(|| {
            let mut request = Request::get(&["dags", dag_id, "dagRuns"], format!("DAG `{dag_id}`"))
                .query("limit", limit)
                .query("offset", args.offset.unwrap_or(0))
                .query("order_by", "-run_after");
            for state in &states {
                request = request.query("state", state);
            }
            request
        })
        .await
    }

    async fn get_dag_run(&self, args: DagRunArgs) -> Result<DagRun, ToolError> {
        let dag_id = id("dag_id", &args.dag_id)?;
        let run_id = id("dag_run_id", &args.dag_run_id)?;
        let what = format!("DAG run `{run_id}` of DAG `{dag_id}`");
        self.read(|| Request::get(&["dags", dag_id, "dagRuns", run_id], what.clone())).await
    }

    async fn list_task_instances(&self, args: ListTaskInstancesArgs) -> Result<TaskInstances, ToolError> {
        let (dag, run, states) = task_instance_scope(&args)?;
        let limit = limit(args.limit)?;
        let what = format!("DAG run `{run}` of DAG `{dag}`");
        let list: TaskInstanceList = self
            .read(|| {
                let mut request = Request::get(&["dags", &dag, "dagRuns", &run, "taskInstances"], what.clone())
                    .query("limit", limit)
                    .query("offset", args.offset.unwrap_or(0))
                    .query("order_by", "-start_date");
                for state in &states {
                    request = request.query("state", state);
                }
                request
            })
            .await?;
        Ok(TaskInstances { task_instances: list.task_instances, total_entries: list.total_entries })
    }

    async fn get_task_log(&self, args: TaskLogArgs) -> Result<TaskLog, ToolError> {
        let dag_id = id("dag_id", &args.dag_id)?;
        let run_id = id("dag_run_id", &args.dag_run_id)?;
        let task_id = id("task_id", &args.task_id)?;
        let caps = log_caps(&args, self.log_caps.head_chars, self.log_caps.tail_chars)?;
        let map_index = args.map_index.unwrap_or(-1);
        let what = format!("task `{task_id}` in run `{run_id}` of DAG `{dag_id}`");
        let try_number = match args.try_number {
            Some(0) => return Err(invalid("try_number", "tries are counted from 1")),
            Some(n) => n,
            None => {
                let map = map_index.to_string();
                let mut segments = vec!["dags", dag_id, "dagRuns", run_id, "taskInstances", task_id];
                if map_index >= 0 {
                    segments.push(&map);
                }
                let ti: TaskInstance = self.read(|| Request::get(&segments, what.clone())).await?;
                match ti.try_number {
                    Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
                    _ => return Err(ToolError::NotFound { what: format!("a log of {what} (it has not run yet)") }),
                }
            }
        };
        let try_text = try_number.to_string();
        let page: TaskLogPage = self
            .read(|| {
                Request::get(
                    &["dags", dag_id, "dagRuns", run_id, "taskInstances", task_id, "logs", &try_text],
                    format!("try {try_number} of {what}"),
                )
                .query("full_content", true)
                .query("map_index", map_index)
            })
            .await?;
        Ok(TaskLog::new(&args, try_number, logs::render(&page.content, caps)))
    }

    async fn get_import_errors(&self, args: ImportErrorsArgs) -> Result<ImportErrorList, ToolError> {
        let limit = limit(args.limit)?;
        self.read(|| {
            Request::get(&["importErrors"], "import errors")
                .query("limit", limit)
                .query("offset", args.offset.unwrap_or(0))
                .query_opt("filename_pattern", args.filename_contains.as_ref())
        })
        .await
    }

    async fn get_dag_source(&self, args: DagIdArgs) -> Result<DagSourceOut, ToolError> {
        let dag_id = id("dag_id", &args.dag_id)?;
        let what = format!("source of DAG `{dag_id}`");
        let source: DagSource = self.read(|| Request::get(&["dagSources", dag_id], what.clone())).await?;
        Ok(DagSourceOut {
            dag_id: source.dag_id,
            version_number: source.version_number,
            content: source.content.unwrap_or_default(),
        })
    }

    async fn trigger_dag_run(&self, args: TriggerDagRunArgs) -> Result<DagRun, ToolError> {
        #[derive(Serialize)]
        struct Body<'a> {
            // Required by the API; null means "now, without a data interval".
            logical_date: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            dag_run_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            conf: Option<&'a serde_json::Map<String, Value>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            note: Option<&'a str>,
        }
        let dag_id = id("dag_id", &args.dag_id)?;
        if let Some(run_id) = &args.dag_run_id {
            id("dag_run_id", run_id)?;
        }
        let body = Body {
            logical_date: None,
            dag_run_id: args.dag_run_id.as_deref(),
            conf: args.conf.as_ref(),
            note: args.note.as_deref(),
        };
        let run: DagRun = self
            .write(Request::new(Method::POST, &["dags", dag_id, "dagRuns"], format!("DAG `{dag_id}`")).json(&body))
            .await?;
        tracing::info!(dag_id, dag_run_id = %run.dag_run_id, "triggered an airflow DAG run");
        Ok(run)
    }

    async fn clear_task_instances(&self, args: ClearTaskInstancesArgs) -> Result<ClearedOut, ToolError> {
        let dag_id = id("dag_id", &args.dag_id)?;
        let run_id = id("dag_run_id", &args.dag_run_id)?;
        if let Some(task_ids) = &args.task_ids {
            if task_ids.is_empty() {
                return Err(invalid("task_ids", "must name at least one task, or be left out for all"));
            }
            for (i, task) in task_ids.iter().enumerate() {
                id(&format!("task_ids[{i}]"), task)?;
            }
        }
        let dry_run = args.dry_run.unwrap_or(false);
        let mut body = json!({
            "dry_run": dry_run,
            "dag_run_id": run_id,
            "only_failed": args.only_failed.unwrap_or(true),
            "include_downstream": args.include_downstream.unwrap_or(false),
            "reset_dag_runs": true,
        });
        if let Some(task_ids) = &args.task_ids {
            body["task_ids"] = json!(task_ids);
        }
        let cleared: TaskInstanceList = self
            .write(
                Request::new(Method::POST, &["dags", dag_id, "clearTaskInstances"], format!("DAG `{dag_id}`"))
                    .json(&body),
            )
            .await?;
        tracing::info!(
            dag_id,
            dag_run_id = run_id,
            dry_run,
            cleared = cleared.task_instances.len(),
            "cleared airflow task instances"
        );
        Ok(ClearedOut { dry_run, task_instances: cleared.task_instances })
    }

    async fn set_dag_paused(&self, args: SetDagPausedArgs) -> Result<PausedOut, ToolError> {
        let dag_id = id("dag_id", &args.dag_id)?;
        let dag: Dag = self
            .write(
                Request::new(Method::PATCH, &["dags", dag_id], format!("DAG `{dag_id}`"))
                    .query("update_mask", "is_paused")
                    .json(&json!({"is_paused": args.paused})),
            )
            .await?;
        tracing::info!(dag_id, is_paused = dag.is_paused, "set an airflow DAG's paused state");
        Ok(PausedOut { dag_id: dag.dag_id, is_paused: dag.is_paused })
    }

    fn tool_error(&self, error: AirflowError) -> ToolError {
        match error {
            AirflowError::NotFound { what, .. } => ToolError::NotFound { what },
            AirflowError::Rejected { .. } => ToolError::Refused(error.to_string()),
            // A 403 or another answer that repeating will not change: not worth a retry.
            AirflowError::Status { .. } if !error.is_transient() => ToolError::Refused(error.to_string()),
            AirflowError::BadUrl { .. }
            | AirflowError::Unreachable { .. }
            | AirflowError::LoginRefused { .. }
            | AirflowError::Status { .. }
            | AirflowError::Decode { .. } => ToolError::Backend {
                backend: BACKEND,
                address: self.client.address().to_string(),
                why: error.to_string(),
            },
        }
    }
}

#[async_trait]
impl Domain for AirflowDomain {
    fn id(&self) -> &'static str {
        BACKEND
    }

    fn description(&self) -> &'static str {
        "Apache Airflow: DAGs, runs, task instances, task logs and import errors; trigger, clear, pause"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        specs()
    }

    fn backend(&self) -> String {
        format!("{BACKEND} at {}", self.client.address())
    }

    async fn healthy(&self) -> Result<(), ToolError> {
        let health = self.client.health().await.map_err(|e| self.tool_error(e))?;
        match health.pointer("/metadatabase/status").and_then(Value::as_str) {
            Some("healthy") => Ok(()),
            other => Err(ToolError::Backend {
                backend: BACKEND,
                address: self.client.address().to_string(),
                why: format!("its metadata database is {}", other.unwrap_or("unknown")),
            }),
        }
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<Value, ToolError> {
        let span = tracing::info_span!("airflow_tool", tool = call.tool, caller = %call.caller.id());
        let work = self.dispatch(&call).instrument(span);
        tokio::select! {
            result = tokio::time::timeout(call.deadline, work) => result.map_err(|_| ToolError::Timeout(call.deadline))?,
            () = call.cancel.cancelled() => Err(ToolError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    fn domain() -> AirflowDomain {
        let config = AirflowConfig { url: "http://airflow.test:8080/".to_string(), ..AirflowConfig::default() };
        AirflowDomain::new(&config).unwrap()
    }

    #[test]
    fn client_errors_become_tool_errors_naming_the_backend() {
        let domain = domain();
        let down = domain.tool_error(AirflowError::Unreachable {
            address: "http://airflow.test:8080".to_string(),
            why: "connection refused".to_string(),
        });
        assert!(
            matches!(&down, ToolError::Backend { backend: "airflow", address, .. } if address == "http://airflow.test:8080"),
            "{down:?}"
        );
        let missing = domain.tool_error(AirflowError::NotFound { what: "DAG `x`".to_string(), detail: String::new() });
        assert_eq!(missing.to_string(), "DAG `x` not found");
        let conflict = domain.tool_error(AirflowError::Rejected {
            method: Method::POST,
            path: "/api/v2/dags/x/dagRuns".to_string(),
            status: StatusCode::CONFLICT,
            detail: "already exists".to_string(),
        });
        assert!(matches!(conflict, ToolError::Refused(_)), "{conflict:?}");
    }

    #[test]
    fn identity_and_catalog_line() {
        let domain = domain();
        assert_eq!(domain.id(), "airflow");
        assert!(domain.description().len() <= 100);
        assert_eq!(domain.backend(), "airflow at http://airflow.test:8080");
        assert_eq!(domain.tools().len(), 11);
    }
}
