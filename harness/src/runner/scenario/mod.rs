//! Running one scenario on one VM: boots, steps, crash and boot-loop watching,
//! recovery, gates, verdict.
//!
//! Everything a VM reports arrives on one channel (QMP events, console lines, agent
//! answers), so every wait ends on the first thing that decides it: a panic is acted
//! on when its event arrives, not at the next poll. What each signal means is
//! [`crate::detect::boot_watch`]'s to say; this module acts on it.
//!
//! - `machine`: QEMU's lifecycle and the waits that drive the boot watch;
//! - `crash_watch`: after a crash, the boots watched for a loop or a recovery that
//!   holds the settle window;
//! - `evidence`: what a crash or hang leaves behind (screenshots, dumps, the
//!   guest's own dumps);
//! - `steps`: the suite's steps, run through the guest agent;
//! - `recovery`: bringing a crashed guest back from outside.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::image::manifest::Manifest;
use crate::model::record::{
    BootRecord, CrashRecord, RecoveryRecord, StallRecord, StepOutcome, StepRecord, Verdict,
};
use crate::model::Emitter;
use crate::qemu::accel::Accel;
use crate::qemu::snapshot::SavedState;
use crate::qemu::vm::{Standby, VmDir, WaitingQemu};
use crate::qemu::QemuTools;
use crate::runner::driver::BuiltDriver;
use crate::runner::dump_budget::DumpBudget;
use crate::runner::interrupted;
use crate::runner::verdict::{after_ready_span, judge, Observed};
use crate::suite::{Scenario, Step};
use crate::util::human_duration;

mod capture;
mod crash_watch;
mod evidence;
mod guest_dumps;
mod machine;
pub(crate) mod ntfs;
pub(crate) mod persistent;
mod recovery;
mod stall;
mod steps;

use crash_watch::Watched;
use machine::{Machine, MachineSetup};

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
pub(crate) struct ScenarioOutcome {
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub boots: Vec<BootRecord>,
    pub steps: Vec<StepRecord>,
    pub crashes: Vec<CrashRecord>,
    pub hangs: Vec<String>,
    pub hang_screenshots: Vec<String>,
    pub stalls: Vec<StallRecord>,
    pub boot_loop: bool,
    pub recovery: Option<RecoveryRecord>,
    pub argvs: Vec<Vec<String>>,
    pub interrupted: bool,
}

pub(crate) struct ScenarioContext<'a> {
    pub tools: &'a QemuTools,
    pub manifest: &'a Manifest,
    pub accel: Accel,
    pub suite: &'a crate::suite::Suite,
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
    /// The run's dump budget, shared by every worker.
    pub dump_budget: &'a DumpBudget,
}

/// A worker's standby VM, if it has one.
pub(crate) type StandbySlot = std::cell::RefCell<Option<Standby>>;

/// What a machine observed across its boots: what the gates judge and the outcome
/// reports.
#[derive(Default)]
struct Findings {
    boots: Vec<BootRecord>,
    crashes: Vec<CrashRecord>,
    hangs: Vec<String>,
    hang_screenshots: Vec<String>,
    /// What the stall detector saw of each hang it decided.
    stalls: Vec<StallRecord>,
    boot_loop: bool,
    /// Why the boot after a crash never became ready, when that made the loop.
    stalled_after_crash: Option<String>,
    /// The longest time from ready to a crash in a boot after the first crash: the
    /// settle window is stretched past it.
    longest_after_ready: Option<std::time::Duration>,
    /// Of the boots the last watch after a crash counted, the ready-to-crash times
    /// (ms) of those that crashed after ready.
    loop_after_ready_ms: Vec<u64>,
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
    /// The next step is a `rollback_content`: a watch after a crash hands it the
    /// first boot that answers instead of holding that boot for the settle window.
    hand_over: bool,
}

pub fn run(ctx: ScenarioContext) -> ScenarioOutcome {
    // Start from the image's saved ready state unless the scenario is about booting.
    let restore = ctx.saved.filter(|_| !ctx.scenario.cold_boot);
    let mut m = match open_machine(&ctx, restore) {
        Ok(m) => m,
        Err(reason) => return not_started(reason),
    };
    let mut state = Progress::default();
    let rest: Vec<&Step> = ctx
        .scenario
        .steps
        .iter()
        .filter(|s| !matches!(s, Step::Boot(_)))
        .collect();
    let rollback_at = |i: usize| matches!(rest.get(i), Some(Step::RollbackContent(_)));
    state.hand_over = rollback_at(0);
    let mut steps = vec![first_boot(&mut m, &ctx, restore, &mut state)];
    // With this scenario's VM up, start the next one's while this one runs.
    if let (Some(saved), Some(slot)) = (restore, ctx.standby) {
        if ctx.refill_standby && !ctx.keep_overlay && !interrupted() {
            // No standby is no loss: the next scenario starts its QEMU itself.
            *slot.borrow_mut() = m.start_standby(saved).ok();
        }
    }
    for (i, step) in rest.iter().enumerate() {
        state.hand_over = rollback_at(i + 1);
        steps.push(run_step(&mut m, &ctx, step, &mut state));
    }
    hold_pending_recovery(&mut m, &mut state);
    let mut outcome = finish(m, ctx.scenario, state, steps);
    // With the VM gone: the dumps are complete and nothing else is reading them.
    let inputs = crate::runner::triage::TriageInputs {
        manifest: ctx.manifest,
        suite_dir: ctx.suite.dir(),
        drivers: ctx.drivers,
        artifacts: ctx.dir,
        rel_dir: ctx.rel_dir,
        read_dumps: !outcome.interrupted && !interrupted(),
    };
    crate::runner::triage::triage_crashes(&inputs, &mut outcome.crashes);
    outcome
}

