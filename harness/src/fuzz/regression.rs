//! The regression suite a campaign leaves behind: `regression.toml` with one
//! scenario per unique crash, and copies of the driver it needs, so the output
//! folder replays on its own with `bootgate run`.

use std::path::Path;

use super::campaign::{io, FoundCrash, FuzzError};
use crate::image;
use crate::suite::{self, Suite};
use crate::util::write_atomic;

/// Largest driver source folder copied into a regression suite.
const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// Writes `regression.toml` (and copies of the driver and inputs it needs, so the
/// folder replays on its own): one scenario per crash that installs the driver,
/// applies the minimized input and holds the usual gates. It fails while the bug is
/// there (with the same title) and passes once it is fixed.
pub(super) fn write_regression_suite(
    out: &Path,
    suite: &Suite,
    name: &str,
    def: &suite::Driver,
    params: &str,
    crashes: &[FoundCrash],
) -> Result<String, FuzzError> {
    let mut driver_line = String::new();
    if let Some(source) = &def.source {
        let from = suite.dir().join(source);
        let to = out.join("driver").join(name);
        copy_tree(&from, &to)?;
        driver_line = format!("source = {:?}", format!("driver/{name}"));
    } else if let Some(module) = &def.module {
        let from = suite.dir().join(module);
        let to = out.join("driver").join(format!("{name}.ko"));
        std::fs::create_dir_all(out.join("driver")).map_err(io(out))?;
        std::fs::copy(&from, &to).map_err(io(&from))?;
        driver_line = format!("module = {:?}", format!("driver/{name}.ko"));
    }
    let image = if image::BUILT_IN.contains(&suite.image.as_str()) {
        suite.image.clone()
    } else {
        suite.dir().join(&suite.image).display().to_string()
    };
    let mut text = format!(
        "# Written by `bootgate fuzz-content`: one scenario per unique crash, with the\n\
         # minimized input. Each fails (with the title below) while the bug is there and\n\
         # passes once the driver handles the input. Replay: bootgate run {}\n\n\
         [suite]\nname = \"fuzz-regression\"\nimage = {image:?}\n\n[driver.{name}]\n{driver_line}\n",
        out.join("regression.toml").display()
    );
    if let Some(content_file) = &def.content_file {
        text.push_str(&format!("content_file = {content_file:?}\n"));
    }
    if let Some(reload) = &def.reload {
        text.push_str(&format!("reload = {reload:?}\n"));
    }
    for (i, crash) in crashes.iter().enumerate() {
        text.push_str(&format!(
            "\n[[scenario]]\nname = \"crash-{}\"\ndescription = {:?}\nsteps = [\n  {{ install_driver = {{ driver = {name:?}, params = {params:?}, load_now = true }} }},\n  {{ apply_content = {{ driver = {name:?}, file = {:?}, reload = true }} }},\n]\n",
            i + 1,
            format!("{} (found after {} executions)", crash.title, crash.found_at_exec),
            crash.minimized
        ));
    }
    if crashes.is_empty() {
        text.push_str("\n# No crash was found, so there is nothing to replay yet.\n");
    }
    let path = out.join("regression.toml");
    write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
    Ok("regression.toml".into())
}

/// Copies a driver source folder (files only, bounded in size).
fn copy_tree(from: &Path, to: &Path) -> Result<(), FuzzError> {
    let mut total = 0u64;
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|e| FuzzError::Io {
            path: from.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
        } else if entry.file_type().is_file() {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if total > MAX_SOURCE_BYTES {
                return Err(FuzzError::Io {
                    path: from.to_path_buf(),
                    source: std::io::Error::other("driver source folder larger than 16 MiB"),
                });
            }
            std::fs::copy(entry.path(), &target).map_err(io(entry.path()))?;
        }
    }
    Ok(())
}
