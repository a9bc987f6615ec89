//! Slack: investigations' threads through the relay, approvals pressed as buttons, and
//! questions asked by mentioning the app, all against the Slack Web API test server
//! (`support/slack.rs`), which checks every request against Slack's documented
//! arguments, and plays Slack's side of Socket Mode.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use chrono::Utc;
use inquest::chat::ledger::Ledger;
use inquest::chat::relay::Relay;
use inquest::chat::slack::{
    SINK_NAME, SlackApi, SlackConfig, SlackEvents, SlackInteractivity, SlackSink, SocketMode, events_router,
    interactivity_router,
};
use inquest::chat::{ChatError, ChatSink, Post, Thread, render};
use inquest::clock::{Clock, SystemClock};
use inquest::config::RegistryConfig;
use inquest::engine::{EventBody, Limits, State as InvestigationState};
use inquest::identity::{Authenticated, Principal};
use inquest::intake::{self, Source};
use inquest::policy::{ApproverPolicy, matches};
use inquest::registry::approvals::{self, ApprovalContext, ApprovalState, ApproverLookup, PolicyUnavailable};
use inquest::store::{IngestPolicy, IngestRequest, SqlStore, Store, Transition};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::slack::{
    self, APP_TOKEN, BOT_TOKEN, BOT_USER, Message, SIGNING_SECRET, SlackServer, send_event, send_interaction,
};

const DATA: &str = "C0DATA";
const ELSEWHERE: &str = "C0ELSEWHERE";
const WEB: &str = "https://inquest.example";
/// A short pace, so tests do not wait a second per message.
const PACE: Duration = Duration::from_millis(20);

struct Rig {
    sql: Arc<SqlStore>,
    slack: SlackServer,
    config: Arc<SlackConfig>,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    inquest::identity::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let sql = Arc::new(SqlStore::open(&format!("sqlite://{}/store.db", dir.path().display()), 4).await.unwrap());
    let slack = SlackServer::start(&[DATA, ELSEWHERE]).await;
    let config: SlackConfig = serde_json::from_value(json!({
        "api_url": slack.api_url,
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "channels": {"data": DATA},
        "default_channel": ELSEWHERE,
        "users": {
            "U0ALICE": {"subject": "alice", "groups": ["data-eng"], "name": "Alice"},
            "U0BOB": {"subject": "bob", "groups": ["data-eng"], "name": "Bob"},
            "U0MALLORY": {"subject": "mallory", "groups": ["ml"]},
        },
    }))
    .unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    Rig { sql, slack, config: Arc::new(config), _dir: dir }
}

impl Rig {
    fn api(&self) -> SlackApi {
        SlackApi::new(reqwest::Client::new(), &self.config)
    }

    fn sink(&self) -> Arc<SlackSink> {
        Arc::new(SlackSink::new(self.api(), &self.config).with_pace(PACE).with_fold_max(1))
    }

    fn relay(&self, sink: Arc<dyn ChatSink>) -> Relay {
        Relay {
            sinks: vec![sink],
            ledger: Ledger::new(self.sql.clone()),
            store: self.sql.clone(),
            clock: Arc::new(SystemClock),
            worker: "relay-1".into(),
            web_base: WEB.into(),
            poll: Duration::from_secs(1),
        }
    }

    /// The keys of the posts the investigation's log makes, in order.
    async fn expected_keys(&self, id: &str) -> Vec<String> {
        let events = self.sql.events(id, 0, 1000).await.unwrap();
        events.iter().filter_map(|e| render::post(id, e)).map(|p| p.key).collect()
    }

    async fn thread_of(&self, id: &str) -> (String, String) {
        let r = Ledger::new(self.sql.clone()).thread_ref(SINK_NAME, id).await.unwrap().expect("a thread");
        let (c, t) = r.split_once(':').unwrap();
        (c.to_string(), t.to_string())
    }
}

/// A new investigation of `team`, as intake makes it (its log: `alert.received`).
async fn investigation(sql: &SqlStore, team: &str, word: &str) -> String {
    let body = json!({
        "version": "4", "groupKey": format!("{{}}:{{alertname=\"{word}\"}}"), "status": "firing",
        "receiver": "inquest", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": word}, "annotations": {},
                    "startsAt": "2026-11-26T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": word}],
    })
    .to_string();
    let delivery = intake::parse(Source::Alertmanager, body.as_bytes(), None).unwrap();
    let request = IngestRequest { delivery, team: team.into(), service: None, body };
    let policy =
        IngestPolicy { cooldown: Duration::from_secs(600), on_resolved: inquest::config::OnResolved::Continue };
    let out = sql.ingest(vec![request], &policy, Utc::now()).await.unwrap();
    out[0].new_investigations[0].clone()
}

/// Takes the investigation up (`investigation.started`), records `events`, and
/// completes it with `summary` if given.
async fn work(sql: &SqlStore, id: &str, events: &[EventBody], summary: Option<&str>) {
    let limits = Limits { max_running: 100, team_max_running: 100, team_quotas: BTreeMap::new() };
    let claims = sql.claim("worker-1", 100, &limits, Duration::from_secs(60), Utc::now()).await.unwrap();
    let claim = claims.into_iter().find(|c| c.lease.investigation_id == id).expect("claimed");
    let step = Transition { events, ..Default::default() };
    assert!(sql.transition(&claim.lease, &step, Utc::now()).await.unwrap());
    if let Some(s) = summary {
        let done = Transition {
            to: Some(InvestigationState::Completed),
            events: &[EventBody::new("investigation.completed", json!({"summary": s}))],
            release: true,
            summary: Some(s),
            failure: false,
        };
        assert!(sql.transition(&claim.lease, &done, Utc::now()).await.unwrap());
    }
}

