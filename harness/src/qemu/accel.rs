//! Choosing the accelerator. `/dev/kvm` opening is not enough: on some hosts a KVM
//! guest never gets past the firmware, and QEMU only falls back to TCG when KVM fails
//! to open. So `auto` boots a short probe under KVM and falls back to TCG unless the
//! probe prints on its serial console in time.

use std::path::Path;
use std::time::Duration;

use crate::qemu::process::ProcessGuard;
use crate::util::{wait_until, Waited};

/// Time a KVM probe gets to print its first serial byte. A healthy KVM guest prints
/// in well under a second; TCG needs about 1 s for the same kernel on these machines.
pub(crate) const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(6);
const PROBE_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccelChoice {
    /// Probe KVM with a short boot; use TCG if it does not work.
    #[default]
    Auto,
    /// Force KVM.
    Kvm,
    /// Force TCG (software emulation).
    Tcg,
}

/// The accelerator chosen and, when it is not what a user might expect, why.
#[derive(Debug, Clone)]
pub(crate) struct AccelDecision {
    pub accel: Accel,
    pub notice: Option<String>,
}

/// Resolves `choice`; `kernel` is the image's kernel (the probe boots it, since that is
/// what has been seen to hang) or None to probe with a one-sector boot disk.
pub(crate) fn decide(choice: AccelChoice, binary: &str, kernel: Option<&Path>) -> AccelDecision {
    match choice {
        AccelChoice::Kvm => AccelDecision {
            accel: Accel::Kvm,
            notice: None,
        },
        AccelChoice::Tcg => AccelDecision {
            accel: Accel::Tcg,
            notice: None,
        },
        AccelChoice::Auto => match probe_kvm(binary, kernel) {
            Ok(()) => AccelDecision {
                accel: Accel::Kvm,
                notice: None,
            },
            Err(why) => AccelDecision {
                accel: Accel::Tcg,
                notice: Some(format!(
                    "KVM unusable ({why}); using TCG (software emulation, slower)"
                )),
            },
        },
    }
}

/// [`decide`], with `auto`'s probe verdict kept under `cache_root` for as long as
/// nothing it depends on changes ([`super::accel_cache`]): only the first run after
/// a boot, a QEMU change or a new probe kernel pays for the probe.
pub(crate) fn decide_kept(
    choice: AccelChoice,
    binary: &str,
    kernel: Option<&Path>,
    cache_root: &Path,
) -> AccelDecision {
    if choice != AccelChoice::Auto {
        return decide(choice, binary, kernel);
    }
    let Some(key) = super::accel_cache::ProbeKey::now(binary, kernel) else {
        return decide(choice, binary, kernel);
    };
    if let Some(kept) = super::accel_cache::load(cache_root, &key) {
        return AccelDecision {
            notice: kept.notice.map(|n| {
                format!(
                    "{n} [kept from this boot's probe; bootgate doctor says how to probe again]"
                )
            }),
            ..kept
        };
    }
    let decision = decide(choice, binary, kernel);
    super::accel_cache::store(cache_root, &key, &decision);
    decision
}

/// The KVM device every KVM guest opens.
const KVM_DEVICE: &str = "/dev/kvm";
/// Where group names are looked up (the owner group of `/dev/kvm`).
const GROUP_FILE: &str = "/etc/group";

/// Why `/dev/kvm` would not open, in one line; for an ordinary user without access,
/// the group that owns it and how to join it (udev gives it to group `kvm` on
/// Debian, Ubuntu and Fedora: systemd's 50-udev-default.rules).
fn kvm_open_error(e: &std::io::Error, device: &Path) -> String {
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return format!("{}: {e}", device.display());
    }
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(device).ok().map(|m| {
        let name = group_name(
            m.gid(),
            &std::fs::read_to_string(GROUP_FILE).unwrap_or_default(),
        );
        (m.gid(), name, m.mode())
    });
    format!("{}: {e}: {}", device.display(), kvm_access_advice(owner))
}

/// What to do about a `/dev/kvm` this user may not open, from its group (id and
/// name) and mode: join the group that may use it, or, where only root may (group
/// root, or no group access), have it given to group `kvm`.
fn kvm_access_advice(owner: Option<(u32, Option<String>, u32)>) -> String {
    match owner {
        Some((gid, Some(group), mode)) if gid != 0 && mode & 0o060 == 0o060 => format!(
            "this user is not in group `{group}`, which may use it (`sudo usermod -aG {group} $USER`, then log in again)"
        ),
        _ => "only root may use it here: have it given to group `kvm` (udev: KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\") and join that group".to_string(),
    }
}

