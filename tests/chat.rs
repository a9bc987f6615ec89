//! The chat relay and its ledger, on SQLite and PostgreSQL, with an in-memory medium
//! that, like Matrix, makes a send idempotent on the post's key: threads are opened
//! once, posts go in log order, a restart (or a crash between a send and its record)
//! posts nothing twice, and one relay at a time holds a thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use inquest::chat::ledger::Ledger;
use inquest::chat::relay::Relay;
use inquest::chat::{ChatError, ChatSink, Post, Thread, render};
use inquest::clock::SystemClock;
use inquest::engine::{Input, Limits, State};
use inquest::store::{SqlStore, Store, Transition};

#[derive(Default)]
struct Medium {
    threads: BTreeMap<String, String>,
    /// (thread, key, text), in the order they were posted.
    posts: Vec<(String, String, String)>,
    statuses: Vec<(String, String)>,
}

#[derive(Default)]
struct FakeSink(Mutex<Medium>);

#[async_trait]
impl ChatSink for FakeSink {
    fn name(&self) -> &str {
        "fake"
    }

    async fn open_thread(&self, thread: &Thread, status: &str) -> Result<String, ChatError> {
        let mut m = self.0.lock().unwrap();
        let id = format!("thread-{}", thread.investigation_id);
        m.threads.insert(id.clone(), status.to_string());
        Ok(id)
    }

    async fn post(&self, thread_ref: &str, _thread: &Thread, post: &Post) -> Result<String, ChatError> {
        let mut m = self.0.lock().unwrap();
        if !m.posts.iter().any(|(_, key, _)| *key == post.key) {
            m.posts.push((thread_ref.to_string(), post.key.clone(), post.text.clone()));
        }
        Ok(format!("post-{}", post.key))
    }

    async fn set_status(&self, thread_ref: &str, _thread: &Thread, status: &str) -> Result<(), ChatError> {
        self.0.lock().unwrap().statuses.push((thread_ref.to_string(), status.to_string()));
        Ok(())
    }
}

fn relay(sql: &Arc<SqlStore>, sink: &Arc<FakeSink>, worker: &str) -> Relay {
    Relay {
        sinks: vec![sink.clone() as Arc<dyn ChatSink>],
        ledger: Ledger::new(sql.clone()),
        store: sql.clone(),
        clock: Arc::new(SystemClock),
        worker: worker.into(),
        web_base: "http://127.0.0.1:7400".into(),
        poll: Duration::from_millis(50),
    }
}

async fn ask(sql: &SqlStore, id: &str, question: &str) {
    let input = Input::QuestionAsked { question: question.into(), asked_by: Some("carol".into()) };
    sql.ask(id, &input, chrono::Utc::now()).await.unwrap();
}

async fn the_log_is_posted_once_in_order(sql: Arc<SqlStore>) {
    let inv = crate::support::mcp::echo_investigation(&sql, "orders").await;
    let sink = Arc::new(FakeSink::default());
    let first = relay(&sql, &sink, "w1");
    assert_eq!(first.round(&*sink).await.unwrap(), 1);
    let log = sql.events(&inv.id, 0, 100).await.unwrap();
    let expected: Vec<String> = log.iter().filter_map(|e| render::post(&inv.id, e)).map(|p| p.text).collect();
    let posted = |sink: &FakeSink| sink.0.lock().unwrap().posts.iter().map(|p| p.2.clone()).collect::<Vec<_>>();
    assert!(!expected.is_empty());
    assert_eq!(posted(&sink), expected);
    assert_eq!(sink.0.lock().unwrap().threads.len(), 1, "one thread");
    assert_eq!(first.round(&*sink).await.unwrap(), 0, "nothing new");

    // The log grows; a restarted relay (a new one, same ledger) posts only what is new.
    ask(&sql, &inv.id, "what failed?").await;
    let restarted = relay(&sql, &sink, "w1");
    assert_eq!(restarted.round(&*sink).await.unwrap(), 1);
    let texts = posted(&sink);
    assert_eq!(texts.len(), expected.len() + 1);
    let posts_made = texts.len();
    assert_eq!(texts.last().unwrap(), "❓ carol asked: what failed?");
    assert!(sink.0.lock().unwrap().statuses.is_empty(), "still queued: the status line is the same");

    // The investigation completes: its status line is edited in place, not posted.
    let limits = Limits { max_running: 10, team_max_running: 10, team_quotas: Default::default() };
    let now = chrono::Utc::now();
    let claim = sql.claim("w", 1, &limits, Duration::from_secs(30), now).await.unwrap().pop().unwrap();
    let done =
        Transition { to: Some(State::Completed), release: true, summary: Some("it was the UDF"), ..Default::default() };
    assert!(sql.transition(&claim.lease, &done, now).await.unwrap());
    restarted.round(&*sink).await.unwrap();
    let statuses = sink.0.lock().unwrap().statuses.clone();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert!(statuses[0].1.contains("completed: it was the UDF"), "{statuses:?}");
    let ledger = Ledger::new(sql.clone());
    assert_eq!(ledger.posts("fake", &inv.id).await.unwrap().len(), posts_made + 1, "and `completed` was posted");
    assert_eq!(ledger.investigation_of("fake", &format!("thread-{}", inv.id)).await.unwrap(), Some(inv.id.clone()));
}

