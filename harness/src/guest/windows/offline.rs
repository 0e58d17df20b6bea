//! Windows paths on a stopped VM's disk, as the NTFS helper VM sees them: a path
//! such as `C:\Windows\System32\drivers\CrowdStrike\C-00000291*.sys` becomes names to
//! look up one folder at a time from the volume's root, and each name is compared the
//! way Windows compares it, without case. (ntfs-3g looks names up exactly, so the
//! helper lists each folder and the host picks the entry: images/ntfs-helper.)
//!
//! Sources: Microsoft, "Naming Files, Paths, and Namespaces" (names are
//! case-insensitive on Windows; characters 1-31 and `<>:"/\|?*` are not allowed in a
//! name, which is why a listing can be one name per line); NTFS compares names by
//! mapping both through the volume's `$UpCase` table, a one-to-one uppercase map,
//! which [`fold`] follows with Unicode's simple uppercase mapping.

use std::fmt;

/// Where Windows keeps its event logs (Microsoft, "Event Logging": the default
/// `File` of the System channel is `%SystemRoot%\System32\Winevt\Logs\System.evtx`).
pub(crate) const SYSTEM_EVENT_LOG: &str = r"%SystemRoot%\System32\winevt\Logs\System.evtx";

/// `%SystemRoot%` when the manifest does not say: `C:\Windows`.
pub(crate) const DEFAULT_SYSTEM_ROOT: &str = r"C:\Windows";

/// Bytes of a memory dump copied out: the header (WinDumpHeader64 is 8 KiB, QEMU's
/// include/qemu/win_dump_defs.h), which names the bugcheck and its parameters.
pub(crate) const MEMORY_DUMP_HEADER_BYTES: u64 = 8192;

/// A Windows path that cannot be looked up on the system volume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?}: {why}")]
pub struct OfflinePathError {
    pub path: String,
    pub why: String,
}

/// A path on the volume that holds `%SystemRoot%`: its names from the root, the last
/// of which may hold `*` and `?` (a pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumePath {
    pub names: Vec<String>,
}

impl fmt::Display for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\\{}", self.names.join("\\"))
    }
}

/// Splits `path` into names from the root of the volume holding `system_root`
/// (`C:\Windows` by default). Accepted: `C:\...` on the system root's drive,
/// `\...` (that volume's root), `%SystemRoot%\...` and `%windir%\...`. `*` and `?`
/// only in the last name, and only if `pattern` allows it.
pub(crate) fn volume_path(
    path: &str,
    system_root: &str,
    pattern: bool,
) -> Result<VolumePath, OfflinePathError> {
    let fail = |why: String| OfflinePathError {
        path: path.to_string(),
        why,
    };
    let root_names = root_names(system_root).map_err(&fail)?;
    let system_drive = super::path::drive_letter(system_root).unwrap_or('C');
    let (mut names, rest) = if let Some(rest) = strip_variable(path) {
        (root_names, rest)
    } else if let Some(letter) = super::path::drive_letter(path) {
        if letter != system_drive {
            return Err(fail(format!(
                "the disk holds the volume of {system_drive}: (where %SystemRoot% {system_root} is), not {letter}:"
            )));
        }
        (Vec::new(), &path[3..])
    } else if let Some(rest) = path.strip_prefix('\\') {
        (Vec::new(), rest)
    } else {
        return Err(fail(format!(
            "not an absolute windows path: write it like {system_drive}:\\Windows\\Minidump or %SystemRoot%\\Minidump"
        )));
    };
    let parts: Vec<&str> = rest.split('\\').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == "." || *part == ".." {
            return Err(fail(
                "'.' and '..' are not allowed: name every folder".into(),
            ));
        }
        if let Some(c) = part
            .chars()
            .find(|c| c.is_control() || matches!(c, '"' | '<' | '>' | '|' | ':' | '/'))
        {
            return Err(fail(format!("{c:?} is not allowed in a windows name")));
        }
        let wild = part.contains(['*', '?']);
        if wild && (!pattern || i + 1 != parts.len()) {
            return Err(fail(if pattern {
                "'*' and '?' are allowed in the file name only, not in folder names".into()
            } else {
                "'*' and '?' are not allowed here: name one file".into()
            }));
        }
        names.push((*part).to_string());
    }
    if names.is_empty() {
        return Err(fail("names the volume's root, not a file".into()));
    }
    Ok(VolumePath { names })
}

