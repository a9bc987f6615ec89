//! Usage: servers report each tool invocation; the registry counts invocations,
//! active users (distinct principals) and estimated hours saved, by month and team.
//!
//! Each report is kept raw (`registry_usage_events`) and folded, in the same
//! transaction, into a monthly rollup per (month, team, server, tool) and a set of
//! (month, server, principal, team) for distinct users, so a summary reads a few
//! hundred rows however many invocations there were. The minutes a call saved are
//! taken from the policy when it is reported, so changing an estimate later does not
//! rewrite history. Times are the registry's clock, not the reporter's.
//!
//! Only a server reports for itself: the caller's SPIFFE ID must be the server's
//! registered `service_identity`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};
use tracing::debug;

use super::RegistryState;
use super::catalog::{CatalogError, Failure, is_valid_tool_name, parse_body};
use super::server_json::Violation;
use crate::identity::{Authenticated, Principal};
use crate::store::{Backend, SqlStore, StoreError, to_ms};

/// Everything usage can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Failure {
        Failure::Api(crate::web::ApiError::internal(e))
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    /// The server refused it (policy, or an approval that was not given).
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Denied => "denied",
        }
    }
}

/// The most reports one `POST /v0.1/x/usage` may carry.
pub const MAX_BATCH: usize = 1000;

/// `POST /v0.1/x/usage`: one invocation, as its server reports it. The body is one
/// report or an array of up to [`MAX_BATCH`], recorded together or not at all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    pub server: String,
    pub tool: String,
    /// Who invoked it: `user:<subject>` or a SPIFFE ID.
    pub principal: String,
    pub outcome: Outcome,
    pub latency_ms: u64,
    #[serde(default)]
    pub team: Option<String>,
}

impl UsageReport {
    fn violations(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        if !is_valid_tool_name(&self.tool) {
            v.push(Violation::new("tool", "tool names are 1 to 128 of A-Z a-z 0-9 _ . -"));
        }
        if self.principal.is_empty() || self.principal.len() > 256 {
            v.push(Violation::new("principal", "must be 1 to 256 characters long"));
        }
        if self.team.as_ref().is_some_and(|t| t.is_empty() || t.len() > 100) {
            v.push(Violation::new("team", "must be 1 to 100 characters long"));
        }
        v
    }
}

/// One invocation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub server: String,
    pub tool: String,
    pub principal: String,
    pub team: Option<String>,
    pub outcome: Outcome,
    pub latency_ms: u64,
    /// What the call saved a person (0 unless it succeeded).
    pub minutes_saved: u32,
    pub at: DateTime<Utc>,
}

/// Counts of one (month, team).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamMonthRow {
    pub month: String,
    /// `""`: reported without a team.
    pub team: String,
    pub invocations: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub denied: i64,
    pub minutes_saved: i64,
    pub latency_ms_sum: i64,
}

/// What a summary is computed from; distinct users do not add up, so each grouping
/// is counted by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRows {
    pub counts: Vec<TeamMonthRow>,
    pub users_by_month: Vec<(String, i64)>,
    pub users_by_month_team: Vec<(String, String, i64)>,
    pub users_by_team: Vec<(String, i64)>,
    pub users: i64,
}

/// Usage's storage. [`SqlStore`] implements it; tests may put a fake here.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Records `events` in one transaction: all of them or none.
    async fn record_usage(&self, events: &[UsageEvent]) -> Result<(), UsageError>;
    /// Rows of the months `from..=to` (`YYYY-MM`), of one team or all.
    async fn usage_rows(&self, from: &str, to: &str, team: Option<&str>) -> Result<UsageRows, UsageError>;
}

/// Totals of a month, a team, or the whole range.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub invocations: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub denied: i64,
    /// Distinct principals.
    pub active_users: i64,
    pub hours_saved: f64,
    pub avg_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamUsage {
    /// `None`: invocations reported without a team.
    pub team: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthUsage {
    /// `YYYY-MM`.
    pub month: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub teams: Vec<TeamUsage>,
}

/// `GET /v0.1/x/usage`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageSummary {
    pub from: String,
    pub to: String,
    pub team: Option<String>,
    pub total: Totals,
    pub teams: Vec<TeamUsage>,
    /// Every month of the range, oldest first, empty months included.
    pub months: Vec<MonthUsage>,
}

/// `YYYY-MM` of a time (UTC).
pub fn month_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}

