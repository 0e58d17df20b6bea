//! One running VM: its private folder, overlay, QEMU process guard, QMP connection
//! and console capture. Dropping a `Vm` tears everything down (QMP quit, SIGTERM,
//! SIGKILL of the group) so no QEMU outlives its run, whatever path got us there.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent::worker::{AgentWorker, Reply, Request};
use crate::agent::{AgentClient, AgentError};
use crate::image::manifest::Manifest;
use crate::image::{overlay, ImageError};
use crate::qemu::accel::Accel;
use crate::qemu::command::{self, GuestRam, Sandbox, VmLayout};
use crate::qemu::console::{ConsoleCapture, ConsoleLine};
use crate::qemu::process::{ProcessError, ProcessGuard, QUIT_GRACE};
use crate::qemu::qmp::{QmpClient, QmpError, QmpMessage};
use crate::qemu::snapshot::{self, SavedState, SnapshotError};
use crate::qemu::tpm::{SoftTpm, TpmError};
use crate::util::{wait_until, Waited};

/// Time QEMU gets to create its sockets and answer the QMP greeting.
pub(crate) const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time a plain QMP command (cont, quit, query-status) may take.
pub(crate) const QMP_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to connect to the serial and agent sockets once QMP answers.
pub(crate) const SOCKET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SOCKET_POLL: Duration = Duration::from_millis(20);
/// Lines of QEMU's own output quoted when it fails.
const QEMU_LOG_TAIL: usize = 20;

/// Everything a running VM reports, merged into one channel so the runner waits on
/// exactly one thing and reacts to whichever comes first.
#[derive(Debug)]
pub(crate) enum Signal {
    /// A QMP event, or the end of the QMP stream (QEMU gone).
    Qmp(QmpMessage),
    /// A line the guest printed on its serial console.
    Console(ConsoleLine),
    /// The answer to an agent request.
    Agent(Reply),
}

/// A VM's private 0700 folder with its sockets and disk overlay. It outlives the QEMU
/// processes of one scenario: a rescue boot restarts QEMU on the same overlay.
pub(crate) struct VmDir {
    pub layout: VmLayout,
    _dir: tempfile::TempDir,
}

impl VmDir {
    /// Creates the folder and the overlay on the manifest's base disk, or on a saved
    /// state's frozen disk. With `keep_overlay_in`, the overlay lives there instead
    /// (kept after the run).
    pub(crate) fn create(
        qemu_img: &str,
        manifest: &Manifest,
        saved: Option<&SavedState>,
        keep_overlay_in: Option<&Path>,
    ) -> Result<VmDir, VmError> {
        // 0700: the QMP socket is a root shell on the VM.
        let dir = crate::util::private_tempdir(VM_DIR_PREFIX).map_err(VmError::Folder)?;
        // Who made it: a bootgate killed with SIGKILL cannot remove its folders, and
        // the next run removes those whose owner is gone (sweep_stale_vm_dirs).
        let owner = dir.path().join(OWNER_FILE);
        std::fs::write(
            &owner,
            process_identity(std::process::id()).unwrap_or_default(),
        )
        .map_err(VmError::Folder)?;
        let mut layout = VmLayout::in_dir(dir.path());
        if let Some(keep) = keep_overlay_in {
            layout.overlay = keep.join("system.qcow2");
        }
        if let Some(template) = &manifest.boot.uefi_vars {
            // The VM's own variable store, kept across its reboots like a real
            // machine's NVRAM; the installed template is never written.
            copy_private(template, &layout.uefi_vars)?;
        }
        match saved {
            Some(state) => state.create_overlay(qemu_img, &layout.overlay)?,
            None => overlay::create(
                qemu_img,
                &manifest.disk.path,
                manifest.disk.format,
                &layout.overlay,
            )?,
        }
        Ok(VmDir { layout, _dir: dir })
    }
}

/// Copies `from` to `to` as a file only its owner can read and write.
fn copy_private(from: &Path, to: &Path) -> Result<(), VmError> {
    use std::os::unix::fs::PermissionsExt;
    let copy_error = |source| VmError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    };
    std::fs::copy(from, to).map_err(copy_error)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).map_err(copy_error)
}

