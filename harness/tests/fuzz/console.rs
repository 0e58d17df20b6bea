//! Console: the capture and the crash detector.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bootgate::detect::{self, CrashClass, CrashDetector};
use bootgate::qemu::console::{self as capture, ConsoleCapture};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;

use crate::engine::fuzz;
use crate::gen;

const TARGET: &str = "console";

/// Longest the detector may take over one generated console (at most a few MiB
/// in a few hundred lines, debug build, loaded machine).
const FEED_TIME_LIMIT: Duration = Duration::from_secs(3);

/// Longest a capture of one generated console may take to deliver its lines.
const CAPTURE_TIME_LIMIT: Duration = Duration::from_secs(5);

const FIXTURES: &[&[u8]] = &[
    include_bytes!("../fixtures/consoles/clean_boot.log"),
    include_bytes!("../fixtures/consoles/demo_sensor_boot_oops.log"),
    include_bytes!("../fixtures/consoles/demo_sensor_live_reload_oops.log"),
    include_bytes!("../fixtures/consoles/hang_init_soft_lockup.log"),
    include_bytes!("../fixtures/consoles/null_deref_boot.log"),
    include_bytes!("../fixtures/consoles/sysrq_panic.log"),
];

fn fixture_lines(fixture: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(fixture)
        .split('\n')
        .map(str::to_string)
        .collect()
}

fn all_fixture_lines() -> Vec<String> {
    FIXTURES.iter().flat_map(|f| fixture_lines(f)).collect()
}

/// Pieces of crash reports, for building lines the fixtures do not have.
const PIECES: &[&str] = &[
    "[   12.000001] ",
    "[    T1]",
    "[  C0]",
    "[",
    "]",
    "BUG: unable to handle page fault for address: ",
    "BUG: kernel NULL pointer dereference",
    "Kernel panic - not syncing: ",
    "Fatal exception",
    "general protection fault",
    "Oops: ",
    "kernel BUG at x.c:1!",
    "invalid opcode: 0000",
    "watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
    "INFO: task a:1 blocked for more than 120 seconds.",
    "rcu: INFO: rcu_preempt detected stalls",
    "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2",
    "RIP: 0010:",
    "sensor_match_fields+0x1a/0x40 [demo_sensor]",
    "? ",
    "+0x",
    "/0x",
    "[<ffffffff81000000>] ",
    "Call Trace:",
    "<TASK>",
    "---[ end trace 0000000000000000 ]---",
    "---[ end Kernel panic",
    "Linux version ",
    "RAX: 0000000000000000 ",
    "rcu: RCU grace-period kthread stack dump",
    "rcu: Stack dump where",
    "\u{fffd}",
    "é",
    "\t",
    "\r",
    " at ",
];

/// One console line: real report lines, edited ones, synthetic ones, noise and
/// floods far longer than any kernel line.
fn line(fixture: Vec<String>) -> impl Strategy<Value = String> {
    let real = prop::sample::select(fixture);
    prop_oneof![
        4 => real.clone(),
        3 => (real.clone(), prop::collection::vec(gen::edit(), 1..4)).prop_map(|(l, edits)| {
            let mut bytes = l.into_bytes();
            for e in &edits {
                gen::apply(&mut bytes, e);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }),
        3 => prop::collection::vec(prop::sample::select(PIECES), 0..10).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => (prop::sample::select(PIECES), 1usize..20_000).prop_map(|(p, n)| p.repeat(n)),
        1 => (real, 1usize..2_000).prop_map(|(l, n)| l.repeat(n)),
    ]
}

fn console() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(line(all_fixture_lines()), 0..300)
}

/// What must hold after any console: bounded state, titles that name their kind.
fn check(detector: &CrashDetector) -> TestCaseResult {
    prop_assert!(detector.reports().len() <= detect::MAX_REPORTS);
    for report in detector.reports() {
        prop_assert!(!report.excerpt.is_empty());
        prop_assert!(report.excerpt.len() <= detect::MAX_EXCERPT_LINES);
        for line in &report.excerpt {
            prop_assert!(
                line.len() <= detect::MAX_LINE_BYTES,
                "excerpt line of {} bytes",
                line.len()
            );
        }
        prop_assert!(report.title.len() <= detect::MAX_TITLE_BYTES);
        prop_assert!(
            report.title.starts_with(&report.kind) || report.title.len() == detect::MAX_TITLE_BYTES,
            "title {:?} does not start with its kind {:?}",
            report.title,
            report.kind
        );
    }
    let first_failure = detector
        .reports()
        .iter()
        .find(|r| r.class != CrashClass::Warning);
    prop_assert_eq!(detector.crash(), first_failure);
    Ok(())
}

fn feed(lines: &[String]) -> Result<CrashDetector, TestCaseError> {
    let started = Instant::now();
    let mut detector = CrashDetector::new();
    for line in lines {
        detector.feed(line);
    }
    let took = started.elapsed();
    prop_assert!(
        took < FEED_TIME_LIMIT,
        "{} lines took {took:?}",
        lines.len()
    );
    Ok(detector)
}

#[test]
fn detector_stays_bounded_on_any_console() {
    fuzz(
        TARGET,
        "detector_stays_bounded_on_any_console",
        200,
        console(),
        |lines| check(&feed(&lines)?),
    );
}

