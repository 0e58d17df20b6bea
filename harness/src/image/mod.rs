//! Images: manifests, the built-in images and their cache, per-VM overlays.

pub mod builtin;
pub(crate) mod firmware;
pub mod kernel;
pub mod manifest;
pub(crate) mod overlay;

use std::path::{Path, PathBuf};

use crate::confine::{confine, is_inside, PathPolicy};
use crate::suite;

pub use manifest::{Manifest, ManifestError};

/// Names of images bootgate can build itself.
pub const BUILT_IN: &[&str] = &["demo", "debian12", "ntfs-helper"];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "unknown image {0:?}: use a built-in image ({builtin}) or a path to an image.toml (or its folder)",
        builtin = BUILT_IN.join(", ")
    )]
    Unknown(String),
    /// A suite's image path that leaves the suite's folder.
    #[error("{0}")]
    Outside(String),
    #[error("image build failed: {message}")]
    Build { message: String },
    #[error("cannot create overlay {overlay} on {base}: {message}")]
    Overlay {
        base: PathBuf,
        overlay: PathBuf,
        message: String,
    },
}

/// Progress notices from long image operations ("building the debian12 image...").
pub(crate) type Notify<'a> = &'a mut dyn FnMut(&str);

/// Resolves a suite's `image` reference to a loaded manifest, building the built-in
/// image first if needed. Paths are relative to `base_dir` (the suite's folder)
/// and confined to it by `policy`, as every path a suite names is; so are the
/// manifest's own files to the manifest's folder.
pub(crate) fn resolve(
    reference: &str,
    base_dir: &Path,
    policy: PathPolicy,
    notify: Notify,
) -> Result<Manifest, ImageError> {
    if let Some(image) = builtin::find(reference) {
        let path = builtin::ensure_built(image, notify)?;
        return Ok(Manifest::load(&path)?);
    }
    if !suite::image_is_path(reference) {
        return Err(ImageError::Unknown(reference.to_string()));
    }
    let mut path = confine(base_dir, Path::new(reference), policy, &[])
        .map_err(|outside| ImageError::Outside(outside.message("image")))?;
    if path.is_dir() {
        path = path.join("image.toml");
    }
    // Its text is quoted in a parse error only when it is the suite's own file.
    let quote = is_inside(base_dir, &path);
    Ok(Manifest::load_with(&path, policy, quote)?)
}
