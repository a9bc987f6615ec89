//! The registry's catalog, policy, authorization API, health records and usage, served
//! in-process (no sockets) on SQLite and PostgreSQL alike. A test layer stands in for
//! authentication: it takes the caller's `Principal` from the `x-test-principal` header.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, TimeZone, Utc};
use inquest::config::RegistryConfig;
use inquest::identity::Principal;
use inquest::registry::authz::PolicyCache;
use inquest::registry::catalog::{CatalogStore, ProbeRecorder};
use inquest::registry::prober::{HealthStatus, ProbeOutcome, ProbeSink, ProbeTarget, ToolSnapshot};
use inquest::registry::{RegistryState, router};
use inquest::store::SqlStore;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::fixed::TestClock;
use crate::support::pg::TestDb;

/// 2026-01-15T10:00:00Z plus `secs`.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// A registry over one store, with its own policy cache (one replica).
struct Reg {
    app: Router,
    store: Arc<SqlStore>,
    clock: Arc<TestClock>,
}

impl Reg {
    fn over(store: Arc<SqlStore>, cache: PolicyCache) -> Reg {
        let clock = Arc::new(TestClock(Mutex::new(at(0))));
        let config = RegistryConfig {
            public_url: "http://registry.test".into(),
            url: "http://registry.test".into(),
            admins: vec!["group:registry-admins".into(), "spiffe://td/ops/*".into()],
            approval_ttl: Duration::from_secs(3600),
            probe_interval: Duration::from_secs(30),
            pull_request_approvers: Vec::new(),
        };
        let state = RegistryState {
            config: Arc::new(config),
            store: store.clone(),
            clock: clock.clone(),
            policy: Arc::new(cache),
        };
        let app = router(state).layer(axum::middleware::from_fn(as_test_principal));
        Reg { app, store, clock }
    }

    async fn sqlite() -> (Reg, Box<dyn std::any::Any>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/store.db", dir.path().display());
        let store = Arc::new(SqlStore::open(&url, 4).await.unwrap());
        (Reg::over(store, PolicyCache::default()), Box::new(dir))
    }

    async fn postgres() -> (Reg, Box<dyn std::any::Any>) {
        let db = TestDb::create().await;
        let store = Arc::new(SqlStore::open(&db.url, 4).await.unwrap());
        (Reg::over(store, PolicyCache::default()), Box::new(db))
    }

    fn set_time(&self, t: DateTime<Utc>) {
        *self.clock.0.lock().unwrap() = t;
    }

    async fn call(&self, who: Option<&Principal>, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(p) = who {
            req = req.header("x-test-principal", serde_json::to_string(p).unwrap());
        }
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        let resp = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        (status, value)
    }

    async fn get(&self, who: &Principal, uri: &str) -> (u16, Value) {
        self.call(Some(who), "GET", uri, None).await
    }

    async fn post(&self, who: &Principal, uri: &str, body: Value) -> (u16, Value) {
        self.call(Some(who), "POST", uri, Some(body)).await
    }

    async fn put(&self, who: &Principal, uri: &str, body: Value) -> (u16, Value) {
        self.call(Some(who), "PUT", uri, Some(body)).await
    }

    async fn patch(&self, who: &Principal, uri: &str, body: Value) -> (u16, Value) {
        self.call(Some(who), "PATCH", uri, Some(body)).await
    }

