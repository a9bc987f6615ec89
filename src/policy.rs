//! Pure authorization decisions over the registry's policy: `Allow | NeedsApproval |
//! Deny`, each with its reason. Never does IO; the registry caches the inputs.
//!
//! [`decide`] reads a [`ServerPolicy`] top-down, and the first rule that settles the
//! question wins:
//! 1. a deleted server, or one whose security review was rejected, serves nobody;
//! 2. a server not yet approved for production (security review and production
//!    approval both `approved`) serves only its `preview` principals;
//! 3. the principal must match the server's `allowed` list (empty: nobody);
//! 4. without a tool, that is an allow;
//! 5. a listed tool may narrow the principals further (`allowed`) and may be sensitive
//!    (`approval`): then a person must approve each use;
//! 6. a tool the policy does not list is "unlisted": by default it needs a person's
//!    approval (as goose treats unknown tools), from `default_approvers`; with none
//!    configured nobody could approve, so it is denied.
//!
//! A deprecated server still serves (deprecation announces a removal; clients need the
//! time to move), and the reason says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::Principal;

/// Who may approve an action, and how many distinct people must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApproverPolicy {
    /// Principal matchers: `group:<name>`, `user:<subject>`.
    pub approvers: Vec<String>,
    /// Distinct approvals needed (at least 1).
    pub required: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Allow { reason: String },
    NeedsApproval { reason: String, approvers: ApproverPolicy },
    Deny { reason: String },
}

impl Decision {
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow { reason } | Decision::NeedsApproval { reason, .. } | Decision::Deny { reason } => reason,
        }
    }

    /// `allow`, `needs_approval` or `deny`, as the JSON names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::NeedsApproval { .. } => "needs_approval",
            Decision::Deny { .. } => "deny",
        }
    }
}

/// A server's lifecycle, as the catalog records it for the server's latest version
/// (the official registry's `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    #[default]
    Active,
    Deprecated,
    Deleted,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Active => "active",
            ServerStatus::Deprecated => "deprecated",
            ServerStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<ServerStatus> {
        match s {
            "active" => Some(ServerStatus::Active),
            "deprecated" => Some(ServerStatus::Deprecated),
            "deleted" => Some(ServerStatus::Deleted),
            _ => None,
        }
    }
}

/// Where a review (security review, production approval) stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    #[default]
    Pending,
    Approved,
    Rejected,
}

/// What happens to a tool the server's policy does not list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnlistedTools {
    /// Anyone allowed on the server may use it (for servers whose tools only read).
    Allow,
    /// Each use needs a person's approval, from `default_approvers` (the default).
    #[default]
    NeedsApproval,
    Deny,
}

/// The policy of one tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// Narrows the server's `allowed` list for this tool; absent: the server's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// Present: the tool is sensitive and each use needs these approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApproverPolicy>,
    /// Minutes a successful call saves a person, for the usage estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes_saved: Option<u32>,
}

/// Who may use a server and its tools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Principal matchers allowed on the server; empty: nobody.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Principals (among `allowed`) who may use the server before it is approved for
    /// production: its developers and testers.
    #[serde(default)]
    pub preview: Vec<String>,
    /// Per-tool rules, by tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolPolicy>,
    #[serde(default)]
    pub unlisted_tools: UnlistedTools,
    /// Who approves unlisted tools when `unlisted_tools` is `needs_approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_approvers: Option<ApproverPolicy>,
}

/// Everything [`decide`] reads about one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerPolicy {
    pub status: ServerStatus,
    pub security_review: ReviewState,
    pub production: ReviewState,
    pub access: Access,
}

impl ServerPolicy {
    /// Approved for production: both the security review and the production approval passed.
    pub fn in_production(&self) -> bool {
        self.security_review == ReviewState::Approved && self.production == ReviewState::Approved
    }

    /// Who approves uses of `tool`, when uses of it need approval.
    pub fn approvers(&self, tool: &str) -> Option<&ApproverPolicy> {
        match self.access.tools.get(tool) {
            Some(t) => t.approval.as_ref(),
            None if self.access.unlisted_tools == UnlistedTools::NeedsApproval => {
                self.access.default_approvers.as_ref()
            }
            None => None,
        }
    }

