//! GitHub webhooks and approval gates: the store on SQLite and PostgreSQL, and
//! `POST /v1/webhooks/github` on the booted agent, fed GitHub's own example payloads
//! (`@octokit/webhooks-examples`) signed as GitHub signs them.

use std::sync::Arc;
use std::time::Duration;

use inquest::github::gate::{Approval, Gate, GateState};
use inquest::github::store::GithubStore;
use inquest::intake::auth::hmac_sha256;
use inquest::store::SqlStore;
use serde_json::{Value, json};

use crate::support::refclients::{cache_dir, npm_install};
use crate::support::server::TestServer;

const EXAMPLES: &str = "@octokit/webhooks-examples@7.6.1";
const SECRET: &str = "a webhook secret";
const HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn gate(repo: &str, number: u64, head: &str) -> Gate {
    Gate {
        repo: repo.into(),
        number,
        head_sha: head.into(),
        requester_login: Some("alice".into()),
        state: GateState::Pending,
        approval: None,
        diff_digest: "d".repeat(64),
        request: None,
    }
}

// ---------------------------------------------------------------------------------
// The store, on both backends.

async fn deliveries_are_stored_once_and_claimed_by_lease(s: &GithubStore) {
    assert!(s.record_delivery("d1", "ping", "{}", 1_000).await.unwrap());
    assert!(!s.record_delivery("d1", "ping", "{\"again\": 1}", 2_000).await.unwrap(), "a redelivery");
    assert!(s.record_delivery("d2", "ping", "{}", 1_500).await.unwrap());
    let lease = Duration::from_secs(60);
    let first = s.claim_delivery(3_000, lease).await.unwrap().unwrap();
    assert_eq!((first.id.as_str(), first.body.as_str()), ("d1", "{}"), "oldest first, the first body kept");
    let second = s.claim_delivery(3_000, lease).await.unwrap().unwrap();
    assert_eq!(second.id, "d2");
    assert!(s.claim_delivery(3_000, lease).await.unwrap().is_none(), "both are held");
    s.finish_delivery("d1", "done", 4_000).await.unwrap();
    assert_eq!(s.delivery_outcome("d1").await.unwrap(), Some(Some("done".into())));
    // d2's processor died: after its lease it is taken again; d1 never is.
    let again = s.claim_delivery(3_000 + 60_001, lease).await.unwrap().unwrap();
    assert_eq!(again.id, "d2");
    assert_eq!(s.delivery_outcome("d2").await.unwrap(), Some(None));
    assert_eq!(s.delivery_outcome("nope").await.unwrap(), None);
}

async fn gates_change_by_compare_and_set_with_a_log(s: &GithubStore) {
    s.create_gate("g1", "inv1", &gate("Acme/ETL", 7, HEAD), &["acme/etl-owners".into()], 1_000).await.unwrap();
    let stored = s.gate_of("acme/etl", 7).await.unwrap().expect("found whatever the case");
    assert_eq!((stored.version, stored.gate.state), (1, GateState::Pending));
    assert_eq!(stored.code_owners, ["acme/etl-owners"]);
    let approved = Gate {
        state: GateState::Approved,
        approval: Some(Approval::Review { review_id: 9, by: "bob".into() }),
        ..stored.gate.clone()
    };
    assert!(s.save_gate("g1", &approved, 1, "bob approved", "webhook:d1", 2_000).await.unwrap());
    assert!(!s.save_gate("g1", &approved, 1, "a stale write", "webhook:d2", 2_000).await.unwrap(), "version moved on");
    let now = s.gate_of("acme/etl", 7).await.unwrap().unwrap();
    assert_eq!((now.version, &now.gate), (2, &approved));
    let log = s.gate_log("g1").await.unwrap();
    let lines: Vec<(i64, GateState, &str)> = log.iter().map(|e| (e.version, e.state, e.source.as_str())).collect();
    assert_eq!(lines, [(1, GateState::Pending, "created"), (2, GateState::Approved, "webhook:d1")]);
    assert!(s.gate_of("acme/etl", 8).await.unwrap().is_none());
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/store.db", dir.path().display());
                let sql = std::sync::Arc::new(inquest::store::SqlStore::open(&url, 4).await.unwrap());
                super::$name(&inquest::github::GithubStore::new(sql.clone())).await;
                sql.close().await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $name() {
                let db = crate::support::pg::TestDb::create().await;
                let sql = std::sync::Arc::new(inquest::store::SqlStore::open(&db.url, 4).await.unwrap());
                super::$name(&inquest::github::GithubStore::new(sql.clone())).await;
                sql.close().await;
            })*
        }
    };
}

both_backends!(deliveries_are_stored_once_and_claimed_by_lease, gates_change_by_compare_and_set_with_a_log);

// ---------------------------------------------------------------------------------
// The route and the processor, on the booted agent.

/// GitHub's example payloads of `event`, by action.
async fn examples(event: &str) -> Vec<Value> {
    let dir = cache_dir("npm/webhooks-examples-7.6.1");
    npm_install(&dir, &[EXAMPLES]).await;
    let index = dir.join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let all: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(index).unwrap()).unwrap();
    let entry = all.into_iter().find(|e| e["name"] == event).unwrap_or_else(|| panic!("no {event} examples"));
    entry["examples"].as_array().unwrap().clone()
}

fn example(examples: &[Value], action: &str) -> Value {
    examples.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("no `{action}` example")).clone()
}

struct Hooks {
    server: TestServer,
    store: GithubStore,
    sql: Arc<SqlStore>,
    http: reqwest::Client,
}

impl Hooks {
    async fn start(approvers: &str) -> Hooks {
        let server = TestServer::start(&[
            ("INQUEST_GITHUB__WEBHOOK_SECRETS", SECRET),
            ("INQUEST_GITHUB__APPROVERS", approvers),
            ("INQUEST_GITHUB__APP_LOGIN", "inquest-app[bot]"),
        ])
        .await;
        // A second handle on the agent's own database, to set up and read gates.
        let sql = Arc::new(SqlStore::open(&server.config.store.url, 2).await.unwrap());
        Hooks { store: GithubStore::new(sql.clone()), sql, server, http: reqwest::Client::new() }
    }

