//! The sandbox a `source` driver's build runs in.
//!
//! A Kbuild file is make syntax with shell in it, and suites come from other teams
//! and vendors: building one runs their code on this host as the user running
//! bootgate (root in CI). So the build runs under bubblewrap: new namespaces of every
//! kind (a network namespace with only its own loopback), no capabilities, a
//! read-only view of the toolchain (/usr and the merged-/usr links), the kernel
//! headers and the driver source, a size-bounded tmpfs to build in and another for
//! /tmp, and nothing else of the host: no /etc, /home, /root, no bootgate cache.
//! Nothing on the host is writable from inside. The sandboxed shell copies the source
//! into its build folder, runs make with its output on stderr (the build log) and
//! writes the module on stdout; bootgate reads both with byte bounds and places the
//! module in the cache itself.
//!
//! `--unsandboxed-builds` runs the same script directly on the host, as builds ran
//! before the sandbox existed, for hosts where bubblewrap cannot make namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use crate::model::record::DriverBuilds;
use crate::qemu::process::{ProcessError, ProcessGuard};
use crate::util::kept_answers::{self, AnswerKey};
use crate::util::{find_in_path, human_duration, private_tempdir, wait_until, Waited};

/// The bubblewrap binary; `BOOTGATE_BWRAP` overrides it.
pub(crate) const DEFAULT_BWRAP: &str = "bwrap";
/// What to install when bubblewrap is missing (Debian/Ubuntu; Fedora names it the same).
pub(crate) const BWRAP_INSTALL_HINT: &str = "apt-get install -y bubblewrap";
/// Time one driver build may take; then its whole process group is killed. A
/// module of a few files builds in seconds, a large one in a minute or two.
pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Time the probe (`bwrap ... true`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest module a build may write: the limit of a file copied into a guest.
pub(crate) const MAX_MODULE_BYTES: u64 = 64 << 20;
/// Largest build log kept; the rest is read and dropped, with a note in the log.
pub(crate) const MAX_LOG_BYTES: u64 = 8 << 20;
/// Size of the sandbox's build folder (a tmpfs: memory, used only as filled).
const BUILD_TMPFS_BYTES: u64 = 1 << 30;
/// Size of the sandbox's private /tmp (the compiler's temporary files).
const TMP_TMPFS_BYTES: u64 = 256 << 20;
/// Time the output readers get to finish once the build's processes are gone.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);
/// Poll interval while waiting for a build to end.
const EXIT_POLL: Duration = Duration::from_millis(20);
/// The host folders the toolchain lives in, each recreated read-only (or as the
/// same symlink, on merged-/usr hosts).
const TOOLCHAIN: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64"];
/// Folders whose commands may be links through /etc (Debian's alternatives: `awk`,
/// `cc`); those links are recreated in the sandbox's otherwise empty /etc.
const COMMAND_DIRS: &[&str] = &["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"];
/// Where the sandbox sees the driver source (read-only).
const SOURCE_DIR: &str = "/bootgate/source";
/// The sandbox's build folder, also its HOME.
const BUILD_DIR: &str = "/bootgate/build";
/// PATH inside the sandbox (the environment is cleared).
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
/// The build, as a shell script of positional arguments (so no name is ever quoted
/// into it): copy the source's files, make with its output as the log, then the
/// module on stdout. Only regular files are copied, as the build key hashes only those.
const BUILD_SCRIPT: &str = r#"set -eu
name=$1 headers=$2 source=$3 build=$4
cd "$source"
find . -type f -exec cp --parents -t "$build" -- {} +
cd "$build"
make -C "$headers" M="$build" modules >&2
exec cat -- "$build/$name.ko"
"#;

/// What the sandbox denies a build: said in the error of a sandboxed build that
/// failed, as its cause may be one of these.
pub(crate) const SANDBOX_DENIES: &str = "the build ran in bootgate's build sandbox (bubblewrap), which denies it the network, writing anywhere but its own build folder (everything else is read-only), and every host file but the toolchain (/usr), the kernel headers and the driver source; a build that needs more (a download, a file from elsewhere) must be done beforehand: give its `module` instead";

#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot start the build: {0}")]
    Start(#[from] ProcessError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Why the build produced no module; the log has the rest.
    #[error("{0}")]
    Failed(String),
}

/// One driver build: the module's name and what the build reads.
pub(crate) struct Build<'a> {
    pub name: &'a str,
    pub source: &'a Path,
    pub headers: &'a Path,
}

