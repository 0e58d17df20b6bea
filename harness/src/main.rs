//! The `bootgate` command: parses arguments, calls the library, maps the outcome to
//! an exit code. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bootgate::model::Emitter;
use bootgate::model::Sink;
use bootgate::qemu::accel::AccelChoice;
use bootgate::qemu::QemuTools;
use bootgate::report::html::{self, HtmlSink};
use bootgate::report::json::JsonSink;
use bootgate::report::junit::JunitSink;
use bootgate::report::live::LiveSink;
use bootgate::report::manifest::{self, ManifestSink};
use bootgate::report::terminal::{TerminalSink, Verbosity};
use bootgate::runner::shard::{self, Shard};
use bootgate::runner::{self, IgnoredPolicy, RunOptions};
use bootgate::{doctor, image, suite};

/// Exit codes (also listed in `bootgate --help`).
const EXIT_PASS: u8 = 0;
const EXIT_FAIL: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INFRA: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "bootgate",
    version,
    about = "Boot-gate kernel drivers and content updates: boot VM images under QEMU, run scenario suites, record crashes, hangs and boot times as pass/fail gates.",
    after_help = "Exit codes:\n  0    every scenario passed (flaky ones included)\n  1    some scenario failed: the product failed a gate\n  2    usage or suite error (bad flag, typo in a suite, unknown image)\n  3    infrastructure error: QEMU missing or died, image build failed, results not writable\n  130  interrupted (Ctrl-C / SIGTERM); results written so far are kept\n\nQuick start:\n  bootgate run scenarios/demo          run the demo suite (builds the demo image on first use)\n  bootgate doctor                      check QEMU, accelerator, image cache\n\nEnvironment: BOOTGATE_QEMU, BOOTGATE_QEMU_IMG (binaries), BOOTGATE_CACHE (image cache folder)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `bootgate run`'s arguments.
