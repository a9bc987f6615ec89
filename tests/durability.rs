//! Durability of the real binary on its embedded SQLite store:
//! - every `202` survives a `kill -9` that follows it at once, and a redelivery after
//!   the restart stores nothing new;
//! - SIGTERM hands running investigations back to the queue within the grace period,
//!   and a restart finishes them;
//! - SIGTERM under intake load keeps every delivery it answered;
//! - SIGTERM exits despite a stalled request.

// Helpers outside `#[test]` functions are test code too: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tokio::task::JoinSet;

use crate::support::process::{Accepted, Api, InquestBuilder, Investigation, Scratch, alertmanager_payload, wait_for};

/// What a POST got back: status and JSON body, or why there was no answer.
type Answer = Result<(u16, Value), String>;

async fn open_sqlite(data_dir: &Path) -> SqlitePool {
    let path = data_dir.join("inquest.db");
    assert!(path.exists(), "no database at {}", path.display());
    let options = SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::from_secs(10));
    SqlitePool::connect_with(options).await.unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

async fn count(pool: &SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Posts every payload at once; answers in payload order.
async fn post_all(api: &Api, payloads: &[Value]) -> Vec<Answer> {
    let mut tasks = JoinSet::new();
    for (i, payload) in payloads.iter().enumerate() {
        let api = api.clone();
        let payload = payload.clone();
        tasks.spawn(async move { (i, api.try_post_alertmanager(&payload).await) });
    }
    let mut answers: Vec<Option<Answer>> = vec![None; payloads.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, answer) = joined.expect("a posting task panicked");
        answers[i] = Some(answer);
    }
    answers.into_iter().map(|a| a.expect("every payload was answered")).collect()
}

fn accepted(i: usize, answer: &Answer) -> Accepted {
    match answer {
        Ok((202, body)) => {
            serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("delivery {i}: 202 body ({e}): {body}"))
        }
        Ok((status, body)) => panic!("delivery {i}: expected 202, got {status} {body}"),
        Err(e) => panic!("delivery {i}: {e}"),
    }
}

