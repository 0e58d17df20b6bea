//! The scenario workers of a run: how many VMs at once, the order scenarios are
//! taken in (longest first), retries and the flaky verdict, and putting the results
//! back in suite order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::dump_budget::DumpBudget;
use super::folder::absolute;
use super::prepare::{Drivers, Prepared};
use super::scenario::{self, ScenarioOutcome, StandbySlot};
use super::{interrupted, RunOptions};
use crate::model::record::{
    AttemptRecord, FileHash, RunRecord, ScenarioRecord, Summary, Verdict, VmArgv,
};
use crate::model::{Emitter, Event};
use crate::suite::Suite;
use crate::util::{lock, sha256_file};

/// Memory a VM costs beyond its guest RAM (QEMU itself, TCG's translation cache).
const VM_OVERHEAD_MIB: u64 = 256;

/// Guest RAM assumed when no image was resolved (QEMU missing, empty shard).
const DEFAULT_VM_MEMORY_MIB: u32 = 256;

/// VMs to run at once by default: one per core, as many as free memory allows.
pub(crate) fn default_jobs(vm_memory_mib: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024);
    let by_memory = available_mib.map_or(cores, |mib| {
        (mib / (u64::from(vm_memory_mib) + VM_OVERHEAD_MIB)) as usize
    });
    cores.min(by_memory).max(1)
}

/// `requested` VMs at once, or the default (0) for VMs of `vm_memory_mib`.
pub(crate) fn jobs(requested: usize, vm_memory_mib: u32) -> usize {
    match requested {
        0 => default_jobs(vm_memory_mib),
        n => n,
    }
}

/// Whether attempt number `attempt` (1-based), which ended `verdict`, gets another:
/// infrastructure errors are retried by default, failures only when asked, and
/// never more than `retries` extra attempts.
fn should_retry(verdict: Verdict, attempt: u32, retries: u32, retry_failures: bool) -> bool {
    attempt <= retries
        && match verdict {
            Verdict::Error => true,
            Verdict::Fail => retry_failures,
            Verdict::Pass | Verdict::Flaky => false,
        }
}

/// A pass after an earlier attempt failed is flaky, never a plain pass; the reason
/// names the failure. A pass after infrastructure errors only is a pass (the product
/// was never seen failing), with the attempts still listed.
fn flaky_reason(last: Verdict, attempt: u32, earlier: &[AttemptRecord]) -> Option<String> {
    if last != Verdict::Pass {
        return None;
    }
    let failed = earlier.iter().find(|a| a.verdict == Verdict::Fail)?;
    Some(format!(
        "passed on attempt {attempt} after failing attempt {}: {}",
        failed.attempt,
        failed.reason.as_deref().unwrap_or("failed")
    ))
}

/// Longest first when durations are known (fewer idle workers at the end); the
/// results are put back in suite order afterwards.
fn schedule(selected: &[(&Suite, usize)], opts: &RunOptions) -> Vec<usize> {
    let mut order: Vec<usize> = (0..selected.len()).collect();
    order.sort_by_key(|&i| {
        let (suite, n) = selected[i];
        let name = format!("{}/{}", suite.name, suite.scenarios[n].name);
        std::cmp::Reverse(opts.expected_ms.get(&name).copied().unwrap_or(0))
    });
    order
}

/// What one scenario (all its attempts) or one attempt left behind.
struct ScenarioRun {
    record: ScenarioRecord,
    /// Every VM's QEMU command line, for run.json.
    argvs: Vec<Vec<String>>,
    /// Stopped by an interrupt rather than by its own end.
    interrupted: bool,
}

/// The run record being filled in, and the position in `selected` of each of its
/// scenarios (workers finish in any order).
struct Collected {
    record: RunRecord,
    positions: Vec<usize>,
}

/// What every scenario worker reads, and the run record they fill in.
struct Pool<'a> {
    opts: &'a RunOptions,
    run_dir: &'a Path,
    prepared: &'a Prepared,
    emitter: &'a Emitter,
    selected: &'a [(&'a Suite, usize)],
    no_drivers: Drivers,
    /// When the scenarios began to be scheduled: the zero of `queued_ms`.
    started: Instant,
    /// Positions in `selected`, in the order workers take them.
    schedule: Vec<usize>,
    /// The schedule's next position.
    next: AtomicUsize,
    collected: Mutex<Collected>,
    /// The memory dumps of this run so far, against each suite's `dump_budget_mib`.
    dumps: DumpBudget,
}

