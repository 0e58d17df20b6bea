//! report.html: one self-contained page for certification reviewers who did not run
//! the suite and open a single file from a CI artifact download. No network, no
//! external assets: styles are inline, the timelines are inline SVG and crash
//! screenshots are embedded as data: URIs, so the file reads the same anywhere.
//!
//! Everything that came from the guest (console lines, step details, crash titles,
//! file names) is hostile. The template is rendered with HTML auto-escaping for every
//! value; the only values marked safe are built here from a fixed alphabet (base64
//! data URIs and percent-encoded relative links).

pub use crate::model::run_file::REPORT_HTML;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path};
use std::time::Duration;

use base64::Engine as _;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::model::record::{
    BootOutcome, BootRecord, CrashRecord, RunOutcome, RunRecord, ScenarioRecord, StepOutcome,
    Verdict,
};
use crate::model::Event;
use crate::model::{ReportError, Sink};
use crate::util::{human_duration, shell_quote, write_atomic};

/// The name ends in `.html` so that even minijinja's default callback would escape;
/// `render` also forces HTML escaping explicitly.
const TEMPLATE_NAME: &str = "report.html";
const TEMPLATE: &str = include_str!("../report.html.j2");

/// Screenshots above this are linked, not embedded: a report that takes minutes to
/// download from a CI artifact store is not read.
const MAX_EMBED_BYTES: u64 = 4 * 1024 * 1024;

/// Characters of a sha256 shown where space is short; enough to tell inputs apart
/// and to match `sha256sum` output by eye.
const SHORT_HASH: usize = 12;

/// Writes `report.html` into the run folder when the run ends. Earlier events are
/// ignored: a partial report would have to be rewritten after every scenario, and
/// run.json already covers interrupted runs.
#[derive(Debug, Default)]
pub struct HtmlSink;

impl HtmlSink {
    pub fn new() -> HtmlSink {
        HtmlSink
    }
}

impl Sink for HtmlSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        let Event::RunFinished { run, dir } = event else {
            return Ok(());
        };
        let html = render(run, dir)?;
        let path = dir.join(REPORT_HTML);
        write_atomic(&path, html.as_bytes()).map_err(|source| ReportError::Write { path, source })
    }
}

/// Renders the report of `run`; `run_dir` is the run folder, where screenshots are
/// read from to embed them.
pub fn render(run: &RunRecord, run_dir: &Path) -> Result<String, ReportError> {
    let view = RunView::build(run, run_dir);
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    // A misspelt field in the template must fail the tests, not render as blank.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template(TEMPLATE_NAME, TEMPLATE)
        .map_err(template_error)?;
    let template = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
    template
        .render(Value::from_serialize(&view))
        .map_err(template_error)
}

fn template_error(e: minijinja::Error) -> ReportError {
    ReportError::Encode {
        what: REPORT_HTML,
        message: format!("{e:#}"),
    }
}

// ---------------------------------------------------------------------------------
// The view model: everything the template shows, already formatted, so the template
// holds layout only.

#[derive(Serialize)]
struct RunView {
    banner: Banner,
    counts: Vec<Count>,
    run_id: String,
    started_at: String,
    finished_at: String,
    duration: String,
    bootgate_version: String,
    command: String,
    images: Vec<String>,
    identities: Vec<InputView>,
    scenarios: Vec<ScenarioView>,
    /// The recovery table (a drill's paths side by side).
    recovery: Vec<RecoveryView>,
    env: EnvView,
    inputs: Vec<InputView>,
}

#[derive(Serialize)]
struct RecoveryView {
    anchor: Option<String>,
    scenario: String,
    crash: String,
    how: String,
    boots: String,
    seconds: String,
    limit: String,
    verdict: &'static str,
    vclass: &'static str,
}

impl RecoveryView {
    fn rows(run: &RunRecord) -> Vec<RecoveryView> {
        super::recovery::rows(run)
            .into_iter()
            .map(|r| RecoveryView {
                anchor: run
                    .scenarios
                    .iter()
                    .position(|s| s.name == r.scenario)
                    .map(anchor),
                scenario: clean(&r.scenario),
                crash: clean(&r.crash),
                how: clean(&r.how),
                boots: r.boots.map_or_else(|| "—".into(), |b| b.to_string()),
                seconds: r.seconds.map_or_else(|| "—".into(), |s| format!("{s:.1}")),
                limit: r.limit.map_or_else(|| "—".into(), |l| format!("{l} boots")),
                verdict: r.verdict.as_str(),
                vclass: verdict_class(r.verdict),
            })
            .collect()
    }
}

#[derive(Serialize)]
struct Banner {
    word: &'static str,
    class: &'static str,
    line: String,
}

#[derive(Serialize)]
struct Count {
    word: &'static str,
    class: &'static str,
    n: usize,
}

#[derive(Serialize)]
struct InputView {
    role: &'static str,
    name: String,
    path: String,
    sha256: String,
    short: String,
}

#[derive(Serialize)]
struct EnvView {
    qemu_version: String,
    accel: String,
    accel_asked: String,
    accel_notice: Option<String>,
    host: String,
    keep: bool,
    suites: Vec<String>,
    vms: Vec<VmView>,
}

#[derive(Serialize)]
struct VmView {
    scenario: String,
    anchor: Option<String>,
    command: String,
}

#[derive(Serialize)]
struct ScenarioView {
    anchor: String,
    number: usize,
    name: String,
    verdict: &'static str,
    vclass: &'static str,
    reason: Option<String>,
    duration: String,
    image: String,
    suite_file: String,
    expect: Option<String>,
    boot_count: usize,
    first_crash: Option<String>,
    timeline: Timeline,
    boots: Vec<BootView>,
    steps: Vec<StepView>,
    crashes: Vec<CrashView>,
    hangs: Vec<String>,
    hang_shots: Vec<Shot>,
    boot_loop: Option<String>,
    recovery: Option<String>,
    /// Earlier attempts (retries): "attempt 1: fail — reason (folder)".
    attempts: Vec<String>,
    rerun: String,
    artifacts: Vec<ArtifactView>,
    folder: Link,
}

#[derive(Serialize)]
struct BootView {
    index: u32,
    start: String,
    outcome: &'static str,
    oclass: &'static str,
    ready: String,
    crash: Option<String>,
    extra_append: Option<String>,
}

