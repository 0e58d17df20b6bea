//! Provenance: `manifest.json` lists the sha256 of every input and of every file the
//! run wrote, so a reviewer can check that nothing was altered (`bootgate verify`).
//! Written last, after every other result file.

use crate::model::run_file::MANIFEST_JSON;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::record::{FileHash, RunRecord};
use crate::model::Event;
use crate::model::{ReportError, Sink};
use crate::util::{sha256_file, write_atomic};

pub(crate) const MANIFEST_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub run_id: String,
    /// Files the run read: suites, image files, drivers, content.
    pub inputs: Vec<FileHash>,
    /// Every file in the run folder except this one, paths relative to it.
    pub artifacts: Vec<FileHash>,
}

/// Hashes every file under `run_dir` except the manifest itself.
pub(crate) fn hash_run_folder(run_dir: &Path) -> Result<Vec<FileHash>, ReportError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(run_dir).sort_by_file_name() {
        let entry = entry.map_err(|e| ReportError::Write {
            path: run_dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(run_dir).unwrap_or(entry.path());
        if rel == Path::new(MANIFEST_JSON) || is_temp(rel) {
            continue;
        }
        let sha256 = sha256_file(entry.path()).map_err(|source| ReportError::Write {
            path: entry.path().to_path_buf(),
            source,
        })?;
        files.push(FileHash {
            path: rel.display().to_string(),
            sha256,
        });
    }
    Ok(files)
}

/// Temp files of atomic writes in progress are not results.
fn is_temp(rel: &Path) -> bool {
    rel.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
}

pub(crate) fn write(run: &RunRecord, run_dir: &Path) -> Result<(), ReportError> {
    let manifest = Manifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        inputs: run.inputs.clone(),
        artifacts: hash_run_folder(run_dir)?,
    };
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| ReportError::Encode {
        what: MANIFEST_JSON,
        message: e.to_string(),
    })?;
    text.push(b'\n');
    let path = run_dir.join(MANIFEST_JSON);
    write_atomic(&path, &text).map_err(|source| ReportError::Write { path, source })
}

/// Updates one file's entry in an existing manifest.json (after `bootgate report`
/// regenerated report.html), leaving every other entry as recorded, so a regenerated
/// report never launders a change to anything else. No manifest: nothing to do.
pub fn refresh_entry(run_dir: &Path, rel: &str) -> Result<(), ReportError> {
    let path = run_dir.join(MANIFEST_JSON);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut manifest: Manifest = serde_json::from_str(&text).map_err(|e| ReportError::Encode {
        what: MANIFEST_JSON,
        message: e.to_string(),
    })?;
    let file = run_dir.join(rel);
    let sha256 = sha256_file(&file).map_err(|source| ReportError::Write { path: file, source })?;
    match manifest.artifacts.iter_mut().find(|f| f.path == rel) {
        Some(entry) => entry.sha256 = sha256,
        None => manifest.artifacts.push(FileHash {
            path: rel.to_string(),
            sha256,
        }),
    }
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| ReportError::Encode {
        what: MANIFEST_JSON,
        message: e.to_string(),
    })?;
    text.push(b'\n');
    write_atomic(&path, &text).map_err(|source| ReportError::Write { path, source })
}

/// Writes manifest.json when the run ends; register it after every other sink.
#[derive(Default)]
pub struct ManifestSink;

impl Sink for ManifestSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        match event {
            Event::RunFinished { run, dir } => write(run, dir),
            _ => Ok(()),
        }
    }
}

/// One finding of `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Missing(String),
    Altered(String),
    /// A file in the run folder that the manifest does not list.
    Unlisted(String),
    InputAltered(String),
    /// An input that is not on this machine: not checked.
    InputUnavailable(String),
}

