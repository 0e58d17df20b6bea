//! Report sinks: each output format consumes runner events; adding a format never
//! touches the runner.

pub mod html;
pub mod json;
pub mod junit;
pub mod live;
pub mod manifest;
pub mod merge;
pub mod recovery;
pub mod terminal;

use std::path::PathBuf;

use crate::runner::Event;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode {what}: {message}")]
    Encode { what: &'static str, message: String },
}

/// A consumer of runner events.
pub trait Sink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError>;
}