/// A recovery whose boot is still inside its settle window when the steps are done
/// is held to the window's end before the VM stops: recorded if the boot stays up,
/// dropped (and the crash recorded) if it does not.
fn hold_pending_recovery(m: &mut Machine, state: &mut Progress) {
    let blocked = state.infra.is_some() || state.interrupted || state.guest_down;
    if blocked || !m.recovery_pending() {
        return;
    }
    match m.hold_ready_boot() {
        Ok(()) | Err(Stop::Crash | Stop::Hang(_) | Stop::PoweredOff) => {}
        Err(Stop::Infra(why)) => state.infra = Some(why),
        Err(Stop::Interrupted) => state.interrupted = true,
    }
}

/// The outcome of a scenario whose VM could not even be prepared.
fn not_started(reason: String) -> ScenarioOutcome {
    ScenarioOutcome {
        verdict: Verdict::Error,
        reason: Some(reason),
        boots: Vec::new(),
        steps: Vec::new(),
        crashes: Vec::new(),
        hangs: Vec::new(),
        hang_screenshots: Vec::new(),
        stalls: Vec::new(),
        boot_loop: false,
        recovery: None,
        argvs: Vec::new(),
        interrupted: false,
    }
}

/// The scenario's machine on its own VM folder: the worker's standby when it
/// restores this state, a new folder otherwise.
fn open_machine<'a>(
    ctx: &ScenarioContext<'a>,
    restore: Option<&SavedState>,
) -> Result<Machine<'a>, String> {
    let keep = ctx.keep_overlay.then_some(ctx.dir);
    // A kept overlay must live in the results, so it cannot come from a standby's
    // folder. A standby that does not fit is dropped here, which stops it.
    let standby = match (restore, ctx.standby) {
        (Some(state), Some(slot)) if keep.is_none() => {
            slot.borrow_mut().take().filter(|s| s.restores(state))
        }
        _ => None,
    };
    let (vmdir, waiting): (VmDir, Option<WaitingQemu>) = match standby {
        Some(standby) => {
            let (dir, waiting) = standby.into_parts();
            (dir, Some(waiting))
        }
        None => match VmDir::create(&ctx.tools.img, ctx.manifest, restore, keep) {
            Ok(dir) => (dir, None),
            Err(e) => return Err(format!("could not prepare the VM: {e}")),
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
            dump_budget: ctx.dump_budget,
            name: ctx.full_name,
            boot_timeout,
            follow_crash: ctx.watch_after_crash,
            recovery_settle: ctx.scenario.recovery_settle,
            stall_window: ctx.suite.stall_window,
        },
        vmdir,
    );
    m.qemu.waiting = waiting;
    Ok(m)
}

/// The first boot is implicit; a leading `boot` step only sets its timeout.
fn first_boot(
    m: &mut Machine,
    ctx: &ScenarioContext,
    restore: Option<&SavedState>,
    state: &mut Progress,
) -> StepRecord {
    let first = Instant::now();
    let result = m
        .power_on(None, restore)
        .and_then(|()| m.wait_ready(m.setup.boot_timeout, ctx.emitter));
    let record = StepRecord {
        kind: "boot".into(),
        start_ms: m.offset(first),
        outcome: StepOutcome::Ok,
        duration_ms: first.elapsed().as_millis() as u64,
        detail: String::new(),
    };
    let result = result
        .map(|()| "ready".to_string())
        .map_err(StepError::from);
    let record = settle(m, record, result, ctx.scenario, ctx.emitter, state);
    ctx.emitter.step_finished(ctx.full_name, &record);
    record
}

