//! Provenance: `manifest.json` lists the sha256 of every input and of every file the
//! run wrote, so a reviewer can check that nothing was altered (`bootgate verify`).
//! Written last, after every other result file.

use crate::model::run_file::{ATTESTATION, MANIFEST_JSON};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::record::{FileHash, RunRecord};
use crate::model::result_file::{self, ResultFileError};
use crate::model::run_file::RUN_JSON;
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
    /// Every file in the run folder except this one and the attestation, paths
    /// relative to it.
    pub artifacts: Vec<FileHash>,
}

/// What a walk of a run folder found: its regular files, hashed, and anything else
/// that is not a folder (symlinks, devices, pipes), which is never followed or read.
pub(crate) struct Walked {
    pub files: Vec<FileHash>,
    pub irregular: Vec<String>,
}

/// Hashes every regular file under `run_dir` except the manifest itself and the
/// attestation (written after it, and vouching for it), each read
/// through `result_file::open`, so a link planted in the folder is listed as
/// irregular and never hashed as if it were the file it points at.
pub(crate) fn walk_run_folder(run_dir: &Path) -> Result<Walked, ReportError> {
    let mut walked = Walked {
        files: Vec::new(),
        irregular: Vec::new(),
    };
    for entry in walkdir::WalkDir::new(run_dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| ReportError::Write {
            path: run_dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if entry.depth() == 0 || entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(run_dir).unwrap_or(entry.path());
        if rel == Path::new(MANIFEST_JSON) || rel == Path::new(ATTESTATION) || is_temp(rel) {
            continue;
        }
        if !entry.file_type().is_file() {
            walked.irregular.push(rel.display().to_string());
            continue;
        }
        let sha256 = result_file::sha256(run_dir, rel).map_err(|e| ReportError::Write {
            path: entry.path().to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        walked.files.push(FileHash {
            path: rel.display().to_string(),
            sha256,
        });
    }
    Ok(walked)
}

/// The hashes of [`walk_run_folder`]: what manifest.json lists. A run folder bootgate
/// wrote holds no links; one that does gets them left out (and `verify` flags them).
pub(crate) fn hash_run_folder(run_dir: &Path) -> Result<Vec<FileHash>, ReportError> {
    Ok(walk_run_folder(run_dir)?.files)
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
    // Read as any result file: a manifest.json that is a link is not followed. It is
    // then replaced by a real file below (the rename replaces the link itself).
    let text = match result_file::read_to_string(run_dir, Path::new(MANIFEST_JSON)) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(unreadable(&path, e)),
    };
    let mut manifest: Manifest = serde_json::from_str(&text).map_err(|e| ReportError::Encode {
        what: MANIFEST_JSON,
        message: e.to_string(),
    })?;
    let sha256 = result_file::sha256(run_dir, Path::new(rel))
        .map_err(|e| unreadable(&run_dir.join(rel), e))?;
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

fn unreadable(path: &Path, e: ResultFileError) -> ReportError {
    ReportError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
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
    /// A symlink, device or pipe in the run folder: never followed, always a problem
    /// (bootgate writes only folders and regular files).
    NotRegular(String),
    /// A path a record names that is not inside the run folder: the error says which
    /// file and field.
    Outside(String),
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
            Finding::NotRegular(p) => write!(
                f,
                "NOT A FILE {p} (a symlink or special file; not followed: a run folder holds only folders and regular files)"
            ),
            Finding::Outside(why) => write!(f, "OUTSIDE   {why}"),
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
    Unsafe(ResultFileError),
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

/// Rechecks a run folder against its manifest.json. The folder may be someone
/// else's: manifest.json and run.json are read without following links, every path
/// they name inside the folder must stay inside it, and a link or special file
/// anywhere in the folder is a problem, never a pass.
pub fn verify(run_dir: &Path) -> Result<Vec<Finding>, VerifyError> {
    verify_walked(run_dir).map(|(findings, _)| findings)
}

/// [`verify`], handing back the walk of the folder too, so the attestation's check
/// hashes every file once more only if it must (a run's dumps are hundreds of MiB).
pub(crate) fn verify_walked(run_dir: &Path) -> Result<(Vec<Finding>, Walked), VerifyError> {
    let path = run_dir.join(MANIFEST_JSON);
    let text = match result_file::read_to_string(run_dir, Path::new(MANIFEST_JSON)) {
        Ok(text) => text,
        Err(ResultFileError::Io { source, .. }) => {
            return Err(VerifyError::Read {
                path,
                dir: run_dir.to_path_buf(),
                source,
            })
        }
        Err(e) => return Err(VerifyError::Unsafe(e)),
    };
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| VerifyError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut findings = Vec::new();
    let walked = walk_run_folder(run_dir)?;
    findings.extend(walked.irregular.iter().cloned().map(Finding::NotRegular));
    let now = &walked.files;
    for (i, listed) in manifest.artifacts.iter().enumerate() {
        let field = format!("artifacts[{i}].path");
        if let Err(e) = result_file::check_rel(&path, &field, &listed.path) {
            findings.push(Finding::Outside(e.to_string()));
            continue;
        }
        match now.iter().find(|f| f.path == listed.path) {
            // A listed file that is now a link is reported as such, above.
            None if walked.irregular.contains(&listed.path) => {}
            None => findings.push(Finding::Missing(listed.path.clone())),
            Some(found) if found.sha256 != listed.sha256 => {
                findings.push(Finding::Altered(listed.path.clone()))
            }
            Some(_) => {}
        }
    }
    for found in now {
        if !manifest.artifacts.iter().any(|f| f.path == found.path) {
            findings.push(Finding::Unlisted(found.path.clone()));
        }
    }
    findings.extend(record_findings(run_dir));
    // Inputs are host files by design (suites, images, drivers): hashed to say
    // whether they changed; nothing of them is printed but their path.
    for input in &manifest.inputs {
        let file = Path::new(&input.path);
        if !file.is_file() {
            findings.push(Finding::InputUnavailable(input.path.clone()));
        } else if sha256_file(file).ok().as_deref() != Some(input.sha256.as_str()) {
            findings.push(Finding::InputAltered(input.path.clone()));
        }
    }
    Ok((findings, walked))
}

/// run.json's in-folder paths, each that leaves the folder a finding. A run.json that
/// is a link is already a NotRegular finding, a missing one Missing; one that is no
/// run record has no paths to check here (its hash is checked above, and every
/// command that reads it refuses it).
fn record_findings(run_dir: &Path) -> Vec<Finding> {
    let path = run_dir.join(RUN_JSON);
    let Ok(text) = result_file::read_to_string(run_dir, Path::new(RUN_JSON)) else {
        return Vec::new();
    };
    let Ok(record) = serde_json::from_str::<RunRecord>(&text) else {
        return Vec::new();
    };
    result_file::unsafe_record_paths(&record, &path)
        .iter()
        .map(|e| Finding::Outside(e.to_string()))
        .collect()
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

    /// A hostile folder: a result file replaced by a link to a host secret, a
    /// linked folder, a manifest entry and a run.json path outside the folder. Each
    /// is a failure, and no link is followed.
    #[test]
    fn verify_flags_links_and_paths_outside_the_folder() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, b"TOP-SECRET").unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x.log"), b"TOP-SECRET").unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(run_dir.join("s/a")).unwrap();
        let mut sc = records::scenario("s", "a", crate::model::record::Verdict::Pass);
        sc.hang_screenshots = vec!["../../secret.txt".into()];
        std::fs::write(
            run_dir.join(RUN_JSON),
            serde_json::to_vec(&records::run(vec![sc])).unwrap(),
        )
        .unwrap();
        std::fs::write(run_dir.join("s/a/console.log"), b"boot\n").unwrap();
        write(&records::run(Vec::new()), &run_dir).unwrap();

        std::fs::remove_file(run_dir.join("s/a/console.log")).unwrap();
        symlink(&secret, run_dir.join("s/a/console.log")).unwrap();
        symlink(&outside, run_dir.join("s/linked")).unwrap();
        let manifest_path = run_dir.join(MANIFEST_JSON);
        let mut manifest: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
        manifest.artifacts.push(FileHash {
            path: "../secret.txt".into(),
            sha256: sha256_file(&secret).unwrap(),
        });
        std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

        let findings = verify(&run_dir).unwrap();
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert!(
            findings.contains(&Finding::NotRegular("s/a/console.log".into())),
            "{text:?}"
        );
        assert!(
            findings.contains(&Finding::NotRegular("s/linked".into())),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("manifest.json")
                && t.contains("artifacts[")
                && t.contains("../secret.txt")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("run.json") && t.contains("scenarios[0].hang_screenshots[0]")),
            "{text:?}"
        );
        assert!(findings.iter().all(Finding::is_problem));
        assert!(!text.iter().any(|t| t.contains("TOP-SECRET")));
        assert!(!findings.contains(&Finding::Missing("s/a/console.log".into())));
    }

    #[test]
    fn a_linked_manifest_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("m.json");
        std::fs::write(&elsewhere, b"{}").unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, run_dir.join(MANIFEST_JSON)).unwrap();
        let err = verify(&run_dir).unwrap_err().to_string();
        assert!(
            err.contains("symlink") && err.contains("manifest.json"),
            "{err}"
        );
        assert!(refresh_entry(&run_dir, "report.html").is_err());
    }
}