#[derive(clap::Args)]
struct RunArgs {
    /// Suite file or folder of suite files.
    path: PathBuf,
    /// Results folder; each run lands in DIR/<run-id>, and DIR/latest points at it.
    #[arg(long, short, default_value = "results", value_name = "DIR")]
    out: PathBuf,
    /// Accelerator: auto probes KVM with a short boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Keep each VM's disk overlay in the results (system.qcow2).
    #[arg(long, short)]
    keep: bool,
    /// VMs to run at once (default: one per core, as free memory allows).
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Retry a scenario that ended in `error` (infrastructure trouble) up to N more
    /// times. Every attempt's evidence is kept (<scenario>.attempt-K folders).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// With --retries, retry `fail` too. A pass after a failure is `flaky`, never a
    /// plain pass: it is reported as such everywhere.
    #[arg(long, requires = "retries")]
    retry_failures: bool,
    /// Let the suite name driver and content files outside its own folder (by
    /// default a suite reads only files in its folder, so a suite from elsewhere
    /// cannot copy an arbitrary host file into the guest and the results).
    #[arg(long)]
    allow_outside_paths: bool,
    /// Run only scenarios whose "suite/scenario" name contains this text (repeatable;
    /// like cargo test's FILTER).
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
    /// Leave out scenarios whose name contains this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    skip: Vec<String>,
    /// --only and --skip match whole "suite/scenario" names.
    #[arg(long)]
    exact: bool,
    /// Run only the scenarios marked `ignore = true`.
    #[arg(long, conflicts_with = "include_ignored")]
    ignored: bool,
    /// Run the scenarios marked `ignore = true` too.
    #[arg(long)]
    include_ignored: bool,
    /// Run only shard K of N (1-based; a CI index counting from 0 needs INDEX+1).
    /// Deterministic: every machine computes the same split.
    #[arg(long, value_name = "K/N", value_parser = clap::value_parser!(Shard))]
    shard: Option<Shard>,
    /// An earlier run.json (or run folder) whose durations balance the shards and
    /// order the queue longest first.
    #[arg(long, value_name = "RUN_JSON")]
    shard_timings: Option<PathBuf>,
    /// Print the selected scenario names (after --only and --shard), run nothing.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// How much the terminal shows.
#[derive(clap::Args)]
struct OutputArgs {
    /// Print only failures and the summary.
    #[arg(long, short, conflicts_with = "verbose")]
    quiet: bool,
    /// Print every step and boot as it happens.
    #[arg(long, short)]
    verbose: bool,
}

impl OutputArgs {
    fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a suite file, or every *.toml suite in a folder.
    ///
    /// A suite with a [drill] section is a recovery drill: one scenario per recovery
    /// path it names (the driver's boot-loop guard, a rescue boot, removal from the
    /// stopped VM's disk through a helper VM, a rollback through the agent), each
    /// gated by recovers_within, and a table of boots and seconds per path at the
    /// end (also in report.html and run.json). Folders leave drill and rollout suites
    /// out: name the file.
    ///
    /// Example: bootgate run scenarios/demo/drill-cf291.toml --jobs 2
    Run(RunArgs),
    /// Fuzz a driver's content file through the real load path in a booted guest.
    ///
    /// The driver is installed and loaded once and the VM saved; every execution
    /// restores that state, writes a mutated content file (structure-aware, from the
    /// format description, plus blind byte mutations) and runs the driver's reload.
    /// Crashes are told apart by title, each minimized and saved with its evidence;
    /// the output folder gets report.json and a regression suite for `bootgate run`.
    /// Exit 1 when a crash was found, 0 when none.
    ///
    /// Example:
    ///   bootgate fuzz-content scenarios/demo/suite.toml --driver demo_sensor \
    ///     --format scenarios/demo/content/format.toml \
    ///     --seed scenarios/demo/content/good.content --time 10m
    FuzzContent(FuzzArgs),
    /// A staged-rollout gate over the rings of a suite's [rollout] section.
    ///
    /// The suite's scenarios run ring by ring (canary first); a ring is promoted only
    /// when it is clean, and the first that is not halts the rollout with its
    /// evidence. Each target is a full run in OUT/<run-id>/<ring>/<target>/;
    /// rollout.json has every ring's outcome and the total gate time. Exit 0 when
    /// every ring promoted, 1 when the product halted it, 3 on infrastructure trouble.
    ///
    /// Example: bootgate rollout scenarios/demo/rollout-good.toml
    Rollout(RolloutArgs),
    /// Rerun scenarios of a finished run with the same inputs and settings, into a new
    /// run. Refuses, naming the file, if any input changed since.
    Rerun {
        /// The run folder (e.g. results/latest).
        run_dir: PathBuf,
        /// Scenario names ("suite/scenario"); all of the run's when none.
        scenarios: Vec<String>,
        /// Results folder for the new run (default: the one holding RUN_DIR).
        #[arg(long, short, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Recheck a run folder against its manifest.json: names every file missing,
    /// altered or added since the run, and inputs that changed. Exit 1 if any.
    Verify { run_dir: PathBuf },
    /// Print a run's summary and each failing scenario's crash title and excerpt.
    Show { run_dir: PathBuf },
    /// Regenerate a run's report.html from its run.json (and refresh manifest.json,
    /// which lists it).
    Report { run_dir: PathBuf },
    /// Join the run folders of CI shards (`run --shard K/N`) into one run: run.json,
    /// junit.xml, report.html and manifest.json over every scenario.
    Merge {
        /// Shard run folders (e.g. shard-1/latest shard-2/latest ...).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Results folder for the merged run.
        #[arg(long, short, default_value = "results", value_name = "DIR")]
        out: PathBuf,
    },
    /// List the scenarios of a suite file or folder without running them.
    List { path: PathBuf },
    /// Build or inspect images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Check the host: QEMU binaries and version, qemu-img, accelerator, firmware,
    /// free disk, image cache. Each line says ok or what to do.
    ///
    /// With --image, boot that image once and check what bootgate needs inside it:
    /// the guest agent and its commands, panic reporting (pvpanic), crash settings,
    /// and for Windows crash dumps, test signing, recovery, pvpanic and fwcfg drivers.
    Doctor {
        /// An image manifest (image.toml, or its folder) to boot and check.
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        /// Accelerator for the image check: auto probes KVM and falls back to TCG.
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build a built-in image (demo) into the per-user cache; reuses it when nothing changed.
    Build {
        /// Image name: demo.
        name: String,
        /// Rebuild even if the cache holds an up-to-date image.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_PASS
                }
                _ => EXIT_USAGE,
            });
        }
    };
    ExitCode::from(match cli.command {
        Command::Run(args) => run(args),
        Command::List { path } => list(path),
        Command::Rerun {
            run_dir,
            scenarios,
            out,
            output,
        } => rerun(run_dir, scenarios, out, output.verbosity()),
        Command::Verify { run_dir } => verify(&run_dir),
        Command::Merge { dirs, out } => merge(&dirs, &out),
        Command::FuzzContent(args) => fuzz_content(args),
        Command::Rollout(args) => rollout(args),
        Command::Show { run_dir } => show(&run_dir),
        Command::Report { run_dir } => report(&run_dir),
        Command::Image {
            command: ImageCommand::Build { name, force },
        } => image_build(&name, force),
        Command::Doctor {
            image: Some(image),
            accel,
        } => {
            if doctor::image::run(&image, accel, &mut std::io::stdout()) {
                EXIT_PASS
            } else {
                EXIT_INFRA
            }
        }
        Command::Doctor { image: None, .. } => {
            if doctor::run(&mut std::io::stdout()) {
                EXIT_PASS
            } else {
                EXIT_INFRA
            }
        }
    })
}

