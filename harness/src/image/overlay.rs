//! Copy-on-write overlays: every VM writes to its own qcow2 overlay on top of the
//! read-only base, so the base image is never written and creation is O(1).

use std::path::Path;
use std::process::Command;

use super::manifest::DiskFormat;
use super::ImageError;

/// Creates `overlay` backed by `base` (absolute path; QEMU opens it read-only).
pub(crate) fn create(
    qemu_img: &str,
    base: &Path,
    format: DiskFormat,
    overlay: &Path,
) -> Result<(), ImageError> {
    let fail = |message: String| ImageError::Overlay {
        base: base.to_path_buf(),
        overlay: overlay.to_path_buf(),
        message,
    };
    let base = std::fs::canonicalize(base).map_err(|e| fail(format!("base image: {e}")))?;
    let output = Command::new(qemu_img)
        .arg("create")
        .args(["-q", "-f", "qcow2", "-F", format.as_str(), "-b"])
        .arg(&base)
        .arg(overlay)
        .output()
        .map_err(|e| {
            fail(format!(
                "cannot run {qemu_img}: {e} (install qemu-utils, or run `bootgate doctor`)"
            ))
        })?;
    if !output.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(())
}
