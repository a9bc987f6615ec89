//! The development login: a clearly marked page where anyone who can reach it signs
//! in as anyone, for the embedded default on a loopback listener only.
//!
//! It does not bypass anything: the POST mints a token with the development issuer's
//! key, validates it with the same [`JwtValidator`](crate::identity::jwt::JwtValidator)
//! that real tokens go through (against the issuer's static JWKS), and creates the same
//! kind of session as an OIDC login.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{NextQuery, WebAuth, escape_html, page, safe_next};
use crate::identity::jwt::{DevIssuer, JwtValidator};

/// How long a development login's token is valid; the session lasts its own TTL.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(300);

/// The development issuer and the validator for its tokens.
pub(crate) struct DevLogin {
    pub issuer: DevIssuer,
    pub validator: JwtValidator,
}

#[derive(Deserialize)]
pub(crate) struct DevLoginForm {
    subject: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    next: Option<String>,
}

fn refused() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Development login disabled",
        "<p>The development login is not enabled on this server. Sign in through the configured identity provider.</p>",
    )
}

pub(crate) async fn form(State(auth): State<Arc<WebAuth>>, Query(q): Query<NextQuery>) -> Response {
    if auth.dev.is_none() {
        return refused();
    }
    let next = escape_html(&safe_next(q.next.as_deref()));
    let body = format!(
        r#"<div style="background:#b00020;color:#fff;padding:1em;font-weight:bold">
DEVELOPMENT LOGIN: not for production. Anyone who can reach this page can sign in as anyone.
</div>
<form method="post" action="/auth/dev-login">
<p><label>Subject <input name="subject" required autofocus></label></p>
<p><label>Groups (space or comma separated) <input name="groups"></label></p>
<input type="hidden" name="next" value="{next}">
<p><button type="submit">Sign in (development)</button></p>
</form>"#
    );
    page(StatusCode::OK, "Development login", &body)
}

pub(crate) async fn submit(
    State(auth): State<Arc<WebAuth>>,
    headers: HeaderMap,
    Form(f): Form<DevLoginForm>,
) -> Response {
    let Some(dev) = &auth.dev else { return refused() };
    // Login CSRF: another site's page must not be able to sign this browser in as
    // someone of its choosing.
    if !same_origin(&headers) {
        return page(StatusCode::FORBIDDEN, "Refused", "<p>Cross-site sign-in requests are refused.</p>");
    }
    let subject = f.subject.trim();
    if subject.is_empty() || subject.len() > 256 {
        return page(StatusCode::BAD_REQUEST, "Sign-in failed", "<p>A subject of 1 to 256 characters is required.</p>");
    }
    let groups: Vec<String> =
        f.groups.split([' ', ',']).map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect();
    let token = match dev.issuer.mint(subject, &groups, dev.validator.audience(), DEV_TOKEN_TTL) {
        Ok(t) => t,
        Err(e) => return auth.failure(StatusCode::INTERNAL_SERVER_ERROR, "the development issuer failed", &e),
    };
    let principal = match dev.validator.validate(&token).await {
        Ok(valid) => valid.principal(),
        Err(e) => return auth.failure(StatusCode::INTERNAL_SERVER_ERROR, "the development token did not validate", &e),
    };
    auth.start_session(principal, "dev", &safe_next(f.next.as_deref()), false).await
}

/// The development issuer's public keys, so other roles can validate its tokens.
pub(crate) async fn jwks(State(auth): State<Arc<WebAuth>>) -> Response {
    match &auth.dev {
        Some(dev) => Json(dev.issuer.jwks()).into_response(),
        None => refused(),
    }
}

/// A minimal discovery document for the development issuer, so a
/// [`JwtValidator::discover`] pointed at it works like for any provider.
pub(crate) async fn discovery(State(auth): State<Arc<WebAuth>>) -> Response {
    match &auth.dev {
        Some(dev) => Json(serde_json::json!({
            "issuer": dev.issuer.issuer(),
            "jwks_uri": format!("{}/jwks.json", dev.issuer.issuer()),
            "id_token_signing_alg_values_supported": ["ES256"],
        }))
        .into_response(),
        None => refused(),
    }
}

/// Browsers send `Origin` with form posts; it must name the host the form was posted
/// to. Clients that send no `Origin` (curl, tests) are not browsers being tricked.
fn same_origin(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_posts_are_recognized() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let cases = [
            (headers(&[("host", "127.0.0.1:7400")]), true),
            (headers(&[("host", "127.0.0.1:7400"), ("origin", "http://127.0.0.1:7400")]), true),
            (headers(&[("host", "localhost:7400"), ("origin", "http://localhost:7400")]), true),
            (headers(&[("host", "127.0.0.1:7400"), ("origin", "http://evil.example")]), false),
            (headers(&[("host", "127.0.0.1:7400"), ("origin", "null")]), false),
            (headers(&[("host", "127.0.0.1:7400"), ("sec-fetch-site", "cross-site")]), false),
        ];
        for (h, expected) in cases {
            assert_eq!(same_origin(&h), expected, "{h:?}");
        }
    }
}
