//! The verdict of a scenario from what was observed: expectations of negative tests
//! first, then the gates. Kept apart from the VM-driving code so the rules can be
//! tested on their own.

use std::time::Duration;

pub(crate) use crate::model::record::after_ready_span;
#[cfg(test)]
use crate::model::record::RECOVERED_BY_ITSELF;
use crate::model::record::{BootRecord, CrashRecord, RecoveryRecord};
use crate::suite::{Expect, Scenario, MAX_RECOVERY_SETTLE};
use crate::util::human_duration;

/// What a scenario's boots showed.
pub(crate) struct Observed<'a> {
    pub boots: &'a [BootRecord],
    pub crashes: &'a [CrashRecord],
    pub hangs: &'a [String],
    pub boot_loop: bool,
    /// Why the boot after a crash never became ready, when that made the loop.
    pub stalled_after_crash: Option<&'a str>,
    /// Ready-to-crash times (ms) of the loop's boots that crashed after ready.
    pub loop_after_ready_ms: &'a [u64],
    pub recovery: Option<&'a RecoveryRecord>,
}

/// Applies the gates and expectations to what was observed; `Some(reason)` fails.
pub(crate) fn judge(m: &Observed, scenario: &Scenario) -> Option<String> {
    let gates = &scenario.gates;
    let expect = scenario.expect;
    let first_crash = m.crashes.first().map(|c| c.title.as_str());
    let no_crash = gates
        .no_crash
        .unwrap_or(!matches!(expect, Some(Expect::Crash | Expect::BootLoop)));
    let no_hang = gates.no_hang.unwrap_or(expect != Some(Expect::Hang));
    let no_boot_loop = gates
        .no_boot_loop
        .unwrap_or(expect != Some(Expect::BootLoop));
    let drivers_loaded = gates
        .drivers_loaded
        .unwrap_or(expect != Some(Expect::DriverNotLoaded));
    let not_loaded = m.boots.iter().find_map(|b| {
        let drivers = b.drivers.as_ref()?;
        let missing = &drivers.missing;
        // The guest's own reason (Windows: service state, SCM and Code Integrity
        // events), when it gave one.
        let why: Vec<String> = drivers
            .reasons
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "driver {} was not loaded at boot {} (installed to load at every boot; the guest did not load it: {}, and `bootgate doctor --image` checks that the image loads installed drivers at boot)",
                missing.join(", "),
                b.index,
                if why.is_empty() {
                    "its console log says why".to_string()
                } else {
                    why.join("; ")
                }
            )
        })
    });
    let slow_boot = gates.boot_time_limit().and_then(|limit| {
        m.boots
            .iter()
            .find(|b| {
                b.ready_ms
                    .is_some_and(|ms| Duration::from_millis(ms) > limit)
            })
            .map(|boot| {
                format!(
                    "gate max_boot_time: boot {} took {}, over the limit of {}",
                    boot.index,
                    human_duration(Duration::from_millis(boot.ready_ms.unwrap_or_default())),
                    human_duration(limit)
                )
            })
    });
    if let Some(expect) = expect {
        let seen = match expect {
            Expect::Crash => !m.crashes.is_empty(),
            Expect::Hang => !m.hangs.is_empty(),
            Expect::BootLoop => m.boot_loop,
            Expect::SlowBoot => slow_boot.is_some(),
            Expect::DriverNotLoaded => not_loaded.is_some(),
        };
        if !seen {
            return Some(format!(
                "expected a {} but none happened{}",
                expect.as_str().replace('_', " "),
                first_crash.map_or_else(String::new, |t| format!(" (saw a crash: {t})"))
            ));
        }
        if let (Some(want), Some(title)) = (&scenario.expect_title, first_crash) {
            if !title.contains(want.as_str()) {
                return Some(format!(
                    "expected a crash titled like {want:?}, saw {title:?}"
                ));
            }
        }
    }
    if no_boot_loop && m.boot_loop {
        return Some(match m.stalled_after_crash {
            Some(why) => format!(
                "boot loop: after the crash ({}) the guest did not come back: {why}",
                first_crash.unwrap_or("crash")
            ),
            None if m.loop_after_ready_ms.is_empty() => format!(
                "boot loop: {} consecutive boots crashed before ready: {}",
                scenario.boot_loop_boots,
                first_crash.unwrap_or("crash")
            ),
            None => format!(
                "boot loop: {} consecutive boots crashed ({} of them {} after ready): {}",
                scenario.boot_loop_boots,
                m.loop_after_ready_ms.len(),
                after_ready_span(m.loop_after_ready_ms),
                first_crash.unwrap_or("crash")
            ),
        });
    }
    if no_crash {
        if let Some(title) = first_crash {
            return Some(format!("crash: {title}"));
        }
    }
    if no_hang {
        if let Some(hang) = m.hangs.first() {
            return Some(format!("hang: {hang}"));
        }
    }
    if let Some(limit) = gates.recovers_within {
        if !m.crashes.is_empty() {
            match m.recovery {
                Some(r) if r.boots <= limit => {}
                Some(r) => {
                    return Some(format!(
                        "gate recovers_within: recovered after {} boots, over the limit of {limit}",
                        r.boots
                    ))
                }
                None => {
                    return Some(format!(
                        "gate recovers_within: no ready boot after the crash (limit {limit} boots)"
                    ))
                }
            }
        }
    }
    if expect != Some(Expect::SlowBoot) {
        if let Some(slow) = slow_boot {
            return Some(slow);
        }
    }
    if drivers_loaded {
        if let Some(why) = not_loaded {
            return Some(why);
        }
    }
    None
}