/// Noise printed by user space (no kernel timestamp) between the lines of a real
/// report leaves its title, class and excerpt unchanged.
#[test]
fn user_space_noise_inside_a_report_changes_nothing() {
    let noise = "[a-z][a-z ]{0,60}".prop_filter("not a report header", |l: &String| {
        ![
            "general protection fault",
            "kernel BUG at",
            "invalid opcode",
            "watchdog",
        ]
        .iter()
        .any(|h| l.contains(h))
    });
    let strategy = (
        0..FIXTURES.len(),
        prop::collection::vec((any::<Index>(), noise), 0..60),
    );
    fuzz(
        TARGET,
        "user_space_noise_inside_a_report_changes_nothing",
        200,
        strategy,
        |(fixture, noise)| {
            let clean = fixture_lines(FIXTURES[fixture]);
            let mut noisy = clean.clone();
            // At most one noise line in a row: a report tolerates a few stray lines.
            let mut spots: Vec<usize> = noise
                .iter()
                .map(|(i, _)| i.index(clean.len() + 1))
                .collect();
            spots.sort_unstable();
            spots.dedup();
            for (at, (_, text)) in spots.iter().rev().zip(&noise) {
                noisy.insert(*at, text.clone());
            }
            let want = feed(&clean)?;
            let got = feed(&noisy)?;
            check(&got)?;
            prop_assert_eq!(got.reports(), want.reports());
            Ok(())
        },
    );
}

/// Bytes through a real socket into the capture, its lines into the detector.
#[test]
fn capture_splits_any_bytes_into_bounded_lines() {
    let fixture = prop::sample::select(FIXTURES).prop_map(<[u8]>::to_vec);
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..20_000),
        (fixture, prop::collection::vec(gen::edit(), 0..8)).prop_map(|(mut b, edits)| {
            for e in &edits {
                gen::apply(&mut b, e);
            }
            b
        }),
        (prop::collection::vec(any::<u8>(), 1..8), 1usize..40_000).prop_map(|(p, n)| p.repeat(n)),
    ];
    let strategy = (bytes, prop::collection::vec(1usize..9000, 1..8));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("console.log");
    fuzz(
        TARGET,
        "capture_splits_any_bytes_into_bounded_lines",
        100,
        strategy,
        |(bytes, chunks)| {
            let (mut guest, host) =
                UnixStream::pair().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (tx, rx) = mpsc::channel();
            let started = Instant::now();
            let running = ConsoleCapture::start(host, &log, move |l| {
                let _ = tx.send(l.text);
            })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut rest = &bytes[..];
            for size in chunks.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*size).min(rest.len()));
                guest
                    .write_all(now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                rest = later;
            }
            drop(guest);
            let summary = running
                .finish()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(started.elapsed() < CAPTURE_TIME_LIMIT);
            prop_assert_eq!(summary.bytes_seen, bytes.len() as u64);
            prop_assert_eq!(std::fs::read(&log).ok(), Some(bytes.clone()));
            let lines: Vec<String> = rx.try_iter().collect();
            let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
            let partial = usize::from(!bytes.is_empty() && bytes.last() != Some(&b'\n'));
            prop_assert_eq!(lines.len(), newlines + partial);
            for line in &lines {
                prop_assert!(
                    line.len() <= capture::MAX_LINE_BYTES,
                    "a line of {} bytes was handed on",
                    line.len()
                );
            }
            let short_valid_lines = std::str::from_utf8(&bytes).is_ok()
                && bytes
                    .split(|&b| b == b'\n')
                    .all(|l| l.len() <= capture::MAX_LINE_BYTES);
            if short_valid_lines {
                let want: Vec<String> = String::from_utf8_lossy(&bytes)
                    .split_inclusive('\n')
                    .map(|l| match l.strip_suffix('\n') {
                        Some(l) => l.trim_end_matches('\r').to_string(),
                        None => l.to_string(),
                    })
                    .collect();
                prop_assert_eq!(&lines, &want);
            }
            check(&feed(&lines)?)
        },
    );
}

// ---- regressions ----

#[test]
fn capture_cuts_lines_of_invalid_utf8_at_the_line_limit() {
    let (mut guest, host) = UnixStream::pair().expect("socket pair");
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, rx) = mpsc::channel();
    let running = ConsoleCapture::start(host, &dir.path().join("c.log"), move |l| {
        let _ = tx.send(l.text);
    })
    .expect("capture");
    // Each invalid byte becomes a 3-byte U+FFFD: without a cut after decoding,
    // the line handed on would be three times the limit.
    guest
        .write_all(&vec![0xFF; capture::MAX_LINE_BYTES * 2])
        .expect("write");
    guest.write_all(b"\n").expect("write");
    drop(guest);
    running.finish().expect("finish");
    let lines: Vec<String> = rx.try_iter().collect();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].len() <= capture::MAX_LINE_BYTES,
        "{}",
        lines[0].len()
    );
    assert!(lines[0].len() > capture::MAX_LINE_BYTES - 3);
    assert!(lines[0].chars().all(|c| c == '\u{fffd}'));
}
