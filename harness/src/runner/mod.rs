//! The runner: resolves images, picks the accelerator, creates the run folder, runs
//! scenarios and emits events. It never formats results itself: every output (the
//! terminal, run.json, junit.xml) is a `Sink` that consumes the events.

pub mod driver;
pub mod folder;
pub mod merge;
pub mod options;
pub mod rerun;
pub mod rollout;
pub mod scenario;
pub mod shard;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::image::{self, ImageError, Manifest};
use crate::model::exit::Exit;
use crate::model::record::{
    AttemptRecord, FileHash, HostInfo, QemuInfo, RunRecord, RunSettings, ScenarioRecord, Summary,
    Verdict, VmArgv, SCHEMA_VERSION,
};
use crate::model::{Emitter, Event, ReportError};
use crate::qemu;
use crate::qemu::accel::{self, AccelDecision};
use crate::qemu::snapshot::{self, SavedState};
use crate::suite::Suite;
use crate::util::{lock, sha256_file};
use driver::BuiltDriver;
use folder::{absolute, FolderError};
pub use options::{IgnoredPolicy, RunOptions};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks the running suite to stop: VMs are torn down and the results written with
/// `interrupted: true`. Safe to call from a signal handler thread.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no scenario matches {0:?}; list them with `bootgate list PATH`")]
    NoMatch(Vec<String>),
    #[error("suite {suite}: {source}")]
    Image {
        suite: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error(
        "cannot create the results folder {path}: {source} (pass --out DIR to write elsewhere)"
    )]
    Results {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write results: {0}")]
    Report(#[from] ReportError),
    #[error("refusing to rerun: input {0} has changed since the run (its sha256 differs); restore it or start a new run")]
    InputChanged(String),
    #[error("refusing to rerun: input {0} was not an input of the run (the suite or image now resolves to other files)")]
    InputNew(String),
}

impl RunError {
    /// Usage mistakes (exit 2) versus infrastructure trouble (exit 3).
    pub fn is_usage(&self) -> bool {
        match self {
            RunError::NoMatch(_) => true,
            RunError::Image { source, .. } => {
                matches!(source, ImageError::Unknown(_) | ImageError::Manifest(_))
            }
            RunError::InputChanged(_) | RunError::InputNew(_) => true,
            RunError::Results { .. } | RunError::Report(_) => false,
        }
    }

    pub fn exit_code(&self) -> Exit {
        if self.is_usage() {
            Exit::Usage
        } else {
            Exit::Infra
        }
    }
}

/// The scenarios a run covers, in suite order: the filters (`only`, `skip`, ignored),
/// then the shard.
/// (A shard may be empty when it has more shards than scenarios.)
pub fn select<'a>(suites: &'a [Suite], opts: &RunOptions) -> Vec<(&'a Suite, usize)> {
    let full = |suite: &Suite, i: usize| format!("{}/{}", suite.name, suite.scenarios[i].name);
    let filtered: Vec<(&Suite, usize)> = suites
        .iter()
        .flat_map(|suite| (0..suite.scenarios.len()).map(move |i| (suite, i)))
        .filter(|(suite, i)| {
            let name = full(suite, *i);
            let matches = |f: &String| {
                if opts.exact {
                    name == *f
                } else {
                    name.contains(f.as_str())
                }
            };
            let ignored = suite.scenarios[*i].ignore;
            let wanted_by_ignore = match opts.ignored {
                IgnoredPolicy::Skip => !ignored,
                IgnoredPolicy::Only => ignored,
                IgnoredPolicy::Include => true,
            };
            wanted_by_ignore
                && (opts.only.is_empty() || opts.only.iter().any(matches))
                && !opts.skip.iter().any(matches)
        })
        .collect();
    let Some(shard) = &opts.shard else {
        return filtered;
    };
    let names: Vec<String> = filtered.iter().map(|(s, i)| full(s, *i)).collect();
    let mine = shard::select(&names, &opts.expected_ms, shard);
    filtered
        .into_iter()
        .zip(names)
        .filter(|(_, name)| mine.contains(name))
        .map(|(pair, _)| pair)
        .collect()
}