fn tool_called(call: &str) -> EventBody {
    EventBody::new(
        "tool.called",
        json!({"call_id": call, "tool": "spark__get_app", "millis": 7, "outcome": "ok",
               "result": {"app": call, "state": "FAILED"}}),
    )
}

fn finding(text: &str) -> EventBody {
    EventBody::new("finding", json!({"category": "root_cause", "summary": text}))
}

fn all_keys(messages: &[Message]) -> Vec<String> {
    messages.iter().flat_map(Message::keys).collect()
}

/// Waits until `check` holds (the interactivity route answers before it acts).
async fn eventually<F: Fn() -> bool>(what: &str, check: F) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn one_root_per_investigation_in_its_teams_channel_everything_else_in_the_thread_status_edited_in_place() {
    let rig = rig().await;
    let id = investigation(&rig.sql, "data", "OrdersLate").await;
    let other = investigation(&rig.sql, "finance", "LedgerLate").await;
    let sink = rig.sink();
    let relay = rig.relay(sink.clone());
    assert_eq!(relay.round(&*sink).await.unwrap(), 2);

    let roots = rig.slack.roots(DATA);
    assert_eq!(roots.len(), 1, "one root in the team's channel");
    assert!(roots[0].text.ends_with("— queued"), "{}", roots[0].text);
    assert_eq!(roots[0].metadata.as_ref().unwrap()["event_payload"]["investigation"], id.as_str());
    assert_eq!(rig.slack.roots(ELSEWHERE).len(), 1, "a team without a channel goes to the default channel");
    assert_eq!(rig.thread_of(&other).await.0, ELSEWHERE);

    work(
        &rig.sql,
        &id,
        &[tool_called("c1"), tool_called("c2"), finding("the executor ran out of memory")],
        Some("OOM"),
    )
    .await;
    relay.round(&*sink).await.unwrap();

    let roots = rig.slack.roots(DATA);
    assert_eq!(roots.len(), 1, "still one root: the status is edited, not posted");
    let root = &roots[0];
    assert!(root.edits >= 1);
    assert!(root.text.starts_with("✅ ") && root.text.ends_with("completed: OOM"), "{}", root.text);
    let replies = rig.slack.replies(DATA, &root.ts);
    assert_eq!(all_keys(&replies), rig.expected_keys(&id).await, "every post, once, in log order, in the thread");
    let texts: Vec<&str> = replies.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts[2..],
        [
            "✔ Called spark__get_app (7 ms) [c1]",
            "✔ Called spark__get_app (7 ms) [c2]",
            "🔍 Finding (root_cause): the executor ran out of memory",
            "✅ Completed: OOM",
        ]
    );
    // A tool's output shows as a preview with the way to the web thread.
    assert!(replies[2].shown().contains("\"state\": \"FAILED\""), "{}", replies[2].shown());
    assert!(replies[2].shown().contains(&format!("<{WEB}/investigations/{id}|web thread>")));
    let recorded: Vec<String> =
        Ledger::new(rig.sql.clone()).posts(SINK_NAME, &id).await.unwrap().into_iter().map(|(_, ts)| ts).collect();
    assert_eq!(recorded, replies.iter().map(|m| m.ts.clone()).collect::<Vec<_>>());
    rig.slack.assert_conforms();
}

/// A sink that dies right after Slack took a write: the write is made, the relay never
/// hears of it, so the ledger does not record it.
struct DiesAfterSend {
    inner: Arc<SlackSink>,
    /// Die after opening the thread.
    on_open: bool,
    /// Die after posting this event.
    on_seq: Option<i64>,
}

#[async_trait]
impl ChatSink for DiesAfterSend {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn open_thread(&self, thread: &Thread, status: &str) -> Result<String, ChatError> {
        let r = self.inner.open_thread(thread, status).await?;
        if self.on_open { Err(ChatError::Unavailable("died after opening".into())) } else { Ok(r) }
    }

    async fn post(&self, thread_ref: &str, thread: &Thread, post: &Post) -> Result<String, ChatError> {
        let r = self.inner.post(thread_ref, thread, post).await?;
        if self.on_seq == Some(post.seq) { Err(ChatError::Unavailable("died after posting".into())) } else { Ok(r) }
    }

    async fn set_status(&self, thread_ref: &str, thread: &Thread, status: &str) -> Result<(), ChatError> {
        self.inner.set_status(thread_ref, thread, status).await
    }
}

