//! The stall detector's side in the machine: it samples the vCPUs through QMP while
//! the runner waits ([`Machine::next`]), feeds it console lines and the agent's
//! answers, asks the agent something cheap when the guest looks parked, and turns
//! its decision into a hang with evidence. What a stall is, is
//! [`crate::detect::stall`]'s to say.
//!
//! Per phase (also in docs/hangs.md):
//! - before ready (a cold boot, a reboot, a restore before the agent's sync, a
//!   reboot asked for and under way): no agent to ask, so the vCPUs and the
//!   console decide;
//! - ready, during a step: every agent answer counts, the `guest-exec-status` polls
//!   of a long command included, so a command that runs for minutes keeps the
//!   guest alive as long as the guest still schedules;
//! - ready, waiting (a settle window, an observation): the guest is asked
//!   `guest-get-time` once it looks parked, and must stay silent for half the window.

use std::time::{Duration, Instant};

use super::machine::Machine;
use super::Stop;
use crate::agent::worker::Request;
use crate::detect::stall::{Stall, StallWatch};
use crate::model::record::{StallRecord, StalledVcpu};
use crate::qemu::qmp::vcpu;
use crate::util::human_duration;

/// Interval between vCPU samples: twenty per default window, each two QMP commands
/// (`query-status`, `info registers -a`), a few milliseconds of the main loop.
pub(super) const STALL_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
/// Time one sample's QMP command may take; a sample that does not come is skipped
/// (a QEMU that stopped answering is noticed by the waits themselves).
const STALL_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The stall detector of one machine and what it needs between samples.
pub(super) struct StallTracker {
    watch: StallWatch,
    next_sample: Instant,
    /// The vCPU threads of the running QEMU (asked once per QEMU), and its pid.
    threads: Option<(u32, Vec<u32>)>,
    /// The agent worker's answer count last seen.
    answered: u64,
    /// The `guest-get-time` this tracker sent and whose answer has not come.
    ping: Option<u64>,
}

impl StallTracker {
    pub(super) fn new(window: Duration) -> StallTracker {
        StallTracker {
            watch: StallWatch::new(window),
            next_sample: Instant::now(),
            threads: None,
            answered: 0,
            ping: None,
        }
    }
}

impl Machine<'_> {
    /// A boot began (on a new QEMU or the same): the detector starts afresh.
    pub(super) fn stall_begin_boot(&mut self) {
        if let Some(t) = self.stall.as_mut() {
            t.watch.begin_boot();
            t.ping = None;
            // No stall fits in less than the window, so nothing is sampled at the
            // very start: a scenario over in half a second sends no query at all.
            t.next_sample = Instant::now() + STALL_SAMPLE_INTERVAL;
        }
    }

    /// A new QEMU process: its vCPU threads and its agent's count are its own.
    pub(super) fn stall_new_qemu(&mut self) {
        if let Some(t) = self.stall.as_mut() {
            t.threads = None;
            t.answered = 0;
        }
    }

    /// A console line arrived (stamped `at`).
    pub(super) fn stall_console(&mut self, line: &str, at: Instant) {
        if let Some(t) = self.stall.as_mut() {
            t.watch.console(line, at);
        }
    }

    /// Whether an agent reply is the detector's own `guest-get-time` (nobody else
    /// waits for it).
    pub(super) fn stall_own_reply(&mut self, id: u64) -> bool {
        match self.stall.as_mut() {
            Some(t) if t.ping == Some(id) => {
                t.ping = None;
                true
            }
            _ => false,
        }
    }

    /// The next instant the detector wants to sample.
    pub(super) fn stall_wake_at(&self) -> Option<Instant> {
        self.stall.as_ref().map(|t| t.next_sample)
    }

    /// Samples when due and decides; a stall ends the wait as a hang.
    pub(super) fn stall_tick(&mut self, now: Instant) -> Result<(), Stop> {
        let agent_expected = self.watch.is_ready() && !self.watch.reboot_asked();
        let (Some(t), Some(vm)) = (self.stall.as_mut(), self.qemu.vm.as_mut()) else {
            return Ok(());
        };
        let answered = vm.agent().answered();
        if answered != t.answered {
            t.answered = answered;
            t.watch.agent_answered(now);
        }
        if now < t.next_sample {
            return Ok(());
        }
        t.next_sample = now + STALL_SAMPLE_INTERVAL;
        let pid = vm.pid();
        let Some(qmp) = vm.qmp() else {
            return Ok(());
        };
        if t.threads.is_none() {
            // No thread ids (an older QEMU): the window is then wall time only.
            let threads = vcpu::vcpu_threads(qmp, STALL_QUERY_TIMEOUT).unwrap_or_default();
            t.threads = Some((pid, threads));
        }
        let (pid, threads) = t
            .threads
            .as_ref()
            .map_or((pid, &[][..]), |(p, ts)| (*p, ts));
        if let Ok(sample) = vcpu::sample(qmp, Some(pid), threads, STALL_QUERY_TIMEOUT) {
            t.watch.sample(&sample, now);
        }
        if agent_expected && t.watch.wants_agent_asked() {
            if t.ping.is_none() {
                t.ping = Some(vm.agent().submit(Request::GuestTime));
            }
            t.watch.agent_asked(now);
        }
        match t.watch.decide(now, agent_expected) {
            Some(stall) => Err(self.stalled(stall)),
            None => Ok(()),
        }
    }

    /// Records the stall and its hang, with evidence; the stop it makes. The hang is
    /// named by the kernel's own report when one reached the console by the time the
    /// evidence was taken, else by what the detector saw (the last console line
    /// before the silence usually names the code: `hang_init: spinning forever`).
    fn stalled(&mut self, stall: Stall) -> Stop {
        let window = self
            .stall
            .as_ref()
            .map_or(Duration::ZERO, |t| t.watch.window());
        let record = self.stall_record(&stall, window);
        let why = describe(&record, window);
        self.found.stalls.push(record);
        let stop = self.hang(why);
        // The report may have come while the screenshot (or dump) was taken.
        let report = self.watch.console_report().map(str::to_string);
        let (Some(report), Stop::Hang(why)) = (report, &stop) else {
            return stop;
        };
        let named = format!(
            "{report} (boot {}); first seen by the stall detector: {why}",
            self.boot_index()
        );
        if let Some(hang) = self.found.hangs.last_mut() {
            *hang = named.clone();
        }
        if let Some(record) = self.found.stalls.last_mut() {
            record.kernel_report = Some(report);
        }
        Stop::Hang(named)
    }

    fn stall_record(&self, stall: &Stall, window: Duration) -> StallRecord {
        let ms = |d: Duration| d.as_millis() as u64;
        let before = |at: Instant| ms(stall.decided_at.saturating_duration_since(at));
        StallRecord {
            boot_index: self.boot_index(),
            phase: if stall.agent_expected {
                "ready"
            } else {
                "before_ready"
            }
            .into(),
            window_ms: ms(window),
            since_ms: self.offset(stall.since),
            stalled_ms: before(stall.since),
            samples: stall.samples,
            vcpu_ms: stall.vcpu_time.map(ms),
            signals: stall.signals.iter().map(|s| s.to_string()).collect(),
            vcpus: stall
                .parked
                .iter()
                .map(|(index, rip, state)| StalledVcpu {
                    index: *index,
                    rip: format!("{rip:#x}"),
                    state: (*state).into(),
                })
                .collect(),
            last_console: stall.last_console.as_ref().map(|(_, l)| l.clone()),
            console_silent_ms: stall.last_console.as_ref().map(|(at, _)| before(*at)),
            // Before ready the agent is no signal (a reply that comes after the
            // reset, such as the reboot request's own, belongs to the boot before).
            agent_silent_ms: stall
                .last_agent
                .filter(|_| stall.agent_expected)
                .map(before),
            kernel_report: None,
        }
    }
}

