//! Two `inquest agent` processes on one PostgreSQL database:
//! - they share intake and work: concurrent deliveries for one episode through both
//!   make one episode, every investigation runs once and completes once;
//! - when one is killed with `kill -9` while it holds leases, the survivor takes its
//!   investigations over, but only after their leases could have expired;
//! - when one is frozen (SIGSTOP) while it holds leases and wakes up after losing them,
//!   its late results are fenced off.
//!
//! Both read the event logs: per investigation, claims (`investigation.started` /
//! `investigation.resumed`) carry increasing attempts; a claim that follows another
//! without a release in between is a takeover, which must name the previous worker
//! and come at least one lease TTL after the claim it replaces; the work's own events
//! (`context.recorded`, `investigation.completed`) come once, after the last claim,
//! and no sooner after it than the work takes (events do not name their writer, so
//! time tells a stale holder's write from the current one's).

// Helpers outside `#[test]` functions are test code too: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use sqlx::{PgPool, Row};
use tokio::task::JoinSet;

use crate::support::pg::TestDb;
use crate::support::process::{
    Api, Inquest, InquestBuilder, Investigation, Scratch, accepted_by_episode, alertmanager_payload, now_ms, wait_for,
};

/// Lease TTL given to both processes.
const TTL: Duration = Duration::from_secs(3);
/// Clock and scheduling slack allowed in time comparisons between events.
const TOLERANCE_MS: i64 = 250;

const A: &str = "replica-a";
const B: &str = "replica-b";

/// Starts both replicas at once (they migrate the fresh database concurrently).
async fn start_pair(db: &TestDb, dir: &std::path::Path, work: &str, slots: usize) -> (Inquest, Inquest) {
    let builder = |name: &str| {
        InquestBuilder::new(name, &dir.join(name))
            .role("agent")
            .store_url(&db.url)
            .engine("simulated_work", work)
            .engine("lease_ttl", format!("{}s", TTL.as_secs()))
            .engine("poll_interval", "100ms")
            .engine("slots", slots.to_string())
    };
    let (a, b) = (builder(A), builder(B));
    tokio::join!(a.start(), b.start())
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Waits until every investigation is in a final state and returns them all in full.
async fn wait_all_completed(api: &Api, expected: usize, timeout: Duration) -> Vec<Investigation> {
    wait_for("every investigation to complete", timeout, || {
        let api = api.clone();
        async move {
            let all = api.try_investigations(None).await?;
            let states: BTreeMap<&str, usize> = all.iter().fold(BTreeMap::new(), |mut m, i| {
                *m.entry(i.state.as_str()).or_default() += 1;
                m
            });
            if all.len() == expected && all.iter().all(|i| i.state == "completed") {
                Ok(())
            } else {
                let mut out = format!("{} investigations, by state {states:?}; some not completed:", all.len());
                for inv in all.iter().filter(|i| i.state != "completed").take(3) {
                    let full = api.try_investigation(&inv.id).await?;
                    out.push('\n');
                    out.push_str(&full.log());
                }
                Err(out)
            }
        }
    })
    .await;
    api.investigations_in_full().await
}

/// Waits until `worker` holds at least `n` running investigations it claimed at
/// least 300 ms ago (so it is in the middle of their work).
async fn wait_holding(pool: &PgPool, worker: &'static str, n: usize) {
    wait_for(&format!("{worker} to hold {n} running investigations"), Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let rows = sqlx::query("SELECT id, lease_owner, started_at FROM investigations WHERE state = 'running'")
                .fetch_all(&pool)
                .await
                .map_err(|e| e.to_string())?;
            let mine = rows
                .iter()
                .filter(|r| r.get::<Option<String>, _>(1).as_deref() == Some(worker))
                .filter(|r| r.get::<Option<i64>, _>(2).is_some_and(|t| t <= now_ms() - 300))
                .count();
            if mine >= n {
                Ok(())
            } else {
                Err(format!("{mine} of {} running held by {worker} for 300 ms", rows.len()))
            }
        }
    })
    .await;
}

