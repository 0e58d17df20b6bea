//! Crash detection from the guest's console: recognises Linux crash, hang and warning
//! reports and turns each into a stable title ("BUG: unable to handle page fault in
//! sensor_parse_field"): the kind of report and the first non-generic frame, with
//! addresses, offsets, module names and numbers stripped so the same bug gets the same
//! title across runs and can be de-duplicated.
//!
//! The console is untrusted and messy: user space writes into the middle of kernel
//! traces, the VM may stop half-way through a report, and lines may hold anything. The
//! detector never panics and keeps a bounded amount of state whatever it is fed.

use serde::Serialize;

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
    /// Normalised title, for humans and de-duplication: `"{kind} in {frame}"`,
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

/// Whether a header begins a bug of its own or reports the consequence of the one
/// just printed (a page fault prints `Oops:`, then panics with "Fatal exception").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Cause,
    Consequence,
}

/// A line that starts a report.
#[derive(Debug)]
struct Header {
    /// The line (after its timestamp) starts with one of these...
    starts: &'static [&'static str],
    /// ...and contains this ("" when the prefix says enough).
    contains: &'static str,
    kind: &'static str,
    class: CrashClass,
    role: Role,
}

const PANIC_PREFIX: &str = "Kernel panic - not syncing:";
const PANIC_KIND: &str = "Kernel panic";
const WARNING_KIND: &str = "WARNING";

