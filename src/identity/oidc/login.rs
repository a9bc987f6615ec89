//! The relying-party side of the OpenID Connect authorization-code flow with PKCE.
//!
//! [`OidcLogin::authorization_url`] sends the browser to the provider with a `state`
//! (binds the callback to the browser that started), a `nonce` (binds the ID token to
//! this login) and an S256 code challenge (binds the code to whoever holds the
//! verifier). [`OidcLogin::exchange`] redeems the code at the token endpoint and
//! validates the ID token: signature, `iss`, `aud` = our client id, `azp`, `nonce`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::config::OidcConfig;
use crate::identity::jwt::{JwksError, JwtError, JwtValidator, KeyCachePolicy, ProviderMetadata, ValidatedToken};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the provider's discovery failed: {0}")]
    Discovery(#[from] JwksError),
    #[error("the provider's discovery document names no {0}")]
    MissingEndpoint(&'static str),
    /// The provider sent the browser back with an error (e.g. `access_denied`).
    #[error("the provider refused the login: {error}")]
    Refused { error: String, description: Option<String> },
    #[error("the token endpoint failed: {0}")]
    TokenEndpoint(String),
    #[error("the ID token is invalid: {0}")]
    IdToken(#[from] JwtError),
    #[error("the ID token's nonce does not match this login")]
    NonceMismatch,
    #[error("the ID token was issued to another client (azp)")]
    WrongAuthorizedParty,
}

pub(crate) struct OidcLogin {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    client_secret: Option<SecretString>,
    groups_claim: String,
    redirect_uri: String,
    /// Discovered on first use and kept; a failed discovery is retried next time.
    metadata: RwLock<Option<Arc<ProviderMetadata>>>,
    timeout: std::time::Duration,
    /// ID tokens are meant for us as a client: `aud` = client id.
    id_tokens: JwtValidator,
}

/// The values one login sends out and must check on return.
pub(crate) struct LoginSecrets {
    pub state: SecretString,
    pub nonce: SecretString,
    pub code_verifier: SecretString,
}

impl OidcLogin {
    pub fn new(http: reqwest::Client, cfg: &OidcConfig, redirect_uri: String) -> Result<OidcLogin, JwtError> {
        let mut settings = crate::identity::jwt::ValidatorSettings::from_oidc(cfg);
        settings.audience = cfg.client_id.clone();
        let id_tokens = JwtValidator::discover(http.clone(), settings)?;
        Ok(OidcLogin {
            http,
            issuer: cfg.issuer.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            groups_claim: cfg.groups_claim.clone(),
            redirect_uri,
            metadata: RwLock::new(None),
            timeout: KeyCachePolicy::default().timeout,
            id_tokens,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The validator of ID tokens (`aud` = client id); its key cache can be shared
    /// with validators for other audiences of the same provider.
    pub fn id_token_validator(&self) -> &JwtValidator {
        &self.id_tokens
    }

    async fn metadata(&self) -> Result<Arc<ProviderMetadata>, LoginError> {
        if let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        let mut slot = self.metadata.write().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = Arc::new(crate::identity::jwt::discover(&self.http, &self.issuer, self.timeout).await?);
        *slot = Some(m.clone());
        Ok(m)
    }

    /// Where to send the browser to log in.
    pub async fn authorization_url(&self, secrets: &LoginSecrets) -> Result<String, LoginError> {
        let metadata = self.metadata().await?;
        let endpoint =
            metadata.authorization_endpoint.as_deref().ok_or(LoginError::MissingEndpoint("authorization_endpoint"))?;
        let mut url =
            reqwest::Url::parse(endpoint).map_err(|_| LoginError::MissingEndpoint("valid authorization_endpoint"))?;
        // Ask for the groups scope only where the provider knows it: some providers
        // refuse unknown scopes, others put groups in the ID token without one.
        let mut scope = "openid profile email".to_string();
        if metadata.scopes_supported.contains(&self.groups_claim) {
            scope.push(' ');
            scope.push_str(&self.groups_claim);
        }
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", secrets.state.expose_secret())
            .append_pair("nonce", secrets.nonce.expose_secret())
            .append_pair("code_challenge", &pkce_challenge(secrets.code_verifier.expose_secret()))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Redeems `code` and returns the validated ID token of the person who logged in.
    pub async fn exchange(
        &self,
        code: &str,
        attempt: &super::sessions::LoginAttempt,
    ) -> Result<ValidatedToken, LoginError> {
        let metadata = self.metadata().await?;
        let endpoint = metadata.token_endpoint.as_deref().ok_or(LoginError::MissingEndpoint("token_endpoint"))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", attempt.code_verifier.expose_secret()),
        ];
        let mut request = self.http.post(endpoint).timeout(self.timeout);
        match &self.client_secret {
            // RFC 6749 2.3.1: both parts are form-encoded before they go into Basic.
            Some(secret) => {
                request = request.basic_auth(
                    crate::percent::encode(&self.client_id),
                    Some(crate::percent::encode(secret.expose_secret())),
                )
            }
            None => form.push(("client_id", self.client_id.as_str())),
        }
        let response =
            request.form(&form).send().await.map_err(|e| LoginError::TokenEndpoint(format!("request failed: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| LoginError::TokenEndpoint(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            // The provider's error code says what went wrong and holds no secret.
            let reason = serde_json::from_slice::<OAuthError>(&body).map(|e| e.error).unwrap_or_default();
            return Err(LoginError::TokenEndpoint(format!("HTTP {} {reason}", status.as_u16())));
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| LoginError::TokenEndpoint("the answer has no id_token".to_string()))?;

        let token = self.id_tokens.validate(tokens.id_token.expose_secret()).await?;
        let nonce = token.claim_str("nonce").unwrap_or_default();
        if !bool::from(nonce.as_bytes().ct_eq(attempt.nonce.expose_secret().as_bytes())) {
            return Err(LoginError::NonceMismatch);
        }
        // OIDC Core 3.1.3.7: with several audiences, `azp` must be present and be us;
        // when present at all, it must be us.
        let several_audiences = token.claims.get("aud").and_then(|a| a.as_array()).is_some_and(|a| a.len() > 1);
        match token.claim_str("azp") {
            Some(azp) if azp != self.client_id => return Err(LoginError::WrongAuthorizedParty),
            None if several_audiences => return Err(LoginError::WrongAuthorizedParty),
            _ => {}
        }
        Ok(token)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(deserialize_with = "secret")]
    id_token: SecretString,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

/// RFC 7636 S256: base64url(SHA-256(verifier)).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn client_credentials_are_form_encoded() {
        assert_eq!(crate::percent::encode("inquest"), "inquest");
        assert_eq!(crate::percent::encode("a b+c:d/é"), "a%20b%2Bc%3Ad%2F%C3%A9");
    }
}
