//! The catalog's HTTP API: the official v0.1 reads and writes, and our governance
//! writes under `/v0.1/x/servers/{name}/...`. Reads need any authenticated caller;
//! writes need an admin (`registry.admins`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::{
    CatalogEntry, CatalogError, CatalogStore, ListQuery, PolicyDoc, RegistryEvent, Review, ReviewKind, ServerExt,
    is_stale,
};
use crate::config::RegistryConfig;
use crate::identity::{Authenticated, Principal};
use crate::policy::{ReviewState, ServerStatus, any_matches};
use crate::registry::RegistryState;
use crate::registry::server_json::{self, Violation};
use crate::registry::usage::month_of;
use crate::web::ApiError;

/// Default and largest page sizes, as the official registry has them.
const DEFAULT_LIMIT: u32 = 30;
const MAX_LIMIT: u32 = 100;

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/v0.1/servers", get(list))
        .route("/v0.1/servers/{name}/versions", get(versions))
        .route("/v0.1/servers/{name}/versions/{version}", get(version))
        .route("/v0.1/servers/{name}/versions/{version}/status", patch(set_status))
        .route("/v0.1/publish", post(publish))
        .route("/v0.1/x/servers/{name}", get(server))
        .route("/v0.1/x/servers/{name}/policy", put(set_policy))
        .route("/v0.1/x/servers/{name}/security-review", put(set_security_review))
        .route("/v0.1/x/servers/{name}/production-approval", put(set_production_approval))
        .route("/v0.1/x/servers/{name}/events", get(events))
}

/// One version as the official API serves it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerResponse {
    /// The `server.json` as published.
    pub server: Value,
    #[serde(rename = "_meta")]
    pub meta: ResponseMeta,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseMeta {
    #[serde(rename = "io.modelcontextprotocol.registry/official")]
    pub official: OfficialMeta,
    #[serde(rename = "dev.inquest/registry")]
    pub registry: ServerExt,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfficialMeta {
    pub status: ServerStatus,
    pub published_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_latest: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListResponse {
    pub servers: Vec<ServerResponse>,
    pub metadata: ListMetadata,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Servers in this response.
    pub count: usize,
}

/// A server's own data, without a version (`GET /v0.1/x/servers/{name}`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerDetail {
    pub name: String,
    #[serde(rename = "dev.inquest/registry")]
    pub registry: ServerExt,
}

/// Why a request failed: an [`ApiError`], or a document with violations.
#[derive(Debug)]
pub(crate) enum Failure {
    Api(ApiError),
    Invalid { error: &'static str, message: String, violations: Vec<Violation> },
}

#[derive(Serialize)]
struct InvalidBody<'a> {
    error: &'a str,
    message: &'a str,
    violations: &'a [Violation],
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Api(e) => e.into_response(),
            Failure::Invalid { error, message, violations } => {
                (StatusCode::BAD_REQUEST, Json(InvalidBody { error, message: &message, violations: &violations }))
                    .into_response()
            }
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure::Api(e)
    }
}

impl From<CatalogError> for Failure {
    fn from(e: CatalogError) -> Failure {
        Failure::Api(match e {
            CatalogError::Exists { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            CatalogError::NotFound(what) => ApiError::not_found(&what),
            other => ApiError::internal(other),
        })
    }
}

impl Failure {
    pub(crate) fn invalid(error: &'static str, what: &str, violations: Vec<Violation>) -> Failure {
        let n = violations.len();
        let message = format!("{what} has {n} problem{}", if n == 1 { "" } else { "s" });
        Failure::Invalid { error, message, violations }
    }

    pub(crate) fn bad_request(field: &str, message: impl Into<String>) -> Failure {
        Failure::Api(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message).with_field(field))
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Failure {
        Failure::Api(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message))
    }
}

/// Whether `principal` administers the registry.
pub(crate) fn is_admin(config: &RegistryConfig, principal: &Principal) -> bool {
    any_matches(&config.admins, principal)
}

pub(crate) fn require_admin(config: &RegistryConfig, principal: &Principal) -> Result<(), Failure> {
    if is_admin(config, principal) { Ok(()) } else { Err(Failure::forbidden("only registry admins may do this")) }
}

/// Parses a JSON body, naming the offending field when it does not fit.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "(body)".to_string() } else { path };
        Failure::bad_request(&field, e.into_inner().to_string())
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    q.map(|Query(q)| q).map_err(|e| Failure::bad_request("(query)", e.body_text()))
}

