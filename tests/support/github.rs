//! A GitHub test server for the drafter: the REST endpoints it uses (git refs, blobs,
//! trees, commits, contents, pulls, labels, issue comments) on top of a real git
//! repository, driven with the `git` CLI, so the branch a draft makes can be checked
//! with git. Pull requests, labels and comments live in memory.
//!
//! It answers in GitHub's shapes and with GitHub's errors (404 `Not Found`, 422
//! `Reference already exists`, 422 `A pull request already exists for ...`), counts
//! every write, and can "crash": make its k-th write and then answer 502, as if the
//! drafter had died before hearing back.
//!
//! GraphQL answers the one mutation the drafter sends, `markPullRequestReadyForReview`.
//!
//! Not yet: checking bodies against GitHub's REST description (`@octokit/openapi`),
//! and reviews.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    pub open: bool,
    pub labels: Vec<String>,
    pub comments: Vec<String>,
    pub reviewers: Vec<String>,
}

#[derive(Default)]
pub struct Log {
    /// `METHOD path` of every request, in order.
    pub requests: Vec<String>,
    pub writes: usize,
    pub crash_after: Option<usize>,
    pub pulls: Vec<Pull>,
}

pub struct GithubServer {
    /// What `api_url` is set to.
    pub url: String,
    pub repo_dir: PathBuf,
    pub log: Arc<Mutex<Log>>,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Shared {
    repo: PathBuf,
    owner: String,
    base_url: String,
    log: Arc<Mutex<Log>>,
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
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo.git");
        git(dir.path(), &["init", "--bare", "-q", "-b", "main", repo.to_str().unwrap()], &[], None).unwrap();
        let mut entries = Vec::new();
        for (path, content) in files {
            let blob = git(&repo, &["hash-object", "-w", "--stdin"], &[], Some(content.as_bytes())).unwrap();
            entries.push((path.to_string(), blob));
        }
        let index = dir.path().join("index");
        let env = [("GIT_INDEX_FILE", index.to_str().unwrap())];
        for (path, blob) in &entries {
            git(&repo, &["update-index", "--add", "--cacheinfo", &format!("100644,{blob},{path}")], &env, None)
                .unwrap();
        }
        let tree = git(&repo, &["write-tree"], &env, None).unwrap();
        let people = people("Repo Owner", "owner@example.com", "2026-01-01T00:00:00Z");
        let people: Vec<(&str, &str)> = people.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let commit = git(&repo, &["commit-tree", &tree, "-m", "initial"], &people, None).unwrap();
        git(&repo, &["update-ref", "refs/heads/main", &commit], &[], None).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Shared { repo: repo.clone(), owner: owner.into(), base_url: url.clone(), log: log.clone() };
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
            .route("/graphql", post(graphql))
            .route(&format!("{r}/issues/{{number}}/labels"), post(add_labels))
            .route(&format!("{r}/issues/{{number}}/comments"), post(create_comment).get(list_comments))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared);
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        GithubServer { url, repo_dir: repo, log, _dir: dir, stop }
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
}

impl Drop for GithubServer {
    fn drop(&mut self) {
        self.stop.cancel();
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

fn str_field<'a>(body: &'a Value, key: &str) -> Result<&'a str, Invalid> {
    body[key].as_str().ok_or_else(|| Invalid(format!("Invalid request.\n\n\"{key}\" wasn't supplied.")))
}

type Repo = UrlPath<(String, String)>;

async fn get_ref(State(s): State<Shared>, UrlPath((_, _, reference)): UrlPath<(String, String, String)>) -> Response {
    match git(&s.repo, &["rev-parse", "--verify", "-q", &format!("refs/{reference}")], &[], None) {
        Ok(sha) if !sha.is_empty() => Json(json!({
            "ref": format!("refs/{reference}"), "node_id": format!("REF_{sha}"),
            "url": format!("{}/git/refs/{reference}", s.base_url),
            "object": {"type": "commit", "sha": sha, "url": format!("{}/git/commits/{sha}", s.base_url)},
        }))
        .into_response(),
        _ => not_found(),
    }
}

async fn create_ref(State(s): State<Shared>, _: Repo, Json(body): Json<Value>) -> Response {
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
    (
        StatusCode::CREATED,
        Json(json!({"ref": reference, "node_id": format!("REF_{sha}"), "object": {"type": "commit", "sha": sha}})),
    )
        .into_response()
}

async fn delete_ref(
    State(s): State<Shared>,
    UrlPath((_, _, reference)): UrlPath<(String, String, String)>,
) -> Response {
    let full = format!("refs/{reference}");
    if git(&s.repo, &["rev-parse", "--verify", "-q", &full], &[], None).map_or(true, |h| h.is_empty()) {
        return invalid("Reference does not exist");
    }
    git(&s.repo, &["update-ref", "-d", &full], &[], None).unwrap();
    StatusCode::NO_CONTENT.into_response()
}