#[tokio::test]
async fn dying_between_the_write_and_the_record_posts_nothing_twice() {
    let rig = rig().await;
    let id = investigation(&rig.sql, "data", "OrdersLate").await;
    work(&rig.sql, &id, &[tool_called("c1"), finding("f1"), tool_called("c2")], Some("done")).await;
    let keys = rig.expected_keys(&id).await;

    // The first process dies after its root was posted, before the ledger knew.
    let dying: Arc<dyn ChatSink> = Arc::new(DiesAfterSend { inner: rig.sink(), on_open: true, on_seq: None });
    rig.relay(dying.clone()).round(&*dying).await.unwrap();
    assert_eq!(rig.slack.roots(DATA).len(), 1);
    assert!(Ledger::new(rig.sql.clone()).thread_ref(SINK_NAME, &id).await.unwrap().is_none());

    // The next dies after posting the finding (event 4), unrecorded.
    let dying: Arc<dyn ChatSink> = Arc::new(DiesAfterSend { inner: rig.sink(), on_open: false, on_seq: Some(4) });
    rig.relay(dying.clone()).round(&*dying).await.unwrap();
    let root = rig.slack.roots(DATA)[0].ts.clone();
    let posted = Ledger::new(rig.sql.clone()).posts(SINK_NAME, &id).await.unwrap();
    assert_eq!(posted.last().unwrap().0, 3, "the ledger stops before the finding");
    assert_eq!(all_keys(&rig.slack.replies(DATA, &root)), keys[..4]);

    // A restarted process (a new sink, knowing nothing) adopts both and goes on.
    let fresh = rig.sink();
    rig.relay(fresh.clone()).round(&*fresh).await.unwrap();
    assert_eq!(rig.slack.roots(DATA).len(), 1, "the root was adopted, not posted again");
    let replies = rig.slack.replies(DATA, &root);
    assert_eq!(all_keys(&replies), keys, "each post once");
    let posted = Ledger::new(rig.sql.clone()).posts(SINK_NAME, &id).await.unwrap();
    let finding_ts = &replies.iter().find(|m| m.keys() == [format!("{id}/4")]).unwrap().ts;
    assert!(posted.contains(&(4, finding_ts.clone())), "the adopted message is what the ledger records");

    // Slack taking a write and losing its answer, and rate limiting, come to the same.
    let next = investigation(&rig.sql, "data", "Second").await;
    work(&rig.sql, &next, &[finding("f2"), finding("f3")], None).await;
    rig.slack.lose_answer_once("chat.postMessage");
    rig.slack.ratelimit_once("chat.postMessage");
    let relay = rig.relay(fresh.clone());
    for _ in 0..4 {
        relay.round(&*fresh).await.unwrap();
    }
    let (_, next_root) = rig.thread_of(&next).await;
    assert_eq!(rig.slack.roots(DATA).len(), 2);
    assert_eq!(all_keys(&rig.slack.replies(DATA, &next_root)), rig.expected_keys(&next).await);
    let errors: Vec<Option<String>> = rig.slack.calls("chat.postMessage").into_iter().map(|c| c.error).collect();
    assert!(errors.contains(&Some("ratelimited".into())) && errors.contains(&Some("(answer lost)".into())));
    rig.slack.assert_conforms();
}

#[tokio::test]
async fn posts_are_paced_per_channel_and_a_burst_of_tool_calls_is_folded_into_one_message() {
    let rig = rig().await;
    let pace = Duration::from_millis(700);
    let id = investigation(&rig.sql, "data", "OrdersLate").await;
    let calls: Vec<EventBody> = (1..=5).map(|i| tool_called(&format!("c{i}"))).collect();
    let mut events = calls.clone();
    events.push(finding("f1"));
    events.extend((6..=7).map(|i| tool_called(&format!("c{i}"))));
    work(&rig.sql, &id, &events, None).await;
    let keys = rig.expected_keys(&id).await;

    let sink = Arc::new(SlackSink::new(rig.api(), &rig.config).with_pace(pace));
    let dying: Arc<dyn ChatSink> = Arc::new(DiesAfterSend { inner: sink.clone(), on_open: false, on_seq: Some(5) });
    rig.relay(dying.clone()).round(&*dying).await.unwrap();
    let before_restart = rig.slack.calls("chat.postMessage").len();
    // Restarted: what was folded before the crash is found in the folded message.
    let fresh = Arc::new(SlackSink::new(rig.api(), &rig.config).with_pace(pace));
    rig.relay(fresh.clone()).round(&*fresh).await.unwrap();

    let (_, root) = rig.thread_of(&id).await;
    let replies = rig.slack.replies(DATA, &root);
    assert_eq!(all_keys(&replies), keys, "every post once, in order");
    let shapes: Vec<usize> = replies.iter().map(|m| m.keys().len()).collect();
    // alert, started, five calls (folded; the crash came after the third was folded, so
    // the restarted sink starts a message of its own for the rest), the finding, two
    // calls folded.
    assert_eq!(shapes, [1, 1, 3, 2, 1, 2], "{:#?}", replies.iter().map(|m| &m.text).collect::<Vec<_>>());
    assert!(replies[2].text.contains("[c1]\n") && replies[2].text.ends_with("[c3]"), "{}", replies[2].text);

    // New messages of a channel are at least the pace apart (a restarted process knows
    // nothing of its predecessor's pace); folds are edits.
    let posted = rig.slack.calls("chat.postMessage");
    assert_eq!(posted.len(), 1 + replies.len());
    for process in [&posted[..before_restart], &posted[before_restart..]] {
        for pair in process.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(gap >= pace - Duration::from_millis(30), "two messages {gap:?} apart");
        }
    }
    assert_eq!(rig.slack.calls("chat.update").len(), 4, "four calls folded in");
    rig.slack.assert_conforms();
}

