//! Detectors: what the host reads out of a guest's signals, with no QEMU in sight.
//!
//! - [`console`]: Linux console crash reports (oops, panic, lockup, hung task) and
//!   their stable titles, read line by line from the serial log.
//! - [`bugcheck`]: Windows bugcheck codes, names and titles, from the Hyper-V crash
//!   parameters QEMU puts in GUEST_PANICKED.
//! - [`win_dump`]: the header of a WinDbg kernel dump (QEMU's `win-dmp`, a guest's
//!   MEMORY.DMP or minidump): which bugcheck it records.
//! - [`stall`]: whether a running guest stopped making progress (vCPUs parked,
//!   console and agent silent) for the stall window.

pub(crate) mod boot_watch;
pub(crate) mod bugcheck;
pub mod console;
pub(crate) mod stall;
pub(crate) mod win_dump;

pub use console::{
    ConsoleCrash, CrashClass, CrashDetector, MAX_EXCERPT_LINES, MAX_LINE_BYTES, MAX_REPORTS,
    MAX_TITLE_BYTES,
};
