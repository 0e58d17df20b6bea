//! Rendering tests over a sample run with hostile guest text.

use std::path::Path;

use base64::Engine as _;

use super::cards::{embed_png, href, inside_run_folder, MAX_EMBED_BYTES};
use super::format::shell_command_lines;
use super::{render, HtmlSink};
use crate::model::record::{
    BootOutcome, BootRecord, CrashPhase, CrashRecord, FileHash, HostInfo, RecoveryRecord,
    RunRecord, ScenarioRecord, StepOutcome, StepRecord, Verdict, VmArgv,
};
use crate::model::run_file::REPORT_HTML;
use crate::model::{Event, Sink};
use crate::testing::records;
use crate::util::shell_quote;

const HOSTILE_SCRIPT: &str = "<script>alert(1)</script>";
const HOSTILE_IMG: &str = "\"><img src=x onerror=alert(1)>";
/// A valid 1x1 PNG.
const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

fn step(
    kind: &str,
    start_ms: u64,
    duration_ms: u64,
    outcome: StepOutcome,
    detail: &str,
) -> StepRecord {
    StepRecord {
        start_ms,
        duration_ms,
        ..records::step(kind, outcome, detail)
    }
}

fn boot(index: u32, start_ms: u64, outcome: BootOutcome, ready_ms: Option<u64>) -> BootRecord {
    BootRecord {
        start_ms,
        ..records::boot(index, outcome, ready_ms)
    }
}

fn scenario(name: &str, verdict: Verdict) -> ScenarioRecord {
    ScenarioRecord {
        duration_ms: 10_000,
        rerun: records::rerun("/results/run 1", &format!("demo/{name}")),
        ..records::scenario("demo", name, verdict)
    }
}

fn crash(boot_index: u32, title: &str) -> CrashRecord {
    CrashRecord {
        kind: "BUG: unable to handle page fault".into(),
        excerpt: vec![
            "[    3.1] BUG: unable to handle page fault for address: ffffd26040096000".into(),
            format!("[    3.2] {HOSTILE_SCRIPT}"),
            format!("[    3.3] {HOSTILE_IMG}"),
        ],
        detect_ms: 26,
        dump_note: Some("dump skipped: no disk space".into()),
        console: Some("console.log".into()),
        ..records::crash(boot_index, title)
    }
}

/// A run with a passing scenario, a boot loop with full crash evidence, and an
/// error; the boot-loop scenario's screenshot is written into `run_dir`.
fn sample(run_dir: &Path) -> RunRecord {
    let shot_dir = run_dir.join("demo/cf291-crashes-then-boot-loops");
    std::fs::create_dir_all(&shot_dir).expect("create scenario dir");
    let png = base64::engine::general_purpose::STANDARD
        .decode(PNG_1X1)
        .expect("decode png");
    std::fs::write(shot_dir.join("crash-1.png"), png).expect("write png");

    let mut error = scenario("image-missing", Verdict::Error);
    error.reason = Some("image demo-win not found".into());
    error.duration_ms = 0;

    let scenarios = vec![passing_scenario(), looping_scenario(), error];
    let mut run = records::run(scenarios);
    run.run_id = "20260101T000000Z-abcd".into();
    run.started_at = "2026-01-01T00:00:00Z".into();
    run.finished_at = Some("2026-01-01T00:01:05.5Z".into());
    run.command = vec!["bootgate".into(), "run".into(), "scenarios/demo".into()];
    run.settings.suites = vec!["/work/scenarios/demo/suite.toml".into()];
    run.host = HostInfo {
        hostname: "ci-7".into(),
        kernel: "Linux 6.1.0 x86_64".into(),
        cpus: 8,
    };
    run.qemu.version = Some("QEMU emulator version 7.2.22".into());
    run.qemu.accel_notice = Some("KVM never got past the BIOS; using TCG".into());
    run.qemu.argv = vec![VmArgv {
        scenario: "demo/boots-and-reboots".into(),
        argv: vec![
            "qemu-system-x86_64".into(),
            "-append".into(),
            "console=ttyS0 oops=panic".into(),
        ],
    }];
    run.inputs = vec![
        FileHash {
            path: "/cache/drivers/demo_sensor.ko".into(),
            sha256: "4a375f511eb84caeb7810e2e88ada09ecaa349ebaf8ad381d22719a803b48dd4".into(),
        },
        FileHash {
            path: "scenarios/demo/content/cf291-21-fields.content".into(),
            sha256: "426ff49716c116b15894298918cfa3598a9770b3ce3029a9543c90c81072fb97".into(),
        },
    ];
    run
}

