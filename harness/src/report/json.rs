//! run.json: the machine-readable record of a run, rewritten atomically after every
//! scenario, so an interrupted run still leaves a complete, valid file.

use std::path::PathBuf;

use crate::model::run_file::write_run_json;
use crate::model::{Event, ReportError, Sink};

#[derive(Default)]
pub struct JsonSink {
    dir: Option<PathBuf>,
}

impl JsonSink {
    pub fn new() -> JsonSink {
        JsonSink::default()
    }
}

impl Sink for JsonSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        let run = match event {
            Event::RunStarted { run, dir, .. } => {
                self.dir = Some(dir.to_path_buf());
                run
            }
            Event::ScenarioFinished { run, .. } | Event::RunFinished { run, .. } => run,
            _ => return Ok(()),
        };
        match &self.dir {
            Some(dir) => write_run_json(dir, run),
            None => Ok(()),
        }
    }
}
