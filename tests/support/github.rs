//! A GitHub test server for the drafter: the REST endpoints it uses (git refs, blobs,
//! trees, commits, contents, pulls, labels, issue comments, requested reviewers) and
//! reviews (create, list, dismiss) on top of a real git repository, driven with the
//! `git` CLI, so the branch a draft makes can be checked with git. Pull requests,
//! labels, comments and reviews live in memory.
//!
//! Every REST request and answer is checked against GitHub's REST description
//! (`@octokit/openapi`, see `gh_openapi.rs`): the operation is found by method and
//! path, a JSON request body that does not fit the operation's schema is answered 422
//! as GitHub answers it (`Invalid request.` and what is wrong), and every answer is
//! checked against the schema of its status. What does not fit is kept in
//! [`Log::violations`]; a server dropped with violations fails the test (unless it is
//! already failing), and [`GithubServer::assert_conforms`] checks on demand.
//!
//! It answers in GitHub's shapes and with GitHub's errors (404 `Not Found`, 422
//! `Reference already exists`, 422 `A pull request already exists for ...`, 422 `Can
//! not approve your own pull request`), counts every write, and can "crash": make its
//! k-th write and then answer 502, as if the drafter had died before hearing back (that
//! 502 is the one answer not checked: no operation documents it).
//!
//! GraphQL answers the one mutation the drafter sends, `markPullRequestReadyForReview`;
//! it is not checked against a schema.
//!
//! Who calls is the login in an `x-test-login` header, else the app ([`APP_LOGIN`]).
//! With [`GithubServer::send_webhooks_to`], submitting or dismissing a review and
//! [`GithubServer::push`] deliver GitHub's signed webhooks (`pull_request_review`
//! submitted / dismissed, `pull_request` synchronize), their payloads checked against
//! the description's `x-webhooks`, before the request that caused them is answered.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::gh_openapi::{Description, Operation, Problem, description};

/// The caller when a request names none: the GitHub App the drafter signs in as.
pub const APP_LOGIN: &str = "inquest-app[bot]";
/// Who [`GithubServer::push`] pushes as.
pub const PUSHER: &str = "pat-pusher";
/// The header naming the caller.
pub const LOGIN_HEADER: &str = "x-test-login";
/// Where `html_url`s point.
const WEB: &str = "https://github.example";
/// The repository's and the initial commit's date.
const CREATED: &str = "2026-01-01T00:00:00Z";

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    /// The repository's name (its owner is the server's).
    pub repo: String,
    /// Who opened it.
    pub author: String,
    pub head: String,
    /// The head's last commit (kept when the branch is deleted, as GitHub does).
    pub head_sha: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    pub open: bool,
    pub labels: Vec<String>,
    /// The comments' bodies, oldest first; [`Pull::comment_info`] says who and when.
    pub comments: Vec<String>,
    pub comment_info: Vec<Comment>,
    /// Requested reviewers not yet reviewing.
    pub reviewers: Vec<String>,
    pub reviews: Vec<Review>,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub login: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub id: u64,
    pub login: String,
    /// As the REST API says it: `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`,
    /// `DISMISSED` or `PENDING`.
    pub state: String,
    pub commit_id: String,
    pub body: String,
    pub submitted_at: Option<String>,
}

/// A webhook the server sent.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub action: String,
    /// The receiver's status; `None` if it could not be reached.
    pub status: Option<u16>,
}

#[derive(Default)]
pub struct Log {
    /// `METHOD path` of every request, in order.
    pub requests: Vec<String>,
    pub writes: usize,
    pub crash_after: Option<usize>,
    pub pulls: Vec<Pull>,
    /// What did not fit GitHub's REST description: requests, answers, webhooks.
    pub violations: Vec<String>,
    pub deliveries: Vec<Delivery>,
    /// The repository's labels: name and colour.
    pub labels: Vec<(String, String)>,
    next_id: u64,
}

