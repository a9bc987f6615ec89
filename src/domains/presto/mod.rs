//! The Presto / Trino domain: read-only SQL, catalog browsing, the coordinator's query
//! list, and killing a runaway query (sensitive).
//!
//! Invariant: the only statements that are not caller SQL passed through
//! [`sql::check_read_only`] are the ones this module builds itself from validated
//! names and ids (see [`tools`]); `kill_query` is one of them.

pub mod client;
pub mod config;
pub mod sql;
pub mod tools;

use async_trait::async_trait;
use serde_json::Value;

use crate::mcp::tool::output;
use crate::mcp::{Domain, Hints, ToolCall, ToolError, ToolSpec, retry_read};
use client::{Limits, PrestoClient, PrestoError, QueryResult};
use config::PrestoConfig;
use tools::*;

const BACKEND: &str = "presto";

/// The Presto domain over one coordinator.
#[derive(Clone)]
pub struct PrestoDomain {
    client: PrestoClient,
}

impl PrestoDomain {
    pub fn new(config: PrestoConfig) -> Result<PrestoDomain, ToolError> {
        let client = PrestoClient::new(config).map_err(to_tool_error)?;
        Ok(PrestoDomain { client })
    }

    pub fn client(&self) -> &PrestoClient {
        &self.client
    }

    /// Runs a statement this domain built or checked; reads retry while the coordinator is down.
    async fn read(&self, call: &ToolCall<'_>, sql: &str, limits: Limits) -> Result<QueryResult, ToolError> {
        let info = call.caller.id();
        // Only an unreachable or overloaded coordinator is worth another try; a query
        // that failed on it (even for a backend reason) would fail again.
        let attempt = || async {
            match self.client.execute(sql, limits, &call.cancel, Some(&info)).await {
                Ok(result) => Ok(Ok(result)),
                Err(e @ PrestoError::Query { .. }) => Ok(Err(to_tool_error(e))),
                Err(e) => Err(to_tool_error(e)),
            }
        };
        retry_read(attempt).await?
    }

    /// Limits for a call: the configured ones, with the deadline the framework gives.
    fn limits(&self, call: &ToolCall<'_>) -> Limits {
        let mut limits = self.client.default_limits();
        limits.timeout = limits.timeout.min(call.deadline);
        limits
    }

    async fn names(&self, call: &ToolCall<'_>, sql: &str) -> Result<Value, ToolError> {
        let result = self.read(call, sql, self.limits(call)).await?;
        let names = result.rows.iter().filter_map(|r| r.first().and_then(Value::as_str)).map(str::to_string).collect();
        output(&NamesOutput { names })
    }

    async fn queries(&self, call: &ToolCall<'_>, filter: &str, limit: u32) -> Result<Vec<QueryInfo>, ToolError> {
        let sql =
            format!("SELECT {QUERY_COLUMNS} FROM system.runtime.queries {filter} ORDER BY created DESC LIMIT {limit}");
        let result = self.read(call, &sql, self.limits(call)).await?;
        Ok(result.rows.iter().map(|row| QueryInfo::from_row(&result, row)).collect())
    }

    async fn one_query(&self, call: &ToolCall<'_>, id: &str) -> Result<QueryInfo, ToolError> {
        let id = query_id(id).map_err(|e| invalid("query_id", e))?;
        let filter = format!("WHERE query_id = {}", literal(&id).map_err(|e| invalid("query_id", e))?);
        self.queries(call, &filter, 1).await?.pop().ok_or(ToolError::NotFound { what: format!("query {id}") })
    }
}

