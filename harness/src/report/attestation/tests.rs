use super::verify::{verify, Origin, Problem};
use super::*;
use crate::model::record::FileHash;
use crate::testing::records;
use crate::util::signing::{keygen, Envelope, PublicKey};
use crate::util::{sha256_file, write_atomic};

/// A finished run folder: run.json, a scenario's console log, manifest.json; one
/// input (a suite file) beside it. Returns (tempdir, run_dir, record).
fn run_folder() -> (tempfile::TempDir, PathBuf, RunRecord) {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, b"[suite]\n").unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(run_dir.join("demo/boot")).unwrap();
    let mut scenario = records::scenario("demo", "boot", Verdict::Fail);
    scenario.crashes = vec![records::crash(
        1,
        "BUG: unable to handle page fault in sensor_parse_field",
    )];
    let mut run = records::run(vec![scenario]);
    run.inputs = vec![FileHash {
        path: suite.display().to_string(),
        sha256: sha256_file(&suite).unwrap(),
    }];
    run.input_kinds
        .insert(suite.display().to_string(), "suite".into());
    run.qemu.argv = vec![VmArgv {
        scenario: "demo/boot".into(),
        argv: vec!["qemu-system-x86_64".into(), "-accel".into(), "tcg".into()],
    }];
    std::fs::write(run_dir.join("run.json"), serde_json::to_vec(&run).unwrap()).unwrap();
    std::fs::write(run_dir.join("demo/boot/console.log"), b"boot\n").unwrap();
    manifest::write(&run, &run_dir).unwrap();
    (dir, run_dir, run)
}

#[test]
fn the_statement_lists_every_result_file_and_the_manifest_and_holds_the_run() {
    let (_dir, run_dir, run) = run_folder();
    let statement = statement(&run, &run_dir, &[]).unwrap();
    assert_eq!(statement.statement_type, "https://in-toto.io/Statement/v1");
    assert_eq!(statement.predicate_type, PREDICATE_TYPE);
    let names: Vec<&str> = statement.subject.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["demo/boot/console.log", "manifest.json", "run.json"]
    );
    let manifest_subject = &statement.subject[1];
    assert_eq!(
        manifest_subject.digest.sha256,
        sha256_file(&run_dir.join(MANIFEST_JSON)).unwrap()
    );

    let p = &statement.predicate;
    assert_eq!(p.outcome, "FAIL");
    assert_eq!(p.inputs[0].kind.as_deref(), Some("suite"));
    assert_eq!(p.qemu.command_lines[0].argv[0], "qemu-system-x86_64");
    assert_eq!(
        p.qemu.version.as_deref(),
        Some("QEMU emulator version 7.2.0")
    );
    assert_eq!(p.accelerator.used.as_deref(), Some("tcg"));
    assert_eq!(p.scenarios[0].name, "demo/boot");
    assert_eq!(p.scenarios[0].verdict, Verdict::Fail);
    assert_eq!(
        p.scenarios[0].crashes,
        ["BUG: unable to handle page fault in sensor_parse_field"]
    );

    // Written: one line; the manifest still does not list it, and an unsigned run
    // verifies, saying it is unsigned.
    let written = write(&run, &run_dir, None, &[]).unwrap();
    assert_eq!(written.keyid, None);
    assert!(written.line().contains("unsigned"), "{}", written.line());
    let text = std::fs::read_to_string(run_dir.join(ATTESTATION)).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.starts_with("{\"_type\":\"https://in-toto.io/Statement/v1\""));
    assert!(crate::report::manifest::verify(&run_dir)
        .unwrap()
        .is_empty());
    let checked = verify(&run_dir, None).unwrap();
    assert_eq!(checked.origin, Origin::Unsigned);
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
}

