//! `attestation.intoto.jsonl`: an in-toto Statement v1 saying "this run, with these
//! inputs, produced these result files" (docs/attestation.md). Its subjects are every
//! file manifest.json lists plus manifest.json itself; its predicate
//! ([`PREDICATE_TYPE`]) holds the inputs by kind, QEMU's version and command lines,
//! the accelerator, bootgate's version and each scenario's verdict and crash titles.
//! With a signing key the line is a DSSE envelope signed with Ed25519; without, the
//! bare statement.
//!
//! Written last, once, atomically: after manifest.json (which it vouches for), and
//! never listed by manifest.json or by itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::record::{RunRecord, Verdict, VmArgv};
use crate::model::result_file;
use crate::model::run_file::{ATTESTATION, MANIFEST_JSON};
use crate::model::Event;
use crate::model::{ReportError, Sink};
use crate::report::manifest::{self, Manifest};
use crate::util::signing::{Signer, IN_TOTO_PAYLOAD_TYPE};
use crate::util::write_atomic;

pub mod verify;

/// in-toto's Statement layer, version 1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// bootgate's run predicate. A change of a field's meaning or a removed field is a
/// new version (…/v2); fields may be added within v1.
pub const PREDICATE_TYPE: &str = "https://bootgate.dev/attestation/run/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

/// One result file: its path relative to the run folder and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: SubjectDigest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectDigest {
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Predicate {
    pub run_id: String,
    pub bootgate_version: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub interrupted: bool,
    /// PASS, FAIL, ERROR or INTERRUPTED: the run as a whole.
    pub outcome: String,
    /// The bootgate command line.
    pub command: Vec<String>,
    pub accelerator: Accelerator,
    pub qemu: Qemu,
    pub inputs: Vec<Input>,
    pub scenarios: Vec<ScenarioVerdict>,
    /// A merged run: each shard's own attestation, copied into this run folder (and
    /// so among the subjects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardAttestation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accelerator {
    /// What the command asked for: auto, kvm or tcg.
    pub requested: String,
    /// What the VMs ran with.
    pub used: Option<String>,
    pub notice: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Qemu {
    pub version: Option<String>,
    pub command_lines: Vec<VmArgv>,
}

/// A file the run read, on the host that ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub path: String,
    /// suite, image, kernel, firmware, driver, content or timings.
    pub kind: Option<String>,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioVerdict {
    /// "suite/scenario".
    pub name: String,
    pub verdict: Verdict,
    pub reason: Option<String>,
    /// The title of every crash seen, in order.
    pub crashes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAttestation {
    pub run_id: String,
    /// In this run folder, e.g. `shards/<run-id>.intoto.jsonl`.
    pub path: String,
}

/// What was written, for the terminal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// The signing key's id; None: unsigned.
    pub keyid: Option<String>,
}

impl Written {
    /// One line for the run's summary.
    pub fn line(&self) -> String {
        match &self.keyid {
            Some(keyid) => format!(
                "  attestation: {} (signed, key id {keyid})",
                self.path.display()
            ),
            None => format!(
                "  attestation: {} (unsigned: pass --sign-key FILE or set BOOTGATE_SIGN_KEY to sign it)",
                self.path.display()
            ),
        }
    }
}

/// The statement of a run whose manifest.json is written: subjects are what it
/// lists, plus the manifest itself.
pub fn statement(
    run: &RunRecord,
    run_dir: &Path,
    shards: &[ShardAttestation],
) -> Result<Statement, ReportError> {
    let unreadable = |path: PathBuf, message: String| ReportError::Write {
        path,
        source: std::io::Error::other(message),
    };
    let manifest_path = run_dir.join(MANIFEST_JSON);
    let mut subject: Vec<Subject> =
        match result_file::read_to_string(run_dir, Path::new(MANIFEST_JSON)) {
            Ok(text) => {
                let listed: Manifest = serde_json::from_str(&text).map_err(|e| {
                    unreadable(manifest_path.clone(), format!("not a manifest: {e}"))
                })?;
                let mut files: Vec<Subject> = listed
                    .artifacts
                    .into_iter()
                    .map(|f| subject_of(f.path, f.sha256))
                    .collect();
                files.push(subject_of(
                    MANIFEST_JSON.to_string(),
                    crate::util::sha256_bytes(text.as_bytes()),
                ));
                files
            }
            // No manifest (its sink failed): the folder as it is.
            Err(e) if e.is_not_found() => manifest::hash_run_folder(run_dir)?
                .into_iter()
                .map(|f| subject_of(f.path, f.sha256))
                .collect(),
            Err(e) => return Err(unreadable(manifest_path, e.to_string())),
        };
    subject.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Statement {
        statement_type: STATEMENT_TYPE.to_string(),
        subject,
        predicate_type: PREDICATE_TYPE.to_string(),
        predicate: predicate(run, shards),
    })
}

