//! One store suite, run against SQLite and PostgreSQL alike.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use inquest::config::OnResolved;
use inquest::engine::{EventBody, Limits, State};
use inquest::intake::{self, Source};
use inquest::store::{IngestPolicy, IngestRequest, InvestigationFilter, SqlStore, Store, Transition};

use crate::support::pg::TestDb;
use crate::support::server::alertmanager;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_764_000_000 + secs, 0).unwrap()
}

fn request(body: &str) -> IngestRequest {
    let delivery = intake::parse(Source::Alertmanager, body.as_bytes(), None).unwrap();
    let team = delivery.alerts[0].labels.get("team").cloned().unwrap_or_default();
    IngestRequest { delivery, team, service: None, body: body.to_string() }
}

fn policy(on_resolved: OnResolved) -> IngestPolicy {
    IngestPolicy { cooldown: Duration::from_secs(600), on_resolved }
}

fn limits(max: u32, team: u32) -> Limits {
    Limits { max_running: max, team_max_running: team, team_quotas: BTreeMap::new() }
}

async fn sqlite() -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/store.db", dir.path().display());
    (SqlStore::open(&url, 4).await.unwrap(), dir)
}

#[tokio::test]
async fn an_in_memory_sqlite_store_is_refused() {
    // Each connection would get a database of its own, and a restart none.
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let err = SqlStore::open(url, 2).await.err().expect("in-memory store refused");
        assert!(err.to_string().contains("in-memory"), "{url}: {err}");
    }
}

async fn postgres() -> (SqlStore, TestDb) {
    let db = TestDb::create().await;
    (SqlStore::open(&db.url, 4).await.unwrap(), db)
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $name() { let (s, _d) = super::sqlite().await; super::$name(&s).await; s.close().await; })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $name() { let (s, _d) = super::postgres().await; super::$name(&s).await; s.close().await; })*
        }
    };
}

both_backends!(
    redelivery_stores_nothing_new,
    alerts_fold_into_episodes,
    resolution_cancels_or_is_recorded,
    claims_respect_caps_and_quotas,
    leases_fence_writes_and_expire,
    a_wait_on_a_person_keeps_the_lease_and_is_taken_over,
    events_are_ordered_and_resumable,
    listing_filters,
    one_batch_mixes_everything,
);

async fn redelivery_stores_nothing_new(s: &dyn Store) {
    let body = alertmanager("g1", "firing", "a", &["f1", "f2"]);
    let p = policy(OnResolved::Continue);
    let first = s.ingest(vec![request(&body)], &p, at(0)).await.unwrap().remove(0);
    assert_eq!(
        (first.alert_ids.len(), first.duplicates, first.new_episodes, first.new_investigations.len()),
        (2, 0, 1, 1)
    );
    // Twice in one batch and once more later: the same ids, nothing new.
    let again = s.ingest(vec![request(&body), request(&body)], &p, at(1)).await.unwrap();
    for o in &again {
        assert_eq!(o.alert_ids, first.alert_ids);
        assert_eq!(o.episode_ids, first.episode_ids);
        assert_eq!((o.duplicates, o.new_episodes, o.new_investigations.len()), (2, 0, 0));
    }
    let inv = s.investigation(&first.new_investigations[0]).await.unwrap().unwrap();
    assert_eq!(inv.alert_count, 2);
    assert_eq!(s.events(&inv.id, 0, 100).await.unwrap().len(), 1, "a redelivery adds no events");
}

