//! Shared helpers: running the binary, writing suites, reading results, and finding
//! QEMU processes a run left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// The demo suites folder (suites, drivers, content) of this repository.
pub const DEMO_SUITES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/demo");

/// The bootgate binary built by cargo for these tests.
pub fn bootgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bootgate"))
}

/// A spawned bootgate that is killed if the test ends early (a failed assertion), so
/// a failing test leaks no process; its VMs die with it (parent-death signal).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `run SUITE --accel tcg --out OUT EXTRA...`
pub fn tcg_args<'a>(suite: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        suite.to_str().unwrap(),
        "--accel",
        "tcg",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    args
}

/// Runs `bootgate run SUITE --accel tcg --out OUT EXTRA...` to the end.
pub fn run_tcg(suite: &Path, out: &Path, extra: &[&str]) -> Output {
    run(&tcg_args(suite, out, extra))
}

/// Starts `bootgate run SUITE --accel tcg --out OUT EXTRA...` in the background.
pub fn spawn_run(suite: &Path, out: &Path, extra: &[&str]) -> ChildGuard {
    let child = bootgate()
        .args(tcg_args(suite, out, extra))
        .spawn()
        .expect("bootgate starts");
    ChildGuard(child)
}

/// Runs bootgate with `args`, returning its output; stderr is echoed for CI logs.
pub fn run(args: &[&str]) -> Output {
    let output = bootgate().args(args).output().expect("bootgate runs");
    eprintln!(
        "$ bootgate {}\n--- exit {:?}; stderr:\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The demo image's manifest, built once into the shared cache (the cache's lock
/// makes concurrent test processes wait for one build).
pub fn demo_manifest() -> &'static Path {
    static MANIFEST: OnceLock<PathBuf> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let mut notify = |text: &str| eprintln!("{text}");
        let demo = bootgate::image::builtin::find("demo").expect("demo is built in");
        bootgate::image::builtin::ensure_built(demo, &mut notify).expect("the demo image builds")
    })
}

/// Writes `text` as `name` in `dir`, returning its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The debian12 image's manifest, built once into the shared cache (needs root, as
/// CI is).
pub fn debian12_manifest() -> &'static Path {
    static MANIFEST: OnceLock<PathBuf> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let mut notify = |text: &str| eprintln!("{text}");
        let image = bootgate::image::builtin::find("debian12").expect("debian12 is built in");
        bootgate::image::builtin::ensure_built(image, &mut notify)
            .expect("the debian12 image builds")
    })
}

/// A copy in `dir` of a built image's manifest, its files named by absolute path and
/// its build record (kernel, headers) beside it, with `edit` applied to its text.
pub fn image_variant(manifest: &Path, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let image_dir = manifest.parent().unwrap();
    let mut text = std::fs::read_to_string(manifest).unwrap();
    for file in ["vmlinuz", "initrd.img", "system.qcow2"] {
        let abs = image_dir.join(file);
        text = text.replace(
            &format!("\"{file}\""),
            &format!("{:?}", abs.display().to_string()),
        );
    }
    std::fs::copy(
        image_dir.join("build-info.json"),
        dir.join("build-info.json"),
    )
    .unwrap();
    let edited = edit(text.clone());
    write(dir, "image.toml", &edited)
}

/// A copy of the demo image manifest in `dir` (absolute paths to the built files),
/// with extra kernel parameters and a different ready timeout.
pub fn demo_variant(dir: &Path, extra_append: &str, ready_timeout: &str) -> PathBuf {
    image_variant(demo_manifest(), dir, |mut text| {
        let append_line = text
            .lines()
            .find(|l| l.starts_with("append = "))
            .unwrap()
            .to_string();
        let new_append = format!(
            "{}\"",
            append_line.trim_end_matches('"').to_string() + " " + extra_append
        );
        text = text.replace(&append_line, &new_append);
        text.replace(
            "timeout = \"120s\"",
            &format!("timeout = {ready_timeout:?}"),
        )
    })
}

