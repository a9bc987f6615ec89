//! User identity: JWT validation against a tiny in-process JWKS server (counting its
//! fetches) and against a real OpenID provider, the web login with PKCE through that
//! provider, and the development login.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use inquest::config::OidcConfig;
use inquest::identity::Principal;
use inquest::identity::jwt::{DevIssuer, JwtError, JwtValidator, KeyCachePolicy, ValidatorSettings};
use inquest::identity::oidc::{self, WebAuth, WebAuthSettings};
use inquest::store::SqlStore;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::oidc::{Browser, CLIENT_ID, CLIENT_SECRET, OidcProvider, PUBLIC_CLIENT_ID, RESOURCE};

const AUDIENCE: &str = "inquest";

// ---------------------------------------------------------------------------------
// A signing key of our own and a tiny issuer that serves discovery and a JWKS.

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl TestKey {
    fn es256(kid: &str) -> TestKey {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        TestKey { kid: kid.to_string(), encoding, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

#[derive(Default)]
struct IssuerState {
    base: std::sync::Mutex<String>,
    keys: std::sync::Mutex<Vec<Jwk>>,
    failing: AtomicBool,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    /// Slows the JWKS answer, so that concurrent validations overlap the fetch.
    delay: std::sync::Mutex<Duration>,
}

struct TestIssuer {
    url: String,
    state: Arc<IssuerState>,
}

impl TestIssuer {
    async fn start(keys: &[&TestKey]) -> TestIssuer {
        let state = Arc::new(IssuerState::default());
        *state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        *state.base.lock().unwrap() = url.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestIssuer { url, state }
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    fn validator(&self, policy: KeyCachePolicy) -> JwtValidator {
        let settings = ValidatorSettings { keys: policy, ..ValidatorSettings::new(&self.url, AUDIENCE) };
        JwtValidator::discover(reqwest::Client::new(), settings).unwrap()
    }

    /// Claims that pass, for `sub` with `groups`.
    fn claims(&self, sub: &str, groups: Value) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": self.url, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now, "exp": now + 300, "groups": groups})
    }
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> Response {
    s.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let base = s.base.lock().unwrap().clone();
    axum::Json(json!({"issuer": base, "jwks_uri": format!("{base}/jwks")})).into_response()
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *s.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    axum::Json(JwkSet { keys: s.keys.lock().unwrap().clone() }).into_response()
}

fn unsigned(header: Value, claims: &Value) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", enc(&header), enc(claims))
}

// ---------------------------------------------------------------------------------
// Validation rules.

#[tokio::test]
async fn tokens_are_accepted_only_when_every_check_passes() {
    let key = TestKey::es256("k1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = issuer.validator(KeyCachePolicy::default());
    let good = issuer.claims("alice", json!(["sre", "admins"]));

    let valid = validator.validate(&key.sign(&good)).await.unwrap();
    assert_eq!(valid.principal(), Principal::user("alice", &["admins", "sre"]));
    assert_eq!(valid.issuer, issuer.url);

    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            match v {
                Value::Null => claims.as_object_mut().unwrap().remove(k),
                v => claims.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        claims
    };
    let now = chrono::Utc::now().timestamp();
    let impostor = TestKey::es256("k1");
    let tampered = {
        let token = key.sign(&good);
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(with(json!({"sub": "mallory"})).to_string());
        format!("{}.{}.{}", parts[0], forged_claims, parts[2])
    };
    let hs256_with_public_key = {
        // The classic confusion: HMAC keyed with the published public key.
        let public = serde_json::to_vec(&key.jwk).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&public)).unwrap()
    };
    let rs256_header_on_ec_key = {
        let token = key.sign(&good);
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "k1"}).to_string());
        let rest = token.split_once('.').unwrap().1;
        format!("{header}.{rest}")
    };

    let cases: Vec<(&str, String, &str)> = vec![
        ("signed by another key", impostor.sign(&good), "bad_signature"),
        ("claims changed after signing", tampered, "bad_signature"),
        ("wrong audience", key.sign(&with(json!({"aud": "another-service"}))), "wrong_audience"),
        ("audience list without us", key.sign(&with(json!({"aud": ["a", "b"]}))), "wrong_audience"),
        ("wrong issuer", key.sign(&with(json!({"iss": "https://evil.example"}))), "wrong_issuer"),
        ("expired beyond the leeway", key.sign(&with(json!({"exp": now - 120}))), "expired"),
        ("not valid yet", key.sign(&with(json!({"nbf": now + 600}))), "not_yet_valid"),
        ("no exp", key.sign(&with(json!({"exp": null}))), "missing_claim"),
        ("no sub", key.sign(&with(json!({"sub": null}))), "missing_claim"),
        ("no aud", key.sign(&with(json!({"aud": null}))), "missing_claim"),
        ("groups of the wrong type", key.sign(&with(json!({"groups": {"sre": true}}))), "invalid_claim"),
        ("alg none", unsigned(json!({"alg": "none", "kid": "k1"}), &good), "algorithm_not_allowed"),
        ("alg none, no kid", unsigned(json!({"alg": "none"}), &good), "algorithm_not_allowed"),
        ("HS256 keyed with the public key", hs256_with_public_key, "algorithm_not_allowed"),
        ("RS256 header on an EC key", rs256_header_on_ec_key, "key_algorithm_mismatch"),
        ("unknown kid", key.sign_as("k-unknown", &good), "unknown_kid"),
        ("not a JWT", "not.a.jwt".to_string(), "malformed"),
        ("two parts", "abc.def".to_string(), "malformed"),
    ];
    for (what, token, code) in cases {
        let err = validator.validate(&token).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err}");
        assert!(err.is_token_error(), "{what}");
    }

    // Within the leeway still passes; groups may be one space/comma separated string.
    let lenient = with(json!({"exp": now - 10, "groups": "sre, oncall"}));
    let valid = validator.validate(&key.sign(&lenient)).await.unwrap();
    assert_eq!(valid.groups, vec!["oncall".to_string(), "sre".to_string()]);

    // A validator for another audience shares the keys but not the audience.
    let other = validator.with_audience("mcp-airflow");
    let for_other = key.sign(&with(json!({"aud": "mcp-airflow"})));
    assert_eq!(other.validate(&for_other).await.unwrap().subject, "alice");
    assert!(matches!(validator.validate(&for_other).await, Err(JwtError::WrongAudience)));

    // What a 401 says names the problem, not the internals.
    let err = validator.validate(&key.sign_as("secret-kid-42", &good)).await.unwrap_err();
    assert_eq!(
        err.www_authenticate(),
        r#"Bearer error="invalid_token", error_description="the token is signed with an unknown key""#
    );
    assert_eq!(issuer.jwks_fetches(), 1, "one fetch served all of that: unknown kids were rate-limited");
}

