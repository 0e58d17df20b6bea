//! Bringing a crashed guest back from outside: the rescue boot, the helper VM that
//! edits the stopped guest's disk offline, and the rollback through the agent. How
//! many boots and seconds each takes is what a recovery drill compares, so each one
//! ends with the guest's own next normal boot reaching ready (which the machine
//! notes as the recovery) or with the reason it could not.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::machine::{Machine, MachineSetup};
use super::ntfs::{run_helper, HelperSetup, WindowsEdit};
use super::{StepError, Stop};
use crate::agent::worker::REQUEST_TIMEOUT;
use crate::guest::GuestCommand;
use crate::guest::OsFamily;
use crate::model::record::StepOutcome;
use crate::model::Emitter;
use crate::qemu::vm::VmDir;
use crate::suite::{RecoverStep, RollbackContentStep};
use crate::util::human_duration;

/// The helper VM's evidence (console, QEMU log) goes in this subfolder of the
/// scenario's.
pub(crate) const HELPER_DIR: &str = "helper-vm";
/// Windows: the evidence the NTFS helper copies off the disk goes in this subfolder
/// of [`HELPER_DIR`].
const EVIDENCE_DIR: &str = "evidence";
/// Time one recovery command (mount, delete, a suite's `run` line) may take.
const RECOVERY_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

