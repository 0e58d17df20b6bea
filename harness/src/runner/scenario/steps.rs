//! The suite's steps, run through the guest agent: commands, drivers, content,
//! reboots, observation, recovery. Every agent request waits through
//! [`Machine::next`], so a crash or hang during a step ends it as it happens.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::machine::{Machine, Wake};
use super::{StepError, Stop};
use crate::agent::worker::{Answer, JobError, Request, REQUEST_TIMEOUT};
use crate::agent::{AgentError, ShutdownMode};
use crate::guest::budget::{Budget, CommandKind};
use crate::guest::{distro, linux, GuestCommand, RebootMethod};
use crate::model::record::StepOutcome;
use crate::model::Emitter;
use crate::qemu::accel::Accel;
use crate::qemu::vm::QMP_COMMAND_TIMEOUT;
use crate::runner::driver::BuiltDriver;
use crate::suite::{
    ApplyContentStep, InstallDriverStep, RebootStep, RecoverStep, RecoverVia, Step, Suite,
    VerifierStep, VERIFIER_OK_EXITS,
};
use crate::util::human_duration;

/// Time from asking the guest to reboot to QEMU reporting the reset.
pub(crate) const REBOOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// After the agent's connection failed, how long QEMU gets to show that it exited
/// (which is then the reason given).
const AGENT_LOSS_GRACE: Duration = Duration::from_millis(300);
/// Most bytes of a command's output quoted in a step's detail.
const OUTPUT_QUOTE_BYTES: usize = 2048;
/// Largest driver module or content file copied into a guest.
const MAX_GUEST_FILE: u64 = 64 << 20;

/// The suite's drivers, as defined and as built for this run.
struct Drivers<'s> {
    suite: &'s Suite,
    built: &'s BTreeMap<String, Result<BuiltDriver, String>>,
}

impl Drivers<'_> {
    fn get(&self, name: &str) -> Result<(BuiltDriver, crate::suite::Driver), StepError> {
        let def = self
            .suite
            .drivers
            .get(name)
            .cloned()
            .ok_or_else(|| Stop::Infra(format!("driver {name} is not defined")))?;
        match self.built.get(name) {
            Some(Ok(built)) => Ok((built.clone(), def)),
            Some(Err(why)) => Err(Stop::Infra(why.clone()).into()),
            None => Err(Stop::Infra(format!("driver {name} was not prepared")).into()),
        }
    }
}

