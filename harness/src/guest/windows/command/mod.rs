//! Windows guest commands, as argv for the guest agent's `guest-exec`.
//!
//! How argv reaches a Windows process: qemu-ga hands `path` and `arg` to glib's
//! `g_spawn_async_with_pipes`, which on Windows writes them into ONE command line
//! (`protect_argv`, reproduced by [`glib_quote`]): an item holding a space or tab is
//! wrapped in `"`, a `"` becomes `\"`, backslashes before a `"` (and, since glib
//! 2.59.1, before the closing quote) are doubled, and an empty item is written as
//! nothing at all. The new process splits that line again by the MSVCRT /
//! CommandLineToArgvW rules, which undo exactly that quoting. Three consequences shape
//! this module:
//!
//! - Programs that parse their command line the C way (pnputil, sc.exe, shutdown.exe,
//!   powershell.exe) get every argv item back as it was sent, so values travel as
//!   argv items of their own wherever the program takes them that way.
//! - cmd.exe does not parse that way: it reads the raw line, where glib's `\"` is a
//!   backslash and a quote. A cmd line holding `"` cannot reach cmd.exe intact, so
//!   [`cmd_argv`] refuses one, and nothing here builds cmd lines from values.
//! - `env` replaces the child's whole environment (qemu-ga passes it to g_spawn as
//!   envp, and searches PATH in it): SystemRoot, PATH and the rest would be gone, and
//!   many Windows programs, PowerShell among them, fail without SystemRoot. So these
//!   commands carry no environment. Where a step needs a script, the script is
//!   constant PowerShell text after a prelude that assigns each value to a variable
//!   as a single-quoted literal ([`ps_quote`]): values are data, never code.

use super::{ServiceOptions, ServiceStart};

/// The argv prefix that runs a PowerShell command line (Windows PowerShell 5.1, in
/// every Windows 10/11 and Server 2016+). No profile, no prompts (a prompt would hang
/// the step), and no execution policy in the way of the modules the scripts load.
pub(crate) const POWERSHELL: [&str; 6] = [
    "powershell.exe",
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-Command",
];

/// The argv prefix that runs a cmd.exe command line: `/d` skips AutoRun commands from
/// the registry, `/v:off` keeps `!` literal, and `/s` makes cmd strip exactly the
/// outer quotes glib adds around a line that holds spaces.
pub const CMD: [&str; 5] = ["cmd.exe", "/d", "/v:off", "/s", "/c"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the {what} is empty: glib writes an empty argument as nothing, so it would vanish from the windows command line")]
    Empty { what: &'static str },
    #[error(
        "the {what} {value:?} holds a NUL character, which cannot reach a windows command line"
    )]
    Nul { what: &'static str, value: String },
    #[error("the {what} {value:?} {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("cmd.exe cannot be given {line:?} through the guest agent: glib escapes '\"' as '\\\"', which cmd.exe does not undo; use the powershell shell, or put the command in a .cmd file in the image")]
    CmdQuote { line: String },
    #[error("cmd.exe cannot be given {line:?} through the guest agent: glib doubles a trailing backslash when it quotes a line with spaces; end the line with a space")]
    CmdTrailingBackslash { line: String },
    #[error("malformed crash dump listing line {line:?}: {why}")]
    Listing { line: String, why: &'static str },
}

/// How glib (2.59.1 and later) writes one argv item into a Windows command line:
/// `protect_argv_string` in glib/gspawn-win32.c.
pub fn glib_quote(arg: &str) -> String {
    let quote = arg.contains([' ', '\t']);
    let mut out = String::with_capacity(arg.len() + 2);
    if quote {
        out.push('"');
    }
    let mut backslashes = 0;
    for c in arg.chars() {
        if c == '"' {
            // One backslash for the quote, one more for each backslash before it.
            out.extend(std::iter::repeat_n('\\', backslashes + 1));
        }
        backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        out.push(c);
    }
    if quote {
        out.extend(std::iter::repeat_n('\\', backslashes));
        out.push('"');
    }
    out
}

/// The command line a Windows guest process gets for `argv` (program first): what
/// `GetCommandLineW` returns in the child. Useful in logs, where it shows exactly
/// what the guest ran.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn glib_command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| glib_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A PowerShell single-quoted string literal holding exactly `value`. Inside single
/// quotes PowerShell expands nothing; the only special characters are its single
/// quotes, written twice. PowerShell counts the typographic quotes U+2018..U+201B as
/// single quotes too, so they are doubled as well: a value holding `’` must not end
/// the literal.
pub(crate) fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if is_ps_single_quote(c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn is_ps_single_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}')
}

