//! The `CodeHost` seam: what the drafter asks of GitHub (or anything that hosts code
//! and pull requests the same way). Every write is made so that repeating it is safe:
//! creating what exists answers [`HostError::AlreadyExists`], and the caller looks the
//! existing thing up and adopts it only if it is the one it meant to make.

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A branch or pull request of that name already exists (GitHub's 422).
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Refused for good: permissions, validation; repeating will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// Unreachable, rate limited past our retries, or a 5xx: try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A file's new content on the draft's branch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileWrite {
    pub path: String,
    pub content: String,
}

/// A pull request as the drafter needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// GraphQL id, for `markPullRequestReadyForReview`.
    pub node_id: String,
    pub head_ref: String,
    pub head_sha: String,
    pub draft: bool,
    pub open: bool,
    /// Its body, where the drafter's hidden marker is.
    pub body: String,
}

/// A commit's author and committer, and when, so that making the same commit twice
/// gives the same commit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub email: String,
    /// RFC 3339.
    pub date: String,
}

#[async_trait]
pub trait CodeHost: Send + Sync {
    /// The commit `branch` points at, if the branch exists.
    async fn branch(&self, repo: &str, branch: &str) -> Result<Option<String>, HostError>;

    /// A file's text at `commit`, if the file exists there.
    async fn file(&self, repo: &str, path: &str, commit: &str) -> Result<Option<String>, HostError>;

    /// A commit whose parent is `parent` and whose tree is the parent's with `files`
    /// written (blobs, a tree, a commit); its id. No branch points at it yet.
    async fn commit(
        &self,
        repo: &str,
        parent: &str,
        files: &[FileWrite],
        message: &str,
        who: &Signature,
    ) -> Result<String, HostError>;

    /// Creates `branch` at `commit`; [`HostError::AlreadyExists`] if it exists.
    async fn create_branch(&self, repo: &str, branch: &str, commit: &str) -> Result<(), HostError>;

    async fn delete_branch(&self, repo: &str, branch: &str) -> Result<(), HostError>;

    /// Opens a draft pull request of `head` into `base`; [`HostError::AlreadyExists`]
    /// if one is open for `head`.
    async fn open_draft(
        &self,
        repo: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, HostError>;

    /// The open pull request of `head`, if any.
    async fn find_pull(&self, repo: &str, head: &str) -> Result<Option<PullRequest>, HostError>;

    /// Adds labels (adding one it has is no change).
    async fn add_labels(&self, repo: &str, number: u64, labels: &[String]) -> Result<(), HostError>;

    /// The bodies of the pull request's comments, oldest first.
    async fn comments(&self, repo: &str, number: u64) -> Result<Vec<String>, HostError>;

    async fn comment(&self, repo: &str, number: u64, body: &str) -> Result<(), HostError>;

    /// The pull request `number`, if it exists.
    async fn pull(&self, repo: &str, number: u64) -> Result<Option<PullRequest>, HostError>;

    /// Marks a draft ready for review (GitHub: GraphQL `markPullRequestReadyForReview`).
    async fn mark_ready(&self, repo: &str, pull: &PullRequest) -> Result<(), HostError>;

    /// Makes sure the repository has label `name` (created with `color`, six hex digits,
    /// when missing; an existing one is left as it is).
    async fn ensure_label(&self, repo: &str, name: &str, color: &str) -> Result<(), HostError>;

    /// Asks these people (logins) and teams (`org/team`) to review (asking again is no
    /// change).
    async fn request_reviewers(&self, repo: &str, number: u64, reviewers: &[String]) -> Result<(), HostError>;

    /// Closes the pull request without merging.
    async fn close(&self, repo: &str, number: u64) -> Result<(), HostError>;
}