#[tokio::test]
async fn unknown_kid_refetch_is_single_flight_and_rate_limited() {
    let old = TestKey::es256("old");
    let new = TestKey::es256("new");
    let issuer = TestIssuer::start(&[&old]).await;
    let interval = Duration::from_millis(1200);
    let policy = KeyCachePolicy { refetch_interval: interval, ..KeyCachePolicy::default() };
    let validator = issuer.validator(policy);
    *issuer.state.delay.lock().unwrap() = Duration::from_millis(200);

    // The cold start: twenty validations at once share one discovery and one fetch.
    let claims = issuer.claims("alice", json!([]));
    let token = old.sign(&claims);
    let results = futures::future::join_all((0..20).map(|_| validator.validate(&token))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!((issuer.jwks_fetches(), issuer.state.discovery_fetches.load(Ordering::SeqCst)), (1, 1));

    // Made-up kids cannot make us fetch again within the interval; neither can a real
    // rotation, which waits for the interval like everything else.
    let bogus: Vec<String> = (0..20).map(|i| old.sign_as(&format!("bogus-{i}"), &claims)).collect();
    let results = futures::future::join_all(bogus.iter().map(|t| validator.validate(t))).await;
    assert!(results.iter().all(|r| matches!(r, Err(JwtError::UnknownKey(_)))));
    issuer.publish(&[&old, &new]);
    let rotated = new.sign(&claims);
    assert!(matches!(validator.validate(&rotated).await, Err(JwtError::UnknownKey(_))));
    assert_eq!(issuer.jwks_fetches(), 1, "rate-limited: no fetch within the interval");

    // After it, the first unknown kid triggers one refetch, shared by all twenty
    // validations in flight, which then see the new key.
    tokio::time::sleep(interval).await;
    let results = futures::future::join_all((0..20).map(|_| validator.validate(&rotated))).await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    assert_eq!(issuer.jwks_fetches(), 2, "twenty concurrent unknown kids, one fetch");
    let results = futures::future::join_all(bogus.iter().map(|t| validator.validate(t))).await;
    assert!(results.iter().all(|r| matches!(r, Err(JwtError::UnknownKey(_)))));
    assert_eq!(issuer.jwks_fetches(), 2, "and again none within the interval");
    assert_eq!(issuer.state.discovery_fetches.load(Ordering::SeqCst), 1, "the JWKS location is remembered");
}

#[tokio::test]
async fn stale_keys_are_served_while_the_jwks_endpoint_fails() {
    let key = TestKey::es256("k1");
    let rotated = TestKey::es256("k2");
    let issuer = TestIssuer::start(&[&key]).await;
    let short = Duration::from_millis(300);
    let policy = KeyCachePolicy { refetch_interval: short, max_age: short, cold_retry: short, ..Default::default() };
    let validator = issuer.validator(policy.clone());
    let token = key.sign(&issuer.claims("alice", json!(["sre"])));
    validator.validate(&token).await.unwrap();
    assert_eq!(issuer.jwks_fetches(), 1);

    // The keys are old and the issuer is down: the refresh fails, the cached key works.
    issuer.fail(true);
    tokio::time::sleep(short).await;
    assert_eq!(validator.validate(&token).await.unwrap().subject, "alice");
    assert_eq!(issuer.jwks_fetches(), 2, "a refresh was attempted");
    // An unknown kid is still the token's problem, not an outage.
    tokio::time::sleep(short).await;
    assert!(matches!(
        validator.validate(&rotated.sign(&issuer.claims("a", json!([])))).await,
        Err(JwtError::UnknownKey(_))
    ));

    // With nothing cached, an outage is "unavailable" (503), not "invalid token" (401).
    let cold = issuer.validator(policy);
    let err = cold.validate(&token).await.unwrap_err();
    assert!(matches!(err, JwtError::KeysUnavailable(_)), "{err}");
    assert!(!err.is_token_error());

    // The issuer is back and has withdrawn k1: the next refresh drops it.
    issuer.fail(false);
    issuer.publish(&[&rotated]);
    tokio::time::sleep(short).await;
    assert!(matches!(validator.validate(&token).await, Err(JwtError::UnknownKey(_))), "a withdrawn key stops working");
    assert!(validator.validate(&rotated.sign(&issuer.claims("a", json!([])))).await.is_ok());
}

// ---------------------------------------------------------------------------------
// A real OpenID provider.

#[tokio::test]
async fn tokens_from_a_real_openid_provider_validate() {
    let provider = OidcProvider::start().await;
    let alice = provider.user("alice").clone();
    let tokens = provider.tokens_for("alice", RESOURCE).await;
    let access_token = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();

    // The access token: a JWT (ES256) for the resource, with the user's groups.
    let http = reqwest::Client::new();
    let settings = ValidatorSettings::new(&provider.issuer, RESOURCE);
    let for_resource = JwtValidator::discover(http, settings).unwrap();
    let valid = for_resource.validate(access_token).await.unwrap();
    assert_eq!(valid.principal(), Principal::user(&alice.sub, &["inquest-admins", "sre"]));
    assert_eq!(valid.claim_str("client_id"), Some(CLIENT_ID));

    // The ID token (RS256) is for the client, and carries the profile too.
    let for_client = for_resource.with_audience(CLIENT_ID);
    let id = for_client.validate(id_token).await.unwrap();
    assert_eq!(
        id.principal(),
        Principal::User { subject: alice.sub.clone(), groups: valid.groups.clone(), name: Some(alice.name.clone()) }
    );
    assert_eq!(id.claim_str("nonce"), Some("test-nonce"));

    // Neither passes as the other: no token confusion between audiences.
    assert!(matches!(for_client.validate(access_token).await, Err(JwtError::WrongAudience)));
    assert!(matches!(for_resource.validate(id_token).await, Err(JwtError::WrongAudience)));
    // With only RS256 pinned, the ES256 access token is refused before any key is used.
    let rs_only =
        ValidatorSettings { algorithms: vec!["RS256".into()], ..ValidatorSettings::new(&provider.issuer, RESOURCE) };
    let rs_only = JwtValidator::discover(reqwest::Client::new(), rs_only).unwrap();
    assert!(matches!(rs_only.validate(access_token).await, Err(JwtError::AlgorithmNotAllowed(a)) if a == "ES256"));
}

/// The web login's routes served on a port of their own, as the registry will.
struct LoginServer {
    url: String,
    auth: Arc<WebAuth>,
    _dir: tempfile::TempDir,
}

impl LoginServer {
    async fn start(configure: impl FnOnce(&str, &mut WebAuthSettings)) -> LoginServer {
        LoginServer::start_on(None, configure).await
    }

    /// On a store at `store_url` (a fresh SQLite file when `None`).
    async fn start_on(store_url: Option<&str>, configure: impl FnOnce(&str, &mut WebAuthSettings)) -> LoginServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        LoginServer::serve(listener, url, store_url, configure).await
    }

    async fn serve(
        listener: TcpListener,
        url: String,
        store_url: Option<&str>,
        configure: impl FnOnce(&str, &mut WebAuthSettings),
    ) -> LoginServer {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("inquest.db").display());
        let store = Arc::new(SqlStore::open(store_url.unwrap_or(&sqlite), 4).await.unwrap());
        let mut settings = WebAuthSettings::new(&url);
        configure(&url, &mut settings);
        let auth = Arc::new(WebAuth::new(settings, store, reqwest::Client::new()).unwrap());
        let app = oidc::routes().with_state(auth.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        LoginServer { url, auth, _dir: dir }
    }

    async fn me(&self, browser: &mut Browser) -> (StatusCode, Value) {
        let page = browser.get(&format!("{}/auth/me", self.url)).await;
        (page.status, serde_json::from_str(&page.body).unwrap_or(Value::Null))
    }
}

