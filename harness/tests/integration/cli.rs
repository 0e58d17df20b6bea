//! Command-line behaviour that needs no guest: usage errors, suite errors, missing QEMU.

use crate::common::*;

#[test]
fn typo_in_suite_key_exits_2_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nimage = \"demo\"\n\n[[scenario]]\nname = \"x\"\nsteps = [\n  { exec = { rn = \"true\" } },\n]\n",
    );
    let out = run(&[
        "run",
        suite.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("suite.toml:7:14"), "{stderr}");
    assert!(stderr.contains("unknown field `rn`"), "{stderr}");
    assert!(
        !dir.path().join("r").exists(),
        "a suite error must not start a run"
    );
}

#[test]
fn unknown_image_name_exits_2_and_says_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nimage = \"demoo\"\n\n[[scenario]]\nname = \"x\"\nsteps = [{ boot = {} }]\n",
    );
    let out = run(&[
        "run",
        suite.to_str().unwrap(),
        "--accel",
        "tcg",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown image \"demoo\"") && stderr.contains("demo"),
        "{stderr}"
    );
}

#[test]
fn bad_flag_exits_2_and_help_exits_0() {
    assert_eq!(run(&["run", "--acel", "tcg", "x"]).status.code(), Some(2));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Exit codes") && text.contains("130"),
        "{text}"
    );
}

#[test]
fn qemu_missing_from_path_is_an_infrastructure_error() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nimage = \"demo\"\n\n[[scenario]]\nname = \"boots\"\nsteps = [{ boot = {} }]\n",
    );
    let out_dir = dir.path().join("r");
    let out = bootgate()
        .args([
            "run",
            suite.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = run_json(&out_dir);
    let s = scenario(&run, "suite/boots");
    assert_eq!(s["verdict"], "error");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("not found in PATH") && reason.contains("apt-get install"),
        "{reason}"
    );
    assert_eq!(run["summary"]["error"], 1);
    assert!(out_dir.join("latest").join("junit.xml").is_file());
}

#[test]
fn list_prints_scenario_names() {
    let out = run(&["list", DEMO_SUITES]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("demo/boots-and-reboots"), "{text}");
}

/// Filters behave as cargo test's: substring FILTER (--only), --skip, --exact, and
/// scenarios marked ignore left out unless --ignored / --include-ignored.
#[test]
fn list_applies_cargo_test_style_filters() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"f\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"boot\"\nsteps = [{ boot = {} }]\n\n[[scenario]]\nname = \"boot-slow\"\nsteps = [{ boot = {} }]\n\n[[scenario]]\nname = \"reboot\"\nsteps = [{ reboot = {} }]\n\n[[scenario]]\nname = \"soak\"\nignore = true\nsteps = [{ observe = { duration = \"1h\" } }]\n",
    );
    let list = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["run", suite.to_str().unwrap(), "--list"];
        args.extend(extra);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    assert_eq!(list(&[]), ["f/boot", "f/boot-slow", "f/reboot"]);
    assert_eq!(
        list(&["--only", "boot"]),
        ["f/boot", "f/boot-slow", "f/reboot"]
    );
    assert_eq!(list(&["--only", "f/boot", "--exact"]), ["f/boot"]);
    assert_eq!(list(&["--skip", "slow"]), ["f/boot", "f/reboot"]);
    assert_eq!(
        list(&["--skip", "f/boot", "--exact"]),
        ["f/boot-slow", "f/reboot"]
    );
    assert_eq!(list(&["--ignored"]), ["f/soak"]);
    assert_eq!(list(&["--include-ignored", "--skip", "boot"]), ["f/soak"]);
    assert_eq!(list(&["--include-ignored"]).len(), 4);
}