impl Log {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

pub struct GithubServer {
    /// What `api_url` is set to.
    pub url: String,
    pub repo_dir: PathBuf,
    pub log: Arc<Mutex<Log>>,
    shared: Shared,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Shared {
    repo: PathBuf,
    owner: String,
    base_url: String,
    log: Arc<Mutex<Log>>,
    api: &'static Description,
    /// Where webhooks go, and the secret they are signed with.
    hooks: Arc<Mutex<Option<(String, String)>>>,
    http: reqwest::Client,
}

/// Runs git in `repo`; its trimmed stdout, or why it failed.
pub fn git(repo: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Result<String, String> {
    use std::io::Write;
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(input) = stdin {
        child.stdin.take().ok_or("no stdin")?.write_all(input).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl GithubServer {
    /// A repository `owner/<any>` whose `main` holds `files`.
    pub async fn start(owner: &str, files: &[(&str, &str)]) -> GithubServer {
        let api = description().await;
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo.git");
        git(dir.path(), &["init", "--bare", "-q", "-b", "main", repo.to_str().unwrap()], &[], None).unwrap();
        let tree = write_tree(&repo, None, files);
        let people = people("Repo Owner", "owner@example.com", CREATED);
        let people: Vec<(&str, &str)> = people.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let commit = git(&repo, &["commit-tree", &tree, "-m", "initial"], &people, None).unwrap();
        git(&repo, &["update-ref", "refs/heads/main", &commit], &[], None).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Shared {
            repo: repo.clone(),
            owner: owner.into(),
            base_url: url.clone(),
            log: log.clone(),
            api,
            hooks: Arc::default(),
            http: reqwest::Client::new(),
        };
        let r = "/repos/{owner}/{name}";
        let app = axum::Router::new()
            .route(&format!("{r}/git/ref/{{*reference}}"), get(get_ref))
            .route(&format!("{r}/git/refs"), post(create_ref))
            .route(&format!("{r}/git/refs/{{*reference}}"), axum::routing::delete(delete_ref))
            .route(&format!("{r}/git/blobs"), post(create_blob))
            .route(&format!("{r}/git/trees"), post(create_tree))
            .route(&format!("{r}/git/commits"), post(create_commit))
            .route(&format!("{r}/git/commits/{{sha}}"), get(get_commit))
            .route(&format!("{r}/contents/{{*path}}"), get(get_contents))
            .route(&format!("{r}/pulls"), post(create_pull).get(list_pulls))
            .route(&format!("{r}/pulls/{{number}}"), get(get_pull).patch(update_pull))
            .route(&format!("{r}/pulls/{{number}}/requested_reviewers"), post(request_reviewers))
            .route(&format!("{r}/pulls/{{number}}/reviews"), post(create_review).get(list_reviews))
            .route(&format!("{r}/pulls/{{number}}/reviews/{{review}}/dismissals"), put(dismiss_review))
            .route("/graphql", post(graphql))
            .route(&format!("{r}/issues/{{number}}/labels"), post(add_labels))
            .route(&format!("{r}/labels"), post(create_label))
            .route(&format!("{r}/issues/{{number}}/comments"), post(create_comment).get(list_comments))
            .fallback(not_here)
            .method_not_allowed_fallback(not_here)
            .layer(axum::middleware::from_fn_with_state(shared.clone(), conform))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        GithubServer { url, repo_dir: repo, log, shared, _dir: dir, stop }
    }

    pub fn crash_after(&self, writes: Option<usize>) {
        let mut log = self.log.lock().unwrap();
        log.writes = 0;
        log.crash_after = writes;
    }

    pub fn git(&self, args: &[&str]) -> Result<String, String> {
        git(&self.repo_dir, args, &[], None)
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.log.lock().unwrap().pulls.clone()
    }

    /// What did not fit GitHub's REST description so far.
    pub fn violations(&self) -> Vec<String> {
        self.log.lock().unwrap().violations.clone()
    }

    /// The violations so far, forgotten (for a test that made them on purpose).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.log.lock().unwrap().violations)
    }

    /// Fails unless everything sent and answered so far fits GitHub's description.
    pub fn assert_conforms(&self) {
        let violations = self.violations();
        assert!(violations.is_empty(), "not as GitHub's REST description says:\n{}", violations.join("\n"));
    }

    /// Signed webhooks go to `url` from now on.
    pub fn send_webhooks_to(&self, url: &str, secret: &str) {
        *self.shared.hooks.lock().unwrap() = Some((url.to_string(), secret.to_string()));
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().deliveries.clone()
    }

    fn repo_of(&self, number: u64) -> String {
        let log = self.log.lock().unwrap();
        log.pulls.iter().find(|p| p.number == number).map(|p| p.repo.clone()).unwrap_or_else(|| "repo".into())
    }

    /// `login` reviews pull request `number` through the API: `event` is `APPROVE`,
    /// `REQUEST_CHANGES` or `COMMENT`; `commit_id` defaults to the head. GitHub's
    /// status and answer.
    pub async fn review(&self, number: u64, login: &str, commit_id: Option<&str>, event: &str) -> (u16, Value) {
        let mut body = json!({"event": event, "body": format!("{event} from {login}")});
        if let Some(c) = commit_id {
            body["commit_id"] = json!(c);
        }
        let path = format!("/repos/{}/{}/pulls/{number}/reviews", self.shared.owner, self.repo_of(number));
        self.call(reqwest::Method::POST, &path, login, &body).await
    }

    /// `login` dismisses review `review_id` of pull request `number` through the API.
    pub async fn dismiss(&self, number: u64, review_id: u64, login: &str, message: &str) -> (u16, Value) {
        let path = format!(
            "/repos/{}/{}/pulls/{number}/reviews/{review_id}/dismissals",
            self.shared.owner,
            self.repo_of(number)
        );
        self.call(reqwest::Method::PUT, &path, login, &json!({"message": message, "event": "DISMISS"})).await
    }

    async fn call(&self, method: reqwest::Method, path: &str, login: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .shared
            .http
            .request(method, format!("{}{path}", self.url))
            .header(LOGIN_HEADER, login)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Someone ([`PUSHER`]) pushes a commit writing `files` onto `branch`, as `git push`
    /// would; each open pull request of that branch is synchronized (and its webhook
    /// sent). The new commit.
    pub async fn push(&self, branch: &str, files: &[(&str, &str)]) -> String {
        let s = &self.shared;
        let reference = format!("refs/heads/{branch}");
        let before = git(&s.repo, &["rev-parse", "--verify", "-q", &reference], &[], None).unwrap();
        let tree = write_tree(&s.repo, Some(&before), files);
        let now = now();
        let who = people("Pat Pusher", "pat@example.com", &now);
        let who: Vec<(&str, &str)> = who.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let after = git(&s.repo, &["commit-tree", &tree, "-p", &before, "-m", "A pushed change"], &who, None).unwrap();
        git(&s.repo, &["update-ref", &reference, &after, &before], &[], None).unwrap();
        let synced: Vec<Pull> = {
            let mut log = s.log.lock().unwrap();
            log.pulls
                .iter_mut()
                .filter(|p| p.open && p.head == branch)
                .map(|p| {
                    p.head_sha = after.clone();
                    p.updated_at = now.clone();
                    p.clone()
                })
                .collect()
        };
        for p in synced {
            let payload = json!({
                "action": "synchronize", "number": p.number, "before": before, "after": after,
                "pull_request": pull_json(s, &p), "repository": repo_json(s, &p.repo),
                "sender": user_json(s, PUSHER),
            });
            s.deliver("pull_request", payload).await;
        }
        after
    }
}

impl Drop for GithubServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if !std::thread::panicking() {
            self.assert_conforms();
        }
    }
}

fn people(name: &str, email: &str, date: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GIT_AUTHOR_NAME", name.into()),
        ("GIT_AUTHOR_EMAIL", email.into()),
        ("GIT_AUTHOR_DATE", date.into()),
        ("GIT_COMMITTER_NAME", name.into()),
        ("GIT_COMMITTER_EMAIL", email.into()),
        ("GIT_COMMITTER_DATE", date.into()),
    ]
}

/// A tree: `base`'s (a commit or tree, if any) with `files` written.
fn write_tree(repo: &Path, base: Option<&str>, files: &[(&str, &str)]) -> String {
    let index = repo.join(format!("index-{}", uuid::Uuid::now_v7()));
    let env = [("GIT_INDEX_FILE", index.to_str().unwrap())];
    match base {
        Some(b) => git(repo, &["read-tree", b], &env, None).unwrap(),
        None => git(repo, &["read-tree", "--empty"], &env, None).unwrap(),
    };
    for (path, content) in files {
        let blob = git(repo, &["hash-object", "-w", "--stdin"], &[], Some(content.as_bytes())).unwrap();
        git(repo, &["update-index", "--add", "--cacheinfo", &format!("100644,{blob},{path}")], &env, None).unwrap();
    }
    let tree = git(repo, &["write-tree"], &env, None).unwrap();
    let _ = std::fs::remove_file(&index);
    tree
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Logs every request; a write past the crash point is made and then answered 502.
async fn record(State(s): State<Shared>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let write = request.method() != axum::http::Method::GET;
    let line = format!("{} {}", request.method(), request.uri().path());
    s.log.lock().unwrap().requests.push(line);
    let response = next.run(request).await;
    if write && response.status().is_success() {
        let mut log = s.log.lock().unwrap();
        log.writes += 1;
        if log.crash_after == Some(log.writes) {
            log.crash_after = None;
            return (StatusCode::BAD_GATEWAY, Json(json!({"message": "Server Error"}))).into_response();
        }
    }
    response
}

/// At most this many problems are kept about one body.
const MAX_PROBLEMS: usize = 12;

impl Shared {
    fn violation(&self, text: String) {
        self.log.lock().unwrap().violations.push(text);
    }

    /// One violation per problem, `what` saying where; past [`MAX_PROBLEMS`], a count.
    fn violations(&self, what: &str, problems: &[Problem]) {
        for p in problems.iter().take(MAX_PROBLEMS) {
            self.violation(format!("{what}: {p}"));
        }
        if problems.len() > MAX_PROBLEMS {
            self.violation(format!("{what}: and {} more", problems.len() - MAX_PROBLEMS));
        }
    }

    /// `https://api/repos/<owner>/<repo>`.
    fn api(&self, repo: &str) -> String {
        format!("{}/repos/{}/{repo}", self.base_url, self.owner)
    }

    fn web(&self, repo: &str) -> String {
        format!("{WEB}/{}/{repo}", self.owner)
    }

    /// Sends `payload` as a signed `event` webhook, if a receiver is set; checks it
    /// against GitHub's description first.
    async fn deliver(&self, event: &str, payload: Value) {
        let Some((url, secret)) = self.hooks.lock().unwrap().clone() else { return };
        let action = payload["action"].as_str().unwrap_or_default().to_string();
        self.violations(&format!("webhook {event}.{action}"), &self.api.check_webhook(event, &payload));
        let body = payload.to_string();
        let id = uuid::Uuid::now_v7().to_string();
        let signature = hex::encode(inquest::intake::auth::hmac_sha256(secret.as_bytes(), &[body.as_bytes()]));
        let sent = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/test")
            .header("x-github-event", event)
            .header("x-github-delivery", &id)
            .header("x-github-hook-id", "1")
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .body(body)
            .send()
            .await;
        let status = sent.ok().map(|r| r.status().as_u16());
        self.log.lock().unwrap().deliveries.push(Delivery { id, event: event.into(), action, status });
    }
}

/// Checks the request and the answer against the operation GitHub's description has
/// for them; a request body that does not fit is answered 422, as GitHub does.
async fn conform(State(s): State<Shared>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path().to_string();
    if path == "/graphql" {
        return next.run(request).await;
    }
    let what = format!("{} {path}", request.method());
    let Some(op) = s.api.operation(request.method().as_str(), &path) else {
        s.violation(format!("{what}: no such operation in GitHub's REST description"));
        return not_found();
    };
    let (mut parts, body) = request.into_parts();
    let Ok(mut bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return error(StatusCode::BAD_REQUEST, "the body could not be read");
    };
    if s.api.takes_json(&op) {
        if bytes.is_empty() && !s.api.body_required(&op) {
            bytes = "{}".into();
        }
        let answer = match serde_json::from_slice::<Value>(&bytes) {
            Ok(body) => {
                let problems = s.api.check_request(&op, &body);
                s.violations(&format!("{what} ({}): request body", op.id), &problems);
                (!problems.is_empty()).then(|| invalid_request(&op, &problems[..problems.len().min(MAX_PROBLEMS)]))
            }
            Err(e) => {
                s.violation(format!("{what} ({}): request body is not JSON: {e}", op.id));
                Some(error(StatusCode::BAD_REQUEST, "Problems parsing JSON"))
            }
        };
        if let Some(answer) = answer {
            return checked(&s, &op, &what, answer).await;
        }
        // GitHub reads the body as JSON whatever its content type says.
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    } else if !bytes.is_empty() {
        s.violation(format!("{what} ({}): a body was sent, but the operation takes none", op.id));
    }
    let response = next.run(axum::extract::Request::from_parts(parts, Body::from(bytes))).await;
    checked(&s, &op, &what, response).await
}

/// `response`, its body checked against the operation's answer of its status.
async fn checked(s: &Shared, op: &Operation, what: &str, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let media = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim();
    let problems = s.api.check_response(op, parts.status.as_u16(), media, &bytes);
    s.violations(&format!("{what} ({}): answer {}", op.id, parts.status.as_u16()), &problems);
    Response::from_parts(parts, Body::from(bytes))
}

/// GitHub's 422 for a body that does not fit: `Invalid request.` and each problem.
fn invalid_request(op: &Operation, problems: &[Problem]) -> Response {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match &p.missing {
            Some(name) => format!("\"{name}\" wasn't supplied."),
            None => format!("For '{}', {}.", if p.at.is_empty() { "/" } else { &p.at }, p.what),
        })
        .collect();
    let message = format!("Invalid request.\n\n{}", lines.join("\n"));
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"message": message, "documentation_url": op.docs}))).into_response()
}