#[async_trait]
impl Domain for PrestoDomain {
    fn id(&self) -> &'static str {
        BACKEND
    }

    fn description(&self) -> &'static str {
        "Presto/Trino: read-only SQL, catalogs and tables, the coordinator's queries, kill a query"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec::new::<RunQueryArgs, QueryOutput>(
                "run_query",
                "Run a read-only query",
                "Runs one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN). Results are capped in rows and \
                 bytes; a capped result says so (truncated, note).",
                Hints::READ,
            ),
            ToolSpec::new::<ExplainArgs, PlanOutput>(
                "explain",
                "Explain a statement",
                "Shows the coordinator's plan for a statement without running it.",
                Hints::READ,
            ),
            ToolSpec::new::<NoArgs, NamesOutput>("list_catalogs", "List catalogs", "Lists the catalogs.", Hints::READ),
            ToolSpec::new::<CatalogArgs, NamesOutput>(
                "list_schemas",
                "List schemas",
                "Lists the schemas of a catalog.",
                Hints::READ,
            ),
            ToolSpec::new::<SchemaArgs, NamesOutput>(
                "list_tables",
                "List tables",
                "Lists the tables of a schema, optionally those matching a LIKE pattern.",
                Hints::READ,
            ),
            ToolSpec::new::<TableArgs, TableOutput>(
                "describe_table",
                "Describe a table",
                "Columns of a table with their types; partition keys are named.",
                Hints::READ,
            ),
            ToolSpec::new::<RunningQueriesArgs, QueriesOutput>(
                "list_running_queries",
                "List running queries",
                "Queries the coordinator knows (system.runtime.queries), newest first; by default only queued and \
                 running ones.",
                Hints::READ,
            ),
            ToolSpec::new::<QueryIdArgs, QueryInfo>(
                "get_query",
                "Get a query",
                "One query from system.runtime.queries: state, user, text, times, error.",
                Hints::READ,
            ),
            ToolSpec::new::<KillQueryArgs, KillOutput>(
                "kill_query",
                "Kill a query",
                "Kills a running query on the coordinator (system.runtime.kill_query). Needs a person's approval.",
                Hints::DESTRUCTIVE,
            )
            .sensitive(),
        ]
    }

    fn backend(&self) -> String {
        format!("{BACKEND} at {}", self.client.address())
    }

    async fn healthy(&self) -> Result<(), ToolError> {
        self.client.info().await.map(|_| ()).map_err(to_tool_error)
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<Value, ToolError> {
        tracing::debug!(tool = call.tool, caller = %call.caller.id(), "presto tool call");
        match call.tool {
            "run_query" => {
                let args: RunQueryArgs = call.args()?;
                sql::check_read_only(&args.sql).map_err(|r| ToolError::Refused(r.to_string()))?;
                let mut limits = self.limits(&call);
                if let Some(max) = args.max_rows {
                    limits.max_rows = limits.max_rows.min(max.max(1));
                }
                output(&QueryOutput::from(self.read(&call, &args.sql, limits).await?))
            }
            "explain" => {
                let args: ExplainArgs = call.args()?;
                let statement = format!("EXPLAIN {}", args.sql.trim().trim_end_matches(';'));
                match sql::check_read_only(&statement) {
                    Ok(sql::ReadKind::Explain) => {}
                    Ok(_) => return Err(invalid("sql", "is not a statement to explain")),
                    Err(refusal) => return Err(ToolError::Refused(refusal.to_string())),
                }
                let result = self.read(&call, &statement, self.limits(&call)).await?;
                let plan = result.rows.iter().filter_map(|r| r.first().and_then(Value::as_str)).collect::<Vec<_>>();
                output(&PlanOutput { query_id: result.query_id.clone(), plan: plan.join("\n") })
            }
            "list_catalogs" => {
                let _: NoArgs = call.args()?;
                self.names(&call, "SHOW CATALOGS").await
            }
            "list_schemas" => {
                let args: CatalogArgs = call.args()?;
                let catalog = identifier(&args.catalog).map_err(|e| invalid("catalog", e))?;
                self.names(&call, &format!("SHOW SCHEMAS FROM {catalog}")).await
            }
            "list_tables" => {
                let args: SchemaArgs = call.args()?;
                let catalog = identifier(&args.catalog).map_err(|e| invalid("catalog", e))?;
                let schema = identifier(&args.schema).map_err(|e| invalid("schema", e))?;
                let mut statement = format!("SHOW TABLES FROM {catalog}.{schema}");
                if let Some(like) = &args.like {
                    statement.push_str(&format!(" LIKE {}", literal(like).map_err(|e| invalid("like", e))?));
                }
                self.names(&call, &statement).await
            }
            "describe_table" => {
                let args: TableArgs = call.args()?;
                let catalog = identifier(&args.catalog).map_err(|e| invalid("catalog", e))?;
                let schema = identifier(&args.schema).map_err(|e| invalid("schema", e))?;
                let table = identifier(&args.table).map_err(|e| invalid("table", e))?;
                let result =
                    self.read(&call, &format!("DESCRIBE {catalog}.{schema}.{table}"), self.limits(&call)).await?;
                let text = |row: &[Value], name: &str| {
                    result.get(row, name).and_then(Value::as_str).unwrap_or_default().to_string()
                };
                let columns: Vec<ColumnInfo> = result
                    .rows
                    .iter()
                    .map(|row| ColumnInfo {
                        name: text(row, "Column"),
                        type_name: text(row, "Type"),
                        extra: text(row, "Extra"),
                        comment: text(row, "Comment"),
                    })
                    .collect();
                let partition_keys =
                    columns.iter().filter(|c| c.extra.contains("partition key")).map(|c| c.name.clone()).collect();
                let table = format!("{}.{}.{}", args.catalog, args.schema, args.table);
                output(&TableOutput { table, columns, partition_keys })
            }
            "list_running_queries" => {
                let args: RunningQueriesArgs = call.args()?;
                let filter = if args.include_finished { "" } else { "WHERE state IN ('QUEUED', 'RUNNING')" };
                let limit = args.limit.unwrap_or(50).clamp(1, 1000);
                output(&QueriesOutput { queries: self.queries(&call, filter, limit).await? })
            }
            "get_query" => {
                let args: QueryIdArgs = call.args()?;
                output(&self.one_query(&call, &args.query_id).await?)
            }
            "kill_query" => {
                let args: KillQueryArgs = call.args()?;
                let id = query_id(&args.query_id).map_err(|e| invalid("query_id", e))?;
                let message = args.message.unwrap_or_else(|| format!("killed by inquest for {}", call.caller.id()));
                let message = literal(&message).map_err(|e| invalid("message", e))?;
                let before = self.one_query(&call, &id).await?;
                if !matches!(
                    before.state.as_str(),
                    "QUEUED"
                        | "RUNNING"
                        | "PLANNING"
                        | "STARTING"
                        | "WAITING_FOR_RESOURCES"
                        | "DISPATCHING"
                        | "FINISHING"
                ) {
                    return Err(ToolError::Refused(format!("query {id} is not running ({})", before.state)));
                }
                // Built here from a validated id and a quoted literal; the read-only check
                // would (rightly) refuse a CALL from a caller.
                let statement = format!(
                    "CALL system.runtime.kill_query(query_id => {}, message => {message})",
                    literal(&id).map_err(|e| invalid("query_id", e))?
                );
                tracing::info!(query_id = %id, caller = %call.caller.id(), "killing a presto query");
                // A write: not retried.
                self.client
                    .execute(&statement, self.limits(&call), &call.cancel, Some(&call.caller.id()))
                    .await
                    .map_err(to_tool_error)?;
                output(&KillOutput { query_id: id, killed: true, state_before: before.state })
            }
            other => Err(ToolError::UnknownTool(other.to_string())),
        }
    }
}

