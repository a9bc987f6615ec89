//! Storing a batch of deliveries in one transaction: dedup, episodes, investigations.
//!
//! The decisions are made by pure functions (`intake::grouping::decide`,
//! `engine::step`); this file reads what they need and writes what they decide.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use super::sql::{Backend, SqlStore, append_events};
use super::{IngestOutcome, IngestPolicy, IngestRequest, Result, StoreError, to_ms};
use crate::engine::{Command, EventBody, Input, State, step};
use crate::intake::grouping::{self, Decision, EpisodeView};
use crate::intake::{Alert, AlertStatus};

/// What a batch did to one episode, applied once at the end of the batch.
struct EpisodeChange {
    id: String,
    investigation: Option<String>,
    attached_alert_ids: Vec<String>,
    added: i64,
    /// `Some(true)` when the latest delivery resolved everything, `Some(false)` when
    /// something fired again.
    resolved: Option<bool>,
}

/// The most alerts quoted in one event; the rest are counted.
const ALERTS_PER_EVENT: usize = 20;

impl SqlStore {
    pub(super) async fn ingest_batch(
        &self,
        batch: &[IngestRequest],
        policy: &IngestPolicy,
        now: DateTime<Utc>,
    ) -> Result<(Vec<IngestOutcome>, Vec<String>)> {
        let now_ms = to_ms(now);
        let cooldown_ms = policy.cooldown.as_millis() as i64;
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Replicas ingesting the same episode key must not both open an episode.
            // Locks are taken in key order so two batches cannot deadlock.
            let mut keys: Vec<&str> = batch.iter().map(|r| r.delivery.episode_key.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }

        let mut views: HashMap<String, Option<EpisodeView>> = HashMap::new();
        let mut changes: Vec<EpisodeChange> = Vec::new();
        let mut change_index: HashMap<String, usize> = HashMap::new();
        let mut seen: HashMap<String, (String, String)> = HashMap::new();
        let mut touched: Vec<String> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());

