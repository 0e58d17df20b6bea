//! Nothing outlives a run: Ctrl-C in the middle tears every VM down and still writes
//! complete results.

use std::time::{Duration, Instant};

use crate::common::*;

/// Upper bound for the guest to come up under TCG on a loaded CI machine.
const READY_WAIT: Duration = Duration::from_secs(120);
/// Upper bound for bootgate to finish after SIGINT.
const STOP_WAIT: Duration = Duration::from_secs(30);

#[test]
fn ctrl_c_mid_step_tears_down_and_writes_interrupted_results() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"long\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"sleeps\"\nsteps = [{ exec = { run = \"sleep 600\", timeout = \"15m\" } }]\n\n[[scenario]]\nname = \"never-started\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let mut guard = ChildGuard(
        bootgate()
            .args([
                "run",
                suite.to_str().unwrap(),
                "--accel",
                "tcg",
                "--out",
                out_dir.to_str().unwrap(),
            ])
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let console = out_dir.join("latest/long/sleeps/console.log");
    let started = Instant::now();
    while !std::fs::read_to_string(&console).is_ok_and(|t| t.contains("bootgate: ready")) {
        assert!(started.elapsed() < READY_WAIT, "guest never became ready");
        assert!(child.try_wait().unwrap().is_none(), "bootgate ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the exec step start, then interrupt as a terminal's Ctrl-C would.
    std::thread::sleep(Duration::from_secs(1));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < STOP_WAIT,
            "bootgate did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    let run = run_json(&out_dir);
    assert_eq!(run["interrupted"], true);
    assert!(run["finished_at"].is_string());
    let scenarios = run["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1, "the second scenario never started");
    assert_eq!(scenarios[0]["verdict"], "error");
    assert_no_vm_left(&run);
}
