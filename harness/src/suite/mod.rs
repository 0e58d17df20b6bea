//! Suite files: the TOML schema, loading and validation.
//!
//! Every struct denies unknown keys, so a typo is an error with file, line and column
//! instead of a silently ignored setting. A step is a one-key table naming its kind
//! (`{ exec = { run = "..." } }`), so later kinds (install_driver, apply_content,
//! recover, ...) slot in as new enum variants without touching the others.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::util::{line_col, snippet};

pub mod drill;
pub use drill::Drill;

/// Default time a single guest command may take.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest duration a suite (or image manifest) may give. The runner adds durations
/// to the current time to make deadlines, which overflows (and panics) for values
/// near `u64::MAX` seconds; no boot, command or soak needs more than a month.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Largest suite file read. Suites are a few KiB; the bound stops a wrong path (a
/// device such as /dev/zero, a disk image) from being read into memory whole.
pub const MAX_SUITE_BYTES: u64 = 16 << 20;

/// An error in a suite, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read suite {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}\n{snippet}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
    #[error("no suite files (*.toml) in {0}: pass a suite file or a folder holding some")]
    EmptyFolder(PathBuf),
    #[error("suite {path} is larger than {limit} bytes: is it really a suite file?")]
    TooLarge { path: PathBuf, limit: u64 },
}

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
    pub evidence: Evidence,
    /// Candidate drivers by name.
    pub drivers: BTreeMap<String, Driver>,
    pub scenarios: Vec<Scenario>,
    /// A staged rollout of this suite's scenarios (`bootgate rollout`).
    pub rollout: Option<Rollout>,
    /// A recovery drill; its scenarios (one per path) are in `scenarios`.
    pub drill: Option<Drill>,
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

/// One machine configuration: an image (default: the suite's) with overrides.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Names the target in results (default: derived from the overrides).
    pub name: Option<String>,
    pub image: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    /// Extra kernel parameters.
    pub append: Option<String>,
}

impl Target {
    /// A name for folders and reports: the given one, else built from the overrides.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let mut parts = vec![self.image.clone().unwrap_or_else(|| "default".into())];
        if let Some(c) = self.cpus {
            parts.push(format!("{c}cpu"));
        }
        if let Some(m) = self.memory_mib {
            parts.push(format!("{m}mib"));
        }
        if self.append.is_some() {
            parts.push("append".into());
        }
        parts
            .join("-")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
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

/// What evidence to capture from crashed and hung guests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    #[serde(default)]
    pub memory_dumps: DumpPolicy,
    /// Guests with more memory than this are not dumped (the dump is as big as the RAM).
    #[serde(default = "default_dump_max_mib")]
    pub dump_max_mib: u32,
    /// Also dump a hung guest (the host-side equivalent of forcing a crash).
    #[serde(default)]
    pub dump_on_hang: bool,
}

impl Default for Evidence {
    fn default() -> Evidence {
        Evidence {
            memory_dumps: DumpPolicy::First,
            dump_max_mib: DEFAULT_DUMP_MAX_MIB,
            dump_on_hang: false,
        }
    }
}

fn default_dump_max_mib() -> u32 {
    DEFAULT_DUMP_MAX_MIB
}

/// A candidate driver: a kernel module built from source against the image's kernel
/// headers, or a prebuilt module; plus how its content updates reach it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Driver {
    /// Kernel module source folder (with a Kbuild file), relative to the suite file.
    pub source: Option<PathBuf>,
    /// A prebuilt module file, relative to the suite file.
    pub module: Option<PathBuf>,
    /// Name of the content file the driver reads in the image's content folder.
    pub content_file: Option<String>,
    /// Guest command line that makes the running driver reload its content (a live update).
    pub reload: Option<String>,
}

impl Suite {
    /// The folder relative paths in the suite resolve against.
    pub fn dir(&self) -> &Path {
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
    /// Really boot first instead of starting from the image's saved ready state.
    /// Implied when the first step is `boot` (a scenario about the boot itself).
    pub cold_boot: bool,
    /// Left out of runs unless asked for (`--ignored`, `--include-ignored`), as
    /// `#[ignore]` tests are by cargo test.
    pub ignore: bool,
}

/// Default for `boot_loop_boots`.
pub const DEFAULT_BOOT_LOOP_BOOTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Crash,
    Hang,
    BootLoop,
    /// The boot-time gate must fail (a driver that slows boot must be caught).
    SlowBoot,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Crash => "crash",
            Expect::Hang => "hang",
            Expect::BootLoop => "boot_loop",
            Expect::SlowBoot => "slow_boot",
        }
    }
}

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
}

