//! The scenario's machine: QEMU processes on one disk across boots, and the waits
//! that feed what they report (QMP events, console lines, agent answers) to the
//! [`BootWatch`] and act on what it decides.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::capture::NextBoot;
use super::crash_watch::RecoveryWatch;
use super::stall::StallTracker;
use super::{Findings, Stop};
use crate::agent::worker::{Answer, JobError, Request};
use crate::detect::boot_watch::{self, BootWatch, Happening};
use crate::guest::GuestProfile;
use crate::guest::OsFamily;
use crate::image::manifest::Manifest;
use crate::model::record::{BootOutcome, BootRecord, DriversAtBoot};
use crate::model::Emitter;
use crate::qemu::accel::Accel;
use crate::qemu::qmp::QmpMessage;
use crate::qemu::snapshot::SavedState;
use crate::qemu::vm::{Signal, Standby, Vm, VmConfig, VmDir, WaitingQemu, QMP_COMMAND_TIMEOUT};
use crate::qemu::QemuTools;
use crate::runner::dump_budget::DumpBudget;
use crate::runner::interrupted;
use crate::suite::Evidence;
use crate::util::human_duration;

/// Longest uninterrupted wait on the signal channel, so Ctrl-C is noticed promptly.
const INTERRUPT_CHECK: Duration = Duration::from_millis(50);
/// Time the guest may take to list its loaded drivers after a ready boot.
const DRIVER_CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// After QEMU's signals ended, how long it gets to exit so its status can be named.
const EXIT_STATUS_GRACE: Duration = Duration::from_millis(500);

/// The state of one scenario's machine across QEMU processes and boots.
pub(super) struct Machine<'a> {
    pub(super) setup: MachineSetup<'a>,
    pub(super) profile: GuestProfile,
    /// The scenario's start: the zero of every `start_ms`.
    t0: Instant,
    pub(super) qemu: Qemu,
    /// What the signals of the current boot mean.
    pub(super) watch: BootWatch,
    pub(super) found: Findings,
    pub(super) recovery: RecoveryWatch,
    /// Drivers installed on this machine's disk to load at every boot, in install
    /// order: what each ready boot checks, and what a rescue boot skips.
    pub(super) installed: Vec<String>,
    /// Guest folders known to exist (created or written into): the system disk
    /// keeps them across boots, so each is made once per scenario.
    pub(super) made_dirs: BTreeSet<String>,
    /// When the current boot reached ready, once it has.
    pub(super) ready_at: Option<Instant>,
    /// How the boot after the crash just recorded begins, and when that crash was
    /// seen ([`Machine::begin_boot_after_crash`]).
    pub(super) after_crash: Option<(NextBoot, Instant)>,
    /// When each recorded crash was seen, host UTC, index for index with
    /// `found.crashes`: what the guest's own dumps are matched against.
    pub(super) crash_seen_utc: Vec<jiff::Timestamp>,
    /// The guest's clock minus the host's, as last measured at a ready Windows boot
    /// (guest_dumps.rs): file times read off the stopped disk are compared with it.
    pub(super) clock_skew: Option<jiff::SignedDuration>,
    /// The stall detector (stall.rs); None when the suite turned it off.
    pub(super) stall: Option<StallTracker>,
    /// Console lines kept as they arrive, while a persistent fuzzing session
    /// (persistent.rs) attributes them to its executions; None otherwise.
    pub(super) console_tap: Option<Vec<String>>,
    /// The dump formats this machine's QEMU writes, asked at its first dump
    /// (`query-dump-guest-memory-capability`).
    pub(super) dump_formats: Option<Vec<String>>,
}

/// What a [`Machine`] is made from, besides its VM folder.
pub(super) struct MachineSetup<'a> {
    pub(super) tools: &'a QemuTools,
    pub(super) manifest: &'a Manifest,
    pub(super) accel: Accel,
    pub(super) artifacts: &'a Path,
    pub(super) rel_dir: &'a str,
    pub(super) evidence: Evidence,
    /// The run's dump budget (`evidence.dump_budget_mib` is its limit).
    pub(super) dump_budget: &'a DumpBudget,
    pub(super) name: &'a str,
    pub(super) boot_timeout: Duration,
    /// See `ScenarioContext::watch_after_crash`.
    pub(super) follow_crash: bool,
    /// The scenario's `recovery_settle`: how long a boot after a crash must stay up
    /// past ready to count as the recovery (stretched by later crashes it saw).
    pub(super) recovery_settle: Duration,
    /// The suite's `stall_window` (None: off).
    pub(super) stall_window: Option<Duration>,
}