    /// The listed tools that need approval, with their approvers.
    pub fn sensitive_tools(&self) -> impl Iterator<Item = (&str, &ApproverPolicy)> {
        self.access.tools.iter().filter_map(|(name, t)| t.approval.as_ref().map(|a| (name.as_str(), a)))
    }
}

/// Decides whether `principal` may use `server` (without `tool`) or one of its tools.
/// Allocates only the answer.
pub fn decide(server: &ServerPolicy, principal: &Principal, tool: Option<&str>) -> Decision {
    match server.status {
        ServerStatus::Deleted => return deny("the server is deleted"),
        ServerStatus::Active | ServerStatus::Deprecated => {}
    }
    if server.security_review == ReviewState::Rejected {
        return deny("the server failed its security review");
    }
    let production = server.in_production();
    if !production && !any_matches(&server.access.preview, principal) {
        return deny("the server is not approved for production use");
    }
    if !any_matches(&server.access.allowed, principal) {
        return deny("the principal is not allowed on this server");
    }
    let deprecated = server.status == ServerStatus::Deprecated;
    let Some(tool) = tool else {
        return allow(match (production, deprecated) {
            (true, false) => "the principal is allowed on this server",
            (true, true) => "the principal is allowed on this server (deprecated: plan to move off it)",
            (false, _) => "the principal may preview this server before its production approval",
        });
    };
    match server.access.tools.get(tool) {
        Some(rule) => {
            if let Some(allowed) = &rule.allowed
                && !any_matches(allowed, principal)
            {
                return deny("the principal is not allowed to use this tool");
            }
            match &rule.approval {
                Some(approvers) => needs_approval("the tool is sensitive: a person must approve each use", approvers),
                None => allow("the principal is allowed to use this tool"),
            }
        }
        None => match server.access.unlisted_tools {
            UnlistedTools::Allow => allow("the server allows its unlisted tools"),
            UnlistedTools::Deny => deny("the tool is not listed in the server's policy"),
            UnlistedTools::NeedsApproval => match &server.access.default_approvers {
                Some(approvers) => {
                    needs_approval("the tool is not listed in the server's policy: a person must approve", approvers)
                }
                None => deny("the tool is not listed in the server's policy and nobody may approve it"),
            },
        },
    }
}

fn allow(reason: &str) -> Decision {
    Decision::Allow { reason: reason.to_string() }
}

fn deny(reason: &str) -> Decision {
    Decision::Deny { reason: reason.to_string() }
}

fn needs_approval(reason: &str, approvers: &ApproverPolicy) -> Decision {
    Decision::NeedsApproval { reason: reason.to_string(), approvers: approvers.clone() }
}

/// Whether any of `matchers` names `principal`.
pub fn any_matches(matchers: &[String], principal: &Principal) -> bool {
    matchers.iter().any(|m| matches(m, principal))
}

/// Whether `matcher` names `principal`: `*` (anyone authenticated), `group:<g>`,
/// `user:<subject>`, an exact SPIFFE ID, or a SPIFFE ID prefix ending in `/*`.
pub fn matches(matcher: &str, principal: &Principal) -> bool {
    if matcher == "*" {
        return true;
    }
    match principal {
        Principal::User { subject, groups, .. } => {
            if let Some(g) = matcher.strip_prefix("group:") {
                groups.iter().any(|x| x == g)
            } else if let Some(s) = matcher.strip_prefix("user:") {
                s == subject
            } else {
                false
            }
        }
        Principal::Service { spiffe_id } => match matcher.strip_suffix("/*") {
            Some(prefix) if prefix.starts_with("spiffe://") => {
                spiffe_id.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
            }
            _ => matcher == spiffe_id,
        },
    }
}

