//! `bootgate fuzz-content`: structure-aware fuzzing of a driver's content file
//! through the real load path in a booted guest.
//!
//! The driver is installed and loaded once, and the VM saved right after (a saved
//! state with a setup, cached like the ready state), so an execution costs a restore
//! and an apply, not a boot: restore, write the mutated file where the driver reads
//! it, run the driver's own reload, and watch for a crash (panic event, console
//! report) or a hang. Inputs come from `content::Mutator` over a small corpus that
//! starts with the seeds and keeps every input whose driver messages are new. A crash
//! title seen for the first time is minimized (smaller variants that still crash the
//! same way) and saved with its evidence; the run writes a regression suite that
//! `bootgate run` replays.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::AgentClient;
use crate::fuzz::format::ContentFormat;
use crate::fuzz::minimize;
use crate::fuzz::mutate::Mutator;
use crate::image::{self, Manifest};
use crate::model::exit::Exit;
use crate::model::record::Verdict;
use crate::model::Emitter;
use crate::qemu::accel::{self, Accel, AccelChoice};
use crate::qemu::snapshot::{self, SavedState, StateSetup};
use crate::qemu::QemuTools;
use crate::runner::driver::{self, BuiltDriver};
use crate::runner::interrupted;
use crate::runner::scenario::{self, ScenarioContext};
use crate::suite::{
    self, ApplyContentStep, DumpPolicy, Evidence, Gates, PathPolicy, Scenario, Step, Suite,
    DEFAULT_BOOT_LOOP_BOOTS,
};
use crate::util::{lock, write_atomic};

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Executions spent at most on minimizing one crash.
pub const MINIMIZE_BUDGET: u32 = 60;
/// Infrastructure errors in a row after which the run stops (the host, not the
/// driver, is broken).
const MAX_ERRORS_IN_A_ROW: u32 = 5;
/// Time one agent request of the setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between polls of a setup command.
const SETUP_POLL: Duration = Duration::from_millis(20);
/// Largest driver source folder copied into a regression suite.
const MAX_SOURCE_BYTES: u64 = 16 << 20;

