//! Snapshot fast reset: boot an image once, save its RAM and device state to a file
//! next to a frozen copy-on-write disk, and start later VMs from that state instead of
//! booting them (about 0.3 s to an answering agent instead of 4-9 s under TCG).
//!
//! The state is three files rather than an internal `savevm` snapshot, because an
//! internal snapshot lives inside one qcow2 file: every VM restoring it would need its
//! own copy of that file or would write into the shared one. Here:
//! - the disk chain is `base (0444) <- state/disk.qcow2 (0444) <- per-VM overlay`;
//! - guest RAM is a plain file (`ram.mem`): the saving VM runs with its RAM mapped
//!   shared from that file, so when it stops the file holds the RAM; restoring VMs
//!   map it private (copy-on-write), so each starts from it at once, reads in only the
//!   pages it touches, shares the untouched ones with the others through the page
//!   cache, and none can change it;
//! - device state is a small migration stream (`devices.state`, about 0.5 MB) written
//!   with the `x-ignore-shared` capability, which leaves the shared RAM out of it.
//!
//! A restore therefore loads half a megabyte instead of the whole RAM: measured here,
//! QEMU start to an answering agent went from 0.23 s (64 MB stream) to about 0.11 s.
//!
//! A restore must use the same QEMU, accelerator and command line shape (devices,
//! memory, kernel command line) as the save, or QEMU rejects the stream, or worse,
//! accepts it into a different machine; the cache key covers all of them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::{AgentClient, AgentError};
use crate::cache::cache_root;
use crate::image::manifest::{DiskFormat, Manifest};
use crate::image::{overlay, ImageError};
use crate::qemu::accel::Accel;
use crate::qemu::command::{self, GuestRam, Sandbox, VmLayout};
use crate::qemu::process::{ProcessError, QUIT_GRACE};
use crate::qemu::qmp::{QmpClient, QmpError};
use crate::qemu::{QemuTools, ToolError};
mod paused;

use paused::PausedVm;
pub use paused::RestoredVm;

use crate::util::digest_cache::DigestCache;
use crate::util::{sha256_bytes, shell_quote, wait_until, FileLock, Waited};

/// Arguments that make QEMU wait for a state instead of booting. `defer`, because
/// the `x-ignore-shared` capability must be set before the stream is read and QEMU
/// 7.2 has no command-line switch for it; the stream then comes from the device
/// state file passed open on descriptor 3 (`PASSED_FD`), read straight from disk.
pub(crate) const INCOMING_ARGS: [&str; 2] = ["-incoming", "defer"];
/// The migration URI of the device state file passed on descriptor 3.
const INCOMING_URI: &str = "fd:3";
/// The migration capability that leaves file-backed shared RAM out of the stream.
const IGNORE_SHARED: &str = "x-ignore-shared";

/// Time QEMU gets to create its QMP socket and greet.
pub(crate) const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time a plain QMP command (stop, cont, migrate, which all return at once) may take.
pub(crate) const QMP_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to connect to the serial and agent sockets once QMP answers.
pub(crate) const SOCKET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to write or read the whole RAM stream (about 100 MB for the 256 MiB demo
/// guest; 0.2-0.7 s measured). Generous because a big Windows guest streams GiBs.
pub(crate) const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);
/// Interval between `query-migrate` polls: polling rather than the MIGRATION event
/// keeps this independent of who consumes the QMP event channel (Vm::start forwards
/// it to the runner). Short, because loading the device state takes about 10 ms and
/// every poll is a cheap local round trip.
pub(crate) const MIGRATION_POLL: Duration = Duration::from_millis(2);
/// Time the agent gets to answer once a state's setup has run.
pub(crate) const SETUP_SETTLE: Duration = Duration::from_secs(10);
/// Time QEMU gets to exit after `quit` before the process group is killed.
pub(crate) const SAVE_QUIT_TIMEOUT: Duration = QUIT_GRACE;

/// Marks a finished state folder; a folder without it is never used.
const COMPLETE_MARKER: &str = ".complete";
/// Where states live below the cache root.
const STATES_DIR: &str = "states";
/// Characters of the sha256 used as the folder name (as for demo images).
const KEY_CHARS: usize = 16;
/// Stands in for the VM-private folder in the hashed command line, which differs
/// for every VM but does not change what the machine is.
const PLACEHOLDER_DIR: &str = "/@vm-dir@";
/// Stands in for the state folder (named after the key being computed).
const PLACEHOLDER_STATE: &str = "/@state-dir@";
/// Lines of QEMU's own output and of the console quoted when a save fails.
const LOG_TAIL_LINES: usize = 20;

