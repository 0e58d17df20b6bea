//! Property-based fuzzing of the parsers that read untrusted input: suite files, the
//! guest's serial console (capture and crash detector), QMP messages and guest-agent
//! replies. The guest is hostile by definition (and may replace the agent with its
//! own program), so each parser must return instead of panicking or hanging, keep its
//! memory bounded, and, for suites, say where an error is.
//!
//! One module per target. Each property runs a few hundred cases in a normal test run
//! (PROPTEST_CASES raises that); `tools/fuzz` sets [`engine::SECONDS_VAR`] to run every
//! property of a target for a bounded time instead and adds up the `fuzz:` lines they
//! print. The deterministic tests next to the properties are regression tests for what
//! the fuzzing found.

mod engine {
    use std::fmt::Debug;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use proptest::strategy::Strategy;
    use proptest::test_runner::{Config, TestCaseResult, TestError, TestRunner};

    /// Set by `tools/fuzz`: run each property for this many seconds instead of a fixed
    /// number of cases.
    pub const SECONDS_VAR: &str = "BOOTGATE_FUZZ_SECONDS";

    /// proptest's own variable for the number of cases; read here because a property
    /// sets its own default, which would otherwise hide the variable.
    const CASES_VAR: &str = "PROPTEST_CASES";

    /// Cases per runner in a timed run. Each runner draws a fresh random seed, so a
    /// long run explores new inputs instead of replaying one sequence.
    const TIMED_BATCH_CASES: u32 = 128;

    /// Time spent shrinking a finding to a small input, in milliseconds: bounded so
    /// a timed run ends even when the input is large and each step slow.
    const MAX_SHRINK_MILLIS: u32 = 60_000;

    /// Longest rendering of a failing input put in the panic message; the whole of
    /// it goes to a file under [`findings_dir`].
    const MAX_PRINTED_INPUT: usize = 4_000;

    /// Where the full failing inputs are written (cargo's scratch folder for tests).
    pub fn findings_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
    }

    fn env_number(name: &str) -> Option<u64> {
        std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
    }

    fn config(cases: u32) -> Config {
        Config {
            cases,
            // Findings are reported (and written out) by `fuzz`; proptest's own
            // persistence needs the source file, which a hand-made runner lacks.
            failure_persistence: None,
            max_shrink_time: MAX_SHRINK_MILLIS,
            ..Config::default()
        }
    }

    /// Checks `property` on values drawn from `strategy`: `default_cases` of them (or
    /// PROPTEST_CASES), or as many as fit in [`SECONDS_VAR`] seconds. Prints one
    /// `fuzz:` line with the executions and findings, then panics with the shrunk
    /// input if the property failed.
    pub fn fuzz<S>(
        target: &str,
        test: &str,
        default_cases: u32,
        strategy: S,
        property: impl Fn(S::Value) -> TestCaseResult,
    ) where
        S: Strategy,
        S::Value: Debug,
    {
        let executions = AtomicU64::new(0);
        let started = Instant::now();
        let deadline = env_number(SECONDS_VAR).map(|s| started + Duration::from_secs(s));
        let counted = |value: S::Value| {
            // Values generated after the deadline are not run: the batch finishes
            // quickly and the run ends on time.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            executions.fetch_add(1, Ordering::Relaxed);
            property(value)
        };
        let outcome = match deadline {
            None => {
                let cases = env_number(CASES_VAR)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(default_cases);
                TestRunner::new(config(cases)).run(&strategy, counted)
            }
            Some(deadline) => loop {
                let batch = TestRunner::new(config(TIMED_BATCH_CASES)).run(&strategy, counted);
                if batch.is_err() || Instant::now() >= deadline {
                    break batch;
                }
            },
        };
        let finding = match outcome {
            Ok(()) => None,
            Err(TestError::Abort(reason)) => Some(format!("aborted: {reason}")),
            Err(TestError::Fail(reason, input)) => Some(report(target, test, &reason, &input)),
        };
        println!(
            "fuzz: target={target} test={test} executions={} findings={} seconds={:.1}",
            executions.load(Ordering::Relaxed),
            usize::from(finding.is_some()),
            started.elapsed().as_secs_f64()
        );
        if let Some(finding) = finding {
            panic!("fuzz finding in {target}::{test}: {finding}");
        }
    }

    /// The reason and (shortened) input for the panic message; writes the whole input.
    fn report(target: &str, test: &str, reason: &impl Debug, input: &impl Debug) -> String {
        let file = findings_dir().join(format!("{target}-{test}.txt"));
        let saved = std::fs::create_dir_all(findings_dir())
            .and_then(|()| std::fs::write(&file, format!("{reason:?}\n\n{input:#?}\n")));
        // One line per value: long byte strings stay readable.
        let rendered = format!("{input:?}");
        let shown: String = rendered.chars().take(MAX_PRINTED_INPUT).collect();
        let more = if shown.len() < rendered.len() {
            format!("\n... ({} bytes in all)", rendered.len())
        } else {
            String::new()
        };
        let saved = match saved {
            Ok(()) => format!("whole input in {}", file.display()),
            Err(e) => format!("could not save the input: {e}"),
        };
        format!("{reason:?}\nminimal failing input ({saved}):\n{shown}{more}")
    }
}

/// Strategies several targets share.
mod gen {
    use proptest::prelude::*;
    use proptest::sample::Index;
    use serde_json::{Map, Value};

    /// A mutation of bytes: what fuzzers do to well-formed input.
    #[derive(Debug, Clone)]
    pub enum Edit {
        Truncate(Index),
        Insert(Index, Vec<u8>),
        Replace(Index, u8),
        Delete(Index, usize),
        Repeat(Index, usize, usize),
    }

    /// Bytes that break or confuse the formats here: JSON and TOML punctuation, line
    /// ends, the agent's 0xFF sentinel, truncated and invalid UTF-8.
    const TOKENS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"=",
        b"\n",
        b"\r\n",
        b"\r",
        b"\0",
        b"\xff",
        b"\xc3",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"'''",
        b"\"\"\"",
        b"#",
        b" ",
        b"\t",
        b"-1",
        b"0",
        b"1e400",
        b"18446744073709551616",
        b"nan",
        b"inf",
        b"true",
        b"null",
        b"\\u0000",
        b"\\ud800",
        b"\xef\xbb\xbf",
    ];

    pub fn token() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 1..8),
        ]
    }

    pub fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            1 => any::<Index>().prop_map(Edit::Truncate),
            3 => (any::<Index>(), token()).prop_map(|(at, t)| Edit::Insert(at, t)),
            2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
            2 => (any::<Index>(), 1usize..16).prop_map(|(at, n)| Edit::Delete(at, n)),
            1 => (any::<Index>(), 1usize..32, 1usize..64)
                .prop_map(|(at, len, times)| Edit::Repeat(at, len, times)),
        ]
    }

    pub fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
        let at = |i: &Index| i.index(bytes.len() + 1);
        match edit {
            Edit::Truncate(i) => {
                let at = at(i);
                bytes.truncate(at);
            }
            Edit::Insert(i, token) => {
                let at = at(i);
                bytes.splice(at..at, token.iter().copied());
            }
            Edit::Replace(i, b) => {
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
            }
            Edit::Delete(i, n) => {
                let at = at(i);
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Repeat(i, len, times) => {
                let at = at(i);
                let end = (at + len).min(bytes.len());
                let piece = bytes[at..end].to_vec();
                for _ in 0..*times {
                    bytes.splice(end..end, piece.iter().copied());
                }
            }
        }
    }

    /// Bytes nested `depth` deep: `[[[...]]]` or `{"a":{"a":...}}`, past any sane
    /// recursion limit when deep.
    pub fn nested_json(depth: usize, objects: bool) -> Vec<u8> {
        let (open, close): (&[u8], &[u8]) = if objects {
            (b"{\"a\":", b"}")
        } else {
            (b"[", b"]")
        };
        let mut out = open.repeat(depth);
        out.extend_from_slice(b"1");
        out.extend_from_slice(&close.repeat(depth));
        out
    }

    /// A long string, mostly of one repeated piece (a flood, not random noise).
    pub fn huge_string(max: usize) -> impl Strategy<Value = String> {
        (
            prop::sample::select(&["a", "}", "{", "\\\"", "\u{fffd}", "é", " ", "\"}", "A=="][..]),
            1usize..max,
        )
            .prop_map(|(piece, n)| piece.repeat(n))
    }

    /// Any JSON value, with the odd numbers, strings and shapes a peer may send.
    pub fn json() -> BoxedStrategy<Value> {
        let leaf = prop_oneof![
            2 => Just(Value::Null),
            2 => any::<bool>().prop_map(Value::from),
            2 => any::<i64>().prop_map(Value::from),
            2 => any::<u64>().prop_map(Value::from),
            2 => any::<f64>().prop_map(Value::from),
            2 => prop::sample::select(&[0u64, 1, 2, 3, u64::MAX, 1 << 53][..]).prop_map(Value::from),
            4 => any::<String>().prop_map(Value::from),
            1 => huge_string(20_000).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
    }

    /// Object keys: mostly the ones the protocols use, so shapes get close to real.
    pub fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(
                &[
                    "return", "error", "event", "id", "data", "timestamp", "seconds",
                    "microseconds", "class", "desc", "QMP", "version", "qemu", "major",
                    "minor", "micro", "package", "capabilities", "pid", "exited", "exitcode",
                    "signal", "out-data", "err-data", "out-truncated", "count", "buf-b64",
                    "eof", "supported_commands", "name", "enabled",
                ][..]
            )
            .prop_map(str::to_string),
            1 => any::<String>(),
        ]
    }

    /// A JSON document as bytes: well-formed, deeply nested, or edited.
    pub fn wire(value: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => value.clone().prop_map(|v| v.to_string().into_bytes()),
            1 => (1usize..400, any::<bool>()).prop_map(|(d, o)| nested_json(d, o)),
            3 => (value, prop::collection::vec(edit(), 1..4)).prop_map(|(v, edits)| {
                let mut bytes = v.to_string().into_bytes();
                for e in &edits {
                    apply(&mut bytes, e);
                }
                bytes
            }),
        ]
    }

    /// The value of a wrong type (or shape) for wherever it is put.
    pub fn wrong_type() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            Just(Value::from(u64::MAX)),
            any::<String>().prop_map(Value::from),
            Just(Value::Array(vec![])),
            Just(Value::Object(Map::new())),
        ]
    }
}

