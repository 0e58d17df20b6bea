//! What one machine's signals mean: a pure state machine from "this QMP event, this
//! console line, the agent answered, at this instant" to "boot 2 is ready", "boot 1
//! crashed (and here is the crash)", "the guest rebooted into boot 3".
//!
//! QEMU going away is not a signal here: whatever was pending, it is the host's
//! failure, decided by the caller without asking the watch.
//!
//! The rules here decide verdicts and are subtle (a burst of RESETs is one reboot, a
//! crashed boot's console tail read late is not the next boot's crash, a panic event
//! waits briefly for its console report), so they live apart from QEMU: nothing here
//! touches a socket, a file or the clock. Every instant is passed in, which is what
//! lets the unit tests below replay a boot in microseconds.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::detect::bugcheck::Bugcheck;
use crate::detect::{ConsoleCrash, CrashClass, CrashDetector};

/// After a panic event, how long to wait for the console report if none was seen yet
/// (the oops normally reaches the console before the panic notifier runs).
pub(crate) const CONSOLE_TRAIL: Duration = Duration::from_millis(300);
/// A console crash report without a panic event: how long to wait for the panic event
/// (or more of the report) before deciding on the console alone. Also how long a hang
/// report may keep printing before it is decided with the frames seen so far.
pub(crate) const CRASH_SETTLE: Duration = Duration::from_millis(1500);
/// One reboot shows up as a burst of RESET events (Linux tries several reset methods,
/// each resets the machine once more within ~100 ms); RESETs this close together are
/// one reboot.
pub(crate) const RESET_COALESCE: Duration = Duration::from_secs(1);

/// Something the machine reported, without its instant (passed beside it).
#[derive(Debug, Clone, Copy)]
pub enum Signal<'a> {
    /// A QMP event: its name and its `data` (`Value::Null` when it has none).
    Qmp { name: &'a str, data: &'a Value },
    /// One line of the serial console, stamped with the instant it was read.
    Console(&'a str),
    /// The guest agent answered its sync: the boot reached ready.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
        )
    )]
    AgentReady,
}

/// What a signal, or the passing of time, meant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Happening {
    /// The boot reached ready, `after` its start.
    Ready { boot: u32, after: Duration },
    /// The guest rebooted as asked ([`BootWatch::ask_reboot`]): boot `boot` began `at`.
    Reboot { boot: u32, at: Instant },
    /// The boot crashed: decided, with everything known about it.
    Crash(Crash),
    /// A hang report (soft lockup, RCU stall, hung task) on the console, decided.
    Hang { boot: u32, title: String },
    /// A crash or hang is on its way but not decided: [`BootWatch::poll`] decides it
    /// by `until` at the latest.
    Pending { what: Pending, until: Instant },
    /// The guest powered itself off.
    PoweredOff { boot: u32 },
    /// The guest that was writing its own dump after a crash
    /// ([`Capture::GuestWritingDump`]) reset itself (Windows' AutoReboot, or a Linux
    /// kdump kernel done with its vmcore): that crash is over, and boot `boot` began
    /// `at`. Not a crash of its own.
    CrashEnded { boot: u32, at: Instant },
}

/// How a crash reached the host, which decides what can be captured of it and how
/// the next boot begins. QEMU 7.2's event sequences (softmmu/runstate.c):
///
/// - `qemu_system_guest_panicked` with `-action panic=pause` (bootgate's): event
///   GUEST_PANICKED `{action: "pause", info?}`, then `vm_stop(RUN_STATE_GUEST_PANICKED)`
///   and so STOP. pvpanic's bit 0 (hw/misc/pvpanic.c) and, under KVM with `hv-crash`,
///   Windows' write of HV_X64_MSR_CRASH_CTL (accel/kvm/kvm-all.c,
///   KVM_SYSTEM_EVENT_CRASH, with the crash MSRs as `info` of type hyper-v) both
///   come this way.
/// - `qemu_system_guest_crashloaded`: event GUEST_CRASHLOADED `{action: "run"}` and
///   nothing else: the guest keeps running. pvpanic's bit 1, which virtio-win's
///   pvpanic driver (pvpanic/pvpanic/bugcheck.c, KbCallbackDumpIo) writes when
///   Windows *starts* writing its dump, and Linux's pvpanic when a kdump kernel
///   is loaded.
/// - A guest reset: `qemu_system_reset` sends RESET `{guest: true, reason:
///   "guest-reset"}`; bootgate's own `system_reset` sends `{guest: false, reason:
///   "host-qmp-system-reset"}` (qapi/run-state.json, ShutdownCause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture {
    /// QEMU paused the guest at its panic event: screenshot and memory dump from
    /// the host, then bootgate resets it.
    HostPaused,
    /// A console crash report without a paused panic event: the guest may still
    /// run, so bootgate stops it before taking the same evidence.
    HostStopped,
    /// GUEST_CRASHLOADED: the guest is writing its own dump. Not paused, not dumped
    /// from the host, not reset: it reboots itself, and its dump is collected at the
    /// next ready boot.
    GuestWritingDump,
    /// A reset nobody asked for, with no panic event: the crashed boot is already
    /// gone (a triple fault, a boot-start driver's reset, a Windows crash before the
    /// demand-start pvpanic driver loaded). The reset begins the next boot.
    Reset,
}

