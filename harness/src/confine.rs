//! The one rule for host paths that a suite or an image manifest names: resolved
//! against the folder of the file that names them, and refused when they leave it
//! (an absolute path, a `..`, a symlink that points out), unless the user allows it
//! with `--allow-outside-paths`.
//!
//! Why: a suite (and the image manifest it ships) may come from another team or
//! vendor. Every file it names is read by bootgate, copied into a guest, booted by
//! QEMU or built on the host, and so could carry a host file into the guest and from
//! there into the results. Every loader calls [`confine`] for every path field; the
//! test `every_path_field_is_confined` (suite/tests.rs) lists the fields and fails
//! when a new path field appears in a schema without being listed there.

use std::path::{Component, Path, PathBuf};

/// Which host files a suite (and its image manifest) may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathPolicy {
    /// Only files inside the naming file's own folder (after `..` and symlinks):
    /// a suite from elsewhere cannot copy an arbitrary host file into the guest and
    /// its results. The default.
    #[default]
    InsideSuite,
    /// Anywhere (`--allow-outside-paths`): the user vouches for the suite.
    Anywhere,
}

impl PathPolicy {
    /// The policy `--allow-outside-paths` asks for.
    pub fn allowing_outside(allow: bool) -> PathPolicy {
        if allow {
            PathPolicy::Anywhere
        } else {
            PathPolicy::InsideSuite
        }
    }
}

/// A named path that leaves its folder: what it is and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outside {
    /// The path as written.
    pub written: PathBuf,
    /// The folder it had to stay in.
    pub folder: PathBuf,
    /// How it leaves: "is absolute", "climbs out with `..`", "is a symlink to ...".
    pub how: String,
}

impl Outside {
    /// The message for `field`, said the same way for every field and file kind.
    pub fn message(&self, field: &str) -> String {
        format!(
            "{field} {:?} {}, outside the folder {}: a suite (and its image manifest) may name only files in its own folder, so a suite from elsewhere cannot copy a host file into the guest or its results; move the file into that folder, or pass --allow-outside-paths if you trust this suite",
            self.written.display().to_string(),
            self.how,
            self.folder.display()
        )
    }
}

/// Resolves `written` (a path a file in `folder` names) to the host path to use,
/// refusing it when it leaves `folder` and the policy is [`PathPolicy::InsideSuite`].
///
/// `system_roots` are host folders that hold only package files (the firmware in
/// /usr/share, kernel headers in /usr/src): an absolute path below one of them is
/// accepted, so an image can name the host's OVMF or headers without opening the
/// whole file system. A path that does not exist yet is judged by its deepest
/// existing ancestor; the caller's existence check then says it is missing.
pub fn confine(
    folder: &Path,
    written: &Path,
    policy: PathPolicy,
    system_roots: &[&Path],
) -> Result<PathBuf, Outside> {
    let folder = non_empty(folder);
    let joined = folder.join(written);
    if policy == PathPolicy::Anywhere {
        return Ok(joined);
    }
    let outside = |how: String| Outside {
        written: written.to_path_buf(),
        folder: folder.to_path_buf(),
        how,
    };
    if written.components().any(|c| c == Component::ParentDir) {
        return Err(outside("climbs out with `..`".into()));
    }
    // The folder itself (an absolute path into it is as good as a relative one),
    // and for an absolute path the package folders it lies below.
    let folder_real = real(folder);
    let mut roots = vec![folder_real.clone()];
    if written.is_absolute() {
        roots.extend(
            system_roots
                .iter()
                .filter(|root| written.starts_with(root))
                .map(|root| real(root)),
        );
    }
    let resolved = real(&joined);
    if roots.iter().any(|root| resolved.starts_with(root)) {
        return Ok(joined);
    }
    let written_inside = written.starts_with(folder) || written.starts_with(&folder_real);
    if written.is_absolute() && !written_inside && roots.len() == 1 {
        Err(outside("is an absolute path".into()))
    } else {
        Err(outside(format!(
            "leads through a symlink to {}",
            resolved.display()
        )))
    }
}

