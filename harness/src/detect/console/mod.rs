//! Crash detection from the guest's console: recognises Linux crash, hang and warning
//! reports and turns each into a stable title ("BUG: unable to handle page fault in
//! sensor_parse_field [demo_sensor]"): the kind of report and the first non-generic
//! frame with its module (when it is a module's code), with addresses, offsets and
//! numbers stripped so the same bug gets the same title across runs and can be
//! de-duplicated.
//!
//! The console is untrusted and messy: user space writes into the middle of kernel
//! traces, the VM may stop half-way through a report, and lines may hold anything. The
//! detector never panics and keeps a bounded amount of state whatever it is fed.

use serde::Serialize;

pub use frames::{trace_frames, TraceFrame, MAX_TRACE_FRAMES};

mod classify;
#[cfg(test)]
mod fixtures;
mod frames;
#[cfg(test)]
mod tests;
mod title;

use classify::{
    header_of, is_report_line, Header, Line, Role, CONSEQUENCE_PANICS, PANIC_KIND, PANIC_PREFIX,
    WARNING_KIND,
};
use title::{frame_of, is_generic, normalise, warning_function, FrameRef};

/// A frame that names a report: the function and, for a module's code, the module.
type NamedFrame = (String, Option<String>);

/// Most lines kept as one report's excerpt: a full x86 oops followed by its panic is
/// about 60-80 lines, and past that the lines add nothing a reader needs.
pub const MAX_EXCERPT_LINES: usize = 100;

/// Most reports kept: a boot loop or a soft lockup that repeats every ~20 s would
/// otherwise grow the list for as long as the guest runs. Later ones are only counted.
pub const MAX_REPORTS: usize = 16;

/// Longest excerpt line kept, in bytes: kernel lines are short; a longer one is noise
/// (or a huge `Modules linked in:` list) and must not multiply memory use.
pub const MAX_LINE_BYTES: usize = 1024;

/// Bytes of a console line looked at. The harness already caps lines at 4096 bytes;
/// this keeps the detector's cost bounded even if a caller does not.
const MAX_SCAN_BYTES: usize = 8192;

/// Lines that are not part of a report tolerated inside (or after the end of) a report
/// before it is considered over. Other CPUs and user space keep printing while a
/// trace is written, so one stray line must not cut a report; but a trace without an
/// end marker (soft lockup, hung task, a VM stopped mid-report) must end somewhere.
const MAX_QUIET_LINES: usize = 40;

/// Longest title, in bytes: a panic message is free text.
pub const MAX_TITLE_BYTES: usize = 200;

/// How bad a report is. `Crash` and `Hang` fail a scenario; a `Warning` alone is
/// evidence, not a failure (unless the guest turns it into a panic, see
/// [`CrashDetector::feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CrashClass {
    Crash,
    Hang,
    Warning,
}

/// A crash, hang or warning report seen on the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleCrash {
    /// Normalised title, for humans and de-duplication: `"{kind} in {frame}"` (with
    /// ` [module]` when the frame is a module's code),
    /// `"Kernel panic: {message}"`, or just the kind when `corrupted`.
    pub title: String,
    /// The report's header, normalised (`"BUG: soft lockup"`, `"WARNING"`...). When a
    /// report holds several headers (a page fault, its `Oops:`, the panic it caused),
    /// this is the first one: the cause.
    pub kind: String,
    pub class: CrashClass,
    /// No usable frame was found (the trace was cut or could not be parsed), so the
    /// title is only the kind and should not be trusted to de-duplicate.
    pub corrupted: bool,
    /// The report's lines as printed (kernel timestamps kept), from its first line to
    /// the end of its trace, at most [`MAX_EXCERPT_LINES`]. Unrelated output printed
    /// in the middle of it is left out.
    pub excerpt: Vec<String>,
}