/// Finishes an entry for a response: staleness and this month's counters depend on now.
pub(crate) fn respond(state: &RegistryState, entry: CatalogEntry) -> ServerResponse {
    let now = state.clock.now();
    let official = OfficialMeta {
        status: entry.status,
        published_at: entry.published_at,
        updated_at: entry.updated_at,
        is_latest: entry.is_latest,
    };
    ServerResponse {
        server: entry.server,
        meta: ResponseMeta { official, registry: finish_ext(state, entry.ext, now) },
    }
}

pub(crate) fn finish_ext(state: &RegistryState, mut ext: ServerExt, now: DateTime<Utc>) -> ServerExt {
    ext.health.stale = is_stale(ext.health.checked_at, now, state.config.probe_interval);
    ext.usage = ext.usage.as_of(&month_of(now));
    ext
}

/// Reloads the policy cache after a write; a failure only delays it (the next
/// request's freshness check retries).
async fn refresh_policy(state: &RegistryState) {
    if let Err(error) = state.policy.refresh(&*state.store).await {
        warn!(%error, "refreshing the policy cache after a write failed");
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    cursor: Option<String>,
    limit: Option<String>,
    search: Option<String>,
    updated_since: Option<String>,
    version: Option<String>,
    include_deleted: Option<String>,
}

async fn list(
    State(state): State<RegistryState>,
    Authenticated(_caller): Authenticated,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListResponse>, Failure> {
    let p = query(params)?;
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            Some(decode_cursor(c).ok_or_else(|| Failure::bad_request("cursor", "not a cursor this registry gave"))?)
        }
    };
    let limit = match p.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l.parse::<u32>().map_err(|_| Failure::bad_request("limit", "must be a whole number"))?,
    }
    .clamp(1, MAX_LIMIT);
    let updated_since = match p.updated_since.as_deref() {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|e| Failure::bad_request("updated_since", format!("not an RFC 3339 time: {e}")))?
                .with_timezone(&Utc),
        ),
    };
    let latest_only = match p.version.as_deref() {
        None => false,
        Some("latest") => true,
        Some(_) => return Err(Failure::bad_request("version", "only `latest` is supported")),
    };
    let q = ListQuery {
        after,
        limit,
        search: p.search.filter(|s| !s.is_empty()),
        updated_since,
        latest_only,
        include_deleted: flag(p.include_deleted.as_deref(), "include_deleted")?,
    };
    let page = CatalogStore::list(&*state.store, &q).await?;
    let servers: Vec<ServerResponse> = page.entries.into_iter().map(|e| respond(&state, e)).collect();
    let count = servers.len();
    let next_cursor = page.next.map(|(name, version)| encode_cursor(&name, &version));
    Ok(Json(ListResponse { servers, metadata: ListMetadata { next_cursor, count } }))
}

/// Cursors are `name:version` (as the official registry's); names cannot hold a `:`.
fn encode_cursor(name: &str, version: &str) -> String {
    format!("{name}:{version}")
}

fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let (name, version) = cursor.split_once(':')?;
    (server_json::check_name(name).is_ok() && !version.is_empty()).then(|| (name.to_string(), version.to_string()))
}

fn flag(value: Option<&str>, field: &str) -> Result<bool, Failure> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Failure::bad_request(field, "must be true or false")),
    }
}

#[derive(Debug, Deserialize)]
struct VersionsParams {
    include_deleted: Option<String>,
}

async fn versions(
    State(state): State<RegistryState>,
    Authenticated(_caller): Authenticated,
    Path(name): Path<String>,
    params: Result<Query<VersionsParams>, QueryRejection>,
) -> Result<Json<ListResponse>, Failure> {
    let include_deleted = flag(query(params)?.include_deleted.as_deref(), "include_deleted")?;
    let entries = state.store.versions(&name, include_deleted).await?;
    if entries.is_empty() && state.store.server_ext(&name).await?.is_none() {
        return Err(CatalogError::NotFound(format!("server {name}")).into());
    }
    let servers: Vec<ServerResponse> = entries.into_iter().map(|e| respond(&state, e)).collect();
    let count = servers.len();
    Ok(Json(ListResponse { servers, metadata: ListMetadata { next_cursor: None, count } }))
}

