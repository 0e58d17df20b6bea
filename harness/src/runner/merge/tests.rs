use super::*;
use crate::model::record::{ScenarioRecord, Verdict, VmArgv};
use crate::testing::records;

fn scenario(suite: &str, name: &str, verdict: Verdict) -> ScenarioRecord {
    let full = format!("{suite}/{name}");
    let mut rerun = records::rerun("/ci/elsewhere/results/run", &full);
    rerun.extend(["--out".into(), "/ci/elsewhere/results".into()]);
    ScenarioRecord {
        reason: (verdict != Verdict::Pass).then(|| "it crashed".into()),
        duration_ms: 1000,
        artifacts: vec![FileHash {
            path: format!("{full}/console.log"),
            sha256: crate::util::sha256_bytes(full.as_bytes()),
        }],
        rerun,
        ..records::scenario(suite, name, verdict)
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Fixture { _tmp: tmp, root }
    }

    /// Writes a finished shard run folder `root/<name>` the way the runner does.
    /// A shard of no `--shard` spec, run in the first minute of 2026, with no inputs.
    fn plain_shard(&self, name: &str, scenarios: Vec<ScenarioRecord>) -> PathBuf {
        self.shard(
            name,
            None,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:01:00Z",
            scenarios,
            Vec::new(),
        )
    }

    fn shard(
        &self,
        name: &str,
        spec: Option<&str>,
        started: &str,
        finished: &str,
        scenarios: Vec<ScenarioRecord>,
        inputs: Vec<FileHash>,
    ) -> PathBuf {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).unwrap();
        for s in &scenarios {
            fs::create_dir_all(dir.join(&s.dir)).unwrap();
            fs::write(dir.join(&s.dir).join("console.log"), s.name.as_bytes()).unwrap();
        }
        let mut command: Vec<String> = ["bootgate", "run", "scenarios"].map(String::from).to_vec();
        if let Some(spec) = spec {
            command.extend(["--shard".to_string(), spec.to_string()]);
        }
        let mut record = records::run(scenarios);
        record.run_id = format!("run-{name}");
        record.started_at = started.into();
        record.finished_at = Some(finished.into());
        record.command = command;
        record.settings.suites = vec![
            "/w/scenarios/alpha/suite.toml".into(),
            "/w/scenarios/beta/suite.toml".into(),
        ];
        record.host.hostname = format!("ci-{name}");
        record.qemu.argv = record
            .scenarios
            .iter()
            .map(|s| VmArgv {
                scenario: s.name.clone(),
                argv: vec!["qemu-system-x86_64".into()],
            })
            .collect();
        record.inputs = inputs;
        fs::write(
            dir.join(RUN_JSON),
            serde_json::to_vec_pretty(&record).unwrap(),
        )
        .unwrap();
        manifest::write(&record, &dir).unwrap();
        crate::report::attestation::write(&record, &dir, None, &[]).unwrap();
        dir
    }

    fn two_shards(&self) -> (PathBuf, PathBuf) {
        let input = |path: &str, sha: &str| FileHash {
            path: path.into(),
            sha256: sha.into(),
        };
        let one = self.shard(
            "shard-1",
            Some("1/2"),
            "2026-01-02T10:00:05Z",
            "2026-01-02T10:05:00Z",
            vec![
                scenario("alpha", "boot", Verdict::Pass),
                scenario("beta", "crash", Verdict::Fail),
            ],
            vec![input("/w/suite.toml", "aa"), input("/w/image.qcow2", "bb")],
        );
        let two = self.shard(
            "shard-2",
            Some("2/2"),
            "2026-01-02T10:00:01Z",
            "2026-01-02T10:04:00Z",
            vec![
                scenario("alpha", "update", Verdict::Error),
                scenario("beta", "recover", Verdict::Flaky),
            ],
            vec![input("/w/suite.toml", "aa"), input("/w/content.bin", "cc")],
        );
        (one, two)
    }
}