/// `@('a', 'b')`: a PowerShell array of single-quoted literals.
fn ps_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| ps_quote(i)).collect();
    format!("@({})", quoted.join(", "))
}

/// Runs a PowerShell command line (a script on one line, or several lines).
pub(crate) fn powershell_argv(script: &str) -> Vec<String> {
    let mut argv: Vec<String> = POWERSHELL.iter().map(|s| s.to_string()).collect();
    argv.push(script.to_string());
    argv
}

/// Runs a cmd.exe command line. Refuses what cannot reach cmd.exe intact (see the
/// module documentation); `&`, `|`, `%` and `^` pass and mean what they mean in cmd.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn cmd_argv(line: &str) -> Result<Vec<String>, CommandError> {
    let line = value("cmd line", line)?;
    if line.contains('"') {
        return Err(CommandError::CmdQuote { line: line.into() });
    }
    if line.contains([' ', '\t']) && line.ends_with('\\') {
        return Err(CommandError::CmdTrailingBackslash { line: line.into() });
    }
    let mut argv: Vec<String> = CMD.iter().map(|s| s.to_string()).collect();
    argv.push(line.to_string());
    Ok(argv)
}

/// A value that must arrive as one argv item or literal: not empty (glib would drop
/// it) and without NUL (the C strings on the way would cut it).
fn value<'a>(what: &'static str, v: &'a str) -> Result<&'a str, CommandError> {
    if v.is_empty() {
        return Err(CommandError::Empty { what });
    }
    if v.contains('\0') {
        return Err(CommandError::Nul {
            what,
            value: v.into(),
        });
    }
    Ok(v)
}

/// A service (driver) name: it is also a registry key and a file name, so keep it to
/// the characters every one of those takes.
fn service_name(name: &str) -> Result<&str, CommandError> {
    let name = value("service name", name)?;
    if name.len() > 256
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(CommandError::Invalid {
            what: "service name",
            value: name.into(),
            why: "must be at most 256 letters, digits, '_', '-' or '.' (it becomes a service name and a file name)",
        });
    }
    Ok(name)
}

/// The drive letters whose caches a script flushes, as a PowerShell array.
fn drive_list(drives: &[char]) -> Result<String, CommandError> {
    let mut letters = Vec::new();
    for &d in drives {
        if !d.is_ascii_alphabetic() {
            return Err(CommandError::Invalid {
                what: "drive letter",
                value: d.to_string(),
                why: "is not a letter from A to Z",
            });
        }
        let d = d.to_ascii_uppercase().to_string();
        if !letters.contains(&d) {
            letters.push(d);
        }
    }
    Ok(ps_list(&letters))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `pnputil /add-driver INF [/install]`: adds a driver package to the driver store and,
/// with `install`, installs it on the devices it matches.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn pnputil_add_driver(inf: &str, install: bool) -> Result<Vec<String>, CommandError> {
    let inf = value("INF path", inf)?;
    let mut argv = strings(&["pnputil.exe", "/add-driver", inf]);
    if install {
        argv.push("/install".into());
    }
    Ok(argv)
}

/// `pnputil /delete-driver oemNN.inf /uninstall /force`. Only a published name
/// (`oem<number>.inf`) is accepted: an inbox driver's name here would remove part of
/// Windows.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn pnputil_delete_driver(published: &str) -> Result<Vec<String>, CommandError> {
    let published = value("published INF name", published)?;
    let lower = published.to_ascii_lowercase();
    let number = lower
        .strip_prefix("oem")
        .and_then(|rest| rest.strip_suffix(".inf"));
    if !number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
        return Err(CommandError::Invalid {
            what: "published INF name",
            value: published.into(),
            why: "is not a published name like oem12.inf (find it from the original INF name with uninstall_pnp_inf)",
        });
    }
    Ok(strings(&[
        "pnputil.exe",
        "/delete-driver",
        published,
        "/uninstall",
        "/force",
    ]))
}

