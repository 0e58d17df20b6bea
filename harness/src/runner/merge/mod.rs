//! `bootgate merge`: joins the run folders of the shards of one suite (`--shard K/N`
//! on N CI machines) into one new run folder with one run.json, junit.xml, report.html
//! and manifest.json, as if one machine had run everything, and an attestation of
//! the merged run that keeps each shard's own.
//!
//! Shard folders usually arrive as CI artifact downloads, so nothing in them is
//! trusted blindly: scenario folders must stay inside the run folder, only regular
//! files are copied, and when a shard has a manifest.json every copied file must
//! match it, so the merged manifest never vouches for evidence that was altered.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::model::exit::Exit;
use crate::model::record::{
    DriverBuilds, FileHash, HostInfo, QemuInfo, RunRecord, RunSettings, Summary, SCHEMA_VERSION,
};
use crate::model::result_file::{self, ResultFileError};
use crate::model::run_file::RUN_JSON;
use crate::model::run_file::{JUNIT_XML, MANIFEST_JSON, REPORT_HTML};
use crate::model::ReportError;
use crate::report::manifest::Manifest;
use crate::report::{attestation, html, junit, manifest};
use crate::runner::folder::{self, absolute, FolderError};
use crate::runner::shard::Shard;
use crate::util::signing::Signer;
use crate::util::write_atomic;

mod copy;

