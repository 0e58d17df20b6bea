//! Where a command's time went, phase by phase: what `-v` prints and run.json keeps
//! as `timings` (additive: a run.json without it still loads). Phases are timed on
//! one monotonic clock that starts with the process, so they line up with the whole
//! command's wall time.

use std::sync::OnceLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The phases of one command, in the order they began.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub phases: Vec<PhaseTime>,
}

/// One phase: when it began (ms since the process started) and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    pub start_ms: f64,
    pub duration_ms: f64,
}

/// The instant the process started (as near as the binary can tell: its first call
/// of this, made first thing in `main`).
pub fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds, to the hundredth, between two instants (0 when `to` is earlier).
fn ms_between(from: Instant, to: Instant) -> f64 {
    (to.saturating_duration_since(from).as_secs_f64() * 100_000.0).round() / 100.0
}

impl Timings {
    pub(crate) fn is_empty(&self) -> bool {
        self.phases.is_empty()
    }

    /// Records `phase` as having run from `began` until now.
    pub fn since(&mut self, phase: &str, began: Instant) {
        self.span(phase, began, Instant::now());
    }

    /// Records `phase` as having run from `began` to `ended`.
    pub(crate) fn span(&mut self, phase: &str, began: Instant, ended: Instant) {
        let origin = process_start();
        self.phases.push(PhaseTime {
            phase: phase.to_string(),
            start_ms: ms_between(origin, began),
            duration_ms: ms_between(began, ended),
        });
    }

    /// Records a phase known only by its length (a part of a scenario's record),
    /// placed at `start_ms`.
    pub(crate) fn part(&mut self, phase: String, start_ms: f64, duration_ms: f64) {
        self.phases.push(PhaseTime {
            phase,
            start_ms,
            duration_ms,
        });
    }

    /// Times `work` as `phase`.
    pub(crate) fn time<T>(&mut self, phase: &str, work: impl FnOnce() -> T) -> T {
        let began = Instant::now();
        let value = work();
        self.since(phase, began);
        value
    }

    /// One line per phase, for `-v`.
    pub fn lines(&self) -> Vec<String> {
        self.phases
            .iter()
            .map(|p| {
                format!(
                    "{:>9.1} ms  +{:>8.1} ms  {}",
                    p.start_ms, p.duration_ms, p.phase
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn phases_are_kept_in_order_on_the_process_clock() {
        let origin = process_start();
        let mut timings = Timings::default();
        timings.span("a", origin, origin + Duration::from_millis(5));
        timings.time("b", || ());
        assert_eq!(timings.phases[0].start_ms, 0.0);
        assert_eq!(timings.phases[0].duration_ms, 5.0);
        assert_eq!(timings.phases[1].phase, "b");
        assert!(timings.phases[1].start_ms >= 0.0);
        assert_eq!(timings.lines().len(), 2);
        assert!(timings.lines()[0].ends_with(" a"), "{:?}", timings.lines());
    }

    /// run.json files written before timings existed still load.
    #[test]
    fn a_record_without_timings_loads() {
        #[derive(Deserialize)]
        struct Old {
            #[serde(default)]
            timings: Timings,
        }
        let old: Old = serde_json::from_str("{}").unwrap();
        assert!(old.timings.is_empty());
    }
}
