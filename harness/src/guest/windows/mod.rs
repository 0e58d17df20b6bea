//! Windows guests: the parts that need no Windows machine to build and test (the
//! bugcheck and dump-header decoders are detectors: `crate::detect`).
//!
//! - [`command`]: argv for the guest agent's `guest-exec` that install and remove
//!   drivers, delete content, flush disks, reboot and list crash dumps, quoted for the
//!   way qemu-ga on Windows turns argv into a command line.
//! - [`path`]: Windows path checks and joins for the image manifest's guest paths.
//!
//! Nothing here has run against a real Windows guest on this project's machines: the
//! formats and rules come from QEMU's, glib's and Microsoft's sources and documents
//! (see images/windows/GUIDE.md for what is confirmed and what is not).

pub mod command;
pub(crate) mod offline;
pub(crate) mod path;

use serde::Deserialize;

/// Where Windows writes minidumps unless CrashControl\MinidumpDir says otherwise.
pub(crate) const DEFAULT_MINIDUMP_DIR: &str = r"%SystemRoot%\Minidump";

/// Where Windows writes a kernel or complete memory dump unless
/// CrashControl\DumpFile says otherwise.
pub(crate) const DEFAULT_MEMORY_DUMP: &str = r"%SystemRoot%\MEMORY.DMP";

/// The helper image that edits a Windows disk offline unless the manifest's
/// `guest.offline_helper` names another: the built-in NTFS helper.
pub(crate) const DEFAULT_OFFLINE_HELPER: &str = "ntfs-helper";

/// How a Windows image installs candidate drivers (`guest.driver_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// A kernel service created with `sc.exe`: the driver is one `.sys` file, copied
    /// to `drivers_dir\NAME.sys`. Sensors and filters are usually installed this way.
    #[default]
    Service,
    /// A driver package (INF, SYS, CAT) installed with `pnputil`. The guest agent
    /// copies one file, so the package arrives as `drivers_dir\NAME.zip` and is
    /// expanded next to it.
    Pnp,
}

/// When Windows loads a service driver (`guest.service_start`): `sc.exe start=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStart {
    /// By the boot loader, before any file system is up: a crash here is a boot loop.
    #[default]
    Boot,
    /// During kernel initialisation, after the boot drivers.
    System,
    /// Only when started (`sc.exe start`).
    Demand,
}

impl ServiceStart {
    /// The value `sc.exe create ... start=` takes.
    pub(crate) fn as_sc(self) -> &'static str {
        match self {
            ServiceStart::Boot => "boot",
            ServiceStart::System => "system",
            ServiceStart::Demand => "demand",
        }
    }
}
