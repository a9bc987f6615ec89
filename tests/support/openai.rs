//! A scripted OpenAI-compatible chat-completions server: the LLM the agent talks to in
//! tests. Benches include this file by path, so it uses nothing else in tests/support.
//!
//! It keeps no state per conversation: a request's turn is the number of assistant
//! messages it already carries, so any number of concurrent conversations each get
//! their own place in the script. Every request is checked against what the real API
//! would refuse; each problem is recorded as a violation and answered with a 400, so a
//! test that ends with `violations()` empty knows the agent spoke the protocol.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// Function calls: (function name, arguments object). Their ids are
    /// `call_<turn>_<i>`, unique within a conversation.
    ToolCalls(Vec<(String, Value)>),
    /// A final text answer.
    Content(String),
    /// That HTTP status with an OpenAI error body.
    Fail(u16),
    /// No answer for as long as the server runs.
    Hang,
}

/// Decides a turn from the request and its turn index; `None` falls back to the script.
pub type Responder = Arc<dyn Fn(&Value, usize) -> Option<Turn> + Send + Sync>;

/// What the server answers and what it must never receive.
#[derive(Clone, Default)]
pub struct Script {
    /// The answer for each turn index.
    pub turns: Vec<Turn>,
    /// Waited before every answer.
    pub latency: Duration,
    /// Strings (secrets) that must not occur anywhere in a request body.
    pub forbidden: Vec<String>,
    /// Consulted before `turns`.
    pub responder: Option<Responder>,
    /// Count requests without keeping their bodies (`requests()` gives nulls), so a
    /// benchmark's many conversations do not pile up in memory.
    pub forget_bodies: bool,
}

impl Script {
    pub fn new(turns: Vec<Turn>) -> Script {
        Script { turns, ..Script::default() }
    }

    pub fn latency(mut self, latency: Duration) -> Script {
        self.latency = latency;
        self
    }

    pub fn forbid(mut self, text: impl Into<String>) -> Script {
        self.forbidden.push(text.into());
        self
    }

    pub fn forget_bodies(mut self) -> Script {
        self.forget_bodies = true;
        self
    }

    pub fn responder(mut self, f: impl Fn(&Value, usize) -> Option<Turn> + Send + Sync + 'static) -> Script {
        self.responder = Some(Arc::new(f));
        self
    }
}

/// The running server; it stops when dropped.
pub struct ScriptedLlm {
    base_url: String,
    shared: Arc<Shared>,
}

impl ScriptedLlm {
    /// Serves `script` on a free port of 127.0.0.1.
    pub async fn start(script: Script) -> ScriptedLlm {
        let stop = CancellationToken::new();
        let shared =
            Arc::new(Shared { script, requests: Mutex::default(), violations: Mutex::default(), stop: stop.clone() });
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/chat/completions", post(complete))
            // A conversation carries every tool output so far; axum's 2 MB default is
            // smaller than a long investigation.
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("the scripted LLM cannot bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the scripted LLM has no local address: {e}"),
        };
        tokio::spawn(async move {
            // Hanging answers end on the same token, so the graceful drain finishes.
            let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
        ScriptedLlm { base_url: format!("http://{addr}/v1"), shared }
    }

    /// `http://127.0.0.1:PORT/v1`, what an OpenAI client takes as its base URL.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// `[llm]` settings for this server (model `scripted-1`), within `budget`.
    pub fn config(
        &self,
        api_key: &str,
        timeout: Duration,
        budget: &inquest::planner::Budget,
    ) -> inquest::config::LlmConfig {
        inquest::config::LlmConfig {
            base_url: self.base_url(),
            model: "scripted-1".into(),
            api_key: Some(api_key.to_string().into()),
            timeout,
            max_steps: budget.max_steps,
            max_tokens: budget.max_tokens,
            max_cost_usd: budget.max_cost_usd,
            max_time: budget.max_time,
            max_tools: 24,
            prices: std::collections::BTreeMap::new(),
        }
    }

    /// Every request body received, in order (a body that is not JSON as a string).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// Every problem found so far, each naming its request's index.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared.violations).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

struct Shared {
    script: Script,
    requests: Mutex<Vec<Value>>,
    violations: Mutex<Vec<String>>,
    stop: CancellationToken,
}

/// A panicking test thread must not hide the other tests' records.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let index = {
        let mut requests = lock(&shared.requests);
        let recorded = match &parsed {
            _ if shared.script.forget_bodies => Value::Null,
            Ok(v) => v.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        };
        requests.push(recorded);
        requests.len() - 1
    };

