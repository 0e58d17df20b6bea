//! A hostile results folder (issue 15): a reviewer runs `show`, `verify`, `report`,
//! `rerun` and `merge` through the real binary on a vendor's folder, which is
//! untrusted input.
//!
//! The folder is genuine: one short real run (TCG, the demo image, a few seconds
//! from its saved state) of a one-scenario suite whose guest prints HTML and fails,
//! made once per test process. Each test copies it into a temp dir of its own and
//! makes the copy hostile by hand: run.json edited (HTML and escapes in names and
//! titles, `../` paths, a permission), console.log replaced by a link to a secret
//! planted outside the folder, a linked folder. Every test then checks that the
//! secret reaches no output and no written file, and that nothing outside the run
//! folder (and `--out`) changed.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::common::*;

/// What the planted host file holds: it must never show up anywhere.
const SECRET: &str = "bootgate-test-secret-5f3a9c1e";
const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=alert(1)>";
/// Clears the screen and retitles the terminal window.
const ANSI: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}";
const SCENARIO: &str = "vendor/hostile";

const SUITE: &str = r#"[suite]
name = "vendor"
image = "demo"

[[scenario]]
name = "hostile"
steps = [
  { boot = {} },
  { exec = { run = "printf '%s\n' '<script>alert(1)</script>' '\"><img src=x onerror=alert(1)>' | tee /dev/console; exit 1" } },
]
"#;

/// The genuine run folder, made once; its suite stays where run.json names it.
fn genuine() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        demo_manifest();
        // Kept for the whole process (the copies' run.json names its suite), in
        // cargo's scratch folder for integration tests rather than /tmp.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let suite = write(&dir, "suite.toml", SUITE);
        let out = dir.join("results");
        let output = run_tcg(&suite, &out, &[]);
        assert_eq!(output.status.code(), Some(1), "the scenario fails");
        let run_dir = std::fs::canonicalize(out.join("latest")).unwrap();
        assert!(run_dir.join("vendor/hostile/console.log").is_file());
        run_dir
    })
}

/// A copy of the genuine folder in a fresh temp dir, with a secret planted beside
/// it (outside), and the paths a test needs.
struct Vendor {
    tmp: tempfile::TempDir,
    run_dir: PathBuf,
    secret: PathBuf,
}

impl Vendor {
    fn new() -> Vendor {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("vendor-run");
        copy_tree(genuine(), &run_dir);
        let secret = write(tmp.path(), "secret.txt", &format!("{SECRET}\n"));
        Vendor {
            tmp,
            run_dir,
            secret,
        }
    }

    fn dir(&self) -> &str {
        self.run_dir.to_str().unwrap()
    }

    fn record(&self) -> Value {
        let text = std::fs::read_to_string(self.run_dir.join("run.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn set_record(&self, record: &Value) {
        let text = serde_json::to_string_pretty(record).unwrap();
        std::fs::write(self.run_dir.join("run.json"), text).unwrap();
    }

    fn edit_record(&self, edit: impl FnOnce(&mut Value)) {
        let mut record = self.record();
        edit(&mut record);
        self.set_record(&record);
    }

    /// HTML and terminal escapes in every text a reviewer reads: scenario name,
    /// reason, crash title and excerpt, driver names, the run's id.
    fn plant_hostile_text(&self) {
        let hostile = format!("{SCRIPT}{IMG}{ANSI}");
        self.edit_record(|r| {
            r["run_id"] = json!(format!("run{ANSI}"));
            let sc = &mut r["scenarios"][0];
            sc["name"] = json!(format!("{SCENARIO}{hostile}"));
            sc["reason"] = json!(format!("failed {hostile}"));
            sc["boots"][0]["drivers"] = json!({ "loaded": [hostile.clone()] });
            sc["crashes"] = json!([{
                "title": format!("BUG: {hostile}\nPASS  forged/line"),
                "kind": "BUG",
                "source": "console",
                "signals": ["console"],
                "boot_index": 1,
                "excerpt": [hostile.clone(), format!("{ANSI}[   1.0] end")],
                "detect_ms": 1,
                "console": "console.log",
            }]);
        });
    }

    /// console.log becomes a link to the secret; a folder in the scenario's folder
    /// links to a host folder holding the secret too.
    fn plant_links(&self) {
        let console = self.run_dir.join("vendor/hostile/console.log");
        std::fs::remove_file(&console).unwrap();
        symlink(&self.secret, &console).unwrap();
        let outside = self.tmp.path().join("outside-folder");
        std::fs::create_dir_all(&outside).unwrap();
        write(&outside, "loot.log", SECRET);
        symlink(&outside, self.run_dir.join("vendor/hostile/linked")).unwrap();
    }

    /// Every entry below the temp dir but `except` (the run folder, --out): files by
    /// size and mtime, links by target. None may appear, go or change.
    fn outside_listing(&self, except: &[&Path]) -> BTreeMap<PathBuf, String> {
        let mut listing = BTreeMap::new();
        for entry in walkdir::WalkDir::new(self.tmp.path()).follow_links(false) {
            let entry = entry.unwrap();
            if except.iter().any(|e| entry.path().starts_with(e)) {
                continue;
            }
            let meta = entry.path().symlink_metadata().unwrap();
            // A folder's own mtime moves when an excepted child (--out) is made.
            let what = if meta.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(entry.path()).unwrap())
            } else if meta.is_dir() {
                "folder".to_string()
            } else {
                format!("{} {:?}", meta.len(), meta.modified().unwrap())
            };
            listing.insert(entry.path().to_path_buf(), what);
        }
        listing
    }

