//! A pull-request draft as data, and the pure decisions about it: which step comes
//! next, what the edits make of the files, the branch name, the digest the approval
//! is bound to, and the hidden markers by which the drafter recognizes its own pull
//! requests and comments after a restart.

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::codehost::FileWrite;
pub use crate::playbook::FileEdit;

/// What to propose; fixed when the draft is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftPlan {
    pub investigation_id: String,
    /// The draft's number within its investigation (1, 2, ...).
    pub n: u32,
    /// `owner/name`.
    pub repo: String,
    /// The branch the change is proposed to; never written to.
    pub base: String,
    pub title: String,
    /// The investigation's summary and evidence, in Markdown.
    pub summary: String,
    /// The investigation thread people follow.
    pub thread_url: String,
    pub labels: Vec<String>,
    pub edits: Vec<FileEdit>,
    /// The GitHub login of the person the change is for, who cannot approve it.
    pub requester_login: Option<String>,
    /// RFC 3339; the commit's date, so that making it again gives the same commit.
    pub created_at: String,
}

/// How far the draft got; stored after every step. Fields added later default, so a
/// progress stored by an older version reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DraftProgress {
    /// The base branch's head when the files were read.
    pub base_sha: Option<String>,
    /// The files as they are to be, and the digest of that change.
    pub writes: Option<Vec<FileWrite>>,
    pub digest: Option<String>,
    /// The CODEOWNERS owners of the changed files at the base (logins, `org/team`),
    /// without the requester: asked to review once the gate is approved.
    pub code_owners: Vec<String>,
    pub commit: Option<String>,
    pub branched: bool,
    pub pull: Option<PullRef>,
    pub labeled: bool,
    pub gated: bool,
    /// The registry was asked for the gate's approval (or no registry is configured).
    pub asked: bool,
    /// The registry's approval page for the gate, once asked.
    pub approval_url: Option<String>,
    pub announced: bool,
    /// Set when there is nothing left to do, and why.
    pub finished: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRef {
    pub number: u64,
    pub node_id: String,
}

/// The step a draft takes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read the base branch's head and the files the edits touch; decide the writes.
    ReadBase,
    /// Make the commit (blobs, tree, commit) on the base head.
    Commit,
    /// Point the draft's branch at the commit.
    Branch,
    /// Open the draft pull request.
    Open,
    Label,
    /// Make the approval gate, bound to the commit.
    Gate,
    /// Ask the registry's approval service for the gate's approval.
    Ask,
    /// Say in the pull request that it waits for an approval.
    Announce,
    Done,
}

/// The next step of a draft, from how far it got.
pub fn next(p: &DraftProgress) -> Step {
    if p.finished.is_some() {
        Step::Done
    } else if p.writes.is_none() {
        Step::ReadBase
    } else if p.commit.is_none() {
        Step::Commit
    } else if !p.branched {
        Step::Branch
    } else if p.pull.is_none() {
        Step::Open
    } else if !p.labeled {
        Step::Label
    } else if !p.gated {
        Step::Gate
    } else if !p.asked {
        Step::Ask
    } else if !p.announced {
        Step::Announce
    } else {
        Step::Done
    }
}

/// `inquest/<investigation>/<n>`.
pub fn branch_name(plan: &DraftPlan) -> String {
    format!("inquest/{}/{}", plan.investigation_id, plan.n)
}

/// A hidden marker: what the drafter made, for which change.
pub fn marker(kind: &str, digest: &str) -> String {
    format!("<!-- inquest:{kind} {digest} -->")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("`{path}`: the file does not exist, so `{find}` cannot be replaced in it")]
    Missing { path: String, find: String },
    #[error("`{path}`: `{find}` matches nothing")]
    NoMatch { path: String, find: String },
    #[error("`{path}`: `{find}` is not a regex: {why}")]
    BadRegex { path: String, find: String, why: String },
}

/// The files as the edits make them, from their current text (`None`: absent). Files
/// the edits leave as they are drop out; none left means there is nothing to propose.
pub fn apply_edits(edits: &[FileEdit], current: &dyn Fn(&str) -> Option<String>) -> Result<Vec<FileWrite>, EditError> {
    let mut writes: Vec<FileWrite> = Vec::new();
    for edit in edits {
        // A later edit of the same file builds on the earlier one.
        let before = match writes.iter().find(|w| w.path == edit.path()) {
            Some(w) => Some(w.content.clone()),
            None => current(edit.path()),
        };
        let after = match edit {
            FileEdit::Content { content, .. } => content.clone(),
            FileEdit::Replace { path, find, replace } => {
                let text =
                    before.clone().ok_or_else(|| EditError::Missing { path: path.clone(), find: find.clone() })?;
                let re = Regex::new(find).map_err(|e| EditError::BadRegex {
                    path: path.clone(),
                    find: find.clone(),
                    why: e.to_string(),
                })?;
                if !re.is_match(&text) {
                    return Err(EditError::NoMatch { path: path.clone(), find: find.clone() });
                }
                re.replace_all(&text, replace.as_str()).into_owned()
            }
        };
        match writes.iter_mut().find(|w| w.path == edit.path()) {
            Some(w) => w.content = after,
            None => writes.push(FileWrite { path: edit.path().to_string(), content: after }),
        }
    }
    writes.retain(|w| current(&w.path).as_deref() != Some(w.content.as_str()));
    writes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(writes)
}