/// Runs the selected scenarios on the prepared images, `opts.jobs` at a time (or
/// the default), filling in `record`; returns it with the scenarios in suite order.
pub(super) fn run_scenarios(
    selected: &[(&Suite, usize)],
    prepared: &Prepared,
    opts: &RunOptions,
    run_dir: &Path,
    emitter: &Emitter,
    record: RunRecord,
) -> RunRecord {
    let biggest = prepared
        .manifests
        .values()
        .map(|m| m.machine.memory_mib)
        .max()
        .unwrap_or(DEFAULT_VM_MEMORY_MIB);
    let workers = jobs(opts.jobs, biggest).max(1).min(selected.len());
    let pool = Pool {
        opts,
        run_dir,
        prepared,
        emitter,
        selected,
        no_drivers: Drivers::new(),
        started: Instant::now(),
        schedule: schedule(selected, opts),
        next: AtomicUsize::new(0),
        collected: Mutex::new(Collected {
            record,
            positions: Vec::new(),
        }),
        dumps: DumpBudget::default(),
    };
    std::thread::scope(|scope| {
        for n in 0..workers {
            let pool = &pool;
            let spawned = std::thread::Builder::new()
                .name(format!("scenario-{n}"))
                .spawn_scoped(scope, move || pool.work(n));
            if spawned.is_err() {
                // No thread: run in this one instead (same work, just serial).
                pool.work(n);
            }
        }
    });
    pool.into_record()
}

