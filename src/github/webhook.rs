//! `POST /v1/webhooks/github` and the processor behind it.
//!
//! A delivery is verified (`X-Hub-Signature-256`, constant time), read far enough to
//! refuse what the gate could never use, stored under its `X-GitHub-Delivery` id, and
//! only then answered, at once: GitHub waits ten seconds at most and does not retry on
//! its own. A redelivery of a stored id is answered and changes nothing. The processor
//! takes stored deliveries in order, by lease (so several agent processes on one
//! database share them, and a delivery whose processor died is taken again), applies
//! each to its pull request's gate through the pure [`gate::apply`], and records what
//! came of it.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::approval::{self, PullApprovals};
use super::drafter::Drafting;
use super::events::{self, EventError};
use super::gate::{self, Outcome, Reviewers};
use super::signature::{self, SignatureError};
use super::store::{Delivery, GithubStore, GithubStoreError};
use crate::clock::Clock;
use crate::web::ApiError;

/// GitHub caps a webhook payload at 25 MB.
const MAX_BODY: usize = 25 << 20;
/// How long a claimed delivery is held before another processor may take it.
const LEASE: Duration = Duration::from_secs(60);
/// How often the processor looks for deliveries stored by other processes.
const POLL: Duration = Duration::from_secs(2);
/// Concurrent changes to one gate that a delivery retries before it is left for later.
const SAVE_ATTEMPTS: usize = 5;

/// Why a delivery could not be processed now; it is taken again after its lease.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] GithubStoreError),
    #[error("the gate of {0} kept changing while the delivery was applied")]
    Contended(String),
}

/// What the route and the processor share.
#[derive(Clone)]
pub struct Webhooks {
    pub store: GithubStore,
    pub secrets: Arc<Vec<SecretString>>,
    pub reviewers: Arc<Reviewers>,
    pub clock: Arc<dyn Clock>,
    /// Wakes the processor when a delivery was stored.
    pub wake: Arc<Notify>,
    /// Makes a pull request show its gate's new state; none: gates change, PRs do not.
    pub drafting: Option<Arc<Drafting>>,
    /// Where a registry request a gate no longer needs is withdrawn.
    pub approvals: Option<Arc<dyn PullApprovals>>,
}

/// The answer to a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryAccepted {
    /// The `X-GitHub-Delivery` id.
    pub delivery: String,
    /// `queued` (stored, processed shortly) or `duplicate` (already stored; nothing new).
    pub status: &'static str,
}

pub fn router(hooks: Webhooks) -> Router {
    Router::new().route("/v1/webhooks/github", post(receive)).layer(DefaultBodyLimit::max(MAX_BODY)).with_state(hooks)
}

