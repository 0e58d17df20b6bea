//! Suite files: the TOML schema, loading and validation.
//!
//! Every struct denies unknown keys, so a typo is an error with file, line and column
//! instead of a silently ignored setting. A step is a one-key table naming its kind
//! (`{ exec = { run = "..." } }`), so later kinds (install_driver, apply_content,
//! recover, ...) slot in as new enum variants without touching the others.
//!
//! The model is in `schema.rs` and `step.rs`, reading files and folders in `load.rs`,
//! the checks beyond the schema in `validate.rs`, recovery drills in [`drill`].

use std::path::PathBuf;
use std::time::Duration;

pub(crate) mod drill;
mod load;
mod schema;
mod step;
#[cfg(test)]
mod tests;
mod validate;

pub(crate) use drill::Drill;
pub use load::{
    load_file, load_file_with, load_path, load_path_with, parse, parse_with, PathPolicy,
};
pub(crate) use schema::{duration, opt_command_timeout};
pub use schema::{
    parse_duration, Driver, DumpPolicy, Evidence, Expect, Gates, Ring, Rollout, Scenario, Suite,
    Target, DEFAULT_BOOT_LOOP_BOOTS, DEFAULT_DUMP_MAX_MIB, DEFAULT_RECOVERY_SETTLE,
    DEFAULT_STALL_WINDOW, MAX_RECOVERY_SETTLE, MAX_STALL_WINDOW, MIN_STALL_WINDOW,
};
pub(crate) use step::{check_verifier_flags, VERIFIER_OK_EXITS};
pub use step::{
    ApplyContentStep, BootStep, DriverRef, ExecStep, InstallDriverStep, ObserveStep, RebootStep,
    RecoverStep, RecoverVia, RollbackContentStep, Step, VerifierStep, DEFAULT_ROLLBACK_BOOTS,
    DEFAULT_ROLLBACK_SETTLE,
};
pub(crate) use validate::image_is_path;

/// Default time a single guest command may take.
pub(crate) const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest duration a suite (or image manifest) may give. The runner adds durations
/// to the current time to make deadlines, which overflows (and panics) for values
/// near `u64::MAX` seconds; no boot, command or soak needs more than a month.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Largest suite file read. Suites are a few KiB; the bound stops a wrong path (a
/// device such as /dev/zero, a disk image) from being read into memory whole.
pub const MAX_SUITE_BYTES: u64 = 16 << 20;

/// An error in a suite, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read suite {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}\n{snippet}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
    #[error("no suite files (*.toml) in {0}: pass a suite file or a folder holding some")]
    EmptyFolder(PathBuf),
    #[error("suite {path} is larger than {limit} bytes: is it really a suite file?")]
    TooLarge { path: PathBuf, limit: u64 },
}