/// The name of group `gid` in an `/etc/group` text.
fn group_name(gid: u32, group_file: &str) -> Option<String> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

/// Ok when a KVM guest prints on its serial console within [`KVM_PROBE_TIMEOUT`].
pub(crate) fn probe_kvm(binary: &str, kernel: Option<&Path>) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map_err(|e| kvm_open_error(&e, Path::new(KVM_DEVICE)))?;
    let dir = crate::util::private_tempdir("bootgate-kvm-probe-")
        .map_err(|e| format!("temp dir: {e}"))?;
    let serial = dir.path().join("serial.log");
    let mut argv: Vec<String> = [
        binary,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "128",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push("-serial".into());
    argv.push(format!("file:{}", serial.display()));
    match kernel {
        Some(kernel) => {
            argv.extend(["-kernel".into(), kernel.display().to_string()]);
            argv.extend(["-append".into(), "console=ttyS0 panic=-1".into()]);
        }
        None => {
            let disk = dir.path().join("probe.img");
            std::fs::write(&disk, probe_boot_sector()).map_err(|e| format!("probe disk: {e}"))?;
            argv.push("-drive".into());
            argv.push(format!("file={},format=raw,if=ide", disk.display()));
        }
    }
    let mut guard =
        ProcessGuard::spawn(&argv, &dir.path().join("qemu.log")).map_err(|e| e.to_string())?;
    let printed = wait_until(KVM_PROBE_TIMEOUT, PROBE_POLL, || {
        if std::fs::metadata(&serial).is_ok_and(|m| m.len() > 0) {
            return Some(Ok(()));
        }
        guard.try_wait().map(|status| {
            let log = std::fs::read_to_string(dir.path().join("qemu.log")).unwrap_or_default();
            Err(format!("probe QEMU exited ({status}): {}", log.trim()))
        })
    });
    drop(guard);
    match printed {
        Waited::Done(result) => result,
        Waited::TimedOut => Err(format!(
            "a KVM guest printed nothing within {} s",
            KVM_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// A 512-byte MBR whose code writes 'K' to COM1 and halts: the smallest guest that
/// proves the firmware handed over control.
fn probe_boot_sector() -> Vec<u8> {
    let code: [u8; 10] = [
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xB0, b'K', // mov al, 'K'
        0xEE, // out dx, al
        0xF4, // hlt
        0xEB, 0xFD, // jmp back to hlt
        0x90,
    ];
    let mut sector = vec![0u8; 512];
    sector[..code.len()].copy_from_slice(&code);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    sector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_access_to_dev_kvm_names_the_owning_group_and_how_to_join() {
        let groups = "root:x:0:\nkvm:x:993:alice\nrender:x:992:\n";
        assert_eq!(group_name(993, groups).as_deref(), Some("kvm"));
        assert_eq!(group_name(5, groups), None);
        assert_eq!(
            group_name(0, "garbage\n::\nroot:x:0:").as_deref(),
            Some("root")
        );
        let joinable = kvm_access_advice(Some((993, Some("kvm".into()), 0o20660)));
        assert!(
            joinable.contains("not in group `kvm`") && joinable.contains("usermod -aG kvm"),
            "{joinable}"
        );
        // Never "join root": a device only root may use needs the administrator.
        for root_only in [
            Some((0, Some("root".to_string()), 0o20660)),
            Some((993, Some("kvm".to_string()), 0o20600)),
            None,
        ] {
            let advice = kvm_access_advice(root_only.clone());
            assert!(
                advice.contains("only root may use it") && !advice.contains("usermod"),
                "{root_only:?}: {advice}"
            );
        }
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let why = kvm_open_error(&denied, Path::new("/nonexistent/kvm"));
        assert!(why.contains("group `kvm`"), "{why}");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let why = kvm_open_error(&missing, Path::new("/dev/kvm"));
        assert!(
            why.starts_with("/dev/kvm: ") && !why.contains("group"),
            "{why}"
        );
    }

    #[test]
    fn boot_sector_is_bootable_shape() {
        let s = probe_boot_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
    }

    #[test]
    fn forced_choices_skip_the_probe() {
        let d = decide(AccelChoice::Tcg, "/nonexistent/qemu", None);
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.notice.is_none());
        assert_eq!(
            decide(AccelChoice::Kvm, "/nonexistent/qemu", None).accel,
            Accel::Kvm
        );
    }

    #[test]
    fn auto_falls_back_to_tcg_with_a_reason_when_probe_cannot_run() {
        let d = decide(AccelChoice::Auto, "/nonexistent/qemu", None);
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.notice.unwrap().contains("using TCG"));
    }
}
