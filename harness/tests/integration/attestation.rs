//! Signed run attestations on a real run of the demo guest: keygen, a signed run
//! that verifies with its key and fails naming the reason for a flipped byte, a
//! changed input, a wrong key and a re-signed statement whose subjects are not the
//! run's files; an unsigned run that says so; and an independent verifier
//! (securesystemslib and cryptography under Debian's /usr/bin/python3) that accepts
//! the envelope and rejects a flipped byte. Two runs from the saved state: two boots.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{bootgate, demo_manifest, write};

/// Debian's interpreter, where apt puts python3-securesystemslib; not whatever
/// python3 comes first on PATH.
const PYTHON: &str = "/usr/bin/python3";
const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/attestation_verify.py"
);

fn bootgate_env(args: &[&str], sign_key_env: Option<&Path>) -> Output {
    let mut command = bootgate();
    command.args(args).env_remove("BOOTGATE_SIGN_KEY");
    if let Some(key) = sign_key_env {
        command.env("BOOTGATE_SIGN_KEY", key);
    }
    let output = command.output().expect("bootgate runs");
    eprintln!(
        "$ bootgate {}\n--- exit {:?}; stdout:\n{}--- stderr:\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The independent verifier; fails the test, saying what to install, when its
/// packages are missing.
fn python(args: &[&str]) -> Output {
    let output = Command::new(PYTHON)
        .arg(VERIFIER)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {PYTHON}: {e}: apt-get install python3 (or run tools/host-setup)")
        });
    let said = text(&output);
    eprintln!("$ {PYTHON} {VERIFIER} {}\n{said}", args.join(" "));
    assert_ne!(
        output.status.code(),
        Some(3),
        "the independent verifier is not installed: {said}"
    );
    output
}

fn verify(run_dir: &Path, key: Option<&Path>) -> Output {
    let mut args = vec!["verify", s(run_dir)];
    if let Some(key) = key {
        args.extend(["--key", s(key)]);
    }
    bootgate_env(&args, None)
}