/// A route this server does not implement: 404, and a violation (a test asked for
/// something it will not get from here).
async fn not_here(State(s): State<Shared>, method: axum::http::Method, uri: axum::http::Uri) -> Response {
    s.violation(format!("{method} {}: not implemented by the GitHub test server", uri.path()));
    not_found()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"}))).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

fn invalid(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// A 422 to answer, small enough to pass around in a `Result`.
struct Invalid(String);

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        invalid(&self.0)
    }
}

/// A refusal decided while holding the log, answered after.
enum Refusal {
    NotFound,
    /// GitHub's 422 with a message.
    Invalid(String),
    /// GitHub's 422 where the description says `validation_failed_simple`.
    Simple(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NotFound => not_found(),
            Refusal::Invalid(m) => invalid(&m),
            Refusal::Simple(m) => validation_simple(&m),
        }
    }
}

fn str_field<'a>(body: &'a Value, key: &str) -> Result<&'a str, Invalid> {
    body[key].as_str().ok_or_else(|| Invalid(format!("Invalid request.\n\n\"{key}\" wasn't supplied.")))
}

/// The caller's login.
fn caller(headers: &HeaderMap) -> String {
    headers.get(LOGIN_HEADER).and_then(|v| v.to_str().ok()).unwrap_or(APP_LOGIN).to_string()
}

type Repo = UrlPath<(String, String)>;
type RepoAnd = UrlPath<(String, String, String)>;

// ---------------------------------------------------------------------------------
// GitHub's shapes.

/// A stable number for a name, as GitHub's ids are.
fn id_of(name: &str) -> u64 {
    name.bytes().fold(1_469_598_103_934_665_603u64, |h, b| (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211))
        % 100_000_000
        + 1
}

fn encode(segment: &str) -> String {
    inquest::percent::encode(segment)
}

fn user_json(s: &Shared, login: &str) -> Value {
    let id = id_of(login);
    let url = format!("{}/users/{}", s.base_url, encode(login));
    let (kind, html) = match login.strip_suffix("[bot]") {
        Some(app) => ("Bot", format!("{WEB}/apps/{}", encode(app))),
        None if login == s.owner => ("Organization", format!("{WEB}/{}", encode(login))),
        None => ("User", format!("{WEB}/{}", encode(login))),
    };
    json!({
        "login": login, "id": id, "node_id": format!("U_{id}"),
        "avatar_url": format!("https://avatars.github.example/u/{id}?v=4"), "gravatar_id": "",
        "url": url, "html_url": html,
        "followers_url": format!("{url}/followers"), "following_url": format!("{url}/following{{/other_user}}"),
        "gists_url": format!("{url}/gists{{/gist_id}}"), "starred_url": format!("{url}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{url}/subscriptions"), "organizations_url": format!("{url}/orgs"),
        "repos_url": format!("{url}/repos"), "events_url": format!("{url}/events{{/privacy}}"),
        "received_events_url": format!("{url}/received_events"),
        "type": kind, "site_admin": false, "user_view_type": "public",
    })
}

fn association(s: &Shared, login: &str) -> &'static str {
    if login == s.owner {
        "OWNER"
    } else if login.ends_with("[bot]") {
        "NONE"
    } else {
        "COLLABORATOR"
    }
}

