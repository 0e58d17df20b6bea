//! Reading a results folder that came from someone else. A vendor's results folder is
//! untrusted input: a path it records may be absolute or climb out with `..`, and a
//! file in it may be a symlink to a host file (a planted `console.log` pointing at a
//! secret) or sit in a symlinked folder. Every command that reads a result file named
//! by the folder (`show`, `verify`, `report`, `rerun`, `merge`) goes through [`open`],
//! which takes only plain relative paths and never follows a link below the folder
//! the user named, and checks the record's paths with [`unsafe_record_paths`] first.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::record::RunRecord;
use crate::util::is_relative_below;

#[derive(Debug, thiserror::Error)]
pub enum ResultFileError {
    /// A path field of a record names something that is not below the run folder.
    #[error("{file}: {field} = {value:?} is not a path inside the run folder (it is empty, absolute or has `..` or `.`); refusing to read a results folder that points outside itself")]
    Outside {
        file: PathBuf,
        field: String,
        value: String,
    },
    #[error("{path} is a symlink; a results folder is read only through its own files and folders, never through links (a link could point at any host file)")]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file (a folder, device or pipe); refusing to read it as a result file")]
    NotRegular { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ResultFileError {
    /// The file is simply absent (not a link, not elsewhere): callers that treat a
    /// missing optional file as "none" ask this.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ResultFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Opens `run_dir/rel` for reading. `rel` must be a plain relative path (no root, `.`
/// or `..`); every folder on the way and the file itself are opened with
/// `O_NOFOLLOW` relative to the one before (`openat`), so a link anywhere below
/// `run_dir` is refused, and no check-then-open race can swap one in. `run_dir`
/// itself is the user's own choice (often `results/latest`, a link) and is followed.
pub fn open(run_dir: &Path, rel: &Path) -> Result<File, ResultFileError> {
    let full = run_dir.join(rel);
    if !is_relative_below(rel) {
        return Err(ResultFileError::Outside {
            file: run_dir.to_path_buf(),
            field: "path".into(),
            value: rel.display().to_string(),
        });
    }
    let io = |path: &Path, source| ResultFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut current = File::open(run_dir).map_err(|e| io(run_dir, e))?;
    let mut walked = run_dir.to_path_buf();
    let count = rel.iter().count();
    // Only plain names are left (checked above), so iter() yields exactly them.
    for (i, name) in rel.iter().enumerate() {
        walked.push(name);
        let last = i + 1 == count;
        // O_NONBLOCK: opening a planted FIFO must not hang; it is refused below.
        let kind = if last {
            libc::O_NONBLOCK
        } else {
            libc::O_DIRECTORY
        };
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | kind;
        current = openat(&current, name.as_bytes(), flags).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) || is_link(&walked) {
                ResultFileError::Symlink {
                    path: walked.clone(),
                }
            } else if e.raw_os_error() == Some(libc::ENOTDIR) {
                ResultFileError::NotRegular {
                    path: walked.clone(),
                }
            } else {
                io(&walked, e)
            }
        })?;
    }
    let meta = current.metadata().map_err(|e| io(&full, e))?;
    if !meta.is_file() {
        return Err(ResultFileError::NotRegular { path: full });
    }
    Ok(current)
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn openat(dir: &File, name: &[u8], flags: libc::c_int) -> std::io::Result<File> {
    let name = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `dir` is an open descriptor we own for the call and `name` a valid C
    // string; the result is checked before it is wrapped.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The text of `run_dir/rel`, read through [`open`].
pub fn read_to_string(run_dir: &Path, rel: &Path) -> Result<String, ResultFileError> {
    let mut text = String::new();
    open(run_dir, rel)?
        .read_to_string(&mut text)
        .map_err(|source| ResultFileError::Io {
            path: run_dir.join(rel),
            source,
        })?;
    Ok(text)
}

/// Lowercase hex sha256 of `run_dir/rel`, read through [`open`] (so a link is never
/// hashed as if it were the result file).
pub fn sha256(run_dir: &Path, rel: &Path) -> Result<String, ResultFileError> {
    let mut file = open(run_dir, rel)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|source| ResultFileError::Io {
            path: run_dir.join(rel),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks one path a record names inside its run folder: Ok with the path, or the
/// error naming `file` and `field`.
pub fn check_rel<'a>(
    file: &Path,
    field: &str,
    value: &'a str,
) -> Result<&'a Path, ResultFileError> {
    let path = Path::new(value);
    if is_relative_below(path) {
        Ok(path)
    } else {
        Err(ResultFileError::Outside {
            file: file.to_path_buf(),
            field: field.to_string(),
            value: value.to_string(),
        })
    }
}

/// Every path field of a run record that names a file or folder inside the run
/// folder, as (field, value); host paths (suites, inputs) are not among them.
pub fn record_paths(run: &RunRecord) -> Vec<(String, &str)> {
    let mut paths = Vec::new();
    for (i, sc) in run.scenarios.iter().enumerate() {
        let at = format!("scenarios[{i}]");
        paths.push((format!("{at}.dir"), sc.dir.as_str()));
        for (j, a) in sc.artifacts.iter().enumerate() {
            paths.push((format!("{at}.artifacts[{j}].path"), a.path.as_str()));
        }
        for (j, shot) in sc.hang_screenshots.iter().enumerate() {
            paths.push((format!("{at}.hang_screenshots[{j}]"), shot.as_str()));
        }
        for (j, c) in sc.crashes.iter().enumerate() {
            let crash = format!("{at}.crashes[{j}]");
            let optional = [
                ("screenshot", &c.screenshot),
                ("dump", &c.dump),
                // A file name inside the scenario's folder, hence relative too.
                ("console", &c.console),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    paths.push((format!("{crash}.{name}"), value.as_str()));
                }
            }
            for (k, dump) in c.guest_dumps.iter().enumerate() {
                paths.push((format!("{crash}.guest_dumps[{k}]"), dump.as_str()));
            }
        }
        for (j, a) in sc.attempts.iter().enumerate() {
            let attempt = format!("{at}.attempts[{j}]");
            paths.push((format!("{attempt}.dir"), a.dir.as_str()));
            for (k, f) in a.artifacts.iter().enumerate() {
                paths.push((format!("{attempt}.artifacts[{k}].path"), f.path.as_str()));
            }
        }
    }
    paths
}

/// The record's in-folder paths that are not plain relative paths, as errors naming
/// `file` (the run.json they came from) and the field.
pub fn unsafe_record_paths(run: &RunRecord, file: &Path) -> Vec<ResultFileError> {
    record_paths(run)
        .into_iter()
        .filter_map(|(field, value)| check_rel(file, &field, value).err())
        .collect()
}

/// The first of [`unsafe_record_paths`], for commands that refuse the whole record.
pub fn check_record_paths(run: &RunRecord, file: &Path) -> Result<(), ResultFileError> {
    match unsafe_record_paths(run, file).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
