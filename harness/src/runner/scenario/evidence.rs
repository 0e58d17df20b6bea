//! What a crash or hang leaves behind: its record, a screenshot and memory dump
//! taken while the guest is still stopped, and (Windows) the dumps the guest wrote
//! itself, copied out at its next ready boot. Failing to capture evidence is noted on
//! the crash, never turned into a verdict.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::capture::{self, CapturePlan, GuestDump, HostDump};
use super::machine::Machine;
use super::Stop;
use crate::detect;
use crate::detect::boot_watch::{bugcheck_line, Crash};
use crate::guest::DumpFormat;
use crate::model::record::{BootOutcome, BugcheckRecord, CrashRecord};
use crate::qemu::vm::QMP_COMMAND_TIMEOUT;
use crate::suite::DumpPolicy;
use crate::util::human_duration;

/// The code a dump of a live (not crashed) Windows guest carries.
const LIVE_SYSTEM_DUMP: u32 = 0x161;

/// Time a screenshot may take.
pub(crate) const SCREENDUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a memory dump may take (written by QEMU while the guest is stopped).
pub(crate) const DUMP_TIMEOUT: Duration = Duration::from_secs(300);
/// Time to list or copy out one of the dumps a Windows guest wrote itself.
pub(crate) const GUEST_DUMP_TIMEOUT: Duration = Duration::from_secs(120);

