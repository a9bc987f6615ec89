//! What each event of an investigation's log says in a chat thread, the same for every
//! medium: a line of text (Markdown-ish: `*bold*`-free, links as `<url|text>`-free plain
//! URLs, so each sink can format it its own way), the raw data one click away, and an
//! approval card when a person is asked to decide. Pure.

use serde_json::Value;

use crate::store::{InvestigationSummary, StoredEvent};

/// An investigation's thread, as a sink needs to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub investigation_id: String,
    pub title: String,
    pub team: String,
    pub service: Option<String>,
    /// The web thread, where everything is.
    pub url: String,
}

impl Thread {
    pub fn of(inv: &InvestigationSummary, web_base: &str) -> Thread {
        Thread {
            investigation_id: inv.id.clone(),
            title: inv.title.clone(),
            team: inv.team.clone(),
            service: inv.service.clone(),
            url: format!("{}/investigations/{}", web_base.trim_end_matches('/'), inv.id),
        }
    }
}

/// One post in a thread, for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// `<investigation>/<seq>`: what a sink makes its send idempotent on.
    pub key: String,
    pub seq: i64,
    /// The event's kind, for sinks that style some differently.
    pub kind: String,
    pub text: String,
    /// The raw data (a tool's output), shown collapsed or one click away.
    pub detail: Option<String>,
    /// A person is asked to decide.
    pub approval: Option<ApprovalCard>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalCard {
    /// The registry's approval id: all a button carries.
    pub approval_id: String,
    /// The registry's approval page.
    pub url: String,
    /// What is to be approved, in a line.
    pub what: String,
}

/// The investigation's status line, edited in place where the medium can.
pub fn status_line(inv: &InvestigationSummary) -> String {
    let state = inv.state.as_str();
    let icon = match state {
        "completed" => "✅",
        "failed" | "cancelled" => "⛔",
        "awaiting_approval" => "⏸",
        _ => "🔎",
    };
    let mut line = format!("{icon} {} — {state}", inv.title);
    if let Some(summary) = inv.summary.as_deref().filter(|s| !s.is_empty()) {
        line.push_str(": ");
        line.push_str(&clip(summary, 300));
    }
    line
}

