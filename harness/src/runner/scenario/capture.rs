//! The crash-capture model, one per accelerator and per way a crash reached the host
//! ([`Capture`], decided by the boot watch from QEMU's events): which evidence is
//! taken from the host, how the next boot begins, and whether the guest's own dump
//! is to be expected. A pure decision, so every path is tested without a VM.
//!
//! - KVM with `hv-crash` (the manifest's `machine.hyperv`): Windows writes the
//!   bugcheck into the Hyper-V crash MSRs; the write of HV_X64_MSR_CRASH_CTL reaches
//!   QEMU as KVM_SYSTEM_EVENT_CRASH (accel/kvm/kvm-all.c) and becomes GUEST_PANICKED
//!   with the code and parameters as `info`. With `-action panic=pause` the guest
//!   stops there, before Windows writes any dump (QEMU's docs/system/i386/hyperv.rst:
//!   hv-crash "effectively blocks crash dump generation by Windows"): the dump is
//!   taken from the host (win-dmp where the fwcfg driver filled vmcoreinfo, else
//!   ELF), and no in-guest dump is expected.
//! - pvpanic without hv-crash (TCG, or KVM without `machine.hyperv`): virtio-win's
//!   driver (pvpanic/pvpanic/bugcheck.c) sends GUEST_PANICKED only when Windows
//!   wrote no dump (dumps disabled): paused, dumped from the host, reset by bootgate.
//!   With dumps enabled it sends GUEST_CRASHLOADED as the dump I/O starts, and QEMU
//!   leaves the guest running (softmmu/runstate.c, qemu_system_guest_crashloaded):
//!   bootgate takes a screenshot and nothing else, lets the guest finish and reboot
//!   itself (AutoReboot), counts that reset as the crash's end, and collects the
//!   dump at the next ready boot. A guest that does not reset within
//!   [`guest_dump_wait`] is reset by bootgate, with a note that its dump may be
//!   incomplete.
//! - Any guest, any accelerator: a reset nobody asked for, with no panic event, is a
//!   crashing boot of unknown cause; the crashed boot's memory is gone, and the reset
//!   itself begins the next boot.

use std::time::Duration;

use crate::detect::boot_watch::Capture;
use crate::qemu::accel::Accel;

/// How long a guest writing its own dump (GUEST_CRASHLOADED) gets to finish and
/// reboot itself under KVM: a kernel dump of a few GiB to a virtio disk takes a
/// minute or two.
pub(crate) const GUEST_DUMP_WRITE_WAIT: Duration = Duration::from_secs(10 * 60);
/// The same under TCG, where the guest runs some ten to thirty times slower.
pub(crate) const GUEST_DUMP_WRITE_WAIT_TCG: Duration = Duration::from_secs(45 * 60);

/// The wait for a guest's own reset after GUEST_CRASHLOADED on `accel`.
pub(crate) fn guest_dump_wait(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => GUEST_DUMP_WRITE_WAIT,
        Accel::Tcg => GUEST_DUMP_WRITE_WAIT_TCG,
    }
}

