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

// ---------------------------------------------------------------------------------
// Done means: an alert fires and three people follow it, one in the browser, one in
// Slack, one in Matrix. Each sees the same events in the same order; a question asked
// in Slack is answered in all three; an approval given with Slack's button shows in all
// three. Everything real but Slack and GitHub (their test servers): `inquest all`
// in-process, Synapse 1.163.2, headless Chromium, an MCP server the registry lists.

mod together {
    use std::time::Duration;

    use fantoccini::Locator;
    use inquest::app::{Listeners, Role, run};
    use inquest::chat::matrix::POST_KEY;
    use inquest::config::{self, Overrides};
    use inquest::store::{SqlStore, Store};
    use serde_json::json;
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use crate::support::github::GithubServer;
    use crate::support::mcp::{ECHO_PLAYBOOK, ECHO_REMEDIATION, FakeMcp};
    use crate::support::oidc::Browser;
    use crate::support::process::until;
    use crate::support::slack::{self, SlackServer};

    const CHANNEL: &str = "C0DATA";
    const ALICE: &str = "U0ALICE";

    /// The seqs of the events a medium shows, in the order it shows them.
    fn seqs(keys: impl IntoIterator<Item = String>) -> Vec<i64> {
        keys.into_iter().filter_map(|k| k.rsplit('/').next().and_then(|s| s.parse().ok())).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_people_follow_one_investigation_in_the_browser_slack_and_matrix() {
        inquest::identity::install_crypto_provider();
        let synapse = crate::support::synapse::homeserver().await;
        let room = synapse.create_room("data").await;
        let slack = SlackServer::start(&[CHANNEL]).await;
        let github = GithubServer::start("acme", &[("conf/orders.conf", "word = loud\n")]).await;
        let mcp = FakeMcp::start(&["echo"]).await;

        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", public.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let playbooks = dir.path().join("playbooks");
        std::fs::create_dir_all(&playbooks).unwrap();
        std::fs::write(playbooks.join("echo.yaml"), format!("{ECHO_PLAYBOOK}{ECHO_REMEDIATION}")).unwrap();
        let file = dir.path().join("inquest.toml");
        let toml = format!(
            r#"
[registry]
public_url = "{base}"
[agent]
playbooks = "{playbooks}"
[github]
repository = "acme/etl"
token = "dev-token"
api_url = "{github}"
reviewers = ["carol"]
[chat.slack]
api_url = "{slack_api}"
bot_token = "{bot_token}"
signing_secret = "{signing}"
channels = {{ data = "{CHANNEL}" }}
[chat.slack.users.{ALICE}]
subject = "alice"
name = "Alice"
groups = ["inquest-admins"]
[chat.matrix]
homeserver = "{homeserver}"
access_token = "{matrix_token}"
user_id = "{matrix_user}"
rooms = {{ data = "{room}" }}
"#,
            playbooks = playbooks.display(),
            github = github.url,
            slack_api = slack.api_url,
            bot_token = slack::BOT_TOKEN,
            signing = slack::SIGNING_SECRET,
            homeserver = synapse.url,
            matrix_token = synapse.bot.access_token,
            matrix_user = synapse.bot.user_id,
        );
        std::fs::write(&file, toml).unwrap();
        let overrides =
            Overrides { config_file: Some(file), data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
        let config = config::load(&overrides, Some(Default::default())).expect("the configuration is valid");
        let mesh = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(run(config, Role::All, Listeners { public, mesh: Some(mesh) }, stop.clone()));
        let http = reqwest::Client::new();
        until("the app to be ready", 20, async || {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;

        // An administrator lists the MCP server in the registry for the agent.
        let mut admin = Browser::new();
        admin.post_form(&format!("{base}/auth/dev-login"), &[("subject", "root"), ("groups", "inquest-admins")]).await;
        let cookie = format!("inquest_session={}", admin.cookie(&base, "inquest_session").expect("a session"));
        let doc = json!({"name": "com.example/fake", "description": "Echoes", "version": "1.0.0",
                         "remotes": [{"type": "streamable-http", "url": mcp.url}]});
        let policy = json!({"owner": {"team": "data", "support_channel": "#data"},
                            "access": {"allowed": ["spiffe://inquest.local/agent", "group:data"], "unlisted_tools": "allow"}});
        let as_admin = |r: reqwest::RequestBuilder| r.header("cookie", cookie.clone()).header("origin", base.clone());
        crate::support::server::list_server(&http, &base, as_admin, doc, policy).await;

        // The alert.
        let alert = json!({"version": "4", "groupKey": "{}:{alertname=\"EchoFailed\"}", "status": "firing",
            "receiver": "inquest", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [{"status": "firing", "labels": {"alertname": "EchoFailed", "word": "orders", "team": "data"},
                        "annotations": {}, "startsAt": "2026-11-27T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": "f1"}]});
        let r = http.post(format!("{base}/v1/alerts/alertmanager")).json(&alert).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let sql = SqlStore::open(&format!("sqlite://{}/inquest.db", dir.path().display()), 2).await.unwrap();
        let mut seen = String::from("no investigation");
        let mut found = None;
        for _ in 0..600 {
            let filter = inquest::store::InvestigationFilter { limit: 10, ..Default::default() };
            if let Some(inv) = sql.list_investigations(&filter).await.unwrap().first() {
                let events = sql.events(&inv.id, 0, 1000).await.unwrap();
                seen = events.iter().map(|e| format!("{} {}", e.kind, e.data)).collect::<Vec<_>>().join("\n");
                if events.iter().any(|e| e.kind == "pull_request.drafted") {
                    found = Some(inv.id.clone());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = found.unwrap_or_else(|| panic!("the investigation drafted no fix; its log:\n{seen}"));

        // The person in the browser.
        let driver = crate::browser::Driver::start().await;
        let c = driver.browser().await;
        c.goto(&format!("{base}/auth/dev-login?next=/investigations/{id}")).await.unwrap();
        c.find(Locator::Css("input[name=subject]")).await.unwrap().send_keys("carol").await.unwrap();
        c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
        c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css("#timeline")).await.unwrap();

        // Every medium shows the same events in the same order.
        let web = async || -> Vec<i64> {
            let seqs = c.execute(
                "return [...document.querySelectorAll('#timeline li[data-seq]')].map(li => Number(li.dataset.seq));",
                vec![],
            );
            serde_json::from_value(seqs.await.unwrap()).unwrap()
        };
        let in_slack = || -> Vec<i64> {
            let roots = slack.roots(CHANNEL);
            assert_eq!(roots.len(), 1, "one root message per investigation");
            seqs(slack.replies(CHANNEL, &roots[0].ts).into_iter().flat_map(|m| m.keys()))
        };
        let matrix_root = until("the Matrix thread", 30, async || {
            let messages = synapse.messages(&room).await;
            messages
                .iter()
                .find(|m| m["content"]["m.relates_to"].is_null())
                .map(|m| m["event_id"].as_str().unwrap().to_string())
        })
        .await;
        let in_matrix = async || -> Vec<i64> {
            let thread = synapse.related(&room, &matrix_root, "m.thread").await;
            seqs(thread.iter().filter_map(|e| e["content"][POST_KEY].as_str().map(str::to_string)))
        };
        let expected = async || -> Vec<i64> {
            let events = sql.events(&id, 0, 1000).await.unwrap();
            events.iter().filter_map(|e| inquest::chat::render::post(&id, e)).map(|p| p.seq).collect()
        };
        let all_agree = async |what: &str| {
            until(what, 60, async || {
                let want = expected().await;
                let (w, s, m) = (web().await, in_slack(), in_matrix().await);
                (w == want && s == want && m == want).then_some(want)
            })
            .await
        };
        let story = all_agree("the three threads to tell the whole story").await;
        assert!(story.len() >= 6, "{story:?}");

        // Alice asks in Slack; the answer reaches all three.
        let roots = slack.roots(CHANNEL);
        let envelope = slack.mention("Ev01", ALICE, CHANNEL, &roots[0].ts, "what did the echo say?");
        let r = slack::send_event(&format!("{base}/v1/chat/slack/events"), slack::SIGNING_SECRET, &envelope).await;
        assert_eq!(r.status(), 200);
        until("the answer", 60, async || {
            let events = sql.events(&id, 0, 1000).await.ok()?;
            events.iter().any(|e| e.kind == "question.answered").then_some(())
        })
        .await;
        all_agree("the question and its answer in all three").await;
        assert!(text_of_timeline(&c).await.contains("Alice asked: what did the echo say?"));

        // Alice approves the drafted pull request with Slack's button; all three see it.
        let card = slack
            .replies(CHANNEL, &roots[0].ts)
            .into_iter()
            .find(|m| m.has_buttons())
            .expect("the approval card has buttons");
        let press = slack.block_actions(ALICE, CHANNEL, &card.ts, "inquest_approve");
        let r = slack::send_interaction(&format!("{base}/v1/chat/slack/interactivity"), slack::SIGNING_SECRET, &press)
            .await;
        assert_eq!(r.status(), 200);
        until("the gate to be approved", 60, async || {
            let events = sql.events(&id, 0, 1000).await.ok()?;
            events.iter().any(|e| e.kind == "pull_request.gate" && e.data["state"] == "approved").then_some(())
        })
        .await;
        all_agree("the approval in all three").await;
        assert!(text_of_timeline(&c).await.contains("Alice approved"), "{}", text_of_timeline(&c).await);
        assert!(!github.pulls()[0].draft, "the pull request is ready for review");
        let card = slack.message(CHANNEL, &card.ts).unwrap();
        assert!(!card.has_buttons(), "the buttons are gone once decided");

        c.close().await.unwrap();
        sql.close().await;
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    async fn text_of_timeline(c: &fantoccini::Client) -> String {
        c.find(Locator::Css("#timeline")).await.unwrap().text().await.unwrap()
    }
}
