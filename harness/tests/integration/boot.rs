//! Booting the real demo guest: verdicts, exit codes, results files, gates.

use std::path::Path;

use crate::common::*;

/// One run, three VMs: a passing boot/reboot scenario, a command with the wrong exit
/// code, and a boot-time gate no boot can meet. Checks verdicts, exit code, run.json,
/// junit.xml, console logs, that the base image is untouched and no QEMU is left.
#[test]
fn pass_fail_and_gate_in_one_run() {
    let manifest = demo_manifest();
    let base = manifest.parent().unwrap().join("system.qcow2");
    let base_sha_before = sha256(&base);
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "gate.toml",
        r#"
[suite]
name = "gate"
image = "demo"

[[scenario]]
name = "reboots"
steps = [
  { boot = {} },
  { reboot = { times = 1 } },
  { exec = { run = "test $(cat /system/var/bootcount) -eq 2" } },
]
[scenario.gates]
max_boot_time = "100s"

[[scenario]]
name = "wrong-exit"
steps = [
  { exec = { run = "echo about to fail; exit 3" } },
  { exec = { run = "true" } },
]

[[scenario]]
name = "too-slow"
steps = [{ exec = { run = "true" } }]
[scenario.gates]
max_boot_time = "1ms"
"#,
    );
    let out_dir = dir.path().join("results");
    // `auto`: on hosts without working KVM this also exercises the fallback.
    let out = run(&[
        "run",
        suite.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "some scenario failed: exit 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("run.json"),
        "the summary says where results are: {stderr}"
    );

    let run = run_json(&out_dir);
    assert_eq!(run["schema_version"], 1);
    assert!(run["finished_at"].is_string());
    assert_eq!(run["interrupted"], false);
    assert!(run["qemu"]["version"].as_str().unwrap().contains("QEMU"));
    if run["qemu"]["accel"] == "tcg" {
        assert!(
            run["qemu"]["accel_notice"].is_string(),
            "auto explains a fallback to TCG"
        );
    }
    assert_eq!(run["summary"]["pass"], 1);
    // Three scenarios, at most one VM per core here: someone waited for a free slot.
    let scenarios = run["scenarios"].as_array().unwrap();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(scenarios
        .iter()
        .all(|s| s["worker"].as_u64().unwrap() < jobs as u64));
    if jobs < 3 {
        assert!(
            scenarios
                .iter()
                .any(|s| s["queued_ms"].as_u64().unwrap() > 0),
            "{scenarios:?}"
        );
    }
    assert_eq!(run["summary"]["fail"], 2);
    let inputs: Vec<&str> = run["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(
        inputs.iter().any(|p| p.ends_with("system.qcow2")),
        "{inputs:?}"
    );
    assert!(
        inputs.iter().any(|p| p.ends_with("gate.toml")),
        "{inputs:?}"
    );

    let pass = scenario(&run, "gate/reboots");
    assert_eq!(pass["verdict"], "pass", "{pass}");
    let boots = pass["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 2);
    assert!(boots
        .iter()
        .all(|b| b["outcome"] == "ready" && b["ready_ms"].as_u64().unwrap() > 0));
    let console = out_dir.join("latest").join("gate/reboots/console.log");
    let text = std::fs::read_to_string(&console).unwrap();
    assert_eq!(
        text.matches("Linux version").count(),
        2,
        "two kernel boots on the console"
    );
    let artifacts = pass["artifacts"].as_array().unwrap();
    let logged = artifacts
        .iter()
        .find(|a| a["path"] == "gate/reboots/console.log")
        .unwrap();
    assert_eq!(logged["sha256"], sha256(&console));

    let fail = scenario(&run, "gate/wrong-exit");
    assert_eq!(fail["verdict"], "fail");
    let steps = fail["steps"].as_array().unwrap();
    assert_eq!(steps[1]["outcome"], "failed");
    let detail = steps[1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("exit 3, expected exit 0") && detail.contains("about to fail"),
        "{detail}"
    );
    assert_eq!(steps[2]["outcome"], "skipped");

    let slow = scenario(&run, "gate/too-slow");
    assert_eq!(slow["verdict"], "fail");
    assert!(
        slow["reason"].as_str().unwrap().contains("max_boot_time"),
        "{slow}"
    );

    let junit = std::fs::read_to_string(out_dir.join("latest/junit.xml")).unwrap();
    assert!(
        junit.contains("tests=\"3\"") && junit.contains("failures=\"2\""),
        "{junit}"
    );
    assert!(junit.contains("exit 3, expected exit 0"), "{junit}");

    assert_no_vm_left(&run);
    assert_eq!(sha256(&base), base_sha_before, "the base image was written");
}

/// A guest whose agent never starts: the boot times out, the verdict is fail (the
/// image under test did not come up), and the VM is torn down.
#[test]
fn guest_that_never_becomes_ready_times_out_as_fail() {
    let dir = tempfile::tempdir().unwrap();
    demo_variant(dir.path(), "bootgate.agent=off", "25s");
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"noagent\"\nimage = \"image.toml\"\n\n[[scenario]]\nname = \"never-ready\"\ncold_boot = true\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let out_dir = dir.path().join("results");
    let out = run_tcg(&suite, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let run = run_json(&out_dir);
    let s = scenario(&run, "noagent/never-ready");
    assert_eq!(s["verdict"], "fail");
    assert_eq!(s["boots"][0]["outcome"], "timeout");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("did not reach ready within 25.0 s"),
        "{s}"
    );
    let console =
        std::fs::read_to_string(out_dir.join("latest/noagent/never-ready/console.log")).unwrap();
    assert!(
        console.contains("Linux version"),
        "the guest did boot: the console shows the kernel"
    );
    assert_no_vm_left(&run);
}

/// `--accel auto` probes once per boot: the verdict is kept under the cache's
/// `accel/` folder, and the next run reuses it instead of probing again. Shown by
/// marking the kept verdict's notice: the second run reports the marked text, which
/// only the kept file holds. A doctor run lists the kept verdict and how to clear it.
#[test]
fn accel_auto_reuses_the_verdict_kept_for_this_boot() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"a\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"up\"\nsteps = [{ exec = { run = \"true\" } }]\n",
    );
    let run = |out: &Path| {
        let output = crate::common::run(&[
            "run",
            suite.to_str().unwrap(),
            "--accel",
            "auto",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(0));
        run_json(out)
    };
    let first = run(&dir.path().join("r1"));
    let accel = first["qemu"]["accel"].as_str().unwrap().to_string();
    let cache = bootgate::cache::cache_root().join("accel");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let kernel = demo_manifest()
        .parent()
        .unwrap()
        .join("vmlinuz")
        .display()
        .to_string();
    // The verdict this run's probe (or an earlier run's, this boot) kept.
    let kept_file = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            v["key"]["boot_id"].as_str() == Some(boot_id.trim())
                && v["key"]["kernel"]
                    .as_str()
                    .is_some_and(|k| k.starts_with(&format!("{kernel} ")))
        })
        .expect("a verdict kept for this boot and the demo kernel");
    let original = std::fs::read(&kept_file).unwrap();
    let mut kept: serde_json::Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(kept["accel"], accel.as_str());
    kept["notice"] = "kept-verdict-marker".into();
    std::fs::write(&kept_file, serde_json::to_vec(&kept).unwrap()).unwrap();
    let second = run(&dir.path().join("r2"));
    let doctor = crate::common::run(&["doctor"]);
    // Put the real verdict back before asserting, for the runs after this test.
    std::fs::write(&kept_file, &original).unwrap();
    assert_eq!(second["qemu"]["accel"], accel.as_str());
    let notice = second["qemu"]["accel_notice"].as_str().unwrap_or_default();
    assert!(
        notice.starts_with("kept-verdict-marker [kept from this boot's probe"),
        "the second run reused the kept verdict instead of probing, and says so: {notice}"
    );
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.contains("kept for this boot:") && said.contains("kept-verdict-marker"),
        "{said}"
    );
    assert!(
        said.contains(&format!("rm -r {}", cache.display())),
        "{said}"
    );
}
