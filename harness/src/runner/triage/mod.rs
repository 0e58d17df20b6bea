//! Crash triage: what a crash's evidence says beyond its title, written beside it
//! (`crash-N.triage.txt`, and `triage` on the crash in run.json) and shown in every
//! report. Three readings, each made only from evidence that is there and each
//! saying why when it cannot be made:
//! - the candidate drivers' frames of the console's call trace, resolved to
//!   `file:line` (with the inlined chain) from each module's own debug information
//!   ([`lines`]): a stripped module says so instead of guessing;
//! - a Linux memory dump read by the `crash` utility with the guest kernel's debug
//!   vmlinux ([`dump_tool`]), its output kept verbatim;
//! - a Windows crash's bugcheck and parameters, from the panic event or the dump's
//!   header.
//!
//! Triage never changes a verdict or a title: it explains them.

mod dump_tool;
mod elf;
mod lines;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::detect::console::{trace_frames, TraceFrame};
use crate::guest::OsFamily;
use crate::image::kernel;
use crate::image::manifest::Manifest;
use crate::model::record::{CrashRecord, TriageFrame, TriageRecord};
use crate::qemu::process::ProcessGuard;
use crate::util::{find_in_path, human_duration, write_atomic};

use super::driver::BuiltDriver;

/// Most bytes of a tool's output kept: `crash`'s batch prints a few KiB; a tool gone
/// wrong must not fill the results disk.
const MAX_TOOL_OUTPUT: u64 = 1 << 20;

/// What triage reads besides the crash itself.
pub(crate) struct TriageInputs<'a> {
    pub manifest: &'a Manifest,
    pub suite_dir: &'a Path,
    pub drivers: &'a BTreeMap<String, Result<BuiltDriver, String>>,
    /// The scenario's evidence folder, and the same relative to the run folder.
    pub artifacts: &'a Path,
    pub rel_dir: &'a str,
    /// Read dumps with `crash` (slow: seconds per dump). False when the run is
    /// being interrupted: the lines are still resolved, the dump is left for later.
    pub read_dumps: bool,
}

/// Triages every crash of a scenario, writing each one's file and record.
pub(crate) fn triage_crashes(inputs: &TriageInputs, crashes: &mut [CrashRecord]) {
    for (i, crash) in crashes.iter_mut().enumerate() {
        let name = format!("crash-{}.triage.txt", i + 1);
        let (record, text) = triage(inputs, crash, &name);
        let path = inputs.artifacts.join(&name);
        match write_atomic(&path, text.as_bytes()) {
            Ok(()) => crash.triage = Some(record),
            Err(e) => {
                crash.triage = Some(TriageRecord {
                    file: String::new(),
                    notes: vec![format!("triage not written: {}: {e}", path.display())],
                    ..record
                })
            }
        }
    }
}

/// One crash's triage: its record and its file's text.
fn triage(inputs: &TriageInputs, crash: &CrashRecord, name: &str) -> (TriageRecord, String) {
    let mut record = TriageRecord {
        file: format!("{}/{name}", inputs.rel_dir),
        ..TriageRecord::default()
    };
    let mut text = format!("bootgate crash triage\ncrash: {}\n", crash.title);
    if inputs.manifest.os == OsFamily::Windows {
        windows_section(crash, &mut record, &mut text);
    } else {
        let frames = trace_frames(&crash.excerpt);
        // Each candidate's debug information, looked at once for both readings.
        let with_debug: BTreeSet<&str> = inputs
            .drivers
            .iter()
            .filter(|(_, d)| d.as_ref().is_ok_and(|d| elf::has_debug_info(&d.debug_file)))
            .map(|(name, _)| name.as_str())
            .collect();
        frames_section(inputs, &frames, &with_debug, &mut record, &mut text);
        dump_section(inputs, crash, &frames, &with_debug, &mut record, &mut text);
    }
    if !record.notes.is_empty() {
        text.push_str("\n== what could not be done ==\n");
        for note in &record.notes {
            text.push_str(&format!("- {note}\n"));
        }
    }
    (record, text)
}