/// Least margin past the latest ready-to-crash time seen, for a crash that comes a
/// little later at the next boot (it does not come at the same point every time).
const SETTLE_MARGIN: Duration = Duration::from_secs(5);

/// The settle window a boot after a crash must hold past ready: the scenario's
/// `configured` one, stretched to outlast the longest ready-to-crash time seen in a
/// boot after the first crash by half of it again (at least [`SETTLE_MARGIN`]),
/// and never over [`MAX_RECOVERY_SETTLE`].
pub(crate) fn settle_window(
    configured: Duration,
    longest_after_ready: Option<Duration>,
) -> Duration {
    let outlast =
        longest_after_ready.map_or(Duration::ZERO, |late| late + (late / 2).max(SETTLE_MARGIN));
    configured.max(outlast).min(MAX_RECOVERY_SETTLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::BootOutcome;
    use crate::suite::{Gates, Scenario, DEFAULT_BOOT_LOOP_BOOTS};
    use crate::testing::records;

    fn scenario(expect: Option<Expect>, gates: Gates) -> Scenario {
        Scenario {
            name: "s".into(),
            description: None,
            steps: Vec::new(),
            gates,
            expect,
            expect_title: None,
            boot_loop_boots: DEFAULT_BOOT_LOOP_BOOTS,
            recovery_settle: crate::suite::DEFAULT_RECOVERY_SETTLE,
            cold_boot: false,
            ignore: false,
        }
    }

    fn boot(index: u32, ready_ms: Option<u64>) -> BootRecord {
        let outcome = if ready_ms.is_some() {
            BootOutcome::Ready
        } else {
            BootOutcome::Crash
        };
        records::boot(index, outcome, ready_ms)
    }

    fn crash(title: &str) -> CrashRecord {
        records::crash(1, title)
    }

    const TITLE: &str = "BUG: unable to handle page fault in sensor_match_fields";

    #[test]
    fn clean_run_passes_and_unexpected_crash_fails_with_its_title() {
        let boots = [boot(1, Some(4000))];
        let clean = Observed {
            boots: &boots,
            crashes: &[],
            hangs: &[],
            boot_loop: false,
            stalled_after_crash: None,
            loop_after_ready_ms: &[],
            recovery: None,
        };
        assert_eq!(judge(&clean, &scenario(None, Gates::default())), None);
        let crashes = [crash(TITLE)];
        let crashed = Observed {
            crashes: &crashes,
            ..clean
        };
        let reason = judge(&crashed, &scenario(None, Gates::default())).unwrap();
        assert_eq!(reason, format!("crash: {TITLE}"));
    }

    #[test]
    fn a_guest_stuck_after_a_crash_is_a_boot_loop() {
        let boots = [boot(1, Some(4000)), boot(2, None)];
        let crashes = [crash(TITLE)];
        let stuck = Observed {
            boots: &boots,
            crashes: &crashes,
            hangs: &[],
            boot_loop: true,
            stalled_after_crash: Some("boot 2 did not reach ready within 30s"),
            loop_after_ready_ms: &[],
            recovery: None,
        };
        let reason = judge(&stuck, &scenario(None, Gates::default())).unwrap();
        assert!(
            reason.starts_with("boot loop: after the crash") && reason.contains("boot 2 did not"),
            "{reason}"
        );
        assert_eq!(
            judge(&stuck, &scenario(Some(Expect::BootLoop), Gates::default())),
            None
        );
    }

    #[test]
    fn expected_failures_pass_only_when_seen() {
        let boots = [
            boot(1, Some(4000)),
            boot(2, None),
            boot(3, None),
            boot(4, None),
        ];
        let crashes = [crash(TITLE)];
        let looped = Observed {
            boots: &boots,
            crashes: &crashes,
            hangs: &[],
            boot_loop: true,
            stalled_after_crash: None,
            loop_after_ready_ms: &[],
            recovery: None,
        };
        assert_eq!(
            judge(&looped, &scenario(Some(Expect::BootLoop), Gates::default())),
            None
        );
        // A boot loop is still a failure where only a crash was expected.
        let reason = judge(&looped, &scenario(Some(Expect::Crash), Gates::default())).unwrap();
        assert!(reason.starts_with("boot loop"), "{reason}");
        let clean = Observed {
            boots: &boots[..1],
            crashes: &[],
            hangs: &[],
            boot_loop: false,
            stalled_after_crash: None,
            loop_after_ready_ms: &[],
            recovery: None,
        };
        let reason = judge(&clean, &scenario(Some(Expect::Hang), Gates::default())).unwrap();
        assert!(reason.contains("expected a hang"), "{reason}");
    }

    #[test]
    fn expect_title_must_match() {
        let boots = [boot(1, Some(4000))];
        let crashes = [crash(TITLE)];
        let observed = Observed {
            boots: &boots,
            crashes: &crashes,
            hangs: &[],
            boot_loop: false,
            stalled_after_crash: None,
            loop_after_ready_ms: &[],
            recovery: None,
        };
        let mut s = scenario(Some(Expect::Crash), Gates::default());
        s.expect_title = Some("sensor_match_fields".into());
        assert_eq!(judge(&observed, &s), None);
        s.expect_title = Some("other_function".into());
        assert!(judge(&observed, &s).unwrap().contains("other_function"));
    }

    #[test]
    fn recovery_gate_counts_boots() {
        let boots = [
            boot(1, Some(4000)),
            boot(2, None),
            boot(3, None),
            boot(4, Some(5000)),
        ];
        let crashes = [crash(TITLE)];
        let recovery = RecoveryRecord {
            boots: 3,
            seconds: 12.0,
            ready_boot: 4,
            how: RECOVERED_BY_ITSELF.into(),
            settled_s: Some(20.0),
        };
        let gates = Gates {
            recovers_within: Some(3),
            ..Gates::default()
        };
        let observed = Observed {
            boots: &boots,
            crashes: &crashes,
            hangs: &[],
            boot_loop: false,
            stalled_after_crash: None,
            loop_after_ready_ms: &[],
            recovery: Some(&recovery),
        };
        assert_eq!(
            judge(&observed, &scenario(Some(Expect::Crash), gates.clone())),
            None
        );
        let tight = Gates {
            recovers_within: Some(2),
            ..Gates::default()
        };
        assert!(judge(&observed, &scenario(Some(Expect::Crash), tight))
            .unwrap()
            .contains("recovers_within"));
        let never = Observed {
            recovery: None,
            ..observed
        };
        assert!(judge(&never, &scenario(Some(Expect::Crash), gates))
            .unwrap()
            .contains("no ready boot"));
    }

    #[test]
    fn boot_time_gate_and_its_negative_test() {
        let boots = [boot(1, Some(4000)), boot(2, Some(19_000))];
        let observed = Observed {
            boots: &boots,
            crashes: &[],
            hangs: &[],
            boot_loop: false,
            stalled_after_crash: None,
            loop_after_ready_ms: &[],
            recovery: None,
        };
        let gates = Gates {
            max_boot_ms: Some(12_000),
            ..Gates::default()
        };
        let reason = judge(&observed, &scenario(None, gates.clone())).unwrap();
        assert!(reason.contains("boot 2 took 19.0 s"), "{reason}");
        assert_eq!(
            judge(&observed, &scenario(Some(Expect::SlowBoot), gates)),
            None
        );
        let fast = Observed {
            boots: &boots[..1],
            ..observed
        };
        let gates = Gates {
            max_boot_ms: Some(12_000),
            ..Gates::default()
        };
        assert!(judge(&fast, &scenario(Some(Expect::SlowBoot), gates))
            .unwrap()
            .contains("expected a slow boot"));
    }

    #[test]
    fn hangs_fail_unless_expected_or_allowed() {
        let boots = [boot(1, Some(4000))];
        let hangs = ["boot 2 did not reach ready".to_string()];
        let observed = Observed {
            boots: &boots,
            crashes: &[],
            hangs: &hangs,
            boot_loop: false,
            stalled_after_crash: None,
            loop_after_ready_ms: &[],
            recovery: None,
        };
        assert!(judge(&observed, &scenario(None, Gates::default()))
            .unwrap()
            .starts_with("hang:"));
        assert_eq!(
            judge(&observed, &scenario(Some(Expect::Hang), Gates::default())),
            None
        );
        let allowed = Gates {
            no_hang: Some(false),
            ..Gates::default()
        };
        assert_eq!(judge(&observed, &scenario(None, allowed)), None);
    }

    #[test]
    fn the_settle_window_outlasts_the_latest_crash_after_ready_within_its_maximum() {
        let secs = Duration::from_secs;
        let default = crate::suite::DEFAULT_RECOVERY_SETTLE;
        assert_eq!(settle_window(default, None), default);
        // A crash 4 s after ready is inside the default: the default stands.
        assert_eq!(settle_window(default, Some(secs(4))), default);
        // One 18 s after ready: 18 s plus half of it again.
        assert_eq!(settle_window(default, Some(secs(18))), secs(27));
        // A short window gets at least the 5 s margin past what was seen.
        assert_eq!(settle_window(secs(2), Some(secs(4))), secs(9));
        assert_eq!(settle_window(secs(0), None), secs(0));
        assert_eq!(
            settle_window(default, Some(secs(3600))),
            MAX_RECOVERY_SETTLE
        );
    }

    #[test]
    fn a_loop_of_boots_that_crash_after_ready_says_so_and_how_late() {
        assert_eq!(after_ready_span(&[5_100, 5_140]), "5.1 s");
        assert_eq!(after_ready_span(&[4_900, 5_300]), "4.9-5.3 s");
        let boots = [
            boot(1, Some(100)),
            boot(2, Some(9_000)),
            boot(3, Some(9_100)),
        ];
        let crashes = [crash(TITLE), crash(TITLE), crash(TITLE)];
        let observed = Observed {
            boots: &boots,
            crashes: &crashes,
            hangs: &[],
            boot_loop: true,
            stalled_after_crash: None,
            loop_after_ready_ms: &[4_900, 5_300],
            recovery: None,
        };
        let reason = judge(&observed, &scenario(None, Gates::default())).unwrap();
        assert_eq!(
            reason,
            format!(
                "boot loop: 3 consecutive boots crashed (2 of them 4.9-5.3 s after ready): {TITLE}"
            )
        );
        assert_eq!(
            judge(
                &observed,
                &scenario(Some(Expect::BootLoop), Gates::default())
            ),
            None
        );
    }
}
