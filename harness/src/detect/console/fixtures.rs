//! Real serial captures of the demo guest (see tests/fixtures/consoles/README.md):
//! CRLF line ends, SeaBIOS and `/init` output mixed with the kernel's, and a console
//! cut where `-action panic=pause` stopped the guest.

use super::*;

fn detect(bytes: &[u8]) -> CrashDetector {
    let mut d = CrashDetector::new();
    for line in String::from_utf8_lossy(bytes).split('\n') {
        d.feed(line);
    }
    d
}

/// The single report of an oops fixture, checked for what every one shares.
fn single_oops(bytes: &[u8], header: &str) -> ConsoleCrash {
    let d = detect(bytes);
    assert_eq!(d.reports().len(), 1, "{:#?}", d.reports());
    let crash = d.reports()[0].clone();
    assert_eq!(d.crash(), Some(&crash));
    assert_eq!(crash.class, CrashClass::Crash);
    assert!(!crash.corrupted);
    assert!(crash.excerpt[0].contains(header), "{}", crash.excerpt[0]);
    assert!(crash.excerpt[0].starts_with('['));
    // The panic that follows the oops belongs to it and ends the capture.
    assert!(crash
        .excerpt
        .last()
        .is_some_and(|l| l.ends_with("Kernel panic - not syncing: Fatal exception")));
    assert!(crash
        .excerpt
        .iter()
        .all(|l| !l.contains("bootgate:") && !l.ends_with('\r')));
    crash
}

#[test]
fn clean_boot_has_no_report() {
    let d = detect(include_bytes!(
        "../../../tests/fixtures/consoles/clean_boot.log"
    ));
    assert!(d.reports().is_empty(), "{:#?}", d.reports());
    assert!(d.crash().is_none());
}

#[test]
fn demo_sensor_live_reload_oops() {
    let crash = single_oops(
        include_bytes!("../../../tests/fixtures/consoles/demo_sensor_live_reload_oops.log"),
        "BUG: unable to handle page fault for address:",
    );
    assert_eq!(crash.kind, "BUG: unable to handle page fault");
    assert_eq!(
        crash.title,
        "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]"
    );
    assert!(crash.excerpt.iter().any(|l| l.contains(" Comm: sh ")));
}

#[test]
fn demo_sensor_boot_oops() {
    let crash = single_oops(
        include_bytes!("../../../tests/fixtures/consoles/demo_sensor_boot_oops.log"),
        "BUG: unable to handle page fault for address:",
    );
    assert_eq!(crash.kind, "BUG: unable to handle page fault");
    assert_eq!(
        crash.title,
        "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]"
    );
    assert!(crash.excerpt.iter().any(|l| l.contains(" Comm: insmod ")));
}

#[test]
fn null_deref_boot() {
    let crash = single_oops(
        include_bytes!("../../../tests/fixtures/consoles/null_deref_boot.log"),
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
    );
    assert_eq!(crash.kind, "BUG: kernel NULL pointer dereference");
    assert_eq!(
        crash.title,
        "BUG: kernel NULL pointer dereference in null_deref_trigger [null_deref]"
    );
}

#[test]
fn hang_init_soft_lockup() {
    let d = detect(include_bytes!(
        "../../../tests/fixtures/consoles/hang_init_soft_lockup.log"
    ));
    let seen: Vec<_> = d
        .reports()
        .iter()
        .map(|r| (r.kind.as_str(), r.class, r.corrupted, r.title.as_str()))
        .collect();
    let rcu = (
        "INFO: rcu detected stall",
        CrashClass::Hang,
        false,
        "INFO: rcu detected stall in hang_init_init [hang_init]",
    );
    let lockup = (
        "BUG: soft lockup",
        CrashClass::Hang,
        false,
        "BUG: soft lockup in hang_init_init [hang_init]",
    );
    // The RCU stall (at 25 s) comes before the first soft lockup (at 49 s); both
    // name the spinning init function. crash() is the first hang: the stall.
    assert_eq!(seen, [rcu, lockup, lockup, rcu, lockup]);
    assert_eq!(d.crash().map(|c| c.title.as_str()), Some(rcu.3));
    let lockup_report = d.reports().iter().find(|r| r.kind == "BUG: soft lockup");
    assert!(lockup_report
        .is_some_and(|r| r.excerpt[0]
            .ends_with("watchdog: BUG: soft lockup - CPU#0 stuck for 49s! [insmod:99]")));
}

#[test]
fn sysrq_panic() {
    let d = detect(include_bytes!(
        "../../../tests/fixtures/consoles/sysrq_panic.log"
    ));
    assert_eq!(d.reports().len(), 1, "{:#?}", d.reports());
    let crash = &d.reports()[0];
    assert_eq!(crash.kind, "Kernel panic");
    assert_eq!(crash.class, CrashClass::Crash);
    assert!(!crash.corrupted);
    assert_eq!(crash.title, "Kernel panic: sysrq triggered crash");
    assert!(crash.excerpt[0].ends_with("Kernel panic - not syncing: sysrq triggered crash"));
    assert!(crash.excerpt.iter().any(|l| l.contains(" Comm: sh ")));
}
