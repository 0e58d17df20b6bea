//! When to ask `guest-exec-status` again while a guest command runs.
//!
//! qemu-ga has no way to wait for a command: `guest-exec` returns the pid at once and
//! `guest-exec-status` answers `exited: false` until the agent has reaped the child and
//! both captured outputs reached their end (qga/commands.c, `qmp_guest_exec_status`,
//! shared by the POSIX and the Windows agent: only the decoding of the exit status
//! differs under `G_OS_WIN32`). A poll is therefore the only way to learn that a
//! command ended, and a poll of a running command changes nothing in the agent, so
//! polling early costs one cheap round trip (1-2 ms under TCG) and never an answer.
//!
//! The pauses start short and double: a command that does next to nothing (most
//! steps: `true`, `insmod`, `echo 1 > ...`) is seen to end within a few ms of doing
//! so, and a long one costs at most one round trip per [`EXEC_POLL_MAX`].

use std::time::Duration;

/// The pause after the first `guest-exec-status` poll that found the command running
/// (the first poll comes at once after `guest-exec`).
pub(crate) const EXEC_POLL_FIRST: Duration = Duration::from_millis(1);
/// The longest pause between polls: what a long command's end may go unseen for.
pub(crate) const EXEC_POLL_MAX: Duration = Duration::from_millis(50);

/// The pauses between the polls of one command: [`EXEC_POLL_FIRST`], then doubling
/// up to [`EXEC_POLL_MAX`].
#[derive(Debug, Clone)]
pub(crate) struct ExecPolls {
    next: Duration,
}

impl ExecPolls {
    pub(crate) fn new() -> ExecPolls {
        ExecPolls {
            next: EXEC_POLL_FIRST,
        }
    }

    /// The pause before the next poll, never longer than `left` (the time until the
    /// command's timeout), so a timeout is not overshot by a whole pause.
    pub(crate) fn pause(&mut self, left: Duration) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(EXEC_POLL_MAX);
        pause.min(left)
    }
}

impl Default for ExecPolls {
    fn default() -> Self {
        ExecPolls::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_start_short_double_and_stop_growing_at_the_cap() {
        let mut polls = ExecPolls::new();
        let long = Duration::from_secs(60);
        let pauses: Vec<u64> = (0..9)
            .map(|_| polls.pause(long).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 50, 50, 50]);
    }

    #[test]
    fn a_pause_never_runs_past_the_time_left() {
        let mut polls = ExecPolls::new();
        for _ in 0..6 {
            polls.pause(Duration::from_secs(60));
        }
        assert_eq!(
            polls.pause(Duration::from_millis(7)),
            Duration::from_millis(7)
        );
        assert_eq!(polls.pause(Duration::ZERO), Duration::ZERO);
    }
}
