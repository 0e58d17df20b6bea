//! The stall rules, replayed with made-up instants: what is a stall, and every kind
//! of guest that looks like one for a moment but is not.

use super::*;

const WINDOW: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_millis(500);
/// A spin loop's RIP, as `hang_init`'s cpu_relax loop shows in `info registers`.
const SPIN: u64 = 0xffff_ffff_c000_0013;

fn spinning(rip: u64) -> VcpuState {
    VcpuState {
        rip,
        cpl: 0,
        halted: false,
        interrupts: true,
    }
}

fn idle() -> VcpuState {
    VcpuState {
        rip: 0xffff_ffff_9a41_7a0b,
        cpl: 0,
        halted: true,
        interrupts: true,
    }
}

fn user(rip: u64) -> VcpuState {
    VcpuState {
        rip,
        cpl: 3,
        halted: false,
        interrupts: true,
    }
}

/// A watch whose boot has printed its first console line, just before `t0`.
fn booted(t0: Instant) -> StallWatch {
    let mut watch = StallWatch::new(WINDOW);
    watch.console("Linux version 6.1.0", t0);
    watch
}

fn sample(vcpus: Vec<VcpuState>, cpu: Option<Duration>) -> Sample {
    Sample {
        running: true,
        vcpus,
        cpu_time: cpu,
    }
}

/// Feeds `n` samples of `each(i)` every [`STEP`] from `t0`, the vCPU thread using all
/// of its time; returns the instant after the last one.
fn feed(
    watch: &mut StallWatch,
    t0: Instant,
    n: u32,
    mut each: impl FnMut(u32) -> VcpuState,
) -> Instant {
    for i in 0..n {
        let at = t0 + STEP * i;
        watch.sample(&sample(vec![each(i)], Some(STEP * i)), at);
    }
    t0 + STEP * n
}

#[test]
fn a_vcpu_spinning_in_place_with_a_silent_console_is_a_stall_before_ready() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    watch.console("hang_init: spinning forever in init", t0);
    let end = feed(&mut watch, t0, 22, |i| spinning(SPIN + u64::from(i % 3)));
    let stall = watch.decide(end, false).expect("a stall");
    assert_eq!(stall.since, t0);
    assert_eq!(stall.parked, vec![(0, SPIN, "spinning in the kernel")]);
    assert_eq!(stall.signals, ["vcpu", "console"]);
    assert_eq!(
        stall.last_console.map(|(_, l)| l).as_deref(),
        Some("hang_init: spinning forever in init")
    );
    assert!(stall.vcpu_time.is_some());
}

#[test]
fn not_before_the_window() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 15, |_| spinning(SPIN));
    assert_eq!(watch.decide(end, false), None, "7.5 s of a 10 s window");
}

#[test]
fn an_idle_guest_is_never_stalled() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 60, |_| idle());
    assert_eq!(watch.decide(end, false), None);
    assert_eq!(watch.decide(end, true), None);
}

#[test]
fn user_code_running_is_progress() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    // A busy loop in a user process, seen now and then in the kernel at one place.
    let end = feed(&mut watch, t0, 60, |i| {
        if i % 5 == 0 {
            user(0x40_1000)
        } else {
            spinning(SPIN)
        }
    });
    assert_eq!(watch.decide(end, false), None);
}

#[test]
fn a_kernel_that_moves_is_working_not_stalled() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 60, |i| {
        spinning(SPIN + u64::from(i) * 0x1000)
    });
    assert_eq!(watch.decide(end, false), None);
}

#[test]
fn one_stray_sample_in_an_interrupt_handler_does_not_restart_the_run() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 22, |i| {
        if i == 9 {
            spinning(0xffff_ffff_8100_0000)
        } else {
            spinning(SPIN)
        }
    });
    assert_eq!(watch.decide(end, false).map(|s| s.since), Some(t0));
}

#[test]
fn console_output_is_progress() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let mid = feed(&mut watch, t0, 12, |_| spinning(SPIN));
    watch.console("still printing", mid);
    let end = feed(&mut watch, mid, 12, |_| spinning(SPIN));
    assert_eq!(
        watch.decide(end, false),
        None,
        "the run began again at the line"
    );
}

#[test]
fn once_ready_the_agent_must_have_been_asked_and_stayed_silent() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 22, |_| spinning(SPIN));
    assert!(watch.wants_agent_asked());
    assert_eq!(watch.decide(end, true), None, "nobody asked the agent");
    watch.agent_asked(t0 + STEP);
    assert!(!watch.wants_agent_asked());
    let stall = watch.decide(end, true).expect("asked and silent");
    assert_eq!(stall.signals, ["vcpu", "console", "agent"]);
}

