use std::path::Path;

use super::*;

fn parse_str(text: &str) -> Result<Suite, SuiteError> {
    parse(Path::new("t/suite.toml"), text)
}

const GOOD: &str = r#"
[suite]
name = "demo"
image = "demo"
boot_timeout = "90s"

[[scenario]]
name = "boot-and-reboot"
steps = [
  { boot = { timeout = "2m" } },
  { reboot = { times = 2 } },
  { exec = { run = "true" } },
  { exec = { argv = ["/bin/false"], expect_exit = 1, timeout = "5s" } },
]
[scenario.gates]
max_boot_time = "30s"
"#;

#[test]
fn rollout_rings_parse_and_mistakes_are_located() {
    let text = format!(
        "{GOOD}\n[rollout]\nsoak = \"10s\"\n[[rollout.ring]]\nname = \"canary\"\ntargets = [{{}}]\n[[rollout.ring]]\nname = \"fleet\"\ncrash_threshold = 1\ntargets = [{{ cpus = 2 }}, {{ memory_mib = 384, append = \"quiet\" }}]\n"
    );
    let suite = parse_str(&text).unwrap();
    let rollout = suite.rollout.unwrap();
    assert_eq!(rollout.soak, Some(Duration::from_secs(10)));
    assert_eq!(rollout.rings[1].crash_threshold, 1);
    assert_eq!(rollout.rings[1].targets[0].label(), "default-2cpu");
    assert_eq!(rollout.rings[1].targets[1].label(), "default-384mib-append");
    for (bad, says) in [
        ("[rollout]\nring = []\n", "no rings"),
        (
            "[[rollout.ring]]\nname = \"a\"\ntargets = [{}]\n[[rollout.ring]]\nname = \"a\"\ntargets = [{}]\n",
            "used twice",
        ),
        ("[[rollout.ring]]\nname = \"a\"\ntargets = []\n", "no `targets`"),
        ("[[rollout.ring]]\nname = \"a\"\ntargets = [{ cpu = 2 }]\n", "unknown field"),
    ] {
        let err = parse_str(&format!("{GOOD}\n{bad}")).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("t/suite.toml:"), "{bad}: {err}");
    }
}

#[test]
fn parses_a_full_suite() {
    let suite = parse_str(GOOD).unwrap();
    assert_eq!(suite.name, "demo");
    assert_eq!(suite.boot_timeout, Some(Duration::from_secs(90)));
    let s = &suite.scenarios[0];
    assert_eq!(s.steps.len(), 4);
    assert_eq!(
        s.steps[0],
        Step::Boot(BootStep {
            timeout: Some(Duration::from_secs(120))
        })
    );
    assert!(matches!(&s.steps[1], Step::Reboot(r) if r.times == 2));
    assert!(
        matches!(&s.steps[3], Step::Exec(e) if e.expect_exit == 1 && e.timeout() == Duration::from_secs(5))
    );
    assert_eq!(s.gates.max_boot_time, Some(Duration::from_secs(30)));
}

