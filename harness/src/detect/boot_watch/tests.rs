use super::*;
use serde_json::json;

const OOPS_LOG: &str = include_str!("../../../tests/fixtures/consoles/demo_sensor_boot_oops.log");
const LOCKUP_LOG: &str = include_str!("../../../tests/fixtures/consoles/hang_init_soft_lockup.log");

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
        "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]"
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
    assert_eq!(c.capture, Capture::GuestWritingDump);
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

/// The events of a recorded QMP transcript (testdata/, each naming the QEMU source
/// it follows), with their instants: `t0` plus each event's QEMU timestamp offset
/// from the first event's.
fn transcript(text: &str, t0: Instant) -> Vec<(String, Value, Instant)> {
    let mut first = None;
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|v| v.get("event").is_some())
        .map(|v| {
            let us = v["timestamp"]["seconds"].as_u64().unwrap() * 1_000_000
                + v["timestamp"]["microseconds"].as_u64().unwrap();
            let base = *first.get_or_insert(us);
            (
                v["event"].as_str().unwrap().to_string(),
                v.get("data").cloned().unwrap_or(Value::Null),
                t0 + Duration::from_micros(us - base),
            )
        })
        .collect()
}

/// Feeds every event of `events`, then polls past the console trail; what happened.
fn replay(w: &mut BootWatch, events: &[(String, Value, Instant)]) -> Vec<Happening> {
    let mut seen = Vec::new();
    for (name, data, at) in events {
        seen.extend(w.feed(Signal::Qmp { name, data }, *at));
        seen.extend(w.poll(*at + CONSOLE_TRAIL));
    }
    seen.retain(|h| !matches!(h, Happening::Pending { .. }));
    seen
}

/// KVM with hv-crash (testdata/guest_panicked_hyperv.qmp): the bugcheck from the
/// panic event, the guest paused for a host-side dump.
#[test]
fn hv_crash_transcript_is_a_paused_named_crash() {
    let t0 = Instant::now();
    let mut w = ready_boot(t0);
    let events = transcript(include_str!("../testdata/guest_panicked_hyperv.qmp"), t0);
    let seen = replay(&mut w, &events);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let c = crash(seen.into_iter().next());
    assert_eq!(c.capture, Capture::HostPaused);
    assert_eq!(c.source, "hyperv");
    assert_eq!(c.bugcheck.map(|b| b.code), Some(0x50));
}

/// pvpanic with Windows dumps disabled (testdata/guest_panicked_pvpanic.qmp): a
/// paused crash; bootgate's own system_reset that follows is no crash of its own,
/// even without `expect_own_reset` (its reason says it came from QMP).
#[test]
fn pvpanic_panicked_transcript_is_paused_and_the_host_reset_is_not_a_crash() {
    let t0 = Instant::now();
    let mut w = ready_boot(t0);
    let events = transcript(include_str!("../testdata/guest_panicked_pvpanic.qmp"), t0);
    let (crash_events, after) = events.split_at(3);
    let seen = replay(&mut w, crash_events);
    let c = crash(seen.into_iter().next());
    assert_eq!(c.capture, Capture::HostPaused);
    assert_eq!(c.source, "pvpanic");
    assert_eq!(c.bugcheck, None);
    w.begin_boot(after[0].2);
    assert_eq!(replay(&mut w, after), Vec::new());
}

/// pvpanic with Windows dumps enabled (testdata/guest_crashloaded_pvpanic.qmp): a
/// crash the guest is writing its dump of, left running; its own RESET 42 s later
/// ends the crash and begins the next boot, not a new crash.
#[test]
fn crashloaded_transcript_waits_for_the_guests_own_reset_as_the_crash_end() {
    let t0 = Instant::now();
    let mut w = ready_boot(t0);
    let events = transcript(
        include_str!("../testdata/guest_crashloaded_pvpanic.qmp"),
        t0,
    );
    let seen = replay(&mut w, &events);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let c = crash(Some(seen[0].clone()));
    assert_eq!(c.capture, Capture::GuestWritingDump);
    assert_eq!((c.boot, c.after_ready), (1, true));
    let reset_at = events[2].2;
    assert_eq!(
        seen[1],
        Happening::CrashEnded {
            boot: 2,
            at: reset_at
        }
    );
    assert_eq!((w.boot(), w.started()), (2, reset_at));
    // The next boot is an ordinary one: an unasked reset in it is a crash again.
    let later = reset_at + ms(30_000);
    let again = crash(event(&mut w, "RESET", later));
    assert_eq!(again.capture, Capture::Reset);
}

