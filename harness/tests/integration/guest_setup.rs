//! Setup trouble in the guest is the image's or the user's, never the driver's, and
//! it says what to do: a missing guest folder is created, a failing
//! `guest-shutdown` is an `error` within seconds (or falls back as the manifest
//! says), a module for another kernel is a build problem, and a driver the guest
//! did not load at a boot is a `fail` with that reason. All on the real demo guest
//! with the real demo_sensor module.

use std::path::Path;

use crate::common::*;

/// A demo image manifest in `dir` with `edit` applied to its text.
fn demo_manifest_with(dir: &Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    image_variant(demo_manifest(), dir, |text| {
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit changed the manifest");
        edited
    })
}

/// A guest shutdown command that fails the way systemd's does without D-Bus: after
/// a while, with an error.
const FAILING_SHUTDOWN: &str = r#"{ exec = { run = "printf '#!/bin/sh\\nsleep 3\\necho Failed to connect to bus >&2\\nexit 1\\n' > /sbin/shutdown && chmod +x /sbin/shutdown" } }"#;

fn suite(dir: &Path, image: &Path, scenarios: &str) -> std::path::PathBuf {
    let sensor = format!("{DEMO_SUITES}/drivers/demo_sensor");
    write(
        dir,
        "suite.toml",
        &format!(
            "[suite]\nname = \"setup\"\nimage = {:?}\n\n[driver.demo_sensor]\nsource = {sensor:?}\ncontent_file = \"demo_sensor.content\"\n\n[driver.junk]\nmodule = \"junk.ko\"\n\n{scenarios}",
            image.display().to_string()
        ),
    )
}

#[test]
fn setup_trouble_is_error_with_what_to_do_and_unloaded_drivers_fail() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let image = demo_manifest_with(dir.path(), |t| {
        t.replace(
            "content_dir = \"/system/content\"",
            "content_dir = \"/system/fresh/content/deep\"",
        )
    });
    // Not a module at all: the guest's insmod says "invalid module format".
    std::fs::write(dir.path().join("junk.ko"), vec![0x5a; 4096]).unwrap();
    std::fs::copy(
        format!("{DEMO_SUITES}/content/good.content"),
        dir.path().join("good.content"),
    )
    .unwrap();
    let scenarios = format!(
        r#"[[scenario]]
name = "missing-folder-is-created"
steps = [
  {{ apply_content = {{ driver = "demo_sensor", file = "good.content" }} }},
  {{ exec = {{ run = "test -s /system/fresh/content/deep/demo_sensor.content" }} }},
]

[[scenario]]
name = "shutdown-fails"
steps = [{FAILING_SHUTDOWN}, {{ reboot = {{ times = 1 }} }}]

[[scenario]]
name = "driver-gone-at-boot"
steps = [
  {{ install_driver = {{ driver = "demo_sensor", load_now = true }} }},
  {{ exec = {{ run = "rm /system/drivers/demo_sensor.ko && sync" }} }},
  {{ reboot = {{ times = 1 }} }},
]

[[scenario]]
name = "driver-gone-at-boot-expected"
expect = "driver_not_loaded"
steps = [
  {{ install_driver = {{ driver = "demo_sensor", load_now = true }} }},
  {{ exec = {{ run = "rm /system/drivers/demo_sensor.ko && sync" }} }},
  {{ reboot = {{ times = 1 }} }},
]

[[scenario]]
name = "driver-loaded-at-every-boot"
steps = [
  {{ install_driver = {{ driver = "demo_sensor", load_now = true }} }},
  {{ reboot = {{ times = 2 }} }},
]

[[scenario]]
name = "not-a-module"
steps = [{{ install_driver = {{ driver = "junk", load_now = true }} }}]
"#
    );
    let suite = suite(dir.path(), &image, &scenarios);
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &["--allow-outside-paths"]);
    let run = run_json(&out_dir);
    assert_eq!(out.status.code(), Some(1), "some scenario failed");

    let s = scenario(&run, "setup/missing-folder-is-created");
    assert_eq!(s["verdict"], "pass", "{s:#}");

    let s = scenario(&run, "setup/shutdown-fails");
    assert_eq!(s["verdict"], "error", "{s:#}");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("guest-shutdown failed")
            && reason.contains("failed to shutdown")
            && reason.contains("guest.reboot"),
        "{reason}"
    );
    let reboot = &s["steps"][2];
    assert_eq!(reboot["kind"], "reboot");
    let took = reboot["duration_ms"].as_u64().unwrap();
    assert!(
        took < 30_000,
        "the agent's error ends the reboot at once, not after the 60 s wait: {took} ms"
    );
    assert!(
        s["hangs"].as_array().unwrap().is_empty(),
        "not a hang: {s:#}"
    );

    let s = scenario(&run, "setup/driver-gone-at-boot");
    assert_eq!(s["verdict"], "fail", "{s:#}");
    assert_eq!(
        s["reason"].as_str().unwrap(),
        "driver demo_sensor was not loaded at boot 2 (installed to load at every boot; the guest did not load it: its console log says why, and `bootgate doctor --image` checks that the image loads installed drivers at boot)"
    );
    assert_eq!(s["boots"][1]["drivers"]["missing"][0], "demo_sensor");
    assert_eq!(
        scenario(&run, "setup/driver-gone-at-boot-expected")["verdict"],
        "pass"
    );

    let s = scenario(&run, "setup/driver-loaded-at-every-boot");
    assert_eq!(s["verdict"], "pass", "{s:#}");
    let boots = s["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 3);
    assert!(boots[0].get("drivers").is_none(), "nothing installed yet");
    for boot in &boots[1..] {
        assert_eq!(boot["drivers"]["loaded"][0], "demo_sensor", "{boot:#}");
    }

    let s = scenario(&run, "setup/not-a-module");
    assert_eq!(s["verdict"], "error", "{s:#}");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("does not match the guest's kernel")
            && reason.contains("invalid module format")
            && reason.contains("build problem"),
        "{reason}"
    );
    let terminal = String::from_utf8_lossy(&out.stderr);
    assert!(
        terminal.contains("boot 2: driver demo_sensor not loaded"),
        "{terminal}"
    );
    assert_no_vm_left(&run);
}