fn invalid(text: &str) -> (usize, usize, String) {
    match parse_str(text) {
        Err(SuiteError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn typo_in_key_names_line_column_and_key() {
    let text = GOOD.replace("max_boot_time", "max_boot_tme");
    let (line, column, message) = invalid(&text);
    assert_eq!((line, column), (16, 1));
    assert!(message.contains("max_boot_tme"), "{message}");
}

#[test]
fn typo_in_step_kind_is_located() {
    let text = GOOD.replace("{ reboot =", "{ rebot =");
    let (line, _, message) = invalid(&text);
    assert_eq!(line, 11);
    assert!(message.contains("rebot"), "{message}");
}

#[test]
fn bad_duration_is_located_and_explained() {
    let text = GOOD.replace("\"30s\"", "\"30 parsecs\"");
    let (line, column, message) = invalid(&text);
    assert_eq!((line, column), (16, 17));
    assert!(message.contains("30 parsecs"), "{message}");
}

#[test]
fn exec_needs_exactly_one_command_form() {
    let text = GOOD.replace("{ run = \"true\" }", "{ run = \"true\", argv = [\"x\"] }");
    let (line, _, message) = invalid(&text);
    assert_eq!(line, 12);
    assert!(message.contains("not both"), "{message}");
}

#[test]
fn duplicate_scenario_names_are_rejected() {
    let text =
        format!("{GOOD}\n[[scenario]]\nname = \"boot-and-reboot\"\nsteps = [{{ boot = {{}} }}]\n");
    let (line, _, message) = invalid(&text);
    assert_eq!(line, 19);
    assert!(message.contains("twice"), "{message}");
}

#[test]
fn boot_only_first_and_reboot_at_least_once() {
    let (_, _, m) = invalid(&GOOD.replace("{ exec = { run = \"true\" } }", "{ boot = {} }"));
    assert!(m.contains("only come first"), "{m}");
    let (_, _, m) = invalid(&GOOD.replace("times = 2", "times = 0"));
    assert!(m.contains("must be 1 to 100 (got 0)"), "{m}");
}

#[test]
fn missing_suite_table_says_what_to_add() {
    let (_, _, m) = invalid("[[scenario]]\nname = \"a\"\nsteps = [{ boot = {} }]\n");
    assert!(m.contains("[suite]"), "{m}");
}

#[test]
fn driver_references_and_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("good.content"), b"x").unwrap();
    let path = dir.path().join("suite.toml");
    let base = "[suite]\nimage = \"demo\"\n\n[driver.sensor]\nsource = \"src\"\ncontent_file = \"s.content\"\n\n[[scenario]]\nname = \"a\"\n";
    let check = |steps: &str| match parse(&path, &format!("{base}steps = [{steps}]\n")) {
        Err(SuiteError::Invalid { line, message, .. }) => (line, message),
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert!(parse(&path, &format!("{base}steps = [{{ apply_content = {{ driver = \"sensor\", file = \"good.content\" }} }}]\n")).is_ok());
    let (line, m) = check("{ install_driver = { driver = \"sensr\" } }");
    assert_eq!(line, 10);
    assert!(
        m.contains("unknown driver \"sensr\"") && m.contains("sensor"),
        "{m}"
    );
    let (_, m) = check("{ apply_content = { driver = \"sensor\", file = \"missing.content\" } }");
    assert!(m.contains("missing.content"), "{m}");
    let (_, m) = check(
        "{ apply_content = { driver = \"sensor\", file = \"good.content\", reload = true } }",
    );
    assert!(m.contains("no `reload` command"), "{m}");
    let bad_source = base.replace("source = \"src\"", "source = \"nowhere\"");
    match parse(&path, &format!("{bad_source}steps = [{{ boot = {{}} }}]\n")) {
        Err(SuiteError::Invalid { line, message, .. }) => {
            // At the field itself, not its table's header.
            assert_eq!(line, 5);
            assert!(message.contains("nowhere"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// A suite folder with a driver source and two content files, and the drill
/// suite text `drill` appended to a suite with that driver.
fn drill_suite(drill: &str) -> (tempfile::TempDir, Result<Suite, SuiteError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("good.content"), b"x").unwrap();
    std::fs::write(dir.path().join("bad.content"), b"y").unwrap();
    let path = dir.path().join("drill.toml");
    let text = format!("[suite]\nimage = \"demo\"\n\n[driver.sensor]\nsource = \"src\"\ncontent_file = \"s.content\"\nreload = \"echo 1 > /r\"\n\n{drill}");
    let suite = parse(&path, &text);
    (dir, suite)
}

const DRILL: &str = "[drill]\ndriver = \"sensor\"\nupdate = \"bad.content\"\nprevious = \"good.content\"\nparams = \"a=1\"\nrecovers_within = 4\nexpect_title = \"match\"\n\n[drill.path.guard]\nparams = \"loop_guard=2\"\n[drill.path.rescue_boot]\n[drill.path.offline]\n[drill.path.agent_rollback]\nparams = \"boot_delay_ms=5000\"\n";

#[test]
fn a_drill_becomes_one_scenario_per_recovery_path() {
    let (_dir, suite) = drill_suite(DRILL);
    let suite = suite.unwrap();
    let names: Vec<&str> = suite.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "recover-by-guard",
            "recover-by-rescue-boot",
            "recover-by-offline-removal",
            "recover-by-agent-rollback"
        ]
    );
    for scenario in &suite.scenarios {
        // The same start everywhere: install, the previous content live, the
        // update live (the crash); judged as a crash with the recovery gate.
        assert_eq!(scenario.expect, Some(Expect::Crash));
        assert_eq!(scenario.expect_title.as_deref(), Some("match"));
        assert_eq!(scenario.gates.recovers_within, Some(4));
        assert_eq!(scenario.gates.no_boot_loop, Some(false));
        let Step::ApplyContent(update) = &scenario.steps[2] else {
            panic!("{:?}", scenario.steps)
        };
        assert!(update.reload && update.file == Path::new("bad.content"));
    }
    let params = |i: usize| match &suite.scenarios[i].steps[0] {
        Step::InstallDriver(s) => s.params.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(params(0), "a=1 loop_guard=2");
    assert_eq!(params(1), "a=1");
    assert_eq!(params(3), "a=1 boot_delay_ms=5000");
    // The guard and the rollback are watched past the limit; the outside paths
    // step in after one crashed reboot.
    let loops: Vec<u32> = suite.scenarios.iter().map(|s| s.boot_loop_boots).collect();
    assert_eq!(loops, [5, 1, 1, 5]);
    let last = |i: usize| suite.scenarios[i].steps.last().unwrap().clone();
    assert!(matches!(last(0), Step::Observe(_)));
    assert!(matches!(
        &suite.scenarios[2].steps[3],
        Step::Recover(RecoverStep { via: RecoverVia::HelperVm, remove_content: Some(d), .. }) if d == "sensor"
    ));
    assert!(matches!(
        &suite.scenarios[1].steps[3],
        Step::Recover(RecoverStep {
            via: RecoverVia::RescueBoot,
            ..
        })
    ));
    match last(3) {
        Step::RollbackContent(r) => {
            assert_eq!(r.file.as_deref(), Some(Path::new("good.content")));
            assert_eq!(r.boots, 4);
        }
        other => panic!("{other:?}"),
    }
    assert!(suite.drill.is_some());
}

#[test]
fn drill_mistakes_are_located_and_say_what_to_do() {
    let message = |drill: &str| match drill_suite(drill).1 {
        Err(SuiteError::Invalid { line, message, .. }) => (line, message),
        other => panic!("expected Invalid for {drill:?}, got {other:?}"),
    };
    let (line, m) = message(&DRILL.replace("[drill.path.offline]", "[drill.path.ofline]"));
    assert!(m.contains("ofline") && m.contains("offline"), "{m}");
    assert_eq!(line, 20, "the line of [drill.path.ofline]");
    let (_, m) = message(&DRILL.replace("bad.content", "gone.content"));
    assert!(m.contains("[drill]") && m.contains("gone.content"), "{m}");
    let (_, m) = message(&DRILL.replace("driver = \"sensor\"", "driver = \"sensr\""));
    assert!(m.contains("unknown driver \"sensr\""), "{m}");
    let (_, m) =
        message("[drill]\ndriver = \"sensor\"\nupdate = \"bad.content\"\nrecovers_within = 2\n");
    assert!(
        m.contains("no recovery path") && m.contains("[drill.path.guard]"),
        "{m}"
    );
    let (_, m) = message(&DRILL.replace("recovers_within = 4", "recovers_within = 0"));
    assert!(m.contains("must be 1 to 20"), "{m}");
    let (_, m) = message(&format!(
        "[[scenario]]\nname = \"recover-by-guard\"\nsteps = [{{ boot = {{}} }}]\n{DRILL}"
    ));
    assert!(m.contains("already has one"), "{m}");
    let (_, m) =
        message(&DRILL.replace("recovers_within = 4", "recovers_within = 4\nreload = true"));
    assert!(m.contains("unknown field `reload`"), "{m}");
    let (_, m) = message(&DRILL.replace(
        "recovers_within = 4",
        "recovers_within = 4\nsettle = \"soon\"",
    ));
    assert!(m.contains("invalid duration"), "{m}");
}

#[test]
fn recover_and_rollback_steps_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let path = dir.path().join("suite.toml");
    let base = "[suite]\nimage = \"demo\"\n\n[driver.sensor]\nsource = \"src\"\ncontent_file = \"s.content\"\n\n[[scenario]]\nname = \"a\"\n";
    let check = |steps: &str| parse(&path, &format!("{base}steps = [{steps}]\n"));
    let suite = check("{ recover = { via = \"helper_vm\", remove_content = \"sensor\" } }, { rollback_content = { driver = \"sensor\", settle = \"3s\" } }").unwrap();
    assert_eq!(
        suite.scenarios[0].steps[0].to_string(),
        "recover (helper VM, remove sensor's content)"
    );
    assert_eq!(
        suite.scenarios[0].steps[1].to_string(),
        "rollback_content sensor (remove)"
    );
    let err = |steps: &str| check(steps).unwrap_err().to_string();
    assert!(err("{ recover = { via = \"helper_vm\" } }").contains("needs something to do"));
    assert!(
        check("{ recover = {} }").is_ok(),
        "a bare rescue boot is fine"
    );
    assert!(err("{ recover = { via = \"safe_mode\", run = [\"x\"] } }").contains("helper_vm"));
    assert!(err("{ recover = { remove_content = \"nope\" } }").contains("unknown driver"));
    assert!(
        err("{ rollback_content = { driver = \"sensor\", file = \"none.content\" } }")
            .contains("none.content")
    );
    assert!(
        err("{ rollback_content = { driver = \"sensor\", boots = 0 } }")
            .contains("must be 1 to 20 (got 0)")
    );
}

#[test]
fn expectations_are_checked() {
    let text = "[suite]\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nexpect = \"slow_boot\"\nsteps = [{ boot = {} }]\n";
    let (_, _, m) = invalid(text);
    assert!(m.contains("max_boot_time"), "{m}");
    let (_, _, m) = invalid(&text.replace("slow_boot", "bootloop"));
    assert!(m.contains("bootloop") && m.contains("boot_loop"), "{m}");
    let (_, _, m) = invalid(&text.replace("expect = \"slow_boot\"", "expect_title = \"x\""));
    assert!(m.contains("without `expect`"), "{m}");
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        "\u{0}",
        "[suite",
        "suite = 3",
        "[[scenario]]\nsteps = 7",
        "[suite]\nimage = 1",
    ] {
        assert!(parse_str(text).is_err(), "{text:?} must be rejected");
    }
}

#[test]
fn recovery_settle_comes_from_the_scenario_the_suite_or_the_default() {
    let default = parse_str(GOOD).unwrap();
    assert_eq!(
        default.scenarios[0].recovery_settle,
        DEFAULT_RECOVERY_SETTLE
    );
    let suite_wide = GOOD.replace(
        "boot_timeout = \"90s\"",
        "boot_timeout = \"90s\"\nrecovery_settle = \"45s\"",
    );
    let text = format!(
        "{suite_wide}\n[[scenario]]\nname = \"own\"\nrecovery_settle = \"1m 30s\"\nsteps = [{{ boot = {{}} }}]\n"
    );
    let suite = parse_str(&text).unwrap();
    assert_eq!(suite.recovery_settle, Some(Duration::from_secs(45)));
    let windows: Vec<Duration> = suite.scenarios.iter().map(|s| s.recovery_settle).collect();
    assert_eq!(
        windows,
        [Duration::from_secs(45), Duration::from_secs(90)],
        "the suite's default, then the scenario's own"
    );
}

#[test]
fn recovery_settle_over_its_maximum_or_misspelt_is_located() {
    let text = format!(
        "{GOOD}\n[[scenario]]\nname = \"long\"\nrecovery_settle = \"11m\"\nsteps = [{{ boot = {{}} }}]\n"
    );
    let (line, column, message) = invalid(&text);
    assert_eq!((line, column), (20, 19));
    assert!(
        message.contains("`recovery_settle` 11m is longer than the longest allowed, 10m"),
        "{message}"
    );
    let text = GOOD.replace(
        "boot_timeout = \"90s\"",
        "boot_timeout = \"90s\"\nrecovery_settle = \"twenty\"",
    );
    let (line, column, message) = invalid(&text);
    assert_eq!((line, column), (6, 19));
    assert!(message.contains("invalid duration \"twenty\""), "{message}");
}

#[test]
fn drill_scenarios_take_the_suites_recovery_settle() {
    let (dir, suite) = drill_suite(DRILL);
    for s in &suite.unwrap().scenarios {
        assert_eq!(s.recovery_settle, DEFAULT_RECOVERY_SETTLE, "{}", s.name);
    }
    let text = format!("[suite]\nimage = \"demo\"\nrecovery_settle = \"30s\"\n\n[driver.sensor]\nsource = \"src\"\ncontent_file = \"s.content\"\nreload = \"echo 1 > /r\"\n\n{DRILL}");
    let suite = parse(&dir.path().join("drill.toml"), &text).unwrap();
    assert_eq!(suite.scenarios.len(), 4);
    for s in &suite.scenarios {
        assert_eq!(s.recovery_settle, Duration::from_secs(30), "{}", s.name);
    }
}

#[test]
fn a_standalone_suite_runs_when_named_not_with_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let plain = "[suite]\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nsteps = [{ boot = {} }]\n";
    std::fs::write(dir.path().join("a.toml"), plain).unwrap();
    let other = plain.replace(
        "image = \"demo\"",
        "image = \"debian12\"\nstandalone = true",
    );
    std::fs::write(dir.path().join("b.toml"), other).unwrap();
    let suites = load_path(dir.path()).unwrap();
    assert_eq!(suites.len(), 1);
    assert_eq!(suites[0].image, "demo");
    let named = load_path(&dir.path().join("b.toml")).unwrap();
    assert!(named[0].standalone);
    assert_eq!(named[0].image, "debian12");
}

#[test]
fn names_are_one_plain_path_component_and_counts_are_bounded() {
    let base = "[suite]\nname = \"s\"\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nsteps = [{ reboot = { times = 1 } }]\n";
    for (from, to, want) in [
        (
            "name = \"s\"",
            "name = \"../../../escape\"",
            "suite `name` \"../../../escape\" must start with a letter or digit",
        ),
        (
            "name = \"s\"",
            "name = \".hidden\"",
            "suite `name` \".hidden\"",
        ),
        ("name = \"a\"", "name = \"..\"", "scenario `name` \"..\""),
        (
            "times = 1",
            "times = 4294967295",
            "must be 1 to 100 (got 4294967295)",
        ),
        (
            "steps = [",
            "boot_loop_boots = 1000\nsteps = [",
            "`boot_loop_boots` must be 2 to 20 (got 1000)",
        ),
    ] {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base);
        let (line, _, m) = invalid(&text);
        assert!(m.contains(want), "{to}: {m}");
        assert!(line >= 1, "located: {m}");
    }
    let long = "x".repeat(65);
    let (_, _, m) = invalid(&base.replace("name = \"a\"", &format!("name = \"{long}\"")));
    assert!(m.contains("at most 64"), "{m}");
    let driver = format!("{base}[driver.\"../d\"]\nmodule = \"m.ko\"\n");
    let (line, _, m) = invalid(&driver);
    assert!(m.contains("driver \"../d\" must start"), "{m}");
    assert_eq!(line, 7, "at the driver's header: {m}");
}

/// Every path field a suite has, pointed outside its folder three ways (absolute,
/// `..`, a symlink out): each refused at its own line and column, naming the
/// field and the flag; and with `--allow-outside-paths` the same suite loads.
#[test]
fn every_path_field_pointing_outside_is_refused_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let suite_dir = dir.path().join("suite");
    std::fs::create_dir_all(suite_dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("outside/src")).unwrap();
    for f in ["good.content", "m.ko", "m.ko.debug"] {
        std::fs::write(suite_dir.join(f), b"x").unwrap();
        std::fs::write(dir.path().join("outside").join(f), b"x").unwrap();
    }
    std::fs::write(dir.path().join("outside/image.toml"), b"x").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), suite_dir.join("out")).unwrap();
    let outside = dir.path().join("outside");
    let path = suite_dir.join("suite.toml");
    // (the field's text with PATH for the path, the path's file in `outside`)
    let template = "[suite]\nimage = IMAGE\n\n[driver.s]\nsource = SOURCE\ncontent_file = \"s.content\"\n\n[driver.m]\nmodule = MODULE\ndebug = DEBUG\n\n[[scenario]]\nname = \"a\"\nsteps = [\n  { apply_content = { driver = \"s\", file = APPLY } },\n  { rollback_content = { driver = \"s\", file = ROLLBACK } },\n]\n\n[rollout]\n[[rollout.ring]]\nname = \"r\"\ntargets = [{ image = TARGET }]\n";
    let good = [
        ("IMAGE", "\"demo\"", ""),
        ("SOURCE", "\"src\"", ""),
        ("MODULE", "\"m.ko\"", ""),
        ("DEBUG", "\"m.ko.debug\"", ""),
        ("APPLY", "\"good.content\"", ""),
        ("ROLLBACK", "\"good.content\"", ""),
        ("TARGET", "\"demo\"", ""),
    ];
    let fill = |field: &str, value: &str| {
        good.iter()
            .fold(template.to_string(), |text, (key, ok, _)| {
                text.replace(key, if *key == field { value } else { ok })
            })
    };
    assert!(parse(&path, &fill("", "")).is_ok());
    for (field, file) in [
        ("IMAGE", "image.toml"),
        ("SOURCE", "src"),
        ("MODULE", "m.ko"),
        ("DEBUG", "m.ko.debug"),
        ("APPLY", "good.content"),
        ("ROLLBACK", "good.content"),
        ("TARGET", "image.toml"),
    ] {
        for (written, how) in [
            (
                outside.join(file).display().to_string(),
                "is an absolute path",
            ),
            (format!("../outside/{file}"), "climbs out with `..`"),
            (format!("out/{file}"), "leads through a symlink"),
        ] {
            let text = fill(field, &format!("{written:?}"));
            let at = text.find(&format!("{written:?}")).unwrap();
            let key_at = text[..at].rfind(['\n', '{', ',']).unwrap() + 1;
            let key_at = key_at + text[key_at..].len() - text[key_at..].trim_start().len();
            let (want_line, want_col) = crate::util::line_col(&text, key_at);
            match parse(&path, &text) {
                Err(SuiteError::Invalid {
                    line,
                    column,
                    message,
                    ..
                }) => {
                    assert!(message.contains(how), "{field} {written}: {message}");
                    assert!(message.contains("--allow-outside-paths"), "{message}");
                    assert_eq!(
                        (line, column),
                        (want_line, want_col),
                        "{field} {written}: {message}"
                    );
                }
                other => panic!("{field} {written}: expected Invalid, got {other:?}"),
            }
            let allowed = parse_with(&path, &text, PathPolicy::Anywhere);
            assert!(
                allowed.is_ok(),
                "{field} {written} with the flag: {allowed:?}"
            );
        }
    }
}

