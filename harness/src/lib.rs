//! bootgate: boots VM images under QEMU, installs candidate drivers and content
//! updates, replays scenario suites and turns what it sees into pass/fail gates.
//!
//! The binary (`main.rs`) only parses arguments and maps outcomes to exit codes;
//! everything else lives here, one module per concern (see DESIGN.md).

pub mod agent;
pub mod content;
pub mod detect;
pub mod doctor;
pub mod driver;
pub mod guest;
pub mod image;
pub mod qemu;
pub mod report;
pub mod runner;
pub mod suite;
/// Test support: fakes and builders for bootgate's own tests; not a stable API.
#[doc(hidden)]
pub mod testing;
pub mod util;
pub mod windows;
