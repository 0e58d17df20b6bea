//! The whole command's start-up: its per-phase trace (run.json `timings`, `-v`) and
//! the input digests kept between runs, seen from the real binary on the real demo
//! guest from its saved state.

use std::io::{Seek, SeekFrom, Write};

use super::common;

const SUITE: &str = r#"# a one-scenario suite: run from the saved state
[suite]
name = "startup"
image = "demo"
[[scenario]]
name = "exec-true"
steps = [{ exec = { run = "true" } }]
"#;

/// The phases `-v` prints and run.json keeps: preparation, the scenario's restore
/// and step, and (in `-v` only, as run.json cannot time its own writing) results.
#[test]
fn a_run_records_its_phases_and_verbose_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let suite = common::write(dir.path(), "suite.toml", SUITE);
    let out = dir.path().join("out");
    let output = common::run_tcg(&suite, &out, &["-v"]);
    assert!(output.status.success());
    let run = common::run_json(&out);
    let phases: Vec<(&str, f64)> = run["timings"]["phases"]
        .as_array()
        .expect("run.json has timings.phases")
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap(),
                p["duration_ms"].as_f64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = phases.iter().map(|(n, _)| *n).collect();
    for expected in [
        "start-up and suite load",
        "options (QEMU's -sandbox probe)",
        "tool versions",
        "image manifests",
        "saved state lookup",
        "driver builds",
        "input hashing",
        "run folder",
        "scenarios",
        "startup/exec-true: boot",
        "startup/exec-true: exec",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(phases.iter().all(|(_, ms)| *ms >= 0.0), "{phases:?}");
    // The scenario's parts are its record's: the restore and the step as timed there.
    let scenario = common::scenario(&run, "startup/exec-true");
    let exec_ms = scenario["steps"][1]["duration_ms"].as_f64().unwrap();
    assert!(phases.contains(&("startup/exec-true: exec", exec_ms)));
    assert_eq!(
        scenario["boots"][0]["restored"], true,
        "from the saved state"
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in [
        "phases (ms from start, duration):",
        "input hashing",
        "results writing",
    ] {
        assert!(stderr.contains(line), "{line} in -v output:\n{stderr}");
    }
}

/// The evidence stays the file's: a suite changed in place at the same size with its
/// old mtime put back is recorded with its new sha256 (the kept digest of the first
/// run is not used), and every recorded input digest is the file's own.
#[test]
fn a_suite_changed_in_place_with_its_old_mtime_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let suite = common::write(dir.path(), "suite.toml", SUITE);
    let out = dir.path().join("out");
    assert!(common::run_tcg(&suite, &out, &["-q"]).status.success());
    let first = common::run_json(&out);
    let recorded = |run: &serde_json::Value| -> String {
        run["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"].as_str().unwrap().ends_with("suite.toml"))
            .map(|i| i["sha256"].as_str().unwrap().to_string())
            .expect("the suite is an input")
    };
    assert_eq!(recorded(&first), common::sha256(&suite));

    let before = std::fs::metadata(&suite).unwrap();
    {
        // "# a one-" becomes "# A one-": same size, same inode.
        let mut file = std::fs::File::options().write(true).open(&suite).unwrap();
        file.seek(SeekFrom::Start(2)).unwrap();
        file.write_all(b"A").unwrap();
        file.set_modified(before.modified().unwrap()).unwrap();
    }
    let after = std::fs::metadata(&suite).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());

    assert!(common::run_tcg(&suite, &out, &["-q"]).status.success());
    let second = common::run_json(&out);
    assert_ne!(recorded(&second), recorded(&first));
    assert_eq!(recorded(&second), common::sha256(&suite));
    for input in second["inputs"].as_array().unwrap() {
        let path = std::path::Path::new(input["path"].as_str().unwrap());
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.path().join(path)
        };
        assert_eq!(input["sha256"], common::sha256(&path), "{}", path.display());
    }
}

/// After a run, `doctor` lists the tool answers kept for this boot and the kept
/// input digests, each with the command that clears them.
#[test]
fn doctor_lists_the_kept_answers_and_digests_after_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = common::write(dir.path(), "suite.toml", SUITE);
    let out = dir.path().join("out");
    assert!(common::run_tcg(&suite, &out, &["-q"]).status.success());
    let doctor = common::run(&["doctor"]);
    let stdout = String::from_utf8_lossy(&doctor.stdout);
    let kept: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("kept answer:"))
        .collect();
    for tool in [
        "qemu-system-x86_64 --version",
        "qemu-img --version",
        "-sandbox",
    ] {
        assert!(
            kept.iter()
                .any(|l| l.contains(tool) && l.contains("rm -r ")),
            "{tool} in\n{stdout}"
        );
    }
    let digests = stdout
        .lines()
        .find(|l| l.contains("input digests:"))
        .unwrap_or_else(|| panic!("input digests line in\n{stdout}"));
    assert!(
        digests.contains("rm -r ") && !digests.contains(" 0 kept"),
        "{digests}"
    );
}
