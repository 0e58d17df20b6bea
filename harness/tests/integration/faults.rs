//! The fault matrix: the infrastructure fails on purpose and bootgate must say
//! `error` (exit 3), never blame the driver; results stay complete and valid; no
//! process or VM folder is left; the base image is never written.
//!
//! Real QEMU throughout, except one fake: a QMP peer that sends garbage, because a
//! real QEMU cannot be made to do that on demand (the test says so where it is used).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Upper bound for the guest to get somewhere under TCG on a loaded CI machine.
const GUEST_WAIT: Duration = Duration::from_secs(120);
/// Upper bound for bootgate to finish once the fault is injected.
const FINISH_WAIT: Duration = Duration::from_secs(60);

/// What every fault case must leave behind: an `error` scenario (exit 3), a complete
/// run.json, junit.xml and report, no QEMU or VM folder, the base disk unchanged.
fn assert_infra_error(status: Option<i32>, out_dir: &Path, base_sha: &str) -> Value {
    assert_eq!(status, Some(3), "infrastructure trouble exits 3");
    let run = run_json(out_dir);
    assert!(run["finished_at"].is_string(), "run.json is complete");
    for s in run["scenarios"].as_array().unwrap() {
        assert_eq!(s["verdict"], "error", "never blamed on the driver: {s:#}");
    }
    for file in ["junit.xml", "report.html", "manifest.json"] {
        assert!(
            out_dir.join("latest").join(file).is_file(),
            "{file} written"
        );
    }
    assert_eq!(
        sha256(&demo_manifest().parent().unwrap().join("system.qcow2")),
        base_sha,
        "base image unchanged"
    );
    run
}

fn base_sha() -> String {
    sha256(&demo_manifest().parent().unwrap().join("system.qcow2"))
}

/// Waits for bootgate to exit; its exit code.
fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            started.elapsed() < FINISH_WAIT,
            "bootgate did not finish after the fault"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a one-scenario run that boots cold and then sleeps in an exec step; waits
/// until `ready_seen` says how far the guest must get; SIGKILLs its QEMU.
fn kill_qemu_when(ready_seen: bool) -> (Option<i32>, PathBuf, tempfile::TempDir) {
    let base = base_sha();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"killed\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"victim\"\ncold_boot = true\nsteps = [{ exec = { run = \"sleep 600\", timeout = \"15m\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let mut guard = spawn_run(&suite, &out_dir, &["--jobs", "1"]);
    let child = &mut guard.0;
    let console = out_dir.join("latest/killed/victim/console.log");
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < GUEST_WAIT, "the guest never got there");
        assert!(child.try_wait().unwrap().is_none(), "bootgate ended early");
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        let there = if ready_seen {
            text.contains("bootgate: ready")
        } else {
            // Mid-boot: the kernel is printing, the agent is not up yet.
            text.contains("Linux version") && !text.contains("bootgate: ready")
        };
        if there {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if ready_seen {
        // Let the exec step start.
        std::thread::sleep(Duration::from_secs(1));
    }
    let qemus = qemu_children(child.id());
    assert_eq!(qemus.len(), 1, "one QEMU: {qemus:?}");
    unsafe {
        libc::kill(qemus[0] as i32, libc::SIGKILL);
    }
    let status = wait_exit(child);
    let run = assert_infra_error(status, &out_dir, &base);
    let reason = scenario(&run, "killed/victim")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("QEMU went away"), "{reason}");
    assert_no_vm_left(&run);
    (status, out_dir, dir)
}

#[test]
fn qemu_killed_mid_boot_is_an_error_not_a_fail() {
    kill_qemu_when(false);
}

#[test]
fn qemu_killed_mid_step_is_an_error_not_a_fail() {
    kill_qemu_when(true);
}

/// QEMU refuses its command line (here: a machine type it does not know): `error`,
/// with QEMU's own words in the reason.
#[test]
fn qemu_exiting_on_its_own_is_an_error_with_its_message() {
    let base = base_sha();
    let dir = tempfile::tempdir().unwrap();
    let manifest = demo_variant(dir.path(), "", "60s");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("type = \"pc\"", "type = \"pc-no-such-machine\""),
    )
    .unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"bad-qemu\"\nimage = \"image.toml\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    let run = assert_infra_error(out.status.code(), &out_dir, &base);
    let reason = scenario(&run, "bad-qemu/a")["reason"].as_str().unwrap();
    assert!(
        reason.contains("unsupported machine type"),
        "QEMU's own message: {reason}"
    );
    assert_no_vm_left(&run);
}

