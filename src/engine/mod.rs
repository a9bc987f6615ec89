//! Investigations: the pure state machine (`machine`), storm-control limits (`quota`),
//! the work seam (`work`) and the runner that leases work and carries out commands.

pub mod machine;
pub mod quota;
pub mod runner;
pub mod work;

pub use machine::{Command, EventBody, Input, State, step};
pub use quota::Limits;
pub use runner::Runner;
pub use work::{Investigator, PlaceholderInvestigator, Progress, Unrecorded, WorkContext, WorkError};
