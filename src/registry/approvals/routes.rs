//! The approval API under `/v0.1/x/approvals`: request shapes, checks of what callers
//! send, and answers. Each handler hands the decision to [`machine`] through
//! [`super::service::apply`], which stores the outcome with its audit records; refusals of
//! decisions, consumptions and revocations are audited too.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::info;

use super::machine::{self, Decision, NewRequest, Refusal, Verdict};
use super::service::{apply, effect_entries};
use super::store::ApprovalStoreError;
use super::{
    ApprovalKind, ApprovalRequest, ApprovalState, ApprovalStore, ApproverLookup, Created, PolicyUnavailable,
    RegistryApprovers, Resource, Vote, canonical_json,
};
use crate::clock::Clock;
use crate::config::RegistryConfig;
use crate::identity::{Authenticated, Principal};
use crate::intake::ParseError;
use crate::policy::{ApproverPolicy, matches};
use crate::registry::RegistryState;
use crate::store::{from_ms, to_ms};
use crate::web::ApiError;

/// Largest action accepted, as canonical JSON: a person has to read it.
const MAX_ACTION_BYTES: usize = 64 * 1024;
/// Longest revocation reason kept in the audit log.
const MAX_REASON_BYTES: usize = 1000;
/// Stored requests of one state looked at for a listing, before visibility filtering.
const LIST_SCAN: i64 = 1000;

/// What the approval (and audit) handlers reach.
#[derive(Clone)]
pub struct ApprovalContext {
    pub config: Arc<RegistryConfig>,
    pub store: Arc<dyn ApprovalStore>,
    pub clock: Arc<dyn Clock>,
    pub approvers: Arc<dyn ApproverLookup>,
}

impl ApprovalContext {
    pub fn is_admin(&self, principal: &Principal) -> bool {
        self.config.admins.iter().any(|m| matches(m, principal))
    }

    /// Now, at the millisecond precision the store keeps, so an answer shows the times
    /// that were stored.
    pub(super) fn now(&self) -> DateTime<Utc> {
        from_ms(to_ms(self.clock.now()))
    }
}

impl FromRef<RegistryState> for ApprovalContext {
    fn from_ref(state: &RegistryState) -> ApprovalContext {
        ApprovalContext {
            config: state.config.clone(),
            store: state.store.clone(),
            clock: state.clock.clone(),
            approvers: Arc::new(RegistryApprovers {
                cache: state.policy.clone(),
                store: state.store.clone(),
                pull_requests: state.config.pull_request_approvers.clone(),
            }),
        }
    }
}

pub fn routes() -> Router<RegistryState> {
    routes_for::<RegistryState>()
}

/// The approval and audit routes with their context: for tests and tools that run
/// them without the rest of the registry.
pub fn router(ctx: ApprovalContext) -> Router {
    Router::new().merge(routes_for()).merge(crate::registry::audit::routes_for()).with_state(ctx)
}

/// The routes over any state that holds an [`ApprovalContext`].
pub fn routes_for<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    ApprovalContext: FromRef<S>,
{
    Router::new()
        .route("/v0.1/x/approvals", post(create).get(list))
        .route("/v0.1/x/approvals/{id}", get(show))
        .route("/v0.1/x/approvals/{id}/decision", post(decide))
        .route("/v0.1/x/approvals/{id}/consume", post(consume))
        .route("/v0.1/x/approvals/{id}/revoke", post(revoke))
}

/// Why an approval request failed; each maps to one HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Invalid(#[from] ParseError),
    #[error("no approval request {0}")]
    NotFound(String),
    #[error("only the requester, its approvers and administrators may see this request")]
    NotVisible,
    #[error("the request kept changing while this one was being applied; retry")]
    Contended,
    #[error(transparent)]
    PolicyUnavailable(#[from] PolicyUnavailable),
    #[error(transparent)]
    Store(#[from] ApprovalStoreError),
}

impl IntoResponse for ApprovalError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApprovalError::Refused(r) => {
                let status = if r.is_about_identity() { StatusCode::FORBIDDEN } else { StatusCode::CONFLICT };
                ApiError::new(status, r.code(), message)
            }
            ApprovalError::Invalid(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.message).with_field(e.field)
            }
            ApprovalError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ApprovalError::NotVisible => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            ApprovalError::Contended => ApiError::new(StatusCode::CONFLICT, "contended", message),
            ApprovalError::PolicyUnavailable(e) => {
                tracing::warn!(error = %e, "approval refused: policy unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "policy_unavailable", message)
            }
            ApprovalError::Store(e) => ApiError::internal(e),
        }
        .into_response()
    }
}