/// The running investigations `worker` holds, with their attempt counts.
async fn held_by(pool: &PgPool, worker: &str) -> BTreeMap<String, i64> {
    sqlx::query("SELECT id, attempts FROM investigations WHERE state = 'running' AND lease_owner = $1")
        .bind(worker)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect()
}

/// One claim of an investigation and how long its holder held it, from the event log.
#[derive(Debug, Clone)]
struct Hold {
    worker: String,
    attempt: i64,
    kind: String,
    previous_worker: Option<String>,
    from_ms: i64,
    /// The next claim's time, or the completion's for the last holder.
    until_ms: i64,
}

/// Checks the event log of a completed investigation for leases held by two workers at
/// once; returns its holds in order.
fn lease_history(inv: &Investigation, ttl_ms: i64, work_ms: i64) -> Result<Vec<Hold>, String> {
    let fail = |why: String| Err(format!("{why}\n{}", inv.log()));
    if inv.state != "completed" {
        return fail(format!("state is {}", inv.state));
    }
    let completed = inv.events_of("investigation.completed");
    if completed.len() != 1 {
        return fail(format!("{} investigation.completed events", completed.len()));
    }
    let claims: Vec<_> =
        inv.events.iter().filter(|e| e.kind == "investigation.started" || e.kind == "investigation.resumed").collect();
    let Some(last) = claims.last() else { return fail("no claim".into()) };
    let attempt = |e: &crate::support::process::Event| e.data["attempt"].as_i64().unwrap_or(-1);
    let worker = |e: &crate::support::process::Event| e.data["worker"].as_str().unwrap_or("").to_string();
    let previous = |e: &crate::support::process::Event| e.data["previous_worker"].as_str().map(str::to_string);

    if attempt(last) != inv.attempts {
        return fail(format!(
            "the last claim has attempt {}, the investigation {} attempts",
            attempt(last),
            inv.attempts
        ));
    }
    for c in &claims {
        let is_resume = c.kind == "investigation.resumed";
        if is_resume != previous(c).is_some() {
            return fail(format!("claim #{} is {} with previous_worker {:?}", c.seq, c.kind, previous(c)));
        }
    }
    // The first claim is attempt 1 from the queue; only a holder that died between its
    // claim and recording it leaves a gap, and then the next claim is a takeover.
    let first_ok = match attempt(claims[0]) {
        1 => claims[0].kind == "investigation.started",
        n => n > 1 && claims[0].kind == "investigation.resumed",
    };
    if !first_ok {
        return fail(format!("the first claim is {} with attempt {}", claims[0].kind, attempt(claims[0])));
    }
    for pair in claims.windows(2) {
        let (p, c) = (pair[0], pair[1]);
        if attempt(c) <= attempt(p) {
            return fail(format!("attempt {} after attempt {}", attempt(c), attempt(p)));
        }
        let released = inv.events.iter().any(|e| {
            e.seq > p.seq
                && e.seq < c.seq
                && (e.kind == "investigation.suspended" || e.kind == "investigation.retrying")
        });
        if released {
            continue;
        }
        // A takeover: the previous holder never gave the lease back.
        if c.kind != "investigation.resumed" || previous(c).as_deref() != Some(worker(p).as_str()) {
            return fail(format!(
                "claim #{} follows #{} without a release, yet is no takeover from {}",
                c.seq,
                p.seq,
                worker(p)
            ));
        }
        if c.at_ms() < p.at_ms() + ttl_ms - TOLERANCE_MS {
            return fail(format!(
                "claim #{} took over {} ms after claim #{}, before the lease (TTL {ttl_ms} ms) could have expired",
                c.seq,
                c.at_ms() - p.at_ms(),
                p.seq
            ));
        }
    }
    // The work's own events belong to the last holder only: a fenced-off holder wrote none.
    let context = inv.events_of("context.recorded");
    if context.len() != 1 {
        return fail(format!("{} context.recorded events", context.len()));
    }
    if context[0].seq < last.seq || completed[0].seq < last.seq {
        return fail("work was recorded before the last claim".into());
    }
    // Events do not say who wrote them, but time does: the last holder needs the whole
    // work time; a completion sooner came from a holder whose lease was gone.
    if completed[0].at_ms() < last.at_ms() + work_ms - TOLERANCE_MS {
        return fail(format!(
            "completed {} ms after the last claim, sooner than the work ({work_ms} ms) takes: written by an earlier holder",
            completed[0].at_ms() - last.at_ms()
        ));
    }
    let mut holds = Vec::new();
    for (i, c) in claims.iter().enumerate() {
        let until_ms = claims.get(i + 1).map_or(completed[0].at_ms(), |n| n.at_ms());
        holds.push(Hold {
            worker: worker(c),
            attempt: attempt(c),
            kind: c.kind.clone(),
            previous_worker: previous(c),
            from_ms: c.at_ms(),
            until_ms,
        });
    }
    Ok(holds)
}