/// The names of `%SystemRoot%` from its volume's root (`C:\Windows` → `Windows`).
fn root_names(system_root: &str) -> Result<Vec<String>, String> {
    let rest = match super::path::drive_letter(system_root) {
        Some(_) => &system_root[3..],
        None => {
            return Err(format!(
                "%SystemRoot% {system_root:?} is not an absolute windows path like C:\\Windows"
            ))
        }
    };
    let names: Vec<String> = rest
        .split('\\')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(format!("%SystemRoot% {system_root:?} is a volume's root"));
    }
    Ok(names)
}

/// The rest of `%SystemRoot%\rest` or `%windir%\rest` (any case), or None.
fn strip_variable(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('%')?;
    let (name, tail) = rest.split_once('%')?;
    let known = name.eq_ignore_ascii_case("SystemRoot") || name.eq_ignore_ascii_case("windir");
    (known && (tail.is_empty() || tail.starts_with('\\'))).then_some(tail)
}

/// What the NTFS helper copies out of a stopped Windows VM's disk as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EvidencePlan {
    /// The minidump folder's `*.dmp` (CrashControl\MinidumpDir).
    pub minidumps: VolumePath,
    /// The memory dump (CrashControl\DumpFile); only its header is copied.
    pub memory_dump: VolumePath,
    /// The System event log (service start failures 7000/7026 and the bugcheck
    /// record 1001 of the boot after a crash).
    pub event_log: VolumePath,
}

/// The NTFS helper's tool in its initramfs (images/ntfs-helper/bootgate-ntfs).
pub(crate) const HELPER_TOOL: &str = "/usr/sbin/bootgate-ntfs";
/// Where the helper mounts the Windows volume.
pub(crate) const HELPER_MOUNT: &str = "/target";

/// argv of `bootgate-ntfs SUBCOMMAND ARGS...`: values are argv items, never script text.
pub(crate) fn helper_argv(subcommand: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec![HELPER_TOOL.to_string(), subcommand.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// The `%SystemRoot%` argument of `bootgate-ntfs mount`: its names joined by `/`.
pub(crate) fn helper_system_root(system_root: &str) -> Result<String, OfflinePathError> {
    root_names(system_root)
        .map(|names| names.join("/"))
        .map_err(|why| OfflinePathError {
            path: system_root.to_string(),
            why,
        })
}

/// The helper's device of the attached disk's partition `n` (0: the whole disk).
pub(crate) fn helper_device(n: u32) -> String {
    match n {
        0 => HELPER_DISK.to_string(),
        n => format!("{HELPER_DISK}{n}"),
    }
}

/// The stopped VM's disk in the helper: its second virtio disk.
const HELPER_DISK: &str = "/dev/vdb";

/// A helper path from names already resolved on the volume.
pub(crate) fn helper_path(names: &[String]) -> String {
    let mut path = HELPER_MOUNT.to_string();
    for name in names {
        path.push('/');
        path.push_str(name);
    }
    path
}

/// One entry of a folder listing from the helper (`bootgate-ntfs list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// Parses `bootgate-ntfs list` output: `d NAME` or `f NAME` per line.
pub(crate) fn parse_listing(text: &str) -> Result<Vec<Entry>, String> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once(' ') {
            Some(("d", name)) => Ok(Entry {
                name: name.into(),
                is_dir: true,
            }),
            Some(("f", name)) => Ok(Entry {
                name: name.into(),
                is_dir: false,
            }),
            _ => Err(format!("unexpected listing line {line:?}")),
        })
        .collect()
}

