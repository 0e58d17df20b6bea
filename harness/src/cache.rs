//! The cache root: where built images, saved states and built drivers live between
//! runs. Every entry below it is keyed by a digest of what it was made from, so a
//! changed input never reuses an old entry.

use std::path::PathBuf;

/// The per-user cache: `$BOOTGATE_CACHE`, else `$XDG_CACHE_HOME/bootgate`, else
/// `~/.cache/bootgate`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOOTGATE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("bootgate");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("bootgate")
}

/// Where built images live: `<cache>/images`. Only bootgate writes there, so an
/// image manifest may name files below it (a test's or user's variant of a built
/// image) without naming arbitrary host files.
pub(crate) fn images_root() -> PathBuf {
    cache_root().join("images")
}