/// Prefix of the per-VM folders in the temp dir.
pub(crate) const VM_DIR_PREFIX: &str = "bootgate-vm-";
/// File in a VM folder naming the bootgate process that owns it.
const OWNER_FILE: &str = "owner";

/// "PID STARTTIME" of a live process (start time in clock ticks since boot, from
/// /proc: with it a reused PID is not mistaken for the owner).
fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    // Fields after the name: state is field 3; starttime is field 22.
    let start = after.split(' ').nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Removes VM folders in the temp dir whose owning bootgate is gone (killed with
/// SIGKILL, say: its QEMUs died with it, its folders did not). Folders without an
/// owner file, or whose owner still runs, are left alone. Returns how many went.
pub(crate) fn sweep_stale_vm_dirs() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_vm_dir = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(VM_DIR_PREFIX));
        if !is_vm_dir {
            continue;
        }
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let Some(pid) = owner.split(' ').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if process_identity(pid).as_deref() != Some(owner.trim())
            && std::fs::remove_dir_all(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum VmError {
    #[error("cannot create the VM folder: {0}")]
    Folder(#[source] std::io::Error),
    #[error("cannot copy {from} to {to}: {source}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error(transparent)]
    Overlay(#[from] ImageError),
    #[error("cannot start QEMU: {0} (is qemu-system-x86 installed? run `bootgate doctor`)")]
    Spawn(#[from] ProcessError),
    #[error("QEMU exited before bootgate could connect to it ({status}); its output:\n{log}")]
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
    #[error("saved state: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("a standby VM restores a saved state, and none was given")]
    StandbyNeedsState,
    #[error("the thread loading the standby VM's saved state panicked")]
    StandbyLoaderPanicked,
}

/// What a VM needs to start.
pub(crate) struct VmConfig<'a> {
    pub qemu_binary: &'a str,
    pub qemu_img: &'a str,
    pub manifest: &'a Manifest,
    pub accel: Accel,
    /// Extra kernel parameters for this boot (e.g. the rescue boot's).
    pub extra_append: Option<String>,
    /// Where the console and QEMU logs go (the scenario's results folder).
    pub artifacts_dir: &'a Path,
    /// Confine QEMU with seccomp (`QemuTools::sandbox`).
    pub sandbox: bool,
    /// Start from this saved state (RAM and devices) instead of booting. The overlay
    /// must sit on the state's frozen disk, and no extra kernel parameters apply.
    pub incoming: Option<&'a SavedState>,
    /// Distinguishes the logs of successive QEMU processes of one scenario
    /// ("" for the first: console.log; "-2" for the second: console-2.log).
    pub log_suffix: String,
    /// A second disk (a qcow2 file) for a helper VM that edits another, stopped VM's
    /// system disk offline. Cold boots only: a saved state has no such device.
    pub data_disk: Option<&'a Path>,
}

pub struct Vm {
    /// QMP events, console lines and agent answers, in arrival order.
    pub signals: Receiver<Signal>,
    /// When the guest CPUs were started (`cont`): the zero of the first boot.
    pub started: Instant,
    /// When QEMU was started: the zero of a boot restored from a saved state.
    pub spawned: Instant,
    pub console_path: PathBuf,
    pub qemu_log_path: PathBuf,
    agent: AgentWorker,
    /// The readiness sync already sent for this boot (restores send it before `cont`).
    ready_request: Option<u64>,
    process: ProcessGuard,
    /// The VM's software TPM, stopped after QEMU.
    tpm: Option<SoftTpm>,
    qmp: Option<QmpClient>,
    console: Option<ConsoleCapture>,
    stopped: bool,
    /// Taken from a [`Standby`]: QEMU was started before the scenario asked for it.
    pub standby: bool,
    /// Where QEMU's own log is copied when the VM stops (a standby's log starts in
    /// its private folder, before anyone knows which scenario will take it).
    qemu_log_copy: Option<PathBuf>,
}

/// A QEMU process started paused, not yet connected to.
struct Launched {
    process: ProcessGuard,
    tpm: Option<SoftTpm>,
    spawned: Instant,
    qemu_log_path: PathBuf,
}

impl Launched {
    fn start(
        config: &VmConfig,
        layout: &VmLayout,
        qemu_log_path: PathBuf,
    ) -> Result<Launched, VmError> {
        for socket in [
            &layout.qmp_socket,
            &layout.serial_socket,
            &layout.agent_socket,
        ] {
            // Left over from an earlier QEMU of this scenario.
            let _ = std::fs::remove_file(socket);
        }
        let argv = Vm::argv(config, layout);
        // A restore reads the saved device state from the file passed as descriptor 3.
        let state_file = config.incoming.map(SavedState::open_devices).transpose()?;
        let spawned = Instant::now();
        let tpm = if config.manifest.machine.tpm {
            let log = config
                .artifacts_dir
                .join(format!("swtpm{}.log", config.log_suffix));
            Some(SoftTpm::start(&layout.tpm_state, &layout.tpm_socket, &log)?)
        } else {
            None
        };
        let process = ProcessGuard::spawn_passing(&argv, &qemu_log_path, state_file.as_ref())?;
        Ok(Launched {
            process,
            tpm,
            spawned,
            qemu_log_path,
        })
    }
}

/// A QEMU's negotiated QMP session and its event stream.
type QmpSession = (QmpClient, Receiver<QmpMessage>);

/// A VM started ahead of need: a QEMU paused before restoring a saved state, on its
/// own folder and overlay. A worker starts one while its current scenario runs, so
/// the next scenario that restores the same state skips QEMU's start-up (about
/// 50-60 ms of a ~150 ms restore here) and the device state load (6-13 ms): a
/// thread of its own negotiates QMP and loads the state into the paused VM
/// meanwhile, so the scenario only connects console and agent and sends `cont`.
/// The guest runs no instruction before that `cont`: what the scenario gets is
/// the saved state exactly, as from a restore of its own. Dropping it kills the
/// QEMU (which ends the loading thread's QMP session) and removes the folder.
pub(crate) struct Standby {
    /// Declared first: QEMU stops before its folder goes.
    launched: Launched,
    dir: VmDir,
    /// The saved state it will restore (its folder identifies it).
    state_dir: PathBuf,
    /// QMP negotiated and the state loaded (paused), in the background; `None` if
    /// the thread could not be started (the scenario then does both itself).
    preload: Option<JoinHandle<Result<QmpSession, VmError>>>,
}

/// A standby's background work: QMP, then the saved device state into the paused VM.
fn preload_state(qmp_socket: &Path, state: &SavedState) -> Result<QmpSession, VmError> {
    let (qmp, events) = QmpClient::connect(qmp_socket, QMP_CONNECT_TIMEOUT)?;
    state.load_into(&qmp, qmp_socket)?;
    Ok((qmp, events))
}

impl Standby {
    /// Starts a standby for `config` (which must restore a state: `incoming`).
    pub fn start(config: &VmConfig) -> Result<Standby, VmError> {
        let state = config.incoming.ok_or(VmError::StandbyNeedsState)?;
        let dir = VmDir::create(config.qemu_img, config.manifest, Some(state), None)?;
        let log = dir.layout.dir.join("qemu.log");
        let launched = Launched::start(config, &dir.layout, log)?;
        let qmp_socket = dir.layout.qmp_socket.clone();
        let loading = state.clone();
        // No thread is no loss: the scenario connects and loads as without a standby.
        let preload = std::thread::Builder::new()
            .name("standby-load".into())
            .spawn(move || preload_state(&qmp_socket, &loading))
            .ok();
        Ok(Standby {
            launched,
            dir,
            state_dir: state.dir.clone(),
            preload,
        })
    }

    /// Whether it restores `state`.
    pub(crate) fn restores(&self, state: &SavedState) -> bool {
        self.state_dir == state.dir
    }

    /// Splits off the folder (the scenario's VM folder from now on) and what
    /// [`Standby::connect`] takes.
    pub(crate) fn into_parts(self) -> (VmDir, WaitingQemu) {
        (
            self.dir,
            WaitingQemu {
                launched: self.launched,
                preload: self.preload,
            },
        )
    }
}

/// The QEMU of a [`Standby`] whose folder the scenario has taken.
pub(crate) struct WaitingQemu {
    launched: Launched,
    preload: Option<JoinHandle<Result<QmpSession, VmError>>>,
}

impl WaitingQemu {
    /// Connects and restores, as [`Vm::start`] would after its launch, taking the
    /// standby's loaded state when its thread got that far. The boot's zero
    /// (`spawned`) is now, when the scenario asked for its VM.
    pub fn connect(self, config: &VmConfig, layout: &VmLayout) -> Result<Vm, VmError> {
        let mut launched = self.launched;
        launched.spawned = Instant::now();
        let preloaded = self.preload.map(|loading| {
            loading
                .join()
                .unwrap_or(Err(VmError::StandbyLoaderPanicked))
        });
        let mut vm = Vm::connect_with(config, layout, launched, preloaded)?;
        vm.standby = true;
        vm.qemu_log_copy = Some(
            config
                .artifacts_dir
                .join(format!("qemu{}.log", config.log_suffix)),
        );
        Ok(vm)
    }
}

impl Vm {
    /// Starts QEMU paused on `layout`'s overlay, connects QMP, console and agent, then
    /// starts the CPUs.
    /// The command line [`Vm::start`] runs for `config` (recorded before the start,
    /// so a QEMU that refuses it still leaves its command line in the evidence).
    pub(crate) fn argv(config: &VmConfig, layout: &VmLayout) -> Vec<String> {
        match config.incoming {
            Some(state) => snapshot::restore_argv(
                config.qemu_binary,
                config.manifest,
                config.accel,
                layout,
                state,
                config.sandbox,
            ),
            None => {
                let mut argv = command::build(
                    config.qemu_binary,
                    config.manifest,
                    config.accel,
                    layout,
                    config.extra_append.as_deref(),
                    &GuestRam::Anonymous,
                    Sandbox::guest(config.sandbox),
                );
                if let Some(disk) = config.data_disk {
                    argv.extend(command::data_disk(disk));
                }
                argv
            }
        }
    }

    pub fn start(config: &VmConfig, layout: &VmLayout) -> Result<Vm, VmError> {
        let qemu_log_path = config
            .artifacts_dir
            .join(format!("qemu{}.log", config.log_suffix));
        let launched = Launched::start(config, layout, qemu_log_path)?;
        Vm::connect(config, layout, launched)
    }

    /// Connects to a launched (paused) QEMU, restores the saved state if any, and
    /// starts the CPUs.
    fn connect(config: &VmConfig, layout: &VmLayout, launched: Launched) -> Result<Vm, VmError> {
        Vm::connect_with(config, layout, launched, None)
    }

    /// [`Vm::connect`], given the outcome of a standby's background work when there
    /// was some: its QMP session, with the saved state already loaded.
    fn connect_with(
        config: &VmConfig,
        layout: &VmLayout,
        launched: Launched,
        preloaded: Option<Result<QmpSession, VmError>>,
    ) -> Result<Vm, VmError> {
        let Launched {
            mut process,
            tpm,
            spawned,
            qemu_log_path,
        } = launched;
        let console_path = config
            .artifacts_dir
            .join(format!("console{}.log", config.log_suffix));
        let loaded = preloaded.is_some();
        let session = preloaded.unwrap_or_else(|| {
            QmpClient::connect(&layout.qmp_socket, QMP_CONNECT_TIMEOUT).map_err(VmError::from)
        });
        let (qmp, events) = match session {
            Ok(pair) => pair,
            Err(e) => {
                // Most often QEMU rejected its command line: its own words say why.
                if let Some(status) = process.wait_timeout(Duration::from_millis(500)) {
                    return Err(VmError::Exited {
                        status: status.to_string(),
                        log: log_tail(&qemu_log_path),
                    });
                }
                return Err(e);
            }
        };
        let (tx, signals) = mpsc::channel();
        forward_qmp(events, tx.clone())?;
        let serial = connect_socket("serial", &layout.serial_socket)?;
        let console_tx = tx.clone();
        let console = ConsoleCapture::start(serial, &console_path, move |line| {
            let _ = console_tx.send(Signal::Console(line));
        })
        .map_err(|source| VmError::Socket {
            what: "console",
            path: console_path.clone(),
            source,
        })?;
        let client = AgentClient::connect(&layout.agent_socket, SOCKET_CONNECT_TIMEOUT)?;
        let agent_tx = tx;
        let mut agent = AgentWorker::start(client, move |reply| {
            let _ = agent_tx.send(Signal::Agent(reply));
        })
        .map_err(VmError::Folder)?;
        let mut ready_request = None;
        if let Some(state) = config.incoming.filter(|_| !loaded) {
            state.load_into(&qmp, &layout.qmp_socket)?;
        }
        if config.incoming.is_some() {
            // A restored guest is already where it answers: its sync waits in the
            // socket and is answered the moment the CPUs run (about 40 ms sooner
            // than asking after `cont`).
            ready_request = Some(agent.submit(Request::WaitReady));
        }
        qmp.execute("cont", None, QMP_COMMAND_TIMEOUT)?;
        let started = Instant::now();
        Ok(Vm {
            signals,
            started,
            spawned,
            console_path,
            qemu_log_path,
            agent,
            ready_request,
            process,
            tpm,
            qmp: Some(qmp),
            console: Some(console),
            stopped: false,
            standby: false,
            qemu_log_copy: None,
        })
    }

    /// The id of a readiness sync sent when the VM started, if any; taken once.
    pub(crate) fn take_ready_request(&mut self) -> Option<u64> {
        self.ready_request.take()
    }

    /// The agent, driven through its worker thread.
    pub fn agent(&mut self) -> &mut AgentWorker {
        &mut self.agent
    }

    /// QEMU's process id (its vCPU threads' CPU time is read under it).
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn qmp(&self) -> Option<&QmpClient> {
        self.qmp.as_ref()
    }

    /// The exit status if QEMU has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    /// Waits up to `timeout` for QEMU to exit (after its QMP connection closed).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_timeout(timeout)
    }

    /// The last lines of QEMU's own stdout/stderr.
    pub(crate) fn qemu_log_tail(&self) -> String {
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
        if let Some(mut tpm) = self.tpm.take() {
            tpm.stop();
        }
        if let Some(console) = self.console.take() {
            // A console that cannot be flushed loses evidence but must not stop teardown.
            let _ = console.finish();
        }
        if let Some(to) = self.qemu_log_copy.take() {
            // Like the console: evidence lost, teardown goes on.
            let _ = std::fs::copy(&self.qemu_log_path, to);
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Moves QMP messages into the VM's signal channel on a small thread.
fn forward_qmp(events: Receiver<QmpMessage>, tx: Sender<Signal>) -> Result<(), VmError> {
    std::thread::Builder::new()
        .name("qmp-forward".into())
        .spawn(move || {
            for message in events {
                if tx.send(Signal::Qmp(message)).is_err() {
                    break;
                }
            }
        })
        .map_err(VmError::Folder)?;
    Ok(())
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
    crate::util::tail_lines(path, QEMU_LOG_TAIL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The VM folder holds the QMP socket (a root shell on the VM) and the overlay:
    /// only its owner may enter it.
    #[test]
    fn vm_folder_is_private() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["vmlinuz", "initrd.img"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let base = dir.path().join("system.qcow2");
        let created = std::process::Command::new(crate::qemu::DEFAULT_QEMU_IMG)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("16M")
            .status()
            .expect("qemu-img runs (tools/host-setup installs it)");
        assert!(created.success());
        std::fs::write(
            dir.path().join("image.toml"),
            include_str!("../../../images/demo/image.toml"),
        )
        .unwrap();
        let manifest = Manifest::load(&dir.path().join("image.toml")).unwrap();
        let vmdir = VmDir::create(crate::qemu::DEFAULT_QEMU_IMG, &manifest, None, None).unwrap();
        let mode = std::fs::metadata(&vmdir.layout.dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{:o}", mode);
        assert!(vmdir.layout.qmp_socket.starts_with(&vmdir.layout.dir));
        assert!(vmdir.layout.overlay.starts_with(&vmdir.layout.dir));
        let folder = vmdir.layout.dir.clone();
        drop(vmdir);
        assert!(!folder.exists(), "removed with the VM");
    }
}
