//! Web login for people using the pages: OpenID Connect (authorization code + PKCE),
//! or the development login of the embedded default, both ending in a server-side
//! session named by an HttpOnly cookie.
//!
//! Routes ([`routes`]):
//! - `GET /auth/login?next=/path`: to the provider (or to the development login when no
//!   provider is configured and it is enabled).
//! - `GET /auth/callback`: the provider's redirect back; creates the session.
//! - `GET|POST /auth/logout`: a confirmation form, and the sign-out itself.
//! - `GET /auth/me`: the signed-in principal as JSON, or 401.
//! - `GET|POST /auth/dev-login`, `GET /auth/dev/jwks.json`,
//!   `GET /auth/dev/.well-known/openid-configuration`: the development login and its
//!   issuer's keys; 403 unless the caller enabled it.
//!
//! The authentication middleware resolves a request's session with
//! [`WebAuth::principal_from_session`] (or [`WebAuth::principal_from_headers`]).

mod dev_login;
mod login;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, OidcConfig};
use crate::identity::Principal;
use crate::identity::jwt::{DevIssuer, DevIssuerError, JwtError, JwtValidator};
use crate::store::SqlStore;

pub use login::LoginError;
pub use sessions::SessionError;

use dev_login::DevLogin;
use login::{LoginSecrets, OidcLogin};
use sessions::{LoginAttempt, SessionStore, random_token};

/// The session cookie's name over plain HTTP. Over HTTPS it is `__Host-inquest_session`
/// (the prefix makes browsers refuse it unless Secure, host-only and on `/`).
pub const SESSION_COOKIE: &str = "inquest_session";
const SECURE_SESSION_COOKIE: &str = "__Host-inquest_session";
const LOGIN_COOKIE: &str = "inquest_login";
const SECURE_LOGIN_COOKIE: &str = "__Host-inquest_login";

