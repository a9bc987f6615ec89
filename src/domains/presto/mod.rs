//! The Presto / Trino domain.

pub mod config;
pub mod sql;
