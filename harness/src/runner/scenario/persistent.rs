//! One VM kept across many steps, for persistent content fuzzing: restored once from
//! the saved state, it runs step after step (each a content update and its reload)
//! until one of them ends it (a crash, a hang, the guest or QEMU going away), and
//! says which console lines each step made the guest print.
//!
//! Attribution is exact, not timed: after each step the host writes a numbered
//! marker to the guest's kernel log (`/dev/kmsg`, through the agent's file calls, so
//! no process is started), and waits until that marker comes back on the console.
//! The kernel prints in order, so every line before the marker and after the
//! previous one was printed while that step ran or before it returned. A line the
//! driver prints later (from a worker or a timer) is attributed to a later step:
//! harmless for the corpus signature, and a crash found here is only ever reported
//! after it was replayed alone from the saved state (fuzz/worker.rs).

use std::time::{Duration, Instant};

use super::machine::{Machine, Wake};
use super::{open_machine, ScenarioContext, StepError, Stop};
use crate::agent::worker::{Request, REQUEST_TIMEOUT};
use crate::guest::OsFamily;
use crate::model::Emitter;
use crate::runner::driver::BuiltDriver;
use crate::suite::{Step, Suite};
use std::collections::BTreeMap;

/// Where the marker is written: the kernel log, which every Linux console prints.
const KMSG: &str = "/dev/kmsg";
/// Text of the marker line; the step's number follows it.
const MARKER: &str = "bootgate-persistent: done";
/// Time the marker gets to come back on the console once written. The console is
/// read as it arrives (tens of ms); a guest that cannot print its own log line in
/// this long is treated as stopped, and the step's input is replayed alone.
const MARKER_WAIT: Duration = Duration::from_secs(10);

/// What one step did in the kept VM.
#[derive(Debug)]
pub(crate) enum PersistentRun {
    /// The guest is still up after the step (which may have failed: a driver that
    /// refuses an input is not stopped by it); the console lines it printed.
    Survived(Vec<String>),
    /// The step ended the session: a crash, a hang, QEMU or the guest gone, an
    /// interrupt. Why, in words; the caller decides by replaying the input alone.
    Ended(String),
}

/// A VM restored once and kept while its steps leave it up.
pub(crate) struct PersistentVm<'a> {
    m: Machine<'a>,
    suite: &'a Suite,
    drivers: &'a BTreeMap<String, Result<BuiltDriver, String>>,
    emitter: &'a Emitter,
    steps: u64,
}

impl<'a> PersistentVm<'a> {
    /// Restores `ctx.saved` into a new VM and waits for its agent. Linux guests only:
    /// the marker goes through `/dev/kmsg`.
    pub(crate) fn start(ctx: &ScenarioContext<'a>) -> Result<PersistentVm<'a>, String> {
        if ctx.manifest.os == OsFamily::Windows {
            return Err("persistent fuzzing needs a Linux guest (its marker is written to /dev/kmsg); use --restore-every 1".into());
        }
        let saved = ctx
            .saved
            .ok_or("persistent fuzzing needs the driver-loaded saved state")?;
        let mut m = open_machine(ctx, Some(saved))?;
        m.power_on(None, Some(saved))
            .and_then(|()| m.wait_ready(m.setup.boot_timeout, ctx.emitter))
            .map_err(|stop| format!("the restored VM did not come up: {}", describe(&stop)))?;
        m.console_tap = Some(Vec::new());
        Ok(PersistentVm {
            m,
            suite: ctx.suite,
            drivers: ctx.drivers,
            emitter: ctx.emitter,
            steps: 0,
        })
    }

    /// Runs `step`, then marks its end on the console and returns the lines it
    /// printed. After [`PersistentRun::Ended`] the VM is of no further use.
    pub(crate) fn run(&mut self, step: &Step) -> PersistentRun {
        self.steps += 1;
        if let Some(tap) = self.m.console_tap.as_mut() {
            tap.clear();
        }
        match self.m.step(step, self.suite, self.drivers, self.emitter) {
            Ok(_) | Err(StepError::Failed(..)) => {}
            Err(StepError::Stopped(stop)) => return PersistentRun::Ended(self.ended(&stop)),
        }
        let marker = format!("{MARKER} {}", self.steps);
        let written = self.m.agent(
            Request::WriteFile {
                path: KMSG.into(),
                data: format!("{marker}\n").into_bytes(),
            },
            REQUEST_TIMEOUT * 3,
        );
        if let Err(e) = written {
            return PersistentRun::Ended(match e {
                StepError::Stopped(stop) => self.ended(&stop),
                StepError::Failed(_, detail) => format!("cannot write the marker: {detail}"),
            });
        }
        match self.wait_marker(&marker) {
            Ok(lines) => PersistentRun::Survived(lines),
            Err(why) => PersistentRun::Ended(why),
        }
    }

    /// Waits until `marker` is on the console; the lines before it.
    fn wait_marker(&mut self, marker: &str) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + MARKER_WAIT;
        loop {
            if let Some(tap) = self.m.console_tap.as_mut() {
                if let Some(at) = tap.iter().position(|l| l.ends_with(marker)) {
                    let mut lines = std::mem::take(tap);
                    lines.truncate(at);
                    return Ok(lines);
                }
            }
            match self.m.next(deadline) {
                Ok(Wake::Deadline) => {
                    return Err(format!(
                        "the guest did not print its marker within {} s",
                        MARKER_WAIT.as_secs()
                    ))
                }
                // A late agent reply or a reboot: keep waiting for the marker (a
                // reboot cannot print it, so the deadline ends that wait).
                Ok(_) => {}
                Err(stop) => return Err(self.ended(&stop)),
            }
        }
    }
}

impl PersistentVm<'_> {
    /// What stopped the session; a crash by its title.
    fn ended(&self, stop: &Stop) -> String {
        match (stop, self.m.found.crashes.last()) {
            (Stop::Crash, Some(crash)) => format!("crash: {}", crash.title),
            _ => describe(stop),
        }
    }
}

impl Drop for PersistentVm<'_> {
    fn drop(&mut self) {
        if let Some(vm) = self.m.qemu.vm.as_mut() {
            vm.stop();
        }
    }
}

fn describe(stop: &Stop) -> String {
    match stop {
        Stop::Crash => "crash".into(),
        Stop::Hang(why) => format!("hang: {why}"),
        Stop::PoweredOff => "the guest powered off".into(),
        Stop::Infra(why) => why.clone(),
        Stop::Interrupted => "interrupted".into(),
    }
}