#[derive(clap::Args)]
struct FuzzArgs {
    /// The suite file that defines the driver ([driver.NAME] with source or module,
    /// content_file and reload).
    suite: PathBuf,
    /// The driver to fuzz (a [driver.NAME] of the suite).
    #[arg(long, value_name = "NAME")]
    driver: String,
    /// Module parameters to load it with ("fixed=0").
    #[arg(long, default_value = "", value_name = "PARAMS")]
    params: String,
    /// The content format description (fields, counts, lengths), e.g. format.toml.
    #[arg(long, value_name = "FILE")]
    format: PathBuf,
    /// A starting input (repeatable); default: the format's [[seed]] files.
    #[arg(long = "seed", value_name = "FILE")]
    seeds: Vec<PathBuf>,
    /// Stop after this long (30s, 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = suite::parse_duration, value_name = "DURATION")]
    time: std::time::Duration,
    /// Stop after this many executions (minimizing not counted).
    #[arg(long, value_name = "N")]
    execs: Option<u64>,
    /// Stop once N unique crashes are found (CI: prove the bug is findable).
    #[arg(long, value_name = "N")]
    stop_after: Option<usize>,
    /// VMs at once (default: one per core, as free memory allows).
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Output folder; each run lands in DIR/<run-id>, DIR/latest points at it.
    #[arg(long, short, default_value = "results/fuzz", value_name = "DIR")]
    out: PathBuf,
    /// Seed of the mutator's random numbers (same seed, same inputs).
    #[arg(long, default_value_t = 1, value_name = "N")]
    rng_seed: u64,
    /// Accelerator: auto probes KVM with a short boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Let the suite name files outside its own folder.
    #[arg(long)]
    allow_outside_paths: bool,
}

#[derive(clap::Args)]
struct RolloutArgs {
    /// A suite file with a [rollout] section.
    suite: PathBuf,
    /// Results folder; each rollout lands in DIR/<run-id>, DIR/latest points at it.
    #[arg(long, short, default_value = "results/rollout", value_name = "DIR")]
    out: PathBuf,
    /// Accelerator: auto probes KVM with a short boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// VMs at once within a target's run (default: one per core, as memory allows).
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Let the suite name files outside its own folder.
    #[arg(long)]
    allow_outside_paths: bool,
    #[command(flatten)]
    output: OutputArgs,
}