/// Report headers, most specific first (`Oops: general protection fault` must be
/// found before `Oops:`). Old and new spellings of one bug map to one kind so titles
/// survive a kernel upgrade.
const HEADERS: &[Header] = &[
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
const CONSEQUENCE_PANICS: &[&str] = &[
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

/// Frames that name the crash, interrupt, scheduling or system-call machinery rather
/// than the code at fault. Compared after `.cold`/`.isra.0`-style suffixes are cut.
const GENERIC_FRAMES: &[&str] = &[
    // Reporting the crash.
    "panic",
    "vpanic",
    "nmi_panic",
    "check_panic_on_warn",
    "show_stack",
    "show_regs",
    "__show_regs",
    "show_trace_log_lvl",
    "oops_begin",
    "oops_end",
    "die",
    "__die",
    "__die_body",
    "die_body",
    "die_addr",
    "do_trap",
    "do_error_trap",
    "do_int3",
    "handle_bug",
    "handle_invalid_op",
    "report_bug",
    "__report_bug",
    "__warn",
    "warn_slowpath_fmt",
    "warn_slowpath_null",
    "__warn_printk",
    // Taking the fault.
    "page_fault_oops",
    "kernelmode_fixup_or_oops",
    "no_context",
    "__bad_area_nosemaphore",
    "bad_area_nosemaphore",
    "__bad_area",
    "bad_area",
    "bad_area_access_error",
    "do_user_addr_fault",
    "do_kern_addr_fault",
    "handle_page_fault",
    "do_page_fault",
    "__do_page_fault",
    "spurious_kernel_fault",
    "fixup_exception",
    "page_fault",
    "general_protection",
    "do_general_protection",
    "invalid_op",
    "do_invalid_op",
    "error_entry",
    // Timer interrupts and watchdogs that print lockups and stalls.
    "watchdog_timer_fn",
    "__hrtimer_run_queues",
    "hrtimer_interrupt",
    "local_apic_timer_interrupt",
    "smp_apic_timer_interrupt",
    "apic_timer_interrupt",
    "update_process_times",
    "tick_sched_handle",
    "tick_sched_timer",
    "tick_nohz_handler",
    "tick_periodic",
    "tick_handle_periodic",
    "irq_exit",
    "irq_exit_rcu",
    "__irq_exit_rcu",
    "__do_softirq",
    "handle_softirqs",
    "do_softirq",
    "run_ksoftirqd",
    "common_interrupt",
    "nmi_cpu_backtrace",
    "nmi_trigger_cpumask_backtrace",
    "arch_trigger_cpumask_backtrace",
    "trigger_single_cpu_backtrace",
    "print_cpu_stall",
    "print_other_cpu_stall",
    "check_cpu_stall",
    "watchdog",
    "check_hung_uninterruptible_tasks",
    "check_hung_task",
    "sched_show_task",
    // Triggering a crash from user space.
    "write_sysrq_trigger",
    "proc_reg_write",
    "vfs_write",
    "ksys_write",
    "x64_sys_call",
    "do_syscall_64",
    "do_syscall_x64",
    "do_int80_syscall_32",
    "syscall_exit_to_user_mode",
    // Thread and CPU start-up: below the code at fault on every stack.
    "ret_from_fork",
    "ret_from_fork_asm",
    "kthread",
    "kthread_complete_and_exit",
    "smpboot_thread_fn",
    "worker_thread",
    "process_one_work",
    "process_scheduled_works",
    "start_kernel",
    "x86_64_start_kernel",
    "x86_64_start_reservations",
    "secondary_startup_64",
    "secondary_startup_64_no_verify",
    "common_startup_64",
    "cpu_startup_entry",
    "do_idle",
    "default_idle",
    "default_idle_call",
    "arch_cpu_idle",
    "native_safe_halt",
    // Sleeping and waiting: every hung task's stack starts with these.
    "__schedule",
    "schedule",
    "schedule_timeout",
    "schedule_timeout_uninterruptible",
    "schedule_timeout_interruptible",
    "schedule_timeout_killable",
    "schedule_preempt_disabled",
    "schedule_hrtimeout_range",
    "schedule_hrtimeout_range_clock",
    "io_schedule",
    "io_schedule_timeout",
    "preempt_schedule",
    "preempt_schedule_common",
    "preempt_schedule_irq",
    "preempt_schedule_thunk",
    "__cond_resched",
    "_cond_resched",
    "finish_task_switch",
    "context_switch",
    "msleep",
    "msleep_interruptible",
    "usleep_range",
    "usleep_range_state",
    "ssleep",
    "wait_for_completion",
    "wait_for_completion_timeout",
    "wait_for_completion_interruptible",
    "wait_for_completion_killable",
    "wait_for_completion_io",
    "__wait_for_common",
    "wait_for_common",
    "do_wait_for_common",
    "wait_for_common_io",
    "mutex_lock",
    "__mutex_lock",
    "__mutex_lock_slowpath",
    "mutex_lock_nested",
    "mutex_lock_interruptible",
    "mutex_lock_killable",
    "down",
    "__down",
    "__down_common",
    "down_interruptible",
    "down_killable",
    "down_read",
    "down_write",
    "rwsem_down_read_slowpath",
    "rwsem_down_write_slowpath",
    "do_raw_spin_lock",
    "queued_spin_lock_slowpath",
    "native_queued_spin_lock_slowpath",
    "__pv_queued_spin_lock_slowpath",
    "queued_read_lock_slowpath",
    "queued_write_lock_slowpath",
    "__const_udelay",
    "__udelay",
    "__ndelay",
    "delay_tsc",
    "delay_loop",
    "delay_halt",
    "delay_halt_tpause",
    // Library helpers: the caller passed them the bad pointer.
    "memcpy",
    "__memcpy",
    "memcpy_orig",
    "memcpy_erms",
    "memmove",
    "__memmove",
    "memset",
    "__memset",
    "memset_orig",
    "memset_erms",
    "memcmp",
    "__memcmp",
    "bcmp",
    "strcmp",
    "strncmp",
    "strlen",
    "strnlen",
    "strcpy",
    "strncpy",
    "strscpy",
    "sized_strscpy",
    "strchr",
    "strrchr",
    "strstr",
    "strcat",
    "strncat",
    "rep_movs_alternative",
    "copy_user_generic",
    "_copy_from_user",
    "_copy_to_user",
    "kfree",
    "kmem_cache_free",
    "__slab_free",
];

/// Prefixes of generic frames: families too large to list one by one.
const GENERIC_PREFIXES: &[&str] = &[
    "dump_stack",
    "__dump_stack",
    "asm_exc_",
    "exc_",
    "asm_sysvec_",
    "sysvec_",
    "__sysvec_",
    "asm_common_interrupt",
    "entry_SYSCALL",
    "entry_INT80",
    "sysrq_",
    "__sysrq_",
    "__handle_sysrq",
    "handle_sysrq",
    "rcu_",
    "__rcu_",
    "_raw_",
    "__raw_",
    "__x64_sys_",
    "__ia32_sys_",
    "__se_sys_",
];

/// Starts of lines that belong inside a report (besides headers, frames and
/// register dumps). A line that is none of these is held back: it is kept only if
/// more of the report follows, so an excerpt never ends in unrelated output.
const REPORT_PREFIXES: &[&str] = &[
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
struct Line<'a> {
    /// The line as printed, from its kernel timestamp on when it has one (user space
    /// may have written a partial line just before the kernel's).
    stored: &'a str,
    /// The text after the timestamp, leading blanks removed.
    body: &'a str,
    timestamped: bool,
}

impl<'a> Line<'a> {
    fn parse(raw: &'a str) -> Line<'a> {
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
    header_frame: Option<String>,
    /// First non-generic frame not marked `?` (RIP lines, reliable trace entries).
    reliable: Option<String>,
    /// First non-generic `?` frame: only used when no reliable one is found.
    unreliable: Option<String>,
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
            if let Some((name, reliable)) = frame_of(line.body) {
                if !open.in_gp_kthread_dump {
                    open.note_frame(name, reliable);
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
    pub fn first_of(&self, class: CrashClass) -> Option<&ConsoleCrash> {
        self.reports.iter().find(|r| r.class == class)
    }

    /// Reports seen after [`MAX_REPORTS`] were kept, and so not kept.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// A report is still being printed: its title and excerpt may still change.
    pub fn is_reporting(&self) -> bool {
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
            (_, _, Some(frame)) => (format!("{} in {frame}", open.kind), false),
            _ => (open.kind.to_string(), true),
        };
        report.title = clip(&title, MAX_TITLE_BYTES).to_string();
        report.corrupted = corrupted;
        report.class = open.class;
    }
}

impl OpenReport {
    fn note_frame(&mut self, name: &str, reliable: bool) {
        if is_generic(name) {
            return;
        }
        let slot = if reliable {
            &mut self.reliable
        } else {
            &mut self.unreliable
        };
        slot.get_or_insert_with(|| name.to_string());
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

fn header_of(body: &str) -> Option<&'static Header> {
    HEADERS
        .iter()
        .find(|h| h.starts.iter().any(|s| body.starts_with(s)) && body.contains(h.contains))
}

fn is_report_line(body: &str) -> bool {
    REPORT_PREFIXES.iter().any(|p| body.starts_with(p))
        || frame_of(body).is_some()
        || is_register_dump(body)
}

/// `RAX: 0000000000000000 RBX: ...`, `R13: ...`, `FS:  0000...`, `CR2: ...`: a short
/// upper-case register name, a colon, then a hex value.
fn is_register_dump(body: &str) -> bool {
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

/// The function a line names as a stack frame, and whether it is reliable. RIP/IP/pc
/// lines name where the CPU was: reliable. Call-trace entries marked `?` are stale
/// values the unwinder found on the stack: unreliable. User-space RIPs are not frames.
fn frame_of(body: &str) -> Option<(&str, bool)> {
    if let Some(rest) = body.strip_prefix("RIP: ") {
        let rest = rest.strip_prefix("0010:")?;
        return symbol(skip_addresses(rest)).map(|n| (n, true));
    }
    for prefix in ["EIP: ", "IP: ", "pc : "] {
        if let Some(rest) = body.strip_prefix(prefix) {
            let rest = rest.strip_prefix("0060:").unwrap_or(rest);
            return symbol(skip_addresses(rest)).map(|n| (n, true));
        }
    }
    let rest = skip_addresses(body);
    match rest.strip_prefix("? ") {
        Some(rest) => symbol(rest.trim_start()).map(|n| (n, false)),
        None => symbol(rest).map(|n| (n, true)),
    }
}

/// Skips old-style `[<ffffffff81234567>]` addresses before a symbol.
fn skip_addresses(mut text: &str) -> &str {
    while let Some(rest) = text.strip_prefix("[<") {
        match rest.find(">]") {
            Some(end) => text = rest[end + 2..].trim_start(),
            None => break,
        }
    }
    text
}

/// The function in a leading `func+0x1a/0x40` token, with compiler suffixes
/// (`.cold`, `.isra.0`, `.constprop.0`) cut: they change with the compiler, not the bug.
fn symbol(text: &str) -> Option<&str> {
    let token = text.split_whitespace().next()?;
    let (name, offset) = token.split_once('+')?;
    let (off, size) = offset.split_once('/')?;
    let hex = |s: &str| {
        s.strip_prefix("0x")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if !hex(off) || !hex(size.trim_end_matches("()")) {
        return None;
    }
    base_name(name)
}

/// `name` cut at its first `.`, if it is an identifier.
fn base_name(name: &str) -> Option<&str> {
    let base = name.split('.').next()?;
    let mut bytes = base.bytes();
    let first = bytes.next()?;
    let valid = (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(base)
}

fn is_generic(name: &str) -> bool {
    GENERIC_FRAMES.contains(&name) || GENERIC_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The function a `WARNING: CPU: 0 PID: 1 at file.c:12 func+0x1/0x2 [mod]` (or older
/// `WARNING: at file.c:12 func()`) line names, unless it is a generic helper.
fn warning_function(body: &str) -> Option<String> {
    let (_, site) = body.split_once(" at ")?;
    let mut words = site.split_whitespace();
    let _file_line = words.next()?;
    let word = words.next()?;
    let name = symbol(word).or_else(|| base_name(word.trim_end_matches("()")))?;
    (!is_generic(name)).then(|| name.to_string())
}

/// Finds a kernel timestamp (`[   12.345678]`, optionally followed by a caller id
/// `[    T1]`) anywhere in the line: user space may have left a partial line before it.
/// Returns where it starts and where the text after it starts.
fn find_timestamp(line: &str) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'[')
        .find_map(|(start, _)| timestamp_end(bytes, start).map(|end| (start, end)))
}

/// Where a timestamp starting at `start` (on its `[`) ends, if it is one. Each run is
/// bounded so a line full of `[` costs linear time.
fn timestamp_end(bytes: &[u8], start: usize) -> Option<usize> {
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
fn skip_while(bytes: &[u8], from: usize, max: usize, pred: impl Fn(u8) -> bool) -> (usize, usize) {
    let count = bytes
        .iter()
        .skip(from)
        .take(max)
        .take_while(|&&b| pred(b))
        .count();
    (from + count, count)
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

/// Replaces numbers (decimal, `0x` hex, long bare hex such as addresses) with `N` and
/// collapses blanks, so a panic message reads the same in every run.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let numeric = word.bytes().all(|b| b.is_ascii_digit())
            || word
                .strip_prefix("0x")
                .or_else(|| word.strip_prefix("0X"))
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
            || (word.len() >= 8
                && word.bytes().all(|b| b.is_ascii_hexdigit())
                && word.bytes().any(|b| b.is_ascii_digit()));
        if !word.is_empty() {
            out.push_str(if numeric { "N" } else { word });
        }
        word.clear();
    };
    for c in text.trim().chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        flush(&mut word, &mut out);
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(console: &str) -> CrashDetector {
        let mut d = CrashDetector::new();
        for line in console.lines() {
            d.feed(line);
        }
        d
    }

    fn only(console: &str) -> ConsoleCrash {
        let d = detect(console);
        assert_eq!(d.reports().len(), 1, "reports: {:#?}", d.reports());
        d.reports()[0].clone()
    }

    /// A page fault in a module, oops=panic: BUG, Oops, trace, end trace, registers
    /// again, the panic it causes and the panic's end marker.
    const PAGE_FAULT: &str = "\
[    9.100000] demo_sensor: loading content
[   12.000001] BUG: unable to handle page fault for address: ffffa0c0c0de0050
[   12.000002] #PF: supervisor read access in kernel mode
[   12.000003] #PF: error_code(0x0000) - not-present page
[   12.000004] PGD 100000067 P4D 100000067 PUD 0
[   12.000005] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   12.000006] CPU: 0 PID: 231 Comm: insmod Tainted: G           OE      6.1.0-27-cloud-amd64 #1  Debian 6.1.115-1
[   12.000007] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[   12.000008] RIP: 0010:sensor_match_fields+0x1a/0x40 [demo_sensor]
[   12.000009] Code: 48 8b 04 c7 c3 cc cc cc cc 0f 1f 44 00 00
[   12.000010] RSP: 0018:ffffb3c2c0a5bc58 EFLAGS: 00010246
[   12.000011] RAX: 0000000000000014 RBX: ffff9e7dc1f3a000 RCX: 0000000000000000
[   12.000012] R13: ffffffffc0a01000 R14: 0000000000000000 R15: 0000000000000000
[   12.000013] FS:  00007f2a1b4c7740(0000) GS:ffff9e7dfec00000(0000) knlGS:0000000000000000
[   12.000014] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
[   12.000015] CR2: ffffa0c0c0de0050 CR3: 0000000001e3c000 CR4: 00000000000006f0
[   12.000016] Call Trace:
[   12.000017]  <TASK>
[   12.000018]  ? __die+0x23/0x70
[   12.000019]  ? page_fault_oops+0x17d/0x4c0
[   12.000020]  ? exc_page_fault+0x7c/0x180
[   12.000021]  ? asm_exc_page_fault+0x26/0x30
[   12.000022]  ? sensor_match_fields+0x1a/0x40 [demo_sensor]
[   12.000023]  sensor_apply_content+0x55/0x90 [demo_sensor]
[   12.000024]  ? __pfx_sensor_init+0x10/0x10 [demo_sensor]
[   12.000025]  do_one_initcall+0x5b/0x320
[   12.000026]  do_init_module+0x4c/0x240
[   12.000027]  __do_sys_finit_module+0xac/0x120
[   12.000028]  do_syscall_64+0x5b/0xc0
[   12.000029]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[   12.000030] RIP: 0033:0x7f2a1b5e3779
[   12.000031]  </TASK>
[   12.000032] Modules linked in: demo_sensor(OE+) virtio_console pvpanic_pci
[   12.000033] CR2: ffffa0c0c0de0050
[   12.000034] ---[ end trace 0000000000000000 ]---
[   12.000035] RIP: 0010:sensor_match_fields+0x1a/0x40 [demo_sensor]
[   12.000036] RSP: 0018:ffffb3c2c0a5bc58 EFLAGS: 00010246
[   12.000037] Kernel panic - not syncing: Fatal exception
[   12.000038] Kernel Offset: 0x2a00000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
[   12.000039] ---[ end Kernel panic - not syncing: Fatal exception ]---
[   12.500000] random later line";

    #[test]
    fn page_fault_then_panic_is_one_report_titled_by_its_cause() {
        let crash = only(PAGE_FAULT);
        assert_eq!(
            crash.title,
            "BUG: unable to handle page fault in sensor_match_fields"
        );
        assert_eq!(crash.kind, "BUG: unable to handle page fault");
        assert_eq!(crash.class, CrashClass::Crash);
        assert!(!crash.corrupted);
        assert_eq!(
            crash.excerpt.first().map(String::as_str),
            Some("[   12.000001] BUG: unable to handle page fault for address: ffffa0c0c0de0050")
        );
        assert_eq!(
            crash.excerpt.last().map(String::as_str),
            Some("[   12.000039] ---[ end Kernel panic - not syncing: Fatal exception ]---")
        );
        assert_eq!(crash.excerpt.len(), 39);
    }

    #[test]
    fn crash_is_visible_as_soon_as_its_header_is_seen() {
        let mut d = CrashDetector::new();
        d.feed("[   12.000001] BUG: unable to handle page fault for address: ffffa0c0c0de0050");
        assert_eq!(
            d.crash().map(|c| (c.title.as_str(), c.corrupted)),
            Some(("BUG: unable to handle page fault", true))
        );
        assert!(d.is_reporting());
    }

    #[test]
    fn null_pointer_dereference() {
        let crash = only(
            "\
[    5.100000] BUG: kernel NULL pointer dereference, address: 0000000000000000
[    5.100001] #PF: supervisor read access in kernel mode
[    5.100002] Oops: 0000 [#1] PREEMPT SMP NOPTI
[    5.100003] RIP: 0010:null_deref_trigger+0x9/0x20 [null_deref]
[    5.100004] Call Trace:
[    5.100005]  <TASK>
[    5.100006]  null_deref_init+0x12/0x1000 [null_deref]
[    5.100007]  </TASK>
[    5.100008] ---[ end trace 0000000000000000 ]---",
        );
        assert_eq!(
            crash.title,
            "BUG: kernel NULL pointer dereference in null_deref_trigger"
        );
        assert_eq!(crash.class, CrashClass::Crash);
    }

    /// `echo c > /proc/sysrq-trigger` on a 6.1 kernel: the panic is the report, and its
    /// message, not a frame, names it. The user-space RIP is not a frame.
    const SYSRQ: &str = "\
[   20.100000] sysrq: Trigger a crash
[   20.100001] Kernel panic - not syncing: sysrq triggered crash
[   20.100002] CPU: 0 PID: 250 Comm: sh Not tainted 6.1.0-27-cloud-amd64 #1  Debian 6.1.115-1
[   20.100003] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)
[   20.100004] Call Trace:
[   20.100005]  <TASK>
[   20.100006]  dump_stack_lvl+0x44/0x5c
[   20.100007]  panic+0x118/0x2ed
[   20.100008]  sysrq_handle_crash+0x16/0x20
[   20.100009]  __handle_sysrq.cold+0x43/0x11b
[   20.100010]  write_sysrq_trigger+0x24/0x40
[   20.100011]  proc_reg_write+0x56/0xa0
[   20.100012]  vfs_write+0xc7/0x3c0
[   20.100013]  ksys_write+0x6b/0xf0
[   20.100014]  do_syscall_64+0x5b/0xc0
[   20.100015]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[   20.100016] RIP: 0033:0x7f9e6c1a5e23
[   20.100017] RSP: 002b:00007ffd2b0c7c48 EFLAGS: 00000246 ORIG_RAX: 0000000000000001
[   20.100018]  </TASK>
[   20.100019] Kernel Offset: 0x1c00000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
[   20.100020] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---";

    #[test]
    fn sysrq_panic_is_titled_by_its_message() {
        let crash = only(SYSRQ);
        assert_eq!(crash.title, "Kernel panic: sysrq triggered crash");
        assert_eq!(crash.kind, "Kernel panic");
        assert!(!crash.corrupted);
        assert_eq!(crash.excerpt.len(), 20);
    }

    #[test]
    fn panic_messages_lose_their_numbers() {
        let crash =
            only("[ 1.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b");
        assert_eq!(
            crash.title,
            "Kernel panic: Attempted to kill init! exitcode=N"
        );
        let crash = only(
            "[ 1.5] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
        );
        assert_eq!(
            crash.title,
            "Kernel panic: VFS: Unable to mount root fs on unknown-block(N,N)"
        );
    }

    #[test]
    fn bare_oops() {
        let crash = only(
            "\
[    7.000001] Oops: 0002 [#1] SMP
[    7.000002] RIP: 0010:demo_write_reg.isra.0+0x11/0x30 [demo]
[    7.000003] ---[ end trace 0000000000000000 ]---",
        );
        assert_eq!(crash.title, "Oops in demo_write_reg");
        assert_eq!(crash.kind, "Oops");
    }

    #[test]
    fn general_protection_fault_old_and_new_spelling() {
        for header in [
            "general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI",
            "Oops: general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI",
        ] {
            let crash = only(&format!(
                "[ 8.1] {header}\n[ 8.2] CPU: 0 PID: 1 Comm: init\n[ 8.3] RIP: 0010:gpf_list_walk+0x22/0x50 [demo]\n[ 8.4] ---[ end trace 0000000000000000 ]---"
            ));
            assert_eq!(crash.title, "general protection fault in gpf_list_walk");
            assert_eq!(crash.class, CrashClass::Crash);
        }
    }

    #[test]
    fn kernel_bug_and_its_invalid_opcode_are_one_report() {
        let crash = only(
            "\
[    9.000000] ------------[ cut here ]------------
[    9.000001] kernel BUG at drivers/demo/bug.c:42!
[    9.000002] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI
[    9.000003] CPU: 0 PID: 240 Comm: insmod Tainted: G           OE
[    9.000004] RIP: 0010:bug_check_table+0x8/0x10 [demo_bug]
[    9.000005] Call Trace:
[    9.000006]  <TASK>
[    9.000007]  ? die+0x36/0x90
[    9.000008]  ? do_trap+0xda/0x100
[    9.000009]  ? exc_invalid_op+0x4f/0x70
[    9.000010]  ? asm_exc_invalid_op+0x16/0x20
[    9.000011]  bug_init+0x10/0x1000 [demo_bug]
[    9.000012]  </TASK>
[    9.000013] ---[ end trace 0000000000000000 ]---",
        );
        assert_eq!(crash.title, "kernel BUG in bug_check_table");
        assert_eq!(crash.kind, "kernel BUG");
        assert_eq!(crash.excerpt.len(), 13);
    }

    #[test]
    fn invalid_opcode_alone() {
        let crash = only(
            "\
[    9.000002] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI
[    9.000004] RIP: 0010:ud2_trap+0x0/0x10 [demo]
[    9.000013] ---[ end trace 0000000000000000 ]---",
        );
        assert_eq!(crash.title, "invalid opcode in ud2_trap");
        assert_eq!(crash.kind, "invalid opcode");
    }

    const SOFT_LOCKUP: &str = "\
[   48.123456] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [insmod:233]
[   48.123457] Modules linked in: demo_hang(OE+) virtio_console
[   48.123458] CPU: 0 PID: 233 Comm: insmod Tainted: G           OE
[   48.123459] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)
[   48.123460] RIP: 0010:hang_init_spin+0x1b/0x1000 [demo_hang]
[   48.123461] Code: Unable to access opcode bytes at 0xffffffffc0a00ff1.
[   48.123462] RSP: 0018:ffffb3c2c0a5bc58 EFLAGS: 00000246
[   48.123463] Call Trace:
[   48.123464]  <IRQ>
[   48.123465]  ? watchdog_timer_fn+0x1b4/0x210
[   48.123466]  ? __hrtimer_run_queues+0x112/0x2b0
[   48.123467]  ? hrtimer_interrupt+0xf4/0x210
[   48.123468]  ? __sysvec_apic_timer_interrupt+0x5d/0x110
[   48.123469]  ? sysvec_apic_timer_interrupt+0x69/0x90
[   48.123470]  </IRQ>
[   48.123471]  <TASK>
[   48.123472]  ? asm_sysvec_apic_timer_interrupt+0x16/0x20
[   48.123473]  ? hang_init_spin+0x1b/0x1000 [demo_hang]
[   48.123474]  do_one_initcall+0x5b/0x320
[   48.123475]  do_init_module+0x4c/0x240
[   48.123476]  </TASK>";

    #[test]
    fn soft_lockup_is_a_hang() {
        let crash = only(SOFT_LOCKUP);
        assert_eq!(crash.title, "BUG: soft lockup in hang_init_spin");
        assert_eq!(crash.class, CrashClass::Hang);
        assert_eq!(crash.excerpt.len(), 21);
        let d = detect(SOFT_LOCKUP);
        assert_eq!(d.first_of(CrashClass::Hang), d.crash());
    }

    #[test]
    fn soft_lockup_panic_stays_a_hang_named_by_its_cause() {
        let console = format!(
            "{SOFT_LOCKUP}\n[   48.123477] Kernel panic - not syncing: softlockup: hung tasks\n[   48.123478] ---[ end Kernel panic - not syncing: softlockup: hung tasks ]---"
        );
        let crash = only(&console);
        assert_eq!(crash.title, "BUG: soft lockup in hang_init_spin");
        assert_eq!(crash.class, CrashClass::Hang);
        assert_eq!(crash.excerpt.len(), 23);
    }

    #[test]
    fn hung_task_skips_the_scheduler() {
        let crash = only(
            "\
[  243.100000] INFO: task insmod:233 blocked for more than 120 seconds.
[  243.100001]       Tainted: G           OE      6.1.0-27-cloud-amd64 #1 Debian 6.1.115-1
[  243.100002] \"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.
[  243.100003] task:insmod          state:D stack:0     pid:233   ppid:1      flags:0x00004002
[  243.100004] Call Trace:
[  243.100005]  <TASK>
[  243.100006]  __schedule+0x34d/0x9e0
[  243.100007]  schedule+0x5a/0xd0
[  243.100008]  schedule_timeout+0x118/0x150
[  243.100009]  __wait_for_common+0x90/0x1d0
[  243.100010]  hang_init_wait+0x2a/0x1000 [demo_hang]
[  243.100011]  do_one_initcall+0x5b/0x320
[  243.100012]  </TASK>",
        );
        assert_eq!(crash.title, "INFO: task hung in hang_init_wait");
        assert_eq!(crash.kind, "INFO: task hung");
        assert_eq!(crash.class, CrashClass::Hang);
    }

    #[test]
    fn rcu_stall_is_a_hang_named_by_the_stalled_code() {
        let crash = only(
            "\
[   60.000000] rcu: INFO: rcu_preempt self-detected stall on CPU
[   60.000001] rcu: \t0-....: (20999 ticks this GP) idle=8a4c/1/0x4000000000000000 softirq=1520/1520 fqs=5248
[   60.000002] \t(t=21000 jiffies g=1653 q=183 ncpus=1)
[   60.000003] CPU: 0 PID: 233 Comm: insmod Tainted: G           OE
[   60.000004] RIP: 0010:rcu_spin_holder+0x20/0x1000 [demo_rcu]
[   60.000005] Call Trace:
[   60.000006]  <IRQ>
[   60.000007]  ? rcu_dump_cpu_stacks+0xc4/0x100
[   60.000008]  ? rcu_sched_clock_irq.cold+0x26/0x269
[   60.000009]  ? update_process_times+0x77/0xb0
[   60.000010]  </IRQ>
[   60.000011]  <TASK>
[   60.000012]  demo_rcu_init+0x12/0x1000 [demo_rcu]
[   60.000013]  </TASK>",
        );
        // `rcu_` is a generic prefix, but the demo module's function is named by RIP.
        assert_eq!(crash.title, "INFO: rcu detected stall in demo_rcu_init");
        assert_eq!(crash.class, CrashClass::Hang);
    }

    #[test]
    fn rcu_stall_ignores_the_grace_period_kthread_stack() {
        let stall = "\
[   25.086051] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   25.087160] \t(detected by 0, t=5252 jiffies, g=-507, q=1 ncpus=1)
[   25.087856] rcu: RCU grace-period kthread stack dump:
[   25.088007] task:rcu_preempt     state:R  running task     stack:0     pid:15
[   25.088533] Call Trace:
[   25.088961]  <TASK>
[   25.089165]  __schedule+0x34d/0xa00
[   25.090183]  ? __bpf_trace_tick_stop+0x10/0x10
[   25.090286]  rcu_gp_fqs_loop+0x141/0x560
[   25.090590]  </TASK>
[   25.090731] rcu: Stack dump where RCU GP kthread last ran:";
        let crash = only(stall);
        assert_eq!(crash.title, "INFO: rcu detected stall");
        assert!(crash.corrupted);
        let crash = only(&format!(
            "{stall}\n[   25.091322] RIP: 0010:hang_init_init+0x13/0x1000 [hang_init]"
        ));
        assert_eq!(crash.title, "INFO: rcu detected stall in hang_init_init");
    }

    const WARNING: &str = "\
[   15.000000] ------------[ cut here ]------------
[   15.000001] WARNING: CPU: 0 PID: 240 at drivers/demo/warn.c:17 warn_bad_state+0x15/0x30 [demo_warn]
[   15.000002] Modules linked in: demo_warn(OE+)
[   15.000003] CPU: 0 PID: 240 Comm: insmod Tainted: G           OE
[   15.000004] RIP: 0010:warn_bad_state+0x15/0x30 [demo_warn]
[   15.000005] Call Trace:
[   15.000006]  <TASK>
[   15.000007]  ? __warn+0x7d/0xc0
[   15.000008]  ? report_bug+0xe2/0x150
[   15.000009]  warn_init+0xe/0x1000 [demo_warn]
[   15.000010]  </TASK>
[   15.000011] ---[ end trace 0000000000000000 ]---";

    #[test]
    fn warning_is_named_by_its_function_and_is_not_a_crash() {
        let d = detect(WARNING);
        assert!(d.crash().is_none());
        let warning = d.first_of(CrashClass::Warning).cloned();
        let warning = warning
            .as_ref()
            .map(|w| (w.title.as_str(), w.kind.as_str(), w.excerpt.len()));
        assert_eq!(warning, Some(("WARNING in warn_bad_state", "WARNING", 11)));
    }

    #[test]
    fn panic_on_warn_turns_the_warning_into_a_crash() {
        let console = WARNING.replace(
            "[   15.000011] ---[ end trace 0000000000000000 ]---",
            "[   15.000011] Kernel panic - not syncing: kernel: panic_on_warn set ...",
        );
        let crash = only(&console);
        assert_eq!(crash.title, "WARNING in warn_bad_state");
        assert_eq!(crash.class, CrashClass::Crash);
    }

    #[test]
    fn an_unrelated_panic_after_a_warning_is_its_own_report() {
        let console = format!("{WARNING}\n{SYSRQ}");
        let d = detect(&console);
        let titles: Vec<_> = d
            .reports()
            .iter()
            .map(|r| (r.title.as_str(), r.class))
            .collect();
        assert_eq!(
            titles,
            [
                ("WARNING in warn_bad_state", CrashClass::Warning),
                ("Kernel panic: sysrq triggered crash", CrashClass::Crash),
            ]
        );
        assert_eq!(d.crash().map(|c| c.kind.as_str()), Some("Kernel panic"));
        assert_eq!(d.reports()[0].excerpt.len(), 11);
    }

    #[test]
    fn reliable_frames_win_over_question_marked_ones() {
        let crash = only(
            "\
[ 1.0] BUG: unable to handle page fault for address: 0000000000001000
[ 1.1] Call Trace:
[ 1.2]  ? stale_leftover+0x1/0x2 [demo]
[ 1.3]  real_caller+0x1/0x2 [demo]",
        );
        assert_eq!(
            crash.title,
            "BUG: unable to handle page fault in real_caller"
        );
        let crash = only(
            "\
[ 1.0] BUG: unable to handle page fault for address: 0000000000001000
[ 1.1] Call Trace:
[ 1.2]  ? page_fault_oops+0x1/0x2
[ 1.3]  ? only_guess+0x1/0x2 [demo]",
        );
        assert_eq!(
            crash.title,
            "BUG: unable to handle page fault in only_guess"
        );
        assert!(!crash.corrupted);
    }

    #[test]
    fn report_without_frames_is_corrupted() {
        let crash = only(
            "\
[ 1.0] BUG: kernel NULL pointer dereference, address: 0000000000000008
[ 1.1] #PF: supervisor read access in kernel mode
[ 1.2] Oops: 0000 [#1] SMP
[ 1.3] Call Trace:
[ 1.4]  ? page_fault_oops+0x1/0x2
[ 1.5]  ? asm_exc_page_fault+0x1/0x2",
        );
        assert_eq!(crash.title, "BUG: kernel NULL pointer dereference");
        assert!(crash.corrupted);
    }

    #[test]
    fn same_bug_same_title_across_runs() {
        let variant = |ts: f64, addr: &str, off: &str, pid: u32| {
            PAGE_FAULT
                .replace("ffffa0c0c0de0050", addr)
                .replace("0x1a/0x40", off)
                .replace("PID: 231", &format!("PID: {pid}"))
                .replace("[   12.", &format!("[{ts:>8.0}."))
        };
        let a = only(&variant(12.0, "ffff0000deadbeef", "0x1a/0x40", 231));
        let b = only(&variant(3071.0, "ffffc90000a1b2c3", "0x2f/0x60", 1));
        assert_eq!(a.title, b.title);
        assert_ne!(a.excerpt, b.excerpt);
        // Compiler suffixes and module names are not part of a title either.
        let c = only("[ 1.0] Oops: 0000 [#1]\n[ 1.1] RIP: 0010:demo_write_reg.constprop.0+0x1/0x9");
        let d = only("[ 2.0] Oops: 0000 [#2]\n[ 2.1] RIP: 0010:demo_write_reg+0x5/0x20 [demo]");
        assert_eq!(c.title, d.title);
    }

    #[test]
    fn output_interleaved_in_a_trace_is_left_out() {
        let mut console = String::new();
        for (i, line) in PAGE_FAULT.lines().enumerate() {
            console.push_str(line);
            console.push('\n');
            if i % 5 == 3 {
                console.push_str("bootgate: step apply-content running\n");
            }
        }
        let clean = only(PAGE_FAULT);
        let mixed = only(&console);
        assert_eq!(mixed, clean);
    }

    #[test]
    fn a_kernel_line_after_a_partial_user_line_is_found() {
        let crash = only(
            "\
bootgate: applying con[   12.000001] BUG: kernel NULL pointer dereference, address: 0000000000000000
[   12.000002] RIP: 0010:null_deref_trigger+0x9/0x20 [null_deref]",
        );
        assert_eq!(
            crash.title,
            "BUG: kernel NULL pointer dereference in null_deref_trigger"
        );
        assert_eq!(
            crash.excerpt[0],
            "[   12.000001] BUG: kernel NULL pointer dereference, address: 0000000000000000"
        );
    }

    #[test]
    fn printk_caller_ids_and_untimestamped_consoles() {
        let crash = only(
            "[   12.000001][  T231] BUG: kernel NULL pointer dereference, address: 0\n[   12.000002][  T231] RIP: 0010:null_deref_trigger+0x9/0x20",
        );
        assert_eq!(
            crash.title,
            "BUG: kernel NULL pointer dereference in null_deref_trigger"
        );
        let crash = only("BUG: kernel NULL pointer dereference, address: 0\nRIP: 0010:null_deref_trigger+0x9/0x20\n ? other+0x1/0x2");
        assert_eq!(
            crash.title,
            "BUG: kernel NULL pointer dereference in null_deref_trigger"
        );
        assert_eq!(crash.excerpt.len(), 3);
    }

    #[test]
    fn truncated_trace_keeps_what_was_seen() {
        let cut: Vec<&str> = PAGE_FAULT.lines().take(12).collect();
        let d = detect(&cut.join("\n"));
        assert!(d.is_reporting());
        let crash = d.crash().cloned();
        assert_eq!(
            crash.as_ref().map(|c| (c.title.as_str(), c.excerpt.len())),
            Some((
                "BUG: unable to handle page fault in sensor_match_fields",
                11
            ))
        );
        // Cut before any frame: the kind only, marked corrupted.
        let cut: Vec<&str> = PAGE_FAULT.lines().take(6).collect();
        let d = detect(&cut.join("\n"));
        assert_eq!(d.crash().map(|c| c.corrupted), Some(true));
    }

    #[test]
    fn excerpt_ends_at_the_last_trace_line_when_there_is_no_end_marker() {
        let console = format!(
            "{SOFT_LOCKUP}\n[   48.200000] virtio_net virtio0: link up\n[   48.300000] random: crng init done"
        );
        let crash = only(&console);
        assert_eq!(
            crash.excerpt.last().map(String::as_str),
            Some("[   48.123476]  </TASK>")
        );
    }

    #[test]
    fn every_boot_of_a_boot_loop_is_a_report() {
        let boot = format!(
            "[    0.000000] Linux version 6.1.0-27-cloud-amd64\n[    1.000000] bootgate: init\n{}",
            PAGE_FAULT.lines().take(20).collect::<Vec<_>>().join("\n")
        );
        let console = [boot.as_str(); 3].join("\n");
        let d = detect(&console);
        assert_eq!(d.reports().len(), 3);
        assert!(d
            .reports()
            .iter()
            .all(|r| r.title == "BUG: unable to handle page fault in sensor_match_fields"));
    }

    #[test]
    fn reports_are_capped() {
        let mut d = CrashDetector::new();
        for i in 0..100 {
            d.feed(&format!(
                "[{i}.0] watchdog: BUG: soft lockup - CPU#0 stuck for {i}s! [insmod:1]"
            ));
            d.feed(&format!(
                "[{i}.1] RIP: 0010:hang_init_spin+0x1b/0x1000 [demo_hang]"
            ));
        }
        assert_eq!(d.reports().len(), MAX_REPORTS);
        assert_eq!(d.dropped(), 100 - MAX_REPORTS);
        assert!(d
            .reports()
            .iter()
            .all(|r| r.title == "BUG: soft lockup in hang_init_spin"));
    }

    #[test]
    fn excerpt_is_capped() {
        let mut d = CrashDetector::new();
        d.feed("[ 1.0] BUG: soft lockup - CPU#0 stuck for 22s!");
        for i in 0..10_000 {
            d.feed(&format!("[ 1.{i}]  frame_{i}+0x1/0x2"));
        }
        let crash = d.crash().cloned();
        assert_eq!(
            crash.as_ref().map(|c| c.excerpt.len()),
            Some(MAX_EXCERPT_LINES)
        );
        assert_eq!(
            crash.map(|c| c.title),
            Some("BUG: soft lockup in frame_0".into())
        );
    }

    #[test]
    fn quiet_console_has_no_crash() {
        let d = detect(
            "\
bootgate: ready boot=1
[    0.000000] Linux version 6.1.0
BUGS are fun
[    1.000000] Oopsie daisy
[    2.000000] INFO: task list printed
WARNING: this is user space
 Kernel panic - not syncing is a phrase",
        );
        assert!(d.reports().is_empty(), "{:#?}", d.reports());
    }

    #[test]
    fn class_serialises_lowercase() -> Result<(), serde_json::Error> {
        let crash = only(SOFT_LOCKUP);
        let json = serde_json::to_value(&crash)?;
        assert_eq!(json["class"], "hang");
        assert_eq!(json["corrupted"], false);
        assert_eq!(serde_json::to_value(CrashClass::Warning)?, "warning");
        Ok(())
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn noise_never_panics_and_stays_bounded() {
        let mut pieces: Vec<&str> = Vec::new();
        for console in [PAGE_FAULT, SYSRQ, SOFT_LOCKUP, WARNING] {
            pieces.extend(console.lines());
        }
        pieces.extend([
            "[",
            "[ ",
            "[  1.",
            "[1.2]",
            "]",
            "+0x",
            "/0x",
            "? ",
            "RIP: 0010:",
            "RIP: ",
            "[<ffffffff>]",
            "[<",
            "WARNING: at ",
            " at ",
            "Kernel panic - not syncing:",
            "---[ end trace",
            "é",
            "\u{fffd}",
            "\t",
            "[ T1]",
            "[    12.000001][  T",
            ".",
            "+",
            "/",
            "0x",
            "Linux version ",
        ]);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut d = CrashDetector::new();
        for _ in 0..20_000 {
            let line = match rng.below(4) {
                0 => {
                    let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => {
                    let mut line = String::new();
                    for _ in 0..rng.below(8) {
                        line.push_str(pieces[rng.below(pieces.len())]);
                    }
                    line
                }
                2 => {
                    let piece = pieces[rng.below(pieces.len())];
                    let cut = rng.below(piece.len() + 1);
                    piece.get(..cut).unwrap_or(piece).to_string()
                }
                _ => {
                    let piece = pieces[rng.below(pieces.len())];
                    piece.repeat(1 + rng.below(200))
                }
            };
            d.feed(&line);
        }
        assert!(d.reports().len() <= MAX_REPORTS);
        for report in d.reports() {
            assert!(report.excerpt.len() <= MAX_EXCERPT_LINES);
            assert!(report.excerpt.iter().all(|l| l.len() <= MAX_LINE_BYTES));
            assert!(report.title.len() <= MAX_TITLE_BYTES);
        }
        if let Some(open) = &d.open {
            assert!(open.pending.len() <= MAX_QUIET_LINES);
        }
    }
}

/// Real serial captures of the demo guest (see tests/fixtures/consoles/README.md):
/// CRLF line ends, SeaBIOS and `/init` output mixed with the kernel's, and a console
/// cut where `-action panic=pause` stopped the guest.
#[cfg(test)]
mod fixtures {
    use super::*;

    fn detect(bytes: &[u8]) -> CrashDetector {
        let mut d = CrashDetector::new();
        for line in String::from_utf8_lossy(bytes).split('\n') {
            d.feed(line);
        }
        d
    }

    /// The single report of an oops fixture, checked for what every one shares.
    fn single_oops(bytes: &[u8], header: &str) -> ConsoleCrash {
        let d = detect(bytes);
        assert_eq!(d.reports().len(), 1, "{:#?}", d.reports());
        let crash = d.reports()[0].clone();
        assert_eq!(d.crash(), Some(&crash));
        assert_eq!(crash.class, CrashClass::Crash);
        assert!(!crash.corrupted);
        assert!(crash.excerpt[0].contains(header), "{}", crash.excerpt[0]);
        assert!(crash.excerpt[0].starts_with('['));
        // The panic that follows the oops belongs to it and ends the capture.
        assert!(crash
            .excerpt
            .last()
            .is_some_and(|l| l.ends_with("Kernel panic - not syncing: Fatal exception")));
        assert!(crash
            .excerpt
            .iter()
            .all(|l| !l.contains("bootgate:") && !l.ends_with('\r')));
        crash
    }

    #[test]
    fn clean_boot_has_no_report() {
        let d = detect(include_bytes!(
            "../../../tests/fixtures/consoles/clean_boot.log"
        ));
        assert!(d.reports().is_empty(), "{:#?}", d.reports());
        assert!(d.crash().is_none());
    }

    #[test]
    fn demo_sensor_live_reload_oops() {
        let crash = single_oops(
            include_bytes!("../../../tests/fixtures/consoles/demo_sensor_live_reload_oops.log"),
            "BUG: unable to handle page fault for address:",
        );
        assert_eq!(crash.kind, "BUG: unable to handle page fault");
        assert_eq!(
            crash.title,
            "BUG: unable to handle page fault in sensor_match_fields"
        );
        assert!(crash.excerpt.iter().any(|l| l.contains(" Comm: sh ")));
    }

    #[test]
    fn demo_sensor_boot_oops() {
        let crash = single_oops(
            include_bytes!("../../../tests/fixtures/consoles/demo_sensor_boot_oops.log"),
            "BUG: unable to handle page fault for address:",
        );
        assert_eq!(crash.kind, "BUG: unable to handle page fault");
        assert_eq!(
            crash.title,
            "BUG: unable to handle page fault in sensor_match_fields"
        );
        assert!(crash.excerpt.iter().any(|l| l.contains(" Comm: insmod ")));
    }

    #[test]
    fn null_deref_boot() {
        let crash = single_oops(
            include_bytes!("../../../tests/fixtures/consoles/null_deref_boot.log"),
            "BUG: kernel NULL pointer dereference, address: 0000000000000000",
        );
        assert_eq!(crash.kind, "BUG: kernel NULL pointer dereference");
        assert_eq!(
            crash.title,
            "BUG: kernel NULL pointer dereference in null_deref_trigger"
        );
    }

    #[test]
    fn hang_init_soft_lockup() {
        let d = detect(include_bytes!(
            "../../../tests/fixtures/consoles/hang_init_soft_lockup.log"
        ));
        let seen: Vec<_> = d
            .reports()
            .iter()
            .map(|r| (r.kind.as_str(), r.class, r.corrupted, r.title.as_str()))
            .collect();
        let rcu = (
            "INFO: rcu detected stall",
            CrashClass::Hang,
            false,
            "INFO: rcu detected stall in hang_init_init",
        );
        let lockup = (
            "BUG: soft lockup",
            CrashClass::Hang,
            false,
            "BUG: soft lockup in hang_init_init",
        );
        // The RCU stall (at 25 s) comes before the first soft lockup (at 49 s); both
        // name the spinning init function. crash() is the first hang: the stall.
        assert_eq!(seen, [rcu, lockup, lockup, rcu, lockup]);
        assert_eq!(d.crash().map(|c| c.title.as_str()), Some(rcu.3));
        let lockup_report = d.reports().iter().find(|r| r.kind == "BUG: soft lockup");
        assert!(lockup_report.is_some_and(|r| r.excerpt[0]
            .ends_with("watchdog: BUG: soft lockup - CPU#0 stuck for 49s! [insmod:99]")));
    }

    #[test]
    fn sysrq_panic() {
        let d = detect(include_bytes!(
            "../../../tests/fixtures/consoles/sysrq_panic.log"
        ));
        assert_eq!(d.reports().len(), 1, "{:#?}", d.reports());
        let crash = &d.reports()[0];
        assert_eq!(crash.kind, "Kernel panic");
        assert_eq!(crash.class, CrashClass::Crash);
        assert!(!crash.corrupted);
        assert_eq!(crash.title, "Kernel panic: sysrq triggered crash");
        assert!(crash.excerpt[0].ends_with("Kernel panic - not syncing: sysrq triggered crash"));
        assert!(crash.excerpt.iter().any(|l| l.contains(" Comm: sh ")));
    }
}