pub struct FuzzOptions {
    /// The suite that defines the driver (its source, content file, reload command).
    pub suite: PathBuf,
    pub driver: String,
    /// Module parameters the driver is loaded with ("fixed=0").
    pub params: String,
    /// The content format description (format.toml).
    pub format: PathBuf,
    /// Starting inputs; empty means the format's own seeds.
    pub seeds: Vec<PathBuf>,
    pub duration: Duration,
    pub max_execs: Option<u64>,
    /// Stop once this many unique crashes are found (and minimized).
    pub stop_after_crashes: Option<usize>,
    /// VMs at once; 0 picks a default from cores and free memory.
    pub jobs: usize,
    pub out_dir: PathBuf,
    pub rng_seed: u64,
    pub accel: AccelChoice,
    pub tools: QemuTools,
    pub path_policy: PathPolicy,
    /// Print a progress line every few seconds.
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error(transparent)]
    Suite(#[from] suite::SuiteError),
    #[error("{suite}: no [driver.{name}] table (defined: {known})")]
    UnknownDriver {
        suite: PathBuf,
        name: String,
        known: String,
    },
    #[error("{suite}: driver {name:?} needs `{field}` for content fuzzing")]
    DriverField {
        suite: PathBuf,
        name: String,
        field: &'static str,
    },
    #[error("content format: {0}")]
    Format(String),
    #[error("seed {path}: {message}")]
    Seed { path: PathBuf, message: String },
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    #[error("driver: {0}")]
    Driver(#[from] driver::DriverError),
    #[error("guest: {0}")]
    Guest(#[from] crate::guest::GuestError),
    #[error("saved state: {0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped after {count} infrastructure errors in a row; the last: {last}")]
    Infrastructure { count: u32, last: String },
}

impl FuzzError {
    /// A wrong suite, driver or format description is the user's to fix (exit 2);
    /// everything else is the host's or the guest image's (exit 3).
    pub fn exit_code(&self) -> Exit {
        match self {
            FuzzError::Suite(_)
            | FuzzError::UnknownDriver { .. }
            | FuzzError::DriverField { .. }
            | FuzzError::Format(_) => Exit::Usage,
            FuzzError::Seed { .. }
            | FuzzError::Image(_)
            | FuzzError::Driver(_)
            | FuzzError::Guest(_)
            | FuzzError::Snapshot(_)
            | FuzzError::Io { .. }
            | FuzzError::Infrastructure { .. } => Exit::Infra,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FuzzError + '_ {
    move |source| FuzzError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One unique crash.
#[derive(Debug, Clone, Serialize)]
pub struct FoundCrash {
    pub title: String,
    /// Executions (counted over the whole run) when it was first seen.
    pub found_at_exec: u64,
    pub seconds_to_find: f64,
    /// What the mutator did to get the first crashing input.
    pub mutation: String,
    pub input_bytes: usize,
    pub minimized_bytes: usize,
    pub minimize_execs: u32,
    /// Files in the output folder (relative): first input, minimized input, evidence.
    pub input: String,
    pub minimized: String,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FuzzReport {
    pub driver: String,
    pub format: String,
    pub seeds: Vec<String>,
    pub rng_seed: u64,
    pub jobs: usize,
    pub execs: u64,
    pub minimize_execs: u64,
    pub errors: u64,
    pub hangs: u64,
    pub seconds: f64,
    pub execs_per_hour: f64,
    pub corpus: usize,
    pub crashes: Vec<FoundCrash>,
    /// `bootgate run` replays these (relative to the output folder).
    pub regression_suite: String,
    pub interrupted: bool,
}

impl FuzzReport {
    /// A found crash is the product failing; an interrupted campaign proves nothing
    /// either way.
    pub fn exit_code(&self) -> Exit {
        if self.interrupted {
            Exit::Interrupted
        } else if self.crashes.is_empty() {
            Exit::Pass
        } else {
            Exit::Fail
        }
    }
}

/// What one execution showed.
enum Outcome {
    Crash {
        title: String,
        evidence: PathBuf,
    },
    Hang(String),
    /// Ran through; the driver's messages on the console, normalized.
    Survived(String),
    Error(String),
}

/// Everything an execution needs, shared by the worker threads.
struct Rig<'a> {
    tools: &'a QemuTools,
    manifest: &'a Manifest,
    accel: Accel,
    suite: &'a Suite,
    driver: &'a str,
    drivers: &'a BTreeMap<String, Result<BuiltDriver, String>>,
    state: &'a SavedState,
    work: &'a Path,
    emitter: &'a Emitter,
    counter: AtomicU64,
}

impl Rig<'_> {
    /// Restores the driver-loaded VM, applies `bytes` through the driver's reload and
    /// says what happened. The evidence folder is removed unless it shows a crash.
    fn execute(&self, bytes: &[u8], standby: Option<&scenario::StandbySlot>) -> Outcome {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let dir = self.work.join(format!("exec-{n}"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return Outcome::Error(format!("cannot create {}: {e}", dir.display()));
        }
        let input = dir.join("input.content");
        if let Err(e) = write_atomic(&input, bytes) {
            return Outcome::Error(format!("cannot write {}: {e}", input.display()));
        }
        let scenario = Scenario {
            name: format!("exec-{n}"),
            description: None,
            steps: vec![Step::ApplyContent(ApplyContentStep {
                driver: self.driver.to_string(),
                file: input.clone(),
                reload: true,
            })],
            gates: Gates::default(),
            expect: None,
            expect_title: None,
            boot_loop_boots: DEFAULT_BOOT_LOOP_BOOTS,
            ignore: false,
            cold_boot: false,
        };
        let rel = format!("exec-{n}");
        let outcome = scenario::run(ScenarioContext {
            tools: self.tools,
            manifest: self.manifest,
            accel: self.accel,
            suite: self.suite,
            scenario: &scenario,
            dir: &dir,
            keep_overlay: false,
            emitter: self.emitter,
            full_name: &rel,
            rel_dir: &rel,
            drivers: self.drivers,
            saved: Some(self.state),
            watch_after_crash: false,
            standby,
            refill_standby: true,
        });
        let result = if let Some(crash) = outcome.crashes.first() {
            Outcome::Crash {
                title: crash.title.clone(),
                evidence: dir.clone(),
            }
        } else if let Some(hang) = outcome.hangs.first() {
            Outcome::Hang(hang.clone())
        } else if outcome.verdict == Verdict::Error {
            Outcome::Error(outcome.reason.unwrap_or_default())
        } else {
            Outcome::Survived(driver_messages(&dir.join("console.log"), self.driver))
        };
        if !matches!(result, Outcome::Crash { .. }) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }
}

/// The driver's own console lines with numbers replaced, as a coarse signature of
/// the path an input took through the parser (accepted, rejected and why, matched).
fn driver_messages(console: &Path, driver: &str) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let prefix = format!("{driver}:");
    let mut lines = BTreeSet::new();
    for line in text.lines() {
        let Some(at) = line.find(&prefix) else {
            continue;
        };
        let normalized: String = line[at..]
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        lines.insert(normalized);
    }
    lines.into_iter().collect::<Vec<_>>().join("\n")
}

/// The inputs, the crashes and the counters, under one lock.
struct Progress {
    mutator: Mutator,
    corpus: Vec<Vec<u8>>,
    signatures: BTreeSet<String>,
    crashes: Vec<FoundCrash>,
    titles: BTreeSet<String>,
    execs: u64,
    minimize_execs: u64,
    errors: u64,
    hangs: u64,
    errors_in_a_row: u32,
    last_error: String,
    pick: u64,
}

impl Progress {
    /// A parent from the corpus (newer entries a little more often) and its mutant.
    fn next_input(&mut self, format: &ContentFormat) -> (Vec<u8>, String) {
        // xorshift for the pick: the mutator's own generator stays its own.
        self.pick ^= self.pick << 13;
        self.pick ^= self.pick >> 7;
        self.pick ^= self.pick << 17;
        let len = self.corpus.len().max(1) as u64;
        let index = if self.pick.is_multiple_of(3) {
            len - 1 - (self.pick / 3) % len.min(4)
        } else {
            self.pick % len
        } as usize;
        let parent = self.corpus.get(index).cloned().unwrap_or_default();
        let mutation = self.mutator.mutate(format, &parent);
        (mutation.bytes, mutation.description)
    }
}

/// Runs the fuzzer; the report is also written as `report.json` in the output folder.
pub fn fuzz(opts: &FuzzOptions, notify: &mut dyn FnMut(&str)) -> Result<FuzzReport, FuzzError> {
    let suite = suite::load_file_with(&opts.suite, opts.path_policy)?;
    let def = suite
        .drivers
        .get(&opts.driver)
        .ok_or_else(|| FuzzError::UnknownDriver {
            suite: suite.path.clone(),
            name: opts.driver.clone(),
            known: suite.drivers.keys().cloned().collect::<Vec<_>>().join(", "),
        })?
        .clone();
    let need = |field: &'static str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(FuzzError::DriverField {
                suite: suite.path.clone(),
                name: opts.driver.clone(),
                field,
            })
        }
    };
    need("content_file", def.content_file.is_some())?;
    need("reload", def.reload.is_some())?;
    let format = ContentFormat::load(&opts.format).map_err(|e| FuzzError::Format(e.to_string()))?;
    let seed_paths = if opts.seeds.is_empty() {
        format.seeds()
    } else {
        opts.seeds.clone()
    };
    let mut corpus = Vec::new();
    for path in &seed_paths {
        let bytes = std::fs::read(path).map_err(io(path))?;
        corpus.push(bytes);
    }
    if corpus.is_empty() {
        return Err(FuzzError::Seed {
            path: opts.format.clone(),
            message: "no seed inputs: pass --seed FILE or list [[seed]] files in the format".into(),
        });
    }

    let manifest = image::resolve(&suite.image, suite.dir(), &mut |t: &str| notify(t))?;
    let decision = accel::decide(
        opts.accel,
        &opts.tools.system,
        manifest.boot.kernel.as_deref(),
    );
    if let Some(notice) = &decision.notice {
        notify(notice);
    }
    let built = driver::prepare(&opts.driver, &def, suite.dir(), &manifest)?;
    let jobs = match opts.jobs {
        0 => crate::runner::default_jobs(manifest.machine.memory_mib),
        n => n,
    };
    let profile = manifest.guest_profile();
    let module_path = profile.driver_path(&opts.driver)?;
    let register = profile.register_driver(&opts.driver, &opts.params, true)?;
    let module = std::fs::read(&built.module).map_err(io(&built.module))?;
    let run_setup = |agent: &mut AgentClient| -> Result<(), String> {
        agent
            .write_file(&module_path, &module, SETUP_TIMEOUT)
            .map_err(|e| format!("copying the module to {module_path}: {e}"))?;
        let pid = agent
            .exec_start(&register.argv, &register.env, None, SETUP_TIMEOUT)
            .map_err(|e| format!("loading the driver: {e}"))?;
        let started = Instant::now();
        loop {
            let status = agent
                .exec_status(pid, SETUP_TIMEOUT)
                .map_err(|e| format!("loading the driver: {e}"))?;
            if status.exited {
                return match status.exit_code {
                    Some(0) => Ok(()),
                    code => Err(format!(
                        "loading the driver exited {code:?}: {}",
                        String::from_utf8_lossy(&status.stderr).trim()
                    )),
                };
            }
            if started.elapsed() > SETUP_TIMEOUT {
                return Err("loading the driver did not finish".into());
            }
            std::thread::sleep(SETUP_POLL);
        }
    };
    let setup = StateSetup {
        identity: format!(
            "driver {} sha256 {} params {:?} argv {:?} env {:?}",
            opts.driver, built.sha256, opts.params, register.argv, register.env
        ),
        label: format!("{} loaded", opts.driver),
        run: &run_setup,
    };
    let state = snapshot::ensure_saved_with(
        &manifest,
        &opts.tools,
        decision.accel,
        Some(&setup),
        &mut |t: &str| notify(t),
    )?;

    let (run_id, out) =
        crate::runner::folder::create_run_dir(&opts.out_dir).map_err(|e| FuzzError::Io {
            path: e.path,
            source: e.source,
        })?;
    let work = out.join(".work");
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    notify(&format!(
        "fuzzing {} content from {} seed(s) for up to {:?}{} with {} VM(s); results in {}",
        opts.driver,
        corpus.len(),
        opts.duration,
        opts.max_execs
            .map_or(String::new(), |n| format!(" or {n} executions")),
        jobs,
        out.display()
    ));
    // Crash evidence is a screenshot and the console; memory dumps of every crash
    // would cost seconds each.
    let mut exec_suite = suite.clone();
    exec_suite.evidence = Evidence {
        memory_dumps: DumpPolicy::None,
        ..Evidence::default()
    };
    let mut drivers = BTreeMap::new();
    drivers.insert(opts.driver.clone(), Ok(built.clone()));
    let emitter = Emitter::new(Vec::new());
    let rig = Rig {
        tools: &opts.tools,
        manifest: &manifest,
        accel: decision.accel,
        suite: &exec_suite,
        driver: &opts.driver,
        drivers: &drivers,
        state: &state,
        work: &work,
        emitter: &emitter,
        counter: AtomicU64::new(0),
    };
    let progress = Mutex::new(Progress {
        mutator: Mutator::new(opts.rng_seed),
        corpus,
        signatures: BTreeSet::new(),
        crashes: Vec::new(),
        titles: BTreeSet::new(),
        execs: 0,
        minimize_execs: 0,
        errors: 0,
        hangs: 0,
        errors_in_a_row: 0,
        last_error: String::new(),
        pick: opts.rng_seed | 1,
    });
    let started = Instant::now();
    let last_print = Mutex::new(Instant::now());
    let fatal: Mutex<Option<FuzzError>> = Mutex::new(None);
    let done = |p: &Progress| {
        interrupted()
            || started.elapsed() >= opts.duration
            || opts.max_execs.is_some_and(|max| p.execs >= max)
            || opts
                .stop_after_crashes
                .is_some_and(|n| p.crashes.len() >= n)
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                // This worker's standby VM: the next execution's QEMU, started while
                // the current one runs.
                let standby = scenario::StandbySlot::default();
                loop {
                let (bytes, description) = {
                    let mut p = lock(&progress);
                    if done(&p) || lock(&fatal).is_some() {
                        break;
                    }
                    p.execs += 1;
                    p.next_input(&format)
                };
                let outcome = rig.execute(&bytes, Some(&standby));
                {
                let mut p = lock(&progress);
                match outcome {
                    Outcome::Survived(signature) => {
                        p.errors_in_a_row = 0;
                        if p.signatures.insert(signature) {
                            p.corpus.push(bytes);
                        }
                    }
                    Outcome::Hang(why) => {
                        p.errors_in_a_row = 0;
                        p.hangs += 1;
                        p.last_error = why;
                    }
                    Outcome::Error(why) => {
                        p.errors += 1;
                        p.errors_in_a_row += 1;
                        p.last_error = why.clone();
                        if p.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
                            *lock(&fatal) = Some(FuzzError::Infrastructure {
                                count: p.errors_in_a_row,
                                last: why,
                            });
                        }
                    }
                    Outcome::Crash { title, evidence } => {
                        p.errors_in_a_row = 0;
                        if !p.titles.insert(title.clone()) {
                            let _ = std::fs::remove_dir_all(&evidence);
                            continue;
                        }
                        let found_at_exec = p.execs;
                        let seconds_to_find = started.elapsed().as_secs_f64();
                        drop(p);
                        if opts.progress {
                            eprintln!(
                                "fuzz: new crash after {found_at_exec} executions ({seconds_to_find:.0} s): {title}; minimizing"
                            );
                        }
                        let found = save_crash(
                            &rig,
                            &format,
                            &out,
                            &title,
                            &bytes,
                            &description,
                            &evidence,
                            lock(&progress).crashes.len() + 1,
                        );
                        let mut p = lock(&progress);
                        match found {
                            Ok(mut crash) => {
                                crash.found_at_exec = found_at_exec;
                                crash.seconds_to_find = seconds_to_find;
                                p.minimize_execs += u64::from(crash.minimize_execs);
                                p.crashes.push(crash);
                            }
                            Err(e) => p.last_error = e.to_string(),
                        }
                    }
                }
                }
                if opts.progress {
                    let p = lock(&progress);
                    let mut last = lock(&last_print);
                    if last.elapsed() >= PROGRESS_EVERY {
                        *last = Instant::now();
                        let secs = started.elapsed().as_secs_f64().max(0.001);
                        eprintln!(
                            "fuzz: {} executions ({:.1}/s), {} unique crash(es), corpus {}, {} hang(s), {} error(s)",
                            p.execs,
                            p.execs as f64 / secs,
                            p.crashes.len(),
                            p.corpus.len(),
                            p.hangs,
                            p.errors
                        );
                    }
                }
                }
            });
        }
    });
    let _ = std::fs::remove_dir_all(&work);
    if let Some(e) = lock(&fatal).take() {
        return Err(e);
    }
    let p = lock(&progress);
    let seconds = started.elapsed().as_secs_f64();
    let regression =
        write_regression_suite(&out, &suite, &opts.driver, &def, &opts.params, &p.crashes)?;
    let report = FuzzReport {
        driver: opts.driver.clone(),
        format: opts.format.display().to_string(),
        seeds: seed_paths.iter().map(|p| p.display().to_string()).collect(),
        rng_seed: opts.rng_seed,
        jobs,
        execs: p.execs,
        minimize_execs: p.minimize_execs,
        errors: p.errors,
        hangs: p.hangs,
        seconds,
        execs_per_hour: (p.execs + p.minimize_execs) as f64 * 3600.0 / seconds.max(0.001),
        corpus: p.corpus.len(),
        crashes: p.crashes.clone(),
        regression_suite: regression,
        interrupted: interrupted(),
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| FuzzError::Format(e.to_string()))?;
    let path = out.join("report.json");
    write_atomic(&path, &json).map_err(io(&path))?;
    let _ = crate::runner::folder::point_latest(&opts.out_dir, &run_id);
    Ok(report)
}

