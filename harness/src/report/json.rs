//! run.json: the machine-readable record of a run, rewritten atomically after every
//! scenario, so an interrupted run still leaves a complete, valid file.

use std::path::PathBuf;

use crate::report::{ReportError, Sink};
use crate::runner::record::RunRecord;
use crate::runner::Event;
use crate::util::write_atomic;

pub const RUN_JSON: &str = "run.json";

#[derive(Default)]
pub struct JsonSink {
    dir: Option<PathBuf>,
}

impl JsonSink {
    pub fn new() -> JsonSink {
        JsonSink::default()
    }

    fn write(&self, run: &RunRecord) -> Result<(), ReportError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(RUN_JSON);
        let mut text = serde_json::to_vec_pretty(run).map_err(|e| ReportError::Encode {
            what: RUN_JSON,
            message: e.to_string(),
        })?;
        text.push(b'\n');
        write_atomic(&path, &text).map_err(|source| ReportError::Write { path, source })
    }
}

impl Sink for JsonSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        match event {
            Event::RunStarted { run, dir, .. } => {
                self.dir = Some(dir.to_path_buf());
                self.write(run)
            }
            Event::ScenarioFinished { run, .. } => self.write(run),
            Event::RunFinished { run, .. } => self.write(run),
            _ => Ok(()),
        }
    }
}
