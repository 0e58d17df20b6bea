//! bootgate: boots VM images under QEMU, installs candidate drivers and content
//! updates, replays scenario suites and turns what it sees into pass/fail gates.
//!
//! The binary (`main.rs`) only parses arguments and maps outcomes to exit codes;
//! everything else lives here, one module per concern, in layers that import only
//! downward (docs/architecture.md has the map):
//!
//! - top: [`runner`], [`fuzz`], [`report`], [`doctor`];
//! - middle: [`qemu`], [`image`], [`guest`], [`agent`], [`detect`], [`suite`];
//! - bottom: [`model`] (run records, events, sinks), [`cache`], [`util`].

pub mod agent;
pub mod cache;
pub mod detect;
pub mod doctor;
pub mod fuzz;
pub mod guest;
pub mod image;
pub mod model;
pub mod qemu;
pub mod report;
pub mod runner;
pub mod suite;
/// Test support: fakes and builders for bootgate's own tests; not a stable API.
#[doc(hidden)]
pub mod testing;
pub mod util;