/// Every path field a suite names, pointed outside its folder three ways (absolute,
/// `..`, a symlink out), through the real CLI: exit 2, the suite's file:line:col
/// at the field, the flag that allows it; nothing is written anywhere but `--out`.
/// Needs no guest: the suite is refused at load.
#[test]
fn suite_paths_outside_the_suite_folder_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside");
    std::fs::create_dir_all(outside.join("src")).unwrap();
    write(&outside, "secret.content", "host secret");
    write(&outside, "m.ko", "x");
    write(&outside, "image.toml", "x");
    let dir = root.path().join("suite");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    write(&dir, "good.content", "x");
    write(&dir, "m.ko", "x");
    std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
    let template = "[suite]\nimage = IMAGE\n\n[driver.s]\nsource = SOURCE\ncontent_file = \"s.content\"\n\n[driver.m]\nmodule = MODULE\n\n[[scenario]]\nname = \"a\"\nsteps = [\n  { apply_content = { driver = \"s\", file = APPLY } },\n  { rollback_content = { driver = \"s\", file = ROLLBACK } },\n]\n";
    let fields = [
        ("IMAGE", "\"demo\"", "image.toml", "2:1"),
        ("SOURCE", "\"src\"", "src", "5:1"),
        ("MODULE", "\"m.ko\"", "m.ko", "9:1"),
        ("APPLY", "\"good.content\"", "secret.content", "14:37"),
        ("ROLLBACK", "\"good.content\"", "secret.content", "15:40"),
    ];
    let out_dir = root.path().join("results");
    write(&dir, "suite.toml", "the test writes each suite here");
    let before = listing(root.path());
    for (field, _, file, at) in fields {
        for written in [
            outside.join(file).display().to_string(),
            format!("../outside/{file}"),
            format!("out/{file}"),
        ] {
            let text = fields
                .iter()
                .fold(template.to_string(), |text, (key, ok, _, _)| {
                    let value = if *key == field {
                        format!("{written:?}")
                    } else {
                        ok.to_string()
                    };
                    text.replace(key, &value)
                });
            let suite = write(&dir, "suite.toml", &text);
            let out = run_tcg(&suite, &out_dir, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{field} {written}: {stderr}");
            assert!(
                stderr.contains(&format!("suite.toml:{at}:"))
                    && stderr.contains("outside the folder")
                    && stderr.contains("--allow-outside-paths"),
                "{field} {written}: {stderr}"
            );
            assert!(!stderr.contains("host secret"), "{stderr}");
        }
    }
    assert_eq!(
        listing(root.path()),
        before,
        "nothing may be written for a refused suite"
    );
}

/// Every file under `dir`, for before/after comparisons.
fn listing(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

/// An image manifest is held to the same rule for its own files (a suite that
/// ships one naming `disk.path = "/etc/passwd"` is refused at the manifest's
/// line), and a file outside the suite's folder that does not parse is located
/// but never quoted: `image = "/etc/passwd"` with --allow-outside-paths names
/// the file and line, and prints none of it.
#[test]
fn hostile_image_manifests_are_refused_and_never_quoted() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    write(&outside, "passwd", "root:x:0:0:root:/root:/bin/bash\n");
    let dir = root.path().join("suite");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        write(&dir, f, "x");
    }
    let manifest = include_str!("../../../images/demo/image.toml").replace(
        "path = \"system.qcow2\"",
        &format!("path = {:?}", outside.join("passwd")),
    );
    write(&dir, "image.toml", &manifest);
    let want = manifest
        .lines()
        .position(|l| l.starts_with("path ="))
        .unwrap()
        + 1;
    let body = "\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n";
    let out_dir = root.path().join("results");

    let suite = write(
        &dir,
        "suite.toml",
        &format!("[suite]\nimage = \"image.toml\"\n{body}"),
    );
    let out = run_tcg(&suite, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("image.toml:{want}:1: disk.path"))
            && stderr.contains("is an absolute path")
            && stderr.contains("--allow-outside-paths"),
        "{stderr}"
    );

    let passwd = outside.join("passwd");
    let suite = write(
        &dir,
        "suite.toml",
        &format!(
            "[suite]\nimage = {:?}\n{body}",
            passwd.display().to_string()
        ),
    );
    let out = run_tcg(&suite, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("suite.toml:2:1:") && stderr.contains("is an absolute path"),
        "{stderr}"
    );
    let out = run_tcg(&suite, &out_dir, &["--allow-outside-paths"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("passwd:1:"),
        "the file and line are named: {stderr}"
    );
    assert!(
        !stderr.contains("root:x") && !stderr.contains("/bin/bash"),
        "its text is not: {stderr}"
    );
    let results: String = listing(&out_dir)
        .iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(!results.contains("root:x"), "nor is it in the results");
}