// ---- suites ----------------------------------------------------------------------

mod suite {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use bootgate::suite::{self, Step, Suite, SuiteError};
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::TestCaseResult;

    use crate::engine::fuzz;
    use crate::gen;

    const TARGET: &str = "suite";

    /// Longest a parse of one generated suite may take (debug build, loaded machine):
    /// the inputs are at most a few hundred KiB, parsed in about a millisecond.
    const PARSE_TIME_LIMIT: Duration = Duration::from_secs(2);

    /// A folder holding the files that valid suites refer to.
    struct Folder {
        _dir: tempfile::TempDir,
        suite: PathBuf,
    }

    fn folder() -> Folder {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("src")).expect("src folder");
        std::fs::write(dir.path().join("sensor.ko"), b"\x7fELF").expect("module");
        std::fs::write(dir.path().join("good.content"), b"x").expect("content");
        Folder {
            suite: dir.path().join("suite.toml"),
            _dir: dir,
        }
    }

    fn toml_str(s: &str) -> String {
        toml::Value::String(s.to_string()).to_string()
    }

    /// One line of a generated suite, kept structured so mutations can aim at keys
    /// and values.
    #[derive(Debug, Clone)]
    enum Line {
        Header(String),
        Entry(String, String),
        StepsStart,
        Step(String, Vec<(String, String)>),
        StepsEnd,
        Raw(String),
    }

    impl Line {
        fn render(&self) -> String {
            match self {
                Line::Header(h) => h.clone(),
                Line::Entry(k, v) => format!("{k} = {v}"),
                Line::StepsStart => "steps = [".into(),
                Line::Step(kind, fields) => {
                    let fields: Vec<String> =
                        fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("  {{ {kind} = {{ {} }} }},", fields.join(", "))
                }
                Line::StepsEnd => "]".into(),
                Line::Raw(r) => r.clone(),
            }
        }
    }

    /// What a valid suite must parse into.
    #[derive(Debug, Clone)]
    struct Expected {
        scenarios: Vec<(String, usize)>,
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,24}"
    }

    fn duration() -> impl Strategy<Value = String> {
        prop_oneof![
            // Within MAX_DURATION (30 days).
            (1u64..40_000, prop::sample::select(&["ms", "s", "m"][..]))
                .prop_map(|(n, unit)| format!("{n}{unit}")),
            (1u64..700).prop_map(|n| format!("{n}h")),
            (1u64..60, 1u64..60).prop_map(|(m, s)| format!("{m}m {s}s")),
        ]
    }

    fn opt<T: std::fmt::Debug + Clone>(
        s: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<T>> {
        prop::option::of(s)
    }

    /// A valid step other than `boot`, as (kind, fields).
    fn step() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
        let with = |kind: &str, fields: Vec<(&str, Option<String>)>| {
            (
                kind.to_string(),
                fields
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                    .collect::<Vec<_>>(),
            )
        };
        prop_oneof![
            (1u32..5, opt(duration())).prop_map(move |(times, t)| with(
                "reboot",
                vec![
                    ("times", Some(times.to_string())),
                    ("timeout", t.map(|t| toml_str(&t)))
                ]
            )),
            (".{0,40}", opt(any::<i32>()), opt(duration())).prop_map(move |(run, exit, t)| with(
                "exec",
                vec![
                    ("run", Some(toml_str(&run))),
                    ("expect_exit", exit.map(|e| e.to_string())),
                    ("timeout", t.map(|t| toml_str(&t)))
                ]
            )),
            prop::collection::vec(".{0,12}", 1..4).prop_map(move |argv| {
                let argv: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();
                with(
                    "exec",
                    vec![("argv", Some(format!("[{}]", argv.join(", "))))],
                )
            }),
            ("[a-z=0-9 ]{0,20}", any::<bool>()).prop_map(move |(params, now)| with(
                "install_driver",
                vec![
                    ("driver", Some(toml_str("sensor"))),
                    ("params", Some(toml_str(&params))),
                    ("load_now", Some(now.to_string()))
                ]
            )),
            Just(with(
                "uninstall_driver",
                vec![("driver", Some(toml_str("sensor")))]
            )),
            any::<bool>().prop_map(move |reload| with(
                "apply_content",
                vec![
                    ("driver", Some(toml_str("sensor"))),
                    ("file", Some(toml_str("good.content"))),
                    ("reload", Some(reload.to_string()))
                ]
            )),
            Just(with(
                "remove_content",
                vec![("driver", Some(toml_str("sensor")))]
            )),
            duration().prop_map(move |d| with("observe", vec![("duration", Some(toml_str(&d)))])),
            (prop::collection::vec(".{0,20}", 0..3), any::<bool>()).prop_map(
                move |(run, rescue)| {
                    let run: Vec<String> = run.iter().map(|r| toml_str(r)).collect();
                    // A helper VM always has something to do (an empty one is refused).
                    let (via, remove) = if rescue {
                        (toml_str("rescue_boot"), None)
                    } else {
                        (toml_str("helper_vm"), Some(toml_str("sensor")))
                    };
                    with(
                        "recover",
                        vec![
                            ("via", Some(via)),
                            ("remove_content", remove),
                            ("run", Some(format!("[{}]", run.join(", ")))),
                        ],
                    )
                }
            ),
            (any::<bool>(), duration(), 1u32..5).prop_map(move |(file, settle, boots)| with(
                "rollback_content",
                vec![
                    ("driver", Some(toml_str("sensor"))),
                    ("file", file.then(|| toml_str("good.content"))),
                    ("settle", Some(toml_str(&settle))),
                    ("boots", Some(boots.to_string()))
                ]
            )),
        ]
    }

    /// The lines of one `[[scenario]]` named `name`.
    fn scenario(name: String) -> impl Strategy<Value = (Vec<Line>, usize)> {
        (
            opt(duration()),
            prop::collection::vec(step(), 0..6),
            opt(".{0,30}"),
            opt(2u32..10),
            any::<bool>(),
            any::<bool>(),
            opt(prop_oneof![
                duration().prop_map(|d| ("max_boot_time", toml_str(&d))),
                (1u64..1_000_000).prop_map(|ms| ("max_boot_ms", ms.to_string())),
            ]),
            opt(prop::sample::select(&["crash", "hang", "boot_loop"][..])),
            opt(1u32..5),
        )
            .prop_map(
                move |(boot, steps, description, loops, cold, ignore, limit, expect, recovers)| {
                    let mut lines = vec![
                        Line::Header("[[scenario]]".into()),
                        Line::Entry("name".into(), toml_str(&name)),
                    ];
                    if let Some(d) = description {
                        lines.push(Line::Entry("description".into(), toml_str(&d)));
                    }
                    if let Some(n) = loops {
                        lines.push(Line::Entry("boot_loop_boots".into(), n.to_string()));
                    }
                    lines.push(Line::Entry("cold_boot".into(), cold.to_string()));
                    lines.push(Line::Entry("ignore".into(), ignore.to_string()));
                    if let Some(expect) = expect {
                        lines.push(Line::Entry("expect".into(), toml_str(expect)));
                        lines.push(Line::Entry("expect_title".into(), toml_str("BUG")));
                    }
                    lines.push(Line::StepsStart);
                    // A boot step may only come first; a scenario needs one step.
                    let boot = match boot {
                        Some(t) => vec![(
                            "boot".to_string(),
                            vec![("timeout".to_string(), toml_str(&t))],
                        )],
                        None if steps.is_empty() => vec![("boot".to_string(), vec![])],
                        None => vec![],
                    };
                    let count = boot.len() + steps.len();
                    for (kind, fields) in boot.into_iter().chain(steps) {
                        lines.push(Line::Step(kind, fields));
                    }
                    lines.push(Line::StepsEnd);
                    lines.push(Line::Header("[scenario.gates]".into()));
                    if let Some((key, value)) = limit {
                        lines.push(Line::Entry(key.into(), value));
                    }
                    if let Some(n) = recovers {
                        lines.push(Line::Entry("recovers_within".into(), n.to_string()));
                    }
                    (lines, count)
                },
            )
    }

    /// A valid suite against [`folder`], and what it must parse into.
    fn valid_suite() -> impl Strategy<Value = (Vec<Line>, Expected)> {
        let names = prop::collection::btree_set(name(), 1..4)
            .prop_map(|set| set.into_iter().collect::<Vec<_>>());
        (
            opt(".{0,20}"),
            opt(duration()),
            opt((
                prop::sample::select(&["first", "all", "none"][..]),
                any::<u32>(),
                any::<bool>(),
            )),
            any::<bool>(),
            names,
        )
            .prop_flat_map(|(suite_name, boot_timeout, evidence, prebuilt, names)| {
                let scenarios: Vec<_> = names.iter().cloned().map(scenario).collect();
                (
                    Just((suite_name, boot_timeout, evidence, prebuilt, names)),
                    scenarios,
                )
            })
            .prop_map(
                |((suite_name, boot_timeout, evidence, prebuilt, names), scenarios)| {
                    let mut lines = vec![Line::Header("[suite]".into())];
                    if let Some(n) = suite_name {
                        lines.push(Line::Entry("name".into(), toml_str(&n)));
                    }
                    lines.push(Line::Entry("image".into(), toml_str("demo")));
                    if let Some(t) = boot_timeout {
                        lines.push(Line::Entry("boot_timeout".into(), toml_str(&t)));
                    }
                    if let Some((dumps, max, on_hang)) = evidence {
                        lines.push(Line::Header("[suite.evidence]".into()));
                        lines.push(Line::Entry("memory_dumps".into(), toml_str(dumps)));
                        lines.push(Line::Entry("dump_max_mib".into(), max.to_string()));
                        lines.push(Line::Entry("dump_on_hang".into(), on_hang.to_string()));
                    }
                    lines.push(Line::Header("[driver.sensor]".into()));
                    if prebuilt {
                        lines.push(Line::Entry("module".into(), toml_str("sensor.ko")));
                    } else {
                        lines.push(Line::Entry("source".into(), toml_str("src")));
                    }
                    lines.push(Line::Entry("content_file".into(), toml_str("s.content")));
                    lines.push(Line::Entry("reload".into(), toml_str("echo 1 > /sys/x")));
                    let mut expected = Vec::new();
                    for (name, (scenario_lines, steps)) in names.into_iter().zip(scenarios) {
                        lines.extend(scenario_lines);
                        expected.push((name, steps));
                    }
                    (
                        lines,
                        Expected {
                            scenarios: expected,
                        },
                    )
                },
            )
    }

    /// A TOML value, rendered, of a type or size the schema does not expect.
    fn odd_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<String>().prop_map(|s| toml_str(&s)),
            prop::sample::select(
                &[
                    "18446744073709551615s",
                    "18446744073709551615ms",
                    "9223372036854775807s",
                    "584942417355y",
                    "500000000000y",
                    "99999999999999999999999s",
                    "0s",
                    "0",
                    "",
                    " ",
                    "1ns",
                    "-1s",
                    "1.5s",
                    "1e3s",
                    "5 parsecs",
                    "crash",
                    "boot_loop",
                    "sensor",
                    "good.content",
                    "../../etc/passwd",
                    "\u{0}",
                ][..]
            )
            .prop_map(toml_str),
            prop::sample::select(
                &[
                    "18446744073709551616",
                    "-9223372036854775808",
                    "4294967296",
                    "-1",
                    "0x7fffffff",
                    "1_000",
                    "nan",
                    "-inf",
                    "1979-05-27T07:32:00Z",
                    "07:32:00",
                    "'literal'",
                    "'''multi\nline'''",
                    "\"\"\"multi\nline\"\"\"",
                    "\"unterminated",
                    "[1,",
                    "{a=",
                    "{}",
                    "[]",
                    "",
                    "=",
                ][..]
            )
            .prop_map(str::to_string),
            gen::huge_string(100_000).prop_map(|s| toml_str(&s)),
            (1usize..300).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d))),
            (1usize..300).prop_map(|d| format!("{}1{}", "{a=".repeat(d), "}".repeat(d))),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|kv| {
                    let kv: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", kv.join(", "))
                }),
            ]
        })
    }

    fn key_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(
                &[
                    "name",
                    "image",
                    "boot_timeout",
                    "evidence",
                    "memory_dumps",
                    "dump_max_mib",
                    "dump_on_hang",
                    "source",
                    "module",
                    "content_file",
                    "reload",
                    "steps",
                    "gates",
                    "expect",
                    "expect_title",
                    "boot_loop_boots",
                    "cold_boot",
                    "ignore",
                    "max_boot_time",
                    "max_boot_ms",
                    "no_crash",
                    "no_hang",
                    "no_boot_loop",
                    "recovers_within",
                    "times",
                    "timeout",
                    "run",
                    "argv",
                    "expect_exit",
                    "driver",
                    "params",
                    "load_now",
                    "file",
                    "duration",
                    "suite",
                    "scenario",
                    "boot",
                    "exec",
                    "\"quoted key\"",
                    "a.b.c",
                    "\"\"",
                ][..]
            )
            .prop_map(str::to_string),
            "[a-zA-Z_-]{1,16}",
        ]
    }

    /// A change aimed at a suite's structure.
    #[derive(Debug, Clone)]
    enum Mutation {
        Value(Index, String),
        StepField(Index, Index, String),
        Key(Index, String),
        StepKind(Index, String),
        DeleteLine(Index),
        DuplicateLine(Index),
        InsertLine(Index, String),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            4 => (any::<Index>(), odd_value()).prop_map(|(i, v)| Mutation::Value(i, v)),
            3 => (any::<Index>(), any::<Index>(), odd_value())
                .prop_map(|(i, j, v)| Mutation::StepField(i, j, v)),
            2 => (any::<Index>(), key_name()).prop_map(|(i, k)| Mutation::Key(i, k)),
            1 => (any::<Index>(), key_name()).prop_map(|(i, k)| Mutation::StepKind(i, k)),
            1 => any::<Index>().prop_map(Mutation::DeleteLine),
            1 => any::<Index>().prop_map(Mutation::DuplicateLine),
            2 => (
                any::<Index>(),
                prop_oneof![
                    prop::sample::select(
                        &[
                            "[suite]", "[[scenario]]", "[scenario.gates]", "[driver.sensor]",
                            "[driver.\"bad name\"]", "[[suite]]", "[scenario]", "steps = []",
                            "[[scenario.steps]]", "[driver]", "x = 1", "=", "[", "]]",
                            "[[scenario]]\nname = \"extra\"",
                        ][..]
                    )
                    .prop_map(str::to_string),
                    any::<String>(),
                    (key_name(), odd_value()).prop_map(|(k, v)| format!("{k} = {v}")),
                ]
            )
                .prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        ]
    }

    fn mutate(lines: &mut Vec<Line>, m: &Mutation) {
        let entries: Vec<usize> = (0..lines.len())
            .filter(|&i| matches!(lines[i], Line::Entry(..)))
            .collect();
        let steps: Vec<usize> = (0..lines.len())
            .filter(|&i| matches!(lines[i], Line::Step(..)))
            .collect();
        match m {
            Mutation::Value(i, v) | Mutation::Key(i, v) if !entries.is_empty() => {
                if let Line::Entry(key, value) = &mut lines[entries[i.index(entries.len())]] {
                    match m {
                        Mutation::Value(..) => *value = v.clone(),
                        _ => *key = v.clone(),
                    }
                }
            }
            Mutation::StepField(i, j, v) if !steps.is_empty() => {
                if let Line::Step(_, fields) = &mut lines[steps[i.index(steps.len())]] {
                    if fields.is_empty() {
                        fields.push(("timeout".into(), v.clone()));
                    } else {
                        let at = j.index(fields.len());
                        fields[at].1 = v.clone();
                    }
                }
            }
            Mutation::StepKind(i, k) if !steps.is_empty() => {
                if let Line::Step(kind, _) = &mut lines[steps[i.index(steps.len())]] {
                    *kind = k.clone();
                }
            }
            Mutation::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i.index(lines.len()));
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let at = i.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
            Mutation::InsertLine(i, l) => {
                lines.insert(i.index(lines.len() + 1), Line::Raw(l.clone()));
            }
            _ => {}
        }
    }

    fn render(lines: &[Line]) -> String {
        let mut text: String = lines.iter().map(|l| l.render() + "\n").collect();
        text.insert(0, '\n');
        text
    }

    /// Every duration a suite hands the runner, which adds them to `Instant::now()`.
    fn durations(suite: &Suite) -> Vec<Duration> {
        let mut all: Vec<Duration> = suite.boot_timeout.into_iter().collect();
        for scenario in &suite.scenarios {
            all.extend(scenario.gates.boot_time_limit());
            for step in &scenario.steps {
                match step {
                    Step::Boot(b) => all.extend(b.timeout),
                    Step::Reboot(r) => all.extend(r.timeout),
                    Step::Exec(e) => all.push(e.timeout()),
                    Step::Observe(o) => all.push(o.duration),
                    _ => {}
                }
            }
        }
        all
    }

    /// What must hold for any suite text: it parses, or fails with an error located
    /// inside the text; what parses is usable by the runner.
    fn check(path: &Path, text: &str) -> TestCaseResult {
        let started = Instant::now();
        let result = suite::parse(path, text);
        let took = started.elapsed();
        prop_assert!(took < PARSE_TIME_LIMIT, "parse took {took:?}");
        match result {
            Ok(suite) => {
                prop_assert!(!suite.scenarios.is_empty());
                for scenario in &suite.scenarios {
                    prop_assert!(!scenario.steps.is_empty());
                    prop_assert!(scenario.boot_loop_boots >= 2);
                    for step in &scenario.steps {
                        prop_assert!(!step.to_string().is_empty());
                    }
                }
                for d in durations(&suite) {
                    prop_assert!(
                        Instant::now().checked_add(d).is_some(),
                        "accepted a duration of {d:?}, which overflows a deadline"
                    );
                }
            }
            Err(e) => {
                let shown = e.to_string();
                let SuiteError::Invalid {
                    path: got,
                    line,
                    column,
                    message,
                    ..
                } = e
                else {
                    return Err(TestCaseError::fail(format!("not a located error: {shown}")));
                };
                prop_assert_eq!(&got, path);
                prop_assert!(!message.trim().is_empty());
                let lines: Vec<&str> = text.split('\n').collect();
                prop_assert!(
                    line >= 1 && line <= lines.len(),
                    "line {line} of {}",
                    lines.len()
                );
                let width = lines[line - 1].chars().count();
                prop_assert!(
                    column >= 1 && column <= width + 1,
                    "column {column} on a line of {width} characters"
                );
                let prefix = format!("{}:{line}:{column}: ", path.display());
                prop_assert!(shown.starts_with(&prefix), "{shown}");
            }
        }
        Ok(())
    }

    #[test]
    fn valid_suites_parse_as_written() {
        let folder = folder();
        fuzz(
            TARGET,
            "valid_suites_parse_as_written",
            200,
            valid_suite(),
            |(lines, expected)| {
                let text = render(&lines);
                let suite = suite::parse(&folder.suite, &text)
                    .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
                let got: Vec<(String, usize)> = suite
                    .scenarios
                    .iter()
                    .map(|s| (s.name.clone(), s.steps.len()))
                    .collect();
                prop_assert_eq!(got, expected.scenarios);
                check(&folder.suite, &text)
            },
        );
    }

    #[test]
    fn mutated_suites_parse_or_fail_located() {
        let folder = folder();
        let strategy = (valid_suite(), prop::collection::vec(mutation(), 1..5));
        fuzz(
            TARGET,
            "mutated_suites_parse_or_fail_located",
            400,
            strategy,
            |((mut lines, _), ms)| {
                for m in &ms {
                    mutate(&mut lines, m);
                }
                check(&folder.suite, &render(&lines))
            },
        );
    }

    #[test]
    fn edited_suite_text_parses_or_fails_located() {
        let folder = folder();
        let strategy = (valid_suite(), prop::collection::vec(gen::edit(), 1..6));
        fuzz(
            TARGET,
            "edited_suite_text_parses_or_fails_located",
            400,
            strategy,
            |((lines, _), edits)| {
                let mut bytes = render(&lines).into_bytes();
                for e in &edits {
                    gen::apply(&mut bytes, e);
                }
                // parse() takes text; invalid UTF-8 is the loader's business (below).
                check(&folder.suite, &String::from_utf8_lossy(&bytes))
            },
        );
    }

    #[test]
    fn arbitrary_text_parses_or_fails_located() {
        let folder = folder();
        let strategy = prop_oneof![
            any::<String>(),
            "[\\[\\]{}=\"'a-z0-9_.,# \n\\\\-]{0,300}",
            prop::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ];
        fuzz(
            TARGET,
            "arbitrary_text_parses_or_fails_located",
            500,
            strategy,
            |text| check(&folder.suite, &text),
        );
    }

    /// The loader reads bytes from disk: a file that is not UTF-8 is a suite error at
    /// the offending byte, like any other.
    #[test]
    fn suite_files_of_any_bytes_load_or_fail_located() {
        let folder = folder();
        let strategy = (valid_suite(), prop::collection::vec(gen::edit(), 0..4));
        fuzz(
            TARGET,
            "suite_files_of_any_bytes_load_or_fail_located",
            200,
            strategy,
            |((lines, _), edits)| {
                let mut bytes = render(&lines).into_bytes();
                for e in &edits {
                    gen::apply(&mut bytes, e);
                }
                std::fs::write(&folder.suite, &bytes)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                match suite::load_file(&folder.suite) {
                    Ok(_) => prop_assert!(std::str::from_utf8(&bytes).is_ok()),
                    Err(SuiteError::Invalid { line, column, .. }) => {
                        prop_assert!(line >= 1 && column >= 1);
                        if let Err(e) = std::str::from_utf8(&bytes) {
                            let before = &bytes[..e.valid_up_to()];
                            let want_line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                            prop_assert!(
                                line <= want_line,
                                "line {line} is past the bad byte on line {want_line}"
                            );
                        }
                    }
                    Err(other) => prop_assert!(false, "not a located error: {other}"),
                }
                Ok(())
            },
        );
    }

    // ---- regressions ----

    #[test]
    fn durations_that_overflow_a_deadline_are_rejected_with_their_location() {
        let folder = folder();
        for huge in [
            "18446744073709551615s",
            "500000000000y",
            "9223372036854775807s",
        ] {
            let text = format!(
                "[suite]\nimage = \"demo\"\nboot_timeout = \"{huge}\"\n\n[[scenario]]\nname = \"a\"\nsteps = [{{ boot = {{}} }}]\n"
            );
            match suite::parse(&folder.suite, &text) {
                Err(SuiteError::Invalid {
                    line,
                    column,
                    message,
                    ..
                }) => {
                    assert_eq!((line, column), (3, 16), "{message}");
                    assert!(message.contains(huge), "{message}");
                }
                other => panic!("{huge} must be rejected, got {other:?}"),
            }
        }
        let observe = "[suite]\nimage = \"demo\"\n[[scenario]]\nname = \"a\"\nsteps = [{ observe = { duration = \"18446744073709551615s\" } }]\n";
        assert!(matches!(
            suite::parse(&folder.suite, observe),
            Err(SuiteError::Invalid { line: 5, .. })
        ));
        let fine = "[suite]\nimage = \"demo\"\nboot_timeout = \"7d\"\n[[scenario]]\nname = \"a\"\nsteps = [{ boot = {} }]\n";
        assert!(suite::parse(&folder.suite, fine).is_ok());
    }

    #[test]
    fn invalid_utf8_in_a_suite_file_is_located() {
        let folder = folder();
        std::fs::write(&folder.suite, b"[suite]\nimage = \"de\xffmo\"\n").expect("write");
        match suite::load_file(&folder.suite) {
            Err(SuiteError::Invalid {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (2, 12), "{message}");
                assert!(message.contains("UTF-8"), "{message}");
            }
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    #[test]
    fn stray_carriage_return_error_names_the_character() {
        let folder = folder();
        // toml reports a lone CR with an empty message.
        let text = "[suite]\nimage = \"demo\"\n\r[[scenario]]\n";
        match suite::parse(&folder.suite, text) {
            Err(SuiteError::Invalid {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (3, 1), "{message}");
                assert!(message.contains("'\\r'"), "{message}");
            }
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    #[test]
    fn endless_suite_file_is_refused_not_read_into_memory() {
        // /dev/zero never ends: reading it whole would take all memory.
        match suite::load_file(Path::new("/dev/zero")) {
            Err(SuiteError::TooLarge { path, limit }) => {
                assert_eq!(path, Path::new("/dev/zero"));
                assert_eq!(limit, suite::MAX_SUITE_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}

// ---- console: capture and crash detector -----------------------------------------

mod console {
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
        include_bytes!("fixtures/consoles/clean_boot.log"),
        include_bytes!("fixtures/consoles/demo_sensor_boot_oops.log"),
        include_bytes!("fixtures/consoles/demo_sensor_live_reload_oops.log"),
        include_bytes!("fixtures/consoles/hang_init_soft_lockup.log"),
        include_bytes!("fixtures/consoles/null_deref_boot.log"),
        include_bytes!("fixtures/consoles/sysrq_panic.log"),
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
                report.title.starts_with(&report.kind)
                    || report.title.len() == detect::MAX_TITLE_BYTES,
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
            (prop::collection::vec(any::<u8>(), 1..8), 1usize..40_000)
                .prop_map(|(p, n)| p.repeat(n)),
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
}

// ---- QMP -------------------------------------------------------------------------

/// The listening end of a fake peer (QEMU's QMP, the guest agent): a socket in a
/// folder of its own; one connection per case.
mod fake_peer {
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    pub struct Server {
        _dir: tempfile::TempDir,
        pub path: PathBuf,
        pub listener: UnixListener,
    }

    pub fn server(socket: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(socket);
        let listener = UnixListener::bind(&path).expect("bind");
        Server {
            _dir: dir,
            path,
            listener,
        }
    }
}

mod qmp {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc::RecvTimeoutError;
    use std::thread;
    use std::time::{Duration, Instant};

    use bootgate::qemu::qmp::{QmpClient, QmpError, QmpMessage};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseResult;
    use serde_json::{json, Value};

    use crate::engine::fuzz;
    use crate::fake_peer::{server, Server};
    use crate::gen::{self, Edit};

    const TARGET: &str = "qmp";

    /// Bound on anything the fake QEMU waits for; the client answers in milliseconds.
    const PEER_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long the client may take to connect, negotiate and report the stream
    /// closed once the fake QEMU has hung up (well under the 10 s handshake limit,
    /// which a hang would run into).
    const CASE_TIME_LIMIT: Duration = Duration::from_secs(4);
    /// Timeout of the one command a case may issue.
    const EXECUTE_TIMEOUT: Duration = Duration::from_secs(1);

    /// What the fake QEMU sends: a greeting, the reply to `qmp_capabilities` (the
    /// right one when `None`), then messages, each followed by a line end.
    #[derive(Debug, Clone)]
    struct Script {
        greeting: Vec<u8>,
        capabilities: Option<Vec<u8>>,
        messages: Vec<(Value, Vec<Edit>)>,
        line_end: &'static str,
        chunk: usize,
        execute: bool,
    }

    impl Script {
        fn valid_handshake(&self) -> bool {
            self.capabilities.is_none() && self.greeting == greeting().to_string().into_bytes()
        }

        /// The names of the events, if every message is a well-formed event.
        fn events(&self) -> Option<Vec<String>> {
            self.messages
                .iter()
                .map(|(v, edits)| {
                    edits
                        .is_empty()
                        .then(|| v.get("event").and_then(Value::as_str).map(str::to_string))
                        .flatten()
                })
                .collect()
        }
    }

    fn greeting() -> Value {
        json!({"QMP": {"version": {"qemu": {"micro": 3, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}})
    }

    /// The greeting, a damaged one, or anything at all.
    fn greeting_bytes() -> impl Strategy<Value = Vec<u8>> {
        let pointers = prop::sample::select(
            &[
                "/QMP",
                "/QMP/version",
                "/QMP/version/qemu",
                "/QMP/version/qemu/major",
                "/QMP/version/qemu/minor",
                "/QMP/version/qemu/micro",
                "/QMP/version/package",
                "/QMP/capabilities",
            ][..],
        );
        prop_oneof![
            4 => Just(greeting().to_string().into_bytes()),
            2 => (pointers, gen::wrong_type()).prop_map(|(at, v)| {
                let mut g = greeting();
                if let Some(slot) = g.pointer_mut(at) {
                    *slot = v;
                }
                g.to_string().into_bytes()
            }),
            2 => gen::wire(Just(greeting())),
            1 => gen::wire(gen::json()),
        ]
    }

    fn id() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            3 => (0u64..4).prop_map(|n| Some(Value::from(n))),
            1 => Just(Some(Value::from(u64::MAX))),
            1 => gen::wrong_type().prop_map(Some),
            1 => Just(None),
        ]
    }

    fn with_id(mut object: Value, id: Option<Value>) -> Value {
        if let (Some(id), Some(map)) = (id, object.as_object_mut()) {
            map.insert("id".into(), id);
        }
        object
    }

    /// Events, replies and errors with right and wrong types, and anything else.
    fn message() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            3 => prop::sample::select(
                &["STOP", "RESUME", "RESET", "SHUTDOWN", "GUEST_PANICKED", "DUMP_COMPLETED", ""][..]
            )
            .prop_map(Value::from),
            1 => any::<String>().prop_map(Value::from),
            1 => gen::wrong_type(),
        ];
        let timestamp = prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(s, us)| json!({"seconds": s, "microseconds": us})),
            (0u64..2_000_000_000, 0u64..1_000_000)
                .prop_map(|(s, us)| json!({"seconds": s, "microseconds": us})),
            gen::json(),
        ];
        let event = (
            name,
            prop::option::of(gen::json()),
            prop::option::of(timestamp),
        )
            .prop_map(|(name, data, timestamp)| {
                let mut e = json!({ "event": name });
                if let Some(map) = e.as_object_mut() {
                    if let Some(d) = data {
                        map.insert("data".into(), d);
                    }
                    if let Some(t) = timestamp {
                        map.insert("timestamp".into(), t);
                    }
                }
                e
            });
        let reply = (gen::json(), id()).prop_map(|(r, id)| with_id(json!({ "return": r }), id));
        let error = (
            prop_oneof![
                (gen::wrong_type(), gen::wrong_type())
                    .prop_map(|(c, d)| json!({"class": c, "desc": d})),
                Just(json!({"class": "GenericError", "desc": "no"})),
                gen::json(),
            ],
            id(),
        )
            .prop_map(|(e, id)| with_id(json!({ "error": e }), id));
        prop_oneof![
            4 => event,
            2 => reply,
            1 => error,
            1 => Just(greeting()),
            1 => gen::json(),
        ]
    }

    fn message_with_edits() -> impl Strategy<Value = (Value, Vec<Edit>)> {
        (
            message(),
            prop_oneof![
                3 => Just(vec![]),
                1 => prop::collection::vec(gen::edit(), 1..4),
            ],
        )
    }

    fn script() -> impl Strategy<Value = Script> {
        (
            greeting_bytes(),
            prop_oneof![
                4 => Just(None),
                1 => gen::wire(gen::json()).prop_map(Some),
            ],
            prop::collection::vec(message_with_edits(), 0..12),
            prop::sample::select(&["\n", "\r\n", "\n\n", "\n \n"][..]),
            prop_oneof![Just(1usize << 20), 1usize..64],
            any::<bool>(),
        )
            .prop_map(
                |(greeting, capabilities, messages, line_end, chunk, execute)| Script {
                    greeting,
                    capabilities,
                    messages,
                    line_end,
                    chunk,
                    execute,
                },
            )
    }

    /// Plays `script` as QEMU would, then hangs up and waits for the client to.
    fn play(stream: UnixStream, script: &Script) {
        let _ = stream.set_read_timeout(Some(PEER_TIMEOUT));
        let _ = stream.set_write_timeout(Some(PEER_TIMEOUT));
        let Ok(read_half) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let mut writer = stream;
        let mut send = |bytes: &[u8]| -> bool {
            bytes
                .chunks(script.chunk.max(1))
                .all(|c| writer.write_all(c).is_ok())
        };
        let mut out = script.greeting.clone();
        out.push(b'\n');
        // A blank greeting line is skipped by the client, which keeps waiting for
        // one, so there is no command to wait for: carry on at once.
        let blank = script.greeting.iter().all(u8::is_ascii_whitespace);
        if send(&out) {
            let mut command = String::new();
            if blank || reader.read_line(&mut command).is_ok() {
                let id = serde_json::from_str::<Value>(&command)
                    .ok()
                    .and_then(|c| c.get("id").cloned())
                    .unwrap_or(Value::Null);
                let mut out = match &script.capabilities {
                    Some(bytes) => bytes.clone(),
                    None => json!({"return": {}, "id": id}).to_string().into_bytes(),
                };
                out.extend_from_slice(script.line_end.as_bytes());
                for (value, edits) in &script.messages {
                    let mut bytes = value.to_string().into_bytes();
                    for e in edits {
                        gen::apply(&mut bytes, e);
                    }
                    out.extend_from_slice(&bytes);
                    out.extend_from_slice(script.line_end.as_bytes());
                }
                send(&out);
            }
        }
        let _ = writer.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    }

    /// Connects to the fake QEMU playing `script` and reads until the client reports
    /// the stream closed; checks what must hold whatever QEMU sent.
    fn run(server: &Server, script: Script) -> TestCaseResult {
        let listener = server
            .listener
            .try_clone()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let peer_script = script.clone();
        let peer = thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                play(stream, &peer_script);
            }
        });
        let started = Instant::now();
        let outcome = check_client(server, &script, started);
        // The client is gone by now, so the peer sees the socket close.
        let joined = peer.join();
        outcome?;
        prop_assert!(joined.is_ok(), "the fake qemu panicked");
        Ok(())
    }

    fn check_client(server: &Server, script: &Script, started: Instant) -> TestCaseResult {
        let connected = QmpClient::connect(&server.path, PEER_TIMEOUT);
        prop_assert!(
            started.elapsed() < CASE_TIME_LIMIT,
            "connect took {:?}",
            started.elapsed()
        );
        let (client, rx) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                prop_assert!(!script.valid_handshake(), "a valid handshake failed: {e}");
                prop_assert!(
                    matches!(
                        e,
                        QmpError::Protocol { .. } | QmpError::Command { .. } | QmpError::Closed
                    ),
                    "unexpected error kind: {e:?}"
                );
                return Ok(());
            }
        };
        if script.execute {
            let result = client.execute("query-status", None, EXECUTE_TIMEOUT);
            prop_assert!(
                !matches!(result, Err(QmpError::Io(_) | QmpError::Connect { .. })),
                "{result:?}"
            );
        }
        let mut names = Vec::new();
        let closed = loop {
            let left = CASE_TIME_LIMIT.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(QmpMessage::Event(event)) => names.push(event.name),
                Ok(QmpMessage::Closed(outcome)) => break outcome,
                Err(RecvTimeoutError::Timeout) => {
                    prop_assert!(false, "no Closed within {CASE_TIME_LIMIT:?} of a hang-up")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    prop_assert!(
                        false,
                        "the reader thread ended without Closed (it panicked)"
                    )
                }
            }
        };
        drop(client);
        prop_assert!(
            matches!(
                rx.recv_timeout(PEER_TIMEOUT),
                Err(RecvTimeoutError::Disconnected)
            ),
            "messages after Closed"
        );
        if let (true, Some(events)) = (script.valid_handshake(), script.events()) {
            prop_assert!(closed.is_none(), "{closed:?}");
            prop_assert_eq!(names, events);
        }
        Ok(())
    }

    #[test]
    fn client_survives_any_qmp_stream() {
        let server = server("qmp.sock");
        fuzz(
            TARGET,
            "client_survives_any_qmp_stream",
            250,
            script(),
            |script| run(&server, script),
        );
    }

    #[test]
    fn client_survives_raw_bytes() {
        let server = server("qmp.sock");
        let strategy = (
            prop_oneof![
                Just(greeting().to_string().into_bytes()),
                prop::collection::vec(any::<u8>(), 0..200),
            ],
            prop::collection::vec(any::<u8>(), 0..4000),
            any::<bool>(),
        )
            .prop_map(|(greeting, body, execute)| Script {
                greeting,
                capabilities: Some(body),
                messages: vec![],
                line_end: "",
                chunk: 1 << 20,
                execute,
            });
        fuzz(
            TARGET,
            "client_survives_raw_bytes",
            250,
            strategy,
            |script| run(&server, script),
        );
    }
}