/// The fields of the schemas that name host files, and where each is confined.
/// A new `PathBuf` field in a schema fails this test until it is added here,
/// with the confinement (crate::confine) that its loader applies to it.
const CONFINED_PATH_FIELDS: &[(&str, &str)] = &[
    // The suite file itself: named by the user, not by the suite.
    ("src/suite/schema.rs", "path"),
    ("src/suite/schema.rs", "source"),
    ("src/suite/schema.rs", "module"),
    ("src/suite/step.rs", "file"),
    ("src/suite/drill.rs", "update"),
    ("src/suite/drill.rs", "previous"),
    ("src/image/manifest.rs", "uefi_code"),
    ("src/image/manifest.rs", "uefi_vars"),
    ("src/image/manifest.rs", "kernel"),
    ("src/image/manifest.rs", "initrd"),
    ("src/image/manifest.rs", "path"),
    ("src/image/kernel.rs", "headers"),
    ("src/image/kernel.rs", "debug_vmlinux"),
    ("src/suite/schema.rs", "debug"),
];

#[test]
fn every_path_field_is_confined() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in [
        "src/suite/schema.rs",
        "src/suite/step.rs",
        "src/suite/drill.rs",
        "src/image/manifest.rs",
        "src/image/kernel.rs",
        "src/model/target.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line
                .strip_prefix("pub ")
                .or_else(|| line.strip_prefix("pub(crate) "))
                .or_else(|| line.strip_prefix("pub(super) "))
            else {
                continue;
            };
            if let Some((name, ty)) = rest.split_once(':') {
                if ty.contains("PathBuf") && !name.contains('(') && !name.contains(' ') {
                    found.push((file, name.trim().to_string()));
                }
            }
        }
    }
    for (file, name) in &found {
        assert!(
            CONFINED_PATH_FIELDS.contains(&(file, name.as_str())),
            "{file}: field `{name}` names a host path: confine it in its loader (crate::confine::confine) and list it in CONFINED_PATH_FIELDS"
        );
    }
    // And the list holds no field that is gone.
    for (file, name) in CONFINED_PATH_FIELDS {
        assert!(
            found.iter().any(|(f, n)| f == file && n == name),
            "{file}: no field `{name}` any more: remove it from the list"
        );
    }
    // A suite's `image` (and a rollout target's) is a String: a built-in name or
    // a path, confined by validate::image_is_path + confine (tested above).
}

