//! Copying one shard's scenario folder into the merged run: real folders and regular
//! files only (read without following links), each hashed as it is copied and
//! checked against the shard's manifest, and each written whole or not at all.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{MergeError, ShardRun};
use crate::model::result_file;
use crate::model::run_file::{ATTESTATION, MANIFEST_JSON};
use crate::report::attestation::ShardAttestation;

/// The folder of a merged run that keeps the shards' attestations.
pub(super) const SHARDS_DIR: &str = "shards";

/// Copies each shard's attestation.intoto.jsonl (read without following links, copied
/// whole) to `shards/<run id>.intoto.jsonl`. A shard without one (from before
/// attestations, or killed before it finished) has nothing to keep. The copy is the
/// shard's own signed evidence: checked against the shard's folder, not the merge.
pub(super) fn keep_attestations(
    shards: &[ShardRun],
    run_dir: &Path,
) -> Result<Vec<ShardAttestation>, MergeError> {
    let mut kept = Vec::new();
    for shard in shards {
        let source = shard.dir.join(ATTESTATION);
        match fs::symlink_metadata(&source) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source_error) => {
                return Err(MergeError::Read {
                    path: source,
                    dir: shard.dir.clone(),
                    source: source_error,
                })
            }
            Ok(_) => {}
        }
        let id = &shard.record.run_id;
        // The run id becomes a file name: only what bootgate's own ids hold.
        let plain = !id.is_empty()
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(MergeError::Invalid {
                path: shard.dir.join(crate::model::run_file::RUN_JSON),
                message: format!(
                    "run_id {id:?} is not a plain name; refusing to use it as a file name"
                ),
            });
        }
        check_shard_attestation(shard)?;
        let dir = run_dir.join(SHARDS_DIR);
        fs::create_dir_all(&dir).map_err(|e| MergeError::Copy {
            from: source.clone(),
            to: dir.clone(),
            source: e,
        })?;
        let rel = format!("{SHARDS_DIR}/{id}.intoto.jsonl");
        copy_hashed(&shard.dir, Path::new(ATTESTATION), &run_dir.join(&rel))?;
        kept.push(ShardAttestation {
            run_id: id.clone(),
            path: rel,
        });
    }
    Ok(kept)
}

/// A shard's attestation must vouch for the shard's own run.json and manifest.json:
/// a shard whose results were edited and its manifest regenerated (which anyone can
/// do) no longer matches the attestation written when it ran, and is refused.
fn check_shard_attestation(shard: &ShardRun) -> Result<(), MergeError> {
    let path = shard.dir.join(ATTESTATION);
    let text = result_file::read_to_string(&shard.dir, Path::new(ATTESTATION))?;
    let statement = crate::report::attestation::verify::statement_in(&text).map_err(|message| {
        MergeError::Invalid {
            path: path.clone(),
            message,
        }
    })?;
    for name in [crate::model::run_file::RUN_JSON, MANIFEST_JSON] {
        let Some(subject) = statement.subject.iter().find(|s| s.name == name) else {
            // An attestation written without a manifest (its sink failed) has none.
            continue;
        };
        let sha256 = result_file::sha256(&shard.dir, Path::new(name))?;
        if sha256 != subject.digest.sha256 {
            return Err(MergeError::Altered {
                file: shard.dir.join(name),
                manifest: path,
            });
        }
    }
    Ok(())
}

pub(super) fn copy_scenario(
    shard: &ShardRun,
    rel_dir: &str,
    run_dir: &Path,
) -> Result<(), MergeError> {
    // Every folder on the way must be a real folder: a symlinked suite or scenario
    // folder would copy whatever it points at into the results.
    let mut src = shard.dir.clone();
    for part in Path::new(rel_dir).components() {
        src.push(part);
        match fs::symlink_metadata(&src) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(MergeError::NotRegular(src)),
            // A scenario that errored before its folder existed has nothing to copy.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return check_listed(shard, rel_dir, &BTreeSet::new());
            }
            Err(source) => {
                return Err(MergeError::Read {
                    path: src,
                    dir: shard.dir.clone(),
                    source,
                })
            }
        }
    }
    let mut copied = BTreeSet::new();
    for entry in walkdir::WalkDir::new(&src)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| MergeError::Read {
            path: e.path().map_or_else(|| src.clone(), Path::to_path_buf),
            dir: shard.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let rel = entry
            .path()
            .strip_prefix(&shard.dir)
            .map_err(|_| MergeError::NotRegular(entry.path().to_path_buf()))?;
        let dst = run_dir.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            fs::create_dir_all(&dst).map_err(|source| MergeError::Copy {
                from: entry.path().to_path_buf(),
                to: dst.clone(),
                source,
            })?;
        } else if kind.is_file() {
            let sha256 = copy_hashed(&shard.dir, rel, &dst)?;
            let rel = rel.display().to_string();
            if let Some(listed) = &shard.manifest {
                if listed.get(&rel) != Some(&sha256) {
                    return Err(MergeError::Altered {
                        file: entry.path().to_path_buf(),
                        manifest: shard.dir.join(MANIFEST_JSON),
                    });
                }
            }
            copied.insert(rel);
        } else {
            return Err(MergeError::NotRegular(entry.path().to_path_buf()));
        }
    }
    check_listed(shard, rel_dir, &copied)
}

/// Every file the shard's manifest lists under the scenario folder was copied.
fn check_listed(
    shard: &ShardRun,
    rel_dir: &str,
    copied: &BTreeSet<String>,
) -> Result<(), MergeError> {
    let Some(listed) = &shard.manifest else {
        return Ok(());
    };
    let prefix = format!("{}/", rel_dir.trim_end_matches('/'));
    match listed
        .keys()
        .find(|path| path.starts_with(&prefix) && !copied.contains(*path))
    {
        Some(path) => Err(MergeError::Missing {
            file: shard.dir.join(path),
            manifest: shard.dir.join(MANIFEST_JSON),
        }),
        None => Ok(()),
    }
}

/// Copies one file of the shard (`rel`, below `shard_dir`, opened without following
/// links) to `to`, never over an existing one and never half: the bytes go to a temp
/// file beside `to` that is renamed into place only once complete and synced.
/// Returns the sha256 of the bytes copied, so checking against the shard's manifest
/// costs no second read.
fn copy_hashed(shard_dir: &Path, rel: &Path, to: &Path) -> Result<String, MergeError> {
    let from = shard_dir.join(rel);
    let fail = |source| MergeError::Copy {
        from: from.clone(),
        to: to.to_path_buf(),
        source,
    };
    let mut src = result_file::open(shard_dir, rel)?;
    let dir = to.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(fail)?;
    }
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist_noclobber(to).map_err(|e| fail(e.error))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `suite/scenario`-style: relative, no `..`, no root, not empty.
pub(super) fn is_plain_relative(dir: &str) -> bool {
    crate::util::is_relative_below(Path::new(dir))
}
