//! Test support: fakes and builders for bootgate's own tests (its unit tests and
//! the test binaries in `tests/`); not a stable API.
//!
//! The fakes stand in only where the real peer cannot misbehave on demand: real
//! QEMU and a real qemu-ga cannot be told to stay silent, send garbage, oversized or
//! stale replies, or stall. Everything else is tested against the real thing.

pub mod fake_peer;
pub mod images;
pub mod records;
