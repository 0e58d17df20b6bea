//! The driver build sandbox through the real binary: a hostile Kbuild cannot read a
//! host file, write outside its build folder or reach the network; a normal driver
//! still builds and loads in the guest; without a sandbox bootgate refuses to build
//! unless told `--unsandboxed-builds`, which a rerun never inherits.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A string no earlier build or run can have made: the source and secret of one test.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// A folder outside /tmp (which the sandbox replaces with its own) and outside the
/// suite: what a hostile build would want to read or write.
fn host_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A suite in `dir` with one driver, `name`, built from `kbuild` and a C file that
/// embeds `marker` (so its build key is new), and one scenario loading it.
fn driver_suite(dir: &Path, name: &str, kbuild: &str, marker: &str) -> PathBuf {
    let source = dir.join(name);
    std::fs::create_dir_all(&source).unwrap();
    write(&source, "Kbuild", kbuild);
    write(
        &source,
        &format!("{name}.c"),
        &format!(
            "#include <linux/module.h>\n#include <linux/init.h>\nstatic int __init m_init(void) {{ pr_info(\"{name}: up {marker}\\n\"); return 0; }}\nstatic void __exit m_exit(void) {{}}\nmodule_init(m_init);\nmodule_exit(m_exit);\nMODULE_LICENSE(\"GPL\");\n"
        ),
    );
    write(
        dir,
        "suite.toml",
        &format!(
            "[suite]\nname = \"sandbox\"\nimage = \"demo\"\n\n[driver.{name}]\nsource = \"{name}\"\n\n[[scenario]]\nname = \"load\"\nsteps = [\n  {{ install_driver = {{ driver = \"{name}\", load_now = true }} }},\n  {{ exec = {{ run = \"grep -q '^{name} ' /proc/modules && dmesg | grep -q '{marker}'\" }} }},\n]\n"
        ),
    )
}

/// Every file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .map(|e| e.into_path())
        .collect()
}

/// Removes the cache entries of modules built from a source carrying `marker`: each
/// test builds a new one, and the shared cache need not keep them.
fn forget_modules(marker: &str) {
    let drivers = bootgate::cache::cache_root().join("drivers");
    for module in files_containing(&drivers, marker) {
        if let Some(entry) = module.parent().filter(|p| *p != drivers) {
            let _ = std::fs::remove_dir_all(entry);
        }
    }
}

/// The scenario's reason after a run whose driver build was stopped: exit 3 (the
/// build is infrastructure trouble, no verdict on the product), the scenario in
/// `error`, its reason saying the build failed in the sandbox.
fn stopped_build_reason(out: &std::process::Output, out_dir: &Path) -> String {
    assert_eq!(out.status.code(), Some(3), "a stopped build is exit 3");
    let run = run_json(out_dir);
    assert_eq!(run["settings"]["driver_builds"], "sandboxed");
    let s = scenario(&run, "sandbox/load");
    assert_eq!(s["verdict"], "error", "{s:#}");
    let reason = s["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("build failed"), "{reason}");
    assert!(
        reason.contains("the build ran in bootgate's build sandbox")
            && reason.contains("denies it the network"),
        "the error says where it ran and what that denies: {reason}"
    );
    reason
}

#[test]
fn a_sandboxed_kbuild_cannot_read_a_host_file() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let secret = unique("secret");
    let secret_file = write(host.path(), "secret.txt", &secret);
    let kbuild = format!(
        "obj-m := reader.o\nSECRET := $(shell cat {0})\n$(info read: [$(SECRET)])\nccflags-y += -DSECRET='\"$(SECRET)\"'\nifeq ($(SECRET),)\n$(error could not read {0})\nendif\n",
        secret_file.display()
    );
    let suite = driver_suite(dir.path(), "reader", &kbuild, &unique("reader"));
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    let reason = stopped_build_reason(&out, &out_dir);
    assert!(reason.contains("could not read"), "the log tail: {reason}");
    let drivers = bootgate::cache::cache_root().join("drivers");
    assert_eq!(
        files_containing(&drivers, &secret),
        Vec::<PathBuf>::new(),
        "the secret reached the cache"
    );
    assert_eq!(
        files_containing(&out_dir, &secret),
        Vec::<PathBuf>::new(),
        "the secret reached the results"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&secret));
}

#[test]
fn a_sandboxed_kbuild_cannot_write_outside_its_build_folder() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let outside = host.path().join("planted.txt");
    let kbuild = format!(
        "obj-m := writer.o\n$(shell echo planted > {0})\nifeq ($(wildcard {0}),)\n$(error could not write {0})\nendif\n",
        outside.display()
    );
    let suite = driver_suite(dir.path(), "writer", &kbuild, &unique("writer"));
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    let reason = stopped_build_reason(&out, &out_dir);
    assert!(reason.contains("could not write"), "the log tail: {reason}");
    assert!(!outside.exists(), "the build wrote {}", outside.display());
}

#[test]
fn a_sandboxed_kbuild_cannot_reach_the_network() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let kbuild = format!(
        "obj-m := caller.o\nREPLY := $(shell bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo hello >&3 && echo connected')\nifneq ($(REPLY),connected)\n$(error no connection to 127.0.0.1:{port})\nendif\n"
    );
    let suite = driver_suite(dir.path(), "caller", &kbuild, &unique("caller"));
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    let reason = stopped_build_reason(&out, &out_dir);
    assert!(reason.contains("no connection"), "the log tail: {reason}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the build reached the host's listener: {other:?}"),
    }
}