/// Receives a GitHub webhook delivery.
#[utoipa::path(
    post,
    path = "/v1/webhooks/github",
    request_body(content = Object, description = "GitHub's webhook payload", content_type = "application/json"),
    params(
        ("X-GitHub-Event" = String, Header, description = "The event's name"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's unique id"),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the HMAC-SHA256 of the body"),
    ),
    responses(
        (status = 202, description = "Stored durably; processed shortly", body = DeliveryAccepted),
        (status = 200, description = "A redelivery of a stored delivery; nothing changed", body = DeliveryAccepted),
        (status = 400, description = "A required header or payload field is missing; `field` names it", body = ApiError),
        (status = 401, description = "Missing or wrong signature", body = ApiError),
        (status = 404, description = "No webhook secret is configured (`github.webhook_secrets`)", body = ApiError),
        (status = 413, description = "Body over 25 MB", body = ApiError),
        (status = 503, description = "The store cannot take it right now; redeliver", body = ApiError),
    ),
    tag = "webhooks"
)]
pub async fn receive(State(hooks): State<Webhooks>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&hooks, &headers, &body).await {
        Ok((delivery, true)) => {
            hooks.wake.notify_one();
            (StatusCode::ACCEPTED, Json(DeliveryAccepted { delivery, status: "queued" })).into_response()
        }
        Ok((delivery, false)) => {
            (StatusCode::OK, Json(DeliveryAccepted { delivery, status: "duplicate" })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn accept(hooks: &Webhooks, headers: &HeaderMap, body: &[u8]) -> Result<(String, bool), ApiError> {
    if hooks.secrets.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "GitHub webhooks are not configured here: set github.webhook_secrets",
        ));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    signature::verify(&hooks.secrets, header("x-hub-signature-256"), body).map_err(|e| {
        let field = match e {
            SignatureError::Missing => Some("X-Hub-Signature-256"),
            SignatureError::Mismatch => None,
        };
        let error = ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string());
        match field {
            Some(f) => error.with_field(f),
            None => error,
        }
    })?;
    let required = |name: &'static str| {
        header(name).filter(|v| !v.is_empty() && v.len() <= 200).map(str::to_string).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "missing_header", format!("header `{name}` is required"))
                .with_field(name)
        })
    };
    let delivery = required("X-GitHub-Delivery")?;
    let event = required("X-GitHub-Event")?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", "the payload is not UTF-8"))?;
    // Refused now rather than stored to fail later: GitHub shows the sender this answer.
    events::parse(&event, body).map_err(|e| {
        let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", e.to_string());
        match e {
            EventError::Field(f) => error.with_field(f),
            EventError::NotJson(_) => error,
        }
    })?;
    let now = hooks.clock.now().timestamp_millis();
    let new = hooks.store.record_delivery(&delivery, &event, text, now).await.map_err(|e| {
        warn!(error = %e, delivery, "storing a GitHub delivery failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the delivery could not be stored; redeliver it")
    })?;
    info!(delivery, event, new, "GitHub delivery");
    Ok((delivery, new))
}

impl Webhooks {
    /// Processes stored deliveries until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.process_one().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "processing a GitHub delivery failed; it is taken again after its lease"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Processes the oldest waiting delivery; `false` if there was none.
    pub async fn process_one(&self) -> Result<bool, ProcessError> {
        let now = self.clock.now().timestamp_millis();
        let Some(delivery) = self.store.claim_delivery(now, LEASE).await? else { return Ok(false) };
        let outcome = self.handle(&delivery).await?;
        debug!(delivery = %delivery.id, event = %delivery.event, outcome, "GitHub delivery processed");
        self.store.finish_delivery(&delivery.id, &outcome, self.clock.now().timestamp_millis()).await?;
        Ok(true)
    }

    /// What the delivery does to its gate, said in a line.
    async fn handle(&self, delivery: &Delivery) -> Result<String, ProcessError> {
        let event = match events::parse(&delivery.event, delivery.body.as_bytes()) {
            Ok(e) => e,
            Err(e) => return Ok(format!("unreadable: {e}")),
        };
        let Some((repo, number)) = event.pull_request() else {
            return Ok("ignored: not an event the gate follows".into());
        };
        for _ in 0..SAVE_ATTEMPTS {
            let Some(stored) = self.store.gate_of(repo, number).await? else {
                return Ok(format!("ignored: {repo}#{number} is not a pull request Inquest drafted"));
            };
            match gate::apply(&stored.gate, &event, &self.reviewers) {
                Outcome::Unchanged(why) => return Ok(format!("unchanged: {why}")),
                Outcome::Changed { gate, why } => {
                    let source = format!("webhook:{}", delivery.id);
                    let now = self.clock.now().timestamp_millis();
                    if self.store.save_gate(&stored.id, &gate, stored.version, &why, &source, now).await? {
                        info!(repo, number, state = gate.state.as_str(), why, "gate changed");
                        if let Some(approvals) = &self.approvals {
                            approval::withdraw_abandoned(&**approvals, &stored.gate, &gate).await;
                        }
                        if let Some(d) = &self.drafting
                            && let Err(e) = d.drafter.settle(repo, number, &d.reviewers).await
                        {
                            // The gate's state is stored; the gate watch settles it again.
                            warn!(repo, number, error = %e, "the pull request does not show its gate's state yet");
                        }
                        return Ok(format!("{}: {why}", gate.state.as_str()));
                    }
                    // Changed meanwhile (another delivery, the drafter): decide again on what is there now.
                }
            }
        }
        Err(ProcessError::Contended(format!("{repo}#{number}")))
    }
}
