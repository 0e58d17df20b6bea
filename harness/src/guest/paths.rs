//! What a guest is, as an image manifest describes it: its OS family, the paths and
//! commands bootgate uses inside it, and the memory dump format QEMU writes for it.
//! These live with the guest profiles (not the manifest parser) so that the guest
//! layer needs nothing from the image layer.

use std::time::Duration;

use serde::Deserialize;

use super::windows;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OsFamily {
    Linux,
    Windows,
}

/// How a Linux guest loads its drivers at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinuxProfile {
    /// bootgate's demo guest: a `NAME PARAMS` registry file its init reads.
    Demo,
    /// A distribution (systemd or not): the module under `/lib/modules/<release>`,
    /// `depmod`, `modules-load.d` (names) and `modprobe.d` (options), `modprobe`.
    Distro,
}

impl LinuxProfile {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LinuxProfile::Demo => "demo",
            LinuxProfile::Distro => "distro",
        }
    }
}

/// What bootgate does to reboot the guest when the agent's `guest-shutdown` fails
/// (the guest's own shutdown command failed, say, as systemd's does without D-Bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootMethod {
    /// The agent only: its failure is a setup `error`, reported at once.
    #[default]
    Agent,
    /// Fall back to an ACPI power-button press (QMP `system_powerdown`) and a fresh
    /// power-on once the guest has shut itself down.
    Acpi,
    /// Fall back to a hard reset (QMP `system_reset`) after flushing the disks.
    Reset,
}

impl RebootMethod {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RebootMethod::Agent => "agent",
            RebootMethod::Acpi => "acpi",
            RebootMethod::Reset => "reset",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestPaths {
    /// How the guest runs a command line: the shell's argv prefix.
    pub shell: Vec<String>,
    /// Where driver modules go. Distro profile: may hold `{release}` (the running
    /// kernel's `uname -r`); default `/lib/modules/{release}/updates/bootgate`.
    pub drivers_dir: Option<String>,
    pub drivers_registry: Option<String>,
    pub content_dir: Option<String>,
    pub boot_count_file: Option<String>,
    /// Kernel parameters that select the rescue boot (skip third-party drivers).
    /// `{drivers}` stands for the installed drivers' names, comma-separated
    /// (`modprobe.blacklist={drivers}` on a distribution).
    pub safe_mode_append: Option<String>,
    /// How to reboot when the agent cannot: see [`RebootMethod`].
    #[serde(default)]
    pub reboot: RebootMethod,
    /// Distro profile: the guest's own command that rebuilds its initramfs
    /// (`update-initramfs -u`, `dracut -f`), run by `install_driver` with
    /// `initramfs = true` for drivers that must load before the root file system.
    pub initramfs_update: Option<String>,
    /// Offline recovery: where a normal boot mounts the system disk (the prefix of
    /// the guest paths above that live on it, such as content_dir). Windows: the
    /// guest's `%SystemRoot%` (default `C:\Windows`), which names the volume the NTFS
    /// helper edits and where it finds the dumps and event logs.
    pub system_root: Option<String>,
    /// Windows: the image whose helper VM edits this image's disk offline and
    /// copies its evidence out: a built-in image name or a path to an image.toml
    /// (default `ntfs-helper`, the demo guest with ntfs-3g).
    pub offline_helper: Option<String>,
    /// Offline recovery: the command line a helper VM of this image runs to mount a
    /// stopped VM's system disk, attached to the helper as its second disk.
    pub offline_mount: Option<String>,
    /// Where `offline_mount` puts that disk: the stopped VM's `system_root` there.
    pub offline_root: Option<String>,
    /// The command line that unmounts it again (flushing every write).
    pub offline_unmount: Option<String>,
    /// Memory dump format QEMU writes for this guest: "auto" (the default: for Linux
    /// the most compact kdump format this QEMU writes, see [`DumpFormat::resolve`];
    /// ELF for Windows), "elf" (gdb, crash), "kdump-zlib", "kdump-lzo",
    /// "kdump-snappy" (crash) or "win-dmp" (WinDbg; needs the guest's fwcfg driver).
    #[serde(default)]
    pub dump_format: DumpFormat,
    /// Windows: how drivers are installed, "service" (sc.exe; the default) or "pnp"
    /// (pnputil, from a driver package zip). See [`windows::DriverKind`].
    pub driver_kind: Option<windows::DriverKind>,
    /// Windows: when a service driver loads, "boot" (the default), "system" or "demand".
    pub service_start: Option<windows::ServiceStart>,
    /// Windows: the guest's minidump folder (default `%SystemRoot%\Minidump`).
    pub minidump_dir: Option<String>,
    /// Windows: the guest's memory dump file (default `%SystemRoot%\MEMORY.DMP`).
    pub memory_dump_path: Option<String>,
    /// Windows: the service type, "kernel" (the default) or "filesys" (file system
    /// drivers and minifilters).
    pub service_type: Option<windows::ServiceType>,
    /// Windows: the service's load-order group (`sc.exe group=`), such as
    /// "FSFilter Activity Monitor" for a minifilter.
    pub load_order_group: Option<String>,
    /// Windows: a minifilter's instance, altitude and flags (`[guest.minifilter]`).
    pub minifilter: Option<windows::Minifilter>,
    /// How long a small guest command bootgate runs (flush, file delete, reload,
    /// driver check) may take, unless its step says; default by OS family (see
    /// [`super::budget`]).
    #[serde(default, deserialize_with = "crate::suite::opt_command_timeout")]
    pub command_timeout: Option<Duration>,
    /// How long a driver install, uninstall or Driver Verifier setting may take,
    /// unless its step says; default by OS family (see [`super::budget`]).
    #[serde(default, deserialize_with = "crate::suite::opt_command_timeout")]
    pub install_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum DumpFormat {
    /// Not written in the manifest: the most compact format this QEMU writes that
    /// the guest's usual reader opens ([`DumpFormat::resolve`]).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "elf")]
    Elf,
    #[serde(rename = "win-dmp")]
    WinDmp,
    #[serde(rename = "kdump-zlib")]
    KdumpZlib,
    #[serde(rename = "kdump-lzo")]
    KdumpLzo,
    #[serde(rename = "kdump-snappy")]
    KdumpSnappy,
}

/// The kdump formats `auto` picks for a Linux guest, best first. All three are
/// makedumpfile's compressed format, which `crash VMLINUX DUMP` opens (Debian's
/// crash is built with lzo and snappy; zlib every build of crash reads). QEMU
/// compresses each 4 KiB page on its own and writes zero pages once, so the dump
/// holds only the memory the guest uses. Measured on the demo guest's crash
/// (bench/RESULTS.md, "issue 18: dumps"; the 256 MiB guest's ELF is 272 MiB):
/// zlib 21.4 MiB, lzo 27.6 MiB, snappy 28.6 MiB, with lzo and snappy compressing
/// the same pages in a seventh to a tenth of zlib's CPU time. lzo first: its dump
/// is 30% larger than zlib's but the time it takes (the crashed guest stays paused,
/// and DUMP_TIMEOUT bounds it) grows with the memory in use, which makes zlib the
/// one to time out on a big guest; snappy is as fast and a little larger. zlib
/// last, and the one Debian's QEMU 7.2 is built with (its only kdump format).
pub(crate) const KDUMP_PREFERENCE: [DumpFormat; 3] = [
    DumpFormat::KdumpLzo,
    DumpFormat::KdumpSnappy,
    DumpFormat::KdumpZlib,
];

impl DumpFormat {
    /// The name the manifest and QMP's dump-guest-memory use ("auto" is
    /// bootgate's own: it never reaches QEMU).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DumpFormat::Auto => "auto",
            DumpFormat::Elf => "elf",
            DumpFormat::WinDmp => "win-dmp",
            DumpFormat::KdumpZlib => "kdump-zlib",
            DumpFormat::KdumpLzo => "kdump-lzo",
            DumpFormat::KdumpSnappy => "kdump-snappy",
        }
    }

