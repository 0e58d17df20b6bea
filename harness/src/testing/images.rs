//! Image manifests for tests: the Windows template beside a stand-in system disk.

use std::path::{Path, PathBuf};

/// The repository's Windows manifest template (images/windows/image.toml).
pub const WINDOWS_TEMPLATE: &str = include_str!("../../../images/windows/image.toml");

/// Writes `text` as `dir/image.toml` beside the stand-in disk the template names
/// (`windows.qcow2`, a few bytes: no test boots it); returns the manifest's path.
pub fn write_windows_image(dir: &Path, text: &str) -> PathBuf {
    std::fs::write(dir.join("windows.qcow2"), b"x").unwrap();
    let path = dir.join("image.toml");
    std::fs::write(&path, text).unwrap();
    path
}
