//! A tool's answer kept for this host boot: `qemu-system-x86_64 --version`,
//! `qemu-img --version`, whether QEMU accepts `-sandbox`, whether the build sandbox
//! can be made. Each run asked them again (about 60 ms of a 0.4 s run from a saved
//! state). An answer is reused only under the exact key it was given under: the
//! question, the boot id, the user, the tool's file identity (device, inode, size,
//! mtime, ctime: an upgraded tool is a new file) and whatever else the caller names
//! (`extra`: a setting the answer depends on). Anything else differs: ask again.
//! Only answers the caller decides are definite are kept (see [`kept_or_ask`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::host_identity::{self, file_identity, resolve_binary};

/// The folder under the cache root; removing it clears every kept answer.
pub(crate) const FOLDER: &str = "probes";

/// Everything an answer depends on: two keys are equal only when all of it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AnswerKey {
    /// What was asked, with its arguments (e.g. `--version`).
    pub question: String,
    pub boot_id: String,
    pub uid: u32,
    /// The tool's [`file_identity`].
    pub tool: String,
    /// Further inputs of the answer (other files' identities, host settings).
    pub extra: Vec<String>,
}

/// One kept answer, with the key it was given under (checked again on reading).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeptAnswer {
    pub key: AnswerKey,
    pub answer: String,
}

impl AnswerKey {
    /// The key for asking `binary` (found on PATH if bare) `question` now. None when
    /// the boot id cannot be read: an answer that cannot be tied to this boot is not
    /// kept.
    pub(crate) fn now(question: &str, binary: &str, extra: Vec<String>) -> Option<AnswerKey> {
        let boot_id = host_identity::boot_id()?;
        Some(AnswerKey::with_boot_id(boot_id, question, binary, extra))
    }

    pub(crate) fn with_boot_id(
        boot_id: String,
        question: &str,
        binary: &str,
        extra: Vec<String>,
    ) -> AnswerKey {
        AnswerKey {
            question: question.to_string(),
            boot_id,
            uid: host_identity::uid(),
            tool: file_identity(&resolve_binary(binary)),
            extra,
        }
    }

    /// The file holding this key's answer under `root` (the cache root).
    pub(crate) fn file(&self, root: &Path) -> PathBuf {
        let text = serde_json::to_string(self).unwrap_or_default();
        root.join(FOLDER)
            .join(format!("{}.json", super::sha256_bytes(text.as_bytes())))
    }
}

/// The answer kept for `key`, if one is and its stored key is exactly `key`.
pub(crate) fn load(root: &Path, key: &AnswerKey) -> Option<String> {
    let bytes = std::fs::read(key.file(root)).ok()?;
    let kept: KeptAnswer = serde_json::from_slice(&bytes).ok()?;
    (kept.key == *key).then_some(kept.answer)
}

/// Keeps `answer` for `key` (written whole or not at all). A cache that cannot be
/// written only costs the next run the question.
pub(crate) fn store(root: &Path, key: &AnswerKey, answer: &str) {
    let kept = KeptAnswer {
        key: key.clone(),
        answer: answer.to_string(),
    };
    let path = key.file(root);
    if let (Some(dir), Ok(text)) = (path.parent(), serde_json::to_vec_pretty(&kept)) {
        let _ = std::fs::create_dir_all(dir);
        let _ = super::write_atomic(&path, &text);
        forget_other_boots(dir, &key.boot_id);
    }
}

