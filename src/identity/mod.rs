//! Who is calling: services by SPIFFE ID (mesh mTLS), people by OIDC JWT.
//!
//! Every authorization decision takes a [`Principal`]; nothing else identifies a caller.

pub mod devca;
pub mod jwt;
pub mod mtls;
pub mod oidc;
pub mod svid;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

/// A caller, resolved from an authenticated credential (never from request text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// A person, from a validated OIDC token or a web session.
    User {
        subject: String,
        #[serde(default)]
        groups: Vec<String>,
        /// Display name or email, for pages and audit records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A workload, from the SPIFFE ID of a verified mTLS client certificate.
    Service { spiffe_id: String },
}

impl Principal {
    pub fn user(subject: &str, groups: &[&str]) -> Principal {
        Principal::User { subject: subject.into(), groups: groups.iter().map(|g| g.to_string()).collect(), name: None }
    }

    pub fn service(spiffe_id: &str) -> Principal {
        Principal::Service { spiffe_id: spiffe_id.into() }
    }

    /// A stable identifier: `user:<subject>` or the SPIFFE ID.
    pub fn id(&self) -> String {
        match self {
            Principal::User { subject, .. } => format!("user:{subject}"),
            Principal::Service { spiffe_id } => spiffe_id.clone(),
        }
    }

    pub fn is_service(&self) -> bool {
        matches!(self, Principal::Service { .. })
    }

    pub fn groups(&self) -> &[String] {
        match self {
            Principal::User { groups, .. } => groups,
            Principal::Service { .. } => &[],
        }
    }

    /// What pages show: the name when known, else the id.
    pub fn display(&self) -> String {
        match self {
            Principal::User { name: Some(n), .. } => n.clone(),
            other => other.id(),
        }
    }
}

/// The authenticated caller of a request. The authentication layer puts a
/// `Principal` into the request's extensions; handlers take this extractor, which
/// answers 401 when there is none.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = crate::web::ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().map(Authenticated).ok_or_else(|| {
            crate::web::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authenticate with mTLS or a bearer token",
            )
        })
    }
}

/// Installs the process-wide rustls crypto provider. Two providers (aws-lc-rs and
/// ring) are compiled in through dependencies, so rustls cannot pick one by itself,
/// and clients built without an explicit provider (reqwest's) would panic. Call once
/// at start; later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
