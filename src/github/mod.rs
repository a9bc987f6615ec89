//! GitHub: the approval gates of drafted pull requests and the webhooks that move them.
//!
//! - `events`: the webhook payloads the gate follows, typed;
//! - `signature`: `X-Hub-Signature-256`;
//! - `gate`: what an event does to a gate (pure);
//! - `store`: deliveries (the durable queue) and gates, with their log;
//! - `webhook`: the route and the processor between them;
//! - `codehost`: the `CodeHost` seam (GitHub's git data, pulls, labels, comments);
//! - `codeowners`: who owns the files a draft changes (CODEOWNERS, pure);
//! - `draft`: a draft as data and its pure decisions (next step, edits, digest, markers);
//! - `drafter`: carries a draft through its steps, storing each, safe to repeat.
//!
//! - `approval`: asking the registry's approval service for a gate's approval and
//!   applying the decision (`GateWatch`);
//! - `octo`: the `CodeHost` on octocrab.

pub mod approval;
pub mod codehost;
pub mod codeowners;
pub mod draft;
pub mod drafter;
pub mod events;
pub mod gate;
pub mod octo;
pub mod signature;
pub mod store;
pub mod webhook;

pub use approval::{GateWatch, PullApprovals, RegistryPullApprovals};
pub use gate::{Gate, GateState, Reviewers};
pub use store::GithubStore;
pub use webhook::Webhooks;
