//! Line classes: which console lines start a report (and whether as a cause or as
//! the consequence of the one just printed), which belong inside one, and where a
//! line's kernel timestamp ends.

use super::title::frame_of;
use super::{clip, CrashClass, MAX_SCAN_BYTES};

/// Whether a header begins a bug of its own or reports the consequence of the one
/// just printed (a page fault prints `Oops:`, then panics with "Fatal exception").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Cause,
    Consequence,
}

/// A line that starts a report.
#[derive(Debug)]
pub(super) struct Header {
    /// The line (after its timestamp) starts with one of these...
    pub(super) starts: &'static [&'static str],
    /// ...and contains this ("" when the prefix says enough).
    pub(super) contains: &'static str,
    pub(super) kind: &'static str,
    pub(super) class: CrashClass,
    pub(super) role: Role,
}

pub(super) const PANIC_PREFIX: &str = "Kernel panic - not syncing:";
pub(super) const PANIC_KIND: &str = "Kernel panic";
pub(super) const WARNING_KIND: &str = "WARNING";

/// Report headers, most specific first (`Oops: general protection fault` must be
/// found before `Oops:`). Old and new spellings of one bug map to one kind so titles
/// survive a kernel upgrade.
pub(super) const HEADERS: &[Header] = &[
    Header {
        starts: &[PANIC_PREFIX],
        contains: "",
        kind: PANIC_KIND,
        class: CrashClass::Crash,
        role: Role::Consequence,
    },
    Header {
        starts: &[
            "BUG: kernel NULL pointer dereference",
            "BUG: unable to handle kernel NULL pointer dereference",
        ],
        contains: "",
        kind: "BUG: kernel NULL pointer dereference",
        class: CrashClass::Crash,
        role: Role::Cause,
    },
    Header {
        starts: &[
            "BUG: unable to handle page fault",
            "BUG: unable to handle kernel paging request",
        ],
        contains: "",
        kind: "BUG: unable to handle page fault",
        class: CrashClass::Crash,
        role: Role::Cause,
    },
    Header {
        starts: &["general protection fault", "Oops: general protection fault"],
        contains: "",
        kind: "general protection fault",
        class: CrashClass::Crash,
        role: Role::Cause,
    },
    Header {
        starts: &["kernel BUG at "],
        contains: "",
        kind: "kernel BUG",
        class: CrashClass::Crash,
        role: Role::Cause,
    },
    Header {
        // Follows `kernel BUG at` (BUG() is a ud2), but also stands alone.
        starts: &["invalid opcode:", "Oops: invalid opcode:"],
        contains: "",
        kind: "invalid opcode",
        class: CrashClass::Crash,
        role: Role::Consequence,
    },
    Header {
        starts: &[
            "watchdog: BUG: soft lockup",
            "NMI watchdog: BUG: soft lockup",
            "BUG: soft lockup",
        ],
        contains: "",
        kind: "BUG: soft lockup",
        class: CrashClass::Hang,
        role: Role::Cause,
    },
    Header {
        starts: &["INFO: task "],
        contains: " blocked for more than ",
        kind: "INFO: task hung",
        class: CrashClass::Hang,
        role: Role::Cause,
    },
    Header {
        // "self-detected stall", "detected stalls", "detected expedited stalls".
        starts: &["rcu: INFO: rcu_", "INFO: rcu_"],
        contains: " stall",
        kind: "INFO: rcu detected stall",
        class: CrashClass::Hang,
        role: Role::Cause,
    },
    Header {
        starts: &["WARNING: CPU: ", "WARNING: at "],
        contains: "",
        kind: WARNING_KIND,
        class: CrashClass::Warning,
        role: Role::Cause,
    },
    Header {
        starts: &["Oops:"],
        contains: "",
        kind: "Oops",
        class: CrashClass::Crash,
        role: Role::Consequence,
    },
];

/// Panic messages that name the consequence of a report just printed rather than a
/// cause of their own; such a panic joins the preceding report even after its end
/// marker (x86 prints `---[ end trace ]---`, registers again, then panics).
pub(super) const CONSEQUENCE_PANICS: &[&str] = &[
    "Fatal exception",
    "panic_on_warn",
    "panic_on_oops",
    "softlockup",
    "hung_task",
    "RCU Stall",
    "hard LOCKUP",
    "Attempted to kill init",
    "Aiee, killing interrupt handler",
];

