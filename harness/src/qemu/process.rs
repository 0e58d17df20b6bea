//! The process guard: every QEMU (and every driver build, `runner::build_sandbox`)
//! runs in its own process group with a parent-death signal, and is torn down on
//! every path — normal end, error, panic, Ctrl-C — by QMP `quit` (QEMU), then SIGTERM
//! to the group, then SIGKILL to the group.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{wait_until, Waited};

/// How long QEMU gets to exit after QMP `quit` before it is signalled.
pub(crate) const QUIT_GRACE: Duration = Duration::from_secs(3);
/// How long the process group gets between SIGTERM and SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the kernel to reap a SIGKILLed process.
pub(crate) const KILL_REAP: Duration = Duration::from_secs(5);
/// The descriptor a child finds a passed file on (QEMU: `-incoming fd:3`).
pub(crate) const PASSED_FD: i32 = 3;
/// Poll interval while waiting for a child to exit, where no pidfd can be had.
const EXIT_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A child process in its own process group, killed with its group on drop.
///
/// The parent-death signal is tied to the *thread* that spawned the child: spawn from
/// a thread that lives as long as the process should (the runner's VM thread).
#[derive(Debug)]
pub struct ProcessGuard {
    child: Child,
    pgid: i32,
    status: Option<ExitStatus>,
}

impl ProcessGuard {
    /// Spawns `argv` with stdout and stderr appended to `log_path`.
    pub fn spawn(argv: &[String], log_path: &Path) -> Result<ProcessGuard, ProcessError> {
        Self::spawn_passing(argv, log_path, None)
    }

    /// Like [`spawn`](Self::spawn), with `passed` open in the child as descriptor
    /// [`PASSED_FD`] (a saved VM state QEMU reads directly, with no shell or pipe).
    pub(crate) fn spawn_passing(
        argv: &[String],
        log_path: &Path,
        passed: Option<&File>,
    ) -> Result<ProcessGuard, ProcessError> {
        let (binary, args) = argv.split_first().ok_or_else(|| ProcessError::Spawn {
            binary: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command line"),
        })?;
        let log = File::create(log_path).map_err(|source| ProcessError::Log {
            path: log_path.to_path_buf(),
            source,
        })?;
        let log2 = log.try_clone().map_err(|source| ProcessError::Log {
            path: log_path.to_path_buf(),
            source,
        })?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = Self::start(command, binary, passed)?;
        Ok(Self::own(child))
    }