/// Two clean boots and a step with hostile detail; one artifact link that must not
/// become a link.
fn passing_scenario() -> ScenarioRecord {
    let mut pass = scenario("boots-and-reboots", Verdict::Pass);
    pass.boots = vec![
        boot(1, 0, BootOutcome::Ready, Some(4_100)),
        boot(2, 5_000, BootOutcome::Ready, Some(4_200)),
    ];
    pass.steps = vec![
        step("boot", 0, 4_200, StepOutcome::Ok, "ready"),
        step("reboot", 4_300, 5_000, StepOutcome::Ok, "rebooted 1x"),
        step("exec", 9_400, 100, StepOutcome::Ok, HOSTILE_SCRIPT),
    ];
    pass.artifacts = vec![
        FileHash {
            path: "demo/boots-and-reboots/console.log".into(),
            sha256: "e3fff9a254db3c9279ffabe7c17edb3528066a25ab64c2d5b81fc8b2c1a38021".into(),
        },
        FileHash {
            path: "javascript:alert(1)".into(),
            sha256: "00".into(),
        },
    ];
    pass
}

/// A crash after ready, three crashes before ready (the boot loop), then a rescue
/// boot that recovers.
fn looping_scenario() -> ScenarioRecord {
    let mut looping = scenario("cf291-crashes-then-boot-loops", Verdict::Fail);
    looping.reason = Some("boot loop: 3 consecutive boots crashed".into());
    looping.duration_ms = 30_000;
    let title = "BUG: unable to handle page fault in sensor_match_fields";
    let mut b1 = boot(1, 0, BootOutcome::Ready, Some(3_500));
    b1.crash = Some(title.into());
    let mut b2 = boot(2, 8_000, BootOutcome::Crash, None);
    b2.crash = Some(title.into());
    let mut b3 = boot(3, 12_000, BootOutcome::Crash, None);
    b3.crash = Some(title.into());
    let mut b4 = boot(4, 16_000, BootOutcome::Crash, None);
    b4.crash = Some(title.into());
    let mut b5 = boot(5, 20_000, BootOutcome::Ready, Some(6_000));
    b5.extra_append = Some("demo_sensor.disable=1".into());
    looping.boots = vec![b1, b2, b3, b4, b5];
    looping.steps = vec![
        step("boot", 0, 3_600, StepOutcome::Ok, "ready"),
        step(
            "install_driver",
            3_600,
            300,
            StepOutcome::Ok,
            "demo_sensor loaded",
        ),
        step(
            "apply_content",
            3_900,
            4_000,
            StepOutcome::Crash,
            &format!("crash: {title}; {HOSTILE_IMG}"),
        ),
    ];
    looping.crashes = loop_crashes(title);
    looping.boot_loop = true;
    looping.recovery = Some(RecoveryRecord {
        boots: 4,
        seconds: 18.5,
        ready_boot: 5,
        how: "rescue boot".into(),
        settled_s: None,
    });
    looping.hangs = vec![format!("agent stopped answering {HOSTILE_SCRIPT}")];
    looping
}

/// The first crash has a screenshot in the run folder and a dump; the second's
/// screenshot is missing and its console name is hostile.
fn loop_crashes(title: &str) -> Vec<CrashRecord> {
    let mut first = crash(1, &format!("{title} {HOSTILE_SCRIPT}"));
    first.screenshot = Some("demo/cf291-crashes-then-boot-loops/crash-1.png".into());
    first.dump = Some("demo/cf291-crashes-then-boot-loops/crash 1.elf".into());
    first.dump_format = Some("elf".into());
    first.dump_note = None;
    let mut second = crash(2, title);
    second.screenshot = Some("demo/cf291-crashes-then-boot-loops/missing.png".into());
    second.console = Some(format!("x{HOSTILE_IMG}.log"));
    vec![first, second, crash(3, title), crash(4, title)]
}

fn rendered() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = sample(dir.path());
    render(&run, dir.path()).expect("render")
}

