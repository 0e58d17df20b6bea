//! A Linux memory dump read by the `crash` utility (github.com/crash-utility/crash)
//! with the guest kernel's debug vmlinux: one batch run whose output triage keeps
//! verbatim. It reads ELF and kdump-compressed dumps alike.

use std::path::Path;
use std::time::Duration;

use super::run_tool;

/// How long one batch `crash` run may take: loading a distribution kernel's debug
/// vmlinux (~600 MiB of DWARF) took 8-18 s on the project's 2-core machine.
pub(crate) const CRASH_TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// The tool, and the package that installs it.
pub(crate) const CRASH_TOOL: &str = "crash";
pub(crate) const CRASH_TOOL_PACKAGE: &str = "crash";

/// Kernel log lines the triage keeps from the dump.
const LOG_TAIL_LINES: usize = 40;

/// A module `crash` should read debug information for: its name and file.
pub(crate) struct ModuleDebug<'a> {
    pub name: &'a str,
    pub file: &'a Path,
}

/// What one batch run gave.
pub(crate) struct DumpReading {
    /// Its whole output, as printed.
    pub output: String,
    /// `exception RIP: sensor_match_fields+26 [demo_sensor]`, when it names one.
    pub summary: Option<String>,
}

/// The commands of the batch run: the candidate drivers' debug information first
/// (so `bt` and `dis -l` show their lines), then the backtrace, the faulting
/// symbol and instruction, the loaded modules and the kernel log's tail.
pub(crate) fn commands(modules: &[ModuleDebug], faulting: Option<&str>) -> String {
    let mut script = String::from("set scroll off\n");
    for module in modules {
        script.push_str(&format!(
            "mod -s {} {}\n",
            module.name,
            module.file.display()
        ));
    }
    script.push_str("bt\n");
    if let Some(symbol) = faulting {
        script.push_str(&format!(
            "sym {}\n",
            symbol.split('+').next().unwrap_or(symbol)
        ));
        script.push_str(&format!("dis -l {symbol} 1\n"));
    }
    script.push_str(&format!("mod\nlog | tail -n {LOG_TAIL_LINES}\nquit\n"));
    script
}

/// Runs `crash` on `dump` with `vmlinux`; the error says why it gave nothing.
pub(crate) fn read(
    tool: &Path,
    vmlinux: &Path,
    dump: &Path,
    modules: &[ModuleDebug],
    faulting: Option<&str>,
) -> Result<DumpReading, String> {
    let scratch = crate::util::private_tempdir("bootgate-triage-")
        .map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    let script = scratch.path().join("commands");
    std::fs::write(&script, commands(modules, faulting))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let argv = vec![
        tool.display().to_string(),
        // Silent start, no .crashrc of the user's or the folder's: the same run
        // for everyone.
        "-s".into(),
        "--no_crashrc".into(),
        "-i".into(),
        script.display().to_string(),
        vmlinux.display().to_string(),
        dump.display().to_string(),
    ];
    let output = run_tool(&argv, CRASH_TOOL_TIMEOUT)?;
    let summary = summary(&output);
    if summary.is_none() && !output.contains("PID:") {
        return Err(format!(
            "{CRASH_TOOL} could not read the dump: {}",
            output.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(DumpReading { output, summary })
}

/// The faulting function in the backtrace (`[exception RIP: sensor_match_fields+26]`),
/// with the module `sym` names for it (`... (t) sensor_match_fields+26 [demo_sensor] ...`).
pub(crate) fn summary(output: &str) -> Option<String> {
    let rip = output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("[exception RIP: ")?;
        Some(rest.strip_suffix(']').unwrap_or(rest).trim().to_string())
    })?;
    let function = rip.split('+').next().unwrap_or(&rip);
    let module = output.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let _address = words.next()?;
        let _kind = words
            .next()
            .filter(|k| k.starts_with('(') && k.ends_with(')'))?;
        let symbol = words.next()?;
        if symbol.split('+').next()? != function {
            return None;
        }
        let module = words.next()?.strip_prefix('[')?.strip_suffix(']')?;
        Some(module.to_string())
    });
    Some(match module {
        Some(module) => format!("exception RIP: {rip} [{module}]"),
        None => format!("exception RIP: {rip}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real run of crash 8.0.2 on the demo guest's dump (6.1 kernel).
    const OUTPUT: &str = "PID: 147      TASK: ffff8d5442b41800  CPU: 0    COMMAND: \"sh\"
 #3 [ffffd13fc05ebbd0] asm_exc_page_fault at ffffffff90600c02
    [exception RIP: sensor_match_fields+26]
    RIP: ffffffffc04b7679  RSP: ffffd13fc05ebc80  RFLAGS: 00000213
 #4 [ffffd13fc05ebc80] sensor_load.cold at ffffffffc04b7804 [demo_sensor]
ffffffffc04b7660 (t) sensor_match_fields [demo_sensor] /bootgate/build/demo_sensor.c: 245
/bootgate/build/demo_sensor.c: 255
0xffffffffc04b7679 <sensor_match_fields+26>:\tmov    (%rdx),%r10d
";

    #[test]
    fn the_summary_names_the_faulting_function_and_its_module() {
        assert_eq!(
            summary(OUTPUT).as_deref(),
            Some("exception RIP: sensor_match_fields+26 [demo_sensor]")
        );
        let kernel_only = OUTPUT.replace(" [demo_sensor] /bootgate", " /bootgate");
        assert_eq!(
            summary(&kernel_only).as_deref(),
            Some("exception RIP: sensor_match_fields+26")
        );
        assert_eq!(summary("crash: cannot open dump"), None);
    }

    #[test]
    fn the_batch_loads_the_drivers_debug_info_before_the_backtrace() {
        let script = commands(
            &[ModuleDebug {
                name: "demo_sensor",
                file: Path::new("/c/demo_sensor.ko"),
            }],
            Some("sensor_match_fields+0x1a"),
        );
        let at = |needle: &str| script.find(needle).unwrap();
        assert!(at("mod -s demo_sensor /c/demo_sensor.ko") < at("bt\n"));
        assert!(script.contains("sym sensor_match_fields\n"));
        assert!(script.contains("dis -l sensor_match_fields+0x1a 1\n"));
        assert!(script.ends_with("quit\n"));
    }
}
