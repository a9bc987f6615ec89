//! GitHub: the approval gates of drafted pull requests and the webhooks that move them.
//!
//! - `events`: the webhook payloads the gate follows, typed;
//! - `signature`: `X-Hub-Signature-256`;
//! - `gate`: what an event does to a gate (pure);
//! - `store`: deliveries (the durable queue) and gates, with their log;
//! - `webhook`: the route and the processor between them;
//! - `codehost`: the `CodeHost` seam (GitHub's git data, pulls, labels, comments);
//! - `draft`: a draft as data and its pure decisions (next step, edits, digest, markers);
//! - `drafter`: carries a draft through its steps, storing each, safe to repeat.
//!
//! Not built yet: the octocrab `CodeHost`, the GitHub test server it is tested
//! against, making gated PRs ready (or closing them) as the gate decides, and asking
//! the registry for the approval.

pub mod codehost;
pub mod draft;
pub mod drafter;
pub mod events;
pub mod gate;
pub mod signature;
pub mod store;
pub mod webhook;

pub use gate::{Gate, GateState, Reviewers};
pub use store::GithubStore;
pub use webhook::Webhooks;