/// A folder-safe name for a crash title.
fn slug(title: &str, n: usize) -> String {
    let mut s: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    format!("{n}-{}", &s[..s.len().min(60)])
}

/// Minimizes a new crash and stores it: first and minimized inputs, and the
/// minimized input's evidence (else the first one's).
#[allow(clippy::too_many_arguments)]
fn save_crash(
    rig: &Rig,
    format: &ContentFormat,
    out: &Path,
    title: &str,
    first: &[u8],
    mutation: &str,
    first_evidence: &Path,
    n: usize,
) -> Result<FoundCrash, FuzzError> {
    let mut current = first.to_vec();
    let mut evidence = first_evidence.to_path_buf();
    let mut spent = 0u32;
    'shrink: while spent < MINIMIZE_BUDGET && !interrupted() {
        for candidate in minimize::candidates(format, &current) {
            if spent >= MINIMIZE_BUDGET || interrupted() {
                break 'shrink;
            }
            if !minimize::is_smaller(&candidate.bytes, &current) {
                continue;
            }
            spent += 1;
            match rig.execute(&candidate.bytes, None) {
                Outcome::Crash {
                    title: t,
                    evidence: e,
                } if t == title => {
                    // Keep the first input's evidence and the latest only.
                    if evidence != first_evidence {
                        let _ = std::fs::remove_dir_all(&evidence);
                    }
                    current = candidate.bytes;
                    evidence = e;
                    continue 'shrink;
                }
                Outcome::Crash { evidence: e, .. } => {
                    let _ = std::fs::remove_dir_all(e);
                }
                _ => {}
            }
        }
        break;
    }
    let rel = PathBuf::from("crashes").join(slug(title, n));
    let dir = out.join(&rel);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let first_path = dir.join("first.content");
    write_atomic(&first_path, first).map_err(io(&first_path))?;
    let min_path = dir.join("minimized.content");
    write_atomic(&min_path, &current).map_err(io(&min_path))?;
    let evidence_dir = dir.join("evidence");
    std::fs::rename(&evidence, &evidence_dir).map_err(io(&evidence))?;
    if evidence != first_evidence {
        let _ = std::fs::remove_dir_all(first_evidence);
    }
    let title_path = dir.join("title.txt");
    write_atomic(&title_path, format!("{title}\n").as_bytes()).map_err(io(&title_path))?;
    Ok(FoundCrash {
        title: title.to_string(),
        found_at_exec: 0,
        seconds_to_find: 0.0,
        mutation: mutation.to_string(),
        input_bytes: first.len(),
        minimized_bytes: current.len(),
        minimize_execs: spent,
        input: rel.join("first.content").display().to_string(),
        minimized: rel.join("minimized.content").display().to_string(),
        evidence: rel.join("evidence").display().to_string(),
    })
}

