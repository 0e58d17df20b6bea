//! A QEMU started paused with its QMP, console and agent connected: the first half
//! of both saving a state and restoring one, and the restored VM the tests drive.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    io_error, restore_argv, SavedState, SnapshotError, MIGRATION_POLL, QMP_COMMAND_TIMEOUT,
    QMP_CONNECT_TIMEOUT, SAVE_QUIT_TIMEOUT, SOCKET_CONNECT_TIMEOUT,
};
use crate::agent::AgentClient;
use crate::image::manifest::Manifest;
use crate::qemu::accel::Accel;
use crate::qemu::command::VmLayout;
use crate::qemu::console::{ConsoleCapture, ConsoleLine};
use crate::qemu::process::ProcessGuard;
use crate::qemu::qmp::QmpClient;
use crate::qemu::QemuTools;
use crate::util::{wait_until, Waited};

/// A QEMU started paused with QMP, console and agent connected: the common first
/// half of saving and restoring.
pub(super) struct PausedVm {
    pub(super) qmp: QmpClient,
    pub(super) qmp_socket: PathBuf,
    pub(super) agent: AgentClient,
    pub(super) console: Option<ConsoleCapture>,
    pub(super) console_lines: Receiver<ConsoleLine>,
    pub(super) console_log: PathBuf,
    pub(super) qemu_log: PathBuf,
    pub(super) process: ProcessGuard,
}

impl PausedVm {
    /// Spawns `argv` (which starts QEMU with `-S`); logs go to `log_dir`. A restore
    /// passes the state file QEMU reads on descriptor 3.
    pub(super) fn spawn(
        argv: &[String],
        layout: &VmLayout,
        log_dir: &Path,
        state_file: Option<&fs::File>,
    ) -> Result<PausedVm, SnapshotError> {
        let qemu_log = log_dir.join("qemu.log");
        let console_log = log_dir.join("console.log");
        let process = ProcessGuard::spawn_passing(argv, &qemu_log, state_file)?;
        let (qmp, _events) =
            QmpClient::connect(&layout.qmp_socket, QMP_CONNECT_TIMEOUT).map_err(|source| {
                SnapshotError::Qmp {
                    socket: layout.qmp_socket.clone(),
                    source,
                }
            })?;
        let serial = connect_socket("serial", &layout.serial_socket)?;
        // The console must be drained or a chatty guest blocks on a full socket.
        let (tx, console_lines) = mpsc::channel();
        let console = ConsoleCapture::start(serial, &console_log, move |line| {
            let _ = tx.send(line);
        })
        .map_err(io_error(&console_log, "cannot capture the console into"))?;
        let agent = AgentClient::connect(&layout.agent_socket, SOCKET_CONNECT_TIMEOUT).map_err(
            |source| SnapshotError::Agent {
                socket: layout.agent_socket.clone(),
                source,
            },
        )?;
        Ok(PausedVm {
            qmp,
            qmp_socket: layout.qmp_socket.clone(),
            agent,
            console: Some(console),
            console_lines,
            console_log,
            qemu_log,
            process,
        })
    }

    pub(super) fn qmp_execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, SnapshotError> {
        self.qmp
            .execute(command, arguments, QMP_COMMAND_TIMEOUT)
            .map_err(|source| SnapshotError::Qmp {
                socket: self.qmp_socket.clone(),
                source,
            })
    }

    pub(super) fn cont(&self) -> Result<(), SnapshotError> {
        self.qmp_execute("cont", None).map(drop)
    }

    /// QMP `quit`, then the process guard's SIGTERM/SIGKILL; true if QEMU exited on
    /// `quit` alone. Flushes the console log either way.
    pub(super) fn stop(&mut self) -> bool {
        let quit = self.process.try_wait().is_none()
            && self.qmp.send("quit", None).is_ok()
            && self
                .process
                .wait_timeout(SAVE_QUIT_TIMEOUT)
                .is_some_and(|s| s.success());
        self.process.terminate();
        if let Some(console) = self.console.take() {
            // A lost console log costs evidence only; teardown must go on.
            let _ = console.finish();
        }
        quit
    }
}

impl Drop for PausedVm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A VM started from a saved state, outside `Vm` (whose start sequence the runner
/// owns): used by the tests, and a template for `Vm::start` with an incoming state.
pub struct RestoredVm {
    pub argv: Vec<String>,
    /// QEMU start → RAM loaded (paused).
    pub loaded_after: Duration,
    /// QEMU start → `cont` sent.
    pub started_after: Duration,
    vm: PausedVm,
    spawned: Instant,
}

impl RestoredVm {
    /// Creates `layout.overlay` on the frozen disk, starts QEMU with the save's
    /// command line plus `-incoming defer`, loads the RAM stream and sends `cont`.
    /// QEMU's and the console's logs go to `log_dir`.
    pub fn start(
        tools: &QemuTools,
        manifest: &Manifest,
        accel: Accel,
        state: &SavedState,
        layout: &VmLayout,
        log_dir: &Path,
    ) -> Result<RestoredVm, SnapshotError> {
        state.create_overlay(&tools.img, &layout.overlay)?;
        let argv = restore_argv(&tools.system, manifest, accel, layout, state, tools.sandbox);
        let spawned = Instant::now();
        let devices = state.open_devices()?;
        let vm = PausedVm::spawn(&argv, layout, log_dir, Some(&devices))?;
        state.load_into(&vm.qmp, &layout.qmp_socket)?;
        let loaded_after = spawned.elapsed();
        vm.cont()?;
        Ok(RestoredVm {
            argv,
            loaded_after,
            started_after: spawned.elapsed(),
            vm,
            spawned,
        })
    }

    /// When QEMU was spawned.
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// The guest agent; a fresh connection, so sync before relying on it.
    pub fn agent(&mut self) -> &mut AgentClient {
        &mut self.vm.agent
    }

    pub fn qmp(&self) -> &QmpClient {
        &self.vm.qmp
    }

    /// Lines printed on the serial console since `cont`.
    pub fn console_lines(&self) -> &Receiver<ConsoleLine> {
        &self.vm.console_lines
    }

    pub fn console_log(&self) -> &Path {
        &self.vm.console_log
    }

    /// Quits QEMU (then kills its group if needed); true if `quit` alone ended it.
    pub fn stop(&mut self) -> bool {
        self.vm.stop()
    }
}

fn connect_socket(what: &'static str, path: &Path) -> Result<UnixStream, SnapshotError> {
    let mut last_error = None;
    let result = wait_until(SOCKET_CONNECT_TIMEOUT, MIGRATION_POLL, || {
        UnixStream::connect(path)
            .map_err(|e| last_error = Some(e))
            .ok()
    });
    match result {
        Waited::Done(stream) => Ok(stream),
        Waited::TimedOut => Err(SnapshotError::Socket {
            what,
            path: path.to_path_buf(),
            source: last_error.unwrap_or_else(|| std::io::Error::other("timed out connecting")),
        }),
    }
}