/// The most holds of one worker that overlap in time.
fn max_concurrent(holds: &[&Hold]) -> usize {
    let mut edges: Vec<(i64, i32)> = holds.iter().flat_map(|h| [(h.from_ms, 1), (h.until_ms, -1)]).collect();
    // At equal times, an end comes before a start: the slot is free again.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// 200 alerts over 40 episodes, sent through both processes at once (the first
/// delivery of each episode to both): one episode and one investigation per group key,
/// every investigation run once, by one worker, and completed once; both workers busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_intake_and_work_without_duplicates() {
    const EPISODES: usize = 40;
    const PER_EPISODE: usize = 5;
    const SLOTS: usize = 4;
    const WORK_MS: i64 = 1500;

    let db = TestDb::create().await;
    let dir = Scratch::new();
    let (a, b) = start_pair(&db, dir.path(), &format!("{WORK_MS}ms"), SLOTS).await;
    let pool = PgPool::connect(&db.url).await.unwrap();

    // Per episode: D0 (two alerts) to both at the same moment, then D1 to A, D2 to B,
    // D3 to either; all five requests of all episodes in flight together.
    let mut tasks = JoinSet::new();
    for e in 0..EPISODES {
        let (api_a, api_b) = (a.api(), b.api());
        tasks.spawn(async move {
            let gk = format!("{{}}:{{alertname=\"Replica{e}\"}}");
            let team = format!("team-{}", e % 4);
            let fp = |i: usize| format!("r-{e:02}-{i}");
            let d0 = alertmanager_payload(&gk, &team, &[fp(0), fp(1)]);
            let d1 = alertmanager_payload(&gk, &team, &[fp(2)]);
            let d2 = alertmanager_payload(&gk, &team, &[fp(3)]);
            let d3 = alertmanager_payload(&gk, &team, &[fp(4)]);
            let last = if e % 2 == 0 { &api_a } else { &api_b };
            let (r0a, r0b, r1, r2, r3) = tokio::join!(
                api_a.try_post_alertmanager(&d0),
                api_b.try_post_alertmanager(&d0),
                api_a.try_post_alertmanager(&d1),
                api_b.try_post_alertmanager(&d2),
                last.try_post_alertmanager(&d3),
            );
            (e, [r0a, r0b, r1, r2, r3])
        });
    }
    let answers = accepted_by_episode(tasks).await;

    let mut all_alerts = BTreeSet::new();
    let mut episode_ids = BTreeSet::new();
    for (e, acc) in &answers {
        let (d0a, d0b) = (&acc[0], &acc[1]);
        assert_eq!(
            (&d0a.alert_ids, &d0a.episode_ids),
            (&d0b.alert_ids, &d0b.episode_ids),
            "episode {e}: the racing D0s differ"
        );
        let mut dups = [d0a.duplicates, d0b.duplicates];
        dups.sort();
        assert_eq!(dups, [0, 2], "episode {e}: one D0 stores, the other is a duplicate: {acc:?}");
        for a in acc {
            assert_eq!(a.episode_ids, acc[0].episode_ids, "episode {e}: one group key, several episodes: {acc:?}");
            all_alerts.extend(a.alert_ids.iter().cloned());
        }
        assert_eq!(acc[0].episode_ids.len(), 1);
        episode_ids.insert(acc[0].episode_ids[0].clone());
    }
    assert_eq!(all_alerts.len(), EPISODES * PER_EPISODE, "distinct alert ids answered");
    assert_eq!(episode_ids.len(), EPISODES, "distinct episode ids answered");

    assert_eq!(count(&pool, "SELECT COUNT(*) FROM alerts").await, (EPISODES * PER_EPISODE) as i64);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM episodes").await, EPISODES as i64);
    assert_eq!(count(&pool, "SELECT COUNT(DISTINCT episode_key) FROM episodes").await, EPISODES as i64);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM investigations").await,
        EPISODES as i64,
        "exactly one investigation per episode"
    );

    let started = now_ms();
    let all = wait_all_completed(&a.api(), EPISODES, Duration::from_secs(60)).await;
    eprintln!("all {EPISODES} investigations completed {} ms after the last 202", now_ms() - started);
    assert_eq!(all.len(), EPISODES);

    let mut holds_by_worker: HashMap<String, Vec<Hold>> = HashMap::new();
    for inv in &all {
        assert!(episode_ids.contains(&inv.episode_id), "an investigation for an episode never answered: {inv:?}");
        let holds = lease_history(inv, TTL.as_millis() as i64, WORK_MS).unwrap_or_else(|e| panic!("{e}"));
        // Nobody died, leases were renewed: each investigation ran exactly once.
        assert_eq!(holds.len(), 1, "claimed more than once:\n{}", inv.log());
        let h = &holds[0];
        assert_eq!(
            (h.kind.as_str(), h.attempt, h.previous_worker.as_deref()),
            ("investigation.started", 1, None),
            "{}",
            inv.log()
        );
        assert!([A, B].contains(&h.worker.as_str()), "unknown worker {}", h.worker);
        // Every alert of the episode is in the investigation and its log.
        assert_eq!(inv.alert_count, PER_EPISODE as i64, "{}", inv.log());
        assert_eq!(inv.alerts.len(), PER_EPISODE, "{}", inv.log());
        let logged: i64 =
            inv.events_of("alert.received").iter().map(|e| e.data["alert_count"].as_i64().unwrap_or(0)).sum::<i64>()
                + inv.events_of("alerts.attached").iter().map(|e| e.data["count"].as_i64().unwrap_or(0)).sum::<i64>();
        assert_eq!(logged, PER_EPISODE as i64, "alerts counted by the event log:\n{}", inv.log());
        holds_by_worker.entry(h.worker.clone()).or_default().push(h.clone());
    }
    let per_worker: BTreeMap<&str, usize> = holds_by_worker.iter().map(|(w, h)| (w.as_str(), h.len())).collect();
    eprintln!("investigations per worker: {per_worker:?}");
    for w in [A, B] {
        let holds: Vec<&Hold> = holds_by_worker.get(w).map(|h| h.iter().collect()).unwrap_or_default();
        assert!(!holds.is_empty(), "{w} ran nothing: {per_worker:?}");
        let most = max_concurrent(&holds);
        assert!(most <= SLOTS, "{w} ran {most} investigations at once with {SLOTS} slots");
    }
    drop((a, b));
    pool.close().await;
}

