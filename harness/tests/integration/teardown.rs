//! Nothing outlives a run: Ctrl-C in the middle tears every VM down and still writes
//! complete results.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

/// Upper bound for the guest to come up under TCG on a loaded CI machine.
const READY_WAIT: Duration = Duration::from_secs(120);
/// One scenario whose guest sleeps for ten minutes: a run to interrupt or kill.
const SLEEPING_SUITE: &str = "[suite]\nname = \"long\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"sleeps\"\ncold_boot = true\nsteps = [{ exec = { run = \"sleep 600\", timeout = \"15m\" } }]\n";
/// Upper bound for bootgate to finish after SIGINT.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Waits until the scenario's guest is up (its console says so) while bootgate runs.
fn wait_until_ready(child: &mut std::process::Child, console: &Path) {
    let started = Instant::now();
    while !std::fs::read_to_string(console).is_ok_and(|t| t.contains("bootgate: ready")) {
        assert!(started.elapsed() < READY_WAIT, "guest never became ready");
        assert!(child.try_wait().unwrap().is_none(), "bootgate ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `signal` to bootgate and waits, within [`STOP_WAIT`], for it to end.
fn signal_and_wait(child: &mut std::process::Child, signal: i32) -> std::process::ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let stopped = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            stopped.elapsed() < STOP_WAIT,
            "bootgate did not stop after signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_mid_step_tears_down_and_writes_interrupted_results() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"long\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"sleeps\"\ncold_boot = true\nsteps = [{ exec = { run = \"sleep 600\", timeout = \"15m\" } }]\n\n[[scenario]]\nname = \"never-started\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    // One VM at a time, so the second scenario is still queued at the interrupt.
    let mut guard = spawn_run(&suite, &out_dir, &["--jobs", "1"]);
    let child = &mut guard.0;
    wait_until_ready(child, &out_dir.join("latest/long/sleeps/console.log"));
    // Let the exec step start, then interrupt as a terminal's Ctrl-C would.
    std::thread::sleep(Duration::from_secs(1));
    let status = signal_and_wait(child, libc::SIGINT);
    assert_eq!(status.code(), Some(130));
    let run = run_json(&out_dir);
    assert_eq!(run["interrupted"], true);
    assert!(run["finished_at"].is_string());
    let scenarios = run["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1, "the second scenario never started");
    assert_eq!(scenarios[0]["verdict"], "error");
    assert_no_vm_left(&run);
}

/// SIGKILL gives bootgate no chance to clean up: the parent-death signal must still
/// take its QEMU down.
#[test]
fn sigkill_of_bootgate_takes_qemu_down() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(dir.path(), "suite.toml", SLEEPING_SUITE);
    let out_dir = dir.path().join("results");
    let mut guard = spawn_run(&suite, &out_dir, &[]);
    let pid = guard.0.id();
    let started = Instant::now();
    let qemu = loop {
        if let Some(q) = qemu_children(pid).first() {
            break *q;
        }
        assert!(
            started.elapsed() < READY_WAIT,
            "bootgate never started QEMU"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let vm_dir = std::fs::read_to_string(format!("/proc/{qemu}/cmdline"))
        .unwrap()
        .split('\0')
        .find_map(|a| {
            a.strip_prefix("socket,id=qmp0,path=")
                .map(|p| p.to_string())
        })
        .and_then(|p| {
            p.strip_suffix("/qmp.sock,server=on,wait=off")
                .map(str::to_string)
        })
        .expect("the QMP socket path in QEMU's command line");
    guard.0.kill().unwrap();
    guard.0.wait().unwrap();
    let killed = Instant::now();
    while std::path::Path::new(&format!("/proc/{qemu}")).exists() {
        // A zombie reparented to init is reaped quickly; a live QEMU is the failure.
        let state = std::fs::read_to_string(format!("/proc/{qemu}/stat")).unwrap_or_default();
        if state.contains(") Z ") {
            break;
        }
        assert!(
            killed.elapsed() < STOP_WAIT,
            "QEMU {qemu} outlived a SIGKILLed bootgate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The killed bootgate could not remove its VM folder; the next run does.
    assert!(Path::new(&vm_dir).is_dir(), "{vm_dir} was left by the kill");
    let quick = write(
        dir.path(),
        "quick.toml",
        "[suite]\nname = \"quick\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let next = run_tcg(&quick, &dir.path().join("next"), &[]);
    assert_eq!(next.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&next.stderr)
            .contains("VM folder(s) left by a bootgate that was killed"),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    assert!(!Path::new(&vm_dir).exists(), "{vm_dir} swept");
}

/// Whoever started bootgate went away (a killed CI job, a closed terminal): its
/// stdout and stderr are broken pipes when SIGTERM comes. The interrupt must still be
/// taken (the handler once printed first, panicked on the broken pipe and left the
/// run going), so the run stops with 130 and complete results, and no VM is left.
#[test]
fn sigterm_after_the_caller_went_away_still_stops_the_run() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(dir.path(), "suite.toml", SLEEPING_SUITE);
    let out_dir = dir.path().join("results");
    let mut guard = ChildGuard(
        bootgate()
            .args(tcg_args(&suite, &out_dir, &[]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    wait_until_ready(child, &out_dir.join("latest/long/sleeps/console.log"));
    // The caller is gone: nobody reads bootgate's output any more.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = signal_and_wait(child, libc::SIGTERM);
    assert_eq!(status.code(), Some(130));
    let run = run_json(&out_dir);
    assert_eq!(run["interrupted"], true);
    assert_no_vm_left(&run);
}
