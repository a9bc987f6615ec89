//! The approval service and the audit log, through the HTTP routes, on SQLite and
//! PostgreSQL. Callers are chosen per request: a test layer puts the `Principal` named
//! in an `x-test-principal` header where the real authentication layer would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use chrono::{DateTime, TimeZone, Utc};
use inquest::clock::Clock;
use inquest::config::RegistryConfig;
use inquest::identity::Principal;
use inquest::policy::{ApproverPolicy, matches};
use inquest::registry::approvals::{self, ApprovalContext, ApproverLookup, PolicyUnavailable};
use inquest::registry::audit::{self, ChainBreak};
use inquest::store::SqlStore;
use serde_json::{Value, json};
use sqlx::{AnyConnection, Connection};
use tower::ServiceExt;

use crate::support::fixed::{TestClock, test_identity};
use crate::support::pg::TestDb;

const PUBLIC_URL: &str = "https://registry.example";
const TTL_SECS: i64 = 3600;

fn airflow() -> Principal {
    Principal::service("spiffe://inquest.local/server/airflow")
}
fn presto() -> Principal {
    Principal::service("spiffe://inquest.local/server/presto")
}
fn drafter() -> Principal {
    Principal::service("spiffe://inquest.local/agent")
}
fn alice() -> Principal {
    Principal::user("alice", &["data-eng"])
}
fn bob() -> Principal {
    Principal::user("bob", &["data-eng"])
}
fn carol() -> Principal {
    Principal::user("carol", &["finance"])
}
fn dave() -> Principal {
    Principal::user("dave", &["reviewers"])
}
fn mallory() -> Principal {
    Principal::user("mallory", &["ml"])
}
fn admin() -> Principal {
    Principal::user("root", &["inquest-admins"])
}

/// The registry's policy, as a table.
struct Policies;

const APPROVER_MATCHERS: [&str; 3] = ["group:data-eng", "user:carol", "group:reviewers"];

#[async_trait::async_trait]
impl ApproverLookup for Policies {
    async fn tool_approvers(&self, server: &str, tool: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable> {
        Ok(match (server, tool) {
            ("airflow", "clear_task") => Some(ApproverPolicy { approvers: vec!["group:data-eng".into()], required: 1 }),
            ("presto", "kill_query") => {
                Some(ApproverPolicy { approvers: vec!["group:data-eng".into(), "user:carol".into()], required: 2 })
            }
            _ => None,
        })
    }

    async fn pull_request_approvers(&self, repository: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable> {
        Ok((repository == "acme/pipelines")
            .then(|| ApproverPolicy { approvers: vec!["group:reviewers".into()], required: 1 }))
    }

    async fn is_approver(&self, principal: &Principal) -> Result<bool, PolicyUnavailable> {
        Ok(APPROVER_MATCHERS.iter().any(|m| matches(m, principal)))
    }
}

struct Harness {
    router: Router,
    store: Arc<SqlStore>,
    clock: Arc<TestClock>,
    store_url: String,
    backend: &'static str,
    _db: Box<dyn std::any::Any + Send>,
}

impl Harness {
    async fn new(store_url: String, backend: &'static str, db: Box<dyn std::any::Any + Send>) -> Harness {
        let store = Arc::new(SqlStore::open(&store_url, 4).await.unwrap());
        let clock = Arc::new(TestClock(Mutex::new(Utc.timestamp_opt(1_764_000_000, 0).unwrap())));
        let config = RegistryConfig {
            public_url: PUBLIC_URL.into(),
            url: PUBLIC_URL.into(),
            admins: vec!["group:inquest-admins".into()],
            approval_ttl: Duration::from_secs(TTL_SECS as u64),
            probe_interval: Duration::from_secs(30),
            pull_request_approvers: Vec::new(),
        };
        let ctx = ApprovalContext {
            config: Arc::new(config),
            store: store.clone(),
            clock: clock.clone(),
            approvers: Arc::new(Policies),
        };
        let router = approvals::router(ctx).layer(axum::middleware::from_fn(test_identity));
        Harness { router, store, clock, store_url, backend, _db: db }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn advance(&self, secs: i64) {
        *self.clock.0.lock().unwrap() += chrono::Duration::seconds(secs);
    }

    /// One request as `who` (or nobody), answering the status and the JSON body.
    async fn call(&self, who: Option<&Principal>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(p) = who {
            req = req.header("x-test-principal", serde_json::to_string(p).unwrap());
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
        )
    }

    async fn get(&self, who: &Principal, path: &str) -> (u16, Value) {
        self.call(Some(who), "GET", path, None).await
    }

    async fn post(&self, who: &Principal, path: &str, body: Value) -> (u16, Value) {
        self.call(Some(who), "POST", path, Some(body)).await
    }

    /// Creates a tool-call request for `action`; answers the request's view.
    async fn request_tool(&self, who: &Principal, server: &str, tool: &str, action: Value) -> Value {
        self.request_tool_for(who, None, server, tool, action).await
    }

    /// Creates a tool-call request for `action`, done on behalf of `caller` if given.
    async fn request_tool_for(
        &self,
        who: &Principal,
        caller: Option<&Principal>,
        server: &str,
        tool: &str,
        action: Value,
    ) -> Value {
        let mut body = json!({"kind": "tool_call", "action": action, "resource": {"server": server, "tool": tool}});
        if let Some(caller) = caller {
            body["on_behalf_of"] = json!(caller);
        }
        let (status, body) = self.post(who, "/v0.1/x/approvals", body).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn pending_ids(&self, who: &Principal) -> Vec<(String, bool)> {
        let (status, body) = self.get(who, "/v0.1/x/approvals?state=pending").await;
        assert_eq!(status, 200, "{body}");
        body["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["id"].as_str().unwrap().to_string(), a["may_decide"].as_bool().unwrap()))
            .collect()
    }

    /// A connection of its own, for doing what the service never does.
    async fn raw(&self) -> AnyConnection {
        AnyConnection::connect(&self.store_url).await.unwrap()
    }

    async fn close(&self) {
        self.store.close().await;
    }
}

async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/store.db", dir.path().display());
    Harness::new(url, "sqlite", Box::new(dir)).await
}

async fn postgres() -> Harness {
    let db = TestDb::create().await;
    Harness::new(db.url.clone(), "postgres", Box::new(db)).await
}

async fn run<F>(h: Harness, test: F)
where
    F: AsyncFnOnce(&Harness),
{
    test(&h).await;
    h.close().await;
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $name() { super::run(super::sqlite().await, super::$name).await })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $name() { super::run(super::postgres().await, super::$name).await })*
        }
    };
}