        for req in batch {
            let d = &req.delivery;
            let mut out = IngestOutcome::default();
            let mut ids: Vec<Option<String>> = Vec::with_capacity(d.alerts.len());
            for alert in &d.alerts {
                let existing = match seen.get(&alert.dedup_key) {
                    Some(hit) => Some(hit.clone()),
                    None => sqlx::query("SELECT id, episode_id FROM alerts WHERE dedup_key = $1")
                        .bind(&alert.dedup_key)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                        .transpose()?,
                };
                match existing {
                    Some((alert_id, episode_id)) => {
                        out.duplicates += 1;
                        push_unique(&mut out.episode_ids, episode_id);
                        ids.push(Some(alert_id));
                    }
                    None => ids.push(None),
                }
            }
            let fresh: Vec<&Alert> = d.alerts.iter().zip(&ids).filter(|(_, id)| id.is_none()).map(|(a, _)| a).collect();
            if fresh.is_empty() {
                out.alert_ids = ids.into_iter().flatten().collect();
                outcomes.push(out);
                continue;
            }

            if !views.contains_key(&d.episode_key) {
                let view = latest_episode(&mut tx, &d.episode_key).await?;
                views.insert(d.episode_key.clone(), view);
            }
            let view = views.get(&d.episode_key).cloned().flatten();
            let any_firing = fresh.iter().any(|a| a.status == AlertStatus::Firing);
            let decision = grouping::decide(view.as_ref(), any_firing, d.repeat, now_ms, cooldown_ms);

            let new_ids: Vec<String> = fresh.iter().map(|_| Uuid::now_v7().to_string()).collect();
            let (episode_id, opened_investigation) = match decision {
                Decision::Attach { episode_id } => (episode_id, None),
                Decision::Open { investigate } => {
                    let episode_id = Uuid::now_v7().to_string();
                    sqlx::query(
                        "INSERT INTO episodes (id, episode_key, source, title, team, service, opened_at, last_alert_at, alert_count) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0)",
                    )
                    .bind(&episode_id)
                    .bind(&d.episode_key)
                    .bind(d.source.as_str())
                    .bind(&d.title)
                    .bind(&req.team)
                    .bind(req.service.as_deref())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    out.new_episodes += 1;
                    let investigation = if investigate {
                        let inv = open_investigation(&mut tx, &episode_id, req, &fresh, &new_ids, now_ms).await?;
                        out.new_investigations.push(inv.clone());
                        touched.push(inv.clone());
                        Some(inv)
                    } else {
                        None
                    };
                    let state = investigation.as_ref().map(|_| State::Queued);
                    views.insert(
                        d.episode_key.clone(),
                        Some(EpisodeView {
                            id: episode_id.clone(),
                            last_alert_at_ms: now_ms,
                            investigation_state: state,
                        }),
                    );
                    (episode_id, investigation.map(|i| (i, true)))
                }
            };

            insert_alerts(&mut tx, req, &fresh, &new_ids, &episode_id, now_ms).await?;

            let idx = match change_index.get(&episode_id) {
                Some(i) => *i,
                None => {
                    let investigation = match &opened_investigation {
                        Some((inv, _)) => Some(inv.clone()),
                        None => episode_investigation(&mut tx, &episode_id).await?,
                    };
                    changes.push(EpisodeChange {
                        id: episode_id.clone(),
                        investigation,
                        attached_alert_ids: Vec::new(),
                        added: 0,
                        resolved: None,
                    });
                    change_index.insert(episode_id.clone(), changes.len() - 1);
                    changes.len() - 1
                }
            };
            let change = &mut changes[idx];
            change.added += fresh.len() as i64;
            if opened_investigation.is_none() {
                change.attached_alert_ids.extend(new_ids.iter().cloned());
            }
            change.resolved = Some(!any_firing);
            if let Some(Some(v)) = views.get_mut(&d.episode_key) {
                v.last_alert_at_ms = now_ms;
            }

            for (alert, id) in fresh.iter().zip(&new_ids) {
                seen.insert(alert.dedup_key.clone(), (id.clone(), episode_id.clone()));
            }
            let mut new_iter = new_ids.into_iter();
            out.alert_ids = ids
                .into_iter()
                .map(|id| id.or_else(|| new_iter.next()))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
            push_unique(&mut out.episode_ids, episode_id);
            outcomes.push(out);
        }

        for change in &changes {
            apply_episode_change(&mut tx, change, policy, now_ms).await?;
            if let Some(inv) = &change.investigation {
                touched.push(inv.clone());
            }
        }
        tx.commit().await?;
        touched.sort_unstable();
        touched.dedup();
        Ok((outcomes, touched))
    }
}