/// 200 distinct alerts in 50 concurrent deliveries over 10 group keys; `kill -9` as soon
/// as the last 202 is in. After a restart, everything answered is there, and sending
/// it all again stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_answered_alerts_survive_kill9_and_redelivery_stores_nothing() {
    const KEYS: usize = 10;
    const DELIVERIES: usize = 50;
    const PER_DELIVERY: usize = 4;
    const ALERTS: usize = DELIVERIES * PER_DELIVERY;

    let dir = Scratch::new();
    let builder = InquestBuilder::new("durable", dir.path())
        .engine("simulated_work", "300ms")
        .engine("lease_ttl", "2s")
        .engine("poll_interval", "100ms");
    let mut inquest = builder.start().await;

    let group_key = |k: usize| format!("{{}}:{{alertname=\"Durable{k}\"}}");
    let keys: Vec<usize> = (0..DELIVERIES).map(|d| d % KEYS).collect();
    let payloads: Vec<Value> = (0..DELIVERIES)
        .map(|d| {
            let fps: Vec<String> = (0..PER_DELIVERY).map(|i| format!("fp-{d:03}-{i}")).collect();
            alertmanager_payload(&group_key(keys[d]), &format!("team-{}", keys[d] % 3), &fps)
        })
        .collect();

    let answers = post_all(&inquest.api(), &payloads).await;
    inquest.kill9();

    let first: Vec<Accepted> = answers.iter().enumerate().map(|(i, a)| accepted(i, a)).collect();
    let mut alert_episode: HashMap<String, String> = HashMap::new();
    let mut episode_of_key: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (d, a) in first.iter().enumerate() {
        assert_eq!((a.alert_ids.len(), a.duplicates, a.episode_ids.len()), (PER_DELIVERY, 0, 1), "delivery {d}: {a:?}");
        for id in &a.alert_ids {
            let before = alert_episode.insert(id.clone(), a.episode_ids[0].clone());
            assert!(before.is_none(), "alert id {id} was answered twice");
        }
        episode_of_key.entry(keys[d]).or_default().insert(a.episode_ids[0].clone());
    }
    assert_eq!(alert_episode.len(), ALERTS);
    for (k, eps) in &episode_of_key {
        assert_eq!(eps.len(), 1, "group key {k} was answered with several episodes: {eps:?}");
    }
    let episodes: BTreeSet<String> = episode_of_key.values().flatten().cloned().collect();
    assert_eq!(episodes.len(), KEYS);

    // What the killed process left behind, for the record (its runner may or may not have
    // claimed work yet).
    let left = open_sqlite(dir.path()).await;
    let interrupted = count(&left, "SELECT COUNT(*) FROM investigations WHERE state = 'running'").await;
    left.close().await;
    eprintln!("{interrupted} investigations were running when the process was killed");

    // Restart on the same data directory.
    inquest.restart().await;
    let db = open_sqlite(dir.path()).await;

    let stored: HashMap<String, String> = sqlx::query("SELECT id, episode_id FROM alerts")
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect();
    let missing: Vec<&String> = alert_episode.keys().filter(|id| !stored.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} answered alerts are gone after kill -9, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (id, episode) in &alert_episode {
        assert_eq!(&stored[id], episode, "alert {id} is stored under another episode than answered");
    }
    assert_eq!(stored.len(), ALERTS, "alerts stored that were never answered");
    let stored_episodes: BTreeSet<String> =
        sqlx::query_scalar("SELECT id FROM episodes").fetch_all(&db).await.unwrap().into_iter().collect();
    assert_eq!(stored_episodes, episodes, "the stored episodes are not the answered ones");

    let investigations = inquest.api().investigations(None).await;
    assert_eq!(investigations.len(), KEYS, "one investigation per episode: {investigations:#?}");
    let inv_episodes: BTreeSet<String> = investigations.iter().map(|i| i.episode_id.clone()).collect();
    assert_eq!(inv_episodes, episodes);
    for inv in &investigations {
        assert_eq!(inv.alert_count, (ALERTS / KEYS) as i64, "alert count of {inv:?}");
    }

    // Redeliver everything: the same ids come back and nothing new is stored.
    let counts_sql: [&'static str; 5] = [
        "SELECT COUNT(*) FROM alerts",
        "SELECT COUNT(*) FROM deliveries",
        "SELECT COUNT(*) FROM episodes",
        "SELECT COUNT(*) FROM investigations",
        "SELECT COUNT(*) FROM investigation_events WHERE kind IN ('alert.received', 'alerts.attached')",
    ];
    let mut before = Vec::new();
    for sql in counts_sql {
        before.push(count(&db, sql).await);
    }
    assert_eq!(&before[..4], &[ALERTS as i64, DELIVERIES as i64, KEYS as i64, KEYS as i64]);

    let again = post_all(&inquest.api(), &payloads).await;
    for (d, answer) in again.iter().enumerate() {
        let a = accepted(d, answer);
        let expected = Accepted { duplicates: PER_DELIVERY, ..first[d].clone() };
        assert_eq!(a, expected, "redelivery {d} answered differently from the first delivery");
    }
    for (sql, n) in counts_sql.iter().zip(&before) {
        assert_eq!(count(&db, sql).await, *n, "the redelivery changed `{sql}`");
    }

    // Investigations interrupted by the kill are taken up again and finish, once each.
    let api = inquest.api();
    let done: Vec<Investigation> =
        wait_for("every investigation to complete after the restart", Duration::from_secs(30), || {
            let api = api.clone();
            async move {
                let all = api.try_investigations(None).await?;
                if all.iter().all(|i| i.state == "completed") {
                    Ok(all)
                } else {
                    Err(format!("{:#?}", all.iter().map(|i| (&i.id, &i.state, &i.worker)).collect::<Vec<_>>()))
                }
            }
        })
        .await;
    for inv in &done {
        let inv = api.investigation(&inv.id).await;
        assert_eq!(inv.events_of("investigation.completed").len(), 1, "{}", inv.log());
        // A lease of the killed process is taken over only once it has expired.
        let claims: Vec<_> = inv
            .events
            .iter()
            .filter(|e| e.kind.starts_with("investigation.res") || e.kind == "investigation.started")
            .collect();
        for pair in claims.windows(2) {
            if pair[1].kind == "investigation.resumed" {
                assert!(
                    pair[1].at_ms() >= pair[0].at_ms() + 2000 - 100,
                    "taken over before the lease expired:\n{}",
                    inv.log()
                );
            }
        }
    }
    db.close().await;
}