/// `sc.exe create NAME type= kernel start= START binpath= PATH`. sc.exe takes each
/// option as `key=` followed by its value as the next argument (the space after `=`
/// is required), so each is its own argv item.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn sc_create_kernel(
    name: &str,
    start: ServiceStart,
    binpath: &str,
) -> Result<Vec<String>, CommandError> {
    let name = service_name(name)?;
    let binpath = value("driver path", binpath)?;
    Ok(strings(&[
        "sc.exe",
        "create",
        name,
        "type=",
        "kernel",
        "start=",
        start.as_sc(),
        "binpath=",
        binpath,
    ]))
}

/// `sc.exe start NAME`.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn sc_start(name: &str) -> Result<Vec<String>, CommandError> {
    Ok(strings(&["sc.exe", "start", service_name(name)?]))
}

/// `sc.exe stop NAME`.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn sc_stop(name: &str) -> Result<Vec<String>, CommandError> {
    Ok(strings(&["sc.exe", "stop", service_name(name)?]))
}

/// `sc.exe delete NAME`.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn sc_delete(name: &str) -> Result<Vec<String>, CommandError> {
    Ok(strings(&["sc.exe", "delete", service_name(name)?]))
}

/// Reboots now. The harness itself reboots through `guest-shutdown`; this is for a
/// suite step that must reboot from inside the guest.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn reboot() -> Vec<String> {
    strings(&["shutdown.exe", "/r", "/t", "0"])
}

/// Every script starts like this: a failing cmdlet ends the script with exit code 1
/// instead of carrying on, and no progress records (which PowerShell would write to
/// stderr as CLIXML when its output is a pipe).
const PRELUDE: &[&str] = &[
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
];

/// Flushes what a power cut would lose: the registry (Windows writes hive changes to
/// disk lazily, seconds later) and the file system caches of the touched drives and
/// the system drive. Best effort, like `sync`: a flush that fails leaves a warning in
/// the step's output rather than failing an install that succeeded.
const FLUSH: &[&str] = &[
    "try { $bgHive = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey('SYSTEM'); $bgHive.Flush(); $bgHive.Close() } catch { Write-Warning ('bootgate: registry flush failed: ' + $_.Exception.Message) }",
    "try { Write-VolumeCache -DriveLetter (@($bgDrives) + $env:SystemDrive.Substring(0, 1) | Sort-Object -Unique) } catch { Write-Warning ('bootgate: volume flush failed: ' + $_.Exception.Message) }",
];

/// With `-Command`, PowerShell's exit code is 1 when the last statement failed, even
/// one whose failure a script chose to accept; so every script ends explicitly.
const DONE: &str = "exit 0";

/// `powershell.exe ... -Command "<prelude>; <$name = 'value'>...; <body>"`.
fn script(vars: &[(&str, String)], body: &[&[&str]]) -> Vec<String> {
    let mut statements: Vec<String> = PRELUDE.iter().map(|s| s.to_string()).collect();
    for (name, literal) in vars {
        statements.push(format!("${name} = {literal}"));
    }
    for part in body {
        statements.extend(part.iter().map(|s| s.to_string()));
    }
    statements.push(DONE.into());
    powershell_argv(&statements.join("; "))
}

