//! Who is calling an MCP server: services by the SPIFFE ID of their verified client
//! certificate, people (and tools acting for them) by an OAuth bearer JWT whose audience
//! is this server's URL. The server is an OAuth 2.1 resource server: it publishes RFC 9728
//! metadata and answers a missing or bad credential with a `WWW-Authenticate` challenge
//! that points there.
//!
//! The bearer token is taken off the request once it is validated, so nothing behind
//! this layer (rmcp, the domain, its backend) can forward it: no token passthrough.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::settings::{AuthMode, ServerSettings};
use crate::identity::Principal;
use crate::identity::jwt::JwtValidator;
use crate::identity::mtls::MtlsPeer;

/// The principal every caller is when authentication is off.
pub fn anonymous() -> Principal {
    Principal::user("anonymous", &[])
}

/// What the authentication layer consults.
pub struct Authenticator {
    mode: AuthMode,
    /// Validates tokens of the configured issuer for this server's audience.
    jwt: Option<JwtValidator>,
    resource: String,
    metadata_url: String,
    required_scope: Option<String>,
}

/// Why a request was refused, as the challenge tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credential at all.
    Missing,
    /// A bearer token that does not validate; the description is safe to show.
    InvalidToken(&'static str),
    /// A valid token without the scope this server needs.
    InsufficientScope,
    /// Tokens cannot be checked now (the issuer's keys are unreachable).
    Unavailable,
}

impl Authenticator {
    /// `jwt` must already have this server's URL as its audience (see
    /// [`JwtValidator::with_audience`]); `None` accepts mTLS callers only.
    pub fn new(settings: &ServerSettings, jwt: Option<JwtValidator>) -> Authenticator {
        Authenticator {
            mode: settings.auth,
            jwt,
            resource: settings.public_url.clone(),
            metadata_url: settings.metadata_url(),
            required_scope: settings.required_scope.clone(),
        }
    }

    /// The RFC 9728 protected-resource metadata.
    pub fn metadata(&self) -> serde_json::Value {
        let servers: Vec<&str> = self.jwt.iter().map(|j| j.issuer()).collect();
        let scopes: Vec<&str> = self.required_scope.iter().map(String::as_str).collect();
        json!({
            "resource": self.resource,
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
            "scopes_supported": scopes,
            "resource_name": format!("Inquest MCP server {}", self.resource),
        })
    }

    /// The `WWW-Authenticate` value answering `refusal`.
    pub fn challenge(&self, refusal: &Refusal) -> String {
        let mut parts = Vec::new();
        match refusal {
            Refusal::Missing | Refusal::Unavailable => {}
            Refusal::InvalidToken(why) => {
                parts.push("error=\"invalid_token\"".to_string());
                parts.push(format!("error_description=\"{why}\""));
            }
            Refusal::InsufficientScope => parts.push("error=\"insufficient_scope\"".to_string()),
        }
        parts.push(format!("resource_metadata=\"{}\"", self.metadata_url));
        if let Some(scope) = &self.required_scope {
            parts.push(format!("scope=\"{scope}\""));
        }
        format!("Bearer {}", parts.join(", "))
    }

    async fn resolve(&self, spiffe_id: Option<String>, token: Option<&str>) -> Result<Principal, Refusal> {
        if self.mode == AuthMode::None {
            return Ok(anonymous());
        }
        if let Some(id) = spiffe_id {
            return Ok(Principal::service(&id));
        }
        let token = token.ok_or(Refusal::Missing)?;
        let validator = self.jwt.as_ref().ok_or(Refusal::InvalidToken("bearer tokens are not accepted here"))?;
        let valid = match validator.validate(token).await {
            Ok(v) => v,
            Err(e) if !e.is_token_error() => {
                tracing::warn!(error = %e, "cannot validate a bearer token");
                return Err(Refusal::Unavailable);
            }
            Err(e) => return Err(Refusal::InvalidToken(e.error_description())),
        };
        if let Some(needed) = &self.required_scope {
            let granted = valid.claim_str("scope").unwrap_or_default();
            if !granted.split(' ').any(|s| s == needed) {
                return Err(Refusal::InsufficientScope);
            }
        }
        Ok(valid.principal())
    }

    fn refuse(&self, refusal: Refusal) -> Response {
        let (status, code) = match refusal {
            Refusal::Missing | Refusal::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Refusal::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
            Refusal::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable"),
        };
        let body = Json(json!({"error": code, "message": "authenticate with mTLS or a bearer token for this server"}));
        let mut resp = (status, body).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.challenge(&refusal)) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// The middleware: puts the caller's [`Principal`] into the request's extensions, or
/// answers 401/403 with a challenge.
pub async fn authenticate(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let spiffe_id = req.extensions().get::<ConnectInfo<MtlsPeer>>().and_then(|c| c.0.spiffe_id.clone());
    let token = bearer(&req);
    match auth.resolve(spiffe_id, token.as_deref()).await {
        Ok(principal) => {
            req.headers_mut().remove(header::AUTHORIZATION);
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(refusal) => auth.refuse(refusal),
    }
}

/// `GET /.well-known/oauth-protected-resource[/path]`.
pub async fn metadata(State(auth): State<Arc<Authenticator>>) -> Json<serde_json::Value> {
    Json(auth.metadata())
}

fn bearer(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_the_metadata_and_the_scope() {
        let mut s = ServerSettings::new("airflow", "https://h/mcp/airflow");
        s.required_scope = Some("mcp:tools".into());
        let a = Authenticator::new(&s, None);
        assert_eq!(
            a.challenge(&Refusal::Missing),
            "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp/airflow\", scope=\"mcp:tools\""
        );
        assert!(a.challenge(&Refusal::InsufficientScope).starts_with("Bearer error=\"insufficient_scope\""));
    }
}