impl Machine<'_> {
    /// Boots the guest itself with third-party drivers skipped, deletes the content
    /// and runs the step's commands there, then boots it normally.
    pub(super) fn rescue_boot(
        &mut self,
        s: &RecoverStep,
        content: Option<String>,
        emitter: &Emitter,
    ) -> Result<String, StepError> {
        let append = self.guest_command(self.profile.safe_mode_append(&self.installed))?;
        // A fresh power-on of the same disk, drivers skipped.
        self.power_on(Some(append.clone()), None)?;
        self.wait_ready(self.setup.boot_timeout, emitter)?;
        let mut done = Vec::new();
        if let Some(path) = &content {
            let command = self.guest_command(self.profile.remove_file(path))?;
            self.exec(command, 0, RECOVERY_COMMAND_TIMEOUT)?;
            done.push(format!("removed {path}"));
        }
        for line in &s.run {
            let command = self.profile.shell_command(line);
            self.exec(command, 0, RECOVERY_COMMAND_TIMEOUT)?;
        }
        if !s.run.is_empty() {
            done.push(format!("ran {} command(s)", s.run.len()));
        }
        let sync = self.guest_command(self.profile.sync_disks())?;
        self.exec(sync, 0, REQUEST_TIMEOUT)?;
        self.recovery.by = Some("rescue boot");
        self.power_on(None, None)?;
        self.wait_ready(self.setup.boot_timeout, emitter)?;
        Ok(format!(
            "rescue boot ({append}): {}; the next normal boot reached ready",
            done.join(", ")
        ))
    }

    /// Stops the guest, boots a helper VM of the same image with the guest's disk
    /// as its second disk, deletes the content (and runs the step's commands) there,
    /// then boots the guest normally. Nothing on the host needs privileges: the disk
    /// is the scenario's own overlay, opened by an unprivileged QEMU. Trouble in the
    /// helper is infrastructure (`error`), never the driver's fault.
    pub(super) fn helper_vm(
        &mut self,
        s: &RecoverStep,
        content: Option<String>,
        emitter: &Emitter,
    ) -> Result<String, StepError> {
        if self.profile.os == OsFamily::Windows {
            return self.helper_vm_windows(s, content, emitter);
        }
        let started = Instant::now();
        // Everything the manifest must say is checked before the guest is stopped.
        let mount = self.guest_command(self.profile.offline_mount())?;
        let unmount = self.guest_command(self.profile.offline_unmount())?;
        let target = content
            .as_deref()
            .map(|path| self.guest_command(self.profile.offline_path(path)))
            .transpose()?;
        let root = self.guest_command(self.profile.offline_root())?.to_string();

        // The broken guest must be off before another QEMU opens its disk.
        self.power_off();
        let infra = |what: String| StepError::from(Stop::Infra(what));
        let dir = self.setup.artifacts.join(HELPER_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| infra(format!("cannot create {}: {e}", dir.display())))?;
        let vmdir = VmDir::create(&self.setup.tools.img, self.setup.manifest, None, None)
            .map_err(|e| infra(format!("could not prepare the helper VM: {e}")))?;
        let rel_dir = format!("{}/{HELPER_DIR}", self.setup.rel_dir);
        let name = format!("{} helper VM", self.setup.name);
        let mut helper = Machine::new(
            MachineSetup {
                tools: self.setup.tools,
                manifest: self.setup.manifest,
                accel: self.setup.accel,
                artifacts: &dir,
                rel_dir: &rel_dir,
                evidence: self.setup.evidence.clone(),
                dump_budget: self.setup.dump_budget,
                name: &name,
                boot_timeout: self.setup.boot_timeout,
                follow_crash: false,
                recovery_settle: self.setup.recovery_settle,
                // A helper VM runs the harness's own work: its waits have their
                // timeouts, and a stall there is no verdict on the product.
                stall_window: None,
            },
            vmdir,
        );
        helper.qemu.data_disk = Some(self.qemu.dir.layout.overlay.clone());
        // The helper's boots are not the guest's: its progress stays out of the run's.
        let silent = Emitter::new(Vec::new());
        let work = helper.edit_offline(&mount, target.as_deref(), &s.run, &root, &unmount, &silent);
        helper.power_off();
        self.qemu.argvs.append(&mut helper.qemu.argvs);
        let done = work.map_err(|why| {
            if crate::runner::interrupted() {
                StepError::from(Stop::Interrupted)
            } else {
                infra(format!("offline recovery: the helper VM {why}"))
            }
        })?;
        let helper_time = started.elapsed();
        self.recovery.by = Some("offline removal (helper VM)");
        self.power_on(None, None)?;
        self.wait_ready(self.setup.boot_timeout, emitter)?;
        Ok(format!(
            "helper VM ({} from stopping the guest to the helper's unmount): {}; the next normal boot reached ready",
            human_duration(helper_time),
            done.join(", ")
        ))
    }

    /// [`Machine::helper_vm`] for a Windows guest: the helper is the Linux image the
    /// manifest's `offline_helper` names (the built-in ntfs-helper by default), with
    /// the stopped guest's overlay as its second disk. It copies the crash evidence
    /// out (listed on the last crash), deletes the content file, checks the volume.
    fn helper_vm_windows(
        &mut self,
        s: &RecoverStep,
        content: Option<String>,
        emitter: &Emitter,
    ) -> Result<String, StepError> {
        let started = Instant::now();
        let infra = |what: String| StepError::from(Stop::Infra(what));
        if !s.run.is_empty() {
            return Err(infra(format!(
                "{}: recover.run lines are shell lines for a linux helper VM; a windows guest's NTFS helper only removes the content file (remove_content)",
                self.setup.manifest.path.display()
            )));
        }
        // The helper image is resolved (and built) before the guest is stopped.
        let reference = self
            .guest_command(self.profile.offline_helper())?
            .to_string();
        let helper = match crate::image::builtin::find(&reference) {
            Some(image) => {
                crate::image::builtin::ensure_built(image, &mut |text: &str| emitter.notice(text))
                    .map_err(|e| infra(format!("offline recovery: the helper image: {e}")))?
            }
            None => PathBuf::from(&reference),
        };
        let helper = crate::image::Manifest::load(&helper)
            .map_err(|e| infra(format!("offline recovery: the helper image: {e}")))?;
        let dir = self.setup.artifacts.join(HELPER_DIR);
        let evidence = dir.join(EVIDENCE_DIR);
        let edit = WindowsEdit {
            remove: content.iter().cloned().collect(),
            put: Vec::new(),
            collect: Some(evidence.clone()),
            partition: None,
        };
        self.power_off();
        std::fs::create_dir_all(&dir)
            .map_err(|e| infra(format!("cannot create {}: {e}", dir.display())))?;
        let rel_dir = format!("{}/{HELPER_DIR}", self.setup.rel_dir);
        let name = format!("{} helper VM", self.setup.name);
        let setup = HelperSetup {
            tools: self.setup.tools,
            helper: &helper,
            accel: self.setup.accel,
            logs: &dir,
            rel_dir: &rel_dir,
            name: &name,
            boot_timeout: self.setup.boot_timeout,
        };
        let overlay = self.qemu.dir.layout.overlay.clone();
        let (work, mut argvs) = run_helper(&setup, &overlay, &self.profile, &edit);
        self.qemu.argvs.append(&mut argvs);
        let report = work.map_err(|why| {
            if crate::runner::interrupted() {
                StepError::from(Stop::Interrupted)
            } else {
                infra(format!("offline recovery: the NTFS helper VM {why}"))
            }
        })?;
        let listed: Vec<String> = report
            .evidence
            .iter()
            .filter_map(|e| e.file.strip_prefix(self.setup.artifacts).ok())
            .map(|rel| format!("{}/{}", self.setup.rel_dir, rel.display()))
            .collect();
        if let Some(crash) = self.found.crashes.last_mut() {
            crash.offline_evidence = listed;
            // A crash nothing named yet (a boot-start driver crashing before pvpanic
            // loads reaches the host as a reset) is named by the dump Windows wrote:
            // the newest minidump, else the memory dump's header.
            // Only a dump written after this crash may name it (an older one is an
            // earlier crash's, or the image's own): times off the disk are the
            // guest's clock, corrected by the difference measured at a ready boot.
            let seen = self.crash_seen_utc.last().copied();
            let skew = self.clock_skew;
            if crash.bugcheck.is_none() {
                let (fresh, stale) = offline_dumps_after(&report.evidence, seen, skew);
                if stale > 0 || skew.is_none() {
                    let mut notes: Vec<String> =
                        crash.guest_dumps_note.take().into_iter().collect();
                    if stale > 0 {
                        notes.push(format!(
                            "offline: {stale} dump(s) on the disk were written before this crash and do not name it"
                        ));
                    }
                    if skew.is_none() {
                        notes.push("offline: the guest's clock was never read at a ready boot, so dump times were compared with the host's as they are".into());
                    }
                    crash.guest_dumps_note = Some(notes.join("; "));
                }
                let header = fresh.into_iter().find_map(|e| {
                    let bytes = std::fs::read(&e.file).ok()?;
                    crate::detect::win_dump::DumpHeader::parse(&bytes, &e.file).ok()
                });
                if let Some(header) = header {
                    let bugcheck = header.bugcheck;
                    if crash.source != "console" {
                        crash.title = bugcheck.title(None);
                        crash.kind = "bugcheck".into();
                        crash.source = "offline-dump".into();
                        crash.excerpt = vec![crate::detect::boot_watch::bugcheck_line(&bugcheck)];
                    }
                    crash.signals.push("offline-dump".into());
                    crash.bugcheck = Some(crate::model::record::BugcheckRecord::of(
                        &bugcheck,
                        "offline-dump",
                    ));
                }
            }
        }
        let helper_time = started.elapsed();
        self.recovery.by = Some("offline removal (helper VM)");
        self.power_on(None, None)?;
        self.wait_ready(self.setup.boot_timeout, emitter)?;
        Ok(format!(
            "NTFS helper VM ({} from stopping the guest to the volume check): {}; the next normal boot reached ready",
            human_duration(helper_time),
            report.summary()
        ))
    }

    /// The helper's side of [`Machine::helper_vm`]: boot, mount, delete, run, unmount.
    /// Errors say what failed, for a message that starts "the helper VM ...".
    fn edit_offline(
        &mut self,
        mount: &GuestCommand,
        target: Option<&str>,
        run: &[String],
        root: &str,
        unmount: &GuestCommand,
        emitter: &Emitter,
    ) -> Result<Vec<String>, String> {
        let said = |what: &str, e: StepError| format!("{what}: {}", step_error_text(e));
        self.power_on(None, None)
            .map_err(|e| said("did not start", e.into()))?;
        self.wait_ready(self.setup.boot_timeout, emitter)
            .map_err(|e| said("did not become ready", e.into()))?;
        self.exec(mount.clone(), 0, RECOVERY_COMMAND_TIMEOUT)
            .map_err(|e| said("could not mount the stopped guest's disk", e))?;
        let mut done = Vec::new();
        if let Some(path) = target {
            let command = self.profile.remove_file(path).map_err(|e| e.to_string())?;
            self.exec(command, 0, RECOVERY_COMMAND_TIMEOUT)
                .map_err(|e| said(&format!("could not delete {path}"), e))?;
            done.push(format!("removed {path} offline"));
        }
        for line in run {
            let command = GuestCommand {
                env: vec![format!("BOOTGATE_OFFLINE_ROOT={root}")],
                ..self.profile.shell_command(line)
            };
            self.exec(command, 0, RECOVERY_COMMAND_TIMEOUT)
                .map_err(|e| said(&format!("command {line:?} failed"), e))?;
        }
        if !run.is_empty() {
            done.push(format!("ran {} command(s)", run.len()));
        }
        self.exec(unmount.clone(), 0, RECOVERY_COMMAND_TIMEOUT)
            .map_err(|e| said("could not unmount the stopped guest's disk", e))?;
        Ok(done)
    }

    /// Puts the previous content back (or removes the update) through the agent as
    /// soon as the guest answers, then stays for `settle`. A boot that crashes first
    /// (before ready, or before the rollback took hold) is followed by the next, up to
    /// `boots` boots: the "reboot until the fix lands" race a fleet runs.
    pub(super) fn rollback_content(
        &mut self,
        s: &RollbackContentStep,
        guest_path: String,
        host: Option<PathBuf>,
        emitter: &Emitter,
    ) -> Result<String, StepError> {
        let mut lost = Vec::new();
        // The step starts on a guest that answers; after a crash it is down.
        let mut up = true;
        for _ in 0..s.boots {
            if !up {
                self.begin_boot_after_crash()?;
                match self.wait_ready(self.setup.boot_timeout, emitter) {
                    Ok(()) => {}
                    Err(Stop::Crash) => {
                        lost.push(format!("boot {} crashed before ready", self.boot_index()));
                        continue;
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            let budget = self
                .budget(crate::guest::budget::CommandKind::Command, s.timeout)
                .timeout;
            let put_back = match &host {
                Some(file) => self.write_guest_file(file, guest_path.clone()),
                None => self
                    .guest_command(self.profile.remove_file(&guest_path))
                    .and_then(|command| self.exec(command, 0, budget).map(drop)),
            }
            .and_then(|()| {
                let sync = self.guest_command(self.profile.sync_disks())?;
                self.exec(sync, 0, budget).map(drop)
            });
            let held = put_back.and_then(|()| self.observe(s.settle).map_err(StepError::from));
            match held {
                Ok(()) => {
                    // The boot that answered is the recovery, and the rollback made it.
                    self.recovered_by("agent rollback");
                    let what = match &host {
                        Some(file) => format!("{} -> {guest_path}", file.display()),
                        None => format!("{guest_path} removed"),
                    };
                    let before = if lost.is_empty() {
                        String::new()
                    } else {
                        format!(" (after: {})", lost.join("; "))
                    };
                    return Ok(format!(
                        "rolled back on boot {}: {what}; up {} since{before}",
                        self.boot_index(),
                        human_duration(s.settle)
                    ));
                }
                Err(StepError::Stopped(Stop::Crash)) => {
                    lost.push(format!(
                        "boot {} crashed before the rollback held",
                        self.boot_index()
                    ));
                    up = false;
                }
                Err(other) => return Err(other),
            }
        }
        Err(StepError::Failed(
            StepOutcome::Failed,
            format!(
                "the rollback did not hold in {} boot(s): {}",
                s.boots,
                lost.join("; ")
            ),
        ))
    }
}

/// The minidumps, then the memory dump header, copied off the disk that were
/// written after a crash seen at `seen` (by the guest's clock, `skew` ahead of the
/// host's; none measured: compared as they are), newest first; and how many older
/// ones were left out. Without the crash's time (none recorded) none qualifies.
fn offline_dumps_after(
    evidence: &[super::ntfs::EvidenceCopy],
    seen: Option<jiff::Timestamp>,
    skew: Option<jiff::SignedDuration>,
) -> (Vec<&super::ntfs::EvidenceCopy>, usize) {
    let mut fresh = Vec::new();
    let mut stale = 0;
    for kind in ["minidump", "memory-dump-header"] {
        let mut of_kind: Vec<&super::ntfs::EvidenceCopy> = Vec::new();
        for e in evidence.iter().filter(|e| e.kind == kind) {
            let after = match (seen, jiff::Timestamp::from_second(e.modified_unix)) {
                (Some(seen), Ok(at)) => super::guest_dumps::written_after(
                    at,
                    seen,
                    skew.unwrap_or(jiff::SignedDuration::ZERO),
                ),
                _ => false,
            };
            if after {
                of_kind.push(e);
            } else {
                stale += 1;
            }
        }
        of_kind.sort_by_key(|e| std::cmp::Reverse(e.modified_unix));
        fresh.extend(of_kind);
    }
    (fresh, stale)
}

/// A step error in words, for errors reported on another step's behalf.
pub(super) fn step_error_text(e: StepError) -> String {
    match e {
        StepError::Failed(_, detail) => detail,
        StepError::Stopped(Stop::Crash) => "it crashed".into(),
        StepError::Stopped(Stop::Hang(why)) => format!("it hung: {why}"),
        StepError::Stopped(Stop::PoweredOff) => "it powered off".into(),
        StepError::Stopped(Stop::Infra(why)) => why,
        StepError::Stopped(Stop::Interrupted) => "interrupted".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ntfs::EvidenceCopy;
    use super::*;
    use jiff::{SignedDuration, Timestamp};

    fn copy(kind: &'static str, name: &str, at: &str) -> EvidenceCopy {
        EvidenceCopy {
            kind,
            guest_path: format!(r"\Windows\Minidump\{name}"),
            file: PathBuf::from(name),
            bytes: 8192,
            guest_bytes: 8192,
            modified_unix: at.parse::<Timestamp>().unwrap().as_second(),
        }
    }

    fn names(found: &[&EvidenceCopy]) -> Vec<String> {
        found.iter().map(|e| e.file.display().to_string()).collect()
    }

    /// A dump left on the disk by an earlier crash (or by whoever prepared the
    /// image) never names this one; the newest fresh minidump comes first, by its
    /// time on the volume, not its name (MMDDYY names do not sort across a year).
    #[test]
    fn only_dumps_written_after_the_crash_name_it_newest_first() {
        let crash: Timestamp = "2027-01-01T00:00:30Z".parse().unwrap();
        let evidence = [
            copy("minidump", "123126-01.dmp", "2026-12-31T23:00:00Z"),
            copy("minidump", "010127-02.dmp", "2027-01-01T00:05:00Z"),
            copy("minidump", "010127-01.dmp", "2027-01-01T00:01:00Z"),
            copy(
                "memory-dump-header",
                "MEMORY.DMP.header",
                "2027-01-01T00:04:00Z",
            ),
        ];
        let (fresh, stale) =
            offline_dumps_after(&evidence, Some(crash), Some(SignedDuration::ZERO));
        assert_eq!(
            names(&fresh),
            ["010127-02.dmp", "010127-01.dmp", "MEMORY.DMP.header"]
        );
        assert_eq!(stale, 1);
    }

    /// The guest's clock two hours ahead (an RTC read as local time): its file times
    /// are taken back by the measured difference before the comparison.
    #[test]
    fn the_measured_clock_difference_is_taken_out() {
        let crash: Timestamp = "2027-01-01T10:00:00Z".parse().unwrap();
        let evidence = [copy("minidump", "a.dmp", "2027-01-01T11:00:00Z")];
        let two_hours = SignedDuration::from_hours(2);
        let (fresh, stale) = offline_dumps_after(&evidence, Some(crash), Some(two_hours));
        assert!(fresh.is_empty());
        assert_eq!(
            stale, 1,
            "11:00 guest time is 09:00 host time, before the crash"
        );
        let (fresh, _) = offline_dumps_after(&evidence, Some(crash), None);
        assert_eq!(
            names(&fresh),
            ["a.dmp"],
            "uncorrected, compared as they are"
        );
    }

    /// No recorded crash time: nothing can be shown to be the crash's, so nothing
    /// names it.
    #[test]
    fn without_the_crash_time_no_dump_names_it() {
        let evidence = [copy("minidump", "a.dmp", "2027-01-01T11:00:00Z")];
        let (fresh, stale) = offline_dumps_after(&evidence, None, None);
        assert!(fresh.is_empty());
        assert_eq!(stale, 1);
    }
}
