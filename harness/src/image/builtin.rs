//! The built-in images (`demo`, `debian12`, `ntfs-helper`): their recipes (images/NAME) are compiled
//! into the binary, so `bootgate` builds them from anywhere, each into its own folder
//! of a per-user cache keyed by a hash of its recipe and the exact Debian package
//! versions it resolves to.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ImageError, Notify};
use crate::cache::cache_root;
use crate::util::{sha256_bytes, FileLock};

/// An image bootgate can build itself from its embedded recipe.
#[derive(Debug)]
pub struct BuiltIn {
    /// What a suite's `image` names; also names its cache folder, lock and build log.
    pub name: &'static str,
    /// The recipe, embedded: (file name, contents). `build.sh` is its entry point.
    recipe: &'static [(&'static str, &'static str)],
    /// How long a first build takes, for the notice printed before it starts.
    build_time: &'static str,
}

/// The demo guest: a busybox initramfs, qemu-ga and the cloud kernel (images/demo).
const DEMO: BuiltIn = BuiltIn {
    name: "demo",
    recipe: &[
        ("build.sh", include_str!("../../../images/demo/build.sh")),
        ("init", include_str!("../../../images/demo/init")),
        ("shutdown", include_str!("../../../images/demo/shutdown")),
        (
            "image.toml",
            include_str!("../../../images/demo/image.toml"),
        ),
    ],
    build_time: "about a minute",
};

/// Debian 12 with systemd and its packaged agent, made with mmdebstrap
/// (images/debian12). Its build runs a chroot, so it needs root.
const DEBIAN12: BuiltIn = BuiltIn {
    name: "debian12",
    recipe: &[
        (
            "build.sh",
            include_str!("../../../images/debian12/build.sh"),
        ),
        (
            "image.toml",
            include_str!("../../../images/debian12/image.toml"),
        ),
    ],
    build_time: "about 2 minutes; needs root",
};

/// The demo guest with NTFS read-write support (ntfs-3g, fuse): the helper VM that
/// edits a stopped Windows VM's disk offline and copies its crash evidence out
/// (images/ntfs-helper). It is the demo's recipe with a `variant.sh` beside it.
const NTFS_HELPER: BuiltIn = BuiltIn {
    name: NTFS_HELPER_NAME,
    recipe: &[
        ("build.sh", include_str!("../../../images/demo/build.sh")),
        ("init", include_str!("../../../images/demo/init")),
        ("shutdown", include_str!("../../../images/demo/shutdown")),
        (
            "image.toml",
            include_str!("../../../images/ntfs-helper/image.toml"),
        ),
        (
            "variant.sh",
            include_str!("../../../images/ntfs-helper/variant.sh"),
        ),
        (
            "bootgate-ntfs",
            include_str!("../../../images/ntfs-helper/bootgate-ntfs"),
        ),
    ],
    build_time: "about a minute",
};

/// The built-in image a Windows manifest's `offline_helper` names by default.
pub const NTFS_HELPER_NAME: &str = "ntfs-helper";

/// Every built-in image, in the order [`super::BUILT_IN`] names them.
pub(crate) const IMAGES: &[&BuiltIn] = &[&DEMO, &DEBIAN12, &NTFS_HELPER];

/// The built-in image called `name`.
pub fn find(name: &str) -> Option<&'static BuiltIn> {
    IMAGES.iter().copied().find(|image| image.name == name)
}

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