/// The promise the sandbox must not break: a normal driver builds in it, and the
/// module loads in the guest.
#[test]
fn a_normal_driver_builds_in_the_sandbox_and_loads() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let marker = unique("hello");
    let suite = driver_suite(dir.path(), "hello", "obj-m := hello.o\n", &marker);
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    let run = run_json(&out_dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:#}",
        scenario(&run, "sandbox/load")
    );
    assert_eq!(run["settings"]["driver_builds"], "sandboxed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("unsandboxed"), "no warning: {stderr}");
    assert_no_vm_left(&run);
    forget_modules(&marker);
}

/// Where no sandbox can be made (here: bubblewrap "missing"), bootgate refuses to
/// build and says what to do; `--unsandboxed-builds` builds with a warning and says
/// so in run.json; a rerun of that run without the flag refuses again.
#[test]
fn without_a_sandbox_builds_need_the_flag_every_time() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let marker = unique("nosandbox");
    let suite = driver_suite(dir.path(), "plain", "obj-m := plain.o\n", &marker);
    let out_dir = dir.path().join("results");
    let no_bwrap = |args: &[&str]| {
        let output = bootgate()
            .args(args)
            .env("BOOTGATE_BWRAP", "/nonexistent/bwrap")
            .output()
            .unwrap();
        let _ = std::io::stderr().write_all(&output.stderr);
        output
    };
    let run_args = |extra: &'static str| {
        let mut args = vec![
            "run".to_string(),
            suite.display().to_string(),
            "--accel".into(),
            "tcg".into(),
            "--out".into(),
            out_dir.display().to_string(),
        ];
        if !extra.is_empty() {
            args.push(extra.into());
        }
        args
    };
    let refused = no_bwrap(&run_args("").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(refused.status.code(), Some(3));
    let reason = scenario(&run_json(&out_dir), "sandbox/load")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    for needed in [
        "refusing to build its source",
        "/nonexistent/bwrap (bubblewrap) is not installed",
        "apt-get install -y bubblewrap",
        "--unsandboxed-builds",
    ] {
        assert!(reason.contains(needed), "{needed:?} in {reason}");
    }

    let args = run_args("--unsandboxed-builds");
    let built = no_bwrap(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let run = run_json(&out_dir);
    assert_eq!(
        built.status.code(),
        Some(0),
        "{:#}",
        scenario(&run, "sandbox/load")
    );
    assert_eq!(run["settings"]["driver_builds"], "unsandboxed");
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(
        stderr.contains("warning: driver plain: building its source unsandboxed"),
        "{stderr}"
    );

    // The unsandboxed module is in the cache, but a sandboxed build may not take it.
    let latest = out_dir.join("latest").display().to_string();
    let rerun = no_bwrap(&["rerun", &latest]);
    assert_eq!(rerun.status.code(), Some(3), "the flag is not inherited");
    let run = run_json(&out_dir);
    assert_eq!(run["settings"]["driver_builds"], "sandboxed");
    let reason = scenario(&run, "sandbox/load")["reason"].as_str().unwrap();
    assert!(reason.contains("refusing to build its source"), "{reason}");
    forget_modules(&marker);
}

/// doctor says whether builds can be sandboxed here, and when not, why and what to do.
#[test]
fn doctor_says_whether_the_build_sandbox_works() {
    let out = run(&["doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok   build sandbox: bubblewrap works"),
        "{stdout}"
    );
    let out = bootgate()
        .arg("doctor")
        .env("BOOTGATE_BWRAP", "/nonexistent/bwrap")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("build sandbox:"))
        .unwrap_or_else(|| panic!("no build sandbox line: {stdout}"));
    for needed in [
        "FAIL",
        "apt-get install -y bubblewrap",
        "--unsandboxed-builds",
    ] {
        assert!(line.contains(needed), "{needed:?} in {line}");
    }
}

/// Copies the demo image's kernel headers to `dir` (outside /usr), their relative
/// links made absolute so they still resolve; the copy's path.
fn headers_copy(dir: &Path) -> (String, PathBuf) {
    let info = bootgate::image::kernel::build_info(demo_manifest()).expect("build-info.json");
    let release = info["kernel_version"].as_str().unwrap().to_string();
    let headers = PathBuf::from(info["headers_dir"].as_str().unwrap());
    let copy = dir.join("linux-headers");
    for entry in walkdir::WalkDir::new(&headers)
        .into_iter()
        .map(Result::unwrap)
    {
        let to = copy.join(entry.path().strip_prefix(&headers).unwrap());
        if entry.path_is_symlink() {
            let target = std::fs::canonicalize(entry.path()).unwrap();
            std::os::unix::fs::symlink(target, &to).unwrap();
        } else if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    (release, copy)
}

/// Headers outside /usr, named through a symlink: the sandbox shows them at both
/// paths, read-only, and the driver builds against them and loads.
#[test]
fn headers_outside_usr_are_shown_to_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let (release, copy) = headers_copy(host.path());
    let link = host.path().join("headers-link");
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    image_variant(demo_manifest(), dir.path(), |text| {
        format!(
            "{text}\n[kernel]\nrelease = {release:?}\nheaders = {:?}\n",
            link.display().to_string()
        )
    });
    let marker = unique("elsewhere");
    let suite = driver_suite(dir.path(), "elsewhere", "obj-m := elsewhere.o\n", &marker);
    let text = std::fs::read_to_string(&suite)
        .unwrap()
        .replace("image = \"demo\"", "image = \"image.toml\"");
    std::fs::write(&suite, text).unwrap();
    let out_dir = dir.path().join("results");
    // Headers outside /usr and outside the suite folder: the user vouches for them.
    let out = run_tcg(&suite, &out_dir, &["--allow-outside-paths"]);
    let run = run_json(&out_dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:#}",
        scenario(&run, "sandbox/load")
    );
    assert_eq!(run["settings"]["driver_builds"], "sandboxed");
    forget_modules(&marker);
}
