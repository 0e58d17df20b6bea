//! Whether a running guest stopped making progress: a pure state machine from "the
//! vCPUs looked like this", "the console printed", "the agent answered", each at an
//! instant, to "the guest has been stalled for the window".
//!
//! The kernel's own lockup reports come 20-50 s into a stall (the demo's `hang_init`:
//! an RCU stall ~21 s in, a soft lockup ~49 s in) and a Windows guest makes none, so
//! the host decides sooner from what it can see itself. A guest is stalled when, for
//! the whole window, all of these held:
//!
//! - every vCPU sample shows no vCPU in user mode and at least one vCPU *parked*: in
//!   the kernel and not halted, at the same place (its RIP within [`PLACE_SPAN`] of
//!   where the run began, one stray sample allowed: a timer interrupt), or halted
//!   with interrupts off (nothing can wake it). An idle guest halts with interrupts
//!   on (`HLT=1`, IF set): never parked, whatever its RIP;
//! - the console printed nothing;
//! - once the boot is ready, the agent answered nothing (the runner asks it, so
//!   silence means something). Before ready there is no agent to ask.
//!
//! A paused guest (a panic with `-action panic=pause`, an incoming state not yet
//! running) is not stalled: a sample of a guest that is not running ends the run.
//!
//! On a loaded host QEMU's vCPU thread may get little CPU, which would make a busy
//! guest look frozen. So the window is also counted in the vCPU threads' own CPU
//! time when QEMU's threads can be read: a stall needs at least
//! [`MIN_VCPU_SHARE`] of the window in vCPU time besides the window in wall time. A
//! starved guest takes longer to call, never is called wrongly.

use std::time::{Duration, Instant};

/// Farthest a parked vCPU's RIP may be from where the run began and still be "the
/// same place": a spin loop (`cpu_relax`, a spinlock's slow path) is a few dozen
/// bytes; a kernel doing real work (decompression, memory init) moves over
/// kilobytes of code between samples.
pub(crate) const PLACE_SPAN: u64 = 256;
/// Share of the window a stall needs in vCPU thread CPU time (when known).
pub(crate) const MIN_VCPU_SHARE: f64 = 0.5;
/// Fewest samples a stall is decided on: a window shorter than a few samples
/// would decide on one look.
pub(crate) const MIN_SAMPLES: u32 = 3;

/// One vCPU as the monitor showed it (`info registers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VcpuState {
    pub rip: u64,
    /// Current privilege level: 0 kernel, 3 user.
    pub cpl: u8,
    /// The vCPU is halted (`HLT=1`).
    pub halted: bool,
    /// Interrupts are enabled (IF in RFLAGS).
    pub interrupts: bool,
}

/// One look at the guest's vCPUs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// QEMU's run state is `running`.
    pub running: bool,
    pub vcpus: Vec<VcpuState>,
    /// CPU time QEMU's vCPU threads have used so far, when it can be read.
    pub cpu_time: Option<Duration>,
}

/// Where a vCPU was in one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// Running user code: the guest schedules.
    User,
    /// Halted with interrupts on: idle, wakes on its next interrupt.
    Idle,
    /// In the kernel, not halted (spinning, or working), at this RIP.
    Kernel(u64),
    /// Halted with interrupts off: nothing but an NMI wakes it.
    DeadHalt(u64),
}

/// The lowest address of the upper (kernel) half of the x86-64 address space. Both
/// kernels bootgate runs live there: Linux maps its text at 0xffffffff80000000 and
/// modules above it (Documentation/arch/x86/x86_64/mm.rst), Windows keeps system
/// space in the upper half (Microsoft Learn, "Virtual address spaces"). Below it,
/// at CPL 0, run the firmware (SeaBIOS, OVMF: identity-mapped), a boot loader
/// (GRUB, Windows Boot Manager) and a kernel's own early setup and decompressor.
/// Those print to the screen or nothing rather than the serial console and sit in
/// small loops for seconds under TCG (a decompressor's inner loop, GRUB's menu
/// countdown, BIOS disk reads), so a silent console and a still RIP there say
/// nothing: CI once called the debian12 image's reboot (direct kernel boot)
/// stalled at RIP 0x431baa0, in identity-mapped low memory where the kernel
/// decompresses itself, before its first console line.
pub(crate) const KERNEL_HALF: u64 = 1 << 63;