/// Whether `matcher` is one [`matches`] understands; a policy with any other is refused
/// when written, so a typo cannot silently match nobody.
pub fn is_valid_matcher(matcher: &str) -> bool {
    if matcher == "*" {
        return true;
    }
    if let Some(rest) = matcher.strip_prefix("group:").or_else(|| matcher.strip_prefix("user:")) {
        return !rest.is_empty() && !rest.chars().any(char::is_whitespace);
    }
    // A SPIFFE ID, or a prefix of one ending in `/*`; `*` appears nowhere else.
    let Some(rest) = matcher.strip_prefix("spiffe://") else {
        return false;
    };
    let rest = rest.strip_suffix("/*").unwrap_or(rest);
    let (domain, path) = rest.split_once('/').map_or((rest, None), |(d, p)| (d, Some(p)));
    !domain.is_empty()
        && !rest.contains('*')
        && !rest.chars().any(char::is_whitespace)
        && path.is_none_or(|p| p.split('/').all(|segment| !segment.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_table() {
        let alice = Principal::user("alice", &["data-eng"]);
        let agent = Principal::service("spiffe://inquest.local/agent");
        let airflow = Principal::service("spiffe://inquest.local/server/airflow");
        let cases = [
            ("*", &alice, true),
            ("group:data-eng", &alice, true),
            ("group:ml", &alice, false),
            ("user:alice", &alice, true),
            ("user:bob", &alice, false),
            ("spiffe://inquest.local/agent", &agent, true),
            ("spiffe://inquest.local/agent", &airflow, false),
            ("spiffe://inquest.local/server/*", &airflow, true),
            ("spiffe://inquest.local/server/*", &agent, false),
            ("spiffe://inquest.local/serv/*", &airflow, false),
            ("group:data-eng", &agent, false),
            ("spiffe://inquest.local/agent", &alice, false),
        ];
        for (m, p, expected) in cases {
            assert_eq!(matches(m, p), expected, "{m} vs {p:?}");
        }
    }

    #[test]
    fn valid_matchers() {
        for m in ["*", "group:data-eng", "user:alice", "spiffe://td/agent", "spiffe://td/server/*", "spiffe://td/*"] {
            assert!(is_valid_matcher(m), "{m}");
        }
        for m in ["", "data-eng", "group:", "user:", "group:a b", "spiffe://", "spiffe://td//x", "spiffe://td/a*", "**"]
        {
            assert!(!is_valid_matcher(m), "{m}");
        }
    }

    fn approvers(who: &str) -> ApproverPolicy {
        ApproverPolicy { approvers: vec![who.to_string()], required: 1 }
    }

    /// Airflow as the examples use it: data-eng and the agent may use it; `clear_task`
    /// is sensitive, `trigger_dag` only for data-eng, `get_logs` open to all allowed.
    fn airflow() -> ServerPolicy {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ServerPolicy {
            status: ServerStatus::Active,
            security_review: ReviewState::Approved,
            production: ReviewState::Approved,
            access: Access {
                allowed: strings(&["group:data-eng", "spiffe://td/agent"]),
                preview: strings(&["group:airflow-dev"]),
                tools: BTreeMap::from([
                    ("get_logs".to_string(), ToolPolicy::default()),
                    (
                        "trigger_dag".to_string(),
                        ToolPolicy { allowed: Some(strings(&["group:data-eng"])), ..Default::default() },
                    ),
                    (
                        "clear_task".to_string(),
                        ToolPolicy { approval: Some(approvers("group:airflow-oncall")), ..Default::default() },
                    ),
                ]),
                unlisted_tools: UnlistedTools::NeedsApproval,
                default_approvers: Some(approvers("group:airflow-owners")),
            },
        }
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Allow,
        Approve(&'static str),
        Deny(&'static str),
    }

    fn outcome(d: &Decision) -> (&'static str, Option<String>) {
        match d {
            Decision::Allow { .. } => ("allow", None),
            Decision::NeedsApproval { approvers, .. } => ("needs_approval", approvers.approvers.first().cloned()),
            Decision::Deny { .. } => ("deny", None),
        }
    }

    #[test]
    fn decide_table() {
        use Want::*;
        let alice = Principal::user("alice", &["data-eng"]);
        let bob = Principal::user("bob", &["marketing"]);
        let dev = Principal::user("dev", &["airflow-dev", "data-eng"]);
        let agent = Principal::service("spiffe://td/agent");
        let other = Principal::service("spiffe://td/other");
        let previewer = Principal::user("x", &["airflow-dev"]);

        let base = airflow();
        let mut deleted = airflow();
        deleted.status = ServerStatus::Deleted;
        let mut deprecated = airflow();
        deprecated.status = ServerStatus::Deprecated;
        let mut rejected = airflow();
        rejected.security_review = ReviewState::Rejected;
        rejected.access.preview = vec!["*".into()];
        let mut unreviewed = airflow();
        unreviewed.security_review = ReviewState::Pending;
        let mut unapproved = airflow();
        unapproved.production = ReviewState::Pending;
        let mut open_unlisted = airflow();
        open_unlisted.access.unlisted_tools = UnlistedTools::Allow;
        let mut closed_unlisted = airflow();
        closed_unlisted.access.unlisted_tools = UnlistedTools::Deny;
        let mut nobody_approves = airflow();
        nobody_approves.access.default_approvers = None;
        let mut empty = airflow();
        empty.access.allowed.clear();

        let cases: Vec<(&str, &ServerPolicy, &Principal, Option<&str>, Want)> = vec![
            // The server itself.
            ("allowed group", &base, &alice, None, Allow),
            ("allowed service", &base, &agent, None, Allow),
            ("other group", &base, &bob, None, Deny("not allowed on this server")),
            ("other service", &base, &other, None, Deny("not allowed on this server")),
            ("empty allow list", &empty, &alice, None, Deny("not allowed on this server")),
            // Lifecycle and reviews.
            ("deleted", &deleted, &alice, Some("get_logs"), Deny("deleted")),
            ("deprecated still serves", &deprecated, &alice, Some("get_logs"), Allow),
            ("rejected, even for preview", &rejected, &dev, None, Deny("security review")),
            ("unreviewed", &unreviewed, &alice, None, Deny("not approved for production")),
            ("unapproved", &unapproved, &agent, Some("get_logs"), Deny("not approved for production")),
            ("unapproved, preview", &unapproved, &dev, Some("get_logs"), Allow),
            ("unreviewed, preview", &unreviewed, &dev, None, Allow),
            ("preview needs the allow list", &unapproved, &previewer, None, Deny("not allowed on this server")),
            // Tools.
            ("plain tool", &base, &agent, Some("get_logs"), Allow),
            ("narrowed tool, in", &base, &alice, Some("trigger_dag"), Allow),
            ("narrowed tool, out", &base, &agent, Some("trigger_dag"), Deny("not allowed to use this tool")),
            ("narrowing never widens", &base, &bob, Some("trigger_dag"), Deny("not allowed on this server")),
            ("sensitive tool", &base, &agent, Some("clear_task"), Approve("group:airflow-oncall")),
            ("sensitive, not allowed", &base, &bob, Some("clear_task"), Deny("not allowed on this server")),
            ("unlisted tool", &base, &alice, Some("drop_dag"), Approve("group:airflow-owners")),
            ("unlisted, open", &open_unlisted, &alice, Some("drop_dag"), Allow),
            ("unlisted, closed", &closed_unlisted, &alice, Some("drop_dag"), Deny("not listed")),
            ("unlisted, nobody approves", &nobody_approves, &alice, Some("drop_dag"), Deny("nobody may approve")),
            ("unlisted, not allowed", &open_unlisted, &bob, Some("drop_dag"), Deny("not allowed on this server")),
        ];
        for (name, policy, principal, tool, want) in cases {
            let got = decide(policy, principal, tool);
            match want {
                Allow => assert_eq!(outcome(&got), ("allow", None), "{name}: {got:?}"),
                Approve(who) => assert_eq!(outcome(&got), ("needs_approval", Some(who.to_string())), "{name}: {got:?}"),
                Deny(why) => {
                    assert_eq!(outcome(&got).0, "deny", "{name}: {got:?}");
                    assert!(got.reason().contains(why), "{name}: {got:?}");
                }
            }
        }
    }

    #[test]
    fn approvers_follow_the_decision() {
        let p = airflow();
        assert_eq!(p.approvers("clear_task"), Some(&approvers("group:airflow-oncall")));
        assert_eq!(p.approvers("get_logs"), None);
        assert_eq!(p.approvers("drop_dag"), Some(&approvers("group:airflow-owners")));
        let sensitive: Vec<_> = p.sensitive_tools().map(|(n, _)| n).collect();
        assert_eq!(sensitive, ["clear_task"]);
        let alice = Principal::user("alice", &["data-eng"]);
        assert_eq!(decide(&p, &alice, Some("clear_task")).kind(), "needs_approval");
    }
}