fn repo_json(s: &Shared, name: &str) -> Value {
    let full = format!("{}/{name}", s.owner);
    let id = id_of(&full);
    let api = s.api(name);
    let pushed = git(&s.repo, &["log", "-1", "--all", "--format=%cI"], &[], None)
        .ok()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d).ok())
        .map(|d| d.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| CREATED.into());
    let mut repo = json!({
        "id": id, "node_id": format!("R_{id}"), "name": name, "full_name": full,
        "private": true, "owner": user_json(s, &s.owner), "html_url": s.web(name),
        "description": null, "fork": false, "url": api,
    });
    // The `*_url`s: the API's, as URI templates where GitHub's are.
    let urls = [
        ("forks", "forks"),
        ("keys", "keys{/key_id}"),
        ("collaborators", "collaborators{/collaborator}"),
        ("teams", "teams"),
        ("hooks", "hooks"),
        ("issue_events", "issues/events{/number}"),
        ("events", "events"),
        ("assignees", "assignees{/user}"),
        ("branches", "branches{/branch}"),
        ("tags", "tags"),
        ("blobs", "git/blobs{/sha}"),
        ("git_tags", "git/tags{/sha}"),
        ("git_refs", "git/refs{/sha}"),
        ("trees", "git/trees{/sha}"),
        ("statuses", "statuses/{sha}"),
        ("languages", "languages"),
        ("stargazers", "stargazers"),
        ("contributors", "contributors"),
        ("subscribers", "subscribers"),
        ("subscription", "subscription"),
        ("commits", "commits{/sha}"),
        ("git_commits", "git/commits{/sha}"),
        ("comments", "comments{/number}"),
        ("issue_comment", "issues/comments{/number}"),
        ("contents", "contents/{+path}"),
        ("compare", "compare/{base}...{head}"),
        ("merges", "merges"),
        ("archive", "{archive_format}{/ref}"),
        ("downloads", "downloads"),
        ("issues", "issues{/number}"),
        ("pulls", "pulls{/number}"),
        ("milestones", "milestones{/number}"),
        ("notifications", "notifications{?since,all,participating}"),
        ("labels", "labels{/name}"),
        ("releases", "releases{/id}"),
        ("deployments", "deployments"),
    ];
    merge(
        &mut repo,
        Value::Object(urls.iter().map(|(k, t)| (format!("{k}_url"), json!(format!("{api}/{t}")))).collect()),
    );
    merge(
        &mut repo,
        json!({
            "created_at": CREATED, "updated_at": CREATED, "pushed_at": pushed,
            "git_url": format!("git://github.example/{full}.git"), "ssh_url": format!("git@github.example:{full}.git"),
            "clone_url": format!("{}.git", s.web(name)), "svn_url": s.web(name), "homepage": null,
            "size": 1, "stargazers_count": 0, "watchers_count": 0, "language": null,
            "has_issues": true, "has_projects": false, "has_downloads": true, "has_wiki": false, "has_pages": false,
            "has_discussions": false, "forks_count": 0, "mirror_url": null, "archived": false, "disabled": false,
            "open_issues_count": 0, "license": null, "allow_forking": false, "is_template": false,
            "web_commit_signoff_required": false, "topics": [], "visibility": "private",
            "forks": 0, "open_issues": 0, "watchers": 0, "default_branch": "main",
        }),
    );
    repo
}

/// `extra`'s fields added to `into` (one `json!` of them all is too deep for the macro).
fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// A label. Its `description` is `""`, not `null` as GitHub sends for a label without
/// one: the description's `pull-request-simple` (pulls/list) does not allow `null` there.
fn label_json(s: &Shared, repo: &str, name: &str) -> Value {
    let id = id_of(&format!("{repo}/label/{name}"));
    json!({"id": id, "node_id": format!("LA_{id}"), "url": format!("{}/labels/{}", s.api(repo), encode(name)),
           "name": name, "description": "", "color": "ededed", "default": false})
}

