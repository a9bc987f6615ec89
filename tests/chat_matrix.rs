//! Matrix threads against a real Synapse 1.163.2: the relay posts real investigations
//! (a temporary SQLite store) to a room, and what the room holds is read back from the
//! homeserver: the whole story in order in one thread, the status as the root's latest
//! edit, nothing twice after a restart in the middle, and a mention of the bot in the
//! thread asked of the investigation.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use inquest::chat::ChatSink;
use inquest::chat::ledger::Ledger;
use inquest::chat::matrix::{Handled, MatrixQuestions, MatrixSink, SINK_NAME, ThreadRef};
use inquest::chat::relay::Relay;
use inquest::chat::render::{self, Thread};
use inquest::clock::{Clock, SystemClock};
use inquest::engine::{EventBody, Limits, State};
use inquest::store::{Lease, SqlStore, Store, Transition};
use serde_json::{Value, json};

use crate::support::mcp::echo_investigation;
use crate::support::synapse::{self, Synapse};

const WEB: &str = "https://inquest.example";

/// A room of its own, a store of its own, the bot in the room.
struct Setup {
    hs: &'static Synapse,
    room: String,
    store: Arc<SqlStore>,
    sink: Arc<MatrixSink>,
    _dir: tempfile::TempDir,
}

async fn setup(room_name: &str) -> Setup {
    let hs = synapse::homeserver().await;
    let room = hs.create_room(room_name).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlStore::open(&format!("sqlite://{}/s.db", dir.path().display()), 2).await.unwrap());
    let sink = Arc::new(MatrixSink::new(&hs.config(&[("data", room.as_str())])).unwrap());
    sink.check().await.unwrap();
    sink.join_rooms().await.unwrap();
    Setup { hs, room, store, sink, _dir: dir }
}

/// A clock `ahead` of the wall clock: a relay started after a crashed one's claim ran out.
struct Ahead(chrono::Duration);

impl Clock for Ahead {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

impl Setup {
    fn relay(&self, worker: &str, clock: Arc<dyn Clock>) -> Relay {
        Relay {
            sinks: vec![self.sink.clone() as Arc<dyn ChatSink>],
            ledger: self.ledger(),
            store: self.store.clone(),
            clock,
            worker: worker.to_string(),
            web_base: WEB.to_string(),
            poll: Duration::from_secs(1),
        }
    }

    fn ledger(&self) -> Ledger {
        Ledger::new(self.store.clone())
    }

    /// A worker takes the investigation up (`investigation.started`).
    async fn claim(&self) -> Lease {
        let limits = Limits { max_running: 10, team_max_running: 10, team_quotas: Default::default() };
        let claims = self.store.claim("worker-1", 1, &limits, Duration::from_secs(600), Utc::now()).await.unwrap();
        claims.into_iter().next().expect("a queued investigation").lease
    }

    async fn record(&self, lease: &Lease, to: State, events: &[EventBody], summary: Option<&str>) {
        let done = matches!(to, State::Completed | State::Failed | State::Cancelled);
        let change = Transition { to: Some(to), events, release: done, summary, failure: false };
        assert!(self.store.transition(lease, &change, Utc::now()).await.unwrap());
    }

    /// What the thread should say: each event's line, in log order.
    async fn expected(&self, id: &str) -> Vec<String> {
        let events = self.store.events(id, 0, 1000).await.unwrap();
        events.iter().filter_map(|e| render::post(id, e)).map(|p| p.text).collect()
    }

    async fn thread_ref(&self, id: &str) -> ThreadRef {
        ThreadRef::parse(&self.ledger().thread_ref(SINK_NAME, id).await.unwrap().expect("a thread")).unwrap()
    }

    /// The thread as the person sees it: each message's line (its body's first
    /// paragraph), and the messages themselves.
    async fn thread(&self, root: &ThreadRef) -> (Vec<String>, Vec<Value>) {
        let messages = self.hs.related(&root.room_id, &root.root_event_id, "m.thread").await;
        let lines = messages
            .iter()
            .map(|m| m["content"]["body"].as_str().unwrap().split("\n\n").next().unwrap().to_string())
            .collect();
        (lines, messages)
    }