/// With `guest.reboot = "reset"`, a reboot the agent cannot do falls back to a
/// hard reset, and the boot says so; a module built for another kernel than the
/// manifest's `[kernel] release` is refused before any boot.
#[test]
fn reboot_falls_back_as_the_manifest_says_and_wrong_kernel_is_caught_before_boot() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let image = demo_manifest_with(dir.path(), |t| {
        t.replace(
            "safe_mode_append = ",
            "reboot = \"reset\"\nsafe_mode_append = ",
        )
    });
    std::fs::write(dir.path().join("junk.ko"), b"unused").unwrap();
    let scenarios = format!(
        "[[scenario]]\nname = \"reset-fallback\"\nsteps = [{FAILING_SHUTDOWN}, {{ reboot = {{ times = 1 }} }}, {{ exec = {{ run = \"true\" }} }}]\n"
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(
        &suite(dir.path(), &image, &scenarios),
        &out_dir,
        &["--allow-outside-paths"],
    );
    assert_eq!(out.status.code(), Some(0));
    let run = run_json(&out_dir);
    let s = scenario(&run, "setup/reset-fallback");
    let via = s["boots"][1]["reboot_via"].as_str().unwrap();
    assert!(
        via.contains("guest.reboot = \"reset\"") && via.contains("failed to shutdown"),
        "{via}"
    );

    // The same image, said to run another kernel than the module was built for.
    let other = tempfile::tempdir().unwrap();
    let image = demo_manifest_with(other.path(), |t| {
        format!("{t}\n[kernel]\nrelease = \"6.1.0-0-elsewhere\"\n")
    });
    std::fs::write(other.path().join("junk.ko"), b"unused").unwrap();
    let scenarios = "[[scenario]]\nname = \"wrong-kernel\"\nsteps = [{ install_driver = { driver = \"demo_sensor\" } }]\n";
    let out_dir = other.path().join("results");
    let out = run_tcg(
        &suite(other.path(), &image, scenarios),
        &out_dir,
        &["--allow-outside-paths"],
    );
    assert_eq!(out.status.code(), Some(3));
    let run = run_json(&out_dir);
    let s = scenario(&run, "setup/wrong-kernel");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("was built for kernel 6.")
            && reason.contains("runs 6.1.0-0-elsewhere")
            && reason.contains("build problem"),
        "{reason}"
    );
    assert!(
        s["boots"].as_array().is_none_or(|b| b.len() <= 1),
        "refused before any boot of its own: {s:#}"
    );
}
