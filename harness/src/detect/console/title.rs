//! Crash titles: which stack frames name the code at fault (and which only the
//! crash, interrupt or scheduling machinery), and messages with their numbers
//! stripped so the same bug reads the same in every run.

/// Frames that name the crash, interrupt, scheduling or system-call machinery rather
/// than the code at fault. Compared after `.cold`/`.isra.0`-style suffixes are cut.
pub(super) const GENERIC_FRAMES: &[&str] = &[
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
pub(super) const GENERIC_PREFIXES: &[&str] = &[
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

/// A stack frame a console line names: the function (compiler suffixes cut), the
/// module it belongs to when the kernel printed one (`[demo_sensor]`), and whether the
/// frame is reliable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameRef<'a> {
    pub(super) function: &'a str,
    pub(super) module: Option<&'a str>,
    pub(super) reliable: bool,
}

/// The frame a line names, if it names one. RIP/IP/pc lines name where the CPU was:
/// reliable. Call-trace entries marked `?` are stale values the unwinder found on the
/// stack: unreliable. User-space RIPs are not frames.
pub(super) fn frame_of(body: &str) -> Option<FrameRef<'_>> {
    let line = frame_text(body)?;
    let (token, _, _) = symbol_token(line.text)?;
    Some(FrameRef {
        function: base_name(token)?,
        module: module_after(line.text),
        reliable: line.reliable,
    })
}

/// A frame line's text from its symbol on, and what kind of frame it is.
pub(super) struct FrameText<'a> {
    pub(super) text: &'a str,
    /// Not marked `?` by the unwinder.
    pub(super) reliable: bool,
    /// A register line (`RIP:`, `EIP:`, `IP:`, `pc :`): where the CPU was, the
    /// faulting instruction, not a return address.
    pub(super) at_cpu: bool,
}

/// The text of a frame line from its symbol on, with its kind.
pub(super) fn frame_text(body: &str) -> Option<FrameText<'_>> {
    let at_cpu = |text| FrameText {
        text: skip_addresses(text),
        reliable: true,
        at_cpu: true,
    };
    if let Some(rest) = body.strip_prefix("RIP: ") {
        return Some(at_cpu(rest.strip_prefix("0010:")?));
    }
    for prefix in ["EIP: ", "IP: ", "pc : "] {
        if let Some(rest) = body.strip_prefix(prefix) {
            return Some(at_cpu(rest.strip_prefix("0060:").unwrap_or(rest)));
        }
    }
    let rest = skip_addresses(body);
    let (text, reliable) = match rest.strip_prefix("? ") {
        Some(rest) => (rest.trim_start(), false),
        None => (rest, true),
    };
    Some(FrameText {
        text,
        reliable,
        at_cpu: false,
    })
}

/// Skips old-style `[<ffffffff81234567>]` addresses before a symbol.
pub(super) fn skip_addresses(mut text: &str) -> &str {
    while let Some(rest) = text.strip_prefix("[<") {
        match rest.find(">]") {
            Some(end) => text = rest[end + 2..].trim_start(),
            None => break,
        }
    }
    text
}

/// A leading `func+0x1a/0x40` token: the symbol as printed (suffixes kept), its
/// offset and its size.
pub(super) fn symbol_token(text: &str) -> Option<(&str, u64, u64)> {
    let token = text.split_whitespace().next()?;
    let (name, offset) = token.split_once('+')?;
    let (off, size) = offset.split_once('/')?;
    let hex = |s: &str| {
        let digits = s.strip_prefix("0x")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(digits, 16).ok()
    };
    Some((name, hex(off)?, hex(size.trim_end_matches("()"))?))
}

/// The function in a leading `func+0x1a/0x40` token, with compiler suffixes
/// (`.cold`, `.isra.0`, `.constprop.0`) cut: they change with the compiler, not the bug.
pub(super) fn symbol(text: &str) -> Option<&str> {
    base_name(symbol_token(text)?.0)
}

/// The module named right after a frame's symbol: `func+0x1a/0x40 [demo_sensor]`.
/// Module names are stable across runs and builds, unlike the offsets.
pub(super) fn module_after(text: &str) -> Option<&str> {
    module_word(text.split_whitespace().nth(1)?)
}

/// The module a `[demo_sensor]` word names.
fn module_word(word: &str) -> Option<&str> {
    let name = word.strip_prefix('[')?.strip_suffix(']')?;
    let valid = !name.is_empty()
        && name.len() <= MAX_MODULE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    valid.then_some(name)
}

/// Longest module name the kernel allows (MODULE_NAME_LEN is 64 with its NUL).
const MAX_MODULE_NAME: usize = 63;

/// `name` cut at its first `.`, if it is an identifier.
pub(super) fn base_name(name: &str) -> Option<&str> {
    let base = name.split('.').next()?;
    let mut bytes = base.bytes();
    let first = bytes.next()?;
    let valid = (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(base)
}

pub(super) fn is_generic(name: &str) -> bool {
    GENERIC_FRAMES.contains(&name) || GENERIC_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The function a `WARNING: CPU: 0 PID: 1 at file.c:12 func+0x1/0x2 [mod]` (or older
/// `WARNING: at file.c:12 func()`) line names, with its module, unless it is a
/// generic helper.
pub(super) fn warning_function(body: &str) -> Option<(String, Option<String>)> {
    let (_, site) = body.split_once(" at ")?;
    let mut words = site.split_whitespace();
    let _file_line = words.next()?;
    let word = words.next()?;
    let name = symbol(word).or_else(|| base_name(word.trim_end_matches("()")))?;
    let module = words.next().and_then(module_word).map(String::from);
    (!is_generic(name)).then(|| (name.to_string(), module))
}

/// Replaces numbers (decimal, `0x` hex, long bare hex such as addresses) with `N` and
/// collapses blanks, so a panic message reads the same in every run.
pub(super) fn normalise(text: &str) -> String {
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
