//! The MCP server framework: a domain author implements [`Domain`] (tools over one
//! backend) and gets Streamable HTTP on both protocol revisions, authentication,
//! per-tool authorization from the registry, approvals for sensitive tools, metrics,
//! usage reporting and audit.

pub mod tool;

pub use tool::{Domain, Hints, NoProgress, Progress, ToolCall, ToolError, ToolSpec, parse_args, retry_read};