// ---- guest agent -----------------------------------------------------------------

mod agent {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::thread;
    use std::time::{Duration, Instant};

    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use bootgate::agent::{self as ga, AgentClient, AgentError, ExecStatus, ShutdownMode};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseResult;
    use serde_json::{json, Value};

    use crate::engine::fuzz;
    use crate::fake_peer::{server, Server};
    use crate::gen;

    const TARGET: &str = "agent";

    const SENTINEL: u8 = 0xFF;

    /// Timeout given to each client call. Cases end long before it: the fake agent
    /// hangs up once it has nothing more to say.
    const CALL_TIMEOUT: Duration = Duration::from_secs(3);
    /// Silence after which a hostile fake agent hangs up: the client is waiting for
    /// bytes that will never come, and the hang-up must end that wait. A correct
    /// one waits for the client's next command up to [`CALL_TIMEOUT`] instead (the
    /// client hangs up when done), so a slow client never loses its reply.
    const PEER_IDLE: Duration = Duration::from_millis(20);
    /// How long one case may take: a call plus the cleanup close that follows a
    /// failed file transfer, both cut short by the hang-up.
    const CASE_TIME_LIMIT: Duration = Duration::from_secs(2);
    /// Largest file a case reads back.
    const READ_LIMIT: u64 = 1 << 20;