impl Step {
    pub fn kind(&self) -> &'static str {
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
        }
    }

    /// The driver a step refers to, if any.
    pub fn driver(&self) -> Option<&str> {
        match self {
            Step::InstallDriver(s) => Some(&s.driver),
            Step::UninstallDriver(s) | Step::RemoveContent(s) => Some(&s.driver),
            Step::ApplyContent(s) => Some(&s.driver),
            Step::RollbackContent(s) => Some(&s.driver),
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
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverRef {
    pub driver: String,
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
    pub fn as_str(self) -> &'static str {
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
}

impl Gates {
    /// The boot-time limit from either spelling.
    pub fn boot_time_limit(&self) -> Option<Duration> {
        self.max_boot_time
            .or(self.max_boot_ms.map(Duration::from_millis))
    }
}

// ---- raw file schema -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    suite: RawSuite,
    #[serde(default)]
    driver: BTreeMap<String, Spanned<Driver>>,
    #[serde(default)]
    scenario: Vec<Spanned<RawScenario>>,
    // Not Spanned: the toml crate cannot span a table made only of dotted
    // `[[rollout.ring]]` headers; its errors point at the first `[rollout` instead.
    rollout: Option<Rollout>,
    drill: Option<Drill>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<String>,
    image: String,
    #[serde(default, deserialize_with = "opt_duration")]
    boot_timeout: Option<Duration>,
    #[serde(default)]
    evidence: Evidence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    description: Option<String>,
    #[serde(default)]
    steps: Vec<Spanned<Step>>,
    #[serde(default)]
    gates: Gates,
    expect: Option<Expect>,
    expect_title: Option<String>,
    boot_loop_boots: Option<u32>,
    #[serde(default)]
    cold_boot: bool,
    #[serde(default)]
    ignore: bool,
}

/// Parses durations written as "30s", "2m", "1m 30s", "500ms".
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
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

// ---- loading ---------------------------------------------------------------------

/// Which host files a suite may name (driver sources and modules, content files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathPolicy {
    /// Only files inside the suite's own folder (after `..` and symlinks): a suite
    /// from elsewhere cannot copy an arbitrary host file into the guest and its
    /// results. The default.
    #[default]
    InsideSuite,
    /// Anywhere (`--allow-outside-paths`).
    Anywhere,
}

impl PathPolicy {
    /// The policy `--allow-outside-paths` (or a run's recorded choice) asks for.
    pub fn allowing_outside(allow: bool) -> PathPolicy {
        if allow {
            PathPolicy::Anywhere
        } else {
            PathPolicy::InsideSuite
        }
    }
}

/// Loads one suite file, or every `*.toml` in a folder (sorted by name), with
/// paths confined to the suite's folder.
pub fn load_path(path: &Path) -> Result<Vec<Suite>, SuiteError> {
    load_path_with(path, PathPolicy::InsideSuite)
}

/// [`load_path`] with an explicit path policy.
pub fn load_path_with(path: &Path, policy: PathPolicy) -> Result<Vec<Suite>, SuiteError> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| SuiteError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SuiteError::EmptyFolder(path.to_path_buf()));
        }
        // A folder is the plain suites in it: rollout suites are gates of their own,
        // run by `bootgate rollout FILE`, and recovery drills (minutes of crashing
        // boots per path) run when named: `bootgate run DRILL.toml`.
        let mut suites = Vec::new();
        for file in &files {
            let suite = load_file_with(file, policy)?;
            if suite.rollout.is_none() && suite.drill.is_none() {
                suites.push(suite);
            }
        }
        if suites.is_empty() {
            return Err(SuiteError::EmptyFolder(path.to_path_buf()));
        }
        Ok(suites)
    } else {
        Ok(vec![load_file_with(path, policy)?])
    }
}

/// Loads one suite file with paths confined to its folder.
pub fn load_file(path: &Path) -> Result<Suite, SuiteError> {
    load_file_with(path, PathPolicy::InsideSuite)
}

/// [`load_file`] with an explicit path policy.
pub fn load_file_with(path: &Path, policy: PathPolicy) -> Result<Suite, SuiteError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SUITE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|source| SuiteError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SUITE_BYTES {
        return Err(SuiteError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_SUITE_BYTES,
        });
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse_with(path, &text, policy),
        Err(e) => {
            // Located like any other mistake; the lossy text keeps every byte before
            // the bad one where it was, so the offset holds in it.
            let offset = e.utf8_error().valid_up_to();
            let byte = e.as_bytes().get(offset).copied().unwrap_or_default();
            let text = String::from_utf8_lossy(e.as_bytes());
            Err(located(
                path,
                &text,
                offset,
                format!("invalid UTF-8 (byte {byte:#04x}): a suite file must be UTF-8 text"),
            ))
        }
    }
}

