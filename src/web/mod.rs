//! HTTP: one router for every API and page, served on one listener.

pub mod api;
pub mod auth;
pub mod listener;
pub mod openapi;
pub mod thread;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::timeout::TimeoutLayer;

use crate::clock::Clock;
use crate::config::Config;
use crate::intake::writer::IntakeWriter;
use crate::store::Store;
use crate::telemetry::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub writer: IntakeWriter,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    /// False until startup finished and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// Cancelled when the process begins to shut down; long-lived streams end then.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// A stable, machine-readable code.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The offending field of the request, where one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, error: error.to_string(), message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed; see its log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

/// The longest an intake request may take, body upload included.
const INTAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Every route of the agent role.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/alerts/{source}",
            // A sender that stalls mid-body must not hold a connection (and shutdown)
            // open indefinitely.
            post(crate::intake::routes::receive)
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, INTAKE_TIMEOUT)),
        )
        .route("/v1/investigations", get(api::list))
        .route("/v1/investigations/{id}", get(api::show))
        .route("/v1/investigations/{id}/events", get(api::events))
        .route("/v1/investigations/{id}/questions", post(api::ask))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// What the health routes need in a process that runs no agent.
#[derive(Clone)]
struct HealthState {
    store: Arc<dyn Store>,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

/// `/healthz`, `/readyz` and `/metrics` alone, for roles without the agent's API.
pub fn health_router(store: Arc<dyn Store>, metrics: Metrics, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(|State(s): State<HealthState>| async move { readiness(&s.ready, s.store.as_ref()).await }),
        )
        .route(
            "/metrics",
            get(|State(s): State<HealthState>| async move { render_metrics(&s.metrics, s.store.as_ref()).await }),
        )
        .with_state(HealthState { store, metrics, ready })
}

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")), tag = "operations")]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: started, not shutting down, and the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, description = "Ready"), (status = 503, description = "Starting, stopping, or the store is unreachable")),
    tag = "operations"
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    readiness(&app.ready, app.store.as_ref()).await
}

async fn readiness(ready: &AtomicBool, store: &dyn Store) -> Response {
    if !ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response();
    }
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unreachable: {e}")).into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")), tag = "operations")]
pub async fn metrics(State(app): State<AppState>) -> Response {
    render_metrics(&app.metrics, app.store.as_ref()).await
}

async fn render_metrics(metrics: &Metrics, store: &dyn Store) -> Response {
    match metrics.render(store).await {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
