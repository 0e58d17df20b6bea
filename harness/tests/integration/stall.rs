//! Hang verdicts from the stall detector (issue 17, item 6): a guest that stops
//! making progress is a hang after `stall_window`, before the kernel's own lockup
//! report, and a healthy guest on a host whose CPUs are all busy is not one.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use crate::common::*;

const HANG_INIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scenarios/demo/drivers/hang_init"
);

/// What the kernel prints when it notices the spin itself (an RCU stall ~21 s in,
/// a soft lockup ~49 s in, under TCG): none of it may have come before the verdict.
const KERNEL_REPORTS: [&str; 3] = ["rcu_sched detected stall", "detected stall", "soft lockup"];

/// Busy loops on every host CPU, each in its own process group, killed with it when
/// the guard drops (however the test ends).
struct BusyHost(Vec<Child>);

impl BusyHost {
    fn start() -> BusyHost {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let loops = (0..cpus)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .process_group(0)
                    .spawn()
                    .expect("a busy loop starts")
            })
            .collect();
        BusyHost(loops)
    }
}

impl Drop for BusyHost {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: killpg on the group this guard created; no memory involved.
            unsafe {
                libc::killpg(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// A driver that spins in its init, at a reboot (before ready: no agent) and loaded
/// at a step (after ready: the agent goes silent mid-command): both are hangs the
/// stall detector calls, with what it saw, before the kernel says anything.
#[test]
fn a_stalled_guest_is_a_hang_before_the_kernels_lockup_report() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suites = dir.path().join("suites");
    std::fs::create_dir(&suites).unwrap();
    let suite = |name: &str, window: &str, scenario: &str| {
        write(
            &suites,
            &format!("{name}.toml"),
            &format!(
                "[suite]\nname = \"{name}\"\nimage = \"demo\"\nstall_window = \"{window}\"\n\n[driver.hang_init]\nsource = {HANG_INIT:?}\n\n{scenario}"
            ),
        )
    };
    suite(
        "boot",
        "5s",
        r#"[[scenario]]
name = "spins-at-boot"
expect = "hang"
steps = [
  { install_driver = { driver = "hang_init" } },
  { reboot = { times = 1, timeout = "90s" } },
]
"#,
    );
    // The shortest window: the step's command is polled with the agent's own 10 s
    // request timeout, which must not win even on a loaded host (where the vCPU
    // thread's share stretches the window in wall time).
    suite(
        "step",
        "2s",
        r#"[[scenario]]
name = "spins-in-a-step"
expect = "hang"
steps = [
  { install_driver = { driver = "hang_init", load_now = true, timeout = "90s" } },
]
"#,
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suites, &out_dir, &["--allow-outside-paths"]);
    let run = run_json(&out_dir);
    assert_eq!(out.status.code(), Some(0), "{:?}", verdicts(&run));
    let cases = [
        (
            "boot/spins-at-boot",
            "before_ready",
            2,
            5000,
            &["vcpu", "console"][..],
        ),
        (
            "step/spins-in-a-step",
            "ready",
            1,
            2000,
            &["vcpu", "console", "agent"][..],
        ),
    ];
    for (name, phase, boot, window, signals) in cases {
        let s = scenario(&run, name);
        let hangs = s["hangs"].as_array().unwrap();
        assert_eq!(hangs.len(), 1, "{s:#}");
        let hang = hangs[0].as_str().unwrap();
        assert!(
            hang.starts_with("the guest made no progress") && hang.contains("stall detector"),
            "{name}: the hang names the stall: {hang}"
        );
        assert!(
            hang.contains("hang_init"),
            "{name}: the last console line: {hang}"
        );
        let stalls = s["stalls"].as_array().unwrap();
        assert_eq!(stalls.len(), 1, "{s:#}");
        let stall = &stalls[0];
        assert_eq!(stall["phase"], phase, "{stall:#}");
        assert_eq!(stall["boot_index"], boot, "{stall:#}");
        assert_eq!(stall["signals"], serde_json::json!(signals), "{stall:#}");
        assert_eq!(stall["window_ms"], window);
        assert_eq!(stall["vcpus"][0]["state"], "spinning in the kernel");
        assert!(stall["last_console"]
            .as_str()
            .unwrap()
            .contains("hang_init: spinning forever in init"));
        assert!(stall["kernel_report"].is_null(), "{stall:#}");
        assert_eq!(
            stall["agent_silent_ms"].is_u64(),
            phase == "ready",
            "the agent's silence counts once ready: {stall:#}"
        );
        // Before the kernel's report: it never reached the console.
        // One QEMU for both boots (the reboot is the guest's own): one console log.
        let console_log = out_dir
            .join("latest")
            .join(s["dir"].as_str().unwrap())
            .join("console.log");
        let console = std::fs::read_to_string(console_log).unwrap();
        for report in KERNEL_REPORTS {
            assert!(!console.contains(report), "{name}: {report} came first");
        }
        let outcomes = boot_outcomes(s);
        let expected: &[&str] = if boot == 2 {
            &["ready", "hang"]
        } else {
            &["ready"]
        };
        assert_eq!(outcomes, expected, "{name}");
    }
    assert_no_vm_left(&run);
}

/// Every host CPU busy (the guest's vCPU thread gets a share, not a core), and a
/// healthy guest that boots, sleeps, computes in user space, keeps its kernel busy
/// and waits, each longer than the stall window: no hang.
#[test]
fn a_busy_host_gives_no_false_hang() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        r#"[suite]
name = "busy"
image = "demo"
stall_window = "3s"

[[scenario]]
name = "healthy"
cold_boot = true
steps = [
  { exec = { run = "sleep 5" } },
  { exec = { run = "end=$(( $(date +%s) + 5 )); while [ $(date +%s) -lt $end ]; do :; done" } },
  { exec = { run = "dd if=/dev/zero of=/dev/null bs=4M count=400" } },
  { observe = { duration = "5s" } },
]
"#,
    );
    let out_dir = dir.path().join("results");
    let busy = BusyHost::start();
    let out = run_tcg(&suite, &out_dir, &[]);
    drop(busy);
    let run = run_json(&out_dir);
    let s = scenario(&run, "busy/healthy");
    assert_eq!(out.status.code(), Some(0), "{s:#}");
    assert_eq!(s["verdict"], "pass", "{s:#}");
    assert!(s["hangs"].as_array().unwrap().is_empty(), "{s:#}");
    assert!(s.get("stalls").is_none(), "{s:#}");
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5, "boot and four steps: {s:#}");
    assert!(steps.iter().all(|st| st["outcome"] == "ok"), "{s:#}");
    assert_no_vm_left(&run);
}
