//! Running one scenario on one VM: boots, steps, crash and boot-loop watching,
//! recovery, gates, verdict.
//!
//! Everything a VM reports arrives on one channel (QMP events, console lines, agent
//! answers), so every wait ends on the first thing that decides it: a panic is acted
//! on when its event arrives, not at the next poll.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::agent::worker::{Answer, JobError, Request, MAX_READ_BYTES, REQUEST_TIMEOUT};
use crate::agent::{AgentError, ShutdownMode};
use crate::detect::{self, bugcheck::Bugcheck};
use crate::detect::{ConsoleCrash, CrashClass, CrashDetector};
use crate::guest::windows;
use crate::guest::{DumpFormat, OsFamily};
use crate::guest::{GuestCommand, GuestProfile};
use crate::image::manifest::Manifest;
use crate::model::record::{
    BootOutcome, BootRecord, BugcheckRecord, CrashRecord, RecoveryRecord, StepOutcome, StepRecord,
    Verdict,
};
use crate::model::Emitter;
use crate::qemu::accel::Accel;
use crate::qemu::qmp::QmpMessage;
use crate::qemu::snapshot::SavedState;
use crate::qemu::vm::{Signal, Standby, Vm, VmConfig, VmDir, WaitingQemu, QMP_COMMAND_TIMEOUT};
use crate::qemu::QemuTools;
use crate::runner::driver::BuiltDriver;
use crate::runner::interrupted;
use crate::runner::verdict::{judge, Observed};
use crate::suite::{DumpPolicy, Evidence, RecoverVia, Scenario, Step, Suite};
use crate::util::human_duration;

mod recovery;

/// The code a dump of a live (not crashed) Windows guest carries.
const LIVE_SYSTEM_DUMP: u32 = 0x161;

/// Time from asking the guest to reboot to QEMU reporting the reset.
pub const REBOOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// After a panic event, how long to wait for the console report if none was seen yet
/// (the oops normally reaches the console before the panic notifier runs).
pub const CONSOLE_TRAIL: Duration = Duration::from_millis(300);
/// A console crash report without a panic event: how long to wait for the panic event
/// (or more of the report) before deciding on the console alone.
pub const CRASH_SETTLE: Duration = Duration::from_millis(1500);
/// One reboot shows up as a burst of RESET events (Linux tries several reset methods,
/// each resets the machine once more within ~100 ms); RESETs this close together are
/// one reboot.
pub const RESET_COALESCE: Duration = Duration::from_secs(1);
/// Longest uninterrupted wait on the signal channel, so Ctrl-C is noticed promptly.
const INTERRUPT_CHECK: Duration = Duration::from_millis(50);
/// Time a screenshot may take.
pub const SCREENDUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a memory dump may take (written by QEMU while the guest is stopped).
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(300);
/// Time to list or copy out one of the dumps a Windows guest wrote itself.
pub const GUEST_DUMP_TIMEOUT: Duration = Duration::from_secs(120);
/// After the agent's connection failed, how long QEMU gets to show that it exited
/// (which is then the reason given).
const AGENT_LOSS_GRACE: Duration = Duration::from_millis(300);
/// Most bytes of a command's output quoted in a step's detail.
const OUTPUT_QUOTE_BYTES: usize = 2048;
/// Largest driver module or content file copied into a guest.
const MAX_GUEST_FILE: u64 = 64 << 20;

/// Why a wait ended other than with what it waited for.
#[derive(Debug)]
enum Stop {
    /// The guest crashed; the crash is recorded.
    Crash,
    /// The guest hangs (no ready in time, soft lockup, agent silent); recorded.
    Hang(String),
    /// The guest powered itself off.
    PoweredOff,
    /// QEMU or the harness failed: not the product's fault.
    Infra(String),
    Interrupted,
}

/// Why a step failed.
enum StepError {
    /// The product failed the step itself (wrong exit code, command timed out).
    Failed(StepOutcome, String),
    /// Something ended it: crash, hang, QEMU gone, interrupt.
    Stopped(Stop),
}

impl From<Stop> for StepError {
    fn from(stop: Stop) -> StepError {
        StepError::Stopped(stop)
    }
}

/// Result of a scenario, before the runner adds names and artifacts.
pub struct ScenarioOutcome {
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub boots: Vec<BootRecord>,
    pub steps: Vec<StepRecord>,
    pub crashes: Vec<CrashRecord>,
    pub hangs: Vec<String>,
    pub hang_screenshots: Vec<String>,
    pub boot_loop: bool,
    pub recovery: Option<RecoveryRecord>,
    pub argvs: Vec<Vec<String>>,
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
    pub emitter: &'a Emitter,
    pub full_name: &'a str,
    /// The scenario's folder relative to the run folder (prefix of evidence paths).
    pub rel_dir: &'a str,
    pub drivers: &'a BTreeMap<String, Result<BuiltDriver, String>>,
    /// The image's saved ready state, when there is one for this run.
    pub saved: Option<&'a SavedState>,
    /// After a crash, watch the next boots for a loop or a recovery (scenarios);
    /// false stops at the crash (content fuzzing only needs its title).
    pub watch_after_crash: bool,
    /// The worker's standby VM: taken when it restores this scenario's saved
    /// state (None: no standbys).
    pub standby: Option<&'a StandbySlot>,
    /// Refill the standby once this scenario's VM is up: false when no scenario is
    /// left to take it.
    pub refill_standby: bool,
}

/// A worker's standby VM, if it has one.
pub type StandbySlot = std::cell::RefCell<Option<Standby>>;