/// What to do about one crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapturePlan {
    /// A screenshot of what the guest shows now (the crash screen).
    pub screenshot: bool,
    pub host_dump: HostDump,
    pub next_boot: NextBoot,
    /// Whether the guest may have written a dump of its own to collect later.
    pub guest_dump: GuestDump,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostDump {
    /// The guest is paused: dump it (by the suite's policy).
    Take,
    /// The guest may still run: `stop` it first, then dump (by the suite's policy).
    StopAndTake,
    /// No dump from the host, for this reason (the crash's dump note).
    Skip(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextBoot {
    /// bootgate resets the stopped guest (`system_reset`, `cont`).
    HostResets,
    /// The guest's own reset already began it, at the crash's instant.
    BegunByTheReset,
    /// The guest reboots itself once its dump is written: wait this long for its
    /// RESET, then reset it from the host.
    GuestResetsItself { within: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestDump {
    /// Look for it at the next ready boot (Windows).
    Expected,
    /// None can exist, for this reason (the crash's guest-dump note).
    NotExpected(&'static str),
}

/// Why a reset crash has no host dump.
pub(crate) const RESET_NO_DUMP: &str = "not dumped: the guest had already reset itself (no panic event), so its memory holds the next boot, not the crash";
/// Why a guest writing its own dump is not dumped from the host.
pub(crate) const WRITING_NO_DUMP: &str = "not dumped from the host: the guest is writing its own dump (GUEST_CRASHLOADED), which a host dump would hold up; it is collected at the next ready boot";
/// Why an hv-crash crash has no in-guest dump.
pub(crate) const HV_CRASH_NO_GUEST_DUMP: &str = "none expected: with hv-crash the guest stops at its crash MSR write, before Windows writes a dump (QEMU docs/system/i386/hyperv.rst); the host-side dump is the evidence";

/// The plan for a crash that reached the host as `capture`, on a machine whose
/// guest has the Hyper-V crash MSRs (`hv_crash`: KVM and `machine.hyperv`) or not.
pub(crate) fn plan(capture: Capture, hv_crash: bool, accel: Accel) -> CapturePlan {
    match capture {
        Capture::HostPaused => CapturePlan {
            screenshot: true,
            host_dump: HostDump::Take,
            next_boot: NextBoot::HostResets,
            guest_dump: if hv_crash {
                GuestDump::NotExpected(HV_CRASH_NO_GUEST_DUMP)
            } else {
                // PANICKED from virtio-win's driver means dumps are disabled, but an
                // older driver without CRASHLOADED support sends PANICKED after the
                // dump is written (its BugCheckCallback runs after the dump since
                // Windows XP SP1): look, and keep only dumps newer than the crash.
                GuestDump::Expected
            },
        },
        Capture::HostStopped => CapturePlan {
            screenshot: true,
            host_dump: HostDump::StopAndTake,
            next_boot: NextBoot::HostResets,
            guest_dump: GuestDump::Expected,
        },
        Capture::GuestWritingDump => CapturePlan {
            screenshot: true,
            host_dump: HostDump::Skip(WRITING_NO_DUMP),
            next_boot: NextBoot::GuestResetsItself {
                within: guest_dump_wait(accel),
            },
            guest_dump: GuestDump::Expected,
        },
        Capture::Reset => CapturePlan {
            // The screen already shows the next boot's firmware.
            screenshot: false,
            host_dump: HostDump::Skip(RESET_NO_DUMP),
            next_boot: NextBoot::BegunByTheReset,
            // A Windows bugcheck before the demand-start pvpanic driver loaded
            // still writes its dump (if enabled) before AutoReboot resets.
            guest_dump: GuestDump::Expected,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hv_crash_is_paused_dumped_from_the_host_and_expects_no_guest_dump() {
        let p = plan(Capture::HostPaused, true, Accel::Kvm);
        assert!(p.screenshot);
        assert_eq!(p.host_dump, HostDump::Take);
        assert_eq!(p.next_boot, NextBoot::HostResets);
        assert_eq!(p.guest_dump, GuestDump::NotExpected(HV_CRASH_NO_GUEST_DUMP));
    }

    #[test]
    fn pvpanic_panicked_is_paused_and_dumped_and_still_looks_for_a_guest_dump() {
        for accel in [Accel::Kvm, Accel::Tcg] {
            let p = plan(Capture::HostPaused, false, accel);
            assert_eq!(p.host_dump, HostDump::Take);
            assert_eq!(p.next_boot, NextBoot::HostResets);
            assert_eq!(p.guest_dump, GuestDump::Expected);
        }
    }

    #[test]
    fn crashloaded_is_left_running_to_reboot_itself_within_a_bounded_wait() {
        let kvm = plan(Capture::GuestWritingDump, false, Accel::Kvm);
        assert!(
            kvm.screenshot,
            "the crash screen, without stopping the guest"
        );
        assert_eq!(kvm.host_dump, HostDump::Skip(WRITING_NO_DUMP));
        assert_eq!(
            kvm.next_boot,
            NextBoot::GuestResetsItself {
                within: GUEST_DUMP_WRITE_WAIT
            }
        );
        assert_eq!(kvm.guest_dump, GuestDump::Expected);
        let tcg = plan(Capture::GuestWritingDump, false, Accel::Tcg);
        assert_eq!(
            tcg.next_boot,
            NextBoot::GuestResetsItself {
                within: GUEST_DUMP_WRITE_WAIT_TCG
            }
        );
        assert!(GUEST_DUMP_WRITE_WAIT_TCG > GUEST_DUMP_WRITE_WAIT);
    }

    #[test]
    fn a_reset_has_nothing_left_to_capture_and_begins_the_next_boot() {
        for hv_crash in [false, true] {
            let p = plan(Capture::Reset, hv_crash, Accel::Tcg);
            assert!(!p.screenshot);
            assert_eq!(p.host_dump, HostDump::Skip(RESET_NO_DUMP));
            assert_eq!(p.next_boot, NextBoot::BegunByTheReset);
            assert_eq!(p.guest_dump, GuestDump::Expected);
        }
    }

    #[test]
    fn a_console_report_alone_stops_the_guest_before_dumping() {
        let p = plan(Capture::HostStopped, false, Accel::Tcg);
        assert_eq!(p.host_dump, HostDump::StopAndTake);
        assert_eq!(p.next_boot, NextBoot::HostResets);
    }

    /// The transcripts through the real QMP client: a fake QMP peer
    /// (testing/fake_peer.rs) sends QEMU 7.2's lines for each case, because no
    /// Windows guest can run here to make real QEMU send them; the client's events
    /// go through the boot watch to the plan, as in `Machine::next`.
    mod through_the_qmp_client {
        use std::time::{Duration, Instant};

        use serde_json::Value;

        use super::*;
        use crate::detect::boot_watch::{BootWatch, Happening, Signal, CONSOLE_TRAIL};
        use crate::qemu::qmp::{QmpClient, QmpMessage};
        use crate::testing::fake_peer::{FakePeer, QmpPeer};

        const TEST_TIMEOUT: Duration = Duration::from_secs(5);

        /// What the boot watch made of `transcript`'s events (after its greeting and
        /// capabilities reply, which the peer's handshake plays), polled as time
        /// goes by.
        fn replay(transcript: &'static str) -> Vec<Happening> {
            let server = FakePeer::bind("qmp.sock");
            let peer = server.serve(move |stream| {
                let mut peer = QmpPeer::new(stream);
                peer.handshake();
                for line in transcript.lines().filter(|l| l.contains("\"event\"")) {
                    peer.line(line);
                }
            });
            let (_client, rx) = QmpClient::connect(server.path(), TEST_TIMEOUT).unwrap();
            let t0 = Instant::now();
            let mut watch = BootWatch::new(t0);
            watch.begin_boot(t0);
            watch.mark_ready(t0);
            let mut first = None;
            let mut seen = Vec::new();
            while let Ok(QmpMessage::Event(event)) = rx.recv_timeout(TEST_TIMEOUT) {
                let base = *first.get_or_insert(event.timestamp_micros);
                let at = t0 + Duration::from_micros(event.timestamp_micros - base);
                let data: &Value = &event.data;
                seen.extend(watch.feed(
                    Signal::Qmp {
                        name: &event.name,
                        data,
                    },
                    at,
                ));
                seen.extend(watch.poll(at + CONSOLE_TRAIL));
            }
            peer.join().unwrap();
            seen.retain(|h| !matches!(h, Happening::Pending { .. }));
            seen
        }

        fn crash_capture(h: &Happening) -> Capture {
            match h {
                Happening::Crash(c) => c.capture,
                other => panic!("expected a crash, got {other:?}"),
            }
        }

        #[test]
        fn crashloaded_is_left_to_write_its_dump_and_its_reset_ends_the_crash() {
            let seen = replay(include_str!(
                "../../detect/testdata/guest_crashloaded_pvpanic.qmp"
            ));
            assert_eq!(seen.len(), 2, "{seen:?}");
            let capture = crash_capture(&seen[0]);
            assert_eq!(capture, Capture::GuestWritingDump);
            assert!(matches!(seen[1], Happening::CrashEnded { boot: 2, .. }));
            let p = plan(capture, false, Accel::Tcg);
            assert_eq!(p.host_dump, HostDump::Skip(WRITING_NO_DUMP));
            assert!(matches!(p.next_boot, NextBoot::GuestResetsItself { .. }));
        }

        #[test]
        fn hv_crash_is_paused_and_dumped_from_the_host() {
            let seen = replay(include_str!(
                "../../detect/testdata/guest_panicked_hyperv.qmp"
            ));
            assert_eq!(seen.len(), 1, "{seen:?}");
            let capture = crash_capture(&seen[0]);
            assert_eq!(capture, Capture::HostPaused);
            let p = plan(capture, true, Accel::Kvm);
            assert_eq!(p.host_dump, HostDump::Take);
            assert_eq!(p.guest_dump, GuestDump::NotExpected(HV_CRASH_NO_GUEST_DUMP));
        }

        #[test]
        fn pvpanic_panicked_then_the_hosts_reset_is_one_crash() {
            let seen = replay(include_str!(
                "../../detect/testdata/guest_panicked_pvpanic.qmp"
            ));
            assert_eq!(
                seen.len(),
                1,
                "the host-qmp-system-reset is no crash: {seen:?}"
            );
            assert_eq!(crash_capture(&seen[0]), Capture::HostPaused);
        }

        #[test]
        fn a_reset_without_panic_is_a_reset_crash() {
            let seen = replay(include_str!(
                "../../detect/testdata/guest_reset_no_panic.qmp"
            ));
            // The burst is one; the later reset is in the same (not yet re-begun)
            // boot here, so it is a second crash as in a boot loop.
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(seen.iter().all(|h| crash_capture(h) == Capture::Reset));
        }
    }
}
