//! Carrying out the machine's answers: load a request, decide (pure), store the outcome
//! with its audit records, and retry when someone else changed the request in between.
//! Also the expiry sweep. The routes call in here; nothing here knows about HTTP bodies.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::machine::{self, Effect, Refusal, Transition};
use super::routes::{ApprovalContext, ApprovalError};
use super::store::ApprovalStoreError;
use super::{ApprovalRequest, ApprovalStore};
use crate::clock::Clock;
use crate::identity::Principal;
use crate::registry::audit::AuditEntry;
use crate::store::{from_ms, to_ms};

/// Attempts at a compare-and-set write before answering 409.
const SAVE_ATTEMPTS: usize = 5;
/// Requests the sweep expires per round.
const SWEEP_BATCH: i64 = 500;
/// The actor of what time itself does (expiry).
const SYSTEM_ACTOR: &str = "system";

/// Marks every open request past its expiry as expired, each with its audit record.
/// Returns how many it expired. Requests changed concurrently are left to the next round.
pub async fn sweep_expired(store: &dyn ApprovalStore, now: DateTime<Utc>) -> Result<usize, ApprovalStoreError> {
    let now = from_ms(to_ms(now));
    let mut expired = 0;
    for req in store.open_past_expiry(now, SWEEP_BATCH).await? {
        if let Some(t) = machine::expire(&req, now)
            && store.save(&t.request, req.version, &effect_entries(&t, SYSTEM_ACTOR, now)).await?
        {
            info!(approval_id = %req.id, "approval request expired");
            expired += 1;
        }
    }
    Ok(expired)
}

/// Runs [`sweep_expired`] every `every` until `shutdown`.
pub async fn run_sweeper(
    store: Arc<dyn ApprovalStore>,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = sweep_expired(store.as_ref(), clock.now()).await {
            warn!(%error, "approval expiry sweep failed; retrying next round");
        }
    }
}

/// Loads the request, applies `step`, and stores the result with its audit records
/// (each carrying `detail`: what the caller sent); on a refusal, records the refusal
/// (and, when the request turned out expired, stores it as expired). Retries when the
/// request changed between reading and writing.
pub(super) async fn apply<F>(
    ctx: &ApprovalContext,
    id: &str,
    caller: &Principal,
    refused_action: &str,
    detail: Value,
    step: F,
) -> Result<(ApprovalRequest, DateTime<Utc>), ApprovalError>
where
    F: Fn(&ApprovalRequest, DateTime<Utc>) -> Result<Transition, Refusal>,
{
    for _ in 0..SAVE_ATTEMPTS {
        let now = ctx.now();
        let current = ctx.store.approval(id).await?.ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        match step(&current, now) {
            Ok(t) => {
                let mut entries = effect_entries(&t, &caller.id(), now);
                entries.iter_mut().for_each(|e| merge(&mut e.data, detail.clone()));
                if ctx.store.save(&t.request, current.version, &entries).await? {
                    return Ok((t.request, now));
                }
            }
            Err(refusal) => {
                let expiry = if refusal == Refusal::Expired { machine::expire(&current, now) } else { None };
                let mut entries = expiry.as_ref().map(|t| effect_entries(t, SYSTEM_ACTOR, now)).unwrap_or_default();
                entries.push(refusal_entry(refused_action, &current, caller, refusal, &detail, now));
                let stored = match &expiry {
                    Some(t) => ctx.store.save(&t.request, current.version, &entries).await?,
                    None => {
                        ctx.store.append_entries(&entries).await.map_err(ApprovalStoreError::from)?;
                        true
                    }
                };
                if stored {
                    info!(approval_id = %id, actor = %caller.id(), reason = refusal.code(), "approval action refused");
                    return Err(refusal.into());
                }
            }
        }
    }
    Err(ApprovalError::Contended)
}

/// One audit record per effect of `t`.
pub(super) fn effect_entries(t: &Transition, actor: &str, now: DateTime<Utc>) -> Vec<AuditEntry> {
    let req = &t.request;
    t.effects
        .iter()
        .map(|effect| {
            let mut data = json!({"digest": req.digest, "state": req.state});
            let extra = match effect {
                Effect::Created => json!({
                    "kind": req.kind(),
                    "resource": req.resource,
                    "requester": req.requester.id(),
                    "on_behalf_of": req.on_behalf_of.as_ref().map(Principal::id),
                    "approver_policy": req.policy,
                    "expires_at": req.expires_at,
                }),
                Effect::ApprovalCounted { have, need, .. } => json!({"have": have, "need": need}),
                Effect::Approved { .. } => {
                    json!({"approved_by": req.approvals.iter().map(|v| v.by.as_str()).collect::<Vec<_>>()})
                }
                Effect::Declined { .. } | Effect::Expired | Effect::Revoked { .. } | Effect::Consumed { .. } => {
                    json!({})
                }
            };
            merge(&mut data, extra);
            AuditEntry {
                at: now,
                actor: actor.to_string(),
                action: effect.audit_action().to_string(),
                subject: format!("approval:{}", req.id),
                data,
            }
        })
        .collect()
}

fn refusal_entry(
    action: &str,
    req: &ApprovalRequest,
    caller: &Principal,
    refusal: Refusal,
    detail: &Value,
    now: DateTime<Utc>,
) -> AuditEntry {
    let mut data = json!({"reason": refusal.code(), "digest": req.digest, "state": req.state});
    merge(&mut data, detail.clone());
    AuditEntry {
        at: now,
        actor: caller.id(),
        action: action.to_string(),
        subject: format!("approval:{}", req.id),
        data,
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}
