//! An in-memory `CodeHost` that can "crash": after its k-th write it makes the change
//! and then fails, as a drafter killed between GitHub's answer and storing its step
//! would see it. It keeps everything it was asked to make, so a test can count
//! branches, pull requests and comments afterwards.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use inquest::github::codehost::{CodeHost, FileWrite, HostError, PullRequest, Signature};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Commit {
    pub parent: Option<String>,
    pub files: BTreeMap<String, String>,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Pull {
    pub pr: PullRequest,
    pub base: String,
    pub title: String,
    pub labels: Vec<String>,
    pub comments: Vec<String>,
    pub reviewers: Vec<String>,
}

#[derive(Default)]
pub struct State {
    pub commits: BTreeMap<String, Commit>,
    pub branches: BTreeMap<String, String>,
    pub pulls: Vec<Pull>,
    /// The repository's labels.
    pub repo_labels: Vec<String>,
    /// Writes so far, and the one after which to fail.
    pub writes: usize,
    pub crash_after: Option<usize>,
}

#[derive(Default)]
pub struct FakeHost {
    pub state: Mutex<State>,
}

impl FakeHost {
    /// A repository whose `main` holds `files`.
    pub fn with_main(files: &[(&str, &str)]) -> FakeHost {
        let host = FakeHost::default();
        {
            let mut s = host.state.lock().unwrap();
            let files: BTreeMap<String, String> = files.iter().map(|(p, c)| (p.to_string(), c.to_string())).collect();
            let sha = commit_id(None, &files, "initial", "2026-01-01T00:00:00Z");
            s.commits.insert(sha.clone(), Commit { parent: None, files, message: "initial".into() });
            s.branches.insert("main".into(), sha);
        }
        host
    }

    pub fn crash_after(&self, writes: Option<usize>) {
        let mut s = self.state.lock().unwrap();
        s.writes = 0;
        s.crash_after = writes;
    }

    /// Counts a write that was made; fails if it is the one to crash after.
    fn wrote(s: &mut State) -> Result<(), HostError> {
        s.writes += 1;
        if s.crash_after == Some(s.writes) {
            s.crash_after = None;
            return Err(HostError::Unavailable("the drafter was killed here".into()));
        }
        Ok(())
    }
}

fn commit_id(parent: Option<&str>, files: &BTreeMap<String, String>, message: &str, date: &str) -> String {
    let mut h = Sha256::new();
    h.update(parent.unwrap_or("-"));
    for (p, c) in files {
        h.update(format!("{}:{p}{}:{c}", p.len(), c.len()));
    }
    h.update(message);
    h.update(date);
    hex::encode(&h.finalize()[..20])
}

#[async_trait]
impl CodeHost for FakeHost {
    async fn branch(&self, _repo: &str, branch: &str) -> Result<Option<String>, HostError> {
        Ok(self.state.lock().unwrap().branches.get(branch).cloned())
    }

    async fn file(&self, _repo: &str, path: &str, commit: &str) -> Result<Option<String>, HostError> {
        let s = self.state.lock().unwrap();
        let c = s.commits.get(commit).ok_or_else(|| HostError::NotFound(format!("commit {commit}")))?;
        Ok(c.files.get(path).cloned())
    }

    async fn commit(
        &self,
        _repo: &str,
        parent: &str,
        files: &[FileWrite],
        message: &str,
        who: &Signature,
    ) -> Result<String, HostError> {
        let mut s = self.state.lock().unwrap();
        let mut tree =
            s.commits.get(parent).ok_or_else(|| HostError::NotFound(format!("commit {parent}")))?.files.clone();
        for f in files {
            tree.insert(f.path.clone(), f.content.clone());
        }
        let sha = commit_id(Some(parent), &tree, message, &who.date);
        s.commits.insert(sha.clone(), Commit { parent: Some(parent.into()), files: tree, message: message.into() });
        FakeHost::wrote(&mut s)?;
        Ok(sha)
    }