    async fn publish(&self, doc: Value) -> Value {
        let (status, body) = self.post(&admin(), "/v0.1/publish", doc).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Writes `policy` for `name` and approves it for production.
    async fn govern(&self, name: &str, policy: Value) {
        let base = format!("/v0.1/x/servers/{}", enc(name));
        let (status, body) = self.put(&admin(), &format!("{base}/policy"), policy).await;
        assert_eq!(status, 200, "{body}");
        for review in ["security-review", "production-approval"] {
            let (status, body) = self.put(&admin(), &format!("{base}/{review}"), json!({"state": "approved"})).await;
            assert_eq!(status, 200, "{body}");
        }
    }

    async fn check(&self, who: &Principal, body: Value) -> (u16, Value) {
        self.post(who, "/v0.1/x/authz/check", body).await
    }

    /// Server names of `GET /v0.1/x/servers/permitted[?query]` for `who`.
    async fn permitted(&self, who: &Principal, query: &str) -> Value {
        let (status, body) = self.get(who, &format!("/v0.1/x/servers/permitted{query}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

async fn as_test_principal(mut req: Request, next: Next) -> Response {
    let principal = req.headers().get("x-test-principal").map(|h| serde_json::from_slice::<Principal>(h.as_bytes()));
    if let Some(p) = principal {
        req.extensions_mut().insert(p.expect("x-test-principal holds a Principal"));
    }
    next.run(req).await
}

/// Percent-encodes a path segment or query value (names hold `/`, cursors `:`).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn admin() -> Principal {
    Principal::user("root", &["registry-admins"])
}
fn alice() -> Principal {
    Principal::user("alice", &["data-eng"])
}
fn bob() -> Principal {
    Principal::user("bob", &["marketing"])
}
fn agent() -> Principal {
    Principal::service("spiffe://td/agent")
}
fn airflow_identity() -> Principal {
    Principal::service("spiffe://td/server/airflow")
}

fn doc(name: &str, version: &str, description: &str) -> Value {
    let short = name.rsplit('/').next().unwrap();
    json!({
        "$schema": "https://static.modelcontextprotocol.io/schemas/2025-10-17/server.schema.json",
        "name": name,
        "description": description,
        "version": version,
        "repository": {"url": format!("https://github.com/example/{short}-mcp"), "source": "github"},
        "remotes": [{"type": "streamable-http", "url": format!("https://{short}.example.com/mcp")}]
    })
}

fn names(list: &Value) -> Vec<(String, String)> {
    list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["server"]["name"].as_str().unwrap().into(), e["server"]["version"].as_str().unwrap().into()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// The v0.1 shape of one list or detail entry, field by field.
fn assert_entry_shape(e: &Value) {
    let server = &e["server"];
    for key in ["name", "description", "version"] {
        assert!(server[key].is_string(), "server.{key}: {e}");
    }
    let official = &e["_meta"]["io.modelcontextprotocol.registry/official"];
    assert!(["active", "deprecated", "deleted"].contains(&official["status"].as_str().unwrap()), "{official}");
    for key in ["publishedAt", "updatedAt"] {
        DateTime::parse_from_rfc3339(official[key].as_str().unwrap()).unwrap();
    }
    assert!(official["isLatest"].is_boolean());
    assert_eq!(official.as_object().unwrap().len(), 4, "exactly the official keys: {official}");
    let ext = &e["_meta"]["dev.inquest/registry"];
    for key in ["security_review", "production", "access", "health", "tools", "usage"] {
        assert!(ext[key].is_object(), "{key}: {ext}");
    }
    assert!(ext["health"]["status"].is_string() && ext["health"]["stale"].is_boolean());
    assert!(ext["tools"]["items"].is_array() && ext["usage"]["invocations"].is_i64());
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $name() { let (r, _d) = super::Reg::sqlite().await; super::$name(&r).await; r.store.close().await; })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $name() { let (r, _d) = super::Reg::postgres().await; super::$name(&r).await; r.store.close().await; })*
        }
    };
}

both_backends!(
    catalog_pages_with_cursors_in_the_official_shape,
    search_updated_since_latest_and_versions,
    invalid_server_json_lists_every_violation,
    catalog_writes_need_an_admin,
    status_changes_move_latest_and_hide_deleted,
    decisions_and_permitted_servers_per_principal,
    callers_ask_about_themselves_unless_admin_or_the_server,
    probes_record_health_and_tool_changes,
    usage_aggregates_by_month_and_team,
    replicas_of_one_server_report_at_once,
    policy_writes_reach_other_replicas,
);

async fn catalog_pages_with_cursors_in_the_official_shape(r: &Reg) {
    for name in ["org.acme/warehouse", "com.example/presto", "com.example/airflow", "io.github.team/notes"] {
        r.publish(doc(name, "1.0.0", "A data tool")).await;
    }
    r.publish(doc("com.example/airflow", "1.1.0", "A data tool")).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            None => "/v0.1/servers?limit=2".to_string(),
            Some(c) => format!("/v0.1/servers?limit=2&cursor={}", enc(c)),
        };
        let (status, page) = r.get(&alice(), &uri).await;
        assert_eq!(status, 200, "{page}");
        let servers = page["servers"].as_array().unwrap();
        assert_eq!(page["metadata"]["count"], servers.len());
        servers.iter().for_each(assert_entry_shape);
        seen.extend(names(&page));
        pages += 1;
        match page["metadata"].get("nextCursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        pairs(&[
            ("com.example/airflow", "1.0.0"),
            ("com.example/airflow", "1.1.0"),
            ("com.example/presto", "1.0.0"),
            ("io.github.team/notes", "1.0.0"),
            ("org.acme/warehouse", "1.0.0"),
        ])
    );
    // The server object is the document as published, byte for byte in meaning.
    let (_, one) = r.get(&alice(), "/v0.1/servers/org.acme%2Fwarehouse/versions/1.0.0").await;
    assert_eq!(one["server"], doc("org.acme/warehouse", "1.0.0", "A data tool"));
    assert_entry_shape(&one);
    // Without a principal there is no catalog.
    assert_eq!(r.call(None, "GET", "/v0.1/servers", None).await.0, 401);
}

