//! The terminal sink: one plain line per event on stderr, so a CI log reads on its
//! own, and a summary that says where the results are.

use std::io::Write;

use crate::model::record::{CrashPhase, StepOutcome, Verdict};
use crate::model::run_file::{JUNIT_XML, REPORT_HTML, RUN_JSON};
use crate::model::Event;
use crate::model::{ReportError, Sink};
use crate::util::human_duration;

/// How much the terminal sink prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub struct TerminalSink {
    verbosity: Verbosity,
}

impl TerminalSink {
    pub fn new(verbosity: Verbosity) -> TerminalSink {
        TerminalSink { verbosity }
    }
}

fn ms(ms: u64) -> String {
    human_duration(std::time::Duration::from_millis(ms))
}

/// The text the terminal shows for an event at a verbosity, if any (it may span
/// several lines). Shared by the plain sink and the live progress view.
pub(crate) fn text_for(event: &Event, verbosity: Verbosity) -> Option<String> {
    let normal = verbosity != Verbosity::Quiet;
    let verbose = verbosity == Verbosity::Verbose;
    match event {
        Event::RunStarted {
            run,
            dir,
            scenarios,
        } if normal => Some(format!(
            "bootgate {}: running {scenarios} scenario(s) on {} ({}) into {}",
            run.bootgate_version,
            run.qemu.version.as_deref().unwrap_or("?"),
            run.qemu.accel.as_deref().unwrap_or("?"),
            dir.display()
        )),
        Event::Notice(text) => Some(format!("bootgate: {text}")),
        Event::ScenarioStarted { name, index, total } if normal => {
            Some(format!("[{}/{total}] {name}", index + 1))
        }
        Event::StepStarted { scenario, step } if verbose => Some(format!("  {scenario}: {step}")),
        Event::BootReady {
            scenario,
            index,
            ready_ms,
        } if verbose => Some(format!(
            "  {scenario}: boot {index} ready in {}",
            ms(*ready_ms)
        )),
        Event::StepFinished { scenario, step }
            if verbose
                || (normal
                    && step.outcome != StepOutcome::Ok
                    && step.outcome != StepOutcome::Skipped) =>
        {
            Some(format!(
                "  {scenario}: {} {} ({}) {}",
                step.kind,
                step.outcome.as_str(),
                ms(step.duration_ms),
                step.detail.lines().next().unwrap_or_default()
            ))
        }
        Event::ScenarioFinished { scenario, .. } => {
            (normal || scenario.verdict != Verdict::Pass).then(|| scenario_text(scenario))
        }
        Event::RunFinished { run, dir } => {
            let s = &run.summary;
            let recovery = super::recovery::text(&super::recovery::rows(run))
                .map_or_else(String::new, |table| format!("\n{table}\n"));
            let attestation = super::attestation::summary_line(dir)
                .map_or_else(String::new, |line| format!("\n{line}"));
            Some(format!(
                "{recovery}\n{}: {} pass, {} fail, {} error, {} flaky\nresults: {}\n  report:    {}\n  run.json:  {}\n  junit.xml: {}{attestation}",
                run.banner(),
                s.pass,
                s.fail,
                s.error,
                s.flaky,
                dir.display(),
                dir.join(REPORT_HTML).display(),
                dir.join(RUN_JSON).display(),
                dir.join(JUNIT_XML).display()
            ))
        }
        // Campaign and rollout progress shows at every verbosity, like notices: the
        // lines are few and say the command is still working.
        Event::FuzzProgress(_)
        | Event::FuzzCrashFound { .. }
        | Event::RingStarted { .. }
        | Event::RingFinished { .. } => campaign_text(event),
        _ => None,
    }
}

/// The progress lines of `fuzz-content` and `rollout`.
fn campaign_text(event: &Event) -> Option<String> {
    match event {
        Event::FuzzProgress(c) => Some(format!(
            "fuzz: {} executions ({:.1}/s), {} unique crash(es), corpus {}, {} hang(s), {} error(s)",
            c.execs, c.execs_per_second, c.unique_crashes, c.corpus, c.hangs, c.errors
        )),
        Event::FuzzCrashFound {
            title,
            execs,
            seconds,
        } => Some(format!(
            "fuzz: new crash after {execs} executions ({seconds:.0} s): {title}; minimizing"
        )),
        Event::RingStarted {
            ring,
            targets,
            soak,
        } => Some(format!(
            "bootgate: ring {ring}: {targets} target(s){}",
            soak.map_or(String::new(), |d| format!(
                ", soak {d:?} after each scenario"
            ))
        )),
        Event::RingFinished {
            ring,
            outcome,
            reason,
        } => Some(format!(
            "bootgate: ring {ring}: {outcome}{}",
            reason.map_or(String::new(), |r| format!(" ({r})"))
        )),
        _ => None,
    }
}

