//! What a run is asked to do: everything `bootgate run` (and rerun, rollout, the
//! scenario tests) can set. Callers set what they need and take the rest from
//! `RunOptions::default()` (`RunOptions { jobs: 2, ..RunOptions::default() }`), so a
//! new setting is one field and one default, not an edit at every call site.

use crate::model::timings::Timings;
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::shard;
use crate::model::record::{DriverBuilds, FileHash};
use crate::qemu::accel::AccelChoice;
use crate::qemu::QemuTools;

#[derive(Clone)]
pub struct RunOptions {
    /// The results folder: each run gets `<run-id>/` inside it (a rollout makes its
    /// own, with a folder per ring target), and `latest` points at the newest.
    pub out_dir: PathBuf,
    /// VMs run at once; 0 picks a default from cores and free memory.
    pub jobs: usize,
    pub accel: AccelChoice,
    pub keep: bool,
    /// Extra attempts for a scenario that ends in `error` (and, with
    /// `retry_failures`, in `fail`).
    pub retries: u32,
    pub retry_failures: bool,
    /// The suites were loaded with this policy (recorded so a rerun uses it too).
    pub path_policy: crate::suite::PathPolicy,
    /// Run every suite on this machine instead of its own image (a rollout target).
    pub target: Option<crate::suite::Target>,
    /// Run only scenarios whose `suite/scenario` name contains one of these (or, with
    /// `exact`, equals one of them).
    pub only: Vec<String>,
    /// Leave out scenarios whose name contains one of these (equals, with `exact`).
    pub skip: Vec<String>,
    pub exact: bool,
    /// Which scenarios marked `ignore = true` run: none, only them, or all.
    pub ignored: IgnoredPolicy,
    /// For a rerun: the inputs (path and sha256) the run must use.
    pub required_inputs: Option<Vec<FileHash>>,
    /// Run only this part of the selection (CI matrices).
    pub shard: Option<shard::Shard>,
    /// Expected scenario durations (ms) from an earlier run: they balance shards and
    /// put the longest scenarios first in the queue.
    pub expected_ms: BTreeMap<String, u64>,
    /// The file those durations came from; it becomes an input of the run, so shards
    /// split with different timings cannot be merged.
    pub timings_file: Option<PathBuf>,
    pub tools: QemuTools,
    /// Whether `source` drivers build in the build sandbox (the default) or on the
    /// host (`--unsandboxed-builds`). Never taken from a run being repeated: a
    /// results folder may come from someone else.
    pub driver_builds: DriverBuilds,
    /// bootgate's own command line, recorded in run.json.
    pub command: Vec<String>,
    /// Phases the binary timed before calling the runner (start-up, suite load): the
    /// run's `timings` begin with them.
    pub startup_phases: Timings,
}

impl Default for RunOptions {
    /// What `bootgate run PATH` does with no flags. `tools` come from the environment
    /// (`BOOTGATE_QEMU`, `BOOTGATE_QEMU_IMG`), which probes QEMU once for `-sandbox`.
    /// `command` is empty: only the binary knows its own command line.
    fn default() -> Self {
        RunOptions {
            out_dir: PathBuf::from(DEFAULT_OUT_DIR),
            jobs: 0,
            accel: AccelChoice::Auto,
            keep: false,
            retries: 0,
            retry_failures: false,
            path_policy: crate::suite::PathPolicy::default(),
            target: None,
            only: Vec::new(),
            skip: Vec::new(),
            exact: false,
            ignored: IgnoredPolicy::default(),
            required_inputs: None,
            shard: None,
            expected_ms: BTreeMap::new(),
            timings_file: None,
            tools: QemuTools::from_env(),
            driver_builds: DriverBuilds::Sandboxed,
            command: Vec::new(),
            startup_phases: Timings::default(),
        }
    }
}

/// The results folder when none is given (`bootgate run --out`'s default).
pub const DEFAULT_OUT_DIR: &str = "results";

/// How scenarios marked `ignore = true` are treated, as cargo test treats #[ignore].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IgnoredPolicy {
    /// Leave them out (the default).
    #[default]
    Skip,
    /// Run only them (`--ignored`).
    Only,
    /// Run them with the others (`--include-ignored`).
    Include,
}