    /// What the root shows now (its latest edit), first line.
    async fn status_shown(&self, root: &ThreadRef) -> String {
        let event = self.hs.event(&root.room_id, &root.root_event_id).await;
        let edit = &event["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"];
        let body = edit.as_str().or(event["content"]["body"].as_str()).unwrap();
        body.lines().next().unwrap().to_string()
    }
}

fn tool_called(call: &str, word: &str) -> EventBody {
    EventBody::new(
        "tool.called",
        json!({"call_id": call, "tool": "fake__echo", "millis": 3, "outcome": "ok",
               "result": {"content": [{"type": "text", "text": format!("echo {{\"text\":\"{word}\"}}")}]}}),
    )
}

fn finding(word: &str) -> EventBody {
    EventBody::new("finding", json!({"category": "echoed", "summary": format!("the server echoed {word}")}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_tells_the_whole_story_in_order_and_the_root_shows_the_status() {
    let s = setup("whole story").await;
    let inv = echo_investigation(&s.store, "tiger").await;
    let relay = s.relay("relay-1", Arc::new(SystemClock));
    assert_eq!(relay.round(&*s.sink).await.unwrap(), 1);
    let root = s.thread_ref(&inv.id).await;
    assert_eq!(root.room_id, s.room);
    assert_eq!(s.status_shown(&root).await, "🔎 EchoFailed — queued");

    let lease = s.claim().await;
    let working = [
        EventBody::new("servers.discovered", json!({"servers": [{"name": "fake"}]})),
        tool_called("c1", "tiger"),
        // Bookkeeping: in the log, not in the thread.
        EventBody::new("lease.renewed", json!({})),
        finding("tiger"),
    ];
    s.record(&lease, State::Running, &working, None).await;
    relay.round(&*s.sink).await.unwrap();
    assert_eq!(s.status_shown(&root).await, "🔎 EchoFailed — running");

    let done = [
        EventBody::new(
            "report",
            json!({"summary": "the server echoed tiger", "markdown": "# Report\n\nIt echoed *tiger*."}),
        ),
        EventBody::new("investigation.completed", json!({"summary": "the server echoed tiger"})),
    ];
    s.record(&lease, State::Completed, &done, Some("the server echoed tiger")).await;
    relay.round(&*s.sink).await.unwrap();

    let (lines, messages) = s.thread(&root).await;
    let expected = s.expected(&inv.id).await;
    assert_eq!(lines, expected);
    assert_eq!(
        expected.iter().map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>(),
        ["🚨 Alert", "▶️ Investigation", "🧭 Servers", "✔ Called", "🔍 Finding", "📝 Report:", "✅ Completed:"]
    );
    // The ledger's record of each post is the thread's message, in order.
    let posted: Vec<String> =
        s.ledger().posts(SINK_NAME, &inv.id).await.unwrap().into_iter().map(|(_, id)| id).collect();
    let in_thread: Vec<String> = messages.iter().map(|m| m["event_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(posted, in_thread);
    // Every message is a threaded reply with the fallback, by the bot; the raw data is
    // collapsed.
    for m in &messages {
        assert_eq!(m["sender"], s.hs.bot.user_id.as_str());
        assert_eq!(
            m["content"]["m.relates_to"],
            json!({"rel_type": "m.thread", "event_id": root.root_event_id, "is_falling_back": true,
                   "m.in_reply_to": {"event_id": root.root_event_id}})
        );
    }
    let called = messages.iter().find(|m| m["content"]["body"].as_str().unwrap().starts_with("✔ Called")).unwrap();
    let html = called["content"]["formatted_body"].as_str().unwrap();
    assert!(html.contains("<details><summary>Raw data</summary><pre><code>"), "{html}");
    assert!(html.contains("echo {\\&quot;text\\&quot;:\\&quot;tiger\\&quot;}"), "{html}");

    // The status: the root's latest edit, one edit per change.
    assert_eq!(s.status_shown(&root).await, "✅ EchoFailed — completed: the server echoed tiger");
    let edits = s.hs.related(&root.room_id, &root.root_event_id, "m.replace").await;
    let shown: Vec<&str> =
        edits.iter().map(|e| e["content"]["m.new_content"]["body"].as_str().unwrap().lines().next().unwrap()).collect();
    assert_eq!(shown, ["🔎 EchoFailed — running", "✅ EchoFailed — completed: the server echoed tiger"]);
    assert!(edits.iter().all(|e| e["content"]["body"].as_str().unwrap().starts_with("* ")));

    // Showing the same status again edits nothing; a status shown before and then
    // changed is shown again (a new edit, not the old one's txnId).
    let thread = Thread::of(&s.store.investigation(&inv.id).await.unwrap().unwrap(), WEB);
    let r = root.to_string();
    s.sink.set_status(&r, &thread, "✅ EchoFailed — completed: the server echoed tiger").await.unwrap();
    assert_eq!(s.hs.related(&root.room_id, &root.root_event_id, "m.replace").await.len(), 2);
    s.sink.set_status(&r, &thread, "🔎 EchoFailed — running").await.unwrap();
    s.sink.set_status(&r, &thread, "✅ EchoFailed — completed: the server echoed tiger").await.unwrap();
    assert_eq!(s.hs.related(&root.room_id, &root.root_event_id, "m.replace").await.len(), 4);
    assert_eq!(s.status_shown(&root).await, "✅ EchoFailed — completed: the server echoed tiger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_posts_nothing_twice() {
    let s = setup("restart").await;
    let inv = echo_investigation(&s.store, "lynx").await;
    let ledger = s.ledger();
    let thread = Thread::of(&inv, WEB);

    // The first relay opens the thread and dies before recording it.
    let lost = s.sink.open_thread(&thread, &render::status_line(&inv)).await.unwrap();
    let relay = s.relay("relay-1", Arc::new(SystemClock));
    relay.round(&*s.sink).await.unwrap();
    assert_eq!(ledger.thread_ref(SINK_NAME, &inv.id).await.unwrap().as_deref(), Some(lost.as_str()), "the same root");
    let root = s.thread_ref(&inv.id).await;

    let lease = s.claim().await;
    s.record(&lease, State::Running, &[tool_called("c1", "lynx")], None).await;
    relay.round(&*s.sink).await.unwrap();

    // More happens; the relay claims the thread, posts two events and dies before
    // recording either (its claim is left to run out).
    let approval = EventBody::new(
        "approval.requested",
        json!({"approval_id": "ap1", "url": "https://registry.example/approvals/ap1",
               "tool": "fake__clear_task", "call_id": "c2"}),
    );
    s.record(&lease, State::AwaitingApproval, &[finding("lynx"), approval], None).await;
    let row = ledger.claim(SINK_NAME, &inv.id, "relay-1", Utc::now().timestamp_millis(), Duration::from_secs(60));
    let row = row.await.unwrap().unwrap();
    let unposted = s.store.events(&inv.id, row.posted_seq, 100).await.unwrap();
    assert_eq!(unposted.len(), 2);
    for event in &unposted {
        let post = render::post(&inv.id, event).unwrap();
        s.sink.post(&root.to_string(), &thread, &post).await.unwrap();
    }

    // A new process: a new sink with the same token, a new relay, after the claim ran
    // out. Then the investigation goes on, and the relay follows it.
    let sink = Arc::new(MatrixSink::new(&s.hs.config(&[("data", s.room.as_str())])).unwrap());
    let later: Arc<dyn Clock> = Arc::new(Ahead(chrono::Duration::minutes(2)));
    let relay = Relay { sinks: vec![sink.clone() as Arc<dyn ChatSink>], ..s.relay("relay-2", later) };
    relay.round(&*sink).await.unwrap();
    let settled = EventBody::new("approval.settled", json!({"approval_id": "ap1", "outcome": "approved"}));
    s.record(&lease, State::Running, &[settled, tool_called("c2", "lynx")], None).await;
    relay.round(&*sink).await.unwrap();
    let done = [EventBody::new("investigation.completed", json!({"summary": "the server echoed lynx"}))];
    s.record(&lease, State::Completed, &done, Some("the server echoed lynx")).await;
    relay.round(&*sink).await.unwrap();

    let (lines, messages) = s.thread(&root).await;
    assert_eq!(lines, s.expected(&inv.id).await);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    // Nothing outside the thread either: the room holds the root and the thread.
    let in_room = s.hs.messages(&s.room).await;
    let roots: Vec<&Value> = in_room.iter().filter(|m| m["content"].get("m.relates_to").is_none()).collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(roots[0]["event_id"], root.root_event_id.as_str());
    let approval = messages.iter().find(|m| m["content"]["body"].as_str().unwrap().starts_with("✋")).unwrap();
    assert!(
        approval["content"]["formatted_body"]
            .as_str()
            .unwrap()
            .contains("<a href=\"https://registry.example/approvals/ap1\"><strong>Approve or decline</strong></a>")
    );
    assert_eq!(s.status_shown(&root).await, "✅ EchoFailed — completed: the server echoed lynx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_in_the_thread_is_a_follow_up_question() {
    let s = setup("questions").await;
    let inv = echo_investigation(&s.store, "otter").await;
    let relay = s.relay("relay-1", Arc::new(SystemClock));
    relay.round(&*s.sink).await.unwrap();
    let root = s.thread_ref(&inv.id).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let questions = || {
        MatrixQuestions::new(s.sink.clone(), s.ledger(), s.store.clone(), clock.clone())
            .wait(Duration::from_millis(500))
    };
    let mut asker = questions();
    assert!(asker.step().await.unwrap().is_empty(), "the first start reads from now on");
    let before = s.sink.saved_cursor().await.unwrap().expect("the read position is saved");

    let bot = s.hs.bot.user_id.clone();
    let in_thread = json!({"rel_type": "m.thread", "event_id": root.root_event_id, "is_falling_back": true,
                           "m.in_reply_to": {"event_id": root.root_event_id}});
    // Outside the thread, and in the thread without a mention: not questions.
    s.hs.person_sends(
        &s.room,
        json!({"msgtype": "m.text", "body": "inquest: hello?", "m.mentions": {"user_ids": [bot]}}),
    )
    .await;
    s.hs.person_sends(&s.room, json!({"msgtype": "m.text", "body": "looking too", "m.relates_to": in_thread.clone()}))
        .await;
    let asked =
        s.hs.person_sends(
            &s.room,
            json!({"msgtype": "m.text", "body": "inquest: why did the echo fail?",
                   "m.mentions": {"user_ids": [bot]}, "m.relates_to": in_thread.clone()}),
        )
        .await;
    let handled = step_until_some(&mut asker).await;
    let seq = match &handled[..] {
        [(mention, Handled::Asked { investigation_id, seq })] => {
            assert_eq!((mention.event_id.as_str(), investigation_id.as_str()), (asked.as_str(), inv.id.as_str()));
            *seq
        }
        other => panic!("{other:#?}"),
    };
    let question = json!({"question": "why did the echo fail?", "asked_by": "@alice:localhost"});
    assert_eq!(questions_in(&s, &inv.id).await, [(seq, question.clone())]);

    // A restart that lost the saved position reads the mention again; it is not asked
    // twice.
    s.sink.save_cursor(&before).await.unwrap();
    let mut restarted = questions();
    let again = step_until_some(&mut restarted).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, Handled::AlreadyAsked { investigation_id: inv.id.clone() });
    assert_eq!(questions_in(&s, &inv.id).await, [(seq, question)]);

    // The thread shows the question.
    relay.round(&*s.sink).await.unwrap();
    let (lines, _) = s.thread(&root).await;
    assert!(lines.contains(&"❓ @alice:localhost asked: why did the echo fail?".to_string()), "{lines:#?}");
    assert!(restarted.step().await.unwrap().is_empty(), "the bot's own posts are no questions");

    // While the investigation works, a question is refused, and the person told so in
    // a reply to their message.
    s.claim().await;
    let busy =
        s.hs.person_sends(
            &s.room,
            json!({"msgtype": "m.text", "body": "@inquest:localhost and now?",
                   "m.mentions": {"user_ids": [bot]}, "m.relates_to": in_thread.clone()}),
        )
        .await;
    let handled = step_until_some(&mut restarted).await;
    assert_eq!(handled[0].1, Handled::Refused { investigation_id: inv.id.clone(), state: State::Running });
    assert_eq!(handled[0].0.question, "and now?");
    let (_, messages) = s.thread(&root).await;
    let reply = messages.iter().find(|m| m["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == busy.as_str());
    let reply = reply.expect("a reply to the refused question");
    assert_eq!(reply["sender"], bot.as_str());
    assert_eq!(
        reply["content"]["body"],
        "I am still on this investigation (running); ask me again once it has finished."
    );
}

/// Steps until a sync brings mentions (the homeserver may answer a sync before the
/// message is visible to it).
async fn step_until_some(questions: &mut MatrixQuestions) -> Vec<(inquest::chat::matrix::Mention, Handled)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let handled = questions.step().await.unwrap();
        if !handled.is_empty() {
            return handled;
        }
        assert!(tokio::time::Instant::now() < deadline, "no mention came");
    }
}

async fn questions_in(s: &Setup, id: &str) -> Vec<(i64, Value)> {
    let events = s.store.events(id, 0, 1000).await.unwrap();
    events.into_iter().filter(|e| e.kind == "question.asked").map(|e| (e.seq, e.data)).collect()
}
