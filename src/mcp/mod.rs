//! The MCP server framework: a domain author implements [`Domain`] (tools over one
//! backend) and gets Streamable HTTP on both protocol revisions, authentication,
//! per-tool authorization from the registry, approvals for sensitive tools, metrics,
//! usage reporting and audit.
//!
//! - [`tool`]: the contract with domain authors.
//! - [`http`]: [`serve`] builds one server's router (rmcp Streamable HTTP, Origin/Host
//!   checks, RFC 9728 metadata, metrics).
//! - [`server`]: the rmcp handler: listing, calling, progress, cancellation, deadline.
//! - [`auth`]: mTLS SPIFFE IDs and bearer JWTs for this server's audience.
//! - [`authz`]: the registry's policy, cached with a staleness bound, decided per tool.
//! - [`approval`]: sensitive tools wait for a consumed approval (URL elicitation,
//!   sealed `requestState`).
//! - [`observe`]: metrics, usage reports, audit records.
//! - [`register`]: publishing the server's own `server.json` at start.
//! - [`settings`], [`domains`]: how a server is configured and where domains are built.
//! - [`standalone`]: one server on its own TLS listener from the configuration, with
//!   `/healthz` and `/readyz` (`inquest server <id>`, or a domain team's own binary).

pub mod approval;
pub mod auth;
pub mod authz;
pub mod domains;
pub mod http;
pub mod observe;
pub mod register;
pub mod server;
pub mod settings;
pub mod standalone;
pub mod tool;

pub use http::{Deps, RegistryLink, ServeError, Served, serve};
pub use settings::{AuthMode, ServerSettings};
pub use tool::{Domain, Hints, NoProgress, Progress, ToolCall, ToolError, ToolSpec, parse_args, retry_read};
