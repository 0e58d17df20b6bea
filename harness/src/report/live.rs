//! The live terminal view, used when stderr is a terminal: a line per running VM
//! (scenario, current step or boot, elapsed) above an overall bar; finished
//! scenarios print their verdict above the bars, as the plain view would.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::Event;
use crate::model::{ReportError, Sink};
use crate::report::terminal::{text_for, Verbosity};

/// How often the spinners and elapsed times redraw.
const TICK: Duration = Duration::from_millis(200);

pub struct LiveSink {
    verbosity: Verbosity,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    vms: HashMap<String, ProgressBar>,
}

impl LiveSink {
    pub fn new(verbosity: Verbosity) -> LiveSink {
        LiveSink {
            verbosity,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            overall: None,
            vms: HashMap::new(),
        }
    }

    fn print(&self, text: &str) {
        // Printed above the bars; a terminal that went away must not fail the run.
        let _ = self.multi.println(text);
    }
}

impl Sink for LiveSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        match event {
            Event::RunStarted { scenarios, .. } => {
                let bar = self.multi.add(ProgressBar::new(*scenarios as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:30.cyan/blue} {pos}/{len} scenarios  {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.enable_steady_tick(TICK);
                self.overall = Some(bar);
            }
            Event::ScenarioStarted { name, .. } => {
                let bar = match &self.overall {
                    Some(overall) => self
                        .multi
                        .insert_before(overall, ProgressBar::new_spinner()),
                    None => self.multi.add(ProgressBar::new_spinner()),
                };
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(name.to_string());
                bar.set_message("boot 1");
                bar.enable_steady_tick(TICK);
                self.vms.insert(name.to_string(), bar);
            }
            Event::StepStarted { scenario, step } => {
                if let Some(bar) = self.vms.get(*scenario) {
                    bar.set_message(step.to_string());
                }
            }
            Event::BootReady {
                scenario, index, ..
            } => {
                if let Some(bar) = self.vms.get(*scenario) {
                    bar.set_message(format!("boot {index} ready"));
                }
            }
            Event::ScenarioFinished { scenario, .. } => {
                if let Some(bar) = self.vms.remove(&scenario.name) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(overall) = &self.overall {
                    overall.inc(1);
                }
            }
            Event::RunFinished { .. } => {
                if let Some(overall) = self.overall.take() {
                    overall.finish_and_clear();
                }
            }
            _ => {}
        }
        // The step and boot lines the plain view prints only with -v live in the bars.
        let quiet_steps = matches!(event, Event::StepStarted { .. } | Event::BootReady { .. });
        if let Some(text) = text_for(event, self.verbosity) {
            if !(quiet_steps && self.verbosity != Verbosity::Verbose) {
                self.print(&text);
            }
        }
        Ok(())
    }
}
