//! What is sent: message contents, edits, thread relations, sync filters, and reading
//! mentions back out of events (pure).

use super::*;

/// The root: the status line, who it is for, the web thread, and how to ask.
pub(super) fn root_content(thread: &Thread, status: &str, bot: &str) -> Value {
    let (body, html) = root_text(thread, status, bot);
    message("m.text", body, html)
}

/// An edit of the root to show `status`.
pub(super) fn edit_content(root: &str, thread: &Thread, status: &str, bot: &str) -> Value {
    let (body, html) = root_text(thread, status, bot);
    let mut content = message("m.text", format!("* {body}"), format!("* {html}"));
    content["m.new_content"] = message("m.text", body, html);
    content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": root});
    content
}

pub(super) fn root_text(thread: &Thread, status: &str, bot: &str) -> (String, String) {
    let about = match &thread.service {
        Some(service) => format!("Team {}, service {service}", thread.team),
        None => format!("Team {}", thread.team),
    };
    let ask = format!("Mention {bot} in this thread to ask a question.");
    let body = format!("{status}\n{about} · {}\n{ask}", thread.url);
    let html = format!(
        "<p><strong>{}</strong><br>{} · <a href=\"{}\">the whole investigation</a><br><em>{}</em></p>",
        linkify(status),
        escape(&about),
        escape(&thread.url),
        escape(&ask)
    );
    (body, html)
}

/// A post in the thread: its line, an approval card as a link, the raw data collapsed.
/// Posts are notices (no notification, and other bots do not answer them), except an
/// approval card, which someone must act on.
pub(super) fn post_content(root: &str, thread: &Thread, post: &Post) -> Value {
    let mut content = Value::Null;
    for shrink in [1, 4, 16, 64] {
        content = post_content_within(root, thread, post, TEXT_CHARS / shrink, DETAIL_CHARS / shrink);
        if content.to_string().len() <= MAX_CONTENT_BYTES {
            break;
        }
    }
    content
}

pub(super) fn post_content_within(
    root: &str,
    thread: &Thread,
    post: &Post,
    text_chars: usize,
    detail_chars: usize,
) -> Value {
    let text = clip(&post.text, text_chars);
    let mut body = text.clone();
    let mut html = format!("<p>{}</p>", linkify(&text));
    if let Some(card) = &post.approval {
        body.push_str(&format!("\n\nApprove or decline {} at {}", card.what, card.url));
        html.push_str(&format!(
            "<p>✋ <a href=\"{}\"><strong>Approve or decline</strong></a> {}</p>",
            escape(&card.url),
            escape(&card.what)
        ));
    }
    if let Some(detail) = &post.detail {
        let mut shown = clip(detail, detail_chars);
        if shown.len() < detail.len() {
            shown.push_str(&format!("\n(cut: all of it is at {})", thread.url));
        }
        body.push_str(&format!("\n\n{shown}"));
        html.push_str(&format!(
            "<details><summary>Raw data</summary><pre><code>{}</code></pre></details>",
            escape(&shown)
        ));
    }
    let kind = if post.approval.is_some() { "m.text" } else { "m.notice" };
    let mut content = message(kind, body, html);
    content["m.relates_to"] = in_thread(root, root, true);
    // Which event of the investigation's log this tells (clients ignore unknown keys).
    content[POST_KEY] = json!(post.key);
    content
}

/// An answer to a person's message in the thread.
pub(super) fn reply_content(root: &str, to: &str, text: &str) -> Value {
    let mut content = message("m.notice", text.to_string(), format!("<p>{}</p>", linkify(text)));
    content["m.relates_to"] = in_thread(root, to, false);
    content
}

/// In the thread of `root`; clients without threads show it as a reply to `reply_to`
/// (`fallback`: only for them; otherwise a real reply).
pub(super) fn in_thread(root: &str, reply_to: &str, fallback: bool) -> Value {
    json!({
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": fallback,
        "m.in_reply_to": {"event_id": reply_to},
    })
}

/// An `m.room.message` content with HTML; it mentions nobody (a person's name in the
/// text does not ping them).
pub(super) fn message(msgtype: &str, body: String, html: String) -> Value {
    json!({
        "msgtype": msgtype,
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": html,
        "m.mentions": {},
    })
}