/// Builds `job` the `how` way with its log in `log_path`; the module's bytes.
pub(crate) fn build(
    job: &Build,
    how: DriverBuilds,
    log_path: &Path,
) -> Result<Vec<u8>, BuildError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    // Absolute: the script changes folders before make reads the headers.
    let headers = std::path::absolute(job.headers).map_err(io_at(job.headers))?;
    let source = std::fs::canonicalize(job.source).map_err(io_at(job.source))?;
    // Held to the end: the unsandboxed build's folder on the host.
    let mut scratch = None;
    let argv = match how {
        DriverBuilds::Sandboxed => {
            probe().map_err(BuildError::Unavailable)?;
            let canonical = std::fs::canonicalize(job.headers).map_err(io_at(job.headers))?;
            let mut argv = vec![bwrap_binary()];
            argv.extend(bwrap_args(
                &HostLayout::under(Path::new("/")),
                &header_binds(&headers, &canonical),
                Some(&source),
                &script_argv(
                    job.name,
                    &headers,
                    Path::new(SOURCE_DIR),
                    Path::new(BUILD_DIR),
                ),
            ));
            argv
        }
        DriverBuilds::Unsandboxed => {
            let dir = private_tempdir("bootgate-build-").map_err(io_at(&std::env::temp_dir()))?;
            let argv = script_argv(job.name, &headers, &source, dir.path());
            scratch = Some(dir);
            argv
        }
    };
    let log = File::create(log_path).map_err(io_at(log_path))?;
    let output = run_bounded(&argv, BUILD_TIMEOUT, log)?;
    drop(scratch);
    match output.ended {
        Ended::TimedOut => Err(BuildError::Failed(format!(
            "it did not finish within {} and was killed",
            human_duration(BUILD_TIMEOUT)
        ))),
        Ended::ModuleTooLarge => Err(BuildError::Failed(format!(
            "it wrote more than {} MiB as its module and was killed",
            MAX_MODULE_BYTES >> 20
        ))),
        Ended::Exited(status) if status.code() == Some(127) => Err(BuildError::Failed(
            "a command it runs is missing (exit 127): install make and gcc".into(),
        )),
        Ended::Exited(status) if !status.success() => {
            Err(BuildError::Failed(format!("it ended with {status}")))
        }
        Ended::Exited(_) if output.module.is_empty() => Err(BuildError::Failed(format!(
            "it produced no {}.ko",
            job.name
        ))),
        Ended::Exited(_) => Ok(output.module),
    }
}

/// Whether the build sandbox can be made on this host, decided once per process and
/// kept for this host boot when it can ([`probe_kept_in`]): bwrap with every option a
/// build uses (namespaces, mounts, sizes) runs `true`. The error says why not and
/// what to do.
pub fn probe() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let bwrap = bwrap_binary();
            let key = probe_key(&bwrap);
            probe_kept_in(&crate::cache::cache_root(), &bwrap, key.as_ref())
        })
        .clone()
}

/// The probe run now, whatever is kept (what `doctor` checks).
pub fn probe_fresh() -> Result<(), String> {
    probe_now(&bwrap_binary())
}

/// Host settings that decide whether an unprivileged user may make namespaces: part
/// of a kept verdict's key, so a sysctl change asks again.
const USERNS_SETTINGS: &[&str] = &[
    "/proc/sys/user/max_user_namespaces",
    "/proc/sys/kernel/unprivileged_userns_clone",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
];
/// The kept answer of a probe that made the sandbox.
const PROBE_OK: &str = "sandbox made";

