//! What Inquest's messages look like in Slack (Block Kit), and what they carry for the
//! sink to find them again (message metadata). Pure.
//!
//! Slack has no collapsible blocks, so a post's raw data (a tool's output, a report)
//! shows as a short preview with a link to the web thread, where all of it is.

use serde_json::{Value, json};

use crate::chat::render::clip;
use crate::chat::{Post, Thread};

/// Metadata event type of a root message; its payload names the investigation.
pub const THREAD_EVENT: &str = "inquest_thread";
/// Metadata event type of a post; its payload names the post's key (or keys, when
/// several tool calls share one message).
pub const POST_EVENT: &str = "inquest_post";
/// The actions block of an approval card.
pub const APPROVAL_BLOCK: &str = "inquest_approval";
/// What became of an approval card, once someone pressed a button.
pub const OUTCOME_BLOCK: &str = "inquest_approval_outcome";
pub const APPROVE_ACTION: &str = "inquest_approve";
pub const DECLINE_ACTION: &str = "inquest_decline";
/// The link button to the approval page (Slack reports its presses too; they are acked
/// and ignored).
pub const PAGE_ACTION: &str = "inquest_approval_page";

/// A section's text is at most 3000 characters; some room is kept for markup.
const SECTION_CHARS: usize = 2900;
/// A preview of raw data: this many lines, this many characters at most.
const PREVIEW_LINES: usize = 12;
const PREVIEW_CHARS: usize = 600;
/// In a message of several tool calls, each call's preview is shorter.
const GROUP_PREVIEW_LINES: usize = 4;
const GROUP_PREVIEW_CHARS: usize = 240;

/// The root message of an investigation's thread: the status line, the team, the link.
pub fn root(thread: &Thread, status: &str) -> Value {
    let mut about = format!("Team *{}*", escape(&thread.team));
    if let Some(service) = &thread.service {
        about.push_str(&format!(" · service *{}*", escape(service)));
    }
    about.push_str(&format!(" · <{}|Open the investigation>", thread.url));
    json!({
        "text": clip(status, SECTION_CHARS),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&escape(status), SECTION_CHARS)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": about}]},
        ],
        "metadata": {"event_type": THREAD_EVENT, "event_payload": {"investigation": thread.investigation_id}},
    })
}

/// One post as a message of its own.
pub fn post(thread: &Thread, post: &Post) -> Value {
    let mut blocks = vec![section(&escape(&post.text))];
    if let Some(detail) = post.detail.as_deref().filter(|d| !d.trim().is_empty()) {
        let (preview, cut) = preview(detail, PREVIEW_LINES, PREVIEW_CHARS);
        blocks.push(section(&format!("```{preview}```")));
        let more = if cut { "Preview only; all of it" } else { "Also" };
        blocks.push(context(&format!("{more} in the <{}|web thread>", thread.url)));
    }
    if let Some(card) = &post.approval {
        blocks.push(section(&format!("*Approval needed:* {}", escape(&card.what))));
        blocks.push(json!({
            "type": "actions",
            "block_id": APPROVAL_BLOCK,
            "elements": [
                button("Approve", APPROVE_ACTION, &card.approval_id, Some("primary")),
                button("Decline", DECLINE_ACTION, &card.approval_id, Some("danger")),
                {"type": "button", "action_id": PAGE_ACTION, "url": card.url,
                 "text": {"type": "plain_text", "text": "Open the approval page"}},
            ],
        }));
    }
    json!({
        "text": clip(&post.text, SECTION_CHARS),
        "blocks": blocks,
        "metadata": {"event_type": POST_EVENT, "event_payload": {"key": post.key}},
    })
}

/// Several tool calls in one message (a burst, folded), oldest first. Its metadata
/// names every call's key, so that each is found again.
pub fn tool_calls(thread: &Thread, calls: &[&Post]) -> Value {
    let mut blocks = Vec::new();
    for call in calls {
        let mut text = escape(&call.text);
        if let Some(detail) = call.detail.as_deref().filter(|d| !d.trim().is_empty()) {
            let (preview, _) = preview(detail, GROUP_PREVIEW_LINES, GROUP_PREVIEW_CHARS);
            text.push_str(&format!("\n```{preview}```"));
        }
        blocks.push(section(&text));
    }
    blocks.push(context(&format!("{} tool calls; their outputs are in the <{}|web thread>", calls.len(), thread.url)));
    let lines: Vec<&str> = calls.iter().map(|c| c.text.as_str()).collect();
    let keys: Vec<&str> = calls.iter().map(|c| c.key.as_str()).collect();
    json!({
        "text": clip(&lines.join("\n"), SECTION_CHARS),
        "blocks": blocks,
        "metadata": {"event_type": POST_EVENT, "event_payload": {
            "key": keys.first().copied().unwrap_or_default(),
            "keys": keys.join(" "),
        }},
    })
}

/// The keys of the posts a message carries, from its metadata (none for messages
/// that are not Inquest's posts).
pub fn keys_of(message: &Value) -> Vec<String> {
    let Some(payload) = message.get("metadata").filter(|m| m["event_type"] == POST_EVENT).map(|m| &m["event_payload"])
    else {
        return Vec::new();
    };
    let mut keys: Vec<String> =
        payload["keys"].as_str().unwrap_or_default().split_whitespace().map(str::to_string).collect();
    if let Some(key) = payload["key"].as_str()
        && !keys.iter().any(|k| k == key)
    {
        keys.insert(0, key.to_string());
    }
    keys
}

