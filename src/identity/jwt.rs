//! People's bearer tokens: validation of OIDC-issued JWTs against the issuer's keys.
//!
//! A [`JwtValidator`] accepts a token only when all of these hold: its `alg` is one of
//! the pinned asymmetric algorithms (never `none`, never HMAC), the key named by its
//! `kid` comes from the issuer's JWKS and is of the type the `alg` needs, the signature
//! verifies, `iss` is the issuer, `aud` contains this validator's audience, `exp` has not
//! passed and `nbf` has (both with a small leeway), and `sub` is present. The caller's
//! groups come from the configured claim.
//!
//! Keys come from OIDC discovery (see [`keys`] for caching, refetching and serving stale
//! keys) or from a static JWKS (the development issuer, [`DevIssuer`]). Validators for
//! several audiences share one key cache through [`JwtValidator::with_audience`].

mod dev_issuer;
mod keys;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde_json::{Map, Value};

use crate::clock::{Clock, SystemClock};
use crate::config::OidcConfig;
use crate::identity::Principal;

pub use dev_issuer::{DevIssuer, DevIssuerError};
pub use keys::{JwksError, KeyCachePolicy, ProviderMetadata, discover};

/// Why a token was refused (or could not be checked).
///
/// The `Display` text is for logs; [`JwtError::error_description`] is what a client may
/// be told, and says what was wrong without naming keys, URLs or expected values.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with a JSON header and a JSON payload.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header's `alg` is `none`, HMAC, unknown, or simply not pinned.
    #[error("algorithm `{0}` is not accepted")]
    AlgorithmNotAllowed(String),
    /// No `kid` in the header while the issuer has several keys.
    #[error("the token names no key (`kid`) and the issuer has several")]
    MissingKeyId,
    /// The `kid` is not in the issuer's JWKS, even after a refetch (or the refetch was
    /// not due yet).
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    /// The key named by `kid` cannot make signatures of the header's `alg` (e.g. an EC
    /// key for RS256, or a key published for another algorithm).
    #[error("key `{kid}` does not fit algorithm {alg}")]
    KeyAlgorithmMismatch { kid: String, alg: String },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the token is not valid before {0}")]
    NotYetValid(DateTime<Utc>),
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the `{0}` claim has the wrong type")]
    InvalidClaim(String),
    /// The issuer's keys could not be fetched and none are cached. Not the token's
    /// fault: answer 503, not 401.
    #[error("the issuer's keys are unavailable: {0}")]
    KeysUnavailable(#[source] JwksError),
    /// The validator was built with settings that cannot work.
    #[error("invalid validator settings: {0}")]
    Settings(String),
}

impl JwtError {
    /// Whether the token itself is to blame (401 `invalid_token`); otherwise the
    /// server cannot check tokens right now (503).
    pub fn is_token_error(&self) -> bool {
        !matches!(self, JwtError::KeysUnavailable(_) | JwtError::Settings(_))
    }

    /// A short, stable code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed",
            JwtError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            JwtError::MissingKeyId => "missing_kid",
            JwtError::UnknownKey(_) => "unknown_kid",
            JwtError::KeyAlgorithmMismatch { .. } => "key_algorithm_mismatch",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired(_) => "expired",
            JwtError::NotYetValid(_) => "not_yet_valid",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::InvalidClaim(_) => "invalid_claim",
            JwtError::KeysUnavailable(_) => "keys_unavailable",
            JwtError::Settings(_) => "settings",
        }
    }

    /// What a client may be told (RFC 6750 `error_description`): no key ids, URLs or
    /// expected values, nothing but printable ASCII without quotes.
    pub fn error_description(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "the token is malformed",
            JwtError::AlgorithmNotAllowed(_) => "the token's signing algorithm is not accepted",
            JwtError::MissingKeyId | JwtError::UnknownKey(_) => "the token is signed with an unknown key",
            JwtError::KeyAlgorithmMismatch { .. } => "the token's algorithm does not match its key",
            JwtError::BadSignature => "the token's signature is invalid",
            JwtError::Expired(_) => "the token has expired",
            JwtError::NotYetValid(_) => "the token is not valid yet",
            JwtError::WrongIssuer => "the token is from an untrusted issuer",
            JwtError::WrongAudience => "the token is not meant for this service",
            JwtError::MissingClaim(_) => "the token lacks a required claim",
            JwtError::InvalidClaim(_) => "the token has an invalid claim",
            JwtError::KeysUnavailable(_) | JwtError::Settings(_) => "tokens cannot be checked right now",
        }
    }

    /// The `WWW-Authenticate` value for a 401 answering this error.
    pub fn www_authenticate(&self) -> String {
        format!("Bearer error=\"invalid_token\", error_description=\"{}\"", self.error_description())
    }
}