/// The report being read: what has been learnt from its lines so far.
#[derive(Debug)]
struct OpenReport {
    /// Where it is in `reports`; `None` past [`MAX_REPORTS`], when it is still followed
    /// so that its own lines do not start reports of their own.
    index: Option<usize>,
    kind: &'static str,
    class: CrashClass,
    /// Its header had a kernel timestamp, so lines without one are someone else's.
    timestamped: bool,
    /// Its end marker was seen; only a panic it caused may still join it.
    ended: bool,
    /// A panic already joined it (or it is one): a second panic is a new report.
    panicked: bool,
    panic_message: Option<String>,
    /// The function named on a `WARNING:` line itself.
    header_frame: Option<NamedFrame>,
    /// First non-generic frame not marked `?` (RIP lines, reliable trace entries).
    reliable: Option<NamedFrame>,
    /// First non-generic `?` frame: only used when no reliable one is found.
    unreliable: Option<NamedFrame>,
    /// Inside an RCU stall's dump of the grace-period kthread: an innocent bystander
    /// whose frames must not name the stall.
    in_gp_kthread_dump: bool,
    /// Lines held back since the last report line (at most [`MAX_QUIET_LINES`]).
    pending: Vec<String>,
    /// Lines seen since the last report line, kept or not.
    quiet: usize,
}

/// Feeds console lines in; keeps every crash, hang and warning report seen (up to
/// [`MAX_REPORTS`]), each with its title, class and excerpt.
///
/// Titles are provisional while a report is still being printed: they settle once
/// its trace is complete (see [`CrashDetector::is_reporting`]).
#[derive(Debug, Default)]
pub struct CrashDetector {
    reports: Vec<ConsoleCrash>,
    dropped: usize,
    open: Option<OpenReport>,
}

impl CrashDetector {
    pub fn new() -> CrashDetector {
        CrashDetector::default()
    }

    /// Takes one console line (without its newline). A panic that follows a report
    /// joins it rather than starting a report of its own, so the title names the
    /// cause; a warning that ends in a panic (`panic_on_warn`) becomes class `Crash`.
    pub fn feed(&mut self, line: &str) {
        let line = Line::parse(line);
        if line.body.starts_with("Linux version ") {
            // A new boot: whatever was being printed will never be finished.
            self.open = None;
            return;
        }
        if let Some(header) = header_of(line.body) {
            if header.role == Role::Consequence && self.joins(header, line.body) {
                self.join(header, &line);
            } else {
                self.start(header, &line);
            }
            return;
        }
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if open.timestamped && !line.timestamped {
            // User space writing to the console in the middle of a trace.
            open.quiet += 1;
        } else if open.ended || !is_report_line(line.body) {
            open.quiet += 1;
            if open.pending.len() < MAX_QUIET_LINES {
                open.pending
                    .push(clip(line.stored, MAX_LINE_BYTES).to_string());
            }
        } else {
            let report = open.index.and_then(|i| self.reports.get_mut(i));
            take_pending(open, report, line.stored);
            if line
                .body
                .starts_with("rcu: RCU grace-period kthread stack dump")
            {
                open.in_gp_kthread_dump = true;
            } else if line.body.starts_with("rcu: Stack dump where") {
                open.in_gp_kthread_dump = false;
            }
            if let Some(frame) = frame_of(line.body) {
                if !open.in_gp_kthread_dump {
                    open.note_frame(frame);
                }
            }
            if line.body.starts_with("---[ end trace")
                || line.body.starts_with("---[ end Kernel panic")
            {
                open.ended = true;
            }
            self.retitle();
            return;
        }
        if open.quiet > MAX_QUIET_LINES {
            self.open = None;
        }
    }

    /// The first report of class `Crash` or `Hang`: what fails a scenario. Warnings
    /// alone never count; find them with [`CrashDetector::first_of`] or
    /// [`CrashDetector::reports`].
    pub fn crash(&self) -> Option<&ConsoleCrash> {
        self.reports.iter().find(|r| r.class != CrashClass::Warning)
    }

    /// Every report seen, in console order, at most [`MAX_REPORTS`].
    pub fn reports(&self) -> &[ConsoleCrash] {
        &self.reports
    }

    /// The first report of one class (`first_of(CrashClass::Hang)` for the first hang).
    pub(crate) fn first_of(&self, class: CrashClass) -> Option<&ConsoleCrash> {
        self.reports.iter().find(|r| r.class == class)
    }

    /// Reports seen after [`MAX_REPORTS`] were kept, and so not kept.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// A report is still being printed: its title and excerpt may still change.
    pub(crate) fn is_reporting(&self) -> bool {
        self.open.as_ref().is_some_and(|o| !o.ended)
    }