fn classify(v: &VcpuState) -> Where {
    match (v.cpl, v.halted, v.interrupts) {
        (3, _, _) => Where::User,
        // Not yet (or no longer) in the kernel: not judged, like user code.
        (_, false, _) if v.rip < KERNEL_HALF => Where::User,
        (_, true, true) => Where::Idle,
        (_, true, false) => Where::DeadHalt(v.rip),
        (_, false, _) => Where::Kernel(v.rip),
    }
}

/// The current run of samples that showed no progress.
#[derive(Debug, Clone)]
struct Run {
    since: Instant,
    samples: u32,
    /// Per vCPU: where it is parked (None: idle so far), and whether the last
    /// sample found it away from there.
    places: Vec<Option<u64>>,
    away: Vec<bool>,
    /// Per vCPU: it was halted with interrupts off when the run began.
    dead: Vec<bool>,
    cpu_at_start: Option<Duration>,
    cpu_now: Option<Duration>,
    /// The agent was asked (by the runner) during this run, at this instant.
    agent_asked: Option<Instant>,
}

/// What the stall detector saw when it decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stall {
    /// The first sample of the run that showed no progress.
    pub since: Instant,
    pub decided_at: Instant,
    pub samples: u32,
    /// Where each parked vCPU sat (index, RIP, how: "spinning" or "halted with
    /// interrupts off").
    pub parked: Vec<(usize, u64, &'static str)>,
    /// vCPU thread CPU time used during the run, when known.
    pub vcpu_time: Option<Duration>,
    /// The boot was ready, so the agent's silence was one of the signals.
    pub agent_expected: bool,
    /// When the last console line came and what it said, if one came this boot.
    pub last_console: Option<(Instant, String)>,
    /// When the agent last answered in this boot.
    pub last_agent: Option<Instant>,
    /// The signals that showed it, in a fixed order.
    pub signals: Vec<&'static str>,
}

/// The stall detector of one boot ([`StallWatch::begin_boot`] starts afresh).
#[derive(Debug)]
pub(crate) struct StallWatch {
    window: Duration,
    run: Option<Run>,
    last_console: Option<(Instant, String)>,
    last_agent: Option<Instant>,
}

