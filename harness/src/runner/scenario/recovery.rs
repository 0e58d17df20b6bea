//! Bringing a crashed guest back from outside: the rescue boot, the helper VM that
//! edits the stopped guest's disk offline, and the rollback through the agent. How
//! many boots and seconds each takes is what a recovery drill compares, so each one
//! ends with the guest's own next normal boot reaching ready (which the machine
//! notes as the recovery) or with the reason it could not.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::machine::{Machine, MachineSetup};
use super::{StepError, Stop};
use crate::agent::worker::REQUEST_TIMEOUT;
use crate::guest::GuestCommand;
use crate::model::record::StepOutcome;
use crate::model::Emitter;
use crate::qemu::vm::VmDir;
use crate::suite::{RecoverStep, RollbackContentStep};
use crate::util::human_duration;

/// The helper VM's evidence (console, QEMU log) goes in this subfolder of the
/// scenario's.
pub(crate) const HELPER_DIR: &str = "helper-vm";
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
                name: &name,
                boot_timeout: self.setup.boot_timeout,
                follow_crash: false,
                recovery_settle: self.setup.recovery_settle,
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
                self.reset()?;
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

/// A step error in words, for errors reported on another step's behalf.
fn step_error_text(e: StepError) -> String {
    match e {
        StepError::Failed(_, detail) => detail,
        StepError::Stopped(Stop::Crash) => "it crashed".into(),
        StepError::Stopped(Stop::Hang(why)) => format!("it hung: {why}"),
        StepError::Stopped(Stop::PoweredOff) => "it powered off".into(),
        StepError::Stopped(Stop::Infra(why)) => why,
        StepError::Stopped(Stop::Interrupted) => "interrupted".into(),
    }
}
