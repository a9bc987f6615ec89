//! Authentication for every HTTP request: turns a verified credential into the
//! request's [`Principal`] (the `Authenticated` extractor reads it back).
//!
//! Order: the SPIFFE ID of a verified mTLS client certificate (services on the mesh
//! listener); else a bearer JWT (people and tools acting for them); else a web session
//! cookie (people in the browser). A bearer token that fails validation is a 401 at
//! once, with a `WWW-Authenticate` that says why; no credential at all passes through
//! unauthenticated, and handlers that need a caller refuse it.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::identity::Principal;
use crate::identity::mtls::MtlsPeer;
use crate::identity::oidc::WebAuth;
use crate::web::ApiError;

/// What the authentication layer consults.
#[derive(Clone, Default)]
pub struct Authn {
    /// Sessions and bearer validation; `None` where no login is configured.
    pub web: Option<Arc<WebAuth>>,
}

/// The middleware: `axum::middleware::from_fn_with_state(authn, authenticate)`.
pub async fn authenticate(State(authn): State<Authn>, mut req: Request, next: Next) -> Response {
    // Take what is needed out of the request first: the body is not `Sync`, so the
    // request must not be borrowed across an await.
    let spiffe_id = req.extensions().get::<ConnectInfo<MtlsPeer>>().and_then(|c| c.0.spiffe_id.clone());
    let token = bearer(&req).map(str::to_string);
    let headers = req.headers().clone();
    if let Some(principal) = resolve(&authn, spiffe_id, token, &headers).await {
        match principal {
            Ok(p) => {
                tracing::Span::current().record("principal", p.id());
                req.extensions_mut().insert(p);
            }
            Err(resp) => return resp,
        }
    }
    next.run(req).await
}

async fn resolve(
    authn: &Authn,
    spiffe_id: Option<String>,
    token: Option<String>,
    headers: &HeaderMap,
) -> Option<Result<Principal, Response>> {
    if let Some(id) = spiffe_id {
        return Some(Ok(Principal::service(&id)));
    }
    if let Some(token) = token {
        let Some(validator) = authn.web.as_ref().and_then(|w| w.bearer_validator()) else {
            return Some(Err(unauthorized(
                "invalid_token",
                "bearer tokens are not accepted here: no OIDC provider is configured",
            )));
        };
        return Some(match validator.validate(&token).await {
            Ok(valid) => Ok(valid.principal()),
            // The provider's keys cannot be fetched: not the caller's fault, retry later.
            Err(e) if !e.is_token_error() => {
                tracing::warn!(error = %e, "cannot validate a bearer token");
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable", e.error_description())
                    .into_response())
            }
            Err(e) => {
                let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.error_description()).into_response();
                if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                Err(resp)
            }
        });
    }
    let web = authn.web.as_ref()?;
    web.principal_from_headers(headers).await.map(Ok)
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn unauthorized(code: &str, message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"inquest\""));
    resp
}
