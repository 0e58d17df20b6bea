//! Generated suite files: valid ones as structured lines, and the mutations that
//! aim at their keys, values and structure.

use proptest::prelude::*;
use proptest::sample::Index;

use crate::gen;

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// One line of a generated suite, kept structured so mutations can aim at keys
/// and values.
#[derive(Debug, Clone)]
pub enum Line {
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
pub struct Expected {
    pub scenarios: Vec<(String, usize)>,
}

/// A name as suites may give them (bootgate's one name rule: a letter or digit
/// first, then letters, digits, '.', '_' and '-').
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,23}"
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
        (prop::collection::vec(".{0,20}", 0..3), any::<bool>()).prop_map(move |(run, rescue)| {
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
        }),
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

/// A valid suite against [`super::folder`], and what it must parse into.
pub fn valid_suite() -> impl Strategy<Value = (Vec<Line>, Expected)> {
    let names = prop::collection::btree_set(name(), 1..4)
        .prop_map(|set| set.into_iter().collect::<Vec<_>>());
    (
        opt(name()),
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
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|kv| {
                let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
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
pub enum Mutation {
    Value(Index, String),
    StepField(Index, Index, String),
    Key(Index, String),
    StepKind(Index, String),
    DeleteLine(Index),
    DuplicateLine(Index),
    InsertLine(Index, String),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
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

pub fn mutate(lines: &mut Vec<Line>, m: &Mutation) {
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

pub fn render(lines: &[Line]) -> String {
    let mut text: String = lines.iter().map(|l| l.render() + "\n").collect();
    text.insert(0, '\n');
    text
}