#[test]
fn report_shows_banner_counts_and_identities() {
    let html = rendered();
    assert!(html.contains(r#"<div class="banner v-fail""#), "banner");
    assert!(html.contains(">FAIL<"));
    assert!(html.contains("1 of 3 scenarios failed"));
    assert!(html.contains("20260101T000000Z-abcd"));
    assert!(html.contains("1 m 05 s") || html.contains("65.5 s"));
    // Inputs: short hashes in the summary, full ones in the table.
    assert!(html.contains("demo_sensor.ko"));
    assert!(html.contains("4a375f511eb8"));
    assert!(html.contains("4a375f511eb84caeb7810e2e88ada09ecaa349ebaf8ad381d22719a803b48dd4"));
    assert!(html.contains("426ff49716c116b15894298918cfa3598a9770b3ce3029a9543c90c81072fb97"));
    assert!(html.contains("QEMU emulator version 7.2.22"));
    assert!(html.contains("KVM never got past the BIOS"));
}

#[test]
fn recovery_table_puts_scenarios_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = sample(dir.path());
    // A second recovering scenario, with a gate it misses, and one that never came
    // back: three rows, in run order.
    let mut slow = run.scenarios[1].clone();
    slow.name = "demo/slow-guard".into();
    slow.verdict = Verdict::Fail;
    slow.recovers_within = Some(2);
    if let Some(r) = slow.recovery.as_mut() {
        r.how = "its own boots <script>".into();
    }
    let mut gone = run.scenarios[1].clone();
    gone.name = "demo/never-back".into();
    gone.verdict = Verdict::Fail;
    gone.recovery = None;
    gone.recovers_within = Some(3);
    run.scenarios.push(slow);
    run.scenarios.push(gone);
    let rows = crate::report::recovery::rows(&run);
    let names: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(
        names,
        [
            "demo/cf291-crashes-then-boot-loops",
            "demo/slow-guard",
            "demo/never-back"
        ]
    );
    assert_eq!(rows[1].within, Some(false));
    assert_eq!(rows[2].how, "did not come back");
    let text = crate::report::recovery::text(&rows).unwrap();
    let line = text.lines().find(|l| l.contains("slow-guard")).unwrap();
    assert!(
        line.contains("18.5") && line.contains("2 boots") && line.contains("fail"),
        "{line}"
    );
    let line = text.lines().find(|l| l.contains("never-back")).unwrap();
    assert!(
        line.contains("did not come back") && line.contains(" - "),
        "{line}"
    );

    let html = render(&run, dir.path()).expect("render");
    let section = &html[html.find("<section id=\"recovery\"").expect("section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert_eq!(section.matches("<tr>").count(), 4, "{section}");
    assert!(section.contains("rescue boot"), "{section}");
    assert!(
        section.contains("its own boots &lt;script&gt;"),
        "{section}"
    );
    assert!(!section.contains("<script>"), "{section}");
    // Without a recovery anywhere, no section.
    let mut plain = sample(dir.path());
    for sc in &mut plain.scenarios {
        sc.recovery = None;
    }
    let html = render(&plain, dir.path()).expect("render");
    assert!(!html.contains("id=\"recovery\""));
    assert!(crate::report::recovery::text(&crate::report::recovery::rows(&plain)).is_none());
}

#[test]
fn every_scenario_has_a_timeline() {
    let html = rendered();
    assert_eq!(html.matches("<svg").count(), 3);
    assert!(html.contains("boot 2 ready 4.2 s"));
    assert!(html.contains("rescue boot 5 ready 6.0 s"));
    assert!(html.contains("boot 3 crash"));
}

#[test]
fn crash_card_embeds_screenshot_and_links_evidence() {
    let html = rendered();
    assert!(html.contains("BUG: unable to handle page fault in sensor_match_fields"));
    assert!(html.contains(r#"<img class="shot" src="data:image/png;base64,iVBORw0KGgo"#));
    assert!(html.contains(r#"href="demo/cf291-crashes-then-boot-loops/crash-1.png""#));
    assert!(html.contains(r#"href="demo/cf291-crashes-then-boot-loops/crash%201.elf""#));
    assert!(html.contains(r#"href="demo/cf291-crashes-then-boot-loops/console.log""#));
    assert!(html.contains("<code>crash vmlinux DUMP</code> or <code>gdb vmlinux DUMP</code>"));
    // Later crashes with the same title fold their excerpt (crash 1's title
    // differs: it carries the hostile text).
    assert_eq!(html.matches("same crash title as in boot 2").count(), 2);
    assert!(html.contains("dump skipped: no disk space"));
    // The missing screenshot is still linked, with a note instead of the image.
    assert!(html.contains("missing from the run folder"));
    assert!(html.contains("3 consecutive boots crashed before becoming ready (boots 2–4)"));
    assert!(html.contains("boot 5 became ready 18.5 s after the first crash"));
    assert!(html.contains("bootgate rerun &#x27;&#x2f;results&#x2f;run 1&#x27;"));
}

#[test]
fn guest_text_is_escaped_everywhere() {
    let html = rendered();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(!html.contains("<img src=x"));
    // A hostile console file name ends up percent-encoded in the href.
    assert!(html.contains("x%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.log"));
    // A scheme-like path becomes a relative link.
    assert!(!html.contains(r#"href="javascript:"#));
    assert!(html.contains(r#"href="javascript%3Aalert%281%29""#));
}

#[test]
fn links_stay_inside_the_run_folder() {
    assert_eq!(inside_run_folder("/etc/passwd"), None);
    assert_eq!(inside_run_folder("../x.png"), None);
    assert_eq!(inside_run_folder("a/../../x.png"), None);
    assert_eq!(inside_run_folder("C:\\x"), None);
    assert_eq!(inside_run_folder("a/b c.png"), Some("a/b c.png"));
    assert_eq!(href("a/b c\"<>.png"), "a/b%20c%22%3C%3E.png");
}

#[test]
fn oversized_or_foreign_screenshots_are_not_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fake.png"), b"GIF89a").expect("write");
    let big = std::fs::File::create(dir.path().join("big.png")).expect("create");
    big.set_len(MAX_EMBED_BYTES + 1).expect("set_len");
    assert!(embed_png("fake.png", dir.path()).is_err_and(|n| n.contains("not a PNG")));
    assert!(embed_png("big.png", dir.path()).is_err_and(|n| n.contains("limit")));
    assert!(embed_png("../x.png", dir.path()).is_err_and(|n| n.contains("outside")));
}

#[test]
fn shell_quoting_round_trips_through_sh() {
    assert_eq!(shell_quote("plain-arg_1.x"), "plain-arg_1.x");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(
        shell_command_lines(&[
            "q".into(),
            "-m".into(),
            "256".into(),
            "-append".into(),
            "a b".into()
        ]),
        "q \\\n    -m 256 \\\n    -append 'a b'"
    );
}

/// Element nesting check: every non-void element closes, in order. Not a full
/// HTML parser, but it catches a template edit that leaves a table or div open.
#[test]
fn output_tags_are_balanced() {
    const VOID: &[&str] = &["meta", "br", "img", "hr", "link", "col", "input", "wbr"];
    let html = rendered();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html.as_str();
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        assert!(!name.is_empty(), "bad tag <{tag}>");
        if closing {
            assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "at </{name}>");
        } else if !VOID.contains(&name.as_str()) && !tag.ends_with('/') {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn html_sink_writes_report_on_run_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = sample(dir.path());
    let mut sink = HtmlSink::new();
    sink.event(&Event::RunFinished {
        run: &run,
        dir: dir.path(),
    })
    .expect("sink");
    let text = std::fs::read_to_string(dir.path().join(REPORT_HTML)).expect("read");
    assert!(text.starts_with("<!DOCTYPE html>"));
}

/// Renders a real run.json to a file for a look in a browser:
/// `BOOTGATE_HTML_SAMPLE=/path/run.json cargo test -p bootgate render_sample -- --ignored`
#[test]
#[ignore = "manual: renders the run.json named by BOOTGATE_HTML_SAMPLE"]
fn render_sample() {
    let Ok(path) = std::env::var("BOOTGATE_HTML_SAMPLE") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let text = std::fs::read_to_string(&path).expect("read run.json");
    let run: RunRecord = serde_json::from_str(&text).expect("parse run.json");
    let dir = path.parent().expect("run folder");
    let html = render(&run, dir).expect("render");
    std::fs::write(dir.join(REPORT_HTML), html).expect("write");
}

#[test]
fn boots_that_crash_after_ready_say_so_in_the_loop_table_and_timeline() {
    let late = |index: u32, start_ms: u64| BootRecord {
        crash: Some("BUG: unable to handle page fault in sensor_match_fields".into()),
        crashed: Some(CrashPhase::AfterReady),
        crash_after_ready_ms: Some(5_100),
        ..boot(index, start_ms, BootOutcome::Ready, Some(9_000))
    };
    let mut sc = scenario("late-loop", Verdict::Fail);
    sc.boots = vec![
        boot(1, 0, BootOutcome::Ready, Some(150)),
        late(2, 2_000),
        late(3, 17_000),
    ];
    sc.boot_loop = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let html = render(&records::run(vec![sc]), dir.path()).expect("render");
    assert!(
        html.contains("2 of them after becoming ready (5.1 s after ready)"),
        "the loop line"
    );
    assert_eq!(
        html.matches("(crashed 5.1 s after ready)").count(),
        2,
        "the boots table"
    );
    assert!(
        html.contains("boot 3 ready 9.0 s, crashed 5.1 s after ready"),
        "the timeline"
    );
}

/// Every text a results folder carries into the page, hostile at once: the
/// scenario name, crash titles, boot crash, driver names, reasons, hangs, step
/// kinds and the run's own fields. None may come out as markup.
#[test]
fn hostile_titles_and_names_from_the_folder_are_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hostile = format!("{HOSTILE_SCRIPT}{HOSTILE_IMG}");
    let mut sc = scenario(&hostile, Verdict::Fail);
    sc.reason = Some(hostile.clone());
    sc.hangs = vec![hostile.clone()];
    sc.image = hostile.clone();
    sc.expect = Some(hostile.clone());
    let mut b = boot(1, 0, BootOutcome::Crash, None);
    b.crash = Some(hostile.clone());
    b.drivers = Some(crate::model::record::DriversAtBoot {
        loaded: vec![hostile.clone()],
        missing: vec![hostile.clone()],
        ..Default::default()
    });
    sc.boots = vec![b];
    sc.steps = vec![step(&hostile, 0, 1, StepOutcome::Failed, &hostile)];
    let mut c = crash(1, &hostile);
    c.kind = hostile.clone();
    c.console = Some(hostile.clone());
    sc.crashes = vec![c];
    sc.recovers_within = Some(1);
    let mut run = records::run(vec![sc]);
    run.run_id = hostile.clone();
    run.host.hostname = hostile.clone();
    run.qemu.version = Some(hostile.clone());
    let html = render(&run, dir.path()).expect("renders");
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script tag survived");
    assert!(!lower.contains("<img src=x"), "an img tag survived");
    assert!(!html.contains("\"><img"), "an attribute was closed");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
}

/// A screenshot in the folder that is a link (here to a real PNG outside it) is
/// not embedded: the report copies no host file in.
#[test]
fn a_linked_screenshot_is_not_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let png = base64::engine::general_purpose::STANDARD
        .decode(PNG_1X1)
        .expect("decode png");
    let outside = dir.path().join("host.png");
    std::fs::write(&outside, png).expect("write png");
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).expect("mkdir");
    std::os::unix::fs::symlink(&outside, run_dir.join("shot.png")).expect("symlink");
    let note = embed_png("shot.png", &run_dir).expect_err("not embedded");
    assert!(note.contains("symlink"), "{note}");
}

/// A Windows crash card says how the crash was captured and links the dumps the guest
/// wrote itself and the evidence an offline recovery copied off its disk.
#[test]
fn crash_card_shows_the_capture_guest_dumps_and_offline_evidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = sample(dir.path());
    let crash = &mut run.scenarios[1].crashes[0];
    crash.capture = Some("guest-writing-dump".into());
    crash.capture_note = Some(format!(
        "the guest reset itself 41 s later {HOSTILE_SCRIPT}"
    ));
    crash.guest_dumps =
        vec!["demo/cf291-crashes-then-boot-loops/guest-dump-1-1-120225-01.dmp".into()];
    crash.guest_dumps_note = Some("not copied: MEMORY.DMP (header only)".into());
    crash.offline_evidence =
        vec!["demo/cf291-crashes-then-boot-loops/helper-vm/evidence/System.evtx".into()];
    let html = render(&run, dir.path()).expect("render");
    assert!(html.contains("<dt>Capture</dt>"), "{html}");
    assert!(html.contains("guest-writing-dump"));
    assert!(html.contains("the guest reset itself 41 s later"));
    assert!(!html.contains(HOSTILE_SCRIPT), "the note is escaped");
    assert!(
        html.contains(r#"href="demo/cf291-crashes-then-boot-loops/guest-dump-1-1-120225-01.dmp""#)
    );
    assert!(html.contains("not copied: MEMORY.DMP (header only)"));
    assert!(html
        .contains(r#"href="demo/cf291-crashes-then-boot-loops/helper-vm/evidence/System.evtx""#));
    // A crash without them shows none of these rows.
    assert_eq!(html.matches("<dt>Capture</dt>").count(), 1);
}