const SERVICE_INSTALL: &[&str] = &[
    // Defect 7: a reinstall over a loaded driver. The agent wrote the new image to
    // $bgNew (never onto the loaded .sys, which the memory manager holds open: a
    // write there fails with a sharing violation). Try to stop the old one (1062
    // ERROR_SERVICE_NOT_ACTIVE, 1060 ERROR_SERVICE_DOES_NOT_EXIST: nothing to stop;
    // a driver that cannot unload refuses, and its image stays mapped). Then move
    // the old file aside: NTFS lets a mapped image be renamed though not written
    // (MoveFileEx documents MOVEFILE_DELAY_UNTIL_REBOOT for files that cannot be
    // moved; a loaded image can), and put the new file in its name.
    "& sc.exe stop $bgName | Out-Null",
    "if (Test-Path -LiteralPath $bgSys -PathType Leaf) { $bgOld = $bgSys + '.bootgate-old-' + [DateTime]::UtcNow.ToString('yyyyMMddHHmmssfff'); Move-Item -LiteralPath $bgSys -Destination $bgOld -Force; try { Remove-Item -LiteralPath $bgOld -Force -ErrorAction Stop } catch { Write-Warning ('bootgate: the old image ' + $bgOld + ' is still loaded; it is removed at uninstall') } }",
    "Move-Item -LiteralPath $bgNew -Destination $bgSys -Force",
    // Windows PowerShell 5.1 drops an empty string argument to a native program, so
    // `group=` goes in only with a group, as an array splatted onto the command.
    "$bgGroupArgs = @(); if ($bgGroup) { $bgGroupArgs = @('group=', $bgGroup) }",
    "& sc.exe create $bgName type= $bgType start= $bgStart binpath= $bgSys @bgGroupArgs",
    // 1073 ERROR_SERVICE_EXISTS: a reinstall; point the service at the new file.
    // 1072 ERROR_SERVICE_MARKED_FOR_DELETE: an uninstall earlier in this boot left
    // the service marked for deletion (a handle is open or the driver is loaded);
    // until a reboot it can be neither created nor reconfigured, so say so.
    "if ($LASTEXITCODE -eq 1073) { & sc.exe config $bgName type= $bgType start= $bgStart binpath= $bgSys @bgGroupArgs }",
    "if ($LASTEXITCODE -eq 1072) { [Console]::Error.WriteLine('bootgate: service ' + $bgName + ' is marked for deletion by an earlier uninstall (sc.exe 1072 ERROR_SERVICE_MARKED_FOR_DELETE): Windows deletes it at the next boot; put a reboot step between uninstall_driver and install_driver'); exit 1072 }",
    "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }",
    // A file system minifilter: Filter Manager reads its instance and altitude from
    // the service key (Microsoft, \"Creating an INF file for a minifilter driver\":
    // Instances\\DefaultInstance, Instances\\<name>\\Altitude and Flags).
    "if ($bgAltitude) { $bgKey = 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\' + $bgName + '\\Instances'; New-Item -Path ($bgKey + '\\' + $bgInstance) -Force | Out-Null; New-ItemProperty -LiteralPath $bgKey -Name 'DefaultInstance' -PropertyType String -Value $bgInstance -Force | Out-Null; New-ItemProperty -LiteralPath ($bgKey + '\\' + $bgInstance) -Name 'Altitude' -PropertyType String -Value $bgAltitude -Force | Out-Null; New-ItemProperty -LiteralPath ($bgKey + '\\' + $bgInstance) -Name 'Flags' -PropertyType DWord -Value $bgFlags -Force | Out-Null }",
    // 1056 ERROR_SERVICE_ALREADY_RUNNING: the old image stays loaded until reboot.
    "if ($bgLoad) { & sc.exe start $bgName; if ($LASTEXITCODE -notin 0, 1056) { exit $LASTEXITCODE } }",
];

/// The file the agent uploads a service driver's new image to, beside `sys`: never
/// the loaded file itself (defect 7, see [`install_service`]).
pub(crate) fn staged_sys(sys: &str) -> String {
    format!("{sys}.bootgate-new")
}

/// Registers `sys` as a kernel service `name` loaded at `start` (created, or
/// reconfigured if it exists), first moving the new image from [`staged_sys`] into
/// place without writing onto a loaded one; writes the minifilter instance if
/// `options` name one; starts it now if `load_now`; then flushes.
pub(crate) fn install_service(
    name: &str,
    sys: &str,
    start: ServiceStart,
    options: &ServiceOptions,
    load_now: bool,
    drives: &[char],
) -> Result<Vec<String>, CommandError> {
    options.check()?;
    let minifilter = options.minifilter.as_ref();
    let vars = [
        ("bgName", ps_quote(service_name(name)?)),
        ("bgSys", ps_quote(value("driver path", sys)?)),
        ("bgNew", ps_quote(&staged_sys(sys))),
        ("bgType", ps_quote(options.service_type.as_sc())),
        ("bgGroup", ps_quote(options.group.as_deref().unwrap_or(""))),
        (
            "bgAltitude",
            ps_quote(minifilter.map_or("", |m| m.altitude.as_str())),
        ),
        (
            "bgInstance",
            ps_quote(minifilter.map_or("", |m| m.instance.as_str())),
        ),
        ("bgFlags", minifilter.map_or(0, |m| m.flags).to_string()),
        ("bgStart", ps_quote(start.as_sc())),
        ("bgLoad", if load_now { "$true" } else { "$false" }.into()),
        ("bgDrives", drive_list(drives)?),
    ];
    Ok(script(&vars, &[SERVICE_INSTALL, FLUSH]))
}

