//! `bootgate verify`'s attestation half: the signature (with `--key`), every subject
//! against the files of the run folder (both ways: a file not attested, a subject
//! with no file, a digest that differs), and the attested inputs against the host's
//! files. manifest.json's own checks are `report::manifest::verify`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::result_file::{self, ResultFileError};
use crate::model::run_file::{ATTESTATION, MANIFEST_JSON};
use crate::report::manifest::{self, Manifest, Walked};
use crate::util::sha256_file;
use crate::util::signing::{Envelope, PublicKey, SignatureProblem, IN_TOTO_PAYLOAD_TYPE};

use super::{Statement, PREDICATE_TYPE, STATEMENT_TYPE};

/// How the attestation's origin stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Signed, and the signature verifies with the key given.
    Verified { keyid: String },
    /// Signed, but no key was given: the digests were checked, the signature not.
    NotChecked { keyids: Vec<String> },
    /// A bare statement.
    Unsigned,
    /// No attestation file (a run from before attestations, or one removed).
    Absent,
    /// The file is there but could not be read as an attestation, or the signature
    /// failed: see the findings.
    Broken,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Verified { keyid } => write!(f, "signed, signature verified (key id {keyid})"),
            Origin::NotChecked { keyids } => write!(
                f,
                "signed by key id {}; signature NOT checked: pass --key PUBKEY to check who signed it",
                keyids.join(", ")
            ),
            Origin::Unsigned => write!(
                f,
                "unsigned: it proves the files are unchanged since it was written, not who wrote it"
            ),
            Origin::Absent => write!(f, "no {ATTESTATION}: origin not checked"),
            Origin::Broken => write!(f, "{ATTESTATION} does not verify"),
        }
    }
}

/// One problem the attestation check found; each is a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `--key` was given but the run has no attestation.
    Missing,
    /// `--key` was given but the attestation is a bare statement.
    Unsigned,
    Signature(SignatureProblem),
    /// The file is not an attestation bootgate can read: why, naming the field.
    Invalid(String),
    /// A result file in the folder that no subject names.
    NotAttested(String),
    /// A subject that names no file in the folder.
    SubjectMissing(String),
    /// A subject whose sha256 is not the file's.
    Altered(String),
    /// A subject naming a path outside the run folder.
    Outside(String),
    /// An input whose file on this host has another sha256 than attested.
    InputChanged(String),
    /// A kept shard attestation (merged run) that names this key but does not verify,
    /// or cannot be read.
    Shard {
        path: String,
        why: String,
    },
    /// A scenario file of the merged run that differs from its shard's attestation.
    ShardAltered {
        shard: String,
        file: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => write!(
                f,
                "NOT ATTESTED   the run has no {ATTESTATION}, so there is no signature to check with --key"
            ),
            Problem::Unsigned => write!(
                f,
                "UNSIGNED  {ATTESTATION} is an unsigned statement: nothing to check --key against (sign runs with --sign-key)"
            ),
            Problem::Signature(why) => write!(f, "SIGNATURE {ATTESTATION}: {why}"),
            Problem::Invalid(why) => write!(f, "INVALID   {ATTESTATION}: {why}"),
            Problem::NotAttested(p) => write!(
                f,
                "NOT IN ATTESTATION  {p} (a result file the attestation's subjects do not list)"
            ),
            Problem::SubjectMissing(p) => write!(
                f,
                "ATTESTED BUT MISSING  {p} (a subject of the attestation with no such file)"
            ),
            Problem::Altered(p) => write!(
                f,
                "ALTERED   {p} (sha256 differs from the attestation's subject)"
            ),
            Problem::Outside(p) => write!(
                f,
                "OUTSIDE   {ATTESTATION} subject {p:?} is not inside the run folder"
            ),
            Problem::InputChanged(p) => write!(
                f,
                "INPUT CHANGED  {p} (sha256 differs from the attestation's)"
            ),
            Problem::Shard { path, why } => write!(f, "SHARD ATTESTATION {path}: {why}"),
            Problem::ShardAltered { shard, file } => write!(
                f,
                "ALTERED   {file} (sha256 differs from the shard's attestation {shard})"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub origin: Origin,
    pub problems: Vec<Problem>,
    /// What is worth saying but no failure: a merged run's shard attestations.
    pub notes: Vec<String>,
}

/// What the attestation file holds once parsed.
enum Parsed {
    Signed(Envelope, Statement),
    Unsigned(Statement),
}

/// `bootgate verify`: manifest.json's findings and the attestation's, from one walk
/// of the folder.
pub fn verify_run(
    run_dir: &Path,
    key: Option<&PublicKey>,
) -> Result<(Vec<manifest::Finding>, Checked), manifest::VerifyError> {
    let (findings, walked) = manifest::verify_walked(run_dir)?;
    let checked = verify_with(run_dir, key, &walked)?;
    Ok((findings, checked))
}

/// Checks `run_dir`'s attestation; `key` is `--key`'s public key.
pub fn verify(run_dir: &Path, key: Option<&PublicKey>) -> Result<Checked, manifest::VerifyError> {
    verify_with(run_dir, key, &manifest::walk_run_folder(run_dir)?)
}

fn verify_with(
    run_dir: &Path,
    key: Option<&PublicKey>,
    walked: &Walked,
) -> Result<Checked, manifest::VerifyError> {
    let text = match result_file::read_to_string(run_dir, Path::new(ATTESTATION)) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => {
            return Ok(Checked {
                origin: Origin::Absent,
                problems: key.map(|_| Problem::Missing).into_iter().collect(),
                notes: Vec::new(),
            })
        }
        Err(e @ ResultFileError::Io { .. }) => {
            return Ok(broken(Problem::Invalid(format!("cannot read it: {e}"))))
        }
        Err(e) => return Err(manifest::VerifyError::Unsafe(e)),
    };
    let parsed = match parse(&text) {
        Ok(parsed) => parsed,
        Err(why) => return Ok(broken(Problem::Invalid(why))),
    };
    let mut problems = Vec::new();
    let (origin, statement) = match (parsed, key) {
        (Parsed::Signed(envelope, statement), Some(key)) => match envelope.verify(key) {
            Ok(()) => (
                Origin::Verified {
                    keyid: key.keyid().to_string(),
                },
                statement,
            ),
            Err(why) => {
                problems.push(Problem::Signature(why));
                (Origin::Broken, statement)
            }
        },
        (Parsed::Signed(envelope, statement), None) => (
            Origin::NotChecked {
                keyids: envelope
                    .signatures
                    .iter()
                    .map(|s| s.keyid.clone())
                    .collect(),
            },
            statement,
        ),
        (Parsed::Unsigned(statement), Some(_)) => {
            problems.push(Problem::Unsigned);
            (Origin::Unsigned, statement)
        }
        (Parsed::Unsigned(statement), None) => (Origin::Unsigned, statement),
    };
    problems.extend(check_subjects(run_dir, &statement, walked));
    problems.extend(check_inputs(run_dir, &statement));
    let mut notes = Vec::new();
    for shard in &statement.predicate.shards {
        check_shard(run_dir, shard, key, walked, &mut notes, &mut problems);
    }
    Ok(Checked {
        origin,
        problems,
        notes,
    })
}