async fn create_blob(State(s): State<Shared>, _: Repo, Json(body): Json<Value>) -> Response {
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
    (StatusCode::CREATED, Json(json!({"sha": sha, "url": format!("{}/git/blobs/{sha}", s.base_url)}))).into_response()
}

async fn create_tree(State(s): State<Shared>, _: Repo, Json(body): Json<Value>) -> Response {
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
            let (Some(path), Some(mode), Some(sha)) = (e["path"].as_str(), e["mode"].as_str(), e["sha"].as_str())
            else {
                return Err(Invalid("tree entries need path, mode and sha".into()));
            };
            if e["type"] != "blob" || !matches!(mode, "100644" | "100755") {
                return Err(Invalid("only file blobs are supported here".into()));
            }
            git(&s.repo, &["update-index", "--add", "--cacheinfo", &format!("{mode},{sha},{path}")], &env, None)
                .map_err(|_| Invalid("tree.sha is not a valid blob".into()))?;
        }
        git(&s.repo, &["write-tree"], &env, None).map_err(Invalid)
    })();
    let _ = std::fs::remove_file(&index);
    match answer {
        Ok(sha) => (StatusCode::CREATED, Json(json!({"sha": sha, "url": format!("{}/git/trees/{sha}", s.base_url), "tree": entries, "truncated": false})))
            .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn create_commit(State(s): State<Shared>, _: Repo, Json(body): Json<Value>) -> Response {
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
    let who = |k: &str| {
        let p = &body[k];
        people(
            p["name"].as_str().unwrap_or("Someone"),
            p["email"].as_str().unwrap_or("someone@example.com"),
            p["date"].as_str().unwrap_or("2026-01-01T00:00:00Z"),
        )
    };
    // The author as given; the committer as given, else the author (as GitHub does).
    let committer = if body["committer"].is_object() { "committer" } else { "author" };
    let mut env: Vec<(&str, String)> = who("author").into_iter().filter(|(k, _)| k.starts_with("GIT_AUTHOR")).collect();
    env.extend(who(committer).into_iter().filter(|(k, _)| k.starts_with("GIT_COMMITTER")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match git(&s.repo, &args, &env, Some(message.as_bytes())) {
        Ok(sha) => (
            StatusCode::CREATED,
            Json(json!({"sha": sha, "node_id": format!("C_{sha}"), "message": message,
            "tree": {"sha": tree}, "url": format!("{}/git/commits/{sha}", s.base_url)})),
        )
            .into_response(),
        Err(_) => invalid("Tree SHA does not exist or a parent is not a commit"),
    }
}

async fn get_commit(State(s): State<Shared>, UrlPath((_, _, sha)): UrlPath<(String, String, String)>) -> Response {
    let Ok(text) = git(&s.repo, &["cat-file", "commit", &sha], &[], None) else { return not_found() };
    let tree = text.lines().find_map(|l| l.strip_prefix("tree ")).unwrap_or_default().to_string();
    let parents: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("parent ")).map(|p| json!({"sha": p})).collect();
    Json(json!({"sha": sha, "tree": {"sha": tree, "url": format!("{}/git/trees/{tree}", s.base_url)}, "parents": parents}))
        .into_response()
}

async fn get_contents(
    State(s): State<Shared>,
    UrlPath((_, _, path)): UrlPath<(String, String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let at = q.get("ref").cloned().unwrap_or_else(|| "main".into());
    let spec = format!("{at}:{path}");
    let Ok(kind) = git(&s.repo, &["cat-file", "-t", &spec], &[], None) else { return not_found() };
    if kind != "blob" {
        return Json(json!([])).into_response();
    }
    let sha = git(&s.repo, &["rev-parse", &spec], &[], None).unwrap();
    let bytes = Command::new("git").arg("-C").arg(&s.repo).args(["cat-file", "blob", &sha]).output().unwrap().stdout;
    // GitHub wraps the base64 at 60 characters.
    let encoded = STANDARD.encode(&bytes);
    let wrapped: Vec<&str> =
        encoded.as_bytes().chunks(60).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    let name = path.rsplit('/').next().unwrap_or_default();
    Json(json!({"type": "file", "encoding": "base64", "size": bytes.len(), "name": name, "path": path,
                "content": wrapped.join("\n") + "\n", "sha": sha}))
    .into_response()
}

fn pull_json(s: &Shared, repo: &str, p: &Pull) -> Value {
    let head_sha = git(&s.repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{}", p.head)], &[], None)
        .unwrap_or_default();
    let base_sha = git(&s.repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{}", p.base)], &[], None)
        .unwrap_or_default();
    json!({
        "number": p.number, "node_id": format!("PR_{}", p.number), "state": if p.open { "open" } else { "closed" },
        "draft": p.draft, "title": p.title, "body": p.body,
        "html_url": format!("https://github.example/{}/{repo}/pull/{}", s.owner, p.number),
        "head": {"ref": p.head, "sha": head_sha, "label": format!("{}:{}", s.owner, p.head)},
        "base": {"ref": p.base, "sha": base_sha, "label": format!("{}:{}", s.owner, p.base)},
        "labels": p.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
    })
}

async fn create_pull(State(s): State<Shared>, UrlPath((_, repo)): Repo, Json(body): Json<Value>) -> Response {
    let fields = (str_field(&body, "title"), str_field(&body, "head"), str_field(&body, "base"));
    let (title, head, base) = match fields {
        (Ok(t), Ok(h), Ok(b)) => (t.to_string(), h.to_string(), b.to_string()),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e.into_response(),
    };
    for branch in [&head, &base] {
        if git(&s.repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")], &[], None)
            .map_or(true, |h| h.is_empty())
        {
            return invalid(&format!("Validation Failed: no branch `{branch}`"));
        }
    }
    let mut log = s.log.lock().unwrap();
    if log.pulls.iter().any(|p| p.open && p.head == head) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
                "message": format!("A pull request already exists for {}:{head}.", s.owner)}]})),
        )
            .into_response();
    }
    let pull = Pull {
        number: log.pulls.len() as u64 + 1,
        head,
        base,
        title,
        body: body["body"].as_str().unwrap_or_default().into(),
        draft: body["draft"].as_bool().unwrap_or(false),
        open: true,
        labels: vec![],
        comments: vec![],
        reviewers: vec![],
    };
    log.pulls.push(pull.clone());
    drop(log);
    (StatusCode::CREATED, Json(pull_json(&s, &repo, &pull))).into_response()
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
        .filter(|p| (!open_only || p.open) && head.as_ref().is_none_or(|h| *h == p.head))
        .map(|p| pull_json(&s, &repo, p))
        .collect();
    Json(list).into_response()
}