fn sha_of(s: &Shared, branch: &str) -> Option<String> {
    git(&s.repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")], &[], None)
        .ok()
        .filter(|h| !h.is_empty())
}

fn pull_json(s: &Shared, p: &Pull) -> Value {
    let head_sha = sha_of(s, &p.head).filter(|_| p.open).unwrap_or_else(|| p.head_sha.clone());
    let base_sha = sha_of(s, &p.base).unwrap_or_default();
    let api = s.api(&p.repo);
    let pull_api = format!("{api}/pulls/{}", p.number);
    let issue_api = format!("{api}/issues/{}", p.number);
    let html = format!("{}/pull/{}", s.web(&p.repo), p.number);
    let range = format!("{base_sha}..{head_sha}");
    let commits: u64 =
        git(&s.repo, &["rev-list", "--count", &range], &[], None).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let (mut additions, mut deletions, mut changed) = (0u64, 0u64, 0u64);
    let numstat = git(&s.repo, &["diff", "--numstat", &format!("{base_sha}...{head_sha}")], &[], None);
    for line in numstat.unwrap_or_default().lines() {
        let mut f = line.split('\t');
        additions += f.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        deletions += f.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        changed += 1;
    }
    let side = |branch: &str, sha: &str| {
        json!({"label": format!("{}:{branch}", s.owner), "ref": branch, "sha": sha,
               "user": user_json(s, &s.owner), "repo": repo_json(s, &p.repo)})
    };
    let link = |href: String| json!({"href": href});
    let mut pull = json!({
        "url": pull_api, "id": 1_000_000 + p.number, "node_id": format!("PR_{}", p.number),
        "html_url": html, "diff_url": format!("{html}.diff"), "patch_url": format!("{html}.patch"),
        "issue_url": issue_api, "commits_url": format!("{pull_api}/commits"),
        "review_comments_url": format!("{pull_api}/comments"), "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
        "comments_url": format!("{issue_api}/comments"), "statuses_url": format!("{api}/statuses/{head_sha}"),
        "number": p.number, "state": if p.open { "open" } else { "closed" }, "locked": false,
        "title": p.title, "user": user_json(s, &p.author), "body": p.body,
        "labels": p.labels.iter().map(|l| label_json(s, &p.repo, l)).collect::<Vec<_>>(),
        "milestone": null, "active_lock_reason": null,
        "created_at": p.created_at, "updated_at": p.updated_at, "closed_at": p.closed_at,
        "merged_at": null, "merge_commit_sha": null, "assignee": null, "assignees": [],
        "requested_reviewers": p.reviewers.iter().map(|r| user_json(s, r)).collect::<Vec<_>>(),
        "requested_teams": [],
    });
    merge(
        &mut pull,
        json!({
            "head": side(&p.head, &head_sha), "base": side(&p.base, &base_sha),
            "_links": {
                "self": link(pull_api.clone()), "html": link(html.clone()), "issue": link(issue_api.clone()),
                "comments": link(format!("{issue_api}/comments")), "review_comments": link(format!("{pull_api}/comments")),
                "review_comment": link(format!("{api}/pulls/comments{{/number}}")),
                "commits": link(format!("{pull_api}/commits")), "statuses": link(format!("{api}/statuses/{head_sha}")),
            },
            "author_association": association(s, &p.author), "auto_merge": null, "draft": p.draft,
            "merged": false, "mergeable": null, "rebaseable": null,
            "mergeable_state": if p.draft { "draft" } else { "unknown" }, "merged_by": null,
            "comments": p.comments.len(), "review_comments": 0, "maintainer_can_modify": false,
            "commits": commits, "additions": additions, "deletions": deletions, "changed_files": changed,
        }),
    );
    pull
}

fn review_json(s: &Shared, p: &Pull, r: &Review) -> Value {
    let pull_api = format!("{}/pulls/{}", s.api(&p.repo), p.number);
    let html = format!("{}/pull/{}#pullrequestreview-{}", s.web(&p.repo), p.number, r.id);
    let mut review = json!({
        "id": r.id, "node_id": format!("PRR_{}", r.id), "user": user_json(s, &r.login), "body": r.body,
        "state": r.state, "html_url": html, "pull_request_url": pull_api,
        "_links": {"html": {"href": html}, "pull_request": {"href": pull_api}},
        "commit_id": r.commit_id, "author_association": association(s, &r.login),
    });
    // A pending review has not been submitted: no `submitted_at` at all.
    if let Some(at) = &r.submitted_at {
        review["submitted_at"] = json!(at);
    }
    review
}

fn comment_json(s: &Shared, p: &Pull, i: usize) -> Value {
    let c = &p.comment_info[i];
    let api = s.api(&p.repo);
    json!({
        "id": c.id, "node_id": format!("IC_{}", c.id), "url": format!("{api}/issues/comments/{}", c.id),
        "html_url": format!("{}/pull/{}#issuecomment-{}", s.web(&p.repo), p.number, c.id),
        "body": p.comments[i], "user": user_json(s, &c.login), "created_at": c.at, "updated_at": c.at,
        "issue_url": format!("{api}/issues/{}", p.number), "author_association": association(s, &c.login),
    })
}

/// A git commit as `GET git/commits/{sha}` shows it.
fn commit_json(s: &Shared, repo: &str, sha: &str) -> Option<Value> {
    let text = git(&s.repo, &["cat-file", "commit", sha], &[], None).ok()?;
    let (head, message) = text.split_once("\n\n").unwrap_or((&text, ""));
    let api = s.api(repo);
    let person = |kind: &str| {
        let line = head.lines().find_map(|l| l.strip_prefix(&format!("{kind} ")))?;
        let (name, rest) = line.split_once(" <")?;
        let (email, when) = rest.split_once("> ")?;
        let secs: i64 = when.split(' ').next()?.parse().ok()?;
        let date = chrono::DateTime::from_timestamp(secs, 0)?.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        Some(json!({"name": name, "email": email, "date": date}))
    };
    let tree = head.lines().find_map(|l| l.strip_prefix("tree "))?;
    let parents: Vec<Value> = head
        .lines()
        .filter_map(|l| l.strip_prefix("parent "))
        .map(|p| json!({"sha": p, "url": format!("{api}/git/commits/{p}"), "html_url": format!("{}/commit/{p}", s.web(repo))}))
        .collect();
    Some(json!({
        "sha": sha, "node_id": format!("C_{sha}"), "url": format!("{api}/git/commits/{sha}"),
        "html_url": format!("{}/commit/{sha}", s.web(repo)),
        "author": person("author")?, "committer": person("committer")?, "message": message,
        "tree": {"sha": tree, "url": format!("{api}/git/trees/{tree}")}, "parents": parents,
        "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
    }))
}

// ---------------------------------------------------------------------------------
// Git data.

async fn get_ref(State(s): State<Shared>, UrlPath((_, repo, reference)): RepoAnd) -> Response {
    match git(&s.repo, &["rev-parse", "--verify", "-q", &format!("refs/{reference}")], &[], None) {
        Ok(sha) if !sha.is_empty() => Json(ref_json(&s, &repo, &format!("refs/{reference}"), &sha)).into_response(),
        _ => not_found(),
    }
}

fn ref_json(s: &Shared, repo: &str, reference: &str, sha: &str) -> Value {
    let api = s.api(repo);
    let tail = reference.strip_prefix("refs/").unwrap_or(reference);
    json!({
        "ref": reference, "node_id": format!("REF_{}", id_of(reference)),
        "url": format!("{api}/git/refs/{}", inquest::percent::encode_keeping_slashes(tail)),
        "object": {"type": "commit", "sha": sha, "url": format!("{api}/git/commits/{sha}")},
    })
}

async fn create_ref(State(s): State<Shared>, UrlPath((_, repo)): Repo, Json(body): Json<Value>) -> Response {
    let (reference, sha) = match (str_field(&body, "ref"), str_field(&body, "sha")) {
        (Ok(r), Ok(h)) => (r.to_string(), h.to_string()),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    if !reference.starts_with("refs/") || reference.matches('/').count() < 2 {
        return invalid("Reference name is invalid");
    }
    if git(&s.repo, &["rev-parse", "--verify", "-q", &reference], &[], None).is_ok_and(|h| !h.is_empty()) {
        return invalid("Reference already exists");
    }
    if git(&s.repo, &["cat-file", "-e", &format!("{sha}^{{commit}}")], &[], None).is_err() {
        return invalid("Object does not exist");
    }
    git(&s.repo, &["update-ref", &reference, &sha], &[], None).unwrap();
    (StatusCode::CREATED, Json(ref_json(&s, &repo, &reference, &sha))).into_response()
}

async fn delete_ref(State(s): State<Shared>, UrlPath((_, _, reference)): RepoAnd) -> Response {
    let full = format!("refs/{reference}");
    if git(&s.repo, &["rev-parse", "--verify", "-q", &full], &[], None).map_or(true, |h| h.is_empty()) {
        return invalid("Reference does not exist");
    }
    git(&s.repo, &["update-ref", "-d", &full], &[], None).unwrap();
    StatusCode::NO_CONTENT.into_response()
}

async fn create_blob(State(s): State<Shared>, UrlPath((_, repo)): Repo, Json(body): Json<Value>) -> Response {
    let content = match str_field(&body, "content") {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let bytes = match body["encoding"].as_str().unwrap_or("utf-8") {
        "base64" => match STANDARD.decode(content.split_whitespace().collect::<String>()) {
            Ok(b) => b,
            Err(_) => return invalid("content is not valid Base64"),
        },
        "utf-8" => content.as_bytes().to_vec(),
        other => return invalid(&format!("encoding `{other}` is not supported")),
    };
    let sha = git(&s.repo, &["hash-object", "-w", "--stdin"], &[], Some(&bytes)).unwrap();
    (StatusCode::CREATED, Json(json!({"sha": sha, "url": format!("{}/git/blobs/{sha}", s.api(&repo))}))).into_response()
}

async fn create_tree(State(s): State<Shared>, UrlPath((_, repo)): Repo, Json(body): Json<Value>) -> Response {
    let Some(entries) = body["tree"].as_array() else {
        return invalid("Invalid request.\n\n\"tree\" wasn't supplied.");
    };
    let index = s.repo.join(format!("index-{}", uuid::Uuid::now_v7()));
    let env = [("GIT_INDEX_FILE", index.to_str().unwrap())];
    let base = body["base_tree"].as_str();
    let answer = (|| {
        match base {
            Some(base) => git(&s.repo, &["read-tree", base], &env, None)
                .map_err(|_| Invalid("base_tree is not a valid tree".into()))?,
            None => git(&s.repo, &["read-tree", "--empty"], &env, None).map_err(Invalid)?,
        };
        for e in entries {
            let (Some(path), Some(mode)) = (e["path"].as_str(), e["mode"].as_str()) else {
                return Err(Invalid("tree entries need path and mode".into()));
            };
            if e["type"] != "blob" || !matches!(mode, "100644" | "100755") {
                return Err(Invalid("only file blobs are supported here".into()));
            }
            let sha = match (&e["sha"], e["content"].as_str()) {
                // `sha: null` deletes the file.
                (Value::Null, None) if e.get("sha").is_some() => {
                    git(&s.repo, &["update-index", "--force-remove", path], &env, None).map_err(Invalid)?;
                    continue;
                }
                (Value::String(sha), None) => sha.clone(),
                (Value::Null, Some(content)) => {
                    git(&s.repo, &["hash-object", "-w", "--stdin"], &[], Some(content.as_bytes())).map_err(Invalid)?
                }
                _ => return Err(Invalid("a tree entry has either sha or content".into())),
            };
            git(&s.repo, &["update-index", "--add", "--cacheinfo", &format!("{mode},{sha},{path}")], &env, None)
                .map_err(|_| Invalid("tree.sha is not a valid blob".into()))?;
        }
        git(&s.repo, &["write-tree"], &env, None).map_err(Invalid)
    })();
    let _ = std::fs::remove_file(&index);
    match answer {
        Ok(sha) => (StatusCode::CREATED, Json(tree_json(&s, &repo, &sha))).into_response(),
        Err(r) => r.into_response(),
    }
}

/// A tree's top level, as GitHub answers a created tree.
fn tree_json(s: &Shared, repo: &str, sha: &str) -> Value {
    let api = s.api(repo);
    let listing = git(&s.repo, &["ls-tree", "-l", sha], &[], None).unwrap_or_default();
    let entries: Vec<Value> = listing
        .lines()
        .filter_map(|line| {
            let (meta, path) = line.split_once('\t')?;
            let f: Vec<&str> = meta.split_whitespace().collect();
            let (mode, kind, sha, size) = (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?);
            let mut e = json!({"path": path, "mode": mode, "type": kind, "sha": sha,
                               "url": format!("{api}/git/{kind}s/{sha}")});
            if let Ok(n) = size.parse::<u64>() {
                e["size"] = json!(n);
            }
            Some(e)
        })
        .collect();
    json!({"sha": sha, "url": format!("{api}/git/trees/{sha}"), "tree": entries, "truncated": false})
}

async fn create_commit(State(s): State<Shared>, UrlPath((_, repo)): Repo, Json(body): Json<Value>) -> Response {
    let (message, tree) = match (str_field(&body, "message"), str_field(&body, "tree")) {
        (Ok(m), Ok(t)) => (m.to_string(), t.to_string()),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let mut args = vec!["commit-tree".to_string(), tree.clone()];
    for p in body["parents"].as_array().into_iter().flatten() {
        args.push("-p".into());
        args.push(p.as_str().unwrap_or_default().into());
    }
    args.push("-F".into());
    args.push("-".into());
    let now = now();
    let who = |k: &str| {
        let p = &body[k];
        people(
            p["name"].as_str().unwrap_or("Someone"),
            p["email"].as_str().unwrap_or("someone@example.com"),
            p["date"].as_str().unwrap_or(&now),
        )
    };
    // The author as given; the committer as given, else the author (as GitHub does).
    let committer = if body["committer"].is_object() { "committer" } else { "author" };
    let mut env: Vec<(&str, String)> = who("author").into_iter().filter(|(k, _)| k.starts_with("GIT_AUTHOR")).collect();
    env.extend(who(committer).into_iter().filter(|(k, _)| k.starts_with("GIT_COMMITTER")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // `git commit-tree -F -` keeps the message as given, with a newline at its end.
    let text = if message.ends_with('\n') { message.clone() } else { format!("{message}\n") };
    match git(&s.repo, &args, &env, Some(text.as_bytes())) {
        Ok(sha) => match commit_json(&s, &repo, &sha) {
            Some(commit) => (StatusCode::CREATED, Json(commit)).into_response(),
            None => invalid("the commit could not be read back"),
        },
        Err(_) => invalid("Tree SHA does not exist or a parent is not a commit"),
    }
}

async fn get_commit(State(s): State<Shared>, UrlPath((_, repo, sha)): RepoAnd) -> Response {
    match commit_json(&s, &repo, &sha) {
        Some(commit) => Json(commit).into_response(),
        None => not_found(),
    }
}

async fn get_contents(
    State(s): State<Shared>,
    UrlPath((_, repo, path)): RepoAnd,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let at = q.get("ref").cloned().unwrap_or_else(|| "main".into());
    let spec = format!("{at}:{path}");
    let Ok(kind) = git(&s.repo, &["cat-file", "-t", &spec], &[], None) else { return not_found() };
    let entry = |kind: &str, path: &str, sha: &str, size: u64| {
        let url =
            format!("{}/contents/{}?ref={}", s.api(&repo), inquest::percent::encode_keeping_slashes(path), encode(&at));
        let git_url = format!("{}/git/{}s/{sha}", s.api(&repo), if kind == "dir" { "tree" } else { "blob" });
        let html = format!("{}/{}/{at}/{path}", s.web(&repo), if kind == "dir" { "tree" } else { "blob" });
        let download = (kind == "file").then(|| format!("https://raw.github.example/{}/{repo}/{at}/{path}", s.owner));
        json!({"type": kind, "size": size, "name": path.rsplit('/').next().unwrap_or_default(), "path": path,
               "sha": sha, "url": url, "git_url": git_url, "html_url": html, "download_url": download,
               "_links": {"self": url, "git": git_url, "html": html}})
    };
    if kind != "blob" {
        let listing = git(&s.repo, &["ls-tree", "-l", &spec], &[], None).unwrap_or_default();
        let list: Vec<Value> = listing
            .lines()
            .filter_map(|line| {
                let (meta, name) = line.split_once('\t')?;
                let f: Vec<&str> = meta.split_whitespace().collect();
                let kind = if *f.get(1)? == "tree" { "dir" } else { "file" };
                let size = f.get(3)?.parse().unwrap_or(0);
                Some(entry(kind, &format!("{path}/{name}"), f.get(2)?, size))
            })
            .collect();
        return Json(list).into_response();
    }
    let sha = git(&s.repo, &["rev-parse", &spec], &[], None).unwrap();
    let bytes = Command::new("git").arg("-C").arg(&s.repo).args(["cat-file", "blob", &sha]).output().unwrap().stdout;
    // GitHub wraps the base64 at 60 characters.
    let encoded = STANDARD.encode(&bytes);
    let wrapped: Vec<&str> =
        encoded.as_bytes().chunks(60).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    let mut file = entry("file", &path, &sha, bytes.len() as u64);
    file["encoding"] = json!("base64");
    file["content"] = json!(wrapped.join("\n") + "\n");
    Json(file).into_response()
}

// ---------------------------------------------------------------------------------
// Pull requests, labels, comments, reviews.

async fn create_pull(
    State(s): State<Shared>,
    UrlPath((_, repo)): Repo,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let fields = (str_field(&body, "title"), str_field(&body, "head"), str_field(&body, "base"));
    let (title, head, base) = match fields {
        (Ok(t), Ok(h), Ok(b)) => (t.to_string(), h.to_string(), b.to_string()),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e.into_response(),
    };
    // `owner:branch` names the head's owner; here every branch is the owner's.
    let head = head.split_once(':').map(|(_, b)| b.to_string()).unwrap_or(head);
    let mut shas = Vec::new();
    for branch in [&head, &base] {
        match sha_of(&s, branch) {
            Some(sha) => shas.push(sha),
            None => return invalid(&format!("Validation Failed: no branch `{branch}`")),
        }
    }
    let mut log = s.log.lock().unwrap();
    if log.pulls.iter().any(|p| p.open && p.head == head) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
                "message": format!("A pull request already exists for {}:{head}.", s.owner)}],
                "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"})),
        )
            .into_response();
    }
    let now = now();
    let pull = Pull {
        number: log.pulls.len() as u64 + 1,
        repo,
        author: caller(&headers),
        head,
        head_sha: shas[0].clone(),
        base,
        title,
        body: body["body"].as_str().unwrap_or_default().into(),
        draft: body["draft"].as_bool().unwrap_or(false),
        open: true,
        labels: vec![],
        comments: vec![],
        comment_info: vec![],
        reviewers: vec![],
        reviews: vec![],
        created_at: now.clone(),
        updated_at: now,
        closed_at: None,
    };
    log.pulls.push(pull.clone());
    drop(log);
    (StatusCode::CREATED, Json(pull_json(&s, &pull))).into_response()
}