/// Regression (issue 13): a suite without [rollout] given to `bootgate rollout` is a
/// suite error, exit 2 as `--help` promises, not infrastructure trouble (it was 3).
/// It fails before any VM starts, so it needs no guest.
#[test]
fn rollout_of_a_suite_without_a_rollout_section_exits_2_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let suite = std::path::Path::new(DEMO_SUITES).join("suite.toml");
    let out = run(&[
        "rollout",
        suite.to_str().unwrap(),
        "--accel",
        "tcg",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("suite.toml has no [rollout] section")
            && stderr.contains("[[rollout.ring]]")
            && stderr.contains("bootgate run"),
        "{stderr}"
    );
}

/// A hostile suite name cannot place results outside the results folder: it is
/// refused at load with its line and column (exit 2), and nothing is written above
/// `--out`. Counts that would make a run never end are refused the same way.
#[test]
fn hostile_names_and_endless_counts_are_refused_before_anything_is_written() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("b");
    std::fs::create_dir_all(&dir).unwrap();
    let out_dir = dir.join("results");
    for (suite_text, want) in [
        (
            "[suite]\nname = \"../../../escape\"\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
            "suite.toml:2:8: suite `name` \"../../../escape\" must start with a letter or digit",
        ),
        (
            "[suite]\nname = \"a/b\"\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nsteps = [{ exec = { run = \"true\" } }]\n",
            "suite.toml:2:8: suite `name` \"a/b\" must start with a letter or digit",
        ),
        (
            "[suite]\nimage = \"demo\"\n[[scenario]]\nname = \"x/../../up\"\nsteps = [{ exec = { run = \"true\" } }]\n",
            "suite.toml:4:8: scenario `name`",
        ),
        (
            "[suite]\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nsteps = [{ reboot = { times = 4294967295 } }]\n",
            "must be 1 to 100 (got 4294967295)",
        ),
    ] {
        let suite = write(&dir, "suite.toml", suite_text);
        let out = run_tcg(&suite, &out_dir, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!root.path().join("escape").exists());
        assert!(!out_dir.exists(), "nothing written for a refused suite");
    }
    let out = run(&["run", "x.toml", "--retries", "11"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("11"));
}

/// `doctor --image` holds a manifest to the same rule as a run, and takes the
/// same flag its refusal names. Needs no guest: it stops at the manifest.
#[test]
fn doctor_confines_an_image_manifest_and_takes_the_flag_it_names() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("image");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        write(&dir, f, "x");
    }
    write(root.path(), "elsewhere.qcow2", "x");
    let manifest = include_str!("../../../images/demo/image.toml")
        .replace("path = \"system.qcow2\"", "path = \"../elsewhere.qcow2\"");
    let path = write(&dir, "image.toml", &manifest);
    let out = run(&[
        "doctor",
        "--image",
        path.to_str().unwrap(),
        "--accel",
        "tcg",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("disk.path")
            && stdout.contains("climbs out with `..`")
            && stdout.contains("--allow-outside-paths"),
        "{stdout}"
    );
    let missing = root.path().join("none.toml");
    let out = run(&[
        "doctor",
        "--image",
        missing.to_str().unwrap(),
        "--allow-outside-paths",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cannot read image manifest"),
        "the flag is accepted: {stdout}"
    );
}
