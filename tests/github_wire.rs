//! The GitHub test server on the wire: what it takes and answers is checked against
//! GitHub's REST description (`@octokit/openapi`), a body that does not fit is refused
//! as GitHub refuses it, the octocrab CodeHost's whole drafting conversation fits, and
//! reviews send webhooks that are signed and read as GitHub's.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use inquest::github::codehost::{CodeHost, FileWrite, HostError, Signature};
use inquest::github::events::{self, GithubEvent, PrAction, ReviewAction};
use inquest::github::octo::{GithubAuth, OctoHost};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::gh_openapi::description;
use crate::support::github::{APP_LOGIN, GithubServer, LOGIN_HEADER, PUSHER};

const CONF: &str = "jobs/etl/spark-defaults.conf";
const SECRET: &str = "a webhook secret";

fn host(server: &GithubServer) -> OctoHost {
    OctoHost::new(&server.url, GithubAuth::Token(SecretString::from("dev-token")), "acme/etl")
}

async fn send(method: reqwest::Method, url: String, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new().request(method, url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn operations_are_found_by_method_and_path() {
    let started = Instant::now();
    let api = description().await;
    eprintln!("GitHub's REST description: loaded in {:?} (first call here {:?})", api.loaded_in, started.elapsed());
    let id = |method: &str, path: &str| api.operation(method, path).map(|o| o.id);
    assert_eq!(id("GET", "/repos/acme/etl/git/ref/heads/inquest/inv1/1").as_deref(), Some("git/get-ref"));
    assert_eq!(id("POST", "/repos/acme/etl/git/refs").as_deref(), Some("git/create-ref"));
    assert_eq!(id("DELETE", "/repos/acme/etl/git/refs/heads/a/b").as_deref(), Some("git/delete-ref"));
    assert_eq!(id("GET", "/repos/acme/etl/contents/jobs/etl/x.conf").as_deref(), Some("repos/get-content"));
    assert_eq!(id("GET", "/repos/acme/etl/pulls/7").as_deref(), Some("pulls/get"));
    assert_eq!(id("GET", "/repos/acme/etl/pulls/7/reviews").as_deref(), Some("pulls/list-reviews"));
    assert_eq!(id("PUT", "/repos/acme/etl/pulls/7/reviews/9/dismissals").as_deref(), Some("pulls/dismiss-review"));
    assert_eq!(id("POST", "/repos/acme/etl/issues/7/labels").as_deref(), Some("issues/add-labels"));
    assert_eq!(id("PATCH", "/repos/acme/etl/git/commits"), None, "no such operation");

    // An answer missing what GitHub always sends is caught, by name.
    let op = api.operation("GET", "/repos/acme/etl/pulls/7").unwrap();
    let started = Instant::now();
    let problems = api.check_response(&op, 200, "application/json", br#"{"number": 7, "state": "open"}"#);
    eprintln!("pulls/get 200: compiled and checked in {:?}", started.elapsed());
    let missing: Vec<&str> = problems.iter().filter_map(|p| p.missing.as_deref()).collect();
    assert!(missing.contains(&"url") && missing.contains(&"head"), "{problems:?}");
    let problems = api.check_response(&op, 200, "application/json", br#"{"number": "7"}"#);
    assert!(problems.iter().any(|p| p.at == "/number"), "{problems:?}");
    let problems = api.check_response(&op, 418, "application/json", b"{}");
    assert!(problems[0].what.contains("418"), "{problems:?}");
    // A webhook payload too.
    let problems = api.check_webhook("pull_request_review", &json!({"action": "submitted", "review": {}}));
    let missing: Vec<&str> = problems.iter().filter_map(|p| p.missing.as_deref()).collect();
    assert!(missing.contains(&"pull_request") && missing.contains(&"repository"), "{problems:?}");
    assert!(problems.iter().any(|p| p.at == "/review" && p.missing.as_deref() == Some("commit_id")), "{problems:?}");
    let delete = api.operation("DELETE", "/repos/acme/etl/git/refs/heads/x").unwrap();
    assert_eq!(api.check_response(&delete, 204, "", b""), vec![]);
    assert_eq!(api.check_response(&delete, 204, "application/json", b"{}").len(), 1, "a 204 has no body");
}

/// A request body that does not fit the operation is answered 422 as GitHub answers
/// it, changes nothing, and is kept as a violation.
#[tokio::test]
async fn a_body_that_does_not_fit_is_refused_as_github_refuses_it() {
    let server = GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n")]).await;
    let main = server.git(&["rev-parse", "refs/heads/main"]).unwrap();
    let refs = format!("{}/repos/acme/etl/git/refs", server.url);

    let (status, answer) = send(reqwest::Method::POST, refs.clone(), json!({"ref": "refs/heads/x"})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["message"], "Invalid request.\n\n\"sha\" wasn't supplied.");
    assert!(answer["documentation_url"].as_str().unwrap().starts_with("https://docs.github.com/"), "{answer}");

    let (status, answer) = send(reqwest::Method::POST, refs.clone(), json!({"ref": "refs/heads/x", "sha": 5})).await;
    assert_eq!(status, 422, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.starts_with("Invalid request.\n\nFor '/sha', 5 is not of type"), "{message}");

    let tree = format!("{}/repos/acme/etl/git/trees", server.url);
    let entry = json!({"path": "a", "mode": "100600", "type": "blob", "sha": main});
    let (status, answer) = send(reqwest::Method::POST, tree, json!({"tree": [entry]})).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("'/tree/0/mode'"), "{answer}");

    assert!(server.git(&["rev-parse", "--verify", "-q", "refs/heads/x"]).is_err(), "nothing was made");
    let violations = server.take_violations();
    assert_eq!(violations.len(), 3, "{violations:#?}");
    assert!(violations[0].starts_with("POST /repos/acme/etl/git/refs (git/create-ref): request body: "));
    assert!(violations[0].contains("\"sha\" is a required property"), "{}", violations[0]);
    assert!(violations[1].contains("/sha: 5 is not of type \"string\""), "{}", violations[1]);
    assert!(violations[2].contains("/tree/0/mode"), "{}", violations[2]);

    // A route GitHub does not have is a violation too (a test asking for what it will
    // never get).
    let (status, _) = send(reqwest::Method::POST, format!("{}/repos/acme/etl/nonsense", server.url), json!({})).await;
    assert_eq!(status, 404);
    let violations = server.take_violations();
    assert!(violations[0].contains("no such operation"), "{violations:?}");
    // The right body is taken.
    let (status, answer) = send(reqwest::Method::POST, refs, json!({"ref": "refs/heads/x", "sha": main})).await;
    assert_eq!(status, 201, "{answer}");
    server.assert_conforms();
}

/// Everything the drafter's octocrab CodeHost asks and hears in a draft's life fits
/// GitHub's description.
#[tokio::test]
async fn the_drafting_conversation_fits_githubs_description() {
    let server = GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n"), ("README", "etl\n")]).await;
    let h = host(&server);
    let repo = "acme/etl";
    let main = h.branch(repo, "main").await.unwrap().expect("main");
    assert_eq!(h.file(repo, CONF, &main).await.unwrap().as_deref(), Some("spark.executor.memory 4g\n"));
    let who =
        Signature { name: "Inquest".into(), email: "inquest@example.com".into(), date: "2026-11-27T05:00:00Z".into() };
    let files = [FileWrite { path: CONF.into(), content: "spark.executor.memory 8g\n".into() }];
    let commit = h.commit(repo, &main, &files, "Give etl more memory", &who).await.unwrap();
    h.create_branch(repo, "inquest/inv1/1", &commit).await.unwrap();
    assert!(matches!(h.create_branch(repo, "inquest/inv1/1", &commit).await, Err(HostError::AlreadyExists(_))));
    let pull = h.open_draft(repo, "inquest/inv1/1", "main", "Give etl more memory", "Why: c1.").await.unwrap();
    assert_eq!((pull.number, pull.draft, pull.head_sha.as_str()), (1, true, commit.as_str()));
    let again = h.open_draft(repo, "inquest/inv1/1", "main", "Give etl more memory", "Why: c1.").await;
    assert!(matches!(again, Err(HostError::AlreadyExists(_))), "{again:?}");
    h.add_labels(repo, 1, &["inquest".into(), "remediation".into()]).await.unwrap();
    h.comment(repo, 1, "Waiting for an approval.").await.unwrap();
    h.comment(repo, 1, "Approved by **dave**.").await.unwrap();
    assert_eq!(h.comments(repo, 1).await.unwrap(), ["Waiting for an approval.", "Approved by **dave**."]);
    let found = h.pull(repo, 1).await.unwrap().expect("pull 1");
    assert_eq!(found, pull);
    assert_eq!(h.pull(repo, 2).await.unwrap(), None);
    h.request_reviewers(repo, 1, &["bob".into()]).await.unwrap();
    h.mark_ready(repo, &found).await.unwrap();
    assert_eq!(h.find_pull(repo, "inquest/inv1/1").await.unwrap().map(|p| (p.number, p.draft)), Some((1, false)));
    h.close(repo, 1).await.unwrap();
    h.delete_branch(repo, "inquest/inv1/1").await.unwrap();
    h.delete_branch(repo, "inquest/inv1/1").await.unwrap();
    assert_eq!(h.find_pull(repo, "inquest/inv1/1").await.unwrap(), None);
    let closed = h.pull(repo, 1).await.unwrap().expect("still there");
    assert!(!closed.open && closed.head_sha == commit, "{closed:?}");
    assert_eq!(h.file(repo, CONF, &commit).await.unwrap().as_deref(), Some("spark.executor.memory 8g\n"));

    // What was asked, by operation: every one the drafter uses.
    let api = description().await;
    let mut ops: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter_map(|r| {
            let (method, path) = r.split_once(' ')?;
            Some(api.operation(method, path).map_or_else(|| path.to_string(), |o| o.id))
        })
        .collect();
    ops.sort();
    ops.dedup();
    assert_eq!(
        ops,
        [
            "/graphql",
            "git/create-blob",
            "git/create-commit",
            "git/create-ref",
            "git/create-tree",
            "git/delete-ref",
            "git/get-commit",
            "git/get-ref",
            "issues/add-labels",
            "issues/create-comment",
            "issues/list-comments",
            "pulls/create",
            "pulls/get",
            "pulls/list",
            "pulls/request-reviewers",
            "pulls/update",
            "repos/get-content",
        ]
    );
    server.assert_conforms();
}

/// What a receiver was sent: each delivery's headers and body.
type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A small webhook receiver on 127.0.0.1; keeps what it is sent; stops on drop.
struct Receiver {
    url: String,
    got: Got,
    stop: CancellationToken,
}

impl Receiver {
    async fn start() -> Receiver {
        async fn take(State(got): State<Got>, headers: HeaderMap, body: Bytes) {
            got.lock().unwrap().push((headers, body));
        }
        let got = Got::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/hooks", axum::routing::post(take)).with_state(got.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        Receiver { url, got, stop }
    }

    /// Each delivery, its signature verified, read by the agent's own parser.
    fn events(&self) -> Vec<(String, GithubEvent, Value)> {
        let secrets = [SecretString::from(SECRET)];
        let mut ids = std::collections::HashSet::new();
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(headers, body)| {
                let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let signature = h("x-hub-signature-256");
                inquest::github::signature::verify(&secrets, signature.as_deref(), body).expect("signed");
                let id = h("x-github-delivery").expect("a delivery id");
                assert!(uuid::Uuid::parse_str(&id).is_ok() && ids.insert(id.clone()), "{id}");
                assert_eq!(h("content-type").as_deref(), Some("application/json"));
                let event = h("x-github-event").expect("an event");
                let parsed = events::parse(&event, body).unwrap_or_else(|e| panic!("{event}: {e}"));
                (event, parsed, serde_json::from_slice(body).unwrap())
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reviews are made, listed and dismissed as on GitHub, a push synchronizes the pull
/// request, and each sends the signed webhook the agent reads.
#[tokio::test]
async fn reviews_and_pushes_send_signed_webhooks() {
    let server = GithubServer::start("acme", &[(CONF, "spark.executor.memory 4g\n")]).await;
    let receiver = Receiver::start().await;
    server.send_webhooks_to(&receiver.url, SECRET);
    let h = host(&server);
    let repo = "acme/etl";
    let main = h.branch(repo, "main").await.unwrap().unwrap();
    let who =
        Signature { name: "Inquest".into(), email: "inquest@example.com".into(), date: "2026-11-27T05:00:00Z".into() };
    let files = [FileWrite { path: CONF.into(), content: "spark.executor.memory 8g\n".into() }];
    let head = h.commit(repo, &main, &files, "More memory", &who).await.unwrap();
    h.create_branch(repo, "inquest/inv1/1", &head).await.unwrap();
    h.open_draft(repo, "inquest/inv1/1", "main", "More memory", "Why.").await.unwrap();
    h.request_reviewers(repo, 1, &["bob".into()]).await.unwrap();

    // The app that opened it cannot approve it; bob can, of the head by default.
    let (status, answer) = server.review(1, APP_LOGIN, None, "APPROVE").await;
    assert_eq!((status, &answer["errors"][0]), (422, &json!("Can not approve your own pull request")), "{answer}");
    let (status, review) = server.review(1, "bob", None, "APPROVE").await;
    assert_eq!(status, 200, "{review}");
    assert_eq!((review["state"].as_str(), review["commit_id"].as_str()), (Some("APPROVED"), Some(head.as_str())));
    assert_eq!(review["user"]["login"], "bob");
    let approval = review["id"].as_u64().unwrap();
    assert!(server.pulls()[0].reviewers.is_empty(), "bob reviewed, so is no longer asked");
    let (status, comment) = server.review(1, "carol", Some(&main), "COMMENT").await;
    assert_eq!(status, 200, "{comment}");
    let comment = comment["id"].as_u64().unwrap();

    let reviews = format!("{}/repos/acme/etl/pulls/1/reviews", server.url);
    let listed: Vec<Value> = reqwest::Client::new().get(&reviews).send().await.unwrap().json().await.unwrap();
    let seen: Vec<(&str, &str)> =
        listed.iter().map(|r| (r["user"]["login"].as_str().unwrap(), r["state"].as_str().unwrap())).collect();
    assert_eq!(seen, [("bob", "APPROVED"), ("carol", "COMMENTED")]);

    let (status, dismissed) = server.dismiss(1, approval, "acme-admin", "Approved the wrong change").await;
    assert_eq!((status, dismissed["state"].as_str()), (200, Some("DISMISSED")), "{dismissed}");
    let (status, _) = server.dismiss(1, comment, "acme-admin", "a comment cannot be dismissed").await;
    assert_eq!(status, 422);
    let (status, _) = server.dismiss(1, 999, "acme-admin", "no such review").await;
    assert_eq!(status, 404);

    // A person pushes to the branch: the pull request's head moves.
    let pushed = server.push("inquest/inv1/1", &[(CONF, "spark.executor.memory 16g\n")]).await;
    assert_eq!(h.pull(repo, 1).await.unwrap().unwrap().head_sha, pushed);
    assert_eq!(server.git(&["rev-parse", &format!("{pushed}^")]).unwrap(), head);

    // A review made directly (no event) is pending: no webhook.
    let client = reqwest::Client::new();
    let resp = client.post(&reviews).header(LOGIN_HEADER, "dave").json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let got = receiver.events();
    let summary: Vec<(&str, &GithubEvent)> = got.iter().map(|(e, p, _)| (e.as_str(), p)).collect();
    let review_event = |action, id, login: &str, state: &str, commit: &str| GithubEvent::Review {
        action,
        repo: repo.into(),
        number: 1,
        review: events::Review {
            id,
            login: login.into(),
            is_bot: false,
            state: state.into(),
            commit_id: commit.into(),
        },
    };
    assert_eq!(
        summary,
        [
            ("pull_request_review", &review_event(ReviewAction::Submitted, approval, "bob", "approved", &head)),
            ("pull_request_review", &review_event(ReviewAction::Submitted, comment, "carol", "commented", &main)),
            ("pull_request_review", &review_event(ReviewAction::Dismissed, approval, "bob", "dismissed", &head)),
            (
                "pull_request",
                &GithubEvent::PullRequest {
                    action: PrAction::Synchronize,
                    repo: repo.into(),
                    number: 1,
                    head_sha: pushed.clone(),
                    sender: PUSHER.into(),
                }
            ),
        ]
    );
    assert_eq!(got[2].2["sender"]["login"], "acme-admin");
    assert_eq!((got[3].2["before"].as_str(), got[3].2["after"].as_str()), (Some(head.as_str()), Some(pushed.as_str())));
    let statuses: Vec<Option<u16>> = server.deliveries().iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Some(200); 4]);
    server.assert_conforms();
}
