//! The runner: claims investigations by lease, runs their work, and carries out what
//! the state machine commands. All IO of the engine lives here.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::machine::{Command, EventBody, Input, State, step};

use super::quota::Limits;
use super::work::{Investigator, Progress, WorkContext, WorkError};
use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::store::{Claim, Lease, Store, StoreError, Transition};

pub struct Runner {
    store: Arc<dyn Store>,
    investigator: Arc<dyn Investigator>,
    clock: Arc<dyn Clock>,
    cfg: EngineConfig,
    limits: Limits,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(
        store: Arc<dyn Store>,
        investigator: Arc<dyn Investigator>,
        clock: Arc<dyn Clock>,
        cfg: EngineConfig,
    ) -> Runner {
        let limits = Limits::from_config(&cfg);
        Runner { store, investigator, clock, cfg, limits, wake: Arc::new(Notify::new()) }
    }

    /// Notifying this makes the runner look for work now instead of at its next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Claims and runs work until `shutdown`; then waits up to the grace period for
    /// running work, and hands what is still running back to the queue.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let suspend = CancellationToken::new();
        info!(worker = %self.cfg.worker_id, slots = self.cfg.slots, "runner started");
        loop {
            let capacity = self.cfg.slots.saturating_sub(tasks.len());
            let mut full_batch = false;
            if capacity > 0 {
                match self
                    .store
                    .claim(&self.cfg.worker_id, capacity, &self.limits, self.cfg.lease_ttl, self.clock.now())
                    .await
                {
                    Ok(claims) => {
                        full_batch = claims.len() == capacity;
                        for claim in claims {
                            let span = info_span!("investigation", investigation_id = %claim.lease.investigation_id, team = %claim.investigation.team);
                            tasks.spawn(self.clone().run_one(claim, suspend.child_token()).instrument(span));
                        }
                    }
                    Err(error) => warn!(%error, "claiming work failed; will try again"),
                }
            }
            if full_batch {
                // There may be more; look again once a slot frees up.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = tasks.join_next() => {}
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!(running = tasks.len(), grace = ?self.cfg.grace_period, "runner draining");
        let drained =
            tokio::time::timeout(self.cfg.grace_period, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            suspend.cancel();
            // Suspending only writes one transition each; give it a bounded moment.
            let _ = tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} })
                .await;
        }
        info!("runner stopped");
    }

    async fn run_one(self: Arc<Self>, claim: Claim, suspend: CancellationToken) {
        // The claim itself recorded `started`/`resumed` and put the row in `running`.
        let lease = claim.lease.clone();
        if !claim.start {
            return;
        }

        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.store.clone(),
            self.clock.clone(),
            lease.clone(),
            self.cfg.lease_ttl,
            lost.clone(),
        ));
        let progress = Arc::new(LeaseProgress {
            store: self.store.clone(),
            clock: self.clock.clone(),
            lease: lease.clone(),
            state: tokio::sync::Mutex::new(State::Running),
        });
        let ctx = WorkContext { investigation: claim.investigation, store: self.store.clone(), progress };
        let result = tokio::select! {
            r = self.investigator.investigate(&ctx) => Some(r),
            _ = suspend.cancelled() => None,
            _ = lost.cancelled() => {
                warn!("lease lost; another worker owns this investigation now");
                heartbeat.abort();
                return;
            }
        };
        heartbeat.abort();

        let (mut events, input, summary) = match result {
            Some(Ok(outcome)) => {
                let summary = outcome.summary.clone();
                (outcome.events, Input::WorkFinished { summary: outcome.summary }, Some(summary))
            }
            Some(Err(error)) => {
                warn!(%error, "investigation work failed");
                let attempt = u32::try_from(claim.failures + 1).unwrap_or(u32::MAX);
                (
                    Vec::new(),
                    Input::WorkFailed { error: error.to_string(), attempt, max_attempts: self.cfg.max_attempts },
                    None,
                )
            }
            None => (Vec::new(), Input::Suspend, None),
        };
        let failure = matches!(input, Input::WorkFailed { .. });
        let (state, commands) = step(State::Running, &input);
        let (more, release) = split(commands);
        events.extend(more);
        let change = Transition { to: Some(state), events: &events, release, summary: summary.as_deref(), failure };
        if self.commit(&lease, &change).await {
            info!(state = state.as_str(), "investigation step recorded");
        }
    }

    /// Writes a transition under the lease, retrying transient store errors. `false`
    /// means the lease is gone (or the store stayed down), and the work must stop.
    async fn commit(&self, lease: &Lease, change: &Transition<'_>) -> bool {
        let to = change.to.map_or("unchanged", State::as_str);
        let attempt = || async { self.store.transition(lease, change, self.clock.now()).await };
        let result = attempt
            .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(50)).with_max_times(5))
            .when(|e: &StoreError| matches!(e, StoreError::Database(_)))
            .notify(|error, after| warn!(%error, ?after, "recording a transition failed; retrying"))
            .await;
        match result {
            Ok(true) => true,
            Ok(false) => {
                warn!(to, "lease lost before the transition was recorded; dropping it");
                false
            }
            Err(error) => {
                warn!(%error, "could not record a transition; the lease will expire and another worker will resume");
                false
            }
        }
    }
}

/// Writes what the work records as it goes, through the state machine, under its lease.
struct LeaseProgress {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    lease: Lease,
    state: tokio::sync::Mutex<State>,
}

#[async_trait::async_trait]
impl Progress for LeaseProgress {
    async fn record(&self, input: Input) -> Result<(), WorkError> {
        let mut state = self.state.lock().await;
        let (next, commands) = step(*state, &input);
        let (events, _) = split(commands);
        if next == *state && events.is_empty() {
            return Ok(());
        }
        let change = Transition { to: Some(next), events: &events, ..Default::default() };
        if !self.store.transition(&self.lease, &change, self.clock.now()).await? {
            return Err(WorkError::Failed("the lease was lost".into()));
        }
        *state = next;
        Ok(())
    }
}

/// Renews the lease at a third of its lifetime; cancels `lost` when it is gone.
async fn heartbeat(store: Arc<dyn Store>, clock: Arc<dyn Clock>, lease: Lease, ttl: Duration, lost: CancellationToken) {
    let period = ttl / 3;
    loop {
        tokio::time::sleep(period).await;
        match store.renew(&lease, ttl, clock.now()).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return;
            }
            // The lease may still hold; try again rather than abandon healthy work.
            Err(error) => warn!(%error, "renewing the lease failed"),
        }
    }
}

/// Separates commands into events to record and whether to release the lease.
/// (`StartWork` only follows a claim, which the store handles.)
fn split(commands: Vec<Command>) -> (Vec<EventBody>, bool) {
    let mut events = Vec::new();
    let mut release = false;
    for c in commands {
        match c {
            Command::Record(e) => events.push(e),
            Command::StartWork => {}
            Command::ReleaseLease => release = true,
        }
    }
    (events, release)
}
