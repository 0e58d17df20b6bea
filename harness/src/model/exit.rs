//! The process exit codes `bootgate` promises (listed in `bootgate --help`), and the
//! code a whole run stands for. Every error and outcome type that can end a command
//! says its own code (`exit_code()`), as nextest's errors do, so the binary never
//! keeps a second, drifting table of which error means what.

use crate::model::record::RunOutcome;

/// What a `bootgate` command's exit status says to a CI system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Every scenario passed (flaky ones included); nothing wrong was found.
    Pass = 0,
    /// The product failed a gate (or a checked folder did not verify).
    Fail = 1,
    /// A usage or suite error: bad flag, typo in a suite, unknown image, wrong folder.
    Usage = 2,
    /// Infrastructure trouble: no verdict on the product is possible.
    Infra = 3,
    /// Ctrl-C or SIGTERM; results written so far are kept. 128 + SIGINT, as shells do.
    Interrupted = 130,
}

impl Exit {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

// Here rather than in record.rs so the run-to-code rule reads next to the codes.
impl RunOutcome {
    /// The exit code a finished run stands for.
    pub fn exit_code(self) -> Exit {
        match self {
            RunOutcome::Interrupted => Exit::Interrupted,
            RunOutcome::Fail => Exit::Fail,
            RunOutcome::Error => Exit::Infra,
            RunOutcome::Pass => Exit::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers are a promise to CI scripts (and `--help` prints them).
    #[test]
    fn codes_are_the_documented_numbers() {
        let codes: Vec<u8> = [
            Exit::Pass,
            Exit::Fail,
            Exit::Usage,
            Exit::Infra,
            Exit::Interrupted,
        ]
        .map(Exit::code)
        .to_vec();
        assert_eq!(codes, [0, 1, 2, 3, 130]);
    }

    #[test]
    fn a_run_outcome_maps_to_its_code() {
        assert_eq!(RunOutcome::Pass.exit_code(), Exit::Pass);
        assert_eq!(RunOutcome::Fail.exit_code(), Exit::Fail);
        assert_eq!(RunOutcome::Error.exit_code(), Exit::Infra);
        assert_eq!(RunOutcome::Interrupted.exit_code(), Exit::Interrupted);
    }
}
