//! Carries a draft from its plan to a draft pull request waiting at its gate, one step
//! at a time, storing the progress after every step before the next begins. A drafter
//! that dies anywhere is replaced by one that reads the progress and repeats the step
//! it had not recorded; each step is safe to repeat:
//! - the commit carries the plan's date, so making it again gives the same commit;
//! - a branch that exists is adopted only if it points at that commit (never moved:
//!   someone else's branch is left alone and the draft stops);
//! - a pull request that exists is adopted only if its body carries this change's marker;
//! - labels are idempotent, the gate is created only if absent, and a comment is posted
//!   only if no comment carries its marker.
//!
//! The base branch is only ever read.

use std::sync::Arc;

use serde_json::json;
use tracing::{info, warn};

use super::approval::{self, PullApprovals, WatchError};
use super::codehost::{CodeHost, HostError, PullRequest, Signature};
use super::codeowners::{self, CodeOwners};
use super::draft::{self, DraftPlan, DraftProgress, PullRef, Step};
use super::gate::{self, Effect, Gate, GateState};
use super::store::{GithubStore, GithubStoreError};
use crate::clock::Clock;
use crate::engine::EventBody;

#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Store(#[from] GithubStoreError),
    #[error("no draft `{0}`")]
    Unknown(String),
    /// Something of the draft's name exists that the drafter did not make; it is left
    /// as it is and the draft stops, for a person to look at.
    #[error("{0}; it is not Inquest's, so it is left alone")]
    Foreign(String),
    #[error(transparent)]
    Edit(#[from] draft::EditError),
    #[error(transparent)]
    Approval(#[from] WatchError),
}

/// The colour of the labels Inquest makes (GitHub's purple), so its drafts stand out.
const LABEL_COLOR: &str = "8250df";

pub struct Drafter {
    pub host: Arc<dyn CodeHost>,
    pub store: GithubStore,
    pub clock: Arc<dyn Clock>,
    /// Name and email on the drafted commits.
    pub author: (String, String),
    /// The registry's approval service; `None` leaves approvals to GitHub reviews.
    pub approvals: Option<Arc<dyn PullApprovals>>,
}

impl Drafter {
    /// Runs the draft `id` to its end (or to the first failure, which a later run
    /// resumes from); returns how it finished.
    pub async fn run(&self, id: &str) -> Result<String, DraftError> {
        loop {
            let (plan, progress, version) =
                self.store.draft(id).await?.ok_or_else(|| DraftError::Unknown(id.to_string()))?;
            let step = draft::next(&progress);
            if step == Step::Done {
                return Ok(progress.finished.unwrap_or_else(|| match &progress.pull {
                    Some(p) => format!("draft pull request #{} waits for an approval", p.number),
                    None => "done".into(),
                }));
            }
            let next = self.take(step, &plan, progress).await?;
            let now = self.clock.now().timestamp_millis();
            // Another drafter stored a step meanwhile: read again and go on from there.
            if self.store.save_progress(id, &next, version, now).await? {
                info!(draft = id, ?step, "draft step done");
            }
        }
    }

    async fn take(&self, step: Step, plan: &DraftPlan, mut p: DraftProgress) -> Result<DraftProgress, DraftError> {
        let repo = plan.repo.as_str();
        let branch = draft::branch_name(plan);
        match step {
            Step::ReadBase => {
                let base = self
                    .host
                    .branch(repo, &plan.base)
                    .await?
                    .ok_or_else(|| HostError::NotFound(format!("base branch `{}` of {repo}", plan.base)))?;
                let mut current = std::collections::HashMap::new();
                for edit in &plan.edits {
                    let path = edit.path().to_string();
                    if !current.contains_key(&path) {
                        current.insert(path.clone(), self.host.file(repo, &path, &base).await?);
                    }
                }
                let writes = draft::apply_edits(&plan.edits, &|path| current.get(path).cloned().flatten())?;
                p.code_owners = self.code_owners(repo, &base, plan, &writes).await?;
                if writes.is_empty() {
                    p.finished = Some(format!("`{}` already holds the change; nothing to propose", plan.base));
                }
                p.digest = Some(draft::digest(&base, &writes));
                p.base_sha = Some(base);
                p.writes = Some(writes);
            }
            Step::Commit => {
                let who = Signature {
                    name: self.author.0.clone(),
                    email: self.author.1.clone(),
                    date: plan.created_at.clone(),
                };
                let message =
                    format!("{}\n\nDrafted by Inquest for investigation {}.", plan.title, plan.investigation_id);
                let commit = self
                    .host
                    .commit(repo, need(&p.base_sha)?, p.writes.as_deref().unwrap_or_default(), &message, &who)
                    .await?;
                p.commit = Some(commit);
            }
            Step::Branch => {
                let commit = need(&p.commit)?;
                match self.host.create_branch(repo, &branch, commit).await {
                    Ok(()) => {}
                    Err(HostError::AlreadyExists(_)) => match self.host.branch(repo, &branch).await? {
                        Some(at) if at == *commit => {}
                        Some(at) => {
                            return Err(DraftError::Foreign(format!(
                                "branch `{branch}` exists at {at}, not at {commit}"
                            )));
                        }
                        // Deleted in between: the next run creates it.
                        None => return Ok(p),
                    },
                    Err(e) => return Err(e.into()),
                }
                p.branched = true;
            }
            Step::Open => {
                let digest = need(&p.digest)?;
                let body = draft::body(plan, digest);
                let pull = match self.host.open_draft(repo, &branch, &plan.base, &plan.title, &body).await {
                    Ok(pull) => pull,
                    Err(HostError::AlreadyExists(_)) => self.adopt(repo, &branch, digest).await?,
                    Err(e) => return Err(e.into()),
                };
                p.pull = Some(PullRef { number: pull.number, node_id: pull.node_id });
            }
            Step::Label => {
                let pull = need(&p.pull)?;
                for label in &plan.labels {
                    self.host.ensure_label(repo, label, LABEL_COLOR).await?;
                }
                if !plan.labels.is_empty() {
                    self.host.add_labels(repo, pull.number, &plan.labels).await?;
                }
                p.labeled = true;
            }
            Step::Gate => {
                let pull = need(&p.pull)?;
                let gate = Gate {
                    repo: plan.repo.clone(),
                    number: pull.number,
                    head_sha: need(&p.commit)?.clone(),
                    requester_login: plan.requester_login.clone(),
                    state: GateState::Pending,
                    approval: None,
                    diff_digest: need(&p.digest)?.clone(),
                    request: None,
                };
                let id = uuid::Uuid::now_v7().to_string();
                let now = self.clock.now().timestamp_millis();
                self.store.create_gate(&id, &plan.investigation_id, &gate, &p.code_owners, now).await?;
                p.gated = true;
            }
            Step::Ask => {
                let pull = need(&p.pull)?;
                if let Some(approvals) = &self.approvals {
                    let stored = self
                        .store
                        .gate_of(repo, pull.number)
                        .await?
                        .ok_or_else(|| DraftError::Unknown(format!("gate of {repo}#{}", pull.number)))?;
                    match approval::ask(&**approvals, &self.store, &*self.clock, &stored).await? {
                        Some((_, url)) => p.approval_url = Some(url),
                        // Asked already (by an earlier run, or the watch): find the page.
                        None => {
                            if let Some(id) = &stored.gate.request {
                                p.approval_url = Some(approvals.show(id).await.map_err(WatchError::from)?.url);
                            } else if stored.gate.state == GateState::Pending {
                                // The gate changed under us: look again.
                                return Ok(p);
                            }
                        }
                    }
                }
                p.asked = true;
            }
            Step::Announce => {
                let pull = need(&p.pull)?;
                let digest = need(&p.digest)?;
                let marker = draft::marker("awaiting-approval", digest);
                let comments = self.host.comments(repo, pull.number).await?;
                if !comments.iter().any(|c| c.contains(&marker)) {
                    let body = draft::waiting_comment(plan, digest, p.approval_url.as_deref());
                    self.host.comment(repo, pull.number, &body).await?;
                }
                p.announced = true;
            }
            Step::Done => {}
        }
        Ok(p)
    }

    /// Makes the pull request show its gate's state: ready for review with `reviewers`
    /// asked once approved; closed and its branch deleted once declined or expired.
    /// Safe to repeat; returns what it did.
    pub async fn settle(&self, repo: &str, number: u64, reviewers: &[String]) -> Result<Vec<Effect>, DraftError> {
        let stored = self
            .store
            .gate_of(repo, number)
            .await?
            .ok_or_else(|| DraftError::Unknown(format!("gate of {repo}#{number}")))?;
        let pull = self
            .host
            .pull(repo, number)
            .await?
            .ok_or_else(|| HostError::NotFound(format!("pull request {repo}#{number}")))?;
        let comments = self.host.comments(repo, number).await?;
        let when = chrono::DateTime::from_timestamp_millis(stored.updated_at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let todo = gate::effects(&stored.gate, pull.open, pull.draft, &comments, &when);
        // The changed files' code owners, then the configured reviewers.
        let mut asked = stored.code_owners.clone();
        for r in reviewers {
            if !asked.iter().any(|a| a.eq_ignore_ascii_case(r)) {
                asked.push(r.clone());
            }
        }
        for effect in &todo {
            match effect {
                Effect::MarkReady => self.host.mark_ready(repo, &pull).await?,
                Effect::RequestReviewers if !asked.is_empty() => {
                    self.host.request_reviewers(repo, number, &asked).await?
                }
                Effect::RequestReviewers => {}
                Effect::Comment { body, .. } => self.host.comment(repo, number, body).await?,
                Effect::Close => self.host.close(repo, number).await?,
                Effect::DeleteBranch => self.host.delete_branch(repo, &pull.head_ref).await?,
            }
        }
        self.store.mark_settled(&stored.id, stored.version).await?;
        info!(repo, number, state = stored.gate.state.as_str(), effects = todo.len(), "pull request settled");
        Ok(todo)
    }

    /// The CODEOWNERS owners of the files `writes` change, read at `base` from the first
    /// place GitHub looks; none without a CODEOWNERS file. The requester is left out:
    /// they cannot approve their own change.
    async fn code_owners(
        &self,
        repo: &str,
        base: &str,
        plan: &DraftPlan,
        writes: &[super::codehost::FileWrite],
    ) -> Result<Vec<String>, DraftError> {
        for location in codeowners::LOCATIONS {
            if let Some(text) = self.host.file(repo, location, base).await? {
                let owners = CodeOwners::parse(&text);
                let exclude: Vec<&str> = plan.requester_login.iter().map(String::as_str).collect();
                return Ok(owners.reviewers(writes.iter().map(|w| w.path.as_str()), &exclude));
            }
        }
        Ok(Vec::new())
    }

    /// The open pull request of `branch`, if it is the one this change made.
    async fn adopt(&self, repo: &str, branch: &str, digest: &str) -> Result<PullRequest, DraftError> {
        let pull = self.host.find_pull(repo, branch).await?.ok_or_else(|| {
            HostError::Unavailable(format!("GitHub says a pull request of `{branch}` exists but lists none"))
        })?;
        if pull.body.contains(&draft::marker("draft", digest)) {
            Ok(pull)
        } else {
            Err(DraftError::Foreign(format!(
                "pull request #{} of `{branch}` does not carry this change's marker",
                pull.number
            )))
        }
    }
}

/// A part of the progress an earlier step recorded; its absence means the stored
/// progress was edited by hand.
fn need<T>(value: &Option<T>) -> Result<&T, DraftError> {
    value.as_ref().ok_or_else(|| DraftError::Store(GithubStoreError::Corrupt("a draft's progress skips a step".into())))
}

/// Drafting for investigations: where their pull requests go and how they look.
pub struct Drafting {
    pub drafter: Drafter,
    /// `owner/name` and the branch changes are proposed to.
    pub repo: String,
    pub base: String,
    pub labels: Vec<String>,
    /// Asked to review once a gate is approved.
    pub reviewers: Vec<String>,
    /// Where a person follows an investigation: `<this>/<id>`.
    pub thread_base: String,
    /// Where pull requests are shown: `<this>/<repo>/pull/<n>`.
    pub web_base: String,
}

/// One change an investigation proposes.
pub struct Proposed<'a> {
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub edits: &'a [draft::FileEdit],
}

impl Drafting {
    /// Drafts a pull request for each proposal, one after another (the drafts are
    /// numbered in order, so a repeated investigation resumes the same drafts), and says
    /// what came of each as events for the investigation's log.
    pub async fn propose(&self, investigation_id: &str, summary: &str, proposals: &[Proposed<'_>]) -> Vec<EventBody> {
        let mut events = Vec::new();
        for (i, p) in proposals.iter().enumerate() {
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let plan = DraftPlan {
                investigation_id: investigation_id.to_string(),
                n,
                repo: self.repo.clone(),
                base: self.base.clone(),
                title: p.title.to_string(),
                summary: match p.description {
                    Some(d) => format!("{summary}\n\n{d}"),
                    None => summary.to_string(),
                },
                thread_url: format!("{}/{investigation_id}", self.thread_base),
                labels: self.labels.clone(),
                edits: p.edits.to_vec(),
                requester_login: None,
                created_at: self.drafter.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            let id = uuid::Uuid::now_v7().to_string();
            let now = self.drafter.clock.now().timestamp_millis();
            let outcome = match self.drafter.store.create_draft(&id, &plan, now).await {
                Ok(id) => self.drafter.run(&id).await.map(|outcome| (id, outcome)),
                Err(e) => Err(DraftError::Store(e)),
            };
            events.push(match outcome {
                Ok((draft_id, outcome)) => {
                    let (pull, approval_url) = match self.drafter.store.draft(&draft_id).await {
                        Ok(Some((_, progress, _))) => (progress.pull.map(|p| p.number), progress.approval_url),
                        _ => (None, None),
                    };
                    EventBody::new(
                        "pull_request.drafted",
                        json!({"draft_id": draft_id, "n": n, "title": plan.title, "repo": self.repo,
                               "number": pull, "url": pull.map(|n| format!("{}/{}/pull/{n}", self.web_base, self.repo)),
                               "branch": draft::branch_name(&plan), "outcome": outcome, "approval_url": approval_url}),
                    )
                }
                Err(e) => {
                    warn!(investigation = investigation_id, n, error = %e, "drafting a pull request failed");
                    EventBody::new(
                        "pull_request.failed",
                        json!({"n": n, "title": plan.title, "repo": self.repo, "why": e.to_string()}),
                    )
                }
            });
        }
        events
    }
}