    /// Whether a consequence header belongs to the report just printed.
    fn joins(&self, header: &Header, body: &str) -> bool {
        let Some(open) = &self.open else {
            return false;
        };
        if header.kind != PANIC_KIND {
            return !open.ended;
        }
        // A panic straight after trace lines is theirs; after a gap or an end marker,
        // only one whose message says it is a consequence (not, say, a sysrq crash).
        !open.panicked
            && ((!open.ended && open.quiet == 0)
                || CONSEQUENCE_PANICS.iter().any(|m| body.contains(m)))
    }

    fn join(&mut self, header: &Header, line: &Line) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let report = open.index.and_then(|i| self.reports.get_mut(i));
        take_pending(open, report, line.stored);
        open.ended = false;
        if header.kind == PANIC_KIND {
            open.panicked = true;
        }
        if header.class == CrashClass::Crash && open.class == CrashClass::Warning {
            open.class = CrashClass::Crash;
        }
        self.retitle();
    }

    fn start(&mut self, header: &'static Header, line: &Line) {
        let index = if self.reports.len() < MAX_REPORTS {
            self.reports.push(ConsoleCrash {
                title: header.kind.to_string(),
                kind: header.kind.to_string(),
                class: header.class,
                corrupted: true,
                excerpt: vec![clip(line.stored, MAX_LINE_BYTES).to_string()],
            });
            Some(self.reports.len() - 1)
        } else {
            self.dropped = self.dropped.saturating_add(1);
            None
        };
        let is_panic = header.kind == PANIC_KIND;
        self.open = Some(OpenReport {
            index,
            kind: header.kind,
            class: header.class,
            timestamped: line.timestamped,
            ended: false,
            panicked: is_panic,
            panic_message: line
                .body
                .strip_prefix(PANIC_PREFIX)
                .filter(|_| is_panic)
                .map(normalise),
            header_frame: (header.kind == WARNING_KIND)
                .then(|| warning_function(line.body))
                .flatten(),
            reliable: None,
            unreliable: None,
            in_gp_kthread_dump: false,
            pending: Vec::new(),
            quiet: 0,
        });
        self.retitle();
    }

    /// Brings the open report's title, class and `corrupted` up to date.
    fn retitle(&mut self) {
        let Some(open) = &self.open else {
            return;
        };
        let Some(report) = open.index.and_then(|i| self.reports.get_mut(i)) else {
            return;
        };
        let frame = open
            .header_frame
            .as_ref()
            .or(open.reliable.as_ref())
            .or(open.unreliable.as_ref());
        let message = open.panic_message.as_ref().filter(|m| !m.is_empty());
        let (title, corrupted) = match (open.kind == PANIC_KIND, message, frame) {
            (true, Some(message), _) => (format!("{PANIC_KIND}: {message}"), false),
            (_, _, Some((frame, Some(module)))) => {
                (format!("{} in {frame} [{module}]", open.kind), false)
            }
            (_, _, Some((frame, None))) => (format!("{} in {frame}", open.kind), false),
            _ => (open.kind.to_string(), true),
        };
        report.title = clip(&title, MAX_TITLE_BYTES).to_string();
        report.corrupted = corrupted;
        report.class = open.class;
    }
}

impl OpenReport {
    fn note_frame(&mut self, frame: FrameRef) {
        if is_generic(frame.function) {
            return;
        }
        let slot = if frame.reliable {
            &mut self.reliable
        } else {
            &mut self.unreliable
        };
        slot.get_or_insert_with(|| (frame.function.to_string(), frame.module.map(str::to_string)));
    }
}

/// Appends the held-back lines and then `line` to the report's excerpt: a report line
/// arrived, so what came between belongs to the report.
fn take_pending(open: &mut OpenReport, report: Option<&mut ConsoleCrash>, line: &str) {
    open.quiet = 0;
    let pending = std::mem::take(&mut open.pending);
    let Some(report) = report else {
        return;
    };
    for held in pending {
        if report.excerpt.len() < MAX_EXCERPT_LINES {
            report.excerpt.push(held);
        }
    }
    if report.excerpt.len() < MAX_EXCERPT_LINES {
        report.excerpt.push(clip(line, MAX_LINE_BYTES).to_string());
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