fn oidc_config(issuer: &str, client_id: &str, secret: Option<&str>) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_string(),
        audience: RESOURCE.to_string(),
        client_id: client_id.to_string(),
        client_secret: secret.map(|s| secrecy::SecretString::from(s.to_string())),
        groups_claim: "groups".to_string(),
        algorithms: vec!["RS256".to_string(), "ES256".to_string()],
    }
}

#[tokio::test]
async fn web_login_with_pkce_through_the_real_provider_creates_a_session() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let provider = OidcProvider::start_with_redirects(&[format!("{url}/auth/callback")]).await;
    let issuer = provider.issuer.clone();
    let server = LoginServer::serve(listener, url.clone(), None, |_, s| {
        s.oidc = Some(oidc_config(&issuer, CLIENT_ID, Some(CLIENT_SECRET)));
    })
    .await;
    let alice = provider.user("alice").clone();

    let mut browser = Browser::new();
    let start = format!("{url}/auth/login?next=/approvals/7%3Ftab%3Daudit");
    let end = provider
        .drive(&mut browser, &start, "alice", |u| u.as_str().starts_with(&url) && !u.path().starts_with("/auth/"))
        .await;
    assert_eq!(end.status, StatusCode::SEE_OTHER, "{}: {}", end.url, end.body);
    assert_eq!(end.location.as_ref().map(|l| l.path()), Some("/approvals/7"), "back to `next`");
    assert_eq!(end.location.as_ref().and_then(|l| l.query()), Some("tab=audit"));

    // The authorization request carried PKCE (S256), state and nonce.
    let authorize = browser.history.iter().find(|u| u.path() == "/auth" && u.as_str().starts_with(&issuer)).unwrap();
    let params: std::collections::HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(params.get("code_challenge_method").map(String::as_str), Some("S256"));
    for p in ["code_challenge", "state", "nonce"] {
        assert_eq!(params.get(p).map(String::len), Some(43), "{p}: 256 random bits");
    }
    assert!(params["scope"].split(' ').any(|s| s == "groups"), "the provider lists the groups scope: asked for");

    // The session cookie: HttpOnly, SameSite=Lax, not Secure over http, 256 bits.
    let set = end.set_cookies.iter().find(|c| c.starts_with("inquest_session=")).expect("a session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    assert!(end.set_cookies.iter().any(|c| c.starts_with("inquest_login=;")), "the login cookie is cleared");
    let session = browser.cookie(&url, "inquest_session").unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&session).unwrap().len(), 32);

    let principal = server.auth.principal_from_session(&session).await.expect("the session resolves");
    let expected = Principal::User {
        subject: alice.sub.clone(),
        groups: vec!["inquest-admins".to_string(), "sre".to_string()],
        name: Some(alice.name.clone()),
    };
    assert_eq!(principal, expected);
    let (status, me) = server.me(&mut browser).await;
    assert_eq!((status, me), (StatusCode::OK, serde_json::to_value(&expected).unwrap()));

    // A callback URL works once.
    let callback = browser.history.iter().rev().find(|u| u.path() == "/auth/callback").unwrap().clone();
    let replay = browser.get(callback.as_str()).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.body);

    // Login CSRF: a callback delivered to a browser that did not start the login is
    // refused, even with a fresh, valid code and state.
    let mut victim = Browser::new();
    let mut attacker = Browser::new();
    let to_callback = |u: &reqwest::Url| u.path() == "/auth/callback";
    let stopped = provider.drive(&mut attacker, &format!("{url}/auth/login"), "bob", to_callback).await;
    let planted = stopped.location.expect("the provider redirects to the callback");
    let refused = victim.get(planted.as_str()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(victim.cookie(&url, "inquest_session").is_none());
    let (status, _) = server.me(&mut victim).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Mix-up defence (RFC 9207): the provider names itself in `iss`; an answer naming
    // another issuer is refused, even in the browser that started the login.
    assert!(planted.query_pairs().any(|(k, v)| k == "iss" && v == issuer.as_str()));
    let mut mixed_up = planted.clone();
    let pairs: Vec<(String, String)> = planted.query_pairs().into_owned().collect();
    mixed_up.query_pairs_mut().clear().extend_pairs(
        pairs.iter().map(|(k, v)| (k.as_str(), if k == "iss" { "https://other-issuer.example" } else { v.as_str() })),
    );
    let refused = attacker.get(mixed_up.as_str()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("another issuer"), "{}", refused.body);

    // Sign out (POST): the session is gone server-side, not just the cookie.
    let out = browser.post_form(&format!("{url}/auth/logout"), &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(server.auth.principal_from_session(&session).await.is_none());
    let (status, _) = server.me(&mut browser).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn web_login_as_a_public_client_and_open_redirects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let provider = OidcProvider::start_with_redirects(&[format!("{url}/auth/callback")]).await;
    let issuer = provider.issuer.clone();
    let server = LoginServer::serve(listener, url.clone(), None, |_, s| {
        s.oidc = Some(oidc_config(&issuer, PUBLIC_CLIENT_ID, None));
    })
    .await;

    // `next` pointing elsewhere ends at `/` on this site.
    let mut browser = Browser::new();
    let start = format!("{url}/auth/login?next=//evil.example/steal");
    let back_home = |u: &reqwest::Url| u.as_str().starts_with(&url) && !u.path().starts_with("/auth/");
    let end = provider.drive(&mut browser, &start, "bob", back_home).await;
    assert_eq!(end.location.as_ref().map(|l| l.as_str().to_string()), Some(format!("{url}/")), "{}", end.body);
    let (status, me) = server.me(&mut browser).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["subject"], provider.user("bob").sub.as_str());
    assert_eq!(me["groups"], json!(["data-eng"]));
}

