//! Drivers and content updates through the real guest: the demo suite's story end to
//! end, and an unexpected crash reported as a failure with its title and excerpt.

use serde_json::Value;

use crate::common::*;

const TITLE: &str = "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]";

fn boots(s: &Value) -> Vec<&str> {
    s["boots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["outcome"].as_str().unwrap())
        .collect()
}

/// The README's demo: every scenario's verdict, and the evidence behind it.
#[test]
fn demo_suite_every_verdict_as_described() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("results");
    let suite = std::path::Path::new(DEMO_SUITES);
    let out = run_tcg(suite, &out_dir, &[]);
    let run = run_json(&out_dir);
    let summary = verdicts(&run);
    assert_eq!(out.status.code(), Some(0), "{summary:?}");
    assert_eq!(run["summary"]["pass"], 8, "{summary:?}");

    let good = scenario(&run, "demo/good-content-survives-reboots");
    assert_eq!(boots(good), ["ready"; 4]);
    assert!(good["crashes"].as_array().unwrap().is_empty());

    // The 21-field content: a crash on live apply naming the interpreter, then a crash
    // at every boot.
    let cf291 = scenario(&run, "demo/cf291-crashes-then-boot-loops");
    assert_eq!(cf291["boot_loop"], true);
    assert_eq!(boots(cf291), ["ready", "crash", "crash", "crash"]);
    let crashes = cf291["crashes"].as_array().unwrap();
    assert_eq!(crashes.len(), 4, "the live crash and three boot crashes");
    for crash in crashes {
        assert_eq!(crash["title"], TITLE, "same bug, same title at every crash");
        assert_eq!(crash["source"], "console");
        assert_eq!(crash["signals"], serde_json::json!(["pvpanic", "console"]));
        let excerpt = crash["excerpt"].as_array().unwrap();
        assert!(excerpt.iter().any(|l| l
            .as_str()
            .unwrap()
            .contains("RIP: 0010:sensor_match_fields")));
    }
    assert_eq!(
        cf291["boots"][1]["crash"], TITLE,
        "each boot names the crash that ended it"
    );
    let step = &cf291["steps"].as_array().unwrap()[3];
    assert_eq!(step["kind"], "apply_content");
    assert_eq!(step["outcome"], "crash");

    let fixed = scenario(&run, "demo/cf291-fixed-sensor-rejects");
    assert!(fixed["crashes"].as_array().unwrap().is_empty());
    assert_eq!(boots(fixed), ["ready", "ready"]);

    let guarded = scenario(&run, "demo/cf291-guarded-sensor-recovers");
    assert_eq!(guarded["boot_loop"], false);
    assert_eq!(guarded["recovery"]["boots"], 3, "{guarded}");
    assert_eq!(boots(guarded), ["ready", "crash", "crash", "ready"]);

    let rescue = scenario(&run, "demo/cf291-rescue-boot-removes-content");
    assert_eq!(rescue["boot_loop"], true);
    assert_eq!(boots(rescue), ["ready", "crash", "crash", "ready", "ready"]);
    assert_eq!(
        rescue["boots"][3]["extra_append"], "bootgate.safe=1",
        "the rescue boot"
    );
    assert_eq!(
        rescue["recovery"]["ready_boot"], 5,
        "recovery is the normal boot after it"
    );
    assert!(out_dir
        .join("latest/demo/cf291-rescue-boot-removes-content/console-2.log")
        .is_file());

    let slow = scenario(&run, "demo/slow-init-fails-boot-gate");
    assert!(
        slow["boots"][1]["ready_ms"].as_u64().unwrap() > 12_000,
        "{slow}"
    );

    let hang = scenario(&run, "demo/hang-init-is-a-hang");
    assert_eq!(boots(hang), ["ready", "hang"]);
    assert!(
        hang["hangs"][0].as_str().unwrap().contains("hang_init"),
        "{hang}"
    );

    assert_report_shows_the_story(&out_dir, &run);
    assert_no_vm_left(&run);
}