impl Pool<'_> {
    /// One worker: takes scheduled scenarios until none is left. It owns its VMs for
    /// their whole lives (the parent-death signal is tied to the thread that spawned
    /// QEMU): the running one, and a standby for the next scenario, stopped when the
    /// worker ends.
    fn work(&self, slot: usize) {
        let standby = StandbySlot::default();
        while !interrupted() {
            let Some(&index) = self.schedule.get(self.next.fetch_add(1, Ordering::SeqCst)) else {
                break;
            };
            let ran = self.run_one(index, slot, &standby);
            self.collect(index, ran);
        }
    }

    /// Adds a finished scenario to the record and tells the sinks.
    fn collect(&self, index: usize, ran: ScenarioRun) {
        let mut collected = lock(&self.collected);
        let Collected { record, positions } = &mut *collected;
        for argv in ran.argvs {
            record.qemu.argv.push(VmArgv {
                scenario: ran.record.name.clone(),
                argv,
            });
        }
        record.interrupted |= ran.interrupted;
        record.scenarios.push(ran.record);
        positions.push(index);
        record.summary = Summary::of(&record.scenarios);
        if let Some(last) = record.scenarios.last() {
            self.emitter.emit(&Event::ScenarioFinished {
                scenario: last,
                run: record,
            });
        }
    }

    /// The record with its scenarios in suite order, whatever order the workers
    /// finished in.
    fn into_record(self) -> RunRecord {
        let Collected {
            mut record,
            positions,
        } = self
            .collected
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ordered: Vec<(usize, ScenarioRecord)> = positions
            .into_iter()
            .zip(record.scenarios.drain(..))
            .collect();
        ordered.sort_by_key(|(position, _)| *position);
        record.scenarios = ordered.into_iter().map(|(_, s)| s).collect();
        record
    }

    /// Runs the scenario at `index` of `selected`, retrying it as the options allow;
    /// the final attempt's record lists the earlier ones.
    fn run_one(&self, index: usize, worker: usize, standby: &StandbySlot) -> ScenarioRun {
        let (suite, scenario_index) = self.selected[index];
        let scenario = &suite.scenarios[scenario_index];
        let full_name = format!("{}/{}", suite.name, scenario.name);
        self.emitter.emit(&Event::ScenarioStarted {
            name: &full_name,
            index,
            total: self.selected.len(),
        });
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut argvs = Vec::new();
        let mut attempt = 1u32;
        loop {
            // The first attempt keeps the plain folder name; later ones sit beside it.
            let rel_dir = match attempt {
                1 => PathBuf::from(&suite.name).join(&scenario.name),
                k => PathBuf::from(&suite.name).join(format!("{}.attempt-{k}", scenario.name)),
            };
            let mut ran = self.attempt(suite, scenario_index, &rel_dir, worker, standby);
            argvs.append(&mut ran.argvs);
            let opts = self.opts;
            let retry = !ran.interrupted
                && !interrupted()
                && should_retry(
                    ran.record.verdict,
                    attempt,
                    opts.retries,
                    opts.retry_failures,
                );
            if !retry {
                let record = &mut ran.record;
                if let Some(reason) = flaky_reason(record.verdict, attempt, &attempts) {
                    record.verdict = Verdict::Flaky;
                    record.reason = Some(reason);
                }
                for earlier in &attempts {
                    record.artifacts.extend(earlier.artifacts.iter().cloned());
                }
                record.attempts = attempts;
                ran.argvs = argvs;
                return ran;
            }
            let record = &ran.record;
            self.emitter.notice(&format!(
                "{full_name}: attempt {attempt} ended {} ({}); retrying",
                record.verdict.as_str(),
                record.reason.as_deref().unwrap_or("no reason given")
            ));
            attempts.push(AttemptRecord {
                attempt,
                verdict: record.verdict,
                reason: record.reason.clone(),
                duration_ms: record.duration_ms,
                dir: record.dir.clone(),
                crashes: record.crashes.iter().map(|c| c.title.clone()).collect(),
                artifacts: record.artifacts.clone(),
            });
            attempt += 1;
        }
    }

    /// One attempt at a scenario, its evidence in `rel_dir` below the run folder.
    fn attempt(
        &self,
        suite: &Suite,
        scenario_index: usize,
        rel_dir: &Path,
        worker: usize,
        standby: &StandbySlot,
    ) -> ScenarioRun {
        let dir = self.run_dir.join(rel_dir);
        let started = Instant::now();
        let mut ran = ScenarioRun {
            record: self.new_record(suite, scenario_index, rel_dir, worker),
            argvs: Vec::new(),
            interrupted: false,
        };
        let prepared = self.prepared;
        // Names are checked at load (one plain path component each); checked again
        // here, before anything is written, so a name can never place evidence
        // outside the run folder.
        if !crate::util::is_relative_below(rel_dir) {
            ran.record.reason = Some(format!(
                "refusing to write {}: it is not a folder below the run folder",
                rel_dir.display()
            ));
        } else if let Err(e) = std::fs::create_dir_all(&dir) {
            ran.record.reason = Some(format!("cannot create {}: {e}", dir.display()));
        } else if let Some(problem) = &prepared.qemu_problem {
            ran.record.reason = Some(problem.clone());
        } else if let (Some(manifest), Some(decision)) =
            (prepared.manifests.get(&suite.path), &prepared.decision)
        {
            let scenario = &suite.scenarios[scenario_index];
            let outcome = scenario::run(scenario::ScenarioContext {
                tools: &self.opts.tools,
                manifest,
                accel: decision.accel,
                suite,
                scenario,
                dir: &dir,
                keep_overlay: self.opts.keep,
                emitter: self.emitter,
                full_name: &ran.record.name,
                rel_dir: &ran.record.dir,
                drivers: prepared
                    .drivers
                    .get(&suite.path)
                    .unwrap_or(&self.no_drivers),
                saved: prepared.saved.get(&suite.path),
                watch_after_crash: true,
                standby: Some(standby),
                // Another scenario left in the queue may take it.
                refill_standby: self.next.load(Ordering::SeqCst) < self.schedule.len(),
                dump_budget: &self.dumps,
            });
            ran.take_outcome(outcome);
        } else {
            ran.record.reason = Some("no image resolved for this suite".into());
        }
        ran.record.duration_ms = started.elapsed().as_millis() as u64;
        ran.record.artifacts = hash_artifacts(self.run_dir, &dir);
        ran
    }

    /// A scenario's record before it runs: `error` until a verdict replaces it.
    fn new_record(
        &self,
        suite: &Suite,
        scenario_index: usize,
        rel_dir: &Path,
        worker: usize,
    ) -> ScenarioRecord {
        let scenario = &suite.scenarios[scenario_index];
        let full_name = format!("{}/{}", suite.name, scenario.name);
        ScenarioRecord {
            rerun: rerun_command(self.opts, self.run_dir, &full_name),
            name: full_name,
            suite: suite.name.clone(),
            suite_file: suite.path.display().to_string(),
            image: suite.image.clone(),
            verdict: Verdict::Error,
            reason: None,
            duration_ms: 0,
            boots: Vec::new(),
            steps: Vec::new(),
            crashes: Vec::new(),
            hangs: Vec::new(),
            boot_loop: false,
            recovery: None,
            recovers_within: scenario.gates.recovers_within,
            expect: scenario.expect.map(|e| e.as_str().to_string()),
            artifacts: Vec::new(),
            dir: rel_dir.display().to_string(),
            hang_screenshots: Vec::new(),
            queued_ms: self.started.elapsed().as_millis() as u64,
            worker,
            attempts: Vec::new(),
            stalls: Vec::new(),
        }
    }
}

