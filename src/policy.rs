//! Pure authorization decisions over the registry's policy: `Allow | NeedsApproval |
//! Deny`, each with its reason. Never does IO; the registry caches the inputs.

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
}