    /// Posts `body` as delivery `id` of `event`, signed with `secret`.
    async fn send(&self, id: &str, event: &str, body: &[u8], secret: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/webhooks/github", self.server.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", id)
            .body(body.to_vec());
        if let Some(secret) = secret {
            req = req.header(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), &[body]))),
            );
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn signed(&self, id: &str, event: &str, payload: &Value) -> (u16, Value) {
        self.send(id, event, payload.to_string().as_bytes(), Some(SECRET)).await
    }

    /// Waits until the processor recorded an outcome for `id`.
    async fn outcome(&self, id: &str) -> String {
        for _ in 0..200 {
            if let Some(Some(outcome)) = self.store.delivery_outcome(id).await.unwrap() {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("delivery {id} was not processed");
    }

    async fn stop(self) {
        self.sql.close().await;
        self.server.stop().await;
    }
}

/// Every example of the events the gate follows is accepted and processed, and
/// redelivering it changes nothing.
#[tokio::test]
async fn githubs_example_payloads_are_accepted_once() {
    let hooks = Hooks::start("bob").await;
    let mut n = 0;
    for event in ["pull_request_review", "pull_request"] {
        for (i, payload) in examples(event).await.iter().enumerate() {
            let id = format!("{event}-{i}");
            let (status, answer) = hooks.signed(&id, event, payload).await;
            assert_eq!(status, 202, "{id} ({}): {answer}", payload["action"]);
            assert_eq!(answer, json!({"delivery": id, "status": "queued"}));
            let (status, answer) = hooks.signed(&id, event, payload).await;
            assert_eq!((status, &answer["status"]), (200, &json!("duplicate")), "{id} redelivered");
            let outcome = hooks.outcome(&id).await;
            assert!(outcome.starts_with("ignored:"), "{id}: no gate exists, yet: {outcome}");
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} examples");
    hooks.stop().await;
}

#[tokio::test]
async fn a_review_approves_a_push_asks_again_and_forgeries_change_nothing() {
    let hooks = Hooks::start("bob,carol").await;
    let reviews = examples("pull_request_review").await;
    let pulls = examples("pull_request").await;
    let submitted = example(&reviews, "submitted");
    let repo = submitted["repository"]["full_name"].as_str().unwrap().to_string();
    let number = submitted["pull_request"]["number"].as_u64().unwrap();
    hooks.store.create_gate("g1", "inv1", &gate(&repo, number, HEAD), &[], 1).await.unwrap();
    let review = |id: u64, login: &str, state: &str, commit: &str| {
        let mut p = submitted.clone();
        p["review"]["id"] = json!(id);
        p["review"]["user"]["login"] = json!(login);
        p["review"]["user"]["type"] = json!("User");
        p["review"]["state"] = json!(state);
        p["review"]["commit_id"] = json!(commit);
        p
    };

    // Signed with another secret, or not at all: 401, and nothing stored.
    let forged = review(1, "bob", "approved", HEAD);
    let body = forged.to_string();
    let (status, answer) = hooks.send("f1", "pull_request_review", body.as_bytes(), Some("guessed")).await;
    assert_eq!((status, &answer["error"]), (401, &json!("bad_signature")));
    let (status, answer) = hooks.send("f2", "pull_request_review", body.as_bytes(), None).await;
    assert_eq!((status, &answer["field"]), (401, &json!("X-Hub-Signature-256")));
    assert_eq!(hooks.store.delivery_outcome("f1").await.unwrap(), None);
    assert_eq!(hooks.store.delivery_outcome("f2").await.unwrap(), None);

    // Bad input names what is wrong.
    let mut broken = submitted.clone();
    broken["review"].as_object_mut().unwrap().remove("commit_id");
    let (status, answer) = hooks.signed("b1", "pull_request_review", &broken).await;
    assert_eq!((status, &answer["field"]), (400, &json!("review.commit_id")));
    let (status, answer) = hooks.send("", "pull_request_review", b"{}", Some(SECRET)).await;
    assert_eq!((status, &answer["field"]), (400, &json!("X-GitHub-Delivery")));

    // The requester and an older head do not approve; an allowed reviewer of the head does.
    hooks.signed("r1", "pull_request_review", &review(11, "alice", "approved", HEAD)).await;
    assert!(hooks.outcome("r1").await.contains("asked for this change"));
    hooks.signed("r2", "pull_request_review", &review(12, "bob", "approved", "0000000")).await;
    assert!(hooks.outcome("r2").await.contains("not the head"));
    hooks.signed("r3", "pull_request_review", &review(13, "Carol", "approved", HEAD)).await;
    assert_eq!(hooks.outcome("r3").await, "approved: Carol approved ec26c3e in a review");
    let approved = hooks.store.gate_of(&repo, number).await.unwrap().unwrap();
    assert_eq!(approved.gate.approval, Some(Approval::Review { review_id: 13, by: "Carol".into() }));

    // A redelivery of the approval changes nothing, not even the version.
    let (status, _) = hooks.signed("r3", "pull_request_review", &review(13, "Carol", "approved", HEAD)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hooks.store.gate_of(&repo, number).await.unwrap().unwrap().version, approved.version);

    // A push takes the approval back.
    let mut push = example(&pulls, "synchronize");
    push["repository"]["full_name"] = json!(repo);
    push["pull_request"]["number"] = json!(number);
    push["pull_request"]["head"]["sha"] = json!("feedface00000000000000000000000000000000");
    hooks.signed("p1", "pull_request", &push).await;
    assert!(hooks.outcome("p1").await.starts_with("pending:"));
    let after = hooks.store.gate_of(&repo, number).await.unwrap().unwrap();
    assert_eq!(
        (after.gate.state, after.gate.head_sha.as_str(), &after.gate.approval),
        (GateState::Pending, "feedface00000000000000000000000000000000", &None)
    );
    let sources: Vec<String> = hooks.store.gate_log("g1").await.unwrap().into_iter().map(|e| e.source).collect();
    assert_eq!(sources, ["created", "webhook:r3", "webhook:p1"]);
    hooks.stop().await;
}

#[tokio::test]
async fn without_a_secret_every_delivery_is_refused() {
    let server = TestServer::start(&[]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/github", server.url))
        .header("x-github-event", "ping")
        .header("x-github-delivery", "x")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"], "not_configured");
    server.stop().await;
}

// ---------------------------------------------------------------------------------
// The drafter, against an in-memory code host that can be killed after any write.

mod drafting {
    use std::sync::Arc;

    use inquest::clock::SystemClock;
    use inquest::github::draft::{self, DraftPlan, FileEdit};
    use inquest::github::drafter::{DraftError, Drafter};
    use inquest::github::gate::GateState;
    use inquest::github::store::GithubStore;
    use inquest::store::SqlStore;

    use crate::support::codehost::FakeHost;

    const CONF: &str = "jobs/etl/spark-defaults.conf";

    fn plan() -> DraftPlan {
        DraftPlan {
            investigation_id: "inv1".into(),
            n: 1,
            repo: "acme/etl".into(),
            base: "main".into(),
            title: "Give etl more executor memory".into(),
            summary: "Executors ran out of memory (c1, c4).".into(),
            thread_url: "http://127.0.0.1:7400/investigations/inv1".into(),
            labels: vec!["inquest".into(), "remediation".into()],
            edits: vec![FileEdit::Replace {
                path: CONF.into(),
                find: r"spark\.executor\.memory\s+\S+".into(),
                replace: "spark.executor.memory 8g".into(),
            }],
            requester_login: Some("alice".into()),
            created_at: "2026-11-27T05:00:00Z".into(),
        }
    }

    async fn store() -> (GithubStore, Arc<SqlStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/store.db", dir.path().display());
        let sql = Arc::new(SqlStore::open(&url, 4).await.unwrap());
        (GithubStore::new(sql.clone()), sql, dir)
    }

    fn drafter(host: &Arc<FakeHost>, store: &GithubStore) -> Drafter {
        Drafter {
            host: host.clone(),
            store: store.clone(),
            clock: Arc::new(SystemClock),
            author: ("Inquest".into(), "inquest@example.com".into()),
            approvals: None,
        }
    }

    /// Killed after each of its five writes in turn (the write made, the step not yet stored), then
    /// restarted: one commit on one branch, one draft PR, one comment, one gate.
    #[tokio::test]
    async fn a_drafter_killed_at_any_step_makes_everything_exactly_once() {
        // The writes: the commit, the branch, the pull request, its labels, the comment.
        for crash in 1..=5 {
            let host = Arc::new(FakeHost::with_main(&[(CONF, "spark.executor.memory 4g\n"), ("README", "etl\n")]));
            let main_before = host.state.lock().unwrap().branches["main"].clone();
            let (store, sql, _dir) = store().await;
            let id = store.create_draft("d1", &plan(), 1).await.unwrap();
            assert_eq!(store.create_draft("d2", &plan(), 2).await.unwrap(), "d1", "one draft per (investigation, n)");
            host.crash_after(Some(crash));
            let first = drafter(&host, &store).run(&id).await;
            let crashed = first.is_err();
            // A new drafter (the restarted process) finishes it.
            let outcome = drafter(&host, &store).run(&id).await.unwrap();
            assert_eq!(outcome, "draft pull request #1 waits for an approval", "crash after write {crash}");
            // And running it again changes nothing.
            drafter(&host, &store).run(&id).await.unwrap();

            let (head, number) = {
                let s = host.state.lock().unwrap();
                assert_eq!(s.branches["main"], main_before, "the base branch is never written");
                let branches: Vec<&String> = s.branches.keys().filter(|b| b.starts_with("inquest/")).collect();
                assert_eq!(branches, ["inquest/inv1/1"], "crash after write {crash}");
                let head = s.branches["inquest/inv1/1"].clone();
                let commit = &s.commits[&head];
                assert_eq!(commit.parent.as_deref(), Some(main_before.as_str()));
                assert_eq!(commit.files[CONF], "spark.executor.memory 8g\n");
                assert_eq!(commit.files["README"], "etl\n");
                assert_eq!(s.pulls.len(), 1, "crash after write {crash}");
                let pull = &s.pulls[0];
                assert!(pull.pr.draft && pull.pr.open);
                assert_eq!((pull.base.as_str(), pull.pr.head_sha.as_str()), ("main", head.as_str()));
                assert_eq!(pull.labels, ["inquest", "remediation"]);
                assert_eq!(pull.comments.len(), 1, "crash after write {crash}: {:?}", pull.comments);
                assert!(pull.pr.body.contains("<!-- inquest:draft "), "{}", pull.pr.body);
                (head, pull.pr.number)
            };
            let gate = store.gate_of("acme/etl", number).await.unwrap().expect("a gate");
            assert_eq!((gate.gate.state, &gate.gate.head_sha), (GateState::Pending, &head));
            assert_eq!(gate.gate.requester_login.as_deref(), Some("alice"));
            assert!(crashed, "the drafter was killed after write {crash}");
            sql.close().await;
        }
    }

    #[tokio::test]
    async fn a_branch_of_the_same_name_that_is_not_ours_is_left_alone() {
        let host = Arc::new(FakeHost::with_main(&[(CONF, "spark.executor.memory 4g\n")]));
        let main = host.state.lock().unwrap().branches["main"].clone();
        host.state.lock().unwrap().branches.insert("inquest/inv1/1".into(), main.clone());
        let (store, sql, _dir) = store().await;
        let id = store.create_draft("d1", &plan(), 1).await.unwrap();
        let err = drafter(&host, &store).run(&id).await.unwrap_err();
        assert!(matches!(err, DraftError::Foreign(_)), "{err}");
        {
            let s = host.state.lock().unwrap();
            assert_eq!(s.branches["inquest/inv1/1"], main, "not moved");
            assert!(s.pulls.is_empty());
        }
        sql.close().await;
    }

    #[tokio::test]
    async fn a_change_the_base_already_holds_proposes_nothing() {
        let host = Arc::new(FakeHost::with_main(&[(CONF, "spark.executor.memory 8g\n")]));
        let (store, sql, _dir) = store().await;
        let id = store.create_draft("d1", &plan(), 1).await.unwrap();
        let outcome = drafter(&host, &store).run(&id).await.unwrap();
        assert_eq!(outcome, "`main` already holds the change; nothing to propose");
        {
            let s = host.state.lock().unwrap();
            assert_eq!((s.branches.len(), s.pulls.len()), (1, 0));
        }
        sql.close().await;
        assert_eq!(draft::branch_name(&plan()), "inquest/inv1/1");
    }
}

// ---------------------------------------------------------------------------------
// The octocrab CodeHost against the GitHub test server (a real git repository).

mod octocrab_host {
    use std::sync::Arc;

    use inquest::clock::SystemClock;
    use inquest::github::codehost::{CodeHost, HostError};
    use inquest::github::draft::{DraftPlan, FileEdit};
    use inquest::github::drafter::Drafter;
    use inquest::github::octo::{GithubAuth, OctoHost};
    use inquest::github::store::GithubStore;
    use inquest::store::SqlStore;
    use secrecy::SecretString;

    use crate::support::github::GithubServer;

    const CONF: &str = "jobs/etl/spark-defaults.conf";

    fn host(server: &GithubServer) -> Arc<OctoHost> {
        Arc::new(OctoHost::new(&server.url, GithubAuth::Token(SecretString::from("dev-token")), "acme/etl"))
    }

    fn plan() -> DraftPlan {
        DraftPlan {
            investigation_id: "inv7".into(),
            n: 1,
            repo: "acme/etl".into(),
            base: "main".into(),
            title: "Give etl more executor memory".into(),
            summary: "Executors ran out of memory.".into(),
            thread_url: "http://127.0.0.1:7400/investigations/inv7".into(),
            labels: vec!["inquest".into()],
            edits: vec![FileEdit::Replace {
                path: CONF.into(),
                find: r"spark\.executor\.memory\s+\S+".into(),
                replace: "spark.executor.memory 8g".into(),
            }],
            requester_login: None,
            created_at: "2026-11-27T05:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn reads_and_refusals_in_githubs_terms() {
        let server = GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n")]).await;
        let h = host(&server);
        let main = h.branch("acme/etl", "main").await.unwrap().expect("main");
        assert_eq!(h.branch("acme/etl", "nope/x").await.unwrap(), None);
        assert_eq!(h.file("acme/etl", CONF, &main).await.unwrap().as_deref(), Some("spark.executor.memory 4g\n"));
        assert_eq!(h.file("acme/etl", "absent.txt", &main).await.unwrap(), None);
        assert!(matches!(h.create_branch("acme/etl", "main", &main).await, Err(HostError::AlreadyExists(_))));
        h.delete_branch("acme/etl", "never-made").await.unwrap();
    }

    /// Killed after each of its eight writes in turn (GitHub made the change, the
    /// drafter never heard): one branch whose content git shows is the change, one
    /// draft PR, one comment; `main` untouched.
    #[tokio::test]
    async fn a_draft_survives_being_killed_after_any_write() {
        // The writes: blob, tree, commit, branch, pull request, the repository's label,
        // the PR's labels, comment.
        for crash in 1..=8 {
            let server =
                GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n"), ("README", "etl\n")]).await;
            let main_before = server.git(&["rev-parse", "refs/heads/main"]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let sql = Arc::new(SqlStore::open(&format!("sqlite://{}/s.db", dir.path().display()), 2).await.unwrap());
            let store = GithubStore::new(sql.clone());
            let id = store.create_draft("d1", &plan(), 1).await.unwrap();
            let drafter = || Drafter {
                host: host(&server),
                store: store.clone(),
                clock: Arc::new(SystemClock),
                author: ("Inquest".into(), "inquest@example.com".into()),
                approvals: None,
            };
            server.crash_after(Some(crash));
            assert!(drafter().run(&id).await.is_err(), "the drafter was killed after write {crash}");
            let outcome = drafter().run(&id).await.unwrap();
            assert_eq!(outcome, "draft pull request #1 waits for an approval", "crash after write {crash}");

            assert_eq!(server.git(&["rev-parse", "refs/heads/main"]).unwrap(), main_before, "main is never written");
            let branches = server.git(&["for-each-ref", "--format=%(refname)", "refs/heads/inquest"]).unwrap();
            assert_eq!(branches, "refs/heads/inquest/inv7/1", "crash after write {crash}");
            let conf = server.git(&["show", &format!("inquest/inv7/1:{CONF}")]).unwrap();
            assert_eq!(conf, "spark.executor.memory 8g");
            assert_eq!(server.git(&["rev-parse", "inquest/inv7/1^"]).unwrap(), main_before, "one commit on main");
            assert_eq!(server.git(&["show", "inquest/inv7/1:README"]).unwrap(), "etl");
            let author = server.git(&["log", "-1", "--format=%an <%ae> %aI", "inquest/inv7/1"]).unwrap();
            assert_eq!(author, "Inquest <inquest@example.com> 2026-11-27T05:00:00Z");
            let pulls = server.pulls();
            assert_eq!(pulls.len(), 1, "crash after write {crash}");
            assert!(pulls[0].draft && pulls[0].open);
            assert_eq!((pulls[0].head.as_str(), pulls[0].base.as_str()), ("inquest/inv7/1", "main"));
            assert_eq!(pulls[0].labels, ["inquest"]);
            assert_eq!(pulls[0].comments.len(), 1, "crash after write {crash}");
            let writes_to_main = server
                .log
                .lock()
                .unwrap()
                .requests
                .iter()
                .filter(|r| !r.starts_with("GET") && r.ends_with("/heads/main"))
                .count();
            assert_eq!(writes_to_main, 0);
            sql.close().await;
        }
    }

    async fn drafted(server: &GithubServer) -> (GithubStore, Arc<SqlStore>, Drafter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let sql = Arc::new(SqlStore::open(&format!("sqlite://{}/s.db", dir.path().display()), 2).await.unwrap());
        let store = GithubStore::new(sql.clone());
        let drafter = Drafter {
            host: host(server),
            store: store.clone(),
            clock: Arc::new(SystemClock),
            author: ("Inquest".into(), "inquest@example.com".into()),
            approvals: None,
        };
        let id = store.create_draft("d1", &plan(), 1).await.unwrap();
        drafter.run(&id).await.unwrap();
        (store, sql, drafter, dir)
    }

    /// Approved: ready for review, reviewers asked, who and when said once. Declined:
    /// closed with a comment, the branch deleted.
    #[tokio::test]
    async fn the_gate_decides_what_the_pull_request_shows() {
        use inquest::github::gate::{self, Gate, GateState, Outcome, RegistryDecision};

        let server = GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n")]).await;
        let (store, sql, drafter, _dir) = drafted(&server).await;
        let stored = store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        let asked = Gate { request: Some("a-17".into()), ..stored.gate.clone() };
        let Outcome::Changed { gate: approved, why } =
            gate::from_registry(&asked, "a-17", &stored.gate.head_sha, RegistryDecision::Approved { by: "dave" })
        else {
            panic!("not approved")
        };
        assert!(store.save_gate(&stored.id, &approved, stored.version, &why, "registry", 2).await.unwrap());
        let reviewers = vec!["bob".to_string()];
        assert_eq!(drafter.settle("acme/etl", 1, &reviewers).await.unwrap().len(), 3);
        drafter.settle("acme/etl", 1, &reviewers).await.unwrap();
        let pull = &server.pulls()[0];
        assert!(!pull.draft && pull.open, "ready for review");
        assert_eq!(pull.reviewers, ["bob"]);
        assert_eq!(pull.comments.len(), 2, "the waiting comment and one approval comment: {:?}", pull.comments);
        assert!(pull.comments[1].starts_with("Approved by **dave** at "), "{}", pull.comments[1]);

        let server = GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n")]).await;
        let (store2, sql2, drafter2, _dir2) = drafted(&server).await;
        let stored = store2.gate_of("acme/etl", 1).await.unwrap().unwrap();
        let declined = inquest::github::gate::Gate { state: GateState::Declined, ..stored.gate.clone() };
        assert!(store2.save_gate(&stored.id, &declined, stored.version, "declined", "registry", 2).await.unwrap());
        drafter2.settle("acme/etl", 1, &reviewers).await.unwrap();
        drafter2.settle("acme/etl", 1, &reviewers).await.unwrap();
        let pull = &server.pulls()[0];
        assert!(!pull.open, "closed");
        assert_eq!(pull.comments.len(), 2, "{:?}", pull.comments);
        assert!(pull.comments[1].contains("was declined"));
        assert!(server.git(&["rev-parse", "--verify", "-q", "refs/heads/inquest/inv7/1"]).is_err(), "branch deleted");
        assert!(server.git(&["rev-parse", "--verify", "-q", "refs/heads/main"]).is_ok());
        sql.close().await;
        sql2.close().await;
    }
}

// ---------------------------------------------------------------------------------
// End to end: an investigation proposes a fix, it is drafted, a review approves it.

mod end_to_end {
    use std::sync::Arc;
    use std::time::Duration;

    use inquest::agent::{AgentInvestigator, FixedDiscovery, Limits, SessionPool, Target};
    use inquest::clock::SystemClock;
    use inquest::engine::{Investigator, WorkContext};
    use inquest::github::drafter::{Drafter, Drafting};
    use inquest::github::octo::{GithubAuth, OctoHost};
    use inquest::github::{GateState, GithubStore, Reviewers, Webhooks};
    use inquest::playbook;
    use inquest::store::{SqlStore, Store};
    use secrecy::SecretString;
    use serde_json::json;

    use crate::support::github::GithubServer;
    use crate::support::mcp::{ECHO_PLAYBOOK, ECHO_REMEDIATION, FakeMcp, echo_investigation};

    #[tokio::test]
    async fn an_investigation_drafts_its_fix_and_an_approving_review_makes_it_ready() {
        let mcp = FakeMcp::start(&["echo"]).await;
        let github = GithubServer::start("acme", &[("conf/orders.conf", "word = loud\n")]).await;
        let dir = tempfile::tempdir().unwrap();
        let sql = Arc::new(SqlStore::open(&format!("sqlite://{}/s.db", dir.path().display()), 2).await.unwrap());
        let investigation = echo_investigation(&sql, "orders").await;

        let store = GithubStore::new(sql.clone());
        let host = Arc::new(OctoHost::new(&github.url, GithubAuth::Token(SecretString::from("t")), "acme/etl"));
        let drafting = Arc::new(Drafting {
            drafter: Drafter {
                host,
                store: store.clone(),
                clock: Arc::new(SystemClock),
                author: ("Inquest".into(), "inquest@example.com".into()),
                approvals: None,
            },
            repo: "acme/etl".into(),
            base: "main".into(),
            labels: vec!["inquest".into()],
            reviewers: vec!["carol".into()],
            thread_base: "http://127.0.0.1:7400/v1/investigations".into(),
            web_base: "https://github.example".into(),
        });
        let target = Target { name: "fake".into(), url: mcp.url.clone(), http: reqwest::Client::new(), trusted: true };
        let investigator = AgentInvestigator {
            playbooks: vec![playbook::parse("echo.yaml", &format!("{ECHO_PLAYBOOK}{ECHO_REMEDIATION}")).unwrap()],
            discovery: Arc::new(FixedDiscovery(vec![target])),
            sessions: Arc::new(SessionPool::new(Limits::default())),
            planner: None,
            approvals: None,
            simulated_work: Duration::ZERO,
            metrics: None,
            drafting: Some(drafting.clone()),
        };
        let dyn_store: Arc<dyn Store> = sql.clone();
        let ctx = WorkContext::detached(investigation.clone(), dyn_store);
        let outcome = investigator.investigate(&ctx).await.unwrap();
        let drafted = outcome.events.iter().find(|e| e.kind == "pull_request.drafted").expect("a drafted event");
        assert_eq!(drafted.data["number"], 1, "{}", drafted.data);
        assert_eq!(drafted.data["url"], "https://github.example/acme/etl/pull/1");
        let branch = format!("inquest/{}/1", investigation.id);
        assert_eq!(drafted.data["branch"], json!(branch));
        // The investigation run again (as after a crash before its outcome was stored).
        investigator.investigate(&ctx).await.unwrap();
        assert_eq!(github.pulls().len(), 1, "one pull request");
        assert_eq!(github.git(&["show", &format!("{branch}:conf/orders.conf")]).unwrap(), "word = echoed");
        let pull = &github.pulls()[0];
        assert!(pull.draft && pull.body.contains("the server echoed orders"), "{}", pull.body);
        assert!(pull.title == "Pin the word of orders");

        // An allowed reviewer approves the head: the processor moves the gate and the
        // pull request becomes ready with its reviewers asked.
        let head = github.git(&["rev-parse", &branch]).unwrap();
        let hooks = Webhooks {
            store: store.clone(),
            secrets: Arc::new(vec![SecretString::from("s")]),
            reviewers: Arc::new(Reviewers { approvers: vec!["bob".into()], app_login: "inquest[bot]".into() }),
            clock: Arc::new(SystemClock),
            wake: Arc::new(tokio::sync::Notify::new()),
            drafting: Some(drafting),
            approvals: None,
        };
        let review = json!({"action": "submitted", "repository": {"full_name": "acme/etl"}, "pull_request": {"number": 1},
                            "review": {"id": 5, "user": {"login": "bob", "type": "User"}, "state": "approved", "commit_id": head}});
        store.record_delivery("r1", "pull_request_review", &review.to_string(), 1).await.unwrap();
        assert!(hooks.process_one().await.unwrap());
        assert_eq!(store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.state, GateState::Approved);
        let pull = &github.pulls()[0];
        assert!(!pull.draft, "ready for review");
        assert_eq!(pull.reviewers, ["carol"]);
        assert!(pull.comments.iter().any(|c| c.starts_with("Approved by **bob**")), "{:?}", pull.comments);
        sql.close().await;
    }
}

// ---------------------------------------------------------------------------------
// GitHub's own recorded exchanges (`@octokit/fixtures`), replayed through the octocrab
// CodeHost: the requests it makes are the recorded ones, and it reads GitHub's answers.

mod recorded {
    use inquest::github::codehost::{CodeHost, HostError};
    use inquest::github::octo::{GithubAuth, OctoHost};
    use secrecy::SecretString;

    use crate::support::fixtures::Replay;

    fn host(replay: &Replay, repo: &str) -> OctoHost {
        OctoHost::new(
            &replay.url,
            GithubAuth::Token(SecretString::from("0000000000000000000000000000000000000001")),
            repo,
        )
    }

    #[tokio::test]
    async fn git_refs_are_created_and_deleted_as_github_recorded_them() {
        let replay = Replay::start("git-refs").await;
        let h = host(&replay, "octokit-fixture-org/git-refs");
        h.create_branch("x", "test", "0000000000000000000000000000000000000002").await.unwrap();
        h.delete_branch("x", "test").await.unwrap();
        assert_eq!(replay.unexpected(), Vec::<String>::new());
        assert_eq!(replay.replayed(), 2);
    }

    #[tokio::test]
    async fn a_missing_label_is_made_as_github_recorded_it() {
        let replay = Replay::start("labels").await;
        let h = host(&replay, "octokit-fixture-org/labels");
        h.ensure_label("x", "test-label", "663399").await.unwrap();
        assert_eq!(replay.unexpected(), Vec::<String>::new());
        assert_eq!(replay.replayed(), 1);
    }

    /// GitHub's 422 `Validation Failed` reads as a refusal that names what was wrong.
    #[tokio::test]
    async fn a_validation_failure_is_a_refusal_naming_the_field() {
        let replay = Replay::start("errors").await;
        let h = host(&replay, "octokit-fixture-org/errors");
        let err = h.ensure_label("x", "foo", "invalid").await.unwrap_err();
        match err {
            HostError::Refused(text) => {
                assert_eq!(text, "GitHub answered 422: Validation Failed: Label.color is invalid")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(replay.replayed(), 1);
    }

    #[tokio::test]
    async fn labels_are_added_as_github_recorded_it() {
        let replay = Replay::start("add-labels-to-issue").await;
        let h = host(&replay, "octokit-fixture-org/add-labels-to-issue");
        let labels = ["Foo", "bAr", "baZ"].map(String::from);
        h.add_labels("x", 1, &labels).await.unwrap();
        assert_eq!(replay.unexpected(), Vec::<String>::new());
        assert_eq!(replay.replayed(), 1);
    }
}

// ---------------------------------------------------------------------------------
// Who may approve, as a table, over the wire: reviews made through the GitHub test
// server, whose signed webhooks reach the booted agent's route and processor.

/// (case, who reviews, which commit, the gate's state after).
#[tokio::test]
async fn who_may_approve_the_scenario_table_over_githubs_webhooks() {
    use inquest::clock::SystemClock;
    use inquest::github::draft::{DraftPlan, FileEdit};
    use inquest::github::drafter::Drafter;
    use inquest::github::octo::{GithubAuth, OctoHost};

    use crate::support::github::{APP_LOGIN, GithubServer};

    let hooks = Hooks::start("bob,alice").await;
    let github = GithubServer::start("acme", &[("conf/a.conf", "x = 1\n")]).await;
    github.send_webhooks_to(&format!("{}/v1/webhooks/github", hooks.server.url), SECRET);
    let drafter = Drafter {
        host: Arc::new(OctoHost::new(&github.url, GithubAuth::Token(secrecy::SecretString::from("t")), "acme/etl")),
        store: hooks.store.clone(),
        clock: Arc::new(SystemClock),
        author: ("Inquest".into(), "inquest@example.com".into()),
        approvals: None,
    };
    let plan = DraftPlan {
        investigation_id: "inv-table".into(),
        n: 1,
        repo: "acme/etl".into(),
        base: "main".into(),
        title: "Set x".into(),
        summary: "x must be 2.".into(),
        thread_url: "http://127.0.0.1:7400/v1/investigations/inv-table".into(),
        labels: vec![],
        edits: vec![FileEdit::Replace { path: "conf/a.conf".into(), find: "x = 1".into(), replace: "x = 2".into() }],
        // Alice asked for the change: though she is an approver, she cannot approve it.
        requester_login: Some("alice".into()),
        created_at: "2026-11-27T05:00:00Z".into(),
    };
    let id = hooks.store.create_draft("d1", &plan, 1).await.unwrap();
    drafter.run(&id).await.unwrap();
    let first_head = github.pulls()[0].head_sha.clone();

    // Waits until the agent processed the latest delivery; the gate's state then.
    let settle = || async {
        let delivery = github.deliveries().last().cloned().expect("a webhook was sent");
        assert_eq!(delivery.status, Some(202), "{delivery:?}");
        hooks.outcome(&delivery.id).await;
        hooks.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.state
    };
    let sent = || github.deliveries().len();

    let (status, _) = github.review(1, "alice", None, "APPROVE").await;
    assert_eq!(status, 200);
    assert_eq!(settle().await, GateState::Pending, "the requester, though an approver");

    // GitHub refuses an app's approval of its own pull request; had it been sent, the
    // gate would refuse it too (the unit table covers that).
    let before = sent();
    let (status, answer) = github.review(1, APP_LOGIN, None, "APPROVE").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(sent(), before, "nothing happened on GitHub, so nothing was sent");

    github.review(1, "mallory", None, "APPROVE").await;
    assert_eq!(settle().await, GateState::Pending, "a reviewer who is not an approver");

    let new_head = github.push("inquest/inv-table/1", &[("conf/b.conf", "y = 1\n")]).await;
    assert_eq!(settle().await, GateState::Pending, "a push: the gate asks for the new head");
    assert_eq!(hooks.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.head_sha, new_head);
    github.review(1, "bob", Some(&first_head), "APPROVE").await;
    assert_eq!(settle().await, GateState::Pending, "an allowed reviewer of an older head");

    let (_, review) = github.review(1, "bob", None, "APPROVE").await;
    assert_eq!(settle().await, GateState::Approved, "an allowed reviewer of the head");

    github.review(1, "mallory", None, "REQUEST_CHANGES").await;
    assert_eq!(settle().await, GateState::Approved, "another review changes nothing");
    github.dismiss(1, review["id"].as_u64().unwrap(), "carol", "stale").await;
    assert_eq!(settle().await, GateState::Pending, "the approving review dismissed: the gate asks again");

    let log = hooks.store.gate_log(&hooks.store.gate_of("acme/etl", 1).await.unwrap().unwrap().id).await.unwrap();
    let states: Vec<GateState> = log.iter().map(|e| e.state).collect();
    assert_eq!(states, [GateState::Pending, GateState::Pending, GateState::Approved, GateState::Pending]);
    hooks.stop().await;
}

// ---------------------------------------------------------------------------------
// The gate and the registry's approval service: the registry's approval routes and
// store (as in `inquest all`), reached over HTTP; callers are named by a test header
// where the mesh and login layers would put them.

mod registry_gate {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use chrono::Utc;
    use inquest::clock::SystemClock;
    use inquest::config::{PullRequestApprovers, RegistryConfig};
    use inquest::github::approval::{GateWatch, RegistryPullApprovals, action};
    use inquest::github::drafter::{Drafter, Drafting, Proposed};
    use inquest::github::gate::{Approval, GateState};
    use inquest::github::octo::{GithubAuth, OctoHost};
    use inquest::github::{GithubStore, PullApprovals, Reviewers, Webhooks};
    use inquest::identity::Principal;
    use inquest::playbook::FileEdit;
    use inquest::registry::approvals::client::{ApprovalClient, ApprovalError, Ticket};
    use inquest::registry::approvals::{self, ApprovalContext, RegistryApprovers, action_digest};
    use inquest::registry::authz::PolicyCache;
    use inquest::store::{SqlStore, Store};
    use secrecy::SecretString;
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    use crate::support::fixed::{TestClock, test_identity};
    use crate::support::github::{GithubServer, git};
    use crate::support::mcp::echo_investigation;

    const CONF: &str = "jobs/etl/spark-defaults.conf";
    const AGENT: &str = "spiffe://inquest.local/agent";

    /// The registry's approval service on 127.0.0.1, with a clock the test moves.
    struct Registry {
        url: String,
        clock: Arc<TestClock>,
        http: reqwest::Client,
        stop: CancellationToken,
    }

    impl Drop for Registry {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    impl Registry {
        async fn start(sql: &Arc<SqlStore>) -> Registry {
            let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
            let rules = vec![PullRequestApprovers {
                repository: "acme/*".into(),
                approvers: vec!["group:reviewers".into()],
                required: 1,
            }];
            let config = RegistryConfig {
                public_url: "https://registry.example".into(),
                url: "https://registry.example".into(),
                admins: vec!["group:inquest-admins".into()],
                approval_ttl: Duration::from_secs(3600),
                probe_interval: Duration::from_secs(30),
                pull_request_approvers: rules.clone(),
            };
            let ctx = ApprovalContext {
                config: Arc::new(config),
                store: sql.clone(),
                clock: clock.clone(),
                approvers: Arc::new(RegistryApprovers {
                    cache: Arc::new(PolicyCache::default()),
                    store: sql.clone(),
                    pull_requests: rules,
                }),
            };
            let app = approvals::router(ctx).layer(axum::middleware::from_fn(test_identity));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let stop = CancellationToken::new();
            let until = stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app).with_graceful_shutdown(until.cancelled_owned()).await.unwrap();
            });
            Registry { url, clock, http: reqwest::Client::new(), stop }
        }

        /// The approval service as the agent reaches it.
        fn for_agent(&self) -> Arc<dyn PullApprovals> {
            let mut headers = reqwest::header::HeaderMap::new();
            let me = serde_json::to_string(&Principal::service(AGENT)).unwrap();
            headers.insert("x-test-principal", me.parse().unwrap());
            let http = reqwest::Client::builder().default_headers(headers).build().unwrap();
            Arc::new(RegistryPullApprovals { client: ApprovalClient { http, registry_url: self.url.clone() } })
        }

        async fn call(&self, who: &Principal, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.url))
                .header("x-test-principal", serde_json::to_string(who).unwrap());
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
        }

        async fn decide(&self, who: &Principal, id: &str, decision: &str) -> (u16, Value) {
            let (_, view) = self
                .call(&Principal::user("root", &["inquest-admins"]), "GET", &format!("/v0.1/x/approvals/{id}"), None)
                .await;
            let body = json!({"decision": decision, "digest": view["digest"]});
            self.call(who, "POST", &format!("/v0.1/x/approvals/{id}/decision"), Some(body)).await
        }

        async fn state(&self, id: &str) -> String {
            let admin = Principal::user("root", &["inquest-admins"]);
            let (_, view) = self.call(&admin, "GET", &format!("/v0.1/x/approvals/{id}"), None).await;
            view["state"].as_str().unwrap_or_default().to_string()
        }
    }

    fn dave() -> Principal {
        Principal::User { subject: "dave".into(), groups: vec!["reviewers".into()], name: Some("Dave".into()) }
    }

    struct Setup {
        github: GithubServer,
        registry: Registry,
        sql: Arc<SqlStore>,
        store: GithubStore,
        drafting: Arc<Drafting>,
        watch: GateWatch,
        hooks: Webhooks,
        investigation: String,
        _dir: tempfile::TempDir,
    }

    async fn setup() -> Setup {
        // Code owners: everything the platform team's, jobs the Spark owners' and Dave's.
        let owners = "* @root-owner\njobs/ @acme/spark-owners @dave\n";
        let github =
            GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n"), (".github/CODEOWNERS", owners)]).await;
        let dir = tempfile::tempdir().unwrap();
        let sql = Arc::new(SqlStore::open(&format!("sqlite://{}/s.db", dir.path().display()), 2).await.unwrap());
        let investigation = echo_investigation(&sql, "orders").await.id;
        let registry = Registry::start(&sql).await;
        let approvals = registry.for_agent();
        let store = GithubStore::new(sql.clone());
        let host = Arc::new(OctoHost::new(&github.url, GithubAuth::Token(SecretString::from("t")), "acme/etl"));
        let drafting = Arc::new(Drafting {
            drafter: Drafter {
                host,
                store: store.clone(),
                clock: Arc::new(SystemClock),
                author: ("Inquest".into(), "inquest@example.com".into()),
                approvals: Some(approvals.clone()),
            },
            repo: "acme/etl".into(),
            base: "main".into(),
            labels: vec!["inquest".into()],
            reviewers: vec!["carol".into()],
            thread_base: "http://127.0.0.1:7400/v1/investigations".into(),
            web_base: "https://github.example".into(),
        });
        let watch = GateWatch {
            approvals: approvals.clone(),
            store: store.clone(),
            clock: registry.clock.clone(),
            drafting: Some(drafting.clone()),
            poll: Duration::from_millis(50),
        };
        let hooks = Webhooks {
            store: store.clone(),
            secrets: Arc::new(vec![SecretString::from("s")]),
            reviewers: Arc::new(Reviewers { approvers: vec!["bob".into()], app_login: "inquest[bot]".into() }),
            clock: Arc::new(SystemClock),
            wake: Arc::new(tokio::sync::Notify::new()),
            drafting: Some(drafting.clone()),
            approvals: Some(approvals),
        };
        Setup { github, registry, sql, store, drafting, watch, hooks, investigation, _dir: dir }
    }

    async fn propose(s: &Setup) -> Value {
        let edits = [FileEdit::Replace {
            path: CONF.into(),
            find: r"spark\.executor\.memory\s+\S+".into(),
            replace: "spark.executor.memory 8g".into(),
        }];
        let proposed = [Proposed { title: "Give etl more executor memory", description: None, edits: &edits }];
        let events = s.drafting.propose(&s.investigation, "Executors ran out of memory.", &proposed).await;
        assert_eq!(events[0].kind, "pull_request.drafted", "{:?}", events[0].data);
        events[0].data.clone()
    }

    /// The investigation's `pull_request.gate` events: (state, why).
    async fn thread(s: &Setup) -> Vec<(String, String)> {
        let events = s.sql.events(&s.investigation, 0, 1000).await.unwrap();
        events
            .iter()
            .filter(|e| e.kind == "pull_request.gate")
            .map(|e| (e.data["state"].as_str().unwrap().to_string(), e.data["why"].as_str().unwrap().to_string()))
            .collect()
    }

    /// Drafted, the gate asks the registry; the page's link is in the PR and the thread.
    /// Neither the agent nor a person outside the policy can decide; an allowed person
    /// approves; the watch consumes the approval and the PR becomes ready.
    #[tokio::test]
    async fn an_approval_at_the_registry_makes_the_draft_ready_for_review() {
        let s = setup().await;
        let drafted = propose(&s).await;
        let stored = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        let id = stored.gate.request.clone().expect("the gate asked the registry");
        assert_eq!(drafted["approval_url"], format!("https://registry.example/approvals/{id}"));
        let pull = &s.github.pulls()[0];
        assert!(pull.comments[0].contains(&format!("https://registry.example/approvals/{id}")), "{:?}", pull.comments);
        let states: Vec<String> = thread(&s).await.into_iter().map(|(st, _)| st).collect();
        assert_eq!(states, ["pending", "pending"], "created, then asked");

        // What the registry holds is bound to the PR, its head and the change.
        let admin = Principal::user("root", &["inquest-admins"]);
        let (_, view) = s.registry.call(&admin, "GET", &format!("/v0.1/x/approvals/{id}"), None).await;
        assert_eq!(view["kind"], "pull_request");
        assert_eq!(view["resource"], json!({"repository": "acme/etl", "number": 1, "head_sha": stored.gate.head_sha}));
        assert_eq!(view["digest"], action_digest(&action(&stored.gate)));
        assert_eq!(view["requester"]["spiffe_id"], AGENT);

        // Who may not decide.
        let agent = Principal::service(AGENT);
        assert_eq!(s.registry.decide(&agent, &id, "approve").await.0, 403, "the requester (a service)");
        let mallory = Principal::user("mallory", &["ml"]);
        assert_eq!(s.registry.decide(&mallory, &id, "approve").await.0, 403, "not in the policy");
        assert!(s.watch.round().await.is_ok());
        assert_eq!(s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.state, GateState::Pending);

        let (status, _) = s.registry.decide(&dave(), &id, "approve").await;
        assert_eq!(status, 200);
        assert_eq!(s.watch.round().await.unwrap(), 1);
        assert_eq!(s.watch.round().await.unwrap(), 0, "nothing more to do");
        let gate = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate;
        assert_eq!(gate.state, GateState::Approved);
        assert_eq!(gate.approval, Some(Approval::Registry { approval_id: id.clone(), by: "Dave".into() }));
        assert_eq!(s.registry.state(&id).await, "consumed", "used once, by the gate");
        let pull = &s.github.pulls()[0];
        assert!(!pull.draft && pull.open, "ready for review");
        // The changed file's code owners (a person and a team), then the configured reviewer.
        assert_eq!(pull.reviewers, ["dave", "carol", "acme/spark-owners"]);
        assert_eq!(pull.comments.len(), 2, "{:?}", pull.comments);
        assert!(pull.comments[1].starts_with("Approved by **Dave** at "), "{}", pull.comments[1]);
        let (state, why) = thread(&s).await.pop().unwrap();
        assert_eq!((state.as_str(), why.contains("Dave approved")), ("approved", true), "{why}");
        s.sql.close().await;
    }

    /// A push to the branch takes the request back and the gate asks again for the new
    /// head; a decline of that one closes the PR and deletes its branch.
    #[tokio::test]
    async fn a_push_asks_again_and_a_decline_closes_the_draft() {
        let s = setup().await;
        propose(&s).await;
        let first = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        let old_request = first.gate.request.clone().unwrap();

        // Someone pushes a commit on top of the draft's branch.
        let repo = &s.github.repo_dir;
        let branch = format!("inquest/{}/1", s.investigation);
        let pushed = s.github.push(&branch, &[("jobs/etl/extra.conf", "x = 1\n")]).await;
        let sync = json!({"action": "synchronize", "number": 1, "repository": {"full_name": "acme/etl"},
                          "pull_request": {"number": 1, "head": {"sha": pushed}}, "sender": {"login": "carol"}});
        s.store.record_delivery("p1", "pull_request", &sync.to_string(), 1).await.unwrap();
        assert!(s.hooks.process_one().await.unwrap());

        let moved = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        assert_eq!(
            (moved.gate.state, moved.gate.head_sha.as_str(), &moved.gate.request),
            (GateState::Pending, pushed.as_str(), &None)
        );
        assert_eq!(s.registry.state(&old_request).await, "revoked", "the old head's request is withdrawn");
        // An approval of the old request now cannot count.
        assert_eq!(s.registry.decide(&dave(), &old_request, "approve").await.0, 409);

        // The watch asks for the new head.
        assert_eq!(s.watch.round().await.unwrap(), 1);
        let asked = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        let new_request = asked.gate.request.clone().expect("asked again");
        assert_ne!(new_request, old_request);
        let admin = Principal::user("root", &["inquest-admins"]);
        let (_, view) = s.registry.call(&admin, "GET", &format!("/v0.1/x/approvals/{new_request}"), None).await;
        assert_eq!(view["resource"]["head_sha"], pushed.as_str());

        assert_eq!(s.registry.decide(&dave(), &new_request, "decline").await.0, 200);
        assert_eq!(s.watch.round().await.unwrap(), 1);
        assert_eq!(s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.state, GateState::Declined);
        let pull = &s.github.pulls()[0];
        assert!(!pull.open, "closed");
        assert!(pull.comments.iter().any(|c| c.contains("was declined")), "{:?}", pull.comments);
        assert!(git(repo, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")], &[], None).is_err());
        let states: Vec<String> = thread(&s).await.into_iter().map(|(st, _)| st).collect();
        assert_eq!(states, ["pending", "pending", "pending", "pending", "declined"]);
        s.sql.close().await;
    }

    /// Nobody decides in time: the draft is closed and its branch deleted.
    #[tokio::test]
    async fn an_approval_nobody_gives_in_time_expires_the_draft() {
        let s = setup().await;
        propose(&s).await;
        *s.registry.clock.0.lock().unwrap() += chrono::Duration::seconds(3601);
        assert_eq!(s.watch.round().await.unwrap(), 1);
        assert_eq!(s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.state, GateState::Expired);
        let pull = &s.github.pulls()[0];
        assert!(!pull.open);
        assert!(pull.comments.iter().any(|c| c.contains("expired without a decision")), "{:?}", pull.comments);
        s.sql.close().await;
    }

    /// An approving review of the head (by an allowed reviewer) approves too; the open
    /// registry request is withdrawn.
    #[tokio::test]
    async fn a_review_approval_withdraws_the_registry_request() {
        let s = setup().await;
        propose(&s).await;
        let stored = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        let request = stored.gate.request.clone().unwrap();
        let review = json!({"action": "submitted", "repository": {"full_name": "acme/etl"}, "pull_request": {"number": 1},
                            "review": {"id": 5, "user": {"login": "bob", "type": "User"}, "state": "approved",
                                       "commit_id": stored.gate.head_sha}});
        s.store.record_delivery("r1", "pull_request_review", &review.to_string(), 1).await.unwrap();
        assert!(s.hooks.process_one().await.unwrap());
        assert_eq!(s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.state, GateState::Approved);
        assert_eq!(s.registry.state(&request).await, "revoked");
        assert!(!s.github.pulls()[0].draft);
        s.sql.close().await;
    }

    /// GitHub failed while the approved draft was being marked ready: the gate stays
    /// approved and unsettled, and the watch settles it on a later round (once the grace
    /// for whoever decided it has passed), posting nothing twice.
    #[tokio::test]
    async fn a_settle_that_failed_is_retried_by_the_watch() {
        let s = setup().await;
        propose(&s).await;
        let id = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.request.unwrap();
        assert_eq!(s.registry.decide(&dave(), &id, "approve").await.0, 200);
        s.github.crash_after(Some(1));
        assert_eq!(s.watch.round().await.unwrap(), 1);
        let stored = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        assert_eq!(stored.gate.state, GateState::Approved);
        assert!(stored.settled_version < stored.version, "not settled: GitHub failed");
        assert_eq!(s.watch.round().await.unwrap(), 0);
        let approved_comments =
            |pull: &crate::support::github::Pull| pull.comments.iter().filter(|c| c.starts_with("Approved by")).count();
        assert_eq!(approved_comments(&s.github.pulls()[0]), 0, "within the grace: left alone");

        *s.registry.clock.0.lock().unwrap() += chrono::Duration::seconds(31);
        s.watch.round().await.unwrap();
        let stored = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap();
        assert_eq!(stored.settled_version, stored.version);
        let pull = &s.github.pulls()[0];
        assert!(!pull.draft && pull.open);
        assert_eq!(approved_comments(pull), 1, "{:?}", pull.comments);
        *s.registry.clock.0.lock().unwrap() += chrono::Duration::seconds(31);
        s.watch.round().await.unwrap();
        assert_eq!(s.github.pulls()[0].comments.len(), pull.comments.len(), "settled once");
        s.sql.close().await;
    }

    /// The registry made the request but the drafter died before storing it: the next
    /// run asks again and the registry answers the same open request; one request, one
    /// waiting comment.
    #[tokio::test]
    async fn a_drafter_killed_after_asking_makes_one_request() {
        struct DiesAfterAsking(Arc<dyn PullApprovals>, std::sync::atomic::AtomicBool);

        #[async_trait::async_trait]
        impl PullApprovals for DiesAfterAsking {
            async fn ask(&self, gate: &inquest::github::Gate) -> Result<Ticket, ApprovalError> {
                let ticket = self.0.ask(gate).await?;
                if self.1.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    return Err(ApprovalError::Unavailable("killed".into()));
                }
                Ok(ticket)
            }
            async fn show(&self, id: &str) -> Result<Ticket, ApprovalError> {
                self.0.show(id).await
            }
            async fn consume(&self, id: &str, digest: &str) -> Result<Ticket, ApprovalError> {
                self.0.consume(id, digest).await
            }
            async fn withdraw(&self, id: &str, why: &str) -> Result<(), ApprovalError> {
                self.0.withdraw(id, why).await
            }
        }

        let s = setup().await;
        let dying = Arc::new(DiesAfterAsking(s.registry.for_agent(), std::sync::atomic::AtomicBool::new(true)));
        let drafter = |approvals: Arc<dyn PullApprovals>| Drafter {
            host: Arc::new(OctoHost::new(&s.github.url, GithubAuth::Token(SecretString::from("t")), "acme/etl")),
            store: s.store.clone(),
            clock: Arc::new(SystemClock),
            author: ("Inquest".into(), "inquest@example.com".into()),
            approvals: Some(approvals),
        };
        let plan = inquest::github::draft::DraftPlan {
            investigation_id: s.investigation.clone(),
            n: 1,
            repo: "acme/etl".into(),
            base: "main".into(),
            title: "Give etl more executor memory".into(),
            summary: "Executors ran out of memory.".into(),
            thread_url: "http://127.0.0.1:7400/investigations/x".into(),
            labels: vec![],
            edits: vec![FileEdit::Replace { path: CONF.into(), find: "4g".into(), replace: "8g".into() }],
            requester_login: None,
            created_at: "2026-11-27T05:00:00Z".into(),
        };
        let id = s.store.create_draft("d1", &plan, 1).await.unwrap();
        assert!(drafter(dying.clone()).run(&id).await.is_err(), "killed after the registry made the request");
        assert_eq!(s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.request, None, "not stored");
        drafter(dying).run(&id).await.unwrap();
        let request = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.request.expect("asked");

        let admin = Principal::user("root", &["inquest-admins"]);
        let (_, list) = s.registry.call(&admin, "GET", "/v0.1/x/approvals?state=pending", None).await;
        let ids: Vec<&str> = list["approvals"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [request.as_str()], "one request");
        let pull = &s.github.pulls()[0];
        assert_eq!(pull.comments.len(), 1);
        assert!(pull.comments[0].contains(&request));
        s.sql.close().await;
    }

    /// The whole story: an investigation with a remediation drafts one branch holding
    /// the change (checked with git), one draft PR and its gate; the thread shows the
    /// draft, its approval page and every gate change; a person declines at the registry
    /// and the PR is closed and its branch deleted.
    #[tokio::test]
    async fn an_investigation_drafts_its_fix_and_a_decline_at_the_registry_closes_it() {
        use inquest::agent::{AgentInvestigator, FixedDiscovery, Limits, SessionPool, Target};
        use inquest::engine::{Investigator, WorkContext};
        use inquest::playbook;

        use crate::support::mcp::{ECHO_PLAYBOOK, ECHO_REMEDIATION, FakeMcp};

        let mcp = FakeMcp::start(&["echo"]).await;
        let s = setup().await;
        // The echo playbook's fix edits `conf/orders.conf`.
        s.github.push("main", &[("conf/orders.conf", "word = loud\n")]).await;
        let target = Target { name: "fake".into(), url: mcp.url.clone(), http: reqwest::Client::new(), trusted: true };
        let investigator = AgentInvestigator {
            playbooks: vec![playbook::parse("echo.yaml", &format!("{ECHO_PLAYBOOK}{}", ECHO_REMEDIATION)).unwrap()],
            discovery: Arc::new(FixedDiscovery(vec![target])),
            sessions: Arc::new(SessionPool::new(Limits::default())),
            planner: None,
            approvals: None,
            simulated_work: Duration::ZERO,
            metrics: None,
            drafting: Some(s.drafting.clone()),
        };
        let summary = s.sql.investigation(&s.investigation).await.unwrap().unwrap();
        let dyn_store: Arc<dyn Store> = s.sql.clone();
        let outcome = investigator.investigate(&WorkContext::detached(summary, dyn_store)).await.unwrap();
        let drafted = outcome.events.iter().find(|e| e.kind == "pull_request.drafted").expect("drafted");
        let request = s.store.gate_of("acme/etl", 1).await.unwrap().unwrap().gate.request.expect("asked");
        assert_eq!(drafted.data["approval_url"], format!("https://registry.example/approvals/{request}"));
        let branch = format!("inquest/{}/1", s.investigation);
        assert_eq!(
            git(&s.github.repo_dir, &["show", &format!("{branch}:conf/orders.conf")], &[], None).unwrap(),
            "word = echoed"
        );
        assert_eq!(s.github.pulls().len(), 1);
        assert!(s.github.pulls()[0].draft);

        assert_eq!(s.registry.decide(&dave(), &request, "decline").await.0, 200);
        assert_eq!(s.watch.round().await.unwrap(), 1);
        let pull = &s.github.pulls()[0];
        assert!(!pull.open, "closed");
        assert!(pull.comments.iter().any(|c| c.contains("was declined")), "{:?}", pull.comments);
        assert!(
            git(&s.github.repo_dir, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")], &[], None)
                .is_err()
        );
        let thread = thread(&s).await;
        assert_eq!(thread.last().map(|(st, _)| st.as_str()), Some("declined"));
        assert!(thread.last().unwrap().1.starts_with("Dave declined"), "{thread:?}");
        s.sql.close().await;
    }
}

// ---------------------------------------------------------------------------------
// The real binary: `inquest all` asks its own registry over the mesh with the agent's
// identity, and a person who logged in approves on the registry's page.

mod in_the_binary {
    use std::sync::Arc;
    use std::time::Duration;

    use inquest::clock::SystemClock;
    use inquest::github::approval::action;
    use inquest::github::draft::{DraftPlan, FileEdit};
    use inquest::github::drafter::Drafter;
    use inquest::github::octo::{GithubAuth, OctoHost};
    use inquest::github::{GateState, GithubStore};
    use inquest::registry::approvals::action_digest;
    use inquest::store::SqlStore;
    use secrecy::SecretString;

    use crate::support::github::GithubServer;
    use crate::support::oidc::Browser;
    use crate::support::process::{InquestBuilder, Scratch, wait_for};

    const CONF: &str = "jobs/etl/spark-defaults.conf";

    #[tokio::test]
    async fn inquest_all_asks_its_registry_and_a_logged_in_admin_approves() {
        let github = GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n")]).await;
        let scratch = Scratch::new();
        let mut inquest = InquestBuilder::new("gh", scratch.path())
            .env("INQUEST_GITHUB__REPOSITORY", "acme/etl")
            .env("INQUEST_GITHUB__TOKEN", "dev-token")
            .env("INQUEST_GITHUB__API_URL", github.url.clone())
            .env("INQUEST_GITHUB__REVIEWERS", "carol")
            .start()
            .await;
        let base = inquest.api().base.clone();

        // A draft made beside the binary, in its store, without asking: the binary's
        // gate watch asks for it.
        let url = format!("sqlite://{}/inquest.db", scratch.path().display());
        let sql = Arc::new(SqlStore::open(&url, 2).await.unwrap());
        let store = GithubStore::new(sql.clone());
        let drafter = Drafter {
            host: Arc::new(OctoHost::new(&github.url, GithubAuth::Token(SecretString::from("t")), "acme/etl")),
            store: store.clone(),
            clock: Arc::new(SystemClock),
            author: ("Inquest".into(), "inquest@example.com".into()),
            approvals: None,
        };
        let plan = DraftPlan {
            investigation_id: "inv-binary".into(),
            n: 1,
            repo: "acme/etl".into(),
            base: "main".into(),
            title: "Give etl more executor memory".into(),
            summary: "Executors ran out of memory.".into(),
            thread_url: format!("{base}/v1/investigations/inv-binary"),
            labels: vec![],
            edits: vec![FileEdit::Replace { path: CONF.into(), find: "4g".into(), replace: "8g".into() }],
            requester_login: None,
            created_at: "2026-11-27T05:00:00Z".into(),
        };
        let id = store.create_draft("d1", &plan, 1).await.unwrap();
        drafter.run(&id).await.unwrap();
        let gate = wait_for("the binary's watch to ask its registry", Duration::from_secs(30), || async {
            let stored = store.gate_of("acme/etl", 1).await.map_err(|e| e.to_string())?.unwrap();
            if stored.gate.request.is_some() { Ok(stored.gate) } else { Err("not asked yet".into()) }
        })
        .await;
        let request = gate.request.clone().unwrap();

        // The default policy: the registry's administrators approve pull requests.
        let mut browser = Browser::new();
        let page = browser
            .post_form(
                &format!("{base}/auth/dev-login"),
                &[("subject", "root"), ("groups", "inquest-admins"), ("next", "/investigations")],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        let page = browser.get(&format!("{base}/approvals/{request}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        // `acme/etl #1`, with the slash escaped as HTML.
        assert!(page.body.contains("acme&#x2f;etl #1"), "{}", page.body);
        let digest = action_digest(&action(&gate));
        assert!(page.body.contains(&digest), "the page shows the digest a person quotes");
        let decided = browser
            .post_form(&format!("{base}/approvals/{request}/decide"), &[("decision", "approve"), ("digest", &digest)])
            .await;
        assert_eq!(decided.status, 303, "{}", decided.body);

        wait_for("the binary to apply the approval", Duration::from_secs(30), || async {
            let stored = store.gate_of("acme/etl", 1).await.map_err(|e| e.to_string())?.unwrap();
            match stored.gate.state {
                GateState::Approved if stored.settled_version == stored.version => Ok(()),
                other => Err(format!("{other:?}, settled {} of {}", stored.settled_version, stored.version)),
            }
        })
        .await;
        let pull = &github.pulls()[0];
        assert!(!pull.draft && pull.open, "ready for review");
        assert_eq!(pull.reviewers, ["carol"]);
        assert!(pull.comments.iter().any(|c| c.starts_with("Approved by **root**")), "{:?}", pull.comments);
        sql.close().await;
        inquest.terminate(Duration::from_secs(20)).await;
    }
}