/// SHA-256 over the base commit and each path and content, length-prefixed so that no
/// two different changes give the same bytes.
pub fn digest(base_sha: &str, writes: &[FileWrite]) -> String {
    let mut h = Sha256::new();
    for part in std::iter::once(base_sha).chain(writes.iter().flat_map(|w| [w.path.as_str(), w.content.as_str()])) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The pull request's body: the summary, the thread, the approval status and the marker.
pub fn body(plan: &DraftPlan, digest: &str) -> String {
    format!(
        "{summary}\n\n---\nDrafted by Inquest from [investigation {inv}]({thread}).\n\n\
         **Approval:** waiting. This pull request stays a draft until an allowed person approves \
         this exact change (from the investigation thread, or with an approving review of its head \
         commit); a new push asks again.\n\n{marker}\n",
        summary = plan.summary.trim(),
        inv = plan.investigation_id,
        thread = plan.thread_url,
        marker = marker("draft", digest),
    )
}

/// The comment that says the draft waits at the gate.
pub fn waiting_comment(plan: &DraftPlan, digest: &str, approval_url: Option<&str>) -> String {
    let decide = match approval_url {
        Some(url) => format!("Allowed approvers decide on the [approval page]({url}); follow it in the"),
        None => "Follow it in the".to_string(),
    };
    format!(
        "Inquest is waiting for an approval of this change before it is marked ready for review. \
         {decide} [investigation thread]({}).\n\n{}\n",
        plan.thread_url,
        marker("awaiting-approval", digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(path: &str) -> Option<String> {
        match path {
            "jobs/etl/spark-defaults.conf" => Some("spark.executor.memory 4g\nspark.cores 2\n".into()),
            "README" => Some("same\n".into()),
            _ => None,
        }
    }

    #[test]
    fn edits_make_the_writes_and_unchanged_files_drop_out() {
        let edits = vec![
            FileEdit::Replace {
                path: "jobs/etl/spark-defaults.conf".into(),
                find: r"spark\.executor\.memory\s+\S+".into(),
                replace: "spark.executor.memory 8g".into(),
            },
            FileEdit::Content { path: "README".into(), content: "same\n".into() },
            FileEdit::Content { path: "new.txt".into(), content: "hi\n".into() },
        ];
        let writes = apply_edits(&edits, &files).unwrap();
        assert_eq!(
            writes,
            [
                FileWrite {
                    path: "jobs/etl/spark-defaults.conf".into(),
                    content: "spark.executor.memory 8g\nspark.cores 2\n".into()
                },
                FileWrite { path: "new.txt".into(), content: "hi\n".into() },
            ]
        );
    }

    #[test]
    fn an_edit_that_cannot_apply_says_why() {
        let missing = [FileEdit::Replace { path: "x".into(), find: "a".into(), replace: "b".into() }];
        assert!(matches!(apply_edits(&missing, &files), Err(EditError::Missing { .. })));
        let nothing = [FileEdit::Replace { path: "README".into(), find: "zzz".into(), replace: "b".into() }];
        assert!(matches!(apply_edits(&nothing, &files), Err(EditError::NoMatch { .. })));
        let bad = [FileEdit::Replace { path: "README".into(), find: "(".into(), replace: "b".into() }];
        assert!(matches!(apply_edits(&bad, &files), Err(EditError::BadRegex { .. })));
    }

    #[test]
    fn the_digest_changes_with_any_part_of_the_change() {
        let w = |p: &str, c: &str| vec![FileWrite { path: p.into(), content: c.into() }];
        let d = digest("base", &w("a", "b"));
        assert_eq!(d, digest("base", &w("a", "b")));
        assert_ne!(d, digest("base2", &w("a", "b")));
        assert_ne!(d, digest("base", &w("ab", "")));
        assert_ne!(d, digest("base", &w("a", "c")));
    }

    #[test]
    fn steps_follow_the_progress() {
        let mut p = DraftProgress::default();
        let mut seen = vec![next(&p)];
        p.writes = Some(vec![]);
        seen.push(next(&p));
        p.commit = Some("c".into());
        seen.push(next(&p));
        p.branched = true;
        seen.push(next(&p));
        p.pull = Some(PullRef { number: 1, node_id: "n".into() });
        seen.push(next(&p));
        p.labeled = true;
        seen.push(next(&p));
        p.gated = true;
        seen.push(next(&p));
        p.asked = true;
        seen.push(next(&p));
        p.announced = true;
        seen.push(next(&p));
        use Step::*;
        assert_eq!(seen, [ReadBase, Commit, Branch, Open, Label, Gate, Ask, Announce, Done]);
        let finished = DraftProgress { finished: Some("nothing to change".into()), ..DraftProgress::default() };
        assert_eq!(next(&finished), Done);
    }
}
