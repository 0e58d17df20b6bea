//! `bootgate rerun`: repeat scenarios of a finished run with the same inputs and
//! settings, refusing when an input is gone or changed.
//!
//! The run folder may come from someone else, so its run.json grants nothing: the
//! suites it names must be inputs it recorded, present with the same sha256, before
//! any suite is even parsed, and a permission the original run had
//! (`--allow-outside-paths`) is the user's to give again on the command line.

use std::path::{Path, PathBuf};

use crate::model::exit::Exit;
use crate::model::record::RunRecord;
use crate::model::result_file::{self, ResultFileError};
use crate::model::run_file::RUN_JSON;
use crate::qemu::accel::AccelChoice;
use crate::suite::{self, Suite, SuiteError};

#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    #[error("cannot read {path}: {source} (is it a bootgate run folder?)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a run record bootgate can read: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("scenario {name:?} is not in this run; it has: {known}")]
    UnknownScenario { name: String, known: String },
    #[error("refusing to rerun: input {0} no longer exists")]
    InputMissing(String),
    #[error("refusing to rerun: input {0} has changed since the run (its sha256 differs); restore it or start a new run")]
    InputChanged(String),
    #[error(transparent)]
    Folder(#[from] ResultFileError),
    #[error("refusing to rerun: the original run used --allow-outside-paths ({path}: settings.allow_outside_paths is true), so its suites may read driver and content files anywhere on this host; a run record cannot grant that: if you trust these suites, pass --allow-outside-paths to rerun")]
    OutsidePaths { path: PathBuf },
    #[error("refusing to rerun: {path}: settings.suites names {suite:?}, which is not among the run's recorded inputs (no sha256 vouches for it)")]
    SuiteNotInput { path: PathBuf, suite: String },
    #[error("refusing to rerun: {path}: settings.suites names {suite:?}, which is not an absolute path without `..` as bootgate records suites")]
    SuitePath { path: PathBuf, suite: String },
    #[error("refusing to rerun: {path}: settings.target.image names {image:?}, which is not a built-in image and not among the run's recorded inputs")]
    TargetImage { path: PathBuf, image: String },
    #[error(transparent)]
    Suite(#[from] SuiteError),
}

impl RerunError {
    /// Every refusal is about what the user pointed at (a folder that is no run, a
    /// scenario it lacks, inputs that changed), never about the host.
    pub fn exit_code(&self) -> Exit {
        Exit::Usage
    }
}

/// What to run again.
pub struct RerunPlan {
    pub record: RunRecord,
    pub suites: Vec<Suite>,
    /// Exact `suite/scenario` names.
    pub scenarios: Vec<String>,
    pub accel: AccelChoice,
    pub keep: bool,
    pub path_policy: suite::PathPolicy,
    /// The rollout target the run was on, if any.
    pub target: Option<suite::Target>,
}

/// Reads `run_dir/run.json` (never through a link) and refuses a record whose
/// in-folder paths leave the folder, so no later reader follows one.
pub fn read_record(run_dir: &Path) -> Result<RunRecord, RerunError> {
    let path = run_dir.join(RUN_JSON);
    let text = match result_file::read_to_string(run_dir, Path::new(RUN_JSON)) {
        Ok(text) => text,
        Err(ResultFileError::Io { source, .. }) => {
            return Err(RerunError::Read { path, source });
        }
        Err(e) => return Err(e.into()),
    };
    let record: RunRecord = serde_json::from_str(&text).map_err(|e| RerunError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    result_file::check_record_paths(&record, &path)?;
    Ok(record)
}

/// What to run again from `run_dir`. `allow_outside_paths` is the user's own
/// `--allow-outside-paths`: required when the original run used it, and it grants
/// no more than that run had.
pub fn plan(
    run_dir: &Path,
    wanted: &[String],
    allow_outside_paths: bool,
) -> Result<RerunPlan, RerunError> {
    let record = read_record(run_dir)?;
    let run_json = run_dir.join(RUN_JSON);
    if record.settings.allow_outside_paths && !allow_outside_paths {
        return Err(RerunError::OutsidePaths { path: run_json });
    }
    let known: Vec<String> = record.scenarios.iter().map(|s| s.name.clone()).collect();
    for name in wanted {
        if !known.contains(name) {
            return Err(RerunError::UnknownScenario {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    // Kept digests of unchanged files (util::digest_cache): the run itself hashes the
    // same inputs again, and an image disk may be many GiB.
    let digests = crate::util::digest_cache::DigestCache::under(&crate::cache::cache_root());
    for input in &record.inputs {
        let path = Path::new(&input.path);
        if !path.is_file() {
            return Err(RerunError::InputMissing(input.path.clone()));
        }
        let now = digests.sha256(path).map_err(|source| RerunError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if now != input.sha256 {
            return Err(RerunError::InputChanged(input.path.clone()));
        }
    }
    check_suites_are_inputs(&record, &run_json)?;
    let path_policy = suite::PathPolicy::allowing_outside(
        record.settings.allow_outside_paths && allow_outside_paths,
    );
    let suites = record
        .settings
        .suites
        .iter()
        .map(|p| suite::load_file_with(Path::new(p), path_policy))
        .collect::<Result<Vec<_>, _>>()?;
    let accel = match record.settings.accel.as_str() {
        "kvm" => AccelChoice::Kvm,
        "tcg" => AccelChoice::Tcg,
        _ => AccelChoice::Auto,
    };
    Ok(RerunPlan {
        scenarios: if wanted.is_empty() {
            known
        } else {
            wanted.to_vec()
        },
        keep: record.settings.keep,
        path_policy,
        target: record.settings.target.clone(),
        suites,
        accel,
        record,
    })
}

/// The host paths run.json names that bootgate would read before the run's own input
/// check (suites are parsed, a target's image manifest is loaded) must be inputs the
/// record vouches for by sha256, already checked present and unchanged: otherwise a
/// hostile run.json could have any host file parsed, and a parse error quotes it.
fn check_suites_are_inputs(record: &RunRecord, run_json: &Path) -> Result<(), RerunError> {
    let inputs: Vec<PathBuf> = record
        .inputs
        .iter()
        .filter_map(|i| std::fs::canonicalize(&i.path).ok())
        .collect();
    let is_input =
        |path: &Path| std::fs::canonicalize(path).is_ok_and(|resolved| inputs.contains(&resolved));
    for suite in &record.settings.suites {
        let path = Path::new(suite);
        let plain = path.is_absolute()
            && path.components().all(|c| {
                !matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            });
        if !plain {
            return Err(RerunError::SuitePath {
                path: run_json.to_path_buf(),
                suite: suite.clone(),
            });
        }
        if !is_input(path) {
            return Err(RerunError::SuiteNotInput {
                path: run_json.to_path_buf(),
                suite: suite.clone(),
            });
        }
    }
    let image = record
        .settings
        .target
        .as_ref()
        .and_then(|t| t.image.as_deref());
    if let Some(image) = image.filter(|i| crate::image::builtin::find(i).is_none()) {
        // Resolved against each suite's folder, as the runner does.
        let vouched = record.settings.suites.iter().all(|suite| {
            let dir = Path::new(suite).parent().unwrap_or(Path::new("/"));
            let mut path = dir.join(image);
            if path.is_dir() {
                path = path.join("image.toml");
            }
            is_input(&path)
        });
        if !vouched {
            return Err(RerunError::TargetImage {
                path: run_json.to_path_buf(),
                image: image.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