/// Removes the answers of boots other than `boot_id`: no key of a later run can
/// match them. Only this user's files: a shared folder's others are left alone.
fn forget_other_boots(dir: &Path, boot_id: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let mine = entry
            .metadata()
            .is_ok_and(|m| m.uid() == host_identity::uid());
        let other_boot = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<KeptAnswer>(&b).ok())
            .is_some_and(|k| k.key.boot_id != boot_id);
        if mine && other_boot {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The kept answer for `key`, else `ask`'s, kept when it is `Ok`: callers return
/// `Err` for what must be asked again next time (a tool that could not be started, a
/// probe that timed out), so a passing trouble is never kept for the whole boot.
/// With no key (no boot id) it always asks.
pub(crate) fn kept_or_ask<E>(
    root: &Path,
    key: Option<&AnswerKey>,
    ask: impl FnOnce() -> Result<String, E>,
) -> Result<String, E> {
    if let Some(answer) = key.and_then(|k| load(root, k)) {
        return Ok(answer);
    }
    let answer = ask()?;
    if let Some(key) = key {
        store(root, key, &answer);
    }
    Ok(answer)
}

/// The answers kept for this boot and user, for `doctor`, ordered by tool and question.
pub(crate) fn kept_for_this_boot(root: &Path) -> Vec<KeptAnswer> {
    let Some(boot_id) = host_identity::boot_id() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(root.join(FOLDER)) else {
        return Vec::new();
    };
    let uid = host_identity::uid();
    let mut kept: Vec<KeptAnswer> = entries
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .filter(|k: &KeptAnswer| k.key.boot_id == boot_id && k.key.uid == uid)
        .collect();
    kept.sort_by(|a, b| (&a.key.tool, &a.key.question).cmp(&(&b.key.tool, &b.key.question)));
    kept
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn tool(dir: &Path) -> String {
        let path = dir.join("tool");
        std::fs::write(&path, b"v1").unwrap();
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn an_answer_is_asked_once_then_kept_for_the_same_key() {
        let root = tempfile::tempdir().unwrap();
        let tool = tool(root.path());
        let asked = Cell::new(0);
        let ask = || {
            asked.set(asked.get() + 1);
            Ok::<_, ()>(format!("answer {}", asked.get()))
        };
        let key = AnswerKey::with_boot_id("b1".into(), "--version", &tool, vec![]);
        assert_eq!(
            kept_or_ask(root.path(), Some(&key), ask).unwrap(),
            "answer 1"
        );
        let again = AnswerKey::with_boot_id("b1".into(), "--version", &tool, vec![]);
        assert_eq!(
            kept_or_ask(root.path(), Some(&again), ask).unwrap(),
            "answer 1"
        );
        assert_eq!(asked.get(), 1, "the second lookup did not ask");
        let other = AnswerKey::with_boot_id("b1".into(), "-sandbox", &tool, vec![]);
        assert_eq!(
            kept_or_ask(root.path(), Some(&other), ask).unwrap(),
            "answer 2"
        );
        let extra = AnswerKey::with_boot_id("b1".into(), "--version", &tool, vec!["x".into()]);
        assert_eq!(
            kept_or_ask(root.path(), Some(&extra), ask).unwrap(),
            "answer 3"
        );
        assert_eq!(kept_or_ask(root.path(), None, ask).unwrap(), "answer 4");
        assert_eq!(asked.get(), 4);
    }

    #[test]
    fn an_error_is_not_kept() {
        let root = tempfile::tempdir().unwrap();
        let tool = tool(root.path());
        let key = AnswerKey::with_boot_id("b1".into(), "probe", &tool, vec![]);
        assert!(kept_or_ask(root.path(), Some(&key), || Err::<String, _>("timed out")).is_err());
        assert!(load(root.path(), &key).is_none());
        assert_eq!(
            kept_or_ask(root.path(), Some(&key), || Ok::<_, ()>("ok".into())).unwrap(),
            "ok"
        );
    }

    #[test]
    fn keeping_an_answer_forgets_the_answers_of_other_boots() {
        let root = tempfile::tempdir().unwrap();
        let tool = tool(root.path());
        let old = AnswerKey::with_boot_id("b1".into(), "--version", &tool, vec![]);
        store(root.path(), &old, "7.2");
        let new = AnswerKey::with_boot_id("b2".into(), "--version", &tool, vec![]);
        store(root.path(), &new, "7.2");
        assert!(
            load(root.path(), &old).is_none(),
            "the old boot's answer is gone"
        );
        assert_eq!(load(root.path(), &new).as_deref(), Some("7.2"));
        let files = std::fs::read_dir(root.path().join(FOLDER)).unwrap().count();
        assert_eq!(files, 1);
    }

    #[test]
    fn a_file_under_the_wrong_name_is_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let a = AnswerKey::with_boot_id("a".into(), "q", "/nonexistent/tool", vec![]);
        let b = AnswerKey::with_boot_id("b".into(), "q", "/nonexistent/tool", vec![]);
        store(root.path(), &a, "yes");
        std::fs::rename(a.file(root.path()), b.file(root.path())).unwrap();
        assert!(load(root.path(), &b).is_none());
        std::fs::write(b.file(root.path()), b"{not json").unwrap();
        assert!(load(root.path(), &b).is_none());
    }
}
