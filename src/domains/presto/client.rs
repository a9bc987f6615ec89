//! The Trino/Presto client protocol: `POST /v1/statement`, then `GET nextUri` until
//! there is none, gathering `columns` and `data` on the way.
//!
//! A query that hits the row or byte cap, times out or is cancelled is stopped on the
//! coordinator with `DELETE nextUri`, so that nothing keeps running that nobody reads.
//! Answers 429/502/503/504 are retried, as the protocol asks of clients; a `GET
//! nextUri` is safe to repeat because the coordinator answers a repeated token the same.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{PrestoAuth, PrestoConfig};

/// How long the best-effort `DELETE nextUri` of a stopped query may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to the coordinator. Each names the coordinator's address.
#[derive(Debug, thiserror::Error)]
pub enum PrestoError {
    /// No connection, or the connection broke (after the retries).
    #[error("presto at {address} cannot be reached: {why}")]
    Unreachable { address: String, why: String },
    /// The coordinator answered an HTTP error (after retries for 429/502/503/504).
    #[error("presto at {address} answered {status}: {body}")]
    Http { address: String, status: u16, body: String },
    /// The credentials were refused.
    #[error("presto at {address} refused our credentials ({status})")]
    Unauthorized { address: String, status: u16 },
    /// An answer that does not follow the protocol.
    #[error("presto at {address} answered something unexpected: {why}")]
    Protocol { address: String, why: String },
    /// The query itself failed on the coordinator.
    #[error("query {query_id} failed on presto at {address}: {error_name} ({error_type}): {message}")]
    Query { address: String, query_id: String, error_name: String, error_type: String, message: String },
    /// The query ran longer than allowed; it was cancelled.
    #[error("query {query_id} on presto at {address} timed out after {after:?} and was cancelled")]
    Timeout { address: String, query_id: String, after: Duration },
    /// The caller went away; the query was cancelled.
    #[error("query {query_id} on presto at {address} was cancelled")]
    Cancelled { address: String, query_id: String },
}

/// One result column as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Column {
    pub name: String,
    /// The SQL type, e.g. `varchar`, `decimal(12,2)`.
    #[serde(rename = "type")]
    pub type_name: String,
}

/// A finished (or capped) query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub query_id: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// Set when the result was cut at a cap: why, in words.
    pub truncated: Option<String>,
    pub update_type: Option<String>,
}

impl QueryResult {
    /// The value of `column` in `row`, by name.
    pub fn get<'a>(&self, row: &'a [Value], column: &str) -> Option<&'a Value> {
        self.columns.iter().position(|c| c.name == column).and_then(|i| row.get(i))
    }
}

/// The caps and deadline one query runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// A client for one coordinator, with the domain's own identity.
#[derive(Clone)]
pub struct PrestoClient {
    http: reqwest::Client,
    config: PrestoConfig,
    address: String,
}

