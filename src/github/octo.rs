//! The GitHub [`CodeHost`], with octocrab.
//!
//! - Credentials: a GitHub App's installation token, narrowed to the one repository and
//!   to contents, pull requests and issues, renewed before it expires; or a personal
//!   token, for development only.
//! - octocrab is built without its retry layer (a retried POST can duplicate a write).
//!   Here a request refused for a rate limit waits as `retry-after` or
//!   `x-ratelimit-reset` says and goes again; nothing else is retried (the drafter
//!   repeats whole steps, which are safe to repeat).
//! - Writes go one at a time per installation, as GitHub's secondary limits ask.
//! - `api_url` points at GitHub Enterprise (`https://ghe.example.com/api/v3`) or a
//!   test server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::codehost::{CodeHost, FileWrite, HostError, PullRequest, Signature};
use crate::percent;

/// How Inquest signs in to GitHub.
#[derive(Clone)]
pub enum GithubAuth {
    /// A personal access token: development only.
    Token(SecretString),
    /// A GitHub App: its id, its private key (PEM) and the installation on the repository.
    App { app_id: u64, private_key: SecretString, installation_id: u64 },
}

/// Longest wait for a rate limit before the call fails (and its step is tried later).
const MAX_RATE_WAIT: Duration = Duration::from_secs(60);
/// Rate-limited attempts per request.
const RATE_ATTEMPTS: usize = 3;
/// An installation token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

pub struct OctoHost {
    api_url: String,
    auth: GithubAuth,
    /// `owner/name`: the only repository the tokens are good for.
    repo: String,
    client: Mutex<Option<(Octocrab, Option<Instant>)>>,
    writes: Mutex<()>,
}

impl OctoHost {
    pub fn new(api_url: &str, auth: GithubAuth, repo: &str) -> OctoHost {
        OctoHost {
            api_url: api_url.trim_end_matches('/').to_string(),
            auth,
            repo: repo.to_string(),
            client: Mutex::new(None),
            writes: Mutex::new(()),
        }
    }

    /// A client with a valid token, made or renewed as needed.
    async fn client(&self) -> Result<Octocrab, HostError> {
        let mut slot = self.client.lock().await;
        if let Some((client, until)) = slot.as_ref()
            && until.is_none_or(|u| Instant::now() < u)
        {
            return Ok(client.clone());
        }
        let (token, until) = match &self.auth {
            GithubAuth::Token(t) => (t.clone(), None),
            GithubAuth::App { app_id, private_key, installation_id } => {
                let (token, lifetime) = self.installation_token(*app_id, private_key, *installation_id).await?;
                (token, Some(Instant::now() + lifetime.saturating_sub(RENEW_BEFORE)))
            }
        };
        let client = Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .map_err(|e| HostError::Refused(format!("GitHub API URL `{}`: {e}", self.api_url)))?
            .personal_token(token.expose_secret().to_string())
            .build()
            .map_err(|e| HostError::Refused(format!("building the GitHub client: {e}")))?;
        *slot = Some((client.clone(), until));
        Ok(client)
    }

    /// An installation token for only this repository, with only the permissions
    /// drafting needs, and how long it lives.
    async fn installation_token(
        &self,
        app_id: u64,
        private_key: &SecretString,
        installation_id: u64,
    ) -> Result<(SecretString, Duration), HostError> {
        let key = octocrab::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes())
            .map_err(|e| HostError::Refused(format!("the GitHub App's private key: {e}")))?;
        let app = Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .map_err(|e| HostError::Refused(format!("GitHub API URL `{}`: {e}", self.api_url)))?
            .app(app_id.into(), key)
            .build()
            .map_err(|e| HostError::Refused(format!("building the GitHub App client: {e}")))?;
        let name = self.repo.split_once('/').map(|(_, n)| n).unwrap_or(&self.repo);
        let body = json!({
            "repositories": [name],
            "permissions": {"contents": "write", "pull_requests": "write", "issues": "write"},
        });
        let answer: Value = app
            .post(format!("/app/installations/{installation_id}/access_tokens"), Some(&body))
            .await
            .map_err(host_error)?;
        let token =
            answer["token"].as_str().ok_or_else(|| HostError::Unavailable("no token in GitHub's answer".into()))?;
        let lifetime = answer["expires_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok())
            .unwrap_or(Duration::from_secs(3600));
        debug!(repo = %self.repo, installation_id, "installation token made");
        Ok((SecretString::from(token.to_string()), lifetime))
    }