#[tokio::test]
async fn slacks_refusals_are_refusals_and_its_trouble_is_unavailability() {
    let rig = rig().await;
    rig.slack.add_foreign_channel("C0NOTIN");
    let thread = |team: &str| Thread {
        investigation_id: "inv1".into(),
        title: "t".into(),
        team: team.into(),
        service: None,
        url: format!("{WEB}/investigations/inv1"),
    };
    let mut config = (*rig.config).clone();
    config.channels.insert("ml".into(), "C0NOTIN".into());
    config.channels.insert("gone".into(), "C0GONE".into());
    let sink = SlackSink::new(SlackApi::new(reqwest::Client::new(), &config), &config);
    let refused = |r: Result<String, ChatError>| match r {
        Err(ChatError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(refused(sink.open_thread(&thread("ml"), "s").await).contains("not_in_channel"));
    assert!(refused(sink.open_thread(&thread("gone"), "s").await).contains("channel_not_found"));
    config.bot_token = "xoxb-revoked".to_string().into();
    let sink = SlackSink::new(SlackApi::new(reqwest::Client::new(), &config), &config);
    assert!(refused(sink.open_thread(&thread("data"), "s").await).contains("invalid_auth"));
    assert!(rig.slack.roots(DATA).is_empty());
    rig.slack.assert_conforms();
}

/// The registry's policy, as a table.
struct Policies;

#[async_trait]
impl ApproverLookup for Policies {
    async fn tool_approvers(&self, server: &str, tool: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable> {
        Ok(match (server, tool) {
            ("airflow", "clear_task") => Some(ApproverPolicy { approvers: vec!["group:data-eng".into()], required: 1 }),
            ("presto", "kill_query") => Some(ApproverPolicy { approvers: vec!["group:data-eng".into()], required: 2 }),
            _ => None,
        })
    }

    async fn pull_request_approvers(&self, _: &str) -> Result<Option<ApproverPolicy>, PolicyUnavailable> {
        Ok(None)
    }

    async fn is_approver(&self, principal: &Principal) -> Result<bool, PolicyUnavailable> {
        Ok(matches("group:data-eng", principal))
    }
}

fn approval_context(sql: &Arc<SqlStore>) -> ApprovalContext {
    ApprovalContext {
        config: Arc::new(RegistryConfig {
            public_url: "https://registry.example".into(),
            url: "https://registry.example".into(),
            admins: vec!["group:inquest-admins".into()],
            approval_ttl: Duration::from_secs(3600),
            probe_interval: Duration::from_secs(30),
            pull_request_approvers: Vec::new(),
        }),
        store: sql.clone(),
        clock: Arc::new(SystemClock),
        approvers: Arc::new(Policies),
    }
}

/// One `approval.requested` event per approval id, as the agent logs a call waiting on it.
fn approvals_requested(ids: &[&String]) -> Vec<EventBody> {
    ids.iter()
        .map(|a| {
            EventBody::new(
                "approval.requested",
                json!({"approval_id": a, "url": format!("https://registry.example/approvals/{a}"),
                       "tool": "airflow__clear_task", "call_id": "c9"}),
            )
        })
        .collect()
}

/// A service asks the registry for approval of a tool call; the request's id.
async fn request_approval(ctx: &ApprovalContext, server: &str, tool: &str, n: u32) -> String {
    let service = Principal::service(&format!("spiffe://inquest.local/server/{server}"));
    let body = json!({"kind": "tool_call", "resource": {"server": server, "tool": tool},
                      "action": {"tool": tool, "arguments": {"n": n}}});
    let response = approvals::routes::create(State(ctx.clone()), Authenticated(service), Bytes::from(body.to_string()))
        .await
        .unwrap();
    let bytes =
        axum::body::to_bytes(axum::response::IntoResponse::into_response(response).into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["id"].as_str().unwrap().to_string()
}

async fn state_of(ctx: &ApprovalContext, id: &str) -> ApprovalState {
    ctx.store.approval(id).await.unwrap().unwrap().state
}

async fn serve(router: axum::Router, path: &str) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await;
    });
    (url, stop)
}

#[tokio::test]
async fn a_button_press_is_the_mapped_persons_decision_at_the_approval_service() {
    let rig = rig().await;
    let ctx = approval_context(&rig.sql);
    let single = request_approval(&ctx, "airflow", "clear_task", 1).await;
    let double = request_approval(&ctx, "presto", "kill_query", 2).await;
    let declined = request_approval(&ctx, "airflow", "clear_task", 3).await;
    let revoked = request_approval(&ctx, "airflow", "clear_task", 4).await;
    let id = investigation(&rig.sql, "data", "OrdersLate").await;
    let asked = approvals_requested(&[&single, &double, &declined, &revoked]);
    work(&rig.sql, &id, &asked, None).await;
    let sink = rig.sink();
    rig.relay(sink.clone()).round(&*sink).await.unwrap();
    let (_, root) = rig.thread_of(&id).await;
    let card = |approval: &str| {
        rig.slack
            .replies(DATA, &root)
            .into_iter()
            .find(|m| m.blocks.iter().any(|b| b["elements"][0]["value"] == approval))
            .unwrap_or_else(|| panic!("no card for {approval}"))
    };
    let single_card = card(&single);
    assert!(single_card.has_buttons());

    let state = SlackInteractivity { config: rig.config.clone(), approvals: ctx.clone(), api: rig.api() };
    let (url, _stop) = serve(interactivity_router(state), "/v1/chat/slack/interactivity").await;
    let press = |user: &str, ts: &str, action: &str| rig.slack.block_actions(user, DATA, ts, action);

    // A payload signed with another secret, or long ago, decides nothing.
    let alice_approves = press("U0ALICE", &single_card.ts, "inquest_approve");
    let forged = send_interaction(&url, "not-the-secret", &alice_approves).await;
    assert_eq!(forged.status(), 401);
    let body = format!("payload={}", inquest::percent::encode(&alice_approves.to_string()));
    let old = Utc::now().timestamp() - 600;
    let replayed = slack::deliver(&url, SIGNING_SECRET, "application/x-www-form-urlencoded", body, old).await;
    assert_eq!(replayed.status(), 401);

    // Someone Inquest does not know, and someone who is no approver, are told so alone.
    let stranger = send_interaction(&url, SIGNING_SECRET, &press("U0NOBODY", &single_card.ts, "inquest_approve")).await;
    assert_eq!(stranger.status(), 200);
    let mallory = send_interaction(&url, SIGNING_SECRET, &press("U0MALLORY", &single_card.ts, "inquest_approve")).await;
    assert_eq!(mallory.status(), 200);
    eventually("two ephemeral answers", || rig.slack.ephemerals().len() == 2).await;
    let mut told: Vec<(String, String)> = rig.slack.ephemerals().into_iter().map(|e| (e.user, e.text)).collect();
    told.sort();
    assert!(told[0].0 == "U0MALLORY" && told[0].1.contains("you are not an approver"), "{told:?}");
    assert!(told[1].0 == "U0NOBODY" && told[1].1.contains("not linked"), "{told:?}");
    assert_eq!(state_of(&ctx, &single).await, ApprovalState::Pending);
    assert_eq!(rig.slack.message(DATA, &single_card.ts).unwrap(), single_card, "the card is unchanged");

    // Alice is an approver: approved, and the buttons are gone.
    let ok = send_interaction(&url, SIGNING_SECRET, &alice_approves).await;
    assert_eq!(ok.status(), 200);
    eventually("the card to change", || rig.slack.message(DATA, &single_card.ts).unwrap().edits == 1).await;
    assert_eq!(state_of(&ctx, &single).await, ApprovalState::Approved);
    let after = rig.slack.message(DATA, &single_card.ts).unwrap();
    assert!(!after.has_buttons());
    assert!(after.shown().ends_with("✅ Approved by Alice"), "{}", after.shown());
    assert_eq!(after.keys(), single_card.keys(), "the card keeps its key");

    // Two approvals needed: the buttons stay after the first.
    let double_card = card(&double);
    send_interaction(&url, SIGNING_SECRET, &press("U0ALICE", &double_card.ts, "inquest_approve")).await;
    eventually("the first approval", || rig.slack.message(DATA, &double_card.ts).unwrap().edits == 1).await;
    let once = rig.slack.message(DATA, &double_card.ts).unwrap();
    assert!(
        once.has_buttons() && once.shown().ends_with("👍 Approved by Alice (1 of 2 approvals)"),
        "{}",
        once.shown()
    );
    // Slack sends the card as it shows now.
    send_interaction(&url, SIGNING_SECRET, &press("U0BOB", &double_card.ts, "inquest_approve")).await;
    eventually("the second approval", || rig.slack.message(DATA, &double_card.ts).unwrap().edits == 2).await;
    let twice = rig.slack.message(DATA, &double_card.ts).unwrap();
    assert!(!twice.has_buttons() && twice.shown().ends_with("✅ Approved by Alice, Bob"), "{}", twice.shown());
    assert_eq!(state_of(&ctx, &double).await, ApprovalState::Approved);

    // Declined.
    let declined_card = card(&declined);
    send_interaction(&url, SIGNING_SECRET, &press("U0BOB", &declined_card.ts, "inquest_decline")).await;
    eventually("the decline", || rig.slack.message(DATA, &declined_card.ts).unwrap().edits == 1).await;
    assert_eq!(state_of(&ctx, &declined).await, ApprovalState::Declined);
    let shown = rig.slack.message(DATA, &declined_card.ts).unwrap();
    assert!(!shown.has_buttons() && shown.shown().ends_with("❌ Declined by Bob"), "{}", shown.shown());

    // Withdrawn at the registry meanwhile: a press says so, and the buttons go.
    let service = Principal::service("spiffe://inquest.local/server/airflow");
    let revoking = Bytes::from(json!({"reason": "no longer needed"}).to_string());
    let view = approvals::routes::revoke(State(ctx.clone()), Authenticated(service), Path(revoked.clone()), revoking)
        .await
        .unwrap();
    assert_eq!(view.0.state, ApprovalState::Revoked);
    let revoked_card = card(&revoked);
    send_interaction(&url, SIGNING_SECRET, &press("U0ALICE", &revoked_card.ts, "inquest_approve")).await;
    eventually("the refusal", || rig.slack.message(DATA, &revoked_card.ts).unwrap().edits == 1).await;
    let shown = rig.slack.message(DATA, &revoked_card.ts).unwrap();
    assert!(!shown.has_buttons() && shown.shown().ends_with("⚠️ The request was revoked"), "{}", shown.shown());
    assert_eq!(state_of(&ctx, &revoked).await, ApprovalState::Revoked);
    rig.slack.assert_conforms();
}

#[tokio::test]
async fn a_mention_in_an_investigations_thread_is_a_follow_up_question_asked_once() {
    let rig = rig().await;
    let id = investigation(&rig.sql, "data", "OrdersLate").await;
    let sink = rig.sink();
    rig.relay(sink.clone()).round(&*sink).await.unwrap();
    let (_, root) = rig.thread_of(&id).await;
    let events = |clock: Arc<dyn Clock>| {
        SlackEvents::new(rig.config.clone(), rig.sql.clone(), Ledger::new(rig.sql.clone()), rig.api(), clock)
    };
    let (url, _stop) = serve(events_router(events(Arc::new(SystemClock))), "/v1/chat/slack/events").await;
    let questions = || async {
        let log = rig.sql.events(&id, 0, 1000).await.unwrap();
        log.into_iter().filter(|e| e.kind == "question.asked").map(|e| e.data).collect::<Vec<Value>>()
    };

    // Slack checks the URL before it sends anything.
    let challenge = json!({"token": "unused", "challenge": "a-challenge-1234", "type": "url_verification"});
    let answer = send_event(&url, SIGNING_SECRET, &challenge).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap(), json!({"challenge": "a-challenge-1234"}));
    assert_eq!(send_event(&url, "not-the-secret", &challenge).await.status(), 401);

    let mention = rig.slack.mention("Ev01", "U0ALICE", DATA, &root, "why is the orders job late?");
    assert_eq!(send_event(&url, SIGNING_SECRET, &mention).await.status(), 200);
    assert_eq!(questions().await, [json!({"question": "why is the orders job late?", "asked_by": "Alice"})]);

    // Slack's retries of the same event, here and at a restarted process, ask nothing.
    assert_eq!(send_event(&url, SIGNING_SECRET, &mention).await.status(), 200);
    let (restarted, _stop2) = serve(events_router(events(Arc::new(SystemClock))), "/v1/chat/slack/events").await;
    assert_eq!(send_event(&restarted, SIGNING_SECRET, &mention).await.status(), 200);
    assert_eq!(questions().await.len(), 1);

    // Another person's question, and one outside any investigation's thread.
    let other = rig.slack.mention("Ev02", "U0CAROL", DATA, &root, "and the upstream?");
    assert_eq!(send_event(&url, SIGNING_SECRET, &other).await.status(), 200);
    let elsewhere = rig.slack.post_as("U0CAROL", DATA, None, "unrelated");
    let stray = rig.slack.mention("Ev03", "U0CAROL", DATA, &elsewhere, "hello?");
    assert_eq!(send_event(&url, SIGNING_SECRET, &stray).await.status(), 200);
    let asked = questions().await;
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1], json!({"question": "and the upstream?", "asked_by": "U0CAROL"}));

    // While it works, the investigation takes no question; the thread is told.
    work(&rig.sql, &id, &[], None).await;
    let busy = rig.slack.mention("Ev04", "U0ALICE", DATA, &root, "still there?");
    assert_eq!(send_event(&url, SIGNING_SECRET, &busy).await.status(), 200);
    assert_eq!(questions().await.len(), 2);
    let told = rig.slack.replies(DATA, &root).into_iter().rfind(|m| m.user == BOT_USER).unwrap();
    assert_eq!(told.text, "The investigation is running; ask again once it has reported.");
    rig.slack.assert_conforms();
}

