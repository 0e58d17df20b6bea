//! `bootgate rollout`: a staged-rollout gate. The suite's scenarios run on the
//! machines of ring 0 (the canary), then of ring 1, and so on; a ring is promoted
//! only when it is clean (no scenario failed other than by crashing, and no more
//! crashing scenarios than its threshold), and the first ring that is not clean
//! halts the rollout with its evidence. Each target of a ring is a normal run
//! (run.json, junit.xml, report.html, manifest) in `<rollout>/<ring>/<target>/`,
//! where `<rollout>` is a fresh `<out>/<run-id>` folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::exit::Exit;
use crate::model::record::{RunRecord, Verdict};
use crate::model::{Emitter, Event};
use crate::runner::prepare::RunFolder;
use crate::runner::{interrupted, run, RunError, RunOptions};
use crate::suite::{ObserveStep, Ring, Rollout, Step, Suite, Target};
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
    /// The run was stopped by an interrupt (rollout.json says so once, at the top).
    #[serde(skip)]
    pub interrupted: bool,
}

/// How a ring ended; in rollout.json as "promoted", "halted" or "error".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RingOutcome {
    /// Clean: the next ring may start.
    Promoted,
    /// The product failed the ring's gates.
    Halted,
    /// The infrastructure failed: no verdict on the update.
    Error,
}

impl RingOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RingOutcome::Promoted => "promoted",
            RingOutcome::Halted => "halted",
            RingOutcome::Error => "error",
        }
    }
}

impl std::fmt::Display for RingOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RingResult {
    pub ring: String,
    pub crash_threshold: u32,
    pub soak_seconds: f64,
    pub targets: Vec<TargetResult>,
    pub outcome: RingOutcome,
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
    /// The rollout's folder (`<out>/<run-id>`); not in rollout.json, which is in it.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl RolloutReport {
    /// Did every ring promote?
    pub fn all_promoted(&self) -> bool {
        self.halted_at.is_none() && !self.interrupted
    }

