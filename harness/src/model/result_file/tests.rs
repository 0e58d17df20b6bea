use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;
use crate::model::record::{FileHash, Verdict};
use crate::testing::records;

/// A run folder with one real result file, and a secret beside it (outside).
fn folder() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("s/a")).unwrap();
    std::fs::write(run.join("s/a/console.log"), "boot\n").unwrap();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET").unwrap();
    (tmp, run, secret)
}

#[test]
fn open_reads_a_plain_file_below_the_folder() {
    let (_tmp, run, _) = folder();
    let text = read_to_string(&run, Path::new("s/a/console.log")).unwrap();
    assert_eq!(text, "boot\n");
    assert_eq!(
        sha256(&run, Path::new("s/a/console.log")).unwrap(),
        crate::util::sha256_file(&run.join("s/a/console.log")).unwrap()
    );
}

#[test]
fn open_follows_the_folder_the_user_named() {
    // `results/latest` is a link the user names: that one is theirs to follow.
    let (tmp, run, _) = folder();
    let latest = tmp.path().join("latest");
    symlink(&run, &latest).unwrap();
    assert!(read_to_string(&latest, Path::new("s/a/console.log")).is_ok());
}

#[test]
fn open_refuses_a_file_that_is_a_symlink() {
    let (_tmp, run, secret) = folder();
    std::fs::remove_file(run.join("s/a/console.log")).unwrap();
    symlink(&secret, run.join("s/a/console.log")).unwrap();
    let err = read_to_string(&run, Path::new("s/a/console.log")).unwrap_err();
    assert!(matches!(err, ResultFileError::Symlink { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("console.log") && text.contains("symlink"),
        "{text}"
    );
    assert!(!text.contains("TOP-SECRET"));
    assert!(sha256(&run, Path::new("s/a/console.log")).is_err());
}

#[test]
fn open_refuses_a_symlinked_folder_on_the_way() {
    let (tmp, run, _) = folder();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("console.log"), "TOP-SECRET").unwrap();
    symlink(&elsewhere, run.join("s/b")).unwrap();
    let err = read_to_string(&run, Path::new("s/b/console.log")).unwrap_err();
    assert!(matches!(err, ResultFileError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("s/b"), "{err}");
}

#[test]
fn open_refuses_paths_that_leave_the_folder() {
    let (_tmp, run, _) = folder();
    for bad in [
        "../secret.txt",
        "/etc/passwd",
        "s/../../secret.txt",
        "./s/a/console.log",
        "",
    ] {
        let err = read_to_string(&run, Path::new(bad)).unwrap_err();
        assert!(
            matches!(err, ResultFileError::Outside { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn open_refuses_folders_and_fifos() {
    let (_tmp, run, _) = folder();
    let err = read_to_string(&run, Path::new("s/a")).unwrap_err();
    assert!(matches!(err, ResultFileError::NotRegular { .. }), "{err}");
    let fifo = CString::new(run.join("s/a/pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    // Opening it must not block waiting for a writer.
    let err = read_to_string(&run, Path::new("s/a/pipe")).unwrap_err();
    assert!(matches!(err, ResultFileError::NotRegular { .. }), "{err}");
}

#[test]
fn a_missing_file_is_told_apart() {
    let (_tmp, run, _) = folder();
    let err = read_to_string(&run, Path::new("s/a/none.log")).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let (_tmp, run, secret) = folder();
    symlink(&secret, run.join("link")).unwrap();
    assert!(!read_to_string(&run, Path::new("link"))
        .unwrap_err()
        .is_not_found());
}

#[test]
fn record_paths_outside_the_folder_are_named_by_file_and_field() {
    let mut sc = records::scenario("s", "a", Verdict::Fail);
    sc.dir = "s/a".into();
    sc.artifacts = vec![FileHash {
        path: "../../etc/passwd".into(),
        sha256: String::new(),
    }];
    let mut crash = records::crash(1, "BUG");
    crash.screenshot = Some("/etc/shadow".into());
    crash.console = Some("console.log".into());
    sc.crashes = vec![crash];
    let run = records::run(vec![sc]);
    let file = Path::new("/r/run.json");
    let errors: Vec<String> = unsafe_record_paths(&run, file)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("/r/run.json")
            && errors[0].contains("scenarios[0].artifacts[0].path")
            && errors[0].contains("../../etc/passwd"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("scenarios[0].crashes[0].screenshot"),
        "{errors:?}"
    );
    assert!(check_record_paths(&run, file).is_err());
}

#[test]
fn a_record_of_plain_paths_passes() {
    let mut sc = records::scenario("s", "a", Verdict::Pass);
    sc.dir = "s/a".into();
    let run = records::run(vec![sc]);
    assert!(check_record_paths(&run, Path::new("run.json")).is_ok());
}
