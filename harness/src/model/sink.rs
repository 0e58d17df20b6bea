//! The Sink trait: every report format consumes events through it, so adding a format
//! never touches the runner.

use std::path::PathBuf;

use super::event::Event;

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
