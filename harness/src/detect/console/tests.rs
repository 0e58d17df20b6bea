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
        "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]"
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
        "BUG: kernel NULL pointer dereference in null_deref_trigger [null_deref]"
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
    assert_eq!(crash.title, "Oops in demo_write_reg [demo]");
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
        assert_eq!(crash.title, "general protection fault in gpf_list_walk [demo]");
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
    assert_eq!(crash.title, "kernel BUG in bug_check_table [demo_bug]");
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
    assert_eq!(crash.title, "invalid opcode in ud2_trap [demo]");
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
    assert_eq!(
        crash.title,
        "BUG: soft lockup in hang_init_spin [demo_hang]"
    );
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
    assert_eq!(
        crash.title,
        "BUG: soft lockup in hang_init_spin [demo_hang]"
    );
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
    assert_eq!(crash.title, "INFO: task hung in hang_init_wait [demo_hang]");
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
    assert_eq!(
        crash.title,
        "INFO: rcu detected stall in demo_rcu_init [demo_rcu]"
    );
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
    assert_eq!(
        crash.title,
        "INFO: rcu detected stall in hang_init_init [hang_init]"
    );
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
    assert_eq!(
        warning,
        Some(("WARNING in warn_bad_state [demo_warn]", "WARNING", 11))
    );
}

#[test]
fn panic_on_warn_turns_the_warning_into_a_crash() {
    let console = WARNING.replace(
        "[   15.000011] ---[ end trace 0000000000000000 ]---",
        "[   15.000011] Kernel panic - not syncing: kernel: panic_on_warn set ...",
    );
    let crash = only(&console);
    assert_eq!(crash.title, "WARNING in warn_bad_state [demo_warn]");
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
            ("WARNING in warn_bad_state [demo_warn]", CrashClass::Warning),
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
        "BUG: unable to handle page fault in real_caller [demo]"
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
        "BUG: unable to handle page fault in only_guess [demo]"
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
    // Compiler suffixes are not part of a title; the module is, and names the driver.
    let c =
        only("[ 1.0] Oops: 0000 [#1]\n[ 1.1] RIP: 0010:demo_write_reg.constprop.0+0x1/0x9 [demo]");
    let d = only("[ 2.0] Oops: 0000 [#2]\n[ 2.1] RIP: 0010:demo_write_reg+0x5/0x20 [demo]");
    assert_eq!(c.title, d.title);
    assert_eq!(d.title, "Oops in demo_write_reg [demo]");
    // The kernel's own code has no module: its titles stay as they were.
    let e = only("[ 2.0] Oops: 0000 [#2]\n[ 2.1] RIP: 0010:demo_write_reg+0x5/0x20");
    assert_eq!(e.title, "Oops in demo_write_reg");
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
        "BUG: kernel NULL pointer dereference in null_deref_trigger [null_deref]"
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
            "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]",
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
    assert!(d.reports().iter().all(
        |r| r.title == "BUG: unable to handle page fault in sensor_match_fields [demo_sensor]"
    ));
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
        .all(|r| r.title == "BUG: soft lockup in hang_init_spin [demo_hang]"));
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
