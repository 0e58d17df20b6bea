//! Crash detection from the guest's console: recognises the start of a Linux crash
//! report and turns it into a stable title ("BUG: unable to handle page fault in
//! sensor_parse_field"): the kind of crash and the first non-generic frame, with
//! addresses and offsets stripped so the same bug gets the same title across runs.

/// Lines that start a crash report, with the kind each one names.
const CRASH_HEADERS: &[(&str, &str)] = &[
    (
        "BUG: kernel NULL pointer dereference",
        "BUG: kernel NULL pointer dereference",
    ),
    (
        "BUG: unable to handle page fault",
        "BUG: unable to handle page fault",
    ),
    (
        "BUG: unable to handle kernel",
        "BUG: unable to handle kernel paging request",
    ),
    ("general protection fault", "general protection fault"),
    ("kernel BUG at", "kernel BUG"),
    ("watchdog: BUG: soft lockup", "BUG: soft lockup"),
    ("INFO: task ", "INFO: task hung"),
    ("Oops:", "Oops"),
    ("Kernel panic - not syncing:", "Kernel panic"),
];

/// Frames that name the crash machinery rather than the code that crashed.
const GENERIC_FRAMES: &[&str] = &[
    "panic",
    "dump_stack",
    "dump_stack_lvl",
    "__warn",
    "warn_slowpath_fmt",
    "oops_end",
    "die",
    "do_trap",
    "do_error_trap",
    "exc_page_fault",
    "asm_exc_page_fault",
    "page_fault_oops",
    "kernelmode_fixup_or_oops",
    "__bad_area_nosemaphore",
    "bad_area_nosemaphore",
    "do_user_addr_fault",
    "exc_general_protection",
    "asm_exc_general_protection",
    "exc_invalid_op",
    "asm_exc_invalid_op",
    "handle_bug",
    "sysrq_handle_crash",
    "__handle_sysrq",
    "write_sysrq_trigger",
    "no_context",
];

/// A crash seen on the console.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsoleCrash {
    /// Normalised title, for humans and de-duplication.
    pub title: String,
    pub kind: String,
    /// The lines of the report seen so far, at most [`MAX_EXCERPT_LINES`].
    pub excerpt: Vec<String>,
}

/// Most report lines kept as the excerpt.
pub const MAX_EXCERPT_LINES: usize = 60;

/// Feeds console lines in; remembers the first crash report and its best frame.
#[derive(Debug, Default)]
pub struct CrashDetector {
    crash: Option<ConsoleCrash>,
    frame: Option<String>,
    panic_message: Option<String>,
}

impl CrashDetector {
    pub fn new() -> CrashDetector {
        CrashDetector::default()
    }

    /// Strips the kernel's `[  12.345678] ` timestamp prefix.
    fn body(line: &str) -> &str {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                return rest[end + 1..].trim_start();
            }
        }
        trimmed
    }

    pub fn feed(&mut self, line: &str) {
        let body = Self::body(line);
        if self.crash.is_none() {
            if let Some((_, kind)) = CRASH_HEADERS.iter().find(|(h, _)| body.contains(h)) {
                self.crash = Some(ConsoleCrash {
                    title: kind.to_string(),
                    kind: kind.to_string(),
                    excerpt: Vec::new(),
                });
            }
        }
        let Some(crash) = self.crash.as_mut() else {
            return;
        };
        if crash.excerpt.len() < MAX_EXCERPT_LINES {
            crash.excerpt.push(line.to_string());
        }
        if let Some(rest) = body.strip_prefix("Kernel panic - not syncing:") {
            self.panic_message
                .get_or_insert_with(|| normalise(rest.trim()));
        }
        if self.frame.is_none() {
            if let Some(frame) = frame_of(body) {
                self.frame = Some(frame);
            }
        }
        crash.title = match (&self.frame, &self.panic_message) {
            (Some(frame), _) => format!("{} in {frame}", crash.kind),
            (None, Some(message)) if crash.kind == "Kernel panic" => {
                format!("Kernel panic: {message}")
            }
            _ => crash.kind.clone(),
        };
    }

    pub fn crash(&self) -> Option<&ConsoleCrash> {
        self.crash.as_ref()
    }
}

/// The function named by a `RIP: 0010:func+0x1a/0x40` line or a call-trace frame,
/// unless it is one of the generic crash-path helpers.
fn frame_of(body: &str) -> Option<String> {
    let candidate = if let Some(rest) = body.split("RIP: 0010:").nth(1) {
        rest
    } else if body.contains("+0x") && !body.contains(':') {
        body.trim_start_matches('?').trim()
    } else {
        return None;
    };
    let name = candidate.split(['+', ' ']).next()?.trim();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (valid && !GENERIC_FRAMES.contains(&name)).then(|| name.to_string())
}

/// Replaces hex and decimal numbers with placeholders so titles are stable.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        let w = word.trim_end_matches([',', '.']);
        let numeric =
            w.starts_with("0x") || (!w.is_empty() && w.chars().all(|c| c.is_ascii_digit()));
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(if numeric { "N" } else { word });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OOPS: &str = "\
[   12.000001] BUG: unable to handle page fault for address: ffffa0c0c0de0050
[   12.000002] #PF: supervisor read access in kernel mode
[   12.000003] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   12.000004] RIP: 0010:sensor_parse_field+0x1a/0x40 [demo_sensor]
[   12.000005] Call Trace:
[   12.000006]  <TASK>
[   12.000007]  ? page_fault_oops+0x3c/0x90
[   12.000008]  sensor_load+0x55/0x90 [demo_sensor]
[   12.000009] Kernel panic - not syncing: Fatal exception";

    #[test]
    fn page_fault_title_names_the_faulting_function() {
        let mut d = CrashDetector::new();
        d.feed("[    1.0] random boot noise");
        for line in OOPS.lines() {
            d.feed(line);
        }
        let crash = d.crash().unwrap();
        assert_eq!(
            crash.title,
            "BUG: unable to handle page fault in sensor_parse_field"
        );
        assert_eq!(crash.excerpt.len(), 9);
    }

    #[test]
    fn sysrq_panic_skips_generic_frames() {
        let mut d = CrashDetector::new();
        for line in [
            "[   20.1] sysrq: Trigger a crash",
            "[   20.2] Kernel panic - not syncing: sysrq triggered crash",
            "[   20.3] Call Trace:",
            "[   20.4]  dump_stack_lvl+0x44/0x5c",
            "[   20.5]  panic+0x118/0x2ed",
            "[   20.6]  sysrq_handle_crash+0x16/0x20",
        ] {
            d.feed(line);
        }
        assert_eq!(
            d.crash().unwrap().title,
            "Kernel panic: sysrq triggered crash"
        );
    }

    #[test]
    fn same_bug_same_title_across_addresses() {
        let title = |addr: &str| {
            let mut d = CrashDetector::new();
            d.feed(&format!(
                "[ 3.1] BUG: kernel NULL pointer dereference, address: {addr}"
            ));
            d.feed("[ 3.2] RIP: 0010:null_deref_init+0x5/0x1000 [null_deref]");
            d.crash().unwrap().title.clone()
        };
        assert_eq!(title("0000000000000000"), title("0000000000000008"));
        assert_eq!(
            title("0"),
            "BUG: kernel NULL pointer dereference in null_deref_init"
        );
    }

    #[test]
    fn quiet_console_has_no_crash() {
        let mut d = CrashDetector::new();
        for line in [
            "bootgate: ready boot=1",
            "Linux version 6.1.0",
            "BUGS are fun",
        ] {
            d.feed(line);
        }
        assert!(d.crash().is_none());
    }
}