async fn alerts_fold_into_episodes(s: &dyn Store) {
    let p = policy(OnResolved::Continue);
    let a = s.ingest(vec![request(&alertmanager("g", "firing", "a", &["f1"]))], &p, at(0)).await.unwrap().remove(0);
    // A new alert of the same group joins the running episode.
    let b = s.ingest(vec![request(&alertmanager("g", "firing", "a", &["f2"]))], &p, at(10)).await.unwrap().remove(0);
    assert_eq!(b.episode_ids, a.episode_ids);
    assert!(b.new_investigations.is_empty());
    let inv = &a.new_investigations[0];
    let kinds: Vec<String> = s.events(inv, 0, 10).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["alert.received", "alerts.attached"]);
    // Finish the investigation; a new firing alert inside the cooldown still joins it,
    let claim = s.claim("w", 1, &limits(10, 10), Duration::from_secs(30), at(20)).await.unwrap().remove(0);
    assert!(
        s.transition(
            &claim.lease,
            &Transition {
                to: Some(State::Completed),
                events: &[],
                release: true,
                summary: Some("done"),
                failure: false
            },
            at(21)
        )
        .await
        .unwrap()
    );
    let c = s.ingest(vec![request(&alertmanager("g", "firing", "a", &["f3"]))], &p, at(100)).await.unwrap().remove(0);
    assert_eq!(c.episode_ids, a.episode_ids);
    // a repeat notification joins however late it comes,
    let mut repeat: serde_json::Value = serde_json::from_str(&alertmanager("g", "firing", "a", &["f4"])).unwrap();
    repeat["notification_reason"] = "repeat interval elapsed".into();
    let d = s.ingest(vec![request(&repeat.to_string())], &p, at(100_000)).await.unwrap().remove(0);
    assert_eq!((d.episode_ids.clone(), d.new_investigations.len()), (a.episode_ids.clone(), 0));
    // and after the cooldown a new firing alert is a new episode with a new investigation.
    let e =
        s.ingest(vec![request(&alertmanager("g", "firing", "a", &["f5"]))], &p, at(200_000)).await.unwrap().remove(0);
    assert_ne!(e.episode_ids, a.episode_ids);
    assert_eq!(e.new_investigations.len(), 1);
}

async fn resolution_cancels_or_is_recorded(s: &dyn Store) {
    let cancel = policy(OnResolved::CancelIfNotStarted);
    let a =
        s.ingest(vec![request(&alertmanager("g1", "firing", "a", &["f1"]))], &cancel, at(0)).await.unwrap().remove(0);
    s.ingest(vec![request(&alertmanager("g1", "resolved", "a", &["f1"]))], &cancel, at(5)).await.unwrap();
    let inv = s.investigation(&a.new_investigations[0]).await.unwrap().unwrap();
    assert_eq!(inv.state, State::Cancelled);
    assert_eq!(inv.resolved_at, Some(at(5)));
    let kinds: Vec<String> = s.events(&inv.id, 0, 10).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["alert.received", "alerts.attached", "episode.resolved", "investigation.cancelled"]);

    let keep = policy(OnResolved::Continue);
    let b = s.ingest(vec![request(&alertmanager("g2", "firing", "a", &["f1"]))], &keep, at(0)).await.unwrap().remove(0);
    s.ingest(vec![request(&alertmanager("g2", "resolved", "a", &["f1"]))], &keep, at(5)).await.unwrap();
    let inv = s.investigation(&b.new_investigations[0]).await.unwrap().unwrap();
    assert_eq!((inv.state, inv.resolved_at), (State::Queued, Some(at(5))));

    // Resolved with nothing ever firing: recorded, nothing to investigate.
    let c =
        s.ingest(vec![request(&alertmanager("g3", "resolved", "a", &["f1"]))], &keep, at(0)).await.unwrap().remove(0);
    assert_eq!((c.new_episodes, c.new_investigations.len()), (1, 0));
}

