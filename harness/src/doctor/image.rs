//! `bootgate doctor --image PATH`: boots an image once and says, line by line, what
//! is ready for bootgate and what is missing (guest agent and the commands bootgate
//! uses, panic reporting, crash dump settings, test signing, the manifest's paths).
//!
//! The in-guest checks are shell commands run through the agent; for Windows they
//! are one PowerShell probe that reports language-independent data as JSON
//! ([`super::windows`]). Each check prints `ok`, `FAIL` (a run would go wrong) or
//! `note` (worth knowing, not blocking).

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::agent::worker::{Answer, Request};
use crate::guest::{DumpFormat, LinuxProfile, OsFamily};
use crate::image::manifest::{Firmware, Manifest};
use crate::qemu::accel::{self, Accel, AccelChoice};
use crate::qemu::qmp::QmpMessage;
use crate::qemu::vm::{Signal, Vm, VmConfig, VmDir};
use crate::qemu::{self, QemuTools};

use super::windows;

/// Console lines quoted when the agent never answers.
const CONSOLE_TAIL_LINES: usize = 10;
/// Time one in-guest check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the Windows probe may take: a PowerShell cold start plus WMI queries take
/// seconds under KVM and can take minutes under TCG (issue 16, exec budgets).
const WINDOWS_PROBE_TIMEOUT: Duration = Duration::from_secs(300);
/// Agent commands bootgate's steps use.
const NEEDED_COMMANDS: &[&str] = &[
    "guest-sync-delimited",
    "guest-exec",
    "guest-exec-status",
    "guest-file-open",
    "guest-file-write",
    "guest-file-read",
    "guest-file-close",
    "guest-shutdown",
];

/// One line of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Ok,
    Fail,
    Note,
}

struct Report<'a> {
    out: &'a mut dyn Write,
    ok: bool,
}

impl Report<'_> {
    fn line(&mut self, level: Level, what: &str, text: &str) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Fail => "FAIL",
            Level::Note => "note",
        };
        self.ok &= level != Level::Fail;
        let _ = writeln!(self.out, "{tag} {what}: {text}");
    }
}

/// An in-guest check: the argv the agent runs and how to read its output.
struct GuestCheck {
    what: &'static str,
    argv: Vec<String>,
    judge: fn(i64, &str) -> (Level, String),
}

/// Boots the image at `path` and reports; true when nothing blocks a run. The
/// manifest's files are confined to its folder by `policy`, as in a run.
pub fn run(
    path: &Path,
    choice: AccelChoice,
    policy: crate::confine::PathPolicy,
    out: &mut dyn Write,
) -> bool {
    let mut report = Report { out, ok: true };
    let manifest_path = if path.is_dir() {
        path.join("image.toml")
    } else {
        path.to_path_buf()
    };
    let manifest = match Manifest::load_with(&manifest_path, policy, true) {
        Ok(m) => {
            let kind = match m.os {
                OsFamily::Linux => format!("linux, profile {}", m.linux_profile.as_str()),
                OsFamily::Windows => "windows".to_string(),
            };
            report.line(
                Level::Ok,
                "manifest",
                &format!("{} ({kind})", manifest_path.display()),
            );
            m
        }
        Err(e) => {
            report.line(Level::Fail, "manifest", &e.to_string());
            return false;
        }
    };
    static_checks(&manifest, &mut report);
    let tools = QemuTools::from_env();
    if let Err(e) = qemu::version(&tools.system) {
        report.line(Level::Fail, "qemu", &e.to_string());
        return false;
    }
    let decision = accel::decide(choice, &tools.system, manifest.boot.kernel.as_deref());
    report.line(
        Level::Ok,
        "accelerator",
        decision
            .notice
            .as_deref()
            .unwrap_or(decision.accel.as_str()),
    );
    if manifest.machine.hyperv && decision.accel != Accel::Kvm {
        report.line(
            Level::Note,
            "hyper-v",
            "enlightenments are KVM-only: under TCG a bugcheck code comes from the dump, not the panic event",
        );
    }
    boot_checks(&manifest, &tools, decision.accel, &mut report);
    report.ok
}

