//! A batch decided in memory: walks the deliveries in order, asking
//! `intake::grouping::decide` and `engine::step`, and collects what to answer and
//! the rows to write. No IO: what it needs from the store is read before, in bulk.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::engine::{Command, EventBody, Input, State, step};
use crate::intake::grouping::{self, Decision, EpisodeView};
use crate::intake::{Alert, AlertStatus};
use crate::store::{IngestOutcome, IngestPolicy, IngestRequest, Result, StoreError, to_ms};

/// The most alerts quoted in one event; the rest are counted.
const ALERTS_PER_EVENT: usize = 20;

/// The latest episode of a key, as the batch sees it.
pub(super) struct Latest {
    pub view: EpisodeView,
    pub investigation: Option<String>,
}

/// An investigation's state and next sequence number, read (and locked) in the batch's
/// transaction just before it is written.
pub(super) type Locked = HashMap<String, (State, i64)>;

#[derive(Serialize)]
pub(super) struct DeliveryRow<'a> {
    id: String,
    source: &'static str,
    body: &'a str,
}

#[derive(Serialize)]
pub(super) struct AlertRow<'a> {
    id: String,
    dedup_key: &'a str,
    episode_id: String,
    delivery_id: String,
    source: &'static str,
    status: &'static str,
    fingerprint: &'a str,
    labels: String,
    annotations: String,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    generator_url: Option<&'a str>,
    raw: String,
}

/// A new episode, written once with the counters the whole batch gives it.
#[derive(Serialize)]
pub(super) struct EpisodeRow<'a> {
    id: String,
    episode_key: &'a str,
    source: &'static str,
    title: &'a str,
    team: &'a str,
    service: Option<&'a str>,
    resolved_at: Option<i64>,
    alert_count: i64,
    investigation_id: Option<String>,
}

/// A new investigation, written once in the state the whole batch leaves it in.
#[derive(Serialize)]
pub(super) struct InvestigationRow<'a> {
    id: String,
    episode_id: String,
    title: &'a str,
    team: &'a str,
    service: Option<&'a str>,
    state: &'static str,
    finished_at: Option<i64>,
    resolved_at: Option<i64>,
    next_seq: i64,
}

/// What the batch adds to an episode stored before it.
#[derive(Serialize)]
pub(super) struct EpisodeUpdate {
    id: String,
    added: i64,
    resolved_at: Option<i64>,
}

/// What the batch does to an investigation stored before it.
#[derive(Serialize)]
pub(super) struct InvestigationUpdate {
    id: String,
    state: &'static str,
    events: i64,
    resolved_at: Option<i64>,
    finished_at: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct EventRow {
    investigation_id: String,
    seq: i64,
    kind: String,
    data: String,
}

/// Every row a batch writes, one statement per kind.
#[derive(Default)]
pub(super) struct Writes<'a> {
    pub deliveries: Vec<DeliveryRow<'a>>,
    pub episodes: Vec<EpisodeRow<'a>>,
    pub investigations: Vec<InvestigationRow<'a>>,
    pub alerts: Vec<AlertRow<'a>>,
    pub episode_updates: Vec<EpisodeUpdate>,
    pub investigation_updates: Vec<InvestigationUpdate>,
    pub events: Vec<EventRow>,
}

/// What the batch did to one episode, applied once at the end of the batch.
struct EpisodeChange {
    id: String,
    investigation: Option<String>,
    attached_alert_ids: Vec<String>,
    added: i64,
    /// Whether the latest delivery resolved everything (else something fired).
    resolved: bool,
    /// The episode is new, at this index of `Writes::episodes`.
    new_episode: Option<usize>,
}

/// A new investigation: its row's index, and its `alert.received` event.
struct Opened {
    row: usize,
    received: EventBody,
}

pub(super) struct Plan<'a> {
    now_ms: i64,
    cooldown_ms: i64,
    /// Stored alerts, then also those this batch stores: dedup key -> (alert id, episode id).
    known: HashMap<String, (String, String)>,
    /// The latest episode of each key, as the batch has left it so far.
    latest: HashMap<String, Latest>,
    changes: Vec<EpisodeChange>,
    change_index: HashMap<String, usize>,
    opened: HashMap<String, Opened>,
    outcomes: Vec<IngestOutcome>,
    writes: Writes<'a>,
}