    /// Runs `args` and checks what every command here must hold: the secret in no
    /// output, nothing outside `except` (the run folder plus any --out) changed.
    fn run_checked(&self, args: &[&str], out: Option<&Path>) -> Output {
        let mut except = vec![self.run_dir.as_path()];
        except.extend(out);
        let before = self.outside_listing(&except);
        let output = run(args);
        assert_no_secret(&output, args);
        assert_eq!(
            before,
            self.outside_listing(&except),
            "bootgate {args:?} changed files outside the run folder and --out"
        );
        output
    }

    /// No regular file the commands may have written holds the secret.
    fn assert_no_secret_written(&self, out: Option<&Path>) {
        let roots = [Some(self.run_dir.as_path()), out];
        for root in roots.into_iter().flatten().filter(|r| r.exists()) {
            for entry in walkdir::WalkDir::new(root).follow_links(false) {
                let entry = entry.unwrap();
                if entry.file_type().is_file() {
                    let bytes = std::fs::read(entry.path()).unwrap();
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains(SECRET),
                        "{} holds the secret",
                        entry.path().display()
                    );
                }
            }
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dst = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else {
            std::fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_no_secret(output: &Output, args: &[&str]) {
    for text in [stdout(output), stderr(output)] {
        assert!(
            !text.contains(SECRET),
            "bootgate {args:?} printed the secret"
        );
    }
}

/// No escape or other control byte but line breaks reaches the terminal.
fn assert_terminal_clean(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reached the terminal: {text:?}"
    );
}

/// `show` of a folder with hostile text and planted links: it prints, with every
/// escape made inert and no forged line, and reads no link.
#[test]
fn show_strips_escapes_and_follows_no_link() {
    let v = Vendor::new();
    v.plant_hostile_text();
    v.plant_links();
    let output = v.run_checked(&["show", v.dir()], None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_terminal_clean(&text);
    assert!(text.contains("FAIL  vendor/hostile<script>"), "{text}");
    assert!(
        !text.contains("\nPASS  forged/line"),
        "a title forged a line: {text}"
    );
    v.assert_no_secret_written(None);
}

/// `verify` fails a folder whose console.log is a link to a host file and that
/// holds a linked folder, naming both, and never hashes through them.
#[test]
fn verify_fails_links_in_the_folder() {
    let v = Vendor::new();
    let clean = v.run_checked(&["verify", v.dir()], None);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    v.plant_links();
    // A planted file whose name would drive the terminal.
    write(
        &v.run_dir.join("vendor/hostile"),
        &format!("x{ANSI}.log"),
        "x",
    );
    let output = v.run_checked(&["verify", v.dir()], None);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert_terminal_clean(&text);
    assert!(
        text.contains("UNLISTED  vendor/hostile/x\u{FFFD}[2J"),
        "{text}"
    );
    assert!(
        text.contains("NOT A FILE vendor/hostile/console.log"),
        "{text}"
    );
    assert!(text.contains("NOT A FILE vendor/hostile/linked"), "{text}");
    assert!(
        !text.contains("loot.log"),
        "the linked folder was walked: {text}"
    );
    v.assert_no_secret_written(None);
}

/// `../` and absolute paths in run.json and manifest.json: show, report, rerun and
/// merge refuse (exit 2) naming run.json and the field; verify fails naming them.
#[test]
fn paths_leaving_the_folder_are_refused_naming_file_and_field() {
    let v = Vendor::new();
    v.edit_record(|r| {
        r["scenarios"][0]["hang_screenshots"] = json!(["../secret.txt"]);
    });
    let merged = v.tmp.path().join("merged");
    for args in [
        vec!["show", v.dir()],
        vec!["report", v.dir()],
        vec!["rerun", v.dir()],
        vec!["merge", v.dir(), "--out", merged.to_str().unwrap()],
    ] {
        let output = v.run_checked(&args, Some(&merged));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("vendor-run/run.json")
                && err.contains("scenarios[0].hang_screenshots[0]")
                && err.contains("../secret.txt"),
            "{args:?}: {err}"
        );
    }
    assert!(
        std::fs::read_dir(&merged).map_or(true, |mut d| d.next().is_none()),
        "a refused merge wrote into --out"
    );

    let manifest_path = v.run_dir.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["artifacts"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "path": "/etc/hostname", "sha256": "00" }));
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let output = v.run_checked(&["verify", v.dir()], None);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("OUTSIDE") && text.contains("scenarios[0].hang_screenshots[0]"),
        "{text}"
    );
    assert!(
        text.contains("manifest.json") && text.contains("/etc/hostname"),
        "{text}"
    );
    v.assert_no_secret_written(Some(&merged));
}