/// What can be said without booting.
fn static_checks(manifest: &Manifest, report: &mut Report) {
    let firmware = match manifest.boot.firmware {
        Firmware::Bios => "BIOS (SeaBIOS)".to_string(),
        Firmware::Uefi => format!(
            "UEFI {}{}",
            manifest
                .boot
                .uefi_code
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if manifest.boot.secure_boot {
                ", Secure Boot"
            } else {
                ""
            }
        ),
    };
    report.line(Level::Ok, "firmware", &firmware);
    if manifest.machine.tpm {
        match qemu::find_in_path(crate::qemu::tpm::SWTPM) {
            Some(p) => report.line(Level::Ok, "tpm", &format!("swtpm at {}", p.display())),
            None => report.line(
                Level::Fail,
                "tpm",
                "machine.tpm is set but swtpm is not installed: `apt-get install swtpm swtpm-tools`",
            ),
        }
    }
    if manifest.os == OsFamily::Windows && manifest.guest.dump_format != DumpFormat::WinDmp {
        report.line(
            Level::Note,
            "dump format",
            "guest.dump_format is not \"win-dmp\": host-side dumps will not open in WinDbg",
        );
    }
    if manifest.os == OsFamily::Linux {
        match crate::image::kernel::headers(manifest) {
            Ok((release, dir)) => report.line(
                Level::Ok,
                "kernel headers",
                &format!("{release} at {}: `source` drivers build", dir.display()),
            ),
            Err(why) => report.line(
                Level::Note,
                "kernel headers",
                &format!("`source` drivers cannot be built: {why}"),
            ),
        }
    }
    if manifest.guest.safe_mode_append.is_none() && manifest.boot.kernel.is_some() {
        report.line(
            Level::Note,
            "rescue boot",
            "guest.safe_mode_append is not set: `recover` steps cannot select a rescue boot",
        );
    }
}

/// Boots the image on a throwaway overlay and runs the in-guest checks.
fn boot_checks(manifest: &Manifest, tools: &QemuTools, accel: Accel, report: &mut Report) {
    let logs = match crate::util::private_tempdir("bootgate-doctor-") {
        Ok(d) => d,
        Err(e) => {
            report.line(
                Level::Fail,
                "boot",
                &format!("cannot create a temp folder: {e}"),
            );
            return;
        }
    };
    let vmdir = match VmDir::create(&tools.img, manifest, None, None) {
        Ok(d) => d,
        Err(e) => {
            report.line(Level::Fail, "boot", &e.to_string());
            return;
        }
    };
    let config = VmConfig {
        data_disk: None,
        qemu_binary: &tools.system,
        qemu_img: &tools.img,
        manifest,
        accel,
        extra_append: None,
        sandbox: tools.sandbox,
        artifacts_dir: logs.path(),
        incoming: None,
        log_suffix: String::new(),
    };
    let mut vm = match Vm::start(&config, &vmdir.layout) {
        Ok(vm) => vm,
        Err(e) => {
            report.line(Level::Fail, "boot", &format!("QEMU did not start: {e}"));
            return;
        }
    };
    let console_tail = |vm: &Vm| crate::util::tail_lines(&vm.console_path, CONSOLE_TAIL_LINES);
    let started = Instant::now();
    match ask(&mut vm, Request::WaitReady, manifest.ready.timeout) {
        Ok(_) => report.line(
            Level::Ok,
            "guest agent",
            &format!(
                "answered {:.1} s after power-on",
                started.elapsed().as_secs_f64()
            ),
        ),
        Err(why) => {
            let tail = console_tail(&vm);
            report.line(
                Level::Fail,
                "guest agent",
                &format!(
                    "{why}: install and start qemu-ga in the image (Windows: the QEMU-GA service from the virtio-win MSI, with the vioserial driver); console tail:\n{tail}"
                ),
            );
            return;
        }
    }
    match ask(&mut vm, Request::Commands, CHECK_TIMEOUT) {
        Ok(Answer::Commands(info)) => {
            if info.version.is_empty() {
                report.line(Level::Note, "agent version", "guest-info names no version");
            } else {
                report.line(
                    Level::Ok,
                    "agent version",
                    &format!("qemu-ga {}", info.version),
                );
            }
            let missing: Vec<&str> = NEEDED_COMMANDS
                .iter()
                .copied()
                .filter(|c| !info.enabled.iter().any(|e| e == c))
                .collect();
            if missing.is_empty() {
                report.line(
                    Level::Ok,
                    "agent commands",
                    "every command bootgate uses is enabled",
                );
            } else {
                report.line(
                    Level::Fail,
                    "agent commands",
                    &format!(
                        "disabled or missing: {} (check qemu-ga's --block-rpcs / allow list)",
                        missing.join(", ")
                    ),
                );
            }
        }
        Ok(other) => report.line(
            Level::Fail,
            "agent commands",
            &format!("unexpected answer {other:?}"),
        ),
        Err(why) => report.line(Level::Fail, "agent commands", &why),
    }
    if manifest.os == OsFamily::Windows {
        windows_probe(&mut vm, manifest, accel, report);
    }
    for check in guest_checks(manifest) {
        let request = Request::Exec {
            argv: check.argv.clone(),
            env: Vec::new(),
            timeout: CHECK_TIMEOUT,
        };
        match ask(&mut vm, request, CHECK_TIMEOUT * 2) {
            Ok(Answer::Exited(status)) => {
                let output = String::from_utf8_lossy(&status.stdout).trim().to_string();
                let (level, text) =
                    (check.judge)(i64::from(status.exit_code.unwrap_or(-1)), &output);
                report.line(level, check.what, &text);
            }
            Ok(other) => report.line(
                Level::Fail,
                check.what,
                &format!("unexpected answer {other:?}"),
            ),
            Err(why) => report.line(Level::Fail, check.what, &why),
        }
    }
    vm.stop();
}

