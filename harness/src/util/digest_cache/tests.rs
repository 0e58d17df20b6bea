use std::time::Duration;

use super::*;
use crate::util::{sha256_bytes, wait_until, Waited};

/// How long a test waits for the file clock to tick (it ticks every few ms).
const CLOCK_TICK_WAIT: Duration = Duration::from_secs(5);
const CLOCK_TICK_POLL: Duration = Duration::from_millis(1);

/// A cache that trusts an entry as soon as the file's ctime is older than the
/// hashing at all: lets a test prove an entry is used without waiting out
/// [`RACY_WINDOW`].
fn eager(root: &Path) -> DigestCache {
    DigestCache {
        dir: root.join(FOLDER),
        racy_window: Duration::ZERO,
    }
}

fn entry_file(cache: &DigestCache, path: &Path) -> PathBuf {
    cache.entry_file(&std::path::absolute(path).unwrap())
}

/// Replaces the kept digest of `path` by a value no file hashes to, so a lookup
/// that returns it provably came from the cache.
fn plant(cache: &DigestCache, path: &Path) {
    let file = entry_file(cache, path);
    let mut entry: Entry = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    entry.sha256 = "planted".into();
    fs::write(&file, serde_json::to_vec(&entry).unwrap()).unwrap();
}

fn ctime_ns(path: &Path) -> i128 {
    Stamp::of(&fs::metadata(path).unwrap()).ctime_ns
}

#[test]
fn a_kept_digest_is_used_while_the_file_is_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let cache = eager(root.path());
    let disk = root.path().join("disk.img");
    fs::write(&disk, b"content A").unwrap();
    assert_eq!(cache.sha256(&disk).unwrap(), sha256_bytes(b"content A"));
    plant(&cache, &disk);
    assert_eq!(cache.sha256(&disk).unwrap(), "planted", "the kept entry");
}

/// The case a size+mtime cache gets wrong: the content changes in place at the same
/// size and the old mtime is put back (utimensat). The ctime moved, so the entry is
/// not used and the new content's digest comes back.
#[test]
fn a_digest_is_not_used_after_an_in_place_change_with_the_old_mtime_put_back() {
    let root = tempfile::tempdir().unwrap();
    let cache = eager(root.path());
    let disk = root.path().join("disk.img");
    fs::write(&disk, b"content A").unwrap();
    let before = fs::metadata(&disk).unwrap();
    cache.sha256(&disk).unwrap();
    plant(&cache, &disk);
    assert_eq!(cache.sha256(&disk).unwrap(), "planted");

    {
        use std::io::{Seek, Write};
        let mut file = File::options().write(true).open(&disk).unwrap();
        file.seek(io::SeekFrom::Start(8)).unwrap();
        file.write_all(b"B").unwrap();
    }
    let old_mtime = before.modified().unwrap();
    // Every utimensat sets the ctime to now: on a kernel whose file clock is coarse,
    // the first may land in the tick of the original write, so set it again until
    // the clock has moved (a bounded wait for the tick, not a guessed sleep).
    let moved = wait_until(CLOCK_TICK_WAIT, CLOCK_TICK_POLL, || {
        File::options()
            .write(true)
            .open(&disk)
            .unwrap()
            .set_modified(old_mtime)
            .unwrap();
        (ctime_ns(&disk) != Stamp::of(&before).ctime_ns).then_some(())
    });
    assert_eq!(moved, Waited::Done(()), "the file clock never ticked");
    let after = fs::metadata(&disk).unwrap();
    assert_eq!(after.len(), before.len(), "same size");
    assert_eq!(after.modified().unwrap(), old_mtime, "old mtime put back");
    assert_eq!(after.ino(), before.ino(), "changed in place");

    assert_eq!(cache.sha256(&disk).unwrap(), sha256_bytes(b"content B"));
}