/// report.html as a reviewer reads it: a timeline per scenario, the crash card of the
/// 21-field content with its screenshot and dump links, every input's hash; and it
/// regenerates from run.json without breaking verification.
fn assert_report_shows_the_story(out_dir: &std::path::Path, run: &Value) {
    let run_dir = std::fs::canonicalize(out_dir.join("latest")).unwrap();
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 8, "one timeline per scenario");
    let card_start = html
        .find("cf291-crashes-then-boot-loops/crash-1.kdump")
        .expect("a link to the dump");
    let card = &html[card_start.saturating_sub(4000)..(card_start + 4000).min(html.len())];
    assert!(card.contains(TITLE), "the crash card names the crash");
    assert!(
        html.contains("cf291-crashes-then-boot-loops/crash-1.png"),
        "a link to the screenshot"
    );
    assert!(
        html.contains("src=\"data:image/png;base64,"),
        "an embedded thumbnail"
    );
    assert!(
        html.contains("cf291-crashes-then-boot-loops/console.log"),
        "a link to the console"
    );
    for input in run["inputs"].as_array().unwrap() {
        let sha = input["sha256"].as_str().unwrap();
        assert!(html.contains(sha), "input hash {sha} in the report");
    }
    for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(external), "no external assets: {external}");
    }
    let verify = crate::common::run(&["verify", run_dir.to_str().unwrap()]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    std::fs::remove_file(run_dir.join("report.html")).unwrap();
    let report = crate::common::run(&["report", run_dir.to_str().unwrap()]);
    assert_eq!(report.status.code(), Some(0));
    assert!(run_dir.join("report.html").is_file());
    let verify = crate::common::run(&["verify", run_dir.to_str().unwrap()]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// A crash nobody expected: `fail`, exit 1, the title and excerpt in run.json and in
/// the JUnit failure.
#[test]
fn unexpected_crash_fails_with_title_and_excerpt() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/demo/drivers/null_deref"
    );
    let suite = write(
        dir.path(),
        "suite.toml",
        &format!(
            "[suite]\nname = \"bad\"\nimage = \"demo\"\n\n[driver.null_deref]\nsource = {source:?}\n\n[[scenario]]\nname = \"null-deref\"\nboot_loop_boots = 2\nsteps = [\n  {{ install_driver = {{ driver = \"null_deref\", load_now = true }} }},\n  {{ exec = {{ run = \"true\" }} }},\n]\n"
        ),
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &["--allow-outside-paths"]);
    assert_eq!(out.status.code(), Some(1));
    let run = run_json(&out_dir);
    let s = scenario(&run, "bad/null-deref");
    assert_eq!(s["verdict"], "fail");
    let title = "BUG: kernel NULL pointer dereference in null_deref_trigger [null_deref]";
    assert_eq!(
        s["reason"],
        format!("boot loop: 2 consecutive boots crashed before ready: {title}")
    );
    assert_eq!(s["crashes"][0]["title"], title);
    assert!(!s["crashes"][0]["excerpt"].as_array().unwrap().is_empty());
    assert_eq!(s["steps"][2]["outcome"], "skipped");
    let junit = std::fs::read_to_string(out_dir.join("latest/junit.xml")).unwrap();
    assert!(junit.contains(&format!("message=\"{title}\"")), "{junit}");
    assert!(
        junit.contains("RIP: 0010:null_deref_trigger"),
        "the excerpt is the failure text: {junit}"
    );
    assert_no_vm_left(&run);
}

/// A crash after which the machine never comes back (here a boot-start driver hangs
/// the next boot; on Windows, Automatic Repair) is a boot loop: the stalled boot is
/// in the boots list with a screenshot, and `expect = "boot_loop"` passes on it.
#[test]
fn guest_stuck_after_a_crash_is_a_boot_loop() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/demo/drivers/hang_init"
    );
    let suite = write(
        dir.path(),
        "suite.toml",
        &format!(
            r#"[suite]
name = "stuck"
image = "demo"
boot_timeout = "20s"

[driver.hang_init]
source = {source:?}

[[scenario]]
name = "crash-then-stuck"
steps = [
  {{ install_driver = {{ driver = "hang_init" }} }},
  {{ exec = {{ run = "echo c > /proc/sysrq-trigger" }} }},
]

[[scenario]]
name = "expected"
expect = "boot_loop"
steps = [
  {{ install_driver = {{ driver = "hang_init" }} }},
  {{ exec = {{ run = "echo c > /proc/sysrq-trigger" }} }},
]
"#
        ),
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &["--allow-outside-paths"]);
    assert_eq!(out.status.code(), Some(1));
    let run = run_json(&out_dir);
    let s = scenario(&run, "stuck/crash-then-stuck");
    assert_eq!(s["verdict"], "fail", "{s:#}");
    assert_eq!(s["boot_loop"], true);
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("boot loop: after the crash (") && reason.contains("did not"),
        "{reason}"
    );
    let outcomes = boot_outcomes(s);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    // The crash came after boot 1 was ready (the exec step), so boot 1 stays ready
    // and carries the crash.
    assert!(s["boots"][0]["crash"].is_string(), "{s:#}");
    assert!(matches!(outcomes[1], "timeout" | "hang"), "{outcomes:?}");
    assert!(
        s["hangs"].as_array().unwrap().is_empty(),
        "counted as the loop"
    );
    assert!(
        !s["hang_screenshots"].as_array().unwrap().is_empty(),
        "the stuck screen is kept"
    );
    assert_eq!(scenario(&run, "stuck/expected")["verdict"], "pass");
    assert_no_vm_left(&run);
}