async fn search_updated_since_latest_and_versions(r: &Reg) {
    r.publish(doc("com.example/airflow", "1.0.0", "DAG runs and task logs")).await;
    r.publish(doc("com.example/presto", "1.0.0", "SQL queries and their limits")).await;
    r.set_time(at(60));
    r.publish(doc("com.example/airflow", "1.10.0", "DAG runs and task logs")).await;
    r.set_time(at(120));
    // Published later but lower: 1.10.0 stays the latest.
    r.publish(doc("com.example/airflow", "1.9.0", "DAG runs and task logs")).await;

    let list = |q: &str| {
        let uri = format!("/v0.1/servers{q}");
        async move { names(&r.get(&alice(), &uri).await.1) }
    };
    assert_eq!(
        list("?search=AIRFLOW").await,
        pairs(&[("com.example/airflow", "1.0.0"), ("com.example/airflow", "1.10.0"), ("com.example/airflow", "1.9.0")])
    );
    assert_eq!(list("?search=queries").await, pairs(&[("com.example/presto", "1.0.0")]));
    assert_eq!(list("?search=%25").await, vec![], "a literal %, not a wildcard");
    assert_eq!(list("?search=airflow&version=latest").await, pairs(&[("com.example/airflow", "1.10.0")]));
    assert_eq!(
        list("?version=latest").await,
        pairs(&[("com.example/airflow", "1.10.0"), ("com.example/presto", "1.0.0")])
    );
    // 1.0.0 stopped being the latest at 60 s: that is an update too.
    let since = |t: DateTime<Utc>| format!("?updated_since={}", enc(&t.to_rfc3339()));
    assert_eq!(
        list(&since(at(60))).await,
        pairs(&[("com.example/airflow", "1.0.0"), ("com.example/airflow", "1.10.0"), ("com.example/airflow", "1.9.0")])
    );
    assert_eq!(list(&since(at(61))).await, pairs(&[("com.example/airflow", "1.9.0")]));

    let (status, versions) = r.get(&alice(), "/v0.1/servers/com.example%2Fairflow/versions").await;
    assert_eq!(status, 200);
    assert_eq!(versions["metadata"]["count"], 3);
    let latest_flags: Vec<(String, bool)> = versions["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let official = &e["_meta"]["io.modelcontextprotocol.registry/official"];
            (e["server"]["version"].as_str().unwrap().into(), official["isLatest"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(latest_flags, [("1.0.0".into(), false), ("1.10.0".into(), true), ("1.9.0".into(), false)]);
    let (status, latest) = r.get(&alice(), "/v0.1/servers/com.example%2Fairflow/versions/latest").await;
    assert_eq!((status, latest["server"]["version"].as_str()), (200, Some("1.10.0")));
    assert_eq!(latest["_meta"]["io.modelcontextprotocol.registry/official"]["publishedAt"], "2026-01-15T10:01:00Z");
    let (_, older) = r.get(&alice(), "/v0.1/servers/com.example%2Fairflow/versions/1.9.0").await;
    assert_eq!(older["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"], false);

    for (uri, status) in [
        ("/v0.1/servers/com.example%2Fnope/versions", 404),
        ("/v0.1/servers/com.example%2Fnope/versions/latest", 404),
        ("/v0.1/servers/com.example%2Fairflow/versions/9.9.9", 404),
        ("/v0.1/servers?limit=many", 400),
        ("/v0.1/servers?updated_since=yesterday", 400),
        ("/v0.1/servers?version=1.0.0", 400),
        ("/v0.1/servers?cursor=garbage", 400),
    ] {
        let (got, body) = r.get(&alice(), uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(body["message"].is_string(), "{uri}: {body}");
    }
}

async fn invalid_server_json_lists_every_violation(r: &Reg) {
    let bad = json!({
        "name": "airflow",
        "description": "",
        "version": "~1.2",
        "websiteUrl": "not a url",
        "remotes": [{"type": "stdio", "url": "ftp://airflow.example.com"}],
        "_meta": {"dev.inquest/registry": {"owner": "me"}}
    });
    let (status, body) = r.post(&admin(), "/v0.1/publish", bad).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_server_json");
    assert_eq!(body["message"], "server.json has 7 problems");
    let fields: Vec<&str> =
        body["violations"].as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "description",
            "version",
            "websiteUrl",
            "remotes[0].type",
            "remotes[0].url",
            "_meta[\"dev.inquest/registry\"]"
        ]
    );
    assert!(
        body["violations"].as_array().unwrap().iter().all(|v| v["message"].as_str().is_some_and(|m| !m.is_empty()))
    );
    let (status, body) = r.call(Some(&admin()), "POST", "/v0.1/publish", None).await;
    assert_eq!(status, 400, "an empty body: {body}");
    assert_eq!(r.get(&admin(), "/v0.1/servers").await.1["metadata"]["count"], 0, "nothing stored");

    r.publish(doc("com.example/airflow", "1.0.0", "DAG runs")).await;
    let (status, body) = r.post(&admin(), "/v0.1/publish", doc("com.example/airflow", "1.0.0", "again")).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")));
}

async fn catalog_writes_need_an_admin(r: &Reg) {
    let airflow = doc("com.example/airflow", "1.0.0", "DAG runs");
    let (status, body) = r.post(&alice(), "/v0.1/publish", airflow.clone()).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(r.call(None, "POST", "/v0.1/publish", Some(airflow.clone())).await.0, 401);
    // A service under the admin prefix may publish (a deploy pipeline).
    let (status, _) = r.post(&Principal::service("spiffe://td/ops/deployer"), "/v0.1/publish", airflow).await;
    assert_eq!(status, 200);

    let base = "/v0.1/x/servers/com.example%2Fairflow";
    let status_uri = "/v0.1/servers/com.example%2Fairflow/versions/1.0.0/status";
    let policy = json!({"owner": {"team": "data-platform"}, "access": {"allowed": ["*"]}});
    for who in [alice(), agent(), Principal::service("spiffe://td/opsx/deployer")] {
        assert_eq!(r.patch(&who, status_uri, json!({"status": "deprecated"})).await.0, 403);
        assert_eq!(r.put(&who, &format!("{base}/policy"), policy.clone()).await.0, 403);
        assert_eq!(r.put(&who, &format!("{base}/security-review"), json!({"state": "approved"})).await.0, 403);
        assert_eq!(r.put(&who, &format!("{base}/production-approval"), json!({"state": "approved"})).await.0, 403);
    }
    let (_, detail) = r.get(&alice(), base).await;
    let ext = &detail["dev.inquest/registry"];
    assert_eq!((ext["status"].as_str(), ext["owner"].is_null()), (Some("active"), true), "nothing changed: {detail}");
    assert_eq!(ext["security_review"], json!({"state": "pending", "by": null, "at": null, "note": null}));

    // An admin's review records who and when from the credential, not from the body.
    r.set_time(at(30));
    let (status, detail) =
        r.put(&admin(), &format!("{base}/security-review"), json!({"state": "approved", "note": "pen test ok"})).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["dev.inquest/registry"]["security_review"],
        json!({"state": "approved", "by": "user:root", "at": "2026-01-15T10:00:30Z", "note": "pen test ok"})
    );
    let bad_policy = json!({"owner": {"team": ""}, "access": {"allowed": ["data-eng"], "tools": {"x": {"approval": {"approvers": [], "required": 0}}}}});
    let (status, body) = r.put(&admin(), &format!("{base}/policy"), bad_policy).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_policy")));
    assert_eq!(body["violations"].as_array().unwrap().len(), 4, "{body}");
    let (status, body) = r.put(&admin(), "/v0.1/x/servers/com.example%2Fnope/policy", policy).await;
    assert_eq!(status, 404, "{body}");
}

async fn status_changes_move_latest_and_hide_deleted(r: &Reg) {
    r.publish(doc("com.example/spark", "1.0.0", "Spark jobs")).await;
    r.publish(doc("com.example/spark", "2.0.0", "Spark jobs")).await;
    let status_of = |v: &str| format!("/v0.1/servers/com.example%2Fspark/versions/{v}/status");
    let latest = || async { r.get(&alice(), "/v0.1/servers/com.example%2Fspark/versions/latest").await };

    r.set_time(at(10));
    let (status, body) =
        r.patch(&admin(), &status_of("2.0.0"), json!({"status": "deleted", "statusMessage": "broken"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_meta"]["io.modelcontextprotocol.registry/official"]["status"], "deleted");
    assert_eq!(latest().await.1["server"]["version"], "1.0.0");
    assert_eq!(names(&r.get(&alice(), "/v0.1/servers").await.1), pairs(&[("com.example/spark", "1.0.0")]));
    assert_eq!(names(&r.get(&alice(), "/v0.1/servers?include_deleted=true").await.1).len(), 2);
    assert_eq!(r.get(&alice(), "/v0.1/servers/com.example%2Fspark/versions").await.1["metadata"]["count"], 1);
    // A deleted version can still be looked at directly.
    let (status, gone) = r.get(&alice(), "/v0.1/servers/com.example%2Fspark/versions/2.0.0").await;
    assert_eq!((status, &gone["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"]), (200, &json!(false)));

    r.patch(&admin(), &status_of("1.0.0"), json!({"status": "deprecated"})).await;
    let (_, l) = latest().await;
    assert_eq!(l["_meta"]["io.modelcontextprotocol.registry/official"]["status"], "deprecated");
    assert_eq!(l["_meta"]["dev.inquest/registry"]["status"], "deprecated");

    r.patch(&admin(), &status_of("1.0.0"), json!({"status": "deleted"})).await;
    assert_eq!(latest().await.0, 404);
    let (_, detail) = r.get(&alice(), "/v0.1/x/servers/com.example%2Fspark").await;
    assert_eq!(detail["dev.inquest/registry"]["status"], "deleted");
    assert_eq!(detail["dev.inquest/registry"]["latest_version"], Value::Null);
    // Back from the dead: the highest live version is the latest again.
    r.patch(&admin(), &status_of("2.0.0"), json!({"status": "active"})).await;
    assert_eq!(latest().await.1["server"]["version"], "2.0.0");

    assert_eq!(r.patch(&admin(), &status_of("2.0.0"), json!({"status": "gone"})).await.0, 400);
    assert_eq!(r.patch(&admin(), &status_of("3.0.0"), json!({"status": "deleted"})).await.0, 404);
    let (_, events) = r.get(&alice(), "/v0.1/x/servers/com.example%2Fspark/events").await;
    let kinds: Vec<(&str, &str)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["data"]["to"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        [
            ("server.published", ""),
            ("server.published", ""),
            ("version.status_changed", "deleted"),
            ("version.status_changed", "deprecated"),
            ("version.status_changed", "deleted"),
            ("version.status_changed", "active"),
        ]
    );
    assert_eq!(events["events"][2]["data"]["message"], "broken");
    assert_eq!(events["events"][2]["actor"], "user:root");
}

/// Airflow (approved; data-eng and the agent; one narrowed, one sensitive, one unlisted
/// tool), Presto (approved; analytics and the agent), Spark (not approved; previewed by
/// spark-dev).
async fn seed_policies(r: &Reg) {
    for name in ["com.example/airflow", "com.example/presto", "com.example/spark"] {
        r.publish(doc(name, "1.0.0", "A data tool")).await;
    }
    r.govern(
        "com.example/airflow",
        json!({
            "owner": {"team": "data-platform", "support_channel": "#data-platform"},
            "service_identity": "spiffe://td/server/airflow",
            "access": {
                "allowed": ["group:data-eng", "spiffe://td/agent"],
                "tools": {
                    "get_logs": {"minutes_saved": 10},
                    "trigger_dag": {"allowed": ["group:data-eng"]},
                    "clear_task": {"approval": {"approvers": ["group:airflow-oncall"], "required": 1}}
                },
                "default_approvers": {"approvers": ["group:data-platform"], "required": 1}
            },
            "minutes_saved": 5
        }),
    )
    .await;
    r.govern(
        "com.example/presto",
        json!({"owner": {"team": "analytics"}, "service_identity": "spiffe://td/server/presto",
               "access": {"allowed": ["group:analytics", "spiffe://td/agent"], "unlisted_tools": "allow"}}),
    )
    .await;
    let (status, _) = r
        .put(
            &admin(),
            "/v0.1/x/servers/com.example%2Fspark/policy",
            json!({"owner": {"team": "spark"}, "access": {"allowed": ["*"], "preview": ["group:spark-dev"], "unlisted_tools": "allow"}}),
        )
        .await;
    assert_eq!(status, 200);
    let tool = |name: &str| ToolSnapshot {
        name: name.into(),
        title: Some(name.replace('_', " ")),
        description: None,
        annotations: json!({"readOnlyHint": name == "get_logs"}),
    };
    let live = ["get_logs", "trigger_dag", "clear_task", "list_dags"].map(tool);
    r.store.record_tools("com.example/airflow", &live, at(0)).await.unwrap();
}

async fn decisions_and_permitted_servers_per_principal(r: &Reg) {
    seed_policies(r).await;
    let spark_dev = Principal::user("sam", &["spark-dev"]);
    let analyst = Principal::user("ana", &["analytics"]);
    let cases: Vec<(Principal, &str, Option<&str>, &str)> = vec![
        (alice(), "com.example/airflow", None, "allow"),
        (alice(), "com.example/airflow", Some("get_logs"), "allow"),
        (alice(), "com.example/airflow", Some("trigger_dag"), "allow"),
        (alice(), "com.example/airflow", Some("clear_task"), "needs_approval"),
        (alice(), "com.example/airflow", Some("list_dags"), "needs_approval"),
        (alice(), "com.example/presto", None, "deny"),
        (agent(), "com.example/airflow", Some("get_logs"), "allow"),
        (agent(), "com.example/airflow", Some("trigger_dag"), "deny"),
        (agent(), "com.example/presto", Some("run_query"), "allow"),
        (bob(), "com.example/airflow", None, "deny"),
        (analyst.clone(), "com.example/presto", None, "allow"),
        (alice(), "com.example/spark", None, "deny"),
        (spark_dev.clone(), "com.example/spark", Some("submit"), "allow"),
        (alice(), "com.example/nope", None, "deny"),
    ];
    for (who, server, tool, want) in cases {
        let (status, d) = r.check(&who, json!({"server": server, "tool": tool})).await;
        assert_eq!((status, d["decision"].as_str()), (200, Some(want)), "{who:?} {server} {tool:?}: {d}");
        assert!(d["reason"].is_string());
    }
    let (_, d) = r.check(&alice(), json!({"server": "com.example/airflow", "tool": "clear_task"})).await;
    assert_eq!(
        d,
        json!({"decision": "needs_approval", "reason": "the tool is sensitive: a person must approve each use",
               "approvers": {"approvers": ["group:airflow-oncall"], "required": 1}})
    );
    let (_, d) = r.check(&alice(), json!({"server": "com.example/spark"})).await;
    assert_eq!(d, json!({"decision": "deny", "reason": "the server is not approved for production use"}));

    let servers = |v: &Value| -> Vec<String> {
        v["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
    };
    let tools = |v: &Value, i: usize| -> Vec<(String, String)> {
        v["servers"][i]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().into(), t["decision"].as_str().unwrap().into()))
            .collect()
    };
    let p = r.permitted(&alice(), "").await;
    assert_eq!(
        (servers(&p), p["count"].as_u64(), p["principal"].as_str()),
        (vec!["com.example/airflow".to_string()], Some(1), Some("user:alice"))
    );
    assert_eq!(
        tools(&p, 0),
        pairs(&[
            ("clear_task", "needs_approval"),
            ("get_logs", "allow"),
            ("list_dags", "needs_approval"),
            ("trigger_dag", "allow")
        ])
    );
    let airflow = &p["servers"][0];
    assert_eq!(airflow["remotes"], json!([{"type": "streamable-http", "url": "https://airflow.example.com/mcp"}]));
    assert_eq!(airflow["owner"], json!({"team": "data-platform", "support_channel": "#data-platform"}));
    assert_eq!((airflow["decision"].as_str(), airflow["version"].as_str()), (Some("allow"), Some("1.0.0")));
    assert_eq!(airflow["health"]["status"], "unknown");
    assert_eq!(airflow["tools"][0]["approvers"], json!({"approvers": ["group:airflow-oncall"], "required": 1}));
    assert_eq!(airflow["tools"][1]["annotations"], json!({"readOnlyHint": true}));

    let p = r.permitted(&agent(), "").await;
    assert_eq!(servers(&p), ["com.example/airflow", "com.example/presto"]);
    assert_eq!(
        tools(&p, 0),
        pairs(&[("clear_task", "needs_approval"), ("get_logs", "allow"), ("list_dags", "needs_approval")]),
        "trigger_dag is data-eng's only"
    );
    assert_eq!(servers(&r.permitted(&bob(), "").await), Vec::<String>::new());
    assert_eq!(servers(&r.permitted(&spark_dev, "").await), ["com.example/spark"]);
    // For a team's alert, the agent reaches only what that team may reach too.
    assert_eq!(servers(&r.permitted(&agent(), "?team=data-eng").await), ["com.example/airflow"]);
    assert_eq!(servers(&r.permitted(&agent(), "?team=analytics").await), ["com.example/presto"]);
    assert_eq!(servers(&r.permitted(&agent(), "?team=marketing").await), Vec::<String>::new());
}

async fn callers_ask_about_themselves_unless_admin_or_the_server(r: &Reg) {
    seed_policies(r).await;
    let bob_json = serde_json::to_value(bob()).unwrap();
    let (status, body) = r.check(&alice(), json!({"principal": bob_json, "server": "com.example/airflow"})).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        r.check(&agent(), json!({"principal": alice(), "server": "com.example/airflow"})).await.0,
        403,
        "the agent is no admin"
    );
    // Claiming a group in the body does not give it: the credential's groups count.
    let claimed = json!({"kind": "user", "subject": "alice", "groups": ["analytics"]});
    let (status, d) = r.check(&alice(), json!({"principal": claimed, "server": "com.example/presto"})).await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("deny")));
    // Admins may ask about anyone, as given.
    let analyst = json!({"kind": "user", "subject": "ana", "groups": ["analytics"]});
    let (status, d) = r.check(&admin(), json!({"principal": analyst, "server": "com.example/presto"})).await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("allow")));
    // A server may ask about its callers, for itself only.
    let (status, d) = r
        .check(
            &airflow_identity(),
            json!({"principal": alice(), "server": "com.example/airflow", "tool": "clear_task"}),
        )
        .await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("needs_approval")));
    let (status, _) = r.check(&airflow_identity(), json!({"principal": alice(), "server": "com.example/presto"})).await;
    assert_eq!(status, 403);
    assert_eq!(r.check(&alice(), json!({"server": 7})).await.0, 400);
    assert_eq!(r.call(None, "POST", "/v0.1/x/authz/check", Some(json!({"server": "x/y"}))).await.0, 401);
}

