//! Crash triage on real crashes of real modules: a driver bootgate builds shows the
//! faulting statement's `file:line` in the terminal, JUnit, the report and run.json;
//! a prebuilt stripped module says it has no debug info; the same module with its
//! separate debug file is resolved again; and the dump, read by `crash` with the
//! distribution's debug vmlinux, names the faulting function and module.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// The statement that faults in the demo sensor: `if (READ_ONCE(in[i]) != want)`.
fn faulting_line() -> String {
    let source =
        std::fs::read_to_string(format!("{DEMO_SUITES}/drivers/demo_sensor/demo_sensor.c"))
            .unwrap();
    let n = source
        .lines()
        .position(|l| l.contains("if (READ_ONCE(in[i]) != want)"))
        .expect("the faulting statement is in the source")
        + 1;
    format!("drivers/demo_sensor/demo_sensor.c:{n}:")
}

/// A suite in `dir` whose one scenario crashes the sensor with the 21-field content.
fn crash_suite(dir: &Path, name: &str, driver: &str, evidence: &str) -> PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            r#"[suite]
name = "{name}"
image = "demo"

[suite.evidence]
{evidence}

[driver.demo_sensor]
{driver}
content_file = "demo_sensor.content"
reload = "echo 1 > /sys/module/demo_sensor/parameters/reload"

[[scenario]]
name = "cf291"
boot_loop_boots = 2
steps = [
  {{ install_driver = {{ driver = "demo_sensor", load_now = true }} }},
  {{ apply_content = {{ driver = "demo_sensor", file = "content/cf291-21-fields.content", reload = true }} }},
]
"#
        ),
    )
}

/// The demo sensor's source and content beside the suites in `dir`.
fn copy_demo_files(dir: &Path) {
    for sub in ["drivers/demo_sensor", "content"] {
        let to = dir.join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(format!("{DEMO_SUITES}/{sub}")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
}

/// The demo sensor built by this test (not by bootgate) against the demo kernel's
/// headers, as a vendor's prebuilt module would be: the module with its debug info.
fn prebuilt_sensor(dir: &Path) -> PathBuf {
    let info =
        bootgate::image::kernel::build_info(demo_manifest()).expect("the demo's build-info.json");
    let headers = info["headers_dir"].as_str().unwrap();
    let build = dir.join("build");
    std::fs::create_dir_all(&build).unwrap();
    for file in ["Kbuild", "demo_sensor.c"] {
        std::fs::copy(
            format!("{DEMO_SUITES}/drivers/demo_sensor/{file}"),
            build.join(file),
        )
        .unwrap();
    }
    let out = Command::new("make")
        .arg("-C")
        .arg(headers)
        .arg(format!("M={}", build.display()))
        .arg("modules")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    build.join("demo_sensor.ko")
}

fn tool(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn triage_of<'a>(run: &'a Value, name: &str) -> &'a Value {
    &scenario(run, name)["crashes"][0]["triage"]
}

#[test]
fn driver_frames_resolve_to_source_lines_and_a_stripped_module_says_why_not() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    copy_demo_files(dir.path());
    let module = prebuilt_sensor(dir.path());
    let stripped = dir.path().join("stripped/demo_sensor.ko");
    std::fs::create_dir_all(stripped.parent().unwrap()).unwrap();
    tool(&[
        "strip",
        "--strip-debug",
        module.to_str().unwrap(),
        "-o",
        stripped.to_str().unwrap(),
    ]);
    let debug = dir.path().join("stripped/demo_sensor.ko.debug");
    tool(&[
        "objcopy",
        "--only-keep-debug",
        module.to_str().unwrap(),
        debug.to_str().unwrap(),
    ]);
    // Lines only: the dump's reading is the other test's (and takes seconds).
    let no_dumps = "memory_dumps = \"none\"";
    crash_suite(
        dir.path(),
        "built",
        "source = \"drivers/demo_sensor\"",
        no_dumps,
    );
    crash_suite(
        dir.path(),
        "stripped",
        "module = \"stripped/demo_sensor.ko\"",
        no_dumps,
    );
    crash_suite(
        dir.path(),
        "prebuilt",
        "module = \"build/demo_sensor.ko\"",
        no_dumps,
    );
    crash_suite(
        dir.path(),
        "debugfile",
        "module = \"stripped/demo_sensor.ko\"\ndebug = \"stripped/demo_sensor.ko.debug\"",
        no_dumps,
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(dir.path(), &out_dir, &["--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "every crash fails its scenario");
    let run = run_json(&out_dir);
    let line = faulting_line();

    // Built by bootgate: the faulting statement, the inlined chain, in every report.
    let built = triage_of(&run, "built/cf291");
    let at = built["at"].as_str().unwrap();
    assert!(at.starts_with(&line), "{at} names {line}");
    assert!(at.ends_with("in sensor_match_fields [demo_sensor]"), "{at}");
    let frames = built["frames"].as_array().unwrap();
    assert_eq!(frames[0]["faulting"], true);
    assert!(
        frames.iter().any(|f| f["inlined_by"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c
                .as_str()
                .unwrap()
                .starts_with("dsc_install at drivers/demo_sensor/demo_sensor.c:")))),
        "the inlined chain of a return address: {frames:?}"
    );
    let file = out_dir.join("latest").join(built["file"].as_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&line), "{text}");
    let stdout = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(&format!("at {line}")), "terminal: {stdout}");
    let junit = std::fs::read_to_string(out_dir.join("latest/junit.xml")).unwrap();
    assert!(junit.contains(&format!("at {line}")), "junit: {junit}");
    let html = std::fs::read_to_string(out_dir.join("latest/report.html")).unwrap();
    // The report escapes '/' (minijinja's HTML escaping): look for the file's name.
    let file_line = line.rsplit('/').next().unwrap();
    assert!(
        html.contains(file_line) && html.contains("Triage</dt>"),
        "the report's crash card names the line {file_line}"
    );
    assert!(
        html.contains("crash-1.triage.txt"),
        "and links the triage file"
    );

    // Prebuilt with its debug info: resolved from the module itself; built outside
    // bootgate, its DWARF names the test's build folder, shown as it is.
    let prebuilt = triage_of(&run, "prebuilt/cf291");
    let at = prebuilt["at"].as_str().unwrap();
    assert!(at.contains("/build/demo_sensor.c:"), "{at}");
    assert!(at.ends_with("in sensor_match_fields [demo_sensor]"), "{at}");

    // Prebuilt and stripped: no line, and the reason, never a guess.
    let stripped = triage_of(&run, "stripped/cf291");
    assert!(stripped["at"].is_null(), "{stripped}");
    assert!(stripped["frames"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["location"].is_null()));
    let notes = stripped["notes"].to_string();
    assert!(notes.contains("has no debug info (stripped)"), "{notes}");
    assert!(
        stdout.contains("triage: driver demo_sensor:"),
        "terminal says why: {stdout}"
    );

    // The stripped module with its separate debug file: resolved again. Built outside
    // bootgate, its DWARF names the test's build folder, shown as it is.
    // It is an input of the run, hashed like the module.
    assert!(
        run["inputs"].as_array().unwrap().iter().any(|i| i["path"]
            .as_str()
            .unwrap()
            .ends_with("stripped/demo_sensor.ko.debug")),
        "{}",
        run["inputs"]
    );
    let with_debug = triage_of(&run, "debugfile/cf291");
    let at = with_debug["at"].as_str().unwrap();
    assert!(at.contains("/build/demo_sensor.c:"), "{at}");
    assert!(at.ends_with("in sensor_match_fields [demo_sensor]"), "{at}");
    assert_no_vm_left(&run);
}