/// The state of one scenario's machine across QEMU processes and boots.
struct Machine<'a> {
    setup: MachineSetup<'a>,
    profile: GuestProfile,
    /// The scenario's start: the zero of every `start_ms`.
    t0: Instant,
    /// Declared before `vmdir` so QEMU is stopped before its folder is removed.
    vm: Option<Vm>,
    vmdir: VmDir,
    qemu_runs: u32,
    argvs: Vec<Vec<String>>,
    // The current boot.
    detector: CrashDetector,
    boot_started: Instant,
    boot_ready: bool,
    pvpanic_at: Option<Instant>,
    /// Hyper-V crash parameters from the panic event (Windows bugcheck code first).
    hyperv: Option<Bugcheck>,
    /// Why the boot after a crash never became ready, when that made the loop.
    stalled_after_crash: Option<String>,
    /// The guest reset itself without a panic event.
    unexpected_reset: bool,
    console_crash_at: Option<Instant>,
    /// A hang report (soft lockup, RCU stall, hung task) began on the console.
    console_hang_at: Option<Instant>,
    /// A RESET we caused (system_reset) that must not count as a guest reboot.
    expect_reset: bool,
    /// The last RESET event, to fold a burst into one reboot.
    last_reset: Option<Instant>,
    // Observations across boots.
    boots: Vec<BootRecord>,
    crashes: Vec<CrashRecord>,
    hangs: Vec<String>,
    hang_screenshots: Vec<String>,
    boot_loop: bool,
    first_crash: Option<(Instant, u32)>,
    recovery: Option<RecoveryRecord>,
    /// A second disk for every QEMU of this machine (a helper VM's patient).
    data_disk: Option<std::path::PathBuf>,
    /// The recovery step under way, named in the recovery it brings.
    recovering_by: Option<&'static str>,
    /// A standby's QEMU, for the first restore.
    waiting: Option<WaitingQemu>,
}

/// What a [`Machine`] is made from, besides its VM folder.
struct MachineSetup<'a> {
    tools: &'a QemuTools,
    manifest: &'a Manifest,
    accel: Accel,
    artifacts: &'a Path,
    rel_dir: &'a str,
    evidence: Evidence,
    name: &'a str,
    boot_timeout: Duration,
    /// See `ScenarioContext::watch_after_crash`.
    follow_crash: bool,
}

