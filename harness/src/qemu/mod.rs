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
            sandbox: sandbox_supported_kept(&system),
            img: var("BOOTGATE_QEMU_IMG", DEFAULT_QEMU_IMG),
            system,
        }
    }
}

/// The arguments of the `-sandbox` probe: QEMU validates the options, then
/// `-version` exits at once.
fn sandbox_probe_args() -> [&'static str; 3] {
    ["-sandbox", command::SANDBOX_GUEST, "-version"]
}

/// True when `binary` accepts bootgate's `-sandbox` options.
pub(crate) fn sandbox_supported(binary: &str) -> bool {
    sandbox_answer(binary).is_ok_and(|a| a == SANDBOX_YES)
}

/// The kept answers of the `-sandbox` probe.
const SANDBOX_YES: &str = "yes";
const SANDBOX_NO: &str = "no";

/// QEMU's verdict on the options ("yes" or "no"); Err when it could not be started,
/// which says nothing about the binary and so is never kept.
fn sandbox_answer(binary: &str) -> Result<String, std::io::Error> {
    let status = Command::new(binary)
        .args(sandbox_probe_args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    Ok(if status.success() {
        SANDBOX_YES
    } else {
        SANDBOX_NO
    }
    .to_string())
}

/// [`sandbox_supported`], kept for this host boot ([`kept_answers`]): a build's
/// seccomp support changes only with the binary, which is in the key.
pub(crate) fn sandbox_supported_kept(binary: &str) -> bool {
    let key = AnswerKey::now(&sandbox_question(), binary, Vec::new());
    sandbox_kept_in(&crate::cache::cache_root(), binary, key.as_ref())
}

/// The question the `-sandbox` probe asks, as kept answers name it.
pub(crate) fn sandbox_question() -> String {
    sandbox_probe_args().join(" ")
}

fn sandbox_kept_in(root: &std::path::Path, binary: &str, key: Option<&AnswerKey>) -> bool {
    kept_answers::kept_or_ask(root, key, || sandbox_answer(binary)).is_ok_and(|a| a == SANDBOX_YES)
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{binary} not found in PATH: install QEMU (as root: `{INSTALL_HINT}`), then run `bootgate doctor`")]
    NotFound { binary: String },
    #[error("{binary} --version failed: {message}")]
    Version { binary: String, message: String },
}

pub(crate) use crate::util::find_in_path;
use crate::util::kept_answers::{self, AnswerKey};

/// The question [`version`] asks, as kept answers name it.
pub(crate) const VERSION_QUESTION: &str = "--version";

/// [`version`], kept for this host boot ([`kept_answers`]): the answer of a binary
/// changes only with the binary, which is in the key; a failure is asked again.
pub(crate) fn version_kept(binary: &str) -> Result<String, ToolError> {
    let key = AnswerKey::now(VERSION_QUESTION, binary, Vec::new());
    version_kept_in(&crate::cache::cache_root(), binary, key.as_ref())
}

fn version_kept_in(
    root: &std::path::Path,
    binary: &str,
    key: Option<&AnswerKey>,
) -> Result<String, ToolError> {
    kept_answers::kept_or_ask(root, key, || version(binary))
}

/// The first line of `binary --version`, e.g. "QEMU emulator version 7.2.22 (Debian ...)".
pub(crate) fn version(binary: &str) -> Result<String, ToolError> {
    if find_in_path(binary).is_none() {
        return Err(ToolError::NotFound {
            binary: binary.to_string(),
        });
    }
    let output = Command::new(binary)
        .arg(VERSION_QUESTION)
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

#[cfg(test)]
mod tests;