both_backends!(
    scenario_table,
    inbox_and_visibility,
    creating_requests,
    expiry_sweep,
    concurrent_calls_stay_single_use,
    audit_chain_detects_tampering,
);

/// What one step does, as whom.
enum Step {
    Approve(Principal),
    Decline(Principal),
    /// Approve quoting a digest other than the request's.
    ApproveOtherDigest(Principal),
    Consume(Principal),
    ConsumeOtherDigest(Principal),
    Revoke(Principal),
    Advance(i64),
    Show(Principal),
}

/// The machine's scenario table, end to end: each row opens a request of its own and
/// checks every step's status and resulting state (200) or refusal code.
async fn scenario_table(h: &Harness) {
    use Step::*;
    let clear = (airflow(), "airflow", "clear_task", None);
    let kill = (presto(), "presto", "kill_query", None);
    // Bob (an approver) called the tool himself: the request is on his behalf.
    let bobs_clear = (airflow(), "airflow", "clear_task", Some(bob()));
    // (name, (requester, server, tool, on behalf of), steps with the status and state or refusal code)
    type Request = (Principal, &'static str, &'static str, Option<Principal>);
    type Scenario = (&'static str, Request, Vec<(Step, u16, &'static str)>);
    let scenarios: Vec<Scenario> = vec![
        (
            "approve, consume once; a replayed consumption is refused",
            clear.clone(),
            vec![
                (Approve(alice()), 200, "approved"),
                (Consume(airflow()), 200, "consumed"),
                (Consume(airflow()), 409, "already_consumed"),
            ],
        ),
        ("self-approval refused", clear.clone(), vec![(Approve(airflow()), 403, "self_approval")]),
        (
            "a person approving their own tool call refused",
            bobs_clear.clone(),
            vec![
                (Approve(bob()), 403, "own_action"),
                (Decline(bob()), 403, "own_action"),
                (Show(bob()), 200, "pending"),
                (Consume(airflow()), 409, "not_approved"),
            ],
        ),
        (
            "another approver approves a person's tool call",
            bobs_clear.clone(),
            vec![
                (Approve(bob()), 403, "own_action"),
                (Approve(alice()), 200, "approved"),
                (Consume(airflow()), 200, "consumed"),
            ],
        ),
        ("service approval refused", clear.clone(), vec![(Approve(drafter()), 403, "service_cannot_decide")]),
        ("unauthorized approver refused", clear.clone(), vec![(Approve(mallory()), 403, "not_an_approver")]),
        (
            "decision digest mismatch refused",
            clear.clone(),
            vec![(ApproveOtherDigest(alice()), 409, "digest_mismatch"), (Show(alice()), 200, "pending")],
        ),
        (
            "consumption digest mismatch refused",
            clear.clone(),
            vec![
                (Approve(alice()), 200, "approved"),
                (ConsumeOtherDigest(airflow()), 409, "digest_mismatch"),
                (Consume(airflow()), 200, "consumed"),
            ],
        ),
        (
            "consumption by another service refused",
            clear.clone(),
            vec![(Approve(alice()), 200, "approved"), (Consume(presto()), 403, "not_requester")],
        ),
        ("consumption before approval refused", clear.clone(), vec![(Consume(airflow()), 409, "not_approved")]),
        (
            "expired request refused",
            clear.clone(),
            vec![(Advance(TTL_SECS), 0, ""), (Approve(alice()), 409, "expired"), (Show(airflow()), 200, "expired")],
        ),
        (
            "expired approval refused",
            clear.clone(),
            vec![(Approve(alice()), 200, "approved"), (Advance(TTL_SECS), 0, ""), (Consume(airflow()), 409, "expired")],
        ),
        (
            "revoked approval refused",
            clear.clone(),
            vec![
                (Approve(alice()), 200, "approved"),
                (Revoke(airflow()), 200, "revoked"),
                (Consume(airflow()), 409, "revoked"),
            ],
        ),
        (
            "revoked by an administrator",
            clear.clone(),
            vec![(Revoke(admin()), 200, "revoked"), (Approve(alice()), 409, "revoked")],
        ),
        ("revocation by an approver refused", clear.clone(), vec![(Revoke(alice()), 403, "not_allowed_to_revoke")]),
        (
            "two-approver policy needs two distinct people",
            kill.clone(),
            vec![
                (Approve(alice()), 200, "pending"),
                (Approve(alice()), 409, "duplicate_approval"),
                (Consume(presto()), 409, "not_approved"),
                (Approve(carol()), 200, "approved"),
                (Consume(presto()), 200, "consumed"),
            ],
        ),
        (
            "decline by one approver declines",
            kill.clone(),
            vec![
                (Approve(alice()), 200, "pending"),
                (Decline(carol()), 200, "declined"),
                (Approve(bob()), 409, "declined"),
                (Consume(presto()), 409, "declined"),
            ],
        ),
    ];
    let other = "0".repeat(64);
    for (name, (requester, server, tool, caller), steps) in scenarios {
        let action = json!({"scenario": name, "arguments": {"n": 1}});
        let created = h.request_tool_for(&requester, caller.as_ref(), server, tool, action).await;
        let id = created["id"].as_str().unwrap();
        let digest = created["digest"].as_str().unwrap();
        let at = |suffix: &str| format!("/v0.1/x/approvals/{id}{suffix}");
        for (i, (step, status, outcome)) in steps.into_iter().enumerate() {
            let (got_status, body) = match step {
                Approve(p) => h.post(&p, &at("/decision"), json!({"decision": "approve", "digest": digest})).await,
                Decline(p) => h.post(&p, &at("/decision"), json!({"decision": "decline", "digest": digest})).await,
                ApproveOtherDigest(p) => {
                    h.post(&p, &at("/decision"), json!({"decision": "approve", "digest": other})).await
                }
                Consume(p) => h.post(&p, &at("/consume"), json!({"digest": digest})).await,
                ConsumeOtherDigest(p) => h.post(&p, &at("/consume"), json!({"digest": other})).await,
                Revoke(p) => h.post(&p, &at("/revoke"), json!({"reason": "no longer needed"})).await,
                Show(p) => h.get(&p, &at("")).await,
                Advance(secs) => {
                    h.advance(secs);
                    continue;
                }
            };
            let got = if got_status == 200 { &body["state"] } else { &body["error"] };
            assert_eq!((got_status, got.as_str().unwrap_or("")), (status, outcome), "{name}, step {i}: {body}");
        }
    }

    // A malformed digest or body is a bad request, not a refusal (nor an audit record).
    let fresh = h.request_tool(&airflow(), "airflow", "clear_task", json!({"scenario": "malformed"})).await;
    let id = fresh["id"].as_str().unwrap();
    for (path, body, field) in [
        ("decision", json!({"decision": "approve", "digest": "ABC"}), "digest"),
        ("decision", json!({"decision": "maybe", "digest": other}), "decision"),
        ("consume", json!({"digest": "F".repeat(64)}), "digest"),
        ("revoke", json!({"reason": "x".repeat(1001)}), "reason"),
    ] {
        let who = if path == "decision" { alice() } else { airflow() };
        let (status, answer) = h.post(&who, &format!("/v0.1/x/approvals/{id}/{path}"), body).await;
        assert_eq!((status, answer["field"].as_str()), (400, Some(field)), "{answer}");
    }

    // Every transition and refusal above is in the audit log, and the chain holds.
    let v = audit::verify(&h.store).await.unwrap();
    assert_eq!(v.broken, None, "{}", h.backend);
    let (_, page) = h.get(&admin(), "/v0.1/x/audit?limit=1000").await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(v.count, records.len() as u64);
    let actions = |subject: &str| -> Vec<(String, String)> {
        records
            .iter()
            .filter(|r| r["subject"] == subject)
            .map(|r| (r["actor"].as_str().unwrap().to_string(), r["action"].as_str().unwrap().to_string()))
            .collect()
    };
    // The two-approver row, record by record.
    let (_, consumed) = h.get(&admin(), "/v0.1/x/approvals?state=consumed").await;
    let two = consumed["approvals"].as_array().unwrap().iter().find(|a| a["approver_policy"]["required"] == 2).unwrap();
    let presto_id = presto().id();
    let expected: Vec<(String, String)> = [
        (presto_id.as_str(), "approval.created"),
        ("user:alice", "approval.approval_counted"),
        ("user:alice", "approval.decision_refused"),
        (presto_id.as_str(), "approval.consume_refused"),
        ("user:carol", "approval.approved"),
        (presto_id.as_str(), "approval.consumed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(actions(&format!("approval:{}", two["id"].as_str().unwrap())), expected);
    // An expiry found at decision time is stored, by the system, before the refusal.
    let expired = records.iter().filter(|r| r["action"] == "approval.expired").count();
    assert_eq!(expired, 2);
    assert!(records.iter().filter(|r| r["action"] == "approval.expired").all(|r| r["actor"] == "system"));
}

/// The inbox shows each person what they may decide; services see their own requests;
/// administrators see everything; nobody else sees a request or the audit log.
async fn inbox_and_visibility(h: &Harness) {
    let a = h.request_tool(&airflow(), "airflow", "clear_task", json!({"dag": "etl", "task": "load"})).await;
    h.advance(1);
    let b = h.request_tool(&presto(), "presto", "kill_query", json!({"query_id": "q-1"})).await;
    h.advance(1);
    let (status, c) = h
        .post(
            &drafter(),
            "/v0.1/x/approvals",
            json!({"kind": "pull_request", "action": {"ready_for_review": true},
                   "resource": {"repository": "acme/pipelines", "number": 7, "head_sha": "a".repeat(40)}}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let (a, b, c) = (id(&a), id(&b), id(&c));

    // Newest first; (id, may_decide).
    let cases: Vec<(Principal, Vec<(String, bool)>)> = vec![
        (alice(), vec![(b.clone(), true), (a.clone(), true)]),
        (bob(), vec![(b.clone(), true), (a.clone(), true)]),
        (carol(), vec![(b.clone(), true)]),
        (dave(), vec![(c.clone(), true)]),
        (mallory(), vec![]),
        (admin(), vec![(c.clone(), false), (b.clone(), false), (a.clone(), false)]),
        (airflow(), vec![(a.clone(), false)]),
        (drafter(), vec![(c.clone(), false)]),
    ];
    for (who, expected) in &cases {
        assert_eq!(h.pending_ids(who).await, *expected, "{who:?}");
    }

    // An inbox entry carries what a person needs to decide.
    let (_, inbox) = h.get(&carol(), "/v0.1/x/approvals?state=pending").await;
    let entry = &inbox["approvals"][0];
    assert_eq!(entry["action"], json!({"query_id": "q-1"}));
    assert_eq!(entry["digest"], approvals::action_digest(&json!({"query_id": "q-1"})));
    assert_eq!(entry["requester"], json!({"kind": "service", "spiffe_id": "spiffe://inquest.local/server/presto"}));
    assert_eq!(
        entry["expires_at"],
        json!((h.now() - chrono::Duration::seconds(1) + chrono::Duration::seconds(TTL_SECS)))
    );

    // After alice approves one of two, she has nothing left to do on it; carol still does.
    let digest_b = entry["digest"].as_str().unwrap();
    let (s, _) = h
        .post(&alice(), &format!("/v0.1/x/approvals/{b}/decision"), json!({"decision": "approve", "digest": digest_b}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.pending_ids(&alice()).await, vec![(b.clone(), false), (a.clone(), true)]);
    assert_eq!(h.pending_ids(&carol()).await, vec![(b.clone(), true)]);

    // One request: the requester, its approvers and administrators.
    for (who, path_id, status) in [
        (alice(), &a, 200),
        (admin(), &a, 200),
        (airflow(), &a, 200),
        (mallory(), &a, 403),
        (presto(), &a, 403),
        (carol(), &a, 403),
        (dave(), &c, 200),
        (alice(), &c, 403),
    ] {
        let (got, body) = h.get(&who, &format!("/v0.1/x/approvals/{path_id}")).await;
        assert_eq!(got, status, "{who:?} {body}");
    }
    let (status, _) = h.call(None, "GET", &format!("/v0.1/x/approvals/{a}"), None).await;
    assert_eq!(status, 401);
    let (status, body) = h.get(&alice(), "/v0.1/x/approvals/no-such-id").await;
    assert_eq!((status, body["error"].as_str().unwrap()), (404, "not_found"));
    let (status, body) = h.get(&alice(), "/v0.1/x/approvals?state=bogus").await;
    assert_eq!((status, body["field"].as_str().unwrap()), (400, "state"));

    // The audit log: administrators and approvers.
    for (who, status) in [(admin(), 200), (alice(), 200), (dave(), 200), (mallory(), 403), (airflow(), 403)] {
        let (got, _) = h.get(&who, "/v0.1/x/audit").await;
        assert_eq!(got, status, "{who:?}");
    }
    let (_, page) = h.get(&admin(), "/v0.1/x/audit?after=1&limit=2").await;
    let seqs: Vec<i64> = page["records"].as_array().unwrap().iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!((seqs, page["next_after"].as_i64()), (vec![2, 3], Some(3)));
}

/// What a service may ask for, and what it gets back.
async fn creating_requests(h: &Harness) {
    let action = json!({"tool": "clear_task", "arguments": {"dag_id": "etl", "task_id": "load", "downstream": true}});
    let (status, created) = h
        .post(
            &airflow(),
            "/v0.1/x/approvals",
            json!({"kind": "tool_call", "action": action, "resource": {"server": "airflow", "tool": "clear_task"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let now = h.now();
    assert_eq!(
        created,
        json!({
            "id": id,
            "kind": "tool_call",
            "state": "pending",
            "digest": approvals::action_digest(&action),
            "action": action,
            "resource": {"server": "airflow", "tool": "clear_task"},
            "requester": {"kind": "service", "spiffe_id": "spiffe://inquest.local/server/airflow"},
            "approver_policy": {"approvers": ["group:data-eng"], "required": 1},
            "approvals": [],
            "created_at": now,
            "expires_at": now + chrono::Duration::seconds(TTL_SECS),
            "updated_at": now,
            "url": format!("{PUBLIC_URL}/approvals/{id}"),
            "may_decide": false,
        })
    );

    // The same action again (a retried call) lands on the same open request; another does not.
    let clear_task = json!({"server": "airflow", "tool": "clear_task"});
    let body = |action: Value| json!({"kind": "tool_call", "action": action, "resource": clear_task});
    let reordered =
        json!({"arguments": {"task_id": "load", "downstream": true, "dag_id": "etl"}, "tool": "clear_task"});
    let (status, again) = h.post(&airflow(), "/v0.1/x/approvals", body(reordered.clone())).await;
    assert_eq!((status, again["id"].as_str().unwrap()), (200, id.as_str()));
    let (status, other) =
        h.post(&airflow(), "/v0.1/x/approvals", body(json!({"tool": "clear_task", "arguments": {}}))).await;
    assert_eq!(status, 201);
    assert_ne!(other["id"], created["id"]);
    // Once closed, asking again opens a new one.
    let (s, _) = h.post(&airflow(), &format!("/v0.1/x/approvals/{id}/revoke"), json!({})).await;
    assert_eq!(s, 200);
    let (status, fresh) = h.post(&airflow(), "/v0.1/x/approvals", body(reordered)).await;
    assert_eq!(status, 201);
    assert_ne!(fresh["id"], created["id"]);

    // A request on a person's behalf names them; the same action for another person is
    // another request (each is barred from deciding their own), and the creation's
    // audit record says whom it is for.
    let for_person = |who: &Principal| {
        json!({"kind": "tool_call", "action": {"tool": "clear_task", "arguments": {"dag_id": "hr"}},
               "resource": clear_task, "on_behalf_of": who})
    };
    let (status, bobs) = h.post(&airflow(), "/v0.1/x/approvals", for_person(&bob())).await;
    assert_eq!(status, 201, "{bobs}");
    assert_eq!(bobs["on_behalf_of"], json!({"kind": "user", "subject": "bob", "groups": ["data-eng"]}));
    let (status, again) = h.post(&airflow(), "/v0.1/x/approvals", for_person(&bob())).await;
    assert_eq!((status, &again["id"]), (200, &bobs["id"]));
    let (status, alices) = h.post(&airflow(), "/v0.1/x/approvals", for_person(&alice())).await;
    assert_eq!(status, 201, "{alices}");
    assert_ne!(alices["id"], bobs["id"]);
    let (_, page) = h.get(&admin(), "/v0.1/x/audit?limit=1000").await;
    let created_for_bob = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == format!("approval:{}", bobs["id"].as_str().unwrap()))
        .unwrap();
    assert_eq!(created_for_bob["action"], "approval.created");
    assert_eq!(created_for_bob["data"]["on_behalf_of"], "user:bob");
    assert_eq!(created_for_bob["data"]["requester"], airflow().id());

    // Pull requests take their approvers from the policy too.
    let pr = json!({"kind": "pull_request", "action": {"ready_for_review": true},
                    "resource": {"repository": "acme/pipelines", "number": 7, "head_sha": "AB".repeat(20)}});
    let (status, body) = h.post(&drafter(), "/v0.1/x/approvals", pr).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["approver_policy"], json!({"approvers": ["group:reviewers"], "required": 1}));
    assert_eq!(body["resource"]["head_sha"], "ab".repeat(20));

    // Refusals and malformed bodies: (who, body, status, error code, field).
    fn tool(server: &str, tool: &str) -> Value {
        json!({"kind": "tool_call", "action": {}, "resource": {"server": server, "tool": tool}})
    }
    let cases: Vec<(Principal, Value, u16, &str, Option<&str>)> = vec![
        (alice(), tool("airflow", "clear_task"), 403, "only_services_request", None),
        (airflow(), tool("airflow", "list_dags"), 409, "no_approver_policy", None),
        (
            drafter(),
            json!({"kind": "pull_request", "action": {},
                   "resource": {"repository": "acme/other", "number": 1, "head_sha": "a".repeat(40)}}),
            409,
            "no_approver_policy",
            None,
        ),
        (airflow(), json!({"kind": "shell", "action": {}, "resource": {}}), 400, "bad_request", Some("kind")),
        (
            airflow(),
            json!({"kind": "tool_call", "action": {}, "resource": {"server": "airflow"}}),
            400,
            "bad_request",
            Some("resource"),
        ),
        (
            airflow(),
            json!({"kind": "tool_call", "action": [1], "resource": {"server": "a", "tool": "b"}}),
            400,
            "bad_request",
            Some("action"),
        ),
        (
            airflow(),
            json!({"kind": "tool_call", "action": {}, "resource": {"server": "", "tool": "b"}}),
            400,
            "bad_request",
            Some("resource.server"),
        ),
        (
            drafter(),
            json!({"kind": "pull_request", "action": {},
                   "resource": {"repository": "acme/pipelines", "number": 7, "head_sha": "main"}}),
            400,
            "bad_request",
            Some("resource.head_sha"),
        ),
        (
            airflow(),
            // The approvers come from the policy, never from the body.
            json!({"kind": "tool_call", "action": {}, "resource": {"server": "a", "tool": "b"},
                   "approvers": ["user:me"]}),
            400,
            "bad_request",
            Some("approvers"),
        ),
        (
            airflow(),
            json!({"kind": "tool_call", "action": {"blob": "x".repeat(70_000)},
                   "resource": {"server": "a", "tool": "b"}}),
            400,
            "bad_request",
            Some("action"),
        ),
    ];
    for (who, body, status, error, field) in cases {
        let (got, answer) = h.post(&who, "/v0.1/x/approvals", body.clone()).await;
        assert_eq!(
            (got, answer["error"].as_str().unwrap_or(""), answer["field"].as_str()),
            (status, error, field),
            "{body}: {answer}"
        );
    }
    let (status, _) = h.call(None, "POST", "/v0.1/x/approvals", Some(tool("airflow", "clear_task"))).await;
    assert_eq!(status, 401);
}

/// The sweep stores what time already decided, once, audited as the system's doing.
async fn expiry_sweep(h: &Harness) {
    let a = h.request_tool(&airflow(), "airflow", "clear_task", json!({"n": 1})).await;
    let b = h.request_tool(&airflow(), "airflow", "clear_task", json!({"n": 2})).await;
    let (s, _) = h
        .post(
            &alice(),
            &format!("/v0.1/x/approvals/{}/decision", a["id"].as_str().unwrap()),
            json!({"decision": "approve", "digest": a["digest"]}),
        )
        .await;
    assert_eq!(s, 200);
    h.advance(TTL_SECS - 1);
    assert_eq!(approvals::sweep_expired(h.store.as_ref(), h.now()).await.unwrap(), 0);
    h.advance(1);
    // Expired as of now, before any sweep stored it.
    let (_, listed) = h.get(&admin(), "/v0.1/x/approvals?state=expired").await;
    let ids: Vec<&str> = listed["approvals"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [b["id"].as_str().unwrap(), a["id"].as_str().unwrap()]);
    assert_eq!(h.pending_ids(&alice()).await, vec![]);

    assert_eq!(approvals::sweep_expired(h.store.as_ref(), h.now()).await.unwrap(), 2);
    assert_eq!(approvals::sweep_expired(h.store.as_ref(), h.now()).await.unwrap(), 0);
    let (_, page) = h.get(&admin(), "/v0.1/x/audit").await;
    let expiries: Vec<(&str, &str, &str)> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "approval.expired")
        .map(|r| (r["actor"].as_str().unwrap(), r["subject"].as_str().unwrap(), r["data"]["state"].as_str().unwrap()))
        .collect();
    let subject = |v: &Value| format!("approval:{}", v["id"].as_str().unwrap());
    let (sa, sb) = (subject(&a), subject(&b));
    assert_eq!(expiries, [("system", sa.as_str(), "expired"), ("system", sb.as_str(), "expired")]);
    let (status, body) = h
        .post(
            &airflow(),
            &format!("/v0.1/x/approvals/{}/consume", a["id"].as_str().unwrap()),
            json!({"digest": a["digest"]}),
        )
        .await;
    assert_eq!((status, body["error"].as_str().unwrap()), (409, "expired"));
    assert_eq!(audit::verify(&h.store).await.unwrap().broken, None);
}

/// Racing calls: of eight consumptions exactly one succeeds, and two people approving
/// at once both count.
async fn concurrent_calls_stay_single_use(h: &Harness) {
    let r = h.request_tool(&presto(), "presto", "kill_query", json!({"query_id": "q-9"})).await;
    let id = r["id"].as_str().unwrap().to_string();
    let decide = |who: Principal| {
        let (id, digest) = (id.clone(), r["digest"].clone());
        async move {
            h.post(&who, &format!("/v0.1/x/approvals/{id}/decision"), json!({"decision": "approve", "digest": digest}))
                .await
        }
    };
    let (one, two) = tokio::join!(decide(alice()), decide(carol()));
    let mut states = [one.1["state"].as_str().unwrap(), two.1["state"].as_str().unwrap()];
    states.sort();
    assert_eq!((one.0, two.0, states), (200, 200, ["approved", "pending"]));
    let (_, shown) = h.get(&admin(), &format!("/v0.1/x/approvals/{id}")).await;
    let mut by: Vec<&str> = shown["approvals"].as_array().unwrap().iter().map(|v| v["by"].as_str().unwrap()).collect();
    by.sort();
    assert_eq!((shown["state"].as_str().unwrap(), by), ("approved", vec!["user:alice", "user:carol"]));

    let consume = || async {
        h.post(&presto(), &format!("/v0.1/x/approvals/{id}/consume"), json!({"digest": r["digest"]})).await
    };
    let answers = futures::future::join_all((0..8).map(|_| consume())).await;
    let mut outcomes: Vec<(u16, String)> = answers
        .iter()
        .map(|(s, b)| (*s, b[if *s == 200 { "state" } else { "error" }].as_str().unwrap().to_string()))
        .collect();
    outcomes.sort();
    let mut expected = vec![(200, "consumed".to_string())];
    expected.extend(std::iter::repeat_n((409, "already_consumed".to_string()), 7));
    assert_eq!(outcomes, expected);
    assert_eq!(audit::verify(&h.store).await.unwrap().broken, None);
}

/// The log refuses changes; with the guard removed, a changed or deleted record is
/// found by `audit verify`, which names the first broken seq and exits 1.
async fn audit_chain_detects_tampering(h: &Harness) {
    let r = h.request_tool(&airflow(), "airflow", "clear_task", json!({"n": 1})).await;
    let id = r["id"].as_str().unwrap();
    let (s, _) = h
        .post(
            &alice(),
            &format!("/v0.1/x/approvals/{id}/decision"),
            json!({"decision": "approve", "digest": r["digest"]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = h.post(&airflow(), &format!("/v0.1/x/approvals/{id}/consume"), json!({"digest": r["digest"]})).await;
    assert_eq!(s, 200);
    let (s, _) = h.post(&airflow(), &format!("/v0.1/x/approvals/{id}/consume"), json!({"digest": r["digest"]})).await;
    assert_eq!(s, 409);

    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::support::server::config_with(dir.path(), &[("INQUEST_STORE__URL", &h.store_url)]);
    let v = audit::verify(&h.store).await.unwrap();
    assert_eq!((v.count, v.broken.clone()), (4, None));
    assert_eq!(audit::verify_command(&cfg).await.unwrap(), std::process::ExitCode::SUCCESS);

    let mut conn = h.raw().await;
    let original: String =
        sqlx::query_scalar("SELECT data FROM audit_log WHERE seq = 2").fetch_one(&mut conn).await.unwrap();
    let refused = sqlx::query("UPDATE audit_log SET data = '{}' WHERE seq = 2").execute(&mut conn).await;
    assert!(refused.unwrap_err().to_string().contains("append-only"), "the trigger guards the log");
    let refused = sqlx::query("DELETE FROM audit_log WHERE seq = 4").execute(&mut conn).await;
    assert!(refused.is_err(), "the trigger guards the log");

    let unguard = match h.backend {
        "sqlite" => "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete",
        _ => "ALTER TABLE audit_log DISABLE TRIGGER USER",
    };
    sqlx::raw_sql(unguard).execute(&mut conn).await.unwrap();
    // Someone turns the approval into another person's.
    let forged = original.replace("user:alice", "user:bob");
    assert_ne!(forged, original);
    sqlx::query("UPDATE audit_log SET data = $1 WHERE seq = 2").bind(&forged).execute(&mut conn).await.unwrap();
    let v = audit::verify(&h.store).await.unwrap();
    assert_eq!((v.count, v.broken), (1, Some(ChainBreak::Altered { seq: 2 })));
    assert_eq!(audit::verify_command(&cfg).await.unwrap(), std::process::ExitCode::from(1));

    // Put back, it verifies again; then someone deletes the refused consumption.
    sqlx::query("UPDATE audit_log SET data = $1 WHERE seq = 2").bind(&original).execute(&mut conn).await.unwrap();
    assert_eq!(audit::verify(&h.store).await.unwrap().broken, None);
    sqlx::query("DELETE FROM audit_log WHERE seq = 3").execute(&mut conn).await.unwrap();
    let v = audit::verify(&h.store).await.unwrap();
    assert_eq!((v.count, v.broken), (2, Some(ChainBreak::Missing { expected: 3, found: 4 })));
    assert_eq!(audit::verify_command(&cfg).await.unwrap(), std::process::ExitCode::from(1));
    conn.close().await.unwrap();
}
