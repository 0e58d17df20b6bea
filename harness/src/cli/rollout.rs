//! `bootgate rollout`: the staged-rollout gate, and its closing summary.

use std::path::Path;

use bootgate::model::DriverBuilds;
use bootgate::model::Emitter;
use bootgate::report::terminal::TerminalSink;
use bootgate::runner::rollout::RolloutReport;
use bootgate::runner::{self, RunOptions};
use bootgate::suite;

use super::args::RolloutArgs;
use super::exit::{fail, Exit};
use super::report_sinks;

pub fn rollout(args: RolloutArgs) -> Exit {
    let signer = match super::signer(&args.signing) {
        Ok(signer) => signer,
        Err(exit) => return exit,
    };
    super::install_interrupt_handler();
    let policy = suite::PathPolicy::allowing_outside(args.allow_outside_paths);
    let suite = match suite::load_file_with(&args.suite, policy) {
        Ok(suite) => suite,
        Err(e) => return fail(&e, Exit::Usage),
    };
    let verbosity = args.output.verbosity();
    let options = RunOptions {
        out_dir: args.out.clone(),
        jobs: super::jobs(args.jobs),
        accel: args.accel,
        path_policy: policy,
        driver_builds: DriverBuilds::unsandboxed_if(args.unsandboxed_builds),
        ..super::run_options()
    };
    let make_emitter = || Emitter::new(report_sinks(verbosity, signer.clone()));
    let progress = Emitter::new(vec![Box::new(TerminalSink::new(verbosity))]);
    let result = runner::rollout::rollout(&suite, &options, &make_emitter, &progress);
    match result {
        Ok(report) => {
            print!("{}", summary(&report, &report.dir));
            report.exit_code()
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}

/// What a finished rollout prints: each ring with its targets, then the verdict.
fn summary(report: &RolloutReport, out: &Path) -> String {
    let mut text = String::new();
    for ring in &report.rings {
        text += &format!(
            "ring {}: {} in {:.0} s{}\n",
            ring.ring,
            ring.outcome,
            ring.seconds,
            ring.reason
                .as_ref()
                .map_or(String::new(), |r| format!(": {r}"))
        );
        for t in &ring.targets {
            text += &format!(
                "  {}: {} pass, {} fail, {} error ({})\n",
                t.target, t.pass, t.fail, t.error, t.run_dir
            );
        }
    }
    text += &format!(
        "rollout: {} in {:.0} s; promoted: {}; results: {}/rollout.json\n",
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
        out.display()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootgate::runner::rollout::{RingOutcome, RingResult, TargetResult};

    fn ring(name: &str, outcome: RingOutcome, reason: Option<&str>) -> RingResult {
        RingResult {
            ring: name.to_string(),
            crash_threshold: 0,
            soak_seconds: 0.0,
            targets: vec![TargetResult {
                target: "demo".to_string(),
                run_dir: format!("out/{name}/demo"),
                pass: 2,
                fail: 1,
                error: 0,
                crashed: Vec::new(),
                seconds: 12.4,
                interrupted: false,
            }],
            outcome,
            reason: reason.map(str::to_string),
            seconds: 12.6,
        }
    }

    /// The text the summary had when it was printed line by line in main.rs.
    #[test]
    fn a_halted_rollout_prints_rings_targets_and_the_halt() {
        let report = RolloutReport {
            suite: "s.toml".to_string(),
            rings: vec![
                ring("canary", RingOutcome::Promoted, None),
                ring("wide", RingOutcome::Halted, Some("1 crashing scenario(s)")),
            ],
            halted_at: Some("wide".to_string()),
            promoted: vec!["canary".to_string()],
            total_seconds: 25.4,
            interrupted: false,
            dir: "out/r1".into(),
        };
        assert_eq!(
            summary(&report, Path::new("out/r1")),
            "ring canary: promoted in 13 s\n  demo: 2 pass, 1 fail, 0 error (out/canary/demo)\nring wide: halted in 13 s: 1 crashing scenario(s)\n  demo: 2 pass, 1 fail, 0 error (out/wide/demo)\nrollout: halted at ring wide in 25 s; promoted: canary; results: out/r1/rollout.json\n"
        );
        assert_eq!(report.exit_code(), Exit::Fail);
    }

    #[test]
    fn an_interrupted_rollout_says_so_and_promoted_none() {
        let report = RolloutReport {
            suite: "s.toml".to_string(),
            rings: Vec::new(),
            halted_at: None,
            promoted: Vec::new(),
            total_seconds: 1.0,
            interrupted: true,
            dir: "o".into(),
        };
        assert_eq!(
            summary(&report, Path::new("o")),
            "rollout: interrupted in 1 s; promoted: none; results: o/rollout.json\n"
        );
        assert_eq!(report.exit_code(), Exit::Interrupted);
    }
}