fn rollout(args: RolloutArgs) -> u8 {
    install_interrupt_handler();
    let policy = suite::PathPolicy::allowing_outside(args.allow_outside_paths);
    let suite = match suite::load_file_with(&args.suite, policy) {
        Ok(suite) => suite,
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            return EXIT_USAGE;
        }
    };
    let verbosity = args.output.verbosity();
    let options = RunOptions {
        out_dir: args.out.clone(),
        jobs: args.jobs.map_or(0, |n| n as usize),
        accel: args.accel,
        keep: false,
        retries: 0,
        retry_failures: false,
        path_policy: policy,
        target: None,
        only: Vec::new(),
        skip: Vec::new(),
        exact: false,
        ignored: IgnoredPolicy::Skip,
        required_inputs: None,
        shard: None,
        expected_ms: Default::default(),
        timings_file: None,
        tools: QemuTools::from_env(),
        command: std::env::args().collect(),
    };
    let make_emitter = || Emitter::new(report_sinks(verbosity));
    let progress = Emitter::new(vec![Box::new(TerminalSink::new(verbosity))]);
    match runner::rollout::rollout(&suite, &options, &make_emitter, &progress) {
        Ok(report) => {
            for ring in &report.rings {
                println!(
                    "ring {}: {} in {:.0} s{}",
                    ring.ring,
                    ring.outcome,
                    ring.seconds,
                    ring.reason
                        .as_ref()
                        .map_or(String::new(), |r| format!(": {r}"))
                );
                for t in &ring.targets {
                    println!(
                        "  {}: {} pass, {} fail, {} error ({})",
                        t.target, t.pass, t.fail, t.error, t.run_dir
                    );
                }
            }
            println!(
                "rollout: {} in {:.0} s; promoted: {}; results: {}/rollout.json",
                match (&report.halted_at, report.all_promoted()) {
                    (_, true) => "every ring promoted".to_string(),
                    (Some(ring), false) => format!("halted at ring {ring}"),
                    (None, false) => "interrupted".to_string(),
                },
                report.total_seconds,
                if report.promoted.is_empty() {
                    "none".to_string()
                } else {
                    report.promoted.join(", ")
                },
                report.dir.display()
            );
            if report.interrupted {
                EXIT_INTERRUPTED
            } else if report.infrastructure_error() {
                EXIT_INFRA
            } else if report.all_promoted() {
                EXIT_PASS
            } else {
                EXIT_FAIL
            }
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            EXIT_INFRA
        }
    }
}

fn fuzz_content(args: FuzzArgs) -> u8 {
    install_interrupt_handler();
    let options = bootgate::fuzz::campaign::FuzzOptions {
        suite: args.suite,
        driver: args.driver,
        params: args.params,
        format: args.format,
        seeds: args.seeds,
        duration: args.time,
        max_execs: args.execs,
        stop_after_crashes: args.stop_after,
        jobs: args.jobs.map_or(0, |n| n as usize),
        out_dir: args.out,
        rng_seed: args.rng_seed,
        accel: args.accel,
        tools: QemuTools::from_env(),
        path_policy: suite::PathPolicy::allowing_outside(args.allow_outside_paths),
        progress: true,
    };
    let progress = Emitter::new(vec![Box::new(TerminalSink::new(Verbosity::Normal))]);
    match bootgate::fuzz::campaign::fuzz(&options, &progress) {
        Ok(report) => {
            println!(
                "fuzz-content: {} executions in {:.0} s ({:.0} per hour, {} minimizing), {} unique crash(es), corpus {}",
                report.execs,
                report.seconds,
                report.execs_per_hour,
                report.minimize_execs,
                report.crashes.len(),
                report.corpus
            );
            for crash in &report.crashes {
                println!(
                    "  {} (after {} executions, {:.0} s; input {} -> {} bytes: {})",
                    crash.title,
                    crash.found_at_exec,
                    crash.seconds_to_find,
                    crash.input_bytes,
                    crash.minimized_bytes,
                    crash.minimized
                );
            }
            let latest = options.out_dir.join("latest");
            println!(
                "results: {}/report.json; replay the crashes: bootgate run {}/{}",
                latest.display(),
                latest.display(),
                report.regression_suite
            );
            if report.interrupted {
                EXIT_INTERRUPTED
            } else if report.crashes.is_empty() {
                EXIT_PASS
            } else {
                EXIT_FAIL
            }
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            match e {
                bootgate::fuzz::campaign::FuzzError::Suite(_)
                | bootgate::fuzz::campaign::FuzzError::UnknownDriver { .. }
                | bootgate::fuzz::campaign::FuzzError::DriverField { .. }
                | bootgate::fuzz::campaign::FuzzError::Format(_) => EXIT_USAGE,
                _ => EXIT_INFRA,
            }
        }
    }
}

