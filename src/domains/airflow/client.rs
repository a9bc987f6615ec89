//! A client for Airflow 3's REST API v2 with token login.
//!
//! The client logs in with `POST /auth/token`, keeps the token, and on a 401 logs in
//! again once and repeats the request (the request was refused, so repeating it is
//! safe even for writes). It never retries on its own otherwise: the domain retries
//! idempotent reads with [`crate::mcp::retry_read`]. Errors name the backend's address,
//! never the credentials.

use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use super::config::AirflowConfig;

/// Why a request to Airflow failed.
#[derive(Debug, thiserror::Error)]
pub enum AirflowError {
    /// The URL in the settings cannot be used.
    #[error("airflow URL `{url}` is not usable: {why}")]
    BadUrl { url: String, why: String },
    /// No HTTP answer: connection refused, DNS, TLS or a timeout.
    #[error("cannot reach {address}: {why}")]
    Unreachable { address: String, why: String },
    /// `POST /auth/token` refused the configured account.
    #[error("{address} refused the login of `{username}` ({status})")]
    LoginRefused { address: String, username: String, status: StatusCode },
    /// The object named in the path does not exist.
    #[error("{what} not found")]
    NotFound { what: String, detail: String },
    /// Airflow rejected the request's values (400, 409, 422).
    #[error("airflow rejected {method} {path} ({status}): {detail}")]
    Rejected { method: Method, path: String, status: StatusCode, detail: String },
    /// Any other non-success answer (5xx, 429, a 401 after logging in again).
    #[error("{address} answered {method} {path} with {status}: {detail}")]
    Status { address: String, method: Method, path: String, status: StatusCode, detail: String },
    /// A success answer whose body is not what the API describes.
    #[error("{address} answered {path} with an unexpected body: {why}")]
    Decode { address: String, path: String, why: String },
}

impl AirflowError {
    /// Whether the backend is down or overloaded, so that a read may be tried again.
    pub fn is_transient(&self) -> bool {
        match self {
            AirflowError::Unreachable { .. } => true,
            AirflowError::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        }
    }
}

/// A request: method, path segments under `/api/v2`, query and body.
pub struct Request<'a> {
    method: Method,
    segments: Vec<&'a str>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    /// What the path names, for a 404 (`DAG run `etl/manual__1``).
    what: String,
}

