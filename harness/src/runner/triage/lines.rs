//! A driver frame to its source line: elfutils' `eu-addr2line`, which reads a kernel
//! module's DWARF with its relocations applied and takes `symbol+offset` as printed
//! in a trace, so no address arithmetic of bootgate's own stands between the trace
//! and the line it names (elfutils src/addr2line.c: `sym+off` input, `--pretty-print`
//! and `-i` for the inlined chain).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::run_tool;
use crate::detect::console::TraceFrame;
use crate::model::record::TriageFrame;

/// How long one `eu-addr2line` run may take (it takes a few ms on a module).
pub(crate) const ADDR2LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The tool, and the package that installs it (named when it is missing).
pub(crate) const ADDR2LINE: &str = "eu-addr2line";
pub(crate) const ADDR2LINE_PACKAGE: &str = "elfutils";

/// Where one driver's source is, to show DWARF's file names as the suite's.
pub(crate) struct SourceMap<'a> {
    /// The suite's folder.
    pub suite_dir: &'a Path,
    /// The driver's source folder, relative to the suite's folder.
    pub source_dir: Option<&'a Path>,
}

/// `frame` of the module whose debug information is `debug_file`, resolved; the
/// error says why it could not be.
pub(crate) fn resolve(
    tool: &Path,
    debug_file: &Path,
    frame: &TraceFrame,
    sources: &SourceMap,
) -> Result<TriageFrame, String> {
    // A return address is one past its call: the call's line is one byte back
    // (what every unwinder's symbolizer does).
    let offset = if frame.faulting {
        frame.offset
    } else {
        frame.offset.saturating_sub(1)
    };
    let argv = vec![
        tool.display().to_string(),
        "-e".into(),
        debug_file.display().to_string(),
        "-f".into(),
        "-i".into(),
        "--pretty-print".into(),
        format!("{}+{offset:#x}", frame.symbol),
    ];
    let output = run_tool(&argv, ADDR2LINE_TIMEOUT)?;
    let mut resolved = parse_pretty(&output)
        .ok_or_else(|| format!("{ADDR2LINE} found no line for it: {}", output.trim()))?;
    resolved.frame = printed(frame);
    resolved.faulting = frame.faulting;
    resolved.location = resolved.location.map(|l| sources.show(&l));
    resolved.inlined_by = resolved
        .inlined_by
        .iter()
        .map(|caller| match caller.rsplit_once(" at ") {
            Some((function, at)) => format!("{function} at {}", sources.show(at)),
            None => caller.clone(),
        })
        .collect();
    Ok(resolved)
}

/// A frame as the trace printed it, without the symbol's size.
pub(crate) fn printed(frame: &TraceFrame) -> String {
    match &frame.module {
        Some(module) => format!("{}+{:#x} [{module}]", frame.symbol, frame.offset),
        None => format!("{}+{:#x}", frame.symbol, frame.offset),
    }
}

/// `eu-addr2line -f -i --pretty-print` output for one address:
/// `func at file:line:col`, then ` (inlined by) caller at file:line:col` lines.
/// None when it found no line (`func at ??:0`) or printed nothing usable.
pub(crate) fn parse_pretty(output: &str) -> Option<TriageFrame> {
    let mut lines = output.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next()?;
    let (function, location) = first.rsplit_once(" at ")?;
    if location.starts_with("??") {
        return None;
    }
    let inlined_by = lines
        .filter_map(|l| l.trim_start().strip_prefix("(inlined by) "))
        .map(str::to_string)
        .collect();
    Some(TriageFrame {
        frame: String::new(),
        faulting: false,
        location: Some(location.to_string()),
        function: Some(function.to_string()),
        inlined_by,
    })
}

impl SourceMap<'_> {
    /// `file:line:col` with the file shown as the suite's own when it is one of the
    /// driver's source files (the build ran in a sandbox or scratch folder, so DWARF
    /// names that folder): the longest tail of its path that exists under the
    /// driver's source folder. Other files (kernel headers) stay as DWARF names them.
    pub(crate) fn show(&self, location: &str) -> String {
        let (file, position) = split_location(location);
        let Some(source_dir) = self.source_dir else {
            return location.to_string();
        };
        let parts: Vec<&str> = Path::new(file)
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => p.to_str(),
                _ => None,
            })
            .collect();
        for start in 0..parts.len() {
            let tail: PathBuf = parts[start..].iter().collect();
            if self.suite_dir.join(source_dir).join(&tail).is_file() {
                return format!("{}{position}", source_dir.join(tail).display());
            }
        }
        location.to_string()
    }
}

/// `file` and `:line:col` of a location.
fn split_location(location: &str) -> (&str, &str) {
    // File names may hold ':'; the position is the trailing run of `:digits`.
    let mut end = location.len();
    for _ in 0..2 {
        match location[..end].rfind(':') {
            Some(at)
                if location[at + 1..end].bytes().all(|b| b.is_ascii_digit()) && at + 1 < end =>
            {
                end = at
            }
            _ => break,
        }
    }
    location.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_output_with_an_inlined_chain() {
        let out = "dsc_evaluate at /bootgate/build/demo_sensor.c:269:7\n (inlined by) dsc_install at /bootgate/build/demo_sensor.c:309:2\n (inlined by) sensor_load at /bootgate/build/demo_sensor.c:384:8\n";
        let f = parse_pretty(out).unwrap();
        assert_eq!(f.function.as_deref(), Some("dsc_evaluate"));
        assert_eq!(
            f.location.as_deref(),
            Some("/bootgate/build/demo_sensor.c:269:7")
        );
        assert_eq!(
            f.inlined_by,
            vec![
                "dsc_install at /bootgate/build/demo_sensor.c:309:2",
                "sensor_load at /bootgate/build/demo_sensor.c:384:8"
            ]
        );
    }

    #[test]
    fn no_line_is_no_answer_not_a_guess() {
        assert!(parse_pretty("sensor_match_fields at ??:0\n").is_none());
        assert!(parse_pretty("").is_none());
        assert!(parse_pretty("garbage").is_none());
    }

    #[test]
    fn dwarf_file_names_are_shown_as_the_suites_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("drivers/sensor/lib")).unwrap();
        std::fs::write(dir.path().join("drivers/sensor/lib/match.c"), "").unwrap();
        std::fs::write(dir.path().join("drivers/sensor/sensor.c"), "").unwrap();
        let map = SourceMap {
            suite_dir: dir.path(),
            source_dir: Some(Path::new("drivers/sensor")),
        };
        assert_eq!(
            map.show("/bootgate/build/sensor.c:255:7"),
            "drivers/sensor/sensor.c:255:7"
        );
        assert_eq!(
            map.show("/tmp/bootgate-build-x1/lib/match.c:12"),
            "drivers/sensor/lib/match.c:12"
        );
        // Not the driver's: a kernel header stays as DWARF names it.
        assert_eq!(
            map.show("/usr/src/linux-headers-6.1/include/linux/list.h:88:3"),
            "/usr/src/linux-headers-6.1/include/linux/list.h:88:3"
        );
        let prebuilt = SourceMap {
            suite_dir: dir.path(),
            source_dir: None,
        };
        assert_eq!(prebuilt.show("/src/sensor.c:1:1"), "/src/sensor.c:1:1");
    }
}