/// `POST /v0.1/x/approvals`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub kind: ApprovalKind,
    /// The exact action, a JSON object; the digest is over its canonical JSON.
    #[schema(value_type = Object)]
    pub action: Value,
    /// `{server, tool}` for a tool call; `{repository, number, head_sha}` for a pull request.
    #[schema(value_type = Object)]
    pub resource: Value,
    /// Who the action is done for, as the requesting service authenticated them (for a
    /// tool call, the tool's caller). They may not decide the request.
    #[serde(default)]
    pub on_behalf_of: Option<Principal>,
}

/// `POST /v0.1/x/approvals/{id}/decision`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub decision: Verdict,
    /// The digest the person was shown.
    pub digest: String,
}

/// `POST /v0.1/x/approvals/{id}/consume`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeBody {
    /// The digest of the action about to be carried out.
    pub digest: String,
}

/// `POST /v0.1/x/approvals/{id}/revoke`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An approval request as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApprovalView {
    pub id: String,
    pub kind: ApprovalKind,
    /// As of the answer: an open request past its expiry shows `expired`.
    pub state: ApprovalState,
    pub digest: String,
    #[schema(value_type = Object)]
    pub action: Value,
    pub resource: Resource,
    pub requester: Principal,
    /// Who the action is done for; they may not decide it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<Principal>,
    pub approver_policy: ApproverPolicy,
    pub approvals: Vec<Vote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<Vote>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The approval page.
    pub url: String,
    /// Whether the caller could approve or decline it now.
    pub may_decide: bool,
}

impl ApprovalView {
    fn new(req: &ApprovalRequest, ctx: &ApprovalContext, caller: &Principal, now: DateTime<Utc>) -> ApprovalView {
        ApprovalView {
            id: req.id.clone(),
            kind: req.kind(),
            state: machine::effective_state(req, now),
            digest: req.digest.clone(),
            action: req.action.clone(),
            resource: req.resource.clone(),
            requester: req.requester.clone(),
            on_behalf_of: req.on_behalf_of.clone(),
            approver_policy: req.policy.clone(),
            approvals: req.approvals.clone(),
            closed_by: req.closed_by.clone(),
            created_at: req.created_at,
            expires_at: req.expires_at,
            updated_at: req.updated_at,
            url: format!("{}/approvals/{}", ctx.config.public_url, req.id),
            may_decide: machine::may_decide(req, caller, now),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// pending (default), approved, declined, expired, revoked or consumed
    pub state: Option<String>,
    /// At most this many (default 100, at most 500).
    pub limit: Option<i64>,
}

/// Ask for a person's approval of an action (services only). The approver policy
/// comes from the registry's policy for the resource. `on_behalf_of` names who the action
/// is for (the tool's caller); like the requesting service, they can never decide it. An
/// open request of the same service for the same resource, digest and `on_behalf_of` is
/// answered instead (200) of a new one (201).
#[utoipa::path(
    post,
    path = "/v0.1/x/approvals",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = ApprovalView),
        (status = 200, description = "The open request for the same action", body = ApprovalView),
        (status = 400, description = "Malformed; `field` names what is wrong", body = ApiError),
        (status = 403, description = "`only_services_request`", body = ApiError),
        (status = 409, description = "`no_approver_policy`: nobody could approve this", body = ApiError),
        (status = 503, description = "`policy_unavailable`: retry", body = ApiError),
    ),
    tag = "approvals"
)]
pub async fn create(
    State(ctx): State<ApprovalContext>,
    Authenticated(caller): Authenticated,
    body: Bytes,
) -> Result<Response, ApprovalError> {
    let body: CreateBody = parse_body(&body)?;
    let resource = parse_resource(body.kind, body.resource)?;
    if !body.action.is_object() {
        return Err(ParseError::new("action", "must be a JSON object").into());
    }
    if canonical_json(&body.action).len() > MAX_ACTION_BYTES {
        return Err(ParseError::new("action", format!("larger than {MAX_ACTION_BYTES} bytes")).into());
    }
    let policy = match &resource {
        Resource::ToolCall { server, tool } => ctx.approvers.tool_approvers(server, tool).await?,
        Resource::PullRequest { repository, .. } => ctx.approvers.pull_request_approvers(repository).await?,
    };
    let now = ctx.now();
    let new = NewRequest {
        id: uuid::Uuid::now_v7().to_string(),
        requester: caller.clone(),
        on_behalf_of: body.on_behalf_of,
        resource,
        action: body.action,
        policy,
        ttl: ctx.config.approval_ttl,
    };
    let opened = machine::open(new, now).inspect_err(|r| {
        info!(requester = %caller.id(), reason = r.code(), "approval request refused");
    })?;
    let entries = effect_entries(&opened, &caller.id(), now);
    let (status, request) = match ctx.store.create(&opened.request, &entries).await? {
        Created::New(r) => {
            let kind = r.kind().as_str();
            let on_behalf_of = r.on_behalf_of.as_ref().map(Principal::id);
            info!(
                approval_id = %r.id, requester = %caller.id(), on_behalf_of = on_behalf_of.as_deref(), kind, digest = %r.digest,
                "approval requested"
            );
            (StatusCode::CREATED, r)
        }
        Created::Existing(r) => (StatusCode::OK, r),
    };
    Ok((status, Json(ApprovalView::new(&request, &ctx, &caller, now))).into_response())
}