    async fn create_branch(&self, _repo: &str, branch: &str, commit: &str) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        if s.branches.contains_key(branch) {
            return Err(HostError::AlreadyExists(format!("reference refs/heads/{branch}")));
        }
        s.branches.insert(branch.into(), commit.into());
        FakeHost::wrote(&mut s)
    }

    async fn delete_branch(&self, _repo: &str, branch: &str) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        s.branches.remove(branch);
        FakeHost::wrote(&mut s)
    }

    async fn open_draft(
        &self,
        _repo: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, HostError> {
        let mut s = self.state.lock().unwrap();
        if s.pulls.iter().any(|p| p.pr.head_ref == head && p.pr.open) {
            return Err(HostError::AlreadyExists(format!("a pull request for {head}")));
        }
        let head_sha = s.branches.get(head).cloned().ok_or_else(|| HostError::Refused(format!("no branch {head}")))?;
        let number = s.pulls.len() as u64 + 1;
        let pr = PullRequest {
            number,
            node_id: format!("PR_{number}"),
            head_ref: head.into(),
            head_sha,
            draft: true,
            open: true,
            body: body.into(),
        };
        s.pulls.push(Pull {
            pr: pr.clone(),
            base: base.into(),
            title: title.into(),
            labels: vec![],
            comments: vec![],
            reviewers: vec![],
        });
        FakeHost::wrote(&mut s)?;
        Ok(pr)
    }

    async fn find_pull(&self, _repo: &str, head: &str) -> Result<Option<PullRequest>, HostError> {
        let s = self.state.lock().unwrap();
        Ok(s.pulls.iter().find(|p| p.pr.head_ref == head && p.pr.open).map(|p| p.pr.clone()))
    }

    // Not a write the crash tests count: making a label is idempotent by itself.
    async fn ensure_label(&self, _repo: &str, name: &str, _color: &str) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        if !s.repo_labels.iter().any(|l| l == name) {
            s.repo_labels.push(name.to_string());
        }
        Ok(())
    }

    async fn add_labels(&self, _repo: &str, number: u64, labels: &[String]) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        let pull =
            s.pulls.iter_mut().find(|p| p.pr.number == number).ok_or_else(|| HostError::NotFound("pull".into()))?;
        for l in labels {
            if !pull.labels.contains(l) {
                pull.labels.push(l.clone());
            }
        }
        FakeHost::wrote(&mut s)
    }

    async fn comments(&self, _repo: &str, number: u64) -> Result<Vec<String>, HostError> {
        let s = self.state.lock().unwrap();
        Ok(s.pulls.iter().find(|p| p.pr.number == number).map(|p| p.comments.clone()).unwrap_or_default())
    }

    async fn comment(&self, _repo: &str, number: u64, body: &str) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        let pull =
            s.pulls.iter_mut().find(|p| p.pr.number == number).ok_or_else(|| HostError::NotFound("pull".into()))?;
        pull.comments.push(body.into());
        FakeHost::wrote(&mut s)
    }

    async fn pull(&self, _repo: &str, number: u64) -> Result<Option<PullRequest>, HostError> {
        Ok(self.state.lock().unwrap().pulls.iter().find(|p| p.pr.number == number).map(|p| p.pr.clone()))
    }

    async fn mark_ready(&self, _repo: &str, pull: &PullRequest) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        let p = s
            .pulls
            .iter_mut()
            .find(|p| p.pr.node_id == pull.node_id)
            .ok_or_else(|| HostError::NotFound("pull".into()))?;
        p.pr.draft = false;
        FakeHost::wrote(&mut s)
    }

    async fn request_reviewers(&self, _repo: &str, number: u64, reviewers: &[String]) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        let p = s.pulls.iter_mut().find(|p| p.pr.number == number).ok_or_else(|| HostError::NotFound("pull".into()))?;
        for r in reviewers {
            if !p.reviewers.contains(r) {
                p.reviewers.push(r.clone());
            }
        }
        FakeHost::wrote(&mut s)
    }

    async fn close(&self, _repo: &str, number: u64) -> Result<(), HostError> {
        let mut s = self.state.lock().unwrap();
        let p = s.pulls.iter_mut().find(|p| p.pr.number == number).ok_or_else(|| HostError::NotFound("pull".into()))?;
        p.pr.open = false;
        FakeHost::wrote(&mut s)
    }
}