/// `kill -9` of a replica holding leases: the survivor resumes exactly those
/// investigations once their leases expire (not before), and everything completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_takes_over_the_leases_of_a_killed_replica() {
    const EPISODES: usize = 12;
    const SLOTS: usize = 3;
    const WORK_MS: i64 = 4000;
    let ttl_ms = TTL.as_millis() as i64;

    let db = TestDb::create().await;
    let dir = Scratch::new();
    // Work outlasts the lease TTL, so it survives only if heartbeats renew the lease.
    let (mut a, b) = start_pair(&db, dir.path(), &format!("{WORK_MS}ms"), SLOTS).await;
    let pool = PgPool::connect(&db.url).await.unwrap();

    let mut tasks = JoinSet::new();
    for e in 0..EPISODES {
        let api = if e % 2 == 0 { a.api() } else { b.api() };
        tasks.spawn(async move {
            let payload = alertmanager_payload(
                &format!("{{}}:{{alertname=\"Takeover{e}\"}}"),
                "data-eng",
                &[format!("t-{e}-0"), format!("t-{e}-1")],
            );
            api.post_alertmanager(&payload).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a posting task panicked");
    }

    // Kill A while it is in the middle of work it holds.
    wait_holding(&pool, A, 2).await;
    let kill_ms = now_ms();
    a.kill9();
    // Let the server finish with the dead connections; A can change nothing now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = held_by(&pool, A).await;
    assert!(!held.is_empty(), "{A} held nothing when killed");
    eprintln!("{A} held {} investigations when killed", held.len());

    let api = b.api();
    let all = wait_all_completed(&api, EPISODES, Duration::from_secs(60)).await;
    eprintln!("all {EPISODES} completed {} ms after the kill", now_ms() - kill_ms);

    let mut resumed = 0;
    for inv in &all {
        let holds = lease_history(inv, ttl_ms, WORK_MS).unwrap_or_else(|e| panic!("{e}"));
        let takeovers: Vec<&Hold> = holds.iter().filter(|h| h.kind == "investigation.resumed").collect();
        match held.get(&inv.id) {
            Some(attempts) => {
                assert_eq!(takeovers.len(), 1, "one takeover of a lease of the dead {A}:\n{}", inv.log());
                let t = takeovers[0];
                assert_eq!(
                    (t.worker.as_str(), t.previous_worker.as_deref(), t.attempt),
                    (B, Some(A), attempts + 1),
                    "{}",
                    inv.log()
                );
                // A renewed every TTL/3 until it died, so its lease ran at least 2/3 TTL past the kill.
                assert!(
                    t.from_ms >= kill_ms + ttl_ms * 2 / 3 - TOLERANCE_MS,
                    "{B} took over {} ms after the kill, before the lease could have expired:\n{}",
                    t.from_ms - kill_ms,
                    inv.log()
                );
                assert_eq!(holds.last().map(|h| h.worker.as_str()), Some(B), "{}", inv.log());
                resumed += 1;
            }
            None => assert!(takeovers.is_empty(), "a takeover of a live lease:\n{}", inv.log()),
        }
        // After the kill, only the survivor claims anything.
        for h in holds.iter().filter(|h| h.from_ms > kill_ms) {
            assert_eq!(h.worker, B, "a claim by {} after {A} was killed:\n{}", h.worker, inv.log());
        }
    }
    assert_eq!(resumed, held.len());
    let mut b = b;
    assert!(b.is_running(), "the survivor died");
    pool.close().await;
}

/// SIGSTOP the process, but not while one of its transactions is open: a frozen
/// transaction would hold locks that stall the other replica (see the report on
/// `idle_in_transaction_session_timeout`). Returns when it was stopped.
async fn pause_outside_transactions(inquest: &mut Inquest, pool: &PgPool) -> i64 {
    async fn open_transactions(pool: &PgPool) -> BTreeSet<(i32, String)> {
        sqlx::query(
            "SELECT pid, xact_start::text FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i32, _>(0), r.get::<String, _>(1)))
        .collect()
    }
    for _ in 0..20 {
        let paused_ms = now_ms();
        inquest.pause();
        let first = open_transactions(pool).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = open_transactions(pool).await;
        // The other replica's transactions last milliseconds; one open across 200 ms
        // belongs to the frozen process.
        if first.intersection(&second).next().is_none() {
            return paused_ms;
        }
        inquest.resume();
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    panic!("{} was inside a transaction at every one of 20 tries to pause it", inquest.name());
}

/// A replica frozen (SIGSTOP) while it holds leases loses them to the other; when it
/// wakes up after its work would have finished, its late results and renewals are
/// fenced off: every investigation still has one completion, recorded by the worker
/// that held the lease last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_is_fenced_off_once_its_leases_are_taken_over() {
    const EPISODES: usize = 8;
    const SLOTS: usize = 3;
    const WORK_MS: i64 = 4000;
    let ttl_ms = TTL.as_millis() as i64;

    let db = TestDb::create().await;
    let dir = Scratch::new();
    let (mut a, b) = start_pair(&db, dir.path(), &format!("{WORK_MS}ms"), SLOTS).await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    for e in 0..EPISODES {
        let api = if e % 2 == 0 { a.api() } else { b.api() };
        let payload =
            alertmanager_payload(&format!("{{}}:{{alertname=\"Paused{e}\"}}"), "data-eng", &[format!("p-{e}")]);
        api.post_alertmanager(&payload).await;
    }

    wait_holding(&pool, A, 2).await;
    let paused_ms = pause_outside_transactions(&mut a, &pool).await;
    let held = held_by(&pool, A).await;
    assert!(!held.is_empty(), "{A} held nothing when paused");
    eprintln!("{A} held {} investigations when paused", held.len());

    let pool2 = pool.clone();
    let held2 = held.clone();
    wait_for(&format!("{B} to take over every lease of the paused {A}"), Duration::from_secs(30), || {
        let (pool, held) = (pool2.clone(), held2.clone());
        async move {
            let mut waiting = Vec::new();
            for (id, attempts) in &held {
                let now: i64 = sqlx::query_scalar("SELECT attempts FROM investigations WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
                if now <= *attempts {
                    waiting.push(id.clone());
                }
            }
            if waiting.is_empty() { Ok(()) } else { Err(format!("not taken over yet: {waiting:?}")) }
        }
    })
    .await;
    // Wake A only once its work on them would have finished: its results, and its
    // heartbeats, now arrive late, for leases that are no longer its own.
    let resume_at = paused_ms + WORK_MS + 500;
    tokio::time::sleep(Duration::from_millis(u64::try_from(resume_at - now_ms()).unwrap_or(0))).await;
    a.resume();

    let all = wait_all_completed(&b.api(), EPISODES, Duration::from_secs(60)).await;
    // A's late writes happen as soon as it wakes; give them time to land or be refused
    // (its log says `lease lost` when one is refused) before the logs are read again.
    let lease_lost = || std::fs::read_to_string(a.log_path()).is_ok_and(|t| t.contains("lease lost"));
    for _ in 0..50 {
        if lease_lost() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = {
        let ids: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
        let mut again = Vec::new();
        for id in ids {
            again.push(b.api().investigation(&id).await);
        }
        again
    };
    for inv in &all {
        let holds = lease_history(inv, ttl_ms, WORK_MS).unwrap_or_else(|e| panic!("{e}"));
        let takeovers: Vec<&Hold> = holds.iter().filter(|h| h.kind == "investigation.resumed").collect();
        match held.get(&inv.id) {
            Some(attempts) => {
                assert_eq!(takeovers.len(), 1, "one takeover of a lease of the paused {A}:\n{}", inv.log());
                let t = takeovers[0];
                assert_eq!(
                    (t.worker.as_str(), t.previous_worker.as_deref(), t.attempt),
                    (B, Some(A), attempts + 1),
                    "{}",
                    inv.log()
                );
                assert!(
                    t.from_ms >= paused_ms + ttl_ms * 2 / 3 - TOLERANCE_MS,
                    "{B} took over {} ms after the pause, before the lease could have expired:\n{}",
                    t.from_ms - paused_ms,
                    inv.log()
                );
                assert_eq!(holds.last().map(|h| h.worker.as_str()), Some(B), "{}", inv.log());
            }
            None => assert!(takeovers.is_empty(), "a takeover of a live lease:\n{}", inv.log()),
        }
    }
    // Not vacuous: A did try to act on leases it had lost.
    assert!(lease_lost(), "{A} never noticed that its leases were gone; its log:\n{}", a.log_tail(40));
    assert!(a.is_running(), "{A} died after it was resumed");
    pool.close().await;
}
