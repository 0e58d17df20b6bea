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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::format::ContentFormat;
use super::regression::write_regression_suite;
use super::worker::{Campaign, Limits, Progress, Reporter, Rig};
use crate::agent::AgentClient;
use crate::guest::GuestCommand;
use crate::image::{self, Manifest};
use crate::model::exit::Exit;
use crate::model::record::DriverBuilds;
use crate::model::Emitter;
use crate::qemu::accel::{Accel, AccelChoice};
use crate::qemu::snapshot::{self, SavedState, StateSetup};
use crate::qemu::QemuTools;
use crate::runner::driver::{self, BuiltDriver};
use crate::runner::interrupted;
use crate::runner::pool;
use crate::runner::prepare::{self, RunFolder};
use crate::suite::{self, DumpPolicy, Evidence, PathPolicy, Suite};
use crate::util::write_atomic;

/// Time one agent request of the setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between polls of a setup command.
const SETUP_POLL: Duration = Duration::from_millis(20);

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
    /// Executions between restores of the VM (1: restore before every one);
    /// see [`super::DEFAULT_RESTORE_EVERY`].
    pub restore_every: u32,
    pub accel: AccelChoice,
    pub tools: QemuTools,
    pub path_policy: PathPolicy,
    /// Whether the driver's source builds in the build sandbox (`--unsandboxed-builds`).
    pub driver_builds: DriverBuilds,
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

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FuzzError + '_ {
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
    /// Executions between restores of the VM (1: every execution restored it).
    pub restore_every: u32,
    /// Inputs that stopped a kept guest and were replayed alone from the saved state
    /// to see whether they crash by themselves.
    pub replays: u64,
    /// Crash titles seen in a kept guest whose input did not crash when replayed
    /// alone: state built up by earlier inputs, never reported as the driver's crash
    /// of that input. Each with how often.
    pub unconfirmed: BTreeMap<String, u64>,
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

/// What a campaign starts from: the suite and its driver, the format, the seeds.
struct Plan {
    suite: Suite,
    def: suite::Driver,
    format: ContentFormat,
    seed_paths: Vec<PathBuf>,
    corpus: Vec<Vec<u8>>,
}

impl Plan {
    /// Loads the suite, checks the driver can be fuzzed, and reads the seeds.
    fn load(opts: &FuzzOptions) -> Result<Plan, FuzzError> {
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
        for (field, present) in [
            ("content_file", def.content_file.is_some()),
            ("reload", def.reload.is_some()),
        ] {
            if !present {
                return Err(FuzzError::DriverField {
                    suite: suite.path.clone(),
                    name: opts.driver.clone(),
                    field,
                });
            }
        }
        let format =
            ContentFormat::load(&opts.format).map_err(|e| FuzzError::Format(e.to_string()))?;
        let seed_paths = if opts.seeds.is_empty() {
            format.seeds()
        } else {
            opts.seeds.clone()
        };
        let corpus = seed_paths
            .iter()
            .map(|path| std::fs::read(path).map_err(io(path)))
            .collect::<Result<Vec<_>, _>>()?;
        if corpus.is_empty() {
            return Err(FuzzError::Seed {
                path: opts.format.clone(),
                message: "no seed inputs: pass --seed FILE or list [[seed]] files in the format"
                    .into(),
            });
        }
        Ok(Plan {
            suite,
            def,
            format,
            seed_paths,
            corpus,
        })
    }
}

/// The guest side of a campaign: the image, the accelerator, the built driver and
/// the state saved with it loaded.
struct Machine {
    manifest: Manifest,
    accel: Accel,
    built: BuiltDriver,
    state: SavedState,
}

impl Machine {
    fn prepare(opts: &FuzzOptions, plan: &Plan, emitter: &Emitter) -> Result<Machine, FuzzError> {
        let manifest = prepare::resolve_image(&plan.suite, None, emitter)?;
        let decision = prepare::decide_accel(opts.accel, &opts.tools, Some(&manifest));
        if let Some(notice) = &decision.notice {
            emitter.notice(notice);
        }
        let built = prepare::build_driver(
            &opts.driver,
            &plan.def,
            &plan.suite,
            &manifest,
            opts.driver_builds,
            emitter,
        )?;
        let state = driver_loaded_state(opts, &manifest, &built, decision.accel, emitter)?;
        Ok(Machine {
            manifest,
            accel: decision.accel,
            built,
            state,
        })
    }
}

/// The image's state saved right after the driver was copied in and loaded, so an
/// execution costs a restore and an apply, not a boot.
fn driver_loaded_state(
    opts: &FuzzOptions,
    manifest: &Manifest,
    built: &BuiltDriver,
    accel: Accel,
    emitter: &Emitter,
) -> Result<SavedState, FuzzError> {
    let profile = manifest.guest_profile();
    let module_path = profile.driver_upload_path(&opts.driver)?;
    let make_dir = profile
        .parent_dir(&module_path)
        .and_then(|dir| profile.make_dir(&dir));
    let register = profile.register_driver(&opts.driver, &opts.params, true, false)?;
    let module = std::fs::read(&built.module).map_err(io(&built.module))?;
    let run = |agent: &mut AgentClient| {
        if let Some(command) = &make_dir {
            run_to_end(agent, command, "creating the driver's folder")?;
        }
        load_driver(agent, &module_path, &module, &register)
    };
    let setup = StateSetup {
        identity: format!(
            "driver {} sha256 {} params {:?} argv {:?} env {:?}",
            opts.driver, built.sha256, opts.params, register.argv, register.env
        ),
        label: format!("{} loaded", opts.driver),
        run: &run,
    };
    Ok(prepare::saved_state(
        manifest,
        &opts.tools,
        accel,
        Some(&setup),
        emitter,
    )?)
}

