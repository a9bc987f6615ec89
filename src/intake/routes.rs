//! `POST /v1/alerts/{source}`: authenticate, parse, store durably, answer 202.

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tracing::{info, warn};

use super::auth::{self, AuthError};
use super::writer::WriteError;
use super::{Delivery, Source};
use crate::store::IngestRequest;
use crate::telemetry::SourceLabel;
use crate::web::listener::PeerAddr;
use crate::web::{ApiError, AppState};

/// The answer to an accepted delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Stored alerts, in payload order; a redelivery returns the ids stored the first time.
    pub alert_ids: Vec<String>,
    pub episode_ids: Vec<String>,
    /// How many of the alerts were already stored.
    pub duplicates: usize,
}

/// Receive alerts from a monitoring system.
#[utoipa::path(
    post,
    path = "/v1/alerts/{source}",
    params(("source" = String, Path, description = "alertmanager, grafana, pagerduty or generic")),
    request_body(content = Object, description = "The source's webhook payload", content_type = "application/json"),
    responses(
        (status = 202, description = "Stored durably", body = Accepted),
        (status = 400, description = "Malformed payload; `field` names what is wrong", body = ApiError),
        (status = 401, description = "Missing or wrong credentials or signature", body = ApiError),
        (status = 404, description = "Unknown source", body = ApiError),
        (status = 413, description = "Body over the configured limit", body = ApiError),
        (status = 503, description = "The store cannot take alerts right now; retry", body = ApiError),
    ),
    tag = "intake"
)]
pub async fn receive(
    State(app): State<AppState>,
    Path(source): Path<String>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(source) = Source::parse(&source) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no alert source `{source}`; use alertmanager, grafana, pagerduty or generic"),
        )
        .into_response();
    };
    let label = source.as_str();
    let limit = app.config.intake.max_body_bytes;
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            app.metrics.alert(label, "too_large", 1);
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over the limit of {limit} bytes"),
            )
            .into_response();
        }
        Err(e) => {
            app.metrics.alert(label, "bad_request", 1);
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("reading the body failed: {e}"))
                .into_response();
        }
    };
    if let Err(e) = auth::authenticate(&app.config.intake, source, &headers, &bytes, Some(peer), app.clock.now()) {
        app.metrics.alert(label, "unauthorized", 1);
        warn!(source = label, %peer, error = %e, "alert refused");
        let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()).into_response();
        if matches!(e, AuthError::MissingBearer | AuthError::BadBearer) {
            resp.headers_mut().insert("www-authenticate", http::HeaderValue::from_static("Bearer realm=\"inquest\""));
        }
        return resp;
    }
    let webhook_id = headers.get("x-webhook-id").and_then(|v| v.to_str().ok());
    let delivery = match super::parse(source, &bytes, webhook_id) {
        Ok(d) => d,
        Err(e) => {
            app.metrics.alert(label, "bad_request", 1);
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.message)
                .with_field(e.field)
                .into_response();
        }
    };
    let (team, service) = route(&app, &delivery);
    let request = IngestRequest { delivery, team, service, body: String::from_utf8_lossy(&bytes).into_owned() };
    match app.writer.submit(request).await {
        Ok(outcome) => {
            app.metrics
                .intake_latency
                .get_or_create(&SourceLabel { source: label.into() })
                .observe(started.elapsed().as_secs_f64());
            if !outcome.new_investigations.is_empty() {
                info!(source = label, investigations = ?outcome.new_investigations, "opened investigations");
            }
            let body = Accepted {
                alert_ids: outcome.alert_ids,
                episode_ids: outcome.episode_ids,
                duplicates: outcome.duplicates,
            };
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e @ (WriteError::Store(_) | WriteError::Closed)) => {
            let mut resp = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()).into_response();
            resp.headers_mut().insert("retry-after", http::HeaderValue::from_static("5"));
            resp
        }
    }
}

/// The team and service an episode belongs to, from the configured labels of its
/// first alert.
fn route(app: &AppState, delivery: &Delivery) -> (String, Option<String>) {
    let ep = &app.config.episodes;
    let first = delivery.alerts.first();
    let team = first
        .and_then(|a| a.labels.get(&ep.team_label))
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| ep.default_team.clone());
    let service = first.and_then(|a| a.labels.get(&ep.service_label)).cloned();
    (team, service)
}