    let mut problems = forbidden_in(&shared.script.forbidden, &body, parsed.as_ref().ok());
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/json") {
        problems.push(format!("the content type is {content_type:?}, not application/json"));
    }
    let mut answer = None;
    match &parsed {
        Err(e) => problems.push(format!("the body is not JSON: {e}")),
        Ok(request) => {
            problems.extend(check_request(request));
            if problems.is_empty() {
                let turn = turn_index(request);
                let chosen = choose(&shared.script, request, turn);
                if chosen.is_none() {
                    // Answered anyway, so the agent under test finishes and the test can
                    // report the violation instead of a hang.
                    record(&shared, index, vec![format!("the script is exhausted at turn {turn}")]);
                }
                let chosen = chosen.unwrap_or_else(|| Turn::Content("script exhausted".into()));
                problems.extend(unoffered_calls(request, &chosen));
                answer = Some((request, turn, chosen));
            }
        }
    }
    record(&shared, index, problems.clone());

    tokio::select! {
        _ = tokio::time::sleep(shared.script.latency) => {}
        _ = shared.stop.cancelled() => return stopped(),
    }
    let Some((request, turn, chosen)) = answer.filter(|_| problems.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, &problems.join("; "));
    };
    match chosen {
        Turn::Hang => {
            shared.stop.cancelled().await;
            stopped()
        }
        Turn::Fail(code) => match StatusCode::from_u16(code) {
            Ok(status) => error(status, &format!("scripted failure {code}")),
            Err(_) => {
                record(&shared, index, vec![format!("the script fails with {code}, which is no HTTP status")]);
                error(StatusCode::INTERNAL_SERVER_ERROR, "invalid scripted status")
            }
        },
        Turn::ToolCalls(calls) => completion(request, body.len(), tool_calls_message(turn, &calls), "tool_calls"),
        Turn::Content(text) => {
            completion(request, body.len(), json!({"role": "assistant", "content": text, "refusal": null}), "stop")
        }
    }
}

fn record(shared: &Shared, index: usize, problems: Vec<String>) {
    lock(&shared.violations).extend(problems.into_iter().map(|p| format!("request {index}: {p}")));
}

/// The number of assistant messages already in the conversation.
fn turn_index(request: &Value) -> usize {
    let messages = request["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    messages.iter().filter(|m| m["role"] == "assistant").count()
}

fn choose(script: &Script, request: &Value, turn: usize) -> Option<Turn> {
    script.responder.as_ref().and_then(|f| f(request, turn)).or_else(|| script.turns.get(turn).cloned())
}

fn tool_calls_message(turn: usize, calls: &[(String, Value)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, arguments))| {
            json!({
                "id": format!("call_{turn}_{i}"),
                "type": "function",
                // The API sends arguments as a JSON string, not an object.
                "function": {"name": name, "arguments": arguments.to_string()},
            })
        })
        .collect();
    json!({"role": "assistant", "content": null, "tool_calls": calls, "refusal": null})
}

