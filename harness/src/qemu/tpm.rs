//! A software TPM 2.0 for one VM: `swtpm` in its own process group, its state in
//! the VM's private folder, QEMU talking to it over a Unix control socket.
//!
//! One swtpm per QEMU process: started before QEMU (which connects at startup) and
//! stopped after it. Its state folder outlives it, so a reboot that restarts QEMU
//! (the rescue boot) finds the same TPM, as a real machine would; the folder goes
//! with the VM's folder at the end of the scenario.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::qemu::process::{ProcessError, ProcessGuard};
use crate::util::{wait_until, Waited};

/// The swtpm binary (package `swtpm` on Debian and Ubuntu).
pub(crate) const SWTPM: &str = "swtpm";
/// Time swtpm gets to create its control socket.
pub(crate) const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between checks for the socket.
const SOCKET_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum TpmError {
    #[error("cannot create the TPM state folder {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the software TPM (is swtpm installed? `apt-get install swtpm swtpm-tools`, or run tools/host-setup): {0}")]
    Spawn(#[from] ProcessError),
    #[error("swtpm did not create its socket {socket} within {timeout:?}; its log {log}:\n{tail}")]
    NoSocket {
        socket: PathBuf,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
}

/// A running swtpm; dropping it kills its process group.
pub(crate) struct SoftTpm {
    process: ProcessGuard,
}

/// swtpm's argv for a TPM 2.0 with its state in `state_dir`, controlled over
/// `socket`. `--terminate`: swtpm exits when QEMU closes the connection, so even a
/// QEMU killed from outside does not leave a TPM behind.
pub(crate) fn argv(state_dir: &Path, socket: &Path) -> Vec<String> {
    vec![
        SWTPM.into(),
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", state_dir.display().to_string().replace(',', ",,")),
        "--ctrl".into(),
        format!(
            "type=unixio,path={}",
            socket.display().to_string().replace(',', ",,")
        ),
        "--terminate".into(),
    ]
}

impl SoftTpm {
    /// Starts swtpm and waits for its control socket; its output goes to `log`.
    pub fn start(state_dir: &Path, socket: &Path, log: &Path) -> Result<SoftTpm, TpmError> {
        std::fs::create_dir_all(state_dir).map_err(|source| TpmError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        // A socket left by the previous QEMU run of this scenario.
        let _ = std::fs::remove_file(socket);
        let mut process = ProcessGuard::spawn(&argv(state_dir, socket), log)?;
        let ready = wait_until(SOCKET_TIMEOUT, SOCKET_POLL, || {
            (socket.exists() || process.try_wait().is_some()).then_some(())
        });
        if matches!(ready, Waited::TimedOut) || !socket.exists() {
            process.terminate();
            return Err(TpmError::NoSocket {
                socket: socket.to_path_buf(),
                timeout: SOCKET_TIMEOUT,
                log: log.to_path_buf(),
                tail: std::fs::read_to_string(log).unwrap_or_default(),
            });
        }
        Ok(SoftTpm { process })
    }

    /// Stops swtpm (SIGTERM, grace, SIGKILL of its group). Idempotent.
    pub fn stop(&mut self) {
        self.process.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_escapes_commas_and_terminates_with_qemu() {
        let a = argv(Path::new("/v,m/tpm"), Path::new("/v,m/swtpm.sock"));
        assert_eq!(a[0], "swtpm");
        assert!(a.contains(&"dir=/v,,m/tpm".to_string()), "{a:?}");
        assert!(a.contains(&"type=unixio,path=/v,,m/swtpm.sock".to_string()));
        assert!(a.contains(&"--tpm2".to_string()) && a.contains(&"--terminate".to_string()));
    }
}