impl<'a> Plan<'a> {
    pub fn new(
        now_ms: i64,
        policy: &IngestPolicy,
        stored: HashMap<String, (String, String)>,
        latest: HashMap<String, Latest>,
    ) -> Plan<'a> {
        Plan {
            now_ms,
            cooldown_ms: policy.cooldown.as_millis() as i64,
            known: stored,
            latest,
            changes: Vec::new(),
            change_index: HashMap::new(),
            opened: HashMap::new(),
            outcomes: Vec::new(),
            writes: Writes::default(),
        }
    }

    /// Decides one delivery, in batch order: what it duplicates, which episode it
    /// joins or opens, and the rows it adds.
    pub fn add(&mut self, req: &'a IngestRequest) -> Result<()> {
        let d = &req.delivery;
        let mut out = IngestOutcome::default();
        let mut ids: Vec<Option<String>> = Vec::with_capacity(d.alerts.len());
        for alert in &d.alerts {
            match self.known.get(&alert.dedup_key) {
                Some((alert_id, episode_id)) => {
                    out.duplicates += 1;
                    push_unique(&mut out.episode_ids, episode_id.clone());
                    ids.push(Some(alert_id.clone()));
                }
                None => ids.push(None),
            }
        }
        let fresh: Vec<&'a Alert> = d.alerts.iter().zip(&ids).filter(|(_, id)| id.is_none()).map(|(a, _)| a).collect();
        if fresh.is_empty() {
            out.alert_ids = ids.into_iter().flatten().collect();
            self.outcomes.push(out);
            return Ok(());
        }

        let latest = self.latest.get(&d.episode_key);
        let any_firing = fresh.iter().any(|a| a.status == AlertStatus::Firing);
        let decision = grouping::decide(latest.map(|l| &l.view), any_firing, d.repeat, self.now_ms, self.cooldown_ms);
        // Ids are made in the same order as ever (alerts, episode, investigation,
        // delivery): v7 ids sort by creation, and episodes opened in the same
        // millisecond are told apart by id.
        let new_ids: Vec<String> = fresh.iter().map(|_| Uuid::now_v7().to_string()).collect();
        let (episode_id, opened_investigation) = match decision {
            Decision::Attach { episode_id } => {
                if !self.change_index.contains_key(&episode_id) {
                    // Not touched yet in this batch: the episode is the stored latest one.
                    let investigation = latest.and_then(|l| l.investigation.clone());
                    self.new_change(&episode_id, investigation, None);
                }
                (episode_id, false)
            }
            Decision::Open { investigate } => {
                let episode_id = Uuid::now_v7().to_string();
                out.new_episodes += 1;
                let investigation = if investigate {
                    let inv = self.open_investigation(&episode_id, req, &fresh, &new_ids);
                    out.new_investigations.push(inv.clone());
                    Some(inv)
                } else {
                    None
                };
                self.writes.episodes.push(EpisodeRow {
                    id: episode_id.clone(),
                    episode_key: &d.episode_key,
                    source: d.source.as_str(),
                    title: &d.title,
                    team: &req.team,
                    service: req.service.as_deref(),
                    resolved_at: None,
                    alert_count: 0,
                    investigation_id: investigation.clone(),
                });
                let row = self.writes.episodes.len() - 1;
                let state = investigation.as_ref().map(|_| State::Queued);
                let opened = investigation.is_some();
                self.new_change(&episode_id, investigation.clone(), Some(row));
                self.latest.insert(
                    d.episode_key.clone(),
                    Latest {
                        view: EpisodeView {
                            id: episode_id.clone(),
                            last_alert_at_ms: self.now_ms,
                            investigation_state: state,
                        },
                        investigation,
                    },
                );
                (episode_id, opened)
            }
        };

        let delivery_id = Uuid::now_v7().to_string();
        self.writes.deliveries.push(DeliveryRow {
            id: delivery_id.clone(),
            source: d.source.as_str(),
            body: &req.body,
        });
        for (a, id) in fresh.iter().zip(&new_ids) {
            self.writes.alerts.push(alert_row(a, id, &episode_id, &delivery_id)?);
        }

        let idx = self.change_index[&episode_id];
        let change = &mut self.changes[idx];
        change.added += fresh.len() as i64;
        if !opened_investigation {
            change.attached_alert_ids.extend(new_ids.iter().cloned());
        }
        change.resolved = !any_firing;
        if let Some(l) = self.latest.get_mut(&d.episode_key) {
            l.view.last_alert_at_ms = self.now_ms;
        }

        for (alert, id) in fresh.iter().zip(&new_ids) {
            self.known.insert(alert.dedup_key.clone(), (id.clone(), episode_id.clone()));
        }
        let mut new_iter = new_ids.into_iter();
        out.alert_ids =
            ids.into_iter().map(|id| id.or_else(|| new_iter.next())).collect::<Option<Vec<_>>>().unwrap_or_default();
        push_unique(&mut out.episode_ids, episode_id);
        self.outcomes.push(out);
        Ok(())
    }

    fn new_change(&mut self, episode_id: &str, investigation: Option<String>, new_episode: Option<usize>) {
        self.changes.push(EpisodeChange {
            id: episode_id.to_string(),
            investigation,
            attached_alert_ids: Vec::new(),
            added: 0,
            resolved: false,
            new_episode,
        });
        self.change_index.insert(episode_id.to_string(), self.changes.len() - 1);
    }

    fn open_investigation(
        &mut self,
        episode_id: &str,
        req: &'a IngestRequest,
        alerts: &[&Alert],
        alert_ids: &[String],
    ) -> String {
        let id = Uuid::now_v7().to_string();
        let d = &req.delivery;
        let quoted: Vec<serde_json::Value> = alerts
            .iter()
            .zip(alert_ids)
            .take(ALERTS_PER_EVENT)
            .map(|(a, id)| {
                json!({
                    "id": id, "status": a.status, "fingerprint": a.fingerprint, "labels": a.labels,
                    "annotations": a.annotations, "starts_at": a.starts_at, "generator_url": a.generator_url,
                })
            })
            .collect();
        let received = EventBody::new(
            "alert.received",
            json!({
                "source": d.source, "title": d.title, "team": req.team, "service": req.service,
                "episode_id": episode_id, "episode_key": d.episode_key,
                "alert_count": alerts.len(), "alerts": quoted,
            }),
        );
        self.writes.investigations.push(InvestigationRow {
            id: id.clone(),
            episode_id: episode_id.to_string(),
            title: &d.title,
            team: &req.team,
            service: req.service.as_deref(),
            state: State::Queued.as_str(),
            finished_at: None,
            resolved_at: None,
            next_seq: 1,
        });
        self.opened.insert(id.clone(), Opened { row: self.writes.investigations.len() - 1, received });
        id
    }

    /// Investigations stored before the batch that it gives events: their state and
    /// next sequence number must be read (and locked) for [`Plan::finish`].
    pub fn investigations_to_lock(&self) -> Vec<&str> {
        self.changes
            .iter()
            .filter(|c| c.has_news())
            .filter_map(|c| c.investigation.as_deref())
            .filter(|inv| !self.opened.contains_key(*inv))
            .collect()
    }

    /// Applies each episode's change and, through the state machine, its
    /// investigation's. Returns the answers, the rows to write and the investigations
    /// whose logs the batch touched.
    pub fn finish(
        mut self,
        locked: &Locked,
        policy: &IngestPolicy,
    ) -> Result<(Vec<IngestOutcome>, Writes<'a>, Vec<String>)> {
        let now_ms = self.now_ms;
        let mut opened = std::mem::take(&mut self.opened);
        // Every investigation opened here belongs to its episode's change, so this
        // covers those too.
        let mut touched = Vec::new();
        for change in &self.changes {
            let resolved_at = change.resolved.then_some(now_ms);
            match change.new_episode {
                Some(row) => {
                    let episode = &mut self.writes.episodes[row];
                    episode.alert_count = change.added;
                    episode.resolved_at = resolved_at;
                }
                None => self.writes.episode_updates.push(EpisodeUpdate {
                    id: change.id.clone(),
                    added: change.added,
                    resolved_at,
                }),
            }
            let Some(inv) = &change.investigation else { continue };
            touched.push(inv.clone());
            let opened_here = opened.remove(inv);
            if opened_here.is_none() && !change.has_news() {
                continue;
            }
            let (before, first_seq) = match &opened_here {
                // Opened by this batch: queued, with `alert.received` as its first entry.
                Some(_) => (State::Queued, 1),
                None => *locked.get(inv).ok_or_else(|| StoreError::Corrupt(format!("investigation {inv} vanished")))?,
            };
            let (new_row, mut events) = match opened_here {
                Some(Opened { row, received }) => (Some(row), vec![received]),
                None => (None, Vec::new()),
            };
            let mut state = before;
            if change.has_news() {
                let (after, more) = run_machine(change, before, policy);
                state = after;
                events.extend(more);
            }
            let finished_at = (state.is_terminal() && !before.is_terminal()).then_some(now_ms);
            let count = events.len() as i64;
            for (i, e) in events.into_iter().enumerate() {
                self.writes.events.push(EventRow {
                    investigation_id: inv.clone(),
                    seq: first_seq + i as i64,
                    kind: e.kind,
                    data: e.data.to_string(),
                });
            }
            match new_row {
                Some(row) => {
                    let row = &mut self.writes.investigations[row];
                    row.state = state.as_str();
                    row.resolved_at = resolved_at;
                    row.finished_at = finished_at;
                    row.next_seq = first_seq + count;
                }
                None => self.writes.investigation_updates.push(InvestigationUpdate {
                    id: inv.clone(),
                    state: state.as_str(),
                    events: count,
                    resolved_at,
                    finished_at,
                }),
            }
        }
        touched.sort_unstable();
        touched.dedup();
        Ok((self.outcomes, self.writes, touched))
    }
}