    /// Did a ring stop on infrastructure trouble rather than the product?
    pub(crate) fn infrastructure_error(&self) -> bool {
        self.rings.iter().any(|r| r.outcome == RingOutcome::Error)
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

/// A ring's outcome and, unless promoted, why.
#[derive(Debug)]
struct Judgement {
    outcome: RingOutcome,
    reason: Option<String>,
}

impl Judgement {
    fn halted(reason: String) -> Judgement {
        Judgement {
            outcome: RingOutcome::Halted,
            reason: Some(reason),
        }
    }
}

/// Judges one ring from its targets' runs.
fn judge_ring(ring: &Ring, targets: &[TargetResult]) -> Judgement {
    let errors: usize = targets.iter().map(|t| t.error).sum();
    if errors > 0 {
        return Judgement {
            outcome: RingOutcome::Error,
            reason: Some(format!(
                "{errors} scenario(s) ended in error (infrastructure): no verdict on the update"
            )),
        };
    }
    let crashed: Vec<&String> = targets.iter().flat_map(|t| t.crashed.iter()).collect();
    let failed: usize = targets.iter().map(|t| t.fail).sum();
    let other_failures = failed.saturating_sub(crashed.len());
    if other_failures > 0 {
        return Judgement::halted(format!("{other_failures} scenario(s) failed a gate"));
    }
    if crashed.len() as u32 > ring.crash_threshold {
        return Judgement::halted(format!(
            "{} crashing scenario(s), over the ring's threshold of {}: {}",
            crashed.len(),
            ring.crash_threshold,
            crashed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Judgement {
        outcome: RingOutcome::Promoted,
        reason: None,
    }
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
        interrupted: record.interrupted,
    }
}

/// Runs the rollout ring by ring in a fresh folder below `base.out_dir` (pointed at
/// by `latest` once it ends, however it ends) and writes rollout.json there. `base`
/// gives the settings of every target's run, `make_emitter` the report sinks of one;
/// ring progress goes to `emitter`.
pub fn rollout(
    suite: &Suite,
    base: &RunOptions,
    make_emitter: &dyn Fn() -> Emitter,
    emitter: &Emitter,
) -> Result<RolloutReport, RolloutError> {
    let plan = suite
        .rollout
        .as_ref()
        .ok_or_else(|| RolloutError::NoRollout(suite.path.clone()))?;
    let folder = RunFolder::create(&base.out_dir).map_err(|e| RolloutError::Io {
        path: e.path,
        source: e.source,
    })?;
    let gate = Gate {
        suite,
        base,
        dir: &folder.dir,
        make_emitter,
        emitter,
    };
    let result = gate.run(plan);
    // Best effort: the report names its folder, `latest` is a convenience.
    let _ = folder.point_latest();
    result
}

/// What every ring of one rollout shares.
struct Gate<'a> {
    suite: &'a Suite,
    base: &'a RunOptions,
    /// The rollout's folder: rollout.json, and a folder per ring.
    dir: &'a Path,
    make_emitter: &'a dyn Fn() -> Emitter,
    emitter: &'a Emitter,
}

impl Gate<'_> {
    /// The rings in order, until one is not promoted; then rollout.json.
    fn run(&self, plan: &Rollout) -> Result<RolloutReport, RolloutError> {
        let started = Instant::now();
        let mut report = RolloutReport {
            suite: self.suite.path.display().to_string(),
            rings: Vec::new(),
            halted_at: None,
            promoted: Vec::new(),
            total_seconds: 0.0,
            interrupted: false,
            dir: self.dir.to_path_buf(),
        };
        for ring in &plan.rings {
            if interrupted() {
                report.interrupted = true;
                break;
            }
            let result = self.ring(ring, ring.soak.or(plan.soak))?;
            report.interrupted |= result.targets.iter().any(|t| t.interrupted);
            let promoted = result.outcome == RingOutcome::Promoted;
            report.rings.push(result);
            if promoted && !report.interrupted {
                report.promoted.push(ring.name.clone());
            } else {
                report.halted_at = Some(ring.name.clone());
                break;
            }
        }
        report.total_seconds = started.elapsed().as_secs_f64();
        write_report(&report, self.dir)?;
        Ok(report)
    }

    /// One ring: every target's run, then the judgement.
    fn ring(&self, ring: &Ring, soak: Option<Duration>) -> Result<RingResult, RolloutError> {
        let started = Instant::now();
        self.emitter.emit(&Event::RingStarted {
            ring: &ring.name,
            targets: ring.targets.len(),
            soak,
        });
        let ring_suite = ring_suite(self.suite, soak);
        let targets = ring
            .targets
            .iter()
            .map(|target| self.target(&ring_suite, ring, target))
            .collect::<Result<Vec<_>, _>>()?;
        let Judgement { outcome, reason } = judge_ring(ring, &targets);
        self.emitter.emit(&Event::RingFinished {
            ring: &ring.name,
            outcome: outcome.as_str(),
            reason: reason.as_deref(),
        });
        let result = RingResult {
            ring: ring.name.clone(),
            crash_threshold: ring.crash_threshold,
            soak_seconds: soak.map_or(0.0, |d| d.as_secs_f64()),
            targets,
            outcome,
            reason,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok(result)
    }

    /// The ring's suite as a normal run on one target, in `<ring>/<target>/`.
    fn target(
        &self,
        ring_suite: &Suite,
        ring: &Ring,
        target: &Target,
    ) -> Result<TargetResult, RolloutError> {
        let started = Instant::now();
        // Ring and target names are checked at load; checked again before anything
        // is written, so no name can place results outside the rollout's folder.
        let rel = Path::new(&ring.name).join(target.label());
        if !crate::util::is_relative_below(&rel) || rel.components().count() != 2 {
            return Err(RolloutError::Io {
                path: self.dir.join(&rel),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "ring and target names must each be one plain folder name",
                ),
            });
        }
        let options = RunOptions {
            out_dir: self.dir.join(rel),
            target: Some(target.clone()),
            ..self.base.clone()
        };
        let emitter = (self.make_emitter)();
        let (record, run_dir) =
            run(std::slice::from_ref(ring_suite), &options, &emitter).map_err(|source| {
                RolloutError::Run {
                    ring: ring.name.clone(),
                    target: target.label(),
                    source: Box::new(source),
                }
            })?;
        let seconds = started.elapsed().as_secs_f64();
        Ok(summarize(target, &record, &run_dir, seconds))
    }
}

fn write_report(report: &RolloutReport, dir: &Path) -> Result<(), RolloutError> {
    std::fs::create_dir_all(dir).map_err(|source| RolloutError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("rollout.json");
    let json = serde_json::to_vec_pretty(report).map_err(|e| RolloutError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    write_atomic(&path, &json).map_err(|source| RolloutError::Io { path, source })
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
            interrupted: false,
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
        assert_eq!(judge_ring(&ring(0), &clean).outcome, RingOutcome::Promoted);
        let crashed = [target_result(1, 1, 0, &["s on t: BUG"])];
        let Judgement { outcome, reason } = judge_ring(&ring(0), &crashed);
        assert_eq!(outcome, RingOutcome::Halted);
        assert!(reason.unwrap().contains("BUG"));
        assert_eq!(
            judge_ring(&ring(1), &crashed).outcome,
            RingOutcome::Promoted,
            "within threshold"
        );
        let gate = [target_result(1, 1, 0, &[])];
        assert_eq!(
            judge_ring(&ring(5), &gate).outcome,
            RingOutcome::Halted,
            "a non-crash failure"
        );
        let infra = [target_result(1, 0, 1, &[])];
        assert_eq!(judge_ring(&ring(5), &infra).outcome, RingOutcome::Error);
    }

    #[test]
    fn ring_outcomes_keep_their_rollout_json_words() {
        for (outcome, word) in [
            (RingOutcome::Promoted, "promoted"),
            (RingOutcome::Halted, "halted"),
            (RingOutcome::Error, "error"),
        ] {
            assert_eq!(serde_json::to_value(outcome).unwrap(), word);
            assert_eq!(outcome.to_string(), word);
        }
    }
}