#[derive(Serialize)]
struct StepView {
    kind: String,
    outcome: &'static str,
    oclass: &'static str,
    start: String,
    duration: String,
    detail: String,
}

#[derive(Serialize)]
struct CrashView {
    title: String,
    kind: String,
    source: String,
    signals: String,
    boot_index: u32,
    detect: String,
    excerpt: String,
    shot: Option<Shot>,
    dump: Option<Link>,
    dump_format: Option<String>,
    dump_how: Option<DumpHow>,
    dump_note: Option<String>,
    console: Option<Link>,
    /// The boot of an earlier crash with the same title: the excerpt is then folded
    /// away, since a boot loop repeats one crash and only the addresses differ.
    repeat_of: Option<u32>,
}

/// How to open a dump: what it is and the commands that read it.
#[derive(Serialize)]
struct DumpHow {
    what: &'static str,
    tools: &'static [&'static str],
    /// Between the tools: alternatives ("or") or a sequence ("then").
    join: &'static str,
}

/// A screenshot: always a link, plus the image itself when it could be embedded.
#[derive(Serialize)]
struct Shot {
    link: Link,
    data_uri: Option<Value>,
    note: Option<String>,
}

/// A file in the run folder. `href` is absent when the recorded path does not stay
/// inside the run folder: the path is then shown as text only.
#[derive(Serialize)]
struct Link {
    path: String,
    href: Option<Value>,
}

#[derive(Serialize)]
struct ArtifactView {
    link: Link,
    sha256: String,
}

impl RunView {
    fn build(run: &RunRecord, run_dir: &Path) -> RunView {
        let s = &run.summary;
        let total = run.scenarios.len();
        let outcome = run.outcome();
        let word = outcome.word();
        let class = match outcome {
            RunOutcome::Interrupted | RunOutcome::Error => "v-error",
            RunOutcome::Fail => "v-fail",
            RunOutcome::Pass => "v-pass",
        };
        let line = banner_line(run);
        let counts = vec![
            Count {
                word: "pass",
                class: "v-pass",
                n: s.pass,
            },
            Count {
                word: "fail",
                class: "v-fail",
                n: s.fail,
            },
            Count {
                word: "error",
                class: "v-error",
                n: s.error,
            },
            Count {
                word: "flaky",
                class: "v-flaky",
                n: s.flaky,
            },
        ];
        let images: BTreeSet<String> = run.scenarios.iter().map(|s| clean(&s.image)).collect();
        let inputs: Vec<InputView> = run
            .inputs
            .iter()
            .map(|i| InputView {
                role: input_role(&i.path),
                name: clean(file_name(&i.path)),
                path: clean(&i.path),
                sha256: clean(&i.sha256),
                short: clean(short_hash(&i.sha256)),
            })
            .collect();
        let identities = run
            .inputs
            .iter()
            .filter(|i| matches!(input_role(&i.path), "driver" | "content" | "image"))
            .map(|i| InputView {
                role: input_role(&i.path),
                name: clean(file_name(&i.path)),
                path: clean(&i.path),
                sha256: clean(&i.sha256),
                short: clean(short_hash(&i.sha256)),
            })
            .collect();
        let scenarios: Vec<ScenarioView> = run
            .scenarios
            .iter()
            .enumerate()
            .map(|(i, sc)| ScenarioView::build(i, sc, run_dir))
            .collect();
        let vms = run
            .qemu
            .argv
            .iter()
            .map(|vm| VmView {
                scenario: clean(&vm.scenario),
                anchor: run
                    .scenarios
                    .iter()
                    .position(|s| s.name == vm.scenario)
                    .map(anchor),
                command: shell_command_lines(&vm.argv),
            })
            .collect();
        let host = if run.host.hostname.is_empty() && run.host.kernel.is_empty() {
            "not recorded".to_string()
        } else {
            format!(
                "{} ({}, {} CPU{})",
                clean(&run.host.hostname),
                clean(&run.host.kernel),
                run.host.cpus,
                if run.host.cpus == 1 { "" } else { "s" }
            )
        };
        RunView {
            banner: Banner {
                word,
                class,
                line: if total == 0 {
                    "no scenario was run".to_string()
                } else {
                    line
                },
            },
            counts,
            run_id: clean(&run.run_id),
            started_at: clean(&run.started_at),
            finished_at: run
                .finished_at
                .as_deref()
                .map_or_else(|| "not finished".to_string(), clean),
            duration: run_duration(run),
            bootgate_version: clean(&run.bootgate_version),
            command: shell_command(&run.command),
            images: images.into_iter().collect(),
            identities,
            scenarios,
            recovery: RecoveryView::rows(run),
            env: EnvView {
                qemu_version: run
                    .qemu
                    .version
                    .as_deref()
                    .map_or_else(|| "not recorded".to_string(), clean),
                accel: run
                    .qemu
                    .accel
                    .as_deref()
                    .map_or_else(|| "not recorded".to_string(), clean),
                accel_asked: clean(&run.settings.accel),
                accel_notice: run.qemu.accel_notice.as_deref().map(clean),
                host,
                keep: run.settings.keep,
                suites: run.settings.suites.iter().map(|s| clean(s)).collect(),
                vms,
            },
            inputs,
        }
    }
}

/// One sentence under the banner word, so the verdict reads without the table.
fn banner_line(run: &RunRecord) -> String {
    let s = &run.summary;
    let total = run.scenarios.len();
    let mut parts = Vec::new();
    if s.fail > 0 {
        parts.push(format!("{} of {total} scenarios failed", s.fail));
    }
    if s.error > 0 {
        parts.push(format!(
            "{} of {total} could not be judged (harness or host error)",
            s.error
        ));
    }
    if parts.is_empty() {
        parts.push(format!("all {total} scenarios passed"));
    }
    if s.flaky > 0 {
        parts.push(format!(
            "{} flaky (failed, then passed on a retry)",
            s.flaky
        ));
    }
    if run.interrupted {
        parts.push("the run was interrupted before every scenario finished".to_string());
    }
    parts.join("; ")
}

fn run_duration(run: &RunRecord) -> String {
    let Some(finished) = &run.finished_at else {
        return "not finished".to_string();
    };
    let (Ok(start), Ok(end)) = (
        run.started_at.parse::<jiff::Timestamp>(),
        finished.parse::<jiff::Timestamp>(),
    ) else {
        return "unknown".to_string();
    };
    let ms = end.as_millisecond() - start.as_millisecond();
    match u64::try_from(ms) {
        Ok(ms) => ms_text(ms),
        Err(_) => "unknown".to_string(),
    }
}