/// Writes `regression.toml` (and copies of the driver and inputs it needs, so the
/// folder replays on its own): one scenario per crash that installs the driver,
/// applies the minimized input and holds the usual gates. It fails while the bug is
/// there (with the same title) and passes once it is fixed.
fn write_regression_suite(
    out: &Path,
    suite: &Suite,
    name: &str,
    def: &suite::Driver,
    params: &str,
    crashes: &[FoundCrash],
) -> Result<String, FuzzError> {
    let mut driver_line = String::new();
    if let Some(source) = &def.source {
        let from = suite.dir().join(source);
        let to = out.join("driver").join(name);
        copy_tree(&from, &to)?;
        driver_line = format!("source = {:?}", format!("driver/{name}"));
    } else if let Some(module) = &def.module {
        let from = suite.dir().join(module);
        let to = out.join("driver").join(format!("{name}.ko"));
        std::fs::create_dir_all(out.join("driver")).map_err(io(out))?;
        std::fs::copy(&from, &to).map_err(io(&from))?;
        driver_line = format!("module = {:?}", format!("driver/{name}.ko"));
    }
    let image = if image::BUILT_IN.contains(&suite.image.as_str()) {
        suite.image.clone()
    } else {
        suite.dir().join(&suite.image).display().to_string()
    };
    let mut text = format!(
        "# Written by `bootgate fuzz-content`: one scenario per unique crash, with the\n\
         # minimized input. Each fails (with the title below) while the bug is there and\n\
         # passes once the driver handles the input. Replay: bootgate run {}\n\n\
         [suite]\nname = \"fuzz-regression\"\nimage = {image:?}\n\n[driver.{name}]\n{driver_line}\n",
        out.join("regression.toml").display()
    );
    if let Some(content_file) = &def.content_file {
        text.push_str(&format!("content_file = {content_file:?}\n"));
    }
    if let Some(reload) = &def.reload {
        text.push_str(&format!("reload = {reload:?}\n"));
    }
    for (i, crash) in crashes.iter().enumerate() {
        text.push_str(&format!(
            "\n[[scenario]]\nname = \"crash-{}\"\ndescription = {:?}\nsteps = [\n  {{ install_driver = {{ driver = {name:?}, params = {params:?}, load_now = true }} }},\n  {{ apply_content = {{ driver = {name:?}, file = {:?}, reload = true }} }},\n]\n",
            i + 1,
            format!("{} (found after {} executions)", crash.title, crash.found_at_exec),
            crash.minimized
        ));
    }
    if crashes.is_empty() {
        text.push_str("\n# No crash was found, so there is nothing to replay yet.\n");
    }
    let path = out.join("regression.toml");
    write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
    Ok("regression.toml".into())
}