/// Runs every selected scenario of `suites`; returns the finished record.
pub fn run(
    suites: &[Suite],
    opts: &RunOptions,
    emitter: &Emitter,
) -> Result<(RunRecord, PathBuf), RunError> {
    // Folders left by a bootgate that was killed outright (its QEMUs died with it).
    let swept = crate::qemu::vm::sweep_stale_vm_dirs();
    if swept > 0 {
        emitter.notice(&format!(
            "removed {swept} VM folder(s) left by a bootgate that was killed"
        ));
    }
    let selected = select(suites, opts);
    if selected.is_empty() && opts.shard.is_none() {
        return Err(RunError::NoMatch(opts.only.clone()));
    }

    // QEMU missing is an infrastructure error for every scenario, not a usage error:
    // the suite is fine, the host is not ready.
    let qemu_problem =
        qemu::version(&opts.tools.system).and_then(|v| qemu::version(&opts.tools.img).map(|_| v));
    let mut qemu_info = QemuInfo::default();
    let mut manifests: BTreeMap<PathBuf, Manifest> = BTreeMap::new();
    let mut decision: Option<AccelDecision> = None;
    // An empty shard runs nothing: no image, no accelerator probe.
    if let (Ok(version), false) = (&qemu_problem, selected.is_empty()) {
        qemu_info.version = Some(version.clone());
        for (suite, _) in &selected {
            if manifests.contains_key(&suite.path) {
                continue;
            }
            let mut notices = Vec::new();
            let reference = opts
                .target
                .as_ref()
                .and_then(|t| t.image.clone())
                .unwrap_or_else(|| suite.image.clone());
            let mut manifest = image::resolve(&reference, suite.dir(), &mut |text: &str| {
                notices.push(text.to_string());
                eprintln!("bootgate: {text}");
            })
            .map_err(|source| RunError::Image {
                suite: suite.path.clone(),
                source,
            })?;
            if let Some(target) = &opts.target {
                apply_target(&mut manifest, target);
            }
            manifests.insert(suite.path.clone(), manifest);
        }
        let first_kernel = manifests
            .values()
            .next()
            .and_then(|m| m.boot.kernel.clone());
        let d = accel::decide(opts.accel, &opts.tools.system, first_kernel.as_deref());
        qemu_info.accel = Some(d.accel.as_str().into());
        qemu_info.accel_notice = d.notice.clone();
        decision = Some(d);
    }

    // Saved ready states for fast starts: one per image that a scenario will start
    // from (not the cold-boot ones). A state that cannot be saved only costs time.
    let mut saved: BTreeMap<PathBuf, SavedState> = BTreeMap::new();
    if let Some(decision) = &decision {
        for (suite, index) in &selected {
            let Some(manifest) = manifests.get(&suite.path) else {
                continue;
            };
            // UEFI and TPM machines boot cold: see Manifest::supports_saved_state.
            if suite.scenarios[*index].cold_boot
                || saved.contains_key(&suite.path)
                || !manifest.ready.agent
                || !manifest.supports_saved_state()
            {
                continue;
            }
            let mut notify = |text: &str| emitter.notice(text);
            match snapshot::ensure_saved(manifest, &opts.tools, decision.accel, &mut notify) {
                Ok(state) => {
                    saved.insert(suite.path.clone(), state);
                }
                Err(e) => emitter.notice(&format!(
                    "could not save a ready state of {} for fast starts ({e}); its scenarios boot cold",
                    manifest.name
                )),
            }
        }
    }

    // Candidate drivers, built against each suite's image (or taken prebuilt). A driver
    // that cannot be built makes the scenarios that use it `error`, not the whole run.
    let mut built: BTreeMap<PathBuf, BTreeMap<String, Result<BuiltDriver, String>>> =
        BTreeMap::new();
    for (suite, _) in &selected {
        if built.contains_key(&suite.path) {
            continue;
        }
        let mut drivers = BTreeMap::new();
        if let Some(manifest) = manifests.get(&suite.path) {
            for (name, def) in &suite.drivers {
                let result =
                    driver::prepare(name, def, suite.dir(), manifest).map_err(|e| e.to_string());
                if let Err(why) = &result {
                    emitter.notice(why);
                }
                drivers.insert(name.clone(), result);
            }
        }
        built.insert(suite.path.clone(), drivers);
    }

    let mut inputs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    if let Some(file) = &opts.timings_file {
        let sha256 = sha256_file(file).map_err(|source| RunError::Results {
            path: file.clone(),
            source,
        })?;
        seen.insert(file.clone());
        inputs.push(FileHash {
            path: file.display().to_string(),
            sha256,
        });
    }
    for (suite, _) in &selected {
        let mut files = vec![suite.path.clone()];
        if let Some(m) = manifests.get(&suite.path) {
            files.extend(m.input_files());
        }
        for built in built
            .get(&suite.path)
            .into_iter()
            .flat_map(|d| d.values())
            .flatten()
        {
            files.push(built.module.clone());
            files.extend(built.sources.iter().cloned());
        }
        for scenario in &suite.scenarios {
            for step in &scenario.steps {
                if let crate::suite::Step::ApplyContent(apply) = step {
                    files.push(suite.dir().join(&apply.file));
                }
            }
        }
        for file in files {
            if seen.insert(file.clone()) {
                let sha256 = sha256_file(&file).map_err(|source| RunError::Results {
                    path: file.clone(),
                    source,
                })?;
                inputs.push(FileHash {
                    path: file.display().to_string(),
                    sha256,
                });
            }
        }
    }
    // A rerun must use exactly the inputs of the run it repeats: refuse before any VM
    // starts if a suite, image, driver or content file is not the same.
    if let Some(required) = &opts.required_inputs {
        for input in &inputs {
            match required.iter().find(|r| r.path == input.path) {
                Some(r) if r.sha256 == input.sha256 => {}
                Some(_) => return Err(RunError::InputChanged(input.path.clone())),
                None => return Err(RunError::InputNew(input.path.clone())),
            }
        }
    }
    let folder_error = |e: FolderError| RunError::Results {
        path: e.path,
        source: e.source,
    };
    let (run_id, run_dir) = folder::create_run_dir(&opts.out_dir).map_err(folder_error)?;
    folder::point_latest(&opts.out_dir, &run_id).map_err(folder_error)?;
    let record = RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id,
        started_at: now(),
        finished_at: None,
        interrupted: false,
        bootgate_version: env!("CARGO_PKG_VERSION").into(),
        command: opts.command.clone(),
        settings: RunSettings {
            accel: format!("{:?}", opts.accel).to_lowercase(),
            keep: opts.keep,
            suites: suites.iter().map(|s| absolute(&s.path)).collect(),
            allow_outside_paths: opts.path_policy == crate::suite::PathPolicy::Anywhere,
            target: opts.target.clone(),
        },
        host: host_info(),
        qemu: qemu_info,
        inputs,
        scenarios: Vec::new(),
        summary: Summary::default(),
    };
    emitter.emit(&Event::RunStarted {
        run: &record,
        dir: &run_dir,
        scenarios: selected.len(),
    });
    if let Some(notice) = record.qemu.accel_notice.clone() {
        emitter.notice(&notice);
    }

    let total = selected.len();
    let jobs = match opts.jobs {
        0 => {
            let biggest = manifests
                .values()
                .map(|m| m.machine.memory_mib)
                .max()
                .unwrap_or(256);
            default_jobs(biggest)
        }
        n => n,
    };
    let no_drivers = BTreeMap::new();
    let next = AtomicUsize::new(0);
    let shared = Shared {
        opts,
        run_dir: &run_dir,
        qemu_problem: qemu_problem.as_ref().err().map(|e| e.to_string()),
        manifests: &manifests,
        decision: decision.as_ref(),
        built: &built,
        no_drivers: &no_drivers,
        saved: &saved,
        emitter,
        started: Instant::now(),
        next: &next,
        scheduled: selected.len(),
    };
    let record_cell = Mutex::new(record);
    // Longest first when durations are known (fewer idle workers at the end); the
    // results are put back in suite order afterwards.
    let mut schedule: Vec<usize> = (0..selected.len()).collect();
    schedule.sort_by_key(|&i| {
        let (suite, n) = selected[i];
        let name = format!("{}/{}", suite.name, suite.scenarios[n].name);
        std::cmp::Reverse(opts.expected_ms.get(&name).copied().unwrap_or(0))
    });
    let positions: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    // Each worker owns its VMs for their whole lives (the parent-death signal is
    // tied to the thread that spawned QEMU): the running one, and a standby for the
    // next scenario, stopped when the worker ends.
    let worker_loop = |slot: usize, standby: &scenario::StandbySlot| loop {
        if interrupted() {
            break;
        }
        let Some(&index) = schedule.get(next.fetch_add(1, Ordering::SeqCst)) else {
            break;
        };
        let (suite, scenario_index) = &selected[index];
        let (scenario_record, argvs, was_interrupted) =
            shared.run_one(suite, *scenario_index, index, total, slot, standby);
        let mut record = lock(&record_cell);
        for argv in argvs {
            record.qemu.argv.push(VmArgv {
                scenario: scenario_record.name.clone(),
                argv,
            });
        }
        record.interrupted |= was_interrupted;
        record.scenarios.push(scenario_record);
        lock(&positions).push(index);
        record.summary = Summary::of(&record.scenarios);
        if let Some(last) = record.scenarios.last() {
            emitter.emit(&Event::ScenarioFinished {
                scenario: last,
                run: &record,
            });
        }
    };
    let worker = |slot: usize| {
        let standby = scenario::StandbySlot::default();
        worker_loop(slot, &standby);
    };
    std::thread::scope(|scope| {
        for n in 0..jobs.max(1).min(total) {
            let spawned = std::thread::Builder::new()
                .name(format!("scenario-{n}"))
                .spawn_scoped(scope, move || worker(n));
            if spawned.is_err() {
                // No thread: run in this one instead (same work, just serial).
                worker(n);
            }
        }
    });
    let mut record = record_cell
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    // Results in suite order, whatever order the workers finished in.
    let positions = positions
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let mut ordered: Vec<(usize, ScenarioRecord)> = positions
        .into_iter()
        .zip(record.scenarios.drain(..))
        .collect();
    ordered.sort_by_key(|(position, _)| *position);
    record.scenarios = ordered.into_iter().map(|(_, s)| s).collect();
    if interrupted() {
        record.interrupted = true;
    }
    record.finished_at = Some(now());
    record.summary = Summary::of(&record.scenarios);
    emitter.emit(&Event::RunFinished {
        run: &record,
        dir: &run_dir,
    });
    if let Some(failure) = emitter.take_failure() {
        return Err(RunError::Report(failure));
    }
    Ok((record, run_dir))
}

