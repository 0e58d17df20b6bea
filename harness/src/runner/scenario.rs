//! Running one scenario on one VM: boot, steps, gates, verdict.
//!
//! Everything the guest does is watched while we wait: QMP events (panic, reset,
//! QEMU gone), console lines (crash reports), and the agent. No fixed sleeps: each
//! wait polls these sources and ends on the first thing that decides it.

use std::path::Path;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use crate::agent::{AgentClient, AgentError, ShutdownMode};
use crate::detect::CrashDetector;
use crate::guest::GuestProfile;
use crate::image::manifest::Manifest;
use crate::qemu::accel::Accel;
use crate::qemu::qmp::QmpMessage;
use crate::qemu::vm::{Vm, VmConfig};
use crate::qemu::QemuTools;
use crate::runner::record::{
    BootOutcome, BootRecord, CrashRecord, StepOutcome, StepRecord, Verdict,
};
use crate::runner::{interrupted, Emitter};
use crate::suite::{ExecStep, Scenario, Step, Suite};
use crate::util::human_duration;

/// One agent sync attempt while waiting for ready; short so crashes and Ctrl-C are
/// noticed quickly between attempts.
pub const AGENT_SYNC_ATTEMPT: Duration = Duration::from_millis(500);
/// Time a single agent request may take once the guest is up.
pub const AGENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from asking the guest to reboot to QEMU reporting the reset.
pub const REBOOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between `guest-exec-status` polls.
pub const EXEC_POLL: Duration = Duration::from_millis(100);
/// After a crash is first seen, how long to keep reading the console so the report
/// (call trace, panic line) is complete.
pub const CRASH_SETTLE: Duration = Duration::from_millis(1500);
/// Granularity of waits that have nothing to poll but events.
const EVENT_POLL: Duration = Duration::from_millis(20);
/// Most bytes of a command's output quoted in a step's detail.
const OUTPUT_QUOTE_BYTES: usize = 2048;

/// What ended a wait other than success.
#[derive(Debug)]
enum Stop {
    /// The guest crashed (pvpanic or a console crash report).
    Crash,
    /// QEMU exited or its QMP stream ended: not the product's fault.
    QemuGone(String),
    /// The guest powered itself off.
    PoweredOff,
    Interrupted,
    /// The harness itself failed (agent protocol, I/O).
    Infra(String),
    /// The guest did not become ready within the boot timeout.
    NotReady(Duration),
}

/// Result of a scenario, before the runner adds names and artifacts.
pub struct ScenarioOutcome {
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub boots: Vec<BootRecord>,
    pub steps: Vec<StepRecord>,
    pub crash: Option<CrashRecord>,
    pub argv: Vec<String>,
    pub interrupted: bool,
}

pub struct ScenarioContext<'a> {
    pub tools: &'a QemuTools,
    pub manifest: &'a Manifest,
    pub accel: Accel,
    pub suite: &'a Suite,
    pub scenario: &'a Scenario,
    pub dir: &'a Path,
    pub keep_overlay: bool,
    pub emitter: &'a mut Emitter,
    pub full_name: &'a str,
}

struct Session<'a> {
    vm: Vm,
    agent: AgentClient,
    detector: CrashDetector,
    crash_seen_at: Option<Instant>,
    pvpanic: bool,
    last_reset: Option<Instant>,
    boots: Vec<BootRecord>,
    profile: GuestProfile,
    name: &'a str,
}