fn names(record: &RunRecord) -> Vec<&str> {
    record.scenarios.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn merges_two_shards_into_one_run() {
    let fx = Fixture::new();
    let (one, two) = fx.two_shards();
    let out = fx.root.join("merged");
    let command: Vec<String> = ["bootgate", "merge"]
        .into_iter()
        .map(String::from)
        .chain([two.display().to_string(), one.display().to_string()])
        .collect();
    // Given out of order, as a glob of shard-10, shard-2 would be.
    let (record, run_dir) = merge(&[two.clone(), one.clone()], &out, command).unwrap();

    // Suite order first, then shard order within a suite.
    assert_eq!(
        names(&record),
        ["alpha/boot", "alpha/update", "beta/crash", "beta/recover"]
    );
    assert_eq!(
        record.summary,
        Summary {
            pass: 1,
            fail: 1,
            error: 1,
            flaky: 1
        }
    );
    assert_eq!(record.banner(), "FAIL");
    assert_eq!(record.started_at, "2026-01-02T10:00:01Z");
    assert_eq!(record.finished_at.as_deref(), Some("2026-01-02T10:05:00Z"));
    assert!(!record.interrupted);
    assert_eq!(record.host.hostname, "ci-shard-1, ci-shard-2");
    assert_eq!(record.qemu.argv.len(), 4);
    let inputs: Vec<&str> = record.inputs.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        inputs,
        ["/w/suite.toml", "/w/image.qcow2", "/w/content.bin"]
    );
    assert_ne!(record.run_id, "run-shard-1");
    // The command names the resolved shard folders (their run ids).
    assert_eq!(record.command[2], absolute(&two));
    assert_eq!(record.command[3], absolute(&one));

    // Files copied, records on disk agree, rerun points at the merged run.
    for s in &record.scenarios {
        let log = fs::read_to_string(run_dir.join(&s.dir).join("console.log")).unwrap();
        assert_eq!(log, s.name);
        assert_eq!(s.rerun[2], absolute(&run_dir));
        assert_eq!(s.rerun[5], absolute(&out));
    }
    let on_disk: RunRecord =
        serde_json::from_str(&fs::read_to_string(run_dir.join(RUN_JSON)).unwrap()).unwrap();
    assert_eq!(names(&on_disk), names(&record));
    assert_eq!(on_disk.run_id, record.run_id);

    let junit = fs::read_to_string(run_dir.join(JUNIT_XML)).unwrap();
    for name in names(&record) {
        assert!(
            junit.contains(&format!("name=\"{name}\"")),
            "{name}: {junit}"
        );
    }
    assert!(run_dir.join(REPORT_HTML).is_file());
    let problems: Vec<_> = manifest::verify(&run_dir)
        .unwrap()
        .into_iter()
        .filter(|f| f.is_problem())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    // Nothing but the scenario folders came from the shards.
    let mut top: Vec<String> = fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            "alpha",
            "attestation.intoto.jsonl",
            "beta",
            "junit.xml",
            "manifest.json",
            "report.html",
            "run.json",
            "shards"
        ]
    );
    // Each shard's attestation is kept verbatim, listed by the manifest, named by
    // the merged attestation, and the merged run's attestation verifies.
    let mut kept: Vec<String> = fs::read_dir(run_dir.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    let shard_ids: Vec<String> = [&one, &two]
        .iter()
        .map(|d| {
            format!(
                "run-{}.intoto.jsonl",
                d.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    let mut expected = shard_ids.clone();
    expected.sort();
    assert_eq!(kept, expected);
    for (dir, name) in [&one, &two].iter().zip(&shard_ids) {
        assert_eq!(
            fs::read(dir.join("attestation.intoto.jsonl")).unwrap(),
            fs::read(run_dir.join("shards").join(name)).unwrap()
        );
    }
    let statement: crate::report::attestation::Statement = serde_json::from_str(
        &fs::read_to_string(run_dir.join("attestation.intoto.jsonl")).unwrap(),
    )
    .unwrap();
    assert_eq!(statement.predicate.shards.len(), 2);
    for kept in &statement.predicate.shards {
        assert!(
            statement.subject.iter().any(|s| s.name == kept.path),
            "{kept:?}"
        );
    }
    let checked = crate::report::attestation::verify::verify(&run_dir, None).unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert_eq!(
        fs::read_link(out.join("latest")).unwrap(),
        PathBuf::from(&record.run_id)
    );
}

#[test]
fn merging_twice_makes_two_runs() {
    let fx = Fixture::new();
    let (one, two) = fx.two_shards();
    let out = fx.root.join("merged");
    let dirs = [one, two];
    let (_, first) = merge(&dirs, &out, Vec::new()).unwrap();
    let (second_record, second) = merge(&dirs, &out, Vec::new()).unwrap();
    assert_ne!(first, second);
    assert!(first.join(RUN_JSON).is_file());
    assert_eq!(
        fs::read_link(out.join("latest")).unwrap(),
        PathBuf::from(&second_record.run_id)
    );
}

fn merge_err(dirs: &[PathBuf], out: &Path) -> String {
    let err = merge(dirs, out, Vec::new()).unwrap_err();
    assert!(err.is_usage(), "{err}");
    // A refused merge leaves nothing behind.
    let left: Vec<_> = fs::read_dir(out)
        .map(|d| d.collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    err.to_string()
}

#[test]
fn a_scenario_in_two_shards_is_refused_naming_both() {
    let fx = Fixture::new();
    let a = fx.plain_shard("a", vec![scenario("alpha", "boot", Verdict::Pass)]);
    let b = fx.plain_shard("b", vec![scenario("alpha", "boot", Verdict::Fail)]);
    let err = merge_err(&[a.clone(), b.clone()], &fx.root.join("out"));
    assert!(err.contains("alpha/boot"), "{err}");
    assert!(err.contains(&a.display().to_string()), "{err}");
    assert!(err.contains(&b.display().to_string()), "{err}");
}

#[test]
fn different_inputs_are_refused() {
    let fx = Fixture::new();
    let input = |sha: &str| {
        vec![FileHash {
            path: "/w/content.bin".into(),
            sha256: sha.into(),
        }]
    };
    let a = fx.shard(
        "a",
        None,
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:01:00Z",
        vec![scenario("alpha", "boot", Verdict::Pass)],
        input("11"),
    );
    let b = fx.shard(
        "b",
        None,
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:01:00Z",
        vec![scenario("alpha", "update", Verdict::Pass)],
        input("22"),
    );
    let err = merge_err(&[a, b], &fx.root.join("out"));
    assert!(err.contains("/w/content.bin"), "{err}");
    assert!(err.contains("must not be merged"), "{err}");
}

#[test]
fn a_folder_without_run_json_is_named() {
    let fx = Fixture::new();
    let (one, _) = fx.two_shards();
    let empty = fx.root.join("not-a-run");
    fs::create_dir_all(&empty).unwrap();
    let err = merge_err(&[one, empty.clone()], &fx.root.join("out"));
    assert!(err.contains(&empty.display().to_string()), "{err}");
    assert!(err.contains("run.json"), "{err}");
    assert!(merge_err(&[], &fx.root.join("out")).contains("shard-*/latest"));
}

#[test]
fn a_missing_or_repeated_shard_is_refused() {
    let fx = Fixture::new();
    let (one, two) = fx.two_shards();
    let err = merge_err(std::slice::from_ref(&one), &fx.root.join("out"));
    assert!(
        err.contains("shard 2/2") && err.contains("missing"),
        "{err}"
    );
    let err = merge_err(&[one.clone(), one.clone()], &fx.root.join("out"));
    assert!(err.contains("same run"), "{err}");
    let three = fx.shard(
        "shard-3",
        Some("2/3"),
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:01:00Z",
        vec![scenario("beta", "x", Verdict::Pass)],
        Vec::new(),
    );
    let err = merge_err(&[one, two, three], &fx.root.join("out"));
    assert!(err.contains("share N"), "{err}");
}

#[test]
fn evidence_altered_after_the_shard_ran_is_refused() {
    let fx = Fixture::new();
    let (one, two) = fx.two_shards();
    fs::write(one.join("beta/crash/console.log"), b"no crash here").unwrap();
    let err = merge_err(&[one.clone(), two.clone()], &fx.root.join("out"));
    assert!(err.contains("beta/crash/console.log"), "{err}");
    fs::remove_file(one.join("beta/crash/console.log")).unwrap();
    let err = merge_err(&[one, two], &fx.root.join("out"));
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn a_scenario_folder_outside_the_run_or_a_symlink_is_refused() {
    let fx = Fixture::new();
    let mut evil = scenario("alpha", "boot", Verdict::Pass);
    evil.dir = "../../etc".into();
    let a = fx.plain_shard("a", vec![scenario("alpha", "ok", Verdict::Pass)]);
    let mut record: RunRecord =
        serde_json::from_str(&fs::read_to_string(a.join(RUN_JSON)).unwrap()).unwrap();
    record.scenarios.push(evil);
    fs::write(a.join(RUN_JSON), serde_json::to_vec(&record).unwrap()).unwrap();
    let err = merge_err(&[a], &fx.root.join("out"));
    assert!(err.contains("../../etc"), "{err}");

    let b = fx.plain_shard("b", vec![scenario("alpha", "boot", Verdict::Pass)]);
    fs::remove_file(b.join(MANIFEST_JSON)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", b.join("alpha/boot/leak")).unwrap();
    let err = merge_err(&[b], &fx.root.join("out"));
    assert!(err.contains("leak") && err.contains("symlink"), "{err}");
}

/// A hostile shard: run.json or manifest.json as links, evidence paths and
/// manifest entries outside the folder, a linked scenario folder. Each is refused
/// naming the file (and field), before anything is written to --out.
#[test]
fn hostile_shards_are_refused_naming_file_and_field() {
    let fx = Fixture::new();
    let secret = fx.root.join("secret.json");
    let shard = |name: &str| {
        fx.shard(
            name,
            None,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:01:00Z",
            vec![scenario("alpha", "boot", Verdict::Fail)],
            Vec::new(),
        )
    };
    let out = fx.root.join("out");

    // run.json a link to a host file (here a valid record: it still is not read).
    let a = shard("a");
    fs::rename(a.join(RUN_JSON), &secret).unwrap();
    std::os::unix::fs::symlink(&secret, a.join(RUN_JSON)).unwrap();
    let err = merge_err(&[a], &out);
    assert!(err.contains("run.json") && err.contains("symlink"), "{err}");

    // manifest.json a link.
    let b = shard("b");
    let elsewhere = fx.root.join("manifest-elsewhere.json");
    fs::rename(b.join(MANIFEST_JSON), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, b.join(MANIFEST_JSON)).unwrap();
    let err = merge_err(&[b], &out);
    assert!(
        err.contains("manifest.json") && err.contains("symlink"),
        "{err}"
    );

    // An evidence path in run.json outside the folder.
    let c = shard("c");
    let mut record: RunRecord =
        serde_json::from_str(&fs::read_to_string(c.join(RUN_JSON)).unwrap()).unwrap();
    let mut crash = records::crash(1, "BUG");
    crash.screenshot = Some("/etc/shadow".into());
    record.scenarios[0].crashes = vec![crash];
    fs::write(c.join(RUN_JSON), serde_json::to_vec(&record).unwrap()).unwrap();
    let err = merge_err(&[c], &out);
    assert!(
        err.contains("run.json")
            && err.contains("scenarios[0].crashes[0].screenshot")
            && err.contains("/etc/shadow"),
        "{err}"
    );

    // A manifest entry climbing out.
    let d = shard("d");
    let path = d.join(MANIFEST_JSON);
    let mut m: Manifest = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    m.artifacts.push(FileHash {
        path: "alpha/boot/../../../secret.json".into(),
        sha256: String::new(),
    });
    fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = merge_err(&[d], &out);
    assert!(
        err.contains("manifest.json") && err.contains("artifacts["),
        "{err}"
    );

    // The scenario folder a link to a folder outside.
    let e = shard("e");
    let outside = fx.root.join("outside-folder");
    fs::rename(e.join("alpha/boot"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, e.join("alpha/boot")).unwrap();
    let err = merge_err(&[e], &out);
    assert!(
        err.contains("alpha/boot") && err.contains("symlink"),
        "{err}"
    );
}

#[test]
fn an_unfinished_shard_makes_the_merge_interrupted() {
    let fx = Fixture::new();
    let (one, two) = fx.two_shards();
    let mut record: RunRecord =
        serde_json::from_str(&fs::read_to_string(two.join(RUN_JSON)).unwrap()).unwrap();
    record.finished_at = None;
    fs::write(two.join(RUN_JSON), serde_json::to_vec(&record).unwrap()).unwrap();
    // Killed outright: no manifest, no attestation either.
    fs::remove_file(two.join(MANIFEST_JSON)).unwrap();
    fs::remove_file(two.join(crate::model::run_file::ATTESTATION)).unwrap();
    let (merged, _) = merge(&[one, two], &fx.root.join("out"), Vec::new()).unwrap();
    assert!(merged.interrupted);
    assert_eq!(merged.finished_at, None);
    assert_eq!(merged.banner(), "INTERRUPTED");
}

#[test]
fn helpers_pick_times_and_positions() {
    let times = ["2026-01-02T10:00:00.5Z", "garbage", "2026-01-02T09:59:59Z"];
    assert_eq!(
        pick_time(times.into_iter(), false).as_deref(),
        Some(times[2])
    );
    assert_eq!(
        pick_time(times.into_iter(), true).as_deref(),
        Some(times[0])
    );
    let suites = ["/w/a/suite.toml".to_string(), "/w/b/suite.toml".to_string()];
    assert_eq!(suite_position("./b/suite.toml", &suites), 1);
    assert_eq!(suite_position("/w/a/suite.toml", &suites), 0);
    assert_eq!(suite_position("c/suite.toml", &suites), 2);
    assert_eq!(
        shard_spec(&["run".into(), "--shard=3/5".into()]),
        Some(Shard { index: 3, total: 5 })
    );
    assert_eq!(shard_spec(&["--shard-timings".into(), "x".into()]), None);
    assert!(!is_plain_relative("/abs") && !is_plain_relative("a/../b") && !is_plain_relative(""));
    assert!(is_plain_relative("suite/scenario"));
}

/// A shard whose run.json was edited (a fail turned into a pass) and whose
/// manifest.json was regenerated to match, as anyone can: its attestation, written
/// when it ran, no longer vouches for it, and the merge is refused naming both.
#[test]
fn a_shard_whose_results_no_longer_match_its_attestation_is_refused() {
    let fx = Fixture::new();
    let a = fx.plain_shard("a", vec![scenario("alpha", "boot", Verdict::Fail)]);
    let mut record: RunRecord =
        serde_json::from_str(&fs::read_to_string(a.join(RUN_JSON)).unwrap()).unwrap();
    record.scenarios[0].verdict = Verdict::Pass;
    fs::write(a.join(RUN_JSON), serde_json::to_vec(&record).unwrap()).unwrap();
    manifest::write(&record, &a).unwrap();
    let out = fx.root.join("out");
    let err = merge_err(&[a], &out);
    assert!(
        err.contains("a/run.json") && err.contains("attestation.intoto.jsonl"),
        "{err}"
    );
    assert!(
        fs::read_dir(&out).map_or(true, |d| d
            .filter_map(Result::ok)
            .all(|e| e.file_name() == "latest")),
        "a refused merge left a run folder"
    );
}

/// A merged run of signed shards: `verify --key` checks each kept shard attestation
/// too; a scenario file changed in the merged folder is named against the shard's
/// attestation, and a kept shard attestation edited is named as not verifying.
#[test]
fn verify_checks_the_kept_shard_attestations_of_a_merged_run() {
    use crate::report::attestation::verify::{verify, Problem};
    use crate::util::signing::{keygen, PublicKey, Signer};
    let fx = Fixture::new();
    let (one, two) = fx.two_shards();
    let (private, public, _) = keygen(&fx.root.join("ci")).unwrap();
    let signer = Signer::read(&private).unwrap();
    let key = PublicKey::read(&public).unwrap();
    for shard in [&one, &two] {
        let record: RunRecord =
            serde_json::from_str(&fs::read_to_string(shard.join(RUN_JSON)).unwrap()).unwrap();
        crate::report::attestation::write(&record, shard, Some(&signer), &[]).unwrap();
    }
    let (_, run_dir) =
        merge_signed(&[one, two], &fx.root.join("out"), Vec::new(), Some(&signer)).unwrap();
    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert_eq!(
        checked
            .notes
            .iter()
            .filter(|n| n.ends_with("signed, signature verified"))
            .count(),
        2,
        "{:?}",
        checked.notes
    );

    let log = run_dir.join("alpha/boot/console.log");
    fs::write(&log, b"changed").unwrap();
    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert!(
        checked.problems.iter().any(|p| matches!(p,
            Problem::ShardAltered { file, .. } if file == "alpha/boot/console.log")),
        "{:?}",
        checked.problems
    );

    let kept = fs::read_dir(run_dir.join("shards"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut envelope: crate::util::signing::Envelope =
        serde_json::from_str(&fs::read_to_string(&kept).unwrap()).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sig = b64.decode(&envelope.signatures[0].sig).unwrap();
    sig[0] ^= 0x01;
    envelope.signatures[0].sig = b64.encode(sig);
    fs::write(&kept, serde_json::to_vec(&envelope).unwrap()).unwrap();
    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert!(
        checked
            .problems
            .iter()
            .any(|p| matches!(p, Problem::Shard { why, .. } if why.contains("does not verify"))),
        "{:?}",
        checked.problems
    );
}