/// User errors that say the query was stopped, not that the statement was wrong.
const STOPPED: &[&str] = &["ADMINISTRATIVELY_KILLED", "USER_CANCELED", "EXCEEDED_TIME_LIMIT", "QUERY_REJECTED"];

fn invalid(name: &str, why: impl std::fmt::Display) -> ToolError {
    ToolError::InvalidArgument { name: name.to_string(), why: why.to_string() }
}

/// Maps client errors to what the caller can act on: a query's own mistake is not a
/// backend outage (and so is not retried).
fn to_tool_error(error: PrestoError) -> ToolError {
    match error {
        // The statement's own mistake (TABLE_NOT_FOUND, SYNTAX_ERROR, ...): the
        // caller can fix it, and retrying would not help.
        PrestoError::Query { ref error_name, ref error_type, ref message, .. }
            if error_type == "USER_ERROR" && !STOPPED.contains(&error_name.as_str()) =>
        {
            ToolError::InvalidArgument { name: "sql".to_string(), why: format!("{error_name}: {message}") }
        }
        PrestoError::Query { .. } => backend_error(&error),
        PrestoError::Timeout { after, .. } => ToolError::Timeout(after),
        PrestoError::Cancelled { .. } => ToolError::Cancelled,
        PrestoError::Unreachable { .. }
        | PrestoError::Http { .. }
        | PrestoError::Unauthorized { .. }
        | PrestoError::Protocol { .. } => backend_error(&error),
    }
}

fn backend_error(error: &PrestoError) -> ToolError {
    let address = match error {
        PrestoError::Unreachable { address, .. }
        | PrestoError::Http { address, .. }
        | PrestoError::Unauthorized { address, .. }
        | PrestoError::Protocol { address, .. }
        | PrestoError::Query { address, .. }
        | PrestoError::Timeout { address, .. }
        | PrestoError::Cancelled { address, .. } => address.clone(),
    };
    ToolError::Backend { backend: BACKEND, address, why: error.to_string() }
}