/// The post for `event`, or `None` for events that are bookkeeping only.
pub fn post(investigation_id: &str, event: &StoredEvent) -> Option<Post> {
    let d = &event.data;
    let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut detail = None;
    let mut approval = None;
    let text = match event.kind.as_str() {
        "alert.received" => format!("🚨 Alert received from {}: {}", s("source"), s("title")),
        "alerts.attached" => format!("➕ {} more alert(s) joined this episode", d["count"]),
        "context.recorded" => format!("📋 {} alert(s) in context, {} firing", d["alerts"], d["firing"]),
        "investigation.started" => "▶️ Investigation started".to_string(),
        "investigation.resumed" => format!("▶️ Resumed (attempt {})", d["attempt"]),
        "investigation.retrying" => format!("🔁 Attempt {} failed ({}); retrying", d["attempt"], s("error")),
        "investigation.suspended" => format!("⏹ Paused: {}", s("reason")),
        "servers.discovered" => {
            let names: Vec<&str> = d["servers"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
                .unwrap_or_default();
            format!("🧭 Servers permitted for this team: {}", names.join(", "))
        }
        "servers.unavailable" => format!("⚠️ No servers could be used: {}", s("why")),
        "playbook.chosen" => format!("📖 Playbook: {} — {}", s("playbook"), s("description")),
        "tool.called" => {
            detail = Some(pretty(d.get("result").or(d.get("error")).unwrap_or(&Value::Null)));
            let outcome = if s("outcome") == "ok" { "✔" } else { "✖" };
            format!("{outcome} Called {} ({} ms) [{}]", s("tool"), d["millis"], s("call_id"))
        }
        "finding" => format!("🔍 Finding ({}): {}", s("category"), s("summary")),
        "planner.finished" => format!("🧠 Planner finished after {} turn(s)", d["turns"]),
        "report" => {
            detail = d.get("markdown").and_then(Value::as_str).map(str::to_string);
            format!("📝 Report: {}", s("summary"))
        }
        "approval.requested" => {
            let id = s("approval_id");
            approval = Some(ApprovalCard {
                approval_id: id.clone(),
                url: s("url"),
                what: format!("call {} ({})", s("tool"), s("call_id")),
            });
            format!("✋ Approval needed to call {}: {}", s("tool"), s("url"))
        }
        "approval.settled" => format!("☑️ Approval {}: {}", s("approval_id"), s("outcome")),
        "question.asked" => {
            let by = d.get("asked_by").and_then(Value::as_str).unwrap_or("someone");
            format!("❓ {by} asked: {}", s("question"))
        }
        "question.answered" => {
            detail = d.get("markdown").and_then(Value::as_str).map(str::to_string);
            format!("💬 Answer to “{}”: {}", s("question"), s("answer"))
        }
        "pull_request.drafted" => {
            if let Some(url) = d.get("approval_url").and_then(Value::as_str) {
                approval = Some(ApprovalCard {
                    approval_id: url.rsplit('/').next().unwrap_or_default().to_string(),
                    url: url.to_string(),
                    what: format!("pull request {} #{}", s("repo"), d["number"]),
                });
            }
            format!("🛠 Drafted pull request “{}”: {}", s("title"), s("url"))
        }
        "pull_request.failed" => format!("⚠️ Could not draft “{}”: {}", s("title"), s("why")),
        "pull_request.gate" => format!("🚦 {} #{} is {}: {}", s("repo"), d["number"], s("state"), s("why")),
        "investigation.completed" => format!("✅ Completed: {}", s("summary")),
        "investigation.failed" => format!("⛔ Failed after {} attempt(s): {}", d["attempts"], s("error")),
        "investigation.cancelled" => format!("⛔ Cancelled: {}", s("reason")),
        "episode.resolved" => format!("🟢 The alert resolved ({})", s("action")),
        _ => return None,
    };
    Some(Post {
        key: format!("{investigation_id}/{}", event.seq),
        seq: event.seq,
        kind: event.kind.clone(),
        text,
        detail,
        approval,
    })
}

fn pretty(v: &Value) -> String {
    clip(&serde_json::to_string_pretty(v).unwrap_or_default(), 20_000)
}

/// At most `max` characters, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn event(seq: i64, kind: &str, data: Value) -> StoredEvent {
        StoredEvent { seq, kind: kind.into(), data, at: Utc::now() }
    }

    #[test]
    fn each_event_reads_as_one_line_keyed_by_its_place_in_the_log() {
        let called = event(
            4,
            "tool.called",
            json!({"call_id": "c1", "tool": "spark__get_app", "millis": 12, "outcome": "ok", "result": {"a": 1}}),
        );
        let p = post("inv1", &called).unwrap();
        assert_eq!(p.key, "inv1/4");
        assert_eq!(p.text, "✔ Called spark__get_app (12 ms) [c1]");
        assert_eq!(p.detail.as_deref(), Some("{\n  \"a\": 1\n}"));

        let asked = event(
            5,
            "approval.requested",
            json!({"approval_id": "ap1", "url": "https://reg/approvals/ap1", "tool": "airflow__clear_task_instances", "call_id": "c2"}),
        );
        let card = post("inv1", &asked).unwrap().approval.unwrap();
        assert_eq!((card.approval_id.as_str(), card.url.as_str()), ("ap1", "https://reg/approvals/ap1"));

        let drafted = event(
            6,
            "pull_request.drafted",
            json!({"title": "t", "repo": "acme/etl", "number": 3, "url": "https://gh/acme/etl/pull/3",
                   "approval_url": "https://reg/approvals/ap9"}),
        );
        assert_eq!(post("inv1", &drafted).unwrap().approval.unwrap().approval_id, "ap9");
        assert!(post("inv1", &event(7, "lease.renewed", json!({}))).is_none(), "bookkeeping is not posted");
    }
}