/// Starts of lines that belong inside a report (besides headers, frames and
/// register dumps). A line that is none of these is held back: it is kept only if
/// more of the report follows, so an excerpt never ends in unrelated output.
pub(super) const REPORT_PREFIXES: &[&str] = &[
    "#PF:",
    "PGD ",
    "P4D ",
    "PUD ",
    "PMD ",
    "Oops",
    "CPU: ",
    "Hardware name:",
    "RIP:",
    "EIP:",
    "IP:",
    "Code:",
    "Call Trace:",
    "Call trace:",
    "<TASK>",
    "</TASK>",
    "<IRQ>",
    "</IRQ>",
    "<NMI>",
    "</NMI>",
    "<EOI>",
    "Modules linked in:",
    "---[ ",
    "------------[ cut here ]",
    "Kernel Offset:",
    "Rebooting in",
    "Workqueue:",
    "task:",
    "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\"",
    "Not tainted",
    "Tainted:",
    "Sending NMI",
    "NMI backtrace",
    "rcu:",
    "(detected by",
    "(t=",
    "irq event stamp:",
    "hardirqs last",
    "softirqs last",
    "Stack:",
    "pc :",
    "lr :",
    "sp :",
    "note:",
    "Fixing recursive fault",
    "Dumping ftrace buffer",
    "invalid opcode:",
    "kernel BUG at",
    "general protection fault",
];

/// One console line, split into what is stored and what is parsed.
pub(super) struct Line<'a> {
    /// The line as printed, from its kernel timestamp on when it has one (user space
    /// may have written a partial line just before the kernel's).
    pub(super) stored: &'a str,
    /// The text after the timestamp, leading blanks removed.
    pub(super) body: &'a str,
    pub(super) timestamped: bool,
}

impl<'a> Line<'a> {
    pub(super) fn parse(raw: &'a str) -> Line<'a> {
        let line = clip(raw, MAX_SCAN_BYTES).trim_end_matches(['\r', '\n']);
        match find_timestamp(line) {
            Some((start, end)) => Line {
                stored: &line[start..],
                body: line[end..].trim_start(),
                timestamped: true,
            },
            None => Line {
                stored: line,
                body: line.trim_start(),
                timestamped: false,
            },
        }
    }
}

pub(super) fn header_of(body: &str) -> Option<&'static Header> {
    HEADERS
        .iter()
        .find(|h| h.starts.iter().any(|s| body.starts_with(s)) && body.contains(h.contains))
}

pub(super) fn is_report_line(body: &str) -> bool {
    REPORT_PREFIXES.iter().any(|p| body.starts_with(p))
        || frame_of(body).is_some()
        || is_register_dump(body)
}

/// `RAX: 0000000000000000 RBX: ...`, `R13: ...`, `FS:  0000...`, `CR2: ...`: a short
/// upper-case register name, a colon, then a hex value.
pub(super) fn is_register_dump(body: &str) -> bool {
    let mut words = body.split_whitespace();
    let (Some(name), Some(value)) = (words.next(), words.next()) else {
        return false;
    };
    let Some(name) = name.strip_suffix(':') else {
        return false;
    };
    (2..=4).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && value.bytes().next().is_some_and(|b| b.is_ascii_hexdigit())
}

/// Finds a kernel timestamp (`[   12.345678]`, optionally followed by a caller id
/// `[    T1]`) anywhere in the line: user space may have left a partial line before it.
/// Returns where it starts and where the text after it starts.
pub(super) fn find_timestamp(line: &str) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'[')
        .find_map(|(start, _)| timestamp_end(bytes, start).map(|end| (start, end)))
}

/// Where a timestamp starting at `start` (on its `[`) ends, if it is one. Each run is
/// bounded so a line full of `[` costs linear time.
pub(super) fn timestamp_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    at = skip_while(bytes, at, 16, |b| b == b' ').0;
    let (after_secs, secs) = skip_while(bytes, at, 12, |b| b.is_ascii_digit());
    if secs == 0 || bytes.get(after_secs) != Some(&b'.') {
        return None;
    }
    let (after_frac, frac) = skip_while(bytes, after_secs + 1, 9, |b| b.is_ascii_digit());
    if frac == 0 || bytes.get(after_frac) != Some(&b']') {
        return None;
    }
    at = after_frac + 1;
    // CONFIG_PRINTK_CALLER adds `[    T123]` or `[  C0]`.
    if bytes.get(at) == Some(&b'[') {
        let id = skip_while(bytes, at + 1, 16, |b| b == b' ').0;
        if matches!(bytes.get(id), Some(b'T' | b'C')) {
            let (end, digits) = skip_while(bytes, id + 1, 10, |b| b.is_ascii_digit());
            if digits > 0 && bytes.get(end) == Some(&b']') {
                at = end + 1;
            }
        }
    }
    Some(at)
}

/// Advances past at most `max` bytes matching `pred`; returns the new position and
/// how many were skipped.
pub(super) fn skip_while(
    bytes: &[u8],
    from: usize,
    max: usize,
    pred: impl Fn(u8) -> bool,
) -> (usize, usize) {
    let count = bytes
        .iter()
        .skip(from)
        .take(max)
        .take_while(|&&b| pred(b))
        .count();
    (from + count, count)
}
