//! Property-based fuzzing of the parsers that read untrusted input: suite files, the
//! guest's serial console (capture and crash detector), QMP messages and guest-agent
//! replies. The guest is hostile by definition (and may replace the agent with its
//! own program), so each parser must return instead of panicking or hanging, keep its
//! memory bounded, and, for suites, say where an error is.
//!
//! One module per target. Each property runs a few hundred cases in a normal test run
//! (PROPTEST_CASES raises that); `tools/fuzz` sets [`engine::SECONDS_VAR`] to run every
//! property of a target for a bounded time instead and adds up the `fuzz:` lines they
//! print. The deterministic tests next to the properties are regression tests for what
//! the fuzzing found. The QMP and agent targets play their peer through
//! `bootgate::testing::fake_peer`: real QEMU and a real qemu-ga cannot be made to
//! send garbage, floods or stale replies on demand.

mod agent;
mod console;
mod engine;
mod gen;
mod qmp;
mod suite;