/// The investigation whose root a message is.
pub fn investigation_of(message: &Value) -> Option<&str> {
    message
        .get("metadata")
        .filter(|m| m["event_type"] == THREAD_EVENT)
        .and_then(|m| m["event_payload"]["investigation"].as_str())
}

/// An approval card's blocks after a decision: the outcome line below it, the buttons
/// gone unless the request still waits for more people.
pub fn decided(blocks: &[Value], outcome: &str, keep_buttons: bool) -> Vec<Value> {
    let mut out: Vec<Value> = blocks
        .iter()
        .filter(|b| b["block_id"] != OUTCOME_BLOCK && (keep_buttons || b["block_id"] != APPROVAL_BLOCK))
        .cloned()
        .collect();
    out.push(json!({"type": "context", "block_id": OUTCOME_BLOCK,
                    "elements": [{"type": "mrkdwn", "text": escape(outcome)}]}));
    out
}

/// Text as Slack's mrkdwn shows it literally: `&`, `<` and `>` are its markup.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(mrkdwn, SECTION_CHARS)}})
}

fn context(mrkdwn: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn}]})
}

fn button(label: &str, action_id: &str, value: &str, style: Option<&str>) -> Value {
    let mut b = json!({"type": "button", "action_id": action_id, "value": value,
                       "text": {"type": "plain_text", "text": label}});
    if let Some(s) = style {
        b["style"] = s.into();
    }
    b
}

/// The start of `text` for a code block, escaped, and whether anything was cut.
fn preview(text: &str, max_lines: usize, max_chars: usize) -> (String, bool) {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = lines[..lines.len().min(max_lines)].join("\n");
    let mut cut = lines.len() > max_lines;
    if kept.chars().count() > max_chars {
        kept = kept.chars().take(max_chars).collect();
        cut = true;
    }
    if cut {
        kept.push_str("\n…");
    }
    // A fence inside the text would end the code block early.
    (escape(&kept).replace("```", "'''"), cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ApprovalCard;

    fn thread() -> Thread {
        Thread {
            investigation_id: "inv1".into(),
            title: "Orders <late>".into(),
            team: "data".into(),
            service: Some("orders".into()),
            url: "https://inquest.example/investigations/inv1".into(),
        }
    }

    fn tool_post(seq: i64, detail: &str) -> Post {
        Post {
            key: format!("inv1/{seq}"),
            seq,
            kind: "tool.called".into(),
            text: format!("✔ Called spark__get_app (3 ms) [c{seq}]"),
            detail: Some(detail.into()),
            approval: None,
        }
    }

    #[test]
    fn a_root_carries_the_status_line_and_names_its_investigation() {
        let m = root(&thread(), "🔎 Orders <late> — running");
        assert_eq!(m["blocks"][0]["text"]["text"], "🔎 Orders &lt;late&gt; — running");
        assert_eq!(
            m["blocks"][1]["elements"][0]["text"],
            "Team *data* · service *orders* · <https://inquest.example/investigations/inv1|Open the investigation>"
        );
        assert_eq!(investigation_of(&m), Some("inv1"));
        assert!(keys_of(&m).is_empty());
    }

    #[test]
    fn a_post_previews_its_data_and_an_approval_card_has_buttons_carrying_only_the_id() {
        let long: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let mut p = tool_post(4, &long);
        p.approval = Some(ApprovalCard {
            approval_id: "ap1".into(),
            url: "https://registry.example/approvals/ap1".into(),
            what: "call airflow__clear (c2)".into(),
        });
        let m = post(&thread(), &p);
        let blocks = m["blocks"].as_array().unwrap();
        let preview = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(preview.starts_with("```line 1\n") && preview.ends_with("line 12\n…```"), "{preview}");
        assert_eq!(
            blocks[2]["elements"][0]["text"],
            "Preview only; all of it in the <https://inquest.example/investigations/inv1|web thread>"
        );
        let actions = &blocks[4];
        assert_eq!(actions["block_id"], APPROVAL_BLOCK);
        let values: Vec<&Value> = actions["elements"].as_array().unwrap().iter().map(|e| &e["value"]).collect();
        assert_eq!(values, [&json!("ap1"), &json!("ap1"), &Value::Null]);
        assert_eq!(actions["elements"][2]["url"], "https://registry.example/approvals/ap1");
        assert_eq!(keys_of(&m), ["inv1/4"]);
    }

    #[test]
    fn folded_tool_calls_name_every_key_and_a_decision_replaces_the_buttons() {
        let (a, b) = (tool_post(4, "{}"), tool_post(6, "```x```"));
        let m = tool_calls(&thread(), &[&a, &b]);
        assert_eq!(keys_of(&m), ["inv1/4", "inv1/6"]);
        assert_eq!(m["blocks"].as_array().unwrap().len(), 3);
        assert!(m["blocks"][1]["text"]["text"].as_str().unwrap().ends_with("```'''x'''```"));

        let card = post(
            &thread(),
            &Post {
                approval: Some(ApprovalCard { approval_id: "ap1".into(), url: "u".into(), what: "w".into() }),
                ..tool_post(7, "")
            },
        );
        let blocks = card["blocks"].as_array().unwrap();
        let once = decided(blocks, "👍 Alice approved (1 of 2)", true);
        assert!(once.iter().any(|b| b["block_id"] == APPROVAL_BLOCK));
        let closed = decided(&once, "✅ Approved by Bob", false);
        assert!(!closed.iter().any(|b| b["block_id"] == APPROVAL_BLOCK));
        let outcomes: Vec<&Value> = closed.iter().filter(|b| b["block_id"] == OUTCOME_BLOCK).collect();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0]["elements"][0]["text"], "✅ Approved by Bob");
    }
}