/// Copies a driver source folder (files only, bounded in size).
fn copy_tree(from: &Path, to: &Path) -> Result<(), FuzzError> {
    let mut total = 0u64;
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|e| FuzzError::Io {
            path: from.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
        } else if entry.file_type().is_file() {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if total > MAX_SOURCE_BYTES {
                return Err(FuzzError::Io {
                    path: from.to_path_buf(),
                    source: std::io::Error::other("driver source folder larger than 16 MiB"),
                });
            }
            std::fs::copy(entry.path(), &target).map_err(io(entry.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_folder_safe_and_numbered() {
        assert_eq!(
            slug("BUG: unable to handle page fault in sensor_match_fields", 1),
            "1-bug-unable-to-handle-page-fault-in-sensor-match-fields"
        );
        assert_eq!(slug("../../x", 2), "2-x");
    }

    #[test]
    fn driver_messages_ignore_numbers_and_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(
            &console,
            "[    1.2] demo_sensor: content rejected: truncated (12 bytes)\n[ 3.4] other: 5\n[ 9.9] demo_sensor: content rejected: truncated (40 bytes)\n",
        )
        .unwrap();
        assert_eq!(
            driver_messages(&console, "demo_sensor"),
            "demo_sensor: content rejected: truncated (## bytes)"
        );
    }
}
