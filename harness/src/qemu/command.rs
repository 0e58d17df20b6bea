//! The QEMU command line for one VM, built from an image manifest and the VM's
//! private folder. Kept as data (a `Vec<String>`) so it can be recorded in run.json
//! and replayed by hand.

use std::path::{Path, PathBuf};

use crate::guest::DumpFormat;
use crate::image::manifest::{Firmware, Manifest};
use crate::qemu::accel::Accel;

/// The guest-agent port name qemu-ga looks for (same on Linux and Windows).
pub(crate) const AGENT_PORT_NAME: &str = "org.qemu.guest_agent.0";

/// Where one VM's sockets and overlay live: a private 0700 folder.
#[derive(Debug, Clone)]
pub struct VmLayout {
    pub dir: PathBuf,
    pub qmp_socket: PathBuf,
    pub serial_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub overlay: PathBuf,
    /// This VM's copy of the UEFI variable store (UEFI images only).
    pub uefi_vars: PathBuf,
    /// The software TPM's state folder and control socket (TPM images only).
    pub tpm_state: PathBuf,
    pub tpm_socket: PathBuf,
}

impl VmLayout {
    pub fn in_dir(dir: &Path) -> VmLayout {
        VmLayout {
            dir: dir.to_path_buf(),
            qmp_socket: dir.join("qmp.sock"),
            serial_socket: dir.join("serial.sock"),
            agent_socket: dir.join("agent.sock"),
            overlay: dir.join("system.qcow2"),
            uefi_vars: dir.join("uefi-vars.fd"),
            tpm_state: dir.join("tpm"),
            tpm_socket: dir.join("swtpm.sock"),
        }
    }
}

/// QEMU option values are comma-separated; a literal comma in a path is doubled.
fn opt_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// A socket chardev QEMU listens on. `wait=off`: QEMU starts without a client; the
/// VM is started paused (`-S`), so nothing is printed before bootgate connects.
fn socket_chardev(id: &str, path: &Path) -> String {
    format!("socket,id={id},path={},server=on,wait=off", opt_path(path))
}

/// Where guest RAM lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestRam {
    /// QEMU's own anonymous memory (every cold boot).
    Anonymous,
    /// A file mapped as guest RAM. `shared`: writes go to the file (the VM that saves
    /// a state boots this way, so its RAM is on disk when it stops). Not shared: a
    /// private copy-on-write mapping, so any number of restored VMs start from the
    /// same file at once, fault in only the pages they touch, and never change it.
    File { path: PathBuf, shared: bool },
}

/// seccomp confinement for QEMU running a guest under test (which is hostile by
/// definition): no obsolete syscalls, no privilege changes, no forking or exec, no
/// scheduler/affinity games.
pub(crate) const SANDBOX_GUEST: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// The same for the VM that saves a ready state of the unmodified base image: it
/// streams its device state through `exec:cat`, so it may spawn.
pub(crate) const SANDBOX_SAVER: &str =
    "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny";

/// How QEMU confines itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// This QEMU has no seccomp support.
    Off,
    /// [`SANDBOX_GUEST`].
    Guest,
    /// [`SANDBOX_SAVER`].
    Saver,
}

impl Sandbox {
    /// The guest confinement when QEMU supports it.
    pub(crate) fn guest(supported: bool) -> Sandbox {
        if supported {
            Sandbox::Guest
        } else {
            Sandbox::Off
        }
    }
}

/// The memory backend's id; the RAM block of a saved state is named after it, so a
/// save and its restores must use the same id.
const RAM_BACKEND_ID: &str = "ram0";

/// Hyper-V enlightenments for Windows guests under KVM: the timer, APIC and
/// spinlock ones Windows expects on a hypervisor, and hv-crash, which makes Windows
/// report its bugcheck code and parameters in the panic event.
pub(crate) const HYPERV_FLAGS: &str = "hv-relaxed,hv-vapic,hv-spinlocks=0x1fff,hv-time,hv-vpindex,hv-synic,hv-stimer,hv-reset,hv-frequencies,hv-runtime,hv-crash";

/// Whether the guest gets the Hyper-V crash MSRs (`hv-crash`, in [`HYPERV_FLAGS`]):
/// KVM with the manifest's `machine.hyperv`. What decides the crash-capture model.
pub(crate) fn has_hv_crash(manifest: &Manifest, accel: Accel) -> bool {
    accel == Accel::Kvm && manifest.machine.hyperv
}