async fn latest_episode(tx: &mut Transaction<'static, Any>, key: &str) -> Result<Option<EpisodeView>> {
    let row = sqlx::query(
        "SELECT e.id, e.last_alert_at, i.state FROM episodes e LEFT JOIN investigations i ON i.id = e.investigation_id \
         WHERE e.episode_key = $1 ORDER BY e.opened_at DESC, e.id DESC LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let state: Option<String> = row.try_get(2)?;
    Ok(Some(EpisodeView {
        id: row.try_get(0)?,
        last_alert_at_ms: row.try_get(1)?,
        investigation_state: state.as_deref().and_then(State::parse),
    }))
}

async fn episode_investigation(tx: &mut Transaction<'static, Any>, episode_id: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT investigation_id FROM episodes WHERE id = $1")
        .bind(episode_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

async fn open_investigation(
    tx: &mut Transaction<'static, Any>,
    episode_id: &str,
    req: &IngestRequest,
    alerts: &[&Alert],
    alert_ids: &[String],
    now_ms: i64,
) -> Result<String> {
    let id = Uuid::now_v7().to_string();
    let d = &req.delivery;
    sqlx::query(
        "INSERT INTO investigations (id, episode_id, title, team, service, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6)",
    )
    .bind(&id)
    .bind(episode_id)
    .bind(&d.title)
    .bind(&req.team)
    .bind(req.service.as_deref())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE episodes SET investigation_id = $2 WHERE id = $1")
        .bind(episode_id)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
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
    let event = EventBody::new(
        "alert.received",
        json!({
            "source": d.source, "title": d.title, "team": req.team, "service": req.service,
            "episode_id": episode_id, "episode_key": d.episode_key,
            "alert_count": alerts.len(), "alerts": quoted,
        }),
    );
    append_events(tx, &id, &[event], now_ms).await?;
    Ok(id)
}

async fn insert_alerts(
    tx: &mut Transaction<'static, Any>,
    req: &IngestRequest,
    alerts: &[&Alert],
    ids: &[String],
    episode_id: &str,
    now_ms: i64,
) -> Result<()> {
    let delivery_id = Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO deliveries (id, source, body, received_at) VALUES ($1, $2, $3, $4)")
        .bind(&delivery_id)
        .bind(req.delivery.source.as_str())
        .bind(&req.body)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    for (a, id) in alerts.iter().zip(ids) {
        let labels = serde_json::to_string(&a.labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let annotations = serde_json::to_string(&a.annotations).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO alerts (id, dedup_key, episode_id, delivery_id, source, status, fingerprint, labels, annotations, \
             starts_at, ends_at, generator_url, raw, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id)
        .bind(&a.dedup_key)
        .bind(episode_id)
        .bind(&delivery_id)
        .bind(a.source.as_str())
        .bind(a.status.as_str())
        .bind(&a.fingerprint)
        .bind(labels)
        .bind(annotations)
        .bind(a.starts_at.map(to_ms))
        .bind(a.ends_at.map(to_ms))
        .bind(a.generator_url.as_deref())
        .bind(a.raw.to_string())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Writes a batch's effect on one episode and, through the state machine, on its
/// investigation.
async fn apply_episode_change(
    tx: &mut Transaction<'static, Any>,
    change: &EpisodeChange,
    policy: &IngestPolicy,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE episodes SET alert_count = alert_count + $2, last_alert_at = $3, \
         resolved_at = CASE WHEN $4 = 1 THEN $3 WHEN $4 = 0 THEN NULL ELSE resolved_at END WHERE id = $1",
    )
    .bind(&change.id)
    .bind(change.added)
    .bind(now_ms)
    .bind(change.resolved.map_or(-1i64, i64::from))
    .execute(&mut **tx)
    .await?;
    let Some(inv) = &change.investigation else { return Ok(()) };
    let mut inputs = Vec::new();
    if !change.attached_alert_ids.is_empty() {
        let mut quoted = change.attached_alert_ids.clone();
        quoted.truncate(ALERTS_PER_EVENT);
        inputs.push(Input::AlertsAttached { alert_ids: quoted });
    }
    if change.resolved == Some(true) {
        inputs.push(Input::EpisodeResolved { policy: policy.on_resolved });
    }
    if inputs.is_empty() {
        return Ok(());
    }
    // Locks the row (PostgreSQL) and reads the state the machine starts from.
    let row = sqlx::query("UPDATE investigations SET updated_at = $2 WHERE id = $1 RETURNING state")
        .bind(inv)
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await?;
    let before: String = row.try_get(0)?;
    let before = State::parse(&before).ok_or_else(|| StoreError::Corrupt(format!("unknown state `{before}`")))?;
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
    if state != before || change.resolved == Some(true) {
        sqlx::query(
            "UPDATE investigations SET state = $2, resolved_at = COALESCE($3, resolved_at), \
             finished_at = CASE WHEN $4 = 1 THEN $5 ELSE finished_at END WHERE id = $1",
        )
        .bind(inv)
        .bind(state.as_str())
        .bind(if change.resolved == Some(true) { Some(now_ms) } else { None })
        .bind(i64::from(state.is_terminal() && !before.is_terminal()))
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    append_events(tx, inv, &events, now_ms).await
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}