/// The month a `from`/`to` parameter names: `YYYY-MM`, `YYYY-MM-DD` or an RFC 3339 time.
pub fn parse_month(s: &str) -> Option<(i32, u32)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some((t.year(), t.month()));
    }
    let mut parts = s.splitn(3, '-');
    let year: i32 = parts.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let month: u32 = parts.next().filter(|m| m.len() == 2)?.parse().ok()?;
    if let Some(day) = parts.next() {
        chrono::NaiveDate::from_ymd_opt(year, month, day.parse().ok()?)?;
    }
    (1..=12).contains(&month).then_some((year, month))
}

/// The months `from..=to`, as `YYYY-MM`.
pub fn months(from: (i32, u32), to: (i32, u32)) -> Vec<String> {
    let mut out = Vec::new();
    let (mut y, mut m) = from;
    while (y, m) <= to {
        out.push(format!("{y:04}-{m:02}"));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

/// Sums the rows into a summary of `months` (pure).
pub fn aggregate(range: &[String], team: Option<String>, rows: &UsageRows) -> UsageSummary {
    let mut by_month: BTreeMap<&str, (Sums, BTreeMap<&str, Sums>)> = BTreeMap::new();
    let mut by_team: BTreeMap<&str, Sums> = BTreeMap::new();
    let mut total = Sums::default();
    for r in &rows.counts {
        let (month, teams) = by_month.entry(&r.month).or_default();
        for sums in [month, teams.entry(&r.team).or_default(), by_team.entry(&r.team).or_default(), &mut total] {
            sums.add(r);
        }
    }
    for (month, n) in &rows.users_by_month {
        by_month.entry(month).or_default().0.active_users = *n;
    }
    for (month, t, n) in &rows.users_by_month_team {
        by_month.entry(month).or_default().1.entry(t).or_default().active_users = *n;
    }
    for (t, n) in &rows.users_by_team {
        by_team.entry(t).or_default().active_users = *n;
    }
    total.active_users = rows.users;
    let teams_of = |teams: BTreeMap<&str, Sums>| -> Vec<TeamUsage> {
        let name = |t: &str| (!t.is_empty()).then(|| t.to_string());
        teams.into_iter().map(|(t, sums)| TeamUsage { team: name(t), totals: sums.totals() }).collect()
    };
    let months = range
        .iter()
        .map(|m| {
            let (sums, teams) = by_month.remove(m.as_str()).unwrap_or_default();
            MonthUsage { month: m.clone(), totals: sums.totals(), teams: teams_of(teams) }
        })
        .collect();
    UsageSummary {
        from: range.first().cloned().unwrap_or_default(),
        to: range.last().cloned().unwrap_or_default(),
        team,
        total: total.totals(),
        teams: teams_of(by_team),
        months,
    }
}

/// Running sums of one grouping, turned into [`Totals`] at the end.
#[derive(Debug, Default)]
struct Sums {
    invocations: i64,
    succeeded: i64,
    failed: i64,
    denied: i64,
    minutes_saved: i64,
    latency_ms: i64,
    active_users: i64,
}

impl Sums {
    fn add(&mut self, r: &TeamMonthRow) {
        self.invocations += r.invocations;
        self.succeeded += r.succeeded;
        self.failed += r.failed;
        self.denied += r.denied;
        self.minutes_saved += r.minutes_saved;
        self.latency_ms += r.latency_ms_sum;
    }

    /// Hours saved and the average latency, to one decimal.
    fn totals(&self) -> Totals {
        let tenth = |x: f64| (x * 10.0).round() / 10.0;
        Totals {
            invocations: self.invocations,
            succeeded: self.succeeded,
            failed: self.failed,
            denied: self.denied,
            active_users: self.active_users,
            hours_saved: tenth(self.minutes_saved as f64 / 60.0),
            avg_latency_ms: (self.invocations > 0).then(|| tenth(self.latency_ms as f64 / self.invocations as f64)),
        }
    }
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn record_usage(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        let mut tx = self.begin_write().await?;
        // Each event updates its month's counters and then its server's row. Two
        // batches of one server (its replicas report apart) would take those locks in
        // different orders and deadlock; taking the servers' rows first, in name
        // order, orders every batch the same way. (SQLite's writes are serialized.)
        if self.backend == Backend::Postgres {
            let mut servers: Vec<&str> = events.iter().map(|e| e.server.as_str()).collect();
            servers.sort_unstable();
            servers.dedup();
            for server in servers {
                sqlx::query("SELECT 1 FROM registry_servers WHERE name = $1 FOR UPDATE")
                    .bind(server)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for e in events {
            record_one(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage_rows(&self, from: &str, to: &str, team: Option<&str>) -> Result<UsageRows, UsageError> {
        let filtered = i64::from(team.is_some());
        let team = team.unwrap_or("");
        let counts = sqlx::query(
            "SELECT month, team, CAST(SUM(invocations) AS BIGINT) AS invocations, \
             CAST(SUM(succeeded) AS BIGINT) AS succeeded, CAST(SUM(failed) AS BIGINT) AS failed, \
             CAST(SUM(denied) AS BIGINT) AS denied, CAST(SUM(minutes_saved) AS BIGINT) AS minutes_saved, \
             CAST(SUM(latency_ms_sum) AS BIGINT) AS latency_ms_sum \
             FROM registry_usage_monthly WHERE month >= $1 AND month <= $2 AND ($3 = 0 OR team = $4) \
             GROUP BY month, team ORDER BY month, team",
        )
        .bind(from)
        .bind(to)
        .bind(filtered)
        .bind(team)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| {
            Ok(TeamMonthRow {
                month: r.try_get("month")?,
                team: r.try_get("team")?,
                invocations: r.try_get("invocations")?,
                succeeded: r.try_get("succeeded")?,
                failed: r.try_get("failed")?,
                denied: r.try_get("denied")?,
                minutes_saved: r.try_get("minutes_saved")?,
                latency_ms_sum: r.try_get("latency_ms_sum")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let users_by_month = sqlx::query(
            "SELECT month, COUNT(DISTINCT principal) AS n FROM registry_usage_principals \
             WHERE month >= $1 AND month <= $2 AND ($3 = 0 OR team = $4) GROUP BY month",
        )
        .bind(from)
        .bind(to)
        .bind(filtered)
        .bind(team)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("month")?, r.try_get("n")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let users_by_month_team = sqlx::query(
            "SELECT month, team, COUNT(DISTINCT principal) AS n FROM registry_usage_principals \
             WHERE month >= $1 AND month <= $2 AND ($3 = 0 OR team = $4) GROUP BY month, team",
        )
        .bind(from)
        .bind(to)
        .bind(filtered)
        .bind(team)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("month")?, r.try_get("team")?, r.try_get("n")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let users_by_team = sqlx::query(
            "SELECT team, COUNT(DISTINCT principal) AS n FROM registry_usage_principals \
             WHERE month >= $1 AND month <= $2 AND ($3 = 0 OR team = $4) GROUP BY team",
        )
        .bind(from)
        .bind(to)
        .bind(filtered)
        .bind(team)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("team")?, r.try_get("n")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let users: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT principal) FROM registry_usage_principals \
             WHERE month >= $1 AND month <= $2 AND ($3 = 0 OR team = $4)",
        )
        .bind(from)
        .bind(to)
        .bind(filtered)
        .bind(team)
        .fetch_one(&self.read)
        .await?;
        Ok(UsageRows { counts, users_by_month, users_by_month_team, users_by_team, users })
    }
}

/// One event's rows: the event, its month's counters, its principal, and the catalog's
/// counters of its server.
async fn record_one(tx: &mut Transaction<'static, Any>, e: &UsageEvent) -> Result<(), UsageError> {
    let month = month_of(e.at);
    let team = e.team.as_deref().unwrap_or("");
    let latency = i64::try_from(e.latency_ms).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO registry_usage_events \
         (server, tool, principal, team, outcome, latency_ms, minutes_saved, month, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&e.server)
    .bind(&e.tool)
    .bind(&e.principal)
    .bind(team)
    .bind(e.outcome.as_str())
    .bind(latency)
    .bind(i64::from(e.minutes_saved))
    .bind(&month)
    .bind(to_ms(e.at))
    .execute(&mut **tx)
    .await?;
    let is = |o: Outcome| i64::from(e.outcome == o);
    sqlx::query(
        "INSERT INTO registry_usage_monthly \
         (month, team, server, tool, invocations, succeeded, failed, denied, latency_ms_sum, minutes_saved) \
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9) \
         ON CONFLICT (month, team, server, tool) DO UPDATE SET \
         invocations = registry_usage_monthly.invocations + 1, \
         succeeded = registry_usage_monthly.succeeded + excluded.succeeded, \
         failed = registry_usage_monthly.failed + excluded.failed, \
         denied = registry_usage_monthly.denied + excluded.denied, \
         latency_ms_sum = registry_usage_monthly.latency_ms_sum + excluded.latency_ms_sum, \
         minutes_saved = registry_usage_monthly.minutes_saved + excluded.minutes_saved",
    )
    .bind(&month)
    .bind(team)
    .bind(&e.server)
    .bind(&e.tool)
    .bind(is(Outcome::Ok))
    .bind(is(Outcome::Error))
    .bind(is(Outcome::Denied))
    .bind(latency)
    .bind(i64::from(e.minutes_saved))
    .execute(&mut **tx)
    .await?;
    let seen: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM registry_usage_principals WHERE month = $1 AND server = $2 AND principal = $3",
    )
    .bind(&month)
    .bind(&e.server)
    .bind(&e.principal)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO registry_usage_principals (month, server, principal, team) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (month, server, principal, team) DO NOTHING",
    )
    .bind(&month)
    .bind(&e.server)
    .bind(&e.principal)
    .bind(team)
    .execute(&mut **tx)
    .await?;
    // The catalog's counters of the server's current month, rolled over by the
    // first report of a new month.
    sqlx::query(
        "UPDATE registry_servers SET \
         usage_invocations = CASE WHEN usage_month = $2 THEN usage_invocations + 1 ELSE 1 END, \
         usage_users = CASE WHEN usage_month = $2 THEN usage_users + $3 ELSE $3 END, \
         usage_total = usage_total + 1, usage_month = $2 WHERE name = $1",
    )
    .bind(&e.server)
    .bind(&month)
    .bind(i64::from(seen == 0))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub fn routes() -> Router<RegistryState> {
    Router::new().route("/v0.1/x/usage", post(report).get(summary))
}

async fn report(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let Principal::Service { spiffe_id } = &caller else {
        return Err(Failure::forbidden("only servers report usage, over mTLS"));
    };
    let reports = parse_reports(&body)?;
    state.policy.ensure_fresh(&*state.store).await?;
    let mut violations = Vec::new();
    let mut events = Vec::with_capacity(reports.len());
    let now = state.clock.now();
    for (at, r) in reports {
        let Some(server) = state.policy.get(&r.server) else {
            return Err(CatalogError::NotFound(format!("server {}", r.server)).into());
        };
        if server.service_identity.as_deref() != Some(spiffe_id.as_str()) {
            return Err(Failure::forbidden("a server reports its own usage only (its registered service_identity)"));
        }
        violations.extend(r.violations().into_iter().map(|v| Violation::new(format!("{at}{}", v.field), v.message)));
        events.push(UsageEvent {
            minutes_saved: if r.outcome == Outcome::Ok { server.minutes_saved_by(&r.tool) } else { 0 },
            server: r.server,
            tool: r.tool,
            principal: r.principal,
            team: r.team,
            outcome: r.outcome,
            latency_ms: r.latency_ms,
            at: now,
        });
    }
    if !violations.is_empty() {
        return Err(Failure::invalid("invalid_usage", "the usage report", violations));
    }
    state.store.record_usage(&events).await?;
    debug!(reports = events.len(), "usage recorded");
    Ok(StatusCode::NO_CONTENT)
}

/// One report or an array of 1 to [`MAX_BATCH`], each with the prefix its violations'
/// fields get (`""` for a lone report, `[3].` in an array).
fn parse_reports(body: &Bytes) -> Result<Vec<(String, UsageReport)>, Failure> {
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_array {
        return Ok(vec![(String::new(), parse_body(body)?)]);
    }
    let reports: Vec<UsageReport> = parse_body(body)?;
    if reports.is_empty() || reports.len() > MAX_BATCH {
        return Err(Failure::bad_request("(body)", format!("an array of 1 to {MAX_BATCH} reports")));
    }
    Ok(reports.into_iter().enumerate().map(|(i, r)| (format!("[{i}]."), r)).collect())
}

#[derive(Debug, Deserialize)]
struct SummaryParams {
    from: Option<String>,
    to: Option<String>,
    team: Option<String>,
}

/// The longest range one summary covers.
const MAX_MONTHS: usize = 120;

async fn summary(
    State(state): State<RegistryState>,
    Authenticated(_caller): Authenticated,
    params: Result<Query<SummaryParams>, QueryRejection>,
) -> Result<Json<UsageSummary>, Failure> {
    let p = params.map_err(|e| Failure::bad_request("(query)", e.body_text()))?.0;
    let now = state.clock.now();
    let month = |field: &str, value: Option<&str>, default: (i32, u32)| match value {
        None => Ok(default),
        Some(v) => parse_month(v).ok_or_else(|| Failure::bad_request(field, "must be YYYY-MM, YYYY-MM-DD or RFC 3339")),
    };
    let to = month("to", p.to.as_deref(), (now.year(), now.month()))?;
    // By default, the twelve months up to `to`.
    let default_from = if to.1 == 12 { (to.0, 1) } else { (to.0 - 1, to.1 + 1) };
    let from = month("from", p.from.as_deref(), default_from)?;
    let range = months(from, to);
    let (Some(first), Some(last)) = (range.first(), range.last()) else {
        return Err(Failure::bad_request("from", "must not be after `to`"));
    };
    if range.len() > MAX_MONTHS {
        return Err(Failure::bad_request("from", format!("a summary covers at most {MAX_MONTHS} months")));
    }
    let team = p.team.filter(|t| !t.is_empty());
    let rows = state.store.usage_rows(first, last, team.as_deref()).await?;
    Ok(Json(aggregate(&range, team, &rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_or_an_array_of_them() {
        let one = r#"{"server": "s", "tool": "t", "principal": "p", "outcome": "ok", "latency_ms": 1}"#;
        let prefixes = |body: String| {
            parse_reports(&Bytes::from(body)).map(|v| v.into_iter().map(|(at, _)| at).collect::<Vec<_>>()).ok()
        };
        assert_eq!(prefixes(one.to_string()), Some(vec![String::new()]));
        assert_eq!(prefixes(format!(" \n[{one}, {one}]")), Some(vec!["[0].".to_string(), "[1].".to_string()]));
        assert_eq!(prefixes("[]".to_string()), None);
        assert_eq!(prefixes(format!("[{}]", vec![one; MAX_BATCH + 1].join(","))), None);
        assert_eq!(prefixes(format!("[{one}, {{\"server\": 1}}]")), None);
    }

    #[test]
    fn month_parameters() {
        assert_eq!(parse_month("2026-03"), Some((2026, 3)));
        assert_eq!(parse_month("2026-03-31"), Some((2026, 3)));
        assert_eq!(parse_month("2026-03-01T10:00:00Z"), Some((2026, 3)));
        for bad in ["2026-13", "2026-3", "26-03", "2026-02-30", "march"] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
        assert_eq!(months((2025, 11), (2026, 2)), ["2025-11", "2025-12", "2026-01", "2026-02"]);
        assert!(months((2026, 2), (2026, 1)).is_empty());
    }

    #[test]
    fn aggregates_by_month_and_team() {
        let row = |month: &str, team: &str, n: i64, ok: i64, minutes: i64| TeamMonthRow {
            month: month.into(),
            team: team.into(),
            invocations: n,
            succeeded: ok,
            failed: n - ok,
            denied: 0,
            minutes_saved: minutes,
            latency_ms_sum: n * 100,
        };
        let rows = UsageRows {
            counts: vec![
                row("2026-01", "", 2, 2, 12),
                row("2026-01", "data", 4, 3, 90),
                row("2026-03", "data", 1, 1, 6),
            ],
            users_by_month: vec![("2026-01".into(), 3), ("2026-03".into(), 1)],
            users_by_month_team: vec![
                ("2026-01".into(), "".into(), 1),
                ("2026-01".into(), "data".into(), 2),
                ("2026-03".into(), "data".into(), 1),
            ],
            users_by_team: vec![("".into(), 1), ("data".into(), 2)],
            users: 3,
        };
        let s = aggregate(&months((2026, 1), (2026, 3)), None, &rows);
        assert_eq!((s.from.as_str(), s.to.as_str()), ("2026-01", "2026-03"));
        assert_eq!(
            s.total,
            Totals {
                invocations: 7,
                succeeded: 6,
                failed: 1,
                denied: 0,
                active_users: 3,
                hours_saved: 1.8,
                avg_latency_ms: Some(100.0)
            }
        );
        let months: Vec<(&str, i64, i64, f64)> = s
            .months
            .iter()
            .map(|m| (m.month.as_str(), m.totals.invocations, m.totals.active_users, m.totals.hours_saved))
            .collect();
        assert_eq!(months, [("2026-01", 6, 3, 1.7), ("2026-02", 0, 0, 0.0), ("2026-03", 1, 1, 0.1)]);
        let jan: Vec<(Option<&str>, i64, i64)> = s.months[0]
            .teams
            .iter()
            .map(|t| (t.team.as_deref(), t.totals.invocations, t.totals.active_users))
            .collect();
        assert_eq!(jan, [(None, 2, 1), (Some("data"), 4, 2)]);
        assert_eq!(s.months[1].totals.avg_latency_ms, None);
        let teams: Vec<(Option<&str>, i64)> =
            s.teams.iter().map(|t| (t.team.as_deref(), t.totals.invocations)).collect();
        assert_eq!(teams, [(None, 2), (Some("data"), 5)]);
    }
}