impl Machine<'_> {
    /// Records the crash the watch decided, with its evidence; the stop it makes.
    pub(super) fn record_crash(&mut self, crash: Crash) -> Stop {
        let hv_crash = crate::qemu::command::has_hv_crash(self.setup.manifest, self.setup.accel);
        let plan = capture::plan(crash.capture, hv_crash, self.setup.accel);
        self.after_crash = Some((plan.next_boot, crash.seen_at));
        let seen_utc = jiff::Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(crash.seen_at.elapsed()).unwrap_or_default(),
            )
            .unwrap_or_else(|_| jiff::Timestamp::now());
        self.crash_seen_utc.push(seen_utc);
        self.note_crash_timing(crash.seen_at, crash.after_ready);
        self.note_crash(crash.seen_at, crash.boot);
        let console = self
            .qemu
            .vm
            .as_ref()
            .and_then(|vm| vm.console_path.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        self.found.crashes.push(CrashRecord {
            title: crash.title.clone(),
            kind: crash.kind,
            source: crash.source.into(),
            signals: crash.signals.iter().map(|s| s.to_string()).collect(),
            boot_index: crash.boot,
            excerpt: crash.excerpt,
            detect_ms: crash.seen_at.elapsed().as_millis() as u64,
            screenshot: None,
            dump: None,
            dump_format: None,
            dump_note: None,
            bugcheck: crash.bugcheck.map(|b| BugcheckRecord::of(&b, "hyperv")),
            guest_dumps: Vec::new(),
            guest_dumps_note: match plan.guest_dump {
                GuestDump::Expected => None,
                GuestDump::NotExpected(why) => Some(why.into()),
            },
            offline_evidence: Vec::new(),
            console,
            capture: Some(crash.capture.as_str().into()),
            capture_note: None,
            triage: None,
        });
        self.capture_crash_evidence(&plan);
        // The boot keeps the title the signals gave, whatever a dump renames it to.
        if let Some(boot) = self.found.boots.last_mut() {
            boot.crash = Some(crash.title);
            if !crash.after_ready {
                boot.outcome = BootOutcome::Crash;
            }
        }
        Stop::Crash
    }

    /// Records a hang, with its evidence; the stop it makes.
    pub(super) fn hang(&mut self, why: String) -> Stop {
        if !self.watch.is_ready() {
            self.set_boot_outcome(BootOutcome::Hang);
        }
        self.found.hangs.push(why.clone());
        self.capture_hang_evidence();
        Stop::Hang(why)
    }

    /// The boot did not reach ready within `timeout`: a hang of its own kind.
    pub(super) fn boot_timed_out(&mut self, timeout: Duration) -> Stop {
        self.set_boot_outcome(BootOutcome::Timeout);
        let why = format!(
            "boot {} did not reach ready within {} (the guest agent never answered)",
            self.boot_index(),
            human_duration(timeout)
        );
        self.found.hangs.push(why.clone());
        // What the screen shows (a recovery screen, a stuck boot logo) is often the
        // only clue to why the agent never came.
        self.capture_hang_evidence();
        Stop::Hang(why)
    }

    /// A path in the scenario's folder, and the same path relative to the run folder.
    pub(super) fn evidence_path(&self, name: &str) -> (PathBuf, String) {
        (
            self.setup.artifacts.join(name),
            format!("{}/{name}", self.setup.rel_dir),
        )
    }

    /// Screenshot (and, by the suite's policy, memory dump) of the crash just recorded,
    /// taken while the crashed guest is still paused.
    fn capture_crash_evidence(&mut self, plan: &CapturePlan) {
        let n = self.found.crashes.len();
        let screenshot = if plan.screenshot {
            self.screenshot(&format!("crash-{n}.png"))
        } else {
            None
        };
        let wanted = match self.setup.evidence.memory_dumps {
            DumpPolicy::All => true,
            DumpPolicy::First => n == 1,
            DumpPolicy::None => false,
        };
        let (dump, note, format) = match plan.host_dump {
            HostDump::Skip(why) => (None, Some(why.to_string()), None),
            HostDump::Take | HostDump::StopAndTake if !wanted => (
                None,
                Some(
                    format!(
                        "not dumped: memory_dumps = {:?}",
                        self.setup.evidence.memory_dumps
                    )
                    .to_lowercase(),
                ),
                None,
            ),
            HostDump::Take | HostDump::StopAndTake => {
                if plan.host_dump == HostDump::StopAndTake {
                    // A console report without a paused panic event: the guest may
                    // still run, so stop it for a consistent dump (`system_reset`
                    // and `cont` resume it later).
                    if let Some(qmp) = self.qemu.vm.as_ref().and_then(|vm| vm.qmp()) {
                        let _ = qmp.execute("stop", None, QMP_COMMAND_TIMEOUT);
                    }
                }
                let (dump, note, format) = self.dump_with_fallback(&format!("crash-{n}"));
                (dump, note, Some(format))
            }
        };
        let format = format.unwrap_or(self.setup.manifest.guest.dump_format);
        // A WinDbg dump records the bugcheck in its header: where the panic event
        // carried none (no hv-crash, e.g. under TCG), it names the crash.
        let from_dump = match (&dump, format) {
            (Some(rel), DumpFormat::WinDmp) => {
                let file = Path::new(rel).file_name().unwrap_or_default();
                detect::win_dump::read_bugcheck(&self.setup.artifacts.join(file))
                    .ok()
                    // 0x161 LIVE_SYSTEM_DUMP: the header of a dump of a running guest.
                    .filter(|b| b.code != LIVE_SYSTEM_DUMP)
            }
            _ => None,
        };
        let Some(crash) = self.found.crashes.last_mut() else {
            return;
        };
        crash.screenshot = screenshot;
        crash.dump_format = dump.as_ref().map(|_| format.as_str().to_string());
        crash.dump = dump;
        crash.dump_note = note;
        if let Some(bugcheck) = from_dump {
            crash.signals.push("dump".into());
            if crash.bugcheck.is_none() {
                if crash.source != "console" {
                    crash.title = bugcheck.title(None);
                    crash.kind = "bugcheck".into();
                    crash.source = "dump".into();
                    crash.excerpt = vec![bugcheck_line(&bugcheck)];
                }
                crash.bugcheck = Some(BugcheckRecord::of(&bugcheck, "dump"));
            }
        }
    }

    fn capture_hang_evidence(&mut self) {
        let n = self.found.hangs.len();
        if let Some(shot) = self.screenshot(&format!("hang-{n}.png")) {
            self.found.hang_screenshots.push(shot);
        }
        if self.setup.evidence.dump_on_hang {
            // A hung guest is still running: stop it first so the dump is consistent.
            if let Some(qmp) = self.qemu.vm.as_ref().and_then(|vm| vm.qmp()) {
                let _ = qmp.execute("stop", None, QMP_COMMAND_TIMEOUT);
            }
            if let (Some(dump), _, _) = self.dump_with_fallback(&format!("hang-{n}")) {
                if let Some(hang) = self.found.hangs.last_mut() {
                    hang.push_str(&format!(" (memory dump: {dump})"));
                }
            }
        }
    }

    /// QMP screendump to a PNG in the scenario folder; its run-relative path.
    fn screenshot(&mut self, name: &str) -> Option<String> {
        let (path, rel) = self.evidence_path(name);
        let qmp = self.qemu.vm.as_ref()?.qmp()?;
        let args = serde_json::json!({"filename": path.display().to_string(), "format": "png"});
        match qmp.execute("screendump", Some(args), SCREENDUMP_TIMEOUT) {
            Ok(_) if path.is_file() => Some(rel),
            _ => None,
        }
    }

    /// A dump in the manifest's format; a win-dmp that QEMU refuses because the
    /// guest's fwcfg driver did not fill vmcoreinfo (QEMU 7.2 dump/win_dump.c:
    /// "win-dump: invalid vmcoreinfo note size", "win-dump: invalid header") is
    /// taken again as ELF, with a note saying why.
    fn dump_with_fallback(&mut self, stem: &str) -> (Option<String>, Option<String>, DumpFormat) {
        let format = self.setup.manifest.guest.dump_format;
        let (dump, note) = self.dump(stem, format);
        match (&dump, &note) {
            (None, Some(why)) if format == DumpFormat::WinDmp && why.contains("win-dump") => {
                let (dump, elf_note) = self.dump(stem, DumpFormat::Elf);
                let note = format!("win-dmp refused ({why}; is the virtio-win fwcfg driver installed?): dumped as ELF instead");
                let note = match elf_note {
                    Some(more) => format!("{note}; {more}"),
                    None => note,
                };
                (dump, Some(note), DumpFormat::Elf)
            }
            _ => (dump, note, format),
        }
    }

    /// dump-guest-memory in the background (`detach`), waiting for DUMP_COMPLETED:
    /// the dump's run-relative path, or a note on why there is none.
    fn dump(&mut self, stem: &str, format: DumpFormat) -> (Option<String>, Option<String>) {
        let memory = self.setup.manifest.machine.memory_mib;
        if memory > self.setup.evidence.dump_max_mib {
            return (
                None,
                Some(format!(
                    "not dumped: the guest has {memory} MiB, over dump_max_mib = {}",
                    self.setup.evidence.dump_max_mib
                )),
            );
        }
        let (path, rel) = self.evidence_path(&format!("{stem}.{}", format.extension()));
        let Some(qmp) = self.qemu.vm.as_ref().and_then(|vm| vm.qmp()) else {
            return (None, Some("not dumped: QMP is not connected".into()));
        };
        // `paging` is required; false (physical memory as-is, no walk of a crashed
        // kernel's page tables) is also the only value the non-ELF formats accept.
        let args = serde_json::json!({
            "paging": false,
            "protocol": format!("file:{}", path.display()),
            "detach": true,
            "format": format.as_str(),
        });
        if let Err(e) = qmp.execute("dump-guest-memory", Some(args), QMP_COMMAND_TIMEOUT) {
            return (None, Some(format!("dump failed: {e}")));
        }
        match self.wait_event(
            "DUMP_COMPLETED",
            Instant::now() + DUMP_TIMEOUT,
            DUMP_TIMEOUT,
        ) {
            Ok(data) => match data.get("error").and_then(|e| e.as_str()) {
                Some(error) => (None, Some(format!("dump failed: {error}"))),
                None if path.is_file() => (Some(rel), None),
                None => (None, Some("dump failed: QEMU wrote no file".into())),
            },
            Err(why) => (None, Some(format!("dump failed: {why}"))),
        }
    }
}

/// A guest file name made safe as a host file name (no separators, no dot-dot).
pub(super) fn sanitize_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.trim_start_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_dump_names_cannot_leave_the_evidence_folder() {
        assert_eq!(
            sanitize_file_name("112225-9234-01.dmp"),
            "112225-9234-01.dmp"
        );
        assert_eq!(sanitize_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize_file_name("MEMORY.DMP"), "MEMORY.DMP");
        assert_eq!(sanitize_file_name("a b\u{e9}.dmp"), "a_b_.dmp");
    }
}