/// The QEMU processes of one machine and what they share.
pub(super) struct Qemu {
    /// Declared before `dir` so QEMU is stopped before its folder is removed.
    pub(super) vm: Option<Vm>,
    pub(super) dir: VmDir,
    runs: u32,
    pub(super) argvs: Vec<Vec<String>>,
    /// A second disk for every QEMU of this machine (a helper VM's patient).
    pub(super) data_disk: Option<PathBuf>,
    /// A standby's QEMU, for the first restore.
    pub(super) waiting: Option<WaitingQemu>,
}

/// What [`Machine::next`] saw, when it is not a stop.
pub(super) enum Wake {
    Agent(u64, Result<Answer, JobError>),
    /// The guest rebooted as asked ([`BootWatch::ask_reboot`]), or rebooted itself
    /// after writing its dump of a crash ([`Machine::begin_boot_after_crash`]); the
    /// new boot is recorded. Only comes while one of those is awaited.
    Rebooted,
    Deadline,
}

impl<'a> Machine<'a> {
    pub(super) fn new(setup: MachineSetup<'a>, vmdir: VmDir) -> Machine<'a> {
        let t0 = Instant::now();
        Machine {
            stall: setup.stall_window.map(StallTracker::new),
            profile: setup.manifest.guest_profile(),
            setup,
            t0,
            qemu: Qemu {
                vm: None,
                dir: vmdir,
                runs: 0,
                argvs: Vec::new(),
                data_disk: None,
                waiting: None,
            },
            watch: BootWatch::new(t0),
            found: Findings::default(),
            recovery: RecoveryWatch::default(),
            installed: Vec::new(),
            made_dirs: BTreeSet::new(),
            ready_at: None,
            after_crash: None,
            crash_seen_utc: Vec::new(),
            clock_skew: None,
            console_tap: None,
            dump_formats: None,
        }
    }
}

impl Machine<'_> {
    /// Milliseconds from the scenario's start to `at`.
    pub(super) fn offset(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_millis() as u64
    }

    pub(super) fn vm(&mut self) -> Result<&mut Vm, Stop> {
        self.qemu
            .vm
            .as_mut()
            .ok_or_else(|| Stop::Infra("no VM is running".into()))
    }

    /// Stops the running QEMU, if any.
    pub(super) fn power_off(&mut self) {
        if let Some(mut vm) = self.qemu.vm.take() {
            vm.stop();
        }
    }

    /// Starts a QEMU on the scenario's disk (stopping the previous one) and begins a boot.
    pub(super) fn power_on(
        &mut self,
        extra_append: Option<String>,
        restore: Option<&SavedState>,
    ) -> Result<(), Stop> {
        self.power_off();
        self.qemu.runs += 1;
        let log_suffix = if self.qemu.runs == 1 {
            String::new()
        } else {
            format!("-{}", self.qemu.runs)
        };
        let waiting = self.qemu.waiting.take().filter(|_| restore.is_some());
        let config = self.vm_config(extra_append.clone(), restore, log_suffix);
        let argv = Vm::argv(&config, &self.qemu.dir.layout);
        let started = match waiting {
            Some(waiting) => waiting.connect(&config, &self.qemu.dir.layout),
            None => Vm::start(&config, &self.qemu.dir.layout),
        };
        // Recorded whatever happened: a QEMU that refused it leaves its command line.
        self.qemu.argvs.push(argv);
        let vm = started.map_err(|e| Stop::Infra(format!("could not start the VM: {e}")))?;
        let standby = vm.standby;
        // A restored guest's "boot" is QEMU's start through the state load to ready.
        let started = if restore.is_some() {
            vm.spawned
        } else {
            vm.started
        };
        self.qemu.vm = Some(vm);
        self.stall_new_qemu();
        self.begin_boot(started, extra_append);
        if let Some(boot) = self.found.boots.last_mut() {
            boot.restored = restore.is_some();
            boot.standby = standby;
        }
        Ok(())
    }

