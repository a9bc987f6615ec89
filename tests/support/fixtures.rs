//! Replays of GitHub's recorded API exchanges (`@octokit/fixtures`): a server that
//! answers each recorded request (method, path, JSON body) with the recorded status,
//! body and content type, once, and keeps every request it has no recording for.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::refclients::{cache_dir, npm_install};

const FIXTURES: &str = "@octokit/fixtures@23.1.2";

struct Recorded {
    method: String,
    path: String,
    body: Value,
    status: u16,
    response: Value,
    content_type: String,
    used: bool,
}

#[derive(Clone)]
struct Shared {
    recorded: Arc<Mutex<Vec<Recorded>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
}

pub struct Replay {
    pub url: String,
    shared: Shared,
    stop: CancellationToken,
}

/// The recorded exchanges of an `api.github.com` scenario.
async fn scenario(name: &str) -> Vec<Recorded> {
    let dir = cache_dir("npm/octokit-fixtures-23.1.2");
    npm_install(&dir, &[FIXTURES]).await;
    let file: PathBuf =
        dir.join(format!("node_modules/@octokit/fixtures/scenarios/api.github.com/{name}/normalized-fixture.json"));
    let all: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    all.into_iter()
        .map(|x| Recorded {
            method: x["method"].as_str().unwrap().to_ascii_uppercase(),
            path: x["path"].as_str().unwrap().to_string(),
            body: x["body"].clone(),
            status: x["status"].as_u64().unwrap() as u16,
            response: x["response"].clone(),
            content_type: x["headers"]["content-type"].as_str().unwrap_or("application/json").to_string(),
            used: false,
        })
        .collect()
}

impl Replay {
    pub async fn start(name: &str) -> Replay {
        let shared = Shared { recorded: Arc::new(Mutex::new(scenario(name).await)), unexpected: Arc::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(answer).with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        Replay { url, shared, stop }
    }

    /// Requests that had no recording, as `METHOD path body`.
    pub fn unexpected(&self) -> Vec<String> {
        self.shared.unexpected.lock().unwrap().clone()
    }

    /// How many recorded exchanges were replayed.
    pub fn replayed(&self) -> usize {
        self.shared.recorded.lock().unwrap().iter().filter(|r| r.used).count()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(State(s): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let sent: Value = if body.is_empty() {
        Value::String(String::new())
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let mut recorded = s.recorded.lock().unwrap();
    let found =
        recorded.iter_mut().find(|r| !r.used && r.method == method.as_str() && r.path == path && r.body == sent);
    let Some(r) = found else {
        s.unexpected.lock().unwrap().push(format!("{method} {path} {sent}"));
        return (StatusCode::NOT_IMPLEMENTED, "no recorded exchange matches this request").into_response();
    };
    r.used = true;
    let status = StatusCode::from_u16(r.status).unwrap();
    match &r.response {
        Value::String(s) if s.is_empty() => status.into_response(),
        body => (status, [("content-type", r.content_type.clone())], body.to_string()).into_response(),
    }
}