async fn probes_record_health_and_tool_changes(r: &Reg) {
    seed_policies(r).await;
    r.publish(json!({"name": "com.example/local", "description": "stdio only", "version": "1.0.0"})).await;
    let recorder = ProbeRecorder { store: r.store.clone(), clock: r.clock.clone() };
    let targets = recorder.probe_targets().await.unwrap();
    assert_eq!(
        targets,
        ["airflow", "presto", "spark"]
            .map(|s| ProbeTarget { name: format!("com.example/{s}"), url: format!("https://{s}.example.com/mcp") })
            .to_vec(),
        "a server without remotes cannot be probed"
    );
    let airflow = targets[0].clone();
    let tool = |name: &str, title: &str| ToolSnapshot {
        name: name.into(),
        title: Some(title.into()),
        description: None,
        annotations: json!({}),
    };
    let healthy = |tools: Vec<ToolSnapshot>| ProbeOutcome {
        status: HealthStatus::Healthy,
        latency_ms: 42,
        revisions: vec!["2026-07-28".into(), "2025-11-25".into()],
        tools,
        error: None,
    };
    r.set_time(at(100));
    recorder
        .record_probe(&airflow, &healthy(vec![tool("get_logs", "Logs"), tool("clear_task", "Clear")]))
        .await
        .unwrap();
    r.set_time(at(130));
    recorder
        .record_probe(&airflow, &healthy(vec![tool("clear_task", "Clear"), tool("get_logs", "Logs")]))
        .await
        .unwrap();
    r.set_time(at(160));
    recorder
        .record_probe(&airflow, &healthy(vec![tool("clear_task", "Clear a task"), tool("retry_dag", "Retry")]))
        .await
        .unwrap();
    r.set_time(at(190));
    let down = ProbeOutcome {
        status: HealthStatus::Unreachable,
        latency_ms: 10_000,
        revisions: vec![],
        tools: vec![],
        error: Some("connection refused".into()),
    };
    recorder.record_probe(&airflow, &down).await.unwrap();

    let (_, events) = r.get(&alice(), "/v0.1/x/servers/com.example%2Fairflow/events").await;
    let history: Vec<(String, Value)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ["health.changed", "tools.changed"].contains(&e["kind"].as_str().unwrap()))
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["data"].clone()))
        .collect();
    assert_eq!(
        history,
        [
            // seed_policies recorded the first list directly.
            (
                "tools.changed".into(),
                json!({"added": ["clear_task", "get_logs", "list_dags", "trigger_dag"], "removed": [], "changed": []})
            ),
            ("health.changed".into(), json!({"from": "unknown", "to": "healthy", "error": null})),
            (
                "tools.changed".into(),
                json!({"added": [], "removed": ["list_dags", "trigger_dag"], "changed": ["clear_task", "get_logs"]})
            ),
            (
                "tools.changed".into(),
                json!({"added": ["retry_dag"], "removed": ["get_logs"], "changed": ["clear_task"]})
            ),
            ("health.changed".into(), json!({"from": "healthy", "to": "unreachable", "error": "connection refused"})),
        ]
    );

    // Unreachable, still listed, with the last known tools and the error.
    let (_, entry) = r.get(&alice(), "/v0.1/servers/com.example%2Fairflow/versions/latest").await;
    let ext = &entry["_meta"]["dev.inquest/registry"];
    assert_eq!(
        ext["health"],
        json!({"status": "unreachable", "checked_at": "2026-01-15T10:03:10Z", "latency_ms": 10000,
               "error": "connection refused", "consecutive_failures": 1, "since": "2026-01-15T10:03:10Z", "stale": false})
    );
    assert_eq!(
        ext["tools"],
        json!({"seen_at": "2026-01-15T10:02:40Z", "changed_at": "2026-01-15T10:02:40Z",
               "items": [{"name": "clear_task", "title": "Clear a task", "annotations": {}},
                         {"name": "retry_dag", "title": "Retry", "annotations": {}}]})
    );
    assert_eq!(names(&r.get(&alice(), "/v0.1/servers?search=airflow").await.1).len(), 1);
    let p = r.permitted(&alice(), "").await;
    assert_eq!(p["servers"][0]["health"]["status"], "unreachable");
    // The prober itself stopped: three intervals later the record is stale.
    r.set_time(at(190 + 91));
    let (_, entry) = r.get(&alice(), "/v0.1/servers/com.example%2Fairflow/versions/latest").await;
    assert_eq!(entry["_meta"]["dev.inquest/registry"]["health"]["stale"], true);
    // The whole extension record, once.
    let mut ext = entry["_meta"]["dev.inquest/registry"].clone();
    ext.as_object_mut().unwrap().remove("health");
    ext.as_object_mut().unwrap().remove("tools");
    assert_eq!(
        ext,
        json!({
            "status": "active",
            "latest_version": "1.0.0",
            "owner": {"team": "data-platform", "support_channel": "#data-platform"},
            "service_identity": "spiffe://td/server/airflow",
            "security_review": {"state": "approved", "by": "user:root", "at": "2026-01-15T10:00:00Z", "note": null},
            "production": {"state": "approved", "by": "user:root", "at": "2026-01-15T10:00:00Z", "note": null},
            "access": {
                "allowed": ["group:data-eng", "spiffe://td/agent"],
                "preview": [],
                "tools": {
                    "clear_task": {"approval": {"approvers": ["group:airflow-oncall"], "required": 1}},
                    "get_logs": {"minutes_saved": 10},
                    "trigger_dag": {"allowed": ["group:data-eng"]}
                },
                "unlisted_tools": "needs_approval",
                "default_approvers": {"approvers": ["group:data-platform"], "required": 1}
            },
            "minutes_saved": 5,
            "usage": {"month": "2026-01", "invocations": 0, "active_users": 0, "total_invocations": 0}
        })
    );
    assert!(r.store.record_tools("com.example/nope", &[], at(0)).await.is_err());
}

