//! `bootgate rollout` on the demo guest: the good content is promoted through both
//! rings (canary, then a fleet of two machine configurations); the 21-field content
//! crashes the canary and the rollout halts there, with its evidence.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn rollout_json(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("latest/rollout.json")).unwrap())
        .unwrap()
}

#[test]
fn the_21_field_content_halts_at_the_canary() {
    demo_manifest();
    let demo = Path::new(DEMO_SUITES);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("rollout");
    let out = run(&[
        "rollout",
        demo.join("rollout-cf291.toml").to_str().unwrap(),
        "--accel",
        "tcg",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report = rollout_json(&out_dir);
    assert_eq!(report["halted_at"], "canary", "{report:#}");
    assert_eq!(report["promoted"].as_array().unwrap().len(), 0);
    let rings = report["rings"].as_array().unwrap();
    assert_eq!(rings.len(), 1, "the fleet never ran");
    assert_eq!(rings[0]["outcome"], "halted");
    let reason = rings[0]["reason"].as_str().unwrap();
    assert!(reason.contains("sensor_match_fields"), "{reason}");
    // The canary's own run has the evidence.
    let run_dir = Path::new(rings[0]["targets"][0]["run_dir"].as_str().unwrap());
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["scenarios"][0]["verdict"], "fail");
    assert!(run_dir.join("report.html").is_file());
    assert_no_vm_left(&record);
    assert!(report["total_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn good_content_is_promoted_through_both_rings() {
    demo_manifest();
    let demo = Path::new(DEMO_SUITES);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("rollout");
    let out = run(&[
        "rollout",
        demo.join("rollout-good.toml").to_str().unwrap(),
        "--accel",
        "tcg",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let report = rollout_json(&out_dir);
    assert!(report["halted_at"].is_null(), "{report:#}");
    assert_eq!(report["promoted"], serde_json::json!(["canary", "fleet"]));
    let fleet = &report["rings"][1];
    assert_eq!(fleet["targets"].as_array().unwrap().len(), 2);
    for target in fleet["targets"].as_array().unwrap() {
        assert_eq!(target["pass"], 1, "{target:#}");
        let run_dir = Path::new(target["run_dir"].as_str().unwrap());
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap())
                .unwrap();
        let argv = record["qemu"]["argv"][0]["argv"].to_string();
        match target["target"].as_str().unwrap() {
            "384mib" => assert!(argv.contains("\"-m\",\"384\""), "{argv}"),
            "2cpu" => assert!(argv.contains("\"-smp\",\"2\""), "{argv}"),
            other => panic!("unexpected target {other}"),
        }
        // The soak: the last step is the observation.
        let steps = record["scenarios"][0]["steps"].as_array().unwrap();
        assert_eq!(steps.last().unwrap()["kind"], "observe");
        assert_no_vm_left(&record);
    }
}