/// A panic event while the guest writes its dump belongs to that crash.
#[test]
fn panic_events_while_the_dump_is_written_are_the_same_crash() {
    let t0 = Instant::now();
    let mut w = ready_boot(t0);
    let run = json!({"action": "run"});
    let at = t0 + ms(2000);
    w.feed(
        Signal::Qmp {
            name: "GUEST_CRASHLOADED",
            data: &run,
        },
        at,
    );
    crash(w.poll(at + CONSOLE_TRAIL));
    let pause = json!({"action": "pause"});
    assert_eq!(
        w.feed(
            Signal::Qmp {
                name: "GUEST_PANICKED",
                data: &pause
            },
            at + ms(500)
        ),
        None
    );
    assert_eq!(w.poll(at + ms(5000)), None);
}

/// When bootgate gives up waiting and resets the guest itself, that reset is its
/// own: no crash end from the guest, and the new boot begins clean.
#[test]
fn the_hosts_reset_after_a_dump_wait_is_not_the_crash_end() {
    let t0 = Instant::now();
    let mut w = ready_boot(t0);
    let at = t0 + ms(2000);
    w.feed(
        Signal::Qmp {
            name: "GUEST_CRASHLOADED",
            data: &json!({"action": "run"}),
        },
        at,
    );
    crash(w.poll(at + CONSOLE_TRAIL));
    w.expect_own_reset();
    let reset = json!({"guest": false, "reason": "host-qmp-system-reset"});
    let r = at + ms(600_000);
    assert_eq!(
        w.feed(
            Signal::Qmp {
                name: "RESET",
                data: &reset
            },
            r
        ),
        None
    );
    w.begin_boot(r);
    let late = crash(event(&mut w, "RESET", r + ms(20_000)));
    assert_eq!(late.capture, Capture::Reset);
}

/// A guest that resets itself during boot with no panic event
/// (testdata/guest_reset_no_panic.qmp): a crashing boot named "reset", before
/// ready; the burst of RESETs of one reset is one crash, and the next boot's reset
/// is the next crash (what a boot loop counts).
#[test]
fn reset_transcript_is_one_crash_per_resetting_boot() {
    let t0 = Instant::now();
    let mut w = BootWatch::new(t0);
    w.begin_boot(t0);
    let events = transcript(include_str!("../testdata/guest_reset_no_panic.qmp"), t0);
    let (first, second) = events.split_at(3);
    let seen = replay(&mut w, first);
    assert_eq!(seen.len(), 1, "the burst is one reset: {seen:?}");
    let c = crash(Some(seen[0].clone()));
    assert_eq!(c.capture, Capture::Reset);
    assert_eq!((c.source, c.boot, c.after_ready), ("reset", 1, false));
    assert_eq!(c.signals, ["reset"]);
    // The runner begins the next boot at the reset itself.
    w.begin_boot(c.seen_at);
    let next = crash(replay(&mut w, second).into_iter().next());
    assert_eq!((next.capture, next.boot), (Capture::Reset, 2));
}

/// A console report with no paused panic event: the guest may still run.
#[test]
fn a_console_crash_alone_is_stopped_by_the_host() {
    let t0 = Instant::now();
    let mut w = ready_boot(t0);
    let at = t0 + ms(2000);
    lines(&mut w, &oops(), at);
    let c = crash(w.poll(at + CRASH_SETTLE));
    assert_eq!(c.capture, Capture::HostStopped);
}
