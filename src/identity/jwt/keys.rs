//! An issuer's signing keys: a fixed set, or found by OIDC discovery and cached by `kid`.
//!
//! The cache follows from what can go wrong:
//! - A token signed with a key we have not seen (the issuer rotated) triggers a refetch,
//!   but at most once per [`KeyCachePolicy::refetch_interval`], so tokens with made-up
//!   `kid`s cannot turn us into a load generator against the issuer.
//! - Fetches are single-flight: validations that need a fetch wait for the one in
//!   progress and then look again instead of starting their own.
//! - When the issuer cannot be reached, the keys we have keep working (stale beats
//!   down); only with nothing cached does validation fail, as "unavailable", not as a
//!   bad token.
//! - Cached keys are refreshed after [`KeyCachePolicy::max_age`], so a key the issuer
//!   withdrew stops being accepted.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::JwtError;

/// How keys are cached and refetched.
#[derive(Debug, Clone)]
pub struct KeyCachePolicy {
    /// Least time between two fetches while keys are cached (unknown `kid`, age).
    pub refetch_interval: Duration,
    /// Least time between two attempts while nothing is cached yet.
    pub cold_retry: Duration,
    /// Age after which cached keys are refreshed on the next validation.
    pub max_age: Duration,
    /// Limit for each HTTP request to the issuer.
    pub timeout: Duration,
}

impl Default for KeyCachePolicy {
    fn default() -> Self {
        KeyCachePolicy {
            refetch_interval: Duration::from_secs(60),
            cold_retry: Duration::from_secs(5),
            max_age: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why the issuer's discovery document or keys could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwksError {
    #[error("requesting {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not a valid {what}: {reason}")]
    Invalid { url: String, what: &'static str, reason: String },
    /// OIDC Discovery 1.0 section 4.3: the document must name exactly the issuer asked.
    #[error("the discovery document names issuer `{found}`, expected `{expected}`")]
    IssuerMismatch { expected: String, found: String },
    #[error("{url} holds no usable signing key")]
    NoUsableKeys { url: String },
    #[error("the keys have not been fetched yet")]
    NotFetched,
}

/// What an OIDC provider's discovery document says, as far as we use it.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// Fetches `<issuer>/.well-known/openid-configuration` and checks that it speaks for
/// `issuer`.
pub async fn discover(http: &reqwest::Client, issuer: &str, timeout: Duration) -> Result<ProviderMetadata, JwksError> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let metadata: ProviderMetadata = get_json(http, &url, timeout, "discovery document").await?;
    if metadata.issuer != issuer {
        return Err(JwksError::IssuerMismatch { expected: issuer.to_string(), found: metadata.issuer });
    }
    Ok(metadata)
}

/// One verification key, with what it may verify.
pub(super) struct CachedKey {
    /// Empty when the JWKS gave the key no id.
    pub kid: String,
    kind: KeyKind,
    /// The `alg` the issuer published the key for, if it said.
    published_alg: Option<KeyAlgorithm>,
    pub decoding: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl CachedKey {
    /// Whether a signature of `alg` may be checked with this key: the key type must be
    /// the one the algorithm is defined for, and a key published for one algorithm is
    /// not used for another.
    pub fn fits(&self, alg: Algorithm) -> bool {
        let kind_fits = match alg.family() {
            AlgorithmFamily::Rsa => self.kind == KeyKind::Rsa,
            AlgorithmFamily::Ec => {
                matches!((alg, self.kind), (Algorithm::ES256, KeyKind::EcP256) | (Algorithm::ES384, KeyKind::EcP384))
            }
            AlgorithmFamily::Ed => self.kind == KeyKind::Ed25519,
            AlgorithmFamily::Hmac => false,
        };
        kind_fits && self.published_alg.is_none_or(|published| published == KeyAlgorithm::from(alg))
    }

    fn from_jwk(jwk: &Jwk) -> Option<CachedKey> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => KeyKind::EcP256,
                EllipticCurve::P384 => KeyKind::EcP384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
            // Symmetric keys never verify anything here; other key types are unknown.
            _ => return None,
        };
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        Some(CachedKey {
            kid: jwk.common.key_id.clone().unwrap_or_default(),
            kind,
            published_alg: jwk.common.key_algorithm,
            decoding,
        })
    }
}

/// The usable keys of one JWKS.
#[derive(Default)]
pub(super) struct KeyMap {
    keys: Vec<Arc<CachedKey>>,
}

impl KeyMap {
    fn from_jwks(jwks: &JwkSet) -> KeyMap {
        KeyMap { keys: jwks.keys.iter().filter_map(CachedKey::from_jwk).map(Arc::new).collect() }
    }

