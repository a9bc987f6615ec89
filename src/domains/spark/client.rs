//! A small client for the Spark History Server's REST API (`/api/v1`).
//!
//! Every request is a read, so each is retried through [`retry_read`] while the server
//! is unreachable or overloaded; a 404 is an answer, not a failure, and is never retried.

use std::sync::Arc;

use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::config::SparkConfig;
use super::model::{Application, Environment, Executor, Job, Stage, Task, TaskSummary, Version};
use crate::mcp::{ToolError, retry_read};

/// How the backend is named in errors and health reports.
pub const BACKEND: &str = "spark history server";

/// Why a request to the History Server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configured URL cannot be used (checked by [`SparkConfig::validate`] first).
    #[error("history_url `{url}`: {why}")]
    BadUrl { url: String, why: String },
    /// No answer: refused, reset, timed out.
    #[error("{BACKEND} at {address}: cannot reach it: {why}")]
    Unreachable { address: String, why: String },
    /// The server answered 404: the application, stage or attempt does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// Any other error status.
    #[error("{BACKEND} at {address}: {path} answered {status}: {body}")]
    Status { address: String, path: String, status: StatusCode, body: String },
    /// The answer was not the JSON we expect.
    #[error("{BACKEND} at {address}: cannot read the answer of {path}: {why}")]
    Decode { address: String, path: String, why: String },
}

impl From<ClientError> for ToolError {
    fn from(e: ClientError) -> ToolError {
        match e {
            ClientError::NotFound { what } => ToolError::NotFound { what },
            ClientError::BadUrl { .. } => ToolError::Internal(e.to_string()),
            ClientError::Unreachable { address, why } => {
                ToolError::Backend { backend: BACKEND, address, why: format!("cannot reach it: {why}") }
            }
            ClientError::Status { address, path, status, body } => {
                ToolError::Backend { backend: BACKEND, address, why: format!("{path} answered {status}: {body}") }
            }
            ClientError::Decode { address, path, why } => ToolError::Backend {
                backend: BACKEND,
                address,
                why: format!("cannot read the answer of {path}: {why}"),
            },
        }
    }
}

/// Application status filter of `/applications`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppStatus {
    Completed,
    Running,
}

/// Filters of `/applications`; dates as Spark accepts them (`2026-01-31` or
/// `2026-01-31T10:00:00.000GMT`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppQuery {
    pub status: Option<AppStatus>,
    pub limit: Option<u32>,
    pub min_date: Option<String>,
    pub max_date: Option<String>,
}

/// The History Server's REST API at one address.
#[derive(Debug, Clone)]
pub struct SparkClient {
    http: reqwest::Client,
    /// `<history_url>/api/v1/`, ending in a slash so relative paths join under it.
    api: Url,
    address: String,
    /// Turns for requests in flight (`max_concurrent_requests`).
    turns: Arc<Semaphore>,
}