async fn a_crash_between_send_and_record_posts_nothing_twice(sql: Arc<SqlStore>) {
    let inv = crate::support::mcp::echo_investigation(&sql, "orders").await;
    let sink = Arc::new(FakeSink::default());
    relay(&sql, &sink, "w1").round(&*sink).await.unwrap();
    ask(&sql, &inv.id, "and now?").await;
    // The next event is sent, and the relay dies before recording it.
    let next = sql.events(&inv.id, 0, 100).await.unwrap().pop().unwrap();
    let thread = Thread::of(&sql.investigation(&inv.id).await.unwrap().unwrap(), "http://x");
    let post = render::post(&inv.id, &next).unwrap();
    sink.post(&format!("thread-{}", inv.id), &thread, &post).await.unwrap();
    let before = sink.0.lock().unwrap().posts.len();
    relay(&sql, &sink, "w2").round(&*sink).await.unwrap();
    assert_eq!(sink.0.lock().unwrap().posts.len(), before, "the send was made again with the same key");
    let keys: Vec<String> = sink.0.lock().unwrap().posts.iter().map(|p| p.1.clone()).collect();
    let mut sorted = keys.clone();
    sorted.dedup();
    assert_eq!(keys, sorted);
}

async fn one_relay_at_a_time_holds_a_thread(sql: Arc<SqlStore>) {
    let inv = crate::support::mcp::echo_investigation(&sql, "orders").await;
    let ledger = Ledger::new(sql.clone());
    let now = chrono::Utc::now().timestamp_millis();
    let lease = Duration::from_secs(60);
    assert!(ledger.claim("fake", &inv.id, "w1", now, lease).await.unwrap().is_some());
    assert!(ledger.claim("fake", &inv.id, "w2", now + 1_000, lease).await.unwrap().is_none(), "held by w1");
    assert!(ledger.claim("fake", &inv.id, "w1", now + 2_000, lease).await.unwrap().is_some(), "w1 again");
    assert!(ledger.claim("fake", &inv.id, "w2", now + 62_001, lease).await.unwrap().is_some(), "after the lease");
    ledger.release("fake", &inv.id, "w2").await.unwrap();
    assert!(ledger.claim("fake", &inv.id, "w3", now + 62_002, lease).await.unwrap().is_some(), "released");
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/store.db", dir.path().display());
                let sql = std::sync::Arc::new(inquest::store::SqlStore::open(&url, 4).await.unwrap());
                super::$name(sql.clone()).await;
                sql.close().await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $name() {
                let db = crate::support::pg::TestDb::create().await;
                let sql = std::sync::Arc::new(inquest::store::SqlStore::open(&db.url, 4).await.unwrap());
                super::$name(sql.clone()).await;
                sql.close().await;
            })*
        }
    };
}

both_backends!(
    the_log_is_posted_once_in_order,
    a_crash_between_send_and_record_posts_nothing_twice,
    one_relay_at_a_time_holds_a_thread
);
