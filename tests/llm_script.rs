//! The scripted OpenAI-compatible server (support/openai.rs), spoken to with plain
//! reqwest: what it answers, what it refuses, and that concurrent conversations each
//! keep their place in the script.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::openai::{Script, ScriptedLlm, Turn};

fn tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "presto__get_query",
            "description": "A Presto query's state and error.",
            "parameters": {"type": "object", "properties": {"query_id": {"type": "string"}}, "required": ["query_id"]},
        },
    }])
}

fn request(messages: &[Value]) -> Value {
    json!({"model": "gpt-test", "messages": messages, "tools": tools()})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

async fn post(llm: &ScriptedLlm, body: &Value) -> (u16, Value) {
    let response =
        reqwest::Client::new().post(format!("{}/chat/completions", llm.base_url())).json(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `response` with its id, timestamp and usage checked and then blanked, so the rest
/// can be compared whole.
fn settled(mut response: Value, sent: &Value) -> Value {
    assert!(response["id"].as_str().unwrap().starts_with("chatcmpl-"), "{response}");
    assert!(response["created"].as_u64().unwrap() > 1_700_000_000, "{response}");
    let prompt = serde_json::to_vec(sent).unwrap().len() as u64 / 4;
    let completion = response["choices"][0]["message"].to_string().len() as u64 / 4;
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    assert_eq!(response["usage"], usage);
    response["id"] = json!("-");
    response["created"] = json!(0);
    response["usage"] = json!("-");
    response
}

#[tokio::test]
async fn a_conversation_gets_a_tool_call_then_the_answer() {
    let llm = ScriptedLlm::start(Script::new(vec![
        Turn::ToolCalls(vec![("presto__get_query".into(), json!({"query_id": "q1"}))]),
        Turn::Content("The table was dropped.".into()),
    ]))
    .await;
    let mut messages = vec![json!({"role": "system", "content": "You investigate alerts."}), user("PrestoQueryFailed")];

    let sent = request(&messages);
    let (status, first) = post(&llm, &sent).await;
    assert_eq!(status, 200, "{first}");
    let call = json!({
        "id": "call_0_0",
        "type": "function",
        "function": {"name": "presto__get_query", "arguments": "{\"query_id\":\"q1\"}"},
    });
    assert_eq!(
        settled(first.clone(), &sent),
        json!({
            "id": "-",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-test",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "tool_calls": [call], "refusal": null},
                "finish_reason": "tool_calls",
                "logprobs": null,
            }],
            "usage": "-",
        })
    );

    messages.push(first["choices"][0]["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": "call_0_0", "content": "{\"state\":\"FAILED\"}"}));
    let sent = request(&messages);
    let (status, second) = post(&llm, &sent).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        settled(second, &sent)["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "The table was dropped.", "refusal": null},
            "finish_reason": "stop",
            "logprobs": null,
        }])
    );

    assert_eq!(llm.violations(), Vec::<String>::new());
    assert_eq!(llm.request_count(), 2);
    assert_eq!(llm.requests()[1]["messages"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn malformed_requests_get_a_400_and_a_violation() {
    let secret = "sk-live-0123456789abcdefghij";
    let llm = ScriptedLlm::start(
        Script::new(vec![Turn::ToolCalls(vec![("presto__get_query".into(), json!({}))])]).forbid(secret),
    )
    .await;
    let called = json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": "call_0_0", "type": "function", "function": {"name": "presto__get_query", "arguments": "{}"},
    }]});
    let bad_tool = json!([{"type": "function", "function": {"name": "presto.get_query", "parameters": {}}}]);
    // (request, what its violation says)
    let cases = [
        (request(&[user("a"), called.clone(), user("b")]), "tool calls call_0_0 are not answered before messages[2]"),
        (request(&[user(&format!("the key is {secret}"))]), "forbidden string"),
        (json!({"model": "gpt-test", "messages": [user("a")]}), "script calls a tool the request did not offer"),
        (
            request(&[user("a"), json!({"role": "tool", "tool_call_id": "call_9_9", "content": "x"})]),
            "answers tool call call_9_9, which no assistant message made",
        ),
        (json!({"model": "gpt-test", "messages": [user("a")], "tools": bad_tool}), "not ^[a-zA-Z0-9_-]{1,64}$"),
        (json!({"model": "", "messages": []}), "`messages` is not a non-empty array"),
        (request(&[json!({"role": "robot", "content": "a"})]), "`robot` is not a role"),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let (status, answer) = post(&llm, body).await;
        assert_eq!(status, 400, "case {i}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
        assert_eq!((&answer["error"]["param"], &answer["error"]["code"]), (&Value::Null, &Value::Null));
        assert!(answer["error"]["message"].as_str().unwrap().contains(expected), "case {i}: {answer}");
        let violations = llm.violations();
        let this: Vec<&String> = violations.iter().filter(|v| v.starts_with(&format!("request {i}: "))).collect();
        assert!(this.iter().any(|v| v.contains(expected)), "case {i}: {violations:#?}");
    }
    assert_eq!(llm.request_count(), cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conversations_each_get_their_own_turn_after_the_latency() {
    let latency = Duration::from_millis(300);
    let llm = ScriptedLlm::start(
        Script::new(vec![
            Turn::Content("turn 0".into()),
            Turn::Content("turn 1".into()),
            Turn::Content("turn 2".into()),
        ])
        .latency(latency)
        // Conversations about "echo" are answered by the responder, the rest by the script.
        .responder(|request, turn| {
            let text = request["messages"][0]["content"].as_str()?;
            text.starts_with("echo").then(|| Turn::Content(format!("{text} at {turn}")))
        }),
    )
    .await;
    let conversation = |first: String, turn: usize| {
        let mut messages = vec![user(&first)];
        for k in 0..turn {
            messages.push(assistant(&format!("answer {k}")));
            messages.push(user("go on"));
        }
        request(&messages)
    };
    let bodies: Vec<(Value, String)> = (0..6)
        .map(|i| {
            let turn = i % 3;
            if i < 3 {
                (conversation(format!("alert {i}"), turn), format!("turn {turn}"))
            } else {
                (conversation(format!("echo {i}"), turn), format!("echo {i} at {turn}"))
            }
        })
        .collect();

    let started = Instant::now();
    let answers = futures::future::join_all(bodies.iter().map(|(body, _)| post(&llm, body))).await;
    let elapsed = started.elapsed();

    for ((status, answer), (_, expected)) in answers.iter().zip(&bodies) {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["choices"][0]["message"]["content"], json!(expected));
    }
    assert!(elapsed >= latency, "answered after {elapsed:?}");
    // Six answers one after another would take 1.8 s: they wait side by side.
    assert!(elapsed < latency * 4, "answered after {elapsed:?}");
    assert_eq!(llm.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn failures_hangs_and_an_exhausted_script() {
    let llm = ScriptedLlm::start(Script::new(vec![Turn::Fail(429), Turn::Hang])).await;
    let turn = |n: usize| {
        let mut messages = vec![user("a")];
        for _ in 0..n {
            messages.extend([assistant("b"), user("c")]);
        }
        request(&messages)
    };

    let (status, answer) = post(&llm, &turn(0)).await;
    assert_eq!(status, 429);
    assert_eq!(
        answer,
        json!({"error": {"message": "scripted failure 429", "type": "requests", "param": null, "code": null}})
    );

    let hung = reqwest::Client::new()
        .post(format!("{}/chat/completions", llm.base_url()))
        .timeout(Duration::from_millis(300))
        .json(&turn(1))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());

    let (status, answer) = post(&llm, &turn(2)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["message"]["content"], "script exhausted");
    assert_eq!(llm.violations(), ["request 2: the script is exhausted at turn 2"]);

    // Dropped, it stops listening.
    let url = llm.base_url();
    drop(llm);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = reqwest::Client::new().post(format!("{url}/chat/completions")).json(&turn(0)).send().await;
    assert!(after.is_err(), "{after:?}");
}