    /// `/repos/<owner>/<name>/<tail>`.
    fn route(&self, tail: &str) -> String {
        format!("/repos/{}/{tail}", self.repo)
    }

    async fn get<R: DeserializeOwned>(&self, route: &str) -> Result<R, HostError> {
        let client = self.client().await?;
        rate_limited(|| client.get::<R, _, ()>(route, None)).await
    }

    async fn post<R: DeserializeOwned>(&self, route: &str, body: &Value) -> Result<R, HostError> {
        let client = self.client().await?;
        let _turn = self.writes.lock().await;
        rate_limited(|| client.post::<_, R>(route, Some(body))).await
    }
}

#[async_trait]
impl CodeHost for OctoHost {
    async fn branch(&self, _repo: &str, branch: &str) -> Result<Option<String>, HostError> {
        match self
            .get::<Value>(&self.route(&format!("git/ref/heads/{}", percent::encode_keeping_slashes(branch))))
            .await
        {
            Ok(r) => Ok(r["object"]["sha"].as_str().map(str::to_string)),
            Err(HostError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn file(&self, _repo: &str, path: &str, commit: &str) -> Result<Option<String>, HostError> {
        let route =
            self.route(&format!("contents/{}?ref={}", percent::encode_keeping_slashes(path), percent::encode(commit)));
        match self.get::<Value>(&route).await {
            Ok(r) if r["type"] == "file" => {
                let encoded: String = r["content"].as_str().unwrap_or_default().split_whitespace().collect();
                let bytes = STANDARD
                    .decode(encoded)
                    .map_err(|e| HostError::Unavailable(format!("`{path}`: content is not base64: {e}")))?;
                String::from_utf8(bytes).map(Some).map_err(|_| HostError::Refused(format!("`{path}` is not text")))
            }
            Ok(_) => Err(HostError::Refused(format!("`{path}` is not a file"))),
            Err(HostError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn commit(
        &self,
        _repo: &str,
        parent: &str,
        files: &[FileWrite],
        message: &str,
        who: &Signature,
    ) -> Result<String, HostError> {
        let parent_commit: Value = self.get(&self.route(&format!("git/commits/{parent}"))).await?;
        let base_tree = sha(&parent_commit["tree"]["sha"], "the parent's tree")?;
        let mut entries = Vec::new();
        for f in files {
            let blob: Value = self
                .post(&self.route("git/blobs"), &json!({"content": STANDARD.encode(&f.content), "encoding": "base64"}))
                .await?;
            entries
                .push(json!({"path": f.path, "mode": "100644", "type": "blob", "sha": sha(&blob["sha"], "a blob")?}));
        }
        let tree: Value =
            self.post(&self.route("git/trees"), &json!({"base_tree": base_tree, "tree": entries})).await?;
        let person = json!({"name": who.name, "email": who.email, "date": who.date});
        let commit: Value = self
            .post(
                &self.route("git/commits"),
                &json!({"message": message, "tree": sha(&tree["sha"], "the tree")?, "parents": [parent],
                        "author": person, "committer": person}),
            )
            .await?;
        sha(&commit["sha"], "the commit")
    }

    async fn create_branch(&self, _repo: &str, branch: &str, commit: &str) -> Result<(), HostError> {
        self.post::<Value>(&self.route("git/refs"), &json!({"ref": format!("refs/heads/{branch}"), "sha": commit}))
            .await
            .map(|_| ())
    }

    async fn delete_branch(&self, _repo: &str, branch: &str) -> Result<(), HostError> {
        let client = self.client().await?;
        let _turn = self.writes.lock().await;
        let route = self.route(&format!("git/refs/heads/{}", percent::encode_keeping_slashes(branch)));
        let uri = format!("{}{route}", self.api_url);
        let answer = rate_limited(|| async {
            let response = client._delete(uri.as_str(), None::<&()>).await?;
            octocrab::map_github_error(response).await.map(|_| ())
        })
        .await;
        match answer {
            // Gone already: what deleting wanted.
            Ok(()) | Err(HostError::NotFound(_)) => Ok(()),
            Err(HostError::Refused(why)) if why.contains("Reference does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn open_draft(
        &self,
        _repo: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, HostError> {
        let pull: Value = self
            .post(
                &self.route("pulls"),
                &json!({"title": title, "head": head, "base": base, "body": body, "draft": true}),
            )
            .await?;
        pull_request(&pull)
    }

    async fn find_pull(&self, _repo: &str, head: &str) -> Result<Option<PullRequest>, HostError> {
        let owner = self.repo.split_once('/').map(|(o, _)| o).unwrap_or_default();
        let route = self.route(&format!("pulls?state=open&head={}", percent::encode(&format!("{owner}:{head}"))));
        let pulls: Vec<Value> = self.get(&route).await?;
        pulls.first().map(pull_request).transpose()
    }

    async fn ensure_label(&self, _repo: &str, name: &str, color: &str) -> Result<(), HostError> {
        match self.post::<Value>(&self.route("labels"), &json!({"name": name, "color": color})).await {
            Ok(_) | Err(HostError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn add_labels(&self, _repo: &str, number: u64, labels: &[String]) -> Result<(), HostError> {
        self.post::<Value>(&self.route(&format!("issues/{number}/labels")), &json!({"labels": labels}))
            .await
            .map(|_| ())
    }

    async fn comments(&self, _repo: &str, number: u64) -> Result<Vec<String>, HostError> {
        let mut bodies = Vec::new();
        for page in 1.. {
            let route = self.route(&format!("issues/{number}/comments?per_page=100&page={page}"));
            let comments: Vec<Value> = self.get(&route).await?;
            let n = comments.len();
            bodies.extend(comments.iter().filter_map(|c| c["body"].as_str().map(str::to_string)));
            if n < 100 {
                break;
            }
        }
        Ok(bodies)
    }

    async fn comment(&self, _repo: &str, number: u64, body: &str) -> Result<(), HostError> {
        self.post::<Value>(&self.route(&format!("issues/{number}/comments")), &json!({"body": body})).await.map(|_| ())
    }

    async fn pull(&self, _repo: &str, number: u64) -> Result<Option<PullRequest>, HostError> {
        match self.get::<Value>(&self.route(&format!("pulls/{number}"))).await {
            Ok(v) => pull_request(&v).map(Some),
            Err(HostError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn mark_ready(&self, _repo: &str, pull: &PullRequest) -> Result<(), HostError> {
        // No REST call does this; GraphQL lives beside the REST API (`/api/graphql` on
        // GitHub Enterprise, `/graphql` on github.com).
        let query = "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) \
                     { pullRequest { isDraft } } }";
        let body = json!({"query": query, "variables": {"id": pull.node_id}});
        let client = self.client().await?;
        let _turn = self.writes.lock().await;
        let url = self.graphql_url();
        let answer: Value = rate_limited(|| async {
            let response = client._post(url.as_str(), Some(&body)).await?;
            let response = octocrab::map_github_error(response).await?;
            let bytes = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
            Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        })
        .await?;
        match answer["errors"].as_array() {
            Some(errors) if !errors.is_empty() => {
                let text: Vec<&str> = errors.iter().filter_map(|e| e["message"].as_str()).collect();
                Err(HostError::Refused(format!("markPullRequestReadyForReview: {}", text.join("; "))))
            }
            _ => Ok(()),
        }
    }

    async fn request_reviewers(&self, _repo: &str, number: u64, reviewers: &[String]) -> Result<(), HostError> {
        let route = self.route(&format!("pulls/{number}/requested_reviewers"));
        // `org/team` (as CODEOWNERS names teams) is a team of the repository's owner.
        let (teams, people): (Vec<&String>, Vec<&String>) = reviewers.iter().partition(|r| r.contains('/'));
        let teams: Vec<&str> = teams.iter().filter_map(|t| t.split_once('/').map(|(_, slug)| slug)).collect();
        let body = json!({"reviewers": people, "team_reviewers": teams});
        self.post::<Value>(&route, &body).await.map(|_| ())
    }

    async fn close(&self, _repo: &str, number: u64) -> Result<(), HostError> {
        let client = self.client().await?;
        let _turn = self.writes.lock().await;
        let route = self.route(&format!("pulls/{number}"));
        let body = json!({"state": "closed"});
        rate_limited(|| client.patch::<Value, _, _>(route.as_str(), Some(&body))).await.map(|_| ())
    }
}

impl OctoHost {
    fn graphql_url(&self) -> String {
        match self.api_url.strip_suffix("/api/v3") {
            Some(host) => format!("{host}/api/graphql"),
            None => format!("{}/graphql", self.api_url),
        }
    }
}

fn sha(v: &Value, what: &str) -> Result<String, HostError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| HostError::Unavailable(format!("GitHub's answer has no sha for {what}")))
}

fn pull_request(v: &Value) -> Result<PullRequest, HostError> {
    let missing = |f: &str| HostError::Unavailable(format!("GitHub's pull request has no `{f}`"));
    Ok(PullRequest {
        number: v["number"].as_u64().ok_or_else(|| missing("number"))?,
        node_id: v["node_id"].as_str().ok_or_else(|| missing("node_id"))?.to_string(),
        head_ref: v["head"]["ref"].as_str().ok_or_else(|| missing("head.ref"))?.to_string(),
        head_sha: v["head"]["sha"].as_str().ok_or_else(|| missing("head.sha"))?.to_string(),
        draft: v["draft"].as_bool().unwrap_or(false),
        open: v["state"] == "open",
        body: v["body"].as_str().unwrap_or_default().to_string(),
    })
}

/// Runs `call`, waiting out rate limits (at most [`RATE_ATTEMPTS`] tries, each wait at
/// most [`MAX_RATE_WAIT`]); any other failure is returned at once.
async fn rate_limited<T, F, Fut>(call: F) -> Result<T, HostError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = octocrab::Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => match rate_wait(&e) {
                Some(wait) if attempt < RATE_ATTEMPTS && wait <= MAX_RATE_WAIT => {
                    warn!(?wait, attempt, "GitHub rate limit; waiting as it asks");
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(host_error(e)),
            },
        }
    }
}

/// How long GitHub asks to wait, if `e` is a rate-limit refusal.
fn rate_wait(e: &octocrab::Error) -> Option<Duration> {
    let octocrab::Error::GitHub { source, .. } = e else { return None };
    let status = source.status_code.as_u16();
    let headers: HashMap<String, String> = source
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string())))
        .collect();
    rate_limit_wait(status, &headers, chrono::Utc::now().timestamp())
}

/// The wait a rate-limit refusal asks for: `retry-after` seconds, else until
/// `x-ratelimit-reset` when none remain. `None` for anything else.
pub fn rate_limit_wait(status: u16, headers: &HashMap<String, String>, now_secs: i64) -> Option<Duration> {
    if !matches!(status, 403 | 429) {
        return None;
    }
    if let Some(secs) = headers.get("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if headers.get("x-ratelimit-remaining").map(String::as_str) == Some("0") {
        let reset = headers.get("x-ratelimit-reset")?.trim().parse::<i64>().ok()?;
        return Some(Duration::from_secs(u64::try_from(reset.saturating_sub(now_secs)).unwrap_or(0) + 1));
    }
    // A 403 without those is a permission refusal, not a limit.
    (status == 429).then_some(Duration::from_secs(60))
}

/// One entry of a 422's `errors`: its message, or what GitHub says in its structured form
/// (`{resource, field, code}`, e.g. `Label.color is invalid`).
fn validation_error(x: &Value) -> String {
    if let Some(m) = x["message"].as_str().or_else(|| x.as_str()) {
        return m.to_string();
    }
    let part = |k: &str| x[k].as_str().unwrap_or("?").to_string();
    format!("{}.{} is {}", part("resource"), part("field"), part("code").replace('_', " "))
}

/// octocrab's error as the drafter needs to see it.
fn host_error(e: octocrab::Error) -> HostError {
    match &e {
        octocrab::Error::GitHub { source, .. } => {
            let message = source.message.clone();
            let detail = source.errors.iter().flatten().map(validation_error).collect::<Vec<_>>().join("; ");
            let text = if detail.is_empty() { message } else { format!("{message}: {detail}") };
            let exists = source.errors.iter().flatten().any(|x| x["code"] == "already_exists");
            match source.status_code.as_u16() {
                404 => HostError::NotFound(text),
                422 if exists || text.contains("already exists") => HostError::AlreadyExists(text),
                s if s >= 500 || s == 429 => HostError::Unavailable(format!("GitHub answered {s}: {text}")),
                s => HostError::Refused(format!("GitHub answered {s}: {text}")),
            }
        }
        _ => HostError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn rate_limits_are_waited_out_as_github_asks() {
        let now = 1_000;
        assert_eq!(rate_limit_wait(403, &headers(&[("retry-after", "7")]), now), Some(Duration::from_secs(7)));
        assert_eq!(
            rate_limit_wait(403, &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1030")]), now),
            Some(Duration::from_secs(31))
        );
        assert_eq!(rate_limit_wait(429, &headers(&[]), now), Some(Duration::from_secs(60)));
        assert_eq!(
            rate_limit_wait(403, &headers(&[("x-ratelimit-remaining", "12")]), now),
            None,
            "a permission refusal"
        );
        assert_eq!(rate_limit_wait(422, &headers(&[("retry-after", "1")]), now), None);
    }
}