/// Runs the Windows probe and reports what it found, line by line.
fn windows_probe(vm: &mut Vm, manifest: &Manifest, accel: Accel, report: &mut Report) {
    let dirs: Vec<(&'static str, &str)> = [
        ("drivers_dir", manifest.guest.drivers_dir.as_deref()),
        ("content_dir", manifest.guest.content_dir.as_deref()),
    ]
    .into_iter()
    .filter_map(|(field, dir)| dir.map(|d| (field, d)))
    .collect();
    let paths: Vec<&str> = dirs.iter().map(|(_, d)| *d).collect();
    let request = Request::Exec {
        argv: windows::probe_argv(&paths),
        env: Vec::new(),
        timeout: WINDOWS_PROBE_TIMEOUT,
    };
    let stdout = match ask(vm, request, WINDOWS_PROBE_TIMEOUT + CHECK_TIMEOUT) {
        Ok(Answer::Exited(status)) => {
            let out = String::from_utf8_lossy(&status.stdout).into_owned();
            if status.exit_code != Some(0) {
                let err = String::from_utf8_lossy(&status.stderr);
                report.line(
                    Level::Fail,
                    "windows probe",
                    &format!(
                        "powershell exited with {:?}: {}",
                        status.exit_code,
                        windows::quoted(&err)
                    ),
                );
            }
            out
        }
        Ok(other) => {
            report.line(
                Level::Fail,
                "windows probe",
                &format!("unexpected answer {other:?}"),
            );
            return;
        }
        Err(why) => {
            report.line(Level::Fail, "windows probe", &why);
            return;
        }
    };
    let probe = match windows::Probe::parse(&stdout) {
        Ok(p) => p,
        Err(e) => {
            report.line(Level::Fail, "windows probe", &e.to_string());
            return;
        }
    };
    let ctx = windows::Context::of(manifest, accel);
    for (level, what, text) in windows::judge(&probe, &ctx) {
        report.line(level, what, &text);
    }
    for (field, dir) in dirs {
        let (level, what, text) = windows::judge_dir(&probe, field, dir);
        report.line(level, what, &text);
    }
}