/// A finished scenario: its verdict line, then what was seen (crash, loop, hang,
/// recovery) and why it failed.
fn scenario_text(scenario: &crate::model::record::ScenarioRecord) -> String {
    let boots: Vec<String> = scenario
        .boots
        .iter()
        .map(|b| {
            let boot = b
                .ready_ms
                .map_or_else(|| b.outcome.as_str().to_string(), ms);
            // A boot that answered and then crashed is no clean boot: say when.
            match (b.crash_phase(), b.crash_when()) {
                (Some(CrashPhase::AfterReady), Some(when)) => format!("{boot} {when}"),
                _ => boot,
            }
        })
        .collect();
    let mut text = format!(
        "{:<5} {} ({}; boots: {})",
        scenario.verdict.as_str().to_uppercase(),
        scenario.name,
        ms(scenario.duration_ms),
        if boots.is_empty() {
            "none".into()
        } else {
            boots.join(", ")
        }
    );
    let mut note = |s: String| {
        text.push_str("\n      ");
        text.push_str(&s);
    };
    if let Some(crash) = scenario.crashes.first() {
        let more = scenario.crashes.len() - 1;
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        note(format!("crash: {}{more}", crash.title));
        if let Some(headline) = crash.triage.as_ref().and_then(|t| t.headline()) {
            note(headline);
        }
    }
    if scenario.boot_loop {
        let late = scenario
            .boots
            .iter()
            .skip(1)
            .filter(|b| b.crash_phase() == Some(CrashPhase::AfterReady))
            .count();
        note(if late == 0 {
            "boot loop: crashed at every boot watched".into()
        } else {
            format!("boot loop: crashed at every boot watched ({late} of them after ready)")
        });
    }
    if let Some(hang) = scenario.hangs.first() {
        note(format!("hang: {hang}"));
    }
    for b in &scenario.boots {
        if let Some(d) = b.drivers.as_ref().filter(|d| !d.missing.is_empty()) {
            note(format!(
                "boot {}: driver {} not loaded",
                b.index,
                d.missing.join(", ")
            ));
        }
        if let Some(via) = &b.reboot_via {
            note(format!("boot {}: rebooted by {via}", b.index));
        }
    }
    let checked = scenario
        .boots
        .iter()
        .filter(|b| b.drivers.is_some())
        .count();
    let all_loaded = scenario
        .boots
        .iter()
        .filter_map(|b| b.drivers.as_ref())
        .all(|d| d.missing.is_empty());
    if checked > 0 && all_loaded {
        note(format!(
            "drivers loaded at each of {checked} boot(s) checked"
        ));
    }
    if let Some(r) = &scenario.recovery {
        note(format!(
            "recovered after {} boot(s), {:.1} s{}",
            r.boots,
            r.seconds,
            r.settled_s
                .map(|s| format!(" (then up {s:.0} s)"))
                .unwrap_or_default()
        ));
    }
    if let (Some(expect), Verdict::Pass) = (&scenario.expect, scenario.verdict) {
        note(format!("expected {expect}: seen"));
    }
    if let (Some(reason), Verdict::Fail | Verdict::Error) = (&scenario.reason, scenario.verdict) {
        note(reason.replace('\n', "\n      "));
    }
    text
}

impl Sink for TerminalSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        if let Some(text) = text_for(event, self.verbosity) {
            // A closed stderr must not fail the run: results are in files.
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
        Ok(())
    }
}

/// Lines of a crash excerpt `bootgate show` prints.
const SHOW_EXCERPT_LINES: usize = 20;

