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
use crate::runner::dump_budget;
use crate::suite::DumpPolicy;
use crate::util::human_duration;

/// The code a dump of a live (not crashed) Windows guest carries.
const LIVE_SYSTEM_DUMP: u32 = 0x161;

/// Time a screenshot may take.
pub(crate) const SCREENDUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a memory dump may take (written by QEMU while the guest is stopped); also
/// how long one may wait for room in the run's dump budget that other workers'
/// dumps hold while they are written.
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
            dump_bytes: None,
            dump_ms: None,
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
        // A WinDbg dump records the bugcheck in its header: where the panic event
        // carried none (no hv-crash, e.g. under TCG), it names the crash.
        let from_dump = match (&dump, format) {
            (Some(dumped), Some(DumpFormat::WinDmp)) => {
                let file = Path::new(&dumped.rel).file_name().unwrap_or_default();
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
        crash.dump_format = format
            .filter(|_| dump.is_some())
            .map(|f| f.as_str().to_string());
        crash.dump_bytes = dump.as_ref().map(|d| d.bytes);
        crash.dump_ms = dump.as_ref().map(|d| d.ms);
        crash.dump = dump.map(|d| d.rel);
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
            let (dump, note, _) = self.dump_with_fallback(&format!("hang-{n}"));
            let said = match (dump, note) {
                (Some(dump), _) => Some(format!(" (memory dump: {})", dump.rel)),
                (None, Some(note)) => Some(format!(" ({note})")),
                (None, None) => None,
            };
            if let (Some(said), Some(hang)) = (said, self.found.hangs.last_mut()) {
                hang.push_str(&said);
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

    /// The dump formats this machine's QEMU writes, asked once per machine. A QEMU
    /// that cannot say is taken to write ELF only (every QEMU does).
    fn dump_formats(&mut self) -> Vec<String> {
        if let Some(known) = &self.dump_formats {
            return known.clone();
        }
        let qmp = self.qemu.vm.as_ref().and_then(|vm| vm.qmp());
        let asked = qmp.and_then(|qmp| {
            qmp.execute(
                "query-dump-guest-memory-capability",
                None,
                QMP_COMMAND_TIMEOUT,
            )
            .ok()
        });
        let formats: Vec<String> = asked
            .as_ref()
            .and_then(|r| r.get("formats"))
            .and_then(|f| f.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_else(|| vec![DumpFormat::Elf.as_str().to_string()]);
        self.dump_formats = Some(formats.clone());
        formats
    }

    /// A dump in the manifest's format (`auto`: see [`DumpFormat::resolve`]). A
    /// kdump format this QEMU does not write, or a win-dmp that QEMU refuses because
    /// the guest's fwcfg driver did not fill vmcoreinfo (QEMU 7.2 dump/win_dump.c:
    /// "win-dump: invalid vmcoreinfo note size", "win-dump: invalid header"), is
    /// taken as ELF instead, with a note saying why.
    fn dump_with_fallback(&mut self, stem: &str) -> (Option<Dumped>, Option<String>, DumpFormat) {
        let formats = self.dump_formats();
        let format = self
            .setup
            .manifest
            .guest
            .dump_format
            .resolve(self.setup.manifest.os, &formats);
        if format.is_kdump() && !formats.iter().any(|f| f == format.as_str()) {
            let (dump, note) = self.dump(stem, DumpFormat::Elf);
            let why = format!(
                "{} is not one of this QEMU's dump formats ({}): dumped as ELF instead",
                format.as_str(),
                formats.join(", ")
            );
            return (dump, Some(join_notes(why, note)), DumpFormat::Elf);
        }
        let (dump, note) = self.dump(stem, format);
        match (&dump, &note) {
            (None, Some(why)) if format == DumpFormat::WinDmp && why.contains("win-dump") => {
                let (dump, elf_note) = self.dump(stem, DumpFormat::Elf);
                let note = format!("win-dmp refused ({why}; is the virtio-win fwcfg driver installed?): dumped as ELF instead");
                (dump, Some(join_notes(note, elf_note)), DumpFormat::Elf)
            }
            _ => (dump, note, format),
        }
    }

    /// dump-guest-memory in the background (`detach`), waiting for DUMP_COMPLETED:
    /// the dump written, or a note on why there is none. The run's dump budget must
    /// hold the dump's worst case first and is charged its real size after. A dump
    /// that failed (a full disk: QEMU's DUMP_COMPLETED error) has its partial file
    /// removed, so the results never list a cut dump as evidence.
    fn dump(&mut self, stem: &str, format: DumpFormat) -> (Option<Dumped>, Option<String>) {
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
        let budget = self.setup.dump_budget;
        let reservation = match budget.reserve(
            self.setup.evidence.dump_budget_mib,
            dump_budget::worst_case_bytes(memory),
            DUMP_TIMEOUT,
        ) {
            Ok(r) => r,
            Err(note) => return (None, Some(note)),
        };
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
        let started = Instant::now();
        let result = qmp
            .execute("dump-guest-memory", Some(args), QMP_COMMAND_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                self.wait_event(
                    "DUMP_COMPLETED",
                    Instant::now() + DUMP_TIMEOUT,
                    DUMP_TIMEOUT,
                )
            })
            .and_then(|data| match data.get("error").and_then(|e| e.as_str()) {
                Some(error) => Err(error.to_string()),
                None => Ok(()),
            });
        let ms = started.elapsed().as_millis() as u64;
        match result.and_then(|()| {
            std::fs::metadata(&path)
                .map(|m| m.len())
                .map_err(|_| "QEMU wrote no file".to_string())
        }) {
            Ok(bytes) => {
                reservation.charge(bytes);
                (Some(Dumped { rel, bytes, ms }), None)
            }
            Err(why) => (None, Some(remove_cut_dump(&path, &rel, &why))),
        }
    }
}

/// A memory dump QEMU wrote.
pub(super) struct Dumped {
    /// Its path in the run folder.
    pub(super) rel: String,
    pub(super) bytes: u64,
    /// How long QEMU took to write it.
    pub(super) ms: u64,
}

/// Removes what a failed dump left (QEMU does not remove a dump cut by a full
/// disk, and one still written after a timeout goes on into an unlinked file): the
/// note for the crash, naming the failure and what became of the file.
fn remove_cut_dump(path: &Path, rel: &str, why: &str) -> String {
    // QEMU's message names the write that failed, not why: a full disk is the
    // usual cause, and what is left free (measured before the file goes) shows it.
    let free = path
        .parent()
        .and_then(crate::util::free_bytes)
        .filter(|&free| free < FULL_DISK_BYTES)
        .map(|free| format!("; the results disk is full ({} KiB free)", free / 1024))
        .unwrap_or_default();
    let why = format!("{why}{free}");
    match std::fs::remove_file(path) {
        Ok(()) => format!("dump failed: {why} (the partial {rel} was removed)"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("dump failed: {why}"),
        Err(e) => format!("dump failed: {why} (and its partial {rel} could not be removed: {e})"),
    }
}

/// Free space below which a failed dump is put down to a full disk: less than one
/// page-sized write and a descriptor block QEMU writes at a time.
const FULL_DISK_BYTES: u64 = 1024 * 1024;

fn join_notes(first: String, more: Option<String>) -> String {
    match more {
        Some(more) => format!("{first}; {more}"),
        None => first,
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
