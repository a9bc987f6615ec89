//! The read-only check: which statements a caller may send through `run_query`.
//!
//! The decision is made on a parsed statement, never on keywords in the text, so
//! `SELECT 'DROP TABLE x'` passes and `/* SELECT */ DROP TABLE x` does not. It never
//! does IO. The coordinator's own access control still applies; this check keeps an
//! agent (or a prompt injected into it) from asking for writes in the first place.

use sqlparser::ast::{Query, SetExpr, Statement};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// What kind of read a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// `SELECT`, `WITH ... SELECT`, `VALUES`, `TABLE t`.
    Query,
    /// `SHOW CATALOGS | SCHEMAS | TABLES | COLUMNS | CREATE ...`.
    Show,
    /// `DESCRIBE t`.
    Describe,
    /// `EXPLAIN` of anything, or `EXPLAIN ANALYZE` of a read.
    Explain,
}

/// Why a statement may not run; the text says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the statement is empty")]
    Empty,
    #[error("the statement does not parse: {0}")]
    Unparsable(String),
    #[error("only one statement at a time (got {0})")]
    Several(usize),
    #[error("{0} is not read-only; only SELECT, WITH, SHOW, DESCRIBE and EXPLAIN may run")]
    NotReadOnly(String),
    #[error("EXPLAIN ANALYZE runs its statement, and {0} is not read-only")]
    ExplainAnalyzeOfWrite(String),
}

/// Decides whether `sql` is one read-only statement.
pub fn check_read_only(sql: &str) -> Result<ReadKind, Refusal> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    if trimmed.is_empty() {
        return Err(Refusal::Empty);
    }
    let statements = Parser::parse_sql(&GenericDialect {}, trimmed).map_err(|e| Refusal::Unparsable(e.to_string()))?;
    match statements.as_slice() {
        [] => Err(Refusal::Empty),
        [one] => classify(one),
        many => Err(Refusal::Several(many.len())),
    }
}

fn classify(statement: &Statement) -> Result<ReadKind, Refusal> {
    match statement {
        Statement::Query(query) if query_is_read_only(query) => Ok(ReadKind::Query),
        Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowObjects(_) => Ok(ReadKind::Show),
        Statement::ExplainTable { .. } => Ok(ReadKind::Describe),
        Statement::Explain { analyze, options, statement, .. } => {
            let analyze_option = options.iter().flatten().any(|o| o.name.value.eq_ignore_ascii_case("analyze"));
            if (*analyze || analyze_option) && classify(statement).is_err() {
                return Err(Refusal::ExplainAnalyzeOfWrite(kind_of(statement)));
            }
            Ok(ReadKind::Explain)
        }
        other => Err(Refusal::NotReadOnly(kind_of(other))),
    }
}

/// A query is read-only when no part of it writes: data-modifying CTEs
/// (`WITH x AS (DELETE ...)`) and `SELECT ... INTO t` are writes.
fn query_is_read_only(query: &Query) -> bool {
    let ctes_read = query.with.iter().flat_map(|w| &w.cte_tables).all(|cte| query_is_read_only(&cte.query));
    ctes_read && set_expr_is_read_only(&query.body)
}

fn set_expr_is_read_only(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select.into.is_none(),
        SetExpr::Query(query) => query_is_read_only(query),
        SetExpr::SetOperation { left, right, .. } => set_expr_is_read_only(left) && set_expr_is_read_only(right),
        SetExpr::Values(_) | SetExpr::Table(_) => true,
        _ => false,
    }
}

/// The statement's leading keywords (`INSERT`, `CREATE TABLE`, `CALL`), for messages.
fn kind_of(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second] if matches!(first.to_ascii_uppercase().as_str(), "CREATE" | "DROP" | "ALTER" | "SET") => {
            format!("{} {}", first.to_ascii_uppercase(), second.to_ascii_uppercase())
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "the statement".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (statement, Ok(kind) or the start of the refusal's message).
    fn check(cases: &[(&str, Result<ReadKind, &str>)]) {
        for (sql, expected) in cases {
            let got = check_read_only(sql);
            match (expected, &got) {
                (Ok(kind), Ok(got_kind)) => assert_eq!(kind, got_kind, "{sql}"),
                (Err(prefix), Err(refusal)) => {
                    assert!(refusal.to_string().starts_with(prefix), "{sql}: {refusal} does not start with {prefix}")
                }
                _ => panic!("{sql}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn reads_pass() {
        use ReadKind::*;
        check(&[
            ("SELECT 1", Ok(Query)),
            ("select * from hive.warehouse.orders_daily where ds = '2026-11-24';", Ok(Query)),
            ("WITH d AS (SELECT ds FROM t) SELECT count(*) FROM d", Ok(Query)),
            ("SELECT a FROM t UNION ALL SELECT b FROM u", Ok(Query)),
            ("VALUES (1, 2)", Ok(Query)),
            ("SELECT 'DROP TABLE x; DELETE FROM y'", Ok(Query)),
            ("SHOW CATALOGS", Ok(Show)),
            ("SHOW SCHEMAS FROM hive", Ok(Show)),
            ("SHOW TABLES FROM hive.warehouse LIKE 'orders%'", Ok(Show)),
            ("SHOW COLUMNS FROM hive.warehouse.orders_daily", Ok(Show)),
            ("DESCRIBE hive.warehouse.orders_daily", Ok(Describe)),
            ("EXPLAIN SELECT * FROM t", Ok(Explain)),
            ("EXPLAIN ANALYZE SELECT * FROM t", Ok(Explain)),
            ("EXPLAIN INSERT INTO t SELECT 1", Ok(Explain)),
        ]);
    }

    #[test]
    fn writes_and_everything_else_are_refused() {
        check(&[
            ("", Err("the statement is empty")),
            ("  ;  ", Err("the statement is empty")),
            ("INSERT INTO t VALUES (1)", Err("INSERT is not read-only")),
            ("CREATE TABLE t AS SELECT 1", Err("CREATE TABLE is not read-only")),
            ("DROP TABLE hive.warehouse.orders_daily", Err("DROP TABLE is not read-only")),
            ("DELETE FROM t WHERE ds = '2026-11-24'", Err("DELETE is not read-only")),
            ("UPDATE t SET a = 1", Err("UPDATE is not read-only")),
            ("ALTER TABLE t ADD COLUMN c int", Err("ALTER TABLE is not read-only")),
            ("TRUNCATE TABLE t", Err("TRUNCATE is not read-only")),
            ("GRANT SELECT ON t TO u", Err("GRANT is not read-only")),
            ("CALL system.runtime.kill_query(query_id => 'q1', message => 'x')", Err("CALL is not read-only")),
            ("SET SESSION query_max_run_time = '1h'", Err("SET")),
            ("SELECT 1; DROP TABLE t", Err("only one statement at a time (got 2)")),
            ("SELECT 1; SELECT 2", Err("only one statement at a time (got 2)")),
            ("/* SELECT */ DROP TABLE t", Err("DROP TABLE is not read-only")),
            ("SELECT * INTO t2 FROM t", Err("SELECT is not read-only")),
            ("EXPLAIN ANALYZE INSERT INTO t SELECT 1", Err("EXPLAIN ANALYZE runs its statement, and INSERT")),
            ("SELEC 1", Err("the statement does not parse")),
        ]);
    }
}
