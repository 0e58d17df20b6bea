//! `bootgate offline`: the NTFS helper VM on a Windows VM's disk from the command
//! line, the way Microsoft's recovery tool works from WinPE: delete a bad content
//! file, put a file back, copy the crash evidence out. The named disk is written
//! only when asked (`in_place`); otherwise the work lands in a new qcow2 overlay on
//! top of it, which the user can boot or `qemu-img commit`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::scenario::ntfs::{run_helper, HelperSetup};
pub use super::scenario::ntfs::{EvidenceCopy, OfflineReport, WindowsEdit};
use crate::guest::{GuestPaths, GuestProfile, LinuxProfile, OsFamily};
use crate::image::manifest::{DiskFormat, Manifest};
use crate::image::{builtin, overlay};
use crate::qemu::accel::AccelChoice;
use crate::qemu::QemuTools;

/// How long the helper may take to boot to an answering agent (about 10 s under TCG).
const HELPER_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What `bootgate offline` was asked to do.
#[derive(Debug, Clone)]
pub struct OfflineOptions {
    /// The Windows VM's disk (qcow2 or raw).
    pub disk: PathBuf,
    /// The Windows image manifest (its %SystemRoot%, dump paths, helper); None: defaults.
    pub image: Option<PathBuf>,
    pub edit: WindowsEdit,
    /// Write the disk itself instead of an overlay on it.
    pub in_place: bool,
    /// Where the overlay goes (default: `DISK-STEM.offline.qcow2` in the current folder).
    pub overlay: Option<PathBuf>,
    /// The helper VM's accelerator. Its logs go in the collect folder's
    /// `helper-vm/` (without one: a temporary folder, kept and named on failure).
    pub accel: AccelChoice,
}

