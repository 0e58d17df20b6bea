//! junit.xml: one testsuite per suite, one testcase per scenario, for CI pages.

use crate::model::run_file::JUNIT_XML;
use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

use crate::model::record::{RunRecord, Verdict};
use crate::model::Event;
use crate::model::{ReportError, Sink};
use crate::util::write_atomic;

#[derive(Default)]
pub struct JunitSink;

impl JunitSink {
    pub fn new() -> JunitSink {
        JunitSink
    }
}

/// Builds the JUnit document for a run.
pub fn render(run: &RunRecord) -> Result<String, ReportError> {
    let mut report = Report::new("bootgate");
    let mut suites: Vec<TestSuite> = Vec::new();
    for scenario in &run.scenarios {
        let index = match suites
            .iter()
            .position(|s| s.name.as_str() == scenario.suite)
        {
            Some(i) => i,
            None => {
                suites.push(TestSuite::new(scenario.suite.clone()));
                suites.len() - 1
            }
        };
        let reason = scenario.reason.clone().unwrap_or_default();
        let mut status = match scenario.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Flaky => TestCaseStatus::success(),
            Verdict::Fail => TestCaseStatus::non_success(NonSuccessKind::Failure),
            Verdict::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
        };
        if matches!(scenario.verdict, Verdict::Fail | Verdict::Error) {
            let message = match scenario.crashes.first() {
                Some(crash) => crash.title.clone(),
                None => reason.lines().next().unwrap_or_default().to_string(),
            };
            status.set_message(message);
            let mut text = reason.clone();
            if let Some(crash) = scenario.crashes.first() {
                if let Some(triage) = &crash.triage {
                    text.push_str("\n\n");
                    text.push_str(&triage.text());
                }
                text.push_str("\n\n");
                text.push_str(&crash.excerpt.join("\n"));
                if let Some(dump) = super::dump_text::dump_line(crash) {
                    text.push_str("\n\n");
                    text.push_str(&dump);
                }
            }
            status.set_description(text);
        }
        // Earlier attempts: a flaky pass shows its failures as flakyFailure, a
        // failure after retries its earlier failures as rerunFailure. A plain pass
        // after infrastructure errors is not flaky: its attempts become a property.
        let plain_pass = scenario.verdict == Verdict::Pass;
        for earlier in scenario.attempts.iter().filter(|_| !plain_pass) {
            let kind = match earlier.verdict {
                Verdict::Fail => NonSuccessKind::Failure,
                Verdict::Error => NonSuccessKind::Error,
                Verdict::Pass | Verdict::Flaky => continue,
            };
            let mut rerun = TestRerun::new(kind);
            rerun.set_message(format!(
                "attempt {}: {}",
                earlier.attempt,
                earlier.reason.as_deref().unwrap_or_default()
            ));
            status.add_rerun(rerun);
        }
        let mut case = TestCase::new(scenario.name.clone(), status);
        case.set_classname(scenario.suite.clone());
        case.set_time(std::time::Duration::from_millis(scenario.duration_ms));
        // Where the evidence is, so a CI page points straight at it.
        case.add_property(Property::new(
            "console",
            format!("{}/console.log", scenario.dir),
        ));
        if let Some(shot) = scenario.crashes.first().and_then(|c| c.screenshot.clone()) {
            case.add_property(Property::new("screenshot", shot));
        }
        if let Some(dump) = scenario.crashes.first().and_then(|c| c.dump.clone()) {
            case.add_property(Property::new("memory-dump", dump));
        }
        for earlier in scenario.attempts.iter().filter(|_| plain_pass) {
            case.add_property(Property::new(
                format!("attempt-{}", earlier.attempt),
                format!(
                    "{}: {}",
                    earlier.verdict.as_str(),
                    earlier.reason.as_deref().unwrap_or_default()
                ),
            ));
        }
        case.add_property(Property::new(
            "rerun",
            crate::util::shell_join(&scenario.rerun),
        ));
        suites[index].add_test_case(case);
    }
    report.add_test_suites(suites);
    report.to_string().map_err(|e| ReportError::Encode {
        what: JUNIT_XML,
        message: e.to_string(),
    })
}

impl Sink for JunitSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        let Event::RunFinished { run, dir } = event else {
            return Ok(());
        };
        let path = dir.join(JUNIT_XML);
        let xml = render(run)?;
        write_atomic(&path, xml.as_bytes()).map_err(|source| ReportError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run.json (from a real run, edited) with a flaky scenario and a failure after
    /// a retry.
    const RETRIED: &str = include_str!("testdata/retried-run.json");

    #[test]
    fn retried_scenarios_show_their_earlier_attempts() {
        let run: RunRecord = serde_json::from_str(RETRIED).unwrap();
        let xml = render(&run).unwrap();
        // The flaky one passed, with its failure as flakyFailure.
        let flaky = &xml[xml.find("name=\"demo/flaky\"").unwrap()..];
        let flaky = &flaky[..flaky.find("</testcase>").unwrap()];
        assert!(flaky.contains("<flakyFailure"), "{flaky}");
        assert!(flaky.contains("attempt 1: crash: BUG: unable"), "{flaky}");
        assert!(!flaky.contains("<failure"), "{flaky}");
        // The failing one failed, its earlier attempt a rerunFailure.
        let failing = &xml[xml.find("name=\"demo/failing\"").unwrap()..];
        let failing = &failing[..failing.find("</testcase>").unwrap()];
        assert!(failing.contains("<failure"), "{failing}");
        assert!(failing.contains("<rerunFailure"), "{failing}");
    }

    #[test]
    fn a_failure_says_where_its_dump_is_and_how_to_open_it() {
        use crate::testing::records::{crash, run, scenario};
        let mut dumped = scenario("s", "a", Verdict::Fail);
        let mut c = crash(1, "BUG: x in f");
        c.dump = Some("s/a/crash-1.kdump".into());
        c.dump_format = Some("kdump-zlib".into());
        c.dump_bytes = Some(3 * 1024 * 1024);
        dumped.crashes.push(c);
        let mut skipped = scenario("s", "b", Verdict::Fail);
        let mut c = crash(1, "BUG: x in f");
        c.dump_note = Some("not dumped: the run's dump budget (8192 MiB) is used up".into());
        skipped.crashes.push(c);
        let xml = render(&run(vec![dumped, skipped])).unwrap();
        assert!(
            xml.contains("memory dump: s/a/crash-1.kdump (kdump-zlib, 3.0 MiB): open with crash VMLINUX s/a/crash-1.kdump"),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"memory-dump\" value=\"s/a/crash-1.kdump\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "memory dump: none: not dumped: the run&apos;s dump budget (8192 MiB) is used up"
            ) || xml.contains(
                "memory dump: none: not dumped: the run's dump budget (8192 MiB) is used up"
            ),
            "{xml}"
        );
    }
}
