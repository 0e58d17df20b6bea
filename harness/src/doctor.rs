//! `bootgate doctor`: checks the host and says, line by line, what is ok and what to
//! do about what is not.

pub mod image;
mod windows;

use std::io::Write;
use std::path::Path;

use crate::qemu::{self, accel, QemuTools, INSTALL_HINT};
use crate::util::{digest_cache, host_identity, kept_answers};

/// How much of a kept question `doctor` shows (the build sandbox's is its whole
/// bwrap command line).
const KEPT_QUESTION_CHARS: usize = 60;

/// Free space below which a results or cache folder is reported as a problem.
const MIN_FREE_BYTES: u64 = 2 << 30;
/// Firmware QEMU needs for BIOS boots (Debian package seabios).
const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// Host tools the demo image recipe uses.
const RECIPE_TOOLS: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
    ("mke2fs", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("cpio", "cpio"),
    ("readelf", "binutils"),
    ("make", "make"),
    ("gcc", "gcc"),
];

/// Prints the checks to `out`; true when nothing blocks a run. `build_sandbox` is
/// the runner's probe of the driver build sandbox (`runner::build_sandbox::probe`),
/// handed in by the binary: the runner, which owns the sandbox, sits above doctor.
pub fn run(out: &mut dyn Write, build_sandbox: Result<(), String>) -> bool {
    let tools = QemuTools::from_env();
    let mut ok = true;
    let mut line = |good: bool, what: &str, text: &str| {
        let _ = writeln!(out, "{} {what}: {text}", if good { "ok  " } else { "FAIL" });
        good
    };
    let system = qemu::version(&tools.system);
    ok &= match &system {
        Ok(v) => line(true, &tools.system, v),
        Err(e) => line(false, &tools.system, &e.to_string()),
    };
    ok &= match qemu::version(&tools.img) {
        Ok(v) => line(true, &tools.img, &v),
        Err(_) => line(
            false,
            &tools.img,
            &format!("not found: install it (as root: `{INSTALL_HINT}`)"),
        ),
    };
    if system.is_ok() {
        // Asked afresh: the check is of the binary now, not of a kept answer.
        if qemu::sandbox_supported(&tools.system) {
            line(
                true,
                "sandbox",
                "QEMU confines itself with seccomp (-sandbox)",
            );
        } else {
            line(
                true,
                "sandbox",
                "this QEMU has no seccomp support: VMs run without -sandbox",
            );
        }
    }
    ok &= if Path::new(SEABIOS).is_file() {
        line(true, "firmware", &format!("SeaBIOS at {SEABIOS}"))
    } else {
        line(
            false,
            "firmware",
            &format!("{SEABIOS} missing: install the seabios package"),
        )
    };
    if system.is_ok() {
        // The probe needs a kernel to be meaningful on hosts where KVM hangs in the
        // kernel's boot path; use the demo image's if it is built.
        let kernel = built_demo_kernel();
        match accel::probe_kvm(&tools.system, kernel.as_deref()) {
            Ok(()) => line(true, "accelerator", "KVM works (probe guest booted)"),
            Err(why) => line(
                true,
                "accelerator",
                &format!("TCG (KVM unusable: {why}); runs will be slower but correct"),
            ),
        };
        // What `--accel auto` runs reuse this boot instead of probing again.
        let root = crate::cache::cache_root();
        let folder = root.join(qemu::accel_cache::FOLDER);
        for kept in qemu::accel_cache::kept_for_this_boot(&root) {
            let qemu = qemu::accel_cache::identity_path(&kept.key.qemu);
            let kernel = kept
                .key
                .kernel
                .as_deref()
                .map_or("a boot sector", qemu::accel_cache::identity_path);
            line(
                true,
                "accel verdict",
                &format!(
                    "kept for this boot: {} for {qemu} probing {kernel}{}; runs reuse it until a reboot or a QEMU change (probe again: rm -r {})",
                    kept.accel.as_str(),
                    kept.notice.map(|n| format!(" ({n})")).unwrap_or_default(),
                    folder.display()
                ),
            );
        }
    }
    kept_lines(&mut line);
    for (tool, package) in RECIPE_TOOLS {
        ok &= if qemu::find_in_path(tool).is_some() {
            line(true, tool, "found")
        } else {
            line(
                false,
                tool,
                &format!(
                    "not found: needed to build the demo image; install the {package} package"
                ),
            )
        };
    }
    ok &= match build_sandbox {
        Ok(()) => line(
            true,
            "build sandbox",
            "bubblewrap works: `source` drivers build with no network and nothing of the host writable or visible but the toolchain, headers and source",
        ),
        Err(why) => line(
            false,
            "build sandbox",
            &format!("{why}; until it works, bootgate refuses to build `source` drivers unless given --unsandboxed-builds (which runs their Kbuild on this host as you)"),
        ),
    };
    let cache = crate::cache::cache_root();
    for (what, dir) in [
        ("cache disk", cache.as_path()),
        ("results disk", Path::new(".")),
    ] {
        match crate::util::free_bytes(dir) {
            Some(free) if free >= MIN_FREE_BYTES => line(
                true,
                what,
                &format!("{} GiB free at {}", free >> 30, dir.display()),
            ),
            Some(free) => {
                ok = false;
                line(
                    false,
                    what,
                    &format!(
                        "only {} MiB free at {}: free some space",
                        free >> 20,
                        dir.display()
                    ),
                )
            }
            None => line(true, what, &format!("{} does not exist yet", dir.display())),
        };
    }
    match built_demo_manifest() {
        Some(manifest) => line(true, "image cache", &format!("demo image built: {}", manifest.display())),
        None => line(true, "image cache", &format!("demo image not built yet in {}: `bootgate image build demo` (run does it on demand)", cache.display())),
    };
    // Optional pieces: only images that ask for them need them.
    for (what, present, text) in [
        (
            "uefi firmware",
            Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file(),
            "OVMF (package ovmf): needed by images with boot.firmware = \"uefi\"",
        ),
        (
            "swtpm",
            qemu::find_in_path(crate::qemu::tpm::SWTPM).is_some(),
            "software TPM (packages swtpm swtpm-tools): needed by images with machine.tpm",
        ),
    ] {
        let tag = if present { "ok  " } else { "note" };
        let state = if present { "found" } else { "not installed" };
        let _ = writeln!(out, "{tag} {what}: {state}; {text}");
    }
    ok
}