impl SparkClient {
    pub fn new(config: &SparkConfig) -> Result<SparkClient, ClientError> {
        let bad = |why: String| ClientError::BadUrl { url: config.history_url.clone(), why };
        let mut base = Url::parse(&config.history_url).map_err(|e| bad(e.to_string()))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let api = base.join("api/v1/").map_err(|e| bad(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let address = config.history_url.trim_end_matches('/').to_string();
        let turns = Arc::new(Semaphore::new(config.max_concurrent_requests.max(1)));
        Ok(SparkClient { http, api, address, turns })
    }

    /// Where the server is, as errors name it.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub async fn version(&self) -> Result<Version, ToolError> {
        self.get("version", &[], "the REST API").await
    }

    pub async fn applications(&self, query: &AppQuery) -> Result<Vec<Application>, ToolError> {
        let mut params = Vec::new();
        if let Some(status) = query.status {
            let status = match status {
                AppStatus::Completed => "completed",
                AppStatus::Running => "running",
            };
            params.push(("status", status.to_string()));
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(date) = &query.min_date {
            params.push(("minDate", date.clone()));
        }
        if let Some(date) = &query.max_date {
            params.push(("maxDate", date.clone()));
        }
        self.get("applications", &params, "applications").await
    }

    pub async fn application(&self, app: &str) -> Result<Application, ToolError> {
        self.get(&app_path(app, ""), &[], &format!("application `{app}`")).await
    }

    /// Jobs, optionally only those with `status` (`running`, `succeeded`, `failed`, `unknown`).
    pub async fn jobs(&self, app: &str, status: Option<&str>) -> Result<Vec<Job>, ToolError> {
        let params: Vec<_> = status.map(|s| ("status", s.to_string())).into_iter().collect();
        self.get(&app_path(app, "/jobs"), &params, &format!("application `{app}`")).await
    }

    /// Every attempt of every stage, optionally only those with `status` (`failed`, ...).
    pub async fn stages(&self, app: &str, status: Option<&str>) -> Result<Vec<Stage>, ToolError> {
        let params: Vec<_> = status.map(|s| ("status", s.to_string())).into_iter().collect();
        self.get(&app_path(app, "/stages"), &params, &format!("application `{app}`")).await
    }

    /// Every attempt of one stage.
    pub async fn stage_attempts(&self, app: &str, stage: i64) -> Result<Vec<Stage>, ToolError> {
        let what = format!("stage {stage} of application `{app}`");
        self.get(&app_path(app, &format!("/stages/{stage}")), &[], &what).await
    }

    /// Task metric quantiles over the attempt's successful tasks; `None` when no task
    /// succeeded (Spark answers 404 then).
    pub async fn task_summary(
        &self,
        app: &str,
        stage: i64,
        attempt: i64,
        quantiles: &[f64],
    ) -> Result<Option<TaskSummary>, ToolError> {
        let list = quantiles.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
        let path = app_path(app, &format!("/stages/{stage}/{attempt}/taskSummary"));
        let what = format!("task summary of stage {stage}.{attempt}");
        match self.get(&path, &[("quantiles", list)], &what).await {
            Ok(summary) => Ok(Some(summary)),
            Err(ToolError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Tasks of one stage attempt, optionally only those with `status` (`FAILED`).
    pub async fn tasks(
        &self,
        app: &str,
        stage: i64,
        attempt: i64,
        status: Option<&str>,
        length: usize,
    ) -> Result<Vec<Task>, ToolError> {
        let mut params = vec![("length", length.to_string())];
        params.extend(status.map(|s| ("status", s.to_string())));
        let path = app_path(app, &format!("/stages/{stage}/{attempt}/taskList"));
        self.get(&path, &params, &format!("stage {stage}.{attempt} of application `{app}`")).await
    }

    /// Executors; with `include_removed`, also those that are gone (`allexecutors`).
    pub async fn executors(&self, app: &str, include_removed: bool) -> Result<Vec<Executor>, ToolError> {
        let tail = if include_removed { "/allexecutors" } else { "/executors" };
        self.get(&app_path(app, tail), &[], &format!("application `{app}`")).await
    }

    pub async fn environment(&self, app: &str) -> Result<Environment, ToolError> {
        self.get(&app_path(app, "/environment"), &[], &format!("application `{app}`")).await
    }

    /// `GET api/v1/<path>`, retried while the server cannot be reached. `what` names
    /// the thing a 404 means is missing.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
        what: &str,
    ) -> Result<T, ToolError> {
        retry_read(|| async { self.get_once(path, params, what).await.map_err(ToolError::from) }).await
    }

    async fn get_once<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
        what: &str,
    ) -> Result<T, ClientError> {
        let url =
            self.api.join(path).map_err(|e| ClientError::BadUrl { url: self.address.clone(), why: e.to_string() })?;
        let address = self.address.clone();
        // Held until the body is read, so the connection is back in the pool first.
        let _turn = self.turns.acquire().await.map_err(|_| ClientError::Unreachable {
            address: address.clone(),
            why: "the client is shutting down".into(),
        })?;
        let response = self
            .http
            .get(url)
            .query(params)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { address: address.clone(), why: error_chain(&e) })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound { what: what.to_string() });
        }
        let body = response
            .text()
            .await
            .map_err(|e| ClientError::Unreachable { address: address.clone(), why: error_chain(&e) })?;
        if !status.is_success() {
            tracing::debug!(backend = BACKEND, %address, path, %status, "error status");
            return Err(ClientError::Status {
                address,
                path: format!("/api/v1/{path}"),
                status,
                body: clip(&body, 300),
            });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Decode {
            address,
            path: format!("/api/v1/{path}"),
            why: e.to_string(),
        })
    }
}

/// `applications/<id><tail>`, with the id percent-encoded as one path segment.
fn app_path(app: &str, tail: &str) -> String {
    format!("applications/{}{tail}", crate::percent::encode(app))
}

/// reqwest's top-level message is often just "error sending request"; the cause
/// (connection refused, timed out) is what a person needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_one_path_segment() {
        assert_eq!(app_path("local-1700000000000", "/jobs"), "applications/local-1700000000000/jobs");
        assert_eq!(app_path("../x y", ""), "applications/..%2Fx%20y");
    }

    #[test]
    fn the_api_lives_under_the_base_path() {
        let config = SparkConfig { history_url: "http://127.0.0.1:18080/spark".into(), ..SparkConfig::default() };
        let client = SparkClient::new(&config).unwrap();
        assert_eq!(client.api.as_str(), "http://127.0.0.1:18080/spark/api/v1/");
        assert_eq!(client.address(), "http://127.0.0.1:18080/spark");
    }

    #[tokio::test]
    async fn no_more_than_the_configured_requests_are_in_flight() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Default)]
        struct Seen {
            now: AtomicUsize,
            most: AtomicUsize,
        }
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route(
                "/api/v1/version",
                axum::routing::get(|axum::extract::State(seen): axum::extract::State<Arc<Seen>>| async move {
                    let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    seen.now.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({"spark": "4.3.0"}))
                }),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = SparkConfig { history_url: url, max_concurrent_requests: 2, ..SparkConfig::default() };
        let client = SparkClient::new(&config).unwrap();
        let calls = (0..10).map(|_| client.version());
        for answer in futures::future::join_all(calls).await {
            assert_eq!(answer.unwrap().spark, "4.3.0");
        }
        assert_eq!(seen.most.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn long_bodies_are_clipped() {
        assert_eq!(clip("abcdef", 3), "abc...");
        assert_eq!(clip("abc", 3), "abc");
    }
}