#[test]
fn the_dump_is_read_by_crash_with_the_distributions_debug_vmlinux() {
    demo_manifest();
    let vmlinux = debug_vmlinux();
    let dir = tempfile::tempdir().unwrap();
    copy_demo_files(dir.path());
    // An ELF dump here (gdb's format; the default kdump one is opened by crash in
    // evidence.rs): crash reads both.
    let image_dir = dir.path().join("image");
    std::fs::create_dir_all(&image_dir).unwrap();
    image_variant(demo_manifest(), &image_dir, |text| {
        text.replacen("[guest]\n", "[guest]\ndump_format = \"elf\"\n", 1)
    });
    let suite = crash_suite(
        dir.path(),
        "dump",
        "source = \"drivers/demo_sensor\"",
        "memory_dumps = \"first\"",
    );
    let text = std::fs::read_to_string(&suite)
        .unwrap()
        .replace("image = \"demo\"", "image = \"image/image.toml\"");
    std::fs::write(&suite, text).unwrap();
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let run = run_json(&out_dir);
    let crash = &scenario(&run, "dump/cf291")["crashes"][0];
    assert!(
        crash["dump"].is_string(),
        "the first crash is dumped: {crash}"
    );
    let triage = &crash["triage"];
    let text = std::fs::read_to_string(
        out_dir
            .join("latest")
            .join(triage["file"].as_str().unwrap()),
    )
    .unwrap();
    match vmlinux {
        Ok(vmlinux) => {
            eprintln!("reading the dump with {}", vmlinux.display());
            assert_eq!(
                triage["dump"], "exception RIP: sensor_match_fields+26 [demo_sensor]",
                "{triage}"
            );
            // Verbatim: crash's backtrace and the faulting line from the driver's
            // debug info that `mod -s` loaded.
            assert!(
                text.contains("[exception RIP: sensor_match_fields+26]"),
                "{text}"
            );
            assert!(text.contains("sensor_load.cold at"), "{text}");
            assert!(text.contains("demo_sensor.c: "), "{text}");
        }
        Err(why) => {
            // Not root here, or no package: the triage must say what is missing.
            eprintln!("no debug vmlinux ({why}): checking that triage says so");
            assert!(triage["dump"].is_null());
            let notes = triage["notes"].to_string();
            assert!(notes.contains("no debug vmlinux for kernel"), "{notes}");
            assert!(notes.contains("-dbg"), "names the package: {notes}");
        }
    }
}
