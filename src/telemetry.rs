//! Logs (tracing, text or JSON) and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TeamLabel {
    pub team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub team: String,
    /// prompt or completion
    pub kind: String,
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
    /// What the planner's model used, per team (the report has it per investigation).
    pub llm_tokens: Family<TokenLabels, Counter>,
    pub llm_cost: Family<TeamLabel, Counter<f64, AtomicU64>>,
    pub tool_calls: Family<TeamLabel, Counter>,
    /// Minutes of manual work the playbooks estimate for investigations that found a cause.
    pub minutes_saved: Family<TeamLabel, Counter>,
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
        let llm_tokens = Family::<TokenLabels, Counter>::default();
        registry.register("llm_tokens", "Tokens the planner's model used, by team and kind", llm_tokens.clone());
        let llm_cost = Family::<TeamLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "llm_cost_usd",
            "Dollars the planner's model cost, by team (from the price table)",
            llm_cost.clone(),
        );
        let tool_calls = Family::<TeamLabel, Counter>::default();
        registry.register("investigation_tool_calls", "Tool calls made by investigations, by team", tool_calls.clone());
        let minutes_saved = Family::<TeamLabel, Counter>::default();
        registry.register(
            "minutes_saved",
            "Manual minutes the playbooks estimate for investigations that found a cause, by team",
            minutes_saved.clone(),
        );
        Metrics {
            llm_tokens,
            llm_cost,
            tool_calls,
            minutes_saved,
            registry: Arc::new(registry),
            alerts,
            episodes,
            investigations_created,
            investigations,
            intake_latency,
        }
    }

    /// Counts what one investigation (or answer) spent, for its team.
    pub fn investigation_usage(&self, team: &str, report: &crate::agent::Report) {
        let u = &report.usage;
        let tokens = |kind: &str| TokenLabels { team: team.into(), kind: kind.into() };
        self.llm_tokens.get_or_create(&tokens("prompt")).inc_by(u.prompt_tokens);
        self.llm_tokens.get_or_create(&tokens("completion")).inc_by(u.completion_tokens);
        let team = TeamLabel { team: team.into() };
        self.llm_cost.get_or_create(&team).inc_by(u.cost_usd);
        self.tool_calls.get_or_create(&team).inc_by(u64::from(u.tool_calls));
        if report.root_cause.is_some() {
            self.minutes_saved.get_or_create(&team).inc_by(u64::from(report.manual_minutes.unwrap_or(0)));
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