impl Capture {
    /// The word run.json records (`CrashRecord::capture`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Capture::HostPaused => "host-paused",
            Capture::HostStopped => "host-stopped",
            Capture::GuestWritingDump => "guest-writing-dump",
            Capture::Reset => "reset",
        }
    }
}

/// What a pending decision waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A panic event came; its console report (oops, call trace) has not.
    ConsoleTail,
    /// A console crash report came; its panic event has not.
    PanicEvent,
    /// A hang report is still printing its frames.
    HangReport,
}

/// A decided crash: where it was seen and what names it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Crash {
    /// The boot that was running when the crash began.
    pub boot: u32,
    /// That boot had reached ready (so its outcome stays `ready`).
    pub after_ready: bool,
    /// The first sign of the crash (panic event, console report or reset).
    pub seen_at: Instant,
    /// What named it: `console`, `hyperv`, `reset` or `pvpanic`.
    pub source: &'static str,
    pub title: String,
    pub kind: String,
    pub excerpt: Vec<String>,
    /// Every signal that showed it, in a fixed order.
    pub signals: Vec<&'static str>,
    /// The bugcheck the panic event carried (Hyper-V crash MSRs).
    pub bugcheck: Option<Bugcheck>,
    /// How it reached the host: what can be captured, how the next boot begins.
    pub capture: Capture,
}

/// The watch over one machine's boots. Boot indexes start at 1 with the first
/// [`BootWatch::begin_boot`]; 0 means no boot has begun.
#[derive(Debug)]
pub(crate) struct BootWatch {
    // The current boot.
    boot: u32,
    started: Instant,
    ready: bool,
    detector: CrashDetector,
    panic_at: Option<Instant>,
    /// The panic event was GUEST_CRASHLOADED (the guest writes its own dump).
    crash_loaded: bool,
    /// A GUEST_PANICKED event said QEMU paused the guest (`action: "pause"`).
    paused: bool,
    /// A crash decided as [`Capture::GuestWritingDump`]: its guest's next own
    /// RESET ends it ([`Happening::CrashEnded`]), and further panic events belong
    /// to it.
    writing_dump: bool,
    /// Hyper-V crash parameters from the panic event (Windows bugcheck code first).
    hyperv: Option<Bugcheck>,
    console_crash_at: Option<Instant>,
    /// A hang report began on the console.
    console_hang_at: Option<Instant>,
    /// A reboot the guest was asked for: its RESET begins the next boot.
    reboot_asked: bool,
    // Across boots.
    /// A RESET the harness caused (system_reset) that must not count as the guest's.
    own_reset: bool,
    /// The last RESET event, to fold a burst into one reboot.
    last_reset: Option<Instant>,
}

impl BootWatch {
    /// A watch with no boot begun; `now` stands in as the start until one does.
    pub fn new(now: Instant) -> BootWatch {
        BootWatch {
            boot: 0,
            started: now,
            ready: false,
            detector: CrashDetector::new(),
            panic_at: None,
            crash_loaded: false,
            paused: false,
            writing_dump: false,
            hyperv: None,
            console_crash_at: None,
            console_hang_at: None,
            reboot_asked: false,
            own_reset: false,
            last_reset: None,
        }
    }

    /// Begins the next boot at `at` (QEMU started, or reset); its index.
    pub(crate) fn begin_boot(&mut self, at: Instant) -> u32 {
        self.boot += 1;
        self.started = at;
        self.ready = false;
        self.detector = CrashDetector::new();
        self.panic_at = None;
        self.crash_loaded = false;
        self.paused = false;
        self.writing_dump = false;
        self.hyperv = None;
        self.console_crash_at = None;
        self.console_hang_at = None;
        self.reboot_asked = false;
        self.boot
    }

