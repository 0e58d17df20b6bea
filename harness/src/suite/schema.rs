//! The suite's model: what a validated suite file says (its steps are in
//! [`super::step`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{Drill, Step, MAX_DURATION};
/// A rollout target is recorded in run.json as written, so its type is the model's.
pub use crate::model::target::Target;

/// A parsed, validated suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The file it came from.
    pub path: PathBuf,
    pub name: String,
    /// Image reference: a built-in image name (`demo`) or a path to an `image.toml`,
    /// relative to the suite file.
    pub image: String,
    pub boot_timeout: Option<Duration>,
    /// The suite's default for its scenarios' `recovery_settle`.
    pub recovery_settle: Option<Duration>,
    /// How long a guest may make no progress before it is a hang (the stall
    /// detector, `detect::stall`); None: `stall_window = "off"`.
    pub stall_window: Option<Duration>,
    pub evidence: Evidence,
    /// Runs only when named (`bootgate run FILE`), not with the rest of its folder.
    pub standalone: bool,
    /// Candidate drivers by name.
    pub drivers: BTreeMap<String, Driver>,
    pub scenarios: Vec<Scenario>,
    /// A staged rollout of this suite's scenarios (`bootgate rollout`).
    pub rollout: Option<Rollout>,
    /// A recovery drill; its scenarios (one per path) are in `scenarios`.
    pub drill: Option<Drill>,
    /// The path policy the suite was loaded with: the image it names is resolved,
    /// and its manifest's files confined, by the same.
    pub path_policy: crate::confine::PathPolicy,
}

/// `[rollout]`: rings of targets the suite's scenarios run on, one ring after the
/// other; a ring is promoted only when it is clean.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Observation after the last step of every scenario (the soak), unless a ring
    /// sets its own.
    #[serde(default, deserialize_with = "opt_duration")]
    pub soak: Option<Duration>,
    #[serde(rename = "ring")]
    pub rings: Vec<Ring>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    pub name: String,
    /// Machines of this ring: image and configuration variants.
    pub targets: Vec<Target>,
    /// Scenarios that may fail by crashing in this ring before it halts the
    /// rollout (default 0: any crash halts).
    #[serde(default)]
    pub crash_threshold: u32,
    #[serde(default, deserialize_with = "opt_duration")]
    pub soak: Option<Duration>,
}

/// Which crashes get a memory dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpPolicy {
    /// The first crash of each scenario (a boot loop repeats the same crash).
    #[default]
    First,
    All,
    None,
}

/// Default cap on the guest memory size bootgate dumps.
pub const DEFAULT_DUMP_MAX_MIB: u32 = 4096;

/// Default for the run's dump budget: room for one dump of the biggest guest
/// `dump_max_mib` lets bootgate dump by default (4 GiB of RAM: up to 4.4 GiB as
/// ELF, see `runner::dump_budget::worst_case_bytes`) with margin, and for hundreds
/// of the demo guest's compact dumps (a few MiB each), while a run of crashes on
/// big guests stops dumping at 8 GiB rather than filling a CI machine's disk.
pub const DEFAULT_DUMP_BUDGET_MIB: u64 = 8192;

/// What evidence to capture from crashed and hung guests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    #[serde(default)]
    pub memory_dumps: DumpPolicy,
    /// Guests with more memory than this are not dumped (the dump is as big as the RAM).
    #[serde(default = "default_dump_max_mib")]
    pub dump_max_mib: u32,
    /// The most disk all the memory dumps of one run may take, in MiB: shared by
    /// every worker; a dump that might not fit is skipped, with a note saying so.
    /// A run of several suites keeps one tally: each dump is checked against the
    /// limit of its own scenario's suite.
    #[serde(
        default = "default_dump_budget_mib",
        deserialize_with = "dump_budget_mib"
    )]
    pub dump_budget_mib: u64,
    /// Also dump a hung guest (the host-side equivalent of forcing a crash).
    #[serde(default)]
    pub dump_on_hang: bool,
}

impl Default for Evidence {
    fn default() -> Evidence {
        Evidence {
            memory_dumps: DumpPolicy::First,
            dump_max_mib: DEFAULT_DUMP_MAX_MIB,
            dump_budget_mib: DEFAULT_DUMP_BUDGET_MIB,
            dump_on_hang: false,
        }
    }
}

fn default_dump_max_mib() -> u32 {
    DEFAULT_DUMP_MAX_MIB
}

