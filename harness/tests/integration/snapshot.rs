//! Snapshot fast reset: VMs started from one saved state instead of booting.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bootgate::agent::AgentClient;
use bootgate::image::Manifest;
use bootgate::qemu::accel::Accel;
use bootgate::qemu::command::VmLayout;
use bootgate::qemu::snapshot::{ensure_saved, state_key, RestoredVm, SavedState};
use bootgate::qemu::QemuTools;

use crate::common::*;

/// A restored guest is already up: its agent answers at once. Far above the ~0.1 s
/// measured, far below a cold boot's retries.
const RESTORE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// One agent request inside a running guest.
const AGENT_TIMEOUT: Duration = Duration::from_secs(20);
/// A line the guest writes to its console reaching the host.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);
const EXEC_POLL: Duration = Duration::from_millis(20);

/// Runs `script` with the guest's shell through guest-exec; returns (exit code, stdout).
fn exec(agent: &mut AgentClient, script: &str) -> (i32, String) {
    let argv: Vec<String> = ["/bin/sh", "-c", script].map(String::from).to_vec();
    let pid = agent.exec_start(&argv, &[], None, AGENT_TIMEOUT).unwrap();
    let deadline = Instant::now() + AGENT_TIMEOUT;
    loop {
        let status = agent.exec_status(pid, AGENT_TIMEOUT).unwrap();
        if status.exited {
            return (
                status.exit_code.unwrap_or(-1),
                String::from_utf8_lossy(&status.stdout).trim().to_string(),
            );
        }
        assert!(Instant::now() < deadline, "{script:?} did not finish");
        std::thread::sleep(EXEC_POLL);
    }
}

fn saved_demo_state(tools: &QemuTools) -> (Manifest, SavedState) {
    let manifest = Manifest::load(demo_manifest()).unwrap();
    let mut notify = |text: &str| eprintln!("{text}");
    let state = ensure_saved(&manifest, tools, Accel::Tcg, &mut notify).unwrap();
    (manifest, state)
}

/// What one restored VM saw.
struct Seen {
    ready_after: Duration,
    loaded_after: Duration,
    bootcount: String,
    own_mark: String,
    console_marker_seen: bool,
}

/// Two VMs restore one state at the same moment; each reaches ready, runs commands,
/// writes a file the other never sees, and the frozen disk and base stay unchanged.
#[test]
fn two_vms_restore_one_state_at_once_and_stay_apart() {
    let tools = QemuTools::from_env();
    let (manifest, state) = saved_demo_state(&tools);
    let base = manifest.disk.path.clone();
    let (disk_before, ram_before, devices_before, base_before) = (
        sha256(&state.disk),
        sha256(&state.ram),
        sha256(&state.devices),
        sha256(&base),
    );
    for file in [&state.disk, &state.devices] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444, "{} is frozen", file.display());
    }
    // A second call finds the state in the cache instead of booting again.
    let mut notices = Vec::new();
    let again = ensure_saved(&manifest, &tools, Accel::Tcg, &mut |t: &str| {
        notices.push(t.to_string())
    })
    .unwrap();
    assert_eq!(again, state);
    assert!(notices.is_empty(), "reused without saving: {notices:?}");

    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (tools, manifest, state, barrier) = (
                tools.clone(),
                manifest.clone(),
                state.clone(),
                Arc::clone(&barrier),
            );
            // Each VM lives and dies on its own thread: QEMU's parent-death signal
            // is tied to the thread that spawned it.
            std::thread::spawn(move || restore_and_use(i, &tools, &manifest, &state, &barrier))
        })
        .collect();
    let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    for (i, seen) in seen.iter().enumerate() {
        eprintln!(
            "vm {i}: RAM loaded {:?} and agent answered {:?} after QEMU started",
            seen.loaded_after, seen.ready_after
        );
        // A cold boot on top of the frozen disk would count boot 2.
        assert_eq!(seen.bootcount, "1", "vm {i} resumed the saved boot");
        assert_eq!(
            seen.own_mark,
            format!("vm-{i}"),
            "vm {i} sees only its own write"
        );
        assert!(
            seen.console_marker_seen,
            "vm {i}'s console works after restore"
        );
    }
    assert_eq!(sha256(&state.disk), disk_before, "frozen disk unchanged");
    // Both guests wrote to their RAM (commands, files): the private mappings kept
    // every write away from the shared RAM file.
    assert_eq!(sha256(&state.ram), ram_before, "RAM file unchanged");
    assert_eq!(
        sha256(&state.devices),
        devices_before,
        "device state unchanged"
    );
    assert_eq!(sha256(&base), base_before, "base disk unchanged");
}