fn with_pull<T>(s: &Shared, number: &str, f: impl FnOnce(&mut Pull) -> T) -> Option<T> {
    let n: u64 = number.parse().ok()?;
    s.log.lock().unwrap().pulls.iter_mut().find(|p| p.number == n).map(f)
}

async fn add_labels(
    State(s): State<Shared>,
    UrlPath((_, _, number)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let Some(labels) = body["labels"].as_array() else {
        return invalid("Invalid request.\n\n\"labels\" wasn't supplied.");
    };
    let names: Vec<String> = labels.iter().filter_map(|l| l.as_str().map(str::to_string)).collect();
    match with_pull(&s, &number, |p| {
        for n in names {
            if !p.labels.contains(&n) {
                p.labels.push(n);
            }
        }
        p.labels.clone()
    }) {
        Some(all) => Json(all.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()).into_response(),
        None => not_found(),
    }
}

async fn create_comment(
    State(s): State<Shared>,
    UrlPath((_, _, number)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let text = match str_field(&body, "body") {
        Ok(b) => b.to_string(),
        Err(e) => return e.into_response(),
    };
    match with_pull(&s, &number, |p| {
        p.comments.push(text.clone());
        p.comments.len()
    }) {
        Some(id) => (StatusCode::CREATED, Json(json!({"id": id, "body": text}))).into_response(),
        None => not_found(),
    }
}

async fn list_comments(
    State(s): State<Shared>,
    UrlPath((_, _, number)): UrlPath<(String, String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30).clamp(1, 100);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    match with_pull(&s, &number, |p| p.comments.clone()) {
        Some(all) => {
            let list: Vec<Value> = all
                .iter()
                .enumerate()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(i, b)| json!({"id": i + 1, "body": b}))
                .collect();
            Json(list).into_response()
        }
        None => not_found(),
    }
}

async fn get_pull(State(s): State<Shared>, UrlPath((_, repo, number)): UrlPath<(String, String, String)>) -> Response {
    match with_pull(&s, &number, |p| p.clone()) {
        Some(p) => Json(pull_json(&s, &repo, &p)).into_response(),
        None => not_found(),
    }
}

async fn update_pull(
    State(s): State<Shared>,
    UrlPath((_, repo, number)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let state = body["state"].as_str().map(str::to_string);
    if state.as_deref().is_some_and(|st| !matches!(st, "open" | "closed")) {
        return invalid("state must be open or closed");
    }
    match with_pull(&s, &number, |p| {
        if let Some(st) = &state {
            p.open = st == "open";
        }
        p.clone()
    }) {
        Some(p) => Json(pull_json(&s, &repo, &p)).into_response(),
        None => not_found(),
    }
}

async fn request_reviewers(
    State(s): State<Shared>,
    UrlPath((_, repo, number)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let Some(wanted) = body["reviewers"].as_array() else {
        return invalid("Invalid request.\n\n\"reviewers\" wasn't supplied.");
    };
    let wanted: Vec<String> = wanted.iter().filter_map(|r| r.as_str().map(str::to_string)).collect();
    match with_pull(&s, &number, |p| {
        for r in wanted {
            if !p.reviewers.contains(&r) {
                p.reviewers.push(r);
            }
        }
        p.clone()
    }) {
        Some(p) => (StatusCode::CREATED, Json(pull_json(&s, &repo, &p))).into_response(),
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
