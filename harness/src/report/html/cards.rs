//! One scenario's section: its boots and steps, the crash cards with their
//! evidence, and links into the run folder.

use std::io::Read;
use std::path::{Component, Path};

use base64::Engine as _;
use minijinja::Value;
use serde::Serialize;

use super::format::{anchor, boot_class, clean, ms_text, shell_command, step_class, verdict_class};
use super::timeline::Timeline;
use crate::model::record::{
    after_ready_span, AttemptRecord, BootOutcome, BootRecord, CrashPhase, CrashRecord,
    RecoveryRecord, ScenarioRecord, StepRecord,
};

/// Screenshots above this are linked, not embedded: a report that takes minutes to
/// download from a CI artifact store is not read.
pub(super) const MAX_EMBED_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Serialize)]
pub(super) struct ScenarioView {
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
    /// "crashed 5.1 s after ready", "crashed before ready".
    crash_when: Option<String>,
    extra_append: Option<String>,
    /// Installed drivers this boot had loaded / had not, comma-separated.
    drivers_loaded: Option<String>,
    drivers_missing: Option<String>,
    reboot_via: Option<String>,
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
    /// "9.8 MiB, written in 0.4 s".
    dump_size: Option<String>,
    dump_note: Option<String>,
    /// How the crash reached the host and what was captured of it (the capture
    /// model: host-paused, host-stopped, guest-writing-dump, reset), with its note.
    capture: Option<String>,
    capture_note: Option<String>,
    /// Dumps the guest wrote itself (copied at its next ready boot), or why none.
    guest_dumps: Vec<Link>,
    guest_dumps_note: Option<String>,
    /// Evidence copied off the stopped disk by an offline recovery.
    offline_evidence: Vec<Link>,
    console: Option<Link>,
    /// Triage: where it faulted, the driver frames at their lines, the dump's
    /// reading, what could not be done, and the file with it all.
    triage: Option<TriageView>,
    /// The boot of an earlier crash with the same title: the excerpt is then folded
    /// away, since a boot loop repeats one crash and only the addresses differ.
    repeat_of: Option<u32>,
}

#[derive(Serialize)]
struct TriageView {
    at: Option<String>,
    frames: Vec<TriageFrameView>,
    dump: Option<String>,
    notes: Vec<String>,
    file: Option<Link>,
}

#[derive(Serialize)]
struct TriageFrameView {
    frame: String,
    faulting: bool,
    location: Option<String>,
    function: Option<String>,
    inlined_by: Vec<String>,
}

