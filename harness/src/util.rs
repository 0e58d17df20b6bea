//! Small helpers shared by several layers: hashing, atomic writes, bounded waits.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub(crate) mod digest_cache;
pub(crate) mod host_identity;
pub(crate) mod kept_answers;
pub mod signing;

/// Lowercase hex sha256 of a file's bytes, streamed so big disk images stay out of memory.
/// Inputs that may be large go through [`digest_cache::DigestCache`] instead.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_reader(&mut fs::File::open(path)?)
}

/// Lowercase hex sha256 of everything `reader` yields, read in 1 MiB chunks.
pub(crate) fn sha256_reader(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex sha256 of bytes.
pub(crate) fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new
/// one, never a prefix: write a temp file in the same folder, fsync, rename.
/// The last `lines` lines of a text file (empty when it cannot be read): log tails
/// quoted in error messages.
pub(crate) fn tail_lines(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A fresh folder in the temp dir that only its owner can enter (0700): VM folders
/// hold QMP sockets, which are a root shell on the VM, and guest disks. (tempfile
/// creates folders with the umask's mode, usually 0755.)
pub(crate) fn private_tempdir(prefix: &str) -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Outcome of [`wait_until`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited<T> {
    Done(T),
    TimedOut,
}

/// Polls `probe` every `interval` until it yields `Some`, or `timeout` passes. The one
/// place that sleeps in a loop, so every wait in the harness is bounded and named.
pub(crate) fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Waited<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Waited::Done(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Waited::TimedOut;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

/// 1-based line and column of a byte offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut index: usize) -> usize {
        while index > 0 && !self.is_char_boundary(index) {
            index -= 1;
        }
        index
    }
}

/// Where a TOML field `key` (optionally with the string `value`) is written in
/// `text`, searching from byte `from` up to the next table header: the offset of
/// the key, so an error about the field points at it rather than at its table.
/// None when it is not found that way (the caller falls back to the table).
pub(crate) fn field_offset(
    text: &str,
    from: usize,
    key: &str,
    value: Option<&str>,
) -> Option<usize> {
    let rest = text.get(from..)?;
    // The table's own header line comes first; the next header ends the search.
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| rest[i..].trim_start().starts_with('[') && i > 0)
        .unwrap_or(rest.len());
    let region = &rest[..end];
    region.match_indices(key).find_map(|(at, _)| {
        let before = region[..at].chars().next_back();
        if before.is_some_and(|c| !(c.is_whitespace() || c == '{' || c == ',')) {
            return None;
        }
        let after = region[at + key.len()..].trim_start();
        let after = after.strip_prefix('=')?.trim_start();
        match value {
            None => Some(from + at),
            Some(v) => {
                let quoted = after.strip_prefix(['"', '\''])?;
                quoted.starts_with(v).then_some(from + at)
            }
        }
    })
}

/// A source excerpt pointing at `line`:`column` (both 1-based), for error messages.
pub(crate) fn snippet(text: &str, line: usize, column: usize) -> String {
    let Some(content) = text.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    format!(
        "  {line:>4} | {content}\n       | {}^",
        " ".repeat(column.saturating_sub(1))
    )
}

/// Quotes one word for a POSIX shell: words of only safe characters stay as they
/// are (so commands stay readable), anything else goes in single quotes.
pub(crate) fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Joins an argv into one line a POSIX shell reads back as the same argv.
pub(crate) fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An exclusive advisory lock (flock) held until dropped: closing the file releases
/// it, and so does the kernel if the process dies, so a crashed holder never blocks
/// the next one.
pub(crate) struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// Waits for the lock on `path` (created if missing).
    pub(crate) fn acquire(path: &Path) -> io::Result<FileLock> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileLock { _file: file })
    }
}

/// Formats a duration for humans: "850 ms", "9.3 s", "2 m 05 s".
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} m {:02} s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// Locks `mutex` even if a thread panicked while holding it: a poisoned lock only
/// means that, and every critical section in bootgate leaves its data consistent
/// (results still count, teardown still runs).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bytes an unprivileged process may still write on the file system that holds
/// `dir` (its nearest existing ancestor, for a folder not made yet).
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent()?;
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we pass; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Finds `binary` (a name looked up in PATH, or a path).
pub(crate) fn find_in_path(binary: &str) -> Option<std::path::PathBuf> {
    if binary.contains('/') {
        let p = std::path::Path::new(binary);
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when `path` is relative and made only of plain names (no root, `.`, `..`
/// or prefix): joined to a folder, it stays below that folder (symlinks aside,
/// which bootgate's own run folders do not hold).
pub(crate) fn is_relative_below(path: &std::path::Path) -> bool {
    use std::path::Component;
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offset_finds_the_key_in_its_table() {
        let text = "[suite]\nimage = \"x\"\n[driver.a]\nreload = \"r\"\nsource = \"s\"\n[driver.b]\nsource = \"t\"\n";
        let a = text.find("[driver.a]").unwrap();
        assert_eq!(
            field_offset(text, a, "source", None),
            text.find("source = \"s\"")
        );
        let b = text.find("[driver.b]").unwrap();
        assert_eq!(
            field_offset(text, b, "source", None),
            text.find("source = \"t\"")
        );
        // Not in the table: the next header ends the search.
        assert_eq!(field_offset(text, 0, "source", None), None);
        let steps = "steps = [{ apply = { file = \"a\" } }, { apply = { file = 'b' } }]";
        assert_eq!(
            field_offset(steps, 0, "file", Some("b")),
            steps.find("file = 'b'")
        );
        assert_eq!(field_offset(steps, 0, "file", Some("c")), None);
        // A key that is the tail of another is not it.
        assert_eq!(field_offset("profile = 1", 0, "file", None), None);
    }

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 8), (2, 3));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn write_atomic_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file may be left behind");
    }

    #[test]
    fn wait_until_times_out_and_succeeds() {
        let r: Waited<()> =
            wait_until(Duration::from_millis(30), Duration::from_millis(5), || None);
        assert_eq!(r, Waited::TimedOut);
        let mut n = 0;
        let r = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(r, Waited::Done(3));
    }

    #[test]
    fn shell_quote_keeps_one_word() {
        // An `exec:` migration URI names its file through `/bin/sh -c`.
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn shell_join_quotes_what_needs_it() {
        let argv = ["bootgate", "rerun", "/r/a b", "it's", ""].map(String::from);
        assert_eq!(shell_join(&argv), "bootgate rerun '/r/a b' 'it'\\''s' ''");
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_plain_relative_paths_stay_below() {
        use std::path::Path;
        assert!(is_relative_below(Path::new("demo/cf291")));
        for bad in ["", "/etc", "../x", "demo/../../x", "./x", "demo/.."] {
            assert!(!is_relative_below(Path::new(bad)), "{bad}");
        }
    }
}