/// What a kept verdict depends on: bwrap (the binary's identity), the probe's whole
/// command line (it names the host's toolchain layout), the user and the boot, and
/// the namespace settings' values.
fn probe_key(bwrap: &str) -> Option<AnswerKey> {
    let settings = USERNS_SETTINGS
        .iter()
        .map(|path| {
            let value = std::fs::read_to_string(path);
            format!("{path}={}", value.as_deref().map_or("absent", str::trim))
        })
        .collect();
    AnswerKey::now(&probe_argv(bwrap).join(" "), bwrap, settings)
}

/// The probe's verdict, kept under `key` when the sandbox was made. A refusal is
/// never kept: it may be passing (a probe timed out on a loaded host, the namespace
/// limit reached for now) and would refuse every build until the next reboot.
fn probe_kept_in(root: &Path, bwrap: &str, key: Option<&AnswerKey>) -> Result<(), String> {
    kept_answers::kept_or_ask(root, key, || {
        probe_now(bwrap).map(|()| PROBE_OK.to_string())
    })
    .map(|_| ())
}

fn probe_argv(bwrap: &str) -> Vec<String> {
    let mut argv = vec![bwrap.to_string()];
    argv.extend(bwrap_args(
        &HostLayout::under(Path::new("/")),
        &[],
        None,
        &["true".to_string()],
    ));
    argv
}

fn probe_now(bwrap: &str) -> Result<(), String> {
    if find_in_path(bwrap).is_none() {
        return Err(format!(
            "{bwrap} (bubblewrap) is not installed: as root run `{BWRAP_INSTALL_HINT}`"
        ));
    }
    let argv = probe_argv(bwrap);
    let output = run_bounded(&argv, PROBE_TIMEOUT, Vec::new()).map_err(|e| e.to_string())?;
    let said = String::from_utf8_lossy(&output.log);
    let said = said.lines().next().unwrap_or("").trim();
    match output.ended {
        Ended::Exited(status) if status.success() => Ok(()),
        Ended::Exited(status) => Err(format!(
            "{bwrap} cannot make the sandbox's namespaces here ({}): {}",
            if said.is_empty() {
                status.to_string()
            } else {
                said.to_string()
            },
            why_no_sandbox(said)
        )),
        Ended::TimedOut | Ended::ModuleTooLarge => Err(format!(
            "{bwrap} did not start the sandbox within {}",
            human_duration(PROBE_TIMEOUT)
        )),
    }
}

/// What a failed sandbox probe means, from bwrap's first line.
fn why_no_sandbox(said: &str) -> &'static str {
    if said.contains("Failed to make / slave") {
        // bwrap makes the root's mount propagation slave before it pivots, which the
        // kernel refuses (EINVAL) where `/` is not a mount point: a plain chroot.
        "this root is not a mount point (a chroot entered without one): bind-mount the chroot onto itself before entering it (`mount --bind DIR DIR`, as schroot and systemd-nspawn do)"
    } else {
        "user namespaces are disabled or refused (in a container, by its seccomp policy; on the host, sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces > 0 allows them)"
    }
}

fn bwrap_binary() -> String {
    std::env::var("BOOTGATE_BWRAP")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_BWRAP.to_string())
}

/// `sh -c BUILD_SCRIPT` with its positional arguments.
fn script_argv(name: &str, headers: &Path, source: &Path, build: &Path) -> Vec<String> {
    let mut argv: Vec<String> = ["/bin/sh", "-c", BUILD_SCRIPT, "sh", name]
        .into_iter()
        .map(String::from)
        .collect();
    argv.extend([headers, source, build].map(|p| p.display().to_string()));
    argv
}

/// What of the host's root the sandbox recreates: each toolchain folder bound
/// read-only, or, where it is a symlink (merged /usr: /bin -> usr/bin), the same
/// symlink; and the links under /etc that the toolchain's commands go through.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostLayout {
    mounts: Vec<Mount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mount {
    /// `--ro-bind PATH PATH`
    ReadOnly(PathBuf),
    /// `--symlink TARGET PATH`
    Symlink { target: PathBuf, path: PathBuf },
}

