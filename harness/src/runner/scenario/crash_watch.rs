//! After a crash: whether the machine comes back. The boots after it are watched for
//! a boot loop (crashing before ready, or within the settle window after it) or a
//! recovery (a ready boot that stays up for the window), and the recovery is
//! recorded with its boots and seconds.

use std::time::{Duration, Instant};

use super::machine::{Machine, Wake};
use super::Stop;
use crate::model::record::{BootOutcome, CrashPhase, RecoveryRecord};
use crate::model::Emitter;
use crate::runner::verdict::settle_window;

/// Whether, how and how fast the machine came back after its first crash.
///
/// A ready normal boot after the crash is only a candidate (`pending`) until it has
/// stayed up for the settle window past ready; then it is the recovery (`record`).
/// The window is held wherever the machine is: in the watch after the crash, in the
/// steps that follow (a `recover` step's normal boot, a `rollback_content` step's
/// boot), or at the end of the scenario, which waits out what is left of it.
#[derive(Default)]
pub(super) struct RecoveryWatch {
    /// When the first crash was seen, and in which boot.
    first_crash: Option<(Instant, u32)>,
    pub(super) record: Option<RecoveryRecord>,
    pending: Option<PendingRecovery>,
    /// The recovery step under way, named in the recovery it brings.
    pub(super) by: Option<&'static str>,
}

/// A ready boot after a crash, still inside its settle window.
struct PendingRecovery {
    /// What it will be recorded as (its boots and seconds count to its ready).
    record: RecoveryRecord,
    /// The boot holding the window and when it became ready: the candidate's own
    /// boot, or the next one after a reboot the suite asked for inside the window.
    boot: u32,
    ready_at: Instant,
}

/// How the boots after a crash went ([`Machine::watch_after_crash`]).
pub(super) enum Watched {
    /// A boot stayed up for the settle window: the recovery is recorded.
    Recovered,
    /// A boot answered and was handed at once to the next step (a `rollback_content`,
    /// which races a driver that crashes after ready and holds its own settle).
    HandedOver,
    /// `boot_loop_boots` boots in a row crashed, or one never came back.
    BootLoop,
}