use copy::{copy_scenario, is_plain_relative};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: give the run folders of the shards, like shard-*/latest")]
    NoShards,
    #[error("cannot read {path}: {source} (is {dir} a bootgate run folder? it needs run.json)")]
    Read {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a run record bootgate can read: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path} has schema version {found}; this bootgate reads version {expected}: merge with the bootgate that ran the shards")]
    Schema {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{first} and {second} are the same run {run_id}; give each shard once")]
    SameRun {
        run_id: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{first} ran shard {first_shard} but {second} ran shard {second_shard} of the same suites: shards of one run share N")]
    ShardTotals {
        first: PathBuf,
        first_shard: Shard,
        second: PathBuf,
        second_shard: Shard,
    },
    #[error("shard {shard} is given twice, {first} and {second}")]
    DuplicateShard {
        shard: Shard,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("shard {missing} of {suites} is missing (have {have}); merging without it would report scenarios that never ran as absent, not failed")]
    MissingShard {
        missing: String,
        have: String,
        suites: String,
    },
    #[error("scenario {name} is in two shards, {first} and {second}: shards of one run never share a scenario (did they run with different K/N or different --shard-timings?)")]
    DuplicateScenario {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("input {path} differs between shards {first} and {second} (sha256 {first_sha256} against {second_sha256}): shards of different inputs must not be merged")]
    InputConflict {
        path: String,
        first: PathBuf,
        first_sha256: String,
        second: PathBuf,
        second_sha256: String,
    },
    #[error("scenario {name} in {run_json} names folder {dir:?}, which is not inside the run folder; refusing to copy it")]
    UnsafeDir {
        name: String,
        dir: String,
        run_json: PathBuf,
    },
    #[error("{0} is a symlink or special file; a merged run holds only the shards' regular files")]
    NotRegular(PathBuf),
    /// A path the shard names outside itself, or a link where a result file should be.
    #[error(transparent)]
    Folder(#[from] ResultFileError),
    #[error("{file} does not match {manifest} (changed after its shard ran, or never listed there); refusing to merge evidence that does not verify")]
    Altered { file: PathBuf, manifest: PathBuf },
    #[error("{file} is listed in {manifest} but missing; refusing to merge an incomplete shard")]
    Missing { file: PathBuf, manifest: PathBuf },
    #[error("cannot copy {from} to {to}: {source}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot create the results folder {path}: {source} (pass --out DIR to write elsewhere)"
    )]
    Results {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the merged results: {0}")]
    Report(#[from] ReportError),
}

impl MergeError {
    /// Wrong or mismatched shard folders (exit 2) versus a host that cannot write the
    /// merged run (exit 3).
    pub(crate) fn is_usage(&self) -> bool {
        !matches!(
            self,
            MergeError::Copy { .. } | MergeError::Results { .. } | MergeError::Report(_)
        )
    }

    pub fn exit_code(&self) -> Exit {
        if self.is_usage() {
            Exit::Usage
        } else {
            Exit::Infra
        }
    }
}

/// One shard's run folder, read.
struct ShardRun {
    /// As given, for messages: the folder the user named.
    dir: PathBuf,
    record: RunRecord,
    /// The `--shard K/N` its command line carried, if any.
    spec: Option<Shard>,
    /// manifest.json, path -> sha256, when the shard has one.
    manifest: Option<BTreeMap<String, String>>,
}

impl ShardRun {
    fn read(dir: &Path) -> Result<ShardRun, MergeError> {
        let path = dir.join(RUN_JSON);
        let unreadable = |path: &Path, e: ResultFileError| match e {
            ResultFileError::Io { source, .. } => MergeError::Read {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
                source,
            },
            other => MergeError::Folder(other),
        };
        let text = result_file::read_to_string(dir, Path::new(RUN_JSON))
            .map_err(|e| unreadable(&path, e))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| MergeError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if record.schema_version != SCHEMA_VERSION {
            return Err(MergeError::Schema {
                path,
                found: record.schema_version,
                expected: SCHEMA_VERSION,
            });
        }
        // The merged run.json carries these paths on: one leaving the shard's folder
        // is refused here, naming the field, not passed to the merged report.
        result_file::check_record_paths(&record, &path)?;
        let manifest_path = dir.join(MANIFEST_JSON);
        // A shard killed outright (a CI job timeout) leaves run.json but no manifest:
        // its files are merged unchecked rather than lost.
        let manifest = match result_file::read_to_string(dir, Path::new(MANIFEST_JSON)) {
            Ok(text) => {
                let m: Manifest = serde_json::from_str(&text).map_err(|e| MergeError::Invalid {
                    path: manifest_path.clone(),
                    message: e.to_string(),
                })?;
                for (i, file) in m.artifacts.iter().enumerate() {
                    result_file::check_rel(
                        &manifest_path,
                        &format!("artifacts[{i}].path"),
                        &file.path,
                    )?;
                }
                Some(
                    m.artifacts
                        .into_iter()
                        .map(|f| (f.path, f.sha256))
                        .collect(),
                )
            }
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(unreadable(&manifest_path, e)),
        };
        Ok(ShardRun {
            dir: dir.to_path_buf(),
            spec: shard_spec(&record.command),
            record,
            manifest,
        })
    }
}

/// The `--shard K/N` of a recorded bootgate command line.
fn shard_spec(command: &[String]) -> Option<Shard> {
    let mut args = command.iter();
    while let Some(arg) = args.next() {
        if arg == "--shard" {
            return args.next()?.parse().ok();
        }
        if let Some(value) = arg.strip_prefix("--shard=") {
            return value.parse().ok();
        }
    }
    None
}

/// Joins shard run folders into one new run folder `out/<run-id>` (created fresh,
/// never overwriting) and re-points `out/latest` at it once it is complete.
///
/// Only each shard's scenario folders are copied; run.json, junit.xml, report.html and
/// manifest.json are written anew. Scenarios are ordered by their suite's place in the
/// shards' `settings.suites`, then by shard (K ascending; runs without `--shard`
/// first, in the order given), then by their order within the shard. `command` is
/// recorded with every argument that names a shard folder replaced by that folder's
/// resolved path, whose last component is the shard's run id, so the record says which
/// runs it came from even when they were given as `latest` links.
///
/// Refused: a missing or unreadable run.json, one run given twice, a scenario in two
/// shards, an input path with different sha256 in two shards, sharded runs of the same
/// suites with different N or with a K missing or repeated, a scenario folder outside
/// its run folder, a symlink or special file in a scenario folder, and a file that
/// does not match its shard's manifest.json. On any error the new folder is removed
/// and `latest` is left alone.
pub fn merge(
    shard_dirs: &[PathBuf],
    out: &Path,
    command: Vec<String>,
) -> Result<(RunRecord, PathBuf), MergeError> {
    merge_signed(shard_dirs, out, command, None)
}

/// [`merge`], with the merged run's attestation signed by `signer` (None: unsigned).
/// Each shard's own attestation is kept, verbatim, as
/// `shards/<shard run id>.intoto.jsonl`: manifest.json lists it and the merged
/// attestation names it among its subjects and in its predicate's `shards`.
pub fn merge_signed(
    shard_dirs: &[PathBuf],
    out: &Path,
    command: Vec<String>,
    signer: Option<&Signer>,
) -> Result<(RunRecord, PathBuf), MergeError> {
    if shard_dirs.is_empty() {
        return Err(MergeError::NoShards);
    }
    let mut shards = shard_dirs
        .iter()
        .map(|dir| ShardRun::read(dir))
        .collect::<Result<Vec<_>, _>>()?;
    // Shell globs sort shard-10 before shard-2; K is the order people expect.
    shards.sort_by_key(|s| s.spec.map_or(0, |spec| spec.index));
    check_runs(&shards)?;
    let mut record = combine(&shards, resolve_command(command, shard_dirs))?;

    let folder_error = |e: FolderError| MergeError::Results {
        path: e.path,
        source: e.source,
    };
    let (run_id, run_dir) = folder::create_run_dir(out).map_err(folder_error)?;
    record.run_id = run_id.clone();
    if let Err(e) = fill(&shards, &mut record, &run_dir, out, signer) {
        // The folder is ours and incomplete: a half-merged run must not look like one.
        let _ = fs::remove_dir_all(&run_dir);
        return Err(e);
    }
    folder::point_latest(out, &run_id).map_err(folder_error)?;
    Ok((record, run_dir))
}

fn resolve_command(mut command: Vec<String>, shard_dirs: &[PathBuf]) -> Vec<String> {
    for dir in shard_dirs {
        let given = dir.display().to_string();
        if let Ok(resolved) = fs::canonicalize(dir) {
            for arg in command.iter_mut().filter(|a| **a == given) {
                *arg = resolved.display().to_string();
            }
        }
    }
    command
}

/// Checks that the runs belong together: distinct runs, and for the sharded ones of
/// the same suites, one N with every K from 1 to N exactly once.
fn check_runs(shards: &[ShardRun]) -> Result<(), MergeError> {
    let mut ids: BTreeMap<&str, &Path> = BTreeMap::new();
    for shard in shards {
        if let Some(first) = ids.insert(&shard.record.run_id, &shard.dir) {
            return Err(MergeError::SameRun {
                run_id: shard.record.run_id.clone(),
                first: first.to_path_buf(),
                second: shard.dir.clone(),
            });
        }
    }
    let mut groups: BTreeMap<&[String], Vec<(&Path, Shard)>> = BTreeMap::new();
    for shard in shards {
        if let Some(spec) = shard.spec {
            groups
                .entry(shard.record.settings.suites.as_slice())
                .or_default()
                .push((&shard.dir, spec));
        }
    }
    for (suites, members) in groups {
        let (first_dir, first_spec) = members[0];
        let mut seen: BTreeMap<u32, &Path> = BTreeMap::new();
        for &(dir, spec) in &members {
            if spec.total != first_spec.total {
                return Err(MergeError::ShardTotals {
                    first: first_dir.to_path_buf(),
                    first_shard: first_spec,
                    second: dir.to_path_buf(),
                    second_shard: spec,
                });
            }
            if let Some(first) = seen.insert(spec.index, dir) {
                return Err(MergeError::DuplicateShard {
                    shard: spec,
                    first: first.to_path_buf(),
                    second: dir.to_path_buf(),
                });
            }
        }
        let total = first_spec.total;
        let missing: Vec<String> = (1..=total)
            .filter(|k| !seen.contains_key(k))
            .map(|k| format!("{k}/{total}"))
            .collect();
        if !missing.is_empty() {
            return Err(MergeError::MissingShard {
                missing: missing.join(", "),
                have: seen
                    .keys()
                    .map(|k| format!("{k}/{total}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                suites: suites.join(", "),
            });
        }
    }
    Ok(())
}

/// The merged record, before any file is written (run_id is set by the caller).
fn combine(shards: &[ShardRun], command: Vec<String>) -> Result<RunRecord, MergeError> {
    let records = || shards.iter().map(|s| &s.record);

    let mut suites: Vec<String> = Vec::new();
    for suite in records().flat_map(|r| &r.settings.suites) {
        if !suites.contains(suite) {
            suites.push(suite.clone());
        }
    }

    let mut inputs: Vec<FileHash> = Vec::new();
    let mut input_owner: BTreeMap<String, (String, &Path)> = BTreeMap::new();
    for shard in shards {
        for input in &shard.record.inputs {
            match input_owner.get(&input.path) {
                Some((sha256, _)) if *sha256 == input.sha256 => {}
                Some((sha256, first)) => {
                    return Err(MergeError::InputConflict {
                        path: input.path.clone(),
                        first: first.to_path_buf(),
                        first_sha256: sha256.clone(),
                        second: shard.dir.clone(),
                        second_sha256: input.sha256.clone(),
                    })
                }
                None => {
                    input_owner.insert(input.path.clone(), (input.sha256.clone(), &shard.dir));
                    inputs.push(input.clone());
                }
            }
        }
    }

    let mut owner: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut scenarios = Vec::new();
    for shard in shards {
        for scenario in &shard.record.scenarios {
            if let Some(first) = owner.insert(&scenario.name, &shard.dir) {
                return Err(MergeError::DuplicateScenario {
                    name: scenario.name.clone(),
                    first: first.to_path_buf(),
                    second: shard.dir.clone(),
                });
            }
            if !is_plain_relative(&scenario.dir) {
                return Err(MergeError::UnsafeDir {
                    name: scenario.name.clone(),
                    dir: scenario.dir.clone(),
                    run_json: shard.dir.join(RUN_JSON),
                });
            }
            scenarios.push(scenario.clone());
        }
    }
    // Stable: within a suite, shard order then each shard's own order survive.
    scenarios.sort_by_key(|s| suite_position(&s.suite_file, &suites));

    let first = &shards[0].record;
    let any_unfinished = records().any(|r| r.finished_at.is_none());
    let summary = Summary::of(&scenarios);
    Ok(RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: String::new(),
        started_at: pick_time(records().map(|r| r.started_at.as_str()), false).unwrap_or_default(),
        // A shard that never finished (killed outright) leaves the whole run unfinished.
        finished_at: if any_unfinished {
            None
        } else {
            pick_time(records().filter_map(|r| r.finished_at.as_deref()), true)
        },
        interrupted: any_unfinished || records().any(|r| r.interrupted),
        bootgate_version: distinct(records().map(|r| r.bootgate_version.as_str()), ", "),
        command,
        settings: RunSettings {
            // Every shard of a matrix runs the same command line, so the same choice.
            accel: first.settings.accel.clone(),
            keep: records().any(|r| r.settings.keep),
            suites,
            allow_outside_paths: records().any(|r| r.settings.allow_outside_paths),
            target: first.settings.target.clone(),
            driver_builds: DriverBuilds::weakest(records().map(|r| r.settings.driver_builds)),
        },
        host: HostInfo {
            hostname: distinct(records().map(|r| r.host.hostname.as_str()), ", "),
            kernel: distinct(records().map(|r| r.host.kernel.as_str()), "; "),
            // Each machine had at least this many.
            cpus: records().map(|r| r.host.cpus).min().unwrap_or_default(),
        },
        qemu: QemuInfo {
            version: non_empty(distinct(
                records().filter_map(|r| r.qemu.version.as_deref()),
                "; ",
            )),
            accel: non_empty(distinct(
                records().filter_map(|r| r.qemu.accel.as_deref()),
                ", ",
            )),
            accel_notice: non_empty(distinct(
                records().filter_map(|r| r.qemu.accel_notice.as_deref()),
                "; ",
            )),
            argv: records()
                .flat_map(|r| r.qemu.argv.iter().cloned())
                .collect(),
        },
        inputs,
        input_kinds: records().flat_map(|r| r.input_kinds.clone()).collect(),
        scenarios,
        summary,
        // The shards' phases are each shard's own; the merge has none of its own.
        timings: Default::default(),
    })
}

/// Copies the scenario folders into `run_dir`, points each rerun command at the merged
/// run, and writes run.json, junit.xml, report.html and manifest.json.
fn fill(
    shards: &[ShardRun],
    record: &mut RunRecord,
    run_dir: &Path,
    out: &Path,
    signer: Option<&Signer>,
) -> Result<(), MergeError> {
    for shard in shards {
        for scenario in &shard.record.scenarios {
            copy_scenario(shard, &scenario.dir, run_dir)?;
        }
    }
    let run_abs = absolute(run_dir);
    let out_abs = absolute(out);
    for scenario in &mut record.scenarios {
        repoint_rerun(&mut scenario.rerun, &run_abs, &out_abs);
    }

    let write = |name: &str, bytes: &[u8]| {
        let path = run_dir.join(name);
        write_atomic(&path, bytes).map_err(|source| ReportError::Write { path, source })
    };
    let mut json = serde_json::to_vec_pretty(&*record).map_err(|e| ReportError::Encode {
        what: RUN_JSON,
        message: e.to_string(),
    })?;
    json.push(b'\n');
    write(RUN_JSON, &json)?;
    write(JUNIT_XML, junit::render(record)?.as_bytes())?;
    write(REPORT_HTML, html::render(record, run_dir)?.as_bytes())?;
    let kept = copy::keep_attestations(shards, run_dir)?;
    // It hashes every other file of the merged run, the shards' attestations too.
    manifest::write(record, run_dir)?;
    // Last: it vouches for the manifest.
    attestation::write(record, run_dir, signer, &kept)?;
    Ok(())
}

/// A rerun command names the run folder it came from (and its results folder); the
/// shard's folder was on another machine, so point it at the merged run.
fn repoint_rerun(rerun: &mut [String], run_dir: &str, out: &str) {
    if let Some(i) = rerun.iter().position(|a| a == "rerun") {
        if let Some(arg) = rerun.get_mut(i + 1) {
            *arg = run_dir.to_string();
        }
    }
    if let Some(i) = rerun.iter().position(|a| a == "--out") {
        if let Some(arg) = rerun.get_mut(i + 1) {
            *arg = out.to_string();
        }
    }
}

/// Where a scenario's suite file sits in `suites` (absolute paths); the scenario may
/// name it relative to where bootgate ran. Unknown suites go last.
fn suite_position(suite_file: &str, suites: &[String]) -> usize {
    let rel: PathBuf = Path::new(suite_file)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    suites
        .iter()
        .position(|s| {
            s == suite_file || (!rel.as_os_str().is_empty() && Path::new(s).ends_with(&rel))
        })
        .unwrap_or(suites.len())
}

/// The earliest (or latest) of RFC 3339 timestamps; text that does not parse loses.
fn pick_time<'a>(values: impl Iterator<Item = &'a str>, latest: bool) -> Option<String> {
    let keyed = values.map(|v| (v.parse::<jiff::Timestamp>().ok(), v));
    let best = if latest {
        keyed.max_by_key(|(t, v)| (t.is_some(), *t, *v))
    } else {
        keyed.min_by_key(|(t, v)| (t.is_none(), *t, *v))
    };
    best.map(|(_, v)| v.to_string())
}

/// Distinct non-empty values in first-seen order, joined: shards on different
/// machines or QEMU builds show every one rather than whichever came first.
fn distinct<'a>(values: impl Iterator<Item = &'a str>, separator: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for value in values {
        if !value.is_empty() && !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen.join(separator)
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests;