/// A suite error at byte `offset` of `text`.
fn located(path: &Path, text: &str, offset: usize, message: String) -> SuiteError {
    let (line, column) = line_col(text, offset);
    SuiteError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
        snippet: snippet(text, line, column),
    }
}

/// Parses suite text; `path` is used for messages and to resolve relative paths,
/// which must stay inside its folder.
pub fn parse(path: &Path, text: &str) -> Result<Suite, SuiteError> {
    parse_with(path, text, PathPolicy::InsideSuite)
}

/// [`parse`] with an explicit path policy.
pub fn parse_with(path: &Path, text: &str, policy: PathPolicy) -> Result<Suite, SuiteError> {
    let at = |offset: usize, message: String| located(path, text, offset, message);
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(offset, describe_toml_error(&e, text.get(offset..)))
    })?;

    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut drivers = BTreeMap::new();
    for (name, driver) in raw.driver {
        let span = driver.span();
        let driver = driver.into_inner();
        validate_driver(&name, &driver, dir, policy).map_err(|m| at(span.start, m))?;
        drivers.insert(name, driver);
    }

    let mut names = BTreeSet::new();
    let mut scenarios = Vec::new();
    if raw.scenario.is_empty() && raw.drill.is_none() {
        return Err(at(
            0,
            "the suite has no scenarios: add a [[scenario]] table with a name and steps (or a [drill])".into(),
        ));
    }
    for scenario in raw.scenario {
        let scenario_span = scenario.span();
        let scenario = scenario.into_inner();
        let name_span = scenario.name.span();
        let name = scenario.name.into_inner();
        if !valid_name(&name) {
            return Err(at(
                name_span.start,
                format!("scenario `name` {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(at(
                name_span.start,
                format!("scenario `name` {name:?} is used twice in this suite"),
            ));
        }
        let mut steps = Vec::new();
        for (index, step) in scenario.steps.into_iter().enumerate() {
            let span = step.span();
            let step = step.into_inner();
            validate_step(&step, index, &drivers, dir, policy).map_err(|m| at(span.start, m))?;
            steps.push(step);
        }
        if steps.is_empty() {
            return Err(at(
                scenario_span.start,
                format!("scenario {name:?} has no `steps`: add at least one, e.g. steps = [{{ boot = {{}} }}]"),
            ));
        }
        if scenario.expect_title.is_some() && scenario.expect.is_none() {
            return Err(at(
                scenario_span.start,
                format!("scenario {name:?} has `expect_title` without `expect`: add expect = \"crash\" (or \"hang\", \"boot_loop\")"),
            ));
        }
        if scenario.expect == Some(Expect::SlowBoot) && scenario.gates.boot_time_limit().is_none() {
            return Err(at(
                scenario_span.start,
                format!("scenario {name:?} expects a slow boot but sets no limit: add max_boot_time to [scenario.gates]"),
            ));
        }
        if scenario.gates.max_boot_time.is_some() && scenario.gates.max_boot_ms.is_some() {
            return Err(at(
                scenario_span.start,
                format!("scenario {name:?} sets both max_boot_time and max_boot_ms: keep one"),
            ));
        }
        let boot_loop_boots = scenario.boot_loop_boots.unwrap_or(DEFAULT_BOOT_LOOP_BOOTS);
        if boot_loop_boots < 2 {
            return Err(at(
                scenario_span.start,
                format!("scenario {name:?}: `boot_loop_boots` must be at least 2"),
            ));
        }
        let cold_boot = scenario.cold_boot || matches!(steps.first(), Some(Step::Boot(_)));
        scenarios.push(Scenario {
            ignore: scenario.ignore,
            cold_boot,
            name,
            description: scenario.description,
            steps,
            gates: scenario.gates,
            expect: scenario.expect,
            expect_title: scenario.expect_title,
            boot_loop_boots,
        });
    }
    let name = raw.suite.name.unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| "suite".into(), |s| s.to_string_lossy().into_owned())
    });
    if let Some(rollout) = &raw.rollout {
        let offset = text
            .find("[rollout")
            .or_else(|| text.find("[[rollout"))
            .unwrap_or(0);
        validate_rollout(rollout).map_err(|m| at(offset, m))?;
    }
    if let Some(drill) = &raw.drill {
        let offset = text.find("[drill").unwrap_or(0);
        drill.validate().map_err(|m| at(offset, m))?;
        if drivers
            .get(&drill.driver)
            .is_some_and(|d| d.reload.is_none())
        {
            return Err(at(
                offset,
                format!(
                    "[drill] driver {:?} has no `reload` command: the drill applies the update with a live reload",
                    drill.driver
                ),
            ));
        }
        for scenario in drill.scenarios() {
            // Generated steps get the same checks as written ones (driver defined,
            // content files present and inside the suite's folder).
            for (index, step) in scenario.steps.iter().enumerate() {
                validate_step(step, index, &drivers, dir, policy)
                    .map_err(|m| at(offset, format!("[drill]: {m}")))?;
            }
            if !names.insert(scenario.name.clone()) {
                return Err(at(
                    offset,
                    format!(
                        "[drill] makes a scenario named {:?}, and the suite already has one: rename yours",
                        scenario.name
                    ),
                ));
            }
            scenarios.push(scenario);
        }
    }
    let rollout = raw.rollout;
    Ok(Suite {
        path: path.to_path_buf(),
        name,
        image: raw.suite.image,
        boot_timeout: raw.suite.boot_timeout,
        evidence: raw.suite.evidence,
        drivers,
        scenarios,
        rollout,
        drill: raw.drill,
    })
}