impl<'a> Machine<'a> {
    fn new(setup: MachineSetup<'a>, vmdir: VmDir) -> Machine<'a> {
        Machine {
            profile: setup.manifest.guest_profile(),
            setup,
            t0: Instant::now(),
            vm: None,
            vmdir,
            qemu_runs: 0,
            argvs: Vec::new(),
            detector: CrashDetector::new(),
            boot_started: Instant::now(),
            boot_ready: false,
            pvpanic_at: None,
            hyperv: None,
            stalled_after_crash: None,
            unexpected_reset: false,
            console_crash_at: None,
            console_hang_at: None,
            expect_reset: false,
            last_reset: None,
            boots: Vec::new(),
            crashes: Vec::new(),
            hangs: Vec::new(),
            hang_screenshots: Vec::new(),
            boot_loop: false,
            first_crash: None,
            recovery: None,
            data_disk: None,
            recovering_by: None,
            waiting: None,
        }
    }
}

/// What `next` saw.
enum Happening {
    Agent(u64, Result<Answer, JobError>),
    /// The guest reset on its own (a reboot it asked for, or a triple fault).
    Reset(Instant),
    Deadline,
}

pub fn run(ctx: ScenarioContext) -> ScenarioOutcome {
    let mut outcome = ScenarioOutcome {
        verdict: Verdict::Error,
        reason: None,
        boots: Vec::new(),
        steps: Vec::new(),
        crashes: Vec::new(),
        hangs: Vec::new(),
        hang_screenshots: Vec::new(),
        boot_loop: false,
        recovery: None,
        argvs: Vec::new(),
        interrupted: false,
    };
    let keep = ctx.keep_overlay.then_some(ctx.dir);
    // Start from the image's saved ready state unless the scenario is about booting.
    let restore = ctx.saved.filter(|_| !ctx.scenario.cold_boot);
    // The worker's standby, when it restores this state (a kept overlay must live in
    // the results, so it cannot come from a standby's folder). One that does not
    // fit is dropped here, which stops it.
    let standby = match (restore, ctx.standby) {
        (Some(state), Some(slot)) if keep.is_none() => {
            slot.borrow_mut().take().filter(|s| s.restores(state))
        }
        _ => None,
    };
    let (vmdir, waiting) = match standby {
        Some(standby) => {
            let (dir, waiting) = standby.into_parts();
            (dir, Some(waiting))
        }
        None => match VmDir::create(&ctx.tools.img, ctx.manifest, restore, keep) {
            Ok(dir) => (dir, None),
            Err(e) => {
                outcome.reason = Some(format!("could not prepare the VM: {e}"));
                return outcome;
            }
        },
    };
    let boot_timeout = match ctx.scenario.steps.first() {
        Some(Step::Boot(b)) => b.timeout,
        _ => None,
    }
    .or(ctx.suite.boot_timeout)
    .unwrap_or(ctx.manifest.ready.timeout);
    let mut m = Machine::new(
        MachineSetup {
            tools: ctx.tools,
            manifest: ctx.manifest,
            accel: ctx.accel,
            artifacts: ctx.dir,
            rel_dir: ctx.rel_dir,
            evidence: ctx.suite.evidence.clone(),
            name: ctx.full_name,
            boot_timeout,
            follow_crash: ctx.watch_after_crash,
        },
        vmdir,
    );
    m.waiting = waiting;
    let scenario = ctx.scenario;
    let emitter = ctx.emitter;

    let mut state = Progress::default();

    // The first boot is implicit; a leading `boot` step only sets its timeout.
    let first = Instant::now();
    let first_result = m
        .power_on(None, restore)
        .and_then(|()| m.wait_ready(m.setup.boot_timeout, emitter));
    let boot_step = StepRecord {
        kind: "boot".into(),
        start_ms: m.offset(first),
        outcome: StepOutcome::Ok,
        duration_ms: first.elapsed().as_millis() as u64,
        detail: String::new(),
    };
    let boot_step = settle(
        &mut m,
        boot_step,
        first_result
            .map(|()| "ready".to_string())
            .map_err(StepError::from),
        scenario,
        emitter,
        &mut state,
    );
    emitter.step_finished(ctx.full_name, &boot_step);
    outcome.steps.push(boot_step);
    // With this scenario's VM up, start the next one's while this one runs.
    if let (Some(state), Some(slot)) = (restore, ctx.standby) {
        if ctx.refill_standby && keep.is_none() && !interrupted() {
            // No standby is no loss: the next scenario starts its QEMU itself.
            *slot.borrow_mut() = m.start_standby(state).ok();
        }
    }

    for step in scenario
        .steps
        .iter()
        .filter(|s| !matches!(s, Step::Boot(_)))
    {
        let is_recover = matches!(step, Step::Recover(_));
        let blocked = state.failure.is_some() || state.infra.is_some() || state.interrupted;
        if blocked || (state.guest_down && !is_recover) {
            outcome.steps.push(StepRecord {
                kind: step.kind().into(),
                start_ms: m.offset(Instant::now()),
                outcome: StepOutcome::Skipped,
                duration_ms: 0,
                detail: if state.guest_down && !blocked {
                    "skipped: the guest did not come back after its crash".into()
                } else {
                    "skipped: an earlier step did not succeed".into()
                },
            });
            continue;
        }
        emitter.step_started(ctx.full_name, &step.to_string());
        let started = Instant::now();
        let result = m.step(step, ctx.suite, ctx.drivers, emitter);
        let record = StepRecord {
            kind: step.kind().into(),
            start_ms: m.offset(started),
            outcome: StepOutcome::Ok,
            duration_ms: started.elapsed().as_millis() as u64,
            detail: String::new(),
        };
        if is_recover && result.is_ok() {
            state.guest_down = false;
        }
        let record = settle(&mut m, record, result, scenario, emitter, &mut state);
        emitter.step_finished(ctx.full_name, &record);
        outcome.steps.push(record);
    }

    if let Some(vm) = m.vm.as_mut() {
        vm.stop();
    }
    outcome.argvs = std::mem::take(&mut m.argvs);
    let Progress {
        mut failure,
        infra,
        interrupted,
        ..
    } = state;
    outcome.interrupted = interrupted;
    if infra.is_none() && !outcome.interrupted {
        let observed = Observed {
            boots: &m.boots,
            crashes: &m.crashes,
            hangs: &m.hangs,
            boot_loop: m.boot_loop,
            stalled_after_crash: m.stalled_after_crash.as_deref(),
            recovery: m.recovery.as_ref(),
        };
        failure = failure.or_else(|| judge(&observed, scenario));
    }
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
    outcome.boots = std::mem::take(&mut m.boots);
    outcome.crashes = std::mem::take(&mut m.crashes);
    outcome.hangs = std::mem::take(&mut m.hangs);
    outcome.hang_screenshots = std::mem::take(&mut m.hang_screenshots);
    outcome.boot_loop = m.boot_loop;
    outcome.recovery = m.recovery.take();
    outcome
}

/// The scenario's running state across steps.
#[derive(Default)]
struct Progress {
    /// A failure of the product that is not a crash or hang (those are observations
    /// judged by the gates at the end).
    failure: Option<String>,
    /// Infrastructure trouble: no verdict on the product is possible.
    infra: Option<String>,
    /// After a crash with no recovery, only a `recover` step can bring the guest back.
    guest_down: bool,
    interrupted: bool,
}

/// Turns a step's result into its record, and a crash into the watch for a boot loop
/// or recovery.
fn settle(
    m: &mut Machine,
    mut record: StepRecord,
    result: Result<String, StepError>,
    scenario: &Scenario,
    emitter: &Emitter,
    state: &mut Progress,
) -> StepRecord {
    match result {
        Ok(detail) => record.detail = detail,
        Err(StepError::Failed(kind, detail)) => {
            record.outcome = kind;
            state.failure = Some(format!("{}: {detail}", record.kind));
            record.detail = detail;
        }
        Err(StepError::Stopped(Stop::Crash)) => {
            record.outcome = StepOutcome::Crash;
            let title = m
                .crashes
                .last()
                .map_or_else(|| "crash".into(), |c| c.title.clone());
            record.detail = format!("crash: {title}");
            // Watch the next boots: does it loop, or come back?
            let watched = if m.setup.follow_crash {
                m.watch_after_crash(scenario.boot_loop_boots, emitter)
            } else {
                Ok(false)
            };
            match watched {
                Ok(true) => record.detail.push_str("; the guest recovered"),
                Ok(false) => {
                    state.guest_down = true;
                    match (&m.stalled_after_crash, m.boot_loop) {
                        (Some(why), _) => record
                            .detail
                            .push_str(&format!("; boot loop: the guest did not come back ({why})")),
                        (None, true) if scenario.boot_loop_boots == 1 => record
                            .detail
                            .push_str("; boot loop: the reboot crashed too"),
                        (None, true) => record.detail.push_str(&format!(
                            "; boot loop: {} consecutive boots crashed",
                            scenario.boot_loop_boots
                        )),
                        (None, false) => {}
                    }
                }
                Err(Stop::Infra(why)) => state.infra = Some(why),
                Err(Stop::Interrupted) => state.interrupted = true,
                Err(_) => state.guest_down = true,
            }
        }
        Err(StepError::Stopped(Stop::Hang(why))) => {
            record.outcome = StepOutcome::Hang;
            record.detail = why;
            state.guest_down = true;
        }
        Err(StepError::Stopped(Stop::PoweredOff)) => {
            record.outcome = StepOutcome::Failed;
            record.detail = "the guest powered off".into();
            state.failure = Some(format!("{}: the guest powered off", record.kind));
        }
        Err(StepError::Stopped(Stop::Infra(why))) => {
            record.outcome = StepOutcome::Error;
            record.detail = why.clone();
            state.infra = Some(why);
        }
        Err(StepError::Stopped(Stop::Interrupted)) => {
            record.outcome = StepOutcome::Error;
            record.detail = "interrupted".into();
            state.interrupted = true;
        }
    }
    record
}

impl Machine<'_> {
    /// Milliseconds from the scenario's start to `at`.
    fn offset(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_millis() as u64
    }

    fn vm(&mut self) -> Result<&mut Vm, Stop> {
        self.vm
            .as_mut()
            .ok_or_else(|| Stop::Infra("no VM is running".into()))
    }

