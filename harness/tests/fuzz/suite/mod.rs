//! Suite files: parsed, or refused with the place of the error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bootgate::suite::{self, Step, Suite, SuiteError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;

use crate::engine::fuzz;
use crate::gen;

mod text;
use text::{mutate, mutation, render, valid_suite};

const TARGET: &str = "suite";

/// Longest a parse of one generated suite may take (debug build, loaded machine):
/// the inputs are at most a few hundred KiB, parsed in about a millisecond.
const PARSE_TIME_LIMIT: Duration = Duration::from_secs(2);

/// A folder holding the files that valid suites refer to.
struct Folder {
    _dir: tempfile::TempDir,
    suite: PathBuf,
}

fn folder() -> Folder {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("src")).expect("src folder");
    std::fs::write(dir.path().join("sensor.ko"), b"\x7fELF").expect("module");
    std::fs::write(dir.path().join("good.content"), b"x").expect("content");
    Folder {
        suite: dir.path().join("suite.toml"),
        _dir: dir,
    }
}

/// Every duration a suite hands the runner, which adds them to `Instant::now()`.
fn durations(suite: &Suite) -> Vec<Duration> {
    let mut all: Vec<Duration> = suite.boot_timeout.into_iter().collect();
    for scenario in &suite.scenarios {
        all.extend(scenario.gates.boot_time_limit());
        for step in &scenario.steps {
            match step {
                Step::Boot(b) => all.extend(b.timeout),
                Step::Reboot(r) => all.extend(r.timeout),
                Step::Exec(e) => all.push(e.timeout()),
                Step::Observe(o) => all.push(o.duration),
                _ => {}
            }
        }
    }
    all
}

/// What must hold for any suite text: it parses, or fails with an error located
/// inside the text; what parses is usable by the runner.
fn check(path: &Path, text: &str) -> TestCaseResult {
    let started = Instant::now();
    let result = suite::parse(path, text);
    let took = started.elapsed();
    prop_assert!(took < PARSE_TIME_LIMIT, "parse took {took:?}");
    match result {
        Ok(suite) => {
            prop_assert!(!suite.scenarios.is_empty());
            for scenario in &suite.scenarios {
                prop_assert!(!scenario.steps.is_empty());
                prop_assert!(scenario.boot_loop_boots >= 2);
                for step in &scenario.steps {
                    prop_assert!(!step.to_string().is_empty());
                }
            }
            for d in durations(&suite) {
                prop_assert!(
                    Instant::now().checked_add(d).is_some(),
                    "accepted a duration of {d:?}, which overflows a deadline"
                );
            }
        }
        Err(e) => {
            let shown = e.to_string();
            let SuiteError::Invalid {
                path: got,
                line,
                column,
                message,
                ..
            } = e
            else {
                return Err(TestCaseError::fail(format!("not a located error: {shown}")));
            };
            prop_assert_eq!(&got, path);
            prop_assert!(!message.trim().is_empty());
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(
                line >= 1 && line <= lines.len(),
                "line {line} of {}",
                lines.len()
            );
            let width = lines[line - 1].chars().count();
            prop_assert!(
                column >= 1 && column <= width + 1,
                "column {column} on a line of {width} characters"
            );
            let prefix = format!("{}:{line}:{column}: ", path.display());
            prop_assert!(shown.starts_with(&prefix), "{shown}");
        }
    }
    Ok(())
}