const SERVICE_UNINSTALL: &[&str] = &[
    // Stopping fails for a driver that is not running or refuses to unload; deleting
    // the service still keeps it from loading at the next boot.
    "& sc.exe stop $bgName | Out-Null",
    "& sc.exe delete $bgName | Out-Null",
    // 1060 ERROR_SERVICE_DOES_NOT_EXIST, 1072 ERROR_SERVICE_MARKED_FOR_DELETE: gone, or going.
    "if ($LASTEXITCODE -notin 0, 1060, 1072) { exit $LASTEXITCODE }",
    // A loaded driver's image cannot be deleted; it is harmless once the service is gone.
    "if (Test-Path -LiteralPath $bgSys -PathType Leaf) { try { Remove-Item -LiteralPath $bgSys -Force } catch { Write-Warning ('bootgate: ' + $bgSys + ' stays until it is unloaded: ' + $_.Exception.Message) } }",
    // Old images a reinstall moved aside, and a staged one never moved in.
    "foreach ($bgLeft in @(Get-ChildItem -LiteralPath ([IO.Path]::GetDirectoryName($bgSys)) -File -ErrorAction SilentlyContinue | Where-Object { $_.Name -like ([IO.Path]::GetFileName($bgSys) + '.bootgate-*') })) { try { Remove-Item -LiteralPath $bgLeft.FullName -Force } catch { Write-Warning ('bootgate: ' + $bgLeft.FullName + ' stays until it is unloaded') } }",
];

/// Stops and deletes the kernel service `name` and deletes its file, then flushes.
pub(crate) fn uninstall_service(
    name: &str,
    sys: &str,
    drives: &[char],
) -> Result<Vec<String>, CommandError> {
    let vars = [
        ("bgName", ps_quote(service_name(name)?)),
        ("bgSys", ps_quote(value("driver path", sys)?)),
        ("bgDrives", drive_list(drives)?),
    ];
    Ok(script(&vars, &[SERVICE_UNINSTALL, FLUSH]))
}

const PNP_INSTALL: &[&str] = &[
    "if (Test-Path -LiteralPath $bgDir) { Remove-Item -LiteralPath $bgDir -Recurse -Force }",
    "Expand-Archive -LiteralPath $bgZip -DestinationPath $bgDir -Force",
    "$bgInfs = @(Get-ChildItem -LiteralPath $bgDir -Filter '*.inf' -Recurse -File)",
    "if ($bgInfs.Count -eq 0) { [Console]::Error.WriteLine('bootgate: no .inf file in ' + $bgZip); exit 2 }",
    // One INF per pnputil call (Microsoft's advice), so each exit code has one cause.
    // 3010: installed, reboot needed. 259: no device matches, or a better driver is in use.
    "foreach ($bgInf in $bgInfs) { if ($bgInstall) { & pnputil.exe /add-driver $bgInf.FullName /install } else { & pnputil.exe /add-driver $bgInf.FullName }; if ($LASTEXITCODE -eq 259) { [Console]::Error.WriteLine('bootgate: pnputil 259: no device matches ' + $bgInf.Name + ', or a better driver is already installed') }; if ($LASTEXITCODE -notin 0, 3010) { exit $LASTEXITCODE } }",
];

/// Expands the driver package `zip` into `dir` (replacing what was there) and adds
/// each INF in it with pnputil, installing on matching devices if `install`; flushes.
pub(crate) fn install_pnp_package(
    zip: &str,
    dir: &str,
    install: bool,
    drives: &[char],
) -> Result<Vec<String>, CommandError> {
    let vars = [
        ("bgZip", ps_quote(value("driver package", zip)?)),
        ("bgDir", ps_quote(value("driver package folder", dir)?)),
        ("bgInstall", if install { "$true" } else { "$false" }.into()),
        ("bgDrives", drive_list(drives)?),
    ];
    Ok(script(&vars, &[PNP_INSTALL, FLUSH]))
}