/// What every scenario worker reads.
struct Shared<'a> {
    opts: &'a RunOptions,
    run_dir: &'a Path,
    qemu_problem: Option<String>,
    manifests: &'a BTreeMap<PathBuf, Manifest>,
    decision: Option<&'a AccelDecision>,
    built: &'a BTreeMap<PathBuf, BTreeMap<String, Result<BuiltDriver, String>>>,
    no_drivers: &'a BTreeMap<String, Result<BuiltDriver, String>>,
    saved: &'a BTreeMap<PathBuf, SavedState>,
    emitter: &'a Emitter,
    /// When the scenarios began to be scheduled: the zero of `queued_ms`.
    started: Instant,
    /// The schedule's next position, and its length.
    next: &'a AtomicUsize,
    scheduled: usize,
}

impl Shared<'_> {
    /// Runs one scenario, retrying it as the options allow; returns the final
    /// attempt's record (earlier attempts listed in it), every VM's command line and
    /// whether it was interrupted.
    fn run_one(
        &self,
        suite: &Suite,
        scenario_index: usize,
        index: usize,
        total: usize,
        worker: usize,
        standby: &scenario::StandbySlot,
    ) -> (ScenarioRecord, Vec<Vec<String>>, bool) {
        let opts = self.opts;
        let scenario = &suite.scenarios[scenario_index];
        let full_name = format!("{}/{}", suite.name, scenario.name);
        self.emitter.emit(&Event::ScenarioStarted {
            name: &full_name,
            index,
            total,
        });
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut all_argvs = Vec::new();
        let mut attempt = 1u32;
        loop {
            // The first attempt keeps the plain folder name; later ones sit beside it.
            let rel_dir = match attempt {
                1 => PathBuf::from(&suite.name).join(&scenario.name),
                k => PathBuf::from(&suite.name).join(format!("{}.attempt-{k}", scenario.name)),
            };
            let (mut record, argvs, was_interrupted) =
                self.attempt(suite, scenario_index, &rel_dir, worker, standby);
            all_argvs.extend(argvs);
            let retry = !was_interrupted
                && !interrupted()
                && should_retry(record.verdict, attempt, opts.retries, opts.retry_failures);
            if !retry {
                if let Some(reason) = flaky_reason(record.verdict, attempt, &attempts) {
                    record.verdict = Verdict::Flaky;
                    record.reason = Some(reason);
                }
                for earlier in &attempts {
                    record.artifacts.extend(earlier.artifacts.iter().cloned());
                }
                record.attempts = attempts;
                return (record, all_argvs, was_interrupted);
            }
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
        standby: &scenario::StandbySlot,
    ) -> (ScenarioRecord, Vec<Vec<String>>, bool) {
        let opts = self.opts;
        let scenario = &suite.scenarios[scenario_index];
        let full_name = format!("{}/{}", suite.name, scenario.name);
        let rel_dir = rel_dir.to_path_buf();
        let dir = self.run_dir.join(&rel_dir);
        let started = Instant::now();
        let mut record = ScenarioRecord {
            name: full_name.clone(),
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
            rerun: rerun_command(opts, self.run_dir, &full_name),
            hang_screenshots: Vec::new(),
            queued_ms: self.started.elapsed().as_millis() as u64,
            worker,
            attempts: Vec::new(),
        };
        let mut argvs = Vec::new();
        let mut was_interrupted = false;
        if let Err(e) = std::fs::create_dir_all(&dir) {
            record.reason = Some(format!("cannot create {}: {e}", dir.display()));
        } else {
            match (
                &self.qemu_problem,
                self.manifests.get(&suite.path),
                self.decision,
            ) {
                (Some(problem), _, _) => record.reason = Some(problem.clone()),
                (None, Some(manifest), Some(decision)) => {
                    let outcome = scenario::run(scenario::ScenarioContext {
                        tools: &opts.tools,
                        manifest,
                        accel: decision.accel,
                        suite,
                        scenario,
                        dir: &dir,
                        keep_overlay: opts.keep,
                        emitter: self.emitter,
                        full_name: &full_name,
                        rel_dir: &rel_dir.display().to_string(),
                        drivers: self.built.get(&suite.path).unwrap_or(self.no_drivers),
                        saved: self.saved.get(&suite.path),
                        watch_after_crash: true,
                        standby: Some(standby),
                        // Another scenario left in the queue may take it.
                        refill_standby: self.next.load(Ordering::SeqCst) < self.scheduled,
                    });
                    record.verdict = outcome.verdict;
                    record.reason = outcome.reason;
                    record.boots = outcome.boots;
                    record.steps = outcome.steps;
                    record.crashes = outcome.crashes;
                    record.hangs = outcome.hangs;
                    record.hang_screenshots = outcome.hang_screenshots;
                    record.boot_loop = outcome.boot_loop;
                    record.recovery = outcome.recovery;
                    argvs = outcome.argvs;
                    was_interrupted = outcome.interrupted;
                }
                _ => record.reason = Some("no image resolved for this suite".into()),
            }
        }
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.artifacts = hash_artifacts(self.run_dir, &dir);
        (record, argvs, was_interrupted)
    }
}