/// run.json of the latest run in `out`.
pub fn run_json(out: &Path) -> Value {
    let text =
        std::fs::read_to_string(out.join("latest").join("run.json")).expect("run.json exists");
    serde_json::from_str(&text).expect("run.json is valid JSON")
}

/// The outcome of each boot of a scenario record, in order.
pub fn boot_outcomes(scenario: &Value) -> Vec<&str> {
    scenario["boots"]
        .as_array()
        .expect("boots is a list")
        .iter()
        .map(|b| b["outcome"].as_str().expect("a boot has an outcome"))
        .collect()
}

pub fn scenario<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("scenario {name} in run.json"))
}

/// Each scenario's verdict by name.
pub fn verdicts(run: &Value) -> std::collections::BTreeMap<String, String> {
    run["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The private VM folders (`/tmp/bootgate-vm-*`) named in a run's QEMU command lines:
/// the folder holding each VM's QMP socket.
pub fn vm_dirs(run: &Value) -> Vec<String> {
    let mut dirs = Vec::new();
    for vm in run["qemu"]["argv"].as_array().unwrap() {
        for arg in vm["argv"].as_array().unwrap() {
            let arg = arg.as_str().unwrap();
            if let Some(rest) = arg.strip_prefix("socket,id=qmp0,path=") {
                let dir = rest.split("/qmp.sock").next().unwrap().to_string();
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Processes whose command line mentions `needle` (a VM's private folder).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

/// Asserts that no QEMU of this run is alive and its private folders are gone.
pub fn assert_no_vm_left(run: &Value) {
    let dirs = vm_dirs(run);
    assert!(!dirs.is_empty(), "run.json records the VM command lines");
    for dir in dirs {
        let left = processes_mentioning(&dir);
        assert!(left.is_empty(), "QEMU left running: {left:?}");
        assert!(!Path::new(&dir).exists(), "VM folder {dir} left behind");
    }
}

pub fn sha256(path: &Path) -> String {
    bootgate::util::sha256_file(path).unwrap()
}

/// The QEMU processes whose parent is `pid` and that run a VM (not a short
/// `-version` probe).
pub fn qemu_children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
            continue;
        };
        let ppid: u32 = after.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let runs_a_vm = String::from_utf8_lossy(&cmdline).contains("qmp.sock");
        if ppid == pid && stat.contains("(qemu-system-x86") && runs_a_vm {
            found.push(entry.file_name().to_string_lossy().parse().unwrap());
        }
    }
    found
}

/// The demo image's kernel release (`uname -r` in the guest), from its build record.
pub fn demo_kernel_release() -> String {
    let record =
        bootgate::image::kernel::build_info(demo_manifest()).expect("the demo's build-info.json");
    record["kernel_version"]
        .as_str()
        .expect("build-info.json names the kernel_version")
        .to_string()
}

/// How long installing the distribution's debug kernel (hundreds of MiB) may take.
const DEBUG_VMLINUX_INSTALL_TIMEOUT: &str = "1200";

/// The demo kernel's debug vmlinux (what `crash` needs beside a dump), where
/// Debian's `linux-image-<release>-dbg` puts it; installed with apt-get when it is
/// missing and this process is root (CI is). Err says why there is none. Tried
/// once per test process.
pub fn debug_vmlinux() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let release = demo_kernel_release();
            let path = PathBuf::from(format!("/usr/lib/debug/boot/vmlinux-{release}"));
            if path.is_file() {
                return Ok(path);
            }
            let package = format!("linux-image-{release}-dbg");
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err(format!(
                    "{} is missing and this test is not root: install {package}",
                    path.display()
                ));
            }
            let install = || {
                let out = Command::new("timeout")
                    .args([
                        DEBUG_VMLINUX_INSTALL_TIMEOUT,
                        "apt-get",
                        "install",
                        "-y",
                        "-q",
                    ])
                    .args(["-o", "DPkg::Lock::Timeout=600", &package])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .output();
                match out {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(out) => Err(format!(
                        "apt-get install {package} failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                    Err(e) => Err(format!("cannot run apt-get: {e}")),
                }
            };
            eprintln!("debug_vmlinux: installing {package} (apt-get)");
            let installed = install().or_else(|_| {
                // A fresh machine's package lists may predate the package.
                let _ = Command::new("timeout")
                    .args([DEBUG_VMLINUX_INSTALL_TIMEOUT, "apt-get", "update", "-q"])
                    .output();
                install()
            });
            match installed {
                Ok(()) if path.is_file() => Ok(path),
                Ok(()) => Err(format!(
                    "{package} installed but {} is missing",
                    path.display()
                )),
                Err(why) => Err(why),
            }
        })
        .clone()
}

/// Exit status of the guard [`in_private_tmpfs`] puts before a script when a tmpfs
/// mounted in its namespace would have reached the host's mounts.
const SHARED_MOUNT_EXIT: i32 = 97;

/// `sh -c SCRIPT` with a `size` tmpfs mounted on `dir` in a private mount namespace,
/// so a test gets a small disk without touching the host's mounts. As root, a mount
/// namespace alone (`unshare -m`): it needs no user namespace, which chroots,
/// containers and hardened hosts refuse. In a chroot whose root is not a mount point
/// `unshare` cannot make the namespace's mounts private; there the tmpfs is mounted
/// as they are and checked: one that joined a shared peer group (it would show on the
/// host) is unmounted at once (the unmount propagates too) and the test fails. As
/// another user, a user namespace with the mount namespace (`unshare -rm`). Where the
/// host allows none of these, this panics naming what it lacks: such a test must
/// never pass without having run.
pub fn in_private_tmpfs(dir: &Path, size: &str, script: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let guarded = |dir: &Path, then: &str| {
        format!(
            "mount -t tmpfs -o size={size} tmpfs {d} || exit 1; if grep \" {d} \" /proc/self/mountinfo | grep -q shared:; then umount {d}; exit {SHARED_MOUNT_EXIT}; fi; {then}",
            d = dir.display()
        )
    };
    let probe_dir = tempfile::tempdir().unwrap();
    let try_flags = |flags: &[&str]| {
        Command::new("unshare")
            .args(flags)
            .args(["sh", "-c", &guarded(probe_dir.path(), "true")])
            .output()
    };
    let mut tried = Vec::new();
    let candidates: &[&[&str]] = if root {
        &[&["-m"], &["-m", "--propagation", "unchanged"]]
    } else {
        &[&["-rm"]]
    };
    for flags in candidates {
        match try_flags(flags) {
            Ok(out) if out.status.success() => {
                let mut command = Command::new("unshare");
                command.args(*flags).args(["sh", "-c", &guarded(dir, script)]);
                return command;
            }
            Ok(out) if out.status.code() == Some(SHARED_MOUNT_EXIT) => tried.push(format!(
                "`unshare {}`: a tmpfs mounted there joins a shared peer group and would show on the host (a chroot whose root is not a mount point, on a host whose / is shared): bind-mount the chroot onto itself and make it private before entering it (`mount --bind DIR DIR && mount --make-private DIR`, as schroot does)",
                flags.join(" ")
            )),
            Ok(out) => tried.push(format!(
                "`unshare {}`: {}",
                flags.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => panic!("cannot run unshare (util-linux): {e}"),
        }
    }
    panic!(
        "this host gives this test no private mount namespace to mount a tmpfs in, as {}: {}. {}",
        if root { "root" } else { "an ordinary user" },
        tried.join("; "),
        if root {
            "Root needs CAP_SYS_ADMIN and a seccomp profile that allows unshare and mount (a container: --cap-add SYS_ADMIN, or --privileged)"
        } else {
            "An ordinary user needs unprivileged user namespaces (user.max_user_namespaces > 0, no AppArmor or sysctl restriction), or run the tests as root"
        }
    )
}