/// Runs one step, or records it as skipped when an earlier one ended the scenario.
fn run_step(
    m: &mut Machine,
    ctx: &ScenarioContext,
    step: &Step,
    state: &mut Progress,
) -> StepRecord {
    let is_recover = matches!(step, Step::Recover(_));
    let blocked = state.failure.is_some() || state.infra.is_some() || state.interrupted;
    if blocked || (state.guest_down && !is_recover) {
        return StepRecord {
            kind: step.kind().into(),
            start_ms: m.offset(Instant::now()),
            outcome: StepOutcome::Skipped,
            duration_ms: 0,
            detail: if state.guest_down && !blocked {
                "skipped: the guest did not come back after its crash".into()
            } else {
                "skipped: an earlier step did not succeed".into()
            },
        };
    }
    ctx.emitter.step_started(ctx.full_name, &step.to_string());
    let started = Instant::now();
    let result = m.step(step, ctx.suite, ctx.drivers, ctx.emitter);
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
    let record = settle(m, record, result, ctx.scenario, ctx.emitter, state);
    ctx.emitter.step_finished(ctx.full_name, &record);
    record
}

/// Stops the VM and turns what was seen into the outcome and its verdict.
fn finish(
    mut m: Machine,
    scenario: &Scenario,
    state: Progress,
    steps: Vec<StepRecord>,
) -> ScenarioOutcome {
    if let Some(vm) = m.qemu.vm.as_mut() {
        vm.stop();
    }
    let Progress {
        mut failure,
        infra,
        interrupted,
        ..
    } = state;
    let found = std::mem::take(&mut m.found);
    let recovery = m.recovery.record.take();
    if infra.is_none() && !interrupted {
        let observed = Observed {
            boots: &found.boots,
            crashes: &found.crashes,
            hangs: &found.hangs,
            boot_loop: found.boot_loop,
            stalled_after_crash: found.stalled_after_crash.as_deref(),
            loop_after_ready_ms: &found.loop_after_ready_ms,
            recovery: recovery.as_ref(),
        };
        failure = failure.or_else(|| judge(&observed, scenario));
    }
    let verdict = if infra.is_some() || interrupted {
        Verdict::Error
    } else if failure.is_some() {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    ScenarioOutcome {
        verdict,
        reason: infra
            .or(failure)
            .or_else(|| interrupted.then(|| "interrupted".to_string())),
        boots: found.boots,
        steps,
        crashes: found.crashes,
        hangs: found.hangs,
        hang_screenshots: found.hang_screenshots,
        stalls: found.stalls,
        boot_loop: found.boot_loop,
        recovery,
        argvs: std::mem::take(&mut m.qemu.argvs),
        interrupted,
    }
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
            record.detail = settle_crash(m, scenario, emitter, state);
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

/// After a step ended in a crash: watches the next boots (does it loop, or come
/// back?) and says what they did, for the step's detail.
fn settle_crash(
    m: &mut Machine,
    scenario: &Scenario,
    emitter: &Emitter,
    state: &mut Progress,
) -> String {
    let title = m
        .found
        .crashes
        .last()
        .map_or_else(|| "crash".into(), |c| c.title.clone());
    let mut detail = format!("crash: {title}");
    if !m.setup.follow_crash {
        state.guest_down = true;
        return detail;
    }
    let watched = m.watch_after_crash(scenario.boot_loop_boots, state.hand_over, emitter);
    let late = &m.found.loop_after_ready_ms;
    match watched {
        Ok(Watched::Recovered) => {
            detail.push_str(&format!(
                "; the guest recovered: boot {} stayed up {} after ready",
                m.boot_index(),
                human_duration(m.settle_window())
            ));
            if !late.is_empty() {
                detail.push_str(&format!(
                    " (after {} boot(s) that crashed {} after ready)",
                    late.len(),
                    after_ready_span(late)
                ));
            }
        }
        Ok(Watched::HandedOver) => detail.push_str(&format!(
            "; boot {} answered and went straight to the next step",
            m.boot_index()
        )),
        Ok(Watched::BootLoop) => {
            state.guest_down = true;
            match &m.found.stalled_after_crash {
                Some(why) => {
                    detail.push_str(&format!("; boot loop: the guest did not come back ({why})"))
                }
                None if scenario.boot_loop_boots == 1 => {
                    detail.push_str("; boot loop: the reboot crashed too");
                    if !late.is_empty() {
                        detail.push_str(&format!(" ({} after ready)", after_ready_span(late)));
                    }
                }
                None => {
                    detail.push_str(&format!(
                        "; boot loop: {} consecutive boots crashed",
                        scenario.boot_loop_boots
                    ));
                    if !late.is_empty() {
                        detail.push_str(&format!(
                            " ({} of them {} after ready)",
                            late.len(),
                            after_ready_span(late)
                        ));
                    }
                }
            }
        }
        Err(Stop::Infra(why)) => state.infra = Some(why),
        Err(Stop::Interrupted) => state.interrupted = true,
        Err(_) => state.guest_down = true,
    }
    detail
}