impl Machine<'_> {
    /// Runs one step; its detail on success.
    pub(super) fn step(
        &mut self,
        step: &Step,
        suite: &Suite,
        drivers: &BTreeMap<String, Result<BuiltDriver, String>>,
        emitter: &Emitter,
    ) -> Result<String, StepError> {
        let drivers = Drivers {
            suite,
            built: drivers,
        };
        match step {
            Step::Boot(_) => Ok("ready".into()),
            Step::Reboot(r) => self.reboot_step(r, emitter),
            Step::Exec(e) => {
                let command = GuestCommand {
                    argv: self.profile.exec_argv(e),
                    env: Vec::new(),
                };
                self.exec(command, e.expect_exit, e.timeout())
            }
            Step::InstallDriver(s) => self.install_driver(s, &drivers),
            Step::UninstallDriver(s) => {
                let command = self.guest_command(self.profile.unregister_driver(&s.driver))?;
                let budget = self.budget(CommandKind::Install, s.timeout);
                self.exec(command, 0, budget.timeout)?;
                self.installed.retain(|name| name != &s.driver);
                Ok(format!(
                    "{} unloaded, unregistered and deleted; {}",
                    s.driver,
                    budget.describe()
                ))
            }
            Step::ApplyContent(s) => self.apply_content(s, &drivers),
            Step::RemoveContent(s) => {
                let (_, def) = drivers.get(&s.driver)?;
                let path = self.guest_command(
                    self.profile
                        .content_path(&def.content_file.unwrap_or_default()),
                )?;
                let command = self.guest_command(self.profile.remove_file(&path))?;
                let budget = self.budget(CommandKind::Command, s.timeout);
                self.exec(command, 0, budget.timeout)?;
                Ok(format!("{path} removed; {}", budget.describe()))
            }
            Step::Observe(s) => {
                self.observe(s.duration)?;
                Ok(format!("no crash in {}", human_duration(s.duration)))
            }
            Step::Recover(s) => self.recover(s, &drivers, emitter),
            Step::Verifier(s) => self.verifier(s, emitter),
            Step::RollbackContent(s) => {
                let (_, def) = drivers.get(&s.driver)?;
                let file = def.content_file.unwrap_or_default();
                let path = self.guest_command(self.profile.content_path(&file))?;
                let host = s.file.as_ref().map(|f| suite.dir().join(f));
                self.rollback_content(s, path, host, emitter)
            }
        }
    }

    fn reboot_step(&mut self, r: &RebootStep, emitter: &Emitter) -> Result<String, StepError> {
        let timeout = r.timeout.unwrap_or(self.setup.boot_timeout);
        let mut ready = Vec::new();
        for _ in 0..r.times {
            self.reboot(timeout, emitter)?;
            let ms = self
                .found
                .boots
                .last()
                .and_then(|b| b.ready_ms)
                .unwrap_or_default();
            ready.push(human_duration(Duration::from_millis(ms)));
        }
        Ok(format!(
            "rebooted {}x; ready after {}",
            r.times,
            ready.join(", ")
        ))
    }

    /// Turns Driver Verifier on for the driver and (by default) reboots so it takes
    /// effect; the detail names the command line, the budget and the reboot.
    fn verifier(&mut self, s: &VerifierStep, emitter: &Emitter) -> Result<String, StepError> {
        let command = self.guest_command(self.profile.verifier(&s.driver, &s.flags))?;
        let line = command.argv.join(" ");
        let budget = self.budget(CommandKind::Install, s.timeout);
        // Run once; an exit code other than 0 that verifier.exe documents as
        // success (2: reboot needed) is accepted from the failure's own words.
        let detail = match self.exec(command, 0, budget.timeout) {
            Ok(detail) => detail,
            Err(StepError::Failed(outcome, why)) => {
                let accepted = VERIFIER_OK_EXITS
                    .iter()
                    .any(|c| why.starts_with(&format!("exit {c},")));
                if !accepted {
                    return Err(StepError::Failed(outcome, format!("`{line}`: {why}")));
                }
                why
            }
            Err(other) => return Err(other),
        };
        if !s.reboot {
            return Ok(format!(
                "`{line}`: {detail}; {}; takes effect at the next boot",
                budget.describe()
            ));
        }
        let timeout = self.setup.boot_timeout;
        self.reboot(timeout, emitter)?;
        Ok(format!(
            "`{line}`: {detail}; {}; rebooted with Driver Verifier on",
            budget.describe()
        ))
    }

    fn install_driver(
        &mut self,
        s: &InstallDriverStep,
        drivers: &Drivers,
    ) -> Result<String, StepError> {
        let (built, _) = drivers.get(&s.driver)?;
        let upload = self.guest_command(self.profile.driver_upload_path(&s.driver))?;
        let register = self.guest_command(self.profile.register_driver(
            &s.driver,
            &s.params,
            s.load_now,
            s.initramfs,
        ))?;
        self.write_guest_file(&built.module, upload.clone())?;
        let budget = self.budget(CommandKind::Install, s.timeout);
        let stdout = match self.exec_output(register, budget.timeout) {
            Ok(stdout) => stdout,
            Err(StepError::Failed(outcome, detail)) => {
                // A module for another kernel is the user's build problem, a tool the
                // image lacks is the image's: no verdict on the driver either way.
                let manifest = self.setup.manifest.path.display().to_string();
                let setup = linux::wrong_kernel(&s.driver, &detail)
                    .or_else(|| linux::missing_tool(&s.driver, &manifest, &detail));
                return Err(match setup {
                    Some(why) => Stop::Infra(why).into(),
                    None => StepError::Failed(outcome, detail),
                });
            }
            Err(other) => return Err(other),
        };
        if !self.installed.contains(&s.driver) {
            self.installed.push(s.driver.clone());
        }
        // The distro script says where the module went (its folder depends on the
        // guest's kernel release); the demo's is the upload path itself.
        let placed = distro::installed_path(&stdout).unwrap_or(upload);
        let initramfs = match (s.initramfs, self.setup.manifest.boot.initrd.is_some()) {
            (false, _) => "",
            (true, false) => ", and in the guest's initramfs",
            // Said, so nobody reads it as an early-boot test: this image boots the
            // host-side initrd its manifest names.
            (true, true) => ", and in the guest's initramfs (which this image does not boot: its manifest's boot.initrd is used instead)",
        };
        Ok(format!(
            "{} (sha256 {}) installed at {placed}{initramfs}{}; {}",
            s.driver,
            built.sha256.get(..12).unwrap_or(&built.sha256),
            if s.load_now {
                " and loaded"
            } else {
                "; loads at next boot"
            },
            budget.describe()
        ))
    }

    fn apply_content(
        &mut self,
        s: &ApplyContentStep,
        drivers: &Drivers,
    ) -> Result<String, StepError> {
        let (_, def) = drivers.get(&s.driver)?;
        let content_file = def.content_file.unwrap_or_default();
        let path = self.guest_command(self.profile.content_path(&content_file))?;
        let host = drivers.suite.dir().join(&s.file);
        self.write_guest_file(&host, path.clone())?;
        let budget = self.budget(CommandKind::Command, s.timeout);
        let sync = self.guest_command(self.profile.sync_disks())?;
        self.exec(sync, 0, budget.timeout)?;
        if s.reload {
            let reload = def.reload.unwrap_or_default();
            let command = self.profile.shell_command(&reload);
            let detail = self.exec(command, 0, budget.timeout)?;
            return Ok(format!(
                "{} -> {path}, live reload: {detail}; {}",
                s.file.display(),
                budget.describe()
            ));
        }
        Ok(format!(
            "{} -> {path}; {}",
            s.file.display(),
            budget.describe()
        ))
    }

    fn recover(
        &mut self,
        s: &RecoverStep,
        drivers: &Drivers,
        emitter: &Emitter,
    ) -> Result<String, StepError> {
        let content = match &s.remove_content {
            Some(name) => {
                let (_, def) = drivers.get(name)?;
                let file = def.content_file.unwrap_or_default();
                Some(self.guest_command(self.profile.content_path(&file))?)
            }
            None => None,
        };
        match s.via {
            RecoverVia::RescueBoot => self.rescue_boot(s, content, emitter),
            RecoverVia::HelperVm => self.helper_vm(s, content, emitter),
        }
    }

    /// Runs an agent request to its answer, watching everything else meanwhile.
    pub(super) fn agent(
        &mut self,
        request: Request,
        budget: Duration,
    ) -> Result<Answer, StepError> {
        let what = match &request {
            Request::WaitReady => "guest-sync",
            Request::Exec { .. } => "guest-exec",
            Request::WriteFile { .. } => "guest-file-write",
            Request::ReadFile { .. } | Request::ReadHead { .. } => "guest-file-read",
            Request::GuestTime => "guest-get-time",
            Request::Shutdown(_) => "guest-shutdown",
            Request::Commands => "guest-info",
        };
        let deadline = Instant::now() + budget;
        let id = self.vm()?.agent().submit(request);
        loop {
            match self.next(deadline)? {
                Wake::Agent(got, result) if got == id => return self.answer(what, result),
                Wake::Agent(..) | Wake::Rebooted => {}
                Wake::Deadline => {
                    self.vm()?.agent().cancel_all();
                    return Err(self
                        .hang(format!(
                            "the guest agent did not answer {what} within {} in boot {}",
                            human_duration(budget),
                            self.boot_index()
                        ))
                        .into());
                }
            }
        }
    }

    /// What the agent's answer to `what` means for the step.
    fn answer(
        &mut self,
        what: &str,
        result: Result<Answer, JobError>,
    ) -> Result<Answer, StepError> {
        match result {
            Ok(answer) => Ok(answer),
            Err(JobError::Cancelled) => Err(Stop::Infra(format!("{what} was cancelled")).into()),
            Err(JobError::Agent(AgentError::Timeout { .. })) => Err(self
                .hang(format!(
                    "the guest stopped answering the agent ({what}) in boot {}",
                    self.boot_index()
                ))
                .into()),
            Err(JobError::Agent(AgentError::Command { class, desc, .. })) => {
                Err(StepError::Failed(
                    StepOutcome::Failed,
                    format!("the guest agent refused {what}: {class}: {desc}"),
                ))
            }
            Err(JobError::Agent(e)) => {
                // The agent's socket closing is most often QEMU dying, and may be
                // noticed before QMP's end: say which it was.
                let why = format!("guest agent {what}: {e}");
                let gone = self
                    .qemu
                    .vm
                    .as_mut()
                    .is_some_and(|vm| vm.wait_exit(AGENT_LOSS_GRACE).is_some());
                if gone {
                    return Err(self.qemu_gone(&why).into());
                }
                Err(Stop::Infra(why).into())
            }
        }
    }

    /// Runs a guest command and checks its exit code; the detail quotes its output.
    pub(super) fn exec(
        &mut self,
        command: GuestCommand,
        expect_exit: i32,
        timeout: Duration,
    ) -> Result<String, StepError> {
        self.exec_status(command, expect_exit, timeout)
            .map(|(detail, _)| detail)
    }

    /// Runs a guest command that must exit 0; its standard output.
    pub(super) fn exec_output(
        &mut self,
        command: GuestCommand,
        timeout: Duration,
    ) -> Result<Vec<u8>, StepError> {
        self.exec_status(command, 0, timeout)
            .map(|(_, stdout)| stdout)
    }

    /// [`Machine::exec`]'s work: the detail and the whole standard output.
    fn exec_status(
        &mut self,
        command: GuestCommand,
        expect_exit: i32,
        timeout: Duration,
    ) -> Result<(String, Vec<u8>), StepError> {
        let answer = self.agent(
            Request::Exec {
                argv: command.argv,
                env: command.env,
                timeout,
            },
            timeout + REQUEST_TIMEOUT * 2,
        )?;
        let status = match answer {
            Answer::Exited(status) => status,
            Answer::ExecTimedOut => {
                return Err(StepError::Failed(
                    StepOutcome::Timeout,
                    format!("still running after {}", human_duration(timeout)),
                ))
            }
            other => return Err(Stop::Infra(format!("unexpected agent answer {other:?}")).into()),
        };
        let output = quote_output(&status.stdout, &status.stderr);
        let got = match (status.exit_code, status.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "no exit status".into(),
        };
        if status.exit_code == Some(expect_exit) {
            Ok((format!("{got}{output}"), status.stdout))
        } else {
            Err(StepError::Failed(
                StepOutcome::Failed,
                format!("{got}, expected exit {expect_exit}{output}"),
            ))
        }
    }

    /// Copies a host file into the guest, creating its folder first when this
    /// scenario has not seen it yet. A folder or file the guest cannot make is the
    /// image's or manifest's problem (`error`), never the driver's.
    pub(super) fn write_guest_file(&mut self, host: &Path, guest: String) -> Result<(), StepError> {
        let meta = std::fs::metadata(host)
            .map_err(|e| Stop::Infra(format!("cannot read {}: {e}", host.display())))?;
        if meta.len() > MAX_GUEST_FILE {
            return Err(Stop::Infra(format!(
                "{} is larger than {MAX_GUEST_FILE} bytes",
                host.display()
            ))
            .into());
        }
        let data = std::fs::read(host)
            .map_err(|e| Stop::Infra(format!("cannot read {}: {e}", host.display())))?;
        self.ensure_dir_for(&guest)?;
        let written = self.agent(
            Request::WriteFile {
                path: guest.clone(),
                data,
            },
            REQUEST_TIMEOUT * 3,
        );
        match written {
            Ok(_) => Ok(()),
            Err(StepError::Failed(_, why)) => Err(Stop::Infra(format!(
                "cannot write {guest} in the guest ({why}): check the image manifest's guest paths ({})",
                self.setup.manifest.path.display()
            ))
            .into()),
            Err(other) => Err(other),
        }
    }

    /// Makes sure the folder of guest file `path` exists.
    fn ensure_dir_for(&mut self, path: &str) -> Result<(), StepError> {
        let Some(dir) = self.profile.parent_dir(path) else {
            return Ok(());
        };
        if self.made_dirs.contains(&dir) {
            return Ok(());
        }
        if let Some(command) = self.profile.make_dir(&dir) {
            self.exec(command, 0, REQUEST_TIMEOUT).map_err(|e| match e {
                StepError::Failed(_, why) => StepError::from(Stop::Infra(format!(
                    "cannot create the guest folder {dir} ({why}): check the image manifest's guest paths ({})",
                    self.setup.manifest.path.display()
                ))),
                other => other,
            })?;
        }
        self.made_dirs.insert(dir);
        Ok(())
    }

    /// How long a guest command of `kind` may run: the step's `timeout`, else the
    /// manifest's, else the OS family's default (see `guest::budget`).
    pub(super) fn budget(&self, kind: CommandKind, step: Option<Duration>) -> Budget {
        self.profile
            .budget(kind, step, self.setup.accel == Accel::Tcg)
    }

    /// A guest command the profile could not build is the harness's problem.
    pub(super) fn guest_command<T>(
        &self,
        result: Result<T, crate::guest::GuestError>,
    ) -> Result<T, StepError> {
        result.map_err(|e| Stop::Infra(e.to_string()).into())
    }

    /// Stays with the running guest for `duration`; a crash or hang ends it early.
    pub(super) fn observe(&mut self, duration: Duration) -> Result<(), Stop> {
        let deadline = Instant::now() + duration;
        loop {
            match self.next(deadline)? {
                Wake::Deadline => return Ok(()),
                Wake::Agent(..) | Wake::Rebooted => {}
            }
        }
    }

    /// Reboots through the agent, confirmed by QEMU's RESET event, then waits for
    /// ready. When the agent cannot (its `guest-shutdown` failed), the manifest's
    /// `guest.reboot` says whether to fall back, and the boot records how it came.
    fn reboot(&mut self, timeout: Duration, emitter: &Emitter) -> Result<(), StepError> {
        let deadline = Instant::now() + REBOOT_REQUEST_TIMEOUT;
        let id = self
            .vm()?
            .agent()
            .submit(Request::Shutdown(ShutdownMode::Reboot));
        self.watch.ask_reboot();
        let confirmed = self.wait_reboot(id, deadline);
        // Already forgotten when the reboot came (the new boot began); not otherwise.
        self.watch.cancel_reboot();
        // Stops the shutdown request listening for a late error, too.
        self.vm()?.agent().cancel_all();
        match confirmed {
            Ok(()) => {}
            Err(RebootError::AgentFailed(why)) => self.reboot_without_agent(&why)?,
            Err(RebootError::Step(e)) => return Err(e),
        }
        self.wait_ready(timeout, emitter)?;
        Ok(())
    }

    /// The manifest's fallback after a failed `guest-shutdown`; `why` is the agent's
    /// error. Without one, the failed reboot is the image's problem (`error`).
    fn reboot_without_agent(&mut self, why: &str) -> Result<(), StepError> {
        let method = self.setup.manifest.guest.reboot;
        let via = format!(
            "guest.reboot = \"{}\": {} (guest-shutdown failed: {why})",
            method.as_str(),
            match method {
                RebootMethod::Agent => "no fallback",
                RebootMethod::Acpi => "ACPI power button, then power on",
                RebootMethod::Reset => "hard reset",
            }
        );
        match method {
            RebootMethod::Agent => {
                return Err(Stop::Infra(format!(
                    "the guest could not reboot: qemu-ga's guest-shutdown failed: {why}. The image's shutdown command (qemu-ga runs `shutdown -r +0`) does not work: fix it in the image, or set guest.reboot = \"reset\" or \"acpi\" in {} to fall back",
                    self.setup.manifest.path.display()
                ))
                .into())
            }
            RebootMethod::Reset => {
                // Flush what the guest has written; a hard reset loses the rest.
                if let Ok(sync) = self.profile.sync_disks() {
                    let budget = self.budget(CommandKind::Command, None);
                    self.exec(sync, 0, budget.timeout)?;
                }
                self.reset()?;
            }
            RebootMethod::Acpi => {
                self.power_button()?;
                self.power_on(None, None)?;
            }
        }
        if let Some(boot) = self.found.boots.last_mut() {
            boot.reboot_via = Some(via);
        }
        Ok(())
    }

    /// Presses the ACPI power button and waits for the guest to power itself off.
    fn power_button(&mut self) -> Result<(), StepError> {
        let vm = self.vm()?;
        let qmp = vm
            .qmp()
            .ok_or_else(|| Stop::Infra("QMP is not connected".into()))?;
        qmp.execute("system_powerdown", None, QMP_COMMAND_TIMEOUT)
            .map_err(|e| Stop::Infra(format!("system_powerdown: {e}")))?;
        let deadline = Instant::now() + REBOOT_REQUEST_TIMEOUT;
        loop {
            match self.next(deadline) {
                Err(Stop::PoweredOff) => return Ok(()),
                Err(stop) => return Err(stop.into()),
                Ok(Wake::Deadline) => {
                    return Err(Stop::Infra(format!(
                        "the guest did not power off within {} of the ACPI power button (guest.reboot = \"acpi\"): the image ignores it",
                        human_duration(REBOOT_REQUEST_TIMEOUT)
                    ))
                    .into())
                }
                Ok(_) => {}
            }
        }
    }

    /// Waits for the RESET that confirms the reboot asked by request `id`. The reset,
    /// not the agent going quiet, confirms it: until it comes, the old boot's agent
    /// may still answer.
    fn wait_reboot(&mut self, id: u64, deadline: Instant) -> Result<(), RebootError> {
        loop {
            match self.next(deadline).map_err(StepError::from)? {
                Wake::Rebooted => return Ok(()),
                Wake::Agent(got, Err(JobError::Agent(e))) if got == id => {
                    return Err(RebootError::AgentFailed(e.to_string()))
                }
                Wake::Agent(..) => {}
                Wake::Deadline => {
                    return Err(StepError::Stopped(self.hang(format!(
                        "the guest did not reboot within {} of guest-shutdown",
                        human_duration(REBOOT_REQUEST_TIMEOUT)
                    )))
                    .into())
                }
            }
        }
    }
}

/// Why a reboot through the agent did not happen.
enum RebootError {
    /// The agent said its `guest-shutdown` failed.
    AgentFailed(String),
    Step(StepError),
}

impl From<StepError> for RebootError {
    fn from(e: StepError) -> RebootError {
        RebootError::Step(e)
    }
}

fn quote_output(stdout: &[u8], stderr: &[u8]) -> String {
    let mut text = String::new();
    for (name, bytes) in [("stdout", stdout), ("stderr", stderr)] {
        if bytes.is_empty() {
            continue;
        }
        let shown = &bytes[..bytes.len().min(OUTPUT_QUOTE_BYTES)];
        let more = if bytes.len() > shown.len() {
            " [...]"
        } else {
            ""
        };
        text.push_str(&format!(
            "; {name}: {}{more}",
            String::from_utf8_lossy(shown).trim_end()
        ));
    }
    text
}