#[test]
fn an_agent_answer_is_progress() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let mid = feed(&mut watch, t0, 12, |_| spinning(SPIN));
    watch.agent_asked(t0);
    watch.agent_answered(mid);
    let end = feed(&mut watch, mid, 12, |_| spinning(SPIN));
    assert_eq!(watch.decide(end, true), None);
    assert_eq!(watch.decide(end, false), None);
}

#[test]
fn a_paused_guest_is_not_stalled() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    for i in 0..40 {
        let mut s = sample(vec![spinning(SPIN)], Some(STEP * i));
        s.running = i % 10 != 9;
        watch.sample(&s, t0 + STEP * i);
    }
    assert_eq!(watch.decide(t0 + STEP * 40, false), None);
}

#[test]
fn a_starved_vcpu_thread_is_not_a_stall() {
    // The host gave QEMU's vCPU thread a tenth of the time: a loaded host, not a
    // stalled guest (or not yet known to be one).
    let t0 = Instant::now();
    let mut watch = booted(t0);
    for i in 0..40 {
        watch.sample(
            &sample(vec![spinning(SPIN)], Some(STEP * i / 10)),
            t0 + STEP * i,
        );
    }
    assert_eq!(watch.decide(t0 + STEP * 40, false), None);
    // It is, once the thread has had half the window.
    for i in 40..240 {
        watch.sample(
            &sample(vec![spinning(SPIN)], Some(STEP * i / 10)),
            t0 + STEP * i,
        );
    }
    let stall = watch.decide(t0 + STEP * 240, false).expect("in vCPU time");
    assert!(stall.vcpu_time.is_some_and(|t| t >= WINDOW / 2));
}

#[test]
fn a_vcpu_halted_with_interrupts_off_is_dead() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 22, |_| VcpuState {
        interrupts: false,
        ..idle()
    });
    let stall = watch.decide(end, false).expect("cli; hlt");
    assert_eq!(stall.parked[0].2, "halted with interrupts off");
}

#[test]
fn one_spinning_vcpu_beside_idle_ones_is_parked() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    for i in 0..22 {
        watch.sample(
            &sample(vec![idle(), spinning(SPIN)], Some(STEP * i)),
            t0 + STEP * i,
        );
    }
    let stall = watch.decide(t0 + STEP * 22, false).expect("a stall");
    assert_eq!(stall.parked, vec![(1, SPIN, "spinning in the kernel")]);
}

#[test]
fn a_new_boot_forgets_the_last() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 22, |_| spinning(SPIN));
    watch.begin_boot();
    assert_eq!(watch.decide(end, false), None);
}

/// The debian12 image's reboot was once called stalled before its kernel printed:
/// CPL 0, not halted, RIP 0x431baa0 in place (low memory, where the kernel
/// decompresses itself), the console silent. Code below the kernel half (firmware,
/// a boot loader, a decompressor) is never judged.
#[test]
fn firmware_or_a_boot_loader_waiting_in_place_is_no_stall() {
    let t0 = Instant::now();
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 30, |i| {
        spinning(0x431_baa0 + u64::from(i % 3))
    });
    assert_eq!(watch.decide(end, false), None);
    // The same wait at a kernel address, once the console has spoken, is one.
    let mut watch = booted(t0);
    let end = feed(&mut watch, t0, 30, |i| spinning(SPIN + u64::from(i % 3)));
    assert!(watch.decide(end, false).is_some());
}

/// Before ready, a boot that has printed nothing on the console is not judged (a
/// kernel before its console is up, a guest silent on the serial line like Windows):
/// the boot timeout covers it. Once ready, the agent's silence is the signal.
#[test]
fn before_ready_a_boot_with_a_silent_console_from_its_start_is_not_judged() {
    let t0 = Instant::now();
    let mut watch = StallWatch::new(WINDOW);
    let end = feed(&mut watch, t0, 30, |i| spinning(SPIN + u64::from(i % 3)));
    assert_eq!(watch.decide(end, false), None);
    watch.console("Linux version 6.1.0", end);
    let later = feed(&mut watch, end, 30, |i| spinning(SPIN + u64::from(i % 3)));
    assert!(watch.decide(later, false).is_some());
}