/// The candidate drivers' frames, at their source lines.
fn frames_section(
    inputs: &TriageInputs,
    frames: &[TraceFrame],
    with_debug: &BTreeSet<&str>,
    record: &mut TriageRecord,
    text: &mut String,
) {
    text.push_str("\n== driver frames (source lines from each module's debug information, by eu-addr2line) ==\n");
    if frames.is_empty() {
        record
            .notes
            .push("no call trace on the console for this crash: no frame to resolve".into());
        return;
    }
    let ours: Vec<&TraceFrame> = frames
        .iter()
        .filter(|f| {
            f.module
                .as_ref()
                .is_some_and(|m| inputs.drivers.contains_key(m))
        })
        .collect();
    if ours.is_empty() {
        let faulting = frames.iter().find(|f| f.faulting).unwrap_or(&frames[0]);
        record.notes.push(format!(
            "no candidate driver's code in the call trace (it faulted in {}): nothing of the drivers to resolve",
            lines::printed(faulting)
        ));
        return;
    }
    let tool = find_in_path(lines::ADDR2LINE);
    let mut told = std::collections::BTreeSet::new();
    for frame in ours {
        let module = frame.module.as_deref().unwrap_or_default();
        text.push_str(&format!(
            "{}{}\n",
            lines::printed(frame),
            if frame.faulting { "  (faulting)" } else { "" }
        ));
        let why = match (inputs.drivers.get(module), &tool) {
            (_, None) => Some(format!(
                "{} is not installed: as root run `apt-get install {}` to resolve driver frames to source lines",
                lines::ADDR2LINE,
                lines::ADDR2LINE_PACKAGE
            )),
            (Some(Err(why)), _) => Some(format!("driver {module} was not prepared: {why}")),
            (Some(Ok(driver)), _) if !with_debug.contains(module) => Some(format!(
                "driver {module}: {} has no debug info (stripped): its frames are not resolved; give the unstripped module, or its separate debug file as `debug = \"...\"` in the suite's [driver.{module}]",
                driver.debug_file.display()
            )),
            (None, _) => Some(format!("driver {module} is not a candidate of this run")),
            (Some(Ok(driver)), Some(tool)) => {
                let sources = lines::SourceMap {
                    suite_dir: inputs.suite_dir,
                    source_dir: driver.source_dir.as_deref(),
                };
                match lines::resolve(tool, &driver.debug_file, frame, &sources) {
                    Ok(resolved) => {
                        write_frame(text, &resolved);
                        if record.at.is_none() {
                            record.at = at_line(&resolved, module, frames);
                        }
                        record.frames.push(resolved);
                        None
                    }
                    Err(why) => Some(format!("{}: {why}", lines::printed(frame))),
                }
            }
        };
        if let Some(why) = why {
            text.push_str(&format!("   not resolved: {why}\n"));
            // One note per reason: a stripped module has many frames.
            if told.insert(why.clone()) {
                record.notes.push(why);
            }
            record.frames.push(TriageFrame {
                frame: lines::printed(frame),
                faulting: frame.faulting,
                location: None,
                function: None,
                inlined_by: Vec::new(),
            });
        }
    }
}

fn write_frame(text: &mut String, frame: &TriageFrame) {
    if let (Some(location), Some(function)) = (&frame.location, &frame.function) {
        text.push_str(&format!("   {location} in {function}\n"));
    }
    for caller in &frame.inlined_by {
        text.push_str(&format!("     inlined by {caller}\n"));
    }
}

/// The one line that says where it faulted: the first resolved driver frame, with
/// a word when the fault itself was elsewhere (a bad pointer passed to the kernel).
fn at_line(frame: &TriageFrame, module: &str, all: &[TraceFrame]) -> Option<String> {
    let at = format!(
        "{} in {} [{module}]",
        frame.location.as_ref()?,
        frame.function.as_ref()?
    );
    if frame.faulting {
        return Some(at);
    }
    Some(match all.iter().find(|f| f.faulting) {
        Some(fault) => format!("{at} (it faulted in {})", lines::printed(fault)),
        None => at,
    })
}

