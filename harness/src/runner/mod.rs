//! The runner: resolves images, picks the accelerator, creates the run folder, runs
//! scenarios and emits events. It never formats results itself: every output (the
//! terminal, run.json, junit.xml) is a `Sink` that consumes the events.

pub mod build_sandbox;
pub(crate) mod driver;
pub(crate) mod dump_budget;
pub(crate) mod folder;
pub mod merge;
pub mod offline;
pub mod options;
pub(crate) mod pool;
pub(crate) mod prepare;
pub mod rerun;
pub mod rollout;
pub(crate) mod scenario;
pub mod shard;
pub(crate) mod triage;
pub(crate) mod verdict;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::image::ImageError;
use crate::model::exit::Exit;
use crate::model::record::{HostInfo, RunRecord, RunSettings, Summary, SCHEMA_VERSION};
use crate::model::{Emitter, Event, ReportError};
use crate::suite::Suite;
use folder::{absolute, FolderError};
pub use options::{IgnoredPolicy, RunOptions};
use prepare::{Prepared, RunFolder};

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

impl From<FolderError> for RunError {
    fn from(e: FolderError) -> RunError {
        RunError::Results {
            path: e.path,
            source: e.source,
        }
    }
}

impl RunError {
    /// Usage mistakes (exit 2) versus infrastructure trouble (exit 3).
    pub(crate) fn is_usage(&self) -> bool {
        match self {
            RunError::NoMatch(_) => true,
            RunError::Image { source, .. } => {
                matches!(
                    source,
                    ImageError::Unknown(_) | ImageError::Manifest(_) | ImageError::Outside(_)
                )
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
    let mut timings = opts.startup_phases.clone();
    // Folders left by a bootgate that was killed outright (its QEMUs died with it).
    let swept = timings.time(
        "stale VM folder sweep",
        crate::qemu::vm::sweep_stale_vm_dirs,
    );
    if swept > 0 {
        emitter.notice(&format!(
            "removed {swept} VM folder(s) left by a bootgate that was killed"
        ));
    }
    let selected = select(suites, opts);
    if selected.is_empty() && opts.shard.is_none() {
        return Err(RunError::NoMatch(opts.only.clone()));
    }
    let mut prepared = Prepared::for_run(&selected, opts, emitter)?;
    timings.phases.append(&mut prepared.timings.phases);
    let folder = timings.time("run folder", || -> Result<RunFolder, RunError> {
        let folder = RunFolder::create(&opts.out_dir)?;
        folder.point_latest()?;
        Ok(folder)
    })?;
    let mut record = start_record(suites, opts, &folder.id, &mut prepared);
    record.timings = timings;
    let began = Instant::now();
    emitter.emit(&Event::RunStarted {
        run: &record,
        dir: &folder.dir,
        scenarios: selected.len(),
    });
    record.timings.since("results (run started)", began);
    if let Some(notice) = &record.qemu.accel_notice {
        emitter.notice(notice);
    }
    let began = Instant::now();
    let mut record = pool::run_scenarios(&selected, &prepared, opts, &folder.dir, emitter, record);
    record.timings.since("scenarios", began);
    scenario_phases(&mut record, began);
    if interrupted() {
        record.interrupted = true;
    }
    record.finished_at = Some(now());
    record.summary = Summary::of(&record.scenarios);
    let began = Instant::now();
    emitter.emit(&Event::RunFinished {
        run: &record,
        dir: &folder.dir,
    });
    // Not in the run.json just written (it cannot time its own writing): `-v` shows it.
    record.timings.since("results writing", began);
    if let Some(failure) = emitter.take_failure() {
        return Err(RunError::Report(failure));
    }
    Ok((record, folder.dir))
}

/// Each scenario's parts, from its record: its steps (the first, `boot`, is the
/// restore or boot to ready) and what is left of its time (overlay, QEMU start and
/// stop, evidence). Placed from `pool_began` by the time the scenario waited in
/// the queue, which is exact for one worker and an estimate for several.
fn scenario_phases(record: &mut RunRecord, pool_began: Instant) {
    let origin = crate::model::timings::process_start();
    let base = pool_began.saturating_duration_since(origin).as_secs_f64() * 1000.0;
    let mut parts = Vec::new();
    for scenario in &record.scenarios {
        let start = base + scenario.queued_ms as f64;
        let mut in_steps = 0;
        for step in &scenario.steps {
            parts.push((
                format!("{}: {}", scenario.name, step.kind),
                start + step.start_ms as f64,
                step.duration_ms as f64,
            ));
            in_steps += step.duration_ms;
        }
        parts.push((
            format!(
                "{}: rest (overlay, QEMU start and stop, records)",
                scenario.name
            ),
            start,
            scenario.duration_ms.saturating_sub(in_steps) as f64,
        ));
    }
    for (phase, start, duration) in parts {
        record.timings.part(phase, start, duration);
    }
}

/// The run's record before any scenario ran; it takes the QEMU facts and input
/// digests out of `prepared`.
fn start_record(
    suites: &[Suite],
    opts: &RunOptions,
    run_id: &str,
    prepared: &mut Prepared,
) -> RunRecord {
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.to_string(),
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
            driver_builds: opts.driver_builds,
        },
        host: host_info(),
        qemu: std::mem::take(&mut prepared.qemu),
        inputs: std::mem::take(&mut prepared.inputs),
        input_kinds: std::mem::take(&mut prepared.input_kinds),
        scenarios: Vec::new(),
        summary: Summary::default(),
        timings: std::mem::take(&mut prepared.timings),
    }
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