#[tokio::test]
async fn the_test_server_refuses_what_slack_refuses() {
    let rig = rig().await;
    let http = reqwest::Client::new();
    let call = |method: &str| format!("{}/{method}", rig.slack.api_url);
    let ask = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap().json::<Value>().await.unwrap() };
    let bearer = format!("Bearer {BOT_TOKEN}");
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (http.post(call("auth.test")), "not_authed"),
        (http.post(call("auth.test")).header("authorization", "Bearer xoxb-other"), "invalid_auth"),
        (
            http.post(call("chat.postMessage")).header("authorization", &bearer).json(&json!({"channel": DATA})),
            "no_text",
        ),
        (
            http.post(call("chat.postMessage"))
                .header("authorization", &bearer)
                .json(&json!({"channel": DATA, "text": "x", "colour": "red"})),
            "invalid_arguments",
        ),
        (
            http.post(call("chat.postMessage")).header("authorization", &bearer).json(&json!({
                "channel": DATA, "text": "x",
                "blocks": [{"type": "actions", "elements": [{"type": "button", "text": {"type": "mrkdwn", "text": "b"}}]}],
            })),
            "invalid_blocks",
        ),
        (
            http.post(call("conversations.replies"))
                .header("authorization", &bearer)
                .form(&[("channel", DATA), ("ts", "1.000001")]),
            "thread_not_found",
        ),
        (
            http.post(call("chat.update"))
                .header("authorization", &bearer)
                .json(&json!({"channel": DATA, "ts": "1", "text": "x"})),
            "invalid_arguments",
        ),
        // Socket Mode's method takes the app-level token only, and the others never it.
        (http.post(call("apps.connections.open")).header("authorization", &bearer), "not_allowed_token_type"),
        (
            http.post(call("chat.postMessage"))
                .header("authorization", format!("Bearer {APP_TOKEN}"))
                .json(&json!({"channel": DATA, "text": "x"})),
            "not_allowed_token_type",
        ),
    ];
    for (request, error) in cases {
        let answer = ask(request).await;
        assert_eq!(answer, json!({"ok": false, "error": error}));
    }
    let ok = ask(http.post(call("auth.test")).form(&[("token", BOT_TOKEN)])).await;
    assert_eq!((ok["ok"].clone(), ok["user_id"].clone()), (json!(true), json!(BOT_USER)));
    let opened =
        ask(http.post(call("apps.connections.open")).header("authorization", format!("Bearer {APP_TOKEN}"))).await;
    assert!(opened["url"].as_str().unwrap().starts_with("ws://127.0.0.1:"), "{opened}");
    assert_eq!(rig.slack.take_violations().len(), 7, "a client's mistakes are kept as violations");
}

