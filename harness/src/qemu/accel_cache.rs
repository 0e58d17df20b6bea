//! The accelerator verdict, kept between runs: on a host where KVM hangs, every
//! `--accel auto` run paid the 6 s probe again. A verdict is reused only while what
//! decided it is unchanged: the host's boot (its boot id: a reboot may fix or break
//! KVM), the user (access to `/dev/kvm` is a group matter), `/dev/kvm` itself, the
//! QEMU binary and the probe's kernel, each file by device, inode, size, mtime and
//! ctime in nanoseconds (an upgraded QEMU is a new file). Anything else differs: the
//! probe runs again. `--accel kvm|tcg` never reads or writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::accel::{Accel, AccelDecision};
use crate::util::host_identity;

/// The folder under the cache root; removing it clears every kept verdict.
pub(crate) const FOLDER: &str = "accel";

/// Everything a verdict depends on, as text: two keys are equal only when all of it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProbeKey {
    pub boot_id: String,
    pub uid: u32,
    pub kvm_device: String,
    pub qemu: String,
    pub kernel: Option<String>,
}

/// One kept verdict, with the key it was made under (checked again on reading).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeptVerdict {
    pub key: ProbeKey,
    pub accel: Accel,
    pub notice: Option<String>,
}

/// A file's identity (see [`host_identity::file_identity`]).
fn identity(path: &Path) -> String {
    host_identity::file_identity(path)
}

/// The path an identity names (what `doctor` shows of a kept key).
pub(crate) fn identity_path(identity: &str) -> &str {
    host_identity::identity_path(identity)
}

impl ProbeKey {
    /// The key for probing with `binary` (found on PATH if bare) and `kernel` now.
    /// None when the boot id cannot be read: without it a verdict cannot be tied to
    /// this boot, so none is kept.
    pub(crate) fn now(binary: &str, kernel: Option<&Path>) -> Option<ProbeKey> {
        let boot_id = host_identity::boot_id()?;
        Some(ProbeKey::with_boot_id(boot_id, binary, kernel))
    }

    pub(crate) fn with_boot_id(boot_id: String, binary: &str, kernel: Option<&Path>) -> ProbeKey {
        ProbeKey {
            boot_id,
            uid: host_identity::uid(),
            kvm_device: identity(Path::new("/dev/kvm")),
            qemu: identity(&host_identity::resolve_binary(binary)),
            kernel: kernel.map(identity),
        }
    }

    /// The file holding this key's verdict under `root` (the cache root).
    fn file(&self, root: &Path) -> PathBuf {
        let text = serde_json::to_string(self).unwrap_or_default();
        root.join(FOLDER).join(format!(
            "{}.json",
            crate::util::sha256_bytes(text.as_bytes())
        ))
    }
}

/// The verdict kept for `key`, if one is and its stored key is exactly `key`.
pub(crate) fn load(root: &Path, key: &ProbeKey) -> Option<AccelDecision> {
    let bytes = std::fs::read(key.file(root)).ok()?;
    let kept: KeptVerdict = serde_json::from_slice(&bytes).ok()?;
    (kept.key == *key).then_some(AccelDecision {
        accel: kept.accel,
        notice: kept.notice,
    })
}

/// Keeps `decision` for `key` (written whole or not at all). A cache that cannot be
/// written only costs the next run a probe.
pub(crate) fn store(root: &Path, key: &ProbeKey, decision: &AccelDecision) {
    let kept = KeptVerdict {
        key: key.clone(),
        accel: decision.accel,
        notice: decision.notice.clone(),
    };
    let path = key.file(root);
    if let (Some(dir), Ok(text)) = (path.parent(), serde_json::to_vec_pretty(&kept)) {
        let _ = std::fs::create_dir_all(dir);
        let _ = crate::util::write_atomic(&path, &text);
    }
}

