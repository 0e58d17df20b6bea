//! How long a guest command may run (its exec budget), and why that long.
//!
//! A step's own `timeout` wins, then the image manifest's `guest.install_timeout` /
//! `guest.command_timeout`, then the OS family's default. Linux keeps the budgets
//! it had (the agent's request timeout for small commands; three minutes for a
//! driver install, which may run depmod and an initramfs rebuild). Windows commands
//! start PowerShell, whose first start after boot loads .NET and its modules, and
//! an install runs pnputil or DISM (`Get-WindowsDriver`), each taking minutes on a
//! slow disk: seconds are not enough there. Under TCG everything in a Windows guest
//! is many times slower again, so the Windows defaults (never an explicit value) are
//! stretched by [`TCG_SLOWDOWN`].

use std::time::Duration;

use super::OsFamily;
use crate::agent::worker::REQUEST_TIMEOUT;

/// Linux: a small command (sync, rm, a content reload): the agent's own request
/// timeout, which these commands always had.
pub(crate) const LINUX_COMMAND_TIMEOUT: Duration = REQUEST_TIMEOUT;
/// Linux: a driver install or uninstall: depmod re-indexes every module of the
/// kernel, and an initramfs rebuild takes tens of seconds under TCG (measured on the
/// debian12 image).
pub(crate) const LINUX_INSTALL_TIMEOUT: Duration = Duration::from_secs(180);
/// Windows: a small command (flush, delete a file, query services, the event log).
/// PowerShell 5.1's cold start after boot is tens of seconds on a busy guest
/// (.NET JIT, module autoload for Write-VolumeCache's Storage module, CIM).
pub(crate) const WINDOWS_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Windows: a driver install or uninstall, or a Driver Verifier setting: sc.exe is
/// quick, but pnputil stages a package through the driver store and
/// `Get-WindowsDriver -Online` starts a DISM session, minutes each on a cold guest.
pub(crate) const WINDOWS_INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How many times slower a Windows guest runs under TCG (software emulation) than
/// with KVM, for the Windows defaults: Windows boots and runs PowerShell several
/// times slower without hardware virtualisation, so the default budgets grow by
/// this factor there. Explicit budgets are taken as written.
pub(crate) const TCG_SLOWDOWN: u32 = 4;

/// What kind of guest command a budget is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    /// Installs, uninstalls or reconfigures a driver (sc.exe, pnputil, DISM,
    /// verifier.exe; depmod, modprobe, initramfs on Linux).
    Install,
    /// Anything else bootgate runs: flushes, file deletes, reloads, checks.
    Command,
}

/// The time one guest command may run, and where it came from (for the step's
/// record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Budget {
    pub timeout: Duration,
    /// "step timeout", "guest.install_timeout", "windows default 10m x4 under TCG".
    pub source: String,
}

impl Budget {
    /// For the step's detail: "budget 40m (windows default 10m x4 under TCG)".
    pub(crate) fn describe(&self) -> String {
        format!(
            "budget {} ({})",
            crate::util::human_duration(self.timeout),
            self.source
        )
    }
}

/// The budget for a command of `kind` in an `os` guest: the step's `step` timeout,
/// else the manifest's (`manifest_install` for installs, `manifest_command`
/// otherwise), else the default, stretched under TCG on Windows.
pub(crate) fn budget(
    os: OsFamily,
    kind: CommandKind,
    step: Option<Duration>,
    manifest_command: Option<Duration>,
    manifest_install: Option<Duration>,
    tcg: bool,
) -> Budget {
    if let Some(timeout) = step {
        return Budget {
            timeout,
            source: "the step's timeout".into(),
        };
    }
    let (manifest, field) = match kind {
        CommandKind::Install => (manifest_install, "guest.install_timeout"),
        CommandKind::Command => (manifest_command, "guest.command_timeout"),
    };
    if let Some(timeout) = manifest {
        return Budget {
            timeout,
            source: format!("the image manifest's {field}"),
        };
    }
    let (default, family) = match (os, kind) {
        (OsFamily::Linux, CommandKind::Install) => (LINUX_INSTALL_TIMEOUT, "linux"),
        (OsFamily::Linux, CommandKind::Command) => (LINUX_COMMAND_TIMEOUT, "linux"),
        (OsFamily::Windows, CommandKind::Install) => (WINDOWS_INSTALL_TIMEOUT, "windows"),
        (OsFamily::Windows, CommandKind::Command) => (WINDOWS_COMMAND_TIMEOUT, "windows"),
    };
    let what = match kind {
        CommandKind::Install => "install",
        CommandKind::Command => "command",
    };
    if os == OsFamily::Windows && tcg {
        return Budget {
            timeout: default * TCG_SLOWDOWN,
            source: format!(
                "{family} {what} default {} x{TCG_SLOWDOWN} under TCG",
                crate::util::human_duration(default)
            ),
        };
    }
    Budget {
        timeout: default,
        source: format!("{family} {what} default"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_step_timeout_wins_over_the_manifest_and_is_not_stretched() {
        let b = budget(
            OsFamily::Windows,
            CommandKind::Install,
            Some(MIN),
            Some(2 * MIN),
            Some(3 * MIN),
            true,
        );
        assert_eq!(b.timeout, MIN);
        assert_eq!(b.source, "the step's timeout");
    }

    #[test]
    fn the_manifest_field_matches_the_kind_of_command() {
        let install = budget(
            OsFamily::Windows,
            CommandKind::Install,
            None,
            Some(2 * MIN),
            Some(3 * MIN),
            true,
        );
        assert_eq!(install.timeout, 3 * MIN);
        assert!(install.source.contains("guest.install_timeout"));
        let command = budget(
            OsFamily::Linux,
            CommandKind::Command,
            None,
            Some(2 * MIN),
            Some(3 * MIN),
            false,
        );
        assert_eq!(command.timeout, 2 * MIN);
        assert!(command.source.contains("guest.command_timeout"));
    }

    #[test]
    fn windows_defaults_are_minutes_and_grow_under_tcg() {
        let kvm = budget(
            OsFamily::Windows,
            CommandKind::Command,
            None,
            None,
            None,
            false,
        );
        let tcg = budget(
            OsFamily::Windows,
            CommandKind::Command,
            None,
            None,
            None,
            true,
        );
        assert_eq!(kvm.timeout, WINDOWS_COMMAND_TIMEOUT);
        assert_eq!(tcg.timeout, WINDOWS_COMMAND_TIMEOUT * TCG_SLOWDOWN);
        assert!(tcg.describe().contains("under TCG"), "{}", tcg.describe());
        assert!(kvm.timeout >= MIN);
    }

    #[test]
    fn linux_defaults_are_unchanged_and_not_stretched() {
        let install = budget(
            OsFamily::Linux,
            CommandKind::Install,
            None,
            None,
            None,
            true,
        );
        let command = budget(
            OsFamily::Linux,
            CommandKind::Command,
            None,
            None,
            None,
            true,
        );
        assert_eq!(install.timeout, Duration::from_secs(180));
        assert_eq!(command.timeout, REQUEST_TIMEOUT);
        assert_eq!(command.source, "linux command default");
    }
}
