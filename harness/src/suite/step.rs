//! The steps of a scenario: one enum variant per kind, a one-key table in the file.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::schema::{duration, opt_command_timeout, opt_duration};
use super::DEFAULT_EXEC_TIMEOUT;

/// What one step does. The first boot is implicit; a leading `boot` step only sets
/// its options.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Boot the VM and wait until it is ready.
    Boot(BootStep),
    /// Reboot through the guest agent `times` times, waiting for ready after each.
    Reboot(RebootStep),
    /// Run a command in the guest and check its exit code.
    Exec(ExecStep),
    /// Copy a driver onto the system disk and register it to load at boot.
    InstallDriver(InstallDriverStep),
    /// Unregister a driver and delete it (unloading it first when it is loaded).
    UninstallDriver(DriverRef),
    /// Copy a content file into the driver's content folder, optionally live-reloading it.
    ApplyContent(ApplyContentStep),
    /// Delete the driver's content file.
    RemoveContent(DriverRef),
    /// Stay up for a while, watching for crashes and hangs.
    Observe(ObserveStep),
    /// Bring a crashed or looping guest back from outside: a rescue boot that skips
    /// third-party drivers, or a helper VM that edits its stopped disk; then a normal
    /// boot.
    Recover(RecoverStep),
    /// Put the previous content back (or remove the update) through the agent as soon
    /// as the guest answers, on every boot until one stays up.
    RollbackContent(RollbackContentStep),
    /// Windows: turn Driver Verifier on for a driver (`verifier.exe`), then reboot
    /// so it takes effect.
    Verifier(VerifierStep),
}

impl Step {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Step::Boot(_) => "boot",
            Step::Reboot(_) => "reboot",
            Step::Exec(_) => "exec",
            Step::InstallDriver(_) => "install_driver",
            Step::UninstallDriver(_) => "uninstall_driver",
            Step::ApplyContent(_) => "apply_content",
            Step::RemoveContent(_) => "remove_content",
            Step::Observe(_) => "observe",
            Step::Recover(_) => "recover",
            Step::RollbackContent(_) => "rollback_content",
            Step::Verifier(_) => "verifier",
        }
    }

    /// The driver a step refers to, if any.
    pub(crate) fn driver(&self) -> Option<&str> {
        match self {
            Step::InstallDriver(s) => Some(&s.driver),
            Step::UninstallDriver(s) | Step::RemoveContent(s) => Some(&s.driver),
            Step::ApplyContent(s) => Some(&s.driver),
            Step::RollbackContent(s) => Some(&s.driver),
            Step::Verifier(s) => Some(&s.driver),
            Step::Recover(s) => s.remove_content.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallDriverStep {
    pub driver: String,
    /// Module parameters, as the guest's loader takes them ("fixed=1 loop_guard=2").
    #[serde(default)]
    pub params: String,
    /// Also load it now (otherwise it loads at the next boot).
    #[serde(default)]
    pub load_now: bool,
    /// Distro images: also put it in the guest's initramfs (rebuilt with the
    /// manifest's `initramfs_update`), for drivers that load before the root file
    /// system. Only matters where the image boots its own initramfs.
    #[serde(default)]
    pub initramfs: bool,
    /// How long the guest command may run (default: the image manifest's, else the
    /// OS family's; see `guest::budget`).
    #[serde(default, deserialize_with = "opt_command_timeout")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverRef {
    pub driver: String,
    /// How long the guest command may run (default: the image manifest's, else the
    /// OS family's; see `guest::budget`).
    #[serde(default, deserialize_with = "opt_command_timeout")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyContentStep {
    pub driver: String,
    /// The content file, relative to the suite file.
    pub file: PathBuf,
    /// Tell the running driver to reload it now (the driver's `reload` command).
    #[serde(default)]
    pub reload: bool,
    /// How long the guest command may run (default: the image manifest's, else the
    /// OS family's; see `guest::budget`).
    #[serde(default, deserialize_with = "opt_command_timeout")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveStep {
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverStep {
    /// How the guest is brought back.
    #[serde(default)]
    pub via: RecoverVia,
    /// Delete this driver's content file from the guest's disk.
    pub remove_content: Option<String>,
    /// Shell command lines run in the rescue boot (or in the helper VM, after the
    /// stopped VM's disk is mounted at `$BOOTGATE_OFFLINE_ROOT`), each expected to
    /// exit 0.
    #[serde(default)]
    pub run: Vec<String>,
}

/// How a `recover` step reaches the broken guest's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverVia {
    /// Boot the guest itself with third-party drivers skipped (the image's
    /// `safe_mode_append`), the way an administrator uses safe mode.
    #[default]
    RescueBoot,
    /// Stop the guest and boot a helper VM of the same image with the guest's disk
    /// attached as a second disk (the image's `offline_*` fields): the disk is edited
    /// offline, the way a cloud operator attaches a broken VM's disk to a rescue VM.
    HelperVm,
}

impl RecoverVia {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecoverVia::RescueBoot => "rescue boot",
            RecoverVia::HelperVm => "helper VM",
        }
    }
}

/// Default time a rolled-back guest must stay up to count as back.
pub const DEFAULT_ROLLBACK_SETTLE: Duration = Duration::from_secs(10);
/// Default number of boots a rollback is tried on.
pub const DEFAULT_ROLLBACK_BOOTS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackContentStep {
    pub driver: String,
    /// The content to put back, relative to the suite file; without it the driver's
    /// content file is removed.
    pub file: Option<PathBuf>,
    /// The guest must stay up this long after the rollback.
    #[serde(default = "default_rollback_settle", deserialize_with = "duration")]
    pub settle: Duration,
    /// Boots to try on: a boot that crashes before or right after the rollback is
    /// followed by the next, which is tried again.
    #[serde(default = "default_rollback_boots")]
    pub boots: u32,
    /// How long the guest command may run (default: the image manifest's, else the
    /// OS family's; see `guest::budget`).
    #[serde(default, deserialize_with = "opt_command_timeout")]
    pub timeout: Option<Duration>,
}