impl<'a> Request<'a> {
    /// `what` names the object the path points at, for a 404 (`DAG `etl``).
    pub fn new(method: Method, segments: &[&'a str], what: impl Into<String>) -> Request<'a> {
        Request { method, segments: segments.to_vec(), query: Vec::new(), body: None, what: what.into() }
    }

    pub fn get(segments: &[&'a str], what: impl Into<String>) -> Request<'a> {
        Request::new(Method::GET, segments, what)
    }

    pub fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    pub fn query_opt(self, key: &'static str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.query(key, v),
            None => self,
        }
    }

    pub fn json<B: Serialize>(mut self, body: &B) -> Self {
        self.body = serde_json::to_value(body).ok();
        self
    }
}

/// The client; cheap to share behind an `Arc`.
pub struct AirflowClient {
    base: Url,
    address: String,
    username: String,
    password: SecretString,
    http: reqwest::Client,
    token: Mutex<Option<SecretString>>,
}

impl AirflowClient {
    pub fn new(config: &AirflowConfig) -> Result<AirflowClient, AirflowError> {
        let address = config.address();
        let base =
            Url::parse(&address).map_err(|e| AirflowError::BadUrl { url: address.clone(), why: e.to_string() })?;
        if base.cannot_be_a_base() {
            return Err(AirflowError::BadUrl { url: address, why: "cannot hold a path".to_string() });
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| AirflowError::BadUrl { url: address.clone(), why: e.to_string() })?;
        Ok(AirflowClient {
            base,
            address,
            username: config.username.clone(),
            password: config.password.clone(),
            http,
            token: Mutex::new(None),
        })
    }

    /// The base URL, for error messages and health reports.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` and decodes the JSON answer as `T`.
    pub async fn send<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<T, AirflowError> {
        let (path, text) = self.send_text(request, "application/json").await?;
        serde_json::from_str(&text).map_err(|e| AirflowError::Decode {
            address: self.address.clone(),
            path,
            why: format!("{e}; body starts {}", excerpt(&text, 200)),
        })
    }

    /// `GET /api/v2/monitor/health` (no login needed); `Ok` when it answers 200.
    pub async fn health(&self) -> Result<Value, AirflowError> {
        let url = self.url(&["monitor", "health"]);
        let response = self.http.get(url).send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(AirflowError::Status {
                address: self.address.clone(),
                method: Method::GET,
                path: "/api/v2/monitor/health".to_string(),
                status,
                detail: excerpt(&text, 300),
            });
        }
        serde_json::from_str(&text).map_err(|e| AirflowError::Decode {
            address: self.address.clone(),
            path: "/api/v2/monitor/health".to_string(),
            why: e.to_string(),
        })
    }

    async fn send_text(&self, request: Request<'_>, accept: &str) -> Result<(String, String), AirflowError> {
        let url = self.url(&request.segments);
        let path = url.path().to_string();
        let mut relogged = false;
        loop {
            let token = self.token(relogged).await?;
            let mut builder = self
                .http
                .request(request.method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header(reqwest::header::ACCEPT, accept)
                .query(&request.query);
            if let Some(body) = &request.body {
                builder = builder.json(body);
            }
            let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| self.unreachable(&e))?;
            if status.is_success() {
                return Ok((path, text));
            }
            if status == StatusCode::UNAUTHORIZED && !relogged {
                tracing::debug!(backend = %self.address, "airflow token refused; logging in again");
                relogged = true;
                continue;
            }
            let detail = detail_of(&text);
            return Err(match status {
                StatusCode::NOT_FOUND => AirflowError::NotFound { what: request.what, detail },
                StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                    AirflowError::Rejected { method: request.method, path, status, detail }
                }
                _ => {
                    AirflowError::Status { address: self.address.clone(), method: request.method, path, status, detail }
                }
            });
        }
    }

    /// The cached token, or a fresh one when there is none or `renew` is set.
    async fn token(&self, renew: bool) -> Result<SecretString, AirflowError> {
        let mut cached = self.token.lock().await;
        if !renew && let Some(token) = cached.as_ref() {
            return Ok(token.clone());
        }
        let token = self.login().await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn login(&self) -> Result<SecretString, AirflowError> {
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: String,
        }
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["auth", "token"]);
        }
        let body = serde_json::json!({"username": self.username, "password": self.password.expose_secret()});
        let response = self.http.post(url).json(&body).send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(AirflowError::LoginRefused {
                address: self.address.clone(),
                username: self.username.clone(),
                status,
            });
        }
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(AirflowError::Status {
                address: self.address.clone(),
                method: Method::POST,
                path: "/auth/token".to_string(),
                status,
                detail: detail_of(&text),
            });
        }
        let token: Token = serde_json::from_str(&text).map_err(|e| AirflowError::Decode {
            address: self.address.clone(),
            path: "/auth/token".to_string(),
            why: e.to_string(),
        })?;
        tracing::debug!(backend = %self.address, username = %self.username, "logged in to airflow");
        Ok(SecretString::from(token.access_token))
    }

    /// `<base>/api/v2/<segments>`, each segment percent-encoded (run ids hold `+` and `:`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v2"]).extend(segments);
        }
        url
    }

    fn unreachable(&self, error: &reqwest::Error) -> AirflowError {
        // reqwest's message names the URL; the cause chain says why (refused, timed out).
        let mut why = if error.is_timeout() { "timed out".to_string() } else { "request failed".to_string() };
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            why.push_str(": ");
            why.push_str(&cause.to_string());
            source = cause.source();
        }
        AirflowError::Unreachable { address: self.address.clone(), why }
    }
}

/// Airflow's error bodies are `{"detail": "..."}` or `{"detail": [validation errors]}`.
fn detail_of(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => match map.get("detail") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => excerpt(&other.to_string(), 500),
            None => excerpt(text, 500),
        },
        _ => excerpt(text, 500),
    }
}

/// At most `max` characters of `text`, marked when cut.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_read_from_airflow_error_bodies() {
        assert_eq!(
            detail_of(r#"{"detail":"DAG with dag_id: `x` was not found"}"#),
            "DAG with dag_id: `x` was not found"
        );
        assert!(detail_of(r#"{"detail":[{"loc":["query","limit"],"msg":"bad"}]}"#).contains("limit"));
        assert_eq!(detail_of("Internal Server Error"), "Internal Server Error");
    }

    #[test]
    fn path_segments_are_encoded() {
        let config = AirflowConfig { url: "http://127.0.0.1:1/airflow/".to_string(), ..AirflowConfig::default() };
        let client = AirflowClient::new(&config).unwrap();
        let url = client.url(&["dags", "etl", "dagRuns", "manual__2026-01-01T00:00:00+00:00"]);
        assert_eq!(url.path(), "/airflow/api/v2/dags/etl/dagRuns/manual__2026-01-01T00:00:00+00:00");
        let url = client.url(&["dags", "a/b"]);
        assert_eq!(url.path(), "/airflow/api/v2/dags/a%2Fb");
    }

    #[test]
    fn only_unreachable_and_server_errors_are_transient() {
        let status = |status| AirflowError::Status {
            address: String::new(),
            method: Method::GET,
            path: String::new(),
            status,
            detail: String::new(),
        };
        assert!(status(StatusCode::BAD_GATEWAY).is_transient());
        assert!(status(StatusCode::TOO_MANY_REQUESTS).is_transient());
        assert!(!status(StatusCode::FORBIDDEN).is_transient());
        assert!(!AirflowError::NotFound { what: String::new(), detail: String::new() }.is_transient());
    }
}