async fn list_pulls(
    State(s): State<Shared>,
    UrlPath((_, repo)): Repo,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let head = q.get("head").and_then(|h| h.split_once(':')).map(|(_, b)| b.to_string());
    let open_only = q.get("state").is_none_or(|st| st == "open");
    let pulls: Vec<Pull> = s.log.lock().unwrap().pulls.clone();
    let list: Vec<Value> = pulls
        .iter()
        .filter(|p| p.repo == repo && (!open_only || p.open) && head.as_ref().is_none_or(|h| *h == p.head))
        .map(|p| pull_json(&s, p))
        .collect();
    Json(list).into_response()
}

fn with_pull<T>(s: &Shared, number: &str, f: impl FnOnce(&mut Pull) -> T) -> Option<T> {
    let n: u64 = number.parse().ok()?;
    s.log.lock().unwrap().pulls.iter_mut().find(|p| p.number == n).map(f)
}

/// `POST /repos/{owner}/{repo}/labels`: 201, or GitHub's 422 `already_exists`.
async fn create_label(State(s): State<Shared>, UrlPath((_, repo)): Repo, Json(body): Json<Value>) -> Response {
    let name = match str_field(&body, "name") {
        Ok(n) => n.to_string(),
        Err(e) => return e.into_response(),
    };
    let color = body["color"].as_str().unwrap_or("ededed").to_string();
    let exists = {
        let mut log = s.log.lock().unwrap();
        let exists = log.labels.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name));
        if !exists {
            log.labels.push((name.clone(), color.clone()));
        }
        exists
    };
    if exists {
        let body = json!({"message": "Validation Failed",
                          "errors": [{"resource": "Label", "code": "already_exists", "field": "name"}],
                          "documentation_url": "https://docs.github.com/rest/issues/labels#create-a-label"});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let mut label = label_json(&s, &repo, &name);
    label["color"] = json!(color);
    (StatusCode::CREATED, Json(label)).into_response()
}