/// How long a person has between leaving for the provider and coming back.
const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum WebAuthError {
    #[error("building the HTTP client: {0}")]
    Http(String),
    #[error("the public URL `{0}` is not an absolute http(s) URL")]
    PublicUrl(String),
    #[error("the OIDC settings cannot work: {0}")]
    Oidc(#[from] JwtError),
    #[error(transparent)]
    DevIssuer(#[from] DevIssuerError),
}

/// How the web login is set up; [`WebAuth::from_config`] derives it from the config.
pub struct WebAuthSettings {
    /// The base URL people reach the pages at; decides the callback URL and whether
    /// cookies are `Secure` (https).
    pub public_url: String,
    pub oidc: Option<OidcConfig>,
    /// The development issuer, when the development login is enabled.
    pub dev_issuer: Option<DevIssuer>,
    /// The `aud` of development tokens (the registry/web audience).
    pub dev_audience: String,
    pub session_ttl: Duration,
    pub clock: Arc<dyn Clock>,
}

impl WebAuthSettings {
    pub fn new(public_url: &str) -> WebAuthSettings {
        WebAuthSettings {
            public_url: public_url.trim_end_matches('/').to_string(),
            oidc: None,
            dev_issuer: None,
            dev_audience: "inquest".to_string(),
            session_ttl: Duration::from_secs(8 * 3600),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The web login: OIDC and development login, and the sessions they create.
pub struct WebAuth {
    secure: bool,
    session_ttl: Duration,
    sessions: SessionStore,
    oidc: Option<OidcLogin>,
    dev: Option<DevLogin>,
    /// Bearer tokens for the registry/web audience, sharing the ID tokens' key cache.
    bearer: Option<JwtValidator>,
}

impl WebAuth {
    /// From the configuration. The development login is on only when the
    /// configuration asks for it (`identity.dev_login`) and the caller allows it (the
    /// embedded default on a loopback listener); its key lives in the data directory.
    pub fn from_config(cfg: &Config, store: Arc<SqlStore>, allow_dev_login: bool) -> Result<WebAuth, WebAuthError> {
        let mut settings = WebAuthSettings::new(&cfg.registry.public_url);
        settings.oidc = cfg.identity.oidc.clone();
        if let Some(oidc) = &cfg.identity.oidc {
            settings.dev_audience = oidc.audience.clone();
        }
        if allow_dev_login && cfg.identity.dev_login {
            let issuer = DevIssuer::issuer_for(&settings.public_url);
            settings.dev_issuer = Some(DevIssuer::load_or_create(&cfg.data_dir, &issuer)?);
        }
        WebAuth::new(settings, store, http_client()?)
    }

    pub fn new(
        settings: WebAuthSettings,
        store: Arc<SqlStore>,
        http: reqwest::Client,
    ) -> Result<WebAuth, WebAuthError> {
        let public_url = settings.public_url.trim_end_matches('/').to_string();
        let secure = public_url.starts_with("https://");
        if !secure && !public_url.starts_with("http://") {
            return Err(WebAuthError::PublicUrl(public_url));
        }
        let (oidc, bearer) = match &settings.oidc {
            Some(cfg) => {
                let login = OidcLogin::new(http, cfg, format!("{public_url}/auth/callback"))?;
                let bearer = login.id_token_validator().with_audience(&cfg.audience);
                (Some(login), Some(bearer))
            }
            None => (None, None),
        };
        let dev = match settings.dev_issuer {
            Some(issuer) => {
                let validator = issuer.validator(&settings.dev_audience)?;
                warn!(issuer = %issuer.issuer(), "the development login is enabled: anyone reaching /auth/dev-login can sign in as anyone");
                Some(DevLogin { issuer, validator })
            }
            None => None,
        };
        Ok(WebAuth {
            secure,
            session_ttl: settings.session_ttl,
            sessions: SessionStore::new(store, settings.clock),
            oidc,
            dev,
            bearer,
        })
    }

    /// The principal of the session the cookie names, if it exists and has not expired.
    pub async fn principal_from_session(&self, cookie_value: &str) -> Option<Principal> {
        match self.sessions.principal(cookie_value).await {
            Ok(principal) => principal,
            Err(e) => {
                warn!(error = %e, "cannot read a web session; treating the request as signed out");
                None
            }
        }
    }

    /// The principal of the session named by the request's cookie, if any.
    pub async fn principal_from_headers(&self, headers: &HeaderMap) -> Option<Principal> {
        let value = cookie_value(headers, self.session_cookie_name())?;
        self.principal_from_session(&value).await
    }

    /// The name of the session cookie (depends on whether the public URL is https).
    pub fn session_cookie_name(&self) -> &'static str {
        if self.secure { SECURE_SESSION_COOKIE } else { SESSION_COOKIE }
    }

    fn login_cookie_name(&self) -> &'static str {
        if self.secure { SECURE_LOGIN_COOKIE } else { LOGIN_COOKIE }
    }

    /// The development issuer, when the development login is enabled.
    pub fn dev_issuer(&self) -> Option<&DevIssuer> {
        self.dev.as_ref().map(|d| &d.issuer)
    }

    /// A validator for bearer tokens from the configured provider meant for the
    /// registry/web audience (sharing the login's key cache); `None` without OIDC.
    pub fn bearer_validator(&self) -> Option<&JwtValidator> {
        self.bearer.as_ref()
    }

    /// Creates a session, sets its cookie, clears the login cookie, and sends the
    /// browser to `next`.
    async fn start_session(&self, principal: Principal, via: &str, next: &str, clear_login: bool) -> Response {
        let id = match self.sessions.create(&principal, via, self.session_ttl).await {
            Ok(id) => id,
            Err(e) => return self.failure(StatusCode::SERVICE_UNAVAILABLE, "the session could not be stored", &e),
        };
        info!(principal = %principal.id(), via, "signed in");
        let mut cookies = vec![self.cookie(self.session_cookie_name(), id.expose_secret(), self.session_ttl)];
        if clear_login {
            cookies.push(self.cookie(self.login_cookie_name(), "", Duration::ZERO));
        }
        let cookies: Vec<_> = cookies.into_iter().map(|c| (header::SET_COOKIE, c)).collect();
        (AppendHeaders(cookies), Redirect::to(next)).into_response()
    }

    /// `Set-Cookie` for our cookies: HttpOnly, SameSite=Lax (sent on the provider's
    /// top-level redirect back, not on cross-site subrequests), Secure over https. A
    /// zero `max_age` deletes the cookie.
    fn cookie(&self, name: &str, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!("{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}", max_age.as_secs());
        // Names are constants and values base64url, so this cannot fail; an empty
        // value (deletion) is the safe fallback regardless.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("inquest_invalid=; Max-Age=0"))
    }

    /// Logs what went wrong (the detail stays in the log) and shows a short page.
    fn failure(&self, status: StatusCode, what: &str, error: &dyn std::fmt::Display) -> Response {
        warn!(%error, "{what}");
        let body = format!("<p>Sign-in failed: {}.</p><p><a href=\"/auth/login\">Try again</a></p>", escape_html(what));
        page(status, "Sign-in failed", &body)
    }
}

/// Every route of the web login; mount with the state holding the [`WebAuth`].
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<WebAuth>: FromRef<S>,
{
    Router::new()
        .route("/auth/login", get(login_start))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", get(logout_form).post(logout))
        .route("/auth/me", get(me))
        .route("/auth/dev-login", get(dev_login::form).post(dev_login::submit))
        .route("/auth/dev/jwks.json", get(dev_login::jwks))
        .route("/auth/dev/.well-known/openid-configuration", get(dev_login::discovery))
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_start(State(auth): State<Arc<WebAuth>>, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    let Some(oidc) = &auth.oidc else {
        if auth.dev.is_some() {
            return Redirect::to(&format!("/auth/dev-login?next={}", crate::percent::encode_keeping_slashes(&next)))
                .into_response();
        }
        return page(StatusCode::NOT_FOUND, "No login", "<p>No identity provider is configured on this server.</p>");
    };
    let secrets = LoginSecrets { state: random_token(), nonce: random_token(), code_verifier: random_token() };
    let url = match oidc.authorization_url(&secrets).await {
        Ok(url) => url,
        Err(e) => return auth.failure(StatusCode::BAD_GATEWAY, "the identity provider is unavailable", &e),
    };
    let attempt = LoginAttempt { nonce: secrets.nonce, code_verifier: secrets.code_verifier, next };
    if let Err(e) = auth.sessions.begin_login(secrets.state.expose_secret(), &attempt, LOGIN_TTL).await {
        return auth.failure(StatusCode::SERVICE_UNAVAILABLE, "the login could not be recorded", &e);
    }
    // The login cookie binds the callback to this browser: a callback carrying a
    // `state` that this browser did not start is refused (login CSRF).
    let cookie = auth.cookie(auth.login_cookie_name(), secrets.state.expose_secret(), LOGIN_TTL);
    (AppendHeaders([(header::SET_COOKIE, cookie)]), Redirect::to(&url)).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// RFC 9207: who sent this answer, where the provider says so.
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(State(auth): State<Arc<WebAuth>>, headers: HeaderMap, Query(q): Query<CallbackQuery>) -> Response {
    let Some(oidc) = &auth.oidc else {
        return page(StatusCode::NOT_FOUND, "No login", "<p>No identity provider is configured on this server.</p>");
    };
    let Some(state) = q.state.as_deref() else {
        return auth.failure(StatusCode::BAD_REQUEST, "the provider's answer has no state", &"missing state");
    };
    let cookie = cookie_value(&headers, auth.login_cookie_name()).unwrap_or_default();
    if cookie.is_empty() || !bool::from(cookie.as_bytes().ct_eq(state.as_bytes())) {
        return auth.failure(
            StatusCode::BAD_REQUEST,
            "this login was not started in this browser (or took too long)",
            &"state does not match the login cookie",
        );
    }
    let attempt = match auth.sessions.take_login(state).await {
        Ok(Some(attempt)) => attempt,
        Ok(None) => return auth.failure(StatusCode::BAD_REQUEST, "the login expired or was used already", &"no login"),
        Err(e) => return auth.failure(StatusCode::SERVICE_UNAVAILABLE, "the login could not be read", &e),
    };
    // Mix-up defence (RFC 9207): an answer naming another issuer is not our provider's.
    if q.iss.as_deref().is_some_and(|iss| iss != oidc.issuer()) {
        return auth.failure(StatusCode::BAD_REQUEST, "the answer came from another issuer", &"iss mismatch");
    }
    if let Some(error) = q.error {
        let e = LoginError::Refused { error, description: q.error_description };
        return auth.failure(StatusCode::FORBIDDEN, "the identity provider refused the login", &e);
    }
    let Some(code) = q.code else {
        return auth.failure(StatusCode::BAD_REQUEST, "the provider's answer has no code", &"missing code");
    };
    match oidc.exchange(&code, &attempt).await {
        Ok(token) => auth.start_session(token.principal(), "oidc", &attempt.next, true).await,
        Err(e @ LoginError::IdToken(JwtError::KeysUnavailable(_))) | Err(e @ LoginError::Discovery(_)) => {
            auth.failure(StatusCode::BAD_GATEWAY, "the identity provider is unavailable", &e)
        }
        Err(e) => auth.failure(StatusCode::UNAUTHORIZED, "the identity provider's answer was not accepted", &e),
    }
}

async fn logout_form() -> Response {
    page(
        StatusCode::OK,
        "Sign out",
        r#"<form method="post" action="/auth/logout"><button type="submit">Sign out</button></form>"#,
    )
}

/// POST only, so that a link or image on another site cannot sign people out.
async fn logout(State(auth): State<Arc<WebAuth>>, headers: HeaderMap) -> Response {
    if let Some(value) = cookie_value(&headers, auth.session_cookie_name())
        && let Err(e) = auth.sessions.delete(&value).await
    {
        return auth.failure(StatusCode::SERVICE_UNAVAILABLE, "the session could not be ended", &e);
    }
    let cookie = auth.cookie(auth.session_cookie_name(), "", Duration::ZERO);
    (AppendHeaders([(header::SET_COOKIE, cookie)]), Redirect::to("/")).into_response()
}

async fn me(State(auth): State<Arc<WebAuth>>, headers: HeaderMap) -> Response {
    match auth.principal_from_headers(&headers).await {
        Some(principal) => axum::Json(principal).into_response(),
        None => crate::web::ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not signed in").into_response(),
    }
}

/// `next` if it is a path on this site, else `/`. Only a single leading slash followed
/// by something other than a slash or backslash is a same-origin path: `//evil`,
/// `/\evil` and `https://evil` are all other origins to a browser.
fn safe_next(next: Option<&str>) -> String {
    let Some(next) = next else { return "/".to_string() };
    let mut chars = next.chars();
    let local = chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && next.len() <= 2048
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if local { next.to_string() } else { "/".to_string() }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

fn http_client() -> Result<reqwest::Client, WebAuthError> {
    reqwest::Client::builder()
        // The token endpoint receives the code and our secret; never follow it elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("inquest/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebAuthError::Http(e.to_string()))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} - Inquest</title></head><body>{body}</body></html>",
        escape_html(title)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// Text for HTML, attribute values included (`&`, `<`, `>`, quotes); the one escaper
/// of the hand-built pages and messages (templates escape by themselves).
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        let cases = [
            (None, "/"),
            (Some("/approvals/42?tab=x"), "/approvals/42?tab=x"),
            (Some("/"), "/"),
            (Some("//evil.example/x"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/ok\\..\\x"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("evil.example"), "/"),
            (Some("/a\r\nSet-Cookie: x=y"), "/"),
            (Some(""), "/"),
        ];
        for (given, expected) in cases {
            assert_eq!(safe_next(given), expected, "{given:?}");
        }
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; inquest_session=abc".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, "inquest_session").as_deref(), Some("abc"));
        assert_eq!(cookie_value(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie_value(&h, "inquest"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
