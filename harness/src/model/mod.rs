//! What every layer shares: the run records (the run.json schema), the events the
//! runner emits, the Sink trait the report formats implement, and the names of the
//! files in a run folder. Nothing here imports anything above it.

pub(crate) mod event;
pub mod exit;
pub(crate) mod record;
pub mod result_file;
pub mod run_file;
pub(crate) mod sink;
pub(crate) mod target;
pub mod timings;

pub use event::{Emitter, Event};
pub use record::DriverBuilds;
pub use sink::{ReportError, Sink};
