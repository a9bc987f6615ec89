//! A tiny MCP server over Streamable HTTP, for tests that need a peer that speaks
//! both protocol revisions (the registry's prober, later the agent's sessions).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler};
use tokio_util::sync::CancellationToken;

/// Serves `tools` (names); `echo`-like behaviour for every call.
#[derive(Clone)]
pub struct FakeServer {
    tools: Arc<std::sync::Mutex<Vec<String>>>,
    pub calls: Arc<AtomicUsize>,
}

impl ServerHandler for FakeServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}}))
                .unwrap();
        let schema = Arc::new(schema);
        let names = self.tools.lock().unwrap().clone();
        let tools = names
            .into_iter()
            .map(|n| {
                let read_only = !n.starts_with("clear") && !n.starts_with("kill");
                Tool::new(n.clone(), format!("the {n} tool"), schema.clone())
                    .with_title(n.replace('_', " "))
                    .with_annotations(ToolAnnotations::new().read_only(read_only).destructive(!read_only))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // Misbehaviours by name, for the agent's session tests.
        match request.name.as_ref() {
            "hang" => tokio::time::sleep(std::time::Duration::from_secs(3600)).await,
            "slow" => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
            "fail" => return Ok(CallToolResult::error(vec![ContentBlock::text("the backend said no")]).into()),
            _ => {}
        }
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("{} {args}", request.name))]).into())
    }
}

pub struct FakeMcp {
    pub url: String,
    pub server: FakeServer,
    stop: CancellationToken,
}

impl FakeMcp {
    pub async fn start(tools: &[&str]) -> FakeMcp {
        let server = FakeServer {
            tools: Arc::new(std::sync::Mutex::new(tools.iter().map(|t| t.to_string()).collect())),
            calls: Arc::new(AtomicUsize::new(0)),
        };
        let stop = CancellationToken::new();
        let handler = server.clone();
        let service: StreamableHttpService<FakeServer, LocalSessionManager> = StreamableHttpService::new(
            move || Ok(handler.clone()),
            Default::default(),
            StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token()),
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        FakeMcp { url, server, stop }
    }

    /// Changes the advertised tool list (to exercise change detection).
    pub fn set_tools(&self, tools: &[&str]) {
        *self.server.tools.lock().unwrap() = tools.iter().map(|t| t.to_string()).collect();
    }
}

impl Drop for FakeMcp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A playbook over the fake server's `echo`: it finds the echoed word.
pub const ECHO_PLAYBOOK: &str = r#"
name: echo-failure
description: d
manual_minutes: 15
match: {labels: ['alertname="EchoFailed"']}
steps:
  - {id: say, tool: fake__echo, args: {text: "{{ labels.word }}"}}
findings:
  - {id: word, step: say, regex: 'echo .*"(?P<word>\w+)"', category: echoed, summary: "the server echoed {{ match.word }}"}
"#;

/// The echo playbook's fix: pin the echoed word in the word's config file.
pub const ECHO_REMEDIATION: &str = r#"remediations:
  - id: pin_word
    when: [word]
    title: "Pin the word of {{ labels.word }}"
    files:
      - path: "conf/{{ labels.word }}.conf"
        find: 'word = \w+'
        replace: "word = {{ findings.word.category }}"
"#;

/// The investigation an `EchoFailed` alert with label `word` opens in `store`.
pub async fn echo_investigation(store: &inquest::store::SqlStore, word: &str) -> inquest::store::InvestigationSummary {
    use inquest::intake::{self, Source};
    use inquest::store::{IngestPolicy, IngestRequest, Store};

    let body = serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"EchoFailed\"}", "status": "firing", "receiver": "inquest",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "EchoFailed", "word": word},
                    "annotations": {}, "startsAt": "2026-11-26T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "f1"}],
    })
    .to_string();
    let delivery = intake::parse(Source::Alertmanager, body.as_bytes(), None).unwrap();
    let request = IngestRequest { delivery, team: "data".into(), service: None, body };
    let policy = IngestPolicy {
        cooldown: std::time::Duration::from_secs(600),
        on_resolved: inquest::config::OnResolved::Continue,
    };
    let out = store.ingest(vec![request], &policy, chrono::Utc::now()).await.unwrap();
    store.investigation(&out[0].new_investigations[0]).await.unwrap().unwrap()
}