fn anchor(index: usize) -> String {
    format!("scenario-{}", index + 1)
}

impl ScenarioView {
    fn build(index: usize, sc: &ScenarioRecord, run_dir: &Path) -> ScenarioView {
        let boots = sc
            .boots
            .iter()
            .map(|b| BootView {
                index: b.index,
                start: ms_text(b.start_ms),
                outcome: b.outcome.as_str(),
                oclass: boot_class(b.outcome),
                ready: b.ready_ms.map_or_else(|| "—".to_string(), ms_text),
                crash: b.crash.as_deref().map(clean),
                extra_append: b.extra_append.as_deref().map(clean),
            })
            .collect();
        let steps = sc
            .steps
            .iter()
            .map(|st| StepView {
                kind: clean(&st.kind),
                outcome: st.outcome.as_str(),
                oclass: step_class(st.outcome),
                start: ms_text(st.start_ms),
                duration: ms_text(st.duration_ms),
                detail: clean(&st.detail),
            })
            .collect();
        let crashes = sc
            .crashes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let repeat_of = sc.crashes[..i]
                    .iter()
                    .find(|earlier| earlier.title == c.title)
                    .map(|earlier| earlier.boot_index);
                CrashView::build(c, sc, run_dir, repeat_of)
            })
            .collect();
        ScenarioView {
            anchor: anchor(index),
            number: index + 1,
            name: clean(&sc.name),
            verdict: sc.verdict.as_str(),
            vclass: verdict_class(sc.verdict),
            reason: sc.reason.as_deref().map(clean),
            duration: ms_text(sc.duration_ms),
            image: clean(&sc.image),
            suite_file: clean(&sc.suite_file),
            expect: sc.expect.as_deref().map(clean),
            boot_count: sc.boots.len(),
            first_crash: sc.crashes.first().map(|c| clean(&c.title)),
            timeline: Timeline::build(sc),
            boots,
            steps,
            crashes,
            hangs: sc.hangs.iter().map(|h| clean(h)).collect(),
            hang_shots: sc
                .hang_screenshots
                .iter()
                .map(|p| Shot::build(p, run_dir))
                .collect(),
            boot_loop: boot_loop_line(sc),
            attempts: sc
                .attempts
                .iter()
                .map(|a| {
                    clean(&format!(
                        "attempt {}: {} — {} (evidence in {})",
                        a.attempt,
                        a.verdict.as_str(),
                        a.reason.as_deref().unwrap_or("no reason given"),
                        a.dir
                    ))
                })
                .collect(),
            recovery: sc.recovery.as_ref().map(|r| {
                format!(
                    "boot {} became ready {:.1} s after the first crash ({} boot{} from the crash to ready){}",
                    r.ready_boot,
                    r.seconds,
                    r.boots,
                    if r.boots == 1 { "" } else { "s" },
                    if r.how.is_empty() {
                        String::new()
                    } else {
                        format!(", brought back by: {}", clean(&r.how))
                    }
                )
            }),
            rerun: shell_command(&sc.rerun),
            artifacts: sc
                .artifacts
                .iter()
                .map(|a| ArtifactView {
                    link: Link::new(&a.path),
                    sha256: clean(&a.sha256),
                })
                .collect(),
            folder: Link::new(&sc.dir),
        }
    }
}

fn boot_loop_line(sc: &ScenarioRecord) -> Option<String> {
    if !sc.boot_loop {
        return None;
    }
    // The longest run of consecutive boots that crashed before ready is what the
    // boot-loop gate counted.
    let mut best: Option<(u32, u32)> = None;
    let mut current: Option<(u32, u32)> = None;
    for b in &sc.boots {
        if b.outcome == BootOutcome::Crash {
            current = Some(current.map_or((b.index, b.index), |(first, _)| (first, b.index)));
            if let Some((first, last)) = current {
                if best.is_none_or(|(f, l)| last - first > l - f) {
                    best = Some((first, last));
                }
            }
        } else {
            current = None;
        }
    }
    Some(match best {
        Some((first, last)) => format!(
            "{} consecutive boots crashed before becoming ready (boots {first}–{last})",
            last - first + 1
        ),
        None => "consecutive boots crashed before becoming ready".to_string(),
    })
}

impl CrashView {
    fn build(
        c: &CrashRecord,
        sc: &ScenarioRecord,
        run_dir: &Path,
        repeat_of: Option<u32>,
    ) -> CrashView {
        let dump_how = c.dump.as_ref().map(|_| dump_how(c.dump_format.as_deref()));
        CrashView {
            title: clean(&c.title),
            kind: clean(&c.kind),
            source: clean(&c.source),
            signals: if c.signals.is_empty() {
                "—".to_string()
            } else {
                clean(&c.signals.join(", "))
            },
            boot_index: c.boot_index,
            detect: ms_text(c.detect_ms),
            excerpt: clean(&c.excerpt.join("\n")),
            shot: c.screenshot.as_deref().map(|p| Shot::build(p, run_dir)),
            dump: c.dump.as_deref().map(Link::new),
            dump_format: c.dump_format.as_deref().map(clean),
            dump_how,
            dump_note: c.dump_note.as_deref().map(clean),
            // The console is recorded as a file name inside the scenario's folder.
            console: c
                .console
                .as_deref()
                .map(|name| Link::new(&format!("{}/{}", sc.dir.trim_end_matches('/'), name))),
            repeat_of,
        }
    }
}

fn dump_how(format: Option<&str>) -> DumpHow {
    match format {
        Some("elf") => DumpHow {
            what: "ELF core file, read with the guest kernel's vmlinux (debug symbols)",
            tools: &["crash vmlinux DUMP", "gdb vmlinux DUMP"],
            join: "or",
        },
        Some("win-dmp") => DumpHow {
            what: "Windows crash dump, read with WinDbg",
            tools: &["windbg -z DUMP", "!analyze -v"],
            join: "then",
        },
        Some(f) if f.starts_with("kdump") => DumpHow {
            what: "kdump-compressed dump, read with the guest kernel's vmlinux",
            tools: &["crash vmlinux DUMP"],
            join: "or",
        },
        _ => DumpHow {
            what: "memory dump of the paused guest",
            tools: &[],
            join: "or",
        },
    }
}