/// How a validator is set up. [`ValidatorSettings::new`] has sensible defaults.
#[derive(Clone)]
pub struct ValidatorSettings {
    /// The exact `iss` expected, also the base of discovery.
    pub issuer: String,
    /// The `aud` this validator accepts.
    pub audience: String,
    /// Pinned algorithms, e.g. `["RS256", "ES256"]`; asymmetric only.
    pub algorithms: Vec<String>,
    /// The claim holding the caller's groups: an array of strings, or one string
    /// separated by spaces or commas.
    pub groups_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    pub keys: KeyCachePolicy,
    pub clock: Arc<dyn Clock>,
}

impl ValidatorSettings {
    pub fn new(issuer: &str, audience: &str) -> ValidatorSettings {
        ValidatorSettings {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            algorithms: vec!["RS256".to_string(), "ES256".to_string()],
            groups_claim: "groups".to_string(),
            leeway: Duration::from_secs(30),
            keys: KeyCachePolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The settings for the configured OIDC provider and the registry/web audience.
    pub fn from_oidc(cfg: &OidcConfig) -> ValidatorSettings {
        ValidatorSettings {
            algorithms: cfg.algorithms.clone(),
            groups_claim: cfg.groups_claim.clone(),
            ..ValidatorSettings::new(&cfg.issuer, &cfg.audience)
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedToken {
    pub subject: String,
    pub groups: Vec<String>,
    /// `name`, else `preferred_username`, else `email`.
    pub name: Option<String>,
    pub issuer: String,
    pub expires_at: DateTime<Utc>,
    /// Every claim of the payload, for callers that need more (e.g. `nonce`, `scope`).
    pub claims: Map<String, Value>,
}

impl ValidatedToken {
    pub fn principal(&self) -> Principal {
        Principal::User { subject: self.subject.clone(), groups: self.groups.clone(), name: self.name.clone() }
    }

    /// A string claim, if present and a string.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Validates JWTs of one issuer for one audience. Cheap to clone; clones and
/// [`JwtValidator::with_audience`] share the key cache.
#[derive(Clone)]
pub struct JwtValidator {
    issuer: Arc<str>,
    audience: Arc<str>,
    algorithms: Arc<[Algorithm]>,
    groups_claim: Arc<str>,
    leeway: Duration,
    keys: Arc<keys::KeySource>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtValidator {
    /// A validator whose keys come from the issuer's discovery document and JWKS,
    /// fetched on first use (so a provider that is down at startup does not stop us).
    pub fn discover(http: reqwest::Client, settings: ValidatorSettings) -> Result<JwtValidator, JwtError> {
        let source = keys::KeySource::remote(http, &settings.issuer, settings.keys.clone());
        JwtValidator::build(settings, source)
    }

    /// A validator over a fixed key set (the development issuer's).
    pub fn with_static_jwks(settings: ValidatorSettings, jwks: &JwkSet) -> Result<JwtValidator, JwtError> {
        let source = keys::KeySource::fixed(jwks);
        JwtValidator::build(settings, source)
    }

    fn build(settings: ValidatorSettings, source: keys::KeySource) -> Result<JwtValidator, JwtError> {
        let algorithms = pinned_algorithms(&settings.algorithms)?;
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(JwtError::Settings("the issuer and the audience must not be empty".into()));
        }
        Ok(JwtValidator {
            issuer: settings.issuer.into(),
            audience: settings.audience.into(),
            algorithms: algorithms.into(),
            groups_claim: settings.groups_claim.into(),
            leeway: settings.leeway,
            keys: Arc::new(source),
            clock: settings.clock,
        })
    }

    /// The same issuer and keys, for another audience (e.g. one MCP server's).
    pub fn with_audience(&self, audience: &str) -> JwtValidator {
        JwtValidator { audience: audience.into(), ..self.clone() }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Fetches the issuer's keys now (e.g. at startup, to warm the cache); a no-op for a
    /// static key set.
    pub async fn refresh_keys(&self) -> Result<(), JwtError> {
        self.keys.refresh().await.map_err(JwtError::KeysUnavailable)
    }

    /// Checks `token` completely; see the module documentation for what is checked.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, JwtError> {
        let header = Header::parse(token)?;
        let alg = Algorithm::from_str(&header.alg)
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| JwtError::AlgorithmNotAllowed(header.alg.clone()))?;
        let key = self.keys.key_for(header.kid.as_deref()).await?;
        if !key.fits(alg) {
            return Err(JwtError::KeyAlgorithmMismatch { kid: key.kid.clone(), alg: header.alg });
        }

        // jsonwebtoken verifies the signature before it looks at iss and aud, so only a
        // correctly signed token learns which claim was wrong. exp and nbf are checked
        // afterwards against our clock (the seam tests use).
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_issuer(&[&*self.issuer]);
        validation.set_audience(&[&*self.audience]);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| from_library_error(e, &header.alg))?;
        self.token_from_claims(data.claims)
    }

    fn token_from_claims(&self, claims: Map<String, Value>) -> Result<ValidatedToken, JwtError> {
        let now = self.clock.now();
        let leeway = chrono::Duration::from_std(self.leeway).unwrap_or_default();
        let exp = time_claim(&claims, "exp")?.ok_or_else(|| JwtError::MissingClaim("exp".into()))?;
        if exp + leeway <= now {
            return Err(JwtError::Expired(exp));
        }
        if let Some(nbf) = time_claim(&claims, "nbf")?
            && nbf - leeway > now
        {
            return Err(JwtError::NotYetValid(nbf));
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(JwtError::InvalidClaim("sub".into())),
            None => return Err(JwtError::MissingClaim("sub".into())),
        };
        let groups = groups_from(claims.get(&*self.groups_claim))
            .ok_or_else(|| JwtError::InvalidClaim(self.groups_claim.to_string()))?;
        let name = ["name", "preferred_username", "email"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .map(str::to_string);
        Ok(ValidatedToken { subject, groups, name, issuer: self.issuer.to_string(), expires_at: exp, claims })
    }
}

/// The header fields we look at, read before any key is chosen. Parsed by hand because
/// jsonwebtoken cannot represent `alg: none` (it would be a JSON error, not a refusal).
#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Extensions the signer says must be understood; we understand none (RFC 7515 4.1.11).
    crit: Option<Vec<String>>,
}

impl Header {
    fn parse(token: &str) -> Result<Header, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed("a JWT has three parts".into()));
        };
        let bytes =
            URL_SAFE_NO_PAD.decode(header).map_err(|_| JwtError::Malformed("the header is not base64url".into()))?;
        let header: Header = serde_json::from_slice(&bytes)
            .map_err(|_| JwtError::Malformed("the header is not a JSON object with `alg`".into()))?;
        if header.crit.is_some() {
            return Err(JwtError::Malformed("critical header extensions are not supported".into()));
        }
        Ok(header)
    }
}

/// Parses the pinned algorithm names; only asymmetric algorithms may be pinned, so a
/// public key can never be used as an HMAC secret.
fn pinned_algorithms(names: &[String]) -> Result<Vec<Algorithm>, JwtError> {
    let mut out = Vec::new();
    for name in names {
        let alg = Algorithm::from_str(name)
            .map_err(|_| JwtError::Settings(format!("unknown or unsupported algorithm `{name}`")))?;
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(JwtError::Settings(format!("`{name}` is symmetric; only asymmetric algorithms may be pinned")));
        }
        out.push(alg);
    }
    if out.is_empty() {
        return Err(JwtError::Settings("at least one algorithm must be pinned".into()));
    }
    Ok(out)
}