    /// The current boot's index (0 before the first).
    pub(crate) fn boot(&self) -> u32 {
        self.boot
    }

    /// When the current boot began.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The current boot reached ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// The harness is about to reset the machine itself: the next RESET is not the
    /// guest's doing.
    pub(crate) fn expect_own_reset(&mut self) {
        self.own_reset = true;
    }

    /// The guest was asked to reboot: its next (non-burst) RESET is that reboot, not a
    /// crash. Cleared by the reboot, any new boot, or [`BootWatch::cancel_reboot`].
    pub(crate) fn ask_reboot(&mut self) {
        self.reboot_asked = true;
    }

    /// A reboot was asked for and has not begun: the agent is going away on purpose.
    pub(crate) fn reboot_asked(&self) -> bool {
        self.reboot_asked
    }

    /// The title of this boot's first hang or crash report on the console, if any:
    /// what names a hang the stall detector decided first.
    pub(crate) fn console_report(&self) -> Option<&str> {
        self.detector
            .first_of(CrashClass::Hang)
            .or_else(|| self.detector.first_of(CrashClass::Crash))
            .map(|c| c.title.as_str())
    }

    /// The reboot asked for will not come (the request failed or timed out).
    pub(crate) fn cancel_reboot(&mut self) {
        self.reboot_asked = false;
    }

    /// Takes one signal that arrived `at`.
    pub fn feed(&mut self, signal: Signal, at: Instant) -> Option<Happening> {
        match signal {
            // Output the previous boot printed before this one began (the tail of its
            // crash report, read late on a loaded host) must not be taken for a crash
            // of this boot.
            Signal::Console(_) if at < self.started => None,
            Signal::Console(text) => self.console(text, at),
            Signal::Qmp { name, data } => self.event(name, data, at),
            Signal::AgentReady => Some(Happening::Ready {
                boot: self.boot,
                after: self.mark_ready(at),
            }),
        }
    }

    /// The boot reached ready at `at`; how long after its start.
    pub(crate) fn mark_ready(&mut self, at: Instant) -> Duration {
        self.ready = true;
        at.saturating_duration_since(self.started)
    }

    /// A console line read while evidence is captured: it completes the report (for
    /// whoever reads the detector later) but decides nothing.
    pub(crate) fn absorb_console(&mut self, text: &str) {
        self.detector.feed(text);
    }