fn run(args: RunArgs) -> u8 {
    let policy = suite::PathPolicy::allowing_outside(args.allow_outside_paths);
    let suites = match suite::load_path_with(&args.path, policy) {
        Ok(suites) => suites,
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            return EXIT_USAGE;
        }
    };
    let expected_ms = match &args.shard_timings {
        Some(file) => match shard::durations_from_run(file) {
            Ok(durations) => durations,
            Err(e) => {
                eprintln!("bootgate: error: {e}");
                return EXIT_USAGE;
            }
        },
        None => Default::default(),
    };
    // The timings file (a run folder means its run.json) is an input of the run.
    let timings_file = args.shard_timings.as_ref().map(|file| {
        if file.is_dir() {
            file.join("run.json")
        } else {
            file.clone()
        }
    });
    let options = RunOptions {
        out_dir: args.out,
        jobs: args.jobs.map_or(0, |n| n as usize),
        accel: args.accel,
        keep: args.keep,
        retries: args.retries,
        retry_failures: args.retry_failures,
        path_policy: policy,
        target: None,
        only: args.only,
        skip: args.skip,
        exact: args.exact,
        ignored: match (args.ignored, args.include_ignored) {
            (true, _) => IgnoredPolicy::Only,
            (_, true) => IgnoredPolicy::Include,
            _ => IgnoredPolicy::Skip,
        },
        required_inputs: None,
        shard: args.shard,
        expected_ms,
        timings_file,
        tools: QemuTools::from_env(),
        command: std::env::args().collect(),
    };
    if args.list {
        for (suite, index) in runner::select(&suites, &options) {
            println!("{}/{}", suite.name, suite.scenarios[index].name);
        }
        return EXIT_PASS;
    }
    execute(&suites, &options, args.output.verbosity())
}

fn rerun(
    run_dir: PathBuf,
    scenarios: Vec<String>,
    out: Option<PathBuf>,
    verbosity: Verbosity,
) -> u8 {
    let plan = match runner::rerun::plan(&run_dir, &scenarios) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            return EXIT_USAGE;
        }
    };
    let out_dir = out.unwrap_or_else(|| {
        std::fs::canonicalize(&run_dir)
            .ok()
            .and_then(|d| d.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("results"))
    });
    let options = RunOptions {
        out_dir,
        jobs: 0,
        accel: plan.accel,
        keep: plan.keep,
        retries: 0,
        retry_failures: false,
        path_policy: plan.path_policy,
        target: plan.target.clone(),
        only: plan.scenarios,
        skip: Vec::new(),
        exact: true,
        // The run being repeated already chose them.
        ignored: IgnoredPolicy::Include,
        required_inputs: Some(plan.record.inputs),
        shard: None,
        expected_ms: Default::default(),
        timings_file: None,
        tools: QemuTools::from_env(),
        command: std::env::args().collect(),
    };
    execute(&plan.suites, &options, verbosity)
}

/// Runs suites with every sink, mapping the outcome to an exit code.
/// The report sinks of one run. The manifest comes last: it hashes the files the
/// other sinks wrote. A terminal gets the live view; CI logs one plain line per event.
fn report_sinks(verbosity: Verbosity) -> Vec<Box<dyn Sink + Send>> {
    let terminal: Box<dyn Sink + Send> =
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) && verbosity != Verbosity::Quiet {
            Box::new(LiveSink::new(verbosity))
        } else {
            Box::new(TerminalSink::new(verbosity))
        };
    vec![
        terminal,
        Box::new(JsonSink::new()),
        Box::new(JunitSink::new()),
        Box::new(HtmlSink::new()),
        Box::new(ManifestSink),
    ]
}

/// First Ctrl-C/SIGTERM: stop cleanly (VMs torn down, results written). The
/// handler only sets a flag; the runner checks it at every wait.
fn install_interrupt_handler() {
    if let Err(e) = ctrlc::set_handler(|| {
        if runner::interrupted() {
            eprintln!("bootgate: still stopping VMs, please wait");
        } else {
            eprintln!("bootgate: interrupted; stopping VMs and writing results");
        }
        runner::interrupt();
    }) {
        eprintln!("bootgate: warning: cannot install the Ctrl-C handler: {e}");
    }
}

fn execute(suites: &[suite::Suite], options: &RunOptions, verbosity: Verbosity) -> u8 {
    install_interrupt_handler();
    let emitter = Emitter::new(report_sinks(verbosity));
    match runner::run(suites, options, &emitter) {
        Ok((record, _dir)) => exit_code(&record),
        Err(e) => {
            // Every error's message already carries its causes.
            eprintln!("bootgate: error: {e}");
            if e.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_INFRA
            }
        }
    }
}