/// SIGTERM while investigations run: the process exits within a bounded time, the
/// investigations are queued again with an `investigation.suspended` event and no
/// lease, and a restart finishes them well before their old lease could have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_suspends_running_investigations_and_a_restart_finishes_them() {
    const EPISODES: usize = 3;
    const GRACE: Duration = Duration::from_secs(1);
    // Shutdown should take about the grace period; this bound leaves room for a slow
    // machine and for the HTTP drain, which runs before the runner's.
    const EXIT_BOUND: Duration = Duration::from_secs(5);

    let dir = Scratch::new();
    // A lease far longer than the test: a restart that finishes the work quickly shows
    // the lease was released at shutdown, not waited out.
    let builder = InquestBuilder::new("graceful", dir.path())
        .engine("simulated_work", "30s")
        .engine("grace_period", "1s")
        .engine("lease_ttl", "60s")
        .engine("poll_interval", "100ms");
    let mut inquest = builder.start().await;
    let api = inquest.api();
    for e in 0..EPISODES {
        let fps = vec![format!("g-{e}-a"), format!("g-{e}-b")];
        api.post_alertmanager(&alertmanager_payload(&format!("{{}}:{{alertname=\"Graceful{e}\"}}"), "data-eng", &fps))
            .await;
    }

    let running: Vec<Investigation> =
        wait_for("every investigation to be running here", Duration::from_secs(15), || {
            let api = api.clone();
            async move {
                let all = api.try_investigations(None).await?;
                let mut full = Vec::new();
                for inv in &all {
                    full.push(api.try_investigation(&inv.id).await?);
                }
                let ok = full.len() == EPISODES
                    && full.iter().all(|i| {
                        i.state == "running"
                            && i.worker.as_deref() == Some("graceful")
                            && i.events_of("investigation.started").len() == 1
                    });
                if ok { Ok(full) } else { Err(full.iter().map(Investigation::log).collect::<Vec<_>>().join("\n")) }
            }
        })
        .await;

    let (status, took) = inquest.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit after SIGTERM: {status}; log:\n{}", inquest.log_tail(40));
    assert!(took < EXIT_BOUND, "SIGTERM to exit took {took:?} (grace period {GRACE:?}, bound {EXIT_BOUND:?})");
    eprintln!("SIGTERM to exit: {took:?}");

    let db = open_sqlite(dir.path()).await;
    for inv in &running {
        let row =
            sqlx::query("SELECT state, lease_owner, lease_expires_at, attempts FROM investigations WHERE id = $1")
                .bind(&inv.id)
                .fetch_one(&db)
                .await
                .unwrap();
        let state: String = row.get(0);
        let owner: Option<String> = row.get(1);
        let expires: Option<i64> = row.get(2);
        let attempts: i64 = row.get(3);
        assert_eq!(
            (state.as_str(), owner, expires, attempts),
            ("queued", None, None, 1),
            "investigation {} after SIGTERM",
            inv.id
        );
        let kinds: Vec<String> =
            sqlx::query_scalar("SELECT kind FROM investigation_events WHERE investigation_id = $1 ORDER BY seq")
                .bind(&inv.id)
                .fetch_all(&db)
                .await
                .unwrap();
        assert_eq!(
            kinds,
            ["alert.received", "investigation.started", "investigation.suspended"],
            "events of {}",
            inv.id
        );
    }
    db.close().await;

    inquest.restart_with(builder.clone().engine("simulated_work", "300ms")).await;
    let api = inquest.api();
    let done: Vec<Investigation> =
        wait_for("the suspended investigations to complete after the restart", Duration::from_secs(20), || {
            let api = api.clone();
            async move {
                let all = api.try_investigations(None).await?;
                if all.len() == EPISODES && all.iter().all(|i| i.state == "completed") {
                    Ok(all)
                } else {
                    Err(format!("{:#?}", all.iter().map(|i| (&i.id, &i.state, &i.worker)).collect::<Vec<_>>()))
                }
            }
        })
        .await;
    for inv in &done {
        let inv = api.investigation(&inv.id).await;
        let kinds: Vec<&str> = inv.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "alert.received",
                "investigation.started",
                "investigation.suspended",
                "investigation.started",
                "context.recorded",
                "investigation.completed"
            ],
            "{}",
            inv.log()
        );
        let starts = inv.events_of("investigation.started");
        for (attempt, start) in (1..).zip(&starts) {
            assert_eq!(start.data["attempt"], attempt, "{}", inv.log());
            assert_eq!(start.data["worker"], "graceful", "{}", inv.log());
            assert!(start.data["previous_worker"].is_null(), "{}", inv.log());
        }
        assert_eq!(inv.attempts, 2, "{}", inv.log());
    }
}