    /// Decides what time alone decides: a crash whose evidence is complete (a panic
    /// event with the console report, or the report's grace period over; a console
    /// report whose panic event did not follow in time), or a hang report that
    /// stopped printing. Crashes are decided before hangs.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Happening> {
        let seen_at = match (self.panic_at, self.console_crash_at) {
            (Some(p), Some(c)) => Some(p.min(c)),
            (Some(p), None) if now >= p + CONSOLE_TRAIL => Some(p),
            (None, Some(c)) if now >= c + CRASH_SETTLE => Some(c),
            _ => None,
        };
        if let Some(seen_at) = seen_at {
            return Some(Happening::Crash(self.crash(seen_at, false)));
        }
        let at = self.console_hang_at?;
        // Give the report time to reach its frames, so the title names the code.
        if self.detector.is_reporting() && now.saturating_duration_since(at) < CRASH_SETTLE {
            return None;
        }
        self.console_hang_at = None;
        let title = self
            .detector
            .first_of(CrashClass::Hang)
            .map(|c| c.title.clone())
            .unwrap_or_default();
        Some(Happening::Hang {
            boot: self.boot,
            title,
        })
    }

    /// The next instant [`BootWatch::poll`] may decide something, if anything is pending.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        match self.panic_at {
            Some(p) => Some(p + CONSOLE_TRAIL),
            None => self
                .console_crash_at
                .or(self.console_hang_at)
                .map(|at| at + CRASH_SETTLE),
        }
    }

    fn console(&mut self, text: &str, at: Instant) -> Option<Happening> {
        self.detector.feed(text);
        match self.detector.crash().map(|c| c.class) {
            Some(CrashClass::Crash) if self.console_crash_at.is_none() => {
                self.console_crash_at = Some(at);
                // With the panic event already in, the next poll decides.
                self.panic_at.is_none().then_some(Happening::Pending {
                    what: Pending::PanicEvent,
                    until: at + CRASH_SETTLE,
                })
            }
            Some(CrashClass::Hang) if self.console_hang_at.is_none() => {
                self.console_hang_at = Some(at);
                Some(Happening::Pending {
                    what: Pending::HangReport,
                    until: at + CRASH_SETTLE,
                })
            }
            _ => None,
        }
    }

    fn event(&mut self, name: &str, data: &Value, at: Instant) -> Option<Happening> {
        match name {
            // The crash whose dump the guest is writing is decided: later panic
            // events are its own (virtio-win's bugcheck.c sends PANICKED only when
            // it sent no CRASHLOADED; a driver that sends both is still one crash).
            "GUEST_PANICKED" | "GUEST_CRASHLOADED" if self.writing_dump => None,
            "GUEST_PANICKED" | "GUEST_CRASHLOADED" => {
                if name == "GUEST_CRASHLOADED" {
                    self.crash_loaded = true;
                } else if data.get("action").and_then(|a| a.as_str()) == Some("pause") {
                    self.paused = true;
                }
                let first = *self.panic_at.get_or_insert(at);
                if let Some(bugcheck) = Bugcheck::from_hyperv(&data["info"]) {
                    self.hyperv = Some(bugcheck);
                }
                self.console_crash_at
                    .is_none()
                    .then_some(Happening::Pending {
                        what: Pending::ConsoleTail,
                        until: first + CONSOLE_TRAIL,
                    })
            }
            "RESET" => self.reset(data, at),
            // Other SHUTDOWN reasons (guest-reset, host-qmp-quit...) come with a RESET
            // or with QEMU leaving; only the guest's own power-off is news.
            "SHUTDOWN" if data.get("reason").and_then(|r| r.as_str()) == Some("guest-shutdown") => {
                Some(Happening::PoweredOff { boot: self.boot })
            }
            // STOP (the pause after a panic), RESUME, DUMP_COMPLETED...: no news here.
            _ => None,
        }
    }

    fn reset(&mut self, data: &Value, at: Instant) -> Option<Happening> {
        let burst = self
            .last_reset
            .is_some_and(|last| at.saturating_duration_since(last) < RESET_COALESCE);
        self.last_reset = Some(at);
        // bootgate is QMP's only client: a system_reset is always its own
        // (ShutdownCause host-qmp-system-reset in qapi/run-state.json).
        let by_host = data.get("reason").and_then(|r| r.as_str()) == Some("host-qmp-system-reset");
        if self.own_reset {
            self.own_reset = false;
            None
        } else if burst || by_host {
            None
        } else if self.writing_dump {
            // The guest finished its dump and rebooted itself: the crash's end.
            let boot = self.begin_boot(at);
            Some(Happening::CrashEnded { boot, at })
        } else if self.reboot_asked {
            let boot = self.begin_boot(at);
            Some(Happening::Reboot { boot, at })
        } else {
            // A guest that resets by itself without a panic event (a triple fault, a
            // kernel set to reboot on panic without pvpanic) crashed as far as we
            // can tell.
            Some(Happening::Crash(self.crash(at, true)))
        }
    }

    /// The crash of the current boot from what was seen of it; clears the crash
    /// signals so a later one is decided afresh.
    fn crash(&mut self, seen_at: Instant, reset: bool) -> Crash {
        let console = self
            .detector
            .crash()
            .filter(|c| c.class == CrashClass::Crash)
            .cloned();
        let mut signals = Vec::new();
        if self.panic_at.is_some() && !reset {
            signals.push("pvpanic");
        }
        if self.hyperv.is_some() {
            signals.push("hyperv");
        }
        if console.is_some() {
            signals.push("console");
        }
        if reset {
            signals.push("reset");
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
            (None, None) if reset => (
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
        let capture = if reset {
            Capture::Reset
        } else if self.panic_at.is_some() && self.crash_loaded {
            Capture::GuestWritingDump
        } else if self.panic_at.is_some() && self.paused {
            Capture::HostPaused
        } else {
            Capture::HostStopped
        };
        let crash = Crash {
            boot: self.boot,
            after_ready: self.ready,
            seen_at,
            source,
            title,
            kind,
            excerpt,
            signals,
            bugcheck: self.hyperv,
            capture,
        };
        self.writing_dump = capture == Capture::GuestWritingDump;
        self.crash_loaded = false;
        self.paused = false;
        self.panic_at = None;
        self.hyperv = None;
        self.console_crash_at = None;
        crash
    }
}

/// A bugcheck with its parameters, for a crash excerpt.
pub(crate) fn bugcheck_line(bugcheck: &Bugcheck) -> String {
    let [p1, p2, p3, p4] = bugcheck.params;
    format!(
        "{} ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x})",
        bugcheck.title(None)
    )
}

#[cfg(test)]
mod tests;