/// Submits `request` and waits for its answer, or QEMU's end, or `timeout`.
fn ask(vm: &mut Vm, request: Request, timeout: Duration) -> Result<Answer, String> {
    let id = vm.agent().submit(request);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            vm.agent().cancel_all();
            return Err(format!("no answer within {timeout:?}"));
        }
        match vm.signals.recv_timeout(left) {
            Ok(Signal::Agent(reply)) if reply.id == id => {
                return reply.result.map_err(|e| e.to_string());
            }
            Ok(Signal::Qmp(QmpMessage::Event(e)))
                if matches!(e.name.as_str(), "GUEST_PANICKED" | "SHUTDOWN") =>
            {
                return Err(format!("the guest stopped ({})", e.name));
            }
            Ok(Signal::Qmp(QmpMessage::Closed(_))) | Err(RecvTimeoutError::Disconnected) => {
                return Err("QEMU went away".into());
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// What the distro profile's install needs in the guest: kmod's tools, a boot-time
/// reader of modules-load.d, the initramfs tool the manifest names, and the
/// kernel release the host builds `source` drivers for.
fn distro_checks(
    manifest: &Manifest,
    checks: &mut Vec<GuestCheck>,
    shell: &dyn Fn(String) -> Vec<String>,
) {
    checks.push(GuestCheck {
        what: "depmod, modprobe, modinfo",
        argv: shell("for t in depmod modprobe modinfo; do command -v $t || { echo \"$t is missing\"; exit 1; }; done".into()),
        judge: |code, out| {
            if code == 0 {
                (Level::Ok, out.replace('\n', ", "))
            } else {
                (Level::Fail, format!("{out}: install kmod in the image; the distro profile installs drivers with depmod and modprobe"))
            }
        },
    });
    checks.push(GuestCheck {
        what: "modules-load.d",
        argv: shell("for f in /lib/systemd/systemd-modules-load /usr/lib/systemd/systemd-modules-load /etc/init.d/kmod; do [ -x \"$f\" ] && echo \"$f\" && exit 0; done; exit 1".into()),
        judge: |code, out| {
            if code == 0 {
                (Level::Ok, format!("{out} loads /etc/modules-load.d at every boot"))
            } else {
                (Level::Fail, "nothing in the image reads /etc/modules-load.d at boot (systemd-modules-load or the kmod init script): installed drivers would not load at boot".into())
            }
        },
    });
    match &manifest.guest.initramfs_update {
        Some(command) => checks.push(GuestCheck {
            what: "initramfs tool",
            argv: shell(format!(
                "set -- {command}; command -v \"$1\" || {{ echo \"$1 is missing\"; exit 1; }}"
            )),
            judge: |code, out| {
                if code == 0 {
                    (Level::Ok, format!("{out}: `initramfs = true` installs rebuild the guest's initramfs"))
                } else {
                    (Level::Fail, format!("guest.initramfs_update names a command the guest lacks ({out})"))
                }
            },
        }),
        None => checks.push(GuestCheck {
            what: "initramfs tool",
            argv: shell("command -v update-initramfs || command -v dracut || true".into()),
            judge: |_, out| {
                let found = if out.is_empty() { "none found".to_string() } else { out.to_string() };
                (Level::Note, format!("guest.initramfs_update is not set ({found}): `initramfs = true` installs are refused"))
            },
        }),
    }
    let release = manifest.kernel_release();
    checks.push(GuestCheck {
        what: "kernel release",
        argv: shell(match &release {
            Some(r) => format!(
                "r=$(uname -r); echo \"$r\"; [ \"$r\" = {} ] || exit 1",
                crate::util::shell_quote(r)
            ),
            None => "uname -r; exit 2".into(),
        }),
        judge: |code, out| match code {
            0 => (Level::Ok, format!("{out}, as the manifest says: drivers are checked against it before boot")),
            2 => (Level::Note, format!("the guest runs {out}; add [kernel] release = \"{out}\" (and headers) to the manifest so `source` drivers build for it and mismatches are caught before boot")),
            _ => (Level::Fail, format!("the guest runs {out}, not the manifest's [kernel] release: fix the manifest")),
        },
    });
}

/// The in-guest checks for the manifest's OS.
fn guest_checks(manifest: &Manifest) -> Vec<GuestCheck> {
    let mut checks = Vec::new();
    let shell = |line: String| {
        let mut argv = manifest.guest.shell.clone();
        argv.push(line);
        argv
    };
    let program = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let dirs = [
        ("drivers_dir", manifest.guest.drivers_dir.clone()),
        ("content_dir", manifest.guest.content_dir.clone()),
    ];
    match manifest.os {
        OsFamily::Linux => {
            checks.push(GuestCheck {
                what: "pvpanic",
                argv: shell("for d in /sys/bus/platform/drivers/pvpanic-mmio/QEMU0001:* /sys/bus/pci/drivers/pvpanic-pci/0000:*; do [ -e \"$d\" ] && echo \"$d\" && exit 0; done; exit 1".into()),
                judge: |code, out| {
                    if code == 0 {
                        (Level::Ok, format!("driver bound ({out}): panics reach QEMU as events"))
                    } else {
                        (Level::Fail, "no pvpanic driver bound: load the pvpanic-mmio/pvpanic-pci module, or crashes are seen only on the console".into())
                    }
                },
            });
            checks.push(GuestCheck {
                what: "panic settings",
                argv: program(&["/bin/cat", "/proc/cmdline"]),
                judge: |_, out| {
                    let words: Vec<&str> = out.split_whitespace().collect();
                    if words.contains(&"oops=panic") {
                        (Level::Ok, "oops=panic: an oops becomes a panic event".into())
                    } else {
                        (Level::Note, format!("kernel command line has no oops=panic ({out}): an oops that does not panic is seen only on the console"))
                    }
                },
            });
            for (field, dir) in dirs {
                // A distro drivers_dir names the running kernel ({release}); the
                // install script resolves and creates it.
                if let Some(dir) = dir.filter(|d| !d.contains("{release}")) {
                    checks.push(GuestCheck {
                        what: field,
                        argv: shell(format!(
                            "if test -d {0}; then test -w {0} && echo {0}; else echo {0}; exit 2; fi",
                            crate::util::shell_quote(&dir)
                        )),
                        judge: |code, out| match code {
                            0 => (Level::Ok, format!("{out} exists and is writable")),
                            2 => (Level::Note, format!("{out} does not exist yet: bootgate creates it before the first write")),
                            _ => (Level::Fail, format!("{out} is not writable in the guest")),
                        },
                    });
                }
            }
            if manifest.linux_profile == LinuxProfile::Distro {
                distro_checks(manifest, &mut checks, &shell);
            }
        }
        // Windows is checked by one probe (`windows_probe`), not by argv checks.
        OsFamily::Windows => {}
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(checks: &[GuestCheck], what: &str, code: i64, out: &str) -> Level {
        let check = checks.iter().find(|c| c.what == what).unwrap();
        (check.judge)(code, out).0
    }

    #[test]
    fn windows_is_checked_by_the_probe_not_by_text_checks() {
        // The pnputil/bcdedit/reg text checks are gone (localized output, and
        // `pnputil /enum-devices /deviceid` missing on Windows 10 and Server): the
        // one probe of `super::windows` replaces them, tested there.
        let dir = tempfile::tempdir().unwrap();
        crate::testing::images::write_windows_image(
            dir.path(),
            crate::testing::images::WINDOWS_TEMPLATE,
        );
        let m = Manifest::load(&dir.path().join("image.toml")).unwrap();
        assert!(guest_checks(&m).is_empty());
    }

    #[test]
    fn linux_judges() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::write(
            dir.path().join("image.toml"),
            include_str!("../../../images/demo/image.toml"),
        )
        .unwrap();
        let m = Manifest::load(&dir.path().join("image.toml")).unwrap();
        let checks = guest_checks(&m);
        assert_eq!(
            judge(&checks, "panic settings", 0, "console=ttyS0 oops=panic"),
            Level::Ok
        );
        assert_eq!(
            judge(&checks, "panic settings", 0, "console=ttyS0 oops=panicky"),
            Level::Note
        );
        assert_eq!(judge(&checks, "pvpanic", 1, ""), Level::Fail);
        assert!(checks.iter().any(|c| c.what == "content_dir"));
        assert_eq!(judge(&checks, "content_dir", 2, "/x"), Level::Note);
        assert!(
            !checks.iter().any(|c| c.what == "modules-load.d"),
            "the demo profile has its registry"
        );
        // The same image as a distribution's, said to run a given kernel.
        let distro = include_str!("../../../images/demo/image.toml")
            .replace("drivers_dir = \"/system/drivers\"\n", "")
            .replace("drivers_registry = \"/system/etc/drivers.conf\"\n", "")
            + "\n[kernel]\nrelease = \"6.1.0-28-cloud-amd64\"\n";
        std::fs::write(dir.path().join("image.toml"), distro).unwrap();
        let m = Manifest::load(&dir.path().join("image.toml")).unwrap();
        let checks = guest_checks(&m);
        assert_eq!(judge(&checks, "modules-load.d", 1, ""), Level::Fail);
        assert_eq!(
            judge(&checks, "depmod, modprobe, modinfo", 1, "depmod is missing"),
            Level::Fail
        );
        assert_eq!(judge(&checks, "initramfs tool", 0, ""), Level::Note);
        assert_eq!(
            judge(&checks, "kernel release", 1, "6.1.0-9-amd64"),
            Level::Fail
        );
        assert_eq!(
            judge(&checks, "kernel release", 0, "6.1.0-28-cloud-amd64"),
            Level::Ok
        );
        let release = checks.iter().find(|c| c.what == "kernel release").unwrap();
        assert!(release
            .argv
            .last()
            .unwrap()
            .contains("6.1.0-28-cloud-amd64"));
    }
}