/// SIGTERM while deliveries keep arriving: every delivery answered 202 before the
/// process went away is stored, and the process exits within a bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_intake_keeps_every_answered_alert() {
    const SENDERS: usize = 8;
    let dir = Scratch::new();
    let builder = InquestBuilder::new("draining", dir.path()).engine("grace_period", "1s");
    let mut inquest = builder.start().await;

    let api = inquest.api();
    let mut senders = JoinSet::new();
    for s in 0..SENDERS {
        let api = api.clone();
        senders.spawn(async move {
            let mut sent: Vec<(Value, Answer)> = Vec::new();
            for n in 0.. {
                let fps = vec![format!("drain-{s}-{n}-a"), format!("drain-{s}-{n}-b")];
                let payload = alertmanager_payload(&format!("{{}}:{{alertname=\"Drain{}\"}}", n % 5), "data-eng", &fps);
                let answer = api.try_post_alertmanager(&payload).await;
                let stop = !matches!(answer, Ok((202, _)));
                sent.push((payload, answer));
                if stop {
                    break;
                }
            }
            sent
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = inquest.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM to exit took {took:?} under intake load");

    let mut answered: Vec<(Value, Accepted)> = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(joined) = senders.join_next().await {
        for (payload, answer) in joined.expect("a sender panicked") {
            match answer {
                Ok((202, body)) => answered.push((payload, serde_json::from_value(body).unwrap())),
                Ok((status, body)) => *refused.entry(format!("{status} {}", body["error"])).or_default() += 1,
                Err(_) => *refused.entry("connection error".to_string()).or_default() += 1,
            }
        }
    }
    eprintln!("{} deliveries answered 202 before the exit; refused or cut off: {refused:?}", answered.len());
    assert!(answered.len() >= SENDERS, "too little got through to test anything: {}", answered.len());

    inquest.restart().await;
    let db = open_sqlite(dir.path()).await;
    let stored: BTreeSet<String> =
        sqlx::query_scalar("SELECT id FROM alerts").fetch_all(&db).await.unwrap().into_iter().collect();
    let lost: Vec<&String> =
        answered.iter().flat_map(|(_, a)| &a.alert_ids).filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} alerts answered 202 are gone after the shutdown, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let api = inquest.api();
    for (payload, first) in answered.iter().take(20) {
        let again = api.post_alertmanager(payload).await;
        assert_eq!(
            again,
            Accepted { duplicates: first.alert_ids.len(), ..first.clone() },
            "redelivery after the restart"
        );
    }
    db.close().await;
}

/// SIGTERM while a client holds a request open (its body never finishes): the process
/// still exits soon after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_despite_a_stalled_request() {
    use tokio::io::AsyncWriteExt;
    let dir = Scratch::new();
    let mut inquest = InquestBuilder::new("stalled", dir.path()).engine("grace_period", "1s").start().await;
    let addr = inquest.api().base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Headers promise 1000 bytes of body; a few arrive, the rest never does.
    conn.write_all(
        b"POST /v1/alerts/alertmanager HTTP/1.1\r\nHost: inquest\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"receiver\":",
    )
    .await
    .unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = inquest.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM to exit took {took:?} with a stalled request open");
    drop(conn);
}