/// The dump, read by `crash` with the kernel's debug vmlinux.
fn dump_section(
    inputs: &TriageInputs,
    crash: &CrashRecord,
    frames: &[TraceFrame],
    with_debug: &BTreeSet<&str>,
    record: &mut TriageRecord,
    text: &mut String,
) {
    let Some(dump) = &crash.dump else {
        return;
    };
    if crash.dump_format.as_deref() == Some("win-dmp") {
        return;
    }
    let file = inputs
        .artifacts
        .join(Path::new(dump).file_name().unwrap_or_default());
    let not_read = |why: String| format!("the dump was not read by crash: {why}");
    if !inputs.read_dumps {
        record
            .notes
            .push(not_read("the run was interrupted".into()));
        return;
    }
    let vmlinux = match kernel::debug_vmlinux(inputs.manifest) {
        Ok(path) if elf::has_debug_info(&path) => path,
        Ok(path) => {
            record
                .notes
                .push(not_read(format!("{} has no debug info", path.display())));
            return;
        }
        Err(why) => {
            record.notes.push(not_read(why));
            return;
        }
    };
    let Some(tool) = find_in_path(dump_tool::CRASH_TOOL) else {
        record.notes.push(not_read(format!(
            "{} is not installed: as root run `apt-get install {}`",
            dump_tool::CRASH_TOOL,
            dump_tool::CRASH_TOOL_PACKAGE
        )));
        return;
    };
    // The drivers the trace shows (all candidates when there is no trace): `mod -s`
    // of a module that is not loaded only prints its usage.
    let in_trace =
        |name: &str| frames.is_empty() || frames.iter().any(|f| f.module.as_deref() == Some(name));
    let modules: Vec<dump_tool::ModuleDebug> = inputs
        .drivers
        .iter()
        .filter(|(name, _)| in_trace(name))
        .filter_map(|(name, d)| d.as_ref().ok().map(|d| (name, d)))
        .filter(|(name, _)| with_debug.contains(name.as_str()))
        .map(|(name, d)| dump_tool::ModuleDebug {
            name,
            file: &d.debug_file,
        })
        .collect();
    let faulting = frames
        .iter()
        .find(|f| f.faulting)
        .map(|f| format!("{}+{:#x}", f.symbol, f.offset));
    text.push_str(&format!(
        "\n== the dump, read by crash ({} {} {}) ==\n",
        tool.display(),
        vmlinux.display(),
        file.display()
    ));
    match dump_tool::read(&tool, &vmlinux, &file, &modules, faulting.as_deref()) {
        Ok(reading) => {
            text.push_str(&reading.output);
            record.dump = reading.summary;
        }
        Err(why) => {
            text.push_str(&format!("not read: {why}\n"));
            record.notes.push(not_read(why));
        }
    }
}

/// A Windows crash: the bugcheck and its parameters; the faulting module would need
/// the kernel's loaded-module list, which bootgate does not walk in a dump.
fn windows_section(crash: &CrashRecord, record: &mut TriageRecord, text: &mut String) {
    text.push_str("\n== bugcheck ==\n");
    match &crash.bugcheck {
        Some(b) => {
            text.push_str(&format!(
                "code {} {} (from {})\nparameters: {}\n",
                b.code,
                b.name.as_deref().unwrap_or("(not in bootgate's table)"),
                if b.from == "dump" {
                    "the dump's header"
                } else {
                    "the Hyper-V crash registers"
                },
                b.parameters.join(" ")
            ));
            record.at = Some(
                format!(
                    "bugcheck {} {}",
                    b.code,
                    b.name.as_deref().unwrap_or_default()
                )
                .trim_end()
                .to_string(),
            );
        }
        None => record.notes.push(
            "no bugcheck code reached the host (no hv-crash and no WinDbg dump header)".into(),
        ),
    }
    record.notes.push(
        "the faulting module is not named: bootgate does not walk the kernel's loaded-module list in a dump; open the dump in WinDbg and run `!analyze -v`".into(),
    );
}