impl ScenarioRun {
    /// Takes what the scenario saw into the record.
    fn take_outcome(&mut self, outcome: ScenarioOutcome) {
        let record = &mut self.record;
        record.verdict = outcome.verdict;
        record.reason = outcome.reason;
        record.boots = outcome.boots;
        record.steps = outcome.steps;
        record.crashes = outcome.crashes;
        record.hangs = outcome.hangs;
        record.hang_screenshots = outcome.hang_screenshots;
        record.stalls = outcome.stalls;
        record.boot_loop = outcome.boot_loop;
        record.recovery = outcome.recovery;
        self.argvs = outcome.argvs;
        self.interrupted = outcome.interrupted;
    }
}

/// The command that reruns one scenario of this run with the same inputs and settings.
/// A run that let its suites read files anywhere says so in the command: rerun asks
/// for that permission again rather than taking it from run.json.
fn rerun_command(opts: &RunOptions, run_dir: &Path, scenario: &str) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "bootgate".into(),
        "rerun".into(),
        absolute(run_dir),
        scenario.into(),
        "--out".into(),
        absolute(&opts.out_dir),
    ];
    if opts.path_policy == crate::suite::PathPolicy::Anywhere {
        argv.push("--allow-outside-paths".into());
    }
    argv
}

/// sha256 of every file in a scenario's folder, paths relative to the run folder.
fn hash_artifacts(run_dir: &Path, dir: &Path) -> Vec<FileHash> {
    let mut files: Vec<FileHash> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let sha256 = sha256_file(e.path()).ok()?;
            let rel = e.path().strip_prefix(run_dir).ok()?;
            Some(FileHash {
                path: rel.display().to_string(),
                sha256,
            })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::records::attempt;

    #[test]
    fn errors_are_retried_failures_only_when_asked() {
        assert!(should_retry(Verdict::Error, 1, 1, false));
        assert!(
            !should_retry(Verdict::Error, 2, 1, false),
            "at most N extra"
        );
        assert!(!should_retry(Verdict::Fail, 1, 3, false));
        assert!(should_retry(Verdict::Fail, 1, 3, true));
        assert!(!should_retry(Verdict::Pass, 1, 3, true));
        assert!(
            !should_retry(Verdict::Error, 1, 0, true),
            "no --retries, no retry"
        );
    }

    #[test]
    fn a_pass_after_a_failure_is_flaky_after_errors_a_pass() {
        let failed = [attempt(1, Verdict::Fail, "crash: BUG")];
        let reason = flaky_reason(Verdict::Pass, 2, &failed).unwrap();
        assert_eq!(
            reason,
            "passed on attempt 2 after failing attempt 1: crash: BUG"
        );
        let errored = [attempt(1, Verdict::Error, "QEMU went away")];
        assert_eq!(flaky_reason(Verdict::Pass, 2, &errored), None);
        assert_eq!(flaky_reason(Verdict::Fail, 2, &failed), None);
        assert_eq!(flaky_reason(Verdict::Pass, 1, &[]), None);
    }

    #[test]
    fn asked_for_jobs_are_taken_as_given() {
        assert_eq!(jobs(3, 256), 3);
        assert!(jobs(0, 256) >= 1, "the default is at least one VM");
    }
}
