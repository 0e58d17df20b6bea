//! `bootgate run`, `rerun` and `list`: the commands that select scenarios from suites
//! and (but for `list`) run them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bootgate::model::run_file::RUN_JSON;
use bootgate::model::timings::{self, Timings};
use bootgate::model::DriverBuilds;
use bootgate::model::Emitter;
use bootgate::runner::options::DEFAULT_OUT_DIR;
use bootgate::runner::{self, shard, IgnoredPolicy, RunOptions};
use bootgate::suite;
use bootgate::util::signing::Signer;

use super::args::{RerunArgs, RunArgs};
use super::exit::{fail, Exit};
use super::report_sinks;
use bootgate::report::terminal::Verbosity;

pub fn run(args: RunArgs) -> Exit {
    let signer = match super::signer(&args.signing) {
        Ok(signer) => signer,
        Err(exit) => return exit,
    };
    let policy = suite::PathPolicy::allowing_outside(args.allow_outside_paths);
    let suites = match suite::load_path_with(&args.path, policy) {
        Ok(suites) => suites,
        // A suite that does not load is a suite error, whatever the cause.
        Err(e) => return fail(&e, Exit::Usage),
    };
    let mut startup_phases = Timings::default();
    startup_phases.since("start-up and suite load", timings::process_start());
    let began = std::time::Instant::now();
    let defaults = super::run_options();
    startup_phases.since("options (QEMU's -sandbox probe)", began);
    let expected_ms = match &args.shard_timings {
        Some(file) => match shard::durations_from_run(file) {
            Ok(durations) => durations,
            Err(e) => return fail(&e, e.exit_code()),
        },
        None => Default::default(),
    };
    // The timings file (a run folder means its run.json) is an input of the run.
    let timings_file = args.shard_timings.as_ref().map(|file| {
        if file.is_dir() {
            file.join(RUN_JSON)
        } else {
            file.clone()
        }
    });
    let options = RunOptions {
        out_dir: args.out,
        jobs: super::jobs(args.jobs),
        accel: args.accel,
        keep: args.keep,
        retries: args.retries,
        retry_failures: args.retry_failures,
        path_policy: policy,
        driver_builds: DriverBuilds::unsandboxed_if(args.unsandboxed_builds),
        only: args.only,
        skip: args.skip,
        exact: args.exact,
        ignored: match (args.ignored, args.include_ignored) {
            (true, _) => IgnoredPolicy::Only,
            (_, true) => IgnoredPolicy::Include,
            _ => IgnoredPolicy::Skip,
        },
        shard: args.shard,
        expected_ms,
        timings_file,
        startup_phases,
        ..defaults
    };
    if args.list {
        for (suite, index) in runner::select(&suites, &options) {
            println!("{}/{}", suite.name, suite.scenarios[index].name);
        }
        return Exit::Pass;
    }
    execute(&suites, &options, args.output.verbosity(), signer)
}

pub fn rerun(args: RerunArgs) -> Exit {
    let signer = match super::signer(&args.signing) {
        Ok(signer) => signer,
        Err(exit) => return exit,
    };
    let plan = match runner::rerun::plan(&args.run_dir, &args.scenarios, args.allow_outside_paths) {
        Ok(plan) => plan,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let out_dir = args.out.unwrap_or_else(|| {
        std::fs::canonicalize(&args.run_dir)
            .ok()
            .and_then(|d| d.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT_DIR))
    });
    let options = RunOptions {
        out_dir,
        accel: plan.accel,
        keep: plan.keep,
        path_policy: plan.path_policy,
        // Only this command line decides: the run folder may come from someone else,
        // so its run.json never turns the sandbox off.
        driver_builds: DriverBuilds::unsandboxed_if(args.unsandboxed_builds),
        target: plan.target.clone(),
        only: plan.scenarios,
        exact: true,
        // The run being repeated already chose them.
        ignored: IgnoredPolicy::Include,
        required_inputs: Some(plan.record.inputs),
        ..super::run_options()
    };
    execute(&plan.suites, &options, args.output.verbosity(), signer)
}

pub fn list(path: &Path) -> Exit {
    // Listing reads no file into a guest: paths anywhere are fine here.
    match suite::load_path_with(path, suite::PathPolicy::Anywhere) {
        Ok(suites) => {
            for suite in suites {
                for scenario in &suite.scenarios {
                    println!("{}/{}", suite.name, scenario.name);
                }
            }
            Exit::Pass
        }
        Err(e) => fail(&e, Exit::Usage),
    }
}

/// Runs suites with every report sink; the terminal sink prints the summary.
fn execute(
    suites: &[suite::Suite],
    options: &RunOptions,
    verbosity: Verbosity,
    signer: Option<Arc<Signer>>,
) -> Exit {
    super::install_interrupt_handler();
    let emitter = Emitter::new(report_sinks(verbosity, signer));
    match runner::run(suites, options, &emitter) {
        Ok((record, _dir)) => {
            if verbosity == Verbosity::Verbose {
                print_phases(&record.timings);
            }
            record.outcome().exit_code()
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}

/// `-v`: one line per phase of the command (start, duration, name), then the whole.
fn print_phases(phases: &Timings) {
    eprintln!("phases (ms from start, duration):");
    for line in phases.lines() {
        eprintln!("  {line}");
    }
    eprintln!(
        "  whole command so far: {:.1} ms",
        timings::process_start().elapsed().as_secs_f64() * 1000.0
    );
}