fn subject_of(name: String, sha256: String) -> Subject {
    Subject {
        name,
        digest: SubjectDigest { sha256 },
    }
}

fn predicate(run: &RunRecord, shards: &[ShardAttestation]) -> Predicate {
    Predicate {
        run_id: run.run_id.clone(),
        bootgate_version: run.bootgate_version.clone(),
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        interrupted: run.interrupted,
        outcome: run.banner().to_string(),
        command: run.command.clone(),
        accelerator: Accelerator {
            requested: run.settings.accel.clone(),
            used: run.qemu.accel.clone(),
            notice: run.qemu.accel_notice.clone(),
        },
        qemu: Qemu {
            version: run.qemu.version.clone(),
            command_lines: run.qemu.argv.clone(),
        },
        inputs: run
            .inputs
            .iter()
            .map(|i| Input {
                path: i.path.clone(),
                kind: run.input_kinds.get(&i.path).cloned(),
                sha256: i.sha256.clone(),
            })
            .collect(),
        scenarios: run
            .scenarios
            .iter()
            .map(|s| ScenarioVerdict {
                name: s.name.clone(),
                verdict: s.verdict,
                reason: s.reason.clone(),
                crashes: s.crashes.iter().map(|c| c.title.clone()).collect(),
            })
            .collect(),
        shards: shards.to_vec(),
    }
}

/// The file's one line: the statement, or a DSSE envelope of it when signed.
pub fn encode(statement: &Statement, signer: Option<&Signer>) -> Result<Vec<u8>, ReportError> {
    let encode_error = |e: serde_json::Error| ReportError::Encode {
        what: ATTESTATION,
        message: e.to_string(),
    };
    let body = serde_json::to_vec(statement).map_err(encode_error)?;
    let mut line = match signer {
        Some(signer) => serde_json::to_vec(&signer.envelope(IN_TOTO_PAYLOAD_TYPE, &body))
            .map_err(encode_error)?,
        None => body,
    };
    line.push(b'\n');
    Ok(line)
}

/// Writes `run_dir/attestation.intoto.jsonl`; call after manifest.json is written.
pub fn write(
    run: &RunRecord,
    run_dir: &Path,
    signer: Option<&Signer>,
    shards: &[ShardAttestation],
) -> Result<Written, ReportError> {
    let line = encode(&statement(run, run_dir, shards)?, signer)?;
    let path = run_dir.join(ATTESTATION);
    write_atomic(&path, &line).map_err(|source| ReportError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Written {
        path,
        keyid: signer.map(|s| s.keyid().to_string()),
    })
}

/// The run summary's line for a run folder's attestation: where it is and whether it
/// is signed (read from the file, so the terminal sinks need no key). None: there is
/// none (a fuzz campaign's folder, or its write failed).
pub(crate) fn summary_line(run_dir: &Path) -> Option<String> {
    let text = result_file::read_to_string(run_dir, Path::new(ATTESTATION)).ok()?;
    let value: serde_json::Value = serde_json::from_str(text.trim_end()).ok()?;
    let keyid = value.get("signatures").map(|signatures| {
        signatures
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("keyid")?.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    });
    Some(
        Written {
            path: run_dir.join(ATTESTATION),
            keyid,
        }
        .line(),
    )
}

/// Writes the attestation when the run ends; register it after the manifest sink and
/// before the terminal's, whose summary names it.
#[derive(Default)]
pub struct AttestationSink {
    signer: Option<Arc<Signer>>,
}

impl AttestationSink {
    pub fn new(signer: Option<Arc<Signer>>) -> AttestationSink {
        AttestationSink { signer }
    }
}

impl Sink for AttestationSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        if let Event::RunFinished { run, dir } = event {
            write(run, dir, self.signer.as_deref(), &[])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