/// What runs reuse instead of asking again: tool answers kept for this boot and the
/// input digests, each with how to clear it.
fn kept_lines(line: &mut dyn FnMut(bool, &str, &str) -> bool) {
    let root = crate::cache::cache_root();
    let probes = root.join(kept_answers::FOLDER);
    for kept in kept_answers::kept_for_this_boot(&root) {
        let tool = host_identity::identity_path(&kept.key.tool);
        let question = kept
            .key
            .question
            .chars()
            .take(KEPT_QUESTION_CHARS)
            .collect::<String>();
        let ellipsis = if kept.key.question.chars().count() > KEPT_QUESTION_CHARS {
            "..."
        } else {
            ""
        };
        line(
            true,
            "kept answer",
            &format!(
                "`{tool} {question}{ellipsis}` answered {:?} this boot; runs reuse it until a reboot or a change of the binary (ask again: rm -r {})",
                kept.answer,
                probes.display()
            ),
        );
    }
    let digests = root.join(digest_cache::FOLDER);
    let count = std::fs::read_dir(&digests).map_or(0, |d| d.flatten().count());
    line(
        true,
        "input digests",
        &format!(
            "{count} kept in {}: reused only while a file's device, inode, size, mtime and ctime are unchanged and its last change is {} s older than its hashing (hash all again: rm -r {})",
            digests.display(),
            digest_cache::RACY_WINDOW.as_secs(),
            digests.display()
        ),
    );
}

/// The newest complete demo image in the cache, whatever its key.
fn built_demo_manifest() -> Option<std::path::PathBuf> {
    let images = crate::cache::images_root();
    let mut built: Vec<_> = std::fs::read_dir(images)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(".complete").is_file())
        .collect();
    built.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    built.pop().map(|p| p.join("image.toml"))
}

fn built_demo_kernel() -> Option<std::path::PathBuf> {
    let kernel = built_demo_manifest()?.parent()?.join("vmlinuz");
    kernel.is_file().then_some(kernel)
}