async fn version(
    State(state): State<RegistryState>,
    Authenticated(_caller): Authenticated,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ServerResponse>, Failure> {
    match state.store.version(&name, &version).await? {
        Some(entry) => Ok(Json(respond(&state, entry))),
        None => Err(CatalogError::NotFound(format!("version {version} of {name}")).into()),
    }
}

async fn publish(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    body: Bytes,
) -> Result<Json<ServerResponse>, Failure> {
    let doc: Value = parse_body(&body)?;
    let server = server_json::validate(&doc).map_err(|v| Failure::invalid("invalid_server_json", "server.json", v))?;
    if !is_admin(&state.config, &caller) {
        // A server registers itself: it may publish the entry whose policy names its own
        // SPIFFE ID as the server's service identity, and nothing else.
        state.policy.ensure_fresh(&*state.store).await?;
        let own = matches!(&caller, Principal::Service { spiffe_id }
            if state.policy.service_identity(&server.name).as_deref() == Some(spiffe_id.as_str()));
        if !own {
            return Err(Failure::forbidden("only registry admins, or the server itself, may publish it"));
        }
    }
    let entry = state.store.publish(&server, &caller.id(), state.clock.now()).await?;
    info!(server = %server.name, version = %server.version, actor = %caller.id(), latest = entry.is_latest, "published");
    refresh_policy(&state).await;
    Ok(Json(respond(&state, entry)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusChange {
    status: ServerStatus,
    #[serde(default)]
    status_message: Option<String>,
}

async fn set_status(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ServerResponse>, Failure> {
    require_admin(&state.config, &caller)?;
    let change: StatusChange = parse_body(&body)?;
    let entry = state
        .store
        .set_status(&name, &version, change.status, change.status_message.as_deref(), &caller.id(), state.clock.now())
        .await?;
    info!(server = %name, %version, status = change.status.as_str(), actor = %caller.id(), "status changed");
    refresh_policy(&state).await;
    Ok(Json(respond(&state, entry)))
}

async fn server(
    State(state): State<RegistryState>,
    Authenticated(_caller): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<ServerDetail>, Failure> {
    detail(&state, name).await
}

async fn detail(state: &RegistryState, name: String) -> Result<Json<ServerDetail>, Failure> {
    match state.store.server_ext(&name).await? {
        Some(ext) => Ok(Json(ServerDetail { registry: finish_ext(state, ext, state.clock.now()), name })),
        None => Err(CatalogError::NotFound(format!("server {name}")).into()),
    }
}

async fn set_policy(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ServerDetail>, Failure> {
    require_admin(&state.config, &caller)?;
    let doc: PolicyDoc = parse_body(&body)?;
    let violations = doc.violations();
    if !violations.is_empty() {
        return Err(Failure::invalid("invalid_policy", "the policy", violations));
    }
    state.store.set_policy(&name, &doc, &caller.id(), state.clock.now()).await?;
    info!(server = %name, actor = %caller.id(), "policy updated");
    refresh_policy(&state).await;
    detail(&state, name).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewChange {
    state: ReviewState,
    #[serde(default)]
    note: Option<String>,
}

async fn set_security_review(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ServerDetail>, Failure> {
    set_review(state, caller, name, ReviewKind::SecurityReview, body).await
}

async fn set_production_approval(
    State(state): State<RegistryState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ServerDetail>, Failure> {
    set_review(state, caller, name, ReviewKind::Production, body).await
}

/// Records a review. Who decided comes from the authenticated caller, never the body.
async fn set_review(
    state: RegistryState,
    caller: Principal,
    name: String,
    kind: ReviewKind,
    body: Bytes,
) -> Result<Json<ServerDetail>, Failure> {
    require_admin(&state.config, &caller)?;
    let change: ReviewChange = parse_body(&body)?;
    let now = state.clock.now();
    let review = Review { state: change.state, by: Some(caller.id()), at: Some(now), note: change.note };
    state.store.set_review(&name, kind, &review, now).await?;
    info!(server = %name, review = kind.as_str(), state = ?review.state, actor = %caller.id(), "review recorded");
    refresh_policy(&state).await;
    detail(&state, name).await
}

#[derive(Debug, Deserialize)]
struct EventsParams {
    after: Option<i64>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct EventsResponse {
    events: Vec<RegistryEvent>,
}

async fn events(
    State(state): State<RegistryState>,
    Authenticated(_caller): Authenticated,
    Path(name): Path<String>,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Json<EventsResponse>, Failure> {
    let p = query(params)?;
    let events = state.store.events(&name, p.after.unwrap_or(0), p.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(EventsResponse { events }))
}
