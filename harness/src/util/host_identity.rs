//! What a kept answer about this host depends on, as text: the host's boot, the user,
//! and files by identity. Shared by every cache that keeps a verdict or a digest
//! between runs (the accelerator verdict, tool versions and probes, input digests), so
//! they all mean the same thing by "unchanged".

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where Linux names the current boot: it changes at every boot, so a verdict keyed
/// on it is never carried over a reboot (which may fix or break a host facility).
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id; None when it cannot be read (then nothing is kept for it).
pub(crate) fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string(BOOT_ID).ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The real user id (caches are per user: permissions decide many probes).
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The file a command name runs: itself when it names a path, else the first match
/// on PATH (the name itself when none, whose identity then says it is missing).
pub(crate) fn resolve_binary(binary: &str) -> PathBuf {
    if binary.contains('/') {
        PathBuf::from(binary)
    } else {
        super::find_in_path(binary).unwrap_or_else(|| PathBuf::from(binary))
    }
}

/// A file's identity: path, device, inode, size, mtime and ctime (ns) and mode, or
/// that it is missing (and why), so a file appearing or going also changes it. A
/// rewrite in place with the old mtime put back still moves the ctime, which no user
/// can set.
pub(crate) fn file_identity(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "{} dev={} ino={} size={} mtime={}.{:09} ctime={}.{:09} mode={:o}",
            path.display(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.mode()
        ),
        Err(e) => format!("{} missing ({})", path.display(), e.kind()),
    }
}

/// The path a [`file_identity`] names (what `doctor` shows of a kept key).
pub(crate) fn identity_path(identity: &str) -> &str {
    identity
        .split(" dev=")
        .next()
        .and_then(|p| p.split(" missing (").next())
        .unwrap_or(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_names_its_path_present_or_missing() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("qemu");
        std::fs::write(&file, b"q").unwrap();
        let present = file_identity(&file);
        assert_eq!(identity_path(&present), file.to_str().unwrap());
        let gone = file_identity(&root.path().join("nope"));
        assert!(gone.contains("missing"));
        assert_eq!(
            identity_path(&gone),
            root.path().join("nope").to_str().unwrap()
        );
    }

    #[test]
    fn a_bare_name_resolves_on_path_and_a_path_stays_itself() {
        assert_eq!(resolve_binary("/x/y"), PathBuf::from("/x/y"));
        assert!(resolve_binary("sh").is_absolute(), "sh is on PATH");
    }
}
