//! Scenarios as tests: every scenario of the suites named in `BOOTGATE_SCENARIOS`
//! (paths separated by ':') is one libtest trial, so cargo's own filters work on them:
//!
//! ```text
//! BOOTGATE_SCENARIOS=scenarios/demo cargo test --test scenarios -- --list
//! BOOTGATE_SCENARIOS=scenarios/demo cargo test --test scenarios -- cf291 --skip rescue
//! BOOTGATE_SCENARIOS=scenarios/demo cargo test --test scenarios -- demo/hang-init-is-a-hang --exact
//! BOOTGATE_SCENARIOS=scenarios/demo cargo test --test scenarios -- --ignored
//! ```
//!
//! Name filters, `--list`, `--skip`, `--exact`, `--ignored` and `--include-ignored`
//! are libtest-mimic's, so they behave exactly as for `cargo test`; a scenario with
//! `ignore = true` is an ignored test. Each trial runs its scenario through the
//! bootgate binary (one run per trial, into `BOOTGATE_OUT` or target/scenario-results)
//! and fails with the scenario's reason. Without `BOOTGATE_SCENARIOS` there are no
//! trials, so CI's test step does not run the suites a second time.

use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    if let Some(paths) = std::env::var_os("BOOTGATE_SCENARIOS") {
        for path in std::env::split_paths(&paths) {
            // cargo runs this from the crate folder; paths may be given from the
            // workspace root, as in the README.
            let from_root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(&path);
            let path = if path.exists() || path.is_absolute() {
                path
            } else {
                from_root
            };
            match bootgate::suite::load_path(&path) {
                Ok(suites) => {
                    for suite in suites {
                        for scenario in &suite.scenarios {
                            let name = format!("{}/{}", suite.name, scenario.name);
                            let file = suite.path.clone();
                            let trial_name = name.clone();
                            trials.push(
                                Trial::test(trial_name, move || run_scenario(file, name))
                                    .with_ignored_flag(scenario.ignore),
                            );
                        }
                    }
                }
                Err(e) => {
                    // A broken suite is one failing trial, named after the file.
                    let message = e.to_string();
                    trials.push(Trial::test(path.display().to_string(), move || {
                        Err(message.into())
                    }));
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

fn run_scenario(suite: PathBuf, name: String) -> Result<(), Failed> {
    let out = std::env::var_os("BOOTGATE_OUT").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/scenario-results"
            ))
        },
        PathBuf::from,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_bootgate"))
        .arg("run")
        .arg(&suite)
        .args([
            "--only",
            &name,
            "--exact",
            "--include-ignored",
            "-q",
            "--out",
        ])
        .arg(&out)
        .output()
        .map_err(|e| Failed::from(format!("cannot run bootgate: {e}")))?;
    match output.status.code() {
        Some(0) => Ok(()),
        code => Err(format!(
            "bootgate exited with {code:?}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into()),
    }
}
