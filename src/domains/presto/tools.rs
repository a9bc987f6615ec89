//! The Presto tools' arguments and outputs, and the statements the domain builds
//! itself from validated names (never by pasting caller text into SQL).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{Column, QueryResult};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunQueryArgs {
    /// One read-only statement: SELECT, WITH, SHOW, DESCRIBE or EXPLAIN.
    pub sql: String,
    /// At most this many rows (never more than the server's own cap).
    pub max_rows: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainArgs {
    /// The statement to plan (not run), e.g. `SELECT ... FROM hive.warehouse.orders_daily`.
    pub sql: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogArgs {
    pub catalog: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaArgs {
    pub catalog: String,
    pub schema: String,
    /// A SQL LIKE pattern on the table name (`orders%`).
    pub like: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableArgs {
    pub catalog: String,
    pub schema: String,
    pub table: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunningQueriesArgs {
    /// Also list finished and failed queries (default: only QUEUED and RUNNING ones).
    #[serde(default)]
    pub include_finished: bool,
    /// At most this many, newest first (default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryIdArgs {
    /// A query id as the coordinator shows it, e.g. `20261126_184914_00001_d48be`.
    pub query_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillQueryArgs {
    pub query_id: String,
    /// Shown to the query's owner as the reason.
    pub message: Option<String>,
}

/// Rows of a query, with its columns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct QueryOutput {
    pub query_id: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub row_count: usize,
    /// True when the result was cut at a cap; `note` says which.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl From<QueryResult> for QueryOutput {
    fn from(r: QueryResult) -> QueryOutput {
        QueryOutput {
            query_id: r.query_id,
            columns: r.columns,
            row_count: r.rows.len(),
            rows: r.rows,
            truncated: r.truncated.is_some(),
            note: r.truncated.map(|why| format!("result truncated: {why}")),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanOutput {
    pub query_id: String,
    pub plan: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NamesOutput {
    pub names: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `partition key` for Hive partition columns.
    pub extra: String,
    pub comment: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TableOutput {
    pub table: String,
    pub columns: Vec<ColumnInfo>,
    pub partition_keys: Vec<String>,
}

/// One row of `system.runtime.queries`.
#[derive(Debug, Serialize, JsonSchema, PartialEq)]
pub struct QueryInfo {
    pub query_id: String,
    pub state: String,
    pub user: Option<String>,
    pub source: Option<String>,
    pub query: String,
    pub created: Option<String>,
    pub end: Option<String>,
    pub error_type: Option<String>,
    pub error_code: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct QueriesOutput {
    pub queries: Vec<QueryInfo>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct KillOutput {
    pub query_id: String,
    pub killed: bool,
    pub state_before: String,
}

/// Columns read from `system.runtime.queries`.
pub const QUERY_COLUMNS: &str = "query_id, state, \"user\", source, query, created, \"end\", error_type, error_code";

impl QueryInfo {
    pub fn from_row(result: &QueryResult, row: &[Value]) -> QueryInfo {
        let text = |name: &str| result.get(row, name).and_then(Value::as_str).map(str::to_string);
        QueryInfo {
            query_id: text("query_id").unwrap_or_default(),
            state: text("state").unwrap_or_default(),
            user: text("user"),
            source: text("source"),
            query: text("query").unwrap_or_default(),
            created: text("created"),
            end: text("end"),
            error_type: text("error_type"),
            error_code: text("error_code"),
        }
    }
}

/// Why a name or id from a caller cannot be used in a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than 128 characters")]
    TooLong,
    #[error("must not contain control characters")]
    Control,
    #[error("is not a query id (like 20261126_184914_00001_d48be)")]
    NotAQueryId,
}

/// `name` as a quoted SQL identifier (`"orders_daily"`); quotes inside are doubled.
pub fn identifier(name: &str) -> Result<String, NameError> {
    check_text(name)?;
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `text` as a SQL string literal; quotes inside are doubled.
pub fn literal(text: &str) -> Result<String, NameError> {
    if text.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(format!("'{}'", text.replace('\'', "''")))
}

/// A Trino/Presto query id: `YYYYMMDD_HHMMSS_NNNNN_xxxxx`.
pub fn query_id(id: &str) -> Result<String, NameError> {
    let parts: Vec<&str> = id.split('_').collect();
    let shaped = matches!(parts.as_slice(), [date, time, number, suffix]
        if date.len() == 8 && time.len() == 6 && !number.is_empty() && !suffix.is_empty()
            && [date, time, number].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
            && suffix.bytes().all(|b| b.is_ascii_alphanumeric()));
    if shaped && id.len() <= 64 { Ok(id.to_string()) } else { Err(NameError::NotAQueryId) }
}

fn check_text(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > 128 {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_and_ids_checked() {
        assert_eq!(identifier("orders_daily"), Ok("\"orders_daily\"".to_string()));
        assert_eq!(identifier("a\"b"), Ok("\"a\"\"b\"".to_string()));
        assert_eq!(identifier(""), Err(NameError::Empty));
        assert_eq!(identifier("a\nb"), Err(NameError::Control));
        assert_eq!(literal("it's"), Ok("'it''s'".to_string()));
        assert!(query_id("20261126_184914_00001_d48be").is_ok());
        for bad in ["", "x", "20261126_184914_00001_d48be'); DROP TABLE t; --", "2026_1_2_3", "20261126_184914_00001_"]
        {
            assert_eq!(query_id(bad), Err(NameError::NotAQueryId), "{bad}");
        }
    }
}
