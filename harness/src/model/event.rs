//! Events: what the runner (and the fuzzer) tells the sinks, and the emitter that
//! delivers each event to every sink.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::record::{RunRecord, ScenarioRecord, StepRecord};
use super::sink::{ReportError, Sink};
use crate::util::lock;

/// Something that happened during a run, for the sinks.
pub enum Event<'a> {
    RunStarted {
        run: &'a RunRecord,
        dir: &'a Path,
        scenarios: usize,
    },
    Notice(&'a str),
    ScenarioStarted {
        name: &'a str,
        index: usize,
        total: usize,
    },
    StepStarted {
        scenario: &'a str,
        step: &'a str,
    },
    BootReady {
        scenario: &'a str,
        index: u32,
        ready_ms: u64,
    },
    StepFinished {
        scenario: &'a str,
        step: &'a StepRecord,
    },
    ScenarioFinished {
        scenario: &'a ScenarioRecord,
        run: &'a RunRecord,
    },
    RunFinished {
        run: &'a RunRecord,
        dir: &'a Path,
    },
    /// A content-fuzzing campaign's counters, every few seconds.
    FuzzProgress(&'a FuzzCounters),
    /// A crash title the campaign had not seen; minimizing it starts now.
    FuzzCrashFound {
        title: &'a str,
        /// Executions (over the whole campaign) when it was seen.
        execs: u64,
        seconds: f64,
    },
    /// A rollout ring starts running its targets.
    RingStarted {
        ring: &'a str,
        targets: usize,
        /// The observation added after each scenario, if any.
        soak: Option<Duration>,
    },
    /// A rollout ring was judged.
    RingFinished {
        ring: &'a str,
        /// As in rollout.json: "promoted", "halted" or "error".
        outcome: &'a str,
        reason: Option<&'a str>,
    },
}

/// Where a content-fuzzing campaign stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FuzzCounters {
    pub execs: u64,
    pub execs_per_second: f64,
    pub unique_crashes: usize,
    pub corpus: usize,
    pub hangs: u64,
    pub errors: u64,
}

/// Delivers events to every sink; remembers the first sink failure (a result file
/// that could not be written), which makes the run an infrastructure error. Shared by
/// the scenario workers: one event is delivered to all sinks before the next.
pub struct Emitter {
    sinks: Mutex<Vec<Box<dyn Sink + Send>>>,
    failure: Mutex<Option<ReportError>>,
}

impl Emitter {
    pub fn new(sinks: Vec<Box<dyn Sink + Send>>) -> Emitter {
        Emitter {
            sinks: Mutex::new(sinks),
            failure: Mutex::new(None),
        }
    }

    pub(crate) fn emit(&self, event: &Event) {
        // A worker that panicked mid-event leaves the sinks usable: results still count.
        let mut sinks = lock(&self.sinks);
        for sink in sinks.iter_mut() {
            if let Err(e) = sink.event(event) {
                lock(&self.failure).get_or_insert(e);
            }
        }
    }

    pub(crate) fn notice(&self, text: &str) {
        self.emit(&Event::Notice(text));
    }

    pub(crate) fn step_started(&self, scenario: &str, step: &str) {
        self.emit(&Event::StepStarted { scenario, step });
    }

    pub(crate) fn step_finished(&self, scenario: &str, step: &StepRecord) {
        self.emit(&Event::StepFinished { scenario, step });
    }

    pub(crate) fn boot_ready(&self, scenario: &str, index: u32, ready_ms: u64) {
        self.emit(&Event::BootReady {
            scenario,
            index,
            ready_ms,
        });
    }

    pub(crate) fn take_failure(&self) -> Option<ReportError> {
        lock(&self.failure).take()
    }
}
