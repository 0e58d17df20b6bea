//! Candidate drivers: a prebuilt module, or a kernel module built from source against
//! the image's own kernel headers (recorded by the image build), cached by a hash of
//! the sources and the kernel version so an unchanged driver is built once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cache::cache_root;
use crate::image::kernel;
use crate::image::manifest::Manifest;
use crate::suite::Driver;
use crate::util::{sha256_bytes, sha256_file};

/// Lines of a failed build's log quoted in the error.
const BUILD_LOG_TAIL: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("driver {name}: cannot build from source: {why}; build it yourself and give `module = \"path/{name}.ko\"` instead")]
    NoHeaders { name: String, why: String },
    #[error("driver {name}: build failed (log: {log}):\n{tail}")]
    Build {
        name: String,
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
}

/// Resolves a suite's driver to a module file, building it if it is given as source.
pub(crate) fn prepare(
    name: &str,
    driver: &Driver,
    suite_dir: &Path,
    manifest: &Manifest,
) -> Result<BuiltDriver, DriverError> {
    let io = |message: String| DriverError::Io {
        name: name.to_string(),
        message,
    };
    if let Some(module) = &driver.module {
        let module = suite_dir.join(module);
        let sha256 = sha256_file(&module).map_err(|e| io(format!("{}: {e}", module.display())))?;
        check_kernel(name, &module, manifest)?;
        return Ok(BuiltDriver {
            module,
            sha256,
            sources: Vec::new(),
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
    let mut material = kernel.clone().into_bytes();
    for file in &sources {
        let rel = file.strip_prefix(&source).unwrap_or(file);
        material.extend_from_slice(rel.display().to_string().as_bytes());
        material.push(0);
        material.extend(std::fs::read(file).map_err(|e| io(format!("{}: {e}", file.display())))?);
        material.push(0);
    }
    let key = &sha256_bytes(&material)[..16];
    let drivers = cache_root().join("drivers");
    let target = drivers.join(format!("{name}-{kernel}-{key}"));
    let module = target.join(format!("{name}.ko"));
    if !module.is_file() {
        std::fs::create_dir_all(&drivers).map_err(|e| io(format!("{}: {e}", drivers.display())))?;
        let work = tempfile::Builder::new()
            .prefix(&format!(".build-{name}-"))
            .tempdir_in(&drivers)
            .map_err(|e| io(format!("build folder: {e}")))?;
        for file in &sources {
            let rel = file.strip_prefix(&source).unwrap_or(file);
            let dest = work.path().join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
            }
            std::fs::copy(file, &dest).map_err(|e| io(format!("{}: {e}", file.display())))?;
        }
        let log = drivers.join(format!("build-{name}-{key}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| io(format!("{}: {e}", log.display())))?;
        let log_err = log_file.try_clone().map_err(|e| io(e.to_string()))?;
        let status = Command::new("make")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", work.path().display()))
            .arg("modules")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .status()
            .map_err(|e| io(format!("cannot run make: {e} (install make and gcc)")))?;
        let built = work.path().join(format!("{name}.ko"));
        if !status.success() || !built.is_file() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            return Err(DriverError::Build {
                name: name.to_string(),
                log,
                tail: lines[lines.len().saturating_sub(BUILD_LOG_TAIL)..].join("\n"),
            });
        }
        // Another bootgate may have finished the same build meanwhile: either copy is fine.
        let done = work.keep();
        if std::fs::rename(&done, &target).is_err() {
            let _ = std::fs::remove_dir_all(&done);
        }
    }
    let sha256 = sha256_file(&module).map_err(|e| io(format!("{}: {e}", module.display())))?;
    check_kernel(name, &module, manifest)?;
    Ok(BuiltDriver {
        module,
        sha256,
        sources,
    })
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
            content_file: None,
            reload: None,
        };
        let err = prepare("sensor", &driver, dir.path(), &manifest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("module = \"path/sensor.sys\""), "{err}");
    }
}