/// `verifier = { driver = "sensor", flags = ["/standard"] }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierStep {
    pub driver: String,
    /// The Driver Verifier selection, as verifier.exe takes it (default
    /// `["/standard"]`); `/driver NAME.sys` is added.
    #[serde(default = "standard_checks", deserialize_with = "verifier_flags")]
    pub flags: Vec<String>,
    /// Reboot right after, so the settings take effect (default true).
    #[serde(default = "yes")]
    pub reboot: bool,
    /// How long verifier.exe may run (see `guest::budget`).
    #[serde(default, deserialize_with = "opt_command_timeout")]
    pub timeout: Option<Duration>,
}

fn standard_checks() -> Vec<String> {
    vec!["/standard".into()]
}

fn yes() -> bool {
    true
}

/// The flags, checked as they are read, so a bad one names its file, line and column.
fn verifier_flags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let flags = Vec::<String>::deserialize(d)?;
    check_verifier_flags(&flags)
        .map_err(|why| serde::de::Error::custom(format!("verifier `flags` {why}")))?;
    Ok(flags)
}

/// The exit codes verifier.exe returns after a setting: 0 success, 2 "reboot
/// needed" (its documented return codes; not yet seen on a real guest here).
pub(crate) const VERIFIER_OK_EXITS: [i32; 2] = [0, 2];

/// Checks `flags` against the documented selections; the message says which item.
pub(crate) fn check_verifier_flags(flags: &[String]) -> Result<(), String> {
    let number = |s: &str| {
        let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => (hex, 16),
            None => (s, 10),
        };
        !digits.is_empty() && u64::from_str_radix(digits, radix).is_ok()
    };
    let Some(first) = flags.first() else {
        return Err(
            "is empty: give [\"/standard\"], [\"/flags\", \"0x209BB\"] or [\"/rc\", \"1\", \"2\"]"
                .into(),
        );
    };
    let rest = &flags[1..];
    match first.to_ascii_lowercase().as_str() {
        "/standard" if rest.is_empty() => Ok(()),
        "/standard" => Err(format!("/standard takes nothing after it (got {rest:?})")),
        "/flags" if rest.len() == 1 && number(&rest[0]) => Ok(()),
        "/flags" => Err(format!(
            "/flags takes one number, decimal or 0x hex (got {rest:?})"
        )),
        "/ruleclasses" | "/rc" if !rest.is_empty() && rest.iter().all(|r| number(r)) => Ok(()),
        "/ruleclasses" | "/rc" => Err(format!(
            "{first} takes one or more rule class numbers (got {rest:?})"
        )),
        _ => Err(format!(
            "{first:?} is not a selection bootgate runs: use /standard, /flags or /ruleclasses (/rc), as Microsoft's \"Driver Verifier command syntax\" page documents; /driver is added for you"
        )),
    }
}

fn default_rollback_settle() -> Duration {
    DEFAULT_ROLLBACK_SETTLE
}

fn default_rollback_boots() -> u32 {
    DEFAULT_ROLLBACK_BOOTS
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootStep {
    /// Time allowed to reach ready; defaults to the suite's, then the image's.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootStep {
    #[serde(default = "one")]
    pub times: u32,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecStep {
    /// A command line for the guest's shell (the image manifest names the shell).
    #[serde(default)]
    pub run: Option<String>,
    /// An argument vector run without any shell.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    #[serde(default)]
    pub expect_exit: i32,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

impl ExecStep {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_EXEC_TIMEOUT)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Boot(_) => write!(f, "boot"),
            Step::Reboot(r) => write!(f, "reboot x{}", r.times),
            Step::Exec(e) => match (&e.run, &e.argv) {
                (Some(run), _) => write!(f, "exec `{run}`"),
                (_, Some(argv)) => write!(f, "exec {argv:?}"),
                _ => write!(f, "exec"),
            },
            Step::InstallDriver(s) if s.params.is_empty() => {
                write!(f, "install_driver {}", s.driver)
            }
            Step::InstallDriver(s) => write!(f, "install_driver {} ({})", s.driver, s.params),
            Step::UninstallDriver(s) => write!(f, "uninstall_driver {}", s.driver),
            Step::ApplyContent(s) => write!(
                f,
                "apply_content {} -> {}{}",
                s.file.display(),
                s.driver,
                if s.reload { " (live reload)" } else { "" }
            ),
            Step::RemoveContent(s) => write!(f, "remove_content {}", s.driver),
            Step::Observe(s) => write!(f, "observe {}", crate::util::human_duration(s.duration)),
            Step::Recover(s) => {
                write!(f, "recover ({}", s.via.as_str())?;
                if let Some(driver) = &s.remove_content {
                    write!(f, ", remove {driver}'s content")?;
                }
                if !s.run.is_empty() {
                    write!(f, ", {} command(s)", s.run.len())?;
                }
                write!(f, ")")
            }
            Step::Verifier(s) => write!(f, "verifier {} {}", s.driver, s.flags.join(" ")),
            Step::RollbackContent(s) => match &s.file {
                Some(file) => write!(f, "rollback_content {} -> {}", file.display(), s.driver),
                None => write!(f, "rollback_content {} (remove)", s.driver),
            },
        }
    }
}