/// The hang's text: what stopped, for how long, and the detector's evidence.
fn describe(record: &StallRecord, window: Duration) -> String {
    let vcpus: Vec<String> = record
        .vcpus
        .iter()
        .map(|v| format!("vCPU {} {} at RIP {}", v.index, v.state, v.rip))
        .collect();
    let console = match &record.last_console {
        Some(line) => format!("console silent since {line:?}"),
        None => "console silent".into(),
    };
    let agent = if record.phase == "ready" {
        ", guest agent silent"
    } else {
        ""
    };
    let vcpu_time = record
        .vcpu_ms
        .map(|ms| {
            format!(
                ", {} of vCPU time",
                human_duration(Duration::from_millis(ms))
            )
        })
        .unwrap_or_default();
    format!(
        "the guest made no progress for {} in boot {} (stall detector, window {}: {}; {console}{agent}{vcpu_time})",
        human_duration(Duration::from_millis(record.stalled_ms)),
        record.boot_index,
        human_duration(window),
        vcpus.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: &str) -> StallRecord {
        StallRecord {
            boot_index: 2,
            phase: phase.into(),
            window_ms: 10_000,
            since_ms: 8_092,
            stalled_ms: 10_003,
            samples: 21,
            vcpu_ms: Some(8_570),
            signals: vec!["vcpu".into(), "console".into()],
            vcpus: vec![StalledVcpu {
                index: 0,
                rip: "0xffffffffc058e013".into(),
                state: "spinning in the kernel".into(),
            }],
            last_console: Some("[    5.406605] hang_init: spinning forever in init".into()),
            console_silent_ms: Some(10_452),
            agent_silent_ms: None,
            kernel_report: None,
        }
    }

    #[test]
    fn the_hang_names_the_stall_the_vcpu_and_the_last_console_line() {
        let text = describe(&record("before_ready"), Duration::from_secs(10));
        assert_eq!(
            text,
            "the guest made no progress for 10.0 s in boot 2 (stall detector, window 10.0 s: vCPU 0 spinning in the kernel at RIP 0xffffffffc058e013; console silent since \"[    5.406605] hang_init: spinning forever in init\", 8.6 s of vCPU time)"
        );
        let ready = describe(&record("ready"), Duration::from_secs(10));
        assert!(ready.contains(", guest agent silent,"), "{ready}");
    }
}
