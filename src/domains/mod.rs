//! Domain servers: the tools of one data-platform system each, over its own backend.
pub mod airflow;
