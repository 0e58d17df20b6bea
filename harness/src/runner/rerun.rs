//! `bootgate rerun`: repeat scenarios of a finished run with the same inputs and
//! settings, refusing when an input is gone or changed.

use std::path::{Path, PathBuf};

use crate::model::exit::Exit;
use crate::model::record::RunRecord;
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

pub fn read_record(run_dir: &Path) -> Result<RunRecord, RerunError> {
    let path = run_dir.join(RUN_JSON);
    let text = std::fs::read_to_string(&path).map_err(|source| RerunError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| RerunError::Invalid {
        path,
        message: e.to_string(),
    })
}

pub fn plan(run_dir: &Path, wanted: &[String]) -> Result<RerunPlan, RerunError> {
    let record = read_record(run_dir)?;
    let known: Vec<String> = record.scenarios.iter().map(|s| s.name.clone()).collect();
    for name in wanted {
        if !known.contains(name) {
            return Err(RerunError::UnknownScenario {
                name: name.clone(),
                known: known.join(", "),
            });
        }
    }
    for input in &record.inputs {
        let path = Path::new(&input.path);
        if !path.is_file() {
            return Err(RerunError::InputMissing(input.path.clone()));
        }
        let now = crate::util::sha256_file(path).map_err(|source| RerunError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if now != input.sha256 {
            return Err(RerunError::InputChanged(input.path.clone()));
        }
    }
    let path_policy = suite::PathPolicy::allowing_outside(record.settings.allow_outside_paths);
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