/// A successful response in the API's shape. Token counts are a stand-in: a quarter of
/// the bytes, so bigger prompts cost more.
fn completion(request: &Value, request_bytes: usize, message: Value, finish_reason: &str) -> Response {
    let prompt_tokens = (request_bytes / 4).max(1);
    let completion_tokens = (message.to_string().len() / 4).max(1);
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let body = json!({
        "id": format!("chatcmpl-scripted-{}", uuid::Uuid::now_v7().simple()),
        "object": "chat.completion",
        "created": created,
        "model": request["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    let kind = match status.as_u16() {
        429 => "requests",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (status, axum::Json(body)).into_response()
}

/// What a request still waiting gets when the server stops.
fn stopped() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the scripted LLM stopped")
}

/// Forbidden strings in the raw body, or in any string of the parsed body (where JSON
/// escaping could have hidden them from the raw check).
fn forbidden_in(forbidden: &[String], raw: &[u8], parsed: Option<&Value>) -> Vec<String> {
    let raw = String::from_utf8_lossy(raw);
    let mut strings = Vec::new();
    if let Some(v) = parsed {
        collect_strings(v, &mut strings);
    }
    forbidden
        .iter()
        .filter(|f| raw.contains(f.as_str()) || strings.iter().any(|s| s.contains(f.as_str())))
        .map(|f| format!("the body contains the forbidden string {f:?}"))
        .collect()
}

fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k);
            collect_strings(v, out);
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Names in a scripted tool-call turn that the request's `tools` do not offer.
fn unoffered_calls(request: &Value, turn: &Turn) -> Vec<String> {
    let Turn::ToolCalls(calls) = turn else {
        return Vec::new();
    };
    let offered: HashSet<&str> = request["tools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    calls
        .iter()
        .filter(|(name, _)| !offered.contains(name.as_str()))
        .map(|(name, _)| format!("script calls a tool the request did not offer: {name}"))
        .collect()
}

/// Everything the API would refuse in a request body.
fn check_request(request: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if request["model"].as_str().is_none_or(str::is_empty) {
        problems.push("`model` is not a non-empty string".to_string());
    }
    match request["messages"].as_array() {
        Some(messages) if !messages.is_empty() => {
            for (i, m) in messages.iter().enumerate() {
                problems.extend(check_message(m).into_iter().map(|p| format!("messages[{i}]: {p}")));
            }
            problems.extend(check_pairing(messages));
        }
        _ => problems.push("`messages` is not a non-empty array".to_string()),
    }
    if let Some(tools) = request.get("tools") {
        problems.extend(check_tools(tools));
    }
    problems
}

fn check_message(m: &Value) -> Vec<String> {
    let Some(role) = m["role"].as_str() else {
        return vec!["no string `role`".to_string()];
    };
    let content = m.get("content").filter(|c| !c.is_null());
    let mut problems = Vec::new();
    match role {
        "system" | "developer" | "user" | "tool" => {
            if !content.is_some_and(is_content) {
                problems.push(format!("a {role} message needs content as a string or an array of parts"));
            }
            if role == "tool" && m["tool_call_id"].as_str().is_none_or(str::is_empty) {
                problems.push("a tool message needs a `tool_call_id`".to_string());
            }
        }
        "assistant" => {
            let calls = m.get("tool_calls").filter(|c| !c.is_null());
            match (content, calls) {
                (Some(c), _) if !is_content(c) => {
                    problems.push("assistant content is neither a string nor an array of parts".to_string())
                }
                (None, None) => problems.push("an assistant message has neither content nor tool_calls".to_string()),
                _ => {}
            }
            match calls.map(|c| c.as_array().filter(|a| !a.is_empty())) {
                None => {}
                Some(None) => problems.push("`tool_calls` is not a non-empty array".to_string()),
                Some(Some(calls)) => problems.extend(calls.iter().filter_map(check_tool_call)),
            }
        }
        other => problems.push(format!("`{other}` is not a role")),
    }
    problems
}

fn is_content(c: &Value) -> bool {
    match c {
        Value::String(_) => true,
        Value::Array(parts) => !parts.is_empty() && parts.iter().all(|p| p["type"].is_string()),
        _ => false,
    }
}

fn check_tool_call(call: &Value) -> Option<String> {
    let id = call["id"].as_str().unwrap_or("");
    let ok = !id.is_empty()
        && call["type"] == "function"
        && call["function"]["name"].as_str().is_some_and(|n| !n.is_empty())
        // A common mistake: arguments sent back as an object instead of a JSON string.
        && call["function"]["arguments"].is_string();
    (!ok).then(|| format!("tool call {call} is not {{id, type: function, function: {{name, arguments: string}}}}"))
}

/// Every call of an assistant message answered by exactly one tool message before the
/// next message of another role; no tool message answering anything else.
fn check_pairing(messages: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut called: HashSet<&str> = HashSet::new();
    let mut answered: HashSet<&str> = HashSet::new();
    let mut pending: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap_or("");
            if let Some(at) = pending.iter().position(|p| *p == id) {
                pending.remove(at);
                answered.insert(id);
            } else if answered.contains(id) {
                problems.push(format!("messages[{i}] answers tool call {id} a second time"));
            } else if called.contains(id) {
                problems.push(format!("messages[{i}] answers tool call {id} after another message came between"));
            } else {
                problems.push(format!("messages[{i}] answers tool call {id}, which no assistant message made"));
            }
            continue;
        }
        if !pending.is_empty() {
            problems.push(format!("tool calls {} are not answered before messages[{i}]", pending.join(", ")));
            pending.clear();
        }
        let calls = if m["role"] == "assistant" { m["tool_calls"].as_array().map(Vec::as_slice) } else { None };
        for id in calls.unwrap_or_default().iter().filter_map(|c| c["id"].as_str()) {
            if !called.insert(id) {
                problems.push(format!("messages[{i}] repeats the tool call id {id}"));
            }
            pending.push(id);
        }
    }
    if !pending.is_empty() {
        problems.push(format!("tool calls {} are not answered at the end of the messages", pending.join(", ")));
    }
    problems
}

fn check_tools(tools: &Value) -> Vec<String> {
    let Some(tools) = tools.as_array().filter(|t| !t.is_empty()) else {
        // The API refuses `[]` too: no tools means leaving the field out.
        return vec!["`tools` is not a non-empty array".to_string()];
    };
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let function = &tool["function"];
        let name = function["name"].as_str().unwrap_or("");
        if tool["type"] != "function" {
            problems.push(format!("tools[{i}] is not of type function"));
        }
        if !is_function_name(name) {
            problems.push(format!("tools[{i}] has the name {}, not ^[a-zA-Z0-9_-]{{1,64}}$", function["name"]));
        }
        if !function["parameters"].is_object() {
            problems.push(format!("tools[{i}] ({name}) has no `parameters` object"));
        }
        if !names.insert(name) {
            problems.push(format!("tools[{i}] repeats the name {name}"));
        }
    }
    problems
}

fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