async fn add_labels(State(s): State<Shared>, UrlPath((_, _, number)): RepoAnd, Json(body): Json<Value>) -> Response {
    let Some(labels) = body["labels"].as_array() else {
        return invalid("Invalid request.\n\n\"labels\" wasn't supplied.");
    };
    // Names, or `{"name": ...}` objects.
    let names: Vec<String> =
        labels.iter().filter_map(|l| l.as_str().or_else(|| l["name"].as_str()).map(str::to_string)).collect();
    match with_pull(&s, &number, |p| {
        for n in names {
            if !p.labels.contains(&n) {
                p.labels.push(n);
            }
        }
        p.clone()
    }) {
        Some(p) => Json(p.labels.iter().map(|l| label_json(&s, &p.repo, l)).collect::<Vec<_>>()).into_response(),
        None => not_found(),
    }
}

async fn create_comment(
    State(s): State<Shared>,
    UrlPath((_, _, number)): RepoAnd,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let text = match str_field(&body, "body") {
        Ok(b) => b.to_string(),
        Err(e) => return e.into_response(),
    };
    let id = s.log.lock().unwrap().next_id();
    let info = Comment { id, login: caller(&headers), at: now() };
    match with_pull(&s, &number, |p| {
        p.comments.push(text.clone());
        p.comment_info.push(info);
        p.clone()
    }) {
        Some(p) => (StatusCode::CREATED, Json(comment_json(&s, &p, p.comments.len() - 1))).into_response(),
        None => not_found(),
    }
}

async fn list_comments(
    State(s): State<Shared>,
    UrlPath((_, _, number)): RepoAnd,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30).clamp(1, 100);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    match with_pull(&s, &number, |p| p.clone()) {
        Some(p) => {
            let list: Vec<Value> = (0..p.comments.len())
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|i| comment_json(&s, &p, i))
                .collect();
            Json(list).into_response()
        }
        None => not_found(),
    }
}

async fn get_pull(State(s): State<Shared>, UrlPath((_, _, number)): RepoAnd) -> Response {
    match with_pull(&s, &number, |p| p.clone()) {
        Some(p) => Json(pull_json(&s, &p)).into_response(),
        None => not_found(),
    }
}

async fn update_pull(State(s): State<Shared>, UrlPath((_, _, number)): RepoAnd, Json(body): Json<Value>) -> Response {
    let state = body["state"].as_str().map(str::to_string);
    if state.as_deref().is_some_and(|st| !matches!(st, "open" | "closed")) {
        return invalid("state must be open or closed");
    }
    if let Some(base) = body["base"].as_str()
        && sha_of(&s, base).is_none()
    {
        return invalid(&format!("Validation Failed: no branch `{base}`"));
    }
    let head_sha = with_pull(&s, &number, |p| sha_of(&s, &p.head)).flatten();
    let now = now();
    match with_pull(&s, &number, |p| {
        if let Some(st) = &state {
            let open = st == "open";
            if p.open && !open {
                // Closed: the head is what it was then.
                p.head_sha = head_sha.unwrap_or_else(|| p.head_sha.clone());
                p.closed_at = Some(now.clone());
            }
            if open {
                p.closed_at = None;
            }
            p.open = open;
        }
        if let Some(t) = body["title"].as_str() {
            p.title = t.into();
        }
        if let Some(b) = body["body"].as_str() {
            p.body = b.into();
        }
        if let Some(b) = body["base"].as_str() {
            p.base = b.into();
        }
        p.updated_at = now.clone();
        p.clone()
    }) {
        Some(p) => Json(pull_json(&s, &p)).into_response(),
        None => not_found(),
    }
}