/// Requests the caller may see in a state, newest first: for a person, those they are an
/// approver of (`?state=pending` is their inbox; `may_decide` marks what they can still
/// act on); for a service, its own; administrators see all.
#[utoipa::path(
    get,
    path = "/v0.1/x/approvals",
    params(ListQuery),
    responses((status = 200, body = ApprovalList), (status = 400, body = ApiError)),
    tag = "approvals"
)]
pub async fn list(
    State(ctx): State<ApprovalContext>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ListQuery>,
) -> Result<Json<ApprovalList>, ApprovalError> {
    let state = match q.state.as_deref() {
        None => ApprovalState::Pending,
        Some(s) => ApprovalState::parse(s).ok_or_else(|| ParseError::new("state", format!("`{s}` is not a state")))?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 500) as usize;
    let now = ctx.now();
    // An open request past its expiry is expired whether or not the sweep stored it.
    let stored = match state {
        ApprovalState::Expired => &[ApprovalState::Expired, ApprovalState::Pending, ApprovalState::Approved][..],
        _ => std::slice::from_ref(&state),
    };
    let admin = ctx.is_admin(&caller);
    let mut found = Vec::new();
    for s in stored {
        found.extend(
            ctx.store
                .approvals_in(*s, LIST_SCAN)
                .await?
                .into_iter()
                .filter(|r| machine::effective_state(r, now) == state && machine::may_view(r, &caller, admin)),
        );
    }
    found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    found.truncate(limit);
    Ok(Json(ApprovalList { approvals: found.iter().map(|r| ApprovalView::new(r, &ctx, &caller, now)).collect() }))
}

/// One request: for its requester, its approvers and administrators.
#[utoipa::path(
    get,
    path = "/v0.1/x/approvals/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = ApprovalView), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    tag = "approvals"
)]
pub async fn show(
    State(ctx): State<ApprovalContext>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ApprovalView>, ApprovalError> {
    let req = ctx.store.approval(&id).await?.ok_or(ApprovalError::NotFound(id))?;
    if !machine::may_view(&req, &caller, ctx.is_admin(&caller)) {
        return Err(ApprovalError::NotVisible);
    }
    Ok(Json(ApprovalView::new(&req, &ctx, &caller, ctx.now())))
}

/// Approve or decline (people only, never the requester nor whom the action is for),
/// quoting the digest shown.
#[utoipa::path(
    post,
    path = "/v0.1/x/approvals/{id}/decision",
    params(("id" = String, Path)),
    request_body = DecisionBody,
    responses(
        (status = 200, body = ApprovalView),
        (
            status = 403,
            description = "`self_approval`, `own_action`, `service_cannot_decide`, `not_an_approver`",
            body = ApiError
        ),
        (
            status = 409,
            description = "`digest_mismatch`, `expired`, `already_approved`, `duplicate_approval`, `declined`, \
                           `revoked`, `already_consumed`",
            body = ApiError
        ),
    ),
    tag = "approvals"
)]
pub async fn decide(
    State(ctx): State<ApprovalContext>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalView>, ApprovalError> {
    let body: DecisionBody = parse_body(&body)?;
    check_digest(&body.digest)?;
    let decision = Decision { verdict: body.decision, digest: body.digest };
    let detail = json!({"decision": decision.verdict, "digest_given": decision.digest});
    let (req, now) = apply(&ctx, &id, &caller, "approval.decision_refused", detail, |req, now| {
        machine::decide(req, &caller, &decision, now)
    })
    .await?;
    info!(approval_id = %id, actor = %caller.id(), state = req.state.as_str(), "approval decided");
    Ok(Json(ApprovalView::new(&req, &ctx, &caller, now)))
}

/// Use an approval, once (the requester only), quoting the digest of the action about
/// to be carried out.
#[utoipa::path(
    post,
    path = "/v0.1/x/approvals/{id}/consume",
    params(("id" = String, Path)),
    request_body = ConsumeBody,
    responses(
        (status = 200, description = "Consumed: go ahead", body = ApprovalView),
        (status = 403, description = "`not_requester`", body = ApiError),
        (
            status = 409,
            description = "`digest_mismatch`, `expired`, `not_approved`, `declined`, `revoked`, `already_consumed`",
            body = ApiError
        ),
    ),
    tag = "approvals"
)]
pub async fn consume(
    State(ctx): State<ApprovalContext>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalView>, ApprovalError> {
    let body: ConsumeBody = parse_body(&body)?;
    check_digest(&body.digest)?;
    let detail = json!({"digest_given": body.digest});
    let (req, now) = apply(&ctx, &id, &caller, "approval.consume_refused", detail, |req, now| {
        machine::consume(req, &caller, &body.digest, now)
    })
    .await?;
    info!(approval_id = %id, actor = %caller.id(), "approval consumed");
    Ok(Json(ApprovalView::new(&req, &ctx, &caller, now)))
}

/// Withdraw a pending or approved request (its requester or an administrator), until
/// it is consumed.
#[utoipa::path(
    post,
    path = "/v0.1/x/approvals/{id}/revoke",
    params(("id" = String, Path)),
    request_body = RevokeBody,
    responses(
        (status = 200, body = ApprovalView),
        (status = 403, description = "`not_allowed_to_revoke`", body = ApiError),
        (status = 409, description = "`expired`, `declined`, `revoked`, `already_consumed`", body = ApiError),
    ),
    tag = "approvals"
)]
pub async fn revoke(
    State(ctx): State<ApprovalContext>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalView>, ApprovalError> {
    let body: RevokeBody =
        if body.iter().all(u8::is_ascii_whitespace) { RevokeBody::default() } else { parse_body(&body)? };
    if body.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(ParseError::new("reason", format!("longer than {MAX_REASON_BYTES} bytes")).into());
    }
    let admin = ctx.is_admin(&caller);
    let detail = json!({"reason": body.reason});
    let (req, now) = apply(&ctx, &id, &caller, "approval.revoke_refused", detail, |req, now| {
        machine::revoke(req, &caller, admin, now)
    })
    .await?;
    info!(approval_id = %id, actor = %caller.id(), "approval revoked");
    Ok(Json(ApprovalView::new(&req, &ctx, &caller, now)))
}

