//! `bootgate rollout`: a staged-rollout gate. The suite's scenarios run on the
//! machines of ring 0 (the canary), then of ring 1, and so on; a ring is promoted
//! only when it is clean (no scenario failed other than by crashing, and no more
//! crashing scenarios than its threshold), and the first ring that is not clean
//! halts the rollout with its evidence. Each target of a ring is a normal run
//! (run.json, junit.xml, report.html, manifest) in `<out>/<ring>/<target>/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::exit::Exit;
use crate::model::record::{RunRecord, Verdict};
use crate::model::Emitter;
use crate::runner::{interrupted, run, RunError, RunOptions};
use crate::suite::{ObserveStep, Ring, Step, Suite, Target};
use crate::util::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "{0} has no [rollout] section: add [[rollout.ring]] tables, or run it with `bootgate run`"
    )]
    NoRollout(PathBuf),
    #[error("ring {ring}, target {target}: {source}")]
    Run {
        ring: String,
        target: String,
        #[source]
        source: Box<RunError>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    /// The target's run folder.
    pub run_dir: String,
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    /// Scenarios that failed by crashing, with the first crash title.
    pub crashed: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RingResult {
    pub ring: String,
    pub crash_threshold: u32,
    pub soak_seconds: f64,
    pub targets: Vec<TargetResult>,
    /// "promoted", "halted" (the product), "error" (the infrastructure).
    pub outcome: String,
    pub reason: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub suite: String,
    pub rings: Vec<RingResult>,
    /// The ring the rollout stopped at, if it did.
    pub halted_at: Option<String>,
    pub promoted: Vec<String>,
    /// Wall time of the whole gate.
    pub total_seconds: f64,
    pub interrupted: bool,
}

impl RolloutReport {
    /// Did every ring promote?
    pub fn all_promoted(&self) -> bool {
        self.halted_at.is_none() && !self.interrupted
    }

    /// Did a ring stop on infrastructure trouble rather than the product?
    pub fn infrastructure_error(&self) -> bool {
        self.rings.iter().any(|r| r.outcome == "error")
    }

    /// Interrupted first (the rest is incomplete), then infrastructure (no verdict on
    /// the product), then whether the product let every ring promote.
    pub fn exit_code(&self) -> Exit {
        if self.interrupted {
            Exit::Interrupted
        } else if self.infrastructure_error() {
            Exit::Infra
        } else if self.all_promoted() {
            Exit::Pass
        } else {
            Exit::Fail
        }
    }
}

impl RolloutError {
    pub fn exit_code(&self) -> Exit {
        match self {
            // The suite is wrong for this command: a suite error, as `--help` says.
            RolloutError::NoRollout(_) => Exit::Usage,
            RolloutError::Run { source, .. } => source.exit_code(),
            RolloutError::Io { .. } => Exit::Infra,
        }
    }
}

/// The suite as run on one ring: every scenario ends with the ring's soak (an
/// observation of the running guest), and the rollout section itself is dropped.
fn ring_suite(suite: &Suite, soak: Option<Duration>) -> Suite {
    let mut ring = suite.clone();
    ring.rollout = None;
    if let Some(duration) = soak.filter(|d| !d.is_zero()) {
        for scenario in &mut ring.scenarios {
            scenario.steps.push(Step::Observe(ObserveStep { duration }));
        }
    }
    ring
}

/// Judges one ring from its targets' runs.
fn judge_ring(ring: &Ring, targets: &[TargetResult]) -> (String, Option<String>) {
    let errors: usize = targets.iter().map(|t| t.error).sum();
    if errors > 0 {
        return (
            "error".into(),
            Some(format!(
                "{errors} scenario(s) ended in error (infrastructure): no verdict on the update"
            )),
        );
    }
    let crashed: Vec<&String> = targets.iter().flat_map(|t| t.crashed.iter()).collect();
    let failed: usize = targets.iter().map(|t| t.fail).sum();
    let other_failures = failed.saturating_sub(crashed.len());
    if other_failures > 0 {
        return (
            "halted".into(),
            Some(format!("{other_failures} scenario(s) failed a gate")),
        );
    }
    if crashed.len() as u32 > ring.crash_threshold {
        return (
            "halted".into(),
            Some(format!(
                "{} crashing scenario(s), over the ring's threshold of {}: {}",
                crashed.len(),
                ring.crash_threshold,
                crashed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        );
    }
    ("promoted".into(), None)
}

fn summarize(target: &Target, record: &RunRecord, run_dir: &Path, seconds: f64) -> TargetResult {
    let count = |v: Verdict| record.scenarios.iter().filter(|s| s.verdict == v).count();
    TargetResult {
        target: target.label(),
        run_dir: run_dir.display().to_string(),
        pass: count(Verdict::Pass) + count(Verdict::Flaky),
        fail: count(Verdict::Fail),
        error: count(Verdict::Error),
        crashed: record
            .scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Fail)
            .filter_map(|s| {
                s.crashes
                    .first()
                    .map(|c| format!("{} on {}: {}", s.name, target.label(), c.title))
            })
            .collect(),
        seconds,
    }
}

/// Runs the rollout ring by ring; `base` gives the settings of every target's run
/// (its `out_dir` is the rollout's folder), `make_emitter` the report sinks of one.
pub fn rollout(
    suite: &Suite,
    base: &RunOptions,
    make_emitter: &dyn Fn() -> Emitter,
    notify: &mut dyn FnMut(&str),
) -> Result<RolloutReport, RolloutError> {
    let plan = suite
        .rollout
        .as_ref()
        .ok_or_else(|| RolloutError::NoRollout(suite.path.clone()))?;
    let started = Instant::now();
    let mut report = RolloutReport {
        suite: suite.path.display().to_string(),
        rings: Vec::new(),
        halted_at: None,
        promoted: Vec::new(),
        total_seconds: 0.0,
        interrupted: false,
    };
    for ring in &plan.rings {
        if interrupted() {
            report.interrupted = true;
            break;
        }
        let ring_started = Instant::now();
        let soak = ring.soak.or(plan.soak);
        notify(&format!(
            "ring {}: {} target(s){}",
            ring.name,
            ring.targets.len(),
            soak.map_or(String::new(), |d| format!(
                ", soak {d:?} after each scenario"
            ))
        ));
        let ring_suite = ring_suite(suite, soak);
        let mut targets = Vec::new();
        for target in &ring.targets {
            let target_started = Instant::now();
            let options = RunOptions {
                out_dir: base.out_dir.join(&ring.name).join(target.label()),
                target: Some(target.clone()),
                ..base.clone()
            };
            let emitter = make_emitter();
            let (record, run_dir) = run(std::slice::from_ref(&ring_suite), &options, &emitter)
                .map_err(|source| RolloutError::Run {
                    ring: ring.name.clone(),
                    target: target.label(),
                    source: Box::new(source),
                })?;
            report.interrupted |= record.interrupted;
            targets.push(summarize(
                target,
                &record,
                &run_dir,
                target_started.elapsed().as_secs_f64(),
            ));
        }
        let (outcome, reason) = judge_ring(ring, &targets);
        notify(&format!(
            "ring {}: {outcome}{}",
            ring.name,
            reason.as_ref().map_or(String::new(), |r| format!(" ({r})"))
        ));
        let promoted = outcome == "promoted";
        report.rings.push(RingResult {
            ring: ring.name.clone(),
            crash_threshold: ring.crash_threshold,
            soak_seconds: soak.map_or(0.0, |d| d.as_secs_f64()),
            targets,
            outcome,
            reason,
            seconds: ring_started.elapsed().as_secs_f64(),
        });
        if promoted && !report.interrupted {
            report.promoted.push(ring.name.clone());
        } else {
            report.halted_at = Some(ring.name.clone());
            break;
        }
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&base.out_dir).map_err(|source| RolloutError::Io {
        path: base.out_dir.clone(),
        source,
    })?;
    let path = base.out_dir.join("rollout.json");
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    write_atomic(&path, &json).map_err(|source| RolloutError::Io { path, source })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 13): this was exit 3, while `--help` promises 2 for a suite
    /// the command cannot use.
    #[test]
    fn a_suite_without_rollout_is_a_usage_error() {
        let e = RolloutError::NoRollout(PathBuf::from("suite.toml"));
        assert_eq!(e.exit_code(), Exit::Usage);
    }

    fn target_result(pass: usize, fail: usize, error: usize, crashed: &[&str]) -> TargetResult {
        TargetResult {
            target: "t".into(),
            run_dir: "d".into(),
            pass,
            fail,
            error,
            crashed: crashed.iter().map(|s| s.to_string()).collect(),
            seconds: 1.0,
        }
    }

    fn ring(threshold: u32) -> Ring {
        Ring {
            name: "canary".into(),
            targets: vec![Target::default()],
            crash_threshold: threshold,
            soak: None,
        }
    }

    #[test]
    fn a_ring_promotes_only_when_clean() {
        let clean = [target_result(2, 0, 0, &[])];
        assert_eq!(judge_ring(&ring(0), &clean).0, "promoted");
        let crashed = [target_result(1, 1, 0, &["s on t: BUG"])];
        let (outcome, reason) = judge_ring(&ring(0), &crashed);
        assert_eq!(outcome, "halted");
        assert!(reason.unwrap().contains("BUG"));
        assert_eq!(
            judge_ring(&ring(1), &crashed).0,
            "promoted",
            "within threshold"
        );
        let gate = [target_result(1, 1, 0, &[])];
        assert_eq!(
            judge_ring(&ring(5), &gate).0,
            "halted",
            "a non-crash failure"
        );
        let infra = [target_result(1, 0, 1, &[])];
        assert_eq!(judge_ring(&ring(5), &infra).0, "error");
    }
}
