//! The results model: what run.json holds. The runner fills it; report sinks read it.

use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning or is removed.
pub(crate) const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
    Flaky,
}

impl Verdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Flaky => "flaky",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootOutcome {
    Ready,
    Crash,
    Hang,
    Timeout,
    Error,
}

impl BootOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BootOutcome::Ready => "ready",
            BootOutcome::Crash => "crash",
            BootOutcome::Hang => "hang",
            BootOutcome::Timeout => "timeout",
            BootOutcome::Error => "error",
        }
    }
}

/// When a boot's crash came, against the moment the guest answered (ready).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPhase {
    BeforeReady,
    /// The guest answered first: a driver that crashes some seconds after start-up.
    AfterReady,
}

impl CrashPhase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CrashPhase::BeforeReady => "before ready",
            CrashPhase::AfterReady => "after ready",
        }
    }
}

/// Ready-to-crash times as one span in seconds: "5.1 s" or "4.9-5.3 s".
pub(crate) fn after_ready_span(ms: &[u64]) -> String {
    let s = |ms: u64| format!("{:.1}", ms as f64 / 1000.0);
    let (Some(&low), Some(&high)) = (ms.iter().min(), ms.iter().max()) else {
        return String::new();
    };
    if s(low) == s(high) {
        format!("{} s", s(low))
    } else {
        format!("{}-{} s", s(low), s(high))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    Ok,
    Failed,
    Crash,
    Hang,
    Timeout,
    Error,
    Skipped,
}

impl StepOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Ok => "ok",
            StepOutcome::Failed => "failed",
            StepOutcome::Crash => "crash",
            StepOutcome::Hang => "hang",
            StepOutcome::Timeout => "timeout",
            StepOutcome::Error => "error",
            StepOutcome::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    pub run_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// True when bootgate was interrupted (Ctrl-C, SIGTERM) before finishing.
    pub interrupted: bool,
    pub bootgate_version: String,
    /// The bootgate command line that produced this run.
    pub command: Vec<String>,
    /// The settings that shape the run (for rerun).
    pub settings: RunSettings,
    pub host: HostInfo,
    pub qemu: QemuInfo,
    pub inputs: Vec<FileHash>,
    /// What each input is, by path: suite, image, kernel, firmware, driver, content or
    /// timings (the attestation names inputs by kind). Absent in older files.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub input_kinds: std::collections::BTreeMap<String, String>,
    pub scenarios: Vec<ScenarioRecord>,
    pub summary: Summary,
    /// Where the command's time went, phase by phase (start-up, preparation, each
    /// scenario's restore and steps, results). The final write of the results cannot
    /// time itself here: `-v` prints it. Absent in files written before it existed.
    #[serde(default, skip_serializing_if = "super::timings::Timings::is_empty")]
    pub timings: super::timings::Timings,
}

/// What a whole run amounts to; the one rule behind the banner, the report and the
/// exit code. A product failure outranks an infrastructure error: it is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Interrupted,
    Fail,
    Error,
    Pass,
}

impl RunOutcome {
    pub(crate) fn word(self) -> &'static str {
        match self {
            RunOutcome::Interrupted => "INTERRUPTED",
            RunOutcome::Fail => "FAIL",
            RunOutcome::Error => "ERROR",
            RunOutcome::Pass => "PASS",
        }
    }
}

impl RunRecord {
    pub fn outcome(&self) -> RunOutcome {
        let s = &self.summary;
        if self.interrupted {
            RunOutcome::Interrupted
        } else if s.fail > 0 {
            RunOutcome::Fail
        } else if s.error > 0 {
            RunOutcome::Error
        } else {
            RunOutcome::Pass
        }
    }