/// Deletes, with pnputil, every third-party driver package whose original INF file
/// name is in `$bgInfNames`. pnputil needs the published name (`oemNN.inf`) Windows
/// gave the package; Get-WindowsDriver lists both (`Driver`, `OriginalFileName`).
const PNP_REMOVE: &[&str] = &[
    "$bgStore = @()",
    "if (@($bgInfNames).Count -gt 0) { $bgStore = @(Get-WindowsDriver -Online) }",
    "foreach ($bgInfName in $bgInfNames) { foreach ($bgDriver in @($bgStore | Where-Object { [IO.Path]::GetFileName($_.OriginalFileName) -ieq $bgInfName })) { & pnputil.exe /delete-driver $bgDriver.Driver /uninstall /force; if ($LASTEXITCODE -notin 0, 3010) { exit $LASTEXITCODE } } }",
];

/// Uninstalls the driver package whose original INF file name is `inf_name`
/// (`sensor.inf`), found by that name among the published ones.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
    )
)]
pub fn uninstall_pnp_inf(inf_name: &str) -> Result<Vec<String>, CommandError> {
    let inf_name = value("INF name", inf_name)?;
    if inf_name.contains(['\\', '/']) || !inf_name.to_ascii_lowercase().ends_with(".inf") {
        return Err(CommandError::Invalid {
            what: "INF name",
            value: inf_name.into(),
            why: "is not an INF file name like sensor.inf",
        });
    }
    let vars = [("bgInfNames", ps_list(&[inf_name.to_string()]))];
    Ok(script(&vars, &[PNP_REMOVE]))
}

const PNP_UNINSTALL: &[&str] = &[
    "$bgInfNames = @()",
    "if (Test-Path -LiteralPath $bgDir) { $bgInfNames = @(Get-ChildItem -LiteralPath $bgDir -Filter '*.inf' -Recurse -File | ForEach-Object { $_.Name }) }",
];

const PNP_DELETE_FILES: &[&str] = &[
    "if (Test-Path -LiteralPath $bgDir) { Remove-Item -LiteralPath $bgDir -Recurse -Force }",
    "if (Test-Path -LiteralPath $bgZip -PathType Leaf) { Remove-Item -LiteralPath $bgZip -Force }",
];

/// Uninstalls every driver package whose INF is in the expanded package `dir`, then
/// deletes `dir` and `zip`, then flushes. Nothing to do is not an error (like
/// `rm -f`): the package may never have been installed.
pub(crate) fn uninstall_pnp_package(
    zip: &str,
    dir: &str,
    drives: &[char],
) -> Result<Vec<String>, CommandError> {
    let vars = [
        ("bgZip", ps_quote(value("driver package", zip)?)),
        ("bgDir", ps_quote(value("driver package folder", dir)?)),
        ("bgDrives", drive_list(drives)?),
    ];
    Ok(script(
        &vars,
        &[PNP_UNINSTALL, PNP_REMOVE, PNP_DELETE_FILES, FLUSH],
    ))
}

const REMOVE_FILE: &[&str] =
    &["if (Test-Path -LiteralPath $bgPath -PathType Leaf) { Remove-Item -LiteralPath $bgPath -Force }"];

/// Deletes a file if it is there (like `rm -f`), then flushes.
pub(crate) fn remove_file(path: &str, drives: &[char]) -> Result<Vec<String>, CommandError> {
    let vars = [
        ("bgPath", ps_quote(value("file path", path)?)),
        ("bgDrives", drive_list(drives)?),
    ];
    Ok(script(&vars, &[REMOVE_FILE, FLUSH]))
}

/// Flushes the registry and the file system caches of `drives` and the system drive
/// (before the harness power-cycles the guest from outside).
pub(crate) fn flush_volumes(drives: &[char]) -> Result<Vec<String>, CommandError> {
    let vars = [("bgDrives", drive_list(drives)?)];
    Ok(script(&vars, &[FLUSH]))
}

