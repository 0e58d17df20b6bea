//! One running VM: its private folder, overlay, QEMU process guard, QMP connection
//! and console capture. Dropping a `Vm` tears everything down (QMP quit, SIGTERM,
//! SIGKILL of the group) so no QEMU outlives its run, whatever path got us there.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::agent::{AgentClient, AgentError};
use crate::image::manifest::Manifest;
use crate::image::{overlay, ImageError};
use crate::qemu::accel::Accel;
use crate::qemu::command::{self, VmLayout};
use crate::qemu::console::{ConsoleCapture, ConsoleLine};
use crate::qemu::process::{ProcessError, ProcessGuard, QUIT_GRACE};
use crate::qemu::qmp::{QmpClient, QmpError, QmpMessage};
use crate::util::{wait_until, Waited};

/// Time QEMU gets to create its sockets and answer the QMP greeting.
pub const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time a plain QMP command (cont, quit, query-status) may take.
pub const QMP_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to connect to the serial and agent sockets once QMP answers.
pub const SOCKET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SOCKET_POLL: Duration = Duration::from_millis(20);
/// Lines of QEMU's own output quoted when it fails.
const QEMU_LOG_TAIL: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot create the VM folder: {0}")]
    Folder(#[source] std::io::Error),
    #[error(transparent)]
    Overlay(#[from] ImageError),
    #[error("cannot start QEMU: {0} (is qemu-system-x86 installed? run `bootgate doctor`)")]
    Spawn(#[from] ProcessError),
    #[error("QEMU exited on its own ({status}):\n{log}")]
    Exited { status: String, log: String },
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    #[error("cannot connect to {what} socket {path}: {source}")]
    Socket {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest agent: {0}")]
    Agent(#[from] AgentError),
}

/// What a VM needs to start.
pub struct VmConfig<'a> {
    pub qemu_binary: &'a str,
    pub qemu_img: &'a str,
    pub manifest: &'a Manifest,
    pub accel: Accel,
    /// Extra kernel parameters for this boot (e.g. the rescue boot's).
    pub extra_append: Option<String>,
    /// Where console.log and qemu.log go (the scenario's results folder).
    pub artifacts_dir: &'a Path,
    /// Keep the overlay in `artifacts_dir` instead of deleting it.
    pub keep_overlay: bool,
}

pub struct Vm {
    pub argv: Vec<String>,
    pub layout: VmLayout,
    /// QMP events and the end of the QMP stream (QEMU gone).
    pub events: Receiver<QmpMessage>,
    /// Console lines as the guest prints them.
    pub console_lines: Receiver<ConsoleLine>,
    /// When the guest CPUs were started (`cont`): the zero of boot 1's timeline.
    pub started: Instant,
    pub console_path: PathBuf,
    pub qemu_log_path: PathBuf,
    process: ProcessGuard,
    qmp: Option<QmpClient>,
    console: Option<ConsoleCapture>,
    _dir: tempfile::TempDir,
    stopped: bool,
}

impl Vm {
    pub fn start(config: &VmConfig) -> Result<Vm, VmError> {
        // tempfile creates folders 0700: the QMP socket is a root shell on the VM.
        let dir = tempfile::Builder::new()
            .prefix("bootgate-vm-")
            .tempdir()
            .map_err(VmError::Folder)?;
        let mut layout = VmLayout::in_dir(dir.path());
        if config.keep_overlay {
            layout.overlay = config.artifacts_dir.join("system.qcow2");
        }
        let manifest = config.manifest;
        overlay::create(
            config.qemu_img,
            &manifest.disk.path,
            manifest.disk.format,
            &layout.overlay,
        )?;
        let argv = command::build(
            config.qemu_binary,
            manifest,
            config.accel,
            &layout,
            config.extra_append.as_deref(),
        );
        let qemu_log_path = config.artifacts_dir.join("qemu.log");
        let console_path = config.artifacts_dir.join("console.log");
        let mut process = ProcessGuard::spawn(&argv, &qemu_log_path)?;

        let (qmp, events) = match QmpClient::connect(&layout.qmp_socket, QMP_CONNECT_TIMEOUT) {
            Ok(pair) => pair,
            Err(e) => {
                // Most often QEMU rejected its command line: its own words say why.
                if let Some(status) = process.wait_timeout(Duration::from_millis(500)) {
                    return Err(VmError::Exited {
                        status: status.to_string(),
                        log: log_tail(&qemu_log_path),
                    });
                }
                return Err(e.into());
            }
        };
        let serial = connect_socket("serial", &layout.serial_socket)?;
        let (line_tx, console_lines) = mpsc::channel();
        let console = ConsoleCapture::start(serial, &console_path, line_tx).map_err(|source| {
            VmError::Socket {
                what: "console",
                path: console_path.clone(),
                source,
            }
        })?;
        qmp.execute("cont", None, QMP_COMMAND_TIMEOUT)?;
        let started = Instant::now();
        Ok(Vm {
            argv,
            layout,
            events,
            console_lines,
            started,
            console_path,
            qemu_log_path,
            process,
            qmp: Some(qmp),
            console: Some(console),
            _dir: dir,
            stopped: false,
        })
    }

    pub fn qmp(&self) -> Option<&QmpClient> {
        self.qmp.as_ref()
    }

    /// A connection to the guest agent's socket (the agent itself may not be up yet).
    pub fn connect_agent(&self) -> Result<AgentClient, VmError> {
        Ok(AgentClient::connect(
            &self.layout.agent_socket,
            SOCKET_CONNECT_TIMEOUT,
        )?)
    }

    /// The exit status if QEMU has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    /// The last lines of QEMU's own stdout/stderr.
    pub fn qemu_log_tail(&self) -> String {
        log_tail(&self.qemu_log_path)
    }

    /// Stops the VM: QMP `quit`, a grace period, then SIGTERM/SIGKILL of the group;
    /// then flushes the console log. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(qmp) = self.qmp.take() {
            if self.process.try_wait().is_none() && qmp.send("quit", None).is_ok() {
                self.process.wait_timeout(QUIT_GRACE);
            }
        }
        self.process.terminate();
        if let Some(console) = self.console.take() {
            // A console that cannot be flushed loses evidence but must not stop teardown.
            let _ = console.finish();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connect_socket(what: &'static str, path: &Path) -> Result<UnixStream, VmError> {
    let mut last_error = None;
    let result = wait_until(
        SOCKET_CONNECT_TIMEOUT,
        SOCKET_POLL,
        || match UnixStream::connect(path) {
            Ok(stream) => Some(stream),
            Err(e) => {
                last_error = Some(e);
                None
            }
        },
    );
    match result {
        Waited::Done(stream) => Ok(stream),
        Waited::TimedOut => Err(VmError::Socket {
            what,
            path: path.to_path_buf(),
            source: last_error.unwrap_or_else(|| std::io::Error::other("timed out connecting")),
        }),
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(QEMU_LOG_TAIL)..].join("\n")
}
