//! bootgate: boots VM images under QEMU, installs candidate drivers and content
//! updates, replays scenario suites and turns what it sees into pass/fail gates.
//!
//! The binary (`main.rs` and its `cli/`) parses arguments, calls this library and
//! maps outcomes to exit codes. The library is one module per concern, in layers that
//! import only downward (docs/architecture.md has the map; an architecture test keeps
//! it so):
//!
//! - top: [`runner`], [`fuzz`], [`report`], [`doctor`];
//! - middle: [`qemu`], [`image`], [`guest`], [`agent`], [`detect`], [`suite`];
//! - bottom: [`model`] (run records, events, sinks, exit codes), [`cache`], [`util`].
//!
//! Everything is `pub(crate)` unless the binary, the integration tests or an
//! embedding program needs it. The public surface, by what it is for:
//!
//! - running suites: [`suite::load_path`] / [`suite::load_file_with`] give
//!   [`suite::Suite`]s; [`runner::run`] runs them with a [`runner::RunOptions`]
//!   (`RunOptions::default()` is `bootgate run PATH` with no flags), emitting
//!   [`model::Event`]s through a [`model::Emitter`] to the [`model::Sink`]s of
//!   [`report`] (terminal, live, run.json, junit.xml, report.html, manifest.json,
//!   the attestation, signed by a [`util::signing::Signer`]);
//!   [`model::exit::Exit`] is the exit code of an outcome or error.
//! - the other commands: [`runner::rerun`], [`runner::merge`], [`runner::shard`],
//!   [`runner::rollout`], [`fuzz::campaign`], [`doctor`], [`image::builtin`].
//! - the VM layer, for tests that drive a real guest directly: [`qemu::qmp`],
//!   [`qemu::snapshot`], [`qemu::console`], [`qemu::accel`], [`agent::AgentClient`],
//!   and the console crash parser [`detect::CrashDetector`].

pub mod agent;
pub mod cache;
pub mod confine;
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