    /// Starts a QEMU on the scenario's disk (stopping the previous one) and begins a boot.
    fn power_on(
        &mut self,
        extra_append: Option<String>,
        restore: Option<&SavedState>,
    ) -> Result<(), Stop> {
        if let Some(mut vm) = self.vm.take() {
            vm.stop();
        }
        self.qemu_runs += 1;
        let log_suffix = if self.qemu_runs == 1 {
            String::new()
        } else {
            format!("-{}", self.qemu_runs)
        };
        let waiting = self.waiting.take().filter(|_| restore.is_some());
        let config = self.vm_config(extra_append.clone(), restore, log_suffix);
        let argv = Vm::argv(&config, &self.vmdir.layout);
        let started = match waiting {
            Some(waiting) => waiting.connect(&config, &self.vmdir.layout),
            None => Vm::start(&config, &self.vmdir.layout),
        };
        // Recorded whatever happened: a QEMU that refused it leaves its command line.
        self.argvs.push(argv);
        let vm = started.map_err(|e| Stop::Infra(format!("could not start the VM: {e}")))?;
        let standby = vm.standby;
        // A restored guest's "boot" is QEMU's start through the state load to ready.
        let started = if restore.is_some() {
            vm.spawned
        } else {
            vm.started
        };
        self.vm = Some(vm);
        self.begin_boot(started, extra_append);
        if let Some(boot) = self.boots.last_mut() {
            boot.restored = restore.is_some();
            boot.standby = standby;
        }
        Ok(())
    }

    /// Starts a standby VM that restores `state` (the same command line this
    /// machine's restores use, its log in its own folder until a scenario takes it).
    fn start_standby(&self, state: &SavedState) -> Result<Standby, crate::qemu::vm::VmError> {
        Standby::start(&self.vm_config(None, Some(state), String::new()))
    }