#[test]
fn a_signed_attestation_verifies_and_each_tampering_is_named() {
    let (dir, run_dir, run) = run_folder();
    let (private, public, keyid) = keygen(&dir.path().join("k")).unwrap();
    let signer = Signer::read(&private).unwrap();
    let key = PublicKey::read(&public).unwrap();
    let written = write(&run, &run_dir, Some(&signer), &[]).unwrap();
    assert_eq!(written.keyid.as_deref(), Some(keyid.as_str()));

    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert_eq!(
        checked.origin,
        Origin::Verified {
            keyid: keyid.clone()
        }
    );
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    let unchecked = verify(&run_dir, None).unwrap();
    assert!(matches!(unchecked.origin, Origin::NotChecked { .. }));
    assert!(unchecked.origin.to_string().contains("NOT checked"));

    // A flipped byte in a result file.
    let log = run_dir.join("demo/boot/console.log");
    std::fs::write(&log, b"boot!\n").unwrap();
    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert_eq!(
        checked.problems,
        [Problem::Altered("demo/boot/console.log".into())]
    );
    std::fs::write(&log, b"boot\n").unwrap();

    // A re-signed statement with a subject dropped, one added and one digest wrong:
    // the signature is good, the subjects are not.
    let mut statement = statement(&run, &run_dir, &[]).unwrap();
    statement.subject.retain(|s| s.name != "run.json");
    statement
        .subject
        .push(subject_of("planted.txt".into(), "00".repeat(32)));
    statement.subject[0].digest.sha256 = "11".repeat(32);
    write_atomic(
        &run_dir.join(ATTESTATION),
        &encode(&statement, Some(&signer)).unwrap(),
    )
    .unwrap();
    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert_eq!(
        checked.origin,
        Origin::Verified {
            keyid: keyid.clone()
        }
    );
    assert!(checked
        .problems
        .contains(&Problem::NotAttested("run.json".into())));
    assert!(checked
        .problems
        .contains(&Problem::SubjectMissing("planted.txt".into())));
    assert!(checked
        .problems
        .contains(&Problem::Altered("demo/boot/console.log".into())));

    // A statement edited without the key: the signature no longer verifies.
    let text = std::fs::read_to_string(run_dir.join(ATTESTATION)).unwrap();
    let mut envelope: Envelope = serde_json::from_str(&text).unwrap();
    let body = envelope.body().unwrap();
    let edited = String::from_utf8(body).unwrap().replace("FAIL", "PASS");
    envelope.payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, edited);
    std::fs::write(
        run_dir.join(ATTESTATION),
        serde_json::to_vec(&envelope).unwrap(),
    )
    .unwrap();
    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert!(
        matches!(
            checked.problems[0],
            Problem::Signature(crate::util::signing::SignatureProblem::Invalid { .. })
        ),
        "{:?}",
        checked.problems
    );

    // --key on an unsigned run: named, not passed.
    write(&run, &run_dir, None, &[]).unwrap();
    let checked = verify(&run_dir, Some(&key)).unwrap();
    assert_eq!(checked.problems, [Problem::Unsigned]);
    assert!(checked.problems[0].to_string().contains("unsigned"));
}

#[test]
fn a_changed_input_and_a_missing_or_foreign_file_are_named() {
    let (dir, run_dir, run) = run_folder();
    write(&run, &run_dir, None, &[]).unwrap();
    // manifest.json says what the run read; an attestation that was given other
    // inputs than the manifest (a doctored manifest re-hashed) names the input.
    let mut other = run.clone();
    let suite = dir.path().join("suite.toml");
    other.inputs[0].sha256 = "22".repeat(32);
    write(&other, &run_dir, None, &[]).unwrap();
    let checked = verify(&run_dir, None).unwrap();
    assert_eq!(
        checked.problems,
        [Problem::InputChanged(suite.display().to_string())]
    );

    std::fs::write(run_dir.join(ATTESTATION), b"not json\n").unwrap();
    let checked = verify(&run_dir, None).unwrap();
    assert_eq!(checked.origin, Origin::Broken);
    assert!(matches!(&checked.problems[0], Problem::Invalid(why) if why.contains("not JSON")));

    let mut foreign = statement(&run, &run_dir, &[]).unwrap();
    foreign.predicate_type = "https://slsa.dev/provenance/v1".into();
    std::fs::write(run_dir.join(ATTESTATION), encode(&foreign, None).unwrap()).unwrap();
    let checked = verify(&run_dir, None).unwrap();
    assert!(
        matches!(&checked.problems[0], Problem::Invalid(why) if why.contains("predicateType")),
        "{:?}",
        checked.problems
    );

    std::fs::remove_file(run_dir.join(ATTESTATION)).unwrap();
    assert_eq!(verify(&run_dir, None).unwrap().origin, Origin::Absent);
    assert!(verify(&run_dir, None).unwrap().problems.is_empty());
}