#[test]
fn drill_files_outside_the_folder_are_refused_at_their_field() {
    for (key, written) in [("update", "/etc/passwd"), ("previous", "../good.content")] {
        let drill = DRILL.replace(
            &format!(
                "{key} = \"{}\"",
                if key == "update" {
                    "bad.content"
                } else {
                    "good.content"
                }
            ),
            &format!("{key} = {written:?}"),
        );
        let line = drill.lines().position(|l| l.starts_with(key)).unwrap() + 9;
        match drill_suite(&drill).1 {
            Err(SuiteError::Invalid {
                line: got,
                column,
                message,
                ..
            }) => {
                assert!(message.contains("--allow-outside-paths"), "{message}");
                assert_eq!((got, column), (line, 1), "{key}: {message}");
            }
            other => panic!("{key}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn step_timeouts_and_verifier_flags_parse_and_bad_ones_are_located() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let path = dir.path().join("suite.toml");
    let base = "[suite]\nimage = \"demo\"\n\n[driver.sensor]\nsource = \"src\"\n\n[[scenario]]\nname = \"a\"\n";
    let load = |steps: &str| parse(&path, &format!("{base}steps = [\n{steps}\n]\n"));
    let s = load("{ install_driver = { driver = \"sensor\", timeout = \"15m\" } },\n{ verifier = { driver = \"sensor\", flags = [\"/flags\", \"0x209BB\"], reboot = false } },\n{ uninstall_driver = { driver = \"sensor\", timeout = \"20m\" } }").unwrap();
    let steps = &s.scenarios[0].steps;
    assert!(
        matches!(&steps[0], Step::InstallDriver(i) if i.timeout == Some(Duration::from_secs(900)))
    );
    assert!(
        matches!(&steps[1], Step::Verifier(v) if v.flags == ["/flags", "0x209BB"] && !v.reboot && v.timeout.is_none())
    );
    assert!(matches!(&steps[2], Step::UninstallDriver(u) if u.timeout.is_some()));
    let d = load("{ verifier = { driver = \"sensor\" } }").unwrap();
    assert!(
        matches!(&d.scenarios[0].steps[0], Step::Verifier(v) if v.flags == ["/standard"] && v.reboot)
    );
    for (steps, want) in [
        (
            "{ verifier = { driver = \"sensor\", flags = [\"/reset\"] } }",
            "not a selection",
        ),
        (
            "{ verifier = { driver = \"sensor\", flags = [\"/flags\", \"7 & calc\"] } }",
            "one number",
        ),
        (
            "{ install_driver = { driver = \"sensor\", timeout = \"0s\" } }",
            "0 would fail",
        ),
        (
            "{ apply_content = { driver = \"sensor\", file = \"x\", timeout = \"9h\" } }",
            "longest allowed",
        ),
    ] {
        match load(steps) {
            Err(SuiteError::Invalid { line, message, .. }) => {
                assert_eq!(line, 10, "{steps}: {message}");
                assert!(message.contains(want), "{steps}: {message}");
            }
            other => panic!("{steps}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn stall_window_defaults_is_set_or_turned_off() {
    assert_eq!(
        parse_str(GOOD).unwrap().stall_window,
        Some(DEFAULT_STALL_WINDOW)
    );
    let with = |value: &str| {
        GOOD.replace(
            "boot_timeout = \"90s\"",
            &format!("boot_timeout = \"90s\"\nstall_window = {value}"),
        )
    };
    assert_eq!(
        parse_str(&with("\"4s\"")).unwrap().stall_window,
        Some(Duration::from_secs(4))
    );
    for off in ["\"off\"", "\"OFF\"", "\"0s\"", "\"0\"", "0"] {
        assert_eq!(parse_str(&with(off)).unwrap().stall_window, None, "{off}");
    }
}

#[test]
fn a_bad_stall_window_is_located() {
    let with = |value: &str| {
        GOOD.replace(
            "boot_timeout = \"90s\"",
            &format!("boot_timeout = \"90s\"\nstall_window = {value}"),
        )
    };
    let cases = [
        (
            "\"1s\"",
            "`stall_window` 1s is shorter than the shortest allowed, 2s",
        ),
        (
            "\"11m\"",
            "`stall_window` 11m is longer than the longest allowed, 10m",
        ),
        ("\"soon\"", "`stall_window`: invalid duration \"soon\""),
        (
            "10",
            "`stall_window` 10 has no unit: write a duration like \"10s\"",
        ),
    ];
    for (value, expected) in cases {
        let (line, column, message) = invalid(&with(value));
        assert_eq!((line, column), (6, 16), "{value}: {message}");
        assert!(message.contains(expected), "{value}: {message}");
    }
}

/// A prebuilt module's separate debug file: it must exist, and only a prebuilt
/// `module` takes one; each mistake located at the `debug` field.
#[test]
fn a_drivers_debug_file_is_checked_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("m.ko"), b"x").unwrap();
    let path = dir.path().join("suite.toml");
    let suite = |driver: &str| {
        format!("[suite]\nname = \"s\"\nimage = \"demo\"\n\n[driver.m]\n{driver}\n\n[[scenario]]\nname = \"a\"\nsteps = [{{ exec = {{ run = \"true\" }} }}]\n")
    };
    for (driver, says) in [
        ("module = \"m.ko\"\ndebug = \"m.ko.debug\"", "`debug` file"),
        (
            "source = \"src\"\ndebug = \"m.ko\"",
            "`debug` goes with a prebuilt `module`",
        ),
    ] {
        match parse(&path, &suite(driver)) {
            Err(SuiteError::Invalid { line, message, .. }) => {
                assert!(message.contains(says), "{driver}: {message}");
                assert_eq!(line, 7, "at the debug field: {message}");
            }
            other => panic!("{driver}: {other:?}"),
        }
    }
    std::fs::write(dir.path().join("m.ko.debug"), b"x").unwrap();
    let ok = parse(&path, &suite("module = \"m.ko\"\ndebug = \"m.ko.debug\"")).unwrap();
    assert_eq!(
        ok.drivers["m"].debug.as_deref(),
        Some(Path::new("m.ko.debug"))
    );
}

#[test]
fn dump_budget_defaults_and_is_set() {
    assert_eq!(
        parse_str(GOOD).unwrap().evidence.dump_budget_mib,
        super::schema::DEFAULT_DUMP_BUDGET_MIB
    );
    let text = GOOD.replace(
        "boot_timeout = \"90s\"",
        "boot_timeout = \"90s\"\n[suite.evidence]\nmemory_dumps = \"all\"\ndump_budget_mib = 300",
    );
    let suite = parse_str(&text).unwrap();
    assert_eq!(suite.evidence.dump_budget_mib, 300);
    assert_eq!(suite.evidence.memory_dumps, DumpPolicy::All);
}

#[test]
fn a_bad_dump_budget_is_located() {
    let with = |value: &str| {
        GOOD.replace(
            "boot_timeout = \"90s\"",
            &format!("boot_timeout = \"90s\"\n[suite.evidence]\ndump_budget_mib = {value}"),
        )
    };
    let cases = [
        ("0", "`dump_budget_mib` 0 is not a positive number of MiB"),
        ("-5", "`dump_budget_mib` -5 is not a positive number of MiB"),
        ("\"4G\"", "`dump_budget_mib` \"4G\" is not a number"),
    ];
    for (value, expected) in cases {
        let (line, column, message) = invalid(&with(value));
        assert_eq!((line, column), (7, 19), "{value}: {message}");
        assert!(message.contains(expected), "{value}: {message}");
    }
}
