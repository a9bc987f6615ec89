//! Domain servers: the tools of one data-platform backend each, behind [`crate::mcp::Domain`].

pub mod airflow;
pub mod presto;
pub mod spark;
mod text;
