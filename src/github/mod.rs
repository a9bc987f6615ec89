//! GitHub: the approval gates of drafted pull requests and the webhooks that move them.
//!
//! - `events`: the webhook payloads the gate follows, typed;
//! - `signature`: `X-Hub-Signature-256`;
//! - `gate`: what an event does to a gate (pure);
//! - `store`: deliveries (the durable queue) and gates, with their log;
//! - `webhook`: the route and the processor between them.
//!
//! Drafting the pull requests themselves (`CodeHost`, octocrab) builds on these.

pub mod events;
pub mod gate;
pub mod signature;
pub mod store;
pub mod webhook;

pub use gate::{Gate, GateState, Reviewers};
pub use store::GithubStore;
pub use webhook::Webhooks;