fn default_dump_budget_mib() -> u64 {
    DEFAULT_DUMP_BUDGET_MIB
}

/// A positive number of MiB (0 would skip every dump: `memory_dumps = "none"` says
/// that plainly).
fn dump_budget_mib<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(i64),
        Text(String),
    }
    match Written::deserialize(d)? {
        Written::Number(n) if n > 0 => Ok(n as u64),
        Written::Number(n) => Err(serde::de::Error::custom(format!(
            "`dump_budget_mib` {n} is not a positive number of MiB (to take no dumps, write memory_dumps = \"none\")"
        ))),
        Written::Text(text) => Err(serde::de::Error::custom(format!(
            "`dump_budget_mib` {text:?} is not a number: write MiB as a number, like 4096"
        ))),
    }
}

/// A candidate driver: a kernel module built from source against the image's kernel
/// headers, or a prebuilt module; plus how its content updates reach it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Driver {
    /// Kernel module source folder (with a Kbuild file), relative to the suite file.
    pub source: Option<PathBuf>,
    /// A prebuilt module file, relative to the suite file.
    pub(crate) module: Option<PathBuf>,
    /// The prebuilt module's separate debug file (`objcopy --only-keep-debug`),
    /// relative to the suite file: crash triage resolves the module's frames to
    /// source lines with it when the module itself is stripped.
    #[serde(default)]
    pub(crate) debug: Option<PathBuf>,
    /// Name of the content file the driver reads in the image's content folder.
    pub content_file: Option<String>,
    /// Guest command line that makes the running driver reload its content (a live update).
    pub reload: Option<String>,
}

impl Suite {
    /// The folder relative paths in the suite resolve against.
    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub steps: Vec<Step>,
    pub gates: Gates,
    /// A negative test: the failure the harness must see for the scenario to pass.
    pub expect: Option<Expect>,
    /// Text the crash title must contain when `expect` is set.
    pub expect_title: Option<String>,
    /// Consecutive boots that crash before ready which make a boot loop.
    pub boot_loop_boots: u32,
    /// After a crash, how long a boot must stay up past ready before it counts as
    /// the recovery (the scenario's, else the suite's, else
    /// [`DEFAULT_RECOVERY_SETTLE`]). A boot that crashes inside it is a crashing boot.
    pub recovery_settle: Duration,
    /// Really boot first instead of starting from the image's saved ready state.
    /// Implied when the first step is `boot` (a scenario about the boot itself).
    pub cold_boot: bool,
    /// Left out of runs unless asked for (`--ignored`, `--include-ignored`), as
    /// `#[ignore]` tests are by cargo test.
    pub ignore: bool,
}

/// Default for `boot_loop_boots`.
pub const DEFAULT_BOOT_LOOP_BOOTS: u32 = 3;

/// Default for `recovery_settle`. It must outlast a driver that crashes some seconds
/// after start-up (content read when its event sources come up, a timer, a worker).
/// The evidence: the demo sensor's `boot_delay_ms` cases interpret content 4-5 s
/// after load, which under TCG is 1-5 s after the agent answers; the recovery drill
/// already asks a recovered guest to stay up 10 s (`[drill] settle`); in July 2024
/// hosts crashed at different points early in boot, some after the sign-in screen
/// showed, which is why a host could be rebooted many times before one boot stayed
/// up long enough to fetch the fixed file. 20 s is four times the longest demo delay
/// and twice the drill's settle, and costs one extra 20 s per recovered scenario.
/// Crashes seen later than this in a scenario stretch its window (see
/// `runner::verdict::settle_window`).
pub const DEFAULT_RECOVERY_SETTLE: Duration = Duration::from_secs(20);

/// Longest `recovery_settle` a suite may ask: every boot after a crash is watched
/// this long, so a window of hours would make a boot loop take hours to call.
pub const MAX_RECOVERY_SETTLE: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Crash,
    Hang,
    BootLoop,
    /// The boot-time gate must fail (a driver that slows boot must be caught).
    SlowBoot,
    /// An installed driver must be found not loaded at a ready boot (a driver
    /// that the guest refuses to load at boot must be caught).
    DriverNotLoaded,
}

impl Expect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Expect::Crash => "crash",
            Expect::Hang => "hang",
            Expect::BootLoop => "boot_loop",
            Expect::SlowBoot => "slow_boot",
            Expect::DriverNotLoaded => "driver_not_loaded",
        }
    }
}

