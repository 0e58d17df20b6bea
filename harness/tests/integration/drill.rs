//! Recovery drills on the demo guest: the 21-field content crashes the sensor, and
//! each way back (the sensor's boot-loop guard, a rescue boot, removal from the
//! stopped VM's disk through a helper VM, a rollback through the agent) is measured
//! in boots and seconds, side by side, gated by recovers_within.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn demo_dir() -> &'static Path {
    Path::new(DEMO_SUITES)
}

fn recovery(run: &Value, name: &str) -> Value {
    scenario(run, name)["recovery"].clone()
}

#[test]
fn the_cf291_drill_measures_every_recovery_path_side_by_side() {
    let manifest = demo_manifest();
    let base = manifest.parent().unwrap().join("system.qcow2");
    let base_before = sha256(&base);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run_tcg(&demo_dir().join("drill-cf291.toml"), &out, &["--jobs", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let run = run_json(&out);
    let verdicts = verdicts(&run);
    assert_eq!(verdicts.len(), 4, "{verdicts:?}");
    assert!(verdicts.values().all(|v| v == "pass"), "{verdicts:?}");

    // Each path: what brought the guest back and in how many boots of the crash.
    // The live crash is in boot 1.
    let guard = recovery(&run, "drill-cf291/recover-by-guard");
    assert_eq!(guard["how"], "its own boots", "{guard}");
    // loop_guard=2: two reboots crash on the content, the third skips it.
    assert_eq!(guard["boots"], 3, "{guard}");
    let rescue = recovery(&run, "drill-cf291/recover-by-rescue-boot");
    assert_eq!(rescue["how"], "rescue boot", "{rescue}");
    // One reboot crashes again, the rescue boot, then the normal boot.
    assert_eq!(rescue["boots"], 3, "{rescue}");
    let offline = recovery(&run, "drill-cf291/recover-by-offline-removal");
    assert_eq!(offline["how"], "offline removal (helper VM)", "{offline}");
    // One reboot crashes again; the disk is fixed with the guest off; the next boot.
    assert_eq!(offline["boots"], 2, "{offline}");
    let agent = recovery(&run, "drill-cf291/recover-by-agent-rollback");
    assert_eq!(agent["how"], "agent rollback", "{agent}");
    // The sensor interprets its boot content 5 s after loading, so the first reboot
    // answers and the rollback lands first; a slower host may need one more boot.
    assert!(agent["boots"].as_u64().unwrap() <= 2, "{agent}");
    for r in [&guard, &rescue, &offline, &agent] {
        assert!(r["seconds"].as_f64().unwrap() > 0.0, "{r}");
    }

    // The offline path never booted the guest in safe mode: its disk was edited by
    // a second QEMU (the helper) that had the guest's overlay as its second disk.
    let offline_sc = scenario(&run, "drill-cf291/recover-by-offline-removal");
    let boots = offline_sc["boots"].as_array().unwrap();
    assert!(
        boots.iter().all(|b| b["extra_append"].is_null()),
        "{boots:?}"
    );
    let argvs: Vec<String> = run["qemu"]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["scenario"] == "drill-cf291/recover-by-offline-removal")
        .map(|vm| vm["argv"].to_string())
        .collect();
    assert!(
        argvs.iter().any(|a| a.contains("node-name=data0")),
        "a helper VM with a second disk: {argvs:?}"
    );
    let helper_console = out
        .join("latest")
        .join(offline_sc["dir"].as_str().unwrap())
        .join("helper-vm/console.log");
    // The helper's kernel booted and mounted the stopped guest's disk (its second
    // disk, vdb). Not the init's "bootgate: ready" line: the agent answers as soon
    // as qemu-ga opens its port, and on a loaded host the helper can finish and be
    // powered off before the init's own poll for that gets to print the line.
    let console = std::fs::read_to_string(&helper_console).unwrap();
    assert!(
        console.contains("Linux version") && console.contains("EXT4-fs (vdb): mounted"),
        "{console}"
    );
    let recover = offline_sc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "recover")
        .unwrap();
    assert!(
        recover["detail"]
            .as_str()
            .unwrap()
            .contains("removed /target/content/demo_sensor.content offline"),
        "{recover}"
    );

    // The table, side by side: on the terminal and in the report.
    let table_at = stderr
        .find("recovery (boots and seconds")
        .expect("the recovery table");
    let table = &stderr[table_at..];
    for (name, how) in [
        ("recover-by-guard", "its own boots"),
        ("recover-by-rescue-boot", "rescue boot"),
        ("recover-by-offline-removal", "offline removal (helper VM)"),
        ("recover-by-agent-rollback", "agent rollback"),
    ] {
        let line = table
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} in {table}"));
        assert!(line.contains(how) && line.contains("4 boots"), "{line}");
    }
    let html = std::fs::read_to_string(out.join("latest/report.html")).unwrap();
    let section = &html[html
        .find("<section id=\"recovery\"")
        .expect("recovery section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert_eq!(
        section.matches("<tr>").count(),
        5,
        "a header and four paths"
    );
    assert!(section.contains("offline removal (helper VM)"), "{section}");

    assert_no_vm_left(&run);
    assert_eq!(
        sha256(&base),
        base_before,
        "the base image is never written"
    );
}