/// Lists crash dumps, one line per file: `dump<TAB>mini|memory<TAB>bytes<TAB>modified
/// (UTC, ISO 8601)<TAB>path`. Written as UTF-8 bytes straight to stdout, because the
/// console code page (used for text output when stdout is a pipe) would mangle a
/// non-ASCII path. The `dump` tag keeps stray warnings out of the parse.
const LIST_DUMPS: &[&str] = &[
    "$bgOut = [Console]::OpenStandardOutput()",
    "$bgTab = [string][char]9",
    "function Write-BgDump($kind, $file) { $line = 'dump' + $bgTab + $kind + $bgTab + [string]$file.Length + $bgTab + $file.LastWriteTimeUtc.ToString('o') + $bgTab + $file.FullName + [char]10; $bytes = [Text.Encoding]::UTF8.GetBytes($line); $bgOut.Write($bytes, 0, $bytes.Length) }",
    // The paths may hold %SystemRoot%, as the CrashControl registry values do.
    "$bgMiniDir = [Environment]::ExpandEnvironmentVariables($bgMinidumps)",
    "$bgFull = [Environment]::ExpandEnvironmentVariables($bgMemoryDump)",
    "if (Test-Path -LiteralPath $bgMiniDir -PathType Container) { Get-ChildItem -LiteralPath $bgMiniDir -Filter '*.dmp' -File | Sort-Object LastWriteTimeUtc -Descending | ForEach-Object { Write-BgDump 'mini' $_ } }",
    "if (Test-Path -LiteralPath $bgFull -PathType Leaf) { Write-BgDump 'memory' (Get-Item -LiteralPath $bgFull) }",
    "$bgOut.Flush()",
];

/// Lists the minidumps in `minidump_dir` (`*.dmp`, newest first) and the memory dump
/// `memory_dump` if it exists; parse the output with [`parse_crash_dump_listing`].
pub(crate) fn list_crash_dumps(
    minidump_dir: &str,
    memory_dump: &str,
) -> Result<Vec<String>, CommandError> {
    let vars = [
        (
            "bgMinidumps",
            ps_quote(value("minidump folder", minidump_dir)?),
        ),
        (
            "bgMemoryDump",
            ps_quote(value("memory dump path", memory_dump)?),
        ),
    ];
    Ok(script(&vars, &[LIST_DUMPS]))
}

/// Which dump file a listing line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestDumpKind {
    /// A small dump in the minidump folder.
    Minidump,
    /// The kernel or complete memory dump (MEMORY.DMP).
    Memory,
}

/// One crash dump file in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestDumpFile {
    pub kind: GuestDumpKind,
    pub bytes: u64,
    /// Last write time, UTC, as the guest printed it (ISO 8601).
    pub(crate) modified_utc: String,
    /// The same, parsed: by the guest's clock, which may differ from the host's.
    pub(crate) modified: jiff::Timestamp,
    /// Full guest path (copy it out with guest-file-read).
    pub path: String,
}

/// Parses the output of [`list_crash_dumps`]. Lines without the `dump` tag are
/// ignored; a tagged line that does not parse is an error rather than a silent skip.
pub(crate) fn parse_crash_dump_listing(stdout: &str) -> Result<Vec<GuestDumpFile>, CommandError> {
    let mut files = Vec::new();
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix("dump\t") else {
            continue;
        };
        let bad = |why| CommandError::Listing {
            line: line.to_string(),
            why,
        };
        let mut fields = rest.splitn(4, '\t');
        let (Some(kind), Some(bytes), Some(modified), Some(path)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected 5 tab-separated fields"));
        };
        let kind = match kind {
            "mini" => GuestDumpKind::Minidump,
            "memory" => GuestDumpKind::Memory,
            _ => return Err(bad("kind is neither mini nor memory")),
        };
        let bytes = bytes.parse().map_err(|_| bad("size is not a number"))?;
        if modified.is_empty() || path.is_empty() {
            return Err(bad("empty time or path"));
        }
        let parsed: jiff::Timestamp = modified
            .parse()
            .map_err(|_| bad("time is not an ISO 8601 UTC time"))?;
        files.push(GuestDumpFile {
            kind,
            bytes,
            modified: parsed,
            modified_utc: modified.to_string(),
            path: path.to_string(),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests;