/// Pass/fail conditions beyond "every boot reaches ready", which always holds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Every boot must reach ready within this time.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_boot_time: Option<Duration>,
    /// The same, in milliseconds.
    pub max_boot_ms: Option<u64>,
    /// No crash may happen (default: true, unless `expect` names one).
    pub no_crash: Option<bool>,
    /// No hang may happen (default: true, unless `expect = "hang"`).
    pub no_hang: Option<bool>,
    /// No boot loop may happen (default: true, unless `expect = "boot_loop"`).
    pub no_boot_loop: Option<bool>,
    /// After a crash, the guest must be ready again within this many boots.
    pub recovers_within: Option<u32>,
    /// Every driver installed to load at boot must be loaded at every ready boot
    /// (default: true, unless `expect = "driver_not_loaded"`).
    pub drivers_loaded: Option<bool>,
}

impl Gates {
    /// The boot-time limit from either spelling.
    pub fn boot_time_limit(&self) -> Option<Duration> {
        self.max_boot_time
            .or(self.max_boot_ms.map(Duration::from_millis))
    }
}

/// Parses durations written as "30s", "2m", "1m 30s", "500ms".
pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A `recovery_settle` window: a duration of at most [`MAX_RECOVERY_SETTLE`].
pub(super) fn opt_recovery_settle<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let window = duration(d)?;
    if window > MAX_RECOVERY_SETTLE {
        return Err(serde::de::Error::custom(format!(
            "`recovery_settle` {} is longer than the longest allowed, {}: every boot after a crash is watched this long before it counts as a recovery",
            humantime::format_duration(window),
            humantime::format_duration(MAX_RECOVERY_SETTLE)
        )));
    }
    Ok(Some(window))
}

/// Default `stall_window`: a guest that makes no progress this long is a hang. The
/// kernel's own reports come later (the demo's spinning `hang_init`: an RCU stall
/// ~21 s in, a soft lockup ~49 s in, measured under TCG) and Windows makes none; 10
/// s is twenty vCPU samples, well past any spin a healthy guest does in the kernel
/// at one place (an idle guest halts, a busy one moves or answers its agent).
pub const DEFAULT_STALL_WINDOW: Duration = Duration::from_secs(10);
/// Shortest `stall_window`: a few vCPU samples (`runner::scenario::stall`'s interval).
pub const MIN_STALL_WINDOW: Duration = Duration::from_secs(2);
/// Longest `stall_window`: past this the kernel's own lockup report decides first.
pub const MAX_STALL_WINDOW: Duration = Duration::from_secs(10 * 60);

/// `stall_window`: a duration, or `"off"` / `"0"` / `0` for no stall detector.
/// `Some(None)` is off. A bad value fails the parse, which names file, line and
/// column.
pub(super) fn opt_stall_window<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Duration>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(i64),
    }
    let written = match Written::deserialize(d)? {
        Written::Text(text) => text,
        Written::Number(0) => return Ok(Some(None)),
        Written::Number(n) => {
            return Err(serde::de::Error::custom(format!(
                "`stall_window` {n} has no unit: write a duration like \"{n}s\", or \"off\""
            )))
        }
    };
    super::validate::stall_window(&written)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Longest budget a suite step or an image manifest may give one guest command.
pub(crate) const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// A guest command's budget (a step's `timeout`, the manifest's
/// `guest.command_timeout` / `guest.install_timeout`): a duration, not zero, at most
/// [`MAX_COMMAND_TIMEOUT`]. A bad one fails the file's parse, which names its file,
/// line and column.
pub(crate) fn opt_command_timeout<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let timeout = duration(d)?;
    if timeout.is_zero() {
        return Err(serde::de::Error::custom(
            "a command timeout of 0 would fail every command: give a duration like \"5m\"",
        ));
    }
    if timeout > MAX_COMMAND_TIMEOUT {
        return Err(serde::de::Error::custom(format!(
            "a command timeout of {} is longer than the longest allowed, {}",
            humantime::format_duration(timeout),
            humantime::format_duration(MAX_COMMAND_TIMEOUT)
        )));
    }
    Ok(Some(timeout))
}

/// Deserializes a human duration string; shared with the image manifest.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}): write a number and a unit, like \"30s\", \"2m\" or \"500ms\"")
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "duration {text:?} is longer than the longest allowed, {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(duration)
}