async fn claims_respect_caps_and_quotas(s: &dyn Store) {
    let p = policy(OnResolved::Continue);
    let mut batch = Vec::new();
    for i in 0..6 {
        batch.push(request(&alertmanager(&format!("a{i}"), "firing", "alpha", &["f"])));
    }
    for i in 0..2 {
        batch.push(request(&alertmanager(&format!("b{i}"), "firing", "beta", &["f"])));
    }
    s.ingest(batch.clone(), &p, at(0)).await.unwrap();
    let ttl = Duration::from_secs(30);
    let lim = limits(5, 3);
    let first = s.claim("w1", 10, &lim, ttl, at(1)).await.unwrap();
    let teams: Vec<&str> = first.iter().map(|c| c.investigation.team.as_str()).collect();
    assert_eq!(teams, ["alpha", "alpha", "alpha", "beta", "beta"], "team quota 3, global cap 5");
    assert!(s.claim("w2", 10, &lim, ttl, at(2)).await.unwrap().is_empty(), "the cap holds across workers");
    // Finishing one frees a slot; alpha is still at its quota, so nothing more of alpha.
    let beta = first.iter().find(|c| c.investigation.team == "beta").unwrap();
    s.transition(
        &beta.lease,
        &Transition { to: Some(State::Completed), events: &[], release: true, summary: None, failure: false },
        at(3),
    )
    .await
    .unwrap();
    assert!(s.claim("w2", 10, &lim, ttl, at(4)).await.unwrap().is_empty());
    let alpha = &first[0];
    s.transition(
        &alpha.lease,
        &Transition { to: Some(State::Completed), events: &[], release: true, summary: None, failure: false },
        at(5),
    )
    .await
    .unwrap();
    let next = s.claim("w2", 10, &lim, ttl, at(6)).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].investigation.team, "alpha");
    let queued = s
        .list_investigations(&InvestigationFilter { state: Some(State::Queued), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(queued.len(), 2, "work over the limits stays queued");
}

async fn leases_fence_writes_and_expire(s: &dyn Store) {
    let p = policy(OnResolved::Continue);
    s.ingest(vec![request(&alertmanager("g", "firing", "a", &["f"]))], &p, at(0)).await.unwrap();
    let ttl = Duration::from_secs(10);
    let lim = limits(10, 10);
    let c1 = s.claim("w1", 1, &lim, ttl, at(0)).await.unwrap().remove(0);
    assert_eq!((c1.prior_state, c1.lease.epoch, c1.previous_owner.clone()), (State::Queued, 1, None));
    assert!(s.renew(&c1.lease, ttl, at(5)).await.unwrap());
    assert!(s.claim("w2", 1, &lim, ttl, at(14)).await.unwrap().is_empty(), "renewed until 15");
    let c2 = s.claim("w2", 1, &lim, ttl, at(16)).await.unwrap().remove(0);
    assert_eq!((c2.prior_state, c2.lease.epoch, c2.previous_owner.as_deref()), (State::Running, 2, Some("w1")));
    // The old holder can no longer renew or write anything.
    assert!(!s.renew(&c1.lease, ttl, at(17)).await.unwrap());
    let late = [EventBody::new("investigation.completed", serde_json::json!({}))];
    assert!(
        !s.transition(
            &c1.lease,
            &Transition { to: Some(State::Completed), events: &late, release: true, summary: None, failure: false },
            at(17)
        )
        .await
        .unwrap()
    );
    assert!(
        s.transition(
            &c2.lease,
            &Transition {
                to: Some(State::Completed),
                events: &late,
                release: true,
                summary: Some("ok"),
                failure: false
            },
            at(18)
        )
        .await
        .unwrap()
    );
    let inv = s.investigation(&c2.lease.investigation_id).await.unwrap().unwrap();
    assert_eq!((inv.state, inv.worker, inv.summary.as_deref(), inv.attempts), (State::Completed, None, Some("ok"), 2));
    let kinds: Vec<String> = s.events(&inv.id, 0, 10).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["alert.received", "investigation.started", "investigation.resumed", "investigation.completed"]);
}