/// The text of `bootgate show`: the run's summary, one line per scenario, and for
/// each failing scenario its reason, crash title and the end of the excerpt. The
/// record may be someone else's: every text from it goes through `terminal_text`.
pub fn summary_text(run: &crate::model::record::RunRecord) -> String {
    use super::terminal_text::{line, lines};
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = &run.summary;
    let banner = run.banner();
    let _ = writeln!(
        out,
        "run {} ({} .. {}): {banner}: {} pass, {} fail, {} error, {} flaky",
        line(&run.run_id),
        line(&run.started_at),
        line(run.finished_at.as_deref().unwrap_or("unfinished")),
        s.pass,
        s.fail,
        s.error,
        s.flaky
    );
    let _ = writeln!(
        out,
        "QEMU: {} ({})",
        line(run.qemu.version.as_deref().unwrap_or("?")),
        line(run.qemu.accel.as_deref().unwrap_or("?"))
    );
    for scenario in &run.scenarios {
        let _ = writeln!(
            out,
            "{:<5} {} ({})",
            scenario.verdict.as_str().to_uppercase(),
            line(&scenario.name),
            ms(scenario.duration_ms)
        );
        if !matches!(scenario.verdict, Verdict::Fail | Verdict::Error) {
            continue;
        }
        if let Some(reason) = &scenario.reason {
            let _ = writeln!(out, "      {}", lines(reason).replace('\n', "\n      "));
        }
        if let Some(crash) = scenario.crashes.first() {
            let _ = writeln!(
                out,
                "      crash: {} (boot {})",
                line(&crash.title),
                crash.boot_index
            );
            if let Some(headline) = crash.triage.as_ref().and_then(|t| t.headline()) {
                let _ = writeln!(out, "      {}", line(&headline));
            }
            // How it was captured matters when no dump is there to open (a reset, a
            // guest still writing its own dump): say so rather than leave a reader
            // looking for one.
            if let Some(capture) = &crash.capture {
                let note = crash
                    .capture_note
                    .as_deref()
                    .map(|n| format!(": {}", line(n)))
                    .unwrap_or_default();
                let _ = writeln!(out, "      captured: {}{note}", line(capture));
            }
            if let Some(dump) = super::dump_text::dump_line(crash) {
                let _ = writeln!(out, "      {}", line(&dump));
            }
            let tail = &crash.excerpt[crash.excerpt.len().saturating_sub(SHOW_EXCERPT_LINES)..];
            for excerpt_line in tail {
                let _ = writeln!(out, "      | {}", line(excerpt_line));
            }
        }
        let _ = writeln!(
            out,
            "      rerun: {}",
            line(&crate::util::shell_join(&scenario.rerun))
        );
    }
    let mut rows = super::recovery::rows(run);
    for row in &mut rows {
        row.scenario = line(&row.scenario);
        row.crash = line(&row.crash);
        row.how = line(&row.how);
    }
    if let Some(table) = super::recovery::text(&rows) {
        let _ = writeln!(out, "{table}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::event::FuzzCounters;

    /// The lines `fuzz-content` and `rollout` printed themselves before they became
    /// events: the terminal text must not change.
    #[test]
    fn campaign_and_ring_lines_read_as_before() {
        let counters = FuzzCounters {
            execs: 12,
            execs_per_second: 0.456,
            unique_crashes: 1,
            corpus: 3,
            hangs: 0,
            errors: 2,
        };
        let text = |e: &Event| text_for(e, Verbosity::Quiet).unwrap();
        assert_eq!(
            text(&Event::FuzzProgress(&counters)),
            "fuzz: 12 executions (0.5/s), 1 unique crash(es), corpus 3, 0 hang(s), 2 error(s)"
        );
        assert_eq!(
            text(&Event::FuzzCrashFound {
                title: "BUG: x",
                execs: 7,
                seconds: 41.6
            }),
            "fuzz: new crash after 7 executions (42 s): BUG: x; minimizing"
        );
        assert_eq!(
            text(&Event::RingStarted {
                ring: "canary",
                targets: 2,
                soak: Some(Duration::from_secs(5))
            }),
            "bootgate: ring canary: 2 target(s), soak 5s after each scenario"
        );
        assert_eq!(
            text(&Event::RingStarted {
                ring: "all",
                targets: 1,
                soak: None
            }),
            "bootgate: ring all: 1 target(s)"
        );
        assert_eq!(
            text(&Event::RingFinished {
                ring: "canary",
                outcome: "halted",
                reason: Some("1 scenario(s) failed a gate")
            }),
            "bootgate: ring canary: halted (1 scenario(s) failed a gate)"
        );
        assert_eq!(
            text(&Event::RingFinished {
                ring: "all",
                outcome: "promoted",
                reason: None
            }),
            "bootgate: ring all: promoted"
        );
    }

    /// `bootgate show` of someone else's run.json: a hostile title or name cannot
    /// drive the terminal or forge a line.
    #[test]
    fn show_text_carries_no_escape_from_the_record() {
        use crate::model::record::Verdict;
        use crate::testing::records;
        let mut sc = records::scenario("s", "a\u{1b}[2J", Verdict::Fail);
        sc.reason = Some("why\u{1b}]0;owned\u{7}\nsecond".into());
        let mut crash = records::crash(1, "BUG: x\nPASS  s/forged");
        crash.excerpt = vec!["\u{1b}[31mred\u{9b}".into()];
        crash.capture = Some("reset".into());
        crash.capture_note = Some("no dump\u{1b}[2J\nPASS  s/forged2".into());
        sc.crashes = vec![crash];
        let text = summary_text(&records::run(vec![sc]));
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.contains("\nPASS  s/forged"), "{text}");
        assert!(text.contains("      captured: reset: no dump"), "{text}");
        assert!(
            text.contains("      second"),
            "the reason keeps its lines: {text}"
        );
    }
}