/// Builds the argv (binary first) for one VM.
pub fn build(
    binary: &str,
    manifest: &Manifest,
    accel: Accel,
    layout: &VmLayout,
    extra_append: Option<&str>,
    ram: &GuestRam,
    sandbox: Sandbox,
) -> Vec<String> {
    let mut argv: Vec<String> = vec![binary.into()];
    let mut push = |items: &[&str]| argv.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &format!("bootgate-{}", manifest.name)]);
    push(&["-accel", accel.as_str()]);
    if accel == Accel::Kvm {
        if has_hv_crash(manifest, accel) {
            push(&["-cpu", &format!("host,{HYPERV_FLAGS}")]);
        } else {
            push(&["-cpu", "host"]);
        }
    }
    let memory_mib = manifest.machine.memory_mib;
    let mut machine = manifest.machine.machine_type.clone();
    if manifest.boot.secure_boot {
        // Secure Boot's variable store is only protected from the guest OS when
        // the firmware runs in SMM.
        machine.push_str(",smm=on");
    }
    match ram {
        GuestRam::Anonymous => {
            push(&["-machine", &machine]);
        }
        GuestRam::File { path, shared } => {
            push(&[
                "-machine",
                &format!("{machine},memory-backend={RAM_BACKEND_ID}"),
            ]);
            push(&[
                "-object",
                &format!(
                    "memory-backend-file,id={RAM_BACKEND_ID},size={memory_mib}M,mem-path={},share={}",
                    opt_path(path),
                    if *shared { "on" } else { "off" }
                ),
            ]);
        }
    }
    push(&["-m", &memory_mib.to_string()]);
    push(&["-smp", &manifest.machine.cpus.to_string()]);
    // No defaults, no user config, no display: the VM has exactly what is listed here.
    // No network either: -nodefaults adds no NIC, and bootgate adds none.
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    match sandbox {
        Sandbox::Off => {}
        Sandbox::Guest => push(&["-sandbox", SANDBOX_GUEST]),
        Sandbox::Saver => push(&["-sandbox", SANDBOX_SAVER]),
    }
    // Start paused: bootgate connects QMP and the console first, then sends `cont`.
    push(&["-S"]);
    if manifest.boot.firmware == Firmware::Uefi {
        if manifest.boot.secure_boot {
            push(&["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        }
        if let Some(code) = &manifest.boot.uefi_code {
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    opt_path(code)
                ),
            ]);
        }
        // The VM's own copy: the template stays as installed.
        push(&[
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=1,file={}",
                opt_path(&layout.uefi_vars)
            ),
        ]);
    }
    if manifest.machine.tpm {
        push(&[
            "-chardev",
            &format!("socket,id=tpmchr0,path={}", opt_path(&layout.tpm_socket)),
            "-tpmdev",
            "emulator,id=tpm0,chardev=tpmchr0",
            "-device",
            "tpm-tis,tpmdev=tpm0",
        ]);
    }
    if let Some(kernel) = &manifest.boot.kernel {
        push(&["-kernel", &kernel.display().to_string()]);
        if let Some(initrd) = &manifest.boot.initrd {
            push(&["-initrd", &initrd.display().to_string()]);
        }
        let mut append = manifest.boot.append.clone();
        if let Some(extra) = extra_append {
            append = format!("{append} {extra}").trim().to_string();
        }
        push(&["-append", &append]);
    }
    push(&[
        "-blockdev",
        &format!(
            "driver=qcow2,node-name=system0,file.driver=file,file.filename={}",
            opt_path(&layout.overlay)
        ),
        "-device",
        "virtio-blk-pci,drive=system0",
    ]);
    push(&["-chardev", &socket_chardev("qmp0", &layout.qmp_socket)]);
    push(&["-mon", "chardev=qmp0,mode=control"]);
    push(&[
        "-chardev",
        &socket_chardev("serial0", &layout.serial_socket),
    ]);
    push(&["-serial", "chardev:serial0"]);
    push(&["-chardev", &socket_chardev("agent0", &layout.agent_socket)]);
    push(&["-device", "virtio-serial-pci"]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=agent0,name={AGENT_PORT_NAME}"),
    ]);
    // A display adapter (shown nowhere: -display none) so screendump can capture what
    // the guest's screen shows when it crashes or hangs.
    push(&["-device", "VGA"]);
    // pvpanic reports guest panics as QMP events; pausing keeps the crashed guest
    // inspectable (screenshot, dump) until bootgate decides what to do.
    push(&["-device", "pvpanic"]);
    if manifest.guest.dump_format == DumpFormat::WinDmp {
        // QEMU writes a WinDbg dump from the guest's own kernel debugger data,
        // which the guest's fwcfg driver hands over through this device.
        push(&["-device", "vmcoreinfo"]);
    }
    push(&["-action", "panic=pause"]);
    argv
}