/// A fake QEMU whose QMP socket sends garbage: a real QEMU cannot be made to, so this
/// Python stand-in listens where QEMU would and writes nonsense. bootgate must call
/// it an infrastructure error and kill it.
const GARBAGE_QEMU: &str = r#"#!/usr/bin/env python3
import os, socket, sys, time
if "--version" in sys.argv:
    print("QEMU emulator version 7.2.22 (fake: a QMP peer that sends garbage)")
    sys.exit(0)
paths = [a.split("path=")[1].split(",")[0] for a in sys.argv if "path=" in a]
listeners = []
for p in paths:
    s = socket.socket(socket.AF_UNIX)
    s.bind(p)
    s.listen(4)
    listeners.append(s)
conn, _ = listeners[0].accept()
conn.sendall(b"\x00\xffgarbage that is not a QMP greeting\r\n{\"QMP\": 12\r\n")
time.sleep(600)
"#;

#[test]
fn qmp_peer_sending_garbage_is_an_error() {
    let base = base_sha();
    let dir = tempfile::tempdir().unwrap();
    let fake = write(dir.path(), "qemu-garbage", GARBAGE_QEMU);
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"garbage\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\ncold_boot = true\nsteps = [{ boot = {} }]\n",
    );
    let out_dir = dir.path().join("results");
    let out = bootgate()
        .args([
            "run",
            suite.to_str().unwrap(),
            "--accel",
            "tcg",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .env("BOOTGATE_QEMU", &fake)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let run = assert_infra_error(out.status.code(), &out_dir, &base);
    let reason = scenario(&run, "garbage/a")["reason"].as_str().unwrap();
    assert!(reason.contains("QMP"), "{reason}");
    let left = processes_mentioning(fake.to_str().unwrap());
    assert!(left.is_empty(), "the fake QEMU was killed: {left:?}");
}

/// A base image that is missing, or is not what the manifest says: exit 2 or 3 with
/// the path, nothing run.
#[test]
fn bad_base_images_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = demo_variant(dir.path(), "", "60s");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let disk_line = text
        .lines()
        .find(|l| l.starts_with("path = "))
        .unwrap()
        .to_string();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"bad-base\"\nimage = \"image.toml\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    // Missing.
    let missing = dir.path().join("gone.qcow2");
    std::fs::write(
        &manifest,
        text.replace(
            &disk_line,
            &format!("path = {:?}", missing.display().to_string()),
        ),
    )
    .unwrap();
    let out = run_tcg(&suite, &dir.path().join("r1"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    // Not qcow2 although the manifest says so.
    let garbage = dir.path().join("garbage.qcow2");
    std::fs::write(&garbage, vec![0x5a; 1 << 20]).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            &disk_line,
            &format!("path = {:?}", garbage.display().to_string()),
        ),
    )
    .unwrap();
    let before = sha256(&garbage);
    let out_dir = dir.path().join("r2");
    let out = run_tcg(&suite, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let run = run_json(&out_dir);
    let reason = scenario(&run, "bad-base/a")["reason"].as_str().unwrap();
    assert!(
        reason.contains(&garbage.display().to_string()),
        "names the base: {reason}"
    );
    assert_eq!(sha256(&garbage), before, "not written");
}

/// A results folder that cannot be created: a clear error naming it, exit 3,
/// nothing run.
#[test]
fn unwritable_results_folder_is_a_clear_error() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"w\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let file = write(dir.path(), "not-a-folder", "x");
    let out_dir = file.join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&out_dir.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A results folder on a full file system (a 32 KiB tmpfs in a private mount
/// namespace, `in_private_tmpfs`: as root no user namespace is needed, so it runs
/// in a chroot): the run ends with a clear error, and no result file is left
/// half-written (each is complete JSON/XML or absent).
#[test]
fn full_results_disk_leaves_nothing_half_written() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"full\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let out_dir = mount.join("results");
    let script = format!(
        "{bin} run {suite} --accel tcg --out {out}; code=$?; for f in $(find {m} -name '*.json'); do python3 -c 'import json,sys; json.load(open(sys.argv[1]))' $f || echo HALF-WRITTEN $f; done; for f in $(find {m} -name '*.xml'); do python3 -c 'import sys,xml.dom.minidom as m; m.parse(sys.argv[1])' $f || echo HALF-WRITTEN $f; done; exit $code",
        m = mount.display(),
        bin = env!("CARGO_BIN_EXE_bootgate"),
        suite = suite.display(),
        out = out_dir.display()
    );
    let out = in_private_tmpfs(&mount, "32k", &script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "says why: {stderr}"
    );
    assert!(!stdout.contains("HALF-WRITTEN"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A memory dump cut by a full results disk (a 4 MiB tmpfs in a private mount
/// namespace, `in_private_mounts`: room for the console, screenshot and results, not for the
/// dump): the crash records the failed dump, the partial file is removed, the run
/// goes on to its verdict, and `bootgate verify` passes (no file half-written and
/// unlisted).
#[test]
fn a_dump_cut_by_a_full_disk_is_recorded_and_removed() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"full\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"c\"\nexpect = \"crash\"\nrecovery_settle = \"1s\"\nsteps = [{ exec = { run = \"echo c > /proc/sysrq-trigger\" } }]\n",
    );
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let out_dir = mount.join("results");
    // Everything is checked inside the namespace: the tmpfs is gone after it.
    let script = format!(
        "{bin} run {suite} --accel tcg --out {out}; code=$?; \
         echo RUN-EXIT $code; cp {out}/latest/run.json {copy}; ls -R {out}/latest; \
         {bin} verify {out}/latest; echo VERIFY-EXIT $?",
        bin = env!("CARGO_BIN_EXE_bootgate"),
        suite = suite.display(),
        out = out_dir.display(),
        copy = dir.path().join("run.json").display()
    );
    let out = in_private_tmpfs(&mount, "4m", &script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        stdout.contains("RUN-EXIT 0"),
        "the crash was expected: {stdout}"
    );
    assert!(stdout.contains("VERIFY-EXIT 0"), "{stdout}");
    let json = std::fs::read_to_string(dir.path().join("run.json")).unwrap();
    let record: Value = serde_json::from_str(&json).unwrap();
    let crash = &scenario(&record, "full/c")["crashes"][0];
    assert!(crash["dump"].is_null(), "{crash:#}");
    let note = crash["dump_note"].as_str().unwrap();
    assert!(
        note.starts_with("dump failed: ")
            && note.contains("the results disk is full")
            && note.contains("(the partial full/c/crash-1.kdump was removed)"),
        "{note}"
    );
    assert!(
        !stdout.contains("crash-1.kdump\n"),
        "no partial dump left: {stdout}"
    );
    assert!(
        crash["screenshot"].is_string(),
        "the rest of the evidence is kept"
    );
}

/// SIGTERM (a CI runner cancelling the job) is handled like Ctrl-C.
#[test]
fn sigterm_tears_down_and_writes_interrupted_results() {
    let dir = tempfile::tempdir().unwrap();
    demo_manifest();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"term\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"first\"\nsteps = [{ exec = { run = \"true\" } }]\n\n[[scenario]]\nname = \"sleeps\"\nsteps = [{ exec = { run = \"sleep 600\", timeout = \"15m\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let mut guard = spawn_run(&suite, &out_dir, &["--jobs", "1"]);
    let child = &mut guard.0;
    let started = Instant::now();
    // Wait until the second scenario's VM runs (the first has finished).
    while qemu_children(child.id()).is_empty() || !out_dir.join("latest/term/sleeps").is_dir() {
        assert!(
            started.elapsed() < GUEST_WAIT,
            "never got to the second scenario"
        );
        assert!(child.try_wait().unwrap().is_none(), "bootgate ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(child), Some(130));
    let run = run_json(&out_dir);
    assert_eq!(run["interrupted"], true);
    let v = verdicts(&run);
    assert_eq!(
        v.get("term/first").map(String::as_str),
        Some("pass"),
        "{v:?}"
    );
    assert_eq!(
        v.get("term/sleeps").map(String::as_str),
        Some("error"),
        "{v:?}"
    );
    assert_no_vm_left(&run);
}

/// Two runs at once into the same results folder: two complete runs, neither
/// clobbering the other.
#[test]
fn two_runs_into_one_results_folder_both_complete() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"twice\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let mut a = spawn_run(&suite, &out_dir, &["--jobs", "1"]);
    let mut b = spawn_run(&suite, &out_dir, &["--jobs", "1"]);
    assert_eq!(wait_exit(&mut a.0), Some(0));
    assert_eq!(wait_exit(&mut b.0), Some(0));
    let runs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("run.json").is_file() && !p.ends_with("latest"))
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run_dir in runs {
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap())
                .unwrap();
        assert_eq!(
            verdicts(&record).get("twice/a").map(String::as_str),
            Some("pass")
        );
        assert!(run_dir.join("junit.xml").is_file());
        let verify = run(&["verify", run_dir.to_str().unwrap()]);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "each run verifies on its own"
        );
    }
}

/// `--retries 1`: an attempt whose QEMU dies (infrastructure) is retried; the retry
/// passes, so the scenario passes (the product was never seen failing), and the
/// failed attempt's evidence and reason stay in the results.
#[test]
fn an_error_is_retried_and_every_attempt_is_kept() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"retry\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\ncold_boot = true\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let mut guard = spawn_run(&suite, &out_dir, &["--jobs", "1", "--retries", "1"]);
    let child = &mut guard.0;
    let started = Instant::now();
    let first = loop {
        assert!(started.elapsed() < GUEST_WAIT, "no QEMU appeared");
        if let Some(&pid) = qemu_children(child.id()).first() {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    unsafe {
        libc::kill(first as i32, libc::SIGKILL);
    }
    assert_eq!(wait_exit(child), Some(0), "the retry passed");
    let run = run_json(&out_dir);
    let s = scenario(&run, "retry/a");
    assert_eq!(s["verdict"], "pass", "{s:#}");
    let attempts = s["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{s:#}");
    assert_eq!(attempts[0]["verdict"], "error");
    let first_reason = attempts[0]["reason"].as_str().unwrap();
    assert!(
        first_reason.contains("SIGKILL") || first_reason.contains("QEMU went away"),
        "{first_reason}"
    );
    assert_eq!(s["dir"], "retry/a.attempt-2");
    let latest = out_dir.join("latest");
    assert!(latest.join("retry/a/qemu.log").is_file(), "attempt 1 kept");
    assert!(latest.join("retry/a.attempt-2/console.log").is_file());
    let junit = std::fs::read_to_string(latest.join("junit.xml")).unwrap();
    assert!(
        junit.contains("name=\"attempt-1\" value=\"error: "),
        "a plain pass lists its earlier attempts: {junit}"
    );
    assert!(!junit.contains("flaky"), "not flaky: {junit}");
    let verify = crate::common::run(&["verify", latest.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0));
    assert_no_vm_left(&run);
}

/// A guest that prints without end: bootgate's own memory stays bounded, the console
/// log keeps its head and tail with a marker where output was dropped, and the
/// scenario still ends on time.
#[test]
fn console_flood_keeps_bootgate_bounded() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"flood\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"yes 'flood flood flood flood flood flood flood flood flood flood flood flood' > /dev/ttyS0 & p=$!; sleep 60; kill $p\", timeout = \"2m\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let mut guard = spawn_run(&suite, &out_dir, &["--jobs", "1"]);
    let child = &mut guard.0;
    let pid = child.id();
    let started = Instant::now();
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kib: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                    peak_kib = peak_kib.max(kib);
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < GUEST_WAIT * 2,
            "the flood run did not end"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(0));
    let console = out_dir.join("latest/flood/a/console.log");
    let size = std::fs::metadata(&console).unwrap().len();
    eprintln!("peak RSS of bootgate {peak_kib} KiB; console.log {size} bytes");
    assert!(peak_kib > 0, "sampled");
    assert!(
        peak_kib < 64 * 1024,
        "bootgate's memory stays bounded under a flood: {peak_kib} KiB"
    );
    let cap = bootgate::qemu::console::CONSOLE_HEAD_BYTES
        + bootgate::qemu::console::CONSOLE_TAIL_BYTES as u64;
    assert!(size <= cap + 4096, "console.log capped: {size} bytes");
    let text = std::fs::read(&console).unwrap();
    let flood_lines = text.windows(5).filter(|w| w == b"flood").count();
    assert!(
        flood_lines > 1000,
        "the guest did flood ({flood_lines} words)"
    );
    // Over the cap, the log keeps the head and tail and marks the cut (the flood
    // runs 60 s, about 13 MB at the ~230 KB/s TCG's UART manages here).
    if size >= cap {
        assert!(
            String::from_utf8_lossy(&text).contains("bytes of console output dropped here"),
            "the cut is marked"
        );
    }
}