fn merge(dirs: &[PathBuf], out: &std::path::Path) -> u8 {
    match bootgate::runner::merge::merge(dirs, out, std::env::args().collect()) {
        Ok((record, dir)) => {
            print!("{}", bootgate::report::terminal::summary_text(&record));
            println!("merged into {}", dir.display());
            exit_code(&record)
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            if e.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_INFRA
            }
        }
    }
}

/// The exit code a finished run stands for.
fn exit_code(record: &bootgate::model::record::RunRecord) -> u8 {
    use bootgate::model::record::RunOutcome;
    match record.outcome() {
        RunOutcome::Interrupted => EXIT_INTERRUPTED,
        RunOutcome::Fail => EXIT_FAIL,
        RunOutcome::Error => EXIT_INFRA,
        RunOutcome::Pass => EXIT_PASS,
    }
}

fn verify(run_dir: &std::path::Path) -> u8 {
    match manifest::verify(run_dir) {
        Ok(findings) => {
            for finding in &findings {
                println!("{finding}");
            }
            let problems = findings.iter().filter(|f| f.is_problem()).count();
            if problems == 0 {
                println!(
                    "ok: every file in {} matches manifest.json",
                    run_dir.display()
                );
                EXIT_PASS
            } else {
                println!("FAILED: {problems} problem(s) in {}", run_dir.display());
                EXIT_FAIL
            }
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            EXIT_USAGE
        }
    }
}

fn show(run_dir: &std::path::Path) -> u8 {
    match runner::rerun::read_record(run_dir) {
        Ok(record) => {
            print!("{}", bootgate::report::terminal::summary_text(&record));
            EXIT_PASS
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            EXIT_USAGE
        }
    }
}

fn report(run_dir: &std::path::Path) -> u8 {
    let record = match runner::rerun::read_record(run_dir) {
        Ok(record) => record,
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            return EXIT_USAGE;
        }
    };
    let path = run_dir.join(html::REPORT_HTML);
    let written = html::render(&record, run_dir).and_then(|text| {
        bootgate::util::write_atomic(&path, text.as_bytes()).map_err(|source| {
            bootgate::model::ReportError::Write {
                path: path.clone(),
                source,
            }
        })
    });
    // The report is a listed artifact: refresh its own manifest entry only, so verify
    // still flags a change to anything else (run.json included).
    match written.and_then(|()| manifest::refresh_entry(run_dir, html::REPORT_HTML)) {
        Ok(()) => {
            println!("{}", path.display());
            EXIT_PASS
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            EXIT_INFRA
        }
    }
}

fn list(path: PathBuf) -> u8 {
    // Listing reads no file into a guest: paths anywhere are fine here.
    match suite::load_path_with(&path, suite::PathPolicy::Anywhere) {
        Ok(suites) => {
            for suite in suites {
                for scenario in &suite.scenarios {
                    println!("{}/{}", suite.name, scenario.name);
                }
            }
            EXIT_PASS
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            EXIT_USAGE
        }
    }
}

fn image_build(name: &str, force: bool) -> u8 {
    if !image::BUILT_IN.contains(&name) {
        eprintln!(
            "bootgate: error: {}",
            image::ImageError::Unknown(name.to_string())
        );
        return EXIT_USAGE;
    }
    let mut notify = |text: &str| eprintln!("bootgate: {text}");
    match image::demo::build(force, &mut notify) {
        Ok(manifest) => {
            println!("image: {}", manifest.display());
            if let Some(info) = image::demo::build_info(&manifest) {
                if let Some(kernel) = info.get("kernel_version").and_then(|v| v.as_str()) {
                    println!("kernel: {kernel}");
                }
                match info.get("headers_dir").and_then(|v| v.as_str()) {
                    Some(dir) => println!("headers: {dir}"),
                    None => println!(
                        "headers: not installed ({})",
                        info.get("headers_note")
                            .and_then(|v| v.as_str())
                            .unwrap_or("see build-info.json")
                    ),
                }
            }
            EXIT_PASS
        }
        Err(e) => {
            eprintln!("bootgate: error: {e}");
            EXIT_INFRA
        }
    }
}