    /// The key a token names. A token without `kid` is accepted only when the issuer
    /// has a single key, so the choice is never ambiguous.
    fn find(&self, kid: Option<&str>) -> Result<Option<Arc<CachedKey>>, JwtError> {
        match kid {
            Some(kid) => Ok(self.keys.iter().find(|k| k.kid == kid).cloned()),
            None if self.keys.len() > 1 => Err(JwtError::MissingKeyId),
            None => Ok(self.keys.first().cloned()),
        }
    }
}

/// Where a validator's keys come from.
pub(super) enum KeySource {
    Fixed(KeyMap),
    Remote(Box<RemoteKeys>),
}

impl KeySource {
    pub fn fixed(jwks: &JwkSet) -> KeySource {
        KeySource::Fixed(KeyMap::from_jwks(jwks))
    }

    pub fn remote(http: reqwest::Client, issuer: &str, policy: KeyCachePolicy) -> KeySource {
        KeySource::Remote(Box::new(RemoteKeys {
            http,
            issuer: issuer.to_string(),
            policy,
            cache: RwLock::new(Arc::new(Snapshot::default())),
            refresh: Mutex::new(RefreshState::default()),
        }))
    }

    pub async fn key_for(&self, kid: Option<&str>) -> Result<Arc<CachedKey>, JwtError> {
        match self {
            KeySource::Fixed(map) => map.find(kid)?.ok_or_else(|| unknown(kid)),
            KeySource::Remote(remote) => remote.key_for(kid).await,
        }
    }