/// The racy case: with the real window, a file whose ctime is within
/// [`RACY_WINDOW`] of its hashing is hashed again, even though its stamp matches:
/// a write in the same clock tick as the hashing would leave that stamp unchanged.
#[test]
fn a_file_changed_just_before_its_hashing_is_hashed_again() {
    let root = tempfile::tempdir().unwrap();
    let cache = DigestCache::under(root.path());
    let disk = root.path().join("disk.img");
    fs::write(&disk, b"content A").unwrap();
    assert_eq!(cache.sha256(&disk).unwrap(), sha256_bytes(b"content A"));
    plant(&cache, &disk);
    assert_eq!(
        cache.sha256(&disk).unwrap(),
        sha256_bytes(b"content A"),
        "an entry hashed within the window of the file's ctime is not trusted"
    );
    // The same entry, had its hashing begun RACY_WINDOW after the file's last
    // change, is trusted: the window is the only thing that refused it.
    let file = entry_file(&cache, &disk);
    let mut entry: Entry = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    let window = i128::try_from(RACY_WINDOW.as_nanos()).unwrap();
    entry.hashed_at_ns = entry.stamp.ctime_ns + window + 1;
    entry.sha256 = "planted".into();
    fs::write(&file, serde_json::to_vec(&entry).unwrap()).unwrap();
    assert_eq!(cache.sha256(&disk).unwrap(), "planted");
}

#[test]
fn a_replaced_file_or_an_entry_for_another_path_is_hashed_again() {
    let root = tempfile::tempdir().unwrap();
    let cache = eager(root.path());
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    fs::write(&a, b"aaaa").unwrap();
    fs::write(&b, b"bbbb").unwrap();
    cache.sha256(&a).unwrap();
    plant(&cache, &a);
    // A new file under the same name (a new inode), as an image rebuild makes.
    let staged = root.path().join("a.new");
    fs::write(&staged, b"cccc").unwrap();
    fs::rename(&staged, &a).unwrap();
    assert_eq!(cache.sha256(&a).unwrap(), sha256_bytes(b"cccc"));
    // An entry made for another path is not trusted for this one.
    cache.sha256(&b).unwrap();
    plant(&cache, &b);
    fs::copy(entry_file(&cache, &b), entry_file(&cache, &a)).unwrap();
    assert_eq!(cache.sha256(&a).unwrap(), sha256_bytes(b"cccc"));
    assert!(cache.sha256(&root.path().join("missing")).is_err());
}

/// A shared cache folder cannot plant digests: an entry file owned by another user
/// is not used. (Making one needs root, as CI and this project's machines run; as
/// another user the test checks only that this user's own entry is used.)
#[test]
fn an_entry_of_another_user_is_not_used() {
    let root = tempfile::tempdir().unwrap();
    let cache = eager(root.path());
    let disk = root.path().join("disk.img");
    fs::write(&disk, b"content A").unwrap();
    cache.sha256(&disk).unwrap();
    plant(&cache, &disk);
    assert_eq!(
        cache.sha256(&disk).unwrap(),
        "planted",
        "this user's own entry"
    );
    if crate::util::host_identity::uid() == 0 {
        let file = entry_file(&cache, &disk);
        std::os::unix::fs::chown(&file, Some(12345), None).unwrap();
        assert_eq!(cache.sha256(&disk).unwrap(), sha256_bytes(b"content A"));
    }
}

/// The folder stays bounded: past the limit, entries of files that are gone go
/// first, then the oldest, down to half; a kept file's entry is still used after.
#[test]
fn entries_of_gone_files_are_pruned_past_the_limit() {
    let root = tempfile::tempdir().unwrap();
    let cache = eager(root.path());
    let files: Vec<PathBuf> = (0..6)
        .map(|i| {
            let file = root.path().join(format!("f{i}"));
            fs::write(&file, format!("{i}")).unwrap();
            cache.sha256(&file).unwrap();
            file
        })
        .collect();
    let count = || fs::read_dir(root.path().join(FOLDER)).unwrap().count();
    assert_eq!(count(), 6);
    for gone in &files[..3] {
        fs::remove_file(gone).unwrap();
    }
    cache.prune(4);
    assert_eq!(count(), 3, "the three gone files' entries went");
    plant(&cache, &files[5]);
    assert_eq!(cache.sha256(&files[5]).unwrap(), "planted");
    cache.prune(2);
    assert_eq!(count(), 1, "then the oldest, down to half the limit");
}
