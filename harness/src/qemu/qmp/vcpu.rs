//! A look at a running guest's vCPUs through QMP, for the stall detector
//! ([`crate::detect::stall`]): QEMU's run state, each vCPU's RIP, privilege level,
//! halt state and interrupt flag, and the CPU time QEMU's vCPU threads have used.
//!
//! QEMU 7.2's `query-cpus-fast` gives no registers (qapi/machine.json `CpuInfoFast`:
//! cpu-index, qom-path, thread-id, props, target), so the registers come from HMP
//! `info registers -a` (target/i386/cpu-dump.c: one `CPU#N` block per vCPU, a line
//! `RIP=... RFL=... [...] CPL=n II=n A20=n SMM=n HLT=n`). `query-cpus-fast` still
//! gives each vCPU's host thread id, whose CPU time /proc keeps.

use std::time::Duration;

use serde_json::Value;

use super::{QmpClient, QmpError};
use crate::detect::stall::{Sample, VcpuState};

/// IF, the interrupt-enable bit of RFLAGS.
const RFLAGS_IF: u64 = 1 << 9;

/// The host thread ids of a QEMU's vCPUs (`query-cpus-fast`), asked once per QEMU.
pub(crate) fn vcpu_threads(qmp: &QmpClient, timeout: Duration) -> Result<Vec<u32>, QmpError> {
    let cpus = qmp.execute("query-cpus-fast", None, timeout)?;
    Ok(cpus
        .as_array()
        .map(|cpus| {
            cpus.iter()
                .filter_map(|c| c.get("thread-id").and_then(Value::as_u64))
                .filter_map(|t| u32::try_from(t).ok())
                .collect()
        })
        .unwrap_or_default())
}

/// One sample: run state, registers, and (with `threads` of the QEMU `pid`) the vCPU
/// threads' CPU time. Registers are only read from a running guest.
pub(crate) fn sample(
    qmp: &QmpClient,
    pid: Option<u32>,
    threads: &[u32],
    timeout: Duration,
) -> Result<Sample, QmpError> {
    let status = qmp.execute("query-status", None, timeout)?;
    let running = status.get("running").and_then(Value::as_bool) == Some(true);
    if !running {
        return Ok(Sample {
            running,
            vcpus: Vec::new(),
            cpu_time: None,
        });
    }
    let args = serde_json::json!({"command-line": "info registers -a"});
    let text = qmp.execute("human-monitor-command", Some(args), timeout)?;
    let vcpus = parse_registers(text.as_str().unwrap_or_default());
    let cpu_time = pid.and_then(|pid| threads_cpu_time(pid, threads));
    Ok(Sample {
        running,
        vcpus,
        cpu_time,
    })
}

/// Every vCPU in an `info registers -a` dump, in order. A vCPU whose line cannot be
/// read is left out (the detector then sees fewer vCPUs and starts afresh).
pub(crate) fn parse_registers(text: &str) -> Vec<VcpuState> {
    text.lines()
        .filter(|l| l.starts_with("RIP=") || l.starts_with("EIP="))
        .filter_map(parse_rip_line)
        .collect()
}

/// `RIP=ffffffff9a417a0b RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1`.
fn parse_rip_line(line: &str) -> Option<VcpuState> {
    let mut rip = None;
    let mut rflags = None;
    let mut cpl = None;
    let mut halted = None;
    for field in line.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "RIP" | "EIP" => rip = u64::from_str_radix(value, 16).ok(),
            "RFL" | "EFL" => rflags = u64::from_str_radix(value, 16).ok(),
            "CPL" => cpl = value.parse::<u8>().ok(),
            "HLT" => halted = Some(value == "1"),
            _ => {}
        }
    }
    Some(VcpuState {
        rip: rip?,
        cpl: cpl?,
        halted: halted?,
        interrupts: rflags? & RFLAGS_IF != 0,
    })
}

/// Clock ticks per second of /proc's utime and stime (`sysconf(_SC_CLK_TCK)`, 100
/// on every Linux architecture bootgate runs on).
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// The summed user and system CPU time of `threads` of process `pid`; None when any
/// cannot be read (a thread gone, QEMU in another PID namespace).
fn threads_cpu_time(pid: u32, threads: &[u32]) -> Option<Duration> {
    if threads.is_empty() {
        return None;
    }
    let mut ticks = 0;
    for tid in threads {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
        ticks += stat_cpu_ticks(&stat)?;
    }
    Some(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SECOND))
}

/// utime + stime (fields 14 and 15) of a /proc stat line; the name in parentheses
/// may hold spaces, so fields count from its closing parenthesis.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(") ")?.1;
    let mut fields = after.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's `info registers -a` of the idle demo guest (TCG), cut after the
    /// segment registers.
    const IDLE: &str = "
CPU#0
RAX=000000000001ad40 RBX=0000000000000000 RCX=0000000000000000 RDX=4000000000000000
RSI=0000000000000083 RDI=00000000000031f4 RBP=ffffffff9b41aa40 RSP=ffffffff9b403e98
R8 =0000000000022e80 R9 =00000000313b3179 R10=00000000fffffffb R11=0000000000000001
R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000014790
RIP=ffffffff9a417a0b RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
ES =0000 0000000000000000 00000000 00000000
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
";

    #[test]
    fn reads_the_idle_demo_guest() {
        assert_eq!(
            parse_registers(IDLE),
            vec![VcpuState {
                rip: 0xffff_ffff_9a41_7a0b,
                cpl: 0,
                halted: true,
                interrupts: true,
            }]
        );
    }

    #[test]
    fn reads_every_vcpu_and_skips_a_broken_line() {
        let text = format!(
            "{IDLE}\nCPU#1\nRIP=0000000000401000 RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\nCPU#2\nRIP=zz RFL=00000002 CPL=0 HLT=0\n"
        );
        let vcpus = parse_registers(&text);
        assert_eq!(vcpus.len(), 2);
        assert_eq!(vcpus[1].cpl, 3);
        assert!(!vcpus[1].halted);
        // A spinning vCPU with interrupts off (RFL bit 9 clear).
        let cli = parse_registers(
            "RIP=ffffffffc0000013 RFL=00000082 [--S----] CPL=0 II=0 A20=1 SMM=0 HLT=0",
        );
        assert!(!cli[0].interrupts);
    }

    #[test]
    fn reads_cpu_ticks_past_a_name_with_spaces() {
        let stat = "4242 (qemu CPU 0/TC) R 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0";
        assert_eq!(stat_cpu_ticks(stat), Some(175));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(stat_cpu_ticks(&own).is_some());
    }
}