/// `path` with every symlink resolved, as far as it exists: the deepest existing
/// ancestor canonicalized, the missing rest appended as written (it holds no `..`
/// by the time this is asked about a named path).
fn real(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        if let Ok(found) = at.canonicalize() {
            return missing.iter().rev().fold(found, |acc, part| acc.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// True when `path` lies inside `folder` once symlinks are resolved: what decides
/// whether a file's text may be quoted in an error (a file from elsewhere is named,
/// with its line and column, but never shown).
pub fn is_inside(folder: &Path, path: &Path) -> bool {
    real(path).starts_with(real(non_empty(folder)))
}

/// The folder of `suite.toml` is "": every path starts with that, so it means ".".
fn non_empty(folder: &Path) -> &Path {
    if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("suite")).unwrap();
        std::fs::write(dir.path().join("suite/a.ko"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        dir
    }

    #[test]
    fn a_plain_relative_path_resolves_against_the_folder() {
        let dir = folder();
        let suite = dir.path().join("suite");
        let got = confine(&suite, Path::new("a.ko"), PathPolicy::InsideSuite, &[]).unwrap();
        assert_eq!(got, suite.join("a.ko"));
        // Not there yet: still inside, left to the existence check.
        assert!(confine(&suite, Path::new("new/b.ko"), PathPolicy::InsideSuite, &[]).is_ok());
    }

    #[test]
    fn absolute_dotdot_and_symlinks_out_are_refused() {
        let dir = folder();
        let suite = dir.path().join("suite");
        std::os::unix::fs::symlink(dir.path().join("secret"), suite.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), suite.join("up")).unwrap();
        for (written, how) in [
            ("/etc/passwd", "is an absolute path"),
            ("../secret", "climbs out with `..`"),
            ("x/../../secret", "climbs out with `..`"),
            ("link", "leads through a symlink"),
            ("up/secret", "leads through a symlink"),
            ("up/missing", "leads through a symlink"),
        ] {
            let err = confine(&suite, Path::new(written), PathPolicy::InsideSuite, &[])
                .expect_err(written);
            assert!(err.how.starts_with(how), "{written}: {}", err.how);
            let message = err.message("driver \"s\": `module`");
            assert!(message.contains("--allow-outside-paths"), "{message}");
            assert!(message.contains(written), "{message}");
        }
    }

    #[test]
    fn an_absolute_path_into_the_folder_is_fine_unless_a_symlink_leads_out() {
        let dir = folder();
        let suite = dir.path().join("suite");
        let inside = suite.join("a.ko");
        assert_eq!(
            confine(&suite, &inside, PathPolicy::InsideSuite, &[]).unwrap(),
            inside
        );
        std::os::unix::fs::symlink(dir.path().join("secret"), suite.join("link")).unwrap();
        let err = confine(&suite, &suite.join("link"), PathPolicy::InsideSuite, &[]).unwrap_err();
        assert!(
            err.how.starts_with("leads through a symlink"),
            "{}",
            err.how
        );
    }

    #[test]
    fn a_symlink_that_stays_inside_is_fine() {
        let dir = folder();
        let suite = dir.path().join("suite");
        std::os::unix::fs::symlink("a.ko", suite.join("alias.ko")).unwrap();
        assert!(confine(&suite, Path::new("alias.ko"), PathPolicy::InsideSuite, &[]).is_ok());
    }

    #[test]
    fn system_roots_admit_absolute_paths_below_them_only() {
        let dir = folder();
        let suite = dir.path().join("suite");
        let roots = [dir.path()];
        let inside_root = dir.path().join("secret");
        assert!(confine(&suite, &inside_root, PathPolicy::InsideSuite, &roots).is_ok());
        let err = confine(
            &suite,
            Path::new("/etc/passwd"),
            PathPolicy::InsideSuite,
            &roots,
        )
        .unwrap_err();
        assert_eq!(err.how, "is an absolute path");
        // `..` cannot climb out of a system root either.
        let climbing = dir.path().join("suite/../../etc/passwd");
        assert!(confine(&suite, &climbing, PathPolicy::InsideSuite, &roots).is_err());
    }

    #[test]
    fn anywhere_allows_everything() {
        let dir = folder();
        let suite = dir.path().join("suite");
        let got = confine(&suite, Path::new("/etc/passwd"), PathPolicy::Anywhere, &[]).unwrap();
        assert_eq!(got, PathBuf::from("/etc/passwd"));
    }

    #[test]
    fn inside_follows_symlinks() {
        let dir = folder();
        let suite = dir.path().join("suite");
        std::os::unix::fs::symlink(dir.path().join("secret"), suite.join("link")).unwrap();
        assert!(is_inside(&suite, &suite.join("a.ko")));
        assert!(!is_inside(&suite, &suite.join("link")));
        assert!(!is_inside(&suite, Path::new("/etc/passwd")));
    }
}
