//! The commands of the `bootgate` binary: `args` says what the command line can hold,
//! one module per command (small related ones share a file) turns it into library
//! calls and terminal output, and `exit` turns errors into exit codes.

pub mod args;
pub mod exit;
pub mod fuzz;
pub mod host;
pub mod offline;
pub mod results;
pub mod rollout;
pub mod run;

use std::sync::Arc;

use bootgate::model::Sink;
use bootgate::report::attestation::AttestationSink;
use bootgate::report::html::HtmlSink;
use bootgate::report::json::JsonSink;
use bootgate::report::junit::JunitSink;
use bootgate::report::live::LiveSink;
use bootgate::report::manifest::ManifestSink;
use bootgate::report::terminal::{TerminalSink, Verbosity};
use bootgate::runner::{self, RunOptions};
use bootgate::util::signing::{Signer, SIGN_KEY_ENV};

/// The library's defaults plus what only the binary knows: its own command line,
/// which run.json records so a reviewer sees how the run was started.
fn run_options() -> RunOptions {
    RunOptions {
        command: std::env::args().collect(),
        ..RunOptions::default()
    }
}

/// `--jobs N`; absent means 0, which lets the runner pick from cores and memory.
fn jobs(arg: Option<u32>) -> usize {
    arg.map_or(0, |n| n as usize)
}

/// The key that signs attestations: `--sign-key`, else BOOTGATE_SIGN_KEY, else none
/// (unsigned). Read before anything runs: a key that does not load is a usage error
/// (exit 2) that names the file, never a run that ends unsigned by surprise.
fn signer(args: &args::SignArgs) -> Result<Option<Arc<Signer>>, exit::Exit> {
    let path = args.sign_key.clone().or_else(|| {
        std::env::var_os(SIGN_KEY_ENV)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    });
    match path {
        None => Ok(None),
        Some(path) => {
            let given_by = if args.sign_key.is_some() {
                "--sign-key"
            } else {
                SIGN_KEY_ENV
            };
            let signer = Signer::read(&path)
                .map_err(|e| exit::fail(&format!("{given_by}: {e}"), exit::Exit::Usage))?;
            // As ssh does for its keys, say so when others can read it; signing still
            // works (the key may sit on a CI runner's private tmpfs).
            if let Ok(meta) = std::fs::metadata(&path) {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                if mode & 0o077 != 0 {
                    eprintln!(
                        "bootgate: warning: the signing key {} is readable by other users (mode {mode:o}): chmod 600 it",
                        path.display()
                    );
                }
            }
            Ok(Some(Arc::new(signer)))
        }
    }
}

/// The report sinks of one run. The manifest comes after the files it hashes, the
/// attestation after the manifest it vouches for, and the terminal last, so the
/// summary it prints at the end names finished files (the attestation and whether
/// it is signed). A terminal gets the live view; CI logs one plain line per event.
fn report_sinks(verbosity: Verbosity, signer: Option<Arc<Signer>>) -> Vec<Box<dyn Sink + Send>> {
    let terminal: Box<dyn Sink + Send> =
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) && verbosity != Verbosity::Quiet {
            Box::new(LiveSink::new(verbosity))
        } else {
            Box::new(TerminalSink::new(verbosity))
        };
    vec![
        Box::new(JsonSink::new()),
        Box::new(JunitSink::new()),
        Box::new(HtmlSink::new()),
        Box::new(ManifestSink),
        Box::new(AttestationSink::new(signer)),
        terminal,
    ]
}

/// First Ctrl-C/SIGTERM: stop cleanly (VMs torn down, results written). The
/// handler only sets a flag; the runner checks it at every wait.
fn install_interrupt_handler() {
    if let Err(e) = ctrlc::set_handler(|| {
        // The flag first, and no panicking print: when whoever started bootgate has
        // gone (a killed CI job, a closed terminal), stderr is a broken pipe, and an
        // `eprintln!` panic here would leave the interrupt untaken and the run going.
        let again = runner::interrupted();
        runner::interrupt();
        let said = if again {
            "bootgate: still stopping VMs, please wait\n"
        } else {
            "bootgate: interrupted; stopping VMs and writing results\n"
        };
        let _ = std::io::Write::write_all(&mut std::io::stderr(), said.as_bytes());
    }) {
        eprintln!("bootgate: warning: cannot install the Ctrl-C handler: {e}");
    }
}
