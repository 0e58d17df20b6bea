//! The fuzzing loop: a fixed number of cases per property, or as many as fit in
//! [`SECONDS_VAR`] seconds, with findings shrunk, saved and reported.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestError, TestRunner};

/// Set by `tools/fuzz`: run each property for this many seconds instead of a fixed
/// number of cases.
pub const SECONDS_VAR: &str = "BOOTGATE_FUZZ_SECONDS";

/// proptest's own variable for the number of cases; read here because a property
/// sets its own default, which would otherwise hide the variable.
const CASES_VAR: &str = "PROPTEST_CASES";

/// Cases per runner in a timed run. Each runner draws a fresh random seed, so a
/// long run explores new inputs instead of replaying one sequence.
const TIMED_BATCH_CASES: u32 = 128;

/// Time spent shrinking a finding to a small input, in milliseconds: bounded so
/// a timed run ends even when the input is large and each step slow.
const MAX_SHRINK_MILLIS: u32 = 60_000;

/// Longest rendering of a failing input put in the panic message; the whole of
/// it goes to a file under [`findings_dir`].
const MAX_PRINTED_INPUT: usize = 4_000;

/// Where the full failing inputs are written (cargo's scratch folder for tests).
pub fn findings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Findings are reported (and written out) by `fuzz`; proptest's own
        // persistence needs the source file, which a hand-made runner lacks.
        failure_persistence: None,
        max_shrink_time: MAX_SHRINK_MILLIS,
        ..Config::default()
    }
}

/// Checks `property` on values drawn from `strategy`: `default_cases` of them (or
/// PROPTEST_CASES), or as many as fit in [`SECONDS_VAR`] seconds. Prints one
/// `fuzz:` line with the executions and findings, then panics with the shrunk
/// input if the property failed.
pub fn fuzz<S>(
    target: &str,
    test: &str,
    default_cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> TestCaseResult,
) where
    S: Strategy,
    S::Value: Debug,
{
    let executions = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = env_number(SECONDS_VAR).map(|s| started + Duration::from_secs(s));
    let counted = |value: S::Value| {
        // Values generated after the deadline are not run: the batch finishes
        // quickly and the run ends on time.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        executions.fetch_add(1, Ordering::Relaxed);
        property(value)
    };
    let outcome = match deadline {
        None => {
            let cases = env_number(CASES_VAR)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(default_cases);
            TestRunner::new(config(cases)).run(&strategy, counted)
        }
        Some(deadline) => loop {
            let batch = TestRunner::new(config(TIMED_BATCH_CASES)).run(&strategy, counted);
            if batch.is_err() || Instant::now() >= deadline {
                break batch;
            }
        },
    };
    let finding = match outcome {
        Ok(()) => None,
        Err(TestError::Abort(reason)) => Some(format!("aborted: {reason}")),
        Err(TestError::Fail(reason, input)) => Some(report(target, test, &reason, &input)),
    };
    println!(
        "fuzz: target={target} test={test} executions={} findings={} seconds={:.1}",
        executions.load(Ordering::Relaxed),
        usize::from(finding.is_some()),
        started.elapsed().as_secs_f64()
    );
    if let Some(finding) = finding {
        panic!("fuzz finding in {target}::{test}: {finding}");
    }
}

/// The reason and (shortened) input for the panic message; writes the whole input.
fn report(target: &str, test: &str, reason: &impl Debug, input: &impl Debug) -> String {
    let file = findings_dir().join(format!("{target}-{test}.txt"));
    let saved = std::fs::create_dir_all(findings_dir())
        .and_then(|()| std::fs::write(&file, format!("{reason:?}\n\n{input:#?}\n")));
    // One line per value: long byte strings stay readable.
    let rendered = format!("{input:?}");
    let shown: String = rendered.chars().take(MAX_PRINTED_INPUT).collect();
    let more = if shown.len() < rendered.len() {
        format!("\n... ({} bytes in all)", rendered.len())
    } else {
        String::new()
    };
    let saved = match saved {
        Ok(()) => format!("whole input in {}", file.display()),
        Err(e) => format!("could not save the input: {e}"),
    };
    format!("{reason:?}\nminimal failing input ({saved}):\n{shown}{more}")
}
