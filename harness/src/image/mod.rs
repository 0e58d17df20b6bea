//! Images: manifests, the built-in images and their cache, per-VM overlays.

pub mod builtin;
pub(crate) mod firmware;
pub mod kernel;
pub mod manifest;
pub(crate) mod overlay;

use std::path::{Path, PathBuf};

pub use manifest::{Manifest, ManifestError};

/// Names of images bootgate can build itself.
pub const BUILT_IN: &[&str] = &["demo", "debian12"];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "unknown image {0:?}: use a built-in image ({builtin}) or a path to an image.toml (or its folder)",
        builtin = BUILT_IN.join(", ")
    )]
    Unknown(String),
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
/// image first if needed. Paths are relative to `base_dir` (the suite's folder).
pub(crate) fn resolve(
    reference: &str,
    base_dir: &Path,
    notify: Notify,
) -> Result<Manifest, ImageError> {
    if let Some(image) = builtin::find(reference) {
        let path = builtin::ensure_built(image, notify)?;
        return Ok(Manifest::load(&path)?);
    }
    let looks_like_path = reference.contains('/') || reference.ends_with(".toml");
    if !looks_like_path {
        return Err(ImageError::Unknown(reference.to_string()));
    }
    let mut path = base_dir.join(reference);
    if path.is_dir() {
        path = path.join("image.toml");
    }
    Ok(Manifest::load(&path)?)
}