impl Shot {
    fn build(path: &str, run_dir: &Path) -> Shot {
        let link = Link::new(path);
        let (data_uri, note) = match embed_png(path, run_dir) {
            Ok(uri) => (Some(uri), None),
            Err(note) => (None, Some(note)),
        };
        Shot {
            link,
            data_uri,
            note,
        }
    }
}

/// Reads a PNG from the run folder and returns it as a data: URI, or why not.
fn embed_png(path: &str, run_dir: &Path) -> Result<Value, String> {
    let Some(rel) = inside_run_folder(path) else {
        return Err("not embedded: the recorded path is outside the run folder".to_string());
    };
    let full = run_dir.join(rel);
    let mut file = std::fs::File::open(&full)
        .map_err(|e| format!("not embedded: the file is missing from the run folder ({e})"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("not embedded: cannot read the file ({e})"))?
        .len();
    if len > MAX_EMBED_BYTES {
        return Err(format!(
            "not embedded: {:.1} MiB is over the {} MiB limit; open the file",
            len as f64 / (1024.0 * 1024.0),
            MAX_EMBED_BYTES / (1024 * 1024)
        ));
    }
    let mut bytes = Vec::new();
    // take() keeps the limit even if the file grows between stat and read.
    file.by_ref()
        .take(MAX_EMBED_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("not embedded: cannot read the file ({e})"))?;
    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(PNG_MAGIC) {
        return Err("not embedded: the file is not a PNG image".to_string());
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    // Safe: a fixed prefix and the base64 alphabet only.
    Ok(Value::from_safe_string(format!(
        "data:image/png;base64,{b64}"
    )))
}

impl Link {
    fn new(path: &str) -> Link {
        Link {
            path: clean(path),
            href: inside_run_folder(path).map(|rel| Value::from_safe_string(href(rel))),
        }
    }
}

/// The path if it names something inside the run folder: relative, no `..`, no
/// drive or root. Anything else (absolute paths, `javascript:`-like text, escapes
/// with `..`) gets no link at all.
fn inside_run_folder(path: &str) -> Option<&str> {
    if path.is_empty() || path.starts_with('/') || path.starts_with('\\') || path.contains('\\') {
        return None;
    }
    let ok = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    ok.then_some(path)
}

/// Percent-encodes every byte but unreserved characters and `/`, so the result is
/// always a relative URL path: `:` is encoded, hence no scheme can appear, and no
/// quote or angle bracket survives to end the attribute.
fn href(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// The timeline: boots and steps as bars on a shared time axis, laid out here so the
// template only draws shapes.

/// viewBox units; the SVG scales to the page width.
const TL_WIDTH: f64 = 960.0;
/// Room left of the plot for the row names.
const TL_GUTTER: f64 = 52.0;
const TL_RIGHT: f64 = 14.0;
const TL_AXIS: f64 = 22.0;
const BAR_H: f64 = 16.0;
const LANE_H: f64 = 13.0;
/// Rough width of one character at the 11-unit label size, for placing labels so
/// they do not overlap (exact text metrics are not known without a browser).
const CHAR_W: f64 = 6.0;
const MAX_LANES: usize = 5;

#[derive(Serialize)]
struct Timeline {
    width: f64,
    height: f64,
    aria: String,
    ticks: Vec<Tick>,
    rows: Vec<Label>,
    bars: Vec<Bar>,
    labels: Vec<Label>,
    markers: Vec<Marker>,
}

#[derive(Serialize)]
struct Tick {
    x: f64,
    label: String,
}

#[derive(Serialize)]
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    class: String,
    title: String,
}

#[derive(Serialize)]
struct Label {
    x: f64,
    y: f64,
    text: String,
    class: &'static str,
}

#[derive(Serialize)]
struct Marker {
    x: f64,
    y1: f64,
    y2: f64,
    points: String,
    title: String,
}

/// A label waiting for its lane.
struct Pending {
    x: f64,
    text: String,
    class: &'static str,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Assigns each label to the first lane (a line under its row) where it does not
/// overlap the previous label; returns the lane of each and the lanes used.
fn pack(labels: &mut [Pending]) -> (Vec<usize>, usize) {
    let mut ends: Vec<f64> = Vec::new();
    let mut lanes = Vec::with_capacity(labels.len());
    for label in labels.iter_mut() {
        let w = label.text.chars().count() as f64 * CHAR_W;
        label.x = label.x.min(TL_WIDTH - w).max(TL_GUTTER);
        let lane = match ends.iter().position(|&end| end + 8.0 <= label.x) {
            Some(lane) => lane,
            None if ends.len() < MAX_LANES => {
                ends.push(f64::MIN);
                ends.len() - 1
            }
            // Crowded: overlap in the lane that frees up first; the tables below
            // the timeline carry the same facts.
            None => ends
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i),
        };
        ends[lane] = label.x + w;
        lanes.push(lane);
    }
    let used = ends.len();
    (lanes, used)
}

/// Where a boot ends on the timeline: when the next one starts, or the scenario ends.
fn boot_end(boots: &[BootRecord], i: usize, total: u64) -> u64 {
    boots
        .get(i + 1)
        .map_or(total, |b| b.start_ms)
        .max(boots[i].start_ms)
}

fn tick_step_ms(total: u64) -> u64 {
    const STEPS: [u64; 12] = [
        500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
        1_800_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| total / s <= 10)
        .unwrap_or(3_600_000)
}

fn tick_label(ms: u64) -> String {
    if ms == 0 {
        "0".to_string()
    } else if ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

impl Timeline {
    fn build(sc: &ScenarioRecord) -> Timeline {
        let total = sc
            .boots
            .iter()
            .map(|b| b.start_ms + b.ready_ms.unwrap_or(0))
            .chain(sc.steps.iter().map(|s| s.start_ms + s.duration_ms))
            .chain(std::iter::once(sc.duration_ms))
            .max()
            .unwrap_or(0)
            .max(1);
        let plot = TL_WIDTH - TL_GUTTER - TL_RIGHT;
        let x = |t: u64| round1(TL_GUTTER + t.min(total) as f64 / total as f64 * plot);
        let width = |a: u64, b: u64| round1((x(b) - x(a)).max(2.0));

        // Boots: layout of bars first, labels after their lanes are known.
        let boots_y = TL_AXIS + 6.0;
        let mut bars = Vec::new();
        let mut boot_labels = Vec::new();
        for (i, b) in sc.boots.iter().enumerate() {
            let end = boot_end(&sc.boots, i, total);
            let rescue = if b.extra_append.is_some() {
                " rescue"
            } else {
                ""
            };
            let prefix = if rescue.is_empty() { "" } else { "rescue " };
            match (b.outcome, b.ready_ms) {
                (_, Some(ready)) => {
                    let ready_at = b.start_ms + ready;
                    bars.push(Bar {
                        x: x(b.start_ms),
                        y: boots_y,
                        w: width(b.start_ms, ready_at),
                        h: BAR_H,
                        class: format!("t-ready{rescue}"),
                        title: format!(
                            "{prefix}boot {}: ready {} after power-on{}",
                            b.index,
                            ms_text(ready),
                            append_note(b)
                        ),
                    });
                    if end > ready_at {
                        // The guest was up: a thin band, so the bar itself still
                        // shows the boot time.
                        bars.push(Bar {
                            x: x(ready_at),
                            y: boots_y + BAR_H / 2.0 - 2.0,
                            w: width(ready_at, end),
                            h: 4.0,
                            class: "t-up".to_string(),
                            title: format!("boot {}: guest up", b.index),
                        });
                    }
                    boot_labels.push(Pending {
                        x: x(b.start_ms) + 1.0,
                        text: format!("{prefix}boot {} ready {}", b.index, ms_text(ready)),
                        class: "l-boot",
                    });
                }
                (outcome, None) => {
                    bars.push(Bar {
                        x: x(b.start_ms),
                        y: boots_y,
                        w: width(b.start_ms, end),
                        h: BAR_H,
                        class: format!("{}{rescue}", timeline_class(outcome)),
                        title: format!(
                            "{prefix}boot {}: {}{}{}",
                            b.index,
                            outcome.as_str(),
                            b.crash
                                .as_deref()
                                .map(|t| format!(" — {}", clean(t)))
                                .unwrap_or_default(),
                            append_note(b)
                        ),
                    });
                    boot_labels.push(Pending {
                        x: x(b.start_ms) + 1.0,
                        text: format!("{prefix}boot {} {}", b.index, outcome.as_str()),
                        class: "l-boot",
                    });
                }
            }
        }
        let (boot_lanes, boot_lanes_used) = pack(&mut boot_labels);
        let boot_labels_y = boots_y + BAR_H + 11.0;

        let steps_y = boots_y + BAR_H + boot_lanes_used as f64 * LANE_H + 10.0;
        let mut step_labels = Vec::new();
        for st in &sc.steps {
            let end = st.start_ms + st.duration_ms;
            bars.push(Bar {
                x: x(st.start_ms),
                y: steps_y,
                w: width(st.start_ms, end),
                h: BAR_H,
                class: step_timeline_class(st.outcome).to_string(),
                title: format!(
                    "{} {}: {} at {}, took {}",
                    clean(&st.kind),
                    st.outcome.as_str(),
                    clean(&st.detail),
                    ms_text(st.start_ms),
                    ms_text(st.duration_ms)
                ),
            });
            let text = if st.outcome == StepOutcome::Ok {
                clean(&st.kind)
            } else {
                format!("{} {}", clean(&st.kind), st.outcome.as_str())
            };
            step_labels.push(Pending {
                x: x(st.start_ms) + 1.0,
                text,
                class: if st.outcome == StepOutcome::Ok {
                    "l-step"
                } else {
                    "l-bad"
                },
            });
        }
        let (step_lanes, step_lanes_used) = pack(&mut step_labels);
        let step_labels_y = steps_y + BAR_H + 11.0;
        let bottom = steps_y + BAR_H + step_lanes_used as f64 * LANE_H + 6.0;

        let mut labels: Vec<Label> = Vec::new();
        for (p, lane) in boot_labels.into_iter().zip(boot_lanes) {
            labels.push(Label {
                x: round1(p.x),
                y: round1(boot_labels_y + lane as f64 * LANE_H),
                text: p.text,
                class: p.class,
            });
        }
        for (p, lane) in step_labels.into_iter().zip(step_lanes) {
            labels.push(Label {
                x: round1(p.x),
                y: round1(step_labels_y + lane as f64 * LANE_H),
                text: p.text,
                class: p.class,
            });
        }

        // A crash is drawn where its boot ended: the panic stops the boot, and the
        // next boot starts right after the evidence is captured.
        let markers = sc
            .crashes
            .iter()
            .filter_map(|c| {
                let i = sc.boots.iter().position(|b| b.index == c.boot_index)?;
                let cx = x(boot_end(&sc.boots, i, total));
                let top = boots_y - 7.0;
                Some(Marker {
                    x: cx,
                    y1: top,
                    y2: round1(steps_y + BAR_H),
                    points: format!(
                        "{},{} {},{} {},{}",
                        round1(cx - 5.0),
                        round1(top - 1.0),
                        round1(cx + 5.0),
                        round1(top - 1.0),
                        cx,
                        round1(top + 7.0)
                    ),
                    title: format!("crash in boot {}: {}", c.boot_index, clean(&c.title)),
                })
            })
            .collect();

        let step = tick_step_ms(total);
        let ticks = (0..=total / step)
            .map(|k| Tick {
                x: x(k * step),
                label: tick_label(k * step),
            })
            .collect();
        let rows = vec![
            Label {
                x: 4.0,
                y: boots_y + 12.0,
                text: "boots".to_string(),
                class: "l-row",
            },
            Label {
                x: 4.0,
                y: steps_y + 12.0,
                text: "steps".to_string(),
                class: "l-row",
            },
        ];
        let crashes = sc.crashes.len();
        Timeline {
            width: TL_WIDTH,
            height: round1(bottom),
            aria: format!(
                "Timeline of {}: {} boot{}, {} step{}, {} crash{}, over {}",
                clean(&sc.name),
                sc.boots.len(),
                if sc.boots.len() == 1 { "" } else { "s" },
                sc.steps.len(),
                if sc.steps.len() == 1 { "" } else { "s" },
                crashes,
                if crashes == 1 { "" } else { "es" },
                ms_text(total)
            ),
            ticks,
            rows,
            bars,
            labels,
            markers,
        }
    }
}

fn append_note(b: &BootRecord) -> String {
    b.extra_append
        .as_deref()
        .map(|a| format!(" (kernel parameters added: {})", clean(a)))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Small formatting helpers.

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "v-pass",
        Verdict::Fail => "v-fail",
        Verdict::Error => "v-error",
        Verdict::Flaky => "v-flaky",
    }
}

fn boot_class(o: BootOutcome) -> &'static str {
    match o {
        BootOutcome::Ready => "v-pass",
        BootOutcome::Crash => "v-fail",
        BootOutcome::Hang | BootOutcome::Timeout => "v-flaky",
        BootOutcome::Error => "v-error",
    }
}

fn step_class(o: StepOutcome) -> &'static str {
    match o {
        StepOutcome::Ok => "v-pass",
        StepOutcome::Failed | StepOutcome::Crash => "v-fail",
        StepOutcome::Hang | StepOutcome::Timeout => "v-flaky",
        StepOutcome::Error => "v-error",
        StepOutcome::Skipped => "v-skip",
    }
}

