//! The built-in demo Linux guest: its recipe (images/demo) is compiled into the
//! binary, so `bootgate` builds it from anywhere, into a per-user cache keyed by a
//! hash of the recipe and the exact Debian package versions it resolves to.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ImageError, Notify};
use crate::cache::cache_root;
use crate::util::{sha256_bytes, FileLock};

/// The recipe, embedded: (file name, contents).
const RECIPE: &[(&str, &str)] = &[
    ("build.sh", include_str!("../../../images/demo/build.sh")),
    ("init", include_str!("../../../images/demo/init")),
    ("shutdown", include_str!("../../../images/demo/shutdown")),
    (
        "image.toml",
        include_str!("../../../images/demo/image.toml"),
    ),
];

/// Marks a finished build; a folder without it is never used.
const COMPLETE_MARKER: &str = ".complete";
/// Build output files made read-only once built: bases are never written.
const BASE_FILES: &[&str] = &["system.qcow2", "vmlinuz", "initrd.img", "image.toml"];
/// Lines of the build log quoted in an error.
const LOG_TAIL_LINES: usize = 25;

fn build_error(message: impl Into<String>) -> ImageError {
    ImageError::Build {
        message: message.into(),
    }
}

/// Writes the embedded recipe into `dir`.
fn write_recipe(dir: &Path) -> Result<(), ImageError> {
    for (name, text) in RECIPE {
        let path = dir.join(name);
        fs::write(&path, text)
            .map_err(|e| build_error(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Everything apt answers `build.sh resolve` from: its package lists and its
/// configuration (sources, pins, apt.conf). Unchanged files mean an unchanged answer.
const APT_INPUTS: &[&str] = &["/var/lib/apt/lists", "/etc/apt"];

/// A fingerprint of [`APT_INPUTS`] (every file's path, size and modification time),
/// or None when they cannot be read (then the resolution always runs).
fn apt_fingerprint() -> Option<String> {
    let mut listing = String::new();
    for root in APT_INPUTS {
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.ok()?;
            let meta = entry.metadata().ok()?;
            let modified = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            listing.push_str(&format!(
                "{} {} {}\n",
                entry.path().display(),
                meta.len(),
                modified.as_nanos()
            ));
        }
    }
    Some(sha256_bytes(listing.as_bytes()))
}

/// A remembered `build.sh resolve` answer: the fingerprint of apt's inputs on the
/// first line, the answer after it.
fn memo_lookup(memo: &Path, fingerprint: &str) -> Option<String> {
    let text = fs::read_to_string(memo).ok()?;
    let (first, resolved) = text.split_once('\n')?;
    (first == fingerprint && !resolved.trim().is_empty()).then(|| resolved.to_string())
}

fn memo_store(memo: &Path, fingerprint: &str, resolved: &str) {
    // Only a speed-up: a memo that cannot be written costs the next run 3 s.
    if let Some(dir) = memo.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = crate::util::write_atomic(memo, format!("{fingerprint}\n{resolved}").as_bytes());
}

/// The cache key: a hash of the recipe files and the package versions they resolve to
/// (`build.sh resolve`), so a new kernel in the archive means a new image.
///
/// Resolving asks apt-cache three questions, about 3 s of CPU on hosts whose apt
/// keeps no binary cache (Debian's container images): every run paid it. The answer
/// is remembered per recipe with a fingerprint of apt's lists and configuration, and
/// asked again as soon as either changes (an `apt-get update`, a new source, a pin).
pub(crate) fn cache_key(recipe_dir: &Path) -> Result<(String, String), ImageError> {
    let mut recipe_material = Vec::new();
    for (name, text) in RECIPE {
        recipe_material.extend_from_slice(name.as_bytes());
        recipe_material.push(0);
        recipe_material.extend_from_slice(text.as_bytes());
        recipe_material.push(0);
    }
    let recipe_hash = sha256_bytes(&recipe_material);
    let memo = cache_root()
        .join("images")
        .join(format!(".resolved-{}", &recipe_hash[..16]));
    let fingerprint = apt_fingerprint();
    let remembered = fingerprint.as_deref().and_then(|f| memo_lookup(&memo, f));
    let resolved = match remembered {
        Some(resolved) => resolved,
        None => {
            let resolved = resolve(recipe_dir)?;
            if let Some(f) = &fingerprint {
                memo_store(&memo, f, &resolved);
            }
            resolved
        }
    };
    let mut material = recipe_material;
    material.extend_from_slice(resolved.as_bytes());
    Ok((sha256_bytes(&material)[..16].to_string(), resolved))
}

/// Runs `build.sh resolve`: "PACKAGE VERSION" per package the image is made of.
fn resolve(recipe_dir: &Path) -> Result<String, ImageError> {
    let output = Command::new("bash")
        .arg(recipe_dir.join("build.sh"))
        .arg("resolve")
        .current_dir(recipe_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| build_error(format!("cannot run bash: {e}")))?;
    if !output.status.success() {
        return Err(build_error(format!(
            "resolving the demo image's packages failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Where a built image with `key` lives.
pub(crate) fn image_dir(key: &str) -> PathBuf {
    cache_root().join("images").join(format!("demo-{key}"))
}

/// Returns the manifest path of the built demo image, building it first if the cache
/// has no image for the current recipe and package versions.
pub fn ensure_built(notify: Notify) -> Result<PathBuf, ImageError> {
    build(false, notify)
}

/// Builds the demo image (or reuses the cached one unless `force`); returns its manifest.
pub fn build(force: bool, notify: Notify) -> Result<PathBuf, ImageError> {
    let recipe = tempfile::Builder::new()
        .prefix("bootgate-recipe-")
        .tempdir()
        .map_err(|e| build_error(format!("cannot create a temp folder: {e}")))?;
    write_recipe(recipe.path())?;
    let (key, _resolved) = cache_key(recipe.path())?;
    let target = image_dir(&key);
    let manifest = target.join("image.toml");
    if !force && target.join(COMPLETE_MARKER).is_file() {
        return Ok(manifest);
    }
    let images = cache_root().join("images");
    fs::create_dir_all(&images)
        .map_err(|e| build_error(format!("cannot create cache {}: {e}", images.display())))?;
    // One build at a time per cache: a second bootgate waits, then reuses the result.
    let lock = images.join(".demo.lock");
    let _lock = FileLock::acquire(&lock)
        .map_err(|e| build_error(format!("cannot lock {}: {e}", lock.display())))?;
    if !force && target.join(COMPLETE_MARKER).is_file() {
        return Ok(manifest);
    }
    notify(&format!(
        "building the demo image into {} (first run only: downloads Debian packages, about a minute)",
        target.display()
    ));
    let work = tempfile::Builder::new()
        .prefix(&format!(".demo-{key}-"))
        .tempdir_in(&images)
        .map_err(|e| build_error(format!("cannot create a build folder: {e}")))?;
    let log_path = images.join(format!("build-demo-{key}.log"));
    let log = fs::File::create(&log_path)
        .map_err(|e| build_error(format!("cannot create {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| build_error(format!("cannot open {}: {e}", log_path.display())))?;
    let status = Command::new("bash")
        .arg(recipe.path().join("build.sh"))
        .arg("build")
        .arg(work.path())
        .current_dir(recipe.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| build_error(format!("cannot run bash: {e}")))?;
    if !status.success() {
        return Err(build_error(format!(
            "build.sh exited with {status}; full log: {}\n{}",
            log_path.display(),
            crate::util::tail_lines(&log_path, LOG_TAIL_LINES)
        )));
    }
    for name in BASE_FILES {
        let path = work.path().join(name);
        if !path.is_file() {
            return Err(build_error(format!(
                "build.sh did not produce {name}; full log: {}",
                log_path.display()
            )));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444))
            .map_err(|e| build_error(format!("cannot make {} read-only: {e}", path.display())))?;
    }
    fs::write(work.path().join(COMPLETE_MARKER), key.as_bytes())
        .map_err(|e| build_error(format!("cannot finish the build: {e}")))?;
    if target.exists() {
        fs::remove_dir_all(&target)
            .map_err(|e| build_error(format!("cannot replace {}: {e}", target.display())))?;
    }
    let work = work.keep();
    fs::rename(&work, &target).map_err(|e| {
        build_error(format!(
            "cannot move the build into {}: {e}",
            target.display()
        ))
    })?;
    Ok(manifest)
}

/// `build-info.json` of a built image (kernel version, packages, headers folder).
pub fn build_info(manifest: &Path) -> Option<serde_json::Value> {
    let dir = manifest.parent()?;
    let text = fs::read_to_string(dir.join("build-info.json")).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_resolution_is_used_only_for_the_same_apt_state() {
        let dir = tempfile::tempdir().unwrap();
        let memo = dir.path().join("images").join(".resolved-x");
        assert_eq!(memo_lookup(&memo, "f1"), None, "nothing remembered yet");
        memo_store(
            &memo,
            "f1",
            "linux-image-cloud-amd64 6.1\nbusybox-static 1.35\n",
        );
        assert_eq!(
            memo_lookup(&memo, "f1").as_deref(),
            Some("linux-image-cloud-amd64 6.1\nbusybox-static 1.35\n")
        );
        assert_eq!(memo_lookup(&memo, "f2"), None, "apt's lists changed");
        std::fs::write(&memo, "f1\n  \n").unwrap();
        assert_eq!(
            memo_lookup(&memo, "f1"),
            None,
            "an empty answer is not kept"
        );
    }

    #[test]
    fn apt_fingerprint_follows_the_lists() {
        // On a host with apt: stable between two calls.
        if let Some(first) = apt_fingerprint() {
            assert_eq!(apt_fingerprint(), Some(first));
        } else {
            assert!(!Path::new("/etc/apt").exists() || !Path::new("/var/lib/apt/lists").exists());
        }
    }
}