/// Copies the module into the guest and runs its registration, waiting for it.
fn load_driver(
    agent: &mut AgentClient,
    module_path: &str,
    module: &[u8],
    register: &GuestCommand,
) -> Result<(), String> {
    agent
        .write_file(module_path, module, SETUP_TIMEOUT)
        .map_err(|e| format!("copying the module to {module_path}: {e}"))?;
    run_to_end(agent, register, "loading the driver")
}

/// Runs a guest command to its end; Err says `what` failed and why.
fn run_to_end(agent: &mut AgentClient, command: &GuestCommand, what: &str) -> Result<(), String> {
    let pid = agent
        .exec_start(&command.argv, &command.env, None, SETUP_TIMEOUT)
        .map_err(|e| format!("{what}: {e}"))?;
    let started = Instant::now();
    loop {
        let status = agent
            .exec_status(pid, SETUP_TIMEOUT)
            .map_err(|e| format!("{what}: {e}"))?;
        if status.exited {
            return match status.exit_code {
                Some(0) => Ok(()),
                code => Err(format!(
                    "{what} exited {code:?}: {}",
                    String::from_utf8_lossy(&status.stderr).trim()
                )),
            };
        }
        if started.elapsed() > SETUP_TIMEOUT {
            return Err(format!("{what} did not finish"));
        }
        std::thread::sleep(SETUP_POLL);
    }
}

/// Runs the fuzzer; the report is also written as `report.json` in the output
/// folder. Progress (notices, counters, new crashes) goes to `emitter`.
pub fn fuzz(opts: &FuzzOptions, emitter: &Emitter) -> Result<FuzzReport, FuzzError> {
    let plan = Plan::load(opts)?;
    let machine = Machine::prepare(opts, &plan, emitter)?;
    let jobs = pool::jobs(opts.jobs, machine.manifest.machine.memory_mib);
    let folder = RunFolder::create(&opts.out_dir).map_err(|e| FuzzError::Io {
        path: e.path,
        source: e.source,
    })?;
    let work = folder.dir.join(".work");
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    emitter.notice(&format!(
        "fuzzing {} content from {} seed(s) for up to {:?}{} with {} VM(s); results in {}",
        opts.driver,
        plan.corpus.len(),
        opts.duration,
        opts.max_execs
            .map_or(String::new(), |n| format!(" or {n} executions")),
        jobs,
        folder.dir.display()
    ));
    let started = Instant::now();
    let progress = run_campaign(opts, &plan, &machine, &folder.dir, &work, jobs, emitter);
    let _ = std::fs::remove_dir_all(&work);
    let progress = progress?;
    let report = write_report(opts, &plan, &folder.dir, jobs, &progress, started)?;
    let _ = folder.point_latest();
    Ok(report)
}

/// The workers over a VM rig set up from `machine`, until a limit is reached.
fn run_campaign(
    opts: &FuzzOptions,
    plan: &Plan,
    machine: &Machine,
    out: &Path,
    work: &Path,
    jobs: usize,
    emitter: &Emitter,
) -> Result<Progress, FuzzError> {
    // Crash evidence is a screenshot and the console; memory dumps of every crash
    // would cost seconds each.
    let mut exec_suite = plan.suite.clone();
    exec_suite.evidence = Evidence {
        memory_dumps: DumpPolicy::None,
        ..Evidence::default()
    };
    let mut drivers = BTreeMap::new();
    drivers.insert(opts.driver.clone(), Ok(machine.built.clone()));
    let silent = Emitter::new(Vec::new());
    let rig = Rig {
        tools: &opts.tools,
        manifest: &machine.manifest,
        accel: machine.accel,
        suite: &exec_suite,
        driver: &opts.driver,
        drivers: &drivers,
        state: &machine.state,
        work,
        silent: &silent,
        counter: AtomicU64::new(0),
        dumps: crate::runner::dump_budget::DumpBudget::default(),
        restore_every: opts.restore_every,
    };
    let limits = Limits {
        duration: opts.duration,
        max_execs: opts.max_execs,
        stop_after_crashes: opts.stop_after_crashes,
    };
    let progress = Progress::new(plan.corpus.clone(), opts.rng_seed);
    let reporter = Reporter::new(emitter, opts.progress);
    Campaign::new(rig, &plan.format, out, limits, progress, reporter).run(jobs)
}

/// The report, with the regression suite beside it, written as report.json.
fn write_report(
    opts: &FuzzOptions,
    plan: &Plan,
    out: &Path,
    jobs: usize,
    p: &Progress,
    started: Instant,
) -> Result<FuzzReport, FuzzError> {
    let seconds = started.elapsed().as_secs_f64();
    let crashes = p.crashes.found();
    let regression = write_regression_suite(
        out,
        &plan.suite,
        &opts.driver,
        &plan.def,
        &opts.params,
        crashes,
    )?;
    let report = FuzzReport {
        driver: opts.driver.clone(),
        format: opts.format.display().to_string(),
        seeds: plan
            .seed_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        rng_seed: opts.rng_seed,
        jobs,
        execs: p.execs,
        minimize_execs: p.minimize_execs,
        errors: p.errors,
        hangs: p.hangs,
        seconds,
        execs_per_hour: (p.execs + p.minimize_execs + p.replays) as f64 * 3600.0
            / seconds.max(0.001),
        corpus: p.corpus.len(),
        crashes: crashes.to_vec(),
        restore_every: opts.restore_every,
        replays: p.replays,
        unconfirmed: p.unconfirmed.clone(),
        regression_suite: regression,
        interrupted: interrupted(),
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| FuzzError::Format(e.to_string()))?;
    let path = out.join("report.json");
    write_atomic(&path, &json).map_err(io(&path))?;
    Ok(report)
}