/// Options that attach `path` (a qcow2 file) as a second virtio disk, after the
/// system disk so the guest names it second (/dev/vdb).
pub(crate) fn data_disk(path: &Path) -> Vec<String> {
    vec![
        "-blockdev".into(),
        format!(
            "driver=qcow2,node-name=data0,file.driver=file,file.filename={}",
            opt_path(path)
        ),
        "-device".into(),
        "virtio-blk-pci,drive=data0".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path) -> Manifest {
        let text = include_str!("../../../images/demo/image.toml");
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        std::fs::write(dir.join("image.toml"), text).unwrap();
        Manifest::load(&dir.join("image.toml")).unwrap()
    }

    #[test]
    fn command_line_has_the_safety_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        let layout = VmLayout::in_dir(&dir.path().join("vm,1"));
        let argv = build(
            "qemu-system-x86_64",
            &m,
            Accel::Tcg,
            &layout,
            Some("bootgate.safe=1"),
            &GuestRam::Anonymous,
            Sandbox::Guest,
        );
        let joined = argv.join(" ");
        assert_eq!(argv[0], "qemu-system-x86_64");
        assert!(joined.contains("-accel tcg"));
        assert!(joined.contains("-action panic=pause"));
        assert!(joined.contains("-device pvpanic"));
        assert!(joined.contains(" -S "));
        assert!(
            joined.contains("vm,,1/system.qcow2"),
            "commas in paths are escaped: {joined}"
        );
        let append = &argv[argv.iter().position(|a| a == "-append").unwrap() + 1];
        // The manifest's own parameters, then the extra ones.
        assert_eq!(
            *append,
            format!("{} bootgate.safe=1", m.boot.append),
            "{append}"
        );
        assert!(!joined.contains("-cpu host"));
        assert!(
            joined.contains(&format!("-sandbox {SANDBOX_GUEST}")),
            "{joined}"
        );
        assert!(
            !joined.contains("-netdev") && !joined.contains("-nic"),
            "no network"
        );
        let kvm = build(
            "q",
            &m,
            Accel::Kvm,
            &layout,
            None,
            &GuestRam::Anonymous,
            Sandbox::Off,
        )
        .join(" ");
        assert!(kvm.contains("-accel kvm -cpu host"));
        assert!(!joined.contains("memory-backend"), "{joined}");
    }

    #[test]
    fn uefi_secure_boot_tpm_and_hyperv_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = manifest(dir.path());
        let layout = VmLayout::in_dir(&dir.path().join("vm"));
        let plain = build(
            "q",
            &m,
            Accel::Tcg,
            &layout,
            None,
            &GuestRam::Anonymous,
            Sandbox::Off,
        )
        .join(" ");
        assert!(
            !plain.contains("pflash") && !plain.contains("tpm"),
            "{plain}"
        );
        m.boot.firmware = Firmware::Uefi;
        m.boot.uefi_code = Some(PathBuf::from("/fw/CODE.fd"));
        m.boot.uefi_vars = Some(PathBuf::from("/fw/VARS.fd"));
        let uefi = build(
            "q",
            &m,
            Accel::Tcg,
            &layout,
            None,
            &GuestRam::Anonymous,
            Sandbox::Off,
        )
        .join(" ");
        assert!(
            uefi.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"),
            "{uefi}"
        );
        let vars = format!("unit=1,file={}", layout.uefi_vars.display());
        assert!(
            uefi.contains(&vars),
            "the VM's copy, not the template: {uefi}"
        );
        assert!(!uefi.contains("/fw/VARS.fd") && !uefi.contains("smm=on"));
        m.boot.secure_boot = true;
        m.machine.machine_type = "q35".into();
        m.machine.tpm = true;
        m.machine.hyperv = true;
        let secure = build(
            "q",
            &m,
            Accel::Tcg,
            &layout,
            None,
            &GuestRam::Anonymous,
            Sandbox::Off,
        )
        .join(" ");
        assert!(secure.contains("-machine q35,smm=on"), "{secure}");
        assert!(secure.contains("driver=cfi.pflash01,property=secure,value=on"));
        let tpm = format!(
            "socket,id=tpmchr0,path={} -tpmdev emulator,id=tpm0,chardev=tpmchr0 -device tpm-tis,tpmdev=tpm0",
            layout.tpm_socket.display()
        );
        assert!(secure.contains(&tpm), "{secure}");
        assert!(!secure.contains("hv-crash"), "no Hyper-V flags under TCG");
        let kvm = build(
            "q",
            &m,
            Accel::Kvm,
            &layout,
            None,
            &GuestRam::Anonymous,
            Sandbox::Off,
        )
        .join(" ");
        assert!(kvm.contains(&format!("-cpu host,{HYPERV_FLAGS}")), "{kvm}");
        assert!(!kvm.contains("vmcoreinfo"));
        m.guest.dump_format = DumpFormat::WinDmp;
        let windbg = build(
            "q",
            &m,
            Accel::Kvm,
            &layout,
            None,
            &GuestRam::Anonymous,
            Sandbox::Off,
        )
        .join(" ");
        assert!(windbg.contains("-device vmcoreinfo"), "{windbg}");
    }

    #[test]
    fn file_backed_ram_names_one_backend_for_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        let layout = VmLayout::in_dir(dir.path());
        let ram = |shared| GuestRam::File {
            path: PathBuf::from("/cache/st,ate/ram.mem"),
            shared,
        };
        let saving = build("q", &m, Accel::Tcg, &layout, None, &ram(true), Sandbox::Off).join(" ");
        assert!(
            saving.contains("-machine pc,memory-backend=ram0"),
            "{saving}"
        );
        assert!(
            saving.contains(
                "-object memory-backend-file,id=ram0,size=256M,mem-path=/cache/st,,ate/ram.mem,share=on"
            ),
            "{saving}"
        );
        let restoring = build(
            "q",
            &m,
            Accel::Tcg,
            &layout,
            None,
            &ram(false),
            Sandbox::Off,
        )
        .join(" ");
        assert!(restoring.contains("share=off"), "{restoring}");
        assert!(!restoring.contains("share=on"), "{restoring}");
    }
}