impl Machine<'_> {
    /// A ready normal boot after a crash is the recovery's candidate; it becomes the
    /// recovery once it has held the settle window ([`Machine::confirm_recovery`]).
    pub(super) fn note_recovery(&mut self) {
        if self.recovery.record.is_some() || self.in_rescue_boot() {
            return;
        }
        let (index, ready_at) = (
            self.boot_index(),
            self.ready_at.unwrap_or_else(Instant::now),
        );
        if let Some(pending) = self.recovery.pending.as_mut() {
            // The candidate's boot ended without a crash (a reboot the suite asked
            // for): the window goes on in this boot; boots and seconds stay its own.
            pending.boot = index;
            pending.ready_at = ready_at;
            return;
        }
        if let Some((at, crash_boot)) = self.recovery.first_crash {
            if index > crash_boot {
                self.recovery.pending = Some(PendingRecovery {
                    record: RecoveryRecord {
                        boots: index - crash_boot,
                        seconds: (at.elapsed().as_millis() as f64 / 1000.0),
                        ready_boot: index,
                        how: self
                            .recovery
                            .by
                            .unwrap_or(crate::model::record::RECOVERED_BY_ITSELF)
                            .into(),
                        settled_s: None,
                    },
                    boot: index,
                    ready_at,
                });
            }
        }
    }

    /// The settle window now: the scenario's, stretched to outlast the latest crash
    /// after ready seen in a boot after the first crash.
    pub(super) fn settle_window(&self) -> Duration {
        settle_window(self.setup.recovery_settle, self.found.longest_after_ready)
    }

    /// Records the pending recovery once its boot has been up for the window at `now`.
    pub(super) fn confirm_recovery(&mut self, now: Instant) {
        let window = self.settle_window();
        let held = self
            .recovery
            .pending
            .as_ref()
            .is_some_and(|p| now >= p.ready_at + window);
        if held {
            if let Some(pending) = self.recovery.pending.take() {
                let settled_s = (window.as_millis() as f64 / 1000.0).max(
                    now.saturating_duration_since(pending.ready_at).as_millis() as f64 / 1000.0,
                );
                self.recovery.record = Some(RecoveryRecord {
                    settled_s: Some(settled_s),
                    ..pending.record
                });
            }
        }
    }

    /// Whether a recovery is still inside its settle window, in the running boot.
    pub(super) fn recovery_pending(&self) -> bool {
        self.recovery
            .pending
            .as_ref()
            .is_some_and(|p| p.boot == self.boot_index() && self.qemu.vm.is_some())
    }

    /// Names what brought the guest back, on the recovery this boot brings (pending
    /// or already held).
    pub(super) fn recovered_by(&mut self, how: &str) {
        if let Some(pending) = self.recovery.pending.as_mut() {
            pending.record.how = how.into();
        } else if let Some(record) = self.recovery.record.as_mut() {
            record.how = how.into();
        }
    }

    /// Stays with the running boot until the settle window past its ready has gone
    /// by, so its pending recovery is recorded; a crash or hang ends it early.
    pub(super) fn hold_ready_boot(&mut self) -> Result<(), Stop> {
        let Some(ready_at) = self.ready_at else {
            return Ok(());
        };
        loop {
            let until = ready_at + self.settle_window();
            if Instant::now() >= until {
                break;
            }
            match self.next(until)? {
                Wake::Deadline | Wake::Agent(..) => {}
                // A reboot inside the window: the new boot holds it from its ready.
                Wake::Rebooted => return Ok(()),
            }
        }
        self.confirm_recovery(Instant::now());
        Ok(())
    }

    /// Notes a crash for the recovery that may follow; a boot that came back and then
    /// crashed did not bring the machine back.
    pub(super) fn note_crash(&mut self, seen_at: Instant, boot: u32) {
        if self
            .recovery
            .record
            .as_ref()
            .is_some_and(|r| r.ready_boot == boot)
        {
            self.recovery.record = None;
        }
        if self
            .recovery
            .pending
            .as_ref()
            .is_some_and(|p| p.boot == boot)
        {
            self.recovery.pending = None;
        }
        self.recovery.first_crash.get_or_insert((seen_at, boot));
    }

    /// Marks the running boot's crash as before or after ready (and how long after);
    /// a crash after ready in a boot after the first crash stretches the window.
    pub(super) fn note_crash_timing(&mut self, seen_at: Instant, after_ready: bool) {
        let late = self
            .ready_at
            .filter(|_| after_ready)
            .map(|ready| seen_at.saturating_duration_since(ready));
        let after_first = self
            .recovery
            .first_crash
            .is_some_and(|(_, first)| self.boot_index() > first);
        if let (Some(late), true) = (late, after_first) {
            let longest = self.found.longest_after_ready.get_or_insert(late);
            *longest = (*longest).max(late);
        }
        if let Some(boot) = self.found.boots.last_mut() {
            boot.crashed = Some(if after_ready {
                CrashPhase::AfterReady
            } else {
                CrashPhase::BeforeReady
            });
            boot.crash_after_ready_ms = late.map(|d| d.as_millis() as u64);
        }
    }

    /// After a crash: resets the guest and watches up to `loop_boots` boots. A boot
    /// that reaches ready is held for the settle window; one that crashes inside it
    /// counts as a crashing boot, like one that crashed before ready. With
    /// `hand_over` the first boot that answers goes at once to the next step (a
    /// rollback that must race the crash), which holds its own settle; the window
    /// is then held by the steps after it or at the scenario's end. A boot after a
    /// crash that never reaches ready (stuck in a recovery screen, such as Windows'
    /// Automatic Repair, or hung in a boot-start driver) is a boot loop too: the
    /// machine does not come back. Its screenshot is kept with the hang evidence.
    ///
    /// The crash that starts the watch counts only when it came before ready: a
    /// crash in a ready boot is a step's doing (a live update), not the boot's.
    pub(super) fn watch_after_crash(
        &mut self,
        loop_boots: u32,
        hand_over: bool,
        emitter: &Emitter,
    ) -> Result<Watched, Stop> {
        let mut consecutive = u32::from(
            self.found
                .boots
                .last()
                .is_some_and(|b| b.outcome == BootOutcome::Crash),
        );
        self.found.loop_after_ready_ms.clear();
        loop {
            if consecutive >= loop_boots {
                self.found.boot_loop = true;
                self.note_dumps_left_in_a_boot_loop();
                return Ok(Watched::BootLoop);
            }
            self.begin_boot_after_crash()?;
            let up = self.wait_ready(self.setup.boot_timeout, emitter);
            let held = up.and_then(|()| {
                if hand_over {
                    Ok(Watched::HandedOver)
                } else {
                    self.hold_ready_boot().map(|()| Watched::Recovered)
                }
            });
            match held {
                Ok(watched) => return Ok(watched),
                Err(Stop::Crash) => {
                    consecutive += 1;
                    let late = self.found.boots.last().and_then(|b| b.crash_after_ready_ms);
                    self.found.loop_after_ready_ms.extend(late);
                }
                Err(Stop::Hang(why)) => {
                    // Counted as the loop it is, not as a separate hang: the
                    // boots list shows the stalled boot (outcome timeout or hang).
                    if self.found.hangs.last() == Some(&why) {
                        self.found.hangs.pop();
                    }
                    self.found.stalled_after_crash = Some(why);
                    self.found.boot_loop = true;
                    self.note_dumps_left_in_a_boot_loop();
                    return Ok(Watched::BootLoop);
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// In a boot loop no boot becomes ready, so a Windows guest's own dumps cannot
    /// be listed through the agent: each crash still waiting for them says where
    /// they are to be had instead.
    fn note_dumps_left_in_a_boot_loop(&mut self) {
        if self.profile.os != crate::guest::OsFamily::Windows {
            return;
        }
        for crash in &mut self.found.crashes {
            if crash.guest_dumps.is_empty() && crash.guest_dumps_note.is_none() {
                crash.guest_dumps_note = Some(super::guest_dumps::BOOT_LOOP_NOTE.into());
            }
        }
    }
}
