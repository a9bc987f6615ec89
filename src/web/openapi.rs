//! The OpenAPI description of the HTTP API, generated from the handlers and checked
//! into the repository as `docs/openapi.json` (a test keeps the two equal).

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Inquest", description = "Alert intake and investigations of the Inquest agent."),
    paths(
        crate::intake::routes::receive,
        crate::github::webhook::receive,
        super::api::list,
        super::api::show,
        super::api::events,
        super::api::ask,
        super::healthz,
        super::readyz,
        super::metrics,
    ),
    components(schemas(
        crate::intake::routes::Accepted,
        crate::github::webhook::DeliveryAccepted,
        super::ApiError,
        super::api::InvestigationList,
        super::api::InvestigationDetail,
        super::api::QuestionRequest,
        super::api::QuestionAccepted,
        crate::store::InvestigationSummary,
        crate::store::StoredEvent,
        crate::store::StoredAlert,
        crate::engine::State,
    )),
    tags(
        (name = "intake", description = "Webhooks from alerting systems"),
        (name = "webhooks", description = "Webhooks from GitHub: reviews and pushes that move approval gates"),
        (name = "investigations", description = "Investigations and their event logs"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The description as pretty JSON, exactly as checked in.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default() + "\n"
}

pub async fn serve() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
