//! Integration tests: the real `bootgate` binary booting the real demo guest under
//! real QEMU (TCG). One test binary, a module per area (cargo's testsuite style).

mod architecture;
mod attestation;
mod boot;
mod build_sandbox;
mod cli;
mod common;
mod crash_capture;
mod distro;
mod drill;
mod drivers;
mod evidence;
mod faults;
mod fuzz_content;
mod guest_setup;
mod hostile_results;
mod image;
mod late_loops;
mod offline;
mod platform;
mod rollout;
mod shards;
mod snapshot;
mod stall;
mod startup;
mod teardown;
mod triage;
