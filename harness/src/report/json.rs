//! run.json: the machine-readable record of a run, rewritten atomically after every
//! scenario, so an interrupted run still leaves a complete, valid file.

use std::path::PathBuf;

use crate::model::run_file::write_run_json;
use crate::model::{Event, ReportError, Sink};

#[derive(Default)]
pub struct JsonSink {
    dir: Option<PathBuf>,
    /// Scenarios the run will finish, and how many have.
    scenarios: usize,
    finished: usize,
}

impl JsonSink {
    pub fn new() -> JsonSink {
        JsonSink::default()
    }
}

impl Sink for JsonSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        let run = match event {
            Event::RunStarted {
                run,
                dir,
                scenarios,
            } => {
                self.dir = Some(dir.to_path_buf());
                self.scenarios = *scenarios;
                run
            }
            Event::ScenarioFinished { run, .. } => {
                self.finished += 1;
                // The last scenario's record is written with the run's end, which the
                // runner emits right after it (nothing can fail in between): writing
                // it here as well only wrote run.json twice.
                if self.finished == self.scenarios {
                    return Ok(());
                }
                run
            }
            Event::RunFinished { run, .. } => run,
            _ => return Ok(()),
        };
        match &self.dir {
            Some(dir) => write_run_json(dir, run),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Verdict;
    use crate::model::run_file::RUN_JSON;
    use crate::testing::records;

    /// run.json is written at the start and after each scenario but the last, whose
    /// record the run's end writes (once, not twice).
    #[test]
    fn run_json_is_written_after_each_scenario_but_the_last_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(RUN_JSON);
        let mut sink = JsonSink::new();
        let written = |n: usize| {
            let text = std::fs::read_to_string(&file).unwrap();
            let run: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(run["scenarios"].as_array().unwrap().len(), n, "{text}");
        };
        let mut run = records::run(Vec::new());
        sink.event(&Event::RunStarted {
            run: &run,
            dir: dir.path(),
            scenarios: 2,
        })
        .unwrap();
        written(0);
        for n in 1..=2 {
            run.scenarios
                .push(records::scenario("s", &format!("{n}"), Verdict::Pass));
            let last = run.scenarios.last().unwrap().clone();
            sink.event(&Event::ScenarioFinished {
                scenario: &last,
                run: &run,
            })
            .unwrap();
            written(1);
        }
        sink.event(&Event::RunFinished {
            run: &run,
            dir: dir.path(),
        })
        .unwrap();
        written(2);
    }
}