impl HostLayout {
    /// The layout of the root folder `root` (`/` but in tests); paths in it are
    /// absolute, as the sandbox sees them.
    fn under(root: &Path) -> HostLayout {
        let on_host = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
        let mut mounts = Vec::new();
        for dir in TOOLCHAIN {
            let dir = Path::new(dir);
            let Ok(meta) = std::fs::symlink_metadata(on_host(dir)) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(on_host(dir)) {
                    mounts.push(Mount::Symlink {
                        target,
                        path: dir.to_path_buf(),
                    });
                }
            } else if meta.is_dir() {
                mounts.push(Mount::ReadOnly(dir.to_path_buf()));
            }
        }
        // An /etc link recreated points where it does on the host, and only into the
        // toolchain (anything else would not exist in the sandbox anyway).
        let mut etc_links = BTreeMap::new();
        for dir in COMMAND_DIRS {
            let Ok(entries) = std::fs::read_dir(on_host(Path::new(dir))) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(link) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                if !link.starts_with("/etc") {
                    continue;
                }
                if let Ok(target) = std::fs::read_link(on_host(&link)) {
                    if in_toolchain(&target) {
                        etc_links.insert(link, target);
                    }
                }
            }
        }
        mounts.extend(
            etc_links
                .into_iter()
                .map(|(path, target)| Mount::Symlink { target, path }),
        );
        HostLayout { mounts }
    }
}

/// True for an absolute path inside a toolchain folder (which the sandbox shows).
fn in_toolchain(path: &Path) -> bool {
    path.is_absolute() && TOOLCHAIN.iter().any(|dir| path.starts_with(dir))
}

/// The read-only binds that show the kernel headers at the path make is given and
/// at their canonical path (a Makefile may name either): none for a path the
/// toolchain already shows (/usr/src/linux-headers-...).
fn header_binds(given: &Path, canonical: &Path) -> Vec<PathBuf> {
    let mut binds: Vec<PathBuf> = Vec::new();
    for path in [given, canonical] {
        if !in_toolchain(path) && !binds.iter().any(|b| b == path) {
            binds.push(path.to_path_buf());
        }
    }
    binds
}

/// The namespaces of the sandbox: no network but its own loopback, its own processes,
/// IPC and host name. An ordinary user needs a user namespace for them
/// (`--unshare-all`). Root does not, and gets none: with every capability dropped it
/// would add nothing, and chroots and some containers refuse a user namespace even to
/// root, where bwrap's `--unshare-user-try` fails ("No permissions to create new
/// namespace") instead of going without.
fn namespace_args(root: bool) -> Vec<String> {
    let args: &[&str] = if root {
        &[
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
    } else {
        &["--unshare-all"]
    };
    args.iter().map(|a| a.to_string()).collect()
}

/// bwrap's arguments to run `command` in the sandbox: `layout` of the toolchain,
/// `binds` read-only at their own paths, `source` read-only at SOURCE_DIR.
fn bwrap_args(
    layout: &HostLayout,
    binds: &[PathBuf],
    source: Option<&Path>,
    command: &[String],
) -> Vec<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let mut args = namespace_args(unsafe { libc::geteuid() } == 0);
    args.extend(
        [
            // No capabilities even when bootgate runs as root (bwrap keeps them for root
            // otherwise, and with them a remount makes /usr writable).
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            // No controlling terminal: a build cannot push input into bootgate's terminal.
            "--new-session",
            "--clearenv",
            "--setenv",
            "PATH",
            SANDBOX_PATH,
            "--setenv",
            "HOME",
            BUILD_DIR,
        ]
        .into_iter()
        .map(String::from),
    );
    let mut push = |parts: &[&Path]| args.extend(parts.iter().map(|p| p.display().to_string()));
    for mount in &layout.mounts {
        match mount {
            Mount::ReadOnly(path) => push(&[Path::new("--ro-bind"), path, path]),
            Mount::Symlink { target, path } => push(&[Path::new("--symlink"), target, path]),
        }
    }
    push(&[Path::new("--proc"), Path::new("/proc")]);
    push(&[Path::new("--dev"), Path::new("/dev")]);
    for bind in binds {
        push(&[Path::new("--ro-bind"), bind, bind]);
    }
    if let Some(source) = source {
        push(&[Path::new("--ro-bind"), source, Path::new(SOURCE_DIR)]);
    }
    for (size, dir) in [(BUILD_TMPFS_BYTES, BUILD_DIR), (TMP_TMPFS_BYTES, "/tmp")] {
        args.extend([
            "--size".into(),
            size.to_string(),
            "--tmpfs".into(),
            dir.into(),
        ]);
    }
    // The root and /dev are tmpfs mounts bwrap made, unbounded: read-only, so only
    // the two bounded folders take writes.
    for dir in ["/", "/dev"] {
        args.extend(["--remount-ro".into(), dir.into()]);
    }
    args.extend(["--chdir".into(), BUILD_DIR.into()]);
    args.extend(command.iter().cloned());
    args
}