// ---- Socket Mode ----

impl Rig {
    /// The configuration, with Socket Mode on.
    fn socket_config(&self) -> Arc<SlackConfig> {
        let mut config = (*self.config).clone();
        config.socket_mode = true;
        config.app_token = Some(APP_TOKEN.to_string().into());
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        Arc::new(config)
    }

    fn events(&self, config: &Arc<SlackConfig>) -> SlackEvents {
        SlackEvents::new(
            config.clone(),
            self.sql.clone(),
            Ledger::new(self.sql.clone()),
            self.api(),
            Arc::new(SystemClock),
        )
    }

    /// The investigation's questions, in order.
    async fn questions(&self, id: &str) -> Vec<Value> {
        let log = self.sql.events(id, 0, 1000).await.unwrap();
        log.into_iter().filter(|e| e.kind == "question.asked").map(|e| e.data).collect()
    }

    /// An investigation of `data` with its thread in Slack; its id and its root's ts.
    async fn threaded_investigation(&self, word: &str, events: &[EventBody]) -> (String, String) {
        let id = investigation(&self.sql, "data", word).await;
        if !events.is_empty() {
            work(&self.sql, &id, events, None).await;
        }
        let sink = self.sink();
        self.relay(sink.clone()).round(&*sink).await.unwrap();
        let (_, root) = self.thread_of(&id).await;
        (id, root)
    }
}

