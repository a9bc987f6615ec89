//! The contract between a domain server's author and the framework: a [`Domain`]
//! names its tools ([`ToolSpec`]) and answers calls; the framework does transport,
//! authentication, per-tool authorization, approvals, metrics, usage and audit.
//!
//! A domain never sees the caller's credentials (no token passthrough): it talks to its
//! backend with its own, and gets only the validated arguments.

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::identity::Principal;

/// Behaviour hints a client may show; they are advice, the registry's policy is what
/// is enforced. Every field is spelled out because MCP's defaults are pessimistic
/// (`destructiveHint` and `openWorldHint` default to true).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl Hints {
    /// Reads a closed system (the domain's backend): safe to repeat.
    pub const READ: Hints = Hints { read_only: true, destructive: false, idempotent: true, open_world: false };
    /// Changes the backend, repeatable with the same effect (pausing a DAG).
    pub const WRITE_IDEMPOTENT: Hints =
        Hints { read_only: false, destructive: false, idempotent: true, open_world: false };
    /// Changes the backend in a way that cannot be taken back or repeated freely
    /// (triggering a run, killing a query, clearing task instances).
    pub const DESTRUCTIVE: Hints = Hints { read_only: false, destructive: true, idempotent: false, open_world: false };
}

/// One tool as the domain declares it.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// 1-128 of `[A-Za-z0-9_.-]`, unique within the domain.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// JSON Schema (2020-12) of the arguments object.
    pub input_schema: Map<String, Value>,
    /// JSON Schema of `structuredContent`; results must conform.
    pub output_schema: Map<String, Value>,
    pub hints: Hints,
    /// The domain's own view that each use needs a person's approval. The registry's
    /// policy decides; this is the default the server registers with.
    pub sensitive: bool,
}

impl ToolSpec {
    /// A tool whose schemas come from its argument and output types.
    pub fn new<A: JsonSchema, O: JsonSchema>(
        name: &'static str,
        title: &'static str,
        description: &'static str,
        hints: Hints,
    ) -> ToolSpec {
        ToolSpec {
            name,
            title,
            description,
            input_schema: schema_of::<A>(),
            output_schema: schema_of::<O>(),
            hints,
            sensitive: false,
        }
    }

    /// Marks the tool as needing a person's approval for every use.
    pub fn sensitive(mut self) -> ToolSpec {
        self.sensitive = true;
        self
    }
}

/// The JSON Schema of `T` as an object (MCP requires `type: object` at the top).
pub fn schema_of<T: JsonSchema>() -> Map<String, Value> {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    match serde_json::to_value(schema) {
        Ok(Value::Object(map)) => map,
        _ => {
            let mut map = Map::new();
            map.insert("type".into(), Value::String("object".into()));
            map
        }
    }
}

/// Reports progress of a long call to the client (`notifications/progress`), when it
/// asked for it; otherwise does nothing.
#[async_trait]
pub trait Progress: Send + Sync {
    async fn report(&self, progress: f64, total: Option<f64>, message: &str);
}

/// A [`Progress`] that reports nowhere (for tests and for clients that did not ask).
pub struct NoProgress;

#[async_trait]
impl Progress for NoProgress {
    async fn report(&self, _progress: f64, _total: Option<f64>, _message: &str) {}
}

/// One call, as the framework hands it to the domain after authorization (and, for a
/// sensitive tool, after the approval was consumed).
pub struct ToolCall<'a> {
    pub tool: &'a str,
    pub args: Map<String, Value>,
    /// Who asked; for audit and for the backend's own attribution (never credentials).
    pub caller: &'a Principal,
    pub progress: &'a dyn Progress,
    /// Cancelled when the client cancels or the call's deadline passes; backends
    /// should stop their work (e.g. `DELETE nextUri` on Presto) and return.
    pub cancel: CancellationToken,
    /// Time left before the framework gives up on this call.
    pub deadline: Duration,
}

impl ToolCall<'_> {
    /// The arguments as `T`; a mistake names the argument that is wrong.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        parse_args(&self.args)
    }
}

/// Parses tool arguments; the error names the offending argument (`limit: invalid
/// type: string "ten", expected u32`).
pub fn parse_args<T: DeserializeOwned>(args: &Map<String, Value>) -> Result<T, ToolError> {
    let value = Value::Object(args.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let name = if path == "." { String::new() } else { path };
        ToolError::InvalidArgument { name, why: e.into_inner().to_string() }
    })
}

/// Serializes a tool's output as its `structuredContent`.
pub fn output<T: Serialize>(value: &T) -> Result<Value, ToolError> {
    serde_json::to_value(value).map_err(|e| ToolError::Internal(format!("encoding the result: {e}")))
}

/// Why a call failed, in words a person can act on. Each becomes an `isError` result
/// (never a JSON-RPC error: the model should see it and may correct itself).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// `name` is the argument's path (`dag_id`, `filters.state`); empty for the
    /// arguments object as a whole.
    #[error("invalid argument `{name}`: {why}")]
    InvalidArgument { name: String, why: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// The backend could not be reached or answered with an error. `address` is where
    /// it was called (no credentials in it).
    #[error("{backend} at {address}: {why}")]
    Backend { backend: &'static str, address: String, why: String },
    /// The domain refuses this call on its own rules (a Presto statement that is not
    /// read-only, a result over the byte cap).
    #[error("refused: {0}")]
    Refused(String),
    #[error("cancelled")]
    Cancelled,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A domain server: the tools of one domain (Airflow, Presto, Spark) over its backend.
#[async_trait]
pub trait Domain: Send + Sync + 'static {
    /// Short name: `airflow`, `presto`, `spark`. Also the last part of the SPIFFE ID
    /// (`spiffe://<td>/server/<id>`) and of the registry name.
    fn id(&self) -> &'static str;
    /// One line for the registry's catalog (<= 100 characters).
    fn description(&self) -> &'static str;
    fn tools(&self) -> Vec<ToolSpec>;
    /// `name at address` of the backend, for health and error messages.
    fn backend(&self) -> String;
    /// Whether the backend answers now (for `/readyz` and the registry's prober).
    async fn healthy(&self) -> Result<(), ToolError>;
    /// Runs one call. Reads that are idempotent may retry (see [`retry_read`]); writes
    /// must not retry on their own.
    async fn call(&self, call: ToolCall<'_>) -> Result<Value, ToolError>;
}

/// Retries an idempotent read with exponential backoff while the backend is
/// unreachable or overloaded; any other error returns at once.
pub async fn retry_read<T, F, Fut>(mut op: F) -> Result<T, ToolError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ToolError>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(3)
        .with_jitter();
    (|| op()).retry(policy).when(|e: &ToolError| matches!(e, ToolError::Backend { .. })).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Args {
        dag_id: String,
        limit: Option<u32>,
    }

    #[test]
    fn a_wrong_argument_is_named() {
        let mut args = Map::new();
        args.insert("dag_id".into(), Value::String("etl".into()));
        args.insert("limit".into(), Value::String("ten".into()));
        let err = parse_args::<Args>(&args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("invalid argument `limit`"), "{err}");
    }

    #[test]
    fn a_missing_argument_is_named() {
        let err = parse_args::<Args>(&Map::new()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("dag_id"), "{err}");
    }

    #[test]
    fn schemas_are_objects() {
        let schema = schema_of::<Args>();
        assert_eq!(schema.get("type"), Some(&Value::String("object".into())));
    }
}