// ---------------------------------------------------------------------------------
// The development login.

#[tokio::test]
async fn dev_login_is_refused_unless_enabled() {
    let server = LoginServer::start(|_, _| {}).await;
    let mut browser = Browser::new();
    for path in ["/auth/dev-login", "/auth/dev/jwks.json", "/auth/dev/.well-known/openid-configuration"] {
        let page = browser.get(&format!("{}{path}", server.url)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    let post = browser
        .post_form(&format!("{}/auth/dev-login", server.url), &[("subject", "root"), ("groups", "inquest-admins")])
        .await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert!(post.set_cookies.is_empty());
    assert!(server.auth.dev_issuer().is_none());
    let login = browser.get(&format!("{}/auth/login", server.url)).await;
    assert_eq!(login.status, StatusCode::NOT_FOUND, "no provider, no development login: nothing to log in with");

    // The configuration alone does not enable it: the caller must allow it too.
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::support::server::config_with(dir.path(), &[("INQUEST_IDENTITY__DEV_LOGIN", "true")]);
    let store = Arc::new(SqlStore::open(&cfg.store.url, 2).await.unwrap());
    assert!(WebAuth::from_config(&cfg, store.clone(), false).unwrap().dev_issuer().is_none());
    let enabled = WebAuth::from_config(&cfg, store, true).unwrap();
    assert!(enabled.dev_issuer().is_some());
    assert!(dir.path().join("identity/dev-issuer.pem").exists());
}

#[tokio::test]
async fn dev_login_creates_the_same_kind_of_session_on_sqlite_and_postgres() {
    let pg = crate::support::pg::TestDb::create().await;
    for store_url in [None, Some(pg.url.as_str())] {
        let server = LoginServer::start_on(store_url, |url, s| {
            s.dev_issuer = Some(DevIssuer::generate(&DevIssuer::issuer_for(url)).unwrap());
        })
        .await;
        let base = server.url.clone();
        let mut browser = Browser::new();

        let form = browser.get(&format!("{base}/auth/login?next=/investigations")).await;
        assert_eq!(form.location.as_ref().map(|l| l.path()), Some("/auth/dev-login"), "no provider: the dev login");
        let page = browser.get(form.location.unwrap().as_str()).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("DEVELOPMENT LOGIN"), "clearly marked");

        let signed_in = browser
            .post_form(
                &format!("{base}/auth/dev-login"),
                &[("subject", "carol"), ("groups", "sre, inquest-admins"), ("next", "/investigations")],
            )
            .await;
        assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
        assert_eq!(signed_in.location.unwrap().path(), "/investigations");
        let (status, me) = server.me(&mut browser).await;
        assert_eq!(status, StatusCode::OK, "{store_url:?}");
        assert_eq!(me, serde_json::to_value(Principal::user("carol", &["inquest-admins", "sre"])).unwrap());

        // A form posted from another site is refused (login CSRF).
        let cross = reqwest::Client::new()
            .post(format!("{base}/auth/dev-login"))
            .header("origin", "http://evil.example")
            .form(&[("subject", "mallory")])
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), StatusCode::FORBIDDEN);

        // Other roles can validate the dev issuer's tokens by discovery, like any issuer's.
        let dev = server.auth.dev_issuer().unwrap();
        let token = dev.mint("dave", &["oncall".to_string()], "mcp-presto", Duration::from_secs(60)).unwrap();
        let remote = JwtValidator::discover(
            reqwest::Client::new(),
            ValidatorSettings {
                algorithms: vec!["ES256".into()],
                ..ValidatorSettings::new(dev.issuer(), "mcp-presto")
            },
        )
        .unwrap();
        assert_eq!(remote.validate(&token).await.unwrap().principal(), Principal::user("dave", &["oncall"]));
    }
}
