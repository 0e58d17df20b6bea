//! Run folders: `out/<run-id>` created fresh (never reusing one, so two runs into
//! one results folder both stay complete) and `out/latest` pointing at the newest.
//! Shared by the runner and `bootgate merge`.

use std::path::{Path, PathBuf};

/// A failed filesystem operation and the path it was on.
#[derive(Debug)]
pub(crate) struct FolderError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl FolderError {}

/// Creates `out/<run-id>`; returns the id and the folder.
pub(crate) fn create_run_dir(out: &Path) -> Result<(String, PathBuf), FolderError> {
    let fail = |path: &Path, source| FolderError {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out).map_err(|e| fail(out, e))?;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut attempt = 0u32;
    loop {
        let suffix = (std::process::id() ^ attempt.wrapping_mul(0x9e37)) & 0xffff;
        let run_id = format!("{stamp}-{suffix:04x}");
        let dir = out.join(&run_id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((run_id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(e) => return Err(fail(&dir, e)),
        }
    }
}

/// Re-points `out/latest` at `run_id`: a new link beside it renamed over it, so a
/// reader never finds `latest` missing or half-made.
pub(crate) fn point_latest(out: &Path, run_id: &str) -> Result<(), FolderError> {
    let latest = out.join("latest");
    let tmp = out.join(format!(".latest-{run_id}"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(run_id, &tmp).map_err(|source| FolderError {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &latest).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        FolderError {
            path: latest,
            source,
        }
    })
}

/// `path` made absolute (resolved when it exists), for records read elsewhere.
pub(crate) fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_are_fresh_and_latest_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_dir) = create_run_dir(dir.path()).unwrap();
        let (b, b_dir) = create_run_dir(dir.path()).unwrap();
        assert_ne!(a, b);
        assert!(a_dir.is_dir() && b_dir.is_dir());
        point_latest(dir.path(), &a).unwrap();
        point_latest(dir.path(), &b).unwrap();
        assert_eq!(
            std::fs::read_link(dir.path().join("latest")).unwrap(),
            Path::new(&b)
        );
    }
}