/// A quoted digest must look like one (64 lowercase hex digits), so that what the audit
/// log keeps of it stays small; a well-formed but different digest is a mismatch.
fn check_digest(digest: &str) -> Result<(), ParseError> {
    if digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ParseError::new("digest", "must be 64 lowercase hex digits (SHA-256)"))
    }
}

/// A JSON body, with errors naming the field (an unknown one included).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    crate::intake::from_json(body).map_err(|mut e| {
        let unknown = e.message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next());
        if let Some(name) = unknown.filter(|_| e.field == "(body)") {
            e.field = name.to_string();
        }
        e
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCallResource {
    server: String,
    tool: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequestResource {
    repository: String,
    number: u64,
    head_sha: String,
}

/// The resource of a request of `kind`, checked.
fn parse_resource(kind: ApprovalKind, value: Value) -> Result<Resource, ParseError> {
    fn de<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ParseError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "resource".to_string() } else { format!("resource.{path}") };
            ParseError::new(field, e.into_inner().to_string())
        })
    }
    let nonempty = |field: &str, s: &str| {
        if s.trim().is_empty() || s.len() > 256 {
            Err(ParseError::new(format!("resource.{field}"), "must be 1 to 256 characters"))
        } else {
            Ok(())
        }
    };
    match kind {
        ApprovalKind::ToolCall => {
            let r: ToolCallResource = de(value)?;
            nonempty("server", &r.server)?;
            nonempty("tool", &r.tool)?;
            Ok(Resource::ToolCall { server: r.server, tool: r.tool })
        }
        ApprovalKind::PullRequest => {
            let r: PullRequestResource = de(value)?;
            nonempty("repository", &r.repository)?;
            if r.repository.split('/').filter(|p| !p.is_empty()).count() != 2 || r.repository.matches('/').count() != 1
            {
                return Err(ParseError::new("resource.repository", "must be `owner/name`"));
            }
            if r.number == 0 {
                return Err(ParseError::new("resource.number", "must be a pull request number (1 or more)"));
            }
            let sha = r.head_sha.to_ascii_lowercase();
            if !matches!(sha.len(), 40 | 64) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError::new("resource.head_sha", "must be a full commit SHA (40 or 64 hex digits)"));
            }
            Ok(Resource::PullRequest { repository: r.repository, number: r.number, head_sha: sha })
        }
    }
}