/// The `/sync` filter: messages of our rooms by others, nothing else.
pub(super) fn sync_filter(rooms: &[String], bot: &str) -> Value {
    let nothing = json!({"types": []});
    let mut timeline = room_event_filter(bot);
    timeline["limit"] = json!(TIMELINE_LIMIT);
    json!({
        "presence": nothing,
        "account_data": nothing,
        "room": {
            "rooms": rooms,
            "timeline": timeline,
            "state": {"types": [], "lazy_load_members": true},
            "ephemeral": nothing,
            "account_data": nothing,
        },
    })
}

pub(super) fn room_event_filter(bot: &str) -> Value {
    json!({"types": ["m.room.message"], "not_senders": [bot]})
}

/// The question in `event`, if it is a person's message in a thread that mentions the
/// bot. A message with `m.mentions` mentions whom that lists; an older client's
/// message, whom its text names.
pub(super) fn mention_in(room_id: &str, event: &Value, bot: &str) -> Option<Mention> {
    let sender = event["sender"].as_str()?;
    let content = &event["content"];
    if event["type"] != "m.room.message" || sender == bot || content["msgtype"] != "m.text" {
        return None;
    }
    let relation = &content["m.relates_to"];
    if relation["rel_type"] != "m.thread" {
        return None;
    }
    let root = relation["event_id"].as_str()?;
    let body = content["body"].as_str()?;
    let mentioned = match content.get("m.mentions") {
        Some(mentions) => {
            mentions["user_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(bot)))
        }
        None => {
            let html = content["formatted_body"].as_str().unwrap_or_default();
            body.contains(bot) || html.contains(&format!("matrix.to/#/{bot}")) || names_localpart(body, bot)
        }
    };
    let question = question_text(body, bot);
    (mentioned && !question.is_empty()).then(|| Mention {
        room_id: room_id.to_string(),
        root_event_id: root.to_string(),
        event_id: event["event_id"].as_str().unwrap_or_default().to_string(),
        sender: sender.to_string(),
        question,
        sent_at_ms: event["origin_server_ts"].as_i64().unwrap_or_default(),
    })
}

/// Whether `body` starts by addressing the bot by its localpart (`inquest: ...`,
/// `@inquest, ...`), the way clients write a mention pill as text.
pub(super) fn names_localpart(body: &str, bot: &str) -> bool {
    let Some(local) = localpart(bot) else { return false };
    let text = body.trim_start().trim_start_matches('@');
    text.get(..local.len()).is_some_and(|head| head.eq_ignore_ascii_case(local))
        && text[local.len()..].starts_with([':', ','])
}

/// The question in a message's body: a quoted reply fallback and the mention taken out.
pub(super) fn question_text(body: &str, bot: &str) -> String {
    let lines: Vec<&str> = body.lines().skip_while(|l| l.starts_with('>')).collect();
    let mut text = lines.join("\n").replace(bot, " ");
    let trimmed = text.trim_start();
    if let Some(local) = localpart(bot) {
        let head = trimmed.trim_start_matches('@');
        if head.get(..local.len()).is_some_and(|h| h.eq_ignore_ascii_case(local))
            && (head.len() == local.len() || head[local.len()..].starts_with([':', ',', ' ']))
        {
            text = head[local.len()..].to_string();
        }
    }
    text.trim().trim_start_matches([':', ',']).trim().to_string()
}

/// `inquest` of `@inquest:example.org`.
pub(super) fn localpart(user_id: &str) -> Option<&str> {
    let (local, server) = user_id.strip_prefix('@')?.split_once(':')?;
    (!local.is_empty() && !server.is_empty()).then_some(local)
}

pub(super) fn is_room_id(room: &str) -> bool {
    room.len() > 1 && room.starts_with('!') && !room.contains('/') && !room.contains(char::is_whitespace)
}

pub(super) fn escape(text: &str) -> String {
    crate::identity::oidc::escape_html(text)
}

/// `text` as HTML, its `http(s)://` URLs as links, its line breaks kept.
pub(super) fn linkify(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = [rest.find("https://"), rest.find("http://")].into_iter().flatten().min() {
        out.push_str(&escape(&rest[..start]));
        let tail = &rest[start..];
        let end = tail.find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"')).unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '\'', '”', '’']);
        if url.ends_with("://") {
            out.push_str(&escape(url));
        } else {
            out.push_str(&format!("<a href=\"{0}\">{0}</a>", escape(url)));
        }
        rest = &tail[url.len()..];
    }
    out.push_str(&escape(rest));
    out.replace('\n', "<br>")
}
