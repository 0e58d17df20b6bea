//! The crash-capture model on the real demo guest: the path every guest shares, a
//! reset during boot with no panic event and no ready (docs/reliability.md). The
//! Windows paths (hv-crash, GUEST_CRASHLOADED) cannot run here (no Windows image
//! can exist on these machines): they are replayed from QEMU 7.2's event sequences
//! in `detect::boot_watch` and `runner::scenario::capture` unit tests.

use serde_json::Value;

use crate::common::*;

/// A boot-start driver that calls `emergency_restart()` in its init resets the
/// machine before ready without a panic: QEMU reports only RESET (reason
/// guest-reset). Each such boot is a crashing boot named "reset", the guest's own
/// reset begins the next boot, and `boot_loop_boots` of them in a row are a boot
/// loop: verdict fail.
#[test]
fn reset_during_boot_is_a_crashing_boot_and_loops() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/demo/drivers/reset_init"
    );
    let suite = write(
        dir.path(),
        "suite.toml",
        &format!(
            r#"[suite]
name = "resets"
image = "demo"

[driver.reset_init]
source = {source:?}

[[scenario]]
name = "reset-at-boot"
boot_loop_boots = 2
steps = [
  {{ install_driver = {{ driver = "reset_init" }} }},
  {{ reboot = {{}} }},
  {{ exec = {{ run = "true" }} }},
]
"#
        ),
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &["--allow-outside-paths"]);
    let run = run_json(&out_dir);
    let s = scenario(&run, "resets/reset-at-boot");
    assert_eq!(out.status.code(), Some(1), "{s:#}");
    assert_eq!(s["verdict"], "fail", "{s:#}");
    assert_eq!(s["boot_loop"], true, "{s:#}");
    let outcomes = boot_outcomes(s);
    assert_eq!(outcomes, ["ready", "crash", "crash"], "{s:#}");
    let crashes = s["crashes"].as_array().unwrap();
    assert_eq!(crashes.len(), 2, "one crash per resetting boot: {s:#}");
    for (crash, boot) in crashes.iter().zip([2, 3]) {
        assert_eq!(crash["source"], "reset", "{crash:#}");
        assert_eq!(crash["signals"], serde_json::json!(["reset"]));
        assert_eq!(crash["kind"], "reset");
        assert_eq!(crash["boot_index"], boot);
        assert_eq!(crash["capture"], "reset", "{crash:#}");
        assert_no_host_dump_of_the_next_boot(crash);
    }
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("boot loop: 2 consecutive boots crashed before ready")
            && reason.contains("unexpected guest reset"),
        "{reason}"
    );
    // The module really ran: its line is in the console of the resetting boots.
    let console =
        std::fs::read_to_string(out_dir.join("latest/resets/reset-at-boot/console.log")).unwrap();
    assert!(
        console.contains("reset_init: resetting the machine from init"),
        "{console}"
    );
    assert_no_vm_left(&run);
}

/// A reset crash leaves no memory dump: by the time QEMU reports the RESET the
/// crashed boot's memory is gone, and a dump would show the next boot.
fn assert_no_host_dump_of_the_next_boot(crash: &Value) {
    assert!(crash["dump"].is_null(), "{crash:#}");
    let note = crash["dump_note"].as_str().unwrap_or_default();
    assert!(note.contains("reset"), "{crash:#}");
}
