//! Evidence a reviewer can trust: screenshots and memory dumps of a real crash,
//! manifest verification, reruns that reproduce the crash, and hostile guest output
//! kept inert in every report.

use std::path::Path;

use crate::common::*;

fn suite_text() -> String {
    let demo = DEMO_SUITES;
    format!(
        r#"[suite]
name = "ev"
image = "demo"

[driver.demo_sensor]
source = "{demo}/drivers/demo_sensor"
content_file = "demo_sensor.content"
reload = "echo 1 > /sys/module/demo_sensor/parameters/reload"

[[scenario]]
name = "cf291"
expect = "boot_loop"
boot_loop_boots = 2
steps = [
  {{ install_driver = {{ driver = "demo_sensor", load_now = true }} }},
  {{ apply_content = {{ driver = "demo_sensor", file = "{demo}/content/cf291-21-fields.content", reload = true }} }},
]

[[scenario]]
name = "hostile"
steps = [
  {{ exec = {{ run = "printf '%s\n' '<script>alert(1)</script>' '\"><img src=x onerror=alert(1)>' | tee /dev/console; exit 1" }} }},
]
"#
    )
}

#[test]
fn crash_evidence_verify_show_and_rerun() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(dir.path(), "suite.toml", &suite_text());
    let out_dir = dir.path().join("results");
    // The suite names the demo's driver and content where they are; the rerun
    // below must be given that permission again (run.json cannot grant it).
    let out = run_tcg(&suite, &out_dir, &["--allow-outside-paths"]);
    assert_eq!(out.status.code(), Some(1), "the hostile scenario fails");
    let run_dir = std::fs::canonicalize(out_dir.join("latest")).unwrap();
    let record = run_json(&out_dir);
    let cf291 = scenario(&record, "ev/cf291");
    assert_eq!(cf291["verdict"], "pass");

    // The first crash: a PNG screenshot and an ELF core of the paused guest.
    let first = &cf291["crashes"][0];
    let shot = run_dir.join(first["screenshot"].as_str().unwrap());
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    assert_eq!(first["dump_format"], "elf");
    let dump = run_dir.join(first["dump"].as_str().unwrap());
    let mut header = [0u8; 18];
    std::io::Read::read_exact(&mut std::fs::File::open(&dump).unwrap(), &mut header).unwrap();
    assert_eq!(&header[..4], b"\x7fELF", "an ELF file");
    assert_eq!(
        u16::from_le_bytes([header[16], header[17]]),
        4,
        "e_type CORE"
    );
    // Later crashes of the same loop: screenshots, no second dump (policy "first").
    let second = &cf291["crashes"][1];
    assert!(second["screenshot"].is_string());
    assert!(second["dump"].is_null());
    assert!(second["dump_note"].as_str().unwrap().contains("first"));

    // A fresh run verifies; one changed byte is named.
    let verify = run(&["verify", run_dir.to_str().unwrap()]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let mut bytes = std::fs::read(&shot).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&shot, bytes).unwrap();
    let verify = run(&["verify", run_dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1));
    let rel = first["screenshot"].as_str().unwrap();
    assert!(stdout.contains(&format!("ALTERED   {rel}")), "{stdout}");

    // show names the failure; rerun reproduces the crash with the same title.
    let show = run(&["show", run_dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("FAIL  ev/hostile") && text.contains("expected exit 0"),
        "{text}"
    );
    let refused = run(&["rerun", run_dir.to_str().unwrap(), "ev/cf291"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-outside-paths"));
    let rerun = run(&[
        "rerun",
        run_dir.to_str().unwrap(),
        "ev/cf291",
        "--allow-outside-paths",
    ]);
    assert_eq!(rerun.status.code(), Some(0));
    let again = run_json(&out_dir);
    assert_ne!(again["run_id"], record["run_id"], "a new run");
    assert_eq!(again["scenarios"].as_array().unwrap().len(), 1);
    assert_eq!(
        scenario(&again, "ev/cf291")["crashes"][0]["title"],
        first["title"]
    );

    // An input that changed makes rerun refuse, naming it.
    std::fs::write(&suite, suite_text() + "\n# edited\n").unwrap();
    let refused = run(&[
        "rerun",
        run_dir.to_str().unwrap(),
        "ev/cf291",
        "--allow-outside-paths",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(suite.to_str().unwrap()) && stderr.contains("changed"),
        "{stderr}"
    );

    assert_no_vm_left(&record);
    assert_hostile_output_is_inert(&run_dir);
}

/// The hostile lines reached the console and every report, never as markup.
fn assert_hostile_output_is_inert(run_dir: &Path) {
    let console = std::fs::read_to_string(run_dir.join("ev/hostile/console.log")).unwrap();
    assert!(
        console.contains("<script>alert(1)</script>"),
        "the guest really printed it"
    );
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    assert!(
        !junit.contains("<script>") && !junit.contains("<img"),
        "{junit}"
    );
    assert!(
        junit.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{junit}"
    );
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(!html.contains("<script>alert(1)") && !html.contains("<img src=x"));
    assert!(
        html.contains("&lt;script&gt;alert(1)"),
        "the detail is shown, escaped"
    );
}
