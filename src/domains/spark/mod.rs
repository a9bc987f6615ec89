//! The Spark domain: read-only tools over the Spark History Server's REST API, for
//! finding out why a Spark application failed or slowed down (failed stages with their
//! tracebacks, failed tasks, skew and spill, lost executors, configuration changes).
//!
//! `client` speaks HTTP, `model` is what the server answers, `analysis` holds the pure
//! summaries (it never does IO) and `tools` maps calls onto both.

pub mod analysis;
pub mod client;
pub mod config;
pub mod model;
pub mod tools;

use async_trait::async_trait;
use serde_json::Value;
use tracing::Instrument;

pub use client::{BACKEND, ClientError, SparkClient};
pub use config::SparkConfig;

use crate::mcp::{Domain, ToolCall, ToolError, ToolSpec};

/// The Spark domain server's tools, over one History Server.
#[derive(Debug, Clone)]
pub struct SparkDomain {
    client: SparkClient,
    max_items: usize,
}

impl SparkDomain {
    /// A domain for `config`, which should have passed [`SparkConfig::validate`].
    pub fn new(config: &SparkConfig) -> Result<SparkDomain, ClientError> {
        Ok(SparkDomain { client: SparkClient::new(config)?, max_items: config.max_items })
    }

    pub fn client(&self) -> &SparkClient {
        &self.client
    }
}

#[async_trait]
impl Domain for SparkDomain {
    fn id(&self) -> &'static str {
        "spark"
    }

    fn description(&self) -> &'static str {
        "Spark History Server: applications, failed stages and tasks, executors, configuration"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        tools::specs()
    }

    fn backend(&self) -> String {
        format!("{BACKEND} at {}", self.client.address())
    }

    async fn healthy(&self) -> Result<(), ToolError> {
        self.client.version().await.map(|_| ())
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<Value, ToolError> {
        // Instrumented rather than entered: an entered span guard must not live across awaits.
        let span = tracing::info_span!("spark_tool", tool = call.tool, backend = %self.client.address());
        let work = tools::call(&self.client, self.max_items, call.tool, &call.args).instrument(span);
        // The framework's deadline and the client's cancel both end the call; requests
        // in flight are dropped with it (they only read).
        tokio::select! {
            result = work => result,
            () = call.cancel.cancelled() => Err(ToolError::Cancelled),
            () = tokio::time::sleep(call.deadline) => Err(ToolError::Timeout(call.deadline)),
        }
    }
}
