//! Candidate drivers: a prebuilt module, or a kernel module built from source against
//! the image's own kernel headers (recorded by the image build), in the build sandbox
//! (`build_sandbox.rs`) unless the user asked otherwise, cached by a hash of the
//! sources, the kernel version and the build mode so an unchanged driver is built once.

use std::path::{Path, PathBuf};

use super::build_sandbox::{self, BuildError};
use crate::cache::cache_root;
use crate::image::kernel;
use crate::image::manifest::Manifest;
use crate::model::record::DriverBuilds;
use crate::suite::Driver;
use crate::util::digest_cache::DigestCache;
use crate::util::{sha256_bytes, tail_lines};

/// Lines of a failed build's log quoted in the error.
const BUILD_LOG_TAIL: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("driver {name}: cannot build from source: {why}; build it yourself and give `module = \"path/{name}.ko\"` instead")]
    NoHeaders { name: String, why: String },
    #[error("driver {name}: refusing to build its source: {why}. Builds of `source` drivers run in a sandbox (bubblewrap: no network, nothing of the host writable, no host file but the toolchain, headers and source) because a Kbuild file runs arbitrary commands; install bubblewrap where user namespaces are allowed, give a prebuilt `module`, or pass --unsandboxed-builds to build it on the host as this user")]
    NoSandbox { name: String, why: String },
    /// `context` says where the build ran when that may explain the failure.
    #[error("driver {name}: build failed: {why}{context} (log: {log}):\n{tail}")]
    Build {
        name: String,
        why: String,
        context: String,
        log: PathBuf,
        tail: String,
    },
    #[error("driver {name}: {message}")]
    Io { name: String, message: String },
    #[error("driver {name}: {message}: it would not load at any boot (a build problem, not a driver defect); rebuild it against the image's own kernel headers, or give `source` and bootgate builds it with them")]
    WrongKernel { name: String, message: String },
}

/// A driver ready to install: its module file and identity.
#[derive(Debug, Clone)]
pub struct BuiltDriver {
    pub module: PathBuf,
    pub sha256: String,
    /// Source files hashed into the build key (empty for a prebuilt module).
    pub sources: Vec<PathBuf>,
    /// Where its source is, as the suite names it (relative to the suite's folder):
    /// triage shows the module's source lines under it.
    pub source_dir: Option<PathBuf>,
    /// The debug information triage reads: the module itself, or the separate
    /// debug file the suite names for a prebuilt module.
    pub debug_file: PathBuf,
}

/// A module's sha256, kept while the file is unchanged (`util::digest_cache`): the
/// run's input digests hash the same file again.
fn module_sha256(module: &Path) -> std::io::Result<String> {
    DigestCache::under(&crate::cache::cache_root()).sha256(module)
}

/// Resolves a suite's driver to a module file, building it if it is given as source.
/// `notice` gets the warning of an unsandboxed build.
pub(crate) fn prepare(
    name: &str,
    driver: &Driver,
    suite_dir: &Path,
    manifest: &Manifest,
    builds: DriverBuilds,
    notice: &mut dyn FnMut(&str),
) -> Result<BuiltDriver, DriverError> {
    let io = |message: String| DriverError::Io {
        name: name.to_string(),
        message,
    };
    if let Some(module) = &driver.module {
        let module = suite_dir.join(module);
        let sha256 =
            module_sha256(&module).map_err(|e| io(format!("{}: {e}", module.display())))?;
        check_kernel(name, &module, manifest)?;
        let debug_file = driver
            .debug
            .as_ref()
            .map_or_else(|| module.clone(), |d| suite_dir.join(d));
        return Ok(BuiltDriver {
            module,
            sha256,
            sources: Vec::new(),
            source_dir: None,
            debug_file,
        });
    }
    let Some(source) = &driver.source else {
        return Err(io("neither `source` nor `module` given".into()));
    };
    if manifest.os == crate::guest::OsFamily::Windows {
        // bootgate builds Linux modules only; a Windows driver comes signed and built.
        return Err(io(format!(
            "the image {} is Windows: give the built driver, `module = \"path/{name}.sys\"` (or a .zip of its INF/SYS/CAT package for driver_kind = \"pnp\"), not `source`",
            manifest.path.display()
        )));
    }
    let source = suite_dir.join(source);
    // A user's image names its headers package: installed here as root, the way
    // the built-in images' recipes install theirs.
    kernel::install_headers(manifest).map_err(|why| DriverError::NoHeaders {
        name: name.to_string(),
        why,
    })?;
    let (kernel, headers) = kernel::headers(manifest).map_err(|why| DriverError::NoHeaders {
        name: name.to_string(),
        why,
    })?;
    let mut sources: Vec<PathBuf> = walkdir::WalkDir::new(&source)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    sources.sort();
    let key = build_key(builds, &kernel, &source, &sources)
        .map_err(|(file, e)| io(format!("{}: {e}", file.display())))?;
    let drivers = cache_root().join("drivers");
    let target = drivers.join(format!("{name}-{kernel}-{key}"));
    let module = target.join(format!("{name}.ko"));
    if !module.is_file() {
        std::fs::create_dir_all(&drivers).map_err(|e| io(format!("{}: {e}", drivers.display())))?;
        if builds == DriverBuilds::Unsandboxed {
            notice(&format!(
                "warning: driver {name}: building its source unsandboxed (--unsandboxed-builds): its Kbuild runs as this user, with the network and every file this user can reach"
            ));
        }
        let log = drivers.join(format!("build-{name}-{key}.log"));
        let job = build_sandbox::Build {
            name,
            source: &source,
            headers: &headers,
        };
        let bytes = build_sandbox::build(&job, builds, &log).map_err(|e| match e {
            BuildError::Unavailable(why) => DriverError::NoSandbox {
                name: name.to_string(),
                why,
            },
            BuildError::Failed(why) => DriverError::Build {
                name: name.to_string(),
                why,
                context: match builds {
                    DriverBuilds::Sandboxed => format!("; {}", build_sandbox::SANDBOX_DENIES),
                    DriverBuilds::Unsandboxed => String::new(),
                },
                tail: tail_lines(&log, BUILD_LOG_TAIL),
                log: log.clone(),
            },
            other => io(other.to_string()),
        })?;
        // bootgate, not the build, writes the cache: a folder of its own holding only
        // the module, renamed into place whole.
        let work = tempfile::Builder::new()
            .prefix(&format!(".build-{name}-"))
            .tempdir_in(&drivers)
            .map_err(|e| io(format!("build folder: {e}")))?;
        let built = work.path().join(format!("{name}.ko"));
        std::fs::write(&built, &bytes).map_err(|e| io(format!("{}: {e}", built.display())))?;
        // Another bootgate may have finished the same build meanwhile: either copy is fine.
        let done = work.keep();
        if std::fs::rename(&done, &target).is_err() {
            let _ = std::fs::remove_dir_all(&done);
        }
    }
    let sha256 = module_sha256(&module).map_err(|e| io(format!("{}: {e}", module.display())))?;
    check_kernel(name, &module, manifest)?;
    Ok(BuiltDriver {
        debug_file: module.clone(),
        module,
        sha256,
        sources,
        source_dir: driver.source.clone(),
    })
}