/// An investigation waiting on a person stays leased (renewable) and, when its worker
/// dies, is taken over like a running one.
async fn a_wait_on_a_person_keeps_the_lease_and_is_taken_over(s: &dyn Store) {
    let p = policy(OnResolved::Continue);
    s.ingest(vec![request(&alertmanager("g", "firing", "a", &["f"]))], &p, at(0)).await.unwrap();
    let ttl = Duration::from_secs(10);
    let lim = limits(10, 10);
    let c1 = s.claim("w1", 1, &lim, ttl, at(0)).await.unwrap().remove(0);
    let asked = [EventBody::new("approval.requested", serde_json::json!({"url": "https://r/approvals/a1"}))];
    assert!(s.transition(&c1.lease, &Transition::to(State::AwaitingApproval, &asked), at(1)).await.unwrap());
    let inv = s.investigation(&c1.lease.investigation_id).await.unwrap().unwrap();
    assert_eq!(inv.state, State::AwaitingApproval);
    let waiting = InvestigationFilter { state: Some(State::AwaitingApproval), limit: 10, ..Default::default() };
    assert_eq!(s.list_investigations(&waiting).await.unwrap().len(), 1);
    assert!(s.renew(&c1.lease, ttl, at(5)).await.unwrap(), "a wait keeps its lease");
    assert!(s.claim("w2", 1, &lim, ttl, at(14)).await.unwrap().is_empty());
    let c2 = s.claim("w2", 1, &lim, ttl, at(16)).await.unwrap().remove(0);
    assert_eq!((c2.prior_state, c2.previous_owner.as_deref()), (State::AwaitingApproval, Some("w1")));
    assert!(c2.start, "the new worker starts the work again");
    let inv = s.investigation(&c2.lease.investigation_id).await.unwrap().unwrap();
    assert_eq!(inv.state, State::Running);
}

async fn events_are_ordered_and_resumable(s: &dyn Store) {
    let p = policy(OnResolved::Continue);
    let o = s.ingest(vec![request(&alertmanager("g", "firing", "a", &["f"]))], &p, at(0)).await.unwrap().remove(0);
    let id = &o.new_investigations[0];
    let mut rx = s.subscribe();
    let c = s.claim("w", 1, &limits(10, 10), Duration::from_secs(30), at(1)).await.unwrap().remove(0);
    let evs: Vec<EventBody> = (0..5).map(|i| EventBody::new("step", serde_json::json!({"i": i}))).collect();
    assert!(
        s.transition(
            &c.lease,
            &Transition { to: Some(State::Running), events: &evs, release: false, summary: None, failure: false },
            at(2)
        )
        .await
        .unwrap()
    );
    assert_eq!(&rx.recv().await.unwrap(), id, "subscribers hear about new events");
    let all = s.events(id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!((all[0].kind.as_str(), all[1].kind.as_str()), ("alert.received", "investigation.started"));
    let tail = s.events(id, 5, 100).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.data["i"].as_i64().unwrap()).collect::<Vec<_>>(), [3, 4]);
}

async fn listing_filters(s: &dyn Store) {
    let p = policy(OnResolved::Continue);
    s.ingest(vec![request(&alertmanager("g1", "firing", "alpha", &["f"]))], &p, at(0)).await.unwrap();
    s.ingest(vec![request(&alertmanager("g2", "firing", "beta", &["f"]))], &p, at(100)).await.unwrap();
    let f = |team: Option<&str>, since: Option<DateTime<Utc>>| InvestigationFilter {
        state: None,
        team: team.map(str::to_string),
        since,
        limit: 10,
    };
    assert_eq!(s.list_investigations(&f(None, None)).await.unwrap().len(), 2);
    let beta = s.list_investigations(&f(Some("beta"), None)).await.unwrap();
    assert_eq!(beta.iter().map(|i| i.team.as_str()).collect::<Vec<_>>(), ["beta"]);
    assert_eq!(s.list_investigations(&f(None, Some(at(50)))).await.unwrap().len(), 1);
    let counts = s.count_by_state().await.unwrap();
    assert_eq!(counts, [(State::Queued, 2)]);
}

