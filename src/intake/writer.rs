//! Group commit: many intake requests, one transaction.
//!
//! Handlers hand their parsed delivery to one writer task and wait. The writer takes
//! whatever has queued up (up to `batch_max`), stores it in one transaction, and only
//! then answers each handler. Every answer still means "on disk"; the fsync cost is
//! shared by the batch instead of paid per request.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::clock::Clock;
use crate::store::{IngestOutcome, IngestPolicy, IngestRequest, Store};
use crate::telemetry::{Metrics, SourceLabel};

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the store could not take the alerts: {0}")]
    Store(String),
    #[error("intake is shutting down")]
    Closed,
}

struct Job {
    request: IngestRequest,
    reply: oneshot::Sender<Result<IngestOutcome, WriteError>>,
}

/// Handle to the writer task; cheap to clone. The task ends once every handle is
/// dropped and the queue is drained.
#[derive(Clone)]
pub struct IntakeWriter {
    tx: mpsc::Sender<Job>,
}

impl IntakeWriter {
    /// Starts the writer. `new_work` is notified when a batch opened investigations.
    /// Once `stop` is cancelled the writer takes nothing new (later submits get
    /// `Closed`), answers everything already queued, and ends, even while handles
    /// are still held by connections that have not finished.
    pub fn start(
        store: Arc<dyn Store>,
        policy: IngestPolicy,
        batch_max: usize,
        clock: Arc<dyn Clock>,
        new_work: Arc<Notify>,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> (IntakeWriter, JoinHandle<()>) {
        // Room for a few batches; beyond that, handlers wait (backpressure).
        let (tx, rx) = mpsc::channel(batch_max * 4);
        let writer = Writer { store, policy, batch_max, clock, new_work, metrics };
        let task = tokio::spawn(writer.run(rx, stop));
        (IntakeWriter { tx }, task)
    }

    /// Stores one delivery; returns once it is durable.
    pub async fn submit(&self, request: IngestRequest) -> Result<IngestOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { request, reply }).await.map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?
    }
}

/// The writer task's state.
struct Writer {
    store: Arc<dyn Store>,
    policy: IngestPolicy,
    batch_max: usize,
    clock: Arc<dyn Clock>,
    new_work: Arc<Notify>,
    metrics: Metrics,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Job>, stop: CancellationToken) {
        let Writer { store, policy, batch_max, clock, new_work, metrics } = self;
        let mut jobs = Vec::with_capacity(batch_max);
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut jobs, batch_max) => n,
                _ = stop.cancelled(), if !rx.is_closed() => {
                    // Refuse new work; what is queued is still received and answered.
                    rx.close();
                    continue;
                }
            };
            if received == 0 {
                break;
            }
            let (requests, replies): (Vec<IngestRequest>, Vec<_>) =
                jobs.drain(..).map(|j| (j.request, j.reply)).unzip();
            // What the metrics need once the store has taken the requests.
            let sent: Vec<(&'static str, usize)> =
                requests.iter().map(|r| (r.delivery.source.as_str(), r.delivery.alerts.len())).collect();
            debug!(batch = requests.len(), "storing a batch of deliveries");
            match store.ingest(requests, &policy, clock.now()).await {
                Ok(outcomes) => {
                    let mut opened = false;
                    for ((&(source, _), reply), outcome) in sent.iter().zip(replies).zip(outcomes) {
                        let new = outcome.alert_ids.len().saturating_sub(outcome.duplicates) as u64;
                        metrics.alert(source, "accepted", new);
                        metrics.alert(source, "duplicate", outcome.duplicates as u64);
                        metrics
                            .episodes
                            .get_or_create(&SourceLabel { source: source.into() })
                            .inc_by(outcome.new_episodes as u64);
                        metrics.investigations_created.inc_by(outcome.new_investigations.len() as u64);
                        opened |= !outcome.new_investigations.is_empty();
                        // The handler may have gone (client hung up); the data is stored anyway.
                        let _ = reply.send(Ok(outcome));
                    }
                    if opened {
                        new_work.notify_one();
                    }
                }
                Err(e) => {
                    error!(error = %e, batch = sent.len(), "storing a batch failed; answering 503");
                    for (&(source, alerts), reply) in sent.iter().zip(replies) {
                        metrics.alert(source, "unavailable", alerts as u64);
                        let _ = reply.send(Err(WriteError::Store(e.to_string())));
                    }
                }
            }
        }
    }
}