/// The statement an attestation file holds, signed or not, its signature unchecked:
/// for `merge`, which checks a shard's attestation against the shard's own files.
pub(crate) fn statement_in(text: &str) -> Result<Statement, String> {
    match parse(text)? {
        Parsed::Signed(_, statement) | Parsed::Unsigned(statement) => Ok(statement),
    }
}

fn broken(problem: Problem) -> Checked {
    Checked {
        origin: Origin::Broken,
        problems: vec![problem],
        notes: Vec::new(),
    }
}

/// The line as an envelope (it has `payloadType`) or a bare statement (`_type`).
fn parse(text: &str) -> Result<Parsed, String> {
    let line = text.trim_end_matches('\n');
    if line.contains('\n') {
        return Err("holds more than one line; bootgate writes one".into());
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("payloadType").is_some() {
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| format!("not a DSSE envelope: {e}"))?;
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(format!(
                "payloadType is {:?}, expected {IN_TOTO_PAYLOAD_TYPE:?}",
                envelope.payload_type
            ));
        }
        let body = envelope.body().map_err(|e| e.to_string())?;
        let statement = statement_of(&body)?;
        Ok(Parsed::Signed(envelope, statement))
    } else {
        Ok(Parsed::Unsigned(statement_of(line.as_bytes())?))
    }
}

fn statement_of(body: &[u8]) -> Result<Statement, String> {
    let statement: Statement = serde_json::from_slice(body)
        .map_err(|e| format!("not an in-toto statement of bootgate's predicate: {e}"))?;
    if statement.statement_type != STATEMENT_TYPE {
        return Err(format!(
            "_type is {:?}, expected {STATEMENT_TYPE:?}",
            statement.statement_type
        ));
    }
    if statement.predicate_type != PREDICATE_TYPE {
        return Err(format!(
            "predicateType is {:?}, expected {PREDICATE_TYPE:?}",
            statement.predicate_type
        ));
    }
    Ok(statement)
}

