//! The composition root: picks the real implementations of every seam, wires the
//! roles together, and runs them until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::engine::{PlaceholderInvestigator, Runner};
use crate::intake::writer::IntakeWriter;
use crate::store::{IngestPolicy, SqlStore, Store};
use crate::telemetry::Metrics;
use crate::web::{self, AppState};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tls(#[from] web::listener::TlsError),
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// Runs the agent role (and, for `all`, everything the embedded default holds) on
/// `listener` until `shutdown` is cancelled, then drains and returns.
///
/// The listener comes in bound, so tests can pass port 0 and read the address.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), AppError> {
    let config = Arc::new(config);
    let sql = Arc::new(SqlStore::open(&config.store.url, config.store.max_connections).await?);
    let store: Arc<dyn Store> = sql.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Metrics::new();

    let investigator = Arc::new(PlaceholderInvestigator { delay: config.engine.simulated_work });
    let runner = Arc::new(Runner::new(store.clone(), investigator, clock.clone(), config.engine.clone()));
    let policy = IngestPolicy { cooldown: config.episodes.cooldown, on_resolved: config.episodes.on_resolved };
    let writer_stop = CancellationToken::new();
    let (writer, writer_task) = IntakeWriter::start(
        store.clone(),
        policy,
        config.intake.batch_max,
        clock.clone(),
        runner.waker(),
        metrics.clone(),
        writer_stop.clone(),
    );

    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        config: config.clone(),
        store: store.clone(),
        writer,
        metrics,
        clock,
        ready: ready.clone(),
        shutdown: shutdown.clone(),
    };
    let router = web::router(state).layer(TraceLayer::new_for_http());
    // The runner drains at the same time as the HTTP server: it stops claiming as
    // soon as shutdown begins.
    let runner_task = tokio::spawn(runner.run(shutdown.child_token()));

    let local = listener.local_addr()?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    info!(address = %local, worker = %config.engine.worker_id, "inquest is listening on {scheme}://{local}");
    ready.store(true, Ordering::SeqCst);

    let app = router.into_make_service_with_connect_info::<web::listener::PeerAddr>();
    let stop = {
        let shutdown = shutdown.clone();
        let ready = ready.clone();
        async move {
            shutdown.cancelled().await;
            ready.store(false, Ordering::SeqCst);
            info!("shutting down: no new connections; finishing requests in flight");
        }
    };
    let grace = config.engine.grace_period;
    let serve = async {
        match &config.tls {
            Some(tls) => {
                let tls_config = web::listener::server_config(&tls.cert_file, &tls.key_file)?;
                let listener = web::listener::TlsListener::new(listener, tls_config)?;
                axum::serve(listener, app).with_graceful_shutdown(stop).await
            }
            None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
        }
        .map_err(AppError::from)
    };
    // Requests in flight get the grace period to finish once shutdown begins; every
    // 202 already sent is on disk, so cutting the rest off loses nothing answered.
    let served = tokio::select! {
        r = serve => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "requests still open after the grace period; closing them");
            Ok(())
        }
    };
    // Connections that outlived the grace period may still hold writer handles; the
    // writer answers what is queued and ends regardless.
    writer_stop.cancel();
    if let Err(e) = runner_task.await {
        warn!(error = %e, "the runner task ended abnormally");
    }
    if let Err(e) = writer_task.await {
        warn!(error = %e, "the intake writer ended abnormally");
    }
    sql.close().await;
    info!("stopped");
    served
}
