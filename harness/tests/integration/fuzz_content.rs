//! `bootgate fuzz-content` against the demo sensor: from the good content file alone
//! it must find the 21-field out-of-bounds read through the real load path, minimize
//! it, and write a regression suite that `bootgate run` replays to the same crash:
//! restoring the VM before every execution (`--restore-every 1`), and keeping the
//! guest between executions (the default), where the crash must also be confirmed
//! by replaying its input alone from the saved state.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

const TITLE: &str = "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]";

#[test]
fn fuzzing_from_the_good_seed_finds_the_21_field_crash() {
    let report = fuzz_from_the_good_seed(&["--restore-every", "1"]);
    assert_eq!(report["restore_every"], 1);
    assert_eq!(
        report["replays"], 0,
        "no guest is kept, so none is replayed"
    );
}

/// Persistent mode: the same crash, with the same title, found in a kept guest and
/// confirmed by its input alone in a guest restored for it.
#[test]
fn persistent_fuzzing_finds_the_same_crash_and_confirms_it_alone() {
    let report = fuzz_from_the_good_seed(&[]);
    assert_eq!(report["restore_every"], 64, "{report:#}");
    // The crash came from a kept guest (every execution runs in one), so its input
    // was replayed alone; that replay's crash is what was reported and minimized.
    assert!(report["replays"].as_u64().unwrap() >= 1, "{report:#}");
    assert_eq!(
        report["unconfirmed"].as_object().map(|o| o.len()),
        Some(0),
        "the demo crash needs no earlier input: {report:#}"
    );
}

/// Runs the campaign until its first crash, checks the crash, its minimized input
/// and the regression suite's replay; returns report.json.
fn fuzz_from_the_good_seed(extra: &[&str]) -> Value {
    demo_manifest();
    let demo = Path::new(DEMO_SUITES);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("fuzz");
    let out = run(&[
        "fuzz-content",
        demo.join("suite.toml").to_str().unwrap(),
        "--driver",
        "demo_sensor",
        "--format",
        demo.join("content/format.toml").to_str().unwrap(),
        "--seed",
        demo.join("content/good.content").to_str().unwrap(),
        "--stop-after",
        "1",
        "--time",
        "20m",
        "--accel",
        "tcg",
        "--out",
        out_dir.to_str().unwrap(),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert_eq!(out.status.code(), Some(1), "a crash was found: {stdout}");
    let latest = out_dir.join("latest");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(latest.join("report.json")).unwrap())
            .unwrap();
    let crash = &report["crashes"][0];
    assert_eq!(crash["title"], TITLE, "{report:#}");
    assert!(report["execs"].as_u64().unwrap() >= 1);
    assert!(report["execs_per_hour"].as_f64().unwrap() > 0.0);
    let first = std::fs::read(latest.join(crash["input"].as_str().unwrap())).unwrap();
    let minimized = std::fs::read(latest.join(crash["minimized"].as_str().unwrap())).unwrap();
    assert!(
        minimized.len() <= first.len(),
        "minimizing never grows the input"
    );
    let good = std::fs::read(demo.join("content/good.content")).unwrap();
    assert_ne!(minimized, good, "the good seed itself does not crash");
    let evidence = latest.join(crash["evidence"].as_str().unwrap());
    let console = std::fs::read_to_string(evidence.join("console.log")).unwrap();
    assert!(console.contains("sensor_match_fields"), "evidence kept");

    // The regression suite replays the crash with the same title.
    let suite = latest.join(report["regression_suite"].as_str().unwrap());
    let replay_dir = dir.path().join("replay");
    let replay = run_tcg(&suite, &replay_dir, &[]);
    assert_eq!(
        replay.status.code(),
        Some(1),
        "fails while the bug is there"
    );
    let run = run_json(&replay_dir);
    let s = &run["scenarios"][0];
    assert_eq!(s["verdict"], "fail");
    assert_eq!(s["crashes"][0]["title"], TITLE);
    assert_no_vm_left(&run);
    report
}
