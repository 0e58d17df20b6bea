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
            // GUEST_CRASHLOADED: a Windows guest began writing its own dump (it keeps
            // running for that); still the crash it reports.
            "GUEST_PANICKED" | "GUEST_CRASHLOADED" => {
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
            "RESET" => self.reset(at),
            // Other SHUTDOWN reasons (guest-reset, host-qmp-quit...) come with a RESET
            // or with QEMU leaving; only the guest's own power-off is news.
            "SHUTDOWN" if data.get("reason").and_then(|r| r.as_str()) == Some("guest-shutdown") => {
                Some(Happening::PoweredOff { boot: self.boot })
            }
            // STOP (the pause after a panic), RESUME, DUMP_COMPLETED...: no news here.
            _ => None,
        }
    }

    fn reset(&mut self, at: Instant) -> Option<Happening> {
        let burst = self
            .last_reset
            .is_some_and(|last| at.saturating_duration_since(last) < RESET_COALESCE);
        self.last_reset = Some(at);
        if self.own_reset {
            self.own_reset = false;
            None
        } else if burst {
            None
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
        };
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
mod tests {
    use super::*;
    use serde_json::json;

    const OOPS_LOG: &str = include_str!("../../tests/fixtures/consoles/demo_sensor_boot_oops.log");
    const LOCKUP_LOG: &str =
        include_str!("../../tests/fixtures/consoles/hang_init_soft_lockup.log");

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The demo sensor's oops, from its first line to its panic.
    fn oops() -> Vec<&'static str> {
        let lines: Vec<&str> = OOPS_LOG.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.contains("BUG: unable to handle page fault"))
            .expect("the fixture has an oops");
        let end = lines
            .iter()
            .position(|l| l.contains("Kernel panic - not syncing"))
            .expect("the fixture has a panic");
        lines[start..=end].to_vec()
    }

    fn event(watch: &mut BootWatch, name: &str, at: Instant) -> Option<Happening> {
        watch.feed(
            Signal::Qmp {
                name,
                data: &Value::Null,
            },
            at,
        )
    }

    fn lines(watch: &mut BootWatch, lines: &[&str], at: Instant) -> Vec<Happening> {
        lines
            .iter()
            .filter_map(|l| watch.feed(Signal::Console(l), at))
            .collect()
    }

    fn crash(h: Option<Happening>) -> Crash {
        match h {
            Some(Happening::Crash(c)) => c,
            other => panic!("expected a crash, got {other:?}"),
        }
    }

    /// A watch whose boot 1 began at `t0` and reached ready 1 s later.
    fn ready_boot(t0: Instant) -> BootWatch {
        let mut w = BootWatch::new(t0);
        assert_eq!(w.begin_boot(t0), 1);
        assert_eq!(
            w.feed(Signal::AgentReady, t0 + ms(1000)),
            Some(Happening::Ready {
                boot: 1,
                after: ms(1000)
            })
        );
        w
    }

    #[test]
    fn a_burst_of_resets_is_one_reboot() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        w.ask_reboot();
        let at = t0 + ms(5000);
        assert_eq!(
            event(&mut w, "RESET", at),
            Some(Happening::Reboot { boot: 2, at })
        );
        // Linux tries more reset methods; each resets once more within ~100 ms.
        assert_eq!(event(&mut w, "RESET", at + ms(40)), None);
        assert_eq!(event(&mut w, "RESET", at + ms(120)), None);
        assert_eq!(w.boot(), 2);
        assert_eq!(w.started(), at);
        // The burst also did not turn into a crash of the new boot.
        assert_eq!(w.poll(at + ms(10_000)), None);
    }

    #[test]
    fn a_reset_after_the_burst_window_is_news_again() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        w.ask_reboot();
        event(&mut w, "RESET", t0 + ms(5000));
        w.feed(Signal::AgentReady, t0 + ms(6000));
        // Each RESET extends the burst, so measure from the last one.
        let c = crash(event(&mut w, "RESET", t0 + ms(5000) + RESET_COALESCE));
        assert_eq!((c.boot, c.source), (2, "reset"));
    }

    #[test]
    fn console_lines_from_before_the_boot_are_ignored() {
        let t0 = Instant::now();
        let mut w = BootWatch::new(t0);
        w.begin_boot(t0);
        let boot2 = t0 + ms(3000);
        w.expect_own_reset();
        w.begin_boot(boot2);
        assert_eq!(event(&mut w, "RESET", boot2), None);
        // Boot 1's oops, read only now but stamped before boot 2 began.
        assert!(lines(&mut w, &oops(), boot2 - ms(1)).is_empty());
        assert_eq!(w.wake_at(), None);
        assert_eq!(w.poll(boot2 + ms(60_000)), None);
        // The same text printed during boot 2 is boot 2's crash.
        let seen = lines(&mut w, &oops(), boot2 + ms(10));
        assert_eq!(
            seen,
            vec![Happening::Pending {
                what: Pending::PanicEvent,
                until: boot2 + ms(10) + CRASH_SETTLE
            }]
        );
    }

    #[test]
    fn a_panic_event_waits_for_the_console_tail() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let p = t0 + ms(2000);
        assert_eq!(
            event(&mut w, "GUEST_PANICKED", p),
            Some(Happening::Pending {
                what: Pending::ConsoleTail,
                until: p + CONSOLE_TRAIL
            })
        );
        assert_eq!(w.wake_at(), Some(p + CONSOLE_TRAIL));
        assert_eq!(w.poll(p + ms(100)), None);
        // The oops arrives inside the window: it names the crash.
        assert!(lines(&mut w, &oops(), p + ms(150)).is_empty());
        let c = crash(w.poll(p + ms(160)));
        assert_eq!(c.source, "console");
        assert_eq!(
            c.title,
            "BUG: unable to handle page fault in sensor_match_fields"
        );
        assert_eq!(c.signals, ["pvpanic", "console"]);
        assert_eq!(c.seen_at, p);
        assert!(c.excerpt.iter().any(|l| l.contains("Call Trace:")));
        // Decided once: nothing is left pending.
        assert_eq!(w.wake_at(), None);
        assert_eq!(w.poll(p + ms(10_000)), None);
    }

    #[test]
    fn a_panic_event_without_console_tail_decides_at_the_end_of_the_window() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let p = t0 + ms(2000);
        event(&mut w, "GUEST_PANICKED", p);
        // STOP (the pause after the panic) changes nothing.
        assert_eq!(event(&mut w, "STOP", p + ms(1)), None);
        assert_eq!(w.poll(p + CONSOLE_TRAIL - ms(1)), None);
        let c = crash(w.poll(p + CONSOLE_TRAIL));
        assert_eq!(c.source, "pvpanic");
        assert_eq!(c.kind, "panic");
        assert_eq!(c.signals, ["pvpanic"]);
    }

    #[test]
    fn a_console_report_waits_for_its_panic_event() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let c_at = t0 + ms(2000);
        lines(&mut w, &oops(), c_at);
        assert_eq!(w.poll(c_at + CRASH_SETTLE - ms(1)), None);
        // The panic event follows: decided at once, from the earlier sign.
        event(&mut w, "GUEST_PANICKED", c_at + ms(20));
        let c = crash(w.poll(c_at + ms(21)));
        assert_eq!((c.source, c.seen_at), ("console", c_at));
        assert_eq!(c.signals, ["pvpanic", "console"]);
    }

    #[test]
    fn a_console_report_alone_decides_after_the_settle_time() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let c_at = t0 + ms(2000);
        lines(&mut w, &oops(), c_at);
        assert_eq!(w.wake_at(), Some(c_at + CRASH_SETTLE));
        let c = crash(w.poll(c_at + CRASH_SETTLE));
        assert_eq!(c.signals, ["console"]);
        assert_eq!(c.boot, 1);
    }

    #[test]
    fn a_crash_after_ready_belongs_to_the_boot_that_was_running() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let p = t0 + ms(4000);
        lines(&mut w, &oops(), p - ms(5));
        event(&mut w, "GUEST_PANICKED", p);
        let c = crash(w.poll(p));
        assert_eq!((c.boot, c.after_ready), (1, true));
        // The harness resets the paused guest for the boot-loop watch.
        let boot2 = p + ms(500);
        w.expect_own_reset();
        assert_eq!(w.begin_boot(boot2), 2);
        assert_eq!(event(&mut w, "RESET", boot2 + ms(1)), None);
        assert!(!w.is_ready());
        // Boot 1's panic tail read late: not boot 2's.
        assert!(lines(&mut w, &oops(), p + ms(10)).is_empty());
        assert_eq!(w.poll(boot2 + ms(60_000)), None);
        // Boot 2 crashing before ready is boot 2's, before ready.
        event(&mut w, "GUEST_PANICKED", boot2 + ms(2000));
        let c2 = crash(w.poll(boot2 + ms(2000) + CONSOLE_TRAIL));
        assert_eq!((c2.boot, c2.after_ready), (2, false));
    }

    #[test]
    fn a_reset_nobody_asked_for_is_a_crash() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let at = t0 + ms(3000);
        let c = crash(event(&mut w, "RESET", at));
        assert_eq!((c.boot, c.source, c.kind.as_str()), (1, "reset", "reset"));
        assert_eq!(c.signals, ["reset"]);
        assert_eq!(c.seen_at, at);
        // The boot does not change: the harness decides what comes next.
        assert_eq!(w.boot(), 1);
    }

    #[test]
    fn a_reset_after_a_console_report_is_named_by_the_report() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        lines(&mut w, &oops(), t0 + ms(2000));
        // A panic event that the reset overtakes is not listed: the reset ended it.
        event(&mut w, "GUEST_PANICKED", t0 + ms(2001));
        let c = crash(event(&mut w, "RESET", t0 + ms(2002)));
        assert_eq!(c.source, "console");
        assert_eq!(c.signals, ["console", "reset"]);
    }

    #[test]
    fn our_own_reset_is_not_the_guests() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        w.expect_own_reset();
        let at = t0 + ms(3000);
        w.begin_boot(at);
        assert_eq!(event(&mut w, "RESET", at), None);
        // Its burst neither.
        assert_eq!(event(&mut w, "RESET", at + ms(50)), None);
        // Only the first RESET is ours: a later one is the guest's again.
        let c = crash(event(&mut w, "RESET", at + ms(5000)));
        assert_eq!(c.boot, 2);
    }

    #[test]
    fn a_new_boot_forgets_an_asked_reboot_and_pending_signals() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        w.ask_reboot();
        event(&mut w, "GUEST_PANICKED", t0 + ms(1500));
        w.expect_own_reset();
        w.begin_boot(t0 + ms(2000));
        assert_eq!(w.wake_at(), None);
        event(&mut w, "RESET", t0 + ms(2000));
        assert!(matches!(
            event(&mut w, "RESET", t0 + ms(9000)),
            Some(Happening::Crash(_))
        ));
        // And cancel_reboot forgets it too.
        w.ask_reboot();
        w.cancel_reboot();
        assert!(matches!(
            event(&mut w, "RESET", t0 + ms(20_000)),
            Some(Happening::Crash(_))
        ));
    }

    #[test]
    fn a_hyperv_bugcheck_names_a_crash_without_console_report() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let info = json!({"info": {"type": "hyper-v", "arg1": 0x50, "arg2": 1, "arg3": 0, "arg4": 2, "arg5": 3}});
        let p = t0 + ms(2000);
        w.feed(
            Signal::Qmp {
                name: "GUEST_CRASHLOADED",
                data: &info,
            },
            p,
        );
        let c = crash(w.poll(p + CONSOLE_TRAIL));
        assert_eq!((c.source, c.kind.as_str()), ("hyperv", "bugcheck"));
        assert_eq!(c.signals, ["pvpanic", "hyperv"]);
        assert_eq!(c.bugcheck.map(|b| b.code), Some(0x50));
        assert!(
            c.title.contains("PAGE_FAULT_IN_NONPAGED_AREA"),
            "{}",
            c.title
        );
        assert_eq!(c.excerpt, vec![bugcheck_line(&c.bugcheck.unwrap())]);
    }

    #[test]
    fn only_the_guests_own_power_off_is_news() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let reset = json!({"guest": true, "reason": "guest-reset"});
        let off = json!({"guest": true, "reason": "guest-shutdown"});
        let shutdown = |data| Signal::Qmp {
            name: "SHUTDOWN",
            data,
        };
        assert_eq!(w.feed(shutdown(&reset), t0 + ms(1)), None);
        assert_eq!(
            w.feed(shutdown(&off), t0 + ms(2)),
            Some(Happening::PoweredOff { boot: 1 })
        );
    }

    #[test]
    fn a_hang_report_is_decided_once_its_frames_are_in() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let lockup: Vec<&str> = LOCKUP_LOG
            .lines()
            .skip_while(|l| !l.contains("watchdog: BUG: soft lockup"))
            .collect();
        let h = t0 + ms(2000);
        let header = w.feed(Signal::Console(lockup[0]), h);
        assert_eq!(
            header,
            Some(Happening::Pending {
                what: Pending::HangReport,
                until: h + CRASH_SETTLE
            })
        );
        // Still printing: not yet, so the title can reach the faulting frame.
        assert_eq!(w.poll(h + ms(1)), None);
        let end = lockup
            .iter()
            .position(|l| l.contains("</TASK>"))
            .expect("the fixture's trace ends");
        lines(&mut w, &lockup[1..=end], h + ms(5));
        // A soft lockup has no end marker: it is over once other output took over.
        assert_eq!(w.poll(h + ms(6)), None);
        let noise = vec!["user space says hello"; 41];
        lines(&mut w, &noise, h + ms(7));
        match w.poll(h + ms(8)) {
            Some(Happening::Hang { boot: 1, title }) => {
                assert!(title.contains("hang_init_init"), "{title}")
            }
            other => panic!("expected a hang, got {other:?}"),
        }
    }

    #[test]
    fn a_hang_report_that_keeps_printing_is_decided_after_the_settle_time() {
        let t0 = Instant::now();
        let mut w = ready_boot(t0);
        let h = t0 + ms(2000);
        w.feed(
            Signal::Console(
                "[   52.682262] watchdog: BUG: soft lockup - CPU#0 stuck for 49s! [insmod:99]",
            ),
            h,
        );
        assert_eq!(w.poll(h + CRASH_SETTLE - ms(1)), None);
        assert!(matches!(
            w.poll(h + CRASH_SETTLE),
            Some(Happening::Hang { boot: 1, .. })
        ));
    }

    #[test]
    fn ready_time_is_measured_from_the_boot_start() {
        let t0 = Instant::now();
        let mut w = BootWatch::new(t0);
        w.begin_boot(t0 + ms(100));
        assert!(!w.is_ready());
        assert_eq!(w.mark_ready(t0 + ms(2600)), ms(2500));
        assert!(w.is_ready());
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
