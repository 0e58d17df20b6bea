//! CI shards: every scenario in exactly one shard, and merged shards equal one run.

use crate::common::*;

fn names(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn shards_cover_every_scenario_exactly_once() {
    let suite = DEMO_SUITES;
    let all = names(&run(&["run", suite, "--list"]));
    assert_eq!(all.len(), 8);
    for n in 1..=5 {
        let mut seen: Vec<String> = Vec::new();
        for k in 1..=n {
            let shard = format!("{k}/{n}");
            let out = run(&["run", suite, "--shard", &shard, "--list"]);
            assert_eq!(out.status.code(), Some(0));
            let again = names(&run(&["run", suite, "--shard", &shard, "--list"]));
            assert_eq!(names(&out), again, "the same split every time");
            seen.extend(names(&out));
        }
        seen.sort();
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(
            seen, expected,
            "{n} shards cover every scenario exactly once"
        );
    }
}

#[test]
fn merged_shards_equal_an_unsharded_run() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"sh\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a-pass\"\nsteps = [{ exec = { run = \"true\" } }]\n\n[[scenario]]\nname = \"b-fail\"\nsteps = [{ exec = { run = \"exit 4\" } }]\n\n[[scenario]]\nname = \"c-pass\"\nsteps = [{ exec = { run = \"test -d /system\" } }]\n",
    );
    let whole = dir.path().join("whole");
    let out = run_tcg(&suite, &whole, &[]);
    assert_eq!(out.status.code(), Some(1));
    let expected = verdicts(&run_json(&whole));
    assert_eq!(expected.len(), 3);

    // Four shards of three scenarios: one shard is empty and still a finished run.
    let mut shard_dirs = Vec::new();
    for k in 1..=4 {
        let out_dir = dir.path().join(format!("shard-{k}"));
        let shard = format!("{k}/4");
        let out = run_tcg(&suite, &out_dir, &["--shard", &shard]);
        let record = run_json(&out_dir);
        let code = if verdicts(&record).values().any(|v| v == "fail") {
            1
        } else {
            0
        };
        assert_eq!(out.status.code(), Some(code), "shard {shard}");
        shard_dirs.push(out_dir.join("latest").to_str().unwrap().to_string());
    }
    let merged = dir.path().join("merged");
    let key = dir.path().join("merge");
    assert_eq!(
        run(&["keygen", "--out", key.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let private = dir.path().join("merge.key");
    let public = dir.path().join("merge.pub");
    let mut args = vec!["merge"];
    args.extend(shard_dirs.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    args.extend(["--sign-key", private.to_str().unwrap()]);
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the merged run fails like the whole one"
    );
    let record = run_json(&merged);
    assert_eq!(verdicts(&record), expected);
    assert_eq!(record["summary"]["fail"], 1);
    assert_eq!(record["summary"]["pass"], 2);
    for file in ["junit.xml", "report.html", "manifest.json"] {
        assert!(merged.join("latest").join(file).is_file(), "{file}");
    }
    // The merged run is attested and signed; each shard's attestation is kept.
    let kept = std::fs::read_dir(merged.join("latest").join("shards"))
        .unwrap()
        .count();
    assert_eq!(kept, 4, "one attestation per shard");
    let verify = run(&[
        "verify",
        merged.join("latest").to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{said}");
    assert!(said.contains("signature verified"), "{said}");
}
