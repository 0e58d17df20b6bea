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
use crate::guest::GuestCommand;
use crate::model::record::StepOutcome;
use crate::model::Emitter;
use crate::runner::driver::BuiltDriver;
use crate::suite::{
    ApplyContentStep, InstallDriverStep, RebootStep, RecoverStep, RecoverVia, Step, Suite,
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
                self.exec(command, 0, REQUEST_TIMEOUT)?;
                Ok(format!("{} unloaded, unregistered and deleted", s.driver))
            }
            Step::ApplyContent(s) => self.apply_content(s, &drivers),
            Step::RemoveContent(s) => {
                let (_, def) = drivers.get(&s.driver)?;
                let path = self.guest_command(
                    self.profile
                        .content_path(&def.content_file.unwrap_or_default()),
                )?;
                let command = self.guest_command(self.profile.remove_file(&path))?;
                self.exec(command, 0, REQUEST_TIMEOUT)?;
                Ok(format!("{path} removed"))
            }
            Step::Observe(s) => {
                self.observe(s.duration)?;
                Ok(format!("no crash in {}", human_duration(s.duration)))
            }
            Step::Recover(s) => self.recover(s, &drivers, emitter),
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

    fn install_driver(
        &mut self,
        s: &InstallDriverStep,
        drivers: &Drivers,
    ) -> Result<String, StepError> {
        let (built, _) = drivers.get(&s.driver)?;
        let path = self.guest_command(self.profile.driver_path(&s.driver))?;
        self.write_guest_file(&built.module, path.clone())?;
        let register = self.guest_command(
            self.profile
                .register_driver(&s.driver, &s.params, s.load_now),
        )?;
        self.exec(register, 0, REQUEST_TIMEOUT)?;
        Ok(format!(
            "{} (sha256 {}) installed at {path}{}",
            s.driver,
            built.sha256.get(..12).unwrap_or(&built.sha256),
            if s.load_now {
                " and loaded"
            } else {
                "; loads at next boot"
            }
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
        let sync = self.guest_command(self.profile.sync_disks())?;
        self.exec(sync, 0, REQUEST_TIMEOUT)?;
        if s.reload {
            let reload = def.reload.unwrap_or_default();
            let command = self.profile.shell_command(&reload);
            let detail = self.exec(command, 0, REQUEST_TIMEOUT)?;
            return Ok(format!(
                "{} -> {path}, live reload: {detail}",
                s.file.display()
            ));
        }
        Ok(format!("{} -> {path}", s.file.display()))
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
            Request::ReadFile { .. } => "guest-file-read",
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
            Ok(format!("{got}{output}"))
        } else {
            Err(StepError::Failed(
                StepOutcome::Failed,
                format!("{got}, expected exit {expect_exit}{output}"),
            ))
        }
    }

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
        self.agent(
            Request::WriteFile { path: guest, data },
            REQUEST_TIMEOUT * 3,
        )?;
        Ok(())
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

    /// Reboots through the agent, confirmed by QEMU's RESET event, then waits for ready.
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
        confirmed?;
        self.vm()?.agent().cancel_all();
        self.wait_ready(timeout, emitter)?;
        Ok(())
    }

    /// Waits for the RESET that confirms the reboot asked by request `id`. The reset,
    /// not the agent going quiet, confirms it: until it comes, the old boot's agent
    /// may still answer.
    fn wait_reboot(&mut self, id: u64, deadline: Instant) -> Result<(), StepError> {
        loop {
            match self.next(deadline)? {
                Wake::Rebooted => return Ok(()),
                Wake::Agent(got, Err(JobError::Agent(e))) if got == id => {
                    return Err(StepError::Failed(
                        StepOutcome::Failed,
                        format!("guest-shutdown failed: {e}"),
                    ))
                }
                Wake::Agent(..) => {}
                Wake::Deadline => {
                    return Err(StepError::Stopped(self.hang(format!(
                        "the guest did not reboot within {} of guest-shutdown",
                        human_duration(REBOOT_REQUEST_TIMEOUT)
                    ))))
                }
            }
        }
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