    /// This machine's VM configuration for one QEMU.
    fn vm_config<'s>(
        &'s self,
        extra_append: Option<String>,
        restore: Option<&'s SavedState>,
        log_suffix: String,
    ) -> VmConfig<'s> {
        VmConfig {
            data_disk: self.data_disk.as_deref(),
            qemu_binary: &self.setup.tools.system,
            qemu_img: &self.setup.tools.img,
            manifest: self.setup.manifest,
            accel: self.setup.accel,
            extra_append,
            sandbox: self.setup.tools.sandbox,
            incoming: restore,
            artifacts_dir: self.setup.artifacts,
            log_suffix,
        }
    }

    fn begin_boot(&mut self, at: Instant, extra_append: Option<String>) {
        self.detector = CrashDetector::new();
        self.boot_started = at;
        self.boot_ready = false;
        self.pvpanic_at = None;
        self.hyperv = None;
        self.unexpected_reset = false;
        self.console_crash_at = None;
        self.console_hang_at = None;
        let start_ms = self.offset(at);
        self.boots.push(BootRecord {
            index: self.boots.len() as u32 + 1,
            start_ms,
            outcome: BootOutcome::Error,
            ready_ms: None,
            extra_append,
            crash: None,
            restored: false,
            standby: false,
        });
    }

    fn boot_index(&self) -> u32 {
        self.boots.len() as u32
    }

    fn set_boot_outcome(&mut self, outcome: BootOutcome) {
        if let Some(boot) = self.boots.last_mut() {
            boot.outcome = outcome;
        }
    }

    /// Waits for the next thing that matters, or `deadline`. Crashes, hangs seen on the
    /// console, QEMU going away and Ctrl-C end the wait as `Err`.
    fn next(&mut self, deadline: Instant) -> Result<Happening, Stop> {
        loop {
            if interrupted() {
                return Err(Stop::Interrupted);
            }
            if let Some(stop) = self.crash_decided() {
                return Err(stop);
            }
            if let Some(at) = self.console_hang_at {
                // Give the report time to reach its frames, so the title names the code.
                if !self.detector.is_reporting() || at.elapsed() >= CRASH_SETTLE {
                    let title = self
                        .detector
                        .first_of(CrashClass::Hang)
                        .map(|c| c.title.clone())
                        .unwrap_or_default();
                    self.console_hang_at = None;
                    return Err(self.hang(format!("{title} (boot {})", self.boot_index())));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Happening::Deadline);
            }
            let mut wait = (deadline - now).min(INTERRUPT_CHECK);
            if let Some(at) = self.pvpanic_at {
                wait = wait.min((at + CONSOLE_TRAIL).saturating_duration_since(now));
            } else if let Some(at) = self.console_crash_at.or(self.console_hang_at) {
                wait = wait.min((at + CRASH_SETTLE).saturating_duration_since(now));
            }
            let signal = match self.vm()?.signals.recv_timeout(wait) {
                Ok(signal) => signal,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.qemu_gone("its signal channel closed"))
                }
            };
            match signal {
                // Output the previous boot printed before this one began (the tail of
                // its crash report, read late on a loaded host) must not be taken for a
                // crash of this boot.
                Signal::Console(line) if line.at < self.boot_started => {}
                Signal::Console(line) => {
                    self.detector.feed(&line.text);
                    match self.detector.crash().map(|c| c.class) {
                        Some(CrashClass::Crash) if self.console_crash_at.is_none() => {
                            self.console_crash_at = Some(line.at);
                        }
                        Some(CrashClass::Hang) => {
                            self.console_hang_at.get_or_insert(line.at);
                        }
                        _ => {}
                    }
                }
                Signal::Qmp(QmpMessage::Event(event)) => match event.name.as_str() {
                    "GUEST_PANICKED" | "GUEST_CRASHLOADED" => {
                        self.pvpanic_at.get_or_insert(event.received);
                        if let Some(bugcheck) = Bugcheck::from_hyperv(&event.data["info"]) {
                            self.hyperv = Some(bugcheck);
                        }
                    }
                    "RESET" => {
                        let burst = self.last_reset.is_some_and(|last| {
                            event.received.duration_since(last) < RESET_COALESCE
                        });
                        self.last_reset = Some(event.received);
                        if self.expect_reset {
                            self.expect_reset = false;
                        } else if !burst {
                            return Ok(Happening::Reset(event.received));
                        }
                    }
                    "SHUTDOWN"
                        if event.data.get("reason").and_then(|r| r.as_str())
                            == Some("guest-shutdown") =>
                    {
                        return Err(Stop::PoweredOff)
                    }
                    _ => {}
                },
                Signal::Qmp(QmpMessage::Closed(why)) => {
                    let why = why
                        .map_or_else(|| "QMP closed".to_string(), |e| format!("QMP closed: {e}"));
                    return Err(self.qemu_gone(&why));
                }
                Signal::Agent(reply) => return Ok(Happening::Agent(reply.id, reply.result)),
            }
        }
    }

    fn qemu_gone(&mut self, why: &str) -> Stop {
        let vm = self.vm.as_mut();
        let (status, log) = match vm {
            Some(vm) => {
                let status = vm.exited();
                let status = match status {
                    Some(s) => s.to_string(),
                    None => vm
                        .wait_exit(Duration::from_millis(500))
                        .map_or_else(|| "still running".into(), |s| s.to_string()),
                };
                (status, vm.qemu_log_tail())
            }
            None => ("not started".into(), String::new()),
        };
        Stop::Infra(format!(
            "QEMU went away ({why}; QEMU {status}); QEMU said:\n{log}"
        ))
    }

    /// Decides a crash once its evidence is complete: a panic event with the console
    /// report (or the report's grace period over), or a console report whose panic
    /// event did not follow in time.
    fn crash_decided(&mut self) -> Option<Stop> {
        let now = Instant::now();
        let seen_at = match (self.pvpanic_at, self.console_crash_at) {
            (Some(p), Some(c)) => p.min(c),
            (Some(p), None) if now >= p + CONSOLE_TRAIL => p,
            (None, Some(c)) if now >= c + CRASH_SETTLE => c,
            _ => return None,
        };
        Some(self.record_crash(seen_at))
    }

    fn record_crash(&mut self, seen_at: Instant) -> Stop {
        // A boot that came back and then crashed did not bring the machine back.
        if self
            .recovery
            .as_ref()
            .is_some_and(|r| r.ready_boot == self.boot_index())
        {
            self.recovery = None;
        }
        let console = self
            .detector
            .crash()
            .filter(|c| c.class == CrashClass::Crash)
            .cloned();
        let mut signals = Vec::new();
        if self.pvpanic_at.is_some() && !self.unexpected_reset {
            signals.push("pvpanic".to_string());
        }
        if self.hyperv.is_some() {
            signals.push("hyperv".into());
        }
        if console.is_some() {
            signals.push("console".into());
        }
        if self.unexpected_reset {
            signals.push("reset".into());
        }
        let (source, title, kind, excerpt) = match (console, self.hyperv) {
            (
                Some(ConsoleCrash {
                    title,
                    kind,
                    excerpt,
                    ..
                }),
                _,
            ) => ("console", title, kind, excerpt),
            (None, Some(bugcheck)) => (
                "hyperv",
                bugcheck.title(None),
                "bugcheck".to_string(),
                vec![bugcheck_line(&bugcheck)],
            ),
            (None, None) if self.unexpected_reset => (
                "reset",
                "unexpected guest reset (no panic event, no crash report)".to_string(),
                "reset".to_string(),
                Vec::new(),
            ),
            (None, None) => (
                "pvpanic",
                "guest panic (pvpanic; no crash report on the console)".to_string(),
                "panic".to_string(),
                Vec::new(),
            ),
        };
        let boot_index = self.boot_index();
        self.crashes.push(CrashRecord {
            title: title.clone(),
            kind,
            source: source.into(),
            signals,
            boot_index,
            excerpt,
            detect_ms: seen_at.elapsed().as_millis() as u64,
            screenshot: None,
            dump: None,
            dump_format: None,
            dump_note: None,
            bugcheck: self.hyperv.map(|b| BugcheckRecord::of(&b, "hyperv")),
            guest_dumps: Vec::new(),
            guest_dumps_note: None,
            console: self
                .vm
                .as_ref()
                .and_then(|vm| vm.console_path.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
        });
        self.first_crash.get_or_insert((seen_at, boot_index));
        self.capture_crash_evidence();
        if let Some(boot) = self.boots.last_mut() {
            boot.crash = Some(title);
            if !self.boot_ready {
                boot.outcome = BootOutcome::Crash;
            }
        }
        // Handled: the next boot starts clean.
        self.pvpanic_at = None;
        self.hyperv = None;
        self.unexpected_reset = false;
        self.console_crash_at = None;
        Stop::Crash
    }

    fn hang(&mut self, why: String) -> Stop {
        if !self.boot_ready {
            self.set_boot_outcome(BootOutcome::Hang);
        }
        self.hangs.push(why.clone());
        self.capture_hang_evidence();
        Stop::Hang(why)
    }

    /// A path in the scenario's folder, and the same path relative to the run folder.
    fn evidence_path(&self, name: &str) -> (std::path::PathBuf, String) {
        (
            self.setup.artifacts.join(name),
            format!("{}/{name}", self.setup.rel_dir),
        )
    }

    /// Screenshot (and, by the suite's policy, memory dump) of the crash just recorded,
    /// taken while the crashed guest is still paused. Failures are noted on the crash,
    /// never turned into a verdict.
    fn capture_crash_evidence(&mut self) {
        let n = self.crashes.len();
        let screenshot = self.screenshot(&format!("crash-{n}.png"));
        let wanted = match self.setup.evidence.memory_dumps {
            DumpPolicy::All => true,
            DumpPolicy::First => n == 1,
            DumpPolicy::None => false,
        };
        let (dump, note) = if wanted {
            self.dump(&format!("crash-{n}"))
        } else {
            (
                None,
                Some(
                    format!(
                        "not dumped: memory_dumps = {:?}",
                        self.setup.evidence.memory_dumps
                    )
                    .to_lowercase(),
                ),
            )
        };
        let format = self.setup.manifest.guest.dump_format;
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
        if let Some(crash) = self.crashes.last_mut() {
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
    }

    fn capture_hang_evidence(&mut self) {
        let n = self.hangs.len();
        if let Some(shot) = self.screenshot(&format!("hang-{n}.png")) {
            self.hang_screenshots.push(shot);
        }
        if self.setup.evidence.dump_on_hang {
            // A hung guest is still running: stop it first so the dump is consistent.
            if let Some(qmp) = self.vm.as_ref().and_then(|vm| vm.qmp()) {
                let _ = qmp.execute("stop", None, QMP_COMMAND_TIMEOUT);
            }
            if let (Some(dump), _) = self.dump(&format!("hang-{n}")) {
                if let Some(hang) = self.hangs.last_mut() {
                    hang.push_str(&format!(" (memory dump: {dump})"));
                }
            }
        }
    }

    /// QMP screendump to a PNG in the scenario folder; its run-relative path.
    fn screenshot(&mut self, name: &str) -> Option<String> {
        let (path, rel) = self.evidence_path(name);
        let qmp = self.vm.as_ref()?.qmp()?;
        let args = serde_json::json!({"filename": path.display().to_string(), "format": "png"});
        match qmp.execute("screendump", Some(args), SCREENDUMP_TIMEOUT) {
            Ok(_) if path.is_file() => Some(rel),
            _ => None,
        }
    }

    /// dump-guest-memory in the background (`detach`), waiting for DUMP_COMPLETED.
    fn dump(&mut self, stem: &str) -> (Option<String>, Option<String>) {
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
        let format = self.setup.manifest.guest.dump_format;
        let (path, rel) = self.evidence_path(&format!("{stem}.{}", format.extension()));
        let Some(qmp) = self.vm.as_ref().and_then(|vm| vm.qmp()) else {
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
        match self.wait_event("DUMP_COMPLETED", Instant::now() + DUMP_TIMEOUT) {
            Ok(data) => match data.get("error").and_then(|e| e.as_str()) {
                Some(error) => (None, Some(format!("dump failed: {error}"))),
                None if path.is_file() => (Some(rel), None),
                None => (None, Some("dump failed: QEMU wrote no file".into())),
            },
            Err(why) => (None, Some(format!("dump failed: {why}"))),
        }
    }

    /// Waits for one QMP event while capturing evidence; console lines keep feeding
    /// the detector, everything else waits for the runner.
    fn wait_event(&mut self, name: &str, deadline: Instant) -> Result<serde_json::Value, String> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no {name} within {}", human_duration(DUMP_TIMEOUT)));
            }
            let vm = self.vm.as_mut().ok_or("no VM")?;
            match vm
                .signals
                .recv_timeout((deadline - now).min(INTERRUPT_CHECK))
            {
                Ok(Signal::Qmp(QmpMessage::Event(event))) if event.name == name => {
                    return Ok(event.data)
                }
                Ok(Signal::Qmp(QmpMessage::Closed(_))) => return Err("QEMU went away".into()),
                Ok(Signal::Console(line)) => self.detector.feed(&line.text),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("QEMU went away".into()),
            }
            if interrupted() {
                return Err("interrupted".into());
            }
        }
    }

    /// Waits until the agent answers: the boot is ready.
    fn wait_ready(&mut self, timeout: Duration, emitter: &Emitter) -> Result<(), Stop> {
        let deadline = self.boot_started + timeout;
        let vm = self.vm()?;
        let id = match vm.take_ready_request() {
            Some(id) => id,
            None => vm.agent().submit(Request::WaitReady),
        };
        loop {
            match self.next(deadline) {
                Ok(Happening::Agent(got, result)) if got == id => match result {
                    Ok(_) => {
                        let ready_ms = self.boot_started.elapsed().as_millis() as u64;
                        self.boot_ready = true;
                        if let Some(boot) = self.boots.last_mut() {
                            boot.outcome = BootOutcome::Ready;
                            boot.ready_ms = Some(ready_ms);
                        }
                        emitter.boot_ready(self.setup.name, self.boot_index(), ready_ms);
                        self.note_recovery();
                        if self.profile.os == OsFamily::Windows {
                            self.collect_guest_dumps()?;
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(Stop::Infra(format!("waiting for the guest agent: {e}"))),
                },
                Ok(Happening::Agent(..)) => {}
                Ok(Happening::Reset(at)) => {
                    // A reset before ready: the boot ended without reaching ready.
                    let stop = self.record_crash_like_reset(at);
                    return Err(stop);
                }
                Ok(Happening::Deadline) => {
                    self.vm()?.agent().cancel_all();
                    self.set_boot_outcome(BootOutcome::Timeout);
                    let why = format!(
                        "boot {} did not reach ready within {} (the guest agent never answered)",
                        self.boot_index(),
                        human_duration(timeout)
                    );
                    self.hangs.push(why.clone());
                    // What the screen shows (a recovery screen, a stuck boot logo)
                    // is often the only clue to why the agent never came.
                    self.capture_hang_evidence();
                    return Err(Stop::Hang(why));
                }
                Err(stop) => {
                    if let Some(vm) = self.vm.as_mut() {
                        vm.agent().cancel_all();
                    }
                    return Err(stop);
                }
            }
        }
    }

    /// A guest that resets by itself without a panic event (a triple fault, a kernel
    /// configured to reboot on panic without pvpanic) crashed as far as we can tell.
    fn record_crash_like_reset(&mut self, at: Instant) -> Stop {
        self.unexpected_reset = true;
        self.record_crash(at)
    }

    /// After a crash, the next ready Windows boot has written its own dumps (the
    /// minidump folder, MEMORY.DMP): copy them into the crash's evidence, and name
    /// the crash from a dump's bugcheck when nothing else named it. Problems are
    /// noted on the crash, never turned into a verdict; a crash or hang while
    /// copying ends the wait as usual.
    fn collect_guest_dumps(&mut self) -> Result<(), Stop> {
        let Some(crash_index) = self
            .crashes
            .iter()
            .rposition(|c| c.guest_dumps.is_empty() && c.guest_dumps_note.is_none())
        else {
            return Ok(());
        };
        let note = |this: &mut Self, text: String| {
            this.crashes[crash_index].guest_dumps_note = Some(text);
        };
        let command = match self.profile.list_crash_dumps() {
            Ok(command) => command,
            Err(e) => {
                note(self, format!("not collected: {e}"));
                return Ok(());
            }
        };
        let listing = match self.agent(
            Request::Exec {
                argv: command.argv,
                env: command.env,
                timeout: GUEST_DUMP_TIMEOUT,
            },
            GUEST_DUMP_TIMEOUT + REQUEST_TIMEOUT * 2,
        ) {
            Ok(Answer::Exited(status)) => String::from_utf8_lossy(&status.stdout).into_owned(),
            Ok(other) => {
                note(self, format!("listing the guest's dumps: {other:?}"));
                return Ok(());
            }
            Err(StepError::Failed(_, why)) => {
                note(self, format!("listing the guest's dumps: {why}"));
                return Ok(());
            }
            Err(StepError::Stopped(stop)) => return Err(stop),
        };
        let files = match windows::command::parse_crash_dump_listing(&listing) {
            Ok(files) => files,
            Err(e) => {
                note(self, format!("listing the guest's dumps: {e}"));
                return Ok(());
            }
        };
        let mut copied = Vec::new();
        let mut skipped = Vec::new();
        for (n, file) in files.iter().enumerate() {
            if file.bytes > MAX_READ_BYTES {
                skipped.push(format!(
                    "{} ({} MiB, over the {} MiB copy limit)",
                    file.path,
                    file.bytes >> 20,
                    MAX_READ_BYTES >> 20
                ));
                continue;
            }
            let data = match self.agent(
                Request::ReadFile {
                    path: file.path.clone(),
                },
                GUEST_DUMP_TIMEOUT,
            ) {
                Ok(Answer::Data(data)) => data,
                Ok(_) | Err(StepError::Failed(..)) => {
                    skipped.push(format!("{} (could not be read)", file.path));
                    continue;
                }
                Err(StepError::Stopped(stop)) => return Err(stop),
            };
            let name = file.path.rsplit('\\').next().unwrap_or("dump.dmp");
            let (path, rel) = self.evidence_path(&format!(
                "guest-dump-{}-{}-{}",
                crash_index + 1,
                n + 1,
                sanitize_file_name(name)
            ));
            if let Err(e) = crate::util::write_atomic(&path, &data) {
                skipped.push(format!(
                    "{} (cannot write {}: {e})",
                    file.path,
                    path.display()
                ));
                continue;
            }
            let crash = &mut self.crashes[crash_index];
            if crash.bugcheck.is_none() {
                if let Ok(header) = detect::win_dump::DumpHeader::parse(&data, &path) {
                    let bugcheck = header.bugcheck;
                    if crash.source != "console" {
                        crash.title = bugcheck.title(None);
                        crash.kind = "bugcheck".into();
                        crash.source = "guest-dump".into();
                        crash.excerpt = vec![bugcheck_line(&bugcheck)];
                    }
                    crash.signals.push("guest-dump".into());
                    crash.bugcheck = Some(BugcheckRecord::of(&bugcheck, "guest-dump"));
                }
            }
            copied.push(rel);
        }
        let crash = &mut self.crashes[crash_index];
        crash.guest_dumps = copied;
        crash.guest_dumps_note = if files.is_empty() {
            Some(
                "the guest wrote no dump (check its crash dump settings: bootgate doctor --image)"
                    .into(),
            )
        } else if skipped.is_empty() {
            None
        } else {
            Some(format!("not copied: {}", skipped.join("; ")))
        };
        Ok(())
    }

    /// A ready normal boot after a crash is the recovery.
    fn note_recovery(&mut self) {
        let rescue = self.boots.last().is_some_and(|b| b.extra_append.is_some());
        if self.recovery.is_some() || rescue {
            return;
        }
        if let Some((at, crash_boot)) = self.first_crash {
            let index = self.boot_index();
            if index > crash_boot {
                self.recovery = Some(RecoveryRecord {
                    boots: index - crash_boot,
                    seconds: (at.elapsed().as_millis() as f64 / 1000.0),
                    ready_boot: index,
                    how: self
                        .recovering_by
                        .unwrap_or(crate::model::record::RECOVERED_BY_ITSELF)
                        .into(),
                });
            }
        }
    }

    /// After a crash: resets the guest and watches up to `loop_boots` boots. Ok(true)
    /// when a boot reached ready (recovered), Ok(false) on a boot loop. A boot after
    /// a crash that never reaches ready (stuck in a recovery screen, such as Windows'
    /// Automatic Repair, or hung in a boot-start driver) is a boot loop too: the
    /// machine does not come back. Its screenshot is kept with the hang evidence.
    fn watch_after_crash(&mut self, loop_boots: u32, emitter: &Emitter) -> Result<bool, Stop> {
        let mut consecutive = u32::from(
            self.boots
                .last()
                .is_some_and(|b| b.outcome == BootOutcome::Crash),
        );
        loop {
            if consecutive >= loop_boots {
                self.boot_loop = true;
                return Ok(false);
            }
            self.reset()?;
            match self.wait_ready(self.setup.boot_timeout, emitter) {
                Ok(()) => return Ok(true),
                Err(Stop::Crash) => consecutive += 1,
                Err(Stop::Hang(why)) => {
                    // Counted as the loop it is, not as a separate hang: the
                    // boots list shows the stalled boot (outcome timeout or hang).
                    if self.hangs.last() == Some(&why) {
                        self.hangs.pop();
                    }
                    self.stalled_after_crash = Some(why);
                    self.boot_loop = true;
                    return Ok(false);
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Resets the (paused, crashed) guest and begins the next boot.
    fn reset(&mut self) -> Result<(), Stop> {
        self.expect_reset = true;
        let vm = self.vm()?;
        vm.agent().cancel_all();
        let qmp = vm
            .qmp()
            .ok_or_else(|| Stop::Infra("QMP is not connected".into()))?;
        // Console lines read before this instant belong to the crashed boot.
        let at = Instant::now();
        qmp.execute("system_reset", None, QMP_COMMAND_TIMEOUT)
            .map_err(|e| Stop::Infra(format!("system_reset: {e}")))?;
        // After a paused panic the CPUs stay stopped until `cont`; a running guest
        // answers with an error we can ignore.
        let _ = qmp.execute("cont", None, QMP_COMMAND_TIMEOUT);
        self.begin_boot(at, None);
        Ok(())
    }

    /// Runs an agent request to its answer, watching everything else meanwhile.
    fn agent(&mut self, request: Request, budget: Duration) -> Result<Answer, StepError> {
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
                Happening::Agent(got, result) if got == id => {
                    return match result {
                        Ok(answer) => Ok(answer),
                        Err(JobError::Cancelled) => {
                            Err(Stop::Infra(format!("{what} was cancelled")).into())
                        }
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
                            // The agent's socket closing is most often QEMU dying, and
                            // may be noticed before QMP's end: say which it was.
                            let why = format!("guest agent {what}: {e}");
                            let gone = self
                                .vm
                                .as_mut()
                                .is_some_and(|vm| vm.wait_exit(AGENT_LOSS_GRACE).is_some());
                            if gone {
                                return Err(self.qemu_gone(&why).into());
                            }
                            Err(Stop::Infra(why).into())
                        }
                    };
                }
                Happening::Agent(..) => {}
                Happening::Reset(at) => return Err(self.record_crash_like_reset(at).into()),
                Happening::Deadline => {
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

    /// Runs a guest command and checks its exit code; the detail quotes its output.
    fn exec(
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

    fn write_guest_file(&mut self, host: &Path, guest: String) -> Result<(), StepError> {
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

    fn guest_command<T>(
        &self,
        result: Result<T, crate::guest::GuestError>,
    ) -> Result<T, StepError> {
        result.map_err(|e| Stop::Infra(e.to_string()).into())
    }

    fn step(
        &mut self,
        step: &Step,
        suite: &Suite,
        drivers: &BTreeMap<String, Result<BuiltDriver, String>>,
        emitter: &Emitter,
    ) -> Result<String, StepError> {
        let driver = |name: &str| -> Result<(BuiltDriver, crate::suite::Driver), StepError> {
            let def = suite
                .drivers
                .get(name)
                .cloned()
                .ok_or_else(|| Stop::Infra(format!("driver {name} is not defined")))?;
            match drivers.get(name) {
                Some(Ok(built)) => Ok((built.clone(), def)),
                Some(Err(why)) => Err(Stop::Infra(why.clone()).into()),
                None => Err(Stop::Infra(format!("driver {name} was not prepared")).into()),
            }
        };
        match step {
            Step::Boot(_) => Ok("ready".into()),
            Step::Reboot(r) => {
                let timeout = r.timeout.unwrap_or(self.setup.boot_timeout);
                let mut ready = Vec::new();
                for _ in 0..r.times {
                    self.reboot(timeout, emitter)?;
                    let ms = self
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
            Step::Exec(e) => {
                let command = GuestCommand {
                    argv: self.profile.exec_argv(e),
                    env: Vec::new(),
                };
                self.exec(command, e.expect_exit, e.timeout())
            }
            Step::InstallDriver(s) => {
                let (built, _) = driver(&s.driver)?;
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
                    &built.sha256[..12],
                    if s.load_now {
                        " and loaded"
                    } else {
                        "; loads at next boot"
                    }
                ))
            }
            Step::UninstallDriver(s) => {
                let command = self.guest_command(self.profile.unregister_driver(&s.driver))?;
                self.exec(command, 0, REQUEST_TIMEOUT)?;
                Ok(format!("{} unloaded, unregistered and deleted", s.driver))
            }
            Step::ApplyContent(s) => {
                let (_, def) = driver(&s.driver)?;
                let content_file = def.content_file.unwrap_or_default();
                let path = self.guest_command(self.profile.content_path(&content_file))?;
                let host = suite.dir().join(&s.file);
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
            Step::RemoveContent(s) => {
                let (_, def) = driver(&s.driver)?;
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
            Step::Recover(s) => {
                let content = match &s.remove_content {
                    Some(name) => {
                        let (_, def) = driver(name)?;
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
            Step::RollbackContent(s) => {
                let (_, def) = driver(&s.driver)?;
                let file = def.content_file.unwrap_or_default();
                let path = self.guest_command(self.profile.content_path(&file))?;
                let host = s.file.as_ref().map(|f| suite.dir().join(f));
                self.rollback_content(s, path, host, emitter)
            }
        }
    }

    /// Stays with the running guest for `duration`; a crash or hang ends it early.
    fn observe(&mut self, duration: Duration) -> Result<(), Stop> {
        let deadline = Instant::now() + duration;
        loop {
            match self.next(deadline)? {
                Happening::Deadline => return Ok(()),
                Happening::Reset(at) => return Err(self.record_crash_like_reset(at)),
                Happening::Agent(..) => {}
            }
        }
    }

    /// Reboots through the agent, confirmed by QEMU's RESET event, then waits for ready.
    fn reboot(&mut self, timeout: Duration, emitter: &Emitter) -> Result<(), StepError> {
        let asked = Instant::now();
        let deadline = asked + REBOOT_REQUEST_TIMEOUT;
        let id = self
            .vm()?
            .agent()
            .submit(Request::Shutdown(ShutdownMode::Reboot));
        // The reset, not the agent going quiet, confirms the reboot: until it comes,
        // the old boot's agent may still answer.
        let reset_at = loop {
            match self.next(deadline)? {
                Happening::Reset(at) => break at,
                Happening::Agent(got, Err(JobError::Agent(e))) if got == id => {
                    return Err(StepError::Failed(
                        StepOutcome::Failed,
                        format!("guest-shutdown failed: {e}"),
                    ))
                }
                Happening::Agent(..) => {}
                Happening::Deadline => {
                    return Err(StepError::Stopped(self.hang(format!(
                        "the guest did not reboot within {} of guest-shutdown",
                        human_duration(REBOOT_REQUEST_TIMEOUT)
                    ))))
                }
            }
        };
        self.vm()?.agent().cancel_all();
        self.begin_boot(reset_at, None);
        self.wait_ready(timeout, emitter)?;
        Ok(())
    }
}

/// A guest file name made safe as a host file name (no separators, no dot-dot).
fn sanitize_file_name(name: &str) -> String {
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

/// A bugcheck with its parameters, for the crash excerpt.
fn bugcheck_line(bugcheck: &Bugcheck) -> String {
    let [p1, p2, p3, p4] = bugcheck.params;
    format!(
        "{} ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x})",
        bugcheck.title(None)
    )
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

    #[test]
    fn bugcheck_excerpt_has_the_title_and_parameters() {
        let b = Bugcheck {
            code: 0x50,
            params: [0xffff_d260_4009_6000, 0, 0xffff_f806_1234_5678, 2],
        };
        assert_eq!(
            bugcheck_line(&b),
            "0x50 PAGE_FAULT_IN_NONPAGED_AREA (0xffffd26040096000, 0x0, 0xfffff80612345678, 0x2)"
        );
    }
}