#[test]
fn attestation_signed_verifies_and_names_each_tampering_unsigned_says_so() {
    demo_manifest();
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "suite.toml",
        "[suite]\nname = \"att\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"boots\"\nsteps = [{ exec = { run = \"echo attested\" } }]\n",
    );

    // keygen: a pair, the private key 0600, never overwritten.
    let prefix = dir.path().join("ci");
    let out = bootgate_env(&["keygen", "--out", s(&prefix)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let private = dir.path().join("ci.key");
    let public = dir.path().join("ci.pub");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let keyid = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("key id:").map(|k| k.trim().to_string()))
        .expect("keygen prints the key id");
    let again = bootgate_env(&["keygen", "--out", s(&prefix)], None);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again).contains("never overwrites"),
        "{}",
        text(&again)
    );

    // A bad key is a usage error before any VM starts, naming the file.
    let results = dir.path().join("results");
    for (key, what) in [(&public, "this is a public key"), (&suite, "no PEM block")] {
        let out = bootgate_env(
            &[
                "run",
                s(&suite),
                "--accel",
                "tcg",
                "--out",
                s(&results),
                "--sign-key",
                s(key),
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(s(key)) && text(&out).contains(what),
            "{}",
            text(&out)
        );
    }
    let garbage = write(dir.path(), "garbage.key", "nope\n");
    let out = bootgate_env(
        &["run", s(&suite), "--accel", "tcg", "--out", s(&results)],
        Some(&garbage),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("BOOTGATE_SIGN_KEY: ") && text(&out).contains("garbage.key"),
        "{}",
        text(&out)
    );
    assert!(!results.exists(), "a refused key left a run folder");

    // A signed run (the key from the environment).
    let out = bootgate_env(
        &["run", s(&suite), "--accel", "tcg", "--out", s(&results)],
        Some(&private),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("(signed, key id {keyid})")),
        "{}",
        text(&out)
    );
    let run_dir = std::fs::canonicalize(results.join("latest")).unwrap();
    let attestation = run_dir.join("attestation.intoto.jsonl");
    let envelope: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&attestation).unwrap()).unwrap();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(envelope["signatures"][0]["keyid"], keyid.as_str());
    let manifest = std::fs::read_to_string(run_dir.join("manifest.json")).unwrap();
    assert!(!manifest.contains("attestation.intoto.jsonl"), "{manifest}");

    let out = verify(&run_dir, Some(&public));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("signature verified"), "{}", text(&out));
    let out = verify(&run_dir, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("NOT checked"), "{}", text(&out));

    // The independent verifier accepts it, and rejects a flipped byte of the payload.
    let out = python(&["verify", s(&run_dir), s(&public)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("OK signature by key id {keyid}")));
    let good = std::fs::read(&attestation).unwrap();
    let mut flipped = envelope.clone();
    let mut body = base64_decode(envelope["payload"].as_str().unwrap());
    let at = body.len() / 2;
    body[at] ^= 0x01;
    flipped["payload"] = base64_encode(&body).into();
    std::fs::write(&attestation, flipped.to_string()).unwrap();
    let out = python(&["verify", s(&run_dir), s(&public)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("REJECTED"), "{}", text(&out));
    let out = verify(&run_dir, Some(&public));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not verify with this key"),
        "{}",
        text(&out)
    );
    std::fs::write(&attestation, &good).unwrap();

    // A wrong key.
    let other = dir.path().join("other");
    assert_eq!(
        bootgate_env(&["keygen", "--out", s(&other)], None)
            .status
            .code(),
        Some(0)
    );
    let out = verify(&run_dir, Some(&dir.path().join("other.pub")));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not by this key") && text(&out).contains(&keyid),
        "{}",
        text(&out)
    );
    let out = python(&["verify", s(&run_dir), s(&dir.path().join("other.pub"))]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // A flipped byte in a result file (run.json's verdict), and a byte added to the
    // scenario's console log (empty: the guest restored from the saved state said
    // nothing): each named, by the manifest and by the attestation.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap()).unwrap();
    let scenario_dir = record["scenarios"][0]["dir"].as_str().unwrap().to_string();
    let console = format!("{scenario_dir}/console.log");
    let run_json = run_dir.join("run.json");
    let original_record = std::fs::read(&run_json).unwrap();
    let mut changed = original_record.clone();
    let at = String::from_utf8_lossy(&changed)
        .find("\"verdict\": \"pass\"")
        .expect("run.json holds the verdict")
        + "\"verdict\": \"".len();
    changed[at] ^= 0x01;
    std::fs::write(&run_json, &changed).unwrap();
    let console_path = run_dir.join(&console);
    let original = std::fs::read(&console_path).unwrap();
    let mut grown = original.clone();
    grown.push(b'x');
    std::fs::write(&console_path, &grown).unwrap();
    let out = verify(&run_dir, Some(&public));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for file in ["run.json", console.as_str()] {
        assert!(
            text(&out).contains(&format!(
                "ALTERED   {file} (sha256 differs from the attestation's subject)"
            )),
            "{file}: {}",
            text(&out)
        );
    }
    std::fs::write(&run_json, &original_record).unwrap();
    std::fs::write(&console_path, &original).unwrap();
    assert_eq!(verify(&run_dir, Some(&public)).status.code(), Some(0));

    // Re-signed with the right key (by Python's cryptography, not bootgate), but
    // its subjects leave run.json out: the signature holds, the subjects do not.
    let out = python(&["resign", s(&run_dir), s(&private)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = verify(&run_dir, Some(&public));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("signature verified"), "{}", text(&out));
    assert!(
        text(&out).contains("NOT IN ATTESTATION  run.json"),
        "{}",
        text(&out)
    );
    std::fs::write(&attestation, &good).unwrap();

    // A changed input: the suite file, named.
    let suite_text = std::fs::read_to_string(&suite).unwrap();
    std::fs::write(&suite, format!("{suite_text}# edited\n")).unwrap();
    let out = verify(&run_dir, Some(&public));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "INPUT CHANGED  {}",
            s(&std::fs::canonicalize(&suite).unwrap())
        )) || text(&out).contains(&format!("INPUT CHANGED  {}", s(&suite))),
        "{}",
        text(&out)
    );
    std::fs::write(&suite, suite_text).unwrap();

    // Unsigned: says so when written and when verified; --key refuses it.
    let unsigned_results = dir.path().join("unsigned");
    let out = bootgate_env(
        &[
            "run",
            s(&suite),
            "--accel",
            "tcg",
            "--out",
            s(&unsigned_results),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("(unsigned:"), "{}", text(&out));
    let unsigned_dir: PathBuf = std::fs::canonicalize(unsigned_results.join("latest")).unwrap();
    let line = std::fs::read_to_string(unsigned_dir.join("attestation.intoto.jsonl")).unwrap();
    let statement: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        statement["predicateType"],
        "https://bootgate.dev/attestation/run/v1"
    );
    let predicate = &statement["predicate"];
    assert_eq!(predicate["scenarios"][0]["verdict"], "pass");
    assert_eq!(predicate["accelerator"]["used"], "tcg");
    assert!(predicate["qemu"]["version"]
        .as_str()
        .unwrap()
        .contains("QEMU"));
    assert!(!predicate["qemu"]["command_lines"][0]["argv"]
        .as_array()
        .unwrap()
        .is_empty());
    let kinds: Vec<&str> = predicate["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    for kind in ["suite", "image", "kernel"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let out = verify(&unsigned_dir, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("attestation: unsigned"),
        "{}",
        text(&out)
    );
    let out = verify(&unsigned_dir, Some(&public));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("UNSIGNED"), "{}", text(&out));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