/// A name as NTFS compares it: every character through its simple uppercase mapping
/// (one character to one, as `$UpCase` maps; `ß` stays `ß`).
pub(crate) fn fold(name: &str) -> Vec<char> {
    name.chars()
        .map(|c| {
            let mut upper = c.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

/// Whether `name` matches `pattern` without case: `*` any run of characters, `?`
/// one character (Windows' `*.sys`; without its 8.3 special cases).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (fold(pattern), fold(name));
    // Iterative wildcard match with one backtrack point (the last `*`).
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The entries of a listing that `name` names: every match of a pattern, in listing
/// order, or the one entry equal without case (an exact-case entry first, should a
/// volume written by Linux hold two that differ only in case).
pub(crate) fn select<'a>(entries: &'a [Entry], name: &str) -> Vec<&'a Entry> {
    if name.contains(['*', '?']) {
        return entries.iter().filter(|e| matches(name, &e.name)).collect();
    }
    if let Some(exact) = entries.iter().find(|e| e.name == name) {
        return vec![exact];
    }
    let want = fold(name);
    entries
        .iter()
        .find(|e| fold(&e.name) == want)
        .into_iter()
        .collect()
}

/// A file name safe to use on the host: no separators, no leading dot.
pub(crate) fn host_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "file".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &str) -> Vec<String> {
        volume_path(path, DEFAULT_SYSTEM_ROOT, true).unwrap().names
    }

    #[test]
    fn paths_become_names_from_the_volume_root() {
        assert_eq!(
            names(r"C:\Windows\System32\drivers\CrowdStrike\C-00000291*.sys"),
            [
                "Windows",
                "System32",
                "drivers",
                "CrowdStrike",
                "C-00000291*.sys"
            ]
        );
        assert_eq!(names(r"%SystemRoot%\Minidump"), ["Windows", "Minidump"]);
        assert_eq!(names(r"%WINDIR%\MEMORY.DMP"), ["Windows", "MEMORY.DMP"]);
        assert_eq!(names(r"c:\ProgramData\\x\"), ["ProgramData", "x"]);
        assert_eq!(
            names(r"\bootgate\content\a.bin"),
            ["bootgate", "content", "a.bin"]
        );
        let elsewhere = volume_path(r"%SystemRoot%\x", r"D:\WinNT", false).unwrap();
        assert_eq!(elsewhere.names, ["WinNT", "x"]);
        assert!(volume_path(r"D:\WinNT\x", r"D:\WinNT", false).is_ok());
        assert!(volume_path(r"C:\x", r"D:\WinNT", false).is_err());
        assert_eq!(
            volume_path(r"C:\a\b*.sys", DEFAULT_SYSTEM_ROOT, true)
                .unwrap()
                .to_string(),
            r"\a\b*.sys"
        );
    }

    #[test]
    fn bad_paths_say_why() {
        let why = |path: &str, pattern: bool| {
            volume_path(path, DEFAULT_SYSTEM_ROOT, pattern)
                .unwrap_err()
                .to_string()
        };
        assert!(why(r"D:\x", true).contains("not D:"));
        assert!(why(r"Windows\x", true).contains("not an absolute"));
        assert!(why("/etc/passwd", true).contains("not an absolute"));
        assert!(why(r"C:\a\..\b", true).contains("'..'"));
        assert!(why(r"C:\a*\b", true).contains("file name only"));
        assert!(why(r"C:\a\b*", false).contains("name one file"));
        assert!(why(r"C:\a\b|c", true).contains("'|'"));
        assert!(why("C:\\a\\b\nc", true).contains("not allowed"));
        assert!(why(r"C:\", true).contains("root"));
        assert!(why(r"%TEMP%\x", true).contains("not an absolute"));
        assert!(volume_path(r"%SystemRoot%\x", "Windows", false)
            .unwrap_err()
            .to_string()
            .contains("%SystemRoot%"));
    }

    #[test]
    fn names_compare_without_case() {
        let entries = parse_listing(
            "d System32\nf c-00000291-00000000-00000032.SYS\nf C-00000292.sys\nf ß.txt\nd Minidump\n",
        )
        .unwrap();
        let pick = |n: &str| -> Vec<String> {
            select(&entries, n).iter().map(|e| e.name.clone()).collect()
        };
        assert_eq!(pick("system32"), ["System32"]);
        assert_eq!(pick("MINIDUMP"), ["Minidump"]);
        assert_eq!(
            pick("C-00000291*.sys"),
            ["c-00000291-00000000-00000032.SYS"]
        );
        assert_eq!(
            pick("c-0000029?*"),
            ["c-00000291-00000000-00000032.SYS", "C-00000292.sys"]
        );
        assert_eq!(
            pick("*"),
            entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>()
        );
        assert!(pick("C-00000291").is_empty(), "no implicit wildcard");
        assert_eq!(pick("ß.TXT"), ["ß.txt"], "one-to-one folding keeps ß");
        assert!(pick("SS.txt").is_empty(), "no full case folding");
        assert!(matches("*.dmp", "Mini070124-01.DMP"));
        assert!(!matches("*.dmp", "x.dmp.bak"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        // An exact-case entry wins over a case variant.
        let twins = parse_listing("f readme\nf README\n").unwrap();
        assert_eq!(select(&twins, "README")[0].name, "README");
        assert!(parse_listing("x y\n").is_err());
    }

    #[test]
    fn host_names_stay_in_their_folder() {
        assert_eq!(host_file_name("Mini.dmp"), "Mini.dmp");
        assert_eq!(host_file_name("../x"), "_x");
        assert_eq!(host_file_name(".."), "file");
        assert_eq!(host_file_name("a\\b"), "a_b");
    }
}