    pub async fn refresh(&self) -> Result<(), JwksError> {
        match self {
            KeySource::Fixed(_) => Ok(()),
            KeySource::Remote(remote) => {
                let mut state = remote.refresh.lock().await;
                remote.fetch_and_store(&mut state).await
            }
        }
    }
}

fn unknown(kid: Option<&str>) -> JwtError {
    JwtError::UnknownKey(kid.unwrap_or_default().to_string())
}

/// The keys of an issuer found by discovery.
pub(super) struct RemoteKeys {
    http: reqwest::Client,
    issuer: String,
    policy: KeyCachePolicy,
    /// What validations read: replaced whole by each successful fetch.
    cache: RwLock<Arc<Snapshot>>,
    /// Held while fetching; whoever holds it is the single flight.
    refresh: Mutex<RefreshState>,
}

#[derive(Default)]
struct Snapshot {
    keys: KeyMap,
    /// When these keys were fetched; `None` before the first successful fetch.
    fetched_at: Option<Instant>,
    /// Counts successful fetches, so a waiter can tell that one happened meanwhile.
    generation: u64,
}

#[derive(Default)]
struct RefreshState {
    jwks_uri: Option<String>,
    last_attempt: Option<Instant>,
    last_error: Option<JwksError>,
}

impl RemoteKeys {
    fn snapshot(&self) -> Arc<Snapshot> {
        // A poisoned lock only means a reader panicked; the snapshot is still whole.
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<CachedKey>, JwtError> {
        let seen = self.snapshot();
        if let Some(key) = seen.keys.find(kid)? {
            let old = seen.fetched_at.is_some_and(|t| t.elapsed() >= self.policy.max_age);
            // Refresh old keys inline, but only if nobody else is already at it: the
            // others keep using what is cached meanwhile.
            if old && let Ok(mut state) = self.refresh.try_lock() {
                if self.snapshot().generation == seen.generation && self.due(&state, true) {
                    // On failure the old keys stay; the error is logged inside.
                    let _ = self.fetch_and_store(&mut state).await;
                }
                drop(state);
                return self.snapshot().keys.find(kid)?.ok_or_else(|| unknown(kid));
            }
            return Ok(key);
        }

        // Not cached: wait for the one fetch in flight, or be it.
        let mut state = self.refresh.lock().await;
        let current = self.snapshot();
        if let Some(key) = current.keys.find(kid)? {
            return Ok(key);
        }
        let warm = current.fetched_at.is_some();
        // If a fetch completed while we waited, its answer is as fresh as ours would be.
        if current.generation == seen.generation && self.due(&state, warm) {
            debug!(issuer = %self.issuer, kid = kid.unwrap_or_default(), "unknown signing key; refetching the key set");
            if let Err(e) = self.fetch_and_store(&mut state).await
                && !warm
            {
                return Err(JwtError::KeysUnavailable(e));
            }
            return self.snapshot().keys.find(kid)?.ok_or_else(|| unknown(kid));
        }
        if !warm {
            return Err(JwtError::KeysUnavailable(state.last_error.clone().unwrap_or(JwksError::NotFetched)));
        }
        Err(unknown(kid))
    }

    fn due(&self, state: &RefreshState, warm: bool) -> bool {
        let interval = if warm { self.policy.refetch_interval } else { self.policy.cold_retry };
        state.last_attempt.is_none_or(|t| t.elapsed() >= interval)
    }

    /// One fetch (discovery first if needed); on success the cache is replaced, on
    /// failure it is left as it was.
    async fn fetch_and_store(&self, state: &mut RefreshState) -> Result<(), JwksError> {
        state.last_attempt = Some(Instant::now());
        let result = async {
            let uri = match &state.jwks_uri {
                Some(uri) => uri.clone(),
                None => {
                    let metadata = discover(&self.http, &self.issuer, self.policy.timeout).await?;
                    state.jwks_uri = Some(metadata.jwks_uri.clone());
                    metadata.jwks_uri
                }
            };
            let jwks: JwkSetLenient = get_json(&self.http, &uri, self.policy.timeout, "JWKS").await?;
            let keys = jwks.usable();
            if keys.keys.is_empty() {
                return Err(JwksError::NoUsableKeys { url: uri });
            }
            Ok(keys)
        }
        .await;
        match result {
            Ok(keys) => {
                let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                let generation = cache.generation + 1;
                info!(issuer = %self.issuer, keys = keys.keys.len(), generation, "fetched the issuer's signing keys");
                *cache = Arc::new(Snapshot { keys, fetched_at: Some(Instant::now()), generation });
                state.last_error = None;
                Ok(())
            }
            Err(e) => {
                warn!(issuer = %self.issuer, error = %e, "cannot fetch the issuer's signing keys; keeping those cached");
                // The issuer may have moved its JWKS: discover again next time.
                state.jwks_uri = None;
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// A JWKS whose keys are parsed one by one, so one key of a kind we do not know (an
/// encryption key, a new key type) does not make the whole set unusable.
#[derive(Deserialize)]
struct JwkSetLenient {
    keys: Vec<serde_json::Value>,
}

impl JwkSetLenient {
    fn usable(self) -> KeyMap {
        let keys = self.keys.into_iter().filter_map(|k| serde_json::from_value::<Jwk>(k).ok()).collect();
        KeyMap::from_jwks(&JwkSet { keys })
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    what: &'static str,
) -> Result<T, JwksError> {
    let request_error = |e: reqwest::Error| JwksError::Request { url: url.to_string(), reason: e.to_string() };
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(request_error)?;
    if !response.status().is_success() {
        return Err(JwksError::Status { url: url.to_string(), status: response.status().as_u16() });
    }
    let body = response.bytes().await.map_err(request_error)?;
    serde_json::from_slice(&body).map_err(|e| JwksError::Invalid { url: url.to_string(), what, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(v: serde_json::Value) -> Option<CachedKey> {
        CachedKey::from_jwk(&serde_json::from_value(v).unwrap())
    }

    const P256: (&str, &str) =
        ("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0");

    #[test]
    fn keys_fit_only_their_algorithms() {
        let ec = key(json!({"kty": "EC", "crv": "P-256", "x": P256.0, "y": P256.1, "kid": "e"})).unwrap();
        assert!(ec.fits(Algorithm::ES256));
        for alg in [Algorithm::ES384, Algorithm::RS256, Algorithm::PS256, Algorithm::EdDSA, Algorithm::HS256] {
            assert!(!ec.fits(alg), "{alg:?}");
        }
        let published_for_es384 =
            key(json!({"kty": "EC", "crv": "P-256", "x": P256.0, "y": P256.1, "alg": "ES384"})).unwrap();
        assert!(!published_for_es384.fits(Algorithm::ES256));
        let rsa = key(json!({"kty": "RSA", "n": "sXch", "e": "AQAB", "alg": "RS256"})).unwrap();
        assert!(rsa.fits(Algorithm::RS256));
        assert!(!rsa.fits(Algorithm::PS256), "published for RS256 only");
        assert!(!rsa.fits(Algorithm::ES256));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_loaded() {
        assert!(key(json!({"kty": "oct", "k": "c2VjcmV0"})).is_none());
        assert!(key(json!({"kty": "EC", "crv": "P-256", "x": P256.0, "y": P256.1, "use": "enc"})).is_none());
    }

    #[test]
    fn a_token_without_kid_needs_a_single_key() {
        let jwks = |n: usize| -> JwkSet {
            let k = json!({"kty": "EC", "crv": "P-256", "x": P256.0, "y": P256.1});
            serde_json::from_value(json!({"keys": vec![k; n]})).unwrap()
        };
        assert!(KeyMap::from_jwks(&jwks(1)).find(None).unwrap().is_some());
        assert!(matches!(KeyMap::from_jwks(&jwks(2)).find(None), Err(JwtError::MissingKeyId)));
    }
}