pub fn run(ctx: ScenarioContext) -> ScenarioOutcome {
    let mut outcome = ScenarioOutcome {
        verdict: Verdict::Error,
        reason: None,
        boots: Vec::new(),
        steps: Vec::new(),
        crash: None,
        argv: Vec::new(),
        interrupted: false,
    };
    let config = VmConfig {
        qemu_binary: &ctx.tools.system,
        qemu_img: &ctx.tools.img,
        manifest: ctx.manifest,
        accel: ctx.accel,
        extra_append: None,
        artifacts_dir: ctx.dir,
        keep_overlay: ctx.keep_overlay,
    };
    let vm = match Vm::start(&config) {
        Ok(vm) => vm,
        Err(e) => {
            outcome.reason = Some(format!("could not start the VM: {e}"));
            return outcome;
        }
    };
    outcome.argv = vm.argv.clone();
    let agent = match vm.connect_agent() {
        Ok(agent) => agent,
        Err(e) => {
            outcome.reason = Some(e.to_string());
            return outcome;
        }
    };
    let mut session = Session {
        vm,
        agent,
        detector: CrashDetector::new(),
        crash_seen_at: None,
        pvpanic: false,
        last_reset: None,
        boots: Vec::new(),
        profile: GuestProfile::for_manifest(ctx.manifest),
        name: ctx.full_name,
    };
    let first_boot_timeout = match ctx.scenario.steps.first() {
        Some(Step::Boot(b)) => b.timeout,
        _ => None,
    }
    .or(ctx.suite.boot_timeout)
    .unwrap_or(ctx.manifest.ready.timeout);
    let reboot_default = ctx.suite.boot_timeout.unwrap_or(ctx.manifest.ready.timeout);

    let mut failure: Option<String> = None;
    let mut infra: Option<String> = None;
    let boot_started = session.vm.started;
    let first = session.wait_ready(boot_started, first_boot_timeout, ctx.emitter);
    let mut first_record = StepRecord {
        kind: "boot".into(),
        outcome: StepOutcome::Ok,
        duration_ms: boot_started.elapsed().as_millis() as u64,
        detail: String::new(),
    };
    match first {
        Ok(()) => first_record.detail = "ready".into(),
        Err(stop) => {
            let (step_outcome, text) = session.describe_stop(&stop, "the first boot");
            first_record.outcome = step_outcome;
            first_record.detail = text.clone();
            match stop {
                Stop::QemuGone(_) | Stop::Infra(_) => infra = Some(text),
                Stop::Interrupted => outcome.interrupted = true,
                _ => failure = Some(text),
            }
        }
    }
    ctx.emitter.step_finished(ctx.full_name, &first_record);
    outcome.steps.push(first_record);

    let steps = ctx
        .scenario
        .steps
        .iter()
        .filter(|s| !matches!(s, Step::Boot(_)));
    for step in steps {
        if failure.is_some() || infra.is_some() || outcome.interrupted {
            outcome.steps.push(StepRecord {
                kind: step.kind().into(),
                outcome: StepOutcome::Skipped,
                duration_ms: 0,
                detail: "skipped: an earlier step did not succeed".into(),
            });
            continue;
        }
        ctx.emitter.step_started(ctx.full_name, &step.to_string());
        let started = Instant::now();
        let result = match step {
            Step::Boot(_) => Ok(String::from("ready")),
            Step::Reboot(r) => {
                session.reboot(r.times, r.timeout.unwrap_or(reboot_default), ctx.emitter)
            }
            Step::Exec(e) => session.exec(e),
        };
        let mut record = StepRecord {
            kind: step.kind().into(),
            outcome: StepOutcome::Ok,
            duration_ms: started.elapsed().as_millis() as u64,
            detail: String::new(),
        };
        match result {
            Ok(detail) => record.detail = detail,
            Err(StepError::Failed(outcome_kind, detail)) => {
                record.outcome = outcome_kind;
                record.detail = detail.clone();
                failure = Some(format!("{step}: {detail}"));
            }
            Err(StepError::Stopped(stop)) => {
                let (step_outcome, text) = session.describe_stop(&stop, &step.to_string());
                record.outcome = step_outcome;
                record.detail = text.clone();
                match stop {
                    Stop::QemuGone(_) | Stop::Infra(_) => infra = Some(text),
                    Stop::Interrupted => outcome.interrupted = true,
                    _ => failure = Some(text),
                }
            }
        }
        ctx.emitter.step_finished(ctx.full_name, &record);
        outcome.steps.push(record);
    }

    // Gates beyond "every boot reaches ready" (which the steps already enforce).
    if failure.is_none() && infra.is_none() {
        if let Some(limit) = ctx.scenario.gates.max_boot_time {
            let slow = session.boots.iter().find(|b| {
                b.ready_ms
                    .is_some_and(|ms| Duration::from_millis(ms) > limit)
            });
            if let Some(boot) = slow {
                failure = Some(format!(
                    "gate max_boot_time: boot {} took {}, over the limit of {}",
                    boot.index,
                    human_duration(Duration::from_millis(boot.ready_ms.unwrap_or_default())),
                    human_duration(limit)
                ));
            }
        }
    }

    outcome.crash = session.crash_record();
    outcome.boots = std::mem::take(&mut session.boots);
    session.vm.stop();
    outcome.verdict = if infra.is_some() || outcome.interrupted {
        Verdict::Error
    } else if failure.is_some() {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    outcome.reason = infra
        .or(failure)
        .or_else(|| outcome.interrupted.then(|| "interrupted".to_string()));
    outcome
}

enum StepError {
    /// The product failed the step (wrong exit code, timeout, hang).
    Failed(StepOutcome, String),
    /// Something else ended it: crash, QEMU gone, interrupt.
    Stopped(Stop),
}

impl From<Stop> for StepError {
    fn from(stop: Stop) -> StepError {
        StepError::Stopped(stop)
    }
}

impl Session<'_> {
    /// Drains console lines and QMP events; returns why the guest can no longer be
    /// waited on, if it can't.
    fn poll(&mut self) -> Result<(), Stop> {
        if interrupted() {
            return Err(Stop::Interrupted);
        }
        while let Ok(line) = self.vm.console_lines.try_recv() {
            self.detector.feed(&line.text);
            if self.detector.crash().is_some() && self.crash_seen_at.is_none() {
                self.crash_seen_at = Some(line.at);
            }
        }
        loop {
            match self.vm.events.try_recv() {
                Ok(QmpMessage::Event(event)) => match event.name.as_str() {
                    "GUEST_PANICKED" => {
                        self.pvpanic = true;
                        self.crash_seen_at.get_or_insert(event.received);
                    }
                    "RESET" => self.last_reset = Some(event.received),
                    "SHUTDOWN" => {
                        let reason = event
                            .data
                            .get("reason")
                            .and_then(|r| r.as_str())
                            .unwrap_or("");
                        if reason == "guest-shutdown" {
                            return Err(Stop::PoweredOff);
                        }
                    }
                    _ => {}
                },
                Ok(QmpMessage::Closed(why)) => {
                    let status = self
                        .vm
                        .exited()
                        .map_or_else(|| "still running".into(), |s| s.to_string());
                    let why = why.map_or_else(String::new, |e| format!(" ({e})"));
                    return Err(Stop::QemuGone(format!(
                        "QEMU's QMP connection closed{why}; QEMU {status}; QEMU said:\n{}",
                        self.vm.qemu_log_tail()
                    )));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(Stop::QemuGone("QMP reader ended".into()));
                }
            }
        }
        if let Some(status) = self.vm.exited() {
            return Err(Stop::QemuGone(format!(
                "QEMU exited ({status}); QEMU said:\n{}",
                self.vm.qemu_log_tail()
            )));
        }
        if let Some(seen) = self.crash_seen_at {
            // A pvpanic is final at once; a console report alone gets time to finish
            // (and to reach pvpanic, when oops=panic).
            if seen.elapsed() >= CRASH_SETTLE || (self.pvpanic && self.detector.crash().is_some()) {
                self.drain_console_briefly();
                return Err(Stop::Crash);
            }
            if self.pvpanic && seen.elapsed() >= CRASH_SETTLE / 3 {
                self.drain_console_briefly();
                return Err(Stop::Crash);
            }
        }
        Ok(())
    }

    /// The console trails the panic event slightly; pick up what is already in flight.
    fn drain_console_briefly(&mut self) {
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            match self.vm.console_lines.recv_timeout(EVENT_POLL) {
                Ok(line) => self.detector.feed(&line.text),
                Err(_) => break,
            }
        }
    }

    fn boot_index(&self) -> u32 {
        self.boots.len() as u32 + 1
    }

    /// Waits until the agent answers (ready) or something else happens; records the boot.
    fn wait_ready(
        &mut self,
        since: Instant,
        timeout: Duration,
        emitter: &mut Emitter,
    ) -> Result<(), Stop> {
        let index = self.boot_index();
        let deadline = since + timeout;
        loop {
            if let Err(stop) = self.poll() {
                let outcome = match stop {
                    Stop::Crash => BootOutcome::Crash,
                    Stop::Interrupted | Stop::QemuGone(_) | Stop::Infra(_) => BootOutcome::Error,
                    Stop::PoweredOff => BootOutcome::Error,
                    Stop::NotReady(_) => BootOutcome::Timeout,
                };
                self.boots.push(BootRecord {
                    index,
                    outcome,
                    ready_ms: None,
                });
                return Err(stop);
            }
            if Instant::now() >= deadline {
                self.boots.push(BootRecord {
                    index,
                    outcome: BootOutcome::Timeout,
                    ready_ms: None,
                });
                return Err(Stop::NotReady(timeout));
            }
            match self.agent.sync(AGENT_SYNC_ATTEMPT) {
                Ok(()) => {
                    let ready_ms = since.elapsed().as_millis() as u64;
                    self.boots.push(BootRecord {
                        index,
                        outcome: BootOutcome::Ready,
                        ready_ms: Some(ready_ms),
                    });
                    emitter.boot_ready(self.name, index, ready_ms);
                    return Ok(());
                }
                Err(AgentError::Timeout { .. }) => {}
                Err(AgentError::Closed) => {
                    // QEMU closed the socket: the next poll() says why.
                    std::thread::sleep(EVENT_POLL);
                }
                Err(_) => {}
            }
        }
    }

    fn reboot(
        &mut self,
        times: u32,
        timeout: Duration,
        emitter: &mut Emitter,
    ) -> Result<String, StepError> {
        let mut times_ms = Vec::new();
        for _ in 0..times {
            self.last_reset = None;
            let asked = Instant::now();
            self.agent
                .shutdown(ShutdownMode::Reboot)
                .map_err(|e| self.agent_trouble("guest-shutdown", e))?;
            // The reboot is confirmed by QEMU's RESET event, not by the agent going
            // quiet: until then the old boot's agent may still answer.
            let reset_at = loop {
                self.poll()?;
                if let Some(at) = self.last_reset {
                    break at;
                }
                if asked.elapsed() >= REBOOT_REQUEST_TIMEOUT {
                    return Err(StepError::Failed(
                        StepOutcome::Hang,
                        format!(
                            "the guest did not reboot within {} of guest-shutdown",
                            human_duration(REBOOT_REQUEST_TIMEOUT)
                        ),
                    ));
                }
                std::thread::sleep(EVENT_POLL);
            };
            self.wait_ready(reset_at, timeout, emitter)?;
            if let Some(boot) = self.boots.last() {
                times_ms.push(human_duration(Duration::from_millis(
                    boot.ready_ms.unwrap_or_default(),
                )));
            }
        }
        Ok(format!(
            "rebooted {times}x; ready after {}",
            times_ms.join(", ")
        ))
    }

    fn exec(&mut self, step: &ExecStep) -> Result<String, StepError> {
        let argv = self.profile.exec_argv(step);
        let started = Instant::now();
        let pid = self
            .agent
            .exec_start(&argv, &[], None, AGENT_REQUEST_TIMEOUT)
            .map_err(|e| self.agent_trouble("guest-exec", e))?;
        loop {
            self.poll()?;
            let status = self
                .agent
                .exec_status(pid, AGENT_REQUEST_TIMEOUT)
                .map_err(|e| self.agent_trouble("guest-exec-status", e))?;
            if status.exited {
                let code = status.exit_code;
                let output = quote_output(&status.stdout, &status.stderr);
                let got = match (code, status.signal) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    (None, None) => "no exit status".into(),
                };
                if code == Some(step.expect_exit) {
                    return Ok(format!("{got}{output}"));
                }
                return Err(StepError::Failed(
                    StepOutcome::Failed,
                    format!("{got}, expected exit {}{output}", step.expect_exit),
                ));
            }
            if started.elapsed() >= step.timeout() {
                return Err(StepError::Failed(
                    StepOutcome::Timeout,
                    format!("still running after {}", human_duration(step.timeout())),
                ));
            }
            std::thread::sleep(EXEC_POLL);
        }
    }

    /// An agent request failed: decide whether the guest crashed, QEMU went away, the
    /// guest hangs (alive but not answering: the product's fault) or the protocol broke.
    fn agent_trouble(&mut self, command: &str, error: AgentError) -> StepError {
        if let Err(stop) = self.poll() {
            return StepError::Stopped(stop);
        }
        // Give a crash that is in flight a moment to show itself before blaming a hang.
        let until = Instant::now() + CRASH_SETTLE;
        while Instant::now() < until {
            if let Err(stop) = self.poll() {
                return StepError::Stopped(stop);
            }
            std::thread::sleep(EVENT_POLL);
        }
        match error {
            AgentError::Timeout { .. } => StepError::Failed(
                StepOutcome::Hang,
                format!("the guest stopped answering the agent ({command}: {error})"),
            ),
            other => StepError::Stopped(Stop::Infra(format!("guest agent {command}: {other}"))),
        }
    }

    fn describe_stop(&self, stop: &Stop, during: &str) -> (StepOutcome, String) {
        match stop {
            Stop::Crash => {
                let title = self.crash_title();
                (
                    StepOutcome::Crash,
                    format!("crash during {during}: {title}"),
                )
            }
            Stop::QemuGone(why) => (
                StepOutcome::Error,
                format!("QEMU went away during {during}: {why}"),
            ),
            Stop::PoweredOff => (
                StepOutcome::Failed,
                format!("the guest powered off during {during}"),
            ),
            Stop::Interrupted => (StepOutcome::Error, "interrupted".into()),
            Stop::NotReady(after) => (
                StepOutcome::Timeout,
                format!(
                    "boot {} did not reach ready within {} (the guest agent never answered)",
                    self.boots.len(),
                    human_duration(*after)
                ),
            ),
            Stop::Infra(why) => (
                StepOutcome::Error,
                format!("harness error during {during}: {why}"),
            ),
        }
    }

    fn crash_title(&self) -> String {
        match self.detector.crash() {
            Some(crash) => crash.title.clone(),
            None if self.pvpanic => "guest panic (pvpanic; no crash report on the console)".into(),
            None => "crash".into(),
        }
    }

    fn crash_record(&self) -> Option<CrashRecord> {
        if !self.pvpanic && self.detector.crash().is_none() {
            return None;
        }
        let source = match (self.pvpanic, self.detector.crash().is_some()) {
            (true, true) => "pvpanic+console",
            (true, false) => "pvpanic",
            _ => "console",
        };
        let boot = self
            .boots
            .iter()
            .find(|b| b.outcome == BootOutcome::Crash)
            .map_or(self.boots.len() as u32, |b| b.index);
        Some(CrashRecord {
            title: self.crash_title(),
            kind: self
                .detector
                .crash()
                .map_or_else(|| "panic".into(), |c| c.kind.clone()),
            source: source.into(),
            boot,
            excerpt: self
                .detector
                .crash()
                .map(|c| c.excerpt.clone())
                .unwrap_or_default(),
        })
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