/// Checks that `path` (named by `field`) lies inside the suite folder `dir` once
/// `..` and symlinks are resolved, unless the policy allows anywhere. A path that
/// does not exist is left to the existence checks, which say so.
fn check_inside(dir: &Path, path: &Path, field: &str, policy: PathPolicy) -> Result<(), String> {
    if policy == PathPolicy::Anywhere {
        return Ok(());
    }
    let (Ok(real), Ok(folder)) = (path.canonicalize(), dir.canonicalize()) else {
        return Ok(());
    };
    if real.starts_with(&folder) {
        return Ok(());
    }
    Err(format!(
        "{field} {} is outside the suite's folder {}: a suite reads only files in its own folder (so a suite from elsewhere cannot copy any host file into the guest); move the file there, or pass --allow-outside-paths",
        real.display(),
        folder.display()
    ))
}

fn validate_driver(
    name: &str,
    driver: &Driver,
    dir: &Path,
    policy: PathPolicy,
) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "driver name {name:?} must use only letters, digits and '_' (it is the module's name)"
        ));
    }
    let file = match (&driver.source, &driver.module) {
        (Some(_), Some(_)) => {
            return Err(format!("driver {name:?} takes `source` or `module`, not both"))
        }
        (None, None) => {
            return Err(format!(
                "driver {name:?} needs `source` (a kernel module source folder) or `module` (a built .ko)"
            ))
        }
        (Some(source), None) => {
            let path = dir.join(source);
            if !path.is_dir() {
                return Err(format!(
                    "driver {name:?}: `source` folder {} does not exist",
                    path.display()
                ));
            }
            return check_inside(dir, &path, &format!("driver {name:?}: `source`"), policy);
        }
        (None, Some(module)) => dir.join(module),
    };
    if !file.is_file() {
        return Err(format!(
            "driver {name:?}: `module` file {} does not exist",
            file.display()
        ));
    }
    check_inside(dir, &file, &format!("driver {name:?}: `module`"), policy)
}

fn validate_rollout(rollout: &Rollout) -> Result<(), String> {
    if rollout.rings.is_empty() {
        return Err("[rollout] has no rings: add [[rollout.ring]] tables (name, targets)".into());
    }
    let mut names = BTreeSet::new();
    for ring in &rollout.rings {
        if !valid_name(&ring.name) {
            return Err(format!(
                "ring `name` {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                ring.name
            ));
        }
        if !names.insert(ring.name.clone()) {
            return Err(format!("ring `name` {:?} is used twice", ring.name));
        }
        if ring.targets.is_empty() {
            return Err(format!(
                "ring {:?} has no `targets`: add at least one, e.g. targets = [{{}}] for the suite's image",
                ring.name
            ));
        }
        let mut labels = BTreeSet::new();
        for target in &ring.targets {
            if target.cpus == Some(0) || target.memory_mib == Some(0) {
                return Err(format!(
                    "ring {:?}: `cpus` and `memory_mib` must be at least 1",
                    ring.name
                ));
            }
            if !labels.insert(target.label()) {
                return Err(format!(
                    "ring {:?}: two targets are both named {:?}; give them a `name`",
                    ring.name,
                    target.label()
                ));
            }
        }
    }
    Ok(())
}