fn restore_and_use(
    i: usize,
    tools: &QemuTools,
    manifest: &Manifest,
    state: &SavedState,
    barrier: &Barrier,
) -> Seen {
    let dir = tempfile::Builder::new()
        .prefix("bootgate-vm-")
        .tempdir()
        .unwrap();
    let layout = VmLayout::in_dir(dir.path());
    barrier.wait();
    let mut vm = RestoredVm::start(tools, manifest, Accel::Tcg, state, &layout, dir.path())
        .unwrap_or_else(|e| panic!("vm {i} restores: {e}"));
    vm.agent().sync(RESTORE_READY_TIMEOUT).unwrap();
    let ready_after = vm.spawned().elapsed();
    let (rc, bootcount) = exec(vm.agent(), "cat /system/var/bootcount");
    assert_eq!(rc, 0);
    let (rc, _) = exec(vm.agent(), &format!("echo vm-{i} > /system/mark && sync"));
    assert_eq!(rc, 0);
    // Both have written before either reads back: a shared disk would show the
    // other's write.
    barrier.wait();
    let (rc, own_mark) = exec(vm.agent(), "cat /system/mark");
    assert_eq!(rc, 0);
    let marker = format!("bootgate-restored-console-{i}");
    let (rc, _) = exec(vm.agent(), &format!("echo {marker} > /dev/console"));
    assert_eq!(rc, 0);
    let deadline = Instant::now() + CONSOLE_TIMEOUT;
    let mut console_marker_seen = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match vm.console_lines().recv_timeout(left) {
            Ok(line) if line.text.contains(&marker) => {
                console_marker_seen = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(vm.stop(), "vm {i} quits on QMP quit");
    Seen {
        ready_after,
        loaded_after: vm.loaded_after,
        bootcount,
        own_mark,
        console_marker_seen,
    }
}

/// A copy of the demo manifest in `dir` pointing at the built files by absolute path,
/// with `edit` applied to its text.
fn manifest_copy(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let original = demo_manifest();
    let image_dir = original.parent().unwrap();
    let mut text = std::fs::read_to_string(original).unwrap();
    for file in ["vmlinuz", "initrd.img", "system.qcow2"] {
        let abs = image_dir.join(file);
        text = text.replace(
            &format!("\"{file}\""),
            &format!("{:?}", abs.display().to_string()),
        );
    }
    write(dir, "image.toml", &edit(text))
}

/// The key follows what the machine is: equal for an identical manifest elsewhere,
/// different for other memory, kernel parameters, kernel bytes or accelerator.
#[test]
fn saved_state_key_changes_with_every_input() {
    const QEMU: &str = "QEMU emulator version 7.2.22";
    let key = |path: &Path, accel| {
        let manifest = Manifest::load(path).unwrap();
        state_key(&manifest, QEMU, accel, "qemu-system-x86_64", true).unwrap()
    };
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let same = manifest_copy(dirs[0].path(), |t| t);
    let same_elsewhere = manifest_copy(dirs[1].path(), |t| t);
    let more_memory = manifest_copy(dirs[2].path(), |t| {
        assert!(t.contains("memory_mib = 256"), "{t}");
        t.replace("memory_mib = 256", "memory_mib = 384")
    });
    let other_append = manifest_copy(dirs[3].path(), |t| {
        t.replace("oops=panic", "oops=panic quiet")
    });
    let kernel = dirs[4].path().join("vmlinuz");
    let mut bytes = std::fs::read(demo_manifest().parent().unwrap().join("vmlinuz")).unwrap();
    bytes.push(0);
    std::fs::write(&kernel, bytes).unwrap();
    let other_kernel = manifest_copy(dirs[4].path(), |t| {
        let old = demo_manifest().parent().unwrap().join("vmlinuz");
        t.replace(
            &format!("{:?}", old.display().to_string()),
            &format!("{:?}", kernel.display().to_string()),
        )
    });

    let base = key(&same, Accel::Tcg);
    assert_eq!(base, key(&same, Accel::Tcg), "the key is stable");
    assert_eq!(
        base,
        key(&same_elsewhere, Accel::Tcg),
        "names do not matter"
    );
    assert_ne!(base, key(&more_memory, Accel::Tcg), "memory size");
    assert_ne!(base, key(&other_append, Accel::Tcg), "kernel parameters");
    assert_ne!(base, key(&other_kernel, Accel::Tcg), "kernel bytes");
    assert_ne!(base, key(&same, Accel::Kvm), "accelerator");
    let manifest = Manifest::load(&same).unwrap();
    let newer = state_key(
        &manifest,
        "QEMU emulator version 8.2.0",
        Accel::Tcg,
        "qemu-system-x86_64",
        true,
    );
    assert_ne!(base, newer.unwrap(), "QEMU version");
    let unconfined = state_key(&manifest, QEMU, Accel::Tcg, "qemu-system-x86_64", false);
    assert_ne!(base, unconfined.unwrap(), "seccomp confinement");
}

/// A worker starts the next scenario's QEMU while the current one runs; the next
/// scenario that restores the same state takes it, and none outlives the run.
#[test]
fn the_next_scenario_restores_into_a_standby_and_none_outlives_the_run() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    // A private temp folder: every VM folder of this run, standbys included, is in it.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"standby\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"echo a > /system/var/a\" } }]\n\n[[scenario]]\nname = \"b\"\nsteps = [{ exec = { run = \"! test -e /system/var/a\" } }]\n\n[[scenario]]\nname = \"c\"\ncold_boot = true\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let out = dir.path().join("out");
    let output = bootgate()
        .args([
            "run",
            suite.to_str().unwrap(),
            "--accel",
            "tcg",
            "--jobs",
            "1",
            "--out",
        ])
        .arg(&out)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let run = run_json(&out);
    let first_boot = |name: &str| scenario(&run, name)["boots"][0].clone();
    // The first scenario had no standby yet; b took the one a started (and does not
    // see a's write: its own fresh overlay); c boots cold, so the standby b started
    // for it was never taken.
    assert_eq!(first_boot("standby/a")["standby"], false);
    let boot = first_boot("standby/b");
    assert_eq!(boot["restored"], true, "{boot}");
    assert_eq!(boot["standby"], true, "{boot}");
    let folder = out
        .join("latest")
        .join(scenario(&run, "standby/b")["dir"].as_str().unwrap());
    for log in ["qemu.log", "console.log"] {
        assert!(folder.join(log).is_file(), "{log} in {}", folder.display());
    }
    assert_eq!(first_boot("standby/c")["restored"], false);
    // That standby was stopped with its worker, its folder removed.
    let left = processes_mentioning(tmp.to_str().unwrap());
    assert!(left.is_empty(), "QEMU left running: {left:?}");
    let folders: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(folders.is_empty(), "VM folders left in TMPDIR: {folders:?}");
}

/// The guest's uptime in seconds, from a step detail that quotes `cat /proc/uptime`.
fn quoted_uptime(detail: &str) -> f64 {
    detail
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find_map(|word| word.parse::<f64>().ok().filter(|_| word.contains('.')))
        .unwrap_or_else(|| panic!("no uptime in {detail:?}"))
}

/// A standby loads the saved state while the scenario before it runs, but its guest
/// must not run before the next scenario takes it: what that scenario gets is the
/// saved state as saved. The guest's clock (TSC under TCG, stopped while the VM is
/// paused) tells: the scenario that took the standby sees the same uptime as the one
/// that restored on demand, not the seconds the first one spent observing.
#[test]
fn a_standby_guest_does_not_run_before_its_scenario_takes_it() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        &format!(
            "[suite]\nname = \"paused\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{{ exec = {{ run = \"cat /proc/uptime\" }} }}, {{ observe = {{ duration = \"{OBSERVE_SECS}s\" }} }}]\n\n[[scenario]]\nname = \"b\"\nsteps = [{{ exec = {{ run = \"cat /proc/uptime\" }} }}]\n"
        ),
    );
    let out = dir.path().join("out");
    let output = run_tcg(&suite, &out, &["--jobs", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let run = run_json(&out);
    let b = scenario(&run, "paused/b");
    assert_eq!(b["boots"][0]["standby"], true, "{b}");
    let uptime = |name: &str| {
        let detail = scenario(&run, name)["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "exec")
            .and_then(|s| s["detail"].as_str())
            .unwrap()
            .to_string();
        quoted_uptime(&detail)
    };
    let (a, b) = (uptime("paused/a"), uptime("paused/b"));
    // Both read their uptime right after the restore; had b's guest run while a
    // observed, b's would be OBSERVE_SECS later.
    assert!(
        b < a + f64::from(OBSERVE_SECS) / 2.0,
        "the standby's guest ran before its scenario: uptime {a} s in a, {b} s in b"
    );
    assert_no_vm_left(&run);
}

/// How long the first scenario stays up while the standby for the next one waits.
const OBSERVE_SECS: u32 = 6;
