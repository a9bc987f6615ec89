//! Logs (tracing, text or JSON) and Prometheus metrics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::engine::State;
use crate::store::Store;

/// Installs the global subscriber. Called once, by the binary.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_env("INQUEST_LOG").unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub source: String,
    /// accepted, duplicate, bad_request, unauthorized, too_large, unavailable
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Every metric Inquest exports. Cloning shares the underlying values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub alerts: Family<AlertLabels, Counter>,
    pub episodes: Family<SourceLabel, Counter>,
    pub investigations_created: Counter,
    pub investigations: Family<StateLabel, Gauge>,
    pub intake_latency: Family<SourceLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("inquest");
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("alerts", "Alerts received, by source and outcome", alerts.clone());
        let episodes = Family::<SourceLabel, Counter>::default();
        registry.register("episodes", "Episodes opened, by source", episodes.clone());
        let investigations_created = Counter::default();
        registry.register("investigations_created", "Investigations opened", investigations_created.clone());
        let investigations = Family::<StateLabel, Gauge>::default();
        registry.register("investigations", "Investigations in the store, by state", investigations.clone());
        let intake_latency = Family::<SourceLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "intake_latency_seconds",
            "Time from request to durable answer at the alert intake",
            intake_latency.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            alerts,
            episodes,
            investigations_created,
            investigations,
            intake_latency,
        }
    }

    pub fn alert(&self, source: &str, outcome: &str, n: u64) {
        self.alerts.get_or_create(&AlertLabels { source: source.into(), outcome: outcome.into() }).inc_by(n);
    }

    /// Refreshes the gauges that are read from the store, then encodes everything.
    pub async fn render(&self, store: &dyn Store) -> Result<String, std::fmt::Error> {
        if let Ok(counts) = store.count_by_state().await {
            for s in State::ALL {
                let n = counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
                self.investigations.get_or_create(&StateLabel { state: s.as_str().into() }).set(n);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
