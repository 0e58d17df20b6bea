//! Windows paths in image manifests: what a valid one looks like, and joining.
//!
//! The manifest's guest paths are used on the guest, never on the host, so they are
//! checked as Windows paths whatever the host is: absolute, with a drive letter (or,
//! where Windows itself writes the file, an environment variable such as
//! `%SystemRoot%`), backslashes only, and none of the characters Windows forbids.

use crate::guest::{GuestPaths, OsFamily};

/// A guest path field that is wrong for the image's OS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldProblem {
    /// The manifest field, `guest.drivers_dir`.
    pub field: &'static str,
    pub message: String,
}

/// Whether a path may start with `%NAME%\` instead of a drive letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Drive,
    DriveOrVariable,
}

/// Why `value` is not an absolute Windows path, or `None` if it is one.
pub(crate) fn problem(value: &str, root: Root) -> Option<String> {
    if value.is_empty() {
        return Some("empty".into());
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Some(format!(
            "{value:?} holds the control character {c:?}, which windows does not allow in a path"
        ));
    }
    if value.contains('/') {
        return Some(format!(
            "{value:?} is not a windows path: it uses '/' (write a windows path, like 'C:\\bootgate', as a TOML literal string in single quotes)"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '"' | '<' | '>' | '|' | '?' | '*'))
    {
        return Some(format!(
            "{value:?} holds {c:?}, which windows does not allow in a path"
        ));
    }
    if value.char_indices().any(|(i, c)| c == ':' && i != 1) {
        return Some(format!("{value:?} holds ':' outside its drive letter"));
    }
    let rooted = match root {
        Root::Drive => drive_letter(value).is_some(),
        Root::DriveOrVariable => drive_letter(value).is_some() || variable_root(value),
    };
    if !rooted {
        let like = match root {
            Root::Drive => r"like C:\bootgate",
            Root::DriveOrVariable => r"like C:\bootgate or %SystemRoot%\Minidump",
        };
        return Some(format!(
            "{value:?} is not an absolute windows path ({like})"
        ));
    }
    None
}

/// The drive letter of `X:\...`, uppercased.
pub(crate) fn drive_letter(path: &str) -> Option<char> {
    let mut chars = path.chars();
    let (letter, colon, slash) = (chars.next()?, chars.next()?, chars.next()?);
    (letter.is_ascii_alphabetic() && colon == ':' && slash == '\\')
        .then(|| letter.to_ascii_uppercase())
}

/// `%NAME%\...` with a plausible variable name.
fn variable_root(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('%') else {
        return false;
    };
    match rest.split_once('%') {
        Some((name, tail)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && tail.starts_with('\\')
        }
        None => false,
    }
}

/// `dir\name`, with exactly one backslash between them (`C:\` + `x` is `C:\x`).
pub(crate) fn join(dir: &str, name: &str) -> String {
    format!("{}\\{}", dir.trim_end_matches('\\'), name)
}

/// Checks the guest paths of a manifest against its OS: Windows paths for a Windows
/// image, no Windows-only fields on a Linux one, and no Linux-only fields on a
/// Windows one (they would be ignored, which hides a mistake).
pub(crate) fn check_guest(os: OsFamily, guest: &GuestPaths) -> Result<(), FieldProblem> {
    let problem_in = |field: &'static str, message: String| Err(FieldProblem { field, message });
    match os {
        OsFamily::Linux => {
            let windows_only = [
                ("guest.driver_kind", guest.driver_kind.is_some()),
                ("guest.service_start", guest.service_start.is_some()),
                ("guest.minidump_dir", guest.minidump_dir.is_some()),
                ("guest.memory_dump_path", guest.memory_dump_path.is_some()),
                ("guest.offline_helper", guest.offline_helper.is_some()),
                ("guest.service_type", guest.service_type.is_some()),
                ("guest.load_order_group", guest.load_order_group.is_some()),
                ("guest.minifilter", guest.minifilter.is_some()),
            ];
            for (field, set) in windows_only {
                if set {
                    return problem_in(
                        field,
                        "only windows images take this field (os = \"windows\")".into(),
                    );
                }
            }
            Ok(())
        }
        OsFamily::Windows => {
            let linux_only = [
                (
                    "guest.drivers_registry",
                    guest.drivers_registry.is_some(),
                    "the linux demo guest's boot-driver list; a windows image registers drivers with sc.exe or pnputil (guest.driver_kind), so remove it",
                ),
                (
                    "guest.initramfs_update",
                    guest.initramfs_update.is_some(),
                    "a linux initramfs rebuild command; a windows boot-start driver is a service with start = boot (guest.service_start), so remove it",
                ),
                (
                    "guest.safe_mode_append",
                    guest.safe_mode_append.is_some(),
                    "a linux kernel command line; bootgate has no rescue boot for windows images yet, so remove it",
                ),
                (
                    "guest.offline_mount",
                    guest.offline_mount.is_some()
                        || guest.offline_unmount.is_some()
                        || guest.offline_root.is_some(),
                    "the command lines of a linux helper VM; a windows image's disk is edited offline by the NTFS helper named in guest.offline_helper (default \"ntfs-helper\"), so remove offline_mount, offline_root and offline_unmount",
                ),
            ];
            for (field, set, why) in linux_only {
                if set {
                    return problem_in(field, why.into());
                }
            }
            let options = super::ServiceOptions {
                service_type: guest.service_type.unwrap_or_default(),
                group: guest.load_order_group.clone(),
                minifilter: guest.minifilter.clone(),
            };
            if let Err(super::command::CommandError::Invalid { what, value, why }) = options.check()
            {
                return problem_in(what, format!("{value:?} {why}"));
            }
            if let Some(why) = boot_start_outside_system_root(guest) {
                return problem_in("guest.service_start", why);
            }
            match guest.shell.first() {
                None => {
                    return problem_in(
                        "guest.shell",
                        "empty: give the argv prefix that runs a command line, like [\"powershell.exe\", \"-NoProfile\", \"-NonInteractive\", \"-ExecutionPolicy\", \"Bypass\", \"-Command\"]".into(),
                    )
                }
                Some(program) if program.starts_with('/') => {
                    return problem_in(
                        "guest.shell",
                        format!("starts with {program:?}, a unix path: a windows image runs powershell.exe or cmd.exe"),
                    )
                }
                Some(_) => {}
            }
            let paths = [
                ("guest.drivers_dir", &guest.drivers_dir, Root::Drive),
                ("guest.content_dir", &guest.content_dir, Root::Drive),
                ("guest.boot_count_file", &guest.boot_count_file, Root::Drive),
                ("guest.system_root", &guest.system_root, Root::Drive),
                (
                    "guest.minidump_dir",
                    &guest.minidump_dir,
                    Root::DriveOrVariable,
                ),
                (
                    "guest.memory_dump_path",
                    &guest.memory_dump_path,
                    Root::DriveOrVariable,
                ),
            ];
            for (field, value, root) in paths {
                if let Some(message) = value.as_deref().and_then(|v| problem(v, root)) {
                    return problem_in(field, message);
                }
            }
            Ok(())
        }
    }
}

/// Why `start = boot` cannot work for a service driver in `drivers_dir`, if it
/// cannot: boot-start drivers are loaded by winload from the boot volume before any
/// file system driver runs, so their image must be under %SystemRoot% (Microsoft,
/// "What Determines When a Driver Is Loaded" and the INF AddService directive's
/// StartType note: a SERVICE_BOOT_START driver's ServiceBinary must be on the
/// system volume, by convention %SystemRoot%\System32\drivers).
pub(crate) fn boot_start_outside_system_root(guest: &GuestPaths) -> Option<String> {
    let boot = guest.service_start.unwrap_or_default() == super::ServiceStart::Boot;
    let service = guest.driver_kind.unwrap_or_default() == super::DriverKind::Service;
    // A unix path is refused by the path check with its own message.
    let dir = guest
        .drivers_dir
        .as_deref()
        .filter(|d| !d.starts_with('/'))?;
    // A system_root that is no Windows path is refused by the path check with its
    // own message; this rule then judges against the default.
    let system_root = guest
        .system_root
        .as_deref()
        .filter(|root| drive_letter(root).is_some())
        .unwrap_or(r"C:\Windows");
    if !boot || !service || under_system_root(dir, system_root) {
        return None;
    }
    Some(format!(
        "is \"boot\" (the default) but guest.drivers_dir {dir:?} is not under %SystemRoot% ({system_root}): winload loads boot-start drivers from the system volume before any other volume or file system is up, so the driver would not load; put drivers_dir under %SystemRoot%\\System32\\drivers or use service_start = \"system\""
    ))
}

/// Whether a Windows path is %SystemRoot% or below it (written with the variable,
/// %windir%, or as the manifest's `system_root`, C:\Windows unless it says otherwise).
fn under_system_root(path: &str, system_root: &str) -> bool {
    let lower = path.to_ascii_lowercase().replace('/', "\\");
    let named = system_root
        .to_ascii_lowercase()
        .replace('/', "\\")
        .trim_end_matches('\\')
        .to_string();
    ["%systemroot%", "%windir%", named.as_str()]
        .iter()
        .any(|root| {
            lower
                .strip_prefix(root)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('\\'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_windows_paths_pass() {
        for ok in [
            r"C:\Windows\System32\drivers",
            r"c:\",
            r"D:\Program Files\Vendor Ünïcode\sensor driver",
            r"C:\a&b\100%\x^y",
        ] {
            assert_eq!(problem(ok, Root::Drive), None, "{ok}");
        }
        assert_eq!(
            problem(r"%SystemRoot%\Minidump", Root::DriveOrVariable),
            None
        );
        assert_eq!(
            problem(r"%SYSTEM_ROOT2%\MEMORY.DMP", Root::DriveOrVariable),
            None
        );
    }

    #[test]
    fn non_windows_paths_say_why() {
        let cases = [
            ("/system/drivers", Root::Drive, "'/'"),
            (r"C:/Windows", Root::Drive, "'/'"),
            (
                r"Windows\System32",
                Root::Drive,
                "not an absolute windows path",
            ),
            (r"C:Windows", Root::Drive, "not an absolute windows path"),
            (
                r"\\server\share",
                Root::Drive,
                "not an absolute windows path",
            ),
            (
                r"%SystemRoot%\Minidump",
                Root::Drive,
                "not an absolute windows path",
            ),
            (
                r"%%\x",
                Root::DriveOrVariable,
                "not an absolute windows path",
            ),
            (
                r"%Sys Root%\x",
                Root::DriveOrVariable,
                "not an absolute windows path",
            ),
            (r"C:\a:b", Root::Drive, "':'"),
            (r#"C:\a"b"#, Root::Drive, "'\"'"),
            ("C:\\a\u{0}b", Root::Drive, "control character"),
            ("C:\\a\nb", Root::Drive, "control character"),
            (r"C:\a*", Root::Drive, "'*'"),
            ("", Root::Drive, "empty"),
        ];
        for (value, root, expect) in cases {
            let message = problem(value, root).unwrap_or_default();
            assert!(message.contains(expect), "{value:?}: {message:?}");
        }
    }

    #[test]
    fn drive_letters_and_joins() {
        assert_eq!(drive_letter(r"c:\x"), Some('C'));
        assert_eq!(drive_letter(r"C:"), None);
        assert_eq!(drive_letter(r"%SystemRoot%\x"), None);
        assert_eq!(drive_letter("é:\\x"), None);
        assert_eq!(join(r"C:\", "x.sys"), r"C:\x.sys");
        assert_eq!(join(r"C:\drivers\\", "x.sys"), r"C:\drivers\x.sys");
        assert_eq!(join(r"C:\drivers", "x.sys"), r"C:\drivers\x.sys");
    }

    #[test]
    fn boot_start_needs_the_driver_under_the_system_root() {
        let mut g: GuestPaths = toml::from_str("shell = ['powershell.exe']").unwrap();
        for ok in [
            r"C:\Windows\System32\drivers",
            r"%SystemRoot%\System32\drivers",
            r"c:\windows",
        ] {
            g.drivers_dir = Some(ok.into());
            assert_eq!(boot_start_outside_system_root(&g), None, "{ok}");
        }
        for outside in [r"D:\drivers", r"C:\WindowsApps\x", r"C:\Program Files\v"] {
            g.drivers_dir = Some(outside.into());
            let why = boot_start_outside_system_root(&g).unwrap();
            assert!(why.contains("winload"), "{why}");
        }
        // A Windows installed elsewhere (guest.system_root) has its own root.
        g.system_root = Some(r"D:\Win\".into());
        g.drivers_dir = Some(r"d:\win\System32\drivers".into());
        assert_eq!(boot_start_outside_system_root(&g), None);
        g.drivers_dir = Some(r"%windir%\System32\drivers".into());
        assert_eq!(boot_start_outside_system_root(&g), None);
        g.drivers_dir = Some(r"C:\Windows\System32\drivers".into());
        let why = boot_start_outside_system_root(&g).unwrap();
        assert!(why.contains(r"(D:\Win\)"), "{why}");
        g.service_start = Some(super::super::ServiceStart::System);
        assert_eq!(boot_start_outside_system_root(&g), None);
    }
}