    /// Starts a standby VM that restores `state` (the same command line this
    /// machine's restores use, its log in its own folder until a scenario takes it).
    pub(super) fn start_standby(
        &self,
        state: &SavedState,
    ) -> Result<Standby, crate::qemu::vm::VmError> {
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
            data_disk: self.qemu.data_disk.as_deref(),
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

    /// Begins the next boot at `at`: in the watch, and in the boots list.
    fn begin_boot(&mut self, at: Instant, extra_append: Option<String>) {
        // However the boot came, the plan for the boot after a crash is moot.
        self.after_crash = None;
        self.ready_at = None;
        self.watch.begin_boot(at);
        self.record_boot(at, extra_append);
    }

    /// Adds the boot the watch just began to the boots list.
    fn record_boot(&mut self, at: Instant, extra_append: Option<String>) {
        self.ready_at = None;
        self.stall_begin_boot();
        let start_ms = self.offset(at);
        self.found.boots.push(BootRecord {
            index: self.watch.boot(),
            start_ms,
            outcome: BootOutcome::Error,
            ready_ms: None,
            extra_append,
            crash: None,
            restored: false,
            standby: false,
            drivers: None,
            reboot_via: None,
            crashed: None,
            crash_after_ready_ms: None,
        });
    }

    pub(super) fn boot_index(&self) -> u32 {
        self.watch.boot()
    }

    pub(super) fn set_boot_outcome(&mut self, outcome: BootOutcome) {
        if let Some(boot) = self.found.boots.last_mut() {
            boot.outcome = outcome;
        }
    }

    /// Waits for the next thing that matters, or `deadline`. Crashes, hangs seen on the
    /// console, an unasked reset (recorded as a crash), QEMU going away and Ctrl-C end
    /// the wait as `Err`.
    pub(super) fn next(&mut self, deadline: Instant) -> Result<Wake, Stop> {
        loop {
            if interrupted() {
                return Err(Stop::Interrupted);
            }
            self.confirm_recovery(Instant::now());
            if let Some(happening) = self.watch.poll(Instant::now()) {
                if let Some(wake) = self.act_on(happening)? {
                    return Ok(wake);
                }
            }
            self.stall_tick(Instant::now())?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(Wake::Deadline);
            }
            let mut wait = (deadline - now).min(INTERRUPT_CHECK);
            for at in [self.watch.wake_at(), self.stall_wake_at()]
                .into_iter()
                .flatten()
            {
                wait = wait.min(at.saturating_duration_since(now));
            }
            let signal = match self.vm()?.signals.recv_timeout(wait) {
                Ok(signal) => signal,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.qemu_gone("its signal channel closed"))
                }
            };
            let happening = match signal {
                Signal::Console(line) => {
                    self.stall_console(&line.text, line.at);
                    if let Some(tap) = self.console_tap.as_mut() {
                        tap.push(line.text.clone());
                    }
                    self.watch
                        .feed(boot_watch::Signal::Console(&line.text), line.at)
                }
                Signal::Qmp(QmpMessage::Event(event)) => self.watch.feed(
                    boot_watch::Signal::Qmp {
                        name: &event.name,
                        data: &event.data,
                    },
                    event.received,
                ),
                Signal::Qmp(QmpMessage::Closed(why)) => {
                    let why = why
                        .map_or_else(|| "QMP closed".to_string(), |e| format!("QMP closed: {e}"));
                    return Err(self.qemu_gone(&why));
                }
                Signal::Agent(reply) if self.stall_own_reply(reply.id) => None,
                Signal::Agent(reply) => return Ok(Wake::Agent(reply.id, reply.result)),
            };
            if let Some(wake) = happening.map(|h| self.act_on(h)).transpose()?.flatten() {
                return Ok(wake);
            }
        }
    }

    /// What the watch decided does to the machine: `Ok(None)` waits on.
    fn act_on(&mut self, happening: Happening) -> Result<Option<Wake>, Stop> {
        match happening {
            Happening::Crash(crash) => Err(self.record_crash(crash)),
            Happening::Hang { boot, title } => Err(self.hang(format!("{title} (boot {boot})"))),
            Happening::PoweredOff { .. } => Err(Stop::PoweredOff),
            Happening::Reboot { at, .. } | Happening::CrashEnded { at, .. } => {
                self.record_boot(at, None);
                Ok(Some(Wake::Rebooted))
            }
            // Ready is the agent's answer, handled by `wait_ready`; a pending decision
            // only bounds the wait (`BootWatch::wake_at`).
            Happening::Ready { .. } | Happening::Pending { .. } => Ok(None),
        }
    }

    /// QEMU is gone: the reason, with its exit status and what it said.
    pub(super) fn qemu_gone(&mut self, why: &str) -> Stop {
        let (status, log) = match self.qemu.vm.as_mut() {
            Some(vm) => {
                let status = match vm.exited() {
                    Some(s) => s.to_string(),
                    None => vm
                        .wait_exit(EXIT_STATUS_GRACE)
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

    /// Waits for one QMP event while capturing evidence; console lines keep feeding
    /// the watch's detector, everything else waits for the runner.
    pub(super) fn wait_event(
        &mut self,
        name: &str,
        deadline: Instant,
        budget: Duration,
    ) -> Result<serde_json::Value, String> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no {name} within {}", human_duration(budget)));
            }
            let vm = self.qemu.vm.as_mut().ok_or("no VM")?;
            match vm
                .signals
                .recv_timeout((deadline - now).min(INTERRUPT_CHECK))
            {
                Ok(Signal::Qmp(QmpMessage::Event(event))) if event.name == name => {
                    return Ok(event.data)
                }
                Ok(Signal::Qmp(QmpMessage::Closed(_))) => return Err("QEMU went away".into()),
                Ok(Signal::Console(line)) => self.watch.absorb_console(&line.text),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("QEMU went away".into()),
            }
            if interrupted() {
                return Err("interrupted".into());
            }
        }
    }

    /// Waits until the agent answers: the boot is ready.
    pub(super) fn wait_ready(&mut self, timeout: Duration, emitter: &Emitter) -> Result<(), Stop> {
        let deadline = self.watch.started() + timeout;
        let vm = self.vm()?;
        let id = match vm.take_ready_request() {
            Some(id) => id,
            None => vm.agent().submit(Request::WaitReady),
        };
        loop {
            match self.next(deadline) {
                Ok(Wake::Agent(got, result)) if got == id => {
                    return match result {
                        Ok(_) => self.became_ready(emitter),
                        Err(e) => Err(Stop::Infra(format!("waiting for the guest agent: {e}"))),
                    }
                }
                Ok(Wake::Agent(..) | Wake::Rebooted) => {}
                Ok(Wake::Deadline) => {
                    self.vm()?.agent().cancel_all();
                    return Err(self.boot_timed_out(timeout));
                }
                Err(stop) => {
                    if let Some(vm) = self.qemu.vm.as_mut() {
                        vm.agent().cancel_all();
                    }
                    return Err(stop);
                }
            }
        }
    }

    /// The agent answered: records the ready boot, notes a recovery, and (Windows)
    /// collects the dumps the guest wrote of the crash before it.
    fn became_ready(&mut self, emitter: &Emitter) -> Result<(), Stop> {
        let now = Instant::now();
        self.ready_at = Some(now);
        let ready_ms = self.watch.mark_ready(now).as_millis() as u64;
        if let Some(boot) = self.found.boots.last_mut() {
            boot.outcome = BootOutcome::Ready;
            boot.ready_ms = Some(ready_ms);
        }
        emitter.boot_ready(self.setup.name, self.boot_index(), ready_ms);
        self.note_recovery();
        if self.profile.os == OsFamily::Windows {
            self.collect_guest_dumps()?;
            // Once per scenario, while the guest can still answer: a boot loop later
            // leaves only the stopped disk, whose dump times need this to be read.
            // Not reading it only leaves the offline comparison without a correction
            // (noted there), so it is no reason to stop.
            if self.clock_skew.is_none() {
                let _ = self.measure_clock_skew()?;
            }
        }
        self.check_drivers_loaded()
    }

    /// Whether the current boot is a rescue boot (it skips third-party drivers on
    /// purpose: neither a recovery nor a boot that should load them).
    pub(super) fn in_rescue_boot(&self) -> bool {
        self.found
            .boots
            .last()
            .is_some_and(|b| b.extra_append.is_some())
    }

    /// Records which installed drivers this ready boot loaded. A rescue boot skips
    /// them on purpose, so it is not checked; Windows proves it another way.
    fn check_drivers_loaded(&mut self) -> Result<(), Stop> {
        if self.installed.is_empty() || self.in_rescue_boot() {
            return Ok(());
        }
        let Some(command) = self.profile.loaded_drivers(&self.installed) else {
            return Ok(());
        };
        // Windows starts PowerShell and CIM for this: its command budget, not 20 s.
        let timeout = match self.profile.os {
            crate::guest::OsFamily::Windows => {
                self.budget(crate::guest::budget::CommandKind::Command, None)
                    .timeout
            }
            crate::guest::OsFamily::Linux => DRIVER_CHECK_TIMEOUT,
        };
        let stdout = match self.exec_output(command, timeout) {
            Ok(stdout) => stdout,
            Err(super::StepError::Stopped(stop)) => return Err(stop),
            Err(super::StepError::Failed(_, why)) => {
                return Err(Stop::Infra(format!(
                    "could not check which drivers boot {} loaded: {why}",
                    self.boot_index()
                )))
            }
        };
        let found = self
            .profile
            .parse_loaded_drivers(&self.installed, &stdout)
            .map_err(|why| {
                Stop::Infra(format!(
                    "could not check which drivers boot {} loaded: {why}",
                    self.boot_index()
                ))
            })?;
        if let Some(boot) = self.found.boots.last_mut() {
            boot.drivers = Some(DriversAtBoot {
                loaded: found.loaded,
                missing: found.missing,
                reasons: found.reasons,
            });
        }
        Ok(())
    }

    /// Begins the boot after the crash just recorded, the way its capture model
    /// says: bootgate resets a stopped guest; a guest's own reset already began it;
    /// a guest writing its own dump is waited for until it reboots itself (bounded:
    /// then reset from here, with a note on the crash).
    pub(super) fn begin_boot_after_crash(&mut self) -> Result<(), Stop> {
        match self.after_crash.take() {
            None | Some((NextBoot::HostResets, _)) => self.reset(),
            Some((NextBoot::BegunByTheReset, at)) => {
                // The crashed boot's requests died with it.
                self.vm()?.agent().cancel_all();
                self.begin_boot(at, None);
                Ok(())
            }
            Some((NextBoot::GuestResetsItself { within }, seen_at)) => {
                self.await_guest_reset(within, seen_at)
            }
        }
    }

    /// Waits for a guest that is writing its own dump to reboot itself: its RESET
    /// ends the crash and begins the next boot. If none comes by `seen_at + within`
    /// (AutoReboot off, a dump write that hangs), bootgate resets it and says so.
    fn await_guest_reset(&mut self, within: Duration, seen_at: Instant) -> Result<(), Stop> {
        let deadline = seen_at + within;
        loop {
            match self.next(deadline)? {
                Wake::Rebooted => {
                    let took = human_duration(seen_at.elapsed());
                    self.note_on_last_crash(format!(
                        "the guest wrote its own dump and reset itself {took} after GUEST_CRASHLOADED; that reset ended the crash"
                    ));
                    return Ok(());
                }
                Wake::Agent(..) => {}
                Wake::Deadline => {
                    self.note_on_last_crash(format!(
                        "the guest did not reset itself within {} of GUEST_CRASHLOADED (AutoReboot off, or its dump write hung): bootgate reset it, so its dump may be incomplete",
                        human_duration(within)
                    ));
                    return self.reset();
                }
            }
        }
    }

    /// Adds `note` to the last crash's capture note.
    pub(super) fn note_on_last_crash(&mut self, note: String) {
        if let Some(crash) = self.found.crashes.last_mut() {
            crash.capture_note = Some(match crash.capture_note.take() {
                Some(earlier) => format!("{earlier}; {note}"),
                None => note,
            });
        }
    }

    /// Resets the (paused, crashed) guest and begins the next boot.
    pub(super) fn reset(&mut self) -> Result<(), Stop> {
        self.watch.expect_own_reset();
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
}
