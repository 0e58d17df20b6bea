//! One line on a crash's memory dump, for the sinks that are plain text (terminal,
//! JUnit): where it is, its format and size, and the command that opens it; or why
//! there is none.

use crate::model::record::CrashRecord;

/// The reader's command for a dump of `format` (DUMP stands for the file).
pub(crate) fn reader(format: &str) -> Option<&'static str> {
    match format {
        "elf" => Some("gdb VMLINUX DUMP (or crash VMLINUX DUMP)"),
        f if f.starts_with("kdump") => Some("crash VMLINUX DUMP"),
        "win-dmp" => Some("windbg -z DUMP"),
        _ => None,
    }
}

/// `memory dump: s/crash-1.kdump (kdump-zlib, 9.8 MiB): open with crash VMLINUX
/// DUMP`, or `memory dump: none: not dumped: ...`; None when the record says
/// nothing either way.
pub(crate) fn dump_line(crash: &CrashRecord) -> Option<String> {
    match (&crash.dump, &crash.dump_note) {
        (Some(path), note) => {
            let format = crash.dump_format.as_deref().unwrap_or("unknown format");
            let size = crash
                .dump_bytes
                .map(|b| format!(", {:.1} MiB", b as f64 / (1024.0 * 1024.0)))
                .unwrap_or_default();
            let open = reader(format)
                .map(|r| format!(": open with {}", r.replace("DUMP", path)))
                .unwrap_or_default();
            let note = note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            Some(format!("memory dump: {path} ({format}{size}){open}{note}"))
        }
        (None, Some(note)) => Some(format!("memory dump: none: {note}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::records::crash;

    #[test]
    fn a_dump_says_where_what_and_how_to_open_it() {
        let mut c = crash(1, "BUG: x");
        c.dump = Some("s/a/crash-1.kdump".into());
        c.dump_format = Some("kdump-zlib".into());
        c.dump_bytes = Some(10 * 1024 * 1024 + 100_000);
        assert_eq!(
            dump_line(&c).unwrap(),
            "memory dump: s/a/crash-1.kdump (kdump-zlib, 10.1 MiB): open with crash VMLINUX s/a/crash-1.kdump"
        );
        c.dump = None;
        c.dump_note = Some("not dumped: the run's dump budget (1 MiB) is used up".into());
        assert_eq!(
            dump_line(&c).unwrap(),
            "memory dump: none: not dumped: the run's dump budget (1 MiB) is used up"
        );
        c.dump_note = None;
        assert_eq!(dump_line(&c), None);
    }
}
