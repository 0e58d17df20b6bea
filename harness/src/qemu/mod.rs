//! QEMU: finding the binaries, the command line, the process guard, the QMP client,
//! console capture, accelerator choice, and the `Vm` that ties them together.

pub mod accel;
pub(crate) mod accel_cache;
pub mod command;
pub mod console;
pub(crate) mod process;
pub mod qmp;
pub mod snapshot;
pub(crate) mod tpm;
pub(crate) mod vm;

use std::process::Command;

/// The system emulator bootgate runs; `BOOTGATE_QEMU` overrides it.
pub(crate) const DEFAULT_QEMU: &str = "qemu-system-x86_64";
/// The image tool; `BOOTGATE_QEMU_IMG` overrides it.
pub(crate) const DEFAULT_QEMU_IMG: &str = "qemu-img";
/// What to install when QEMU is missing (Debian/Ubuntu).
pub(crate) const INSTALL_HINT: &str = "apt-get install qemu-system-x86 qemu-utils";

/// The QEMU binaries to use.
#[derive(Debug, Clone)]
pub struct QemuTools {
    pub system: String,
    pub img: String,
    /// Whether `system` can confine itself with seccomp (`-sandbox`): builds without
    /// seccomp reject the option, so it is probed rather than assumed.
    pub sandbox: bool,
}

impl QemuTools {
    pub fn from_env() -> QemuTools {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let system = var("BOOTGATE_QEMU", DEFAULT_QEMU);
        QemuTools {
            sandbox: sandbox_supported(&system),
            img: var("BOOTGATE_QEMU_IMG", DEFAULT_QEMU_IMG),
            system,
        }
    }
}

/// True when `binary` accepts bootgate's `-sandbox` options (QEMU validates them,
/// then `-version` exits at once).
pub(crate) fn sandbox_supported(binary: &str) -> bool {
    let mut args: Vec<&str> = vec!["-sandbox", command::SANDBOX_GUEST];
    args.push("-version");
    Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{binary} not found in PATH: install QEMU (as root: `{INSTALL_HINT}`), then run `bootgate doctor`")]
    NotFound { binary: String },
    #[error("{binary} --version failed: {message}")]
    Version { binary: String, message: String },
}

pub(crate) use crate::util::find_in_path;

/// The first line of `binary --version`, e.g. "QEMU emulator version 7.2.22 (Debian ...)".
pub(crate) fn version(binary: &str) -> Result<String, ToolError> {
    if find_in_path(binary).is_none() {
        return Err(ToolError::NotFound {
            binary: binary.to_string(),
        });
    }
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| ToolError::Version {
            binary: binary.to_string(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(ToolError::Version {
            binary: binary.to_string(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}