    /// Spawns `argv` with stdin closed and stdout and stderr as pipes, which the
    /// caller reads (a driver build writes its module on one and its log on the other).
    pub(crate) fn spawn_piped(
        argv: &[String],
    ) -> Result<(ProcessGuard, ChildStdout, ChildStderr), ProcessError> {
        let (binary, args) = argv.split_first().ok_or_else(|| ProcessError::Spawn {
            binary: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command line"),
        })?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Self::start(command, binary, None)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            // Stdio::piped always gives both; a guard still reaps the child.
            drop(Self::own(child));
            return Err(ProcessError::Spawn {
                binary: binary.clone(),
                source: io::Error::other("no pipes to the child"),
            });
        };
        Ok((Self::own(child), stdout, stderr))
    }

    /// Spawns `command` in a process group of its own with the parent-death signal.
    fn start(
        mut command: Command,
        binary: &str,
        passed: Option<&File>,
    ) -> Result<Child, ProcessError> {
        // Own group: the terminal's Ctrl-C reaches bootgate only, which then tears
        // the child down in order; and killpg reaches every helper it forks.
        command.process_group(0);
        let parent = std::process::id() as libc::pid_t;
        let passed = passed.map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: only async-signal-safe calls (prctl, getppid, dup2, fcntl, _exit)
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = passed {
                    // dup2 clears close-on-exec on the copy; a file that already sits on
                    // the target number needs it cleared by hand.
                    let rc = if fd == PASSED_FD {
                        libc::fcntl(fd, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, PASSED_FD)
                    };
                    if rc < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        command.spawn().map_err(|source| ProcessError::Spawn {
            binary: binary.to_string(),
            source,
        })
    }

    fn own(child: Child) -> ProcessGuard {
        let pgid = child.id() as i32;
        ProcessGuard {
            child,
            pgid,
            status: None,
        }
    }

    /// The leader's pid: the tests check the group is gone after teardown, the
    /// stall detector reads QEMU's vCPU threads under it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (reaping it), without blocking.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit on its own. Woken by the exit
    /// itself (its pidfd turns readable), not by a poll interval: a QEMU that quits in
    /// 5 ms is seen in 5 ms, where a 20 ms poll cost every run up to 20 ms more.
    /// Polled where pidfds are missing (Linux before 5.3).
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        let deadline = Instant::now() + timeout;
        if let Some(pidfd) = self.pidfd() {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up, so the last poll does not end just short of the deadline.
                let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
                let mut fd = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the length of the call.
                let ready = unsafe { libc::poll(&mut fd, 1, ms) };
                if let Some(status) = self.try_wait() {
                    return Some(status);
                }
                let interrupted = io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
                if Instant::now() >= deadline {
                    return None;
                }
                // Readable yet not reapable, or poll failing: fall back to polling.
                if ready != 0 && !(ready < 0 && interrupted) {
                    break;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_until(left, EXIT_POLL, || self.try_wait()) {
            Waited::Done(status) => Some(status),
            Waited::TimedOut => None,
        }
    }

    /// A pidfd of the child (not reaped yet, so its pid is still its own).
    fn pidfd(&self) -> Option<OwnedFd> {
        let pid = libc::pid_t::try_from(self.child.id()).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the descriptor was just returned to us and nothing else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// SIGTERM to the group, a grace period, then SIGKILL; always reaps the child.
    /// Call after asking QEMU to quit politely (QMP `quit`) where possible.
    pub(crate) fn terminate(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            // The leader is gone, but helpers in its group may remain.
            self.signal_group(libc::SIGKILL);
            return Some(status);
        }
        self.signal_group(libc::SIGTERM);
        if let Some(status) = self.wait_timeout(TERM_GRACE) {
            self.signal_group(libc::SIGKILL);
            return Some(status);
        }
        self.signal_group(libc::SIGKILL);
        self.wait_timeout(KILL_REAP)
    }

    fn signal_group(&self, signal: i32) {
        // SAFETY: killpg with our own child's group id; ESRCH (already gone) is fine.
        unsafe {
            libc::killpg(self.pgid, signal);
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn drop_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let argv = vec!["sh".to_string(), "-c".into(), script];
        let guard = ProcessGuard::spawn(&argv, &dir.path().join("log")).unwrap();
        let leader = guard.pid() as i32;
        let grandchild: i32 = match wait_until(Duration::from_secs(5), EXIT_POLL, || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        }) {
            Waited::Done(pid) => pid,
            Waited::TimedOut => panic!("grandchild never started"),
        };
        assert!(alive(grandchild));
        drop(guard);
        assert!(!alive(leader), "leader survived the guard");
        let gone = wait_until(Duration::from_secs(5), EXIT_POLL, || {
            (!alive(grandchild)).then_some(())
        });
        assert_eq!(gone, Waited::Done(()), "grandchild survived the guard");
    }

    #[test]
    fn a_passed_file_is_readable_on_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("state");
        std::fs::write(&data, b"saved state").unwrap();
        let file = File::open(&data).unwrap();
        let out = dir.path().join("out");
        let script = format!("cat <&{PASSED_FD} > {}", out.display());
        let argv = vec!["sh".to_string(), "-c".into(), script];
        let mut guard =
            ProcessGuard::spawn_passing(&argv, &dir.path().join("log"), Some(&file)).unwrap();
        assert!(guard
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .success());
        assert_eq!(std::fs::read(&out).unwrap(), b"saved state");
    }

    #[test]
    fn missing_binary_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let argv = vec!["/nonexistent/qemu-system-x86_64".to_string()];
        let err = ProcessGuard::spawn(&argv, &dir.path().join("log")).unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/qemu-system-x86_64"));
    }

    /// The pidfd wait returns the child's own status when it exits, and None (the
    /// child still running) when the time is up.
    #[test]
    fn a_wait_ends_with_the_exit_or_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let sh = |script: &str| vec!["sh".to_string(), "-c".into(), script.into()];
        let mut quick = ProcessGuard::spawn(&sh("exit 7"), &dir.path().join("a")).unwrap();
        let status = quick.wait_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(7));
        let mut slow = ProcessGuard::spawn(&sh("sleep 300"), &dir.path().join("b")).unwrap();
        assert!(slow.wait_timeout(Duration::from_millis(50)).is_none());
        assert!(slow.try_wait().is_none(), "still running");
        assert!(
            slow.pidfd().is_some(),
            "this kernel has pidfds: the pidfd path ran"
        );
    }
}