/// A rollout target's machine overrides on a resolved image. The saved-state key
/// covers the command line, so each variant gets a state of its own.
fn apply_target(manifest: &mut Manifest, target: &crate::suite::Target) {
    if let Some(cpus) = target.cpus {
        manifest.machine.cpus = cpus;
    }
    if let Some(memory) = target.memory_mib {
        manifest.machine.memory_mib = memory;
    }
    if let Some(extra) = &target.append {
        manifest.boot.append = format!("{} {extra}", manifest.boot.append)
            .trim()
            .to_string();
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

/// Memory a VM costs beyond its guest RAM (QEMU itself, TCG's translation cache).
const VM_OVERHEAD_MIB: u64 = 256;

/// VMs to run at once by default: one per core, as many as free memory allows.
pub fn default_jobs(vm_memory_mib: u32) -> usize {
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

/// The command that reruns one scenario of this run with the same inputs and settings.
fn rerun_command(opts: &RunOptions, run_dir: &Path, scenario: &str) -> Vec<String> {
    vec![
        "bootgate".into(),
        "rerun".into(),
        absolute(run_dir),
        scenario.into(),
        "--out".into(),
        absolute(&opts.out_dir),
    ]
}

fn host_info() -> HostInfo {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    HostInfo {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: format!(
            "Linux {} {}",
            read("/proc/sys/kernel/osrelease"),
            std::env::consts::ARCH
        ),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
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
}