/// The verdicts kept for this boot, for `doctor` (any QEMU, any kernel).
pub(crate) fn kept_for_this_boot(root: &Path) -> Vec<KeptVerdict> {
    let Some(boot_id) = host_identity::boot_id() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(root.join(FOLDER)) else {
        return Vec::new();
    };
    let mut kept: Vec<KeptVerdict> = entries
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .filter(|k: &KeptVerdict| k.key.boot_id == boot_id)
        .collect();
    kept.sort_by(|a, b| a.key.qemu.cmp(&b.key.qemu));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(accel: Accel, notice: Option<&str>) -> AccelDecision {
        AccelDecision {
            accel,
            notice: notice.map(String::from),
        }
    }

    #[test]
    fn a_kept_verdict_is_used_for_the_same_key() {
        let root = tempfile::tempdir().unwrap();
        let qemu = root.path().join("qemu-system-x86_64");
        std::fs::write(&qemu, b"qemu 7.2").unwrap();
        let key = ProbeKey::with_boot_id("boot-1".into(), qemu.to_str().unwrap(), None);
        assert!(load(root.path(), &key).is_none(), "nothing kept yet");
        store(
            root.path(),
            &key,
            &decision(Accel::Tcg, Some("KVM unusable (x)")),
        );
        let again = ProbeKey::with_boot_id("boot-1".into(), qemu.to_str().unwrap(), None);
        let got = load(root.path(), &again).expect("kept");
        assert_eq!(got.accel, Accel::Tcg);
        assert_eq!(got.notice.as_deref(), Some("KVM unusable (x)"));
    }

    #[test]
    fn a_new_boot_id_is_a_new_probe() {
        let root = tempfile::tempdir().unwrap();
        let qemu = root.path().join("qemu");
        std::fs::write(&qemu, b"q").unwrap();
        let key = ProbeKey::with_boot_id("boot-1".into(), qemu.to_str().unwrap(), None);
        store(root.path(), &key, &decision(Accel::Kvm, None));
        let rebooted = ProbeKey::with_boot_id("boot-2".into(), qemu.to_str().unwrap(), None);
        assert!(load(root.path(), &rebooted).is_none());
    }

    /// An upgraded QEMU (a new file), or one rewritten in place at the same size with
    /// its old mtime put back, is a new key: its ctime (and inode) moved.
    #[test]
    fn a_changed_qemu_or_kernel_is_a_new_probe() {
        let root = tempfile::tempdir().unwrap();
        let qemu = root.path().join("qemu");
        let kernel = root.path().join("vmlinuz");
        std::fs::write(&qemu, b"qemu-7.2").unwrap();
        std::fs::write(&kernel, b"k1").unwrap();
        let key = |k: Option<&Path>| ProbeKey::with_boot_id("b".into(), qemu.to_str().unwrap(), k);
        store(
            root.path(),
            &key(Some(&kernel)),
            &decision(Accel::Tcg, None),
        );
        assert!(load(root.path(), &key(Some(&kernel))).is_some());
        assert!(
            load(root.path(), &key(None)).is_none(),
            "another probe kernel"
        );
        let old_mtime = std::fs::metadata(&qemu).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&qemu, b"qemu-8.0").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&qemu)
            .unwrap()
            .set_modified(old_mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&qemu).unwrap().len(), 8, "same size");
        assert!(load(root.path(), &key(Some(&kernel))).is_none());
        std::fs::write(&kernel, b"k2").unwrap();
        store(
            root.path(),
            &key(Some(&kernel)),
            &decision(Accel::Tcg, None),
        );
        assert!(load(root.path(), &key(Some(&kernel))).is_some());
    }

    /// A verdict file whose stored key differs from the one asked for (a hash
    /// collision, or a hand-edited file) is not used.
    #[test]
    fn a_file_under_the_wrong_name_is_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let a = ProbeKey::with_boot_id("a".into(), "/nonexistent/qemu", None);
        let b = ProbeKey::with_boot_id("b".into(), "/nonexistent/qemu", None);
        store(root.path(), &a, &decision(Accel::Kvm, None));
        std::fs::rename(a.file(root.path()), b.file(root.path())).unwrap();
        assert!(load(root.path(), &b).is_none());
        std::fs::write(b.file(root.path()), b"{not json").unwrap();
        assert!(load(root.path(), &b).is_none());
    }
}