fn from_library_error(e: jsonwebtoken::errors::Error, alg: &str) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => JwtError::InvalidClaim(c.clone()),
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => JwtError::InvalidClaim("exp/nbf".into()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            JwtError::AlgorithmNotAllowed(alg.to_string())
        }
        // A key that cannot be used at all (bad point, bad modulus) verifies nothing.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEddsaKey => JwtError::BadSignature,
        other => JwtError::Malformed(format!("{other:?}")),
    }
}

/// A NumericDate claim (seconds, possibly fractional) as a time.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<DateTime<Utc>>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite())
            .and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64))
            .map(Some)
            .ok_or_else(|| JwtError::InvalidClaim(name.into())),
        Some(_) => Err(JwtError::InvalidClaim(name.into())),
    }
}

/// Groups from the claim's value: absent means none; an array must hold only strings;
/// a string is split on spaces and commas. Anything else is `None` (refused: a
/// malformed groups claim must not quietly become "no groups" or "some groups").
fn groups_from(value: Option<&Value>) -> Option<Vec<String>> {
    let mut groups = BTreeSet::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                groups.insert(item.as_str()?.trim().to_string());
            }
        }
        Some(Value::String(s)) => {
            groups.extend(s.split([' ', ',']).map(str::trim).map(str::to_string));
        }
        Some(_) => return None,
    }
    groups.remove("");
    Some(groups.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn groups_claim_shapes() {
        let cases: Vec<(Option<Value>, Option<Vec<&str>>)> = vec![
            (None, Some(vec![])),
            (Some(json!(["sre", "admins", "sre"])), Some(vec!["admins", "sre"])),
            (Some(json!("sre admins")), Some(vec!["admins", "sre"])),
            (Some(json!("sre,admins, ops")), Some(vec!["admins", "ops", "sre"])),
            (Some(json!("")), Some(vec![])),
            (Some(json!(["sre", 3])), None),
            (Some(json!({"sre": true})), None),
            (Some(json!(7)), None),
        ];
        for (value, expected) in cases {
            let got = groups_from(value.as_ref());
            let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, expected, "{value:?}");
        }
    }

    #[test]
    fn only_asymmetric_algorithms_can_be_pinned() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pinned_algorithms(&names(&["RS256", "ES256"])).unwrap(), vec![Algorithm::RS256, Algorithm::ES256]);
        for bad in [&["none"][..], &["HS256"], &["RS256", "HS512"], &["rs256"], &[]] {
            assert!(matches!(pinned_algorithms(&names(bad)), Err(JwtError::Settings(_))), "{bad:?}");
        }
    }

    #[test]
    fn header_parsing_refuses_junk_and_reads_none() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        assert!(matches!(Header::parse("abc"), Err(JwtError::Malformed(_))));
        assert!(matches!(Header::parse("a.b.c.d"), Err(JwtError::Malformed(_))));
        assert!(matches!(Header::parse("!!.b.c"), Err(JwtError::Malformed(_))));
        let none = Header::parse(&format!("{}.e30.", enc(json!({"alg": "none"})))).unwrap();
        assert_eq!((none.alg.as_str(), none.kid), ("none", None));
    }

    #[test]
    fn error_descriptions_are_safe_header_text() {
        let e = JwtError::UnknownKey("secret-kid-name".into());
        assert_eq!(
            e.www_authenticate(),
            "Bearer error=\"invalid_token\", error_description=\"the token is signed with an unknown key\""
        );
        assert!(!e.www_authenticate().contains("secret-kid-name"));
    }
}