impl TriageView {
    fn build(t: &crate::model::record::TriageRecord) -> TriageView {
        TriageView {
            at: t.at.as_deref().map(clean),
            frames: t
                .frames
                .iter()
                .map(|f| TriageFrameView {
                    frame: clean(&f.frame),
                    faulting: f.faulting,
                    location: f.location.as_deref().map(clean),
                    function: f.function.as_deref().map(clean),
                    inlined_by: f.inlined_by.iter().map(|c| clean(c)).collect(),
                })
                .collect(),
            dump: t.dump.as_deref().map(clean),
            notes: t.notes.iter().map(|n| clean(n)).collect(),
            file: (!t.file.is_empty()).then(|| Link::new(&t.file)),
        }
    }
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

impl ScenarioView {
    pub(super) fn build(index: usize, sc: &ScenarioRecord, run_dir: &Path) -> ScenarioView {
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
            boots: sc.boots.iter().map(BootView::build).collect(),
            steps: sc.steps.iter().map(StepView::build).collect(),
            crashes: crash_views(sc, run_dir),
            hangs: sc.hangs.iter().map(|h| clean(h)).collect(),
            hang_shots: sc
                .hang_screenshots
                .iter()
                .map(|p| Shot::build(p, run_dir))
                .collect(),
            boot_loop: boot_loop_line(sc),
            attempts: sc.attempts.iter().map(attempt_line).collect(),
            recovery: sc.recovery.as_ref().map(recovery_line),
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

impl BootView {
    fn build(b: &BootRecord) -> BootView {
        BootView {
            index: b.index,
            start: ms_text(b.start_ms),
            outcome: b.outcome.as_str(),
            oclass: boot_class(b.outcome),
            ready: b.ready_ms.map_or_else(|| "—".to_string(), ms_text),
            crash: b.crash.as_deref().map(clean),
            crash_when: b.crash_when(),
            extra_append: b.extra_append.as_deref().map(clean),
            drivers_loaded: b
                .drivers
                .as_ref()
                .filter(|d| !d.loaded.is_empty())
                .map(|d| clean(&d.loaded.join(", "))),
            drivers_missing: b
                .drivers
                .as_ref()
                .filter(|d| !d.missing.is_empty())
                .map(|d| clean(&d.missing.join(", "))),
            reboot_via: b.reboot_via.as_deref().map(clean),
        }
    }
}

impl StepView {
    fn build(st: &StepRecord) -> StepView {
        StepView {
            kind: clean(&st.kind),
            outcome: st.outcome.as_str(),
            oclass: step_class(st.outcome),
            start: ms_text(st.start_ms),
            duration: ms_text(st.duration_ms),
            detail: clean(&st.detail),
        }
    }
}

fn crash_views(sc: &ScenarioRecord, run_dir: &Path) -> Vec<CrashView> {
    sc.crashes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let repeat_of = sc.crashes[..i]
                .iter()
                .find(|earlier| earlier.title == c.title)
                .map(|earlier| earlier.boot_index);
            CrashView::build(c, sc, run_dir, repeat_of)
        })
        .collect()
}

fn attempt_line(a: &AttemptRecord) -> String {
    clean(&format!(
        "attempt {}: {} — {} (evidence in {})",
        a.attempt,
        a.verdict.as_str(),
        a.reason.as_deref().unwrap_or("no reason given"),
        a.dir
    ))
}

fn recovery_line(r: &RecoveryRecord) -> String {
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
    ) + &r
        .settled_s
        .map(|s| format!("; it then stayed up {s:.0} s past ready"))
        .unwrap_or_default()
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
    let late: Vec<u64> = sc
        .boots
        .iter()
        .skip(1)
        .filter(|b| b.crash_phase() == Some(CrashPhase::AfterReady))
        .filter_map(|b| b.crash_after_ready_ms)
        .collect();
    if !late.is_empty() {
        // Boots that answered and then crashed inside the settle window: the loop
        // is not a run of crashes before ready.
        return Some(format!(
            "boots crashed at every boot watched, {} of them after becoming ready ({} after ready)",
            late.len(),
            after_ready_span(&late)
        ));
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
            dump_size: c.dump_bytes.map(|b| {
                let size = format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
                match c.dump_ms {
                    Some(ms) => format!("{size}, written in {}", ms_text(ms)),
                    None => size,
                }
            }),
            dump_note: c.dump_note.as_deref().map(clean),
            capture: c.capture.as_deref().map(clean),
            capture_note: c.capture_note.as_deref().map(clean),
            guest_dumps: c.guest_dumps.iter().map(|p| Link::new(p)).collect(),
            guest_dumps_note: c.guest_dumps_note.as_deref().map(clean),
            offline_evidence: c.offline_evidence.iter().map(|p| Link::new(p)).collect(),
            // The console is recorded as a file name inside the scenario's folder.
            console: c
                .console
                .as_deref()
                .map(|name| Link::new(&format!("{}/{}", sc.dir.trim_end_matches('/'), name))),
            triage: c.triage.as_ref().map(TriageView::build),
            repeat_of,
        }
    }
}

fn dump_how(format: Option<&str>) -> DumpHow {
    match format {
        Some("elf") => DumpHow {
            what: "ELF core file, read with the guest kernel's debug vmlinux (Debian: linux-image-RELEASE-dbg, /usr/lib/debug/boot/vmlinux-RELEASE)",
            tools: &["crash vmlinux DUMP", "gdb vmlinux DUMP"],
            join: "or",
        },
        Some("win-dmp") => DumpHow {
            what: "Windows crash dump, read with WinDbg",
            tools: &["windbg -z DUMP", "!analyze -v"],
            join: "then",
        },
        Some(f) if f.starts_with("kdump") => DumpHow {
            what: "kdump-compressed dump (makedumpfile's format; gdb does not read it: set guest.dump_format = \"elf\" for gdb), read with crash and the guest kernel's debug vmlinux (Debian: linux-image-RELEASE-dbg, /usr/lib/debug/boot/vmlinux-RELEASE)",
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
pub(super) fn embed_png(path: &str, run_dir: &Path) -> Result<Value, String> {
    let Some(rel) = inside_run_folder(path) else {
        return Err("not embedded: the recorded path is outside the run folder".to_string());
    };
    // Never through a link: a planted screenshot.png -> host file must not be
    // copied into the report.
    let mut file = crate::model::result_file::open(run_dir, Path::new(rel)).map_err(|e| {
        if e.is_not_found() {
            "not embedded: the file is missing from the run folder".to_string()
        } else {
            format!("not embedded: {e}")
        }
    })?;
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
pub(super) fn inside_run_folder(path: &str) -> Option<&str> {
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
pub(super) fn href(path: &str) -> String {
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