impl PrestoClient {
    pub fn new(config: PrestoConfig) -> Result<PrestoClient, PrestoError> {
        let address = config.address();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // One protocol request answers within a second or so (the coordinator
            // long-polls); this bounds a hung connection, the query's own timeout
            // bounds the whole query.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| PrestoError::Protocol {
                address: address.clone(),
                why: format!("building the client: {e}"),
            })?;
        Ok(PrestoClient { http, config, address })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn config(&self) -> &PrestoConfig {
        &self.config
    }

    /// The limits from the configuration.
    pub fn default_limits(&self) -> Limits {
        Limits { max_rows: self.config.max_rows, max_bytes: self.config.max_bytes, timeout: self.config.timeout }
    }

    /// Whether the coordinator answers `GET /v1/info`.
    pub async fn info(&self) -> Result<Value, PrestoError> {
        let url = format!("{}/v1/info", self.config.url.trim_end_matches('/'));
        let response = self.send(Method::GET, &url, None, &HeaderMap::new()).await?;
        response.json().await.map_err(|e| self.protocol(format!("/v1/info is not JSON: {e}")))
    }

    /// Runs `sql` to the end (or a cap, the deadline, or `cancel`). `client_info` goes
    /// to the coordinator as `X-Trino-Client-Info`, for attribution in its query list.
    pub async fn execute(
        &self,
        sql: &str,
        limits: Limits,
        cancel: &CancellationToken,
        client_info: Option<&str>,
    ) -> Result<QueryResult, PrestoError> {
        let deadline = Instant::now() + limits.timeout;
        let headers = self.statement_headers(client_info);
        let url = format!("{}/v1/statement", self.config.url.trim_end_matches('/'));
        let first = tokio::select! {
            answer = self.post_statement(&url, sql, &headers) => answer?,
            _ = cancel.cancelled() => return Err(PrestoError::Cancelled { address: self.address.clone(), query_id: String::new() }),
            _ = tokio::time::sleep_until(deadline) => return Err(PrestoError::Timeout { address: self.address.clone(), query_id: String::new(), after: limits.timeout }),
        };
        let mut result = QueryResult {
            query_id: first.id.clone(),
            columns: Vec::new(),
            rows: Vec::new(),
            truncated: None,
            update_type: None,
        };
        let mut bytes = 0usize;
        let mut answer = first;
        tracing::debug!(query_id = %result.query_id, address = %self.address, "presto query started");
        loop {
            if let Some(error) = answer.error {
                return Err(PrestoError::Query {
                    address: self.address.clone(),
                    query_id: answer.id,
                    error_name: error.error_name,
                    error_type: error.error_type,
                    message: error.message,
                });
            }
            if result.columns.is_empty()
                && let Some(columns) = answer.columns
            {
                result.columns = columns.into_iter().map(|c| Column { name: c.name, type_name: c.type_name }).collect();
            }
            if answer.update_type.is_some() {
                result.update_type = answer.update_type;
            }
            for row in answer.data.unwrap_or_default() {
                let size = serde_json::to_string(&row).map(|s| s.len()).unwrap_or(0);
                if result.rows.len() >= limits.max_rows {
                    result.truncated = Some(format!("stopped at the row cap of {} rows", limits.max_rows));
                } else if bytes + size > limits.max_bytes {
                    result.truncated = Some(format!("stopped at the byte cap of {} bytes", limits.max_bytes));
                }
                if result.truncated.is_some() {
                    break;
                }
                bytes += size;
                result.rows.push(row);
            }
            let Some(next) = answer.next_uri else {
                return Ok(result);
            };
            if result.truncated.is_some() {
                self.cancel_query(&next, &headers, &result.query_id).await;
                return Ok(result);
            }
            answer = tokio::select! {
                answer = self.get_next(&next, &headers) => answer?,
                _ = cancel.cancelled() => {
                    self.cancel_query(&next, &headers, &result.query_id).await;
                    return Err(PrestoError::Cancelled { address: self.address.clone(), query_id: result.query_id });
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.cancel_query(&next, &headers, &result.query_id).await;
                    return Err(PrestoError::Timeout { address: self.address.clone(), query_id: result.query_id, after: limits.timeout });
                }
            };
        }
    }

    /// `DELETE nextUri`: best effort, a failure is logged and otherwise ignored (the
    /// coordinator abandons an unread query by itself after a while).
    async fn cancel_query(&self, next_uri: &str, headers: &HeaderMap, query_id: &str) {
        let sent = self.http.delete(next_uri).headers(headers.clone()).timeout(CANCEL_TIMEOUT);
        match self.authorize(sent).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%query_id, address = %self.address, "presto query cancelled")
            }
            Ok(r) => tracing::warn!(%query_id, status = r.status().as_u16(), "presto did not cancel the query"),
            Err(error) => tracing::warn!(%query_id, %error, "cancelling the presto query failed"),
        }
    }

    async fn post_statement(&self, url: &str, sql: &str, headers: &HeaderMap) -> Result<Answer, PrestoError> {
        let response = self.send(Method::POST, url, Some(sql), headers).await?;
        self.answer(response).await
    }

    async fn get_next(&self, url: &str, headers: &HeaderMap) -> Result<Answer, PrestoError> {
        let response = self.send(Method::GET, url, None, headers).await?;
        self.answer(response).await
    }

    /// One request, retried while the coordinator answers 429/502/503/504 (the
    /// protocol's "try again"). Connection failures are left to the caller: the
    /// domain retries reads as a whole, and a POST that broke may have started.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, PrestoError> {
        let attempt = || async {
            let mut request = self.http.request(method.clone(), url).headers(headers.clone());
            if let Some(body) = body {
                request = request.body(body.to_string());
            }
            let response = self.authorize(request).send().await.map_err(|e| Attempt::Failed {
                error: PrestoError::Unreachable { address: self.address.clone(), why: error_chain(&e) },
                retry: false,
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            );
            let error = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                PrestoError::Unauthorized { address: self.address.clone(), status: status.as_u16() }
            } else {
                let mut body = response.text().await.unwrap_or_default();
                body.truncate(body.floor_char_boundary(500));
                PrestoError::Http { address: self.address.clone(), status: status.as_u16(), body }
            };
            Err(Attempt::Failed { error, retry })
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(4)
            .with_jitter();
        attempt
            .retry(policy)
            .when(|a: &Attempt| matches!(a, Attempt::Failed { retry: true, .. }))
            .notify(|a: &Attempt, wait| tracing::debug!(address = %self.address, error = %a, ?wait, "retrying presto"))
            .await
            .map_err(|Attempt::Failed { error, .. }| error)
    }

    async fn answer(&self, response: reqwest::Response) -> Result<Answer, PrestoError> {
        let text = response.text().await.map_err(|e| PrestoError::Unreachable {
            address: self.address.clone(),
            why: format!("reading the answer: {}", error_chain(&e)),
        })?;
        serde_json::from_str(&text).map_err(|e| self.protocol(format!("not a query answer ({e})")))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.auth {
            PrestoAuth::None => request,
            PrestoAuth::Basic { username, password } => request.basic_auth(username, Some(password.expose_secret())),
            PrestoAuth::Bearer { token } => request.bearer_auth(token.expose_secret()),
        }
    }

    fn statement_headers(&self, client_info: Option<&str>) -> HeaderMap {
        let dialect = self.config.dialect;
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(dialect.header(name)), HeaderValue::from_str(&sanitize_header(value)))
            {
                headers.insert(name, value);
            }
        };
        put("User", &self.config.user);
        put("Source", &self.config.source);
        if let Some(catalog) = &self.config.catalog {
            put("Catalog", catalog);
        }
        if let Some(schema) = &self.config.schema {
            put("Schema", schema);
        }
        if let Some(info) = client_info {
            put("Client-Info", info);
        }
        headers
    }

    fn protocol(&self, why: String) -> PrestoError {
        PrestoError::Protocol { address: self.address.clone(), why }
    }
}

/// One failed attempt and whether another is worth it.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error("{error}")]
    Failed { error: PrestoError, retry: bool },
}

/// One protocol answer (`QueryResults`), reduced to what a client acts on.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    id: String,
    next_uri: Option<String>,
    columns: Option<Vec<Column>>,
    data: Option<Vec<Vec<Value>>>,
    error: Option<QueryError>,
    update_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryError {
    message: String,
    #[serde(default)]
    error_name: String,
    #[serde(default)]
    error_type: String,
}

/// Header values must be visible ASCII; anything else becomes `?`.
fn sanitize_header(value: &str) -> String {
    value.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect()
}

/// The error and its causes, since reqwest's own message omits the cause
/// ("error sending request" instead of "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