/// What came of it.
#[derive(Debug)]
pub struct OfflineOutcome {
    pub report: OfflineReport,
    /// The disk that holds the result: the overlay, or the disk itself.
    pub written_disk: PathBuf,
    /// offline.json, when a collect folder was given.
    pub report_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Manifest(#[from] crate::image::ManifestError),
    #[error("{0}")]
    Guest(#[from] crate::guest::GuestError),
    #[error("the helper VM {why} (its console and QEMU logs: {logs})")]
    Helper { why: String, logs: PathBuf },
    #[error("{0}")]
    Host(String),
    #[error("interrupted: the helper VM was stopped before it finished; {0}")]
    Interrupted(String),
}

impl OfflineError {
    /// 2 for bad input, 3 for infrastructure trouble (the helper, the host).
    pub fn exit_code(&self) -> u8 {
        match self {
            OfflineError::Usage(_) | OfflineError::Guest(_) => 2,
            OfflineError::Interrupted(_) => 130,
            OfflineError::Manifest(_)
            | OfflineError::Image(crate::image::ImageError::Manifest(_)) => 2,
            _ => 3,
        }
    }
}

/// The Windows profile whose paths the helper uses: the manifest's, or the
/// defaults (`C:\Windows`, `%SystemRoot%\Minidump`, `%SystemRoot%\MEMORY.DMP`).
fn windows_profile(image: Option<&Path>) -> Result<(GuestProfile, Option<Manifest>), OfflineError> {
    match image {
        Some(path) => {
            let path = if path.is_dir() {
                path.join("image.toml")
            } else {
                path.to_path_buf()
            };
            let manifest = Manifest::load(&path)?;
            if manifest.os != OsFamily::Windows {
                return Err(OfflineError::Usage(format!(
                    "{}: os = {:?}: `bootgate offline` edits Windows disks; name a Windows image manifest (images/windows/image.toml) or leave --image out",
                    path.display(),
                    manifest.os
                )));
            }
            Ok((manifest.guest_profile(), Some(manifest)))
        }
        None => {
            let guest: GuestPaths = toml::from_str("shell = []")
                .map_err(|e| OfflineError::Host(format!("default windows paths: {e}")))?;
            let profile = GuestProfile::new(
                OsFamily::Windows,
                LinuxProfile::Demo,
                Path::new("(defaults)"),
                &guest,
            );
            Ok((profile, None))
        }
    }
}

/// The helper image a Windows profile names, built first if it is a built-in.
fn helper_manifest(
    profile: &GuestProfile,
    notify: &mut dyn FnMut(&str),
) -> Result<Manifest, OfflineError> {
    let reference = profile.offline_helper()?;
    match builtin::find(reference) {
        Some(image) => {
            let path = builtin::ensure_built(image, notify)?;
            Ok(Manifest::load(&path)?)
        }
        None => Ok(Manifest::load(Path::new(reference))?),
    }
}

/// The disk's format as qemu-img reads it.
fn disk_format(tools: &QemuTools, disk: &Path) -> Result<DiskFormat, OfflineError> {
    let output = Command::new(&tools.img)
        .args(["info", "--output=json"])
        .arg(disk)
        .output()
        .map_err(|e| OfflineError::Host(format!("cannot run {}: {e}", tools.img)))?;
    if !output.status.success() {
        return Err(OfflineError::Usage(format!(
            "cannot read the disk {}: {}",
            disk.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| OfflineError::Host(format!("qemu-img info: {e}")))?;
    match info["format"].as_str() {
        Some("qcow2") => Ok(DiskFormat::Qcow2),
        Some("raw") => Ok(DiskFormat::Raw),
        other => Err(OfflineError::Usage(format!(
            "{} is a {} disk; bootgate offline takes qcow2 or raw (convert it: qemu-img convert -O qcow2 IN OUT.qcow2)",
            disk.display(),
            other.unwrap_or("unknown")
        ))),
    }
}

/// The default overlay path: `STEM.offline.qcow2` in the current folder.
fn default_overlay(disk: &Path) -> PathBuf {
    let stem = disk
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into());
    PathBuf::from(format!("{stem}.offline.qcow2"))
}

/// Runs the helper on the disk as `opts` say; progress (a first build of the
/// helper image) goes to `notify`.
pub fn offline_disk(
    opts: &OfflineOptions,
    notify: &mut dyn FnMut(&str),
) -> Result<OfflineOutcome, OfflineError> {
    if opts.edit.remove.is_empty() && opts.edit.put.is_empty() && opts.edit.collect.is_none() {
        return Err(OfflineError::Usage(
            "nothing to do: give --remove, --put or --collect (see bootgate offline --help)".into(),
        ));
    }
    if !opts.disk.is_file() {
        return Err(OfflineError::Usage(format!(
            "no disk at {}",
            opts.disk.display()
        )));
    }
    for (host, _) in &opts.edit.put {
        if !host.is_file() {
            return Err(OfflineError::Usage(format!(
                "--put: no file at {}",
                host.display()
            )));
        }
    }
    let tools = QemuTools::from_env();
    let (profile, _) = windows_profile(opts.image.as_deref())?;
    // Paths are checked before anything boots.
    for p in &opts.edit.remove {
        profile.offline_volume_path(p, true)?;
    }
    for (_, p) in &opts.edit.put {
        profile.offline_volume_path(p, false)?;
    }
    let format = disk_format(&tools, &opts.disk)?;
    let written_disk = if opts.in_place {
        if format != DiskFormat::Qcow2 {
            return Err(OfflineError::Usage(format!(
                "--in-place works on qcow2 disks; {} is raw: leave --in-place out (the result is then an overlay) or convert it",
                opts.disk.display()
            )));
        }
        opts.disk.clone()
    } else {
        let overlay_path = opts
            .overlay
            .clone()
            .unwrap_or_else(|| default_overlay(&opts.disk));
        if overlay_path.exists() {
            return Err(OfflineError::Usage(format!(
                "{} exists: remove it or name another with --overlay",
                overlay_path.display()
            )));
        }
        overlay::create(&tools.img, &opts.disk, format, &overlay_path)?;
        overlay_path
    };
    let helper = helper_manifest(&profile, notify)?;
    let accel = super::prepare::decide_accel(opts.accel, &tools, Some(&helper)).accel;
    let mut temp_logs = None;
    let logs = match &opts.edit.collect {
        Some(dir) => {
            let logs = dir.join("helper-vm");
            std::fs::create_dir_all(&logs).map_err(|e| {
                OfflineError::Host(format!("cannot create {}: {e}", logs.display()))
            })?;
            logs
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("bootgate-offline-")
                .tempdir()
                .map_err(|e| OfflineError::Host(format!("cannot create a temp folder: {e}")))?;
            let path = dir.path().to_path_buf();
            temp_logs = Some(dir);
            path
        }
    };
    let setup = HelperSetup {
        tools: &tools,
        helper: &helper,
        accel,
        logs: &logs,
        rel_dir: "helper-vm",
        name: "offline helper VM",
        boot_timeout: HELPER_BOOT_TIMEOUT,
    };
    let (result, argvs) = run_helper(&setup, &written_disk, &profile, &opts.edit);
    let report = match result {
        Ok(report) => report,
        Err(why) => {
            // Keep the logs of a failed helper where the user can read them.
            if let Some(dir) = temp_logs.take() {
                let _ = dir.keep();
            }
            // An overlay of ours with a half-done edit is no use to anyone.
            if !opts.in_place {
                let _ = std::fs::remove_file(&written_disk);
            }
            if super::interrupted() {
                return Err(OfflineError::Interrupted(if opts.in_place {
                    format!(
                        "{} was being written in place and may hold part of the edit (the volume may be marked unclean): run the same command again to finish it",
                        written_disk.display()
                    )
                } else {
                    format!(
                        "{} is unchanged and the unfinished overlay was removed",
                        opts.disk.display()
                    )
                }));
            }
            return Err(OfflineError::Helper { why, logs });
        }
    };
    let report_file = match &opts.edit.collect {
        Some(dir) => {
            let path = dir.join("offline.json");
            let json = serde_json::json!({
                "disk": opts.disk,
                "written_disk": written_disk,
                "in_place": opts.in_place,
                "helper_qemu_argv": argvs,
                "report": report,
            });
            let text = serde_json::to_vec_pretty(&json)
                .map_err(|e| OfflineError::Host(format!("offline.json: {e}")))?;
            crate::util::write_atomic(&path, &text)
                .map_err(|e| OfflineError::Host(format!("cannot write {}: {e}", path.display())))?;
            Some(path)
        }
        None => None,
    };
    Ok(OfflineOutcome {
        report,
        written_disk,
        report_file,
    })
}