    /// One part of the fake agent's answer to `guest-sync-delimited`.
    #[derive(Debug, Clone)]
    enum SyncPart {
        Junk(Vec<u8>),
        Sentinel,
        /// The reply to an older sync.
        Stale(u64),
        /// `{"return": <the id asked for>}`.
        Ours,
        /// Anything else where the reply should be.
        Odd(Vec<u8>),
    }

    /// The client call a case makes.
    #[derive(Debug, Clone)]
    enum Op {
        Ping,
        Info,
        ExecStart,
        ExecStatus,
        ReadFile,
        WriteFile(Vec<u8>),
        Shutdown,
        Sync,
    }

    /// What the client must return when the agent behaves.
    #[derive(Debug, Clone, PartialEq)]
    enum Want {
        Done,
        Names(Vec<String>),
        Pid(i64),
        Status(ExecStatus),
        Data(Vec<u8>),
    }

    #[derive(Debug, Clone)]
    struct Script {
        op: Op,
        /// Answer our 0xFF with the parse error qemu-ga sends.
        parse_error: bool,
        sync: Vec<SyncPart>,
        /// One reply per command after the sync, in order.
        replies: Vec<Vec<u8>>,
        chunk: usize,
        /// `None` for a hostile script, whose outcome is anything but a panic or hang.
        want: Option<Want>,
    }