impl Finding {
    pub fn is_problem(&self) -> bool {
        !matches!(self, Finding::InputUnavailable(_))
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Missing(p) => write!(f, "MISSING   {p}"),
            Finding::Altered(p) => write!(f, "ALTERED   {p} (sha256 differs from manifest.json)"),
            Finding::Unlisted(p) => write!(
                f,
                "UNLISTED  {p} (not in manifest.json: added after the run)"
            ),
            Finding::InputAltered(p) => {
                write!(f, "INPUT CHANGED  {p} (sha256 differs from the run's)")
            }
            Finding::InputUnavailable(p) => {
                write!(f, "input not on this machine, not checked: {p}")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "cannot read {path}: {source} (is {dir} a bootgate run folder? it needs manifest.json)"
    )]
    Read {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Hash(#[from] ReportError),
}

impl VerifyError {
    /// A folder that cannot be checked is one the user named wrongly or one that is no
    /// run folder: theirs to fix. An unreadable file inside it counts the same way:
    /// the folder, not the host, is what is wrong.
    pub fn exit_code(&self) -> crate::model::exit::Exit {
        crate::model::exit::Exit::Usage
    }
}

/// Rechecks a run folder against its manifest.json.
pub fn verify(run_dir: &Path) -> Result<Vec<Finding>, VerifyError> {
    let path = run_dir.join(MANIFEST_JSON);
    let text = std::fs::read_to_string(&path).map_err(|source| VerifyError::Read {
        path: path.clone(),
        dir: run_dir.to_path_buf(),
        source,
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| VerifyError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut findings = Vec::new();
    let now = hash_run_folder(run_dir)?;
    for listed in &manifest.artifacts {
        match now.iter().find(|f| f.path == listed.path) {
            None => findings.push(Finding::Missing(listed.path.clone())),
            Some(found) if found.sha256 != listed.sha256 => {
                findings.push(Finding::Altered(listed.path.clone()))
            }
            Some(_) => {}
        }
    }
    for found in &now {
        if !manifest.artifacts.iter().any(|f| f.path == found.path) {
            findings.push(Finding::Unlisted(found.path.clone()));
        }
    }
    for input in &manifest.inputs {
        let file = Path::new(&input.path);
        if !file.is_file() {
            findings.push(Finding::InputUnavailable(input.path.clone()));
        } else if sha256_file(file).ok().as_deref() != Some(input.sha256.as_str()) {
            findings.push(Finding::InputAltered(input.path.clone()));
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::records;

    fn run(input: &Path) -> RunRecord {
        RunRecord {
            inputs: vec![FileHash {
                path: input.display().to_string(),
                sha256: sha256_file(input).unwrap(),
            }],
            ..records::run(Vec::new())
        }
    }

    #[test]
    fn verify_names_altered_missing_unlisted_and_changed_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("suite.toml");
        std::fs::write(&input, b"[suite]").unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(run_dir.join("s/a")).unwrap();
        std::fs::write(run_dir.join("run.json"), b"{}").unwrap();
        std::fs::write(run_dir.join("s/a/console.log"), b"boot\n").unwrap();
        std::fs::write(run_dir.join("s/a/gone.png"), b"png").unwrap();
        write(&run(&input), &run_dir).unwrap();
        assert!(verify(&run_dir).unwrap().is_empty(), "a fresh run verifies");

        std::fs::write(run_dir.join("s/a/console.log"), b"boot!\n").unwrap();
        std::fs::remove_file(run_dir.join("s/a/gone.png")).unwrap();
        std::fs::write(run_dir.join("s/a/planted.txt"), b"x").unwrap();
        std::fs::write(&input, b"[suite] changed").unwrap();
        let findings = verify(&run_dir).unwrap();
        assert!(
            findings.contains(&Finding::Altered("s/a/console.log".into())),
            "{findings:?}"
        );
        assert!(findings.contains(&Finding::Missing("s/a/gone.png".into())));
        assert!(findings.contains(&Finding::Unlisted("s/a/planted.txt".into())));
        assert!(findings.contains(&Finding::InputAltered(input.display().to_string())));
        assert!(findings.iter().all(Finding::is_problem));

        // Refreshing one entry leaves the other findings in place.
        refresh_entry(&run_dir, "s/a/console.log").unwrap();
        let findings = verify(&run_dir).unwrap();
        assert!(!findings.contains(&Finding::Altered("s/a/console.log".into())));
        assert!(findings.contains(&Finding::Missing("s/a/gone.png".into())));
    }

    #[test]
    fn verify_without_manifest_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
    }
}