/// A Socket Mode client, running until the token is cancelled.
fn socket_mode(client: SocketMode) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let running =
        tokio::spawn(client.with_backoff(Duration::from_millis(10), Duration::from_millis(200)).run(stop.clone()));
    (stop, running)
}

async fn stopped(stop: CancellationToken, running: tokio::task::JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("the client stops").unwrap();
}

/// Waits until the async `check` holds.
async fn until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn acked(slack: &SlackServer, envelope_id: &str) -> bool {
    slack.acks().iter().any(|a| a.envelope_id == envelope_id)
}

#[tokio::test]
async fn over_socket_mode_a_mention_in_a_thread_is_acknowledged_at_once_and_asked() {
    let rig = rig().await;
    let config = rig.socket_config();
    let (id, root) = rig.threaded_investigation("OrdersLate", &[]).await;
    let client = SocketMode::new(reqwest::Client::new(), rig.events(&config), None).unwrap();
    let (stop, running) = socket_mode(client);
    rig.slack.wait_for_links(1).await;
    assert_eq!(rig.slack.calls("apps.connections.open").len(), 1);

    let mention = rig.slack.mention("Ev01", "U0ALICE", DATA, &root, "why is the orders job late?");
    let envelope = rig.slack.push_event(&mention);
    until("the question", || async { rig.questions(&id).await.len() == 1 }).await;
    assert_eq!(rig.questions(&id).await, [json!({"question": "why is the orders job late?", "asked_by": "Alice"})]);
    let acks = rig.slack.acks();
    assert_eq!(acks.len(), 1);
    assert_eq!((acks[0].envelope_id.as_str(), acks[0].link, &acks[0].payload), (envelope.as_str(), 0, &None));
    assert!(acks[0].after < Duration::from_secs(1), "acknowledged at once: {:?}", acks[0].after);

    // Slack delivering the event again (as it does when an ack is lost) asks nothing.
    let again = rig.slack.push_event(&mention);
    eventually("the second ack", || acked(&rig.slack, &again)).await;
    // A slash command, and a mention outside any investigation, are acknowledged and
    // change nothing.
    let command = json!({"command": "/inquest", "text": "status", "user_id": "U0ALICE", "channel_id": DATA,
                         "team_id": "T0INQUEST", "response_url": "https://hooks.slack.com/commands/1/2/3",
                         "trigger_id": "1.2.3"});
    let slash = rig.slack.push("slash_commands", command, true);
    let elsewhere = rig.slack.post_as("U0CAROL", DATA, None, "unrelated");
    let stray = rig.slack.push_event(&rig.slack.mention("Ev02", "U0CAROL", DATA, &elsewhere, "hello?"));
    eventually("every ack", || acked(&rig.slack, &slash) && acked(&rig.slack, &stray)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rig.questions(&id).await.len(), 1);
    eventually("the answer to Slack's ping", || rig.slack.pongs() >= 1).await;

    // Stopped, the client closes its connection itself.
    stopped(stop, running).await;
    assert!(rig.slack.closed_by_client(0));
    eventually("the connection to close", || rig.slack.open_links() == 0).await;
    rig.slack.assert_conforms();
}