/// The subjects must be exactly the folder's result files (all but the attestation)
/// with their current sha256. Links and special files are `manifest::verify`'s
/// findings already and are not counted twice.
fn check_subjects(run_dir: &Path, statement: &Statement, walked: &Walked) -> Vec<Problem> {
    let mut files: BTreeMap<String, String> = walked
        .files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    if let Ok(sha256) = result_file::sha256(run_dir, Path::new(MANIFEST_JSON)) {
        files.insert(MANIFEST_JSON.to_string(), sha256);
    }
    let mut problems = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for subject in &statement.subject {
        if !crate::util::is_relative_below(Path::new(&subject.name)) {
            problems.push(Problem::Outside(subject.name.clone()));
            continue;
        }
        named.insert(subject.name.as_str());
        match files.get(&subject.name) {
            None if walked.irregular.contains(&subject.name) => {}
            None => problems.push(Problem::SubjectMissing(subject.name.clone())),
            Some(sha256) if *sha256 != subject.digest.sha256 => {
                problems.push(Problem::Altered(subject.name.clone()))
            }
            Some(_) => {}
        }
    }
    for path in files.keys() {
        if !named.contains(path.as_str()) {
            problems.push(Problem::NotAttested(path.clone()));
        }
    }
    problems
}

/// A merged run keeps each shard's attestation: with `--key`, one that names this key
/// must verify (one signed by another key is said, not failed: shards may sign with
/// keys of their own); and every scenario file it names that the merged run holds
/// must still have the shard's digest. The shard's top-level files (run.json, the
/// manifest, ...) were written anew by the merge and are not compared.
fn check_shard(
    run_dir: &Path,
    shard: &super::ShardAttestation,
    key: Option<&PublicKey>,
    walked: &Walked,
    notes: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) {
    let bad = |why: String| Problem::Shard {
        path: shard.path.clone(),
        why,
    };
    if !crate::util::is_relative_below(Path::new(&shard.path)) {
        problems.push(bad("not a path inside the run folder".into()));
        return;
    }
    let parsed = match result_file::read_to_string(run_dir, Path::new(&shard.path)) {
        Ok(text) => parse(&text),
        Err(e) => Err(e.to_string()),
    };
    let statement = match parsed {
        Err(why) => {
            problems.push(bad(why));
            return;
        }
        Ok(Parsed::Unsigned(statement)) => {
            notes.push(format!("shard {}: unsigned", shard.run_id));
            statement
        }
        Ok(Parsed::Signed(envelope, statement)) => {
            match key.map(|key| envelope.verify(key)) {
                None => notes.push(format!(
                    "shard {}: signed; signature not checked (no --key)",
                    shard.run_id
                )),
                Some(Ok(())) => notes.push(format!(
                    "shard {}: signed, signature verified",
                    shard.run_id
                )),
                Some(Err(SignatureProblem::KeyIdMismatch { found, .. })) => notes.push(format!(
                    "shard {}: signed by key id {found}, not by --key's: its signature not checked",
                    shard.run_id
                )),
                Some(Err(why)) => problems.push(bad(why.to_string())),
            }
            statement
        }
    };
    for subject in statement.subject.iter().filter(|s| s.name.contains('/')) {
        let now = walked.files.iter().find(|f| f.path == subject.name);
        if now.is_some_and(|f| f.sha256 != subject.digest.sha256) {
            problems.push(Problem::ShardAltered {
                shard: shard.path.clone(),
                file: subject.name.clone(),
            });
        }
    }
}

/// Each attested input that is on this host must have the attested sha256. One that
/// manifest.json records with that same sha256 is left to `manifest::verify`, which
/// names it already; inputs not on this host are its to mention too.
fn check_inputs(run_dir: &Path, statement: &Statement) -> Vec<Problem> {
    let manifest_inputs: BTreeMap<String, String> =
        result_file::read_to_string(run_dir, Path::new(MANIFEST_JSON))
            .ok()
            .and_then(|text| serde_json::from_str::<Manifest>(&text).ok())
            .map(|m| m.inputs.into_iter().map(|i| (i.path, i.sha256)).collect())
            .unwrap_or_default();
    let mut problems = Vec::new();
    for input in &statement.predicate.inputs {
        let file = Path::new(&input.path);
        if !file.is_file() || manifest_inputs.get(&input.path) == Some(&input.sha256) {
            continue;
        }
        if sha256_file(file).ok().as_deref() != Some(input.sha256.as_str()) {
            problems.push(Problem::InputChanged(input.path.clone()));
        }
    }
    problems
}