/// Runs a triage tool to its end or `timeout`, its output (stdout and stderr) read
/// back from a scratch file; its process group is killed however it ends.
fn run_tool(argv: &[String], timeout: Duration) -> Result<String, String> {
    let scratch = crate::util::private_tempdir("bootgate-tool-")
        .map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    let out = scratch.path().join("output");
    let mut guard = ProcessGuard::spawn(argv, &out).map_err(|e| e.to_string())?;
    let status = guard.wait_timeout(timeout);
    guard.terminate();
    let tool = argv.first().map(String::as_str).unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "{tool} did not finish within {} and was killed",
            human_duration(timeout)
        ));
    };
    let output = read_bounded(&out).map_err(|e| format!("cannot read {tool}'s output: {e}"))?;
    if !status.success() && output.trim().is_empty() {
        return Err(format!("{tool} ended with {status} and printed nothing"));
    }
    Ok(output)
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_TOOL_OUTPUT)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::BugcheckRecord;
    use crate::testing::images::{write_windows_image, WINDOWS_TEMPLATE};
    use crate::testing::records::crash;

    fn linux_manifest(dir: &Path) -> Manifest {
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let path = dir.join("image.toml");
        std::fs::write(&path, include_str!("../../../../images/demo/image.toml")).unwrap();
        Manifest::load(&path).unwrap()
    }

    fn inputs<'a>(
        manifest: &'a Manifest,
        dir: &'a Path,
        drivers: &'a BTreeMap<String, Result<BuiltDriver, String>>,
    ) -> TriageInputs<'a> {
        TriageInputs {
            manifest,
            suite_dir: dir,
            drivers,
            artifacts: dir,
            rel_dir: "s/a",
            read_dumps: true,
        }
    }

    #[test]
    fn a_trace_without_the_drivers_code_or_without_frames_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = linux_manifest(dir.path());
        let drivers = BTreeMap::from([("demo_sensor".to_string(), Err("not built".to_string()))]);
        let mut crashes = vec![
            crash(1, "Kernel panic: sysrq triggered crash"),
            crash(1, "x"),
        ];
        crashes[0].excerpt = vec![
            "[ 1.0] Kernel panic - not syncing: sysrq triggered crash".into(),
            "[ 1.1]  sysrq_handle_crash+0x16/0x20".into(),
        ];
        crashes[1].excerpt = Vec::new();
        triage_crashes(&inputs(&manifest, dir.path(), &drivers), &mut crashes);
        let first = crashes[0].triage.as_ref().unwrap();
        assert_eq!(first.file, "s/a/crash-1.triage.txt");
        assert!(first.at.is_none());
        assert!(
            first.notes[0].contains("no candidate driver's code in the call trace")
                && first.notes[0].contains("sysrq_handle_crash+0x16"),
            "{:?}",
            first.notes
        );
        let second = crashes[1].triage.as_ref().unwrap();
        assert!(
            second.notes[0].contains("no call trace"),
            "{:?}",
            second.notes
        );
        let text = std::fs::read_to_string(dir.path().join("crash-2.triage.txt")).unwrap();
        assert!(text.contains("no call trace"), "{text}");
    }

    #[test]
    fn a_driver_that_was_not_prepared_is_named_not_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = linux_manifest(dir.path());
        let drivers =
            BTreeMap::from([("demo_sensor".to_string(), Err("build failed".to_string()))]);
        let mut crashes = vec![crash(1, "t")];
        crashes[0].excerpt = vec!["RIP: 0010:sensor_match_fields+0x1a/0x34 [demo_sensor]".into()];
        triage_crashes(&inputs(&manifest, dir.path(), &drivers), &mut crashes);
        let t = crashes[0].triage.as_ref().unwrap();
        assert_eq!(t.frames.len(), 1);
        assert!(t.frames[0].location.is_none());
        assert!(t.headline().unwrap().starts_with("triage: "), "{t:?}");
    }

    #[test]
    fn a_windows_crash_gives_its_bugcheck_and_says_the_module_is_not_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_windows_image(dir.path(), WINDOWS_TEMPLATE);
        let manifest = Manifest::load(&path).unwrap();
        let drivers = BTreeMap::new();
        let mut crashes = vec![crash(1, "BUGCHECK 0x50 PAGE_FAULT_IN_NONPAGED_AREA")];
        crashes[0].bugcheck = Some(BugcheckRecord {
            code: "0x50".into(),
            name: Some("PAGE_FAULT_IN_NONPAGED_AREA".into()),
            parameters: vec![
                "0xffff".into(),
                "0x0".into(),
                "0xfffff801".into(),
                "0x2".into(),
            ],
            from: "dump".into(),
        });
        triage_crashes(&inputs(&manifest, dir.path(), &drivers), &mut crashes);
        let t = crashes[0].triage.as_ref().unwrap();
        assert_eq!(
            t.at.as_deref(),
            Some("bugcheck 0x50 PAGE_FAULT_IN_NONPAGED_AREA")
        );
        assert!(t.notes.iter().any(|n| n.contains("!analyze -v")), "{t:?}");
        let text = std::fs::read_to_string(dir.path().join("crash-1.triage.txt")).unwrap();
        assert!(
            text.contains("parameters: 0xffff 0x0 0xfffff801 0x2"),
            "{text}"
        );
        assert!(text.contains("the dump's header"), "{text}");
    }
}