fn timeline_class(o: BootOutcome) -> &'static str {
    match o {
        BootOutcome::Ready => "t-ready",
        BootOutcome::Crash => "t-crash",
        BootOutcome::Hang | BootOutcome::Timeout => "t-hang",
        BootOutcome::Error => "t-error",
    }
}

fn step_timeline_class(o: StepOutcome) -> &'static str {
    match o {
        StepOutcome::Ok => "t-step",
        StepOutcome::Failed | StepOutcome::Crash => "t-crash",
        StepOutcome::Hang | StepOutcome::Timeout => "t-hang",
        StepOutcome::Error => "t-error",
        StepOutcome::Skipped => "t-skip",
    }
}

fn ms_text(ms: u64) -> String {
    human_duration(Duration::from_millis(ms))
}

fn short_hash(sha: &str) -> &str {
    sha.get(..SHORT_HASH).unwrap_or(sha)
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// What an input is, from its name: the summary lists drivers, content and images
/// by name and hash. The record has no role field, so this is a best guess by
/// extension; the Inputs table still lists every file.
fn input_role(path: &str) -> &'static str {
    let name = file_name(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "ko" | "sys" | "inf" | "cat" => "driver",
        "content" => "content",
        "qcow2" | "img" | "raw" | "vhd" | "vhdx" | "vmdk" | "iso" => "image",
        _ if name == "image.toml" || name.starts_with("vmlinuz") || name.starts_with("initrd") => {
            "image"
        }
        "toml" => "suite",
        "c" | "h" | "mk" => "source",
        _ if name == "kbuild" || name == "makefile" => "source",
        _ if path.contains("/content/") => "content",
        _ => "other",
    }
}