impl StallWatch {
    pub(crate) fn new(window: Duration) -> StallWatch {
        StallWatch {
            window,
            run: None,
            last_console: None,
            last_agent: None,
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// A new boot: nothing seen of it yet.
    pub(crate) fn begin_boot(&mut self) {
        self.run = None;
        self.last_console = None;
        self.last_agent = None;
    }

    /// The console printed `line` at `at`: the guest makes progress.
    pub(crate) fn console(&mut self, line: &str, at: Instant) {
        self.run = None;
        self.last_console = Some((at, line.to_string()));
    }

    /// The agent answered at `at`: the guest makes progress.
    pub(crate) fn agent_answered(&mut self, at: Instant) {
        self.run = None;
        self.last_agent = Some(at);
    }

    /// Whether a run without progress is under way and its agent not yet asked:
    /// the runner then asks the agent something cheap, so that its silence means
    /// something.
    pub(crate) fn wants_agent_asked(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.agent_asked.is_none())
    }

    /// The runner asked the agent at `at` (see [`StallWatch::wants_agent_asked`]).
    pub(crate) fn agent_asked(&mut self, at: Instant) {
        if let Some(run) = self.run.as_mut() {
            run.agent_asked.get_or_insert(at);
        }
    }

    /// Takes one vCPU sample taken at `at`.
    pub(crate) fn sample(&mut self, sample: &Sample, at: Instant) {
        let wheres: Vec<Where> = sample.vcpus.iter().map(classify).collect();
        let progressing = !sample.running
            || wheres.is_empty()
            || wheres.contains(&Where::User)
            || wheres.iter().all(|w| *w == Where::Idle);
        if progressing {
            self.run = None;
            return;
        }
        let fits = self
            .run
            .as_ref()
            .is_some_and(|r| r.places.len() == wheres.len());
        if !fits {
            self.run = Some(Run::start(&wheres, sample.cpu_time, at));
            return;
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let mut moved = false;
        for (i, w) in wheres.iter().enumerate() {
            let rip = match w {
                Where::Kernel(rip) | Where::DeadHalt(rip) => *rip,
                // An idle vCPU beside a parked one does not break the run.
                Where::Idle | Where::User => continue,
            };
            match run.places[i] {
                None => run.places[i] = Some(rip),
                Some(place) if place.abs_diff(rip) <= PLACE_SPAN => run.away[i] = false,
                // One sample away (an interrupt handler) is allowed; two in a row
                // mean the vCPU moves on.
                Some(_) if !run.away[i] => run.away[i] = true,
                Some(_) => moved = true,
            }
        }
        if moved {
            self.run = Some(Run::start(&wheres, sample.cpu_time, at));
            return;
        }
        run.samples += 1;
        run.cpu_now = sample.cpu_time;
    }

    /// The stall, once the run has lasted the window (in wall time, and in vCPU time
    /// when known) with the agent, when expected, asked and silent throughout.
    pub(crate) fn decide(&self, now: Instant, agent_expected: bool) -> Option<Stall> {
        let run = self.run.as_ref()?;
        // Before ready, a boot whose console has printed nothing yet is not judged:
        // firmware, a boot loader and a kernel before its console is registered say
        // nothing on the serial line, and under TCG early memory set-up can sit on
        // one `rep stos` for seconds on a large guest. Such a boot is left to the boot
        // timeout; a Windows guest, silent on the serial line, is judged once ready.
        if !agent_expected && self.last_console.is_none() {
            return None;
        }
        if run.samples < MIN_SAMPLES || now.saturating_duration_since(run.since) < self.window {
            return None;
        }
        let vcpu_time = match (run.cpu_at_start, run.cpu_now) {
            (Some(start), Some(now)) => Some(now.saturating_sub(start)),
            _ => None,
        };
        if vcpu_time.is_some_and(|t| t.as_secs_f64() < self.window.as_secs_f64() * MIN_VCPU_SHARE) {
            return None;
        }
        if agent_expected {
            // Silence only counts for as long as the agent was asked.
            let asked = run.agent_asked?;
            if now.saturating_duration_since(asked) < self.window / 2 {
                return None;
            }
        }
        let parked = run
            .places
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|rip| (i, rip, run.how(i))))
            .collect();
        let mut signals = vec!["vcpu", "console"];
        if agent_expected {
            signals.push("agent");
        }
        Some(Stall {
            since: run.since,
            decided_at: now,
            samples: run.samples,
            parked,
            vcpu_time,
            agent_expected,
            last_console: self.last_console.clone(),
            last_agent: self.last_agent,
            signals,
        })
    }
}

impl Run {
    fn start(wheres: &[Where], cpu_time: Option<Duration>, at: Instant) -> Run {
        let places = wheres
            .iter()
            .map(|w| match w {
                Where::Kernel(rip) | Where::DeadHalt(rip) => Some(*rip),
                Where::Idle | Where::User => None,
            })
            .collect();
        let dead = wheres
            .iter()
            .map(|w| matches!(w, Where::DeadHalt(_)))
            .collect();
        Run {
            since: at,
            samples: 1,
            places,
            away: vec![false; wheres.len()],
            dead,
            cpu_at_start: cpu_time,
            cpu_now: cpu_time,
            agent_asked: None,
        }
    }

    fn how(&self, i: usize) -> &'static str {
        if self.dead.get(i).copied().unwrap_or(false) {
            "halted with interrupts off"
        } else {
            "spinning in the kernel"
        }
    }
}

#[cfg(test)]
mod tests;