/// How a bounded run ended.
#[derive(Debug)]
enum Ended {
    Exited(ExitStatus),
    TimedOut,
    /// It wrote more than MAX_MODULE_BYTES on stdout.
    ModuleTooLarge,
}

struct Output<W> {
    ended: Ended,
    /// Its stdout (empty once it was too large).
    module: Vec<u8>,
    /// Its stderr, at most MAX_LOG_BYTES and a note of what was dropped.
    log: W,
}

/// Runs `argv` in a process guard for at most `timeout`, its stdout kept up to
/// MAX_MODULE_BYTES and its stderr copied into `log` up to MAX_LOG_BYTES. Its whole
/// process group is killed when it ends, however it ends.
fn run_bounded<W: Write + Send + 'static>(
    argv: &[String],
    timeout: Duration,
    log: W,
) -> Result<Output<W>, BuildError> {
    let (mut guard, stdout, stderr) = ProcessGuard::spawn_piped(argv)?;
    let too_large = Arc::new(AtomicBool::new(false));
    let (module_tx, module_rx) = mpsc::channel();
    let flag = Arc::clone(&too_large);
    std::thread::spawn(move || {
        let read = read_bounded(stdout, MAX_MODULE_BYTES);
        if matches!(read, Ok(Bounded::TooLarge)) {
            flag.store(true, Ordering::SeqCst);
        }
        // The receiver gave up waiting: nothing left to tell.
        let _ = module_tx.send(read);
    });
    let (log_tx, log_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = log;
        let copied = copy_bounded(stderr, &mut log, MAX_LOG_BYTES);
        let _ = log_tx.send(copied.map(|()| log));
    });
    let mut ended = match wait_until(timeout, EXIT_POLL, || {
        if too_large.load(Ordering::SeqCst) {
            return Some(Ended::ModuleTooLarge);
        }
        guard.try_wait().map(Ended::Exited)
    }) {
        Waited::Done(ended) => ended,
        Waited::TimedOut => Ended::TimedOut,
    };
    // Whatever ended it, nothing it started outlives it: its group is killed (and
    // in the sandbox, its pid namespace dies with bwrap: --die-with-parent).
    guard.terminate();
    let held_open =
        || BuildError::Failed("a process it started kept its output open after it ended".into());
    let read_failed = |e: io::Error| BuildError::Failed(format!("cannot read its output: {e}"));
    let module = match module_rx
        .recv_timeout(OUTPUT_DRAIN)
        .map_err(|_| held_open())?
    {
        Ok(Bounded::Whole(bytes)) => bytes,
        // The reader stops at the bound and closes the pipe, so the writer may die
        // of SIGPIPE before the poll above saw the flag: the bound is why it ended.
        Ok(Bounded::TooLarge) => {
            ended = Ended::ModuleTooLarge;
            Vec::new()
        }
        Err(e) => return Err(read_failed(e)),
    };
    let log = log_rx
        .recv_timeout(OUTPUT_DRAIN)
        .map_err(|_| held_open())?
        .map_err(read_failed)?;
    Ok(Output { ended, module, log })
}

#[derive(Debug, PartialEq, Eq)]
enum Bounded {
    Whole(Vec<u8>),
    TooLarge,
}

/// Reads `from` to its end, unless it holds more than `limit` bytes.
fn read_bounded(from: impl Read, limit: u64) -> io::Result<Bounded> {
    let mut bytes = Vec::new();
    from.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(if bytes.len() as u64 > limit {
        Bounded::TooLarge
    } else {
        Bounded::Whole(bytes)
    })
}