fn validate_step(
    step: &Step,
    index: usize,
    drivers: &BTreeMap<String, Driver>,
    dir: &Path,
    policy: PathPolicy,
) -> Result<(), String> {
    if let Some(name) = step.driver() {
        let Some(driver) = drivers.get(name) else {
            let known: Vec<&str> = drivers.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown driver {name:?}: define it in a [driver.{name}] table (defined: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let needs_content = matches!(
            step,
            Step::ApplyContent(_)
                | Step::RemoveContent(_)
                | Step::RollbackContent(_)
                | Step::Recover(_)
        );
        if needs_content && driver.content_file.is_none() {
            return Err(format!(
                "driver {name:?} has no `content_file`: say which file in the content folder it reads"
            ));
        }
        if let Step::ApplyContent(apply) = step {
            if apply.reload && driver.reload.is_none() {
                return Err(format!(
                    "`reload = true` but driver {name:?} has no `reload` command"
                ));
            }
            let file = dir.join(&apply.file);
            if !file.is_file() {
                return Err(format!("content `file` {} does not exist", file.display()));
            }
            check_inside(dir, &file, "content `file`", policy)?;
        }
        if let Step::RollbackContent(RollbackContentStep {
            file: Some(file), ..
        }) = step
        {
            let file = dir.join(file);
            if !file.is_file() {
                return Err(format!("content `file` {} does not exist", file.display()));
            }
            check_inside(dir, &file, "content `file`", policy)?;
        }
    }
    match step {
        Step::Boot(_) if index != 0 => Err(
            "a `boot` step may only come first (the first boot is implicit; use `reboot` later)"
                .into(),
        ),
        Step::Reboot(r) if r.times == 0 => {
            Err("`times` in a reboot step must be at least 1".into())
        }
        Step::RollbackContent(r) if r.boots == 0 => {
            Err("`boots` in a rollback_content step must be at least 1".into())
        }
        // A rescue boot with nothing to run still proves the machine comes back
        // through safe mode; a helper VM with nothing to do is a mistake.
        Step::Recover(r)
            if r.via == RecoverVia::HelperVm && r.run.is_empty() && r.remove_content.is_none() =>
        {
            Err("a recover step with `via = \"helper_vm\"` needs something to do: `remove_content = \"DRIVER\"` or `run = [...]`".into())
        }
        Step::Exec(e) => match (&e.run, &e.argv) {
            (Some(_), Some(_)) => Err("an exec step takes `run` or `argv`, not both".into()),
            (None, None) => {
                Err("an exec step needs `run` (a shell command) or `argv` (a list)".into())
            }
            (None, Some(argv)) if argv.is_empty() => Err("`argv` must not be empty".into()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// toml's own message, without its location header (we print ours) and with a hint
/// for the mistakes people make most. `rest` is the text from the error on.
fn describe_toml_error(e: &toml::de::Error, rest: Option<&str>) -> String {
    let message = e.message().trim().to_string();
    if message.starts_with("missing field `suite`") {
        return "missing [suite] table: add `[suite]` with `image = \"demo\"`".into();
    }
    if message.is_empty() {
        // toml says nothing for some characters no token starts with (a carriage
        // return without its newline): name the character instead.
        return match rest.and_then(|r| r.chars().next()) {
            Some(c) => format!("unexpected character {c:?}"),
            None => "invalid TOML".into(),
        };
    }
    message
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
            Step::RollbackContent(s) => match &s.file {
                Some(file) => write!(f, "rollback_content {} -> {}", file.display(), s.driver),
                None => write!(f, "rollback_content {} (remove)", s.driver),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Suite, SuiteError> {
        parse(Path::new("t/suite.toml"), text)
    }

    const GOOD: &str = r#"
[suite]
name = "demo"
image = "demo"
boot_timeout = "90s"

[[scenario]]
name = "boot-and-reboot"
steps = [
  { boot = { timeout = "2m" } },
  { reboot = { times = 2 } },
  { exec = { run = "true" } },
  { exec = { argv = ["/bin/false"], expect_exit = 1, timeout = "5s" } },
]
[scenario.gates]
max_boot_time = "30s"
"#;

    #[test]
    fn rollout_rings_parse_and_mistakes_are_located() {
        let text = format!(
            "{GOOD}\n[rollout]\nsoak = \"10s\"\n[[rollout.ring]]\nname = \"canary\"\ntargets = [{{}}]\n[[rollout.ring]]\nname = \"fleet\"\ncrash_threshold = 1\ntargets = [{{ cpus = 2 }}, {{ memory_mib = 384, append = \"quiet\" }}]\n"
        );
        let suite = parse_str(&text).unwrap();
        let rollout = suite.rollout.unwrap();
        assert_eq!(rollout.soak, Some(Duration::from_secs(10)));
        assert_eq!(rollout.rings[1].crash_threshold, 1);
        assert_eq!(rollout.rings[1].targets[0].label(), "default-2cpu");
        assert_eq!(rollout.rings[1].targets[1].label(), "default-384mib-append");
        for (bad, says) in [
            ("[rollout]\nring = []\n", "no rings"),
            (
                "[[rollout.ring]]\nname = \"a\"\ntargets = [{}]\n[[rollout.ring]]\nname = \"a\"\ntargets = [{}]\n",
                "used twice",
            ),
            ("[[rollout.ring]]\nname = \"a\"\ntargets = []\n", "no `targets`"),
            ("[[rollout.ring]]\nname = \"a\"\ntargets = [{ cpu = 2 }]\n", "unknown field"),
        ] {
            let err = parse_str(&format!("{GOOD}\n{bad}")).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("t/suite.toml:"), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_a_full_suite() {
        let suite = parse_str(GOOD).unwrap();
        assert_eq!(suite.name, "demo");
        assert_eq!(suite.boot_timeout, Some(Duration::from_secs(90)));
        let s = &suite.scenarios[0];
        assert_eq!(s.steps.len(), 4);
        assert_eq!(
            s.steps[0],
            Step::Boot(BootStep {
                timeout: Some(Duration::from_secs(120))
            })
        );
        assert!(matches!(&s.steps[1], Step::Reboot(r) if r.times == 2));
        assert!(
            matches!(&s.steps[3], Step::Exec(e) if e.expect_exit == 1 && e.timeout() == Duration::from_secs(5))
        );
        assert_eq!(s.gates.max_boot_time, Some(Duration::from_secs(30)));
    }

    fn invalid(text: &str) -> (usize, usize, String) {
        match parse_str(text) {
            Err(SuiteError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn typo_in_key_names_line_column_and_key() {
        let text = GOOD.replace("max_boot_time", "max_boot_tme");
        let (line, column, message) = invalid(&text);
        assert_eq!((line, column), (16, 1));
        assert!(message.contains("max_boot_tme"), "{message}");
    }

    #[test]
    fn typo_in_step_kind_is_located() {
        let text = GOOD.replace("{ reboot =", "{ rebot =");
        let (line, _, message) = invalid(&text);
        assert_eq!(line, 11);
        assert!(message.contains("rebot"), "{message}");
    }

    #[test]
    fn bad_duration_is_located_and_explained() {
        let text = GOOD.replace("\"30s\"", "\"30 parsecs\"");
        let (line, column, message) = invalid(&text);
        assert_eq!((line, column), (16, 17));
        assert!(message.contains("30 parsecs"), "{message}");
    }

    #[test]
    fn exec_needs_exactly_one_command_form() {
        let text = GOOD.replace("{ run = \"true\" }", "{ run = \"true\", argv = [\"x\"] }");
        let (line, _, message) = invalid(&text);
        assert_eq!(line, 12);
        assert!(message.contains("not both"), "{message}");
    }

    #[test]
    fn duplicate_scenario_names_are_rejected() {
        let text = format!(
            "{GOOD}\n[[scenario]]\nname = \"boot-and-reboot\"\nsteps = [{{ boot = {{}} }}]\n"
        );
        let (line, _, message) = invalid(&text);
        assert_eq!(line, 19);
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn boot_only_first_and_reboot_at_least_once() {
        let (_, _, m) = invalid(&GOOD.replace("{ exec = { run = \"true\" } }", "{ boot = {} }"));
        assert!(m.contains("only come first"), "{m}");
        let (_, _, m) = invalid(&GOOD.replace("times = 2", "times = 0"));
        assert!(m.contains("at least 1"), "{m}");
    }

    #[test]
    fn missing_suite_table_says_what_to_add() {
        let (_, _, m) = invalid("[[scenario]]\nname = \"a\"\nsteps = [{ boot = {} }]\n");
        assert!(m.contains("[suite]"), "{m}");
    }

    #[test]
    fn driver_references_and_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("good.content"), b"x").unwrap();
        let path = dir.path().join("suite.toml");
        let base = "[suite]\nimage = \"demo\"\n\n[driver.sensor]\nsource = \"src\"\ncontent_file = \"s.content\"\n\n[[scenario]]\nname = \"a\"\n";
        let check = |steps: &str| match parse(&path, &format!("{base}steps = [{steps}]\n")) {
            Err(SuiteError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert!(parse(&path, &format!("{base}steps = [{{ apply_content = {{ driver = \"sensor\", file = \"good.content\" }} }}]\n")).is_ok());
        let (line, m) = check("{ install_driver = { driver = \"sensr\" } }");
        assert_eq!(line, 10);
        assert!(
            m.contains("unknown driver \"sensr\"") && m.contains("sensor"),
            "{m}"
        );
        let (_, m) =
            check("{ apply_content = { driver = \"sensor\", file = \"missing.content\" } }");
        assert!(m.contains("missing.content"), "{m}");
        let (_, m) = check(
            "{ apply_content = { driver = \"sensor\", file = \"good.content\", reload = true } }",
        );
        assert!(m.contains("no `reload` command"), "{m}");
        let bad_source = base.replace("source = \"src\"", "source = \"nowhere\"");
        match parse(&path, &format!("{bad_source}steps = [{{ boot = {{}} }}]\n")) {
            Err(SuiteError::Invalid { line, message, .. }) => {
                assert_eq!(line, 4);
                assert!(message.contains("nowhere"), "{message}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// A suite folder with a driver source and two content files, and the drill
    /// suite text `drill` appended to a suite with that driver.
    fn drill_suite(drill: &str) -> (tempfile::TempDir, Result<Suite, SuiteError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("good.content"), b"x").unwrap();
        std::fs::write(dir.path().join("bad.content"), b"y").unwrap();
        let path = dir.path().join("drill.toml");
        let text = format!("[suite]\nimage = \"demo\"\n\n[driver.sensor]\nsource = \"src\"\ncontent_file = \"s.content\"\nreload = \"echo 1 > /r\"\n\n{drill}");
        let suite = parse(&path, &text);
        (dir, suite)
    }

    const DRILL: &str = "[drill]\ndriver = \"sensor\"\nupdate = \"bad.content\"\nprevious = \"good.content\"\nparams = \"a=1\"\nrecovers_within = 4\nexpect_title = \"match\"\n\n[drill.path.guard]\nparams = \"loop_guard=2\"\n[drill.path.rescue_boot]\n[drill.path.offline]\n[drill.path.agent_rollback]\nparams = \"boot_delay_ms=5000\"\n";

    #[test]
    fn a_drill_becomes_one_scenario_per_recovery_path() {
        let (_dir, suite) = drill_suite(DRILL);
        let suite = suite.unwrap();
        let names: Vec<&str> = suite.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "recover-by-guard",
                "recover-by-rescue-boot",
                "recover-by-offline-removal",
                "recover-by-agent-rollback"
            ]
        );
        for scenario in &suite.scenarios {
            // The same start everywhere: install, the previous content live, the
            // update live (the crash); judged as a crash with the recovery gate.
            assert_eq!(scenario.expect, Some(Expect::Crash));
            assert_eq!(scenario.expect_title.as_deref(), Some("match"));
            assert_eq!(scenario.gates.recovers_within, Some(4));
            assert_eq!(scenario.gates.no_boot_loop, Some(false));
            let Step::ApplyContent(update) = &scenario.steps[2] else {
                panic!("{:?}", scenario.steps)
            };
            assert!(update.reload && update.file == Path::new("bad.content"));
        }
        let params = |i: usize| match &suite.scenarios[i].steps[0] {
            Step::InstallDriver(s) => s.params.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(params(0), "a=1 loop_guard=2");
        assert_eq!(params(1), "a=1");
        assert_eq!(params(3), "a=1 boot_delay_ms=5000");
        // The guard and the rollback are watched past the limit; the outside paths
        // step in after one crashed reboot.
        let loops: Vec<u32> = suite.scenarios.iter().map(|s| s.boot_loop_boots).collect();
        assert_eq!(loops, [5, 1, 1, 5]);
        let last = |i: usize| suite.scenarios[i].steps.last().unwrap().clone();
        assert!(matches!(last(0), Step::Observe(_)));
        assert!(matches!(
            &suite.scenarios[2].steps[3],
            Step::Recover(RecoverStep { via: RecoverVia::HelperVm, remove_content: Some(d), .. }) if d == "sensor"
        ));
        assert!(matches!(
            &suite.scenarios[1].steps[3],
            Step::Recover(RecoverStep {
                via: RecoverVia::RescueBoot,
                ..
            })
        ));
        match last(3) {
            Step::RollbackContent(r) => {
                assert_eq!(r.file.as_deref(), Some(Path::new("good.content")));
                assert_eq!(r.boots, 4);
            }
            other => panic!("{other:?}"),
        }
        assert!(suite.drill.is_some());
    }

    #[test]
    fn drill_mistakes_are_located_and_say_what_to_do() {
        let message = |drill: &str| match drill_suite(drill).1 {
            Err(SuiteError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected Invalid for {drill:?}, got {other:?}"),
        };
        let (line, m) = message(&DRILL.replace("[drill.path.offline]", "[drill.path.ofline]"));
        assert!(m.contains("ofline") && m.contains("offline"), "{m}");
        assert_eq!(line, 20, "the line of [drill.path.ofline]");
        let (_, m) = message(&DRILL.replace("bad.content", "gone.content"));
        assert!(m.contains("[drill]") && m.contains("gone.content"), "{m}");
        let (_, m) = message(&DRILL.replace("driver = \"sensor\"", "driver = \"sensr\""));
        assert!(m.contains("unknown driver \"sensr\""), "{m}");
        let (_, m) = message(
            "[drill]\ndriver = \"sensor\"\nupdate = \"bad.content\"\nrecovers_within = 2\n",
        );
        assert!(
            m.contains("no recovery path") && m.contains("[drill.path.guard]"),
            "{m}"
        );
        let (_, m) = message(&DRILL.replace("recovers_within = 4", "recovers_within = 0"));
        assert!(m.contains("at least 1"), "{m}");
        let (_, m) = message(&format!(
            "[[scenario]]\nname = \"recover-by-guard\"\nsteps = [{{ boot = {{}} }}]\n{DRILL}"
        ));
        assert!(m.contains("already has one"), "{m}");
        let (_, m) =
            message(&DRILL.replace("recovers_within = 4", "recovers_within = 4\nreload = true"));
        assert!(m.contains("unknown field `reload`"), "{m}");
        let (_, m) = message(&DRILL.replace(
            "recovers_within = 4",
            "recovers_within = 4\nsettle = \"soon\"",
        ));
        assert!(m.contains("invalid duration"), "{m}");
    }

    #[test]
    fn recover_and_rollback_steps_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let path = dir.path().join("suite.toml");
        let base = "[suite]\nimage = \"demo\"\n\n[driver.sensor]\nsource = \"src\"\ncontent_file = \"s.content\"\n\n[[scenario]]\nname = \"a\"\n";
        let check = |steps: &str| parse(&path, &format!("{base}steps = [{steps}]\n"));
        let suite = check("{ recover = { via = \"helper_vm\", remove_content = \"sensor\" } }, { rollback_content = { driver = \"sensor\", settle = \"3s\" } }").unwrap();
        assert_eq!(
            suite.scenarios[0].steps[0].to_string(),
            "recover (helper VM, remove sensor's content)"
        );
        assert_eq!(
            suite.scenarios[0].steps[1].to_string(),
            "rollback_content sensor (remove)"
        );
        let err = |steps: &str| check(steps).unwrap_err().to_string();
        assert!(err("{ recover = { via = \"helper_vm\" } }").contains("needs something to do"));
        assert!(
            check("{ recover = {} }").is_ok(),
            "a bare rescue boot is fine"
        );
        assert!(err("{ recover = { via = \"safe_mode\", run = [\"x\"] } }").contains("helper_vm"));
        assert!(err("{ recover = { remove_content = \"nope\" } }").contains("unknown driver"));
        assert!(
            err("{ rollback_content = { driver = \"sensor\", file = \"none.content\" } }")
                .contains("none.content")
        );
        assert!(
            err("{ rollback_content = { driver = \"sensor\", boots = 0 } }").contains("at least 1")
        );
    }

    #[test]
    fn expectations_are_checked() {
        let text = "[suite]\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nexpect = \"slow_boot\"\nsteps = [{ boot = {} }]\n";
        let (_, _, m) = invalid(text);
        assert!(m.contains("max_boot_time"), "{m}");
        let (_, _, m) = invalid(&text.replace("slow_boot", "bootloop"));
        assert!(m.contains("bootloop") && m.contains("boot_loop"), "{m}");
        let (_, _, m) = invalid(&text.replace("expect = \"slow_boot\"", "expect_title = \"x\""));
        assert!(m.contains("without `expect`"), "{m}");
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "\u{0}",
            "[suite",
            "suite = 3",
            "[[scenario]]\nsteps = 7",
            "[suite]\nimage = 1",
        ] {
            assert!(parse_str(text).is_err(), "{text:?} must be rejected");
        }
    }
}
