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
pub(crate) mod loaded;
pub(crate) mod offline;
pub(crate) mod path;
pub(crate) mod verifier;

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

/// The service type `sc.exe create ... type=` gets (`guest.service_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// SERVICE_KERNEL_DRIVER: an ordinary kernel driver.
    #[default]
    Kernel,
    /// SERVICE_FILE_SYSTEM_DRIVER: a file system driver or a file system minifilter
    /// (Microsoft, "Creating an INF file for a minifilter driver": ServiceType 2).
    Filesys,
}

impl ServiceType {
    /// The value `sc.exe create ... type=` takes.
    pub(crate) fn as_sc(self) -> &'static str {
        match self {
            ServiceType::Kernel => "kernel",
            ServiceType::Filesys => "filesys",
        }
    }
}

/// A file system minifilter's instance (`[guest.minifilter]`), written under the
/// service key as Filter Manager reads it (Microsoft, "Creating an INF file for a
/// minifilter driver"; "Load order groups and altitudes for minifilter drivers").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minifilter {
    /// The altitude Microsoft allocated: digits, optionally one decimal point
    /// ("370030", "370030.5").
    pub altitude: String,
    /// The instance name (`Instances\DefaultInstance` names it).
    #[serde(default = "default_instance")]
    pub instance: String,
    /// The instance's Flags: 0x1 no automatic attachment, 0x2 no manual attachment.
    #[serde(default)]
    pub flags: u32,
}

fn default_instance() -> String {
    "bootgate Instance".into()
}

/// How a service driver is created besides its start type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServiceOptions {
    pub service_type: ServiceType,
    /// `sc.exe ... group=`: the load-order group ("FSFilter Activity Monitor").
    pub group: Option<String>,
    pub minifilter: Option<Minifilter>,
}

impl ServiceOptions {
    /// The options' own rules; the message names the field.
    pub(crate) fn check(&self) -> Result<(), command::CommandError> {
        use command::CommandError::Invalid;
        if let Some(group) = &self.group {
            if group.is_empty()
                || group.chars().count() > 256
                || group.chars().any(|c| c.is_control() || c == '\\')
            {
                return Err(Invalid {
                    what: "guest.load_order_group",
                    value: group.clone(),
                    why: "must be 1 to 256 printable characters without '\\' (a load-order group name such as \"FSFilter Activity Monitor\")",
                });
            }
        }
        let Some(m) = &self.minifilter else {
            return Ok(());
        };
        if self.service_type != ServiceType::Filesys {
            return Err(Invalid {
                what: "guest.minifilter",
                value: m.altitude.clone(),
                why: "needs guest.service_type = \"filesys\": a minifilter is a SERVICE_FILE_SYSTEM_DRIVER",
            });
        }
        let mut parts = m.altitude.split('.');
        let whole = parts.next().unwrap_or_default();
        let fraction = parts.next();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f)) || parts.next().is_some() {
            return Err(Invalid {
                what: "guest.minifilter.altitude",
                value: m.altitude.clone(),
                why: "is not an altitude: digits with at most one decimal point, like \"370030\" (Microsoft allocates them)",
            });
        }
        if m.instance.is_empty()
            || m.instance.chars().count() > 256
            || m.instance.chars().any(|c| c.is_control() || c == '\\')
        {
            return Err(Invalid {
                what: "guest.minifilter.instance",
                value: m.instance.clone(),
                why:
                    "must be 1 to 256 printable characters without '\\' (it is a registry key name)",
            });
        }
        if m.flags > 3 {
            return Err(Invalid {
                what: "guest.minifilter.flags",
                value: m.flags.to_string(),
                why: "takes only 0x1 (no automatic attachment) and 0x2 (no manual attachment)",
            });
        }
        Ok(())
    }
}
