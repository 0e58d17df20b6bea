//! `bootgate fuzz-content`: a content-fuzzing campaign, and its closing summary.

use std::path::Path;

use bootgate::fuzz::campaign::{self, FuzzOptions, FuzzReport};
use bootgate::model::DriverBuilds;
use bootgate::model::Emitter;
use bootgate::qemu::QemuTools;
use bootgate::report::terminal::{TerminalSink, Verbosity};
use bootgate::suite;

use super::args::FuzzArgs;
use super::exit::{fail, Exit};

pub fn fuzz_content(args: FuzzArgs) -> Exit {
    super::install_interrupt_handler();
    let options = FuzzOptions {
        suite: args.suite,
        driver: args.driver,
        params: args.params,
        format: args.format,
        seeds: args.seeds,
        duration: args.time,
        max_execs: args.execs,
        stop_after_crashes: args.stop_after,
        jobs: super::jobs(args.jobs),
        out_dir: args.out,
        rng_seed: args.rng_seed,
        restore_every: args.restore_every,
        accel: args.accel,
        tools: QemuTools::from_env(),
        path_policy: suite::PathPolicy::allowing_outside(args.allow_outside_paths),
        driver_builds: DriverBuilds::unsandboxed_if(args.unsandboxed_builds),
        progress: true,
    };
    let progress = Emitter::new(vec![Box::new(TerminalSink::new(Verbosity::Normal))]);
    match campaign::fuzz(&options, &progress) {
        Ok(report) => {
            print!("{}", summary(&report, &options.out_dir.join("latest")));
            report.exit_code()
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}

/// What a finished campaign prints: the counts, each unique crash, where to find them.
fn summary(report: &FuzzReport, latest: &Path) -> String {
    let mut text = format!(
        "fuzz-content: {} executions in {:.0} s ({:.0} per hour, {} minimizing), {} unique crash(es), corpus {}\n",
        report.execs,
        report.seconds,
        report.execs_per_hour,
        report.minimize_execs,
        report.crashes.len(),
        report.corpus
    );
    if report.restore_every > 1 {
        text += &format!(
            "  guests kept for up to {} executions; {} input(s) that stopped one replayed alone from the saved state
",
            report.restore_every, report.replays
        );
    }
    for (title, count) in &report.unconfirmed {
        text += &format!(
            "  not confirmed ({count}x, the input alone did not crash; not reported): {title}
"
        );
    }
    for crash in &report.crashes {
        text += &format!(
            "  {} (after {} executions, {:.0} s; input {} -> {} bytes: {})\n",
            crash.title,
            crash.found_at_exec,
            crash.seconds_to_find,
            crash.input_bytes,
            crash.minimized_bytes,
            crash.minimized
        );
    }
    text += &format!(
        "results: {}/report.json; replay the crashes: bootgate run {}/{}\n",
        latest.display(),
        latest.display(),
        report.regression_suite
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootgate::fuzz::campaign::FoundCrash;

    fn report(crashes: Vec<FoundCrash>) -> FuzzReport {
        FuzzReport {
            driver: "demo_sensor".to_string(),
            format: "format.toml".to_string(),
            seeds: Vec::new(),
            rng_seed: 1,
            restore_every: 1,
            replays: 0,
            unconfirmed: Default::default(),
            jobs: 2,
            execs: 120,
            minimize_execs: 30,
            errors: 0,
            hangs: 0,
            seconds: 59.7,
            execs_per_hour: 7236.2,
            corpus: 4,
            crashes,
            regression_suite: "regressions.toml".to_string(),
            interrupted: false,
        }
    }

    /// The text the summary had when it was printed line by line in main.rs.
    #[test]
    fn a_campaign_with_a_crash_prints_it_and_how_to_replay() {
        let crash = FoundCrash {
            title: "BUG: unable to handle page fault in sensor_parse_field".to_string(),
            found_at_exec: 17,
            seconds_to_find: 8.2,
            mutation: "count+1".to_string(),
            input_bytes: 96,
            minimized_bytes: 24,
            minimize_execs: 30,
            input: "crashes/1/input".to_string(),
            minimized: "crashes/1/minimized".to_string(),
            evidence: "crashes/1".to_string(),
        };
        let report = report(vec![crash]);
        assert_eq!(
            summary(&report, Path::new("results/fuzz/latest")),
            "fuzz-content: 120 executions in 60 s (7236 per hour, 30 minimizing), 1 unique crash(es), corpus 4\n  BUG: unable to handle page fault in sensor_parse_field (after 17 executions, 8 s; input 96 -> 24 bytes: crashes/1/minimized)\nresults: results/fuzz/latest/report.json; replay the crashes: bootgate run results/fuzz/latest/regressions.toml\n"
        );
        assert_eq!(report.exit_code(), Exit::Fail);
    }

    #[test]
    fn no_crash_passes_and_interrupted_outranks_it() {
        let mut report = report(Vec::new());
        assert_eq!(report.exit_code(), Exit::Pass);
        report.interrupted = true;
        assert_eq!(report.exit_code(), Exit::Interrupted);
    }
}
