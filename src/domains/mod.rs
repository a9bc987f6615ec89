//! Domain servers: the tools of one data-platform backend each, behind [`crate::mcp::Domain`].

pub mod spark;