/// The cache key of a build: the build mode, the kernel, and each source file's
/// path and bytes. The mode is part of it so a module built unsandboxed is never
/// taken for a sandboxed build's, nor the other way round.
fn build_key(
    builds: DriverBuilds,
    kernel: &str,
    source: &Path,
    files: &[PathBuf],
) -> Result<String, (PathBuf, std::io::Error)> {
    let mut material = format!("{}\0{kernel}", builds.as_str()).into_bytes();
    for file in files {
        let rel = file.strip_prefix(source).unwrap_or(file);
        material.extend_from_slice(rel.display().to_string().as_bytes());
        material.push(0);
        material.extend(std::fs::read(file).map_err(|e| (file.clone(), e))?);
        material.push(0);
    }
    Ok(sha256_bytes(&material)[..16].to_string())
}

/// Refuses, before any boot, a Linux module whose vermagic names another kernel
/// than the image's (when the image says which it runs): the kernel would refuse
/// it at every boot. Unknown either way, the guest checks it at install.
fn check_kernel(name: &str, module: &Path, manifest: &Manifest) -> Result<(), DriverError> {
    if manifest.os != crate::guest::OsFamily::Linux {
        return Ok(());
    }
    let Some(release) = manifest.kernel_release() else {
        return Ok(());
    };
    let bytes = std::fs::read(module).map_err(|e| DriverError::Io {
        name: name.to_string(),
        message: format!("{}: {e}", module.display()),
    })?;
    match kernel::module_vermagic(&bytes) {
        Some(built_for) if built_for != release => Err(DriverError::WrongKernel {
            name: name.to_string(),
            message: format!(
                "{} was built for kernel {built_for}, but the image {} runs {release}",
                module.display(),
                manifest.path.display()
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_key_changes_with_the_mode_the_kernel_and_every_source_byte() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drv.c");
        std::fs::write(&file, "int x;").unwrap();
        let files = [file.clone()];
        let key = |builds, kernel: &str| build_key(builds, kernel, dir.path(), &files).unwrap();
        let sandboxed = key(DriverBuilds::Sandboxed, "6.1.0");
        assert_eq!(sandboxed, key(DriverBuilds::Sandboxed, "6.1.0"), "stable");
        assert_ne!(sandboxed, key(DriverBuilds::Unsandboxed, "6.1.0"));
        assert_ne!(sandboxed, key(DriverBuilds::Sandboxed, "6.2.0"));
        std::fs::write(&file, "int y;").unwrap();
        assert_ne!(sandboxed, key(DriverBuilds::Sandboxed, "6.1.0"));
    }

    #[test]
    fn windows_drivers_must_come_built() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::images::write_windows_image(
            dir.path(),
            crate::testing::images::WINDOWS_TEMPLATE,
        );
        let manifest = Manifest::load(&dir.path().join("image.toml")).unwrap();
        let driver = Driver {
            source: Some(PathBuf::from("src")),
            module: None,
            debug: None,
            content_file: None,
            reload: None,
        };
        let err = prepare(
            "sensor",
            &driver,
            dir.path(),
            &manifest,
            DriverBuilds::Sandboxed,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("module = \"path/sensor.sys\""), "{err}");
    }
}