/// A drill suite outside the demo folder that uses its driver and content files.
fn drill_file(dir: &Path, image: &str, drill: &str) -> std::path::PathBuf {
    let demo = demo_dir().canonicalize().unwrap();
    write(
        dir,
        "drill.toml",
        &format!(
            r#"[suite]
name = "drill"
image = "{image}"

[driver.demo_sensor]
source = "{demo}/drivers/demo_sensor"
content_file = "demo_sensor.content"
reload = "echo 1 > /sys/module/demo_sensor/parameters/reload"

[drill]
driver = "demo_sensor"
update = "{demo}/content/cf291-21-fields.content"
previous = "{demo}/content/good.content"
settle = "3s"
{drill}
"#,
            demo = demo.display()
        ),
    )
}

#[test]
fn paths_that_miss_the_limit_fail_the_gate_and_say_why() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    // The guard needs three boots; without boot_delay_ms the sensor crashes every
    // boot before the agent answers, so a rollback never gets its chance.
    let bad = demo_dir()
        .canonicalize()
        .unwrap()
        .join("content/cf291-21-fields.content");
    // A rollback that puts back content just as bad: every boot answers, then
    // crashes when the sensor reads it. A boot that answered and then crashed is no
    // recovery.
    let rollback_to_bad = format!(
        r#"[[scenario]]
name = "rollback-to-bad-content"
expect = "crash"
steps = [
  {{ install_driver = {{ driver = "demo_sensor", params = "boot_delay_ms=4000", load_now = true }} }},
  {{ apply_content = {{ driver = "demo_sensor", file = "{bad}", reload = true }} }},
  {{ rollback_content = {{ driver = "demo_sensor", file = "{bad}", settle = "8s", boots = 2 }} }},
]
[scenario.gates]
no_boot_loop = false
recovers_within = 3
"#,
        bad = bad.display()
    );
    let suite = drill_file(
        dir.path(),
        "demo",
        &format!(
            "recovers_within = 2\n[drill.path.guard]\nparams = \"loop_guard=2\"\n[drill.path.agent_rollback]\n\n{rollback_to_bad}"
        ),
    );
    let out = dir.path().join("out");
    let output = run_tcg(&suite, &out, &["--jobs", "2", "--allow-outside-paths"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let run = run_json(&out);
    let guard = scenario(&run, "drill/recover-by-guard");
    assert_eq!(guard["verdict"], "fail", "{guard}");
    let reason = guard["reason"].as_str().unwrap();
    assert!(
        reason.contains("recovered after 3 boots, over the limit of 2"),
        "{reason}"
    );
    let agent = scenario(&run, "drill/recover-by-agent-rollback");
    assert_eq!(
        agent["verdict"], "fail",
        "the product's failure, not an error: {agent}"
    );
    let reason = agent["reason"].as_str().unwrap();
    assert!(
        reason.contains("no ready boot after the crash (limit 2 boots)"),
        "{reason}"
    );
    let bad = scenario(&run, "drill/rollback-to-bad-content");
    assert_eq!(bad["verdict"], "fail", "{bad}");
    let reason = bad["reason"].as_str().unwrap();
    assert!(
        reason.contains("the rollback did not hold in 2 boot(s)"),
        "{reason}"
    );
    let ready_boots = bad["boots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["outcome"] == "ready")
        .count();
    assert!(ready_boots >= 3, "boots after the crash answered: {bad}");
    assert!(
        bad["recovery"].is_null(),
        "ready-then-crashed is no recovery: {bad}"
    );
    let table = &stderr[stderr.find("recovery (boots").expect("the table")..];
    assert!(
        table
            .lines()
            .any(|l| l.contains("recover-by-agent-rollback") && l.contains("did not come back")),
        "{table}"
    );
    assert_no_vm_left(&run);
}

#[test]
fn an_image_without_offline_support_is_an_error_not_a_failure() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let variant = demo_variant(dir.path(), "", "120s");
    // The sensor is built against the image's kernel headers, which its build
    // record names.
    let image_dir = demo_manifest().parent().unwrap();
    std::fs::copy(
        image_dir.join("build-info.json"),
        dir.path().join("build-info.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&variant).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("offline_mount"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&variant, stripped).unwrap();
    let suite = drill_file(
        dir.path(),
        variant.to_str().unwrap(),
        "recovers_within = 3\n[drill.path.offline]\n",
    );
    let out = dir.path().join("out");
    let output = run_tcg(&suite, &out, &["--allow-outside-paths"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Exit 3: infrastructure error (DESIGN.md), not a verdict on the driver.
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let run = run_json(&out);
    let offline = scenario(&run, "drill/recover-by-offline-removal");
    assert_eq!(offline["verdict"], "error", "{offline}");
    let reason = offline["reason"].as_str().unwrap();
    assert!(reason.contains("guest.offline_mount"), "{reason}");
    assert_no_vm_left(&run);
}