    fn b64(bytes: &[u8]) -> String {
        BASE64.encode(bytes)
    }

    fn ret(value: Value) -> Vec<u8> {
        format!("{}\n", json!({ "return": value })).into_bytes()
    }

    /// A well-behaved sync answer: junk, older replies, then ours.
    fn good_sync() -> impl Strategy<Value = Vec<SyncPart>> {
        (
            prop::collection::vec(
                any::<u8>().prop_filter("not the sentinel", |b| *b != SENTINEL),
                0..40,
            ),
            prop::collection::vec(0u64..1000, 0..3),
        )
            .prop_map(|(junk, stale)| {
                let mut parts = vec![SyncPart::Junk(junk)];
                for id in stale {
                    parts.push(SyncPart::Sentinel);
                    parts.push(SyncPart::Stale(id));
                }
                parts.push(SyncPart::Sentinel);
                parts.push(SyncPart::Ours);
                parts
            })
    }

    fn exec_status() -> impl Strategy<Value = (Value, ExecStatus)> {
        (
            any::<bool>(),
            prop::option::of(any::<i32>()),
            prop::option::of(any::<i32>()),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
            any::<bool>(),
        )
            .prop_map(|(exited, code, signal, out, err, truncated)| {
                let mut v = json!({ "exited": exited, "out-truncated": truncated });
                if let Some(map) = v.as_object_mut() {
                    if let Some(c) = code {
                        map.insert("exitcode".into(), c.into());
                    }
                    if let Some(s) = signal {
                        map.insert("signal".into(), s.into());
                    }
                    if let Some(o) = &out {
                        map.insert("out-data".into(), b64(o).into());
                    }
                    if let Some(e) = &err {
                        map.insert("err-data".into(), b64(e).into());
                    }
                }
                let status = ExecStatus {
                    exited,
                    exit_code: code,
                    signal,
                    stdout: out.unwrap_or_default(),
                    stderr: err.unwrap_or_default(),
                    stdout_truncated: truncated,
                    stderr_truncated: false,
                };
                (v, status)
            })
    }