/// Copies `from` into `to` up to `limit` bytes and reads and drops the rest (so the
/// writer never blocks on a full pipe), ending `to` with a note of what was dropped.
fn copy_bounded(mut from: impl Read, to: &mut impl Write, limit: u64) -> io::Result<()> {
    io::copy(&mut (&mut from).take(limit), to)?;
    let dropped = io::copy(&mut from, &mut io::sink())?;
    if dropped > 0 {
        writeln!(
            to,
            "\n[bootgate: the build log was cut at {limit} bytes; {dropped} more bytes were not kept]"
        )?;
    }
    to.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// The arguments right after each occurrence of `option`.
    fn after(args: &[String], option: &str, count: usize) -> Vec<Vec<String>> {
        args.iter()
            .enumerate()
            .filter(|(_, a)| *a == option)
            .map(|(i, _)| args[i + 1..i + 1 + count].to_vec())
            .collect()
    }

    /// A merged-/usr host: /bin, /sbin, /lib, /lib64 are symlinks into /usr; an
    /// alternatives link in /usr/bin; and a host file the sandbox must not show.
    fn merged_usr_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
            "etc/alternatives",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            symlink(target, root.path().join(link)).unwrap();
        }
        std::fs::write(root.path().join("usr/bin/mawk"), b"").unwrap();
        symlink("/etc/alternatives/awk", root.path().join("usr/bin/awk")).unwrap();
        symlink("/usr/bin/mawk", root.path().join("etc/alternatives/awk")).unwrap();
        // An alternative pointing out of the toolchain is not recreated.
        symlink(
            "/etc/alternatives/my.cnf",
            root.path().join("usr/bin/mycnf"),
        )
        .unwrap();
        symlink(
            "/etc/mysql/my.cnf",
            root.path().join("etc/alternatives/my.cnf"),
        )
        .unwrap();
        std::fs::write(root.path().join("etc/shadow"), b"secret").unwrap();
        root
    }

    #[test]
    fn a_merged_usr_host_gets_usr_bound_and_its_links_recreated() {
        let root = merged_usr_root();
        let layout = HostLayout::under(root.path());
        let args = bwrap_args(&layout, &[], None, &strings(&["true"]));
        assert_eq!(after(&args, "--ro-bind", 2), [strings(&["/usr", "/usr"])]);
        let links = after(&args, "--symlink", 2);
        assert_eq!(
            links,
            [
                strings(&["usr/bin", "/bin"]),
                strings(&["usr/sbin", "/sbin"]),
                strings(&["usr/lib", "/lib"]),
                strings(&["usr/lib64", "/lib64"]),
                strings(&["/usr/bin/mawk", "/etc/alternatives/awk"]),
            ]
        );
        assert!(
            !args
                .iter()
                .any(|a| a.contains("shadow") || a.contains("mysql")),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a == "/etc"), "no host /etc: {args:?}");
    }

    #[test]
    fn a_split_usr_host_gets_each_folder_bound() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["usr/bin", "bin", "lib"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let layout = HostLayout::under(root.path());
        let args = bwrap_args(&layout, &[], None, &strings(&["true"]));
        let binds: Vec<String> = after(&args, "--ro-bind", 1).concat();
        assert_eq!(
            binds,
            strings(&["/usr", "/bin", "/lib"]),
            "absent ones left out"
        );
        assert!(after(&args, "--symlink", 2).is_empty());
    }

    #[test]
    fn a_chroot_without_a_mount_point_root_is_told_apart() {
        assert!(
            why_no_sandbox("bwrap: Failed to make / slave: Invalid argument")
                .contains("mount --bind DIR DIR")
        );
        assert!(
            why_no_sandbox("bwrap: No permissions to create new namespace")
                .contains("user namespaces")
        );
    }

    #[test]
    fn root_gets_every_namespace_but_a_users() {
        assert_eq!(namespace_args(false), strings(&["--unshare-all"]));
        let root = namespace_args(true);
        for ns in [
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
        ] {
            assert!(root.iter().any(|a| a == ns), "{ns}: {root:?}");
        }
        assert!(!root
            .iter()
            .any(|a| a.contains("user") || a == "--unshare-all"));
    }

    #[test]
    fn every_build_gets_the_same_confinement() {
        let layout = HostLayout { mounts: Vec::new() };
        let args = bwrap_args(
            &layout,
            &[],
            Some(Path::new("/work/src/drv")),
            &strings(&["make"]),
        );
        let namespaces = namespace_args(unsafe { libc::geteuid() } == 0);
        assert!(args.starts_with(&namespaces), "{args:?}");
        for option in ["--die-with-parent", "--new-session", "--clearenv"] {
            assert!(args.iter().any(|a| a == option), "{option}: {args:?}");
        }
        assert_eq!(after(&args, "--cap-drop", 1), [strings(&["ALL"])]);
        assert_eq!(
            after(&args, "--setenv", 2),
            [
                strings(&["PATH", SANDBOX_PATH]),
                strings(&["HOME", BUILD_DIR])
            ]
        );
        assert_eq!(
            after(&args, "--ro-bind", 2),
            [strings(&["/work/src/drv", SOURCE_DIR])],
            "the source, read-only, and nothing else of the host"
        );
        // Each tmpfs is sized: --size must come right before its --tmpfs.
        assert_eq!(
            after(&args, "--size", 3),
            [
                strings(&[&BUILD_TMPFS_BYTES.to_string(), "--tmpfs", BUILD_DIR]),
                strings(&[&TMP_TMPFS_BYTES.to_string(), "--tmpfs", "/tmp"]),
            ]
        );
        assert_eq!(after(&args, "--tmpfs", 1).len(), 2, "no unsized tmpfs");
        assert_eq!(
            after(&args, "--remount-ro", 1),
            [strings(&["/"]), strings(&["/dev"])]
        );
        assert_eq!(args.last().map(String::as_str), Some("make"));
        for hidden in ["/etc", "/home", "/root", "/tmp/", "/var"] {
            assert!(
                !after(&args, "--bind", 2)
                    .concat()
                    .iter()
                    .any(|a| a.starts_with(hidden)),
                "{hidden}"
            );
        }
        assert!(
            !args.iter().any(|a| a == "--bind" || a == "--share-net"),
            "nothing writable: {args:?}"
        );
    }

    #[test]
    fn headers_elsewhere_are_bound_at_their_path_and_canonical_path() {
        assert!(
            header_binds(
                Path::new("/usr/src/linux-headers-6.1.0-57-cloud-amd64"),
                Path::new("/usr/src/linux-headers-6.1.0-57-cloud-amd64"),
            )
            .is_empty(),
            "under /usr the toolchain bind shows them"
        );
        assert_eq!(
            header_binds(
                Path::new("/opt/kernel/build"),
                Path::new("/opt/kernel/build")
            ),
            [PathBuf::from("/opt/kernel/build")]
        );
        assert_eq!(
            header_binds(Path::new("/srv/headers"), Path::new("/data/kernels/6.1")),
            [
                PathBuf::from("/srv/headers"),
                PathBuf::from("/data/kernels/6.1")
            ]
        );
        // /lib/modules/K/build -> /usr/src/...: both visible through the toolchain.
        assert!(header_binds(
            Path::new("/lib/modules/6.1.0/build"),
            Path::new("/usr/src/linux-headers-6.1.0")
        )
        .is_empty());
        let layout = HostLayout { mounts: Vec::new() };
        let binds = header_binds(Path::new("/srv/headers"), Path::new("/data/kernels/6.1"));
        let args = bwrap_args(&layout, &binds, None, &strings(&["true"]));
        assert_eq!(
            after(&args, "--ro-bind", 2),
            [
                strings(&["/srv/headers", "/srv/headers"]),
                strings(&["/data/kernels/6.1", "/data/kernels/6.1"])
            ]
        );
    }

    #[test]
    fn the_script_takes_every_name_as_an_argument() {
        let argv = script_argv("drv", Path::new("/h"), Path::new("/s"), Path::new("/b"));
        assert_eq!(&argv[..2], ["/bin/sh", "-c"]);
        assert_eq!(&argv[3..], strings(&["sh", "drv", "/h", "/s", "/b"]));
        assert!(!argv[2].contains("drv"));
    }

    #[test]
    fn module_output_is_bounded() {
        assert_eq!(
            read_bounded(&b"12345"[..], 5).unwrap(),
            Bounded::Whole(b"12345".to_vec())
        );
        assert_eq!(read_bounded(&b"123456"[..], 5).unwrap(), Bounded::TooLarge);
        assert_eq!(
            read_bounded(&b""[..], 5).unwrap(),
            Bounded::Whole(Vec::new())
        );
    }

    #[test]
    fn the_log_is_bounded_and_says_it_was_cut() {
        let mut log = Vec::new();
        copy_bounded(&b"0123456789"[..], &mut log, 4).unwrap();
        let text = String::from_utf8(log).unwrap();
        assert!(
            text.starts_with(
                "0123\n[bootgate: the build log was cut at 4 bytes; 6 more bytes were not kept]"
            ),
            "{text}"
        );
        let mut log = Vec::new();
        copy_bounded(&b"0123"[..], &mut log, 4).unwrap();
        assert_eq!(
            log, b"0123",
            "a log within the bound is whole, with no note"
        );
    }

    /// The bounds hold against a real writer: a child that writes without end is
    /// killed once past the module bound, and its log is cut.
    #[test]
    fn an_endless_writer_is_stopped_at_the_module_bound() {
        let argv = strings(&["sh", "-c", "yes >&2 & exec yes"]);
        let output = run_bounded(&argv, Duration::from_secs(60), Vec::new()).unwrap();
        assert!(
            matches!(output.ended, Ended::ModuleTooLarge),
            "{:?}",
            output.ended
        );
        assert!(output.module.is_empty());
        assert!(output.log.len() as u64 <= MAX_LOG_BYTES + 200);
    }

    #[test]
    fn a_build_past_its_time_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let argv = strings(&["sh", "-c", &script]);
        let output = run_bounded(&argv, Duration::from_secs(1), Vec::new()).unwrap();
        assert!(
            matches!(output.ended, Ended::TimedOut),
            "{:?}",
            output.ended
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signal 0 only checks for existence.
        let gone = wait_until(Duration::from_secs(5), EXIT_POLL, || {
            (unsafe { libc::kill(pid, 0) } != 0).then_some(())
        });
        assert_eq!(
            gone,
            Waited::Done(()),
            "the build's background process outlived it"
        );
    }

    /// The real bwrap probe, kept: the first lookup runs it; a kept verdict (planted
    /// where the real probe cannot succeed: a bwrap that does not exist) is what the
    /// next lookup returns; a refusal is not kept; a new boot or another namespace
    /// setting runs the probe again.
    #[test]
    fn a_kept_sandbox_probe_is_used_and_a_refusal_is_not_kept() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("bwrap");
        let missing = missing.to_str().unwrap();
        let key = |boot: &str, settings: &[&str]| {
            let settings = settings.iter().map(|s| s.to_string()).collect();
            AnswerKey::with_boot_id(
                boot.into(),
                &probe_argv(missing).join(" "),
                missing,
                settings,
            )
        };
        let refused = probe_kept_in(root.path(), missing, Some(&key("b1", &[])));
        assert!(refused.unwrap_err().contains("not installed"));
        assert!(
            kept_answers::load(root.path(), &key("b1", &[])).is_none(),
            "not kept"
        );

        kept_answers::store(root.path(), &key("b1", &[]), PROBE_OK);
        assert_eq!(
            probe_kept_in(root.path(), missing, Some(&key("b1", &[]))),
            Ok(())
        );
        assert!(probe_kept_in(root.path(), missing, Some(&key("b2", &[]))).is_err());
        assert!(probe_kept_in(root.path(), missing, Some(&key("b1", &["max=0"]))).is_err());
        assert!(probe_key("bwrap").is_none_or(|k| k.extra.len() == USERNS_SETTINGS.len()));
    }
}
