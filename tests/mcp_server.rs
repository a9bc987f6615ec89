//! The MCP server framework end to end: a fake domain served by `inquest::mcp::serve`,
//! real rmcp clients over real HTTP and mTLS, the real registry (`inquest registry`,
//! in-process, SQLite) for policy and approvals. People act at the registry through a
//! side door over the same store (a test layer names the caller).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use inquest::identity::Principal;
use inquest::identity::devca;
use inquest::identity::jwt::DevIssuer;
use inquest::identity::mtls::{self, MtlsListener, MtlsPeer};
use inquest::identity::svid::SvidSource;
use inquest::mcp::{self, Deps, Domain, Hints, RegistryLink, ServerSettings, ToolCall, ToolError, ToolSpec};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
    ElicitationAction, Implementation, ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::support::server::config_with;

const TD: &str = "inquest.local";
const SERVER_ID: &str = "spiffe://inquest.local/server/fake";
const AGENT_ID: &str = "spiffe://inquest.local/agent";

// ---- the fake domain ----

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct EchoArgs {
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct EchoOut {
    echo: String,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct RestartArgs {
    job: String,
}

#[derive(Serialize, JsonSchema)]
struct RestartOut {
    restarted: String,
}

#[derive(Default)]
struct Fake {
    /// Arguments of every execution of the sensitive tool.
    restarts: Mutex<Vec<Map<String, Value>>>,
    /// Whether the slow tool saw its cancellation token fire.
    cancelled: AtomicBool,
}

#[async_trait]
impl Domain for Fake {
    fn id(&self) -> &'static str {
        "fake"
    }

    fn description(&self) -> &'static str {
        "A fake domain for the framework's tests"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec::new::<EchoArgs, EchoOut>("echo", "Echo", "Echoes its text", Hints::READ),
            ToolSpec::new::<EchoArgs, EchoOut>("admin_only", "Admin only", "Only admins may use it", Hints::READ),
            ToolSpec::new::<EchoArgs, EchoOut>("slow", "Slow", "Takes long and reports progress", Hints::READ),
            ToolSpec::new::<RestartArgs, RestartOut>("restart", "Restart", "Restarts a job", Hints::DESTRUCTIVE)
                .sensitive(),
        ]
    }

    fn backend(&self) -> String {
        "fake at memory".into()
    }

    async fn healthy(&self) -> Result<(), ToolError> {
        Ok(())
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<Value, ToolError> {
        match call.tool {
            "echo" | "admin_only" => {
                let text = call.args.get("text").and_then(Value::as_str).unwrap_or_default();
                Ok(json!({"echo": text}))
            }
            "slow" => {
                for i in 0..600 {
                    call.progress.report(f64::from(i), Some(600.0), "working").await;
                    tokio::select! {
                        _ = call.cancel.cancelled() => {
                            self.cancelled.store(true, Ordering::SeqCst);
                            return Err(ToolError::Cancelled);
                        }
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                Ok(json!({"echo": "done"}))
            }
            "restart" => {
                self.restarts.lock().unwrap().push(call.args.clone());
                Ok(json!({"restarted": call.args.get("job").cloned().unwrap_or(Value::Null)}))
            }
            other => Err(ToolError::UnknownTool(other.into())),
        }
    }
}

// ---- the world: registry, server, identities ----

struct World {
    _dir: tempfile::TempDir,
    fake: Arc<Fake>,
    /// The MCP endpoint over plain HTTP (bearer tokens).
    url: String,
    /// The same endpoint over mTLS (services).
    mtls_url: String,
    agent_http: reqwest::Client,
    /// The registry's mesh listener, and the agent's client for it.
    mesh_url: String,
    agent_registry_http: reqwest::Client,
    issuer: DevIssuer,
    side_door: Router,
    stop: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn as_test_principal(mut req: Request, next: Next) -> Response {
    if let Some(p) =
        req.headers().get("x-test-principal").and_then(|v| serde_json::from_slice::<Principal>(v.as_bytes()).ok())
    {
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

fn admin() -> Principal {
    Principal::user("root", &["admins"])
}

fn approver() -> Principal {
    Principal::user("alice", &["approvers"])
}

impl World {
    async fn start() -> World {
        inquest::identity::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let store_url = format!("sqlite://{}/store.db", dir.path().display());
        let config = config_with(
            dir.path(),
            &[("INQUEST_STORE__URL", store_url.as_str()), ("INQUEST_REGISTRY__ADMINS", "group:admins")],
        );
        let paths = devca::ensure_dev_identities_with(dir.path(), TD, &[SERVER_ID.to_string()]).unwrap();
        let server_svid: Arc<dyn SvidSource> = Arc::new(paths.file_source(SERVER_ID).unwrap());
        let agent_svid: Arc<dyn SvidSource> = Arc::new(paths.file_source(AGENT_ID).unwrap());
        let stop = CancellationToken::new();

        // The registry role, with its mesh listener.
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public_url = format!("http://{}", public.local_addr().unwrap());
        let mesh = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mesh_url = format!("https://{}", mesh.local_addr().unwrap());
        let listeners = inquest::app::Listeners { public, mesh: Some(mesh) };
        tokio::spawn(inquest::app::run(config.clone(), inquest::app::Role::Registry, listeners, stop.clone()));
        let plain = reqwest::Client::new();
        for _ in 0..400 {
            if plain.get(format!("{public_url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        // The side door: the registry's routes over the same store, caller named by a header.
        let store = Arc::new(inquest::store::SqlStore::open(&store_url, 2).await.unwrap());
        let state = inquest::registry::RegistryState {
            config: Arc::new(config.registry.clone()),
            store,
            clock: Arc::new(inquest::clock::SystemClock),
            policy: Arc::new(inquest::registry::authz::PolicyCache::default()),
        };
        let side_door = inquest::registry::router(state).layer(axum::middleware::from_fn(as_test_principal));

        // The MCP server: plain HTTP for bearer tokens, mTLS for services.
        let fake = Arc::new(Fake::default());
        let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp/fake", plain_listener.local_addr().unwrap());
        let mtls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mtls_url = format!("https://{}/mcp/fake", mtls_listener.local_addr().unwrap());
        let issuer = DevIssuer::generate("https://issuer.test").unwrap();
        let registry_http = mtls::http_client(server_svid.clone(), vec![format!("spiffe://{TD}/registry")]).unwrap();
        let mut settings = ServerSettings::new("fake", &url);
        settings.policy_ttl = Duration::from_millis(200);
        settings.elicitation_wait = Duration::from_secs(2);
        settings.call_timeout = Duration::from_secs(20);
        let deps = Deps {
            jwt: Some(issuer.validator("unused").unwrap()),
            registry: Some(RegistryLink { url: mesh_url.clone(), http: registry_http }),
            audit_dir: Some(dir.path().to_path_buf()),
            binds: vec![plain_listener.local_addr().unwrap(), mtls_listener.local_addr().unwrap()],
            ..Default::default()
        };
        let served = mcp::serve(fake.clone(), settings, deps, stop.clone()).unwrap();
        let router = served.router;
        let token = stop.clone();
        let app = router.clone().into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move {
            let _ = axum::serve(plain_listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        let tls = mtls::server_config(server_svid, vec![AGENT_ID.to_string()]).unwrap();
        let listener = MtlsListener::new(mtls_listener, tls).unwrap();
        let token = stop.clone();
        tokio::spawn(async move {
            let app = router.into_make_service_with_connect_info::<MtlsPeer>();
            let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        let agent_http = mtls::http_client(agent_svid.clone(), vec![SERVER_ID.to_string()]).unwrap();
        let agent_registry_http = mtls::http_client(agent_svid, vec![format!("spiffe://{TD}/registry")]).unwrap();

        let world = World {
            _dir: dir,
            fake,
            url,
            mtls_url,
            agent_http,
            mesh_url,
            agent_registry_http,
            issuer,
            side_door,
            stop,
        };
        world.register().await;
        // The server publishes itself once the registry's policy cache knows the policy
        // just written (it names the server's SPIFFE ID); from then on that cache is current.
        world.registered_entry().await;
        world
    }

    /// The version the server published of itself (waits for it).
    async fn registered_entry(&self) -> Value {
        let path = format!("/v0.1/servers/dev.inquest%2Ffake/versions/{}", env!("CARGO_PKG_VERSION"));
        for _ in 0..100 {
            let (status, body) = self.registry(&admin(), "GET", &path, None).await;
            if status == 200 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the server never registered itself");
    }

    async fn registry(&self, who: &Principal, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-test-principal", serde_json::to_string(who).unwrap())
            .header("content-type", "application/json");
        if body.is_none() {
            req = req.header("content-length", "0");
        }
        let req = req.body(body.map_or(Body::empty(), |b| Body::from(b.to_string()))).unwrap();
        let resp = self.side_door.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Publishes the server and writes its policy, approved for production.
    async fn register(&self) {
        let doc = json!({
            "name": "dev.inquest/fake", "description": "fake", "version": "1.0.0",
            "remotes": [{"type": "streamable-http", "url": self.url}]
        });
        let (s, b) = self.registry(&admin(), "POST", "/v0.1/publish", Some(doc)).await;
        assert_eq!(s, 200, "{b}");
        let policy = json!({
            "owner": {"team": "data"},
            "service_identity": SERVER_ID,
            "access": {
                "allowed": ["group:oncall", AGENT_ID],
                "tools": {
                    "echo": {}, "slow": {},
                    "admin_only": {"allowed": ["group:admins"]},
                    "restart": {"approval": {"approvers": ["group:approvers"], "required": 1}}
                }
            }
        });
        let base = "/v0.1/x/servers/dev.inquest%2Ffake";
        let (s, b) = self.registry(&admin(), "PUT", &format!("{base}/policy"), Some(policy)).await;
        assert_eq!(s, 200, "{b}");
        for review in ["security-review", "production-approval"] {
            let (s, b) =
                self.registry(&admin(), "PUT", &format!("{base}/{review}"), Some(json!({"state": "approved"}))).await;
            assert_eq!(s, 200, "{b}");
        }
    }

    /// A person approves the request behind an approval URL.
    async fn approve(&self, url: &str) {
        self.decide(url, "approve").await;
    }

    /// A person approves or declines the request behind an approval URL.
    async fn decide(&self, url: &str, decision: &str) {
        let id = url.rsplit('/').next().unwrap();
        let (s, view) = self.registry(&admin(), "GET", &format!("/v0.1/x/approvals/{id}"), None).await;
        assert_eq!(s, 200, "{view}");
        let body = json!({"decision": decision, "digest": view["digest"]});
        let (s, b) = self.registry(&approver(), "POST", &format!("/v0.1/x/approvals/{id}/decision"), Some(body)).await;
        assert_eq!(s, 200, "{b}");
    }

    fn token(&self, subject: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.issuer.mint(subject, &groups, &self.url, Duration::from_secs(300)).unwrap()
    }

    /// An rmcp client as the agent (mTLS).
    async fn agent(&self, lifecycle: ClientLifecycleMode, person: Person) -> RunningService<RoleClient, Person> {
        let transport = StreamableHttpClientTransport::with_client(
            self.agent_http.clone(),
            StreamableHttpClientTransportConfig::with_uri(self.mtls_url.clone()),
        );
        person.serve_with_lifecycle(transport, lifecycle).await.unwrap()
    }

    /// An rmcp client as a person with a bearer token.
    async fn user(&self, token: &str, lifecycle: ClientLifecycleMode) -> RunningService<RoleClient, Person> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone()).auth_header(token.to_string());
        let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
        Person::default().serve_with_lifecycle(transport, lifecycle).await.unwrap()
    }

    fn restarts(&self) -> usize {
        self.fake.restarts.lock().unwrap().len()
    }
}

fn legacy() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn modern() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }
}

/// A client that accepts every elicitation at once (as a prompt-injected client might)
/// and records what it was asked and what progress it saw.
#[derive(Clone, Default)]
struct Person {
    url_mode: bool,
    elicitations: Arc<Mutex<Vec<ElicitRequestParams>>>,
    progress: Arc<Mutex<Vec<f64>>>,
}

impl ClientHandler for Person {
    fn get_info(&self) -> ClientConfig {
        let elicitation = if self.url_mode { json!({"form": {}, "url": {}}) } else { json!({"form": {}}) };
        let caps: ClientCapabilities = serde_json::from_value(json!({"elicitation": elicitation})).unwrap();
        ClientConfig::new(caps, Implementation::new("mcp-server-test", "1.0.0"))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.elicitations.lock().unwrap().push(request);
        Ok(ElicitResult::new(ElicitationAction::Accept))
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.progress.lock().unwrap().push(params.progress);
    }
}

fn call(name: &str, args: Value) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new(name.to_string());
    p.arguments = args.as_object().cloned();
    p
}

/// The approval URL of a -32042 error.
fn elicitation_url(error: &rmcp::ServiceError) -> String {
    let rmcp::ServiceError::McpError(e) = error else { panic!("not a protocol error: {error}") };
    assert_eq!(e.code.0, -32042, "{e:?}");
    e.data.as_ref().unwrap()["elicitations"][0]["url"].as_str().unwrap().to_string()
}

// ---- tests ----

#[tokio::test]
async fn the_server_registers_itself_and_reports_usage() {
    let w = World::start().await;
    let entry = w.registered_entry().await;
    assert_eq!(entry["server"]["remotes"][0]["url"], w.url.as_str(), "{entry}");
    let meta = &entry["server"]["_meta"]["dev.inquest/server"];
    assert_eq!(meta["suggested_policy"]["sensitive_tools"], json!(["restart"]));
    assert_eq!(meta["tools"].as_array().unwrap().len(), 4);

    // A person cannot publish the server's entry (nor can another service).
    let doc = json!({"name": "dev.inquest/fake", "description": "x", "version": "9.9.9"});
    let (status, _) = w.registry(&approver(), "POST", "/v0.1/publish", Some(doc)).await;
    assert_eq!(status, 403);

    // Usage of a call reaches the registry (asynchronously).
    let client = w.agent(legacy(), Person::default()).await;
    client.call_tool(call("echo", json!({"text": "hi"}))).await.unwrap();
    let mut total = 0;
    for _ in 0..100 {
        let (_, summary) = w.registry(&admin(), "GET", "/v0.1/x/usage", None).await;
        total = summary["total"]["invocations"].as_i64().unwrap_or(0);
        if total > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(total > 0, "no usage was recorded");
}

#[tokio::test]
async fn authentication_off_is_refused_off_loopback() {
    let mut settings = ServerSettings::new("fake", "http://10.0.0.1:7410/mcp");
    settings.auth = mcp::AuthMode::None;
    let deps = Deps {
        policy: Some(Arc::new(mcp::authz::FixedPolicy(Default::default()))),
        binds: vec!["0.0.0.0:7410".parse().unwrap()],
        ..Default::default()
    };
    let err = mcp::serve(Arc::new(Fake::default()), settings, deps, CancellationToken::new()).err().unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn lists_and_calls_on_both_revisions() {
    let w = World::start().await;
    for lifecycle in [legacy(), modern()] {
        let client = w.agent(lifecycle, Person::default()).await;
        let tools = client.list_all_tools().await.unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["echo", "slow", "restart"], "the agent is not an admin");
        let echo = &tools[0];
        let hints = serde_json::to_value(echo.annotations.as_ref().unwrap()).unwrap();
        assert_eq!(
            hints,
            json!({"title": "Echo", "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false})
        );
        assert!(echo.output_schema.is_some());
        let result = client.call_tool(call("echo", json!({"text": "hi"}))).await.unwrap();
        assert_eq!(result.structured_content, Some(json!({"echo": "hi"})));
        let text = result.content[0].as_text().unwrap().text.clone();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"echo": "hi"}));
        assert_ne!(result.is_error, Some(true));
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn origin_and_host_are_checked() {
    let w = World::start().await;
    let token = w.token("bob", &["oncall"]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = reqwest::Client::new()
            .post(&w.url)
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    assert_eq!(post(vec![]).await.unwrap().status(), 200);
    assert_eq!(post(vec![("origin", "http://evil.example".into())]).await.unwrap().status(), 403);
    let port = w.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_string();
    assert_eq!(post(vec![("host", format!("evil.example:{port}"))]).await.unwrap().status(), 403);
}

#[tokio::test]
async fn unauthenticated_callers_get_a_challenge_naming_the_metadata() {
    let w = World::start().await;
    let resp = reqwest::Client::new().post(&w.url).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
    let origin = w.url.trim_end_matches("/mcp/fake");
    let metadata_url = format!("{origin}/.well-known/oauth-protected-resource/mcp/fake");
    assert_eq!(challenge, format!("Bearer resource_metadata=\"{metadata_url}\""));
    let metadata: Value = reqwest::get(&metadata_url).await.unwrap().json().await.unwrap();
    assert_eq!(metadata["resource"], w.url.as_str());
    assert_eq!(metadata["authorization_servers"], json!(["https://issuer.test"]));

    // A token for another audience is refused.
    let other = w.issuer.mint("bob", &["oncall".into()], "https://elsewhere", Duration::from_secs(60)).unwrap();
    let resp = reqwest::Client::new().post(&w.url).bearer_auth(other).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
}

#[tokio::test]
async fn a_caller_neither_sees_nor_uses_a_tool_it_may_not_use() {
    let w = World::start().await;
    let bob = w.user(&w.token("bob", &["oncall"]), legacy()).await;
    let names: Vec<String> = bob.list_all_tools().await.unwrap().iter().map(|t| t.name.to_string()).collect();
    assert!(!names.contains(&"admin_only".to_string()), "{names:?}");
    let result = bob.call_tool(call("admin_only", json!({"text": "x"}))).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(result.structured_content.is_none());

    let root = w.user(&w.token("root", &["oncall", "admins"]), modern()).await;
    let names: Vec<String> = root.list_all_tools().await.unwrap().iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"admin_only".to_string()), "{names:?}");
    let result = root.call_tool(call("admin_only", json!({"text": "x"}))).await.unwrap();
    assert_eq!(result.structured_content, Some(json!({"echo": "x"})));

    // Nobody outside the allow list: the server's tools are all hidden.
    let eve = w.user(&w.token("eve", &["visitors"]), legacy()).await;
    assert!(eve.list_all_tools().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_sensitive_tool_runs_once_per_approval_on_2025_11_25() {
    let w = World::start().await;
    // A client that declared URL elicitation and "accepts" at once: that counts for nothing.
    let person = Person { url_mode: true, ..Default::default() };
    let client = w.agent(legacy(), person.clone()).await;
    let args = json!({"job": "etl"});
    let err = client.call_tool(call("restart", args.clone())).await.unwrap_err();
    let url = elicitation_url(&err);
    assert!(url.contains("/approvals/"), "{url}");
    assert_eq!(w.restarts(), 0);
    {
        let asked = person.elicitations.lock().unwrap();
        assert_eq!(asked.len(), 1);
        assert!(matches!(&asked[0], ElicitRequestParams::UrlElicitationParams { url: u, .. } if *u == url));
    }

    w.approve(&url).await;
    // Other arguments are another action: not approved.
    let err = client.call_tool(call("restart", json!({"job": "other"}))).await.unwrap_err();
    assert_ne!(elicitation_url(&err), url);
    assert_eq!(w.restarts(), 0);

    let result = client.call_tool(call("restart", args.clone())).await.unwrap();
    assert_eq!(result.structured_content, Some(json!({"restarted": "etl"})));
    assert_eq!(w.restarts(), 1);

    // The approval is used up: the same call needs a new one.
    let err = client.call_tool(call("restart", args)).await.unwrap_err();
    assert_ne!(elicitation_url(&err), url);
    assert_eq!(w.restarts(), 1);
}

#[tokio::test]
async fn a_person_who_calls_a_sensitive_tool_cannot_approve_it() {
    let w = World::start().await;
    // Dana is on call (may call the tool) and an approver of it.
    let dana = Principal::user("dana", &["approvers"]);
    let client = w.user(&w.token("dana", &["oncall", "approvers"]), legacy()).await;
    let args = json!({"job": "payroll"});
    let err = client.call_tool(call("restart", args.clone())).await.unwrap_err();
    let url = elicitation_url(&err);
    let id = url.rsplit('/').next().unwrap();
    let path = format!("/v0.1/x/approvals/{id}");

    // The request names her as the one it is for; she may see it, not decide it.
    let (s, view) = w.registry(&dana, "GET", &path, None).await;
    assert_eq!(s, 200, "{view}");
    assert_eq!(
        (view["on_behalf_of"]["kind"].as_str(), view["on_behalf_of"]["subject"].as_str()),
        (Some("user"), Some("dana"))
    );
    assert_eq!(view["requester"]["spiffe_id"], SERVER_ID);
    assert_eq!(view["may_decide"], false);
    for decision in ["approve", "decline"] {
        let body = json!({"decision": decision, "digest": view["digest"]});
        let (s, b) = w.registry(&dana, "POST", &format!("{path}/decision"), Some(body)).await;
        assert_eq!((s, b["error"].as_str()), (403, Some("own_action")), "{b}");
    }
    let err = client.call_tool(call("restart", args.clone())).await.unwrap_err();
    assert_eq!(elicitation_url(&err), url, "still the same pending request");
    assert_eq!(w.restarts(), 0);

    // Another approver can, and then her call runs, once.
    w.approve(&url).await;
    let result = client.call_tool(call("restart", args)).await.unwrap();
    assert_eq!(result.structured_content, Some(json!({"restarted": "payroll"})));
    assert_eq!(w.restarts(), 1);
}

#[tokio::test]
async fn a_sensitive_tool_on_2026_07_28_uses_a_sealed_single_use_request_state() {
    let w = World::start().await;
    let client = w.agent(modern(), Person::default()).await;
    let args = json!({"job": "etl"});
    let CallToolResponse::InputRequired(first) = client.call_tool_once(call("restart", args.clone())).await.unwrap()
    else {
        panic!("expected input_required")
    };
    let state = first.request_state.clone().unwrap();
    let requests = serde_json::to_value(first.input_requests.as_ref().unwrap()).unwrap();
    let url = requests["approval"]["params"]["url"].as_str().unwrap().to_string();
    assert_eq!(requests["approval"]["params"]["mode"], "url");

    // The client says "accept" by itself: still waiting.
    let mut accepted = call("restart", args.clone());
    accepted.request_state = Some(state.clone());
    accepted.input_responses = Some([("approval".to_string(), json!({"action": "accept"}))].into_iter().collect());
    let again = client.call_tool_once(accepted).await.unwrap();
    let CallToolResponse::InputRequired(second) = again else { panic!("accepted without a person") };
    assert_eq!(w.restarts(), 0);
    let state = second.request_state.unwrap();

    // Forged and foreign states are refused.
    let mut forged = call("restart", args.clone());
    let mut chars: Vec<char> = state.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    forged.request_state = Some(chars.into_iter().collect());
    let refused = complete(client.call_tool_once(forged).await.unwrap());
    assert_eq!(refused.is_error, Some(true));
    let mut changed = call("restart", json!({"job": "other"}));
    changed.request_state = Some(state.clone());
    assert_eq!(complete(client.call_tool_once(changed).await.unwrap()).is_error, Some(true));
    let bob = w.user(&w.token("bob", &["oncall"]), modern()).await;
    let mut stolen = call("restart", args.clone());
    stolen.request_state = Some(state.clone());
    assert_eq!(complete(bob.call_tool_once(stolen).await.unwrap()).is_error, Some(true));

    w.approve(&url).await;
    // The forged, changed and stolen attempts above used nothing: the real state still works, once.
    let mut ok = call("restart", args.clone());
    ok.request_state = Some(state.clone());
    let done = complete(client.call_tool_once(ok.clone()).await.unwrap());
    assert_eq!(done.structured_content, Some(json!({"restarted": "etl"})));
    assert_eq!(w.restarts(), 1);
    let replay = complete(client.call_tool_once(ok).await.unwrap());
    assert_eq!(replay.is_error, Some(true));
    assert_eq!(w.restarts(), 1);
}

fn complete(r: CallToolResponse) -> rmcp::model::CallToolResult {
    match r {
        CallToolResponse::Complete(c) => c,
        other => panic!("expected a complete result, got {other:?}"),
    }
}

#[tokio::test]
async fn progress_is_reported_and_cancellation_reaches_the_domain() {
    let w = World::start().await;
    let person = Person::default();
    let client = w.agent(legacy(), person.clone()).await;
    let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(call(
        "slow",
        json!({"text": "x"}),
    )));
    let handle =
        client.peer().send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options()).await.unwrap();
    for _ in 0..200 {
        if person.progress.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(person.progress.lock().unwrap().len() >= 2, "no progress notifications");
    handle.cancel(Some("enough".into())).await.unwrap();
    for _ in 0..200 {
        if w.fake.cancelled.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(w.fake.cancelled.load(Ordering::SeqCst), "the domain never saw the cancellation");
}

/// Records what the agent's work records while it runs.
#[derive(Default)]
struct Recorded(Mutex<Vec<inquest::engine::Input>>);

#[async_trait]
impl inquest::engine::Progress for Recorded {
    async fn record(&self, input: inquest::engine::Input) -> Result<(), inquest::engine::WorkError> {
        self.0.lock().unwrap().push(input);
        Ok(())
    }
}

impl Recorded {
    /// The approval link once the agent has recorded it.
    async fn requested(&self, nth: usize) -> String {
        for _ in 0..200 {
            let urls: Vec<String> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter_map(|i| match i {
                    inquest::engine::Input::ApprovalRequested { url, .. } => Some(url.clone()),
                    _ => None,
                })
                .collect();
            if let Some(url) = urls.get(nth) {
                return url.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the agent never recorded approval request {nth}");
    }
}

/// The agent's side of a sensitive call: the server's URL elicitation becomes an
/// approval entry with the link; the agent waits (polling the registry with its own
/// identity) until a person decides; approved, it calls again and the tool runs once;
/// declined, the refusal is recorded and nothing runs. Form elicitations are declined.
#[tokio::test]
async fn the_agent_waits_for_a_persons_decision_then_calls_again_or_records_the_refusal() {
    use inquest::agent::approval::RegistryApprovals;
    use inquest::agent::inquiry::{Recorder, Waits};
    use inquest::agent::{Limits, SessionManager, Target};
    use inquest::engine::Input;

    let w = World::start().await;
    let target = Target { name: "fake".into(), url: w.mtls_url.clone(), http: w.agent_http.clone(), trusted: true };
    let sessions = SessionManager::new(vec![target], Limits::default());
    let approvals = RegistryApprovals {
        base: w.mesh_url.clone(),
        http: w.agent_registry_http.clone(),
        poll: Duration::from_millis(100),
        max_wait: Duration::from_secs(60),
    };
    let progress = Recorded::default();
    let recorder = Recorder::new(&sessions).with_waits(Some(Waits { approvals: &approvals, progress: &progress }));

    let args = |job: &str| json!({"job": job}).as_object().cloned().unwrap();
    let (answer, ()) = tokio::join!(recorder.call_as("planner", "fake", "restart", args("etl")), async {
        let url = progress.requested(0).await;
        assert_eq!(w.restarts(), 0, "nothing runs before a person decides");
        w.approve(&url).await;
    });
    let (id, result) = answer;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(w.restarts(), 1);

    let (answer, ()) = tokio::join!(recorder.call_as("planner", "fake", "restart", args("billing")), async {
        let url = progress.requested(1).await;
        w.decide(&url, "decline").await;
    });
    let refusal = answer.1.expect_err("declined");
    assert!(refusal.contains("declined"), "{refusal}");
    assert_eq!(w.restarts(), 1, "a declined call never runs");

    let inputs = progress.0.lock().unwrap().clone();
    let outcomes: Vec<(&str, &str)> = inputs
        .iter()
        .map(|i| match i {
            Input::ApprovalRequested { call_id, .. } => ("requested", call_id.as_str()),
            Input::ApprovalSettled { outcome, .. } => (outcome.as_str(), ""),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(outcomes, [("requested", id.as_str()), ("approved", ""), ("requested", "c2"), ("refused", "")]);
    let calls = recorder.calls();
    assert!(calls[1].result.as_ref().is_err_and(|e| e.starts_with("not run:")), "{:?}", calls[1]);
}