#[test]
fn valid_suites_parse_as_written() {
    let folder = folder();
    fuzz(
        TARGET,
        "valid_suites_parse_as_written",
        200,
        valid_suite(),
        |(lines, expected)| {
            let text = render(&lines);
            let suite = suite::parse(&folder.suite, &text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            let got: Vec<(String, usize)> = suite
                .scenarios
                .iter()
                .map(|s| (s.name.clone(), s.steps.len()))
                .collect();
            prop_assert_eq!(got, expected.scenarios);
            check(&folder.suite, &text)
        },
    );
}

#[test]
fn mutated_suites_parse_or_fail_located() {
    let folder = folder();
    let strategy = (valid_suite(), prop::collection::vec(mutation(), 1..5));
    fuzz(
        TARGET,
        "mutated_suites_parse_or_fail_located",
        400,
        strategy,
        |((mut lines, _), ms)| {
            for m in &ms {
                mutate(&mut lines, m);
            }
            check(&folder.suite, &render(&lines))
        },
    );
}

#[test]
fn edited_suite_text_parses_or_fails_located() {
    let folder = folder();
    let strategy = (valid_suite(), prop::collection::vec(gen::edit(), 1..6));
    fuzz(
        TARGET,
        "edited_suite_text_parses_or_fails_located",
        400,
        strategy,
        |((lines, _), edits)| {
            let mut bytes = render(&lines).into_bytes();
            for e in &edits {
                gen::apply(&mut bytes, e);
            }
            // parse() takes text; invalid UTF-8 is the loader's business (below).
            check(&folder.suite, &String::from_utf8_lossy(&bytes))
        },
    );
}

#[test]
fn arbitrary_text_parses_or_fails_located() {
    let folder = folder();
    let strategy = prop_oneof![
        any::<String>(),
        "[\\[\\]{}=\"'a-z0-9_.,# \n\\\\-]{0,300}",
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    fuzz(
        TARGET,
        "arbitrary_text_parses_or_fails_located",
        500,
        strategy,
        |text| check(&folder.suite, &text),
    );
}

/// The loader reads bytes from disk: a file that is not UTF-8 is a suite error at
/// the offending byte, like any other.
#[test]
fn suite_files_of_any_bytes_load_or_fail_located() {
    let folder = folder();
    let strategy = (valid_suite(), prop::collection::vec(gen::edit(), 0..4));
    fuzz(
        TARGET,
        "suite_files_of_any_bytes_load_or_fail_located",
        200,
        strategy,
        |((lines, _), edits)| {
            let mut bytes = render(&lines).into_bytes();
            for e in &edits {
                gen::apply(&mut bytes, e);
            }
            std::fs::write(&folder.suite, &bytes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            match suite::load_file(&folder.suite) {
                Ok(_) => prop_assert!(std::str::from_utf8(&bytes).is_ok()),
                Err(SuiteError::Invalid { line, column, .. }) => {
                    prop_assert!(line >= 1 && column >= 1);
                    if let Err(e) = std::str::from_utf8(&bytes) {
                        let before = &bytes[..e.valid_up_to()];
                        let want_line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                        prop_assert!(
                            line <= want_line,
                            "line {line} is past the bad byte on line {want_line}"
                        );
                    }
                }
                Err(other) => prop_assert!(false, "not a located error: {other}"),
            }
            Ok(())
        },
    );
}

// ---- regressions ----

#[test]
fn durations_that_overflow_a_deadline_are_rejected_with_their_location() {
    let folder = folder();
    for huge in [
        "18446744073709551615s",
        "500000000000y",
        "9223372036854775807s",
    ] {
        let text = format!(
            "[suite]\nimage = \"demo\"\nboot_timeout = \"{huge}\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{{ boot = {{}} }}]\n"
        );
        match suite::parse(&folder.suite, &text) {
            Err(SuiteError::Invalid {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (3, 16), "{message}");
                assert!(message.contains(huge), "{message}");
            }
            other => panic!("{huge} must be rejected, got {other:?}"),
        }
    }
    let observe = "[suite]\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nsteps = [{ observe = { duration = \"18446744073709551615s\" } }]\n";
    assert!(matches!(
        suite::parse(&folder.suite, observe),
        Err(SuiteError::Invalid { line: 5, .. })
    ));
    let fine = "[suite]\nimage = \"demo\"\nboot_timeout = \"7d\"\n[[scenario]]\nname = \"a\"\nsteps = [{ boot = {} }]\n";
    assert!(suite::parse(&folder.suite, fine).is_ok());
}

#[test]
fn invalid_utf8_in_a_suite_file_is_located() {
    let folder = folder();
    std::fs::write(&folder.suite, b"[suite]\nimage = \"de\xffmo\"\n").expect("write");
    match suite::load_file(&folder.suite) {
        Err(SuiteError::Invalid {
            line,
            column,
            message,
            ..
        }) => {
            assert_eq!((line, column), (2, 12), "{message}");
            assert!(message.contains("UTF-8"), "{message}");
        }
        other => panic!("expected a located error, got {other:?}"),
    }
}

#[test]
fn stray_carriage_return_error_names_the_character() {
    let folder = folder();
    // toml reports a lone CR with an empty message.
    let text = "[suite]\nimage = \"demo\"\n\r[[scenario]]\n";
    match suite::parse(&folder.suite, text) {
        Err(SuiteError::Invalid {
            line,
            column,
            message,
            ..
        }) => {
            assert_eq!((line, column), (3, 1), "{message}");
            assert!(message.contains("'\\r'"), "{message}");
        }
        other => panic!("expected a located error, got {other:?}"),
    }
}

#[test]
fn endless_suite_file_is_refused_not_read_into_memory() {
    // /dev/zero never ends: reading it whole would take all memory.
    match suite::load_file(Path::new("/dev/zero")) {
        Err(SuiteError::TooLarge { path, limit }) => {
            assert_eq!(path, Path::new("/dev/zero"));
            assert_eq!(limit, suite::MAX_SUITE_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