/// `report` of hostile text: every title, name and excerpt escaped in report.html
/// (it is rewritten inside the folder, and only there), no link read.
#[test]
fn report_escapes_html_from_the_folder() {
    let v = Vendor::new();
    v.plant_hostile_text();
    v.plant_links();
    // The crash's screenshot is a link to a host file, too.
    symlink(&v.secret, v.run_dir.join("vendor/hostile/crash-1.png")).unwrap();
    v.edit_record(|r| {
        r["scenarios"][0]["crashes"][0]["screenshot"] = json!("vendor/hostile/crash-1.png");
    });
    let output = v.run_checked(&["report", v.dir()], None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let html = std::fs::read_to_string(v.run_dir.join("report.html")).unwrap();
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script tag survived");
    assert!(!lower.contains("<img src=x"), "an img tag survived");
    assert!(!html.contains("\"><img"), "an attribute was closed");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(
        !html.contains('\u{1b}'),
        "a terminal escape reached the page"
    );
    assert!(html.contains("symlink"), "the screenshot note says why");
    v.assert_no_secret_written(None);
}

/// `rerun` takes no permission from run.json: a record that says the run used
/// --allow-outside-paths is refused until the user passes it; a suite the record
/// does not vouch for (a host file) is never parsed.
#[test]
fn rerun_takes_no_permission_from_the_record() {
    let v = Vendor::new();
    v.edit_record(|r| r["settings"]["allow_outside_paths"] = json!(true));
    let output = v.run_checked(&["rerun", v.dir()], None);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the original run used --allow-outside-paths")
            && err.contains("settings.allow_outside_paths")
            && err.contains("pass --allow-outside-paths to rerun"),
        "{err}"
    );

    // A host file with the secret, named as the suite: refused before parsing (a
    // parse error would quote its lines).
    let host = write(v.tmp.path(), "host.toml", &format!("{SECRET} = [\n"));
    v.edit_record(|r| {
        r["settings"]["allow_outside_paths"] = json!(false);
        r["settings"]["suites"] = json!([host.to_str().unwrap()]);
    });
    let output = v.run_checked(&["rerun", v.dir(), "--allow-outside-paths"], None);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("settings.suites") && err.contains("not among the run's recorded inputs"),
        "{err}"
    );

    // A symlinked run.json is not read at all.
    let record = v.record();
    let elsewhere = v.tmp.path().join("elsewhere.json");
    std::fs::write(&elsewhere, record.to_string()).unwrap();
    std::fs::remove_file(v.run_dir.join("run.json")).unwrap();
    symlink(&elsewhere, v.run_dir.join("run.json")).unwrap();
    for args in [vec!["rerun", v.dir()], vec!["show", v.dir()]] {
        let output = v.run_checked(&args, None);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("run.json") && err.contains("symlink"), "{err}");
    }
    v.assert_no_secret_written(None);
}

/// `merge` refuses a shard with a linked console.log or folder and writes nothing;
/// a clean copy merges, writing only inside --out.
#[test]
fn merge_refuses_links_and_writes_only_inside_out() {
    let v = Vendor::new();
    let merged = v.tmp.path().join("merged");
    let clean = v.run_checked(
        &["merge", v.dir(), "--out", merged.to_str().unwrap()],
        Some(&merged),
    );
    assert_eq!(
        clean.status.code(),
        Some(1),
        "the merged run fails as its shard"
    );
    let merged_run = std::fs::canonicalize(merged.join("latest")).unwrap();
    assert!(merged_run.join("vendor/hostile/console.log").is_file());
    let verify = run(&["verify", merged_run.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));

    v.plant_links();
    let again = v.tmp.path().join("merged-again");
    let output = v.run_checked(
        &["merge", v.dir(), "--out", again.to_str().unwrap()],
        Some(&again),
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("vendor/hostile/") && err.contains("symlink"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&again)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused merge left {left:?}");
    v.assert_no_secret_written(Some(&merged));
    v.assert_no_secret_written(Some(&again));
}