    /// The run's one-word outcome: INTERRUPTED, FAIL, ERROR or PASS.
    pub(crate) fn banner(&self) -> &'static str {
        self.outcome().word()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSettings {
    /// The accelerator asked for (auto, kvm, tcg).
    pub accel: String,
    pub keep: bool,
    /// Absolute paths of the suite files run.
    pub suites: Vec<String>,
    /// Whether the suites could name files outside their folders.
    #[serde(default)]
    pub allow_outside_paths: bool,
    /// The rollout target the suites ran on instead of their own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<super::target::Target>,
    /// Whether `source` drivers were built in the build sandbox. A record from before
    /// the sandbox existed has none: its builds ran unsandboxed.
    #[serde(default = "DriverBuilds::before_the_sandbox")]
    pub driver_builds: DriverBuilds,
}

/// How a suite's `source` drivers are built: in the bubblewrap sandbox, or, when the
/// user passed `--unsandboxed-builds`, directly on the host as the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverBuilds {
    #[default]
    Sandboxed,
    Unsandboxed,
}

impl DriverBuilds {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverBuilds::Sandboxed => "sandboxed",
            DriverBuilds::Unsandboxed => "unsandboxed",
        }
    }

    /// `--unsandboxed-builds` given or not.
    pub fn unsandboxed_if(flag: bool) -> DriverBuilds {
        if flag {
            DriverBuilds::Unsandboxed
        } else {
            DriverBuilds::Sandboxed
        }
    }

    fn before_the_sandbox() -> DriverBuilds {
        DriverBuilds::Unsandboxed
    }

    /// What runs made this way together amount to (shards merged into one run): one
    /// unsandboxed build makes the whole unsandboxed.
    pub(crate) fn weakest(all: impl IntoIterator<Item = DriverBuilds>) -> DriverBuilds {
        DriverBuilds::unsandboxed_if(all.into_iter().any(|b| b == DriverBuilds::Unsandboxed))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// `uname -srm` equivalent.
    pub kernel: String,
    pub cpus: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QemuInfo {
    pub version: Option<String>,
    pub accel: Option<String>,
    pub accel_notice: Option<String>,
    /// The full command line of every VM, by scenario.
    pub argv: Vec<VmArgv>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmArgv {
    pub scenario: String,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    pub flaky: usize,
}

impl Summary {
    pub(crate) fn of(scenarios: &[ScenarioRecord]) -> Summary {
        let mut s = Summary::default();
        for scenario in scenarios {
            match scenario.verdict {
                Verdict::Pass => s.pass += 1,
                Verdict::Fail => s.fail += 1,
                Verdict::Error => s.error += 1,
                Verdict::Flaky => s.flaky += 1,
            }
        }
        s
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRecord {
    /// `suite/scenario`.
    pub name: String,
    pub suite: String,
    pub suite_file: String,
    pub image: String,
    pub verdict: Verdict,
    /// Why the verdict is not pass, in one line.
    pub reason: Option<String>,
    pub duration_ms: u64,
    pub boots: Vec<BootRecord>,
    pub steps: Vec<StepRecord>,
    /// Every crash seen, in order.
    pub crashes: Vec<CrashRecord>,
    /// Hangs seen: boots that never became ready, guests that stopped answering.
    pub hangs: Vec<String>,
    /// Whether `boot_loop_boots` consecutive boots crashed, before ready or after it
    /// inside the scenario's `recovery_settle` window.
    pub boot_loop: bool,
    /// How the guest got back to a ready normal boot after its first crash.
    pub recovery: Option<RecoveryRecord>,
    /// The scenario's `recovers_within` gate (boots), when it has one.
    #[serde(default)]
    pub recovers_within: Option<u32>,
    /// The failure a negative test expected (crash, hang, boot_loop).
    pub expect: Option<String>,
    /// Files in the run folder that belong to this scenario (paths relative to it).
    pub artifacts: Vec<FileHash>,
    /// The scenario's folder inside the run folder.
    pub dir: String,
    /// A command that reruns exactly this scenario with the same inputs and settings.
    pub rerun: Vec<String>,
    /// Evidence of hangs: screenshots taken when a boot or step hung (paths in the run folder).
    #[serde(default)]
    pub hang_screenshots: Vec<String>,
    /// Time the scenario waited for a free VM slot, from the run's start.
    #[serde(default)]
    pub queued_ms: u64,
    /// The worker (VM slot) that ran it, 0-based.
    #[serde(default)]
    pub worker: usize,
    /// Earlier attempts of this scenario (with --retries), oldest first; this record
    /// is the last attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// What the stall detector saw each time it called a hang (the hang itself is in
    /// `hangs`, or in the boot loop it made after a crash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<StallRecord>,
}

/// A hang the stall detector decided: the guest made no progress for the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallRecord {
    /// The boot that stalled.
    pub boot_index: u32,
    /// `before_ready` (no agent yet: vCPUs and console) or `ready` (the agent's
    /// silence counted too).
    pub phase: String,
    /// The stall window in force.
    pub window_ms: u64,
    /// When the run without progress began, in ms from the scenario's start, and
    /// how long it lasted until the verdict.
    pub since_ms: u64,
    pub stalled_ms: u64,
    /// vCPU samples taken during it.
    pub samples: u32,
    /// CPU time QEMU's vCPU threads used during it (None: not readable).
    pub vcpu_ms: Option<u64>,
    /// The signals that showed no progress: `vcpu`, `console`, `agent`.
    pub signals: Vec<String>,
    /// The parked vCPUs: where each sat and how.
    pub vcpus: Vec<StalledVcpu>,
    /// The boot's last console line before the silence, and how long before the
    /// verdict it came (None: the boot printed nothing).
    pub last_console: Option<String>,
    pub console_silent_ms: Option<u64>,
    /// How long before the verdict the agent last answered in this boot (phase
    /// `ready` only; None there: it never answered since the boot began).
    pub agent_silent_ms: Option<u64>,
    /// The kernel's own lockup or crash report, when it reached the console before
    /// the evidence was taken: it then names the hang.
    pub kernel_report: Option<String>,
}

/// One vCPU the stall detector found parked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StalledVcpu {
    pub index: usize,
    /// Its instruction pointer, in hex.
    pub rip: String,
    /// `spinning in the kernel` or `halted with interrupts off`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootRecord {
    pub index: u32,
    /// When the boot began (power-on or reset), in ms from the scenario's start.
    pub start_ms: u64,
    pub outcome: BootOutcome,
    /// Time from power-on (or reset) to ready, when ready was reached.
    pub ready_ms: Option<u64>,
    /// Kernel parameters added to this boot (the rescue boot's).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub extra_append: Option<String>,
    /// Title of the crash that ended this boot, if one did.
    pub crash: Option<String>,
    /// This "boot" restored the image's saved ready state instead of booting;
    /// `ready_ms` then counts from QEMU's start.
    #[serde(default)]
    pub restored: bool,
    /// The restore used a standby QEMU, started while the worker's previous
    /// scenario ran; `ready_ms` then counts from the moment the scenario took it.
    #[serde(default)]
    pub standby: bool,
    /// Which installed drivers were loaded when this boot became ready. None when
    /// nothing was checked: no driver installed to load at boot, a rescue boot (it
    /// skips them on purpose), or a Windows PnP package.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub drivers: Option<DriversAtBoot>,
    /// How this boot was started when a reboot could not go through the guest
    /// agent: the manifest's `guest.reboot` fallback and why it was needed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reboot_via: Option<String>,
    /// Whether the crash that ended this boot came before or after ready (absent in
    /// older run.json files: [`BootRecord::crash_phase`] reads those too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crashed: Option<CrashPhase>,
    /// From ready to that crash, when it came after ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_after_ready_ms: Option<u64>,
}

/// The drivers installed to load at every boot, as one boot found them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriversAtBoot {
    pub loaded: Vec<String>,
    /// Installed to load at boot, but not loaded: a `fail` unless expected.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub missing: Vec<String>,
    /// Why each missing driver is missing, where the guest says (Windows: the
    /// service state and this boot's Service Control Manager / Code Integrity
    /// events).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty", default)]
    pub reasons: std::collections::BTreeMap<String, String>,
}

impl BootRecord {
    /// When this boot's crash came, if it crashed. Records written before `crashed`
    /// existed still say it: a crash after ready left the boot's outcome `ready`.
    pub(crate) fn crash_phase(&self) -> Option<CrashPhase> {
        self.crash.as_ref()?;
        Some(
            self.crashed
                .unwrap_or(if self.outcome == BootOutcome::Ready {
                    CrashPhase::AfterReady
                } else {
                    CrashPhase::BeforeReady
                }),
        )
    }

    /// When the crash came, in words: "crashed 5.1 s after ready", "crashed before
    /// ready"; None for a boot that did not crash.
    pub(crate) fn crash_when(&self) -> Option<String> {
        Some(match (self.crash_phase()?, self.crash_after_ready_ms) {
            (CrashPhase::AfterReady, Some(ms)) => {
                format!("crashed {:.1} s after ready", ms as f64 / 1000.0)
            }
            (phase, _) => format!("crashed {}", phase.as_str()),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: String,
    /// When the step began, in ms from the scenario's start.
    pub start_ms: u64,
    pub outcome: StepOutcome,
    pub duration_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrashRecord {
    pub title: String,
    pub kind: String,
    /// Where the title came from: "console" (a crash report), "hyperv" (a bugcheck
    /// code in the panic event) or "pvpanic" (a panic event alone).
    pub source: String,
    /// Every signal that reported it: "pvpanic", "console", "hyperv", "reset".
    pub signals: Vec<String>,
    pub boot_index: u32,
    pub excerpt: Vec<String>,
    /// From the first sign of the crash (panic event or console report) to bootgate's
    /// decision.
    pub detect_ms: u64,
    /// Screenshot taken while the crashed guest was paused (path in the run folder).
    pub screenshot: Option<String>,
    /// Memory dump of the crashed guest (path in the run folder), when taken.
    pub dump: Option<String>,
    /// Dump format: "kdump-zlib", "kdump-lzo", "kdump-snappy" (crash), "elf" (gdb,
    /// crash) or "win-dmp" (WinDbg).
    pub dump_format: Option<String>,
    /// Why no dump was taken, when none was (or why it is not in the format asked).
    pub dump_note: Option<String>,
    /// The dump's size on disk (what the run's dump budget was charged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_bytes: Option<u64>,
    /// How long QEMU took to write the dump (the guest stays paused meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_ms: Option<u64>,
    /// A Windows bugcheck: from the panic event (Hyper-V crash registers) or read
    /// back from the WinDbg dump's header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bugcheck: Option<BugcheckRecord>,
    /// Dumps the guest itself wrote (Windows: the minidump folder, MEMORY.DMP),
    /// copied out through the agent after the next ready boot (paths in the run folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guest_dumps: Vec<String>,
    /// Why guest dumps are missing or incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_dumps_note: Option<String>,
    /// Windows: evidence the NTFS helper VM copied off the stopped guest's disk
    /// during an offline recovery (minidumps, the memory dump's header, System.evtx;
    /// paths in the run folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline_evidence: Vec<String>,
    /// The console log this crash appears in (path in the run folder).
    pub console: Option<String>,
    /// How the crash reached the host, which decided what was captured: "host-paused"
    /// (QEMU paused the guest at its panic event; host-side dump), "host-stopped" (a
    /// console report: bootgate stopped the guest), "guest-writing-dump"
    /// (GUEST_CRASHLOADED: the guest wrote its own dump and rebooted itself) or
    /// "reset" (an unasked reset: nothing left to capture). Absent in run.json files
    /// from before the capture model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    /// What the capture model did about this crash, or could not do (the guest's own
    /// reset after its dump, a wait for it that ran out, why no in-guest dump is
    /// expected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_note: Option<String>,
    /// What triage made of it: the driver frames at their source lines, the crash
    /// tool's reading of the dump, or why neither could be had. Absent in run.json
    /// files from before triage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage: Option<TriageRecord>,
}

/// A crash's triage (`crash-N.triage.txt` holds it all, tools' output verbatim).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageRecord {
    /// The triage file (path in the run folder).
    pub file: String,
    /// Where it faulted, in one line: `drivers/demo_sensor/demo_sensor.c:255:7 in
    /// sensor_match_fields [demo_sensor]`; None when no frame could be resolved.
    pub at: Option<String>,
    /// The candidate drivers' frames of the trace, faulting one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<TriageFrame>,
    /// The crash tool's reading of the dump, in one line (`exception RIP:
    /// sensor_match_fields+26 [demo_sensor]`), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
    /// What could not be done and why (a stripped module, no debug vmlinux, a tool
    /// missing), each saying what would make it possible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl TriageRecord {
    /// The one line a summary shows: where it faulted, or why that is not known.
    pub fn headline(&self) -> Option<String> {
        match (&self.at, self.notes.first()) {
            (Some(at), _) => Some(format!("at {at}")),
            (None, Some(note)) if !self.frames.is_empty() => Some(format!("triage: {note}")),
            _ => None,
        }
    }

    /// The triage in a few lines of text (JUnit's failure text): the headline, each
    /// driver frame, the dump's reading and what could not be done.
    pub fn text(&self) -> String {
        let mut text = String::new();
        if let Some(at) = &self.at {
            text.push_str(&format!("at {at}\n"));
        }
        for frame in &self.frames {
            match (&frame.location, &frame.function) {
                (Some(location), Some(function)) => {
                    text.push_str(&format!("  {}: {location} in {function}\n", frame.frame))
                }
                _ => text.push_str(&format!("  {}: no source line\n", frame.frame)),
            }
            for caller in &frame.inlined_by {
                text.push_str(&format!("    inlined by {caller}\n"));
            }
        }
        if let Some(dump) = &self.dump {
            text.push_str(&format!("dump (crash): {dump}\n"));
        }
        for note in &self.notes {
            text.push_str(&format!("note: {note}\n"));
        }
        if !self.file.is_empty() {
            text.push_str(&format!("triage: {}\n", self.file));
        }
        text
    }
}

/// One driver frame resolved to its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageFrame {
    /// The frame as the trace printed it: `sensor_load.cold+0x156 [demo_sensor]`.
    pub frame: String,
    /// The faulting instruction (the others are return addresses).
    pub faulting: bool,
    /// The innermost source location, `file:line:column`, the file relative to the
    /// suite's folder where it is the driver's source; None without debug info.
    pub location: Option<String>,
    /// The function at that location (an inlined one when the compiler inlined it).
    pub function: Option<String>,
    /// The chain of callers the compiler inlined it into, innermost first:
    /// `dsc_install at drivers/demo_sensor/demo_sensor.c:309:2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inlined_by: Vec<String>,
}

/// One earlier attempt at a scenario that was retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based.
    pub attempt: u32,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub duration_ms: u64,
    /// Its evidence folder (in the run folder).
    pub dir: String,
    /// Titles of its crashes.
    pub crashes: Vec<String>,
    /// Its files, hashed.
    pub artifacts: Vec<FileHash>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BugcheckRecord {
    /// `0x50`.
    pub code: String,
    /// `PAGE_FAULT_IN_NONPAGED_AREA`, when the code is in bootgate's table.
    pub name: Option<String>,
    /// The four parameters, hex.
    pub parameters: Vec<String>,
    /// "hyperv" (the panic event) or "dump" (the dump header).
    pub from: String,
}

/// [`RecoveryRecord::how`] when no recovery step acted: the guest's own boots brought
/// it back (a boot-loop guard, a crash that does not repeat).
pub(crate) const RECOVERED_BY_ITSELF: &str = "its own boots";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// Boots from the first crash to the first ready normal boot, that boot included.
    pub boots: u32,
    /// Seconds from the first crash to that boot's ready.
    pub seconds: f64,
    /// The boot index that was ready.
    pub ready_boot: u32,
    /// What brought it back: "its own boots" (a guard, a transient crash),
    /// "rescue boot", "offline removal (helper VM)" or "agent rollback".
    #[serde(default)]
    pub how: String,
    /// How long that boot then stayed up past ready before it counted (the
    /// scenario's settle window); absent in run.json files from before the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run.json from before the sandbox says nothing of driver builds: they ran
    /// unsandboxed, and a merge with one such shard is unsandboxed too.
    #[test]
    fn settings_without_driver_builds_were_unsandboxed() {
        let old: RunSettings =
            serde_json::from_str(r#"{"accel":"tcg","keep":false,"suites":[]}"#).unwrap();
        assert_eq!(old.driver_builds, DriverBuilds::Unsandboxed);
        assert_eq!(
            RunSettings::default().driver_builds,
            DriverBuilds::Sandboxed
        );
        let json = serde_json::to_value(RunSettings::default()).unwrap();
        assert_eq!(json["driver_builds"], "sandboxed");
        use DriverBuilds::{Sandboxed, Unsandboxed};
        assert_eq!(DriverBuilds::weakest([Sandboxed, Sandboxed]), Sandboxed);
        assert_eq!(DriverBuilds::weakest([Sandboxed, Unsandboxed]), Unsandboxed);
    }

    /// A crash from a run.json written before the capture model has no `capture`:
    /// it still loads, and a new one writes the field.
    #[test]
    fn crash_records_from_before_the_capture_model_still_load() {
        let old = serde_json::json!({
            "title": "t", "kind": "reset", "source": "reset", "signals": ["reset"],
            "boot_index": 2, "excerpt": [], "detect_ms": 0, "screenshot": null,
            "dump": null, "dump_format": null, "dump_note": null, "console": null
        });
        let crash: CrashRecord = serde_json::from_value(old).unwrap();
        assert!(crash.capture.is_none() && crash.capture_note.is_none());
        let new = CrashRecord {
            capture: Some("guest-writing-dump".into()),
            ..crash
        };
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["capture"], "guest-writing-dump");
        assert!(json.get("capture_note").is_none());
    }

    #[test]
    fn boot_records_without_the_crash_phase_still_load_and_say_when() {
        // A boot from a run.json written before `crashed` existed: a crash after
        // ready left its outcome `ready`.
        let old: BootRecord = serde_json::from_str(
            r#"{"index":2,"start_ms":10,"outcome":"ready","ready_ms":9000,"crash":"BUG: x"}"#,
        )
        .unwrap();
        assert_eq!(old.crash_phase(), Some(CrashPhase::AfterReady));
        assert_eq!(old.crash_when().as_deref(), Some("crashed after ready"));
        let before: BootRecord = serde_json::from_str(
            r#"{"index":3,"start_ms":10,"outcome":"crash","ready_ms":null,"crash":"BUG: x"}"#,
        )
        .unwrap();
        assert_eq!(before.crash_when().as_deref(), Some("crashed before ready"));
        let new = BootRecord {
            crashed: Some(CrashPhase::AfterReady),
            crash_after_ready_ms: Some(5_140),
            ..old
        };
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["crashed"], "after_ready");
        assert_eq!(json["crash_after_ready_ms"], 5_140);
        let back: BootRecord = serde_json::from_value(json).unwrap();
        assert_eq!(
            back.crash_when().as_deref(),
            Some("crashed 5.1 s after ready")
        );
        let clean: BootRecord = serde_json::from_str(
            r#"{"index":1,"start_ms":0,"outcome":"ready","ready_ms":100,"crash":null}"#,
        )
        .unwrap();
        assert_eq!(clean.crash_phase(), None);
    }
}
