//! sha256 of input files, kept between runs the way git's index keeps file stats: a
//! Windows system disk is 20-60 GiB, minutes of hashing at every run otherwise. A
//! kept digest is evidence in run.json and manifest.json, so it is reused only when
//! nothing a user can do without changing the file differs: device, inode, size,
//! mtime and ctime in nanoseconds (ctime moves at every write and every utimensat,
//! and no user can set it back). Anything else: hash afresh.
//!
//! The "racy git" case: a file rewritten within the timestamp granularity of its
//! hashing keeps the ctime the entry recorded. So an entry is trusted only when the
//! file's ctime is older than the moment hashing began by more than
//! [`RACY_WINDOW`]; a file changed more recently is hashed again (and trusted from
//! the next run on, once its ctime is old enough).
//!
//! One entry file per input path under `<cache>/digests/`, written atomically; an
//! entry file not owned by this user is ignored (a shared cache folder cannot plant
//! digests).

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The folder under the cache root; removing it only costs the next run its hashing.
pub(crate) const FOLDER: &str = "digests";
/// How much older than the hashing a file's ctime must be for its entry to be
/// trusted: file times come from a coarse clock (a tick of up to 10 ms behind) and
/// some file systems keep whole or even seconds (FAT: 2 s), so a write just after
/// the hashing can leave the recorded times unchanged.
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Entries kept at most: every path ever hashed gets one (test suites in temp
/// folders, too), so past this the entries of files that are gone are dropped, then
/// the least recently written, down to half.
const MAX_ENTRIES: usize = 4096;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One kept digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    stamp: Stamp,
    /// When the hashing that produced `sha256` began (ns since the epoch).
    hashed_at_ns: i128,
    sha256: String,
}

/// Input digests kept under a cache root.
#[derive(Debug, Clone)]
pub(crate) struct DigestCache {
    dir: PathBuf,
    racy_window: Duration,
}

impl DigestCache {
    /// The digest cache under `cache_root` (`crate::cache::cache_root()`).
    pub(crate) fn under(cache_root: &Path) -> DigestCache {
        DigestCache {
            dir: cache_root.join(FOLDER),
            racy_window: RACY_WINDOW,
        }
    }

    /// The sha256 of `path`'s bytes: the kept one when the file's stamp is exactly
    /// the one it was hashed under and old enough to trust, else hashed now (and
    /// kept when the file did not change while being read).
    pub(crate) fn sha256(&self, path: &Path) -> io::Result<String> {
        let absolute = std::path::absolute(path)?;
        let entry_file = self.entry_file(&absolute);
        let now = fs::metadata(&absolute)?;
        if let Some(kept) = self.trusted(&entry_file, &absolute, &Stamp::of(&now)) {
            return Ok(kept);
        }
        let hashed_at = SystemTime::now();
        let mut file = File::open(&absolute)?;
        let before = Stamp::of(&file.metadata()?);
        let sha256 = super::sha256_reader(&mut file)?;
        let after = Stamp::of(&file.metadata()?);
        if before == after {
            self.keep(
                &entry_file,
                &Entry {
                    path: absolute,
                    stamp: after,
                    hashed_at_ns: nanos(hashed_at),
                    sha256: sha256.clone(),
                },
            );
        }
        Ok(sha256)
    }

    fn entry_file(&self, absolute: &Path) -> PathBuf {
        let name = super::sha256_bytes(absolute.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{name}.json"))
    }

    /// The kept digest, when the entry is this user's, names this path, has exactly
    /// this stamp and was hashed well after the file last changed.
    fn trusted(&self, entry_file: &Path, path: &Path, stamp: &Stamp) -> Option<String> {
        let file = File::open(entry_file).ok()?;
        if file.metadata().ok()?.uid() != super::host_identity::uid() {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(1 << 16).read_to_end(&mut bytes).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        let window = i128::try_from(self.racy_window.as_nanos()).ok()?;
        (entry.path == path
            && entry.stamp == *stamp
            && entry.stamp.ctime_ns + window < entry.hashed_at_ns)
            .then_some(entry.sha256)
    }

    /// Writes an entry whole or not at all; a cache that cannot be written only costs
    /// the next run its hashing.
    fn keep(&self, entry_file: &Path, entry: &Entry) {
        let new = !entry_file.exists();
        if let Ok(text) = serde_json::to_vec(entry) {
            let _ = fs::create_dir_all(&self.dir);
            let _ = super::write_atomic(entry_file, &text);
        }
        if new {
            self.prune(MAX_ENTRIES);
        }
    }

    /// Keeps the folder at most `max` entries (see [`MAX_ENTRIES`]). Removing an
    /// entry only costs its file a hashing.
    fn prune(&self, max: usize) {
        let Ok(listing) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = listing.flatten().map(|e| e.path()).collect();
        if entries.len() <= max {
            return;
        }
        entries.retain(|file| {
            let path = fs::read(file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                .map(|e| e.path);
            let gone = path.is_none_or(|p| !p.exists());
            if gone {
                let _ = fs::remove_file(file);
            }
            !gone
        });
        if entries.len() > max {
            entries.sort_by_key(|f| fs::metadata(f).and_then(|m| m.modified()).ok());
            for file in &entries[..entries.len() - max / 2] {
                let _ = fs::remove_file(file);
            }
        }
    }
}

fn nanos(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

#[cfg(test)]
mod tests;
