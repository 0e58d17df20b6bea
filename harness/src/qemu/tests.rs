//! The kept tool answers, with the real QEMU binaries: a kept answer is what the
//! next lookup returns (planted to a value the tool never says, so it cannot have
//! been asked again), and a changed binary or a new boot asks the tool again.

use std::path::{Path, PathBuf};

use super::*;
use crate::util::kept_answers::{self, AnswerKey};
use crate::util::{wait_until, Waited};

/// How long a test waits for the file clock to tick (it ticks every few ms).
const CLOCK_TICK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const CLOCK_TICK_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// A copy of the real qemu-img in `dir`: a binary the test may change.
fn qemu_img_copy(dir: &Path) -> PathBuf {
    let real = find_in_path(DEFAULT_QEMU_IMG).expect("qemu-img installed");
    let copy = dir.join("qemu-img");
    std::fs::copy(real, &copy).unwrap();
    copy
}

#[test]
fn a_kept_version_is_used_until_the_binary_changes() {
    let root = tempfile::tempdir().unwrap();
    let img = qemu_img_copy(root.path());
    let img = img.to_str().unwrap();
    let key = |boot: &str| AnswerKey::with_boot_id(boot.into(), VERSION_QUESTION, img, vec![]);

    let real = version_kept_in(root.path(), img, Some(&key("boot-1"))).unwrap();
    assert!(real.starts_with("qemu-img version"), "{real}");
    kept_answers::store(root.path(), &key("boot-1"), "planted version");
    assert_eq!(
        version_kept_in(root.path(), img, Some(&key("boot-1"))).unwrap(),
        "planted version",
        "the kept answer, not the tool's"
    );

    assert_eq!(
        version_kept_in(root.path(), img, Some(&key("boot-2"))).unwrap(),
        real,
        "a new boot asks again"
    );

    // The same bytes written again with the old mtime put back: the ctime moved, so
    // the binary is a new one to the key (an upgrade in place looks like this).
    // utimensat is repeated until the file clock has ticked past the old ctime (a
    // bounded wait for the tick on a coarse clock, not a guessed sleep).
    let before = key("boot-1");
    let mtime = std::fs::metadata(img).unwrap().modified().unwrap();
    let bytes = std::fs::read(img).unwrap();
    std::fs::write(img, &bytes).unwrap();
    let moved = wait_until(CLOCK_TICK_WAIT, CLOCK_TICK_POLL, || {
        std::fs::File::options()
            .write(true)
            .open(img)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        (key("boot-1") != before).then_some(())
    });
    assert_eq!(moved, Waited::Done(()), "the file clock never ticked");
    assert_eq!(std::fs::metadata(img).unwrap().modified().unwrap(), mtime);
    assert_eq!(
        version_kept_in(root.path(), img, Some(&key("boot-1"))).unwrap(),
        real,
        "a changed binary asks again"
    );
}

#[test]
fn a_kept_sandbox_verdict_is_used_for_the_same_binary_and_boot() {
    let root = tempfile::tempdir().unwrap();
    let qemu = find_in_path(DEFAULT_QEMU).expect("QEMU installed");
    let qemu = qemu.to_str().unwrap();
    let key = |boot: &str| AnswerKey::with_boot_id(boot.into(), &sandbox_question(), qemu, vec![]);
    let real = sandbox_kept_in(root.path(), qemu, Some(&key("boot-1")));
    assert_eq!(real, sandbox_supported(qemu), "the first lookup asks QEMU");
    let planted = if real { SANDBOX_NO } else { SANDBOX_YES };
    kept_answers::store(root.path(), &key("boot-1"), planted);
    assert_eq!(
        sandbox_kept_in(root.path(), qemu, Some(&key("boot-1"))),
        !real,
        "kept"
    );
    assert_eq!(
        sandbox_kept_in(root.path(), qemu, Some(&key("boot-2"))),
        real,
        "new boot"
    );
    assert!(!sandbox_kept_in(root.path(), "/nonexistent/qemu", None));
}
