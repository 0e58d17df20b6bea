//! A hostile run.json cannot make rerun read, parse or permit more than it recorded.

use std::path::{Path, PathBuf};

use super::*;
use crate::model::record::{FileHash, Verdict};
use crate::testing::records;
use crate::util::sha256_file;

const SUITE: &str = "[suite]\nname = \"s\"\nimage = \"demo\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{ boot = {} }]\n";

/// A run folder whose run.json names one real suite, recorded as an input.
struct Fixture {
    _tmp: tempfile::TempDir,
    run_dir: PathBuf,
    suite: PathBuf,
    record: RunRecord,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let suite = tmp.path().join("suite.toml");
        std::fs::write(&suite, SUITE).unwrap();
        let run_dir = tmp.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let mut record = records::run(vec![records::scenario("s", "a", Verdict::Pass)]);
        record.settings.suites = vec![suite.display().to_string()];
        record.inputs = vec![input(&suite)];
        Fixture {
            _tmp: tmp,
            run_dir,
            suite,
            record,
        }
    }

    fn plan(&self, allow: bool) -> Result<RerunPlan, RerunError> {
        let text = serde_json::to_string(&self.record).unwrap();
        std::fs::write(self.run_dir.join(RUN_JSON), text).unwrap();
        plan(&self.run_dir, &[], allow)
    }
}

fn input(path: &Path) -> FileHash {
    FileHash {
        path: path.display().to_string(),
        sha256: sha256_file(path).unwrap(),
    }
}

#[test]
fn a_plain_record_plans_with_the_suite_folder_policy() {
    let f = Fixture::new();
    let plan = f.plan(false).unwrap();
    assert_eq!(plan.path_policy, suite::PathPolicy::default());
    assert_eq!(plan.scenarios, ["s/a"]);
}

#[test]
fn rerun_does_not_inherit_allow_outside_paths_from_the_record() {
    let mut f = Fixture::new();
    f.record.settings.allow_outside_paths = true;
    let err = f.plan(false).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, RerunError::OutsidePaths { .. }), "{text}");
    assert!(
        text.contains("settings.allow_outside_paths")
            && text.contains("run.json")
            && text.contains("pass --allow-outside-paths to rerun"),
        "{text}"
    );
    // The user's own flag grants it.
    let plan = f.plan(true).unwrap();
    assert_eq!(plan.path_policy, suite::PathPolicy::Anywhere);
}

#[test]
fn the_flag_grants_no_more_than_the_original_run_had() {
    let f = Fixture::new();
    assert_eq!(
        f.plan(true).unwrap().path_policy,
        suite::PathPolicy::default()
    );
}

#[test]
fn a_suite_the_record_does_not_vouch_for_is_not_parsed() {
    let mut f = Fixture::new();
    // Any host file: parsing it would quote its lines in the error.
    let host = f.suite.with_file_name("host-secret.toml");
    std::fs::write(&host, "TOP-SECRET = [\n").unwrap();
    f.record.settings.suites = vec![host.display().to_string()];
    let err = f.plan(false).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, RerunError::SuiteNotInput { .. }), "{text}");
    assert!(
        text.contains("settings.suites") && !text.contains("TOP-SECRET"),
        "{text}"
    );
}

#[test]
fn relative_or_dotted_suite_paths_are_refused() {
    let mut f = Fixture::new();
    let dotted = format!(
        "{}/../{}",
        f.suite.parent().unwrap().display(),
        "x/suite.toml"
    );
    for bad in ["suite.toml".to_string(), dotted] {
        f.record.settings.suites = vec![bad.clone()];
        let err = f.plan(false).err().unwrap();
        assert!(matches!(err, RerunError::SuitePath { .. }), "{bad}: {err}");
    }
}

#[test]
fn a_changed_or_missing_input_refuses_before_any_suite_loads() {
    let f = Fixture::new();
    std::fs::write(&f.suite, format!("{SUITE}# edited\n")).unwrap();
    assert!(matches!(f.plan(false), Err(RerunError::InputChanged(_))));
    std::fs::remove_file(&f.suite).unwrap();
    assert!(matches!(f.plan(false), Err(RerunError::InputMissing(_))));
}

#[test]
fn a_target_image_path_must_be_a_recorded_input() {
    let mut f = Fixture::new();
    let host = f.suite.with_file_name("image.toml");
    std::fs::write(&host, "TOP-SECRET = [\n").unwrap();
    f.record.settings.target = Some(suite::Target {
        image: Some("image.toml".into()),
        ..Default::default()
    });
    let err = f.plan(false).err().unwrap();
    assert!(matches!(err, RerunError::TargetImage { .. }), "{err}");
    // A built-in name is no host path.
    f.record.settings.target = Some(suite::Target {
        image: Some("demo".into()),
        ..Default::default()
    });
    assert!(f.plan(false).is_ok());
}

#[test]
fn a_record_pointing_outside_its_folder_is_refused_naming_the_field() {
    let mut f = Fixture::new();
    f.record.scenarios[0].dir = "../../etc".into();
    let err = f.plan(false).err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("run.json")
            && text.contains("scenarios[0].dir")
            && text.contains("../../etc"),
        "{text}"
    );
    assert_eq!(err.exit_code(), Exit::Usage);
}

#[test]
fn a_symlinked_run_json_is_not_read() {
    let f = Fixture::new();
    let elsewhere = f.suite.with_file_name("elsewhere.json");
    std::fs::write(&elsewhere, serde_json::to_string(&f.record).unwrap()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, f.run_dir.join(RUN_JSON)).unwrap();
    let err = read_record(&f.run_dir).err().unwrap();
    assert!(err.to_string().contains("symlink"), "{err}");
}