/// Guest text may carry terminal escapes and other control bytes; they are not
/// valid in HTML and would garble the page, so they become visible placeholders.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

fn shell_command(argv: &[String]) -> String {
    clean(
        &argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// One option per line with `\` continuations: a QEMU command line of 40 words reads
/// as a list and still pastes into a shell.
fn shell_command_lines(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push_str(if arg.starts_with('-') {
                " \\\n    "
            } else {
                " "
            });
        }
        out.push_str(&shell_quote(arg));
    }
    clean(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{FileHash, HostInfo, RecoveryRecord, StepRecord, VmArgv};
    use crate::testing::records;

    const HOSTILE_SCRIPT: &str = "<script>alert(1)</script>";
    const HOSTILE_IMG: &str = "\"><img src=x onerror=alert(1)>";
    /// A valid 1x1 PNG.
    const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

    fn step(
        kind: &str,
        start_ms: u64,
        duration_ms: u64,
        outcome: StepOutcome,
        detail: &str,
    ) -> StepRecord {
        StepRecord {
            start_ms,
            duration_ms,
            ..records::step(kind, outcome, detail)
        }
    }

    fn boot(index: u32, start_ms: u64, outcome: BootOutcome, ready_ms: Option<u64>) -> BootRecord {
        BootRecord {
            start_ms,
            ..records::boot(index, outcome, ready_ms)
        }
    }

    fn scenario(name: &str, verdict: Verdict) -> ScenarioRecord {
        ScenarioRecord {
            duration_ms: 10_000,
            rerun: records::rerun("/results/run 1", &format!("demo/{name}")),
            ..records::scenario("demo", name, verdict)
        }
    }

    fn crash(boot_index: u32, title: &str) -> CrashRecord {
        CrashRecord {
            kind: "BUG: unable to handle page fault".into(),
            excerpt: vec![
                "[    3.1] BUG: unable to handle page fault for address: ffffd26040096000".into(),
                format!("[    3.2] {HOSTILE_SCRIPT}"),
                format!("[    3.3] {HOSTILE_IMG}"),
            ],
            detect_ms: 26,
            dump_note: Some("dump skipped: no disk space".into()),
            console: Some("console.log".into()),
            ..records::crash(boot_index, title)
        }
    }

    /// A run with a passing scenario, a boot loop with full crash evidence, and an
    /// error; the boot-loop scenario's screenshot is written into `run_dir`.
    fn sample(run_dir: &Path) -> RunRecord {
        let mut pass = scenario("boots-and-reboots", Verdict::Pass);
        pass.boots = vec![
            boot(1, 0, BootOutcome::Ready, Some(4_100)),
            boot(2, 5_000, BootOutcome::Ready, Some(4_200)),
        ];
        pass.steps = vec![
            step("boot", 0, 4_200, StepOutcome::Ok, "ready"),
            step("reboot", 4_300, 5_000, StepOutcome::Ok, "rebooted 1x"),
            step("exec", 9_400, 100, StepOutcome::Ok, HOSTILE_SCRIPT),
        ];
        pass.artifacts = vec![
            FileHash {
                path: "demo/boots-and-reboots/console.log".into(),
                sha256: "e3fff9a254db3c9279ffabe7c17edb3528066a25ab64c2d5b81fc8b2c1a38021".into(),
            },
            FileHash {
                path: "javascript:alert(1)".into(),
                sha256: "00".into(),
            },
        ];

        let mut looping = scenario("cf291-crashes-then-boot-loops", Verdict::Fail);
        looping.reason = Some("boot loop: 3 consecutive boots crashed".into());
        looping.duration_ms = 30_000;
        let title = "BUG: unable to handle page fault in sensor_match_fields";
        let mut b1 = boot(1, 0, BootOutcome::Ready, Some(3_500));
        b1.crash = Some(title.into());
        let mut b2 = boot(2, 8_000, BootOutcome::Crash, None);
        b2.crash = Some(title.into());
        let mut b3 = boot(3, 12_000, BootOutcome::Crash, None);
        b3.crash = Some(title.into());
        let mut b4 = boot(4, 16_000, BootOutcome::Crash, None);
        b4.crash = Some(title.into());
        let mut b5 = boot(5, 20_000, BootOutcome::Ready, Some(6_000));
        b5.extra_append = Some("demo_sensor.disable=1".into());
        looping.boots = vec![b1, b2, b3, b4, b5];
        looping.steps = vec![
            step("boot", 0, 3_600, StepOutcome::Ok, "ready"),
            step(
                "install_driver",
                3_600,
                300,
                StepOutcome::Ok,
                "demo_sensor loaded",
            ),
            step(
                "apply_content",
                3_900,
                4_000,
                StepOutcome::Crash,
                &format!("crash: {title}; {HOSTILE_IMG}"),
            ),
        ];
        let mut first = crash(1, &format!("{title} {HOSTILE_SCRIPT}"));
        first.screenshot = Some("demo/cf291-crashes-then-boot-loops/crash-1.png".into());
        first.dump = Some("demo/cf291-crashes-then-boot-loops/crash 1.elf".into());
        first.dump_format = Some("elf".into());
        first.dump_note = None;
        let mut second = crash(2, title);
        second.screenshot = Some("demo/cf291-crashes-then-boot-loops/missing.png".into());
        second.console = Some(format!("x{HOSTILE_IMG}.log"));
        looping.crashes = vec![first, second, crash(3, title), crash(4, title)];
        looping.boot_loop = true;
        looping.recovery = Some(RecoveryRecord {
            boots: 4,
            seconds: 18.5,
            ready_boot: 5,
            how: "rescue boot".into(),
        });
        looping.hangs = vec![format!("agent stopped answering {HOSTILE_SCRIPT}")];

        let mut error = scenario("image-missing", Verdict::Error);
        error.reason = Some("image demo-win not found".into());
        error.duration_ms = 0;

        let shot_dir = run_dir.join("demo/cf291-crashes-then-boot-loops");
        std::fs::create_dir_all(&shot_dir).expect("create scenario dir");
        let png = base64::engine::general_purpose::STANDARD
            .decode(PNG_1X1)
            .expect("decode png");
        std::fs::write(shot_dir.join("crash-1.png"), png).expect("write png");

        let scenarios = vec![pass, looping, error];
        let mut run = records::run(scenarios);
        run.run_id = "20260101T000000Z-abcd".into();
        run.started_at = "2026-01-01T00:00:00Z".into();
        run.finished_at = Some("2026-01-01T00:01:05.5Z".into());
        run.command = vec!["bootgate".into(), "run".into(), "scenarios/demo".into()];
        run.settings.suites = vec!["/work/scenarios/demo/suite.toml".into()];
        run.host = HostInfo {
            hostname: "ci-7".into(),
            kernel: "Linux 6.1.0 x86_64".into(),
            cpus: 8,
        };
        run.qemu.version = Some("QEMU emulator version 7.2.22".into());
        run.qemu.accel_notice = Some("KVM never got past the BIOS; using TCG".into());
        run.qemu.argv = vec![VmArgv {
            scenario: "demo/boots-and-reboots".into(),
            argv: vec![
                "qemu-system-x86_64".into(),
                "-append".into(),
                "console=ttyS0 oops=panic".into(),
            ],
        }];
        run.inputs = vec![
            FileHash {
                path: "/cache/drivers/demo_sensor.ko".into(),
                sha256: "4a375f511eb84caeb7810e2e88ada09ecaa349ebaf8ad381d22719a803b48dd4".into(),
            },
            FileHash {
                path: "scenarios/demo/content/cf291-21-fields.content".into(),
                sha256: "426ff49716c116b15894298918cfa3598a9770b3ce3029a9543c90c81072fb97".into(),
            },
        ];
        run
    }

    fn rendered() -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = sample(dir.path());
        render(&run, dir.path()).expect("render")
    }

    #[test]
    fn report_shows_banner_counts_and_identities() {
        let html = rendered();
        assert!(html.contains(r#"<div class="banner v-fail""#), "banner");
        assert!(html.contains(">FAIL<"));
        assert!(html.contains("1 of 3 scenarios failed"));
        assert!(html.contains("20260101T000000Z-abcd"));
        assert!(html.contains("1 m 05 s") || html.contains("65.5 s"));
        // Inputs: short hashes in the summary, full ones in the table.
        assert!(html.contains("demo_sensor.ko"));
        assert!(html.contains("4a375f511eb8"));
        assert!(html.contains("4a375f511eb84caeb7810e2e88ada09ecaa349ebaf8ad381d22719a803b48dd4"));
        assert!(html.contains("426ff49716c116b15894298918cfa3598a9770b3ce3029a9543c90c81072fb97"));
        assert!(html.contains("QEMU emulator version 7.2.22"));
        assert!(html.contains("KVM never got past the BIOS"));
    }

    #[test]
    fn recovery_table_puts_scenarios_side_by_side() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut run = sample(dir.path());
        // A second recovering scenario, with a gate it misses, and one that never came
        // back: three rows, in run order.
        let mut slow = run.scenarios[1].clone();
        slow.name = "demo/slow-guard".into();
        slow.verdict = Verdict::Fail;
        slow.recovers_within = Some(2);
        if let Some(r) = slow.recovery.as_mut() {
            r.how = "its own boots <script>".into();
        }
        let mut gone = run.scenarios[1].clone();
        gone.name = "demo/never-back".into();
        gone.verdict = Verdict::Fail;
        gone.recovery = None;
        gone.recovers_within = Some(3);
        run.scenarios.push(slow);
        run.scenarios.push(gone);
        let rows = crate::report::recovery::rows(&run);
        let names: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo/cf291-crashes-then-boot-loops",
                "demo/slow-guard",
                "demo/never-back"
            ]
        );
        assert_eq!(rows[1].within, Some(false));
        assert_eq!(rows[2].how, "did not come back");
        let text = crate::report::recovery::text(&rows).unwrap();
        let line = text.lines().find(|l| l.contains("slow-guard")).unwrap();
        assert!(
            line.contains("18.5") && line.contains("2 boots") && line.contains("fail"),
            "{line}"
        );
        let line = text.lines().find(|l| l.contains("never-back")).unwrap();
        assert!(
            line.contains("did not come back") && line.contains(" - "),
            "{line}"
        );

        let html = render(&run, dir.path()).expect("render");
        let section = &html[html.find("<section id=\"recovery\"").expect("section")..];
        let section = &section[..section.find("</section>").unwrap()];
        assert_eq!(section.matches("<tr>").count(), 4, "{section}");
        assert!(section.contains("rescue boot"), "{section}");
        assert!(
            section.contains("its own boots &lt;script&gt;"),
            "{section}"
        );
        assert!(!section.contains("<script>"), "{section}");
        // Without a recovery anywhere, no section.
        let mut plain = sample(dir.path());
        for sc in &mut plain.scenarios {
            sc.recovery = None;
        }
        let html = render(&plain, dir.path()).expect("render");
        assert!(!html.contains("id=\"recovery\""));
        assert!(crate::report::recovery::text(&crate::report::recovery::rows(&plain)).is_none());
    }

    #[test]
    fn every_scenario_has_a_timeline() {
        let html = rendered();
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("boot 2 ready 4.2 s"));
        assert!(html.contains("rescue boot 5 ready 6.0 s"));
        assert!(html.contains("boot 3 crash"));
    }

    #[test]
    fn crash_card_embeds_screenshot_and_links_evidence() {
        let html = rendered();
        assert!(html.contains("BUG: unable to handle page fault in sensor_match_fields"));
        assert!(html.contains(r#"<img class="shot" src="data:image/png;base64,iVBORw0KGgo"#));
        assert!(html.contains(r#"href="demo/cf291-crashes-then-boot-loops/crash-1.png""#));
        assert!(html.contains(r#"href="demo/cf291-crashes-then-boot-loops/crash%201.elf""#));
        assert!(html.contains(r#"href="demo/cf291-crashes-then-boot-loops/console.log""#));
        assert!(html.contains("<code>crash vmlinux DUMP</code> or <code>gdb vmlinux DUMP</code>"));
        // Later crashes with the same title fold their excerpt (crash 1's title
        // differs: it carries the hostile text).
        assert_eq!(html.matches("same crash title as in boot 2").count(), 2);
        assert!(html.contains("dump skipped: no disk space"));
        // The missing screenshot is still linked, with a note instead of the image.
        assert!(html.contains("missing from the run folder"));
        assert!(html.contains("3 consecutive boots crashed before becoming ready (boots 2–4)"));
        assert!(html.contains("boot 5 became ready 18.5 s after the first crash"));
        assert!(html.contains("bootgate rerun &#x27;&#x2f;results&#x2f;run 1&#x27;"));
    }

    #[test]
    fn guest_text_is_escaped_everywhere() {
        let html = rendered();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.to_ascii_lowercase().contains("<script"));
        assert!(!html.contains("<img src=x"));
        // A hostile console file name ends up percent-encoded in the href.
        assert!(html.contains("x%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.log"));
        // A scheme-like path becomes a relative link.
        assert!(!html.contains(r#"href="javascript:"#));
        assert!(html.contains(r#"href="javascript%3Aalert%281%29""#));
    }

    #[test]
    fn links_stay_inside_the_run_folder() {
        assert_eq!(inside_run_folder("/etc/passwd"), None);
        assert_eq!(inside_run_folder("../x.png"), None);
        assert_eq!(inside_run_folder("a/../../x.png"), None);
        assert_eq!(inside_run_folder("C:\\x"), None);
        assert_eq!(inside_run_folder("a/b c.png"), Some("a/b c.png"));
        assert_eq!(href("a/b c\"<>.png"), "a/b%20c%22%3C%3E.png");
    }

    #[test]
    fn oversized_or_foreign_screenshots_are_not_embedded() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("fake.png"), b"GIF89a").expect("write");
        let big = std::fs::File::create(dir.path().join("big.png")).expect("create");
        big.set_len(MAX_EMBED_BYTES + 1).expect("set_len");
        assert!(embed_png("fake.png", dir.path()).is_err_and(|n| n.contains("not a PNG")));
        assert!(embed_png("big.png", dir.path()).is_err_and(|n| n.contains("limit")));
        assert!(embed_png("../x.png", dir.path()).is_err_and(|n| n.contains("outside")));
    }

    #[test]
    fn shell_quoting_round_trips_through_sh() {
        assert_eq!(shell_quote("plain-arg_1.x"), "plain-arg_1.x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            shell_command_lines(&[
                "q".into(),
                "-m".into(),
                "256".into(),
                "-append".into(),
                "a b".into()
            ]),
            "q \\\n    -m 256 \\\n    -append 'a b'"
        );
    }

    /// Element nesting check: every non-void element closes, in order. Not a full
    /// HTML parser, but it catches a template edit that leaves a table or div open.
    #[test]
    fn output_tags_are_balanced() {
        const VOID: &[&str] = &["meta", "br", "img", "hr", "link", "col", "input", "wbr"];
        let html = rendered();
        let mut stack: Vec<String> = Vec::new();
        let mut rest = html.as_str();
        while let Some(open) = rest.find('<') {
            rest = &rest[open + 1..];
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') {
                continue;
            }
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            assert!(!name.is_empty(), "bad tag <{tag}>");
            if closing {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "at </{name}>");
            } else if !VOID.contains(&name.as_str()) && !tag.ends_with('/') {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn html_sink_writes_report_on_run_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = sample(dir.path());
        let mut sink = HtmlSink::new();
        sink.event(&Event::RunFinished {
            run: &run,
            dir: dir.path(),
        })
        .expect("sink");
        let text = std::fs::read_to_string(dir.path().join(REPORT_HTML)).expect("read");
        assert!(text.starts_with("<!DOCTYPE html>"));
    }

    /// Renders a real run.json to a file for a look in a browser:
    /// `BOOTGATE_HTML_SAMPLE=/path/run.json cargo test -p bootgate render_sample -- --ignored`
    #[test]
    #[ignore = "manual: renders the run.json named by BOOTGATE_HTML_SAMPLE"]
    fn render_sample() {
        let Ok(path) = std::env::var("BOOTGATE_HTML_SAMPLE") else {
            return;
        };
        let path = std::path::PathBuf::from(path);
        let text = std::fs::read_to_string(&path).expect("read run.json");
        let run: RunRecord = serde_json::from_str(&text).expect("parse run.json");
        let dir = path.parent().expect("run folder");
        let html = render(&run, dir).expect("render");
        std::fs::write(dir.join(REPORT_HTML), html).expect("write");
    }
}