/// Two replicas of one server send batches naming the same tools in different orders,
/// at once: every batch is recorded (none dies in a lock cycle).
async fn replicas_of_one_server_report_at_once(r: &Reg) {
    seed_policies(r).await;
    let report = |tool: &str| {
        json!({"server": "com.example/airflow", "tool": tool, "principal": "user:alice", "outcome": "ok",
               "latency_ms": 5, "team": "data-eng"})
    };
    let one = json!([report("get_logs"), report("trigger_dag"), report("clear_task")]);
    let other = json!([report("clear_task"), report("trigger_dag"), report("get_logs")]);
    let server = airflow_identity();
    for _ in 0..20 {
        let (a, b) = tokio::join!(
            r.post(&server, "/v0.1/x/usage", one.clone()),
            r.post(&server, "/v0.1/x/usage", other.clone())
        );
        assert_eq!((a.0, b.0), (204, 204), "{} {}", a.1, b.1);
    }
    let (_, s) = r.get(&alice(), "/v0.1/x/usage").await;
    assert_eq!((s["total"]["invocations"].as_i64(), s["total"]["active_users"].as_i64()), (Some(120), Some(1)), "{s}");
}

async fn usage_aggregates_by_month_and_team(r: &Reg) {
    seed_policies(r).await;
    let report = |tool: &str, principal: &str, outcome: &str, team: Option<&str>| {
        json!({"server": "com.example/airflow", "tool": tool, "principal": principal, "outcome": outcome,
               "latency_ms": 120, "team": team})
    };
    let ok = report("get_logs", "user:alice", "ok", Some("data-eng"));
    // Only the server itself reports its usage.
    let presto = Principal::service("spiffe://td/server/presto");
    for (who, status) in [(alice(), 403), (presto, 403), (agent(), 403)] {
        assert_eq!(r.post(&who, "/v0.1/x/usage", ok.clone()).await.0, status, "{who:?}");
    }
    let mut unknown = ok.clone();
    unknown["server"] = json!("com.example/nope");
    assert_eq!(r.post(&airflow_identity(), "/v0.1/x/usage", unknown).await.0, 404);
    let (status, body) = r.post(&airflow_identity(), "/v0.1/x/usage", report("bad tool", "", "ok", Some(""))).await;
    assert_eq!((status, body["violations"].as_array().map(Vec::len)), (400, Some(3)), "{body}");
    assert_eq!(r.post(&airflow_identity(), "/v0.1/x/usage", report("t", "p", "maybe", None)).await.0, 400);
    // An array is taken whole or not at all; its violations name the item.
    let (status, body) =
        r.post(&airflow_identity(), "/v0.1/x/usage", json!([ok, report("bad tool", "user:x", "ok", None)])).await;
    let fields: Vec<&str> =
        body["violations"].as_array().into_iter().flatten().filter_map(|v| v["field"].as_str()).collect();
    assert_eq!((status, fields), (400, vec!["[1].tool"]), "{body}");
    assert_eq!(r.post(&airflow_identity(), "/v0.1/x/usage", json!([])).await.0, 400);
    let mut other = ok.clone();
    other["server"] = json!("com.example/presto");
    assert_eq!(r.post(&airflow_identity(), "/v0.1/x/usage", json!([ok, other])).await.0, 403);

    let send = |t: DateTime<Utc>, body: Value| async move {
        r.set_time(t);
        let (status, resp) = r.post(&airflow_identity(), "/v0.1/x/usage", body).await;
        assert_eq!(status, 204, "{resp}");
    };
    // January: alice twice and the agent for data-eng, bob fails for ads, carol without a team.
    send(at(0), ok.clone()).await;
    send(at(60), ok.clone()).await;
    // Two in one report, as a busy server sends them.
    send(
        at(120),
        json!([
            report("trigger_dag", "spiffe://td/agent", "ok", Some("data-eng")),
            report("get_logs", "user:bob", "error", Some("ads"))
        ]),
    )
    .await;
    send(at(240), report("get_logs", "user:carol", "ok", None)).await;
    // March: alice once more.
    let march = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    send(march, ok.clone()).await;

    let (status, s) = r.get(&alice(), "/v0.1/x/usage?from=2026-01&to=2026-03").await;
    assert_eq!(status, 200, "{s}");
    // Minutes: get_logs 10 each (alice 3, carol 1), trigger_dag the server's 5, failures
    // none: 45 minutes, 35 of them in January.
    assert_eq!(
        s["total"],
        json!({"invocations": 6, "succeeded": 5, "failed": 1, "denied": 0, "active_users": 4,
               "hours_saved": 0.8, "avg_latency_ms": 120.0})
    );
    let months: Vec<(&str, i64, i64, f64)> = s["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["month"].as_str().unwrap(),
                m["invocations"].as_i64().unwrap(),
                m["active_users"].as_i64().unwrap(),
                m["hours_saved"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(months, [("2026-01", 5, 4, 0.6), ("2026-02", 0, 0, 0.0), ("2026-03", 1, 1, 0.2)]);
    let jan_teams: Vec<(Value, i64, i64)> = s["months"][0]["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["team"].clone(), t["invocations"].as_i64().unwrap(), t["active_users"].as_i64().unwrap()))
        .collect();
    assert_eq!(jan_teams, [(Value::Null, 1, 1), (json!("ads"), 1, 1), (json!("data-eng"), 3, 2)]);

    let (_, team) = r.get(&alice(), "/v0.1/x/usage?from=2026-01&to=2026-03&team=data-eng").await;
    assert_eq!(
        (team["team"].as_str(), &team["total"]["invocations"], &team["total"]["active_users"]),
        (Some("data-eng"), &json!(4), &json!(2))
    );
    assert_eq!(team["total"]["hours_saved"], 0.6, "alice 3 x 10 + agent 5 minutes");

    // The catalog shows this month's counters.
    let (_, entry) = r.get(&alice(), "/v0.1/servers/com.example%2Fairflow/versions/latest").await;
    assert_eq!(
        entry["_meta"]["dev.inquest/registry"]["usage"],
        json!({"month": "2026-03", "invocations": 1, "active_users": 1, "total_invocations": 6})
    );
    r.set_time(Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap());
    let (_, entry) = r.get(&alice(), "/v0.1/servers/com.example%2Fairflow/versions/latest").await;
    assert_eq!(entry["_meta"]["dev.inquest/registry"]["usage"]["invocations"], 0);
    // Defaults: the twelve months up to now.
    let (_, d) = r.get(&alice(), "/v0.1/x/usage").await;
    assert_eq!(
        (d["from"].as_str(), d["to"].as_str(), d["months"].as_array().unwrap().len()),
        (Some("2025-05"), Some("2026-04"), 12)
    );
    for q in ["?from=2026-13", "?from=2026-04&to=2026-01", "?from=1990-01&to=2026-01"] {
        assert_eq!(r.get(&alice(), &format!("/v0.1/x/usage{q}")).await.0, 400, "{q}");
    }
}

async fn policy_writes_reach_other_replicas(r: &Reg) {
    // Two more replicas over the same store: one looks for changes on every request,
    // the other at most every 100 ms.
    let eager = Reg::over(r.store.clone(), PolicyCache::new(Duration::ZERO));
    let lazy = Reg::over(r.store.clone(), PolicyCache::new(Duration::from_millis(100)));
    r.publish(doc("com.example/airflow", "1.0.0", "DAG runs")).await;
    r.govern(
        "com.example/airflow",
        json!({"owner": {"team": "data-platform"}, "access": {"allowed": ["group:data-eng"]}}),
    )
    .await;
    assert_eq!((alices_decision(r).await, alices_decision(&eager).await), ("allow".into(), "allow".into()));
    r.govern("com.example/airflow", json!({"owner": {"team": "data-platform"}, "access": {"allowed": ["group:ml"]}}))
        .await;
    assert_eq!((alices_decision(r).await, alices_decision(&eager).await), ("deny".into(), "deny".into()));
    // The lazy replica's first request loads everything; a later write elsewhere
    // reaches it once its staleness passed (the unit tests pin the throttling down).
    assert_eq!(alices_decision(&lazy).await, "deny");
    let status_uri = "/v0.1/servers/com.example%2Fairflow/versions/1.0.0/status";
    assert_eq!(eager.patch(&admin(), status_uri, json!({"status": "deleted"})).await.0, 200);
    let ml = json!({"principal": Principal::user("m", &["ml"]), "server": "com.example/airflow"});
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(lazy.check(&admin(), ml).await.1["reason"], "the server is deleted");
}

async fn alices_decision(reg: &Reg) -> String {
    let (_, d) = reg.check(&alice(), json!({"server": "com.example/airflow"})).await;
    d["decision"].as_str().unwrap().to_string()
}