    pub(crate) fn extension(self) -> &'static str {
        match self {
            DumpFormat::Auto | DumpFormat::Elf => "elf",
            DumpFormat::WinDmp => "dmp",
            DumpFormat::KdumpZlib | DumpFormat::KdumpLzo | DumpFormat::KdumpSnappy => "kdump",
        }
    }

    pub(crate) fn is_kdump(self) -> bool {
        matches!(
            self,
            DumpFormat::KdumpZlib | DumpFormat::KdumpLzo | DumpFormat::KdumpSnappy
        )
    }

    /// The format to ask QEMU for, given the formats its
    /// `query-dump-guest-memory-capability` lists. `auto`: for Linux the first of
    /// [`KDUMP_PREFERENCE`] this QEMU writes (ELF when it writes none); for Windows
    /// ELF, as before `auto` existed (a Windows manifest names "win-dmp" itself:
    /// WinDbg's format needs the guest's fwcfg driver, which only the image's maker
    /// can promise). A named format is kept: QEMU's own refusal then says why.
    pub(crate) fn resolve(self, os: OsFamily, supported: &[String]) -> DumpFormat {
        match (self, os) {
            (DumpFormat::Auto, OsFamily::Linux) => KDUMP_PREFERENCE
                .into_iter()
                .find(|f| supported.iter().any(|s| s == f.as_str()))
                .unwrap_or(DumpFormat::Elf),
            (DumpFormat::Auto, OsFamily::Windows) => DumpFormat::Elf,
            (named, _) => named,
        }
    }
}

#[cfg(test)]
mod dump_format_tests {
    use super::*;

    fn formats(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_picks_the_preferred_kdump_this_qemu_writes() {
        let debian = formats(&["elf", "kdump-zlib", "win-dmp"]);
        let all = formats(&["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy", "win-dmp"]);
        let no_lzo = formats(&["elf", "kdump-zlib", "kdump-snappy"]);
        let auto = DumpFormat::Auto;
        assert_eq!(
            auto.resolve(OsFamily::Linux, &debian),
            DumpFormat::KdumpZlib
        );
        assert_eq!(auto.resolve(OsFamily::Linux, &all), DumpFormat::KdumpLzo);
        assert_eq!(
            auto.resolve(OsFamily::Linux, &no_lzo),
            DumpFormat::KdumpSnappy
        );
        assert_eq!(
            auto.resolve(OsFamily::Linux, &formats(&["elf"])),
            DumpFormat::Elf
        );
        assert_eq!(auto.resolve(OsFamily::Linux, &[]), DumpFormat::Elf);
    }

    #[test]
    fn windows_and_named_formats_are_kept() {
        let all = formats(&["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy", "win-dmp"]);
        assert_eq!(
            DumpFormat::Auto.resolve(OsFamily::Windows, &all),
            DumpFormat::Elf
        );
        for named in [DumpFormat::Elf, DumpFormat::WinDmp, DumpFormat::KdumpSnappy] {
            assert_eq!(named.resolve(OsFamily::Linux, &all), named);
            assert_eq!(named.resolve(OsFamily::Windows, &[]), named);
        }
        assert_eq!(DumpFormat::KdumpLzo.extension(), "kdump");
    }
}
