//! From errors to exit codes. Each library error and outcome type says its own code
//! (`exit_code()`); the binary only prints the error and passes the code on.

use std::fmt::Display;

pub use bootgate::model::exit::Exit;

/// clap reports `--help` and `--version` as errors too; those are successes.
pub fn parse_error(error: &clap::Error) -> Exit {
    // Nothing better to do when stderr (or stdout, for --help) is closed.
    let _ = error.print();
    match error.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => Exit::Pass,
        _ => Exit::Usage,
    }
}

/// Prints a command's error the one way bootgate does (its message already carries
/// its causes) and hands back the code it stands for.
pub fn fail(error: &dyn Display, code: Exit) -> Exit {
    // Errors quote what a results folder or guest said (a scenario name, a path): a
    // hostile one must not drive the terminal.
    let text = bootgate::report::terminal_text::lines(&error.to_string());
    eprintln!("bootgate: error: {text}");
    code
}