    /// A call, the replies a correct agent gives to it, and what it must return.
    fn good_exchange() -> impl Strategy<Value = (Op, Vec<Vec<u8>>, Want)> {
        let commands = prop::collection::vec(("[a-z-]{1,20}", any::<bool>()), 0..20);
        let chunks = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..500), 1..5);
        prop_oneof![
            Just((Op::Ping, vec![ret(json!({}))], Want::Done)),
            commands.prop_map(|cs| {
                let list: Vec<Value> = cs
                    .iter()
                    .map(|(n, e)| json!({"name": n, "enabled": e, "success-response": true}))
                    .collect();
                let names = cs
                    .iter()
                    .filter(|(_, e)| *e)
                    .map(|(n, _)| n.clone())
                    .collect();
                (
                    Op::Info,
                    vec![ret(json!({"version": "7.2", "supported_commands": list}))],
                    Want::Names(names),
                )
            }),
            any::<i64>().prop_map(|pid| (
                Op::ExecStart,
                vec![ret(json!({ "pid": pid }))],
                Want::Pid(pid)
            )),
            exec_status().prop_map(|(v, s)| (Op::ExecStatus, vec![ret(v)], Want::Status(s))),
            (any::<i64>(), chunks).prop_map(|(handle, chunks)| {
                let mut replies = vec![ret(json!(handle))];
                for (i, c) in chunks.iter().enumerate() {
                    let eof = i + 1 == chunks.len();
                    replies.push(ret(
                        json!({"count": c.len(), "buf-b64": b64(c), "eof": eof}),
                    ));
                }
                replies.push(ret(json!({})));
                (Op::ReadFile, replies, Want::Data(chunks.concat()))
            }),
            (any::<i64>(), prop::collection::vec(any::<u8>(), 0..2000)).prop_map(
                |(handle, data)| {
                    let mut replies = vec![ret(json!(handle))];
                    if !data.is_empty() {
                        replies.push(ret(json!({"count": data.len(), "eof": false})));
                    }
                    replies.push(ret(json!({})));
                    (Op::WriteFile(data), replies, Want::Done)
                }
            ),
            Just((Op::Shutdown, vec![], Want::Done)),
            Just((Op::Sync, vec![], Want::Done)),
        ]
    }

    fn good_script() -> impl Strategy<Value = Script> {
        (
            good_exchange(),
            any::<bool>(),
            good_sync(),
            prop_oneof![Just(1usize << 20), 1usize..32],
        )
            .prop_map(|((op, replies, want), parse_error, sync, chunk)| Script {
                op,
                parse_error,
                sync,
                replies,
                chunk,
                want: Some(want),
            })
    }

    /// A reply of the right shape with one value of the wrong type, an error reply,
    /// a huge one, or anything.
    fn odd_reply() -> impl Strategy<Value = Vec<u8>> {
        let pointers = prop::sample::select(
            &[
                "/return",
                "/return/pid",
                "/return/exited",
                "/return/exitcode",
                "/return/out-data",
                "/return/count",
                "/return/buf-b64",
                "/return/eof",
                "/return/supported_commands",
                "/error",
                "/error/class",
            ][..],
        );
        let shaped = prop_oneof![
            Just(
                json!({"return": {"pid": 7, "exited": true, "exitcode": 0, "out-data": "aGk=", "count": 2, "buf-b64": "aGk=", "eof": true, "supported_commands": []}})
            ),
            Just(json!({"error": {"class": "GenericError", "desc": "no"}})),
            Just(json!({"return": 1})),
        ];
        prop_oneof![
            3 => (shaped, pointers, gen::wrong_type()).prop_map(|(mut v, at, odd)| {
                if let Some(slot) = v.pointer_mut(at) {
                    *slot = odd;
                }
                ret(v.get("return").cloned().unwrap_or(v))
            }),
            1 => gen::huge_string(100_000).prop_map(|s| ret(json!({"out-data": s, "exited": true, "buf-b64": "", "count": 0, "eof": false}))),
            1 => prop::collection::vec(any::<u8>(), 0..2000)
                .prop_map(|b| ret(json!({"exited": true, "out-data": b64(&b), "pid": 1}))),
            3 => gen::wire(gen::json()),
            1 => prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    fn hostile_script() -> impl Strategy<Value = Script> {
        let part = prop_oneof![
            2 => prop::collection::vec(any::<u8>(), 0..60).prop_map(SyncPart::Junk),
            3 => Just(SyncPart::Sentinel),
            1 => (0u64..1000).prop_map(SyncPart::Stale),
            3 => Just(SyncPart::Ours),
            2 => gen::wire(gen::json()).prop_map(SyncPart::Odd),
        ];
        let op = prop_oneof![
            Just(Op::Ping),
            Just(Op::Info),
            Just(Op::ExecStart),
            Just(Op::ExecStatus),
            Just(Op::ReadFile),
            prop::collection::vec(any::<u8>(), 0..100).prop_map(Op::WriteFile),
            Just(Op::Shutdown),
            Just(Op::Sync),
        ];
        (
            op,
            any::<bool>(),
            prop_oneof![good_sync(), prop::collection::vec(part, 0..8)],
            prop::collection::vec(odd_reply(), 0..5),
            prop_oneof![Just(1usize << 20), 1usize..32],
        )
            .prop_map(|(op, parse_error, sync, replies, chunk)| Script {
                op,
                parse_error,
                sync,
                replies,
                chunk,
                want: None,
            })
    }

    /// What the client sent: its 0xFF, or one JSON command.
    enum Request {
        Sentinel,
        Command(Value),
    }

    /// The fake agent's view of the client's stream.
    struct Requests {
        stream: UnixStream,
        buf: Vec<u8>,
    }

    impl Requests {
        /// The next request, or `None` once the client hangs up or goes quiet.
        fn next(&mut self) -> Option<Request> {
            loop {
                let skip = self
                    .buf
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(self.buf.len());
                self.buf.drain(..skip);
                if self.buf.first() == Some(&SENTINEL) {
                    self.buf.remove(0);
                    return Some(Request::Sentinel);
                }
                let mut values =
                    serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
                if let Some(Ok(value)) = values.next() {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    return Some(Request::Command(value));
                }
                let mut chunk = [0u8; 65536];
                match self.stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }

    /// Plays `script` as the guest agent: answers the 0xFF and every sync, and each
    /// other command with the next reply; hangs up when out of replies or when the
    /// client goes quiet.
    fn play(stream: UnixStream, script: &Script) {
        let idle = if script.want.is_some() {
            CALL_TIMEOUT
        } else {
            PEER_IDLE
        };
        let _ = stream.set_read_timeout(Some(idle));
        let _ = stream.set_write_timeout(Some(CALL_TIMEOUT));
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let mut send = |bytes: &[u8]| -> bool {
            bytes
                .chunks(script.chunk.max(1))
                .all(|c| writer.write_all(c).is_ok())
        };
        let mut requests = Requests {
            stream,
            buf: Vec::new(),
        };
        let mut replies = script.replies.iter();
        while let Some(request) = requests.next() {
            let ok = match request {
                Request::Sentinel if script.parse_error => send(
                    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid JSON syntax\"}}\n",
                ),
                Request::Sentinel => true,
                Request::Command(cmd) if cmd["execute"] == "guest-sync-delimited" => {
                    let id = cmd["arguments"]["id"].clone();
                    let mut out = Vec::new();
                    for part in &script.sync {
                        match part {
                            SyncPart::Junk(b) | SyncPart::Odd(b) => out.extend_from_slice(b),
                            SyncPart::Sentinel => out.push(SENTINEL),
                            SyncPart::Stale(n) => out.extend(ret(json!(n))),
                            SyncPart::Ours => out.extend(ret(id.clone())),
                        }
                    }
                    send(&out)
                }
                Request::Command(_) => match replies.next() {
                    Some(reply) => send(reply),
                    None => false,
                },
            };
            if !ok {
                break;
            }
        }
    }

    fn call(client: &mut AgentClient, op: &Op) -> Result<Want, AgentError> {
        let argv = ["/bin/true".to_string()];
        Ok(match op {
            Op::Ping => client.ping(CALL_TIMEOUT).map(|()| Want::Done)?,
            Op::Info => Want::Names(client.info_commands(CALL_TIMEOUT)?),
            Op::ExecStart => Want::Pid(client.exec_start(&argv, &[], None, CALL_TIMEOUT)?),
            Op::ExecStatus => Want::Status(client.exec_status(1, CALL_TIMEOUT)?),
            Op::ReadFile => Want::Data(client.read_file("/x", READ_LIMIT, CALL_TIMEOUT)?),
            Op::WriteFile(data) => client
                .write_file("/x", data, CALL_TIMEOUT)
                .map(|()| Want::Done)?,
            Op::Shutdown => client.shutdown(ShutdownMode::Reboot).map(|()| Want::Done)?,
            Op::Sync => client.sync(CALL_TIMEOUT).map(|()| Want::Done)?,
        })
    }

    fn run(server: &Server, script: Script) -> TestCaseResult {
        let listener = server
            .listener
            .try_clone()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let peer_script = script.clone();
        let peer = thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                play(stream, &peer_script);
            }
        });
        let started = Instant::now();
        let result = AgentClient::connect(&server.path, CALL_TIMEOUT)
            .and_then(|mut client| call(&mut client, &script.op));
        let took = started.elapsed();
        let joined = peer.join();
        prop_assert!(joined.is_ok(), "the fake agent panicked");
        prop_assert!(took < CASE_TIME_LIMIT, "the call took {took:?}: {result:?}");
        match (&script.want, result) {
            (Some(want), got) => prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got),
            (None, Ok(_)) => {}
            (None, Err(e)) => prop_assert!(
                matches!(
                    e,
                    AgentError::Protocol { .. }
                        | AgentError::Command { .. }
                        | AgentError::Closed
                        | AgentError::Timeout { .. }
                        | AgentError::FileTooLarge { .. }
                ),
                "unexpected error kind: {e:?}"
            ),
        }
        Ok(())
    }

    #[test]
    fn client_decodes_what_a_correct_agent_sends() {
        let server = server("qga.sock");
        fuzz(
            TARGET,
            "client_decodes_what_a_correct_agent_sends",
            200,
            good_script(),
            |s| run(&server, s),
        );
    }

    #[test]
    fn client_survives_a_hostile_agent() {
        let server = server("qga.sock");
        fuzz(
            TARGET,
            "client_survives_a_hostile_agent",
            300,
            hostile_script(),
            |s| run(&server, s),
        );
    }

    // ---- limits and regressions ----

    /// Answers the client's first sync, then runs `rest` on the stream.
    fn after_sync(
        rest: impl FnOnce(&mut UnixStream) + Send + 'static,
    ) -> (Server, thread::JoinHandle<()>) {
        let server = server("qga.sock");
        let listener = server.listener.try_clone().expect("listener");
        let peer = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let Ok(mut writer) = stream.try_clone() else {
                return;
            };
            let mut requests = Requests {
                stream,
                buf: Vec::new(),
            };
            let _ = requests.stream.set_read_timeout(Some(CALL_TIMEOUT));
            while let Some(request) = requests.next() {
                if let Request::Command(cmd) = request {
                    let id = cmd["arguments"]["id"].clone();
                    let mut out = vec![SENTINEL];
                    out.extend(ret(id));
                    if writer.write_all(&out).is_ok() {
                        rest(&mut writer);
                    }
                    return;
                }
            }
        });
        (server, peer)
    }

    /// Bytes sent by one `write_all` of the floods below.
    const FLOOD_BLOCK: usize = 1 << 16;

    #[test]
    fn endless_reply_is_a_protocol_error_at_the_reply_limit() {
        let (server, peer) = after_sync(|s| {
            let _ = s.write_all(b"{\"return\": \"");
            let block = vec![b'a'; FLOOD_BLOCK];
            // Stops when the client gives up and hangs up.
            while s.write_all(&block).is_ok() {}
        });
        let mut client = AgentClient::connect(&server.path, CALL_TIMEOUT).expect("connect");
        match client.ping(Duration::from_secs(60)) {
            Err(AgentError::Protocol { detail }) => {
                assert!(
                    detail.contains(&ga::MAX_REPLY_BYTES.to_string()),
                    "{detail}"
                )
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        drop(client);
        peer.join().expect("peer");
    }

    #[test]
    fn sync_through_endless_junk_ends_at_its_timeout() {
        let (server, peer) = after_sync(|s| {
            let block = vec![b'x'; FLOOD_BLOCK];
            while s.write_all(&block).is_ok() {}
        });
        let mut client = AgentClient::connect(&server.path, CALL_TIMEOUT).expect("connect");
        client.sync(CALL_TIMEOUT).expect("first sync");
        // The second sync reads nothing but junk (no 0xFF): it must neither buffer
        // it all nor outlast its timeout.
        let timeout = Duration::from_millis(500);
        let started = Instant::now();
        let result = client.sync(timeout);
        assert!(
            matches!(result, Err(AgentError::Timeout { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
        drop(client);
        peer.join().expect("peer");
    }

    /// Size of the reply below: big enough that re-parsing it on every read (the
    /// bug) takes tens of seconds, small enough that one parse takes a fraction.
    const BRACES_REPLY_BYTES: usize = 16 << 20;
    /// Time allowed for that reply: a linear parse takes well under a second.
    const BRACES_TIME_LIMIT: Duration = Duration::from_secs(8);

    #[test]
    fn reply_full_of_braces_is_parsed_in_linear_time() {
        let (server, peer) = after_sync(|s| {
            let _ = s.write_all(b"{\"return\": {\"s\": \"");
            let block = vec![b'}'; FLOOD_BLOCK];
            for _ in 0..BRACES_REPLY_BYTES / FLOOD_BLOCK {
                if s.write_all(&block).is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"\", \"nested\": [{}, {\"a\": [{}]}]}}\n");
        });
        let mut client = AgentClient::connect(&server.path, CALL_TIMEOUT).expect("connect");
        let started = Instant::now();
        let result = client.ping(Duration::from_secs(120));
        let took = started.elapsed();
        assert!(result.is_ok(), "{result:?}");
        assert!(
            took < BRACES_TIME_LIMIT,
            "a {BRACES_REPLY_BYTES}-byte reply took {took:?}"
        );
        drop(client);
        peer.join().expect("peer");
    }

    #[test]
    fn stray_sentinel_inside_an_unfinished_reply_still_resyncs() {
        let server = server("qga.sock");
        let listener = server.listener.try_clone().expect("listener");
        let peer = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut writer = stream.try_clone().expect("clone");
            let mut requests = Requests {
                stream,
                buf: Vec::new(),
            };
            let _ = requests.stream.set_read_timeout(Some(CALL_TIMEOUT));
            while let Some(request) = requests.next() {
                if let Request::Command(cmd) = request {
                    if cmd["execute"] == "guest-sync-delimited" {
                        // An unfinished string, cut by a 0xFF that starts our reply.
                        // No line end after it: nothing but the 0xFF shows that the
                        // string (which would swallow our reply) is broken.
                        let mut out = b"\xff{\"return\": \"half".to_vec();
                        out.push(SENTINEL);
                        out.extend(
                            json!({"return": cmd["arguments"]["id"]})
                                .to_string()
                                .bytes(),
                        );
                        writer.write_all(&out).expect("write");
                    } else {
                        writer.write_all(&ret(json!({}))).expect("write");
                    }
                }
            }
        });
        let mut client = AgentClient::connect(&server.path, CALL_TIMEOUT).expect("connect");
        let started = Instant::now();
        client.ping(CALL_TIMEOUT).expect("ping");
        assert!(
            started.elapsed() < CALL_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        drop(client);
        peer.join().expect("peer");
    }
}