#[tokio::test]
async fn over_socket_mode_a_button_press_is_the_mapped_persons_decision() {
    let rig = rig().await;
    let config = rig.socket_config();
    let ctx = approval_context(&rig.sql);
    let first = request_approval(&ctx, "airflow", "clear_task", 1).await;
    let second = request_approval(&ctx, "airflow", "clear_task", 2).await;
    let asked = approvals_requested(&[&first, &second]);
    let (_, root) = rig.threaded_investigation("OrdersLate", &asked).await;
    let card = |approval: &str| {
        rig.slack
            .replies(DATA, &root)
            .into_iter()
            .find(|m| m.blocks.iter().any(|b| b["elements"][0]["value"] == approval))
            .unwrap_or_else(|| panic!("no card for {approval}"))
    };
    let first_card = card(&first);
    assert!(first_card.has_buttons());

    let presses = SlackInteractivity { config: config.clone(), approvals: ctx.clone(), api: rig.api() };
    let client = SocketMode::new(reqwest::Client::new(), rig.events(&config), Some(presses)).unwrap();
    let (stop, running) = socket_mode(client);
    rig.slack.wait_for_links(1).await;

    let press = rig.slack.block_actions("U0ALICE", DATA, &first_card.ts, "inquest_approve");
    let envelope = rig.slack.push_interaction(&press);
    eventually("the card to change", || rig.slack.message(DATA, &first_card.ts).unwrap().edits == 1).await;
    assert!(acked(&rig.slack, &envelope));
    assert_eq!(state_of(&ctx, &first).await, ApprovalState::Approved);
    let after = rig.slack.message(DATA, &first_card.ts).unwrap();
    assert!(!after.has_buttons(), "the buttons are gone");
    assert!(after.shown().ends_with("✅ Approved by Alice"), "{}", after.shown());
    assert_eq!(after.keys(), first_card.keys(), "the card keeps its key");
    stopped(stop, running).await;

    // A process without the registry decides nothing; the person is told so, alone.
    let client = SocketMode::new(reqwest::Client::new(), rig.events(&config), None).unwrap();
    let (stop, running) = socket_mode(client);
    rig.slack.wait_for_links(2).await;
    let second_card = card(&second);
    let envelope =
        rig.slack.push_interaction(&rig.slack.block_actions("U0BOB", DATA, &second_card.ts, "inquest_approve"));
    eventually("the person to be told", || rig.slack.ephemerals().len() == 1).await;
    assert!(acked(&rig.slack, &envelope));
    let told = &rig.slack.ephemerals()[0];
    assert!(told.user == "U0BOB" && told.text.contains("decided nothing"), "{told:?}");
    assert_eq!(state_of(&ctx, &second).await, ApprovalState::Pending);
    assert_eq!(rig.slack.message(DATA, &second_card.ts).unwrap(), second_card, "the card is unchanged");
    stopped(stop, running).await;
    rig.slack.assert_conforms();
}

#[tokio::test]
async fn a_disconnect_makes_the_client_connect_again_before_it_lets_the_old_connection_go() {
    let rig = rig().await;
    let config = rig.socket_config();
    let (id, root) = rig.threaded_investigation("OrdersLate", &[]).await;
    // The first attempt is refused (rate limited); the client tries again.
    rig.slack.ratelimit_once("apps.connections.open");
    let client = SocketMode::new(reqwest::Client::new(), rig.events(&config), None).unwrap();
    let (stop, running) = socket_mode(client);
    rig.slack.wait_for_links(1).await;
    let opened: Vec<Option<String>> = rig.slack.calls("apps.connections.open").into_iter().map(|c| c.error).collect();
    assert_eq!(opened, [Some("ratelimited".to_string()), None]);

    let first = rig.slack.push_event(&rig.slack.mention("Ev01", "U0ALICE", DATA, &root, "first?"));
    until("the first question", || async { rig.questions(&id).await.len() == 1 }).await;

    // Slack refreshes the connection: a fresh URL, a second connection, and only then
    // is the first closed, by the client, before Slack would have dropped it.
    rig.slack.disconnect("refresh_requested");
    rig.slack.wait_for_links(2).await;
    eventually("the first connection to close", || rig.slack.open_links() == 1).await;
    assert_eq!(rig.slack.open_when_made(1), 1, "the new connection was made while the old was open");
    assert!(rig.slack.closed_by_client(0), "the client closed the old connection itself");
    assert_eq!(rig.slack.calls("apps.connections.open").len(), 3);

    // And goes on over the new one.
    let second = rig.slack.push_event(&rig.slack.mention("Ev02", "U0ALICE", DATA, &root, "second?"));
    until("the second question", || async { rig.questions(&id).await.len() == 2 }).await;
    let links: Vec<(String, usize)> = rig.slack.acks().into_iter().map(|a| (a.envelope_id, a.link)).collect();
    assert_eq!(links, [(first, 0), (second, 1)]);
    stopped(stop, running).await;
    rig.slack.assert_conforms();
}