impl EpisodeChange {
    /// Whether the batch did anything the episode's investigation hears about.
    fn has_news(&self) -> bool {
        !self.attached_alert_ids.is_empty() || self.resolved
    }
}

/// Feeds the state machine what the batch did to an episode, starting from `before`.
fn run_machine(change: &EpisodeChange, before: State, policy: &IngestPolicy) -> (State, Vec<EventBody>) {
    let mut inputs = Vec::new();
    if !change.attached_alert_ids.is_empty() {
        let mut quoted = change.attached_alert_ids.clone();
        quoted.truncate(ALERTS_PER_EVENT);
        inputs.push(Input::AlertsAttached { alert_ids: quoted });
    }
    if change.resolved {
        inputs.push(Input::EpisodeResolved { policy: policy.on_resolved });
    }
    let mut state = before;
    let mut events = Vec::new();
    for input in &inputs {
        let (next, commands) = step(state, input);
        state = next;
        events.extend(commands.into_iter().filter_map(|c| match c {
            Command::Record(e) => Some(e),
            Command::StartWork | Command::ReleaseLease => None,
        }));
    }
    // The event quotes a few ids but counts them all.
    for e in events.iter_mut().filter(|e| e.kind == "alerts.attached") {
        if let Some(obj) = e.data.as_object_mut() {
            obj.insert("count".into(), json!(change.attached_alert_ids.len()));
        }
    }
    (state, events)
}

fn alert_row<'a>(a: &'a Alert, id: &str, episode_id: &str, delivery_id: &str) -> Result<AlertRow<'a>> {
    Ok(AlertRow {
        id: id.to_string(),
        dedup_key: &a.dedup_key,
        episode_id: episode_id.to_string(),
        delivery_id: delivery_id.to_string(),
        source: a.source.as_str(),
        status: a.status.as_str(),
        fingerprint: &a.fingerprint,
        labels: json_text(&a.labels)?,
        annotations: json_text(&a.annotations)?,
        starts_at: a.starts_at.map(to_ms),
        ends_at: a.ends_at.map(to_ms),
        generator_url: a.generator_url.as_deref(),
        raw: a.raw.to_string(),
    })
}

/// Serializes what becomes a JSON text column or parameter.
pub(super) fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}