/// A saved VM state: the frozen disk, the guest RAM and the device state that go
/// together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    pub dir: PathBuf,
    /// Frozen qcow2 (0444) backed by the image's base disk.
    pub disk: PathBuf,
    /// Guest RAM as a file (0644: QEMU 7.2 opens a memory backend's file read-write
    /// even for a private mapping, and maps it read-only if asked to open it so,
    /// which the guest cannot run on). Only the saving VM maps it shared.
    pub ram: PathBuf,
    /// The device-state migration stream (0444).
    pub devices: PathBuf,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot hash {path} for the saved-state key: {source}")]
    Hash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Overlay(#[from] ImageError),
    #[error("cannot start QEMU: {0}")]
    Spawn(#[from] ProcessError),
    #[error("QMP on {socket}: {source}")]
    Qmp {
        socket: PathBuf,
        #[source]
        source: QmpError,
    },
    #[error("guest agent on {socket}: {source}")]
    Agent {
        socket: PathBuf,
        #[source]
        source: AgentError,
    },
    #[error("cannot connect to the {what} socket {path}: {source}")]
    Socket {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{manifest}: the image's readiness is not the guest agent (ready.agent = false), so there is no moment known to be safe to save")]
    NoAgentReadiness { manifest: PathBuf },
    #[error("preparing the saved state ({label}) failed: {why}")]
    Setup { label: String, why: String },
    #[error(transparent)]
    Save(Box<SaveFailure>),
    #[error("migration {direction} {file} {outcome}")]
    Migration {
        direction: &'static str,
        file: PathBuf,
        outcome: String,
    },
}

/// A failed save, with the logs that say why (boxed: it is large and rare).
#[derive(Debug, thiserror::Error)]
#[error("saving the VM state of {manifest} failed: {message}\nQEMU log {qemu_log}:\n{qemu_tail}\nconsole {console_log}:\n{console_tail}")]
pub struct SaveFailure {
    pub manifest: PathBuf,
    pub message: String,
    pub qemu_log: PathBuf,
    pub qemu_tail: String,
    pub console_log: PathBuf,
    pub console_tail: String,
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io {
        path,
        action,
        source,
    }
}

/// The cache key: sha256 over the image's input files (manifest, disk, kernel,
/// initrd), the QEMU version string, the accelerator and the command line shape, so
/// any change to what the machine is invalidates the state.
pub fn state_key(
    manifest: &Manifest,
    qemu_version: &str,
    accel: Accel,
    binary: &str,
    sandbox: bool,
) -> Result<String, SnapshotError> {
    let mut material = String::new();
    // Contents, not names: a copy of the manifest elsewhere is the same machine.
    // Digests kept while a file is unchanged (util::digest_cache): a disk of many GiB
    // is not read again at every run.
    let digests = DigestCache::under(&crate::cache::cache_root());
    for path in manifest.input_files() {
        let hash = digests
            .sha256(&path)
            .map_err(|source| SnapshotError::Hash {
                path: path.clone(),
                source,
            })?;
        material.push_str(&format!("file {hash}\n"));
    }
    // The frozen disk names its backing file by absolute path; the kernel and initrd
    // paths are in the argv below.
    material.push_str(&format!("backing {}\n", manifest.disk.path.display()));
    material.push_str(&format!("qemu {qemu_version}\naccel {}\n", accel.as_str()));
    // The argv a restore will run, with the per-VM folder replaced: it records the
    // devices, memory and kernel command line that the RAM stream depends on, and
    // changes whenever command::build does.
    let layout = VmLayout::in_dir(Path::new(PLACEHOLDER_DIR));
    let placeholder = SavedState::in_dir(Path::new(PLACEHOLDER_STATE), "");
    for arg in restore_argv(binary, manifest, accel, &layout, &placeholder, sandbox) {
        material.push_str("arg ");
        material.push_str(&arg);
        material.push('\n');
    }
    Ok(sha256_bytes(material.as_bytes())[..KEY_CHARS].to_string())
}

/// The argv of a VM that restores `state`: the saving VM's command line (no extra
/// kernel parameters: they are baked into the saved RAM) with the RAM file mapped
/// private instead of shared, plus [`INCOMING_ARGS`].
pub(crate) fn restore_argv(
    binary: &str,
    manifest: &Manifest,
    accel: Accel,
    layout: &VmLayout,
    state: &SavedState,
    sandbox: bool,
) -> Vec<String> {
    let mut argv = command::build(
        binary,
        manifest,
        accel,
        layout,
        None,
        &state.ram_file(false),
        Sandbox::guest(sandbox),
    );
    argv.extend(INCOMING_ARGS.iter().map(|s| s.to_string()));
    argv
}

/// `<cache>/states`.
pub(crate) fn states_root() -> PathBuf {
    cache_root().join(STATES_DIR)
}

impl SavedState {
    fn in_dir(dir: &Path, key: &str) -> SavedState {
        SavedState {
            dir: dir.to_path_buf(),
            disk: dir.join("disk.qcow2"),
            ram: dir.join("ram.mem"),
            devices: dir.join("devices.state"),
            key: key.to_string(),
        }
    }

    /// The guest RAM backing: shared for the VM that saves, private for restores.
    fn ram_file(&self, shared: bool) -> GuestRam {
        GuestRam::File {
            path: self.ram.clone(),
            shared,
        }
    }

    /// Creates a VM's private overlay on the frozen disk (`qemu-img create -b disk`).
    pub(crate) fn create_overlay(
        &self,
        qemu_img: &str,
        overlay_path: &Path,
    ) -> Result<(), SnapshotError> {
        Ok(overlay::create(
            qemu_img,
            &self.disk,
            DiskFormat::Qcow2,
            overlay_path,
        )?)
    }

    /// Loads the device state into a QEMU started with [`restore_argv`] and this
    /// state's device file passed as descriptor 3 ([`Self::open_devices`]), and waits
    /// until it is all read. The VM stays paused: send `cont` once the console and
    /// agent are connected.
    pub(crate) fn load_into(
        &self,
        qmp: &QmpClient,
        qmp_socket: &Path,
    ) -> Result<(), SnapshotError> {
        let execute = |command: &str, arguments: Value| {
            qmp.execute(command, Some(arguments), QMP_COMMAND_TIMEOUT)
                .map_err(|source| SnapshotError::Qmp {
                    socket: qmp_socket.to_path_buf(),
                    source,
                })
        };
        execute("migrate-set-capabilities", ignore_shared())?;
        execute("migrate-incoming", json!({ "uri": INCOMING_URI }))?;
        wait_for_migration(qmp, qmp_socket, "from", &self.devices)
    }

    /// The device state file, opened to pass to QEMU (`ProcessGuard::spawn_passing`).
    pub(crate) fn open_devices(&self) -> Result<fs::File, SnapshotError> {
        fs::File::open(&self.devices)
            .map_err(io_error(&self.devices, "cannot open the saved state"))
    }
}

/// Work done in the guest between ready and the save, so that VMs start from a
/// shared setup (a driver installed and loaded, say) instead of repeating it.
pub(crate) struct StateSetup<'a> {
    /// Everything the setup depends on (hashes of the files it copies in, its
    /// commands): part of the state's cache key.
    pub identity: String,
    /// For messages: "demo_sensor loaded".
    pub label: String,
    /// Runs the setup through the guest agent; an Err says what went wrong.
    pub run: &'a dyn Fn(&mut AgentClient) -> Result<(), String>,
}

/// Returns the saved state for this image, QEMU and accelerator, saving it first
/// (one cold boot) if the cache has none.
pub fn ensure_saved(
    manifest: &Manifest,
    tools: &QemuTools,
    accel: Accel,
    notify: &mut dyn FnMut(&str),
) -> Result<SavedState, SnapshotError> {
    ensure_saved_with(manifest, tools, accel, None, notify)
}

/// [`ensure_saved`] after a setup: the state is taken once the setup has run.
pub(crate) fn ensure_saved_with(
    manifest: &Manifest,
    tools: &QemuTools,
    accel: Accel,
    setup: Option<&StateSetup>,
    notify: &mut dyn FnMut(&str),
) -> Result<SavedState, SnapshotError> {
    let version = crate::qemu::version_kept(&tools.system)?;
    let mut key = state_key(manifest, &version, accel, &tools.system, tools.sandbox)?;
    if let Some(setup) = setup {
        key = sha256_bytes(format!("{key}\nsetup {}", setup.identity).as_bytes())[..KEY_CHARS]
            .to_string();
    }
    let root = states_root();
    let target = root.join(&key);
    let state = SavedState::in_dir(&target, &key);
    if target.join(COMPLETE_MARKER).is_file() {
        return Ok(state);
    }
    fs::create_dir_all(&root).map_err(io_error(&root, "cannot create the state cache"))?;
    // One saver per key: a second bootgate waits here, then finds the state done.
    let lock = root.join(format!(".{key}.lock"));
    let _lock = FileLock::acquire(&lock).map_err(io_error(&lock, "cannot lock"))?;
    if target.join(COMPLETE_MARKER).is_file() {
        return Ok(state);
    }
    notify(&format!(
        "saving a VM state for fast starts into {} (once per image, QEMU and accelerator: one cold boot)",
        target.display()
    ));
    let started = Instant::now();
    // Built beside the target so the final rename is atomic (same file system).
    let work = tempfile::Builder::new()
        .prefix(&format!(".{key}-"))
        .tempdir_in(&root)
        .map_err(io_error(&root, "cannot create a temp folder"))?;
    let work_state = SavedState::in_dir(work.path(), &key);
    save(manifest, tools, accel, &work_state, setup)?;
    for file in [&work_state.disk, &work_state.devices] {
        fs::set_permissions(file, fs::Permissions::from_mode(0o444))
            .map_err(io_error(file, "cannot make read-only"))?;
    }
    let marker = work.path().join(COMPLETE_MARKER);
    fs::write(&marker, key.as_bytes()).map_err(io_error(&marker, "cannot write"))?;
    if target.exists() {
        // Left by a saver that died before finishing (no marker): never used, replace.
        fs::remove_dir_all(&target).map_err(io_error(&target, "cannot remove a stale state"))?;
    }
    let work = work.keep();
    fs::rename(&work, &target).map_err(io_error(&target, "cannot move the saved state into"))?;
    notify(&format!(
        "saved the VM state in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(state)
}

/// Boots the image on a fresh overlay `state.disk` with its RAM in `state.ram`, waits
/// for the agent, stops the CPUs and streams the devices to `state.devices`.
fn save(
    manifest: &Manifest,
    tools: &QemuTools,
    accel: Accel,
    state: &SavedState,
    setup: Option<&StateSetup>,
) -> Result<(), SnapshotError> {
    if !manifest.ready.agent {
        return Err(SnapshotError::NoAgentReadiness {
            manifest: manifest.path.clone(),
        });
    }
    overlay::create(
        &tools.img,
        &manifest.disk.path,
        manifest.disk.format,
        &state.disk,
    )?;
    // Sockets in a short /tmp path of their own: Unix socket paths are limited to
    // 108 bytes and the cache may be deep.
    let sockets = crate::util::private_tempdir("bootgate-save-")
        .map_err(io_error(Path::new("/tmp"), "cannot create a temp folder"))?;
    let mut layout = VmLayout::in_dir(sockets.path());
    layout.overlay = state.disk.clone();
    let argv = command::build(
        &tools.system,
        manifest,
        accel,
        &layout,
        None,
        &state.ram_file(true),
        if tools.sandbox {
            Sandbox::Saver
        } else {
            Sandbox::Off
        },
    );
    let mut vm = PausedVm::spawn(&argv, &layout, state.dir.as_path(), None)?;
    let fail = |vm: &PausedVm, message: String| {
        SnapshotError::Save(Box::new(SaveFailure {
            manifest: manifest.path.clone(),
            message,
            qemu_log: vm.qemu_log.clone(),
            qemu_tail: tail(&vm.qemu_log),
            console_log: vm.console_log.clone(),
            console_tail: tail(&vm.console_log),
        }))
    };
    let result = (|| {
        vm.cont()?;
        vm.agent
            .sync(manifest.ready.timeout)
            .map_err(|source| SnapshotError::Agent {
                socket: layout.agent_socket.clone(),
                source,
            })?;
        if let Some(setup) = setup {
            (setup.run)(&mut vm.agent).map_err(|why| SnapshotError::Setup {
                label: setup.label.clone(),
                why,
            })?;
            // The setup may have printed a crash report or panicked the guest:
            // a state saved from a broken guest would poison every start from it.
            vm.agent
                .sync(SETUP_SETTLE)
                .map_err(|source| SnapshotError::Setup {
                    label: setup.label.clone(),
                    why: format!("the guest agent stopped answering after the setup: {source}"),
                })?;
        }
        // Stopped first so the RAM does not change under the stream (no dirty-page
        // passes) and the disk is consistent with the RAM that is saved.
        vm.qmp_execute("stop", None)?;
        vm.qmp_execute("migrate-set-capabilities", Some(ignore_shared()))?;
        vm.qmp_execute(
            "migrate",
            Some(json!({"uri": format!("exec:cat > {}", shell_quote(&state.devices.display().to_string()))})),
        )?;
        wait_for_migration(&vm.qmp, &layout.qmp_socket, "to", &state.devices)
    })();
    if let Err(e) = result {
        let message = e.to_string();
        vm.stop();
        return Err(fail(&vm, message));
    }
    // `quit` closes the overlay cleanly: migration already flushed it.
    if !vm.stop() {
        return Err(fail(&vm, "QEMU did not exit after quit".to_string()));
    }
    Ok(())
}

/// Arguments of `migrate-set-capabilities` that leave the shared RAM out of the
/// stream; the saving and the restoring QEMU must agree on it.
fn ignore_shared() -> Value {
    json!({"capabilities": [{"capability": IGNORE_SHARED, "state": true}]})
}

/// Polls `query-migrate` until the stream completes or fails.
fn wait_for_migration(
    qmp: &QmpClient,
    qmp_socket: &Path,
    direction: &'static str,
    file: &Path,
) -> Result<(), SnapshotError> {
    let mut last_error = None;
    let outcome = wait_until(MIGRATION_TIMEOUT, MIGRATION_POLL, || {
        match qmp.execute("query-migrate", None, QMP_COMMAND_TIMEOUT) {
            Ok(info) => match info.get("status").and_then(Value::as_str) {
                Some("completed") => Some(Ok(())),
                Some(status @ ("failed" | "cancelled")) => Some(Err(SnapshotError::Migration {
                    direction,
                    file: file.to_path_buf(),
                    outcome: format!(
                        "{status}: {}",
                        info.get("error-desc")
                            .and_then(Value::as_str)
                            .unwrap_or("no reason given")
                    ),
                })),
                // setup, active, device, none (incoming not begun yet): keep waiting.
                _ => None,
            },
            Err(source) => {
                last_error = Some(source);
                // A closed QMP never recovers; other errors might be transient.
                matches!(last_error, Some(QmpError::Closed)).then(|| {
                    Err(SnapshotError::Qmp {
                        socket: qmp_socket.to_path_buf(),
                        source: QmpError::Closed,
                    })
                })
            }
        }
    });
    match outcome {
        Waited::Done(result) => result,
        Waited::TimedOut => Err(SnapshotError::Migration {
            direction,
            file: file.to_path_buf(),
            outcome: format!(
                "did not complete within {MIGRATION_TIMEOUT:?}{}",
                last_error.map_or(String::new(), |e| format!(" (last QMP error: {e})"))
            ),
        }),
    }
}

fn tail(path: &Path) -> String {
    crate::util::tail_lines(path, LOG_TAIL_LINES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_argv_is_the_saving_line_with_private_ram_plus_incoming() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../../../images/demo/image.toml");
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        fs::write(dir.path().join("image.toml"), text).unwrap();
        let m = Manifest::load(&dir.path().join("image.toml")).unwrap();
        let layout = VmLayout::in_dir(dir.path());
        let state = SavedState::in_dir(Path::new("/states/k"), "k");
        let saving = command::build(
            "q",
            &m,
            Accel::Tcg,
            &layout,
            None,
            &state.ram_file(true),
            Sandbox::Off,
        );
        let restore = restore_argv("q", &m, Accel::Tcg, &layout, &state, false);
        let private: Vec<String> = saving
            .iter()
            .map(|a| a.replace("share=on", "share=off"))
            .collect();
        assert_ne!(private, saving, "the saving VM maps its RAM shared");
        assert_eq!(&restore[..saving.len()], &private[..]);
        assert_eq!(&restore[saving.len()..], ["-incoming", "defer"]);
        assert_eq!(
            INCOMING_URI,
            format!("fd:{}", crate::qemu::process::PASSED_FD)
        );
        let key = state_key(&m, "QEMU emulator version 7.2.22", Accel::Tcg, "q", true).unwrap();
        assert_eq!(key.len(), KEY_CHARS);
        let other = state_key(&m, "QEMU emulator version 8.0.0", Accel::Tcg, "q", true).unwrap();
        assert_ne!(key, other, "a QEMU upgrade invalidates the state");
    }
}