async fn one_batch_mixes_everything(s: &dyn Store) {
    let p = policy(OnResolved::CancelIfNotStarted);
    let again = alertmanager("again", "firing", "a", &["a1", "a2"]);
    let before = s
        .ingest(
            vec![
                request(&alertmanager("running", "firing", "a", &["r1"])),
                request(&alertmanager("queued", "firing", "a", &["q1"])),
                request(&again),
            ],
            &p,
            at(0),
        )
        .await
        .unwrap();
    let [inv_run, inv_queued, inv_again] = [0, 1, 2].map(|i| before[i].new_investigations[0].clone());
    let claim = s.claim("w", 1, &limits(10, 10), Duration::from_secs(300), at(1)).await.unwrap().remove(0);
    assert_eq!(claim.lease.investigation_id, inv_run, "the oldest is claimed first");

    let new_two = alertmanager("new", "firing", "a", &["n2", "n3"]);
    let batch = [
        alertmanager("new", "firing", "a", &["n1"]),       // 0: opens an episode
        alertmanager("running", "firing", "a", &["r2"]),   // 1: joins a running investigation
        new_two.clone(),                                   // 2: joins the episode opened by 0
        again.clone(),                                     // 3: redelivers an earlier delivery
        alertmanager("queued", "resolved", "a", &["q1"]),  // 4: resolves a queued one: cancelled
        new_two,                                           // 5: redelivers 2 inside the batch
        alertmanager("new", "firing", "a", &["n3", "n4"]), // 6: n3 is a duplicate of 2's, n4 is new
        alertmanager("running", "resolved", "a", &["r1"]), // 7: resolves a running one: recorded
        alertmanager("quiet", "resolved", "a", &["z1"]),   // 8: nothing firing: an episode, no investigation
        alertmanager("brief", "firing", "a", &["b1"]),     // 9: opens an investigation
        alertmanager("brief", "resolved", "a", &["b1"]),   // 10: ...and cancels it in the same batch
    ];
    let batch: Vec<IngestRequest> = batch.iter().map(|b| request(b)).collect();
    let out = s.ingest(batch.clone(), &p, at(10)).await.unwrap();
    let shape: Vec<(usize, usize, usize, usize)> =
        out.iter().map(|o| (o.alert_ids.len(), o.duplicates, o.new_episodes, o.new_investigations.len())).collect();
    assert_eq!(
        shape,
        [
            (1, 0, 1, 1),
            (1, 0, 0, 0),
            (2, 0, 0, 0),
            (2, 2, 0, 0),
            (1, 0, 0, 0),
            (2, 2, 0, 0),
            (2, 1, 0, 0),
            (1, 0, 0, 0),
            (1, 0, 1, 0),
            (1, 0, 1, 1),
            (1, 0, 0, 0),
        ]
    );
    let episode = |i: usize| before[i].episode_ids.clone();
    let (inv_new, ep_new) = (out[0].new_investigations[0].clone(), out[0].episode_ids.clone());
    let inv_brief = out[9].new_investigations[0].clone();
    for i in [2, 5, 6] {
        assert_eq!(out[i].episode_ids, ep_new, "delivery {i} joins the episode opened in the same batch");
    }
    assert_eq!((out[1].episode_ids.clone(), out[7].episode_ids.clone()), (episode(0), episode(0)));
    assert_eq!(out[4].episode_ids, episode(1));
    assert_eq!(out[10].episode_ids, out[9].episode_ids);
    assert_eq!((&out[3].alert_ids, &out[3].episode_ids), (&before[2].alert_ids, &before[2].episode_ids));
    assert_eq!(out[5].alert_ids, out[2].alert_ids);
    assert_eq!(out[6].alert_ids[0], out[2].alert_ids[1]);
    let all_ids: std::collections::HashSet<&String> = out.iter().flat_map(|o| &o.alert_ids).collect();
    assert_eq!(all_ids.len(), 15 - 3, "15 alert ids answered, 3 of them repeated inside the batch");

    let log = |id: String| async move {
        let events = s.events(&id, 0, 100).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>(), "dense sequence numbers");
        events
    };
    let kinds = |events: &[inquest::store::StoredEvent]| events.iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
    let attached_ids = |events: &[inquest::store::StoredEvent]| {
        let e = events.iter().find(|e| e.kind == "alerts.attached").unwrap();
        (e.data["count"].as_u64().unwrap(), serde_json::from_value::<Vec<String>>(e.data["alert_ids"].clone()).unwrap())
    };

    let new = log(inv_new.clone()).await;
    assert_eq!(kinds(&new), ["alert.received", "alerts.attached"]);
    assert_eq!(new[0].data["alert_count"], 1);
    assert_eq!(
        attached_ids(&new),
        (3, vec![out[2].alert_ids[0].clone(), out[2].alert_ids[1].clone(), out[6].alert_ids[1].clone()])
    );

    let run = log(inv_run.clone()).await;
    assert_eq!(kinds(&run), ["alert.received", "investigation.started", "alerts.attached", "episode.resolved"]);
    assert_eq!(attached_ids(&run), (2, vec![out[1].alert_ids[0].clone(), out[7].alert_ids[0].clone()]));
    assert_eq!(run[3].data["action"], "recorded");

    let queued = log(inv_queued.clone()).await;
    assert_eq!(kinds(&queued), ["alert.received", "alerts.attached", "episode.resolved", "investigation.cancelled"]);
    assert_eq!(queued[2].data["action"], "cancelled");

    let brief = log(inv_brief.clone()).await;
    assert_eq!(kinds(&brief), ["alert.received", "alerts.attached", "episode.resolved", "investigation.cancelled"]);
    assert_eq!(kinds(&log(inv_again.clone()).await), ["alert.received"], "a redelivery adds no events");

    let summary = |id: String| async move { s.investigation(&id).await.unwrap().unwrap() };
    let row = |i: inquest::store::InvestigationSummary| (i.state, i.alert_count, i.resolved_at, i.finished_at);
    assert_eq!(row(summary(inv_new.clone()).await), (State::Queued, 4, None, None));
    assert_eq!(row(summary(inv_run.clone()).await), (State::Running, 3, Some(at(10)), None));
    assert_eq!(row(summary(inv_queued.clone()).await), (State::Cancelled, 2, Some(at(10)), Some(at(10))));
    assert_eq!(row(summary(inv_brief.clone()).await), (State::Cancelled, 2, Some(at(10)), Some(at(10))));
    assert_eq!(row(summary(inv_again.clone()).await), (State::Queued, 2, None, None));
    assert_eq!(s.episode_alerts(&out[8].episode_ids[0], 10).await.unwrap().len(), 1);
    let mut counts = s.count_by_state().await.unwrap();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, [(State::Cancelled, 2), (State::Queued, 2), (State::Running, 1)]);

    // The whole batch again, later: the same answers, every alert a duplicate, nothing new.
    let redo = s.ingest(batch.clone(), &p, at(20)).await.unwrap();
    for (first, second) in out.iter().zip(&redo) {
        assert_eq!((&second.alert_ids, &second.episode_ids), (&first.alert_ids, &first.episode_ids));
        assert_eq!(
            (second.duplicates, second.new_episodes, second.new_investigations.len()),
            (first.alert_ids.len(), 0, 0)
        );
    }
    for (id, n) in [(&inv_new, 2), (&inv_run, 4), (&inv_queued, 4), (&inv_brief, 4), (&inv_again, 1)] {
        assert_eq!(s.events(id, 0, 100).await.unwrap().len(), n, "no new events for {id}");
    }
    assert_eq!(row(summary(inv_new).await), (State::Queued, 4, None, None));
}
