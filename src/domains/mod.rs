//! Domain servers: each one a [`crate::mcp::Domain`] (tools over one backend).

pub mod presto;