/// Writes the embedded recipe of `image` into `dir`.
fn write_recipe(image: &BuiltIn, dir: &Path) -> Result<(), ImageError> {
    for (name, text) in image.recipe {
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
pub(crate) fn cache_key(
    image: &BuiltIn,
    recipe_dir: &Path,
) -> Result<(String, String), ImageError> {
    let recipe_material = recipe_material(image);
    let recipe_hash = sha256_bytes(&recipe_material);
    let memo = cache_root()
        .join("images")
        .join(format!(".resolved-{}", &recipe_hash[..16]));
    let fingerprint = apt_fingerprint();
    let remembered = fingerprint.as_deref().and_then(|f| memo_lookup(&memo, f));
    let resolved = match remembered {
        Some(resolved) => resolved,
        None => {
            let resolved = resolve(image, recipe_dir)?;
            if let Some(f) = &fingerprint {
                memo_store(&memo, f, &resolved);
            }
            resolved
        }
    };
    Ok((key_of(recipe_material, &resolved), resolved))
}

/// The recipe's files, each name and contents NUL-terminated: what the key hashes
/// besides the resolved versions.
fn recipe_material(image: &BuiltIn) -> Vec<u8> {
    let mut recipe_material = Vec::new();
    for (name, text) in image.recipe {
        recipe_material.extend_from_slice(name.as_bytes());
        recipe_material.push(0);
        recipe_material.extend_from_slice(text.as_bytes());
        recipe_material.push(0);
    }
    recipe_material
}

/// The cache key from the recipe material and the `build.sh resolve` answer.
fn key_of(mut material: Vec<u8>, resolved: &str) -> String {
    material.extend_from_slice(resolved.as_bytes());
    sha256_bytes(&material)[..16].to_string()
}

/// Runs `build.sh resolve`: "PACKAGE VERSION" per package the image is made of.
fn resolve(image: &BuiltIn, recipe_dir: &Path) -> Result<String, ImageError> {
    let output = Command::new("bash")
        .arg(recipe_dir.join("build.sh"))
        .arg("resolve")
        .current_dir(recipe_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| build_error(format!("cannot run bash: {e}")))?;
    if !output.status.success() {
        return Err(build_error(format!(
            "resolving the {} image's packages failed: {}",
            image.name,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Where `image` built with `key` lives.
pub(crate) fn image_dir(image: &BuiltIn, key: &str) -> PathBuf {
    cache_root()
        .join("images")
        .join(format!("{}-{key}", image.name))
}

/// Returns the manifest path of the built image, building it first if the cache
/// has no image for the current recipe and package versions.
pub fn ensure_built(image: &BuiltIn, notify: Notify) -> Result<PathBuf, ImageError> {
    build(image, false, notify)
}

/// Builds `image` (or reuses the cached one unless `force`); returns its manifest.
pub fn build(image: &BuiltIn, force: bool, notify: Notify) -> Result<PathBuf, ImageError> {
    let recipe = tempfile::Builder::new()
        .prefix("bootgate-recipe-")
        .tempdir()
        .map_err(|e| build_error(format!("cannot create a temp folder: {e}")))?;
    write_recipe(image, recipe.path())?;
    let (key, _resolved) = cache_key(image, recipe.path())?;
    let target = image_dir(image, &key);
    let manifest = target.join("image.toml");
    if !force && target.join(COMPLETE_MARKER).is_file() {
        return Ok(manifest);
    }
    let images = crate::cache::images_root();
    fs::create_dir_all(&images)
        .map_err(|e| build_error(format!("cannot create cache {}: {e}", images.display())))?;
    // One build at a time per cache: a second bootgate waits, then reuses the result.
    let name = image.name;
    let lock = images.join(format!(".{name}.lock"));
    let _lock = FileLock::acquire(&lock)
        .map_err(|e| build_error(format!("cannot lock {}: {e}", lock.display())))?;
    if !force && target.join(COMPLETE_MARKER).is_file() {
        return Ok(manifest);
    }
    notify(&format!(
        "building the {name} image into {} (first run only: downloads Debian packages, {})",
        target.display(),
        image.build_time
    ));
    let work = tempfile::Builder::new()
        .prefix(&format!(".{name}-{key}-"))
        .tempdir_in(&images)
        .map_err(|e| build_error(format!("cannot create a build folder: {e}")))?;
    let log_path = images.join(format!("build-{name}-{key}.log"));
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
    fn the_table_has_every_built_in_name_with_its_recipe() {
        let names: Vec<&str> = IMAGES.iter().map(|image| image.name).collect();
        assert_eq!(names, super::super::BUILT_IN);
        for image in IMAGES {
            assert_eq!(find(image.name).map(|i| i.name), Some(image.name));
            let file = |name: &str| {
                image
                    .recipe
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, text)| *text)
                    .unwrap_or_else(|| panic!("{} has no {name}", image.name))
            };
            assert!(file("build.sh").starts_with("#!/usr/bin/env bash"));
            // The manifest copied next to the built files names the image it belongs to.
            let manifest: toml::Table = toml::from_str(file("image.toml")).unwrap();
            assert_eq!(manifest["name"].as_str(), Some(image.name));
        }
        assert!(find("demoo").is_none());
    }

    #[test]
    fn each_image_has_its_own_cache_folder_and_key() {
        let resolved = "linux-image-cloud-amd64 6.1\n";
        let demo = key_of(recipe_material(&DEMO), resolved);
        let debian12 = key_of(recipe_material(&DEBIAN12), resolved);
        assert_ne!(demo, debian12, "same packages, different recipes");
        assert_ne!(image_dir(&DEMO, &demo), image_dir(&DEBIAN12, &demo));
        assert!(image_dir(&DEBIAN12, &debian12).ends_with(format!("debian12-{debian12}")));
        assert_ne!(
            sha256_bytes(&recipe_material(&DEMO)),
            sha256_bytes(&recipe_material(&DEBIAN12)),
            "the remembered resolutions are per recipe"
        );
    }

    /// The debian12 manifest loads as a distribution's, with its rescue boot and
    /// initramfs tool.
    #[test]
    fn debian12_manifest_loads_as_a_distribution() {
        let dir = tempfile::tempdir().unwrap();
        let (_, text) = DEBIAN12
            .recipe
            .iter()
            .find(|(name, _)| *name == "image.toml")
            .unwrap();
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::write(dir.path().join("image.toml"), text).unwrap();
        let manifest = super::super::Manifest::load(&dir.path().join("image.toml")).unwrap();
        assert_eq!(manifest.name, "debian12");
        assert!(manifest.boot.append.contains("oops=panic panic=-1"));
        assert!(manifest.ready.agent);
        assert_eq!(manifest.linux_profile, crate::guest::LinuxProfile::Distro);
        let profile = manifest.guest_profile();
        assert_eq!(
            profile.safe_mode_append(&["demo_sensor".into()]).unwrap(),
            "modprobe.blacklist=demo_sensor"
        );
        assert!(profile
            .register_driver("demo_sensor", "", false, true)
            .is_ok());
    }

    /// The NTFS helper is the Windows images' default offline helper, and its
    /// recipe is the demo's plus its variant (ntfs-3g, fuse, bootgate-ntfs).
    #[test]
    fn ntfs_helper_is_the_demo_recipe_with_its_variant() {
        assert_eq!(
            NTFS_HELPER_NAME,
            crate::guest::windows::DEFAULT_OFFLINE_HELPER
        );
        let file = |image: &BuiltIn, name: &str| {
            image
                .recipe
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
        };
        for shared in ["build.sh", "init", "shutdown"] {
            assert_eq!(file(&NTFS_HELPER, shared), file(&DEMO, shared), "{shared}");
        }
        let variant = file(&NTFS_HELPER, "variant.sh").unwrap();
        assert!(
            variant.contains("ntfs-3g bin/ntfs-3g") && variant.contains("VARIANT_MODULES=(fuse)")
        );
        assert!(file(&NTFS_HELPER, "bootgate-ntfs")
            .unwrap()
            .starts_with("#!/bin/sh"));
        assert!(file(&DEMO, "build.sh")
            .unwrap()
            .contains("source \"$HERE/variant.sh\""));
    }

    /// The demo's cache key is what it was before the table: an existing cache stays valid.
    #[test]
    fn demo_cache_key_is_unchanged_by_the_table() {
        let mut material = Vec::new();
        for (name, path) in [
            ("build.sh", "build.sh"),
            ("init", "init"),
            ("shutdown", "shutdown"),
            ("image.toml", "image.toml"),
        ] {
            let text = std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../images/demo")
                    .join(path),
            )
            .unwrap();
            material.extend_from_slice(name.as_bytes());
            material.push(0);
            material.extend_from_slice(&text);
            material.push(0);
        }
        material.extend_from_slice(b"busybox-static 1\n");
        assert_eq!(
            key_of(recipe_material(&DEMO), "busybox-static 1\n"),
            sha256_bytes(&material)[..16]
        );
        assert!(image_dir(&DEMO, "k").ends_with("demo-k"));
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