async fn request_reviewers(
    State(s): State<Shared>,
    UrlPath((_, _, number)): RepoAnd,
    Json(body): Json<Value>,
) -> Response {
    let Some(wanted) = body["reviewers"].as_array() else {
        return invalid("Invalid request.\n\n\"reviewers\" wasn't supplied.");
    };
    let mut wanted: Vec<String> = wanted.iter().filter_map(|r| r.as_str().map(str::to_string)).collect();
    // Teams are kept as `owner/slug`, as CODEOWNERS names them.
    let teams = body["team_reviewers"].as_array().into_iter().flatten().filter_map(Value::as_str);
    wanted.extend(teams.map(|t| format!("{}/{t}", s.owner)));
    match with_pull(&s, &number, |p| {
        if wanted.contains(&p.author) {
            return Err(Refusal::Invalid("Review cannot be requested from pull request author.".into()));
        }
        for r in wanted {
            if !p.reviewers.contains(&r) {
                p.reviewers.push(r);
            }
        }
        Ok(p.clone())
    }) {
        Some(Ok(p)) => (StatusCode::CREATED, Json(pull_json(&s, &p))).into_response(),
        Some(Err(refused)) => refused.into_response(),
        None => not_found(),
    }
}

async fn create_review(
    State(s): State<Shared>,
    UrlPath((_, _, number)): RepoAnd,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let login = caller(&headers);
    let event = body["event"].as_str();
    let text = body["body"].as_str().unwrap_or_default().to_string();
    let state = match event {
        Some("APPROVE") => "APPROVED",
        Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
        Some("COMMENT") => "COMMENTED",
        _ => "PENDING",
    };
    if matches!(state, "CHANGES_REQUESTED" | "COMMENTED") && text.is_empty() {
        return validation_simple(&format!("Body is required when the event is {}", event.unwrap_or_default()));
    }
    if let Some(commit) = body["commit_id"].as_str()
        && git(&s.repo, &["cat-file", "-e", &format!("{commit}^{{commit}}")], &[], None).is_err()
    {
        return validation_simple("commit_id is not a commit of this pull request");
    }
    let id = s.log.lock().unwrap().next_id();
    let made = with_pull(&s, &number, |p| {
        if p.author == login && state != "PENDING" && state != "COMMENTED" {
            let what = if state == "APPROVED" { "approve" } else { "request changes on" };
            return Err(Refusal::Simple(format!("Can not {what} your own pull request")));
        }
        let head = sha_of(&s, &p.head).unwrap_or_else(|| p.head_sha.clone());
        let review = Review {
            id,
            login: login.clone(),
            state: state.into(),
            commit_id: body["commit_id"].as_str().map(str::to_string).unwrap_or(head),
            body: text.clone(),
            submitted_at: (state != "PENDING").then(now),
        };
        if state != "PENDING" {
            p.reviewers.retain(|r| *r != login);
        }
        p.reviews.push(review.clone());
        Ok((p.clone(), review))
    });
    match made {
        Some(Ok((p, review))) => {
            if review.state != "PENDING" {
                let payload = review_event(&s, "submitted", &p, &review, &login);
                s.deliver("pull_request_review", payload).await;
            }
            Json(review_json(&s, &p, &review)).into_response()
        }
        Some(Err(refused)) => refused.into_response(),
        None => not_found(),
    }
}

/// The `pull_request_review` webhook: the review as webhooks show it (state in lower case).
fn review_event(s: &Shared, action: &str, p: &Pull, r: &Review, sender: &str) -> Value {
    let mut review = review_json(s, p, r);
    review["state"] = json!(r.state.to_ascii_lowercase());
    json!({"action": action, "review": review, "pull_request": pull_json(s, p),
           "repository": repo_json(s, &p.repo), "sender": user_json(s, sender)})
}

/// GitHub's 422 where the description says `validation_failed_simple`.
fn validation_simple(message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"message": "Unprocessable Entity", "errors": [message],
                    "documentation_url": "https://docs.github.com/rest/pulls/reviews"})),
    )
        .into_response()
}

async fn list_reviews(
    State(s): State<Shared>,
    UrlPath((_, _, number)): RepoAnd,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30).clamp(1, 100);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let login = caller(&headers);
    match with_pull(&s, &number, |p| p.clone()) {
        Some(p) => {
            // A pending review is seen by its author only.
            let list: Vec<Value> = p
                .reviews
                .iter()
                .filter(|r| r.state != "PENDING" || r.login == login)
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|r| review_json(&s, &p, r))
                .collect();
            Json(list).into_response()
        }
        None => not_found(),
    }
}

async fn dismiss_review(
    State(s): State<Shared>,
    UrlPath((_, _, number, review)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let Ok(review_id) = review.parse::<u64>() else { return not_found() };
    let message = match str_field(&body, "message") {
        Ok(m) => m.to_string(),
        Err(e) => return e.into_response(),
    };
    let done = with_pull(&s, &number, |p| {
        let Some(r) = p.reviews.iter_mut().find(|r| r.id == review_id) else { return Err(Refusal::NotFound) };
        match r.state.as_str() {
            "APPROVED" | "CHANGES_REQUESTED" => {
                r.state = "DISMISSED".into();
                r.body = format!("{}\n\nDismissed: {message}", r.body).trim().to_string();
                let r = r.clone();
                Ok((p.clone(), r))
            }
            "PENDING" => Err(Refusal::Simple("Can not dismiss a pending review".into())),
            _ => Err(Refusal::Simple("Can not dismiss a commented pull request review".into())),
        }
    });
    match done {
        Some(Ok((p, r))) => {
            s.deliver("pull_request_review", review_event(&s, "dismissed", &p, &r, &caller(&headers))).await;
            Json(review_json(&s, &p, &r)).into_response()
        }
        Some(Err(refused)) => refused.into_response(),
        None => not_found(),
    }
}

/// GraphQL: only `markPullRequestReadyForReview(input: {pullRequestId: $id})`.
async fn graphql(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let query = body["query"].as_str().unwrap_or_default();
    if !query.contains("markPullRequestReadyForReview") {
        return Json(json!({"errors": [{"message": "this test server answers markPullRequestReadyForReview only"}]}))
            .into_response();
    }
    let id = body["variables"]["id"].as_str().unwrap_or_default();
    let number = id.strip_prefix("PR_").unwrap_or_default().to_string();
    match with_pull(&s, &number, |p| p.draft = false) {
        Some(()) => Json(json!({"data": {"markPullRequestReadyForReview": {"pullRequest": {"isDraft": false}}}}))
            .into_response(),
        None => Json(json!({"data": null, "errors": [{"type": "NOT_FOUND",
            "message": format!("Could not resolve to a node with the global id of '{id}'")}]}))
        .into_response(),
    }
}
